//! Byte-stream connections (TCP, UNIX stream, stdio) as chunk halves.
//!
//! Socket halves read on readiness into one buffer per worker thread and copy out what
//! arrived, so an idle connection holds no read buffer at all (10k idle sessions cost
//! their sockets, not 10k buffers). Other streams (stdio) read into a buffer of their
//! own that starts small and grows while reads fill it.

use std::cell::RefCell;
use std::io;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream, tcp, unix};

use super::{ChunkRx, ChunkTx, Conn, Framing};

/// The most one read moves.
pub const READ_CHUNK: usize = 64 * 1024;
const FIRST_READ: usize = 4 * 1024;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// A whole byte-stream socket.
pub enum StreamSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl StreamSocket {
    pub fn into_halves(self) -> (Box<dyn ChunkRx>, Box<dyn ChunkTx>) {
        match self {
            StreamSocket::Tcp(s) => {
                let (r, w) = s.into_split();
                (
                    Box::new(SocketRx(ReadHalf::Tcp(r))),
                    Box::new(StreamTx::new(w)),
                )
            }
            StreamSocket::Unix(s) => {
                let (r, w) = s.into_split();
                (
                    Box::new(SocketRx(ReadHalf::Unix(r))),
                    Box::new(StreamTx::new(w)),
                )
            }
        }
    }
}

enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Unix(unix::OwnedReadHalf),
}

struct SocketRx(ReadHalf);

#[async_trait]
impl ChunkRx for SocketRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            match &self.0 {
                ReadHalf::Tcp(r) => r.readable().await?,
                ReadHalf::Unix(r) => r.readable().await?,
            }
            let read = READ_BUF.with_borrow_mut(|buf| {
                let n = match &self.0 {
                    ReadHalf::Tcp(r) => r.try_read(buf),
                    ReadHalf::Unix(r) => r.try_read(buf),
                }?;
                Ok::<_, io::Error>(Bytes::copy_from_slice(&buf[..n]))
            });
            match read {
                Ok(chunk) if chunk.is_empty() => return Ok(None),
                Ok(chunk) => return Ok(Some(chunk)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads any `AsyncRead` into a buffer of its own.
pub struct StreamRx<R> {
    inner: R,
    buf: BytesMut,
    next_read: usize,
}

/// Writes to any `AsyncWrite`. Closing shuts the writer down and drops it: for a pipe
/// (a child's stdin) only closing the descriptor tells the reader that input ended.
pub struct StreamTx<W> {
    inner: Option<W>,
}

impl<R> StreamRx<R> {
    pub fn new(inner: R) -> Self {
        StreamRx {
            inner,
            buf: BytesMut::new(),
            next_read: FIRST_READ,
        }
    }
}

impl<W> StreamTx<W> {
    pub fn new(inner: W) -> Self {
        StreamTx { inner: Some(inner) }
    }
}

#[async_trait]
impl<R: AsyncRead + Unpin + Send> ChunkRx for StreamRx<R> {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        self.buf.reserve(self.next_read);
        let n = self.inner.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if n >= self.next_read {
            self.next_read = (self.next_read * 2).min(READ_CHUNK);
        }
        Ok(Some(self.buf.split().freeze()))
    }
}

#[async_trait]
impl<W: AsyncWrite + Unpin + Send> ChunkTx for StreamTx<W> {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        match &mut self.inner {
            Some(w) => w.write_all(&chunk).await,
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after close",
            )),
        }
    }
    async fn close(&mut self) -> io::Result<()> {
        match self.inner.take() {
            Some(mut w) => w.shutdown().await,
            None => Ok(()),
        }
    }
}

/// A byte-stream connection over any reader and writer (stdio and the like).
pub fn conn<R, W>(read: R, write: W, peer: String) -> Conn
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    Conn::chunks(
        Framing::Stream,
        Box::new(StreamRx::new(read)),
        Box::new(StreamTx::new(write)),
        peer,
    )
}

impl StreamSocket {
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            StreamSocket::Tcp(s) => s.as_raw_fd(),
            StreamSocket::Unix(s) => s.as_raw_fd(),
        }
    }

    pub async fn ready(&self, interest: tokio::io::Interest) -> io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.ready(interest).await.map(drop),
            StreamSocket::Unix(s) => s.ready(interest).await.map(drop),
        }
    }

    /// Runs a non-blocking operation on the socket's fd; `WouldBlock` clears the
    /// readiness so that the next [`StreamSocket::ready`] waits for the kernel.
    pub fn try_io<R>(
        &self,
        interest: tokio::io::Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            StreamSocket::Tcp(s) => s.try_io(interest, f),
            StreamSocket::Unix(s) => s.try_io(interest, f),
        }
    }

    /// A non-blocking read (`WouldBlock` clears readiness).
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamSocket::Tcp(s) => s.try_read(buf),
            StreamSocket::Unix(s) => s.try_read(buf),
        }
    }

    /// A non-blocking write (`WouldBlock` clears readiness).
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamSocket::Tcp(s) => s.try_write(buf),
            StreamSocket::Unix(s) => s.try_write(buf),
        }
    }

    /// Half-closes: the peer reads end of stream, and may still send.
    pub fn shutdown_write(&self) -> io::Result<()> {
        let sock = match self {
            StreamSocket::Tcp(s) => socket2::SockRef::from(s),
            StreamSocket::Unix(s) => socket2::SockRef::from(s),
        };
        sock.shutdown(std::net::Shutdown::Write)
    }
}
