//! HTTP: a reverse proxy with per-request routing.
//!
//! An `HTTP` listener serves HTTP/1.1 (keep-alive) and HTTP/2 over cleartext (h2c) on
//! one port. Every request gets its own metadata (`IP`, `TCP`, `HTTP{version, method,
//! url, headers}`) and goes through the listener's rules; its route's destination
//! decides what answers:
//! - an `HTTP` cluster: the request is forwarded to an endpoint (pooled connections,
//!   path and query from `metadata.HTTP.url`, so rewrites can change them);
//! - an `L7mpController` or `Prometheus` cluster: the REST API and `/metrics`.
//!
//! This file serves HTTP and builds each request's metadata; the request itself goes
//! to the listener's sink, which routes it (see `session::http`);
//! - a WebSocket upgrade request becomes a WebSocket session on the same port, routed
//!   like one accepted by a `WebSocket` listener.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::http_conn::{InFlight, ServerIo};
use super::http_meta;
use super::{
    ClusterProtocol, Incoming, ListenerContext, ListenerProtocol, ListenerTask, Stage, Target, net,
    websocket,
};
use super::secure;
use crate::core::build::{BuildContext, Protocol};
use super::http_connect::HttpsConnector;
use crate::tls::{Acceptor, ClientTlsSpec, ServerTlsSpec};
use crate::core::http::{BoxBody, BoxError, HttpReply, error_reply, full};
use crate::core::{EndpointRef, HttpForward};

pub const NAME: &str = "HTTP";

/// Headers that belong to one hop and are not forwarded.
const HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct HttpListenerSpec {
    port: u16,
    #[serde(default)]
    address: Option<String>,
    /// HTTPS: `{cert, key, client_ca?, alpn?}` (ALPN offers `h2` and `http/1.1`).
    #[serde(default)]
    tls: Option<ServerTlsSpec>,
}

#[derive(Debug)]
pub struct HttpListener {
    spec: HttpListenerSpec,
    tls: Option<Arc<Acceptor>>,
}

fn listener(spec: &Value, cx: &BuildContext<'_>) -> crate::core::Result<Arc<dyn ListenerProtocol>> {
    let spec: HttpListenerSpec = cx.parse(spec, "spec")?;
    let tls = secure::acceptor(spec.tls.as_ref(), cx, &["h2", "http/1.1"])?;
    Ok(Arc::new(HttpListener { spec, tls }))
}

struct Served {
    cx: ListenerContext,
}

/// One connection's facts every request on it shares.
struct Connection {
    peer: SocketAddr,
    /// Where the client connected.
    local: SocketAddr,
    /// The handshake's `TLS` metadata; `Null` over cleartext.
    tls: Value,
}

#[async_trait]
impl ListenerProtocol for HttpListener {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let listener = net::listen_tcp(self.spec.address.as_deref(), self.spec.port)?;
        let local = listener.local_addr()?;
        let served = Arc::new(Served { cx });
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = net::accept_tcp(&listener, &served.cx.name).await;
                let _ = stream.set_nodelay(true);
                let served = served.clone();
                let tls = tls.clone();
                let local = net::accepted_at(local, &stream);
                tokio::spawn(async move {
                    match tls {
                        None => {
                            let conn = Connection { peer, local, tls: Value::Null };
                            serve(served, stream, conn).await
                        }
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok((stream, tls)) => {
                                serve(served, stream, Connection { peer, local, tls }).await
                            }
                            Err(e) => tracing::debug!(%peer, "HTTPS handshake: {e}"),
                        },
                    }
                });
            }
        });
        Ok(ListenerTask::new(local.to_string(), task))
    }
}

/// Serves HTTP/1.1 and HTTP/2 (by preface, or as ALPN chose) on one connection.
async fn serve<IO>(served: Arc<Served>, io: IO, conn: Connection)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = served.cx.sink.http_limits();
    let in_flight = InFlight::default();
    let io = ServerIo::new(io, limits.idle(), in_flight.clone());
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let service = hyper::service::service_fn(move |req| {
        let (served, in_flight, conn) = (served.clone(), in_flight.clone(), conn.clone());
        async move {
            let _busy = in_flight.start();
            Ok::<_, Infallible>(handle(&served, &conn, req, &in_flight).await)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header());
    builder.http2().timer(TokioTimer::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%peer, "HTTP connection: {e}");
    }
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn handle(
    served: &Served,
    conn: &Connection,
    req: Request<Body>,
    in_flight: &InFlight,
) -> HttpReply {
    let (cx, peer) = (&served.cx, conn.peer);
    let mut metadata = net::metadata("TCP", conn.local, peer);
    let scheme = if conn.tls.is_null() { "http" } else { "https" };
    metadata["HTTP"] = http_meta::request_metadata(&req, conn.local, scheme);
    if !conn.tls.is_null() {
        metadata["TLS"] = conn.tls.clone();
    }
    if is_websocket_upgrade(&req) {
        in_flight.upgraded();
        return upgrade(cx, metadata, req);
    }
    cx.sink.request(req, metadata, peer).await
}

/// Answers a WebSocket upgrade and hands the connection to the session engine.
fn upgrade(cx: &ListenerContext, metadata: Value, mut req: Request<Body>) -> HttpReply {
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Sec-WebSocket-Key",
        );
    };
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|p| p.trim().to_owned());
    let upgraded = hyper::upgrade::on(&mut req);
    let (cx, peer) = (
        cx.clone(),
        metadata["IP"]["src_addr"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => {
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(io),
                    Role::Server,
                    Some(websocket::config(None)),
                )
                .await;
                cx.accept(Incoming {
                    metadata,
                    conn: websocket::conn(ws, peer, websocket::MessageKind::Binary),
                });
            }
            Err(e) => tracing::debug!(listener = %cx.name, "WebSocket upgrade failed: {e}"),
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", v);
    }
    if let Some(v) = protocol.and_then(|p| HeaderValue::from_str(&p).ok()) {
        headers.insert("sec-websocket-protocol", v);
    }
    resp
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct HttpClusterSpec {
    #[serde(default)]
    port: Option<u16>,
    /// Speak HTTP/2 only: over cleartext by prior knowledge, over TLS by ALPN.
    #[serde(default)]
    http2: bool,
    /// HTTPS to the endpoints: `{ca?, server_name?, cert?, key?, verify}`; ALPN
    /// offers `h2` and `http/1.1` unless `alpn` says otherwise.
    #[serde(default)]
    tls: Option<ClientTlsSpec>,
}

pub struct HttpCluster {
    port: Option<u16>,
    scheme: &'static str,
    client: Client<HttpsConnector, BoxBody>,
}

impl std::fmt::Debug for HttpCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCluster")
            .field("port", &self.port)
            .finish()
    }
}

impl HttpCluster {
    pub fn from_spec(spec: &Value, cx: &BuildContext<'_>) -> crate::core::Result<HttpCluster> {
        let spec: HttpClusterSpec = cx.parse(spec, "spec")?;
        let alpn: &'static [&'static str] = if spec.http2 {
            &["h2"]
        } else {
            &["h2", "http/1.1"]
        };
        let tls = secure::connector(spec.tls.as_ref(), cx, alpn)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(spec.http2)
            .build(HttpsConnector::new(tls));
        Ok(HttpCluster {
            port: spec.port,
            scheme,
            client,
        })
    }
}

#[async_trait]
impl HttpForward for HttpCluster {
    async fn forward(
        &self,
        req: Request<BoxBody>,
        endpoint: EndpointRef<'_>,
        metadata: &Value,
        peer: SocketAddr,
    ) -> Result<HttpReply, BoxError> {
        let target = Target {
            cluster: "",
            session: "",
            egress: false,
            endpoint: Some(endpoint),
            metadata,
        };
        let (host, port) = target.host_port(self.port)?;
        let uri = http_meta::upstream_url(self.scheme, &host, port, metadata);
        let (parts, body) = req.into_parts();
        let mut upstream = Request::builder().method(parts.method).uri(uri);
        for (name, value) in &parts.headers {
            if !HOP_HEADERS.contains(&name.as_str()) {
                upstream = upstream.header(name, value);
            }
        }
        // Rewritten headers in the metadata win over the request's own.
        if let Some(headers) = upstream.headers_mut() {
            for (name, value) in http_meta::forwarded_headers(metadata, HOP_HEADERS) {
                headers.insert(name, value);
            }
        }
        upstream = upstream.header("x-forwarded-for", peer.ip().to_canonical().to_string());
        let upstream = upstream.body(body)?;
        let resp = self.client.request(upstream).await?;
        let (mut parts, body) = resp.into_parts();
        for hop in HOP_HEADERS {
            parts.headers.remove(*hop);
        }
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed_unsync(),
        ))
    }
}

#[async_trait]
impl ClusterProtocol for HttpCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    fn needs_endpoint(&self) -> bool {
        true
    }
    fn http(&self) -> Option<&dyn HttpForward> {
        Some(self)
    }
    async fn connect(&self, _target: Target<'_>) -> io::Result<Stage> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "HTTP clusters answer HTTP listeners' requests, not sessions of other protocols",
        ))
    }
}

/// HTTP/1.1 and h2c, routed per request.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(listener),
    cluster: Some(|spec, cx| Ok(Arc::new(HttpCluster::from_spec(spec, cx)?))),
    listener_schema: Some(crate::core::build::schema::<HttpListenerSpec>),
    cluster_schema: Some(crate::core::build::schema::<HttpClusterSpec>),
    carries: Protocol::CARRIES_NOTHING,
};
