//! A JSONPredicate `match` (the input, as JSON), compiled as a rule's match is and
//! evaluated against itself and a session's usual metadata.

#![no_main]

use l7mp::json::Predicate;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Ok(predicate) = Predicate::compile(&spec) else {
        return;
    };
    let metadata = json!({
        "IP": {"src_addr": "10.0.0.1", "dst_addr": "127.0.0.1"},
        "UDP": {"src_port": 9000, "dst_port": 53},
        "HTTP": {"url": {"path": "/a/b"}, "headers": {"x-user": "Ann"}},
        "labels": [1, "x", null, {"k": true}],
    });
    let _ = predicate.eval(&metadata);
    let _ = predicate.eval(&spec);
    let _ = predicate.plugins();
});
