//! A config file or an API body: any text. It is parsed as the API parses it (JSON or
//! YAML, nesting checked first), then built into objects as a whole config and as
//! each kind's body, in every validation mode, and the result rendered back. Nothing may
//! panic, whatever the input; every failure is an error value.

#![no_main]

use l7mp::registry;
use l7mp::services::Services;

/// One set for the whole run, as a proxy process has.
static SERVICES: std::sync::OnceLock<Services> = std::sync::OnceLock::new();
use l7mp::core::spec::Validation;
use l7mp::core::spec as parse;
use l7mp::model::{Kind, Snapshot, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut doc) = parse::document(text) else {
        return;
    };
    // Plugins would be read from files: not what this target is about.
    if let Some(obj) = doc.as_object_mut() {
        obj.remove("plugins");
    }
    let services = SERVICES.get_or_init(|| Services::new(None));
    for (strict, reject_unknown) in [(false, false), (true, false), (true, true)] {
        let mode = Validation {
            strict,
            reject_unknown,
        };
        if let Ok(whole) = registry::build(&Snapshot::default(), mode, services, true, |b| b.add_config(&doc)) {
            let _ = serde_json::to_vec(&render::objects(&whole.snap));
            for kind in [
                Kind::Listener,
                Kind::Cluster,
                Kind::RuleList,
                Kind::Rule,
                Kind::Route,
                Kind::Endpoint,
            ] {
                let _ = serde_json::to_vec(&render::collection(&whole.snap, kind, true));
            }
        }
        let each = registry::build(&Snapshot::default(), mode, services, true, |each| {
            let _ = each.add_listener(&doc);
            let _ = each.add_cluster(&doc, None);
            let _ = each.add_rulelist(&doc, None);
            let _ = each.add_rule(&doc, None);
            let _ = each.add_route(&doc, None);
            Ok(())
        });
        if let Ok(each) = each {
            let _ = serde_json::to_vec(&render::objects(&each.snap));
        }
    }
});
