//! `Stdio`: the proxy's own standard input and output as a stage. One session holds it
//! at a time; another session asking for it fails to connect (and may retry).

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::{ChunkRx, ClusterProtocol, Conn, Framing, Stage, Target, stream};
use crate::core::build::Protocol;


pub const NAME: &str = "Stdio";

static STDIO: std::sync::LazyLock<Arc<Mutex<()>>> =
    std::sync::LazyLock::new(|| Arc::new(Mutex::new(())));

#[derive(Debug, Default)]
pub struct StdioCluster;

/// Holds the stdio lock for as long as the session reads.
struct Held {
    inner: Box<dyn ChunkRx>,
    _guard: OwnedMutexGuard<()>,
}

#[async_trait]
impl ChunkRx for Held {
    async fn recv(&mut self) -> io::Result<Option<bytes::Bytes>> {
        self.inner.recv().await
    }
}

#[async_trait]
impl ClusterProtocol for StdioCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    fn is_virtual(&self) -> bool {
        true
    }
    async fn connect(&self, _target: Target<'_>) -> io::Result<Stage> {
        let guard = STDIO.clone().try_lock_owned().map_err(|_| {
            io::Error::new(
                io::ErrorKind::ResourceBusy,
                "stdio is in use by another session",
            )
        })?;
        let conn = stream::conn(tokio::io::stdin(), tokio::io::stdout(), "stdio".into());
        let (rx, tx) = conn.into_halves();
        Ok(Stage::Conn(Conn::chunks(
            Framing::Stream,
            Box::new(Held {
                inner: rx,
                _guard: guard,
            }),
            tx,
            "stdio".into(),
        )))
    }
}

/// The proxy's own stdin and stdout; JSONSocket clusters may run over it.
pub const PROTOCOL: Protocol = Protocol::bare_cluster::<StdioCluster>(NAME, Protocol::JSONSOCKET_CLUSTER);
