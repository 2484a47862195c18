//! `metadata.HTTP`, in and out: what the HTTP and WebSocket listeners record of a
//! request, and what their clusters take from it (the path and query a rewrite may
//! have changed, and the headers to forward).

use std::net::SocketAddr;

use hyper::header::{HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

/// A request as l7mp's `HTTP` metadata; `scheme` is `http` or `ws`.
pub fn request_metadata<B>(req: &hyper::Request<B>, local: SocketAddr, scheme: &str) -> Value {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        headers.insert(
            name.as_str().to_owned(),
            json!(String::from_utf8_lossy(value.as_bytes())),
        );
    }
    let uri = req.uri();
    let host = uri
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let (hostname, port) = match host.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => {
            (h.to_owned(), p.parse().unwrap_or(local.port()))
        }
        _ => (host.clone(), local.port()),
    };
    let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    json!({
        "version": format!("{:?}", req.version()).trim_start_matches("HTTP/").to_owned(),
        "method": req.method().as_str(),
        "url": {
            "url": path_and_query,
            "href": format!("{scheme}://{host}{path_and_query}"),
            "protocol": format!("{scheme}:"),
            "host": hostname,
            "port": port,
            "path": uri.path(),
            "query": uri.query().unwrap_or_default(),
        },
        "headers": headers,
    })
}

/// `scheme://host:port` plus the path and query in `metadata.HTTP.url` (`/` without).
pub fn upstream_url(scheme: &str, host: &str, port: u16, metadata: &Value) -> String {
    let url = metadata.pointer("/HTTP/url");
    let path = url
        .and_then(|u| u.get("path"))
        .and_then(Value::as_str)
        .filter(|p| p.starts_with('/'))
        .unwrap_or("/");
    let query = url
        .and_then(|u| u.get("query"))
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty());
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match query {
        Some(q) => format!("{scheme}://{host}:{port}{path}?{q}"),
        None => format!("{scheme}://{host}:{port}{path}"),
    }
}

/// The headers in `metadata.HTTP.headers` that may go upstream: all but `skip` (the
/// hop-by-hop ones) and any that are not valid header names or values.
pub fn forwarded_headers<'a>(
    metadata: &'a Value,
    skip: &'a [&str],
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'a {
    metadata
        .pointer("/HTTP/headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(move |(name, value)| {
            let lower = name.to_ascii_lowercase();
            if skip.contains(&lower.as_str()) {
                return None;
            }
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((
                HeaderName::from_bytes(lower.as_bytes()).ok()?,
                HeaderValue::from_str(&text).ok()?,
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers_come_from_metadata() {
        let md = json!({"HTTP": {"url": {"path": "/a b", "query": "x=1"}, "headers": {"X-User": "ann", "Host": "h", "bad name": "v"}}});
        assert_eq!(upstream_url("ws", "::1", 80, &md), "ws://[::1]:80/a b?x=1");
        assert_eq!(
            upstream_url("http", "h", 8080, &json!({})),
            "http://h:8080/"
        );
        let headers: Vec<_> = forwarded_headers(&md, &["host"]).collect();
        assert_eq!(
            headers,
            vec![(
                HeaderName::from_static("x-user"),
                HeaderValue::from_static("ann")
            )]
        );
    }

    #[test]
    fn requests_become_metadata() {
        let req = hyper::Request::get("/p?q=1")
            .header("host", "example:81")
            .header("x-a", "b")
            .body(())
            .unwrap();
        let md = request_metadata(&req, "127.0.0.1:80".parse().unwrap(), "ws");
        assert_eq!(md["url"]["href"], "ws://example:81/p?q=1");
        assert_eq!(
            (md["url"]["host"].as_str(), md["url"]["port"].as_u64()),
            (Some("example"), Some(81))
        );
        assert_eq!(md["headers"]["x-a"], "b");
        assert_eq!(md["method"], "GET");
    }
}
