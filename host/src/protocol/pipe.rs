//! `PIPE`: named FIFOs (or file descriptors the proxy inherited) as a byte stream.
//! `read` is where the stage reads from, `write` where it writes to; either may be
//! left out (nothing comes back, or what is sent is dropped). Descriptors must be
//! pipes the proxy was started with; each session uses a copy of its own. A listener keeps its
//! FIFOs open for reading and writing so that writers may come and go without ending
//! its session; a cluster opens them per session, so a FIFO nobody reads from is a
//! connect error and a writer that closes ends that direction.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::OnceLock;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio::net::unix::pipe;

use super::{
    ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Incoming, ListenerContext, ListenerProtocol,
    ListenerTask, Stage, Target,
};
use crate::core::build::{BuildContext, Protocol};
use crate::core::stream::{StreamRx, StreamTx};

pub const NAME: &str = "PIPE";

#[derive(Debug, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PipeSpec {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    read: Option<PathBuf>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    write: Option<PathBuf>,
    #[serde(default)]
    read_fd: Option<i32>,
    #[serde(default)]
    write_fd: Option<i32>,
}

impl PipeSpec {
    pub fn validate(&self) -> Result<(), String> {
        for (field, fd) in [("read_fd", self.read_fd), ("write_fd", self.write_fd)] {
            if let Some(fd) = fd {
                inherited(fd).map_err(|e| format!("{field}: {e}"))?;
            }
        }
        if self.read.is_some() && self.read_fd.is_some()
            || self.write.is_some() && self.write_fd.is_some()
        {
            return Err("give a path or a file descriptor for each direction, not both".into());
        }
        if self.read.is_none()
            && self.read_fd.is_none()
            && self.write.is_none()
            && self.write_fd.is_none()
        {
            return Err(
                "a PIPE needs 'read' and/or 'write' (FIFO paths) or 'read_fd'/'write_fd'".into(),
            );
        }
        Ok(())
    }

    /// Opens both directions. `keep_open`: hold a write reference on the read FIFO
    /// (and a read reference on the write FIFO), as a listener does.
    fn open(&self, keep_open: bool) -> io::Result<Conn> {
        let rx: Box<dyn ChunkRx> = match (&self.read, self.read_fd) {
            (Some(path), _) => Box::new(StreamRx::new(
                pipe::OpenOptions::new()
                    .read_write(keep_open)
                    .open_receiver(path)
                    .map_err(|e| super::net::at(path.display(), e))?,
            )),
            (None, Some(fd)) => Box::new(StreamRx::new(pipe::Receiver::from_owned_fd(duplicate(
                fd,
            )?)?)),
            (None, None) => Box::new(Nothing),
        };
        let tx: Box<dyn ChunkTx> = match (&self.write, self.write_fd) {
            (Some(path), _) => Box::new(StreamTx::new(
                pipe::OpenOptions::new()
                    .read_write(keep_open)
                    .open_sender(path)
                    .map_err(|e| super::net::at(path.display(), e))?,
            )),
            (None, Some(fd)) => {
                Box::new(StreamTx::new(pipe::Sender::from_owned_fd(duplicate(fd)?)?))
            }
            (None, None) => Box::new(Nothing),
        };
        Ok(Conn::chunks(Framing::Stream, rx, tx, self.describe()))
    }

    fn describe(&self) -> String {
        let side = |p: &Option<PathBuf>, fd: Option<i32>| match (p, fd) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(fd)) => format!("fd {fd}"),
            (None, None) => "-".into(),
        };
        format!(
            "{} -> {}",
            side(&self.read, self.read_fd),
            side(&self.write, self.write_fd)
        )
    }
}

/// The pipes and FIFOs the proxy was started with (beyond stdin, stdout and stderr):
/// the only descriptors a config may name. Anything opened later is the proxy's own
/// (its sockets, its epoll, its splice pipes) and must never be taken over.
static INHERITED: OnceLock<Vec<RawFd>> = OnceLock::new();

/// Records the inherited pipes; `main` calls it first thing, before the runtime opens
/// descriptors of its own.
pub fn record_inherited() {
    let mut found = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for entry in dir.flatten() {
            if let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<RawFd>().ok())
                && fd > 2
                && is_fifo(fd)
            {
                found.push(fd);
            }
        }
    }
    found.sort_unstable();
    let _ = INHERITED.set(found);
}

fn is_fifo(fd: RawFd) -> bool {
    // SAFETY: fstat on any number only reads into the struct; a closed one fails.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO }
}

/// Checks that `fd` is a pipe the proxy inherited and still has.
fn inherited(fd: i32) -> Result<(), String> {
    let known = INHERITED.get().is_some_and(|fds| fds.contains(&fd));
    if !known {
        return Err(format!(
            "descriptor {fd} is not a pipe or FIFO the proxy was started with (those are: {:?})",
            INHERITED.get().map(Vec::as_slice).unwrap_or_default()
        ));
    }
    if !is_fifo(fd) {
        return Err(format!("descriptor {fd} is no longer a pipe"));
    }
    Ok(())
}

/// A descriptor of the session's own for an inherited pipe: each use closes only its
/// copy, so the inherited one is owned exactly once, by the proxy.
fn duplicate(fd: RawFd) -> io::Result<OwnedFd> {
    inherited(fd).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor, which we own from here on.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    let copy = unsafe { OwnedFd::from_raw_fd(copy) };
    super::net::within_budget(&copy)?;
    Ok(copy)
}

/// The missing direction: nothing ever comes (it is not an end: a write-only pipe
/// does not end its session at once), and writes are dropped.
struct Nothing;

#[async_trait]
impl ChunkRx for Nothing {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        std::future::pending().await
    }
}

#[async_trait]
impl ChunkTx for Nothing {
    async fn send(&mut self, _: Bytes) -> io::Result<()> {
        Ok(())
    }
    async fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ClusterProtocol for PipeSpec {
    fn name(&self) -> &'static str {
        NAME
    }
    async fn connect(&self, _target: Target<'_>) -> io::Result<Stage> {
        Ok(Stage::Conn(self.open(false)?))
    }
}

#[async_trait]
impl ListenerProtocol for PipeSpec {
    /// One session over the FIFOs; when it ends, the next one starts.
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let first = self.open(true)?;
        let spec = PipeSpec {
            read: self.read.clone(),
            write: self.write.clone(),
            read_fd: None,
            write_fd: None,
        };
        let inherited = self.read_fd.is_some() || self.write_fd.is_some();
        let describe = self.describe();
        let task = tokio::spawn(async move {
            let mut next = Some(first);
            loop {
                let Some(conn) = next.take() else { return };
                let (done_tx, done) = tokio::sync::oneshot::channel::<()>();
                let metadata = json!({ "PIPE": { "read": spec.read, "write": spec.write } });
                cx.accept(Incoming {
                    metadata,
                    conn: with_done(conn, done_tx),
                });
                let _ = done.await;
                if inherited {
                    return; // an inherited descriptor serves one session
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                match spec.open(true) {
                    Ok(conn) => next = Some(conn),
                    Err(e) => tracing::warn!(listener = %cx.name, "cannot reopen {describe}: {e}"),
                }
            }
        });
        Ok(ListenerTask::new(self.describe(), task))
    }
}

/// Signals the listener when the session lets go of its receiving half.
struct Done {
    inner: Box<dyn ChunkRx>,
    _done: tokio::sync::oneshot::Sender<()>,
}

#[async_trait]
impl ChunkRx for Done {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        self.inner.recv().await
    }
}

fn with_done(conn: Conn, done: tokio::sync::oneshot::Sender<()>) -> Conn {
    let (framing, peer) = (conn.framing, conn.peer.clone());
    let (rx, tx) = conn.into_halves();
    Conn::chunks(
        framing,
        Box::new(Done {
            inner: rx,
            _done: done,
        }),
        tx,
        peer,
    )
}

/// Inherited pipes and FIFOs.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(|spec, cx| Ok(std::sync::Arc::new(pipe_spec(spec, cx)?))),
    cluster: Some(|spec, cx| Ok(std::sync::Arc::new(pipe_spec(spec, cx)?))),
    listener_schema: Some(crate::core::build::schema::<PipeSpec>),
    cluster_schema: Some(crate::core::build::schema::<PipeSpec>),
    carries: Protocol::CARRIES_NOTHING,
};

fn pipe_spec(spec: &serde_json::Value, cx: &BuildContext<'_>) -> crate::core::Result<PipeSpec> {
    cx.reach_host("PIPE reads and writes descriptors and files")?;
    let pipe: PipeSpec = cx.parse(spec, "spec")?;
    pipe.validate()
        .map_err(|e| crate::core::ConfigError::invalid(format!("spec: {e}")))?;
    Ok(pipe)
}
