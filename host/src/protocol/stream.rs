//! Byte-stream connections (TCP, UNIX stream, stdio) as chunk halves.

use std::io;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ChunkRx, ChunkTx, Conn, Framing};

/// Read buffer size: large enough that a bulk transfer moves in few syscalls.
const READ_CHUNK: usize = 64 * 1024;

pub struct StreamRx<R> {
    inner: R,
    buf: BytesMut,
}

pub struct StreamTx<W> {
    inner: W,
}

#[async_trait]
impl<R: AsyncRead + Unpin + Send> ChunkRx for StreamRx<R> {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        if self.buf.capacity() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        match self.inner.read_buf(&mut self.buf).await? {
            0 => Ok(None),
            _ => Ok(Some(self.buf.split().freeze())),
        }
    }
}

#[async_trait]
impl<W: AsyncWrite + Unpin + Send> ChunkTx for StreamTx<W> {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        self.inner.write_all(&chunk).await
    }
    async fn close(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }
}

/// A byte-stream connection from the two halves of a transport.
pub fn conn<R, W>(read: R, write: W, peer: String) -> Conn
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    Conn {
        framing: Framing::Stream,
        rx: Box::new(StreamRx {
            inner: read,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }),
        tx: Box::new(StreamTx { inner: write }),
        peer,
    }
}
