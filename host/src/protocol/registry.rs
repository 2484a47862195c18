//! `spec.protocol` names to protocol implementations. Names match case-insensitively
//! (configs in the wild write `L7MPController` as well as `L7mpController`). Each
//! protocol parses its own typed spec, so errors name the field.

use crate::core::spec::Validation;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::controller::{self, ServiceCluster};
use super::http::{HttpCluster, HttpListenerSpec};
use super::{
    ClusterProtocol, ListenerProtocol, af_packet, fork, jsonsocket, pipe, sctp, stdio, sync, tcp,
    udp, unix, unix_dgram, websocket,
};
use crate::core::spec::typed;
use crate::model::{ConfigError, Result};
use crate::plugin::codec::CodecListener;
use crate::plugin::transform::{self as wasm, WasmCluster};
use crate::transform::{discard, echo, jsondecap, jsonencap, logger, metric};

fn protocol_of(spec: &Value) -> Result<String> {
    match spec.get("protocol") {
        Some(Value::String(p)) => Ok(p.clone()),
        Some(other) => Err(ConfigError::invalid(format!(
            "spec.protocol must be a string, not {other}"
        ))),
        None if spec.is_object() => Err(ConfigError::invalid("spec.protocol is required")),
        None => Err(ConfigError::invalid(
            "'spec' must be an object with a 'protocol'",
        )),
    }
}

fn unknown(kind: &str, protocol: &str, known: &[&str]) -> ConfigError {
    ConfigError::invalid(format!(
        "unknown {kind} protocol '{protocol}' (known: {})",
        known.join(", ")
    ))
}

fn parse<T: DeserializeOwned>(spec: &Value, strict: Validation) -> Result<T> {
    typed(spec, "spec", strict)
}

/// The spec of a protocol with no settings of its own.
#[derive(serde::Deserialize)]
struct BareSpec {
    #[allow(dead_code)]
    protocol: String,
}

/// A cluster whose spec is just its protocol (strict mode still rejects extra fields).
fn bare(
    spec: &Value,
    strict: Validation,
    cluster: impl ClusterProtocol + 'static,
) -> Result<Arc<dyn ClusterProtocol>> {
    parse::<BareSpec>(spec, strict)?;
    Ok(Arc::new(cluster))
}

fn pipe_spec(spec: &Value, strict: Validation) -> Result<pipe::PipeSpec> {
    let pipe: pipe::PipeSpec = parse(spec, strict)?;
    pipe.validate()
        .map_err(|e| ConfigError::invalid(format!("spec: {e}")))?;
    Ok(pipe)
}

const LISTENERS: &[&str] = &[
    tcp::NAME,
    udp::NAME,
    unix::NAME,
    unix_dgram::NAME,
    websocket::NAME,
    jsonsocket::NAME,
    pipe::NAME,
    af_packet::NAME,
    sctp::NAME,
    "HTTP",
];

/// Transports a Wasm `codec` may frame.
const CODEC_TRANSPORTS: &[&str] = &["tcp", "udp", "unixdomainsocket"];

pub fn listener(spec: &Value, strict: Validation) -> Result<Arc<dyn ListenerProtocol>> {
    let protocol = protocol_of(spec)?;
    if let Some(codec) = spec.get("codec") {
        if !CODEC_TRANSPORTS.contains(&protocol.to_ascii_lowercase().as_str()) {
            return Err(ConfigError::invalid(format!(
                "spec.codec: a codec frames TCP, UDP or UnixDomainSocket listeners, not {protocol}"
            )));
        }
        let mut transport = spec.clone();
        if let Some(obj) = transport.as_object_mut() {
            obj.remove("codec");
        }
        let transport = listener(&transport, strict)?;
        return Ok(Arc::new(CodecListener::new(transport, codec, strict)?));
    }
    Ok(match protocol.to_ascii_lowercase().as_str() {
        "tcp" => Arc::new(parse::<tcp::TcpListenerSpec>(spec, strict)?),
        "udp" => {
            let udp: udp::UdpListenerSpec = parse(spec, strict)?;
            udp.validate()
                .map_err(|e| ConfigError::invalid(format!("spec: {e}")))?;
            Arc::new(udp)
        }
        "unixdomainsocket" => Arc::new(parse::<unix::UnixListenerSpec>(spec, strict)?),
        "http" => Arc::new(parse::<HttpListenerSpec>(spec, strict)?),
        "unixdomaindgram" => Arc::new(parse::<unix_dgram::UnixDgramListenerSpec>(spec, strict)?),
        "websocket" | "ws" => Arc::new(parse::<websocket::WsListenerSpec>(spec, strict)?),
        "jsonsocket" => Arc::new(jsonsocket::JsonSocketListener::from_spec(spec, strict)?),
        "sctp" => Arc::new(parse::<sctp::SctpListenerSpec>(spec, strict)?),
        "af_packet" => Arc::new(parse::<af_packet::PacketSpec>(spec, strict)?),
        "pipe" => Arc::new(pipe_spec(spec, strict)?),
        _ => return Err(unknown("listener", &protocol, LISTENERS)),
    })
}

const CLUSTERS: &[&str] = &[
    tcp::NAME,
    udp::NAME,
    unix::NAME,
    unix_dgram::NAME,
    websocket::NAME,
    jsonsocket::NAME,
    pipe::NAME,
    fork::NAME,
    sync::NAME,
    stdio::NAME,
    echo::NAME,
    discard::NAME,
    logger::NAME,
    metric::NAME,
    jsonencap::NAME,
    jsondecap::NAME,
    "HTTP",
    af_packet::NAME,
    sctp::NAME,
    wasm::NAME,
    controller::CONTROLLER,
    controller::PROMETHEUS,
];

pub fn cluster(spec: &Value, strict: Validation) -> Result<Arc<dyn ClusterProtocol>> {
    let protocol = protocol_of(spec)?;
    Ok(match protocol.to_ascii_lowercase().as_str() {
        "tcp" => Arc::new(parse::<tcp::TcpClusterSpec>(spec, strict)?),
        "udp" => Arc::new(parse::<udp::UdpClusterSpec>(spec, strict)?),
        "unixdomainsocket" => bare(spec, strict, unix::UnixCluster)?,
        "stdio" => bare(spec, strict, stdio::StdioCluster)?,
        "echo" => bare(spec, strict, echo::Echo)?,
        "discard" => bare(spec, strict, discard::Discard)?,
        "logger" => Arc::new(parse::<logger::LoggerSpec>(spec, strict)?),
        "metric" => bare(spec, strict, metric::MetricCluster)?,
        "jsonencap" => bare(spec, strict, jsonencap::JsonEncap)?,
        "jsondecap" => bare(spec, strict, jsondecap::JsonDecap)?,
        "unixdomaindgram" => bare(spec, strict, unix_dgram::UnixDgramCluster)?,
        "websocket" | "ws" => Arc::new(parse::<websocket::WsClusterSpec>(spec, strict)?),
        "jsonsocket" => Arc::new(jsonsocket::JsonSocketCluster::from_spec(spec, strict)?),
        "http" => Arc::new(HttpCluster::from_spec(spec, strict)?),
        "sctp" => Arc::new(parse::<sctp::SctpClusterSpec>(spec, strict)?),
        "af_packet" => Arc::new(parse::<af_packet::PacketSpec>(spec, strict)?),
        "pipe" => Arc::new(pipe_spec(spec, strict)?),
        "stdio-fork" => {
            let fork: fork::ForkCluster = parse(spec, strict)?;
            fork.validate().map_err(ConfigError::invalid)?;
            Arc::new(fork)
        }
        "sync" => Arc::new(sync::SyncCluster::from_spec(spec, strict)?),
        "wasm" => Arc::new(WasmCluster::from_spec(spec, strict)?),
        "l7mpcontroller" => Arc::new(ServiceCluster {
            name: controller::CONTROLLER,
        }),
        "prometheus" => Arc::new(ServiceCluster {
            name: controller::PROMETHEUS,
        }),
        _ => return Err(unknown("cluster", &protocol, CLUSTERS)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
