//! The HTTP reverse proxy: per-request routing, rewrites, pooling, h2c, the API on the
//! same port, and WebSocket upgrades handed to sessions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tungstenite::Message;

use crate::harness::*;

/// An HTTP/1.1 upstream with keep-alive that answers `<name> <method> <path>` plus the
/// `x-*` headers it got, and counts its connections.
pub fn http_upstream(name: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut writer = conn;
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut extra = Vec::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).unwrap();
                        let line = line.trim_end().to_owned();
                        if line.is_empty() {
                            break;
                        }
                        let (name, value) = line.split_once(':').unwrap();
                        let name = name.to_ascii_lowercase();
                        if name == "content-length" {
                            length = value.trim().parse().unwrap();
                        }
                        if name.starts_with("x-") {
                            extra.push(format!("{name}={}", value.trim()));
                        }
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    let mut parts = request_line.split_whitespace();
                    let (method, path) = (parts.next().unwrap(), parts.next().unwrap());
                    extra.sort();
                    let answer = format!(
                        "{name} {method} {path} {} {}",
                        extra.join(","),
                        String::from_utf8_lossy(&body)
                    );
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{answer}",
                        answer.len()
                    );
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, connections)
}

pub fn http_cluster(name: &str, port: u16) -> Value {
    json!({"cluster": {"name": name, "spec": {"protocol": "HTTP", "port": port}, "endpoints": [{"spec": {"address": "127.0.0.1"}}]}})
}

fn get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = agent().get(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let mut resp = req.call().expect("an answer");
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn http_requests_are_routed_one_by_one_with_pooled_upstreams() {
    let proxy = Proxy::start();
    let (a, a_conns) = http_upstream("A");
    let (b, _) = http_upstream("B");
    proxy.create("/api/v1/clusters", http_cluster("a", a));
    proxy.create("/api/v1/clusters", http_cluster("b", b));
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "web", "spec": {"protocol": "HTTP", "port": port},
            "rules": [
                {"match": {"op": "starts", "path": "/HTTP/url/path", "value": "/a/"}, "action": {"route": {"destination": "a"}}},
                {"match": {"op": "test", "path": "/HTTP/headers/x-tenant", "value": "b"}, "action": {"route": {"destination": "b"}}},
                {"match": {"op": "starts", "path": "/HTTP/url/path", "value": "/old/"},
                 "action": {"rewrite": [{"path": "/HTTP/url/path", "value": "/new/place"}, {"path": "/HTTP/headers/x-added", "value": "yes"}],
                            "route": {"destination": "a"}}}
            ]}}),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually("the listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    for i in 0..3 {
        assert_eq!(
            get(&format!("{base}/a/{i}?q=1"), &[]),
            (200, format!("A GET /a/{i}?q=1 x-forwarded-for=127.0.0.1 "))
        );
    }
    // Keep-alive to the client and a pooled connection to the upstream.
    assert_eq!(a_conns.load(Ordering::SeqCst), 1);
    assert_eq!(
        get(&format!("{base}/anything"), &[("x-tenant", "b")]),
        (
            200,
            "B GET /anything x-forwarded-for=127.0.0.1,x-tenant=b ".into()
        )
    );
    assert_eq!(
        get(&format!("{base}/old/x"), &[]),
        (
            200,
            "A GET /new/place x-added=yes,x-forwarded-for=127.0.0.1 ".into()
        )
    );
    let (status, body) = get(&format!("{base}/nowhere"), &[]);
    assert_eq!(status, 404);
    assert!(body.contains("No route"), "{body}");
    let mut resp = agent()
        .post(format!("{base}/a/post"))
        .send("payload")
        .unwrap();
    assert_eq!(
        resp.body_mut().read_to_string().unwrap(),
        "A POST /a/post x-forwarded-for=127.0.0.1 payload"
    );
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("l7mp_cluster_sessions_total{cluster=\"a\"} 5"),
        "{metrics}"
    );
}

#[test]
fn http_listener_serves_the_api_and_websocket_upgrades_on_the_same_port() {
    let proxy = Proxy::start();
    let (a, _) = http_upstream("A");
    proxy.create("/api/v1/clusters", http_cluster("a", a));
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "ctl", "spec": {"protocol": "L7mpController"}}}),
    );
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "echo", "spec": {"protocol": "Echo"}}}),
    );
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "gateway", "spec": {"protocol": "HTTP", "port": port, "address": "127.0.0.1"},
            "rules": [
                {"match": {"op": "or", "apply": [
                    {"op": "starts", "path": "/HTTP/url/path", "value": "/api/"},
                    {"op": "test", "path": "/HTTP/url/path", "value": "/metrics"}]},
                 "action": {"route": {"destination": "ctl"}}},
                {"match": {"op": "test", "path": "/HTTP/url/path", "value": "/ws"}, "action": {"route": {"destination": "echo"}}},
                {"action": {"route": {"destination": "a"}}}
            ]}}),
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually("the listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let (status, listeners) = get(&format!("{base}/api/v1/listeners"), &[]);
    assert_eq!(status, 200);
    assert!(listeners.contains("\"gateway\""), "{listeners}");
    assert!(
        get(&format!("{base}/metrics"), &[])
            .1
            .contains("l7mp_listener_sessions_total")
    );
    assert_eq!(
        get(&format!("{base}/page"), &[]),
        (200, "A GET /page x-forwarded-for=127.0.0.1 ".into())
    );
    // A WebSocket upgrade on the same port becomes a session routed to Echo.
    let stream = tcp_connect(port);
    let (mut ws, _) =
        tungstenite::client(format!("ws://127.0.0.1:{port}/ws"), stream).expect("upgrade");
    ws.send(Message::text("upgraded")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("upgraded"));
    let session = eventually("the WebSocket session", || {
        proxy.sessions().into_iter().next()
    });
    assert_eq!(session["metadata"]["HTTP"]["url"]["path"], "/ws");
}

#[test]
fn http2_cleartext_requests_are_proxied() {
    let curl = std::process::Command::new("curl").arg("--version").output();
    require(
        curl.as_ref()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("HTTP2")),
        "curl with HTTP/2 (.ci/run installs it)",
    );
    let proxy = Proxy::start();
    let (a, _) = http_upstream("A");
    proxy.create("/api/v1/clusters", http_cluster("a", a));
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "h2", "spec": {"protocol": "HTTP", "port": port}, "rules": [{"action": {"route": {"destination": "a"}}}]}}),
    );
    eventually("the listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            " %{http_version}",
            &format!("http://127.0.0.1:{port}/two"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "A GET /two x-forwarded-for=127.0.0.1  2"
    );
    let session_version = proxy.metrics();
    assert!(
        session_version.contains("l7mp_listener_sessions_total{listener=\"h2\"} 1"),
        "{session_version}"
    );
    // The answer's body counts as the bytes of every other protocol's stages do.
    let answer = "A GET /two x-forwarded-for=127.0.0.1 ".len().to_string();
    let counted = |metric: &str, object: &str| {
        session_version
            .lines()
            .find(|l| {
                l.starts_with(metric)
                    && l.contains(object)
                    && l.contains("direction=\"")
                    && l.contains(if metric.contains("cluster") {
                        "\"in\""
                    } else {
                        "\"out\""
                    })
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(
        counted("l7mp_cluster_bytes_total", "cluster=\"a\"").as_deref(),
        Some(answer.as_str()),
        "{session_version}"
    );
    assert_eq!(
        counted("l7mp_listener_bytes_total", "listener=\"h2\"").as_deref(),
        Some(answer.as_str()),
        "{session_version}"
    );
}
