//! DTLS over UDP sessions: a handshake over a datagram connection's two halves, then
//! a connection whose chunks are the plaintext datagrams, one record each, so that
//! message boundaries are kept. OpenSSL runs sans-IO on a pipe of datagrams: what it
//! writes is sent by this file, what arrives is queued for it to read, and a
//! handshake that hears nothing for a second is driven again, which retransmits the
//! last flight.
//!
//! A listener with `spec.dtls` hands its sessions to [`DtlsSink`], which shakes
//! hands first and hands on the decrypted session, with the handshake in its `TLS`
//! metadata.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use openssl::ssl::{ErrorCode, Ssl, SslStream};
use serde_json::{Value, json};

use super::udp::MAX_DATAGRAM;
use crate::core::{ChunkRx, ChunkTx, Conn, Framing, Incoming, SessionSink};
use crate::tls::dtls::{DtlsAcceptor, DtlsConnector};
use crate::tls::{HANDSHAKE_TIMEOUT, PeerIdentity};

/// How long a handshake waits for the peer's next flight before sending its own
/// again (RFC 6347's initial timer).
const RETRANSMIT: Duration = Duration::from_secs(1);

/// The datagrams between OpenSSL and the socket.
#[derive(Default)]
struct Pipe {
    incoming: VecDeque<Bytes>,
    outgoing: Vec<Bytes>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.incoming.pop_front() {
            Some(d) => {
                let n = d.len().min(buf.len());
                buf[..n].copy_from_slice(&d[..n]);
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push(Bytes::copy_from_slice(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One DTLS association, shared by the connection's two halves.
struct Association {
    ssl: Mutex<SslStream<Pipe>>,
    tx: tokio::sync::Mutex<Box<dyn ChunkTx>>,
}

impl Association {
    fn ssl(&self) -> std::sync::MutexGuard<'_, SslStream<Pipe>> {
        self.ssl.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends what OpenSSL wrote.
    async fn flush(&self) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.ssl().get_mut().outgoing);
        if out.is_empty() {
            return Ok(());
        }
        self.tx.lock().await.send_batch(&mut out).await
    }
}

fn protocol_error(what: &str, e: openssl::ssl::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

/// The `TLS` metadata of an established association.
fn metadata(ssl: &openssl::ssl::SslRef) -> Value {
    let peer = ssl
        .peer_certificate()
        .and_then(|c| c.to_der().ok())
        .and_then(|der| PeerIdentity::from_der(&der));
    json!({
        "sni": ssl.servername(openssl::ssl::NameType::HOST_NAME),
        "alpn": null,
        "version": ssl.version_str(),
        "cipher": ssl.current_cipher().map(|c| c.name()),
        "peer": peer.map(|p| p.to_json()),
    })
}

/// Shakes hands over `conn` (a datagram connection), as server or client.
async fn handshake(ssl: Ssl, conn: Conn, server: bool) -> io::Result<(Conn, Value)> {
    let peer = conn.peer.clone();
    let (mut rx, tx) = conn.into_halves();
    let stream = SslStream::new(ssl, Pipe::default()).map_err(io::Error::other)?;
    let association = Arc::new(Association {
        ssl: Mutex::new(stream),
        tx: tokio::sync::Mutex::new(tx),
    });
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let step = {
            let mut s = association.ssl();
            if server { s.accept() } else { s.connect() }
        };
        association.flush().await?;
        match step {
            Ok(()) => break,
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
            Err(e) => return Err(protocol_error("DTLS handshake", e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "DTLS handshake timed out",
            ));
        }
        match tokio::time::timeout(left.min(RETRANSMIT), rx.recv()).await {
            Ok(Ok(Some(datagram))) => association.ssl().get_mut().incoming.push_back(datagram),
            Ok(Ok(None)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer left during the DTLS handshake",
                ));
            }
            Ok(Err(e)) => return Err(e),
            // Nothing came: the next step resends the last flight.
            Err(_) => {}
        }
    }
    let metadata = metadata(association.ssl().ssl());
    let conn = Conn::chunks(
        Framing::Datagram,
        Box::new(DtlsRx {
            rx,
            association: association.clone(),
            buf: vec![0; MAX_DATAGRAM],
        }),
        Box::new(DtlsTx { association }),
        peer,
    );
    Ok((conn, metadata))
}

/// Originates DTLS to `host` over a connected datagram connection.
pub async fn connect(connector: &DtlsConnector, host: &str, conn: Conn) -> io::Result<Conn> {
    let ssl = connector.session(host).map_err(io::Error::other)?;
    Ok(handshake(ssl, conn, false).await?.0)
}

struct DtlsRx {
    rx: Box<dyn ChunkRx>,
    association: Arc<Association>,
    buf: Vec<u8>,
}

#[async_trait]
impl ChunkRx for DtlsRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let Some(datagram) = self.rx.recv().await? else {
                return Ok(None);
            };
            let read = {
                let mut s = self.association.ssl();
                s.get_mut().incoming.push_back(datagram);
                s.ssl_read(&mut self.buf)
            };
            // A retransmitted flight of the peer's may want an answer.
            self.association.flush().await?;
            match read {
                Ok(n) => return Ok(Some(Bytes::copy_from_slice(&self.buf[..n]))),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Ok(None),
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {}
                // A datagram that does not decrypt (stray, forged, replayed) is dropped,
                // as UDP drops what it cannot deliver.
                Err(e) => tracing::debug!("DTLS: a datagram dropped: {e}"),
            }
        }
    }
}

struct DtlsTx {
    association: Arc<Association>,
}

#[async_trait]
impl ChunkTx for DtlsTx {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        let written = self.association.ssl().ssl_write(&chunk);
        written.map_err(|e| protocol_error("DTLS", e))?;
        self.association.flush().await
    }

    async fn close(&mut self) -> io::Result<()> {
        // close_notify, so the peer's session ends now rather than at its idle timeout.
        let _ = self.association.ssl().shutdown();
        self.association.flush().await?;
        self.association.tx.lock().await.close().await
    }
}

/// Shakes DTLS hands with each new session of a listener, then hands the decrypted
/// session on to `inner`.
pub struct DtlsSink {
    pub inner: Arc<dyn SessionSink>,
    pub acceptor: Arc<DtlsAcceptor>,
    pub listener: String,
}

impl SessionSink for DtlsSink {
    fn accept(&self, incoming: Incoming) {
        let (inner, acceptor) = (self.inner.clone(), self.acceptor.clone());
        let listener = self.listener.clone();
        tokio::spawn(async move {
            let Incoming { mut metadata, conn } = incoming;
            let peer = conn.peer.clone();
            let shaken = match acceptor.session(&peer) {
                Ok(ssl) => handshake(ssl, conn, true).await,
                Err(e) => Err(io::Error::other(e)),
            };
            match shaken {
                Ok((conn, tls)) => {
                    metadata["TLS"] = tls;
                    inner.accept(Incoming { metadata, conn });
                }
                Err(e) => tracing::debug!(%listener, %peer, "DTLS: {e}"),
            }
        });
    }
}
