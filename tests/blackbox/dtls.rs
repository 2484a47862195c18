//! DTLS 1.2 on UDP, against real OpenSSL peers (`openssl s_client -dtls1_2`, `openssl
//! s_server -dtls1_2`) and between two proxies: per-peer sessions, datagram
//! boundaries kept, mutual authentication, and the cookie exchange that keeps a
//! spoofed source from being answered with more than it sent.

use std::net::{SocketAddr, UdpSocket};

use serde_json::{Value, json};

use crate::harness::*;
use crate::tls::{Peer, Pki, openssl_server, route_to};

fn udp_cluster(name: &str, port: u16, dtls: Option<Value>) -> Value {
    let mut spec = json!({"protocol": "UDP", "port": port});
    if let Some(dtls) = dtls {
        spec["dtls"] = dtls;
    }
    json!({"cluster": {"name": name, "spec": spec, "endpoints": [{"spec": {"address": "127.0.0.1"}}]}})
}

fn udp_listener(proxy: &Proxy, name: &str, dtls: Option<Value>, rules: Value) -> u16 {
    let port = free_udp_port();
    let mut spec = json!({"protocol": "UDP", "port": port, "address": "127.0.0.1"});
    if let Some(dtls) = dtls {
        spec["dtls"] = dtls;
    }
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": name, "spec": spec, "options": {"mode": "server"}, "rules": rules}}),
    );
    port
}

#[test]
fn dtls_listeners_serve_openssl_clients_per_peer() {
    let pki = Pki::new("dtls-in");
    let ca = pki.ca("ca");
    let id = pki.server("ca", "server");
    let proxy = Proxy::start_trusted();
    let (up, _) = udp_upstream(b"A:");
    proxy.create("/api/v1/clusters", udp_cluster("up", up, None));
    let port = udp_listener(
        &proxy,
        "dtls",
        Some(json!({"cert": id.cert, "key": id.key})),
        route_to("up"),
    );
    let dtls = ["-dtls1_2"];
    let mut one = Peer::client_with(&dtls, port, &ca, Some("localhost"), None);
    let mut two = Peer::client_with(&dtls, port, &ca, Some("a.example"), None);
    assert_eq!(one.line("hello").as_deref(), Some("A:hello"));
    assert_eq!(two.line("there").as_deref(), Some("A:there"));
    assert_eq!(one.line("again").as_deref(), Some("A:again"));
    let sessions = proxy.sessions();
    assert_eq!(sessions.len(), 2, "a session per peer");
    let mut snis: Vec<&str> = sessions
        .iter()
        .map(|s| s["metadata"]["TLS"]["sni"].as_str().unwrap())
        .collect();
    snis.sort();
    assert_eq!(snis, ["a.example", "localhost"]);
    assert_eq!(sessions[0]["metadata"]["TLS"]["version"], "DTLSv1.2");
    // Cleartext to the DTLS port goes nowhere, and the others go on.
    let stray = udp_client("127.0.0.1");
    stray
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    stray.send_to(b"plain", ("127.0.0.1", port)).unwrap();
    assert!(stray.recv(&mut [0u8; 64]).is_err());
    assert_eq!(two.line("still").as_deref(), Some("A:still"));
}

#[test]
fn dtls_clusters_talk_to_openssl_servers_and_verify_them() {
    let pki = Pki::new("dtls-out");
    let ca = pki.ca("ca");
    pki.ca("other");
    let id = pki.server("ca", "server");
    let server_port = free_udp_port();
    let mut server = openssl_server(server_port, &id, &["-dtls1_2"], &pki.path(""));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let proxy = Proxy::start_trusted();
    proxy.create(
        "/api/v1/clusters",
        udp_cluster(
            "verified",
            server_port,
            Some(json!({"ca": ca, "server_name": "localhost"})),
        ),
    );
    let port = udp_listener(&proxy, "in", None, route_to("verified"));
    let client = udp_client("127.0.0.1");
    client.send_to(b"ping\n", ("127.0.0.1", port)).unwrap();
    assert_eq!(
        server.next_line().as_deref(),
        Some("ping"),
        "decrypted by openssl"
    );
    server.send("pong").unwrap();
    let mut buf = [0u8; 64];
    let n = client
        .recv(&mut buf)
        .expect("the answer, decrypted by l7mp");
    assert_eq!(&buf[..n], b"pong\n");
    // A server the cluster cannot verify gets no datagram through.
    drop(server);
    let untrusted_port = free_udp_port();
    let mut untrusted = openssl_server(untrusted_port, &id, &["-dtls1_2"], &pki.path(""));
    std::thread::sleep(std::time::Duration::from_millis(300));
    proxy.create(
        "/api/v1/clusters",
        udp_cluster(
            "untrusted",
            untrusted_port,
            Some(json!({"ca": pki.path("other.pem")})),
        ),
    );
    let port = udp_listener(&proxy, "in2", None, route_to("untrusted"));
    client.send_to(b"secret\n", ("127.0.0.1", port)).unwrap();
    assert_eq!(untrusted.next_line(), None);
}

#[test]
fn dtls_tunnels_udp_between_proxies_both_ways_keeping_datagrams() {
    let pki = Pki::new("dtls-tunnel");
    let ca = pki.ca("ca");
    let edge = pki.issue("ca", "edge", "/CN=edge/O=mesh", "DNS:edge.example");
    let core = pki.server("ca", "core");
    let (entry, exit) = (Proxy::start_trusted(), Proxy::start_trusted());
    let (up, received) = udp_upstream(b"up:");
    exit.create("/api/v1/clusters", udp_cluster("up", up, None));
    let tunnel = udp_listener(
        &exit,
        "from-edge",
        Some(json!({"cert": core.cert, "key": core.key, "client_ca": ca})),
        route_to("up"),
    );
    entry.create(
        "/api/v1/clusters",
        udp_cluster(
            "core",
            tunnel,
            Some(json!({"ca": ca, "server_name": "localhost",
            "cert": edge.cert, "key": edge.key})),
        ),
    );
    let port = udp_listener(&entry, "in", None, route_to("core"));
    let client = udp_client("127.0.0.1");
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for size in [1usize, 100, 1200, 8000] {
        let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let answer = udp_roundtrip(&client, to, &msg);
        assert_eq!(answer.len(), size + 3, "one datagram back per datagram");
        assert_eq!(&answer[3..], &msg[..]);
        assert_eq!(
            received.recv().unwrap(),
            msg,
            "one datagram to the upstream"
        );
    }
    let session = eventually("the exit's session", || exit.sessions().pop());
    assert_eq!(
        session["metadata"]["TLS"]["peer"]["subject"], "CN=edge, O=mesh",
        "{session}"
    );
    // A second client gets a session (and a tunnel) of its own.
    let other = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&other, to, b"x"), b"up:x");
    assert_eq!(exit.sessions().len(), 2);
}

/// Relays one DTLS client through a socket of the test's own, recording what it
/// sends, then replays its ClientHello from another address.
#[test]
fn a_replayed_client_hello_from_another_address_gets_only_a_cookie_request() {
    let pki = Pki::new("dtls-cookie");
    let ca = pki.ca("ca");
    let id = pki.server("ca", "server");
    let proxy = Proxy::start_trusted();
    let (up, _) = udp_upstream(b"A:");
    proxy.create("/api/v1/clusters", udp_cluster("up", up, None));
    let port = udp_listener(
        &proxy,
        "dtls",
        Some(json!({"cert": id.cert, "key": id.key})),
        route_to("up"),
    );
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream.connect(("127.0.0.1", port)).unwrap();
    let (hello_tx, hello) = std::sync::mpsc::channel::<Vec<u8>>();
    let relay_in = relay.try_clone().unwrap();
    let upstream_out = upstream.try_clone().unwrap();
    let client_addr = std::sync::Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
    let seen = client_addr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = relay_in.recv_from(&mut buf) {
            seen.lock().unwrap().get_or_insert(from);
            let _ = hello_tx.send(buf[..n].to_vec());
            let _ = upstream_out.send(&buf[..n]);
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = upstream.recv(&mut buf) {
            if let Some(to) = *client_addr.lock().unwrap() {
                let _ = relay.send_to(&buf[..n], to);
            }
        }
    });
    let mut client = Peer::client_with(&["-dtls1_2"], relay_port, &ca, Some("localhost"), None);
    assert_eq!(
        client.line("through").as_deref(),
        Some("A:through"),
        "the cookie exchange completes"
    );
    let first = hello.recv().unwrap();
    assert_eq!(
        (first[0], first[13]),
        (22, 1),
        "the relay saw the ClientHello first"
    );
    let with_cookie = hello.recv().unwrap();
    assert_eq!(
        (with_cookie[0], with_cookie[13]),
        (22, 1),
        "then the one with the cookie"
    );
    assert!(with_cookie.len() > first.len());
    // From another address, the first ClientHello is answered with a
    // HelloVerifyRequest smaller than itself; the one carrying the relay's cookie
    // (not that address's cookie) with an alert at most. Neither gets a ServerHello or a
    // certificate flight: nothing to amplify.
    let spoofer = udp_client("127.0.0.2");
    spoofer
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let answers = |datagram: &[u8]| {
        spoofer.send_to(datagram, ("127.0.0.1", port)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = spoofer.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    };
    let to_first = answers(&first);
    assert_eq!(to_first.len(), 1, "one datagram back");
    assert_eq!(
        (to_first[0][0], to_first[0][13]),
        (22, 3),
        "a HelloVerifyRequest"
    );
    assert!(
        to_first[0].len() < first.len(),
        "{} bytes back for {}",
        to_first[0].len(),
        first.len()
    );
    let to_replay = answers(&with_cookie);
    let back: usize = to_replay.iter().map(Vec::len).sum();
    assert!(
        back < with_cookie.len(),
        "{back} bytes back for {}",
        with_cookie.len()
    );
    // At most an alert (content type 21), never a handshake message.
    assert!(
        to_replay.iter().all(|d| d[0] != 22),
        "no ServerHello: {to_replay:?}"
    );
    assert_eq!(client.line("still").as_deref(), Some("A:still"));
}
