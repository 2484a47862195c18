//! `UnixDomainDgram`: UNIX datagram sockets, a datagram stream per peer. The listener
//! binds `filename` and emits a session per peer socket path (a peer must be bound to
//! a path to be answered); a cluster binds a private path of its own per session and
//! connects to the endpoint's path.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio::net::UnixDatagram;
use tokio::sync::mpsc;

use super::{
    ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Incoming, ListenerContext, ListenerProtocol,
    ListenerTask, Stage, Target, net,
};

use crate::core::build::{Carries, Protocol, bare_cluster, typed_listener};

pub const NAME: &str = "UnixDomainDgram";
const MAX_DATAGRAM: usize = 65536;
const SESSION_QUEUE: usize = 256;

/// Removes a socket file when its socket goes away.
struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn bind(path: &Path) -> io::Result<UnixDatagram> {
    net::bind_unix(path, |p| UnixDatagram::bind(p))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UnixDgramListenerSpec {
    #[serde(alias = "path")]
    #[schema(value_type = String)]
    filename: PathBuf,
}

type Peers = Arc<Mutex<HashMap<PathBuf, mpsc::Sender<Bytes>>>>;

#[async_trait]
impl ListenerProtocol for UnixDgramListenerSpec {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let socket = Arc::new(bind(&self.filename)?);
        let unlink = Unlink(self.filename.clone());
        let filename = self.filename.display().to_string();
        let task = tokio::spawn(async move {
            let _unlink = unlink;
            let peers: Peers = Arc::default();
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let (n, from) = match socket.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(listener = %cx.name, "recv: {e}");
                        continue;
                    }
                };
                let Some(peer) = from.as_pathname().map(Path::to_path_buf) else {
                    tracing::debug!(listener = %cx.name, "datagram from an unbound peer dropped: it could not be answered");
                    continue;
                };
                let datagram = Bytes::copy_from_slice(&buf[..n]);
                let known = peers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&peer)
                    .cloned();
                if let Some(tx) = known
                    && !tx.is_closed()
                {
                    let _ = tx.try_send(datagram);
                    continue;
                }
                let (tx, rx) = mpsc::channel(SESSION_QUEUE);
                let _ = tx.try_send(datagram);
                peers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(peer.clone(), tx);
                let conn = Conn::chunks(
                    Framing::Datagram,
                    Box::new(PeerRx {
                        rx,
                        peers: peers.clone(),
                        peer: peer.clone(),
                    }),
                    Box::new(PeerTx {
                        socket: socket.clone(),
                        peer: peer.clone(),
                    }),
                    peer.display().to_string(),
                );
                let metadata =
                    json!({ "UNIX": { "filename": filename, "peer": peer.display().to_string() } });
                cx.accept(Incoming { metadata, conn });
            }
        });
        Ok(ListenerTask::new(self.filename.display().to_string(), task))
    }
}

struct PeerRx {
    rx: mpsc::Receiver<Bytes>,
    peers: Peers,
    peer: PathBuf,
}

impl Drop for PeerRx {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.get(&self.peer).is_some_and(|tx| tx.is_closed()) {
            peers.remove(&self.peer);
        }
    }
}

#[async_trait]
impl ChunkRx for PeerRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.rx.recv().await)
    }
}

struct PeerTx {
    socket: Arc<UnixDatagram>,
    peer: PathBuf,
}

#[async_trait]
impl ChunkTx for PeerTx {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        self.socket.send_to(&chunk, &self.peer).await.map(drop)
    }
    async fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Default)]
pub struct UnixDgramCluster;

static NEXT_PRIVATE: AtomicU64 = AtomicU64::new(0);

/// A cluster stage's socket: bound to a private path so that the peer can answer.
struct Connected {
    socket: UnixDatagram,
    _unlink: Unlink,
}

struct ConnectedRx(Arc<Connected>);
struct ConnectedTx(Arc<Connected>);

#[async_trait]
impl ChunkRx for ConnectedRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let n = self.0.socket.recv(&mut buf).await?;
        buf.truncate(n);
        Ok(Some(Bytes::from(buf)))
    }
}

#[async_trait]
impl ChunkTx for ConnectedTx {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        self.0.socket.send(&chunk).await.map(drop)
    }
    async fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ClusterProtocol for UnixDgramCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    fn needs_endpoint(&self) -> bool {
        true
    }
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let path = target.path()?;
        let private = std::env::temp_dir().join(format!(
            "l7mp-{}-dgram-{}.sock",
            std::process::id(),
            NEXT_PRIVATE.fetch_add(1, Ordering::Relaxed)
        ));
        let socket = bind(&private)?;
        let unlink = Unlink(private);
        socket.connect(&path).map_err(|e| net::at(&path, e))?;
        let shared = Arc::new(Connected {
            socket,
            _unlink: unlink,
        });
        Ok(Stage::Conn(Conn::chunks(
            Framing::Datagram,
            Box::new(ConnectedRx(shared.clone())),
            Box::new(ConnectedTx(shared)),
            path,
        )))
    }
}

/// UNIX datagram sockets: JSONSocket may run over them.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(typed_listener::<UnixDgramListenerSpec>),
    cluster: Some(bare_cluster::<UnixDgramCluster>),
    listener_schema: Some(crate::core::build::schema::<UnixDgramListenerSpec>),
    cluster_schema: Some(crate::core::build::schema::<crate::core::build::NoSettings>),
    carries: Carries {
        codec: false,
        jsonsocket_listener: true,
        jsonsocket_cluster: true,
    },
};
