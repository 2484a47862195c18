//! UDP server mode: a session per peer. The listening socket receives the first
//! datagrams of new peers and demultiplexes them by address; each session gets a socket
//! of its own, bound to the listener's address (SO_REUSEPORT) and connected to its
//! peer, so the kernel hands it that peer's later datagrams directly. A session that
//! moves nothing for its idle timeout ends.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::net;
use super::udp::{MAX_DATAGRAM, PeerFilter, Reuse, SocketRx, SocketTx, new_socket, udp_path};
use super::{Conn, Framing, Incoming, ListenerContext};

/// Datagrams queued for one session before new ones are dropped.
const SESSION_QUEUE: usize = 256;

/// Peer → its session's queue. Every critical section is one map operation, so a
/// poisoned lock (a panic elsewhere while holding it) leaves a consistent map: it is
/// taken over rather than disabling the listener for good.
type Demux = Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>>;

pub(super) async fn run(
    cx: ListenerContext,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    filter: PeerFilter,
    idle: Duration,
) {
    let sessions: Demux = Arc::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Datagrams of other peers that a new session's socket caught before it was
    // connected: dispatched as if the listening socket had received them.
    let mut strays: VecDeque<(Bytes, SocketAddr)> = VecDeque::new();
    loop {
        let (datagram, peer) = match strays.pop_front() {
            Some(stray) => stray,
            None => match socket.recv_from(&mut buf).await {
                Ok((n, peer)) => (Bytes::copy_from_slice(&buf[..n]), peer),
                Err(e) => {
                    // ICMP errors surface on the listening socket; they concern one peer.
                    tracing::debug!(listener = %cx.name, "recv: {e}");
                    continue;
                }
            },
        };
        if !filter.admits(peer) {
            tracing::debug!(listener = %cx.name, %peer, "datagram from a filtered peer dropped");
            continue;
        }
        let existing = sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&peer)
            .cloned();
        if let Some(tx) = existing {
            match tx.try_send(datagram) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(listener = %cx.name, %peer, "session queue full, datagram dropped");
                    continue;
                }
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&peer);
                    strays.extend(new_peer(&cx, &sessions, local, peer, idle, d));
                }
            }
        } else {
            strays.extend(new_peer(&cx, &sessions, local, peer, idle, datagram));
        }
    }
}

fn new_peer(
    cx: &ListenerContext,
    sessions: &Demux,
    local: SocketAddr,
    peer: SocketAddr,
    idle: Duration,
    first: Bytes,
) -> Vec<(Bytes, SocketAddr)> {
    let (own, caught) = match session_socket(local, peer) {
        Ok((own, caught)) => (Arc::new(own), caught),
        Err(e) => {
            tracing::warn!(listener = %cx.name, %peer, "no socket for a new session, datagram dropped: {e}");
            return Vec::new();
        }
    };
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    let _ = tx.try_send(first);
    let mut strays = Vec::new();
    for (datagram, from) in caught {
        if from == peer {
            let _ = tx.try_send(datagram);
        } else {
            strays.push((datagram, from));
        }
    }
    sessions
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(peer, tx);
    let activity = Arc::new(Activity::new());
    let keepalive = activity.clone();
    let udp = udp_path(&own, Some(Arc::new(move || keepalive.touch())));
    let mut conn = Conn::chunks(
        Framing::Datagram,
        Box::new(SocketRx::server_session(
            own.clone(),
            rx,
            (idle, activity.clone()),
            DemuxEntry {
                sessions: sessions.clone(),
                peer,
            },
        )),
        Box::new(SocketTx::new(own, Some(activity))),
        net::canonical(peer).to_string(),
    );
    conn.udp = udp;
    cx.accept(Incoming {
        metadata: net::metadata("UDP", local, peer),
        conn,
    });
    strays
}

/// A server-mode session's socket: the listener's address again, connected to `peer`.
/// Between its bind and its connect the kernel may hand it datagrams of any peer (it is
/// one more unconnected member of the SO_REUSEPORT group); those are returned with
/// their senders, so none is taken for this peer's.
fn session_socket(
    local: SocketAddr,
    peer: SocketAddr,
) -> io::Result<(UdpSocket, Vec<(Bytes, SocketAddr)>)> {
    // Drained on the std socket: tokio would not try before its driver saw readiness.
    let socket = new_socket(local, Reuse::Session, Some(peer))?.into_std()?;
    let mut caught = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => caught.push((Bytes::copy_from_slice(&buf[..n]), from)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // An ICMP error for the peer: nothing was queued behind it that matters.
            Err(_) => break,
        }
    }
    Ok((UdpSocket::from_std(socket)?, caught))
}

/// When a server-mode session last moved a datagram, in either direction.
pub(super) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
    pub(super) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    pub(super) fn idle_until(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// Removes a server-mode session from the demux table when the session lets go of it.
pub(super) struct DemuxEntry {
    pub(super) sessions: Demux,
    pub(super) peer: SocketAddr,
}

impl Drop for DemuxEntry {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        if sessions.get(&self.peer).is_some_and(|tx| tx.is_closed()) {
            sessions.remove(&self.peer);
        }
    }
}
