//! WebSocket (tokio-tungstenite): a datagram stream, one chunk per message.
//!
//! The listener performs the HTTP upgrade and puts the request into the session's
//! metadata (`HTTP.url`, `HTTP.headers`), so rules can route on path and headers; it
//! accepts the first subprotocol the client offers. The cluster connects to its
//! endpoint (or, with no endpoints, to the host and port in `metadata.HTTP.url`) and
//! asks for the path and query in `metadata.HTTP.url` (a rewrite may set all of them),
//! forwarding the client's end-to-end headers and subprotocols. Pings are
//! answered and close handshakes completed by tungstenite.
//!
//! A chunk carries no message kind, so each connection sends in the kind it last
//! received (text or binary): an echo answers text with text. A cluster's first
//! messages use `spec.message` (`binary`, the default, `text`, or `auto`: text when
//! the chunk is valid UTF-8).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::http_meta;
use super::net::{self, HostPort};
use super::{
    ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Incoming, ListenerContext, ListenerProtocol,
    ListenerTask, Stage, Target,
};

use super::secure;
use crate::core::build::{BuildContext, Carries, Protocol};
use crate::tls::{Acceptor, ClientTlsSpec, Connector, ServerTlsSpec};

pub const NAME: &str = "WebSocket";
/// Largest message accepted unless `max_message_size` says otherwise.
const DEFAULT_MAX_MESSAGE: usize = 16 << 20;

/// Request headers that belong to one hop (or to the handshake) and are not forwarded.
const HOP_HEADERS: &[&str] = &[
    "host",
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-accept",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
];

pub(crate) fn config(max_message_size: Option<usize>) -> WebSocketConfig {
    let max = max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE);
    // Small buffers: an idle session should not hold 256 KiB of them.
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WsListenerSpec {
    port: u16,
    #[serde(default)]
    address: Option<String>,
    #[serde(default, deserialize_with = "crate::core::bounds::message_size")]
    max_message_size: Option<usize>,
    /// wss: `{cert, key, client_ca?, alpn?}`.
    #[serde(default)]
    tls: Option<ServerTlsSpec>,
}

#[derive(Debug)]
pub struct WsListener {
    spec: WsListenerSpec,
    tls: Option<Arc<Acceptor>>,
}

fn listener(spec: &Value, cx: &BuildContext<'_>) -> crate::core::Result<Arc<dyn ListenerProtocol>> {
    let spec: WsListenerSpec = cx.parse(spec, "spec")?;
    let tls = secure::acceptor(spec.tls.as_ref(), cx, &["http/1.1"])?;
    Ok(Arc::new(WsListener { spec, tls }))
}

#[async_trait]
impl ListenerProtocol for WsListener {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let listener = net::listen_tcp(self.spec.address.as_deref(), self.spec.port)?;
        let local = listener.local_addr()?;
        let (max, tls) = (self.spec.max_message_size, self.tls.clone());
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = net::accept_tcp(&listener, &cx.name).await;
                let _ = stream.set_nodelay(true);
                let (cx, tls) = (cx.clone(), tls.clone());
                let mut metadata = net::metadata("TCP", net::accepted_at(local, &stream), peer);
                // The handshakes run in their own task, and in bounded time, so a slow
                // client holds up no other.
                tokio::spawn(async move {
                    let handshakes = async {
                        match tls {
                            None => hand_on(&cx, accept(stream, local, max, metadata).await, peer),
                            Some(acceptor) => {
                                let (stream, tls) = acceptor.accept(stream).await?;
                                metadata["TLS"] = tls;
                                hand_on(&cx, accept(stream, local, max, metadata).await, peer)
                            }
                        }
                    };
                    let outcome = tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT * 2, handshakes)
                        .await
                        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")));
                    if let Err(e) = outcome {
                        tracing::debug!(listener = %cx.name, %peer, "WebSocket handshake failed: {e}")
                    }
                });
            }
        });
        Ok(ListenerTask::new(local.to_string(), task))
    }
}

/// Hands an upgraded connection to the sink.
fn hand_on<S>(
    cx: &ListenerContext,
    upgraded: io::Result<(WebSocketStream<S>, Value)>,
    peer: std::net::SocketAddr,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ws, metadata) = upgraded?;
    cx.accept(Incoming {
        metadata,
        conn: conn(ws, net::canonical(peer).to_string(), MessageKind::Binary),
    });
    Ok(())
}

/// The server side of the upgrade: the request goes into the metadata's `HTTP`, and
/// the first subprotocol the client offers is accepted.
// tungstenite's handshake callback returns its error response by value.
#[allow(clippy::result_large_err)]
async fn accept<S>(
    stream: S,
    local: std::net::SocketAddr,
    max: Option<usize>,
    mut metadata: Value,
) -> io::Result<(WebSocketStream<S>, Value)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let scheme = if metadata.get("TLS").is_some() { "wss" } else { "ws" };
    let mut http = Value::Null;
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        http = http_meta::request_metadata(req, local, scheme);
        let offered = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok());
        if let Some(first) = offered.and_then(|o| o.split(',').next()).map(str::trim)
            && let Ok(value) = HeaderValue::from_str(first)
        {
            resp.headers_mut().insert("sec-websocket-protocol", value);
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config(max)))
        .await
        .map_err(ws_error)?;
    metadata["HTTP"] = http;
    Ok((ws, metadata))
}

/// The kind a connection sends its next message in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    #[default]
    Binary,
    Text,
    Auto,
}

/// Whether the last message received was text; shared by a connection's two halves.
struct Kind {
    text: AtomicBool,
    fallback: MessageKind,
    received_any: AtomicBool,
}

pub(crate) fn conn<S>(ws: WebSocketStream<S>, peer: String, fallback: MessageKind) -> Conn
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let kind = Arc::new(Kind {
        text: AtomicBool::new(false),
        fallback,
        received_any: AtomicBool::new(false),
    });
    Conn::chunks(
        Framing::Datagram,
        Box::new(WsRx {
            stream,
            kind: kind.clone(),
        }),
        Box::new(WsTx { sink, kind }),
        peer,
    )
}

struct WsRx<S> {
    stream: SplitStream<WebSocketStream<S>>,
    kind: Arc<Kind>,
}

fn ws_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::ConnectionAborted, "WebSocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {other}")),
    }
}

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Unpin + Send> ChunkRx for WsRx<S> {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let Some(message) = self.stream.next().await else {
                return Ok(None);
            };
            let (chunk, text) = match message.map_err(ws_error)? {
                Message::Binary(b) => (b, false),
                Message::Text(t) => (Bytes::from(t), true),
                Message::Close(_) => return Ok(None),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            self.kind.text.store(text, Ordering::Relaxed);
            self.kind.received_any.store(true, Ordering::Relaxed);
            return Ok(Some(chunk));
        }
    }
}

struct WsTx<S> {
    sink: SplitSink<WebSocketStream<S>, Message>,
    kind: Arc<Kind>,
}

impl<S> WsTx<S> {
    fn message(&self, chunk: Bytes) -> Message {
        let text = if self.kind.received_any.load(Ordering::Relaxed) {
            self.kind.text.load(Ordering::Relaxed)
        } else {
            match self.kind.fallback {
                MessageKind::Binary => false,
                MessageKind::Text => true,
                MessageKind::Auto => std::str::from_utf8(&chunk).is_ok(),
            }
        };
        if text && std::str::from_utf8(&chunk).is_ok() {
            // SAFETY: just checked to be UTF-8.
            Message::Text(unsafe { tungstenite::Utf8Bytes::from_bytes_unchecked(chunk) })
        } else {
            // Binary, or text that is not UTF-8, which can only go as binary.
            Message::Binary(chunk)
        }
    }
}

#[async_trait]
impl<S: AsyncRead + AsyncWrite + Unpin + Send> ChunkTx for WsTx<S> {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        let message = self.message(chunk);
        self.sink.send(message).await.map_err(ws_error)
    }
    async fn close(&mut self) -> io::Result<()> {
        match self.sink.close().await {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Ok(())
            }
            Err(e) => Err(ws_error(e)),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct WsClusterSpec {
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    bind: Option<HostPort>,
    #[serde(default, deserialize_with = "crate::core::bounds::message_size")]
    max_message_size: Option<usize>,
    #[serde(default)]
    message: MessageKind,
    /// wss to the endpoints: `{ca?, server_name?, cert?, key?, verify}`.
    #[serde(default)]
    tls: Option<ClientTlsSpec>,
}

#[derive(Debug)]
pub struct WsCluster {
    spec: WsClusterSpec,
    tls: Option<Arc<Connector>>,
}

fn cluster(spec: &Value, cx: &BuildContext<'_>) -> crate::core::Result<Arc<dyn ClusterProtocol>> {
    let spec: WsClusterSpec = cx.parse(spec, "spec")?;
    let tls = secure::connector(spec.tls.as_ref(), cx, &["http/1.1"])?;
    Ok(Arc::new(WsCluster { spec, tls }))
}

/// The upgrade request for an upstream: its path, query and forwarded headers come
/// from the session's metadata.
fn upstream_request(scheme: &str, host: &str, port: u16, metadata: &Value) -> io::Result<Request> {
    let uri = http_meta::upstream_url(scheme, host, port, metadata);
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(uri.as_str())
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("upstream URL {uri}: {e}"),
            )
        })?;
    request
        .headers_mut()
        .extend(http_meta::forwarded_headers(metadata, HOP_HEADERS));
    Ok(request)
}

#[async_trait]
impl ClusterProtocol for WsCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    /// Without endpoints, the cluster connects where `metadata.HTTP.url` points.
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let (host, port) = match target.endpoint {
            Some(_) => target.host_port(self.spec.port)?,
            None => {
                let url = target.metadata.pointer("/HTTP/url");
                let host = url.and_then(|u| u.get("host")).and_then(Value::as_str);
                let port = url
                    .and_then(|u| u.get("port"))
                    .and_then(Value::as_u64)
                    .and_then(|p| u16::try_from(p).ok())
                    .or(self.spec.port);
                match (host, port) {
                    (Some(h), Some(p)) if !h.is_empty() => (h.to_owned(), p),
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "no endpoint, and no host and port in metadata.HTTP.url",
                        ));
                    }
                }
            }
        };
        let stream = net::connect_tcp(&host, port, self.spec.bind.as_ref()).await?;
        let remote = stream.peer_addr()?;
        let config = Some(config(self.spec.max_message_size));
        let handshake_failed = |e| net::at(remote, ws_error(e));
        let conn = match &self.tls {
            None => {
                let request = upstream_request("ws", &host, port, target.metadata)?;
                let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, config)
                    .await
                    .map_err(handshake_failed)?;
                conn(ws, remote.to_string(), self.spec.message)
            }
            Some(tls) => {
                let stream = tls.connect(&host, stream).await?;
                let request = upstream_request("wss", &host, port, target.metadata)?;
                let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, config)
                    .await
                    .map_err(handshake_failed)?;
                conn(ws, remote.to_string(), self.spec.message)
            }
        };
        Ok(Stage::Conn(conn))
    }
}

/// WebSocket (also `ws`): JSONSocket may run over it.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &["ws"],
    listener: Some(listener),
    cluster: Some(cluster),
    listener_schema: Some(crate::core::build::schema::<WsListenerSpec>),
    cluster_schema: Some(crate::core::build::schema::<WsClusterSpec>),
    carries: Carries {
        codec: false,
        jsonsocket_listener: true,
        jsonsocket_cluster: true,
    },
};
