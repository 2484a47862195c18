//! Connections: a duplex of chunks on a transport the host owns, as a listener accepted
//! it or a network cluster connected it. A byte-stream socket stays whole
//! ([`StreamSocket`]) so that two of them can be joined by splice(2).

use std::fmt;
use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::stream::StreamSocket;

/// Whether a stage keeps message boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Framing {
    /// One chunk per datagram or message (UDP, WebSocket, transforms).
    Datagram,
    /// A byte stream: chunk boundaries carry no meaning (TCP, UNIX stream).
    Stream,
}

/// The receiving half of a connection.
#[async_trait]
pub trait ChunkRx: Send {
    /// The next chunk; `None` at end of stream.
    async fn recv(&mut self) -> io::Result<Option<Bytes>>;

    /// Waits for at least one chunk and appends it, with any others ready now, to
    /// `out`; `false` at end of stream. Datagram sockets receive a batch per syscall.
    async fn recv_batch(&mut self, out: &mut Vec<Bytes>) -> io::Result<bool> {
        match self.recv().await? {
            Some(chunk) => {
                out.push(chunk);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// The sending half of a connection.
#[async_trait]
pub trait ChunkTx: Send {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()>;

    /// Sends every chunk of `chunks` in order, emptying it. Datagram sockets send a
    /// batch per syscall.
    async fn send_batch(&mut self, chunks: &mut Vec<Bytes>) -> io::Result<()> {
        for chunk in chunks.drain(..) {
            self.send(chunk).await?;
        }
        Ok(())
    }

    /// The session was routed (`Ok`) or could not be (`Err` with the reason), before
    /// any data flows. Protocols with a handshake of their own (JSONSocket) answer the
    /// peer here; others do nothing.
    async fn routed(&mut self, _outcome: Result<(), Unrouted<'_>>) -> io::Result<()> {
        Ok(())
    }

    /// No more chunks will be sent: a byte stream half-closes, a datagram socket does
    /// nothing.
    async fn close(&mut self) -> io::Result<()>;
}

/// Why a session could not start, as a source with a handshake of its own answers it.
#[derive(Debug, Clone, Copy)]
pub struct Unrouted<'a> {
    /// The rules matched nothing (rather than: the route could not be connected).
    pub no_match: bool,
    pub message: &'a str,
}

/// A live transport: what a listener accepted or a network cluster connected.
pub struct Conn {
    pub framing: Framing,
    /// Who is on the other side, for session listings.
    pub peer: String,
    /// A connected UDP socket's (local, peer) addresses: what the kernel fast path
    /// needs to take the session over.
    pub udp: Option<UdpPath>,
    io: ConnIo,
}

/// A connected UDP socket as the kernel fast path sees it.
#[derive(Clone)]
pub struct UdpPath {
    pub local: std::net::SocketAddr,
    pub peer: std::net::SocketAddr,
    /// Counts traffic the kernel forwarded as activity (against idle timeouts).
    pub keepalive: Option<Arc<dyn Fn() + Send + Sync>>,
}

enum ConnIo {
    Chunks(Box<dyn ChunkRx>, Box<dyn ChunkTx>),
    /// A byte-stream socket kept whole, so that a session with nothing in-process
    /// between two of them can hand both to splice(2).
    Socket(StreamSocket),
}

impl Conn {
    pub fn chunks(
        framing: Framing,
        rx: Box<dyn ChunkRx>,
        tx: Box<dyn ChunkTx>,
        peer: String,
    ) -> Conn {
        Conn {
            framing,
            peer,
            udp: None,
            io: ConnIo::Chunks(rx, tx),
        }
    }

    pub fn socket(socket: StreamSocket, peer: String) -> Conn {
        Conn {
            framing: Framing::Stream,
            peer,
            udp: None,
            io: ConnIo::Socket(socket),
        }
    }

    pub fn is_socket(&self) -> bool {
        matches!(self.io, ConnIo::Socket(_))
    }

    /// The socket, for the splice(2) path; `None` for chunk transports.
    pub fn into_socket(self) -> Option<StreamSocket> {
        match self.io {
            ConnIo::Socket(s) => Some(s),
            ConnIo::Chunks(..) => None,
        }
    }

    /// Tells a source connection how routing went (see [`ChunkTx::routed`]).
    pub async fn routed(&mut self, outcome: Result<(), Unrouted<'_>>) -> io::Result<()> {
        match &mut self.io {
            ConnIo::Chunks(_, tx) => tx.routed(outcome).await,
            ConnIo::Socket(_) => Ok(()),
        }
    }

    /// The two halves, for the chunk path.
    pub fn into_halves(self) -> (Box<dyn ChunkRx>, Box<dyn ChunkTx>) {
        match self.io {
            ConnIo::Chunks(rx, tx) => (rx, tx),
            ConnIo::Socket(s) => s.into_halves(),
        }
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("framing", &self.framing)
            .field("peer", &self.peer)
            .finish()
    }
}
