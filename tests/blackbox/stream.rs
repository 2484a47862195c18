//! Byte streams: TCP and UNIX sockets, and retries of their connections.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};

use serde_json::{Value, json};

use crate::harness::*;

fn tcp_route(proxy: &Proxy, listener_port: u16, upstream_port: u16, retry: Value) {
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "tcp", "spec": {"protocol": "TCP", "port": listener_port},
            "rules": [{"action": {"route": {"retry": retry, "destination": {"name": "upstream",
                "spec": {"protocol": "TCP", "port": upstream_port},
                "endpoints": [{"name": "up-1", "spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
}

#[test]
fn tcp_to_a_real_upstream_with_half_close() {
    let proxy = Proxy::start();
    let upstream = tcp_upstream(b"");
    let port = free_tcp_port();
    tcp_route(&proxy, port, upstream, json!({}));
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"hello", 5), b"hello");
    // Nothing in-process between two TCP sockets: the kernel moves the bytes.
    assert_eq!(proxy.sessions()[0]["datapath"], "splice");
    // A megabyte each way, content intact.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut w = client.try_clone().unwrap();
        let p = payload.clone();
        std::thread::spawn(move || w.write_all(&p).unwrap())
    };
    let mut got = vec![0u8; payload.len()];
    client.read_exact(&mut got).unwrap();
    writer.join().unwrap();
    assert!(got == payload, "the payload came back altered");
    // Half-close: our FIN reaches the upstream, which closes, and we see its FIN.
    client.shutdown(Shutdown::Write).unwrap();
    assert!(tcp_closed(&mut client));
    eventually("the session to end", || {
        proxy.sessions().is_empty().then_some(())
    });
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("l7mp_cluster_sessions_total{cluster=\"upstream\"} 1"),
        "{metrics}"
    );
}

#[test]
fn unix_stream_listener_and_cluster() {
    let proxy = Proxy::start();
    let dir = std::env::temp_dir().join(format!("l7mp-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let front = dir.join("front.sock");
    let back = dir.join("back.sock");
    let upstream = std::os::unix::net::UnixListener::bind(&back).unwrap();
    std::thread::spawn(move || {
        for conn in upstream.incoming() {
            let mut conn = conn.unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap();
            conn.write_all(&buf[..n].to_ascii_uppercase()).unwrap();
        }
    });
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "back", "spec": {"protocol": "UnixDomainSocket"},
            "endpoints": [{"spec": {"address": back.display().to_string()}}]}}),
    );
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "front", "spec": {"protocol": "UnixDomainSocket", "filename": front.display().to_string()},
            "rules": [{"action": {"route": {"destination": "back"}}}]}}),
    );
    let mut client = std::os::unix::net::UnixStream::connect(&front).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    client.write_all(b"quiet please").unwrap();
    let mut got = [0u8; 12];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"QUIET PLEASE");
    assert_eq!(
        proxy.sessions()[0]["metadata"]["UNIX"]["filename"],
        front.display().to_string()
    );
    // Deleting the listener removes its socket file.
    assert_eq!(proxy.delete("/api/v1/listeners/front").0, 200);
    eventually("the socket file to go", || (!front.exists()).then_some(()));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn retry_on_refused_connect_reaches_an_upstream_that_appears_later() {
    let proxy = Proxy::start();
    // Reserve a port that refuses connections until we listen on it.
    let reserved =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    reserved.set_reuse_address(true).unwrap();
    reserved
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    let upstream = reserved.local_addr().unwrap().as_socket().unwrap().port();
    let port = free_tcp_port();
    tcp_route(
        &proxy,
        port,
        upstream,
        json!({"retry_on": "connect-failure", "num_retries": 6, "timeout": 1000}),
    );
    let mut client = tcp_connect(port);
    client.write_all(b"early").unwrap();
    eventually("a failed connect attempt", || {
        proxy
            .sessions()
            .iter()
            .any(|s| {
                s["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["event"] == "CONNECT_FAILED")
            })
            .then_some(())
    });
    reserved.listen(16).unwrap();
    let listener: TcpListener = reserved.into();
    std::thread::spawn(move || serve_prefixed(listener, b"+"));
    let mut got = [0u8; 6];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"+early");
    let session = &proxy.sessions()[0];
    assert_eq!(session["status"], "CONNECTED");
    assert_eq!(session["destination"]["endpoint"]["name"], "up-1");
}

#[test]
fn no_retry_means_a_refused_connect_ends_the_session() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    tcp_route(&proxy, port, free_tcp_port(), json!({"retry_on": "never"}));
    let mut client = tcp_connect(port);
    assert!(tcp_closed(&mut client));
}

/// An upstream that answers one message per connection, then hangs up.
fn one_shot_upstream() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (i, conn) in l.incoming().enumerate() {
            let mut conn = conn.unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap_or(0);
            let mut reply = format!("conn{i}:").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = conn.write_all(&reply);
        }
    });
    port
}

#[test]
fn retry_on_disconnect_reconnects_the_upstream() {
    let proxy = Proxy::start();
    let upstream = one_shot_upstream();
    let port = free_tcp_port();
    tcp_route(
        &proxy,
        port,
        upstream,
        json!({"retry_on": "disconnect", "num_retries": 3, "timeout": 1000}),
    );
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"a", 7), b"conn0:a");
    eventually("the reconnect", || {
        proxy.sessions()[0]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "RECONNECTED")
            .then_some(())
    });
    assert_eq!(tcp_exchange(&mut client, b"b", 7), b"conn1:b");
}

#[test]
fn without_retry_an_upstream_hangup_ends_the_session() {
    let proxy = Proxy::start();
    let upstream = one_shot_upstream();
    let port = free_tcp_port();
    tcp_route(&proxy, port, upstream, json!({"retry_on": "never"}));
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"a", 7), b"conn0:a");
    assert!(tcp_closed(&mut client));
}

#[test]
fn recursive_endpoint_delete_moves_sessions_to_another_endpoint() {
    let proxy = Proxy::start();
    let (first, second) = (tcp_upstream(b"1:"), tcp_upstream(b"2:"));
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "pool", "spec": {"protocol": "TCP"},
            "endpoints": [{"name": "first", "spec": {"address": "127.0.0.1", "port": first}},
                          {"name": "second", "spec": {"address": "127.0.0.1", "port": second}}]}}),
    );
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "l", "spec": {"protocol": "TCP", "port": port},
            "rules": [{"action": {"route": {"destination": "pool", "retry": {"retry_on": "always", "num_retries": 2}}}}]}}),
    );
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"x", 3), b"1:x");
    assert_eq!(
        proxy.delete("/api/v1/endpoints/first?recursive=true").0,
        200
    );
    eventually("the stage to move", || {
        (proxy.sessions()[0]["destination"]["endpoint"]["name"] == "second").then_some(())
    });
    assert_eq!(tcp_exchange(&mut client, b"y", 3), b"2:y");
}
