//! TCP: a listener that emits a session per connection, a cluster that connects per
//! session stage.

use std::io;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::secure::{self, ServerTls};
use super::{
    ClusterProtocol, Conn, Incoming, ListenerContext, ListenerProtocol, ListenerTask, Stage, Target,
    net,
};
use crate::core::build::{BuildContext, Carries, Protocol};
use crate::core::error::Result;
use crate::core::stream::StreamSocket;
use crate::tls::{self, ClientTlsSpec, Connector, ServerTlsSpec};

pub const NAME: &str = "TCP";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TcpListenerSpec {
    port: u16,
    #[serde(default)]
    address: Option<String>,
    /// Terminates TLS (`{cert, key, client_ca?, alpn?}`) or passes it through
    /// (`{mode: passthrough}`), with the handshake in the `TLS` metadata.
    #[serde(default)]
    tls: Option<ServerTlsSpec>,
}

#[derive(Debug)]
pub struct TcpListener {
    spec: TcpListenerSpec,
    tls: Option<ServerTls>,
}

fn listener(spec: &Value, cx: &BuildContext<'_>) -> Result<Arc<dyn ListenerProtocol>> {
    let spec: TcpListenerSpec = cx.parse(spec, "spec")?;
    let tls = secure::server(spec.tls.as_ref(), cx, &[])?;
    Ok(Arc::new(TcpListener { spec, tls }))
}

#[async_trait]
impl ListenerProtocol for TcpListener {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let listener = net::listen_tcp(self.spec.address.as_deref(), self.spec.port)?;
        let local = listener.local_addr()?;
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = net::accept_tcp(&listener, &cx.name).await;
                let _ = stream.set_nodelay(true);
                let metadata = net::metadata("TCP", net::accepted_at(local, &stream), peer);
                let from = net::canonical(peer).to_string();
                match &tls {
                    None => cx.accept(Incoming {
                        metadata,
                        conn: Conn::socket(StreamSocket::Tcp(stream), from),
                    }),
                    // The handshake runs on its own, so a slow client holds up no other.
                    Some(tls) => {
                        tokio::spawn(secured(tls.clone(), cx.clone(), stream, metadata, from));
                    }
                }
            }
        });
        Ok(ListenerTask::new(local.to_string(), task))
    }
}

/// Hands on a connection once its TLS is terminated, or its ClientHello read.
async fn secured(
    tls: ServerTls,
    cx: ListenerContext,
    stream: tokio::net::TcpStream,
    mut metadata: Value,
    from: String,
) {
    let conn = match tls {
        ServerTls::Terminate(acceptor) => {
            secure::accept(&acceptor, stream, &mut metadata, from.clone()).await
        }
        ServerTls::Passthrough => match tls::sni::client_hello(&stream).await {
            Ok(hello) => {
                metadata["TLS"] = hello;
                Ok(Conn::socket(StreamSocket::Tcp(stream), from.clone()))
            }
            Err(e) => Err(e),
        },
    };
    match conn {
        Ok(conn) => cx.accept(Incoming { metadata, conn }),
        Err(e) => tracing::debug!(listener = %cx.name, peer = %from, "TLS: {e}"),
    }
}

/// `port` and `bind`, as every socket cluster, and `tls` to originate TLS.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TcpClusterSpec {
    /// The endpoints' port (an endpoint's own `spec.port` wins).
    #[serde(default)]
    port: Option<u16>,
    /// Where the cluster's sockets bind.
    #[serde(default)]
    bind: Option<net::HostPort>,
    /// Originates TLS to the endpoints (`{ca?, server_name?, cert?, key?, verify}`).
    #[serde(default)]
    tls: Option<ClientTlsSpec>,
}

#[derive(Debug)]
pub struct TcpCluster {
    spec: TcpClusterSpec,
    tls: Option<Arc<Connector>>,
}

fn cluster(spec: &Value, cx: &BuildContext<'_>) -> Result<Arc<dyn ClusterProtocol>> {
    let spec: TcpClusterSpec = cx.parse(spec, "spec")?;
    let tls = secure::connector(spec.tls.as_ref(), cx, &[])?;
    Ok(Arc::new(TcpCluster { spec, tls }))
}

#[async_trait]
impl ClusterProtocol for TcpCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    fn needs_endpoint(&self) -> bool {
        true
    }
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let (host, port) = target.host_port(self.spec.port)?;
        let stream = net::connect_tcp(&host, port, self.spec.bind.as_ref()).await?;
        let remote = stream.peer_addr()?.to_string();
        Ok(Stage::Conn(match &self.tls {
            None => Conn::socket(StreamSocket::Tcp(stream), remote),
            Some(tls) => secure::connect(tls, &host, stream, remote).await?,
        }))
    }
}

/// TCP: a codec or JSONSocket may run over it.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(listener),
    cluster: Some(cluster),
    listener_schema: Some(crate::core::build::schema::<TcpListenerSpec>),
    cluster_schema: Some(crate::core::build::schema::<TcpClusterSpec>),
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
        let spec = TcpListener {
            spec: TcpListenerSpec {
                port: 0,
                address: Some("127.0.0.1".into()),
                tls: None,
            },
            tls: None,
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
