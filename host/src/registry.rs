//! The protocol list: every listener, cluster and transform protocol, each declared
//! once in its own file (`PROTOCOL`) and named once in its directory's `protocols!`
//! line, which this list gathers. Adding a protocol is its file plus its name on that
//! line. Names match case-insensitively (configs in the wild write
//! `L7MPController` as well as `L7mpController`); each protocol parses its own typed
//! spec, so errors name the field. Every configuration change is built here
//! ([`build`]), the composition root of objects, protocols and plugins.

use std::sync::{Arc, LazyLock};

use serde_json::Value;

use crate::core::build::{BuildContext, Protocol, Protocols};
use crate::core::spec::Validation;
use crate::core::{ClusterProtocol, ConfigError, ListenerProtocol, Result};
use crate::model::inline::{Builder, Sealed};
use crate::model::{Kind, Snapshot};
use crate::plugin::Staging;
use crate::services::Services;

/// Every protocol: those of `protocol/`, the built-in transforms, the Wasm transform.
/// A new protocol is its file plus its name in its directory's `protocols!` line.
static PROTOCOLS: LazyLock<Vec<&'static Protocol>> = LazyLock::new(|| {
    let wasm: &'static [&'static Protocol] = &[&crate::plugin::transform::PROTOCOL];
    [crate::protocol::ALL, crate::transform::ALL, wasm].concat()
});

/// The registry every build goes through.
pub struct Registry;

pub static REGISTRY: Registry = Registry;

/// A spec's `protocol`, and the spec without it (what the protocol's typed spec reads).
fn split(spec: &Value) -> Result<(&str, Value)> {
    let protocol = match spec.get("protocol") {
        Some(Value::String(p)) => p.as_str(),
        Some(other) => {
            return Err(ConfigError::invalid(format!(
                "spec.protocol must be a string, not {other}"
            )));
        }
        None if spec.is_object() => return Err(ConfigError::invalid("spec.protocol is required")),
        None => {
            return Err(ConfigError::invalid(
                "'spec' must be an object with a 'protocol'",
            ));
        }
    };
    let mut rest = spec.clone();
    if let Some(fields) = rest.as_object_mut() {
        fields.remove("protocol");
    }
    Ok((protocol, rest))
}

fn unknown(kind: &str, protocol: &str, known: impl Iterator<Item = &'static str>) -> ConfigError {
    ConfigError::invalid(format!(
        "unknown {kind} protocol '{protocol}' (known: {})",
        known.collect::<Vec<_>>().join(", ")
    ))
}

impl Protocols for Registry {
    fn all(&self) -> &'static [&'static Protocol] {
        &PROTOCOLS
    }

    fn listener(&self, spec: &Value, cx: &BuildContext<'_>) -> Result<Arc<dyn ListenerProtocol>> {
        let (name, mut rest) = split(spec)?;
        let found = self.find(name);
        let Some((protocol, build)) = found.and_then(|p| Some((p, p.listener?))) else {
            let known = PROTOCOLS.iter().filter(|p| p.listener.is_some());
            return Err(unknown("listener", name, known.map(|p| p.name)));
        };
        let Some(codec) = rest.as_object_mut().and_then(|f| f.remove("codec")) else {
            return build(&rest, cx);
        };
        if !protocol.carries.codec {
            let framed: Vec<&str> = PROTOCOLS
                .iter()
                .filter(|p| p.carries.codec)
                .map(|p| p.name)
                .collect();
            let (last, rest) = framed.split_last().unwrap_or((&"no", &[]));
            return Err(ConfigError::invalid(format!(
                "spec.codec: a codec frames {} or {last} listeners, not {name}",
                rest.join(", ")
            )));
        }
        let transport = build(&rest, cx)?;
        cx.plugins.codec(transport, &codec, cx.validation)
    }

    fn cluster(&self, spec: &Value, cx: &BuildContext<'_>) -> Result<Arc<dyn ClusterProtocol>> {
        let (name, rest) = split(spec)?;
        match self.find(name).and_then(|p| p.cluster) {
            Some(build) => build(&rest, cx),
            None => {
                let known = PROTOCOLS.iter().filter(|p| p.cluster.is_some());
                Err(unknown("cluster", name, known.map(|p| p.name)))
            }
        }
    }
}

/// A configuration change, built and checked but not live: its snapshot, what it
/// created, the unknown fields it accepted, and the plugins it loads (made current
/// with it, by [`Staging::publish`]).
pub struct Change {
    pub snap: Snapshot,
    pub created: Vec<(Kind, String)>,
    pub warnings: Vec<String>,
    pub plugins: Staging,
}

/// Builds a change on a working copy of `base`, everything through this registry.
pub fn build(
    base: &Snapshot,
    validation: Validation,
    services: &Services,
    host_access: bool,
    f: impl FnOnce(&mut Builder<'_>) -> Result<()>,
) -> Result<Change> {
    let plugins = Staging::new(services.plugins.clone(), host_access);
    let cx = BuildContext {
        validation,
        protocols: &REGISTRY,
        plugins: &plugins,
        metrics: &services.metrics,
        host_access,
    };
    let mut builder = Builder::new(base, cx);
    f(&mut builder)?;
    let Sealed {
        snap,
        created,
        warnings,
    } = builder.seal();
    Ok(Change {
        snap,
        created,
        warnings,
        plugins,
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Runs `f` with the context a change builds in.
    fn with_cx<T>(validation: Validation, f: impl FnOnce(&BuildContext<'_>) -> T) -> T {
        let services = Services::new(None);
        let plugins = Staging::new(services.plugins.clone(), true);
        f(&BuildContext {
            validation,
            protocols: &REGISTRY,
            plugins: &plugins,
            metrics: &services.metrics,
            host_access: true,
        })
    }

    fn listener(spec: &Value, validation: Validation) -> Result<Arc<dyn ListenerProtocol>> {
        with_cx(validation, |cx| REGISTRY.listener(spec, cx))
    }

    fn cluster(spec: &Value, validation: Validation) -> Result<Arc<dyn ClusterProtocol>> {
        with_cx(validation, |cx| REGISTRY.cluster(spec, cx))
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(
            cluster(&json!({"protocol": "L7MPController"}), Validation::LENIENT)
                .unwrap()
                .name(),
            "L7mpController"
        );
        assert!(listener(&json!({"protocol": "udp", "port": 1}), Validation::LENIENT).is_ok());
    }

    #[test]
    fn every_protocol_is_listed_once_under_each_name() {
        let mut names: Vec<String> = PROTOCOLS
            .iter()
            .flat_map(|p| std::iter::once(p.name).chain(p.aliases.iter().copied()))
            .map(str::to_ascii_lowercase)
            .collect();
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all, "a name is taken twice");
        assert!(
            PROTOCOLS
                .iter()
                .all(|p| p.listener.is_some() || p.cluster.is_some())
        );
        assert!(REGISTRY.find("ws").is_some_and(|p| p.name == "WebSocket"));
    }

    #[test]
    fn a_spec_never_sees_its_protocol_and_jsonsocket_builds_its_transport_here() {
        let reject = Validation {
            strict: true,
            reject_unknown: true,
        };
        // Strict mode would reject a `protocol` field the spec type does not have.
        assert!(listener(&json!({"protocol": "TCP", "port": 1}), reject).is_ok());
        assert!(cluster(&json!({"protocol": "Echo"}), reject).is_ok());
        let over = |transport: &str| {
            cluster(
                &json!({"protocol": "JSONSocket", "transport": {"protocol": transport}}),
                Validation::LENIENT,
            )
        };
        assert!(over("Echo").is_ok());
        let e = over("Logger").unwrap_err().message;
        assert!(
            e.starts_with("spec.transport: JSONSocket runs over TCP, UDP, UnixDomainSocket"),
            "{e}"
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = |r: Result<Arc<dyn ClusterProtocol>>| r.unwrap_err().message;
        assert!(
            e(cluster(
                &json!({"protocol": "Wasm", "plugin": "p"}),
                Validation::LENIENT
            ))
            .starts_with("spec: plugin 'p' is not loaded")
        );
        assert!(
            listener(
                &json!({"protocol": "WebSocket", "port": 1, "codec": {"plugin": "p"}}),
                Validation::LENIENT
            )
            .unwrap_err()
            .message
            .contains("a codec frames TCP, UDP or UnixDomainSocket listeners")
        );
        assert!(
            e(cluster(&json!({"protocol": "Bogus"}), Validation::LENIENT))
                .starts_with("unknown cluster protocol 'Bogus'")
        );
        assert_eq!(
            e(cluster(&json!({"port": 1}), Validation::LENIENT)),
            "spec.protocol is required"
        );
        let l = listener(
            &json!({"protocol": "TCP", "port": "eighty"}),
            Validation::LENIENT,
        )
        .unwrap_err();
        assert!(l.message.contains("field 'port'"), "{l}");
        let reject = Validation {
            strict: true,
            reject_unknown: true,
        };
        let strict = cluster(&json!({"protocol": "TCP", "prot": 1}), reject).unwrap_err();
        assert!(strict.message.contains("'prot'"), "{strict}");
        let udp = listener(
            &json!({"protocol": "UDP", "port": 1, "options": {"mode": "singleton"}}),
            Validation::LENIENT,
        )
        .unwrap_err();
        assert!(udp.message.contains("singleton mode needs"), "{udp}");
    }
}
