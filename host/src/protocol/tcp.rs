//! TCP: a listener that emits a session per connection, a cluster that connects per
//! session stage.

use std::io;

use async_trait::async_trait;
use serde::Deserialize;

use super::net::{self};
use super::{
    ClusterProtocol, Conn, Incoming, ListenerContext, ListenerProtocol, ListenerTask, Stage, Target,
};
use crate::core::build::{Carries, Protocol, typed_cluster, typed_listener};
use crate::core::stream::StreamSocket;

pub const NAME: &str = "TCP";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
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
    listener_schema: Some(crate::core::build::schema::<TcpListenerSpec>),
    cluster_schema: Some(crate::core::build::schema::<net::SocketClusterSpec>),
    carries: Carries {
        codec: true,
        jsonsocket_listener: true,
        jsonsocket_cluster: true,
    },
};

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::core::listener::testing;

    #[tokio::test]
    async fn a_listener_hands_each_connection_to_its_sink() {
        let spec = TcpListenerSpec {
            port: 0,
            address: Some("127.0.0.1".into()),
        };
        let (cx, mut sessions) = testing::context("t");
        let task = spec.start(cx).await.unwrap();
        let addr: std::net::SocketAddr = task.local_addr.parse().unwrap();
        let client = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"hi").unwrap();
            let mut answer = [0u8; 2];
            s.read_exact(&mut answer).unwrap();
            (s.local_addr().unwrap().port(), answer)
        });
        let incoming = tokio::time::timeout(Duration::from_secs(5), sessions.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(incoming.metadata["TCP"]["dst_port"], addr.port());
        assert!(incoming.conn.is_socket(), "kept whole for splice(2)");
        let (mut rx, mut tx) = incoming.conn.into_halves();
        assert_eq!(rx.recv().await.unwrap(), Some(Bytes::from_static(b"hi")));
        tx.send(Bytes::from_static(b"yo")).await.unwrap();
        let (port, answer) = client.await.unwrap();
        assert_eq!(&answer, b"yo");
        assert_eq!(incoming.metadata["TCP"]["src_port"], port);
        task.stop().await;
    }
}
