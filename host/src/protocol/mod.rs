//! The seams every protocol plugs into: a listener emits sessions, a cluster opens a
//! stage of a session. A stage is either a connection (a duplex of chunks on a
//! transport the host owns) or an in-process transform. One file per protocol; the
//! registry in [`registry`] maps `spec.protocol` names to them.

pub mod af_packet;
pub mod controller;
pub mod fork;
pub mod http;
pub mod http_conn;
pub mod http_meta;
pub mod json_header;
pub mod jsonsocket;
pub mod net;
pub mod pipe;
pub mod registry;
pub mod sctp;
pub mod stdio;
pub mod stream;
pub mod sync;
pub mod tcp;
pub mod udp;
mod udp_batch;
mod udp_server;
pub mod unix;
pub mod unix_dgram;
pub mod websocket;

use std::fmt;
use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use crate::model::{Endpoint, Snapshot};
use crate::proxy::Proxy;

/// Whether a stage keeps message boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Framing {
    /// One chunk per datagram or message (UDP, WebSocket, transforms).
    Datagram,
    /// A byte stream: chunk boundaries carry no meaning (TCP, UNIX stream).
    Stream,
}

/// The receiving half of a connection.
#[async_trait]
pub trait ChunkRx: Send {
    /// The next chunk; `None` at end of stream.
    async fn recv(&mut self) -> io::Result<Option<Bytes>>;

    /// Waits for at least one chunk and appends it, with any others ready now, to
    /// `out`; `false` at end of stream. Datagram sockets receive a batch per syscall.
    async fn recv_batch(&mut self, out: &mut Vec<Bytes>) -> io::Result<bool> {
        match self.recv().await? {
            Some(chunk) => {
                out.push(chunk);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The sending half of a connection.
#[async_trait]
pub trait ChunkTx: Send {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()>;

    /// Sends every chunk of `chunks` in order, emptying it. Datagram sockets send a
    /// batch per syscall.
    async fn send_batch(&mut self, chunks: &mut Vec<Bytes>) -> io::Result<()> {
        for chunk in chunks.drain(..) {
            self.send(chunk).await?;
        }
        Ok(())
    }

    /// The session was routed (`Ok`) or could not be (`Err` with the reason), before
    /// any data flows. Protocols with a handshake of their own (JSONSocket) answer the
    /// peer here; others do nothing.
    async fn routed(&mut self, _outcome: Result<(), &str>) -> io::Result<()> {
        Ok(())
    }

    /// No more chunks will be sent: a byte stream half-closes, a datagram socket does
    /// nothing.
    async fn close(&mut self) -> io::Result<()>;
}

/// A live transport: what a listener accepted or a network cluster connected.
pub struct Conn {
    pub framing: Framing,
    /// Who is on the other side, for session listings.
    pub peer: String,
    /// A connected UDP socket's (local, peer) addresses: what the kernel fast path
    /// needs to take the session over.
    pub udp: Option<UdpPath>,
    io: ConnIo,
}

/// A connected UDP socket as the kernel fast path sees it.
#[derive(Clone)]
pub struct UdpPath {
    pub local: std::net::SocketAddr,
    pub peer: std::net::SocketAddr,
    /// Counts traffic the kernel forwarded as activity (against idle timeouts).
    pub keepalive: Option<Arc<dyn Fn() + Send + Sync>>,
}

enum ConnIo {
    Chunks(Box<dyn ChunkRx>, Box<dyn ChunkTx>),
    /// A byte-stream socket kept whole, so that a session with nothing in-process
    /// between two of them can hand both to splice(2).
    Socket(stream::StreamSocket),
}

impl Conn {
    pub fn chunks(
        framing: Framing,
        rx: Box<dyn ChunkRx>,
        tx: Box<dyn ChunkTx>,
        peer: String,
    ) -> Conn {
        Conn {
            framing,
            peer,
            udp: None,
            io: ConnIo::Chunks(rx, tx),
        }
    }

    pub fn socket(socket: stream::StreamSocket, peer: String) -> Conn {
        Conn {
            framing: Framing::Stream,
            peer,
            udp: None,
            io: ConnIo::Socket(socket),
        }
    }

    pub fn is_socket(&self) -> bool {
        matches!(self.io, ConnIo::Socket(_))
    }

    /// The socket, for the splice(2) path; `None` for chunk transports.
    pub fn into_socket(self) -> Option<stream::StreamSocket> {
        match self.io {
            ConnIo::Socket(s) => Some(s),
            ConnIo::Chunks(..) => None,
        }
    }

    /// Tells a source connection how routing went (see [`ChunkTx::routed`]).
    pub async fn routed(&mut self, outcome: Result<(), &str>) -> io::Result<()> {
        match &mut self.io {
            ConnIo::Chunks(_, tx) => tx.routed(outcome).await,
            ConnIo::Socket(_) => Ok(()),
        }
    }

    /// The two halves, for the chunk path.
    pub fn into_halves(self) -> (Box<dyn ChunkRx>, Box<dyn ChunkTx>) {
        match self.io {
            ConnIo::Chunks(rx, tx) => (rx, tx),
            ConnIo::Socket(s) => s.into_halves(),
        }
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("framing", &self.framing)
            .field("peer", &self.peer)
            .finish()
    }
}

/// What a transform sees of its session.
pub struct TransformContext<'a> {
    pub session: &'a str,
    pub metadata: &'a Value,
}

/// An in-process stage: chunks in, zero or more chunks out, in one direction.
pub trait Transform: Send {
    /// Handles one chunk, pushing what it produces to `out`. An error drops the chunk
    /// and is logged against the session; it does not end the session.
    fn process(
        &mut self,
        chunk: Bytes,
        cx: &TransformContext<'_>,
        out: &mut Vec<Bytes>,
    ) -> Result<(), String>;
}

/// Why an async stage could not process a chunk.
#[derive(Debug)]
pub enum StageError {
    /// This chunk is lost (logged and counted); the session goes on.
    Chunk(String),
    /// The session must end.
    Session(String),
}

/// An in-process stage that awaits (a Wasm plugin): chunks in, zero or more out. It
/// may rewrite its session's metadata.
#[async_trait]
pub trait AsyncTransform: Send {
    async fn process(
        &mut self,
        chunk: Bytes,
        session: &crate::session::Session,
        out: &mut Vec<Bytes>,
    ) -> Result<(), StageError>;
}

/// One stage of a session, as a cluster opened it.
pub enum Stage {
    Conn(Conn),
    Transform(Box<dyn Transform>),
    Plugin(Box<dyn AsyncTransform>),
}

/// Where a cluster stage should connect.
pub struct Target<'a> {
    pub cluster: &'a str,
    /// The session's name, for logs.
    pub session: &'a str,
    /// The stage stands in the route's egress chain (it sees answers, not requests).
    pub egress: bool,
    pub endpoint: Option<&'a Endpoint>,
    /// The session's metadata after rewrites (Sync labels, upstream URLs, headers).
    pub metadata: &'a Value,
}

/// A cluster protocol, built from a cluster's `spec` when the cluster is created.
#[async_trait]
pub trait ClusterProtocol: Send + Sync + fmt::Debug {
    /// The protocol's name as l7mp spells it.
    fn name(&self) -> &'static str;
    /// Network clusters need an endpoint to connect to; transforms do not.
    fn needs_endpoint(&self) -> bool {
        false
    }
    /// An in-process cluster (a transform, the API, a Sync group): it lists one
    /// endpoint at `<VIRTUAL>`, as the original's virtual clusters did.
    fn is_virtual(&self) -> bool {
        false
    }
    /// The Wasm plugin the cluster runs, if it does.
    fn plugin(&self) -> Option<&str> {
        None
    }
    /// An `HTTP` cluster forwards HTTP listeners' requests.
    fn http(&self) -> Option<&dyn http::HttpForward> {
        None
    }
    /// Opens this cluster's stage for one session.
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage>;
}

/// A new session a listener accepted.
pub struct Incoming {
    pub metadata: Value,
    pub conn: Conn,
}

/// What a listener needs from the proxy while it runs.
#[derive(Clone)]
pub struct ListenerContext {
    pub name: String,
    pub proxy: Arc<Proxy>,
    /// The configuration the listener is created in (not yet the live one).
    pub snapshot: Arc<Snapshot>,
    /// A layer between a transport listener and the engine (JSONSocket's handshake)
    /// takes what the transport accepts; `None` hands it straight to the engine.
    pub intercept: Option<Arc<dyn Fn(Incoming) + Send + Sync>>,
}

impl ListenerContext {
    /// Hands a new session to the session engine, or to the layer above the transport.
    pub fn accept(&self, incoming: Incoming) {
        match &self.intercept {
            Some(layer) => layer(incoming),
            None => crate::session::engine::spawn(self.proxy.clone(), &self.name, incoming),
        }
    }
}

/// A running listener; dropping it stops accepting (established sessions go on).
pub struct ListenerTask {
    pub local_addr: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ListenerTask {
    pub fn new(local_addr: String, task: tokio::task::JoinHandle<()>) -> ListenerTask {
        ListenerTask {
            local_addr,
            task: Some(task),
        }
    }

    /// Stops accepting and waits until the socket is closed, so that its address is
    /// free again when this returns.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ListenerTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A listener protocol, built from a listener's `spec` when the listener is created.
#[async_trait]
pub trait ListenerProtocol: Send + Sync + fmt::Debug {
    /// Binds now, so a bind error reaches whoever created the listener, then accepts in
    /// a task of its own.
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask>;
    /// Two specs that bind the same way can swap without closing the socket.
    fn same_binding(&self, other: &dyn ListenerProtocol) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
    /// The Wasm codec plugin the listener frames with, if it does.
    fn plugin(&self) -> Option<&str> {
        None
    }
}

impl Target<'_> {
    /// The endpoint's host and port, the port from the endpoint or else the cluster.
    pub fn host_port(&self, cluster_port: Option<u16>) -> io::Result<(String, u16)> {
        let ep = self
            .endpoint
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no endpoint"))?;
        let host = ep.spec.address.clone().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("endpoint '{}' has no address", ep.name),
            )
        })?;
        let port = ep.spec.port.or(cluster_port).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("neither endpoint '{}' nor its cluster sets a port", ep.name),
            )
        })?;
        Ok((host, port))
    }

    /// The endpoint's filesystem path (UNIX sockets): `spec.path`, else `spec.address`.
    pub fn path(&self) -> io::Result<String> {
        let ep = self
            .endpoint
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no endpoint"))?;
        ep.spec
            .path
            .clone()
            .or_else(|| ep.spec.address.clone())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("endpoint '{}' has no path", ep.name),
                )
            })
    }
}
