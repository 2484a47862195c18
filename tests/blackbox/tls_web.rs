//! TLS for the web protocols: HTTPS listeners (HTTP/1.1 and HTTP/2 by ALPN), HTTPS
//! clusters (to `openssl s_server -WWW` and to another l7mp), and wss.

use std::io::{Read, Write};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::*;
use crate::http::{http_cluster, http_upstream};
use crate::tls::{Pki, openssl_server, route_to};

/// `curl` to `url`, trusting `ca` (`--http2` or `--http1.1` as `version`): the body
/// and the HTTP version, or `None` if no answer came.
fn curl(url: &str, ca: &std::path::Path, version: &str) -> Option<(String, String)> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            version,
            "-w",
            "\n%{http_version}",
            "--cacert",
        ])
        .arg(ca)
        .arg(url)
        .output()
        .expect("missing prerequisite: curl (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n')?;
    out.status
        .success()
        .then(|| (body.to_owned(), version.to_owned()))
}

fn alpn_rule(alpn: &str, cluster: &str) -> Value {
    json!({"match": {"op": "test", "path": "/TLS/alpn", "value": alpn},
        "action": {"route": {"destination": cluster}}})
}

fn https_listener(proxy: &Proxy, name: &str, id: &crate::tls::Issued, rules: Value) -> u16 {
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": name, "spec": {"protocol": "HTTP", "port": port,
            "tls": {"cert": id.cert, "key": id.key}}, "rules": rules}}),
    );
    eventually("the listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    port
}

#[test]
fn https_listeners_speak_http1_and_http2_by_alpn() {
    let pki = Pki::new("https");
    let ca = pki.ca("ca");
    let id = pki.server("ca", "web");
    let proxy = Proxy::start_trusted();
    let (one, _) = http_upstream("ONE");
    let (two, _) = http_upstream("TWO");
    proxy.create("/api/v1/clusters", http_cluster("one", one));
    proxy.create("/api/v1/clusters", http_cluster("two", two));
    let port = https_listener(
        &proxy,
        "https",
        &id,
        json!([alpn_rule("h2", "two"), alpn_rule("http/1.1", "one")]),
    );
    let url = format!("https://localhost:{port}/x");
    let (body, version) = curl(&url, &ca, "--http2").expect("an HTTP/2 answer");
    assert_eq!(
        (body.as_str(), version.as_str()),
        ("TWO GET /x x-forwarded-for=127.0.0.1 ", "2")
    );
    let (body, version) = curl(&url, &ca, "--http1.1").expect("an HTTP/1.1 answer");
    assert_eq!(
        (body.as_str(), version.as_str()),
        ("ONE GET /x x-forwarded-for=127.0.0.1 ", "1.1")
    );
    // Cleartext to the HTTPS port gets nothing.
    assert_eq!(
        curl(&format!("http://localhost:{port}/x"), &ca, "--http1.1"),
        None
    );
}

#[test]
fn https_clusters_verify_openssl_and_negotiate_http2_with_l7mp() {
    let pki = Pki::new("https-up");
    let ca = pki.ca("ca");
    pki.ca("other");
    let id = pki.server("ca", "web");
    std::fs::write(pki.path("hello.txt"), "hello from openssl\n").unwrap();
    let www = free_tcp_port();
    let _server = openssl_server(www, &id, &["-WWW"], &pki.path(""));
    eventually("openssl s_server -WWW", || {
        std::net::TcpStream::connect(("127.0.0.1", www)).ok()
    });
    let proxy = Proxy::start_trusted();
    let https = |name: &str, port: u16, tls: Value| {
        json!({"cluster": {"name": name, "spec": {"protocol": "HTTP", "port": port, "tls": tls},
            "endpoints": [{"spec": {"address": "127.0.0.1"}}]}})
    };
    proxy.create(
        "/api/v1/clusters",
        https(
            "openssl",
            www,
            json!({"ca": ca, "server_name": "localhost"}),
        ),
    );
    proxy.create(
        "/api/v1/clusters",
        https("untrusted", www, json!({"ca": pki.path("other.pem")})),
    );
    // A second hop on the same proxy: HTTPS in, routed by what ALPN chose.
    let (two, _) = http_upstream("TWO");
    proxy.create("/api/v1/clusters", http_cluster("two", two));
    let inner = https_listener(&proxy, "inner", &id, json!([alpn_rule("h2", "two")]));
    proxy.create("/api/v1/clusters", https("hop", inner, json!({"ca": ca})));
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "plain", "spec": {"protocol": "HTTP", "port": port}, "rules": [
            {"match": {"op": "test", "path": "/HTTP/url/path", "value": "/hello.txt"},
             "action": {"route": {"destination": "openssl"}}},
            {"match": {"op": "test", "path": "/HTTP/url/path", "value": "/untrusted"},
             "action": {"route": {"destination": "untrusted"}}},
            {"action": {"route": {"destination": "hop"}}}]}}),
    );
    let get = |path: &str| {
        let mut resp = agent()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .call()
            .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    assert_eq!(get("/hello.txt"), (200, "hello from openssl\n".into()));
    let (status, _) = get("/untrusted");
    assert!(
        status >= 500,
        "an upstream the cluster cannot verify: {status}"
    );
    let (status, body) = get("/via-h2");
    // Each hop adds its client's address.
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            "TWO GET /via-h2 x-forwarded-for=127.0.0.1,x-forwarded-for=127.0.0.1 "
        )
    );
}

#[test]
fn wss_listeners_and_clusters_carry_messages() {
    let pki = Pki::new("wss");
    let ca = pki.ca("ca");
    let id = pki.server("ca", "ws");
    let proxy = Proxy::start_trusted();
    let up = tcp_upstream(b"up:");
    proxy.create("/api/v1/clusters", crate::tls::tcp_cluster("up", up, None));
    let wss = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "wss", "spec": {"protocol": "WebSocket", "port": wss,
            "tls": {"cert": id.cert, "key": id.key}}, "rules": route_to("up")}}),
    );
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "to-wss", "spec": {"protocol": "WebSocket", "port": wss,
            "tls": {"ca": ca, "server_name": "localhost"}},
            "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}),
    );
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "in", "spec": {"protocol": "TCP", "port": port},
            "rules": route_to("to-wss")}}),
    );
    let mut s = tcp_connect(port);
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"up:ping");
    let inner = eventually("the wss session", || {
        proxy
            .sessions()
            .into_iter()
            .find(|s| s["metadata"].get("TLS").is_some())
    });
    assert_eq!(inner["metadata"]["TLS"]["version"], "TLSv1.3", "{inner}");
    assert_eq!(inner["metadata"]["TLS"]["sni"], "localhost", "{inner}");
    assert_eq!(inner["metadata"]["IP"]["dst_addr"], "127.0.0.1", "{inner}");
    assert_eq!(
        inner["metadata"]["HTTP"]["url"]["protocol"], "wss:",
        "{inner}"
    );
}

#[test]
fn jsonsocket_runs_over_tls_on_both_sides() {
    let pki = Pki::new("jsonsocket");
    let ca = pki.ca("ca");
    let id = pki.server("ca", "js");
    let proxy = Proxy::start_trusted();
    let back = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "upstream", "spec": {"protocol": "JSONSocket",
            "transport": {"protocol": "TCP", "port": back, "tls": {"cert": id.cert, "key": id.key}}},
            "rules": [{"match": {"op": "test", "path": "/JSONSocket/user", "value": "ann"},
                       "action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "js", "spec": {"protocol": "JSONSocket",
            "transport": {"protocol": "TCP", "port": back, "tls": {"ca": ca, "server_name": "localhost"}},
            "header": [{"set": {"key": "/user", "value": "ann"}}]},
            "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}),
    );
    let front = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "front", "spec": {"protocol": "UDP", "port": front},
            "rules": route_to("js")}}),
    );
    let to: std::net::SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.1"), to, b"sealed"),
        b"sealed"
    );
    let upstream = eventually("the upstream session", || {
        proxy
            .sessions()
            .into_iter()
            .find(|s| s["source"]["origin"] == "upstream")
    });
    assert_eq!(
        upstream["metadata"]["JSONSocket"]["user"], "ann",
        "{upstream}"
    );
    assert_eq!(
        upstream["metadata"]["TLS"]["sni"], "localhost",
        "{upstream}"
    );
}
