//! HTTP listeners' requests, routed like sessions: the same rules, the same retry
//! policy (an attempt that cannot reach its endpoint fails over to another), the same
//! listener and cluster metrics. The destination decides what answers: an `HTTP`
//! cluster forwards to an endpoint, `L7mpController` and `Prometheus` serve the API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::Body;
use serde_json::Value;

use super::engine::Engine;
use crate::core::EndpointRef;
use crate::core::http::{BoxError, HttpBody, HttpReply, error_reply, full};
use crate::routing;

pub(super) async fn request(
    engine: &Engine,
    listener: &str,
    req: hyper::Request<HttpBody>,
    mut metadata: Value,
    peer: SocketAddr,
) -> HttpReply {
    let m = &engine.metrics;
    m.listener_sessions.with_label_values(&[listener]).inc();
    let snap = engine.snapshot();
    let mut uses = Vec::new();
    let route = match routing::route(&snap, listener, &mut metadata, &mut uses).await {
        Ok(route) => route,
        Err(e) => {
            m.sessions_rejected.with_label_values(&[listener]).inc();
            return error_reply(StatusCode::NOT_FOUND, &e.to_string());
        }
    };
    let Some(cluster) = snap.clusters.get(&route.destination) else {
        return error_reply(
            StatusCode::BAD_GATEWAY,
            &format!(
                "route '{}': its destination cluster does not exist",
                route.name
            ),
        );
    };
    if cluster.protocol.serves_api() {
        let Some(api) = engine.api() else {
            return error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "the API is not served here",
            );
        };
        m.cluster_sessions.with_label_values(&[&cluster.name]).inc();
        let mut api = api.clone();
        return match tower_service::Service::call(&mut api, req).await {
            Ok(resp) => resp.map(|b| b.map_err(BoxError::from).boxed_unsync()),
            Err(never) => match never {},
        };
    }
    let Some(http) = cluster.protocol.http() else {
        return error_reply(
            StatusCode::BAD_GATEWAY,
            &format!(
                "route '{}' goes to a {} cluster; HTTP requests go to HTTP, L7mpController or Prometheus clusters (WebSocket upgrades anywhere)",
                route.name,
                cluster.protocol.name()
            ),
        );
    };
    let timeout = Duration::from_millis(route.retry.timeout.max(1));
    // A request body is sent once: only a request without one can be tried again.
    let attempts = if route.retry.on_connect_failure() && req.body().is_end_stream() {
        route.retry.num_retries + 1
    } else {
        1
    };
    let (parts, body) = req.into_parts();
    // Bodies count as every stage's bytes do: in at the listener, out at the cluster,
    // and the answer back.
    let bytes = |vec: &prometheus::IntCounterVec, name: &str, dir: &str| {
        vec.with_label_values(&[name, dir])
    };
    let up = [
        bytes(&m.listener_bytes, listener, "in"),
        bytes(&m.cluster_bytes, &cluster.name, "out"),
    ];
    let down = [
        bytes(&m.cluster_bytes, &cluster.name, "in"),
        bytes(&m.listener_bytes, listener, "out"),
    ];
    let mut body = Some(Counted::new(body, up).boxed_unsync());
    let mut failed: Vec<String> = Vec::new();
    let mut last = error_reply(
        StatusCode::BAD_GATEWAY,
        &format!("cluster '{}' has no endpoint", cluster.name),
    );
    for _ in 0..attempts {
        let Some(endpoint) = cluster.balancer.pick_avoiding(&metadata, &failed) else {
            break;
        };
        // Only body-less requests are tried again, with an empty body.
        let mut req = hyper::Request::new(body.take().unwrap_or_else(|| full(Bytes::new())));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = parts.uri.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        let target = EndpointRef {
            name: &endpoint.name,
            spec: &endpoint.spec,
        };
        let forwarded = tokio::time::timeout(timeout, http.forward(req, target, &metadata, peer));
        let (status, why) = match forwarded.await {
            Ok(Ok(resp)) => {
                m.cluster_sessions.with_label_values(&[&cluster.name]).inc();
                return resp.map(|b| Counted::new(b, down).boxed_unsync());
            }
            Ok(Err(e)) => (StatusCode::BAD_GATEWAY, e.to_string()),
            Err(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("no answer within {timeout:?}"),
            ),
        };
        m.cluster_connect_failures
            .with_label_values(&[&cluster.name])
            .inc();
        last = error_reply(status, &format!("cluster '{}': {why}", cluster.name));
        failed.push(endpoint.name.clone());
    }
    last
}

/// A body that counts the bytes passing through it.
struct Counted<B> {
    inner: B,
    counters: [prometheus::IntCounter; 2],
}

impl<B> Counted<B> {
    fn new(inner: B, counters: [prometheus::IntCounter; 2]) -> Self {
        Counted { inner, counters }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            for c in &self.counters {
                c.inc_by(data.len() as u64);
            }
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
