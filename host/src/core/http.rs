//! The HTTP types the seam speaks: an HTTP listener hands each request to its
//! [`SessionSink`](super::SessionSink) and sends back the reply it gets.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request body as an HTTP listener received it.
pub type HttpBody = hyper::body::Incoming;
/// A body on its way: a forwarded stream, or bytes of the proxy's own.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;
pub type HttpReply = Response<BoxBody>;

/// A body of bytes known now.
pub fn full(body: impl Into<Bytes>) -> BoxBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The proxy's own error answer: `{"status", "message"}` as JSON.
pub fn error_reply(status: StatusCode, message: &str) -> HttpReply {
    let body = serde_json::json!({ "status": status.as_u16(), "message": message }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
