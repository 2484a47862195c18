//! `JSONSocket`: a JSON header handshake in front of a UDP, TCP, WebSocket or UNIX
//! transport.
//!
//! The client's first message is a JSON object with an integer `JSONSocketVersion` (1)
//! and any metadata it likes. The listener stores it at `metadata.JSONSocket` (so rules
//! can route on it) and answers `{JSONSocketVersion, JSONSocketStatus,
//! JSONSocketMessage}`: 200 once the session is routed and connected, 400 for bad JSON
//! or a missing or non-integer version, 505 for a version above 1, 404 when no rule
//! matches, 503 when the route could not be connected. A cluster sends a header built
//! from the session's metadata (`header: [{path: {from, to}} | {path: FROM} |
//! {set: {key, value}}]`) and waits for a 2xx answer within the route's retry timeout.
//! Over byte streams the header is the first complete JSON value; what follows it is
//! data.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::{Value, json};

use super::json_header::{self, Refusal, VERSION};
use super::{
    ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Incoming, ListenerContext, ListenerProtocol,
    ListenerTask, Stage, Target,
};
use crate::core::build::{BuildContext, Protocol};
use crate::core::{ConfigError, Result};
use crate::core::{SessionSink, Unrouted};
use crate::json::pointer::Pointer;

pub const NAME: &str = "JSONSocket";
/// How long a client may take to send its header.
const HEADER_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = JsonSocketSpec)]
struct Spec {
    transport: Value,
    #[serde(default)]
    header: Vec<Value>,
}

/// Checks that JSONSocket may run over the transport `spec.transport` names.
fn transport_of(spec: &Spec, cluster: bool, cx: &BuildContext<'_>) -> Result<()> {
    let name = spec
        .transport
        .get("protocol")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let carries = |p: &Protocol| {
        if cluster {
            p.carries.jsonsocket_cluster
        } else {
            p.carries.jsonsocket_listener
        }
    };
    if cx.protocols.find(name).is_some_and(carries) {
        return Ok(());
    }
    let names: Vec<&str> = cx
        .protocols
        .all()
        .iter()
        .filter(|p| carries(p))
        .map(|p| p.name)
        .collect();
    Err(ConfigError::invalid(format!(
        "spec.transport: JSONSocket runs over {}, not '{name}'",
        names.join(", ")
    )))
}

/// A status answer as JSON bytes.
fn answer(status: u16, message: &str) -> Bytes {
    Bytes::from(json!({ "JSONSocketVersion": VERSION, "JSONSocketStatus": status, "JSONSocketMessage": message }).to_string())
}

/// Reads the first JSON value from `rx`: one message on a datagram transport, the
/// first complete value of a byte stream. Returns it and what followed it.
async fn read_json(
    rx: &mut Box<dyn ChunkRx>,
    framing: Framing,
) -> std::result::Result<(Value, Bytes), Refusal> {
    let next = |e: Option<io::Error>| match e {
        Some(e) => Refusal(400, format!("no header: {e}")),
        None => Refusal(400, "the connection ended before the header".into()),
    };
    if framing == Framing::Datagram {
        let message = rx
            .recv()
            .await
            .map_err(|e| next(Some(e)))?
            .ok_or_else(|| next(None))?;
        return Ok((json_header::parse(&message)?, Bytes::new()));
    }
    let mut buf = BytesMut::new();
    let mut scan = json_header::HeaderScan::default();
    loop {
        let chunk = rx
            .recv()
            .await
            .map_err(|e| next(Some(e)))?
            .ok_or_else(|| next(None))?;
        buf.extend_from_slice(&chunk);
        if let Some(end) = scan.feed(&buf)? {
            let rest = buf.split_off(end).freeze();
            return Ok((json_header::parse(&buf)?, rest));
        }
    }
}

/// Hands out what arrived after the header before reading on.
struct AfterHeader {
    first: Option<Bytes>,
    inner: Box<dyn ChunkRx>,
}

#[async_trait]
impl ChunkRx for AfterHeader {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        match self.first.take() {
            Some(first) if !first.is_empty() => Ok(Some(first)),
            _ => self.inner.recv().await,
        }
    }
}

/// The listener side's sending half: answers the handshake once routing is decided.
struct Answering {
    inner: Box<dyn ChunkTx>,
}

#[async_trait]
impl ChunkTx for Answering {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        self.inner.send(chunk).await
    }
    async fn routed(&mut self, outcome: std::result::Result<(), Unrouted<'_>>) -> io::Result<()> {
        let reply = match outcome {
            Ok(()) => answer(200, "OK"),
            Err(e) if e.no_match => answer(404, e.message),
            Err(e) => answer(503, e.message),
        };
        self.inner.send(reply).await
    }
    async fn close(&mut self) -> io::Result<()> {
        self.inner.close().await
    }
}

#[derive(Debug)]
pub struct JsonSocketListener {
    transport: Arc<dyn ListenerProtocol>,
}

impl JsonSocketListener {
    pub fn from_spec(spec: &Value, cx: &BuildContext<'_>) -> Result<JsonSocketListener> {
        let parsed: Spec = cx.parse(spec, "spec")?;
        transport_of(&parsed, false, cx)?;
        let transport = cx
            .protocols
            .listener(&parsed.transport, cx)
            .map_err(|e| e.context("spec.transport"))?;
        Ok(JsonSocketListener { transport })
    }
}

async fn handshake(cx: ListenerContext, incoming: Incoming) {
    let Incoming { mut metadata, conn } = incoming;
    let (framing, peer, udp) = (conn.framing, conn.peer.clone(), conn.udp.clone());
    let (mut rx, mut tx) = conn.into_halves();
    let header = match tokio::time::timeout(HEADER_WAIT, read_json(&mut rx, framing)).await {
        Ok(Ok((header, rest))) => json_header::validate(&header).map(|()| (header, rest)),
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => Err(Refusal(400, format!("no header within {HEADER_WAIT:?}"))),
    };
    match header {
        Ok((header, rest)) => {
            metadata["JSONSocket"] = header;
            let mut conn = Conn::chunks(
                framing,
                Box::new(AfterHeader {
                    first: Some(rest),
                    inner: rx,
                }),
                Box::new(Answering { inner: tx }),
                peer,
            );
            // After the handshake the kernel fast path may take the session over.
            conn.udp = udp;
            cx.accept(Incoming { metadata, conn });
        }
        Err(Refusal(status, message)) => {
            tracing::debug!(listener = %cx.name, %peer, "JSONSocket handshake refused ({status}): {message}");
            let _ = tx.send(answer(status, &message)).await;
            let _ = tx.close().await;
        }
    }
}

/// The layer between the transport and the sink it wraps: each connection the
/// transport accepts is handshaken, then handed on.
struct Handshaking(ListenerContext);

impl SessionSink for Handshaking {
    fn accept(&self, incoming: Incoming) {
        tokio::spawn(handshake(self.0.clone(), incoming));
    }
}

#[async_trait]
impl ListenerProtocol for JsonSocketListener {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let layer = Arc::new(Handshaking(cx.clone()));
        self.transport.start(cx.with_sink(layer)).await
    }
}

/// One rule of the header a cluster sends.
#[derive(Debug, Clone)]
enum HeaderRule {
    Copy { from: Pointer, to: Pointer },
    Set { key: Pointer, value: Value },
}

fn header_rule(rule: &Value) -> Result<HeaderRule> {
    let bad = || {
        ConfigError::invalid(format!(
            "spec.header: {rule} is not {{path: {{from, to}}}}, {{path: FROM}} or {{set: {{key, value}}}}"
        ))
    };
    let pointer =
        |p: &str| Pointer::parse(p).map_err(|e| ConfigError::invalid(format!("spec.header: {e}")));
    match (rule.get("path"), rule.get("set")) {
        (Some(Value::String(from)), None) => Ok(HeaderRule::Copy {
            from: pointer(from)?,
            to: pointer(from)?,
        }),
        (Some(Value::Object(p)), None) => match (
            p.get("from").and_then(Value::as_str),
            p.get("to").and_then(Value::as_str),
        ) {
            (Some(from), Some(to)) => Ok(HeaderRule::Copy {
                from: pointer(from)?,
                to: pointer(to)?,
            }),
            _ => Err(bad()),
        },
        (None, Some(Value::Object(s))) => {
            match (s.get("key").and_then(Value::as_str), s.get("value")) {
                (Some(key), Some(value)) => Ok(HeaderRule::Set {
                    key: pointer(key)?,
                    value: value.clone(),
                }),
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

#[derive(Debug)]
pub struct JsonSocketCluster {
    transport: Arc<dyn ClusterProtocol>,
    header: Vec<HeaderRule>,
}

impl JsonSocketCluster {
    pub fn from_spec(spec: &Value, cx: &BuildContext<'_>) -> Result<JsonSocketCluster> {
        let parsed: Spec = cx.parse(spec, "spec")?;
        transport_of(&parsed, true, cx)?;
        let transport = cx
            .protocols
            .cluster(&parsed.transport, cx)
            .map_err(|e| e.context("spec.transport"))?;
        let header = parsed
            .header
            .iter()
            .map(header_rule)
            .collect::<Result<_>>()?;
        Ok(JsonSocketCluster { transport, header })
    }

    /// The header for a session: the version, then the rules applied in order.
    fn header_for(&self, metadata: &Value) -> Value {
        let mut header = json!({ "JSONSocketVersion": VERSION });
        for rule in &self.header {
            let _ = match rule {
                HeaderRule::Copy { from, to } => match from.get(metadata) {
                    Some(v) => to.set(&mut header, v.clone()),
                    None => Ok(()),
                },
                HeaderRule::Set { key, value } => key.set(&mut header, value.clone()),
            };
        }
        header
    }
}

#[async_trait]
impl ClusterProtocol for JsonSocketCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    fn needs_endpoint(&self) -> bool {
        self.transport.needs_endpoint()
    }

    /// Connects the transport, sends the header and waits for a 2xx answer (the
    /// engine bounds the whole connect by the route's retry timeout).
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let header = self.header_for(target.metadata);
        let conn = match self.transport.connect(target).await? {
            Stage::Conn(conn) => conn,
            // No peer in-process to answer a handshake.
            in_process => return Ok(in_process),
        };
        let (framing, peer, udp) = (conn.framing, conn.peer.clone(), conn.udp.clone());
        let (mut rx, mut tx) = conn.into_halves();
        tx.send(Bytes::from(header.to_string())).await?;
        let (reply, rest) = read_json(&mut rx, framing).await.map_err(|Refusal(_, m)| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("JSONSocket answer: {m}"),
            )
        })?;
        let status = reply
            .get("JSONSocketStatus")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if !(200..300).contains(&status) {
            let message = reply
                .get("JSONSocketMessage")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("JSONSocket: {peer} answered {status}: {message}"),
            ));
        }
        let mut conn = Conn::chunks(
            framing,
            Box::new(AfterHeader {
                first: Some(rest),
                inner: rx,
            }),
            tx,
            peer,
        );
        conn.udp = udp;
        Ok(Stage::Conn(conn))
    }
}

/// JSONSocket: a JSON header, then data, over another transport.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(|spec, cx| Ok(Arc::new(JsonSocketListener::from_spec(spec, cx)?))),
    cluster: Some(|spec, cx| Ok(Arc::new(JsonSocketCluster::from_spec(spec, cx)?))),
    listener_schema: Some(crate::core::build::schema::<Spec>),
    cluster_schema: Some(crate::core::build::schema::<Spec>),
    carries: Protocol::CARRIES_NOTHING,
};

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use super::*;
    use crate::core::build::Protocols;
    use crate::core::listener::testing;
    use crate::core::spec::Validation;
    use crate::registry::REGISTRY;

    #[tokio::test]
    async fn the_handshake_layer_wraps_the_transports_sink() {
        let services = crate::services::Services::new(None);
        let plugins = crate::plugin::Staging::new(services.plugins.clone(), true);
        let cx = BuildContext {
            validation: Validation::LENIENT,
            protocols: &REGISTRY,
            plugins: &plugins,
            metrics: &services.metrics,
            host_access: true,
        };
        let spec = json!({"protocol": "JSONSocket",
            "transport": {"protocol": "TCP", "port": 0, "address": "127.0.0.1"}});
        let listener = REGISTRY.listener(&spec, &cx).unwrap();
        let (lcx, mut sessions) = testing::context("j");
        let task = listener.start(lcx).await.unwrap();
        let addr: std::net::SocketAddr = task.local_addr.parse().unwrap();
        let client = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(br#"{"JSONSocketVersion": 1, "user": "u1"}data"#)
                .unwrap();
            let mut answer = Vec::new();
            let mut byte = [0u8; 1];
            while !answer.ends_with(b"}") {
                s.read_exact(&mut byte).unwrap();
                answer.push(byte[0]);
            }
            String::from_utf8(answer).unwrap()
        });
        // The sink sees the session only after the handshake, with the header.
        let mut incoming = tokio::time::timeout(Duration::from_secs(5), sessions.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(incoming.metadata["JSONSocket"]["user"], "u1");
        assert_eq!(incoming.metadata["TCP"]["dst_port"], addr.port());
        incoming.conn.routed(Ok(())).await.unwrap();
        let answer: Value = serde_json::from_str(&client.await.unwrap()).unwrap();
        assert_eq!(answer["JSONSocketStatus"], 200);
        let (mut rx, _tx) = incoming.conn.into_halves();
        assert_eq!(
            rx.recv().await.unwrap().unwrap(),
            Bytes::from_static(b"data")
        );
        task.stop().await;
    }
}
