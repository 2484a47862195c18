//! The API's own HTTP server: HTTP/1.1 with the bounds of `admin.http` read at every
//! accept (connections at once, header and idle timeouts), so that clients that are
//! slow, many or hostile cannot lock operators out. Over TLS when `admin.tls` says so
//! (read at every accept too), with the client certificate handed to the guard.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::http_conn::{InFlight, ServerIo, json_error_response};
use crate::protocol::net;
use crate::proxy::Proxy;
use crate::tls::{self, PeerIdentity};

/// The largest request head the API reads (request line and headers): room for the
/// longest URI hyper takes (64 KiB), so that a longer one is a 414, not a 431.
const MAX_HEAD: usize = 96 << 10;

/// Serves the API on a bound listener until the task is dropped.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) {
    let router = super::router(proxy.clone());
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                net::accept_failed("the API", e).await;
                continue;
            }
        };
        let limits = proxy.snapshot().admin.http.clone();
        let tls = proxy.api_tls();
        if open.load(Ordering::Relaxed) >= limits.max_connections as usize {
            tracing::warn!(%peer, "API connection refused: {} are open (admin.http.max_connections)", limits.max_connections);
            // A TLS client could not read a plaintext answer: it is only closed.
            if tls.is_none() {
                tokio::spawn(refuse(stream, limits.max_connections));
            }
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (router, open) = (router.clone(), open.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, None, router, &limits).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok((stream, _)) => {
                        let client = tls::meta::peer(stream.get_ref().1).map(Arc::new);
                        serve_connection(stream, client, router, &limits).await
                    }
                    // A client without a good certificate is an authentication failure.
                    Err(e) => tracing::warn!(%peer, "API TLS handshake failed: {e}"),
                },
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Serves one connection; `client` is who its TLS client certificate says it is.
async fn serve_connection<IO>(
    stream: IO,
    client: Option<Arc<PeerIdentity>>,
    router: Router,
    limits: &crate::model::HttpLimits,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let in_flight = InFlight::default();
    let io = TokioIo::new(ServerIo::new(stream, limits.idle(), in_flight.clone()));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(client) = &client {
            req.extensions_mut().insert(client.clone());
        }
        let mut router = router.clone();
        let busy = in_flight.start();
        async move {
            let resp = tower_service::Service::call(&mut router, req).await;
            drop(busy);
            resp
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_buf_size(MAX_HEAD)
        .header_read_timeout(limits.header());
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!("API connection: {e}");
    }
}

/// Tells a client over the connection limit why, and closes.
async fn refuse(mut stream: TcpStream, limit: u32) {
    let answer = json_error_response(
        503,
        "Service Unavailable",
        &format!("the API serves {limit} connections at once; try again later"),
    );
    let write = async {
        stream.write_all(&answer).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write).await;
}
