//! Listeners: a listener protocol binds, accepts, and hands each new session (or, for
//! HTTP, each request) to the [`SessionSink`] it was started with. It knows nothing of
//! routing or of the proxy.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use hyper::StatusCode;
use serde_json::Value;

use super::conn::Conn;
use super::http::{HttpBody, HttpReply, error_reply};
use super::settings::{HttpLimits, ListenerOptions};

/// A new session a listener accepted.
pub struct Incoming {
    pub metadata: Value,
    pub conn: Conn,
}

/// Where a listener hands what it accepts: the session engine, or a layer that
/// frames or handshakes first (a codec, JSONSocket) and hands on to the sink it wraps.
/// Layers compose to any depth.
#[async_trait]
pub trait SessionSink: Send + Sync {
    /// Takes a new session; it runs on its own from here.
    fn accept(&self, incoming: Incoming);

    /// Routes one HTTP request (metadata `IP`, `TCP`, `HTTP`) and answers it.
    async fn request(
        &self,
        _req: hyper::Request<HttpBody>,
        _metadata: Value,
        _peer: SocketAddr,
    ) -> HttpReply {
        error_reply(
            StatusCode::BAD_GATEWAY,
            "this listener does not route HTTP requests",
        )
    }

    /// The bounds HTTP connections are served with now (`admin.http`, read live).
    fn http_limits(&self) -> HttpLimits {
        HttpLimits::default()
    }
}

/// What a listener gets when it starts.
#[derive(Clone)]
pub struct ListenerContext {
    pub name: String,
    pub sink: Arc<dyn SessionSink>,
    /// The listener's `options` as configured.
    pub options: ListenerOptions,
}

impl ListenerContext {
    /// Hands a new session on.
    pub fn accept(&self, incoming: Incoming) {
        self.sink.accept(incoming)
    }

    /// The same listener, handing its sessions to `sink` (a layer that wraps this one's).
    pub fn with_sink(&self, sink: Arc<dyn SessionSink>) -> ListenerContext {
        ListenerContext {
            sink,
            ..self.clone()
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
    /// The Wasm codec plugin the listener frames with, if it does.
    fn plugin(&self) -> Option<&str> {
        None
    }
}

/// For tests of a listener without the engine: a sink that hands every session to a
/// channel.
#[cfg(test)]
pub(crate) mod testing {
    use tokio::sync::mpsc;

    use super::*;

    pub struct ChannelSink(mpsc::UnboundedSender<Incoming>);

    impl SessionSink for ChannelSink {
        fn accept(&self, incoming: Incoming) {
            let _ = self.0.send(incoming);
        }
    }

    /// A context for listener `name` whose sessions arrive on the receiver.
    pub fn context(name: &str) -> (ListenerContext, mpsc::UnboundedReceiver<Incoming>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cx = ListenerContext {
            name: name.to_owned(),
            sink: Arc::new(ChannelSink(tx)),
            options: ListenerOptions::default(),
        };
        (cx, rx)
    }
}
