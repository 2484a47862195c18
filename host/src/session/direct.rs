//! Sessions with nothing in-process between source and destination skip the ring of
//! stage drivers: two byte-stream sockets are joined with splice(2) through a pipe (the
//! bytes never enter userspace), any other pair is relayed chunk by chunk in one task.
//! Routes that reconnect on disconnect keep the ring, which knows how to re-pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;

use super::error::SessionError;
use super::stage::StageStats;
use crate::core::stream::StreamSocket;
use crate::core::{ChunkRx, ChunkTx, Conn, Framing};
use crate::offload::Offload;

/// Bytes one splice(2) call may move.
const SPLICE_CHUNK: usize = 1 << 20;

/// A pipe for splice(2), made once a direction has moved enough to be worth one.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two fds on success; we own them from then on.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let pipe = unsafe {
            Pipe {
                read: OwnedFd::from_raw_fd(fds[0]),
                write: OwnedFd::from_raw_fd(fds[1]),
            }
        };
        crate::protocol::net::within_budget(&pipe.write)?;
        // A larger pipe moves more per call; the default (64 KiB) still works.
        unsafe {
            libc::fcntl(
                pipe.write.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                SPLICE_CHUNK as libc::c_int,
            )
        };
        Ok(pipe)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain syscall on fds that outlive the call; null offsets use the fds' own.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Waits for `interest` on `socket` and runs `op` until it does not block.
async fn retry_io<R>(
    socket: &StreamSocket,
    interest: Interest,
    mut op: impl FnMut() -> io::Result<R>,
) -> io::Result<R> {
    loop {
        socket.ready(interest).await?;
        match socket.try_io(interest, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Bytes a direction copies through userspace before it switches to splice(2): short
/// exchanges never pay for a pipe, bulk transfers stop copying after the first few.
const SPLICE_AFTER: u64 = 64 * 1024;

thread_local! {
    static COPY_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; SPLICE_AFTER as usize]);
}

/// Copies what `from` has now to `to`; returns how many bytes (0: end of stream).
async fn copy_once(from: &StreamSocket, to: &StreamSocket) -> io::Result<usize> {
    // Read and (usually) write without leaving the thread's buffer; only a write that
    // would block keeps the rest in a buffer of its own across the wait.
    let (read, rest) = retry_io(from, Interest::READABLE, || {
        COPY_BUF.with_borrow_mut(|buf| {
            let n = from.try_read(buf)?;
            let written = match to.try_write(&buf[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            Ok((n, buf[written..n].to_vec()))
        })
    })
    .await?;
    let mut at = 0;
    while at < rest.len() {
        at += retry_io(to, Interest::WRITABLE, || to.try_write(&rest[at..])).await?;
    }
    Ok(read)
}

/// One direction: `from` -> `to` (copied at first, then through a pipe with splice),
/// then a half-close at end of stream.
async fn splice_one_way(
    from: &StreamSocket,
    to: &StreamSocket,
    from_stats: &StageStats,
    to_stats: &StageStats,
) -> io::Result<()> {
    let mut copied = 0u64;
    let pipe = loop {
        let n = copy_once(from, to).await?;
        if n == 0 {
            return to.shutdown_write();
        }
        from_stats.received(n);
        to_stats.sent(n);
        copied += n as u64;
        // Out of descriptors for a pipe, the direction goes on copying.
        if copied >= SPLICE_AFTER
            && let Ok(pipe) = Pipe::new()
        {
            break pipe;
        }
    };
    loop {
        let moved = retry_io(from, Interest::READABLE, || {
            splice(from.raw_fd(), pipe.write.as_raw_fd(), SPLICE_CHUNK)
        })
        .await?;
        if moved == 0 {
            return to.shutdown_write();
        }
        from_stats.received(moved);
        let mut left = moved;
        while left > 0 {
            left -= retry_io(to, Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.raw_fd(), left)
            })
            .await?;
        }
        to_stats.sent(moved);
    }
}

const THERE: &str = "source -> destination";
const BACK: &str = "destination -> source";

/// The error of one direction of the direct path.
fn direct(direction: &'static str) -> impl Fn(io::Error) -> SessionError {
    move |error| SessionError::Direct { direction, error }
}

/// Joins two byte-stream sockets until both directions have ended (see
/// [`both_directions`] for a half-closed session).
pub async fn splice_pair(
    a: StreamSocket,
    b: StreamSocket,
    a_stats: &StageStats,
    b_stats: &StageStats,
    half_close: Option<Duration>,
) -> Result<(), SessionError> {
    let there = async {
        splice_one_way(&a, &b, a_stats, b_stats)
            .await
            .map_err(direct(THERE))
    };
    let back = async {
        splice_one_way(&b, &a, b_stats, a_stats)
            .await
            .map_err(direct(BACK))
    };
    both_directions(there, back, a_stats, b_stats, half_close).await
}

/// Runs a byte stream's two directions to their ends. Once one has ended (its EOF
/// passed on as a half-close), the other may go on, but only while it moves data:
/// silent for `half_close` it ends the session, so that a peer that went away does not
/// leave the session open until the other side closes.
async fn both_directions(
    there: impl Future<Output = Result<(), SessionError>> + Send,
    back: impl Future<Output = Result<(), SessionError>> + Send,
    a_stats: &StageStats,
    b_stats: &StageStats,
    half_close: Option<Duration>,
) -> Result<(), SessionError> {
    let (mut there, mut back) = (std::pin::pin!(there), std::pin::pin!(back));
    type Rest<'a> = Pin<&'a mut (dyn Future<Output = Result<(), SessionError>> + Send)>;
    let (rest, moved): (Rest<'_>, &AtomicU64) = tokio::select! {
        r = &mut there => { r?; (back, &b_stats.counters.bytes_in) }
        r = &mut back => { r?; (there, &a_stats.counters.bytes_in) }
    };
    let Some(linger) = half_close else {
        return rest.await;
    };
    let mut rest = rest;
    let mut seen = moved.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            r = &mut rest => return r,
            () = tokio::time::sleep(linger) => {
                let now = moved.load(Ordering::Relaxed);
                if now == seen {
                    return Ok(()); // half-closed and silent: the session is over
                }
                seen = now;
            }
        }
    }
}

async fn relay_one_way(
    rx: &mut Box<dyn ChunkRx>,
    tx: &mut Box<dyn ChunkTx>,
    rx_stats: &StageStats,
    tx_stats: &StageStats,
) -> io::Result<()> {
    let mut batch = Vec::new();
    while rx.recv_batch(&mut batch).await? {
        let (bytes, chunks) = (batch.iter().map(|c| c.len()).sum(), batch.len());
        rx_stats.received_many(bytes, chunks);
        tx.send_batch(&mut batch).await?;
        tx_stats.sent_many(bytes, chunks);
    }
    tx.close().await
}

/// Relays chunks between two connections. When either carries datagrams, the first
/// direction to end ends the session (a datagram socket cannot half-close), and both
/// sides are closed; byte streams end as [`both_directions`] says.
pub async fn relay_pair(
    a: Conn,
    b: Conn,
    a_stats: &StageStats,
    b_stats: &StageStats,
    half_close: Option<Duration>,
) -> Result<(), SessionError> {
    let datagram = a.framing == Framing::Datagram || b.framing == Framing::Datagram;
    let (mut a_rx, mut a_tx) = a.into_halves();
    let (mut b_rx, mut b_tx) = b.into_halves();
    let there = async {
        relay_one_way(&mut a_rx, &mut b_tx, a_stats, b_stats)
            .await
            .map_err(direct(THERE))
    };
    let back = async {
        relay_one_way(&mut b_rx, &mut a_tx, b_stats, a_stats)
            .await
            .map_err(direct(BACK))
    };
    if datagram {
        let result = tokio::select! {
            r = there => r,
            r = back => r,
        };
        // Tell both peers the session is over (a WebSocket peer gets its close frame),
        // without waiting long on one that does not answer.
        let linger = std::time::Duration::from_secs(2);
        let _ = tokio::time::timeout(linger, a_tx.close()).await;
        let _ = tokio::time::timeout(linger, b_tx.close()).await;
        result
    } else {
        both_directions(there, back, a_stats, b_stats, half_close).await
    }
}

/// A session's flows in the kernel fast path (one per direction that has nothing
/// in-process); dropping it takes them out, so the session's datagrams come back to
/// userspace (or, when it ended, to the listener).
pub struct Offloaded {
    offload: std::sync::Arc<Offload>,
    there: Option<crate::offload::Flow>,
    back: Option<crate::offload::Flow>,
    keepalive: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

impl Drop for Offloaded {
    fn drop(&mut self) {
        for flow in self.there.iter().chain(&self.back) {
            self.offload.remove(flow);
        }
    }
}

/// Hands the directions of a UDP<->UDP session that have nothing in-process to the
/// kernel, if offload is on and the sockets allow: client -> listener becomes proxy ->
/// upstream (`there`), upstream -> proxy becomes listener -> client (`back`).
pub fn offload(
    offload: &std::sync::Arc<Offload>,
    admin: &crate::model::Admin,
    source: &Conn,
    destination: &Conn,
    there: bool,
    back: bool,
) -> Option<Offloaded> {
    let (s, d) = (source.udp.as_ref()?, destination.udp.as_ref()?);
    if !(there || back)
        || !offload.ready(&admin.offload, admin.offload_ifs.as_ref())
        || s.local.ip().is_unspecified()
        || d.local.ip().is_unspecified()
    {
        return None;
    }
    if s.local.is_ipv4() != d.local.is_ipv4() {
        return None; // the kernel program rewrites addresses, not families
    }
    let offloaded = Offloaded {
        offload: offload.clone(),
        there: there.then_some(crate::offload::Flow {
            from: s.peer,
            to: s.local,
            new_from: d.local,
            new_to: d.peer,
        }),
        back: back.then_some(crate::offload::Flow {
            from: d.peer,
            to: d.local,
            new_from: s.local,
            new_to: s.peer,
        }),
        keepalive: s.keepalive.clone(),
    };
    for flow in offloaded.there.iter().chain(&offloaded.back) {
        if let Err(e) = offload.install(*flow) {
            tracing::debug!("kernel offload refused a flow, staying in userspace: {e}");
            return None; // dropping `offloaded` removes what was installed
        }
    }
    Some(offloaded)
}

impl Offloaded {
    /// Reads the flows' counters into the session's statistics (and metrics) until
    /// the session ends; traffic in the kernel counts as activity for idle timeouts.
    pub async fn watch(&self, source: &StageStats, destination: &StageStats) {
        let offload = &self.offload;
        let (mut there_seen, mut back_seen) = ((0u64, 0u64), (0u64, 0u64));
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            let mut moved = false;
            if let Some((p, b)) = self.there.as_ref().and_then(|f| offload.counters(f))
                && p > there_seen.0
            {
                let (dp, db) = ((p - there_seen.0) as usize, (b - there_seen.1) as usize);
                source.received_many(db, dp);
                destination.sent_many(db, dp);
                there_seen = (p, b);
                moved = true;
            }
            if let Some((p, b)) = self.back.as_ref().and_then(|f| offload.counters(f))
                && p > back_seen.0
            {
                let (dp, db) = ((p - back_seen.0) as usize, (b - back_seen.1) as usize);
                destination.received_many(db, dp);
                source.sent_many(db, dp);
                back_seen = (p, b);
                moved = true;
            }
            if moved && let Some(keepalive) = &self.keepalive {
                keepalive();
            }
        }
    }
}
