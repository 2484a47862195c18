//! Sessions with nothing in-process between source and destination skip the ring of
//! stage drivers: two byte-stream sockets are joined with splice(2) through a pipe (the
//! bytes never enter userspace), any other pair is relayed chunk by chunk in one task.
//! Routes that reconnect on disconnect keep the ring, which knows how to re-pipe.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::Interest;

use super::stage::StageStats;
use crate::protocol::stream::StreamSocket;
use crate::protocol::{ChunkRx, ChunkTx, Conn, Framing};

/// Bytes one splice(2) call may move.
const SPLICE_CHUNK: usize = 1 << 20;

/// A pipe for splice(2), made when the first bytes arrive, so idle sessions hold none.
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

/// One direction: `from` -> pipe -> `to`, then a half-close at end of stream.
async fn splice_one_way(
    from: &StreamSocket,
    to: &StreamSocket,
    from_stats: &StageStats,
    to_stats: &StageStats,
) -> io::Result<()> {
    let mut pipe: Option<Pipe> = None;
    loop {
        from.ready(Interest::READABLE).await?;
        let p = match &mut pipe {
            Some(p) => p,
            None => pipe.insert(Pipe::new()?),
        };
        let moved = retry_io(from, Interest::READABLE, || {
            splice(from.raw_fd(), p.write.as_raw_fd(), SPLICE_CHUNK)
        })
        .await?;
        if moved == 0 {
            return to.shutdown_write();
        }
        from_stats.received(moved);
        let mut left = moved;
        while left > 0 {
            left -= retry_io(to, Interest::WRITABLE, || {
                splice(p.read.as_raw_fd(), to.raw_fd(), left)
            })
            .await?;
        }
        to_stats.sent(moved);
    }
}

/// Joins two byte-stream sockets until both directions have ended.
pub async fn splice_pair(
    a: StreamSocket,
    b: StreamSocket,
    a_stats: &StageStats,
    b_stats: &StageStats,
) -> Result<(), String> {
    let there = async {
        splice_one_way(&a, &b, a_stats, b_stats)
            .await
            .map_err(|e| format!("source -> destination: {e}"))
    };
    let back = async {
        splice_one_way(&b, &a, b_stats, a_stats)
            .await
            .map_err(|e| format!("destination -> source: {e}"))
    };
    tokio::try_join!(there, back).map(drop)
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
/// direction to end ends the session (a datagram socket cannot half-close).
pub async fn relay_pair(
    a: Conn,
    b: Conn,
    a_stats: &StageStats,
    b_stats: &StageStats,
) -> Result<(), String> {
    let datagram = a.framing == Framing::Datagram || b.framing == Framing::Datagram;
    let (mut a_rx, mut a_tx) = a.into_halves();
    let (mut b_rx, mut b_tx) = b.into_halves();
    let there = async {
        relay_one_way(&mut a_rx, &mut b_tx, a_stats, b_stats)
            .await
            .map_err(|e| format!("source -> destination: {e}"))
    };
    let back = async {
        relay_one_way(&mut b_rx, &mut a_tx, b_stats, a_stats)
            .await
            .map_err(|e| format!("destination -> source: {e}"))
    };
    if datagram {
        tokio::select! {
            r = there => r,
            r = back => r,
        }
    } else {
        tokio::try_join!(there, back).map(drop)
    }
}
