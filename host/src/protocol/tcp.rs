//! TCP: a listener that emits a session per connection, a cluster that connects per
//! session stage.

use crate::core::build::{Carries, Protocol, typed_cluster, typed_listener};
use std::io;

use async_trait::async_trait;
use serde::Deserialize;

use super::net::{self};
use super::{
    ClusterProtocol, Conn, Incoming, ListenerContext, ListenerProtocol, ListenerTask, Stage, Target,
};
use crate::core::stream::StreamSocket;

pub const NAME: &str = "TCP";

#[derive(Debug, Deserialize)]
pub struct TcpListenerSpec {
    port: u16,
    #[serde(default)]
    address: Option<String>,
}

#[async_trait]
impl ListenerProtocol for TcpListenerSpec {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let listener = net::listen_tcp(self.address.as_deref(), self.port)?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = net::accept_tcp(&listener, &cx.name).await;
                let _ = stream.set_nodelay(true);
                // Bound to one address, the listener knows where clients connected;
                // bound to all, it has to ask.
                let dst = if local.ip().is_unspecified() {
                    stream.local_addr().unwrap_or(local)
                } else {
                    local
                };
                let metadata = net::metadata("TCP", dst, peer);
                let conn =
                    Conn::socket(StreamSocket::Tcp(stream), net::canonical(peer).to_string());
                cx.accept(Incoming { metadata, conn });
            }
        });
        Ok(ListenerTask::new(local.to_string(), task))
    }
}

/// `port` and `bind`, as every socket cluster.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct TcpClusterSpec(net::SocketClusterSpec);

#[async_trait]
impl ClusterProtocol for TcpClusterSpec {
    fn name(&self) -> &'static str {
        NAME
    }
    fn needs_endpoint(&self) -> bool {
        true
    }
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let (host, port) = target.host_port(self.0.port)?;
        let stream = net::connect_tcp(&host, port, self.0.bind.as_ref()).await?;
        let remote = stream.peer_addr()?;
        Ok(Stage::Conn(Conn::socket(
            StreamSocket::Tcp(stream),
            remote.to_string(),
        )))
    }
}

/// TCP: a codec or JSONSocket may run over it.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(typed_listener::<TcpListenerSpec>),
    cluster: Some(typed_cluster::<TcpClusterSpec>),
    carries: Carries {
        codec: true,
        jsonsocket_listener: true,
        jsonsocket_cluster: true,
    },
};
