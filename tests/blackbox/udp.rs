//! UDP listeners and clusters.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

fn echo_listener(proxy: &Proxy, name: &str, spec: serde_json::Value, options: serde_json::Value) {
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": name, "spec": spec, "options": options,
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
}

#[test]
fn udp_echo_keeps_datagram_boundaries() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    echo_listener(
        &proxy,
        "udp-echo",
        json!({"protocol": "UDP", "port": port}),
        json!({}),
    );
    let client = udp_client("127.0.0.1");
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(udp_roundtrip(&client, to, b"hello"), b"hello");
    // Two datagrams come back as two datagrams, not one merged chunk.
    client.send_to(b"one", to).unwrap();
    client.send_to(b"two", to).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"one");
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"two");
    let big = vec![7u8; 60000];
    assert_eq!(udp_roundtrip(&client, to, &big), big);
    // One peer, one session.
    let sessions = proxy.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["metadata"]["UDP"]["dst_port"], port);
    assert_eq!(sessions[0]["source"]["stats"]["packets_in"], 4);
    assert_eq!(sessions[0]["datapath"], "ring");
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("l7mp_listener_sessions_total{listener=\"udp-echo\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("l7mp_listener_packets_total{direction=\"in\",listener=\"udp-echo\"} 4"),
        "{metrics}"
    );
}

#[test]
fn udp_server_mode_filters_peers() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    let allowed = udp_client("127.0.0.1");
    let allowed_port = allowed.local_addr().unwrap().port();
    echo_listener(
        &proxy,
        "filtered",
        json!({"protocol": "UDP", "port": port, "connect": {"port": allowed_port}}),
        json!({"mode": "server"}),
    );
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(udp_roundtrip(&allowed, to, b"let me in"), b"let me in");
    let stranger = udp_client("127.0.0.1");
    stranger
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    stranger.send_to(b"and me?", to).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        stranger.recv(&mut buf).is_err(),
        "a filtered peer got an answer"
    );
    assert_eq!(proxy.sessions().len(), 1);
}

#[test]
fn udp_server_sessions_idle_out() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    echo_listener(
        &proxy,
        "idle",
        json!({"protocol": "UDP", "port": port}),
        json!({"idle_timeout": 0.3}),
    );
    let client = udp_client("127.0.0.1");
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(udp_roundtrip(&client, to, b"ping"), b"ping");
    assert_eq!(proxy.sessions().len(), 1);
    eventually("the idle session to end", || {
        proxy.sessions().is_empty().then_some(())
    });
    // The same peer starts a fresh session afterwards.
    assert_eq!(udp_roundtrip(&client, to, b"again"), b"again");
}

#[test]
fn udp_singleton_connects_to_its_peer() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    let peer = udp_client("127.0.0.1");
    let peer_port = peer.local_addr().unwrap().port();
    echo_listener(
        &proxy,
        "single",
        json!({"protocol": "UDP", "port": port, "connect": {"address": "127.0.0.1", "port": peer_port}}),
        json!({}),
    );
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(udp_roundtrip(&peer, to, b"solo"), b"solo");
    let sessions = proxy.sessions();
    assert_eq!(sessions.len(), 1);
    assert_eq!(
        sessions[0]["source"]["peer"],
        format!("127.0.0.1:{peer_port}")
    );
}

#[test]
fn udp_over_ipv6_to_a_udp_cluster() {
    require(
        std::net::UdpSocket::bind("[::1]:0").is_ok(),
        "an IPv6 loopback (::1)",
    );
    let proxy = Proxy::start();
    let (upstream, received) = udp_upstream(b"up:");
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "v6", "spec": {"protocol": "UDP", "port": port, "address": "::1"},
            "rules": [{"action": {"route": {"destination": {
                "spec": {"protocol": "UDP", "port": upstream}, "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    let client = std::net::UdpSocket::bind("[::1]:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let to = format!("[::1]:{port}").parse().unwrap();
    assert_eq!(udp_roundtrip(&client, to, b"six"), b"up:six");
    assert_eq!(received.recv_timeout(WAIT).unwrap(), b"six");
    let sessions = proxy.sessions();
    assert_eq!(sessions[0]["metadata"]["IP"]["src_addr"], "::1");
    // UDP to UDP with nothing between: relayed in one task, no ring.
    assert_eq!(sessions[0]["datapath"], "relay");
}

/// Many peers starting sessions at once: each session's socket is bound before it is
/// connected, and a datagram of another peer caught in between must reach its own
/// session, never this one.
#[test]
fn concurrent_new_peers_each_get_only_their_own_answers() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "crowd", "spec": {"protocol": "UDP", "port": port},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The listener is up once one peer gets its echo.
    udp_roundtrip(&udp_client("127.0.0.1"), to, b"warm-up");
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(32));
    let peers: Vec<_> = (0..32)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                // A new peer (a new source port) for every exchange.
                for j in 0..20 {
                    let s = udp_client("127.0.0.1");
                    let msg = format!("peer-{i}-{j}");
                    s.send_to(msg.as_bytes(), to).unwrap();
                    let mut buf = [0u8; 64];
                    let (n, _) = s.recv_from(&mut buf).expect("an answer");
                    assert_eq!(
                        &buf[..n],
                        msg.as_bytes(),
                        "peer {i} got another peer's answer"
                    );
                }
            })
        })
        .collect();
    for p in peers {
        p.join().expect("every peer got its own answers");
    }
}
