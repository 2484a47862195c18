//! Stages: what a cluster opens for one session. A stage is a connection ([`Conn`]) or
//! an in-process [`Transform`]; built-in transforms and Wasm plugins implement the same
//! trait and see their session through the same [`StageContext`].

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;

use super::conn::Conn;
use super::http::{BoxBody, BoxError, HttpReply};
use super::settings::EndpointSpec;

/// What a stage sees of its session while it runs.
pub trait StageContext: Send + Sync {
    /// The session's name, for logs and events.
    fn session(&self) -> &str;
    /// The session's metadata as it is now: a rewrite by any stage is seen by the next
    /// chunk of every other stage.
    fn metadata(&self) -> Arc<Value>;
    /// Replaces the session's metadata (a plugin's `metadata` update).
    fn replace_metadata(&self, metadata: Value);
    /// Records an event in the session's event list (and the log).
    fn event(&self, event: &str, message: String, content: Value);
}

/// A session of its own, for a stage run outside the engine: tests, benchmarks, and
/// `l7mp plugin test`. Events are kept in order.
pub struct Detached {
    name: String,
    metadata: Mutex<Arc<Value>>,
    pub events: Mutex<Vec<(String, String)>>,
}

impl Detached {
    pub fn new(name: &str, metadata: Value) -> Detached {
        Detached {
            name: name.to_owned(),
            metadata: Mutex::new(Arc::new(metadata)),
            events: Mutex::default(),
        }
    }
}

impl StageContext for Detached {
    fn session(&self) -> &str {
        &self.name
    }
    fn metadata(&self) -> Arc<Value> {
        self.metadata
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
    fn replace_metadata(&self, metadata: Value) {
        *self.metadata.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(metadata);
    }
    fn event(&self, event: &str, message: String, _content: Value) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((event.to_owned(), message));
    }
}

/// Why a transform could not process a chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// This chunk is lost (logged and counted); the session goes on.
    #[error("{0}")]
    Chunk(String),
    /// The session must end.
    #[error("{0}")]
    Session(String),
}

/// An in-process stage: chunks in, zero or more chunks out, in one direction. Built-in
/// transforms and Wasm plugins alike.
#[async_trait]
pub trait Transform: Send {
    /// Handles one chunk, pushing what it produces to `out`.
    async fn process(
        &mut self,
        chunk: Bytes,
        cx: &dyn StageContext,
        out: &mut Vec<Bytes>,
    ) -> Result<(), StageError>;
}

/// One stage of a session, as a cluster opened it.
pub enum Stage {
    Conn(Conn),
    Transform(Box<dyn Transform>),
}

/// The endpoint a stage connects to, as the cluster's balancer picked it.
#[derive(Debug, Clone, Copy)]
pub struct EndpointRef<'a> {
    pub name: &'a str,
    pub spec: &'a EndpointSpec,
}

/// Where a cluster stage should connect.
pub struct Target<'a> {
    pub cluster: &'a str,
    /// The session's name, for logs.
    pub session: &'a str,
    /// The stage stands in the route's egress chain (it sees answers, not requests).
    pub egress: bool,
    pub endpoint: Option<EndpointRef<'a>>,
    /// The session's metadata after rewrites (Sync labels, upstream URLs, headers).
    pub metadata: &'a Value,
}

/// What an `HTTP` cluster does for an HTTP listener's request.
#[async_trait]
pub trait HttpForward: Send + Sync {
    async fn forward(
        &self,
        req: hyper::Request<BoxBody>,
        endpoint: EndpointRef<'_>,
        metadata: &Value,
        peer: SocketAddr,
    ) -> Result<HttpReply, BoxError>;
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
    /// `L7mpController` and `Prometheus`: HTTP requests routed here get the proxy's
    /// own REST API and `/metrics`.
    fn serves_api(&self) -> bool {
        false
    }
    /// An `HTTP` cluster forwards HTTP listeners' requests.
    fn http(&self) -> Option<&dyn HttpForward> {
        None
    }
    /// Opens this cluster's stage for one session.
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage>;
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
