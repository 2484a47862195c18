//! HTTP: a reverse proxy with per-request routing.
//!
//! An `HTTP` listener serves HTTP/1.1 (keep-alive) and HTTP/2 over cleartext (h2c) on
//! one port. Every request gets its own metadata (`IP`, `TCP`, `HTTP{version, method,
//! url, headers}`) and goes through the listener's rules; its route's destination
//! decides what answers:
//! - an `HTTP` cluster: the request is forwarded to an endpoint (pooled connections,
//!   path and query from `metadata.HTTP.url`, so rewrites can change them);
//! - an `L7mpController` or `Prometheus` cluster: the REST API and `/metrics`;
//! - a WebSocket upgrade request becomes a WebSocket session on the same port, routed
//!   like one accepted by a `WebSocket` listener.

use crate::model::parse::Validation;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody as BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming as Body;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::controller::{CONTROLLER, PROMETHEUS};
use super::http_conn::{InFlight, ServerIo};
use super::http_meta;
use super::{
    ClusterProtocol, Incoming, ListenerContext, ListenerProtocol, ListenerTask, Stage, Target, net,
    websocket,
};
use crate::model::Snapshot;

pub const NAME: &str = "HTTP";

type Error = Box<dyn std::error::Error + Send + Sync>;
type Reply = Response<BoxBody<Bytes, Error>>;

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

fn full(body: impl Into<Bytes>) -> BoxBody<Bytes, Error> {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn error_reply(status: StatusCode, message: &str) -> Reply {
    let body = json!({ "status": status.as_u16(), "message": message }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[derive(Debug, Deserialize)]
pub struct HttpListenerSpec {
    #[allow(dead_code)]
    protocol: String,
    port: u16,
    #[serde(default)]
    address: Option<String>,
}

/// Whether any route of a listener's rules ends in the controller (so the config
/// declares where the API is served).
pub fn serves_controller(snap: &Snapshot, listener: &str) -> bool {
    let Some(l) = snap.listeners.get(listener) else {
        return false;
    };
    let mut pending = vec![l.rules.clone()];
    let mut seen = Vec::new();
    while let Some(name) = pending.pop() {
        if seen.contains(&name) {
            continue;
        }
        for rule in snap
            .rulelists
            .get(&name)
            .iter()
            .flat_map(|rl| rl.rules.iter())
            .filter_map(|r| snap.rules.get(r))
        {
            pending.extend(rule.action.apply.clone());
            let cluster = rule
                .action
                .route
                .as_ref()
                .and_then(|r| snap.routes.get(r))
                .and_then(|route| snap.clusters.get(&route.destination));
            if cluster.is_some_and(|c| c.protocol.name() == CONTROLLER) {
                return true;
            }
        }
        seen.push(name);
    }
    false
}

struct Served {
    cx: ListenerContext,
    api: axum::Router,
    local: SocketAddr,
}

#[async_trait]
impl ListenerProtocol for HttpListenerSpec {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let listener = net::listen_tcp(self.address.as_deref(), self.port)?;
        let local = listener.local_addr()?;
        let served = Arc::new(Served {
            api: crate::api::router(cx.proxy.clone()),
            cx,
            local,
        });
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = net::accept_tcp(&listener, &served.cx.name).await;
                let _ = stream.set_nodelay(true);
                let served = served.clone();
                let limits = served.cx.proxy.snapshot().admin.http.clone();
                tokio::spawn(async move {
                    let in_flight = InFlight::default();
                    let io = ServerIo::new(stream, limits.idle(), in_flight.clone());
                    let service = hyper::service::service_fn(move |req| {
                        let (served, in_flight) = (served.clone(), in_flight.clone());
                        async move {
                            let _busy = in_flight.start();
                            Ok::<_, Infallible>(handle(&served, peer, req, &in_flight).await)
                        }
                    });
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
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
                });
            }
        });
        Ok(ListenerTask::new(local.to_string(), task))
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
    peer: SocketAddr,
    req: Request<Body>,
    in_flight: &InFlight,
) -> Reply {
    let cx = &served.cx;
    let mut metadata = net::metadata("TCP", served.local, peer);
    metadata["HTTP"] = http_meta::request_metadata(&req, served.local, "http");
    let m = crate::metrics::global();
    m.listener_sessions.with_label_values(&[&cx.name]).inc();
    if is_websocket_upgrade(&req) {
        in_flight.upgraded();
        return upgrade(cx, metadata, req);
    }
    let snap = cx.proxy.snapshot();
    let mut uses = Vec::new();
    let route =
        match crate::session::engine::lookup(&snap, &cx.name, &mut metadata, &mut uses).await {
            Ok(route) => route,
            Err(e) => {
                m.sessions_rejected.with_label_values(&[&cx.name]).inc();
                return error_reply(StatusCode::NOT_FOUND, &e);
            }
        };
    let Some(cluster) = snap.clusters.get(&route.destination).cloned() else {
        return error_reply(
            StatusCode::BAD_GATEWAY,
            &format!(
                "route '{}': its destination cluster does not exist",
                route.name
            ),
        );
    };
    match cluster.protocol.name() {
        CONTROLLER | PROMETHEUS => {
            let mut api = served.api.clone();
            match tower_service::Service::call(&mut api, req).await {
                Ok(resp) => resp.map(|b| b.map_err(Error::from).boxed_unsync()),
                Err(never) => match never {},
            }
        }
        _ => match cluster.protocol.http() {
            Some(http) => {
                let endpoint = cluster.balancer.pick(&metadata);
                let Some(endpoint) = endpoint else {
                    return error_reply(
                        StatusCode::BAD_GATEWAY,
                        &format!("cluster '{}' has no endpoint", cluster.name),
                    );
                };
                let timeout = Duration::from_millis(route.retry.timeout.max(1));
                match tokio::time::timeout(timeout, http.forward(req, &endpoint, &metadata, peer))
                    .await
                {
                    Ok(Ok(resp)) => {
                        m.cluster_sessions.with_label_values(&[&cluster.name]).inc();
                        resp
                    }
                    Ok(Err(e)) => {
                        m.cluster_connect_failures
                            .with_label_values(&[&cluster.name])
                            .inc();
                        error_reply(
                            StatusCode::BAD_GATEWAY,
                            &format!("cluster '{}': {e}", cluster.name),
                        )
                    }
                    Err(_) => error_reply(
                        StatusCode::GATEWAY_TIMEOUT,
                        &format!("cluster '{}': no answer within {timeout:?}", cluster.name),
                    ),
                }
            }
            None => error_reply(
                StatusCode::BAD_GATEWAY,
                &format!(
                    "route '{}' goes to a {} cluster; HTTP requests go to HTTP, L7mpController or Prometheus clusters (WebSocket upgrades anywhere)",
                    route.name,
                    cluster.protocol.name()
                ),
            ),
        },
    }
}

/// Answers a WebSocket upgrade and hands the connection to the session engine.
fn upgrade(cx: &ListenerContext, metadata: Value, mut req: Request<Body>) -> Reply {
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

/// What an `HTTP` cluster does for an HTTP listener.
#[async_trait]
pub trait HttpForward: Send + Sync {
    async fn forward(
        &self,
        req: Request<Body>,
        endpoint: &crate::model::Endpoint,
        metadata: &Value,
        peer: SocketAddr,
    ) -> Result<Reply, Error>;
}

#[derive(Debug, Deserialize)]
struct HttpClusterSpec {
    #[allow(dead_code)]
    protocol: String,
    #[serde(default)]
    port: Option<u16>,
    /// Speak HTTP/2 over cleartext to the upstream (prior knowledge).
    #[serde(default)]
    http2: bool,
}

pub struct HttpCluster {
    port: Option<u16>,
    client: Client<HttpConnector, BoxBody<Bytes, Error>>,
}

impl std::fmt::Debug for HttpCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCluster")
            .field("port", &self.port)
            .finish()
    }
}

impl HttpCluster {
    pub fn from_spec(spec: &Value, strict: Validation) -> crate::model::Result<HttpCluster> {
        let spec: HttpClusterSpec = crate::model::parse::typed(spec, "spec", strict)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(spec.http2)
            .build(connector);
        Ok(HttpCluster {
            port: spec.port,
            client,
        })
    }
}

#[async_trait]
impl HttpForward for HttpCluster {
    async fn forward(
        &self,
        req: Request<Body>,
        endpoint: &crate::model::Endpoint,
        metadata: &Value,
        peer: SocketAddr,
    ) -> Result<Reply, Error> {
        let target = Target {
            cluster: "",
            session: "",
            egress: false,
            endpoint: Some(endpoint),
            metadata,
        };
        let (host, port) = target.host_port(self.port)?;
        let uri = http_meta::upstream_url("http", &host, port, metadata);
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
        let upstream = upstream.body(body.map_err(Error::from).boxed_unsync())?;
        let resp = self.client.request(upstream).await?;
        let (mut parts, body) = resp.into_parts();
        for hop in HOP_HEADERS {
            parts.headers.remove(*hop);
        }
        Ok(Response::from_parts(
            parts,
            body.map_err(Error::from).boxed_unsync(),
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
