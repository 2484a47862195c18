//! What every HTTP server of the proxy (the REST API, HTTP listeners) does to its
//! connections, so that a slow or malformed client costs one connection and a bounded
//! time, never the server:
//! - hyper's header read timeout (which also closes idle keep-alive connections),
//! - an idle timeout on the connection itself: nothing read or written for a while,
//!   with no request being answered, closes it (HTTP/2 and trickling clients),
//! - the answers hyper writes on its own (400, 414, 431 for requests it cannot parse)
//!   carry a JSON body like every other error of the proxy.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests being answered on one connection; while there are any, the connection is
/// not idle however quiet it is.
#[derive(Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Marks a request as being answered until the guard drops.
    pub fn start(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.0.clone())
    }
    /// The connection is no longer HTTP (a WebSocket upgrade): it is never idle for
    /// this layer again; the protocol it became keeps its own time.
    pub fn upgraded(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A server connection's transport with an idle timeout and JSON bodies on hyper's own
/// error answers.
pub struct ServerIo<T> {
    inner: T,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    in_flight: InFlight,
    /// A rewritten answer not yet written out.
    pending: Vec<u8>,
}

impl<T> ServerIo<T> {
    pub fn new(inner: T, idle: Option<Duration>, in_flight: InFlight) -> ServerIo<T> {
        ServerIo {
            inner,
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            in_flight,
            pending: Vec::new(),
        }
    }

    fn touch(&mut self) {
        if let Some((idle, timer)) = &mut self.idle {
            timer.as_mut().reset(Instant::now() + *idle);
        }
    }

    /// `Ready(Err)` once the connection has been idle for too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((idle, timer)) = &mut self.idle else {
            return Poll::Pending;
        };
        while timer.as_mut().poll(cx).is_ready() {
            if !self.in_flight.any() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was idle for too long",
                )));
            }
            timer.as_mut().reset(Instant::now() + *idle);
        }
        Poll::Pending
    }
}

impl<T: AsyncWrite + Unpin> ServerIo<T> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ServerIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.touch();
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ServerIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        this.touch();
        if let Some(answer) = json_error_answer(buf) {
            // Taken whole: it goes out on this call or the next flush.
            this.pending = answer;
            let _ = this.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// hyper answers requests it cannot parse itself, with an empty body. Every error the
/// proxy writes has a JSON body, so an empty 4xx head is one of hyper's: it is
/// rewritten to the same status with `{"status", "message"}`.
fn json_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None; // a head with a body after it is a real answer
    }
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let code: u16 = code.parse().ok()?;
    if !(400..500).contains(&code) {
        return None;
    }
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim().to_ascii_lowercase();
        if name == "content-type" || name == "transfer-encoding" {
            return None;
        }
        if name == "content-length" {
            empty = value.trim() == "0";
        }
    }
    if !empty {
        return None;
    }
    let message = match code {
        400 => "malformed HTTP request",
        414 => "the request's URI is too long",
        431 => "the request's headers are too large",
        _ => reason,
    };
    Some(json_error_response(code, reason, message))
}

/// A whole HTTP/1.1 answer with a `{"status", "message"}` body, closing the
/// connection: for the places that answer below hyper.
pub fn json_error_response(code: u16, reason: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({ "status": code, "message": message }).to_string();
    format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_error_heads_become_json() {
        let head =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(json_error_answer(head).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["status"], 431);
        assert!(answer.contains(&format!("content-length: {}\r\n", body.len())));
        // Real answers pass untouched.
        assert!(json_error_answer(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(json_error_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(
            json_error_answer(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}").is_none()
        );
    }
}
