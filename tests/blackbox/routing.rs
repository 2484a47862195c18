//! Rules, rewrites, transforms in chains, load balancing, live updates.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::harness::*;

fn decode(s: &str) -> Vec<u8> {
    STANDARD.decode(s).expect("base64")
}

fn udp_cluster(name: &str, port: u16) -> Value {
    json!({"name": name, "spec": {"protocol": "UDP", "port": port}, "endpoints": [{"spec": {"address": "127.0.0.1"}}]})
}

#[test]
fn rules_route_by_metadata_to_two_destinations() {
    let proxy = Proxy::start();
    let (a, _) = udp_upstream(b"A:");
    let (b, _) = udp_upstream(b"B:");
    proxy.create("/api/v1/clusters", json!({"cluster": udp_cluster("a", a)}));
    proxy.create("/api/v1/clusters", json!({"cluster": udp_cluster("b", b)}));
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "split", "spec": {"protocol": "UDP", "port": port},
            "rules": [
                {"match": {"op": "and", "apply": [
                    {"op": "test", "path": "/IP/src_addr", "value": "127.0.0.2"},
                    {"op": "more", "path": "/UDP/src_port", "value": 0}]},
                 "action": {"route": {"destination": "b"}}},
                {"match": {"op": "and", "apply": [
                    {"op": "not", "apply": [{"op": "starts", "path": "IP/src_addr", "value": "127.0.0.2"}]},
                    {"op": "ends", "path": "/IP/src_addr", "value": ".1"}]},
                 "action": {"route": {"destination": "a"}}}
            ]}}),
    );
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(udp_roundtrip(&udp_client("127.0.0.1"), to, b"x"), b"A:x");
    assert_eq!(udp_roundtrip(&udp_client("127.0.0.2"), to, b"y"), b"B:y");
    // A peer no rule matches gets no session.
    let stray = udp_client("127.0.0.3");
    stray
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    stray.send_to(b"z", to).unwrap();
    assert!(stray.recv(&mut [0u8; 8]).is_err());
}

#[test]
fn rewrites_reach_the_upstream_through_jsonencap() {
    let proxy = Proxy::start();
    let (upstream, received) = udp_upstream(b"");
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "encap", "spec": {"protocol": "UDP", "port": port},
            "rules": [{"action": {
                "rewrite": [{"path": "labels/user", "value": "alice"}, {"path": "/labels/tier", "value": {"level": 2}}],
                "route": {"destination": udp_cluster("up", upstream), "ingress": [{"spec": {"protocol": "JSONEncap"}}]}}}]}}),
    );
    let client = udp_client("127.0.0.1");
    client
        .send_to(b"\x00payload", format!("127.0.0.1:{port}"))
        .unwrap();
    let wrapped: Value = serde_json::from_slice(&received.recv_timeout(WAIT).unwrap()).unwrap();
    assert_eq!(
        wrapped["metadata"]["labels"],
        json!({"user": "alice", "tier": {"level": 2}})
    );
    assert_eq!(
        wrapped["metadata"]["UDP"]["src_port"],
        client.local_addr().unwrap().port()
    );
    assert_eq!(decode(wrapped["payload"].as_str().unwrap()), b"\x00payload");
    // The session shows the rewritten metadata.
    assert_eq!(proxy.sessions()[0]["metadata"]["labels"]["user"], "alice");
}

/// UDP -> JSONEncap (+ more ingress) -> Echo -> the given egress chain.
fn encap_echo_listener(proxy: &Proxy, ingress: Value, egress: Value) -> std::net::SocketAddr {
    let port = free_udp_port();
    let mut chain = vec![json!({"spec": {"protocol": "JSONEncap"}})];
    chain.extend(ingress.as_array().unwrap().iter().cloned());
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "roundtrip", "spec": {"protocol": "UDP", "port": port},
            "rules": [{"action": {"route": {
                "destination": {"spec": {"protocol": "Echo"}}, "ingress": chain, "egress": egress}}}]}}),
    );
    format!("127.0.0.1:{port}").parse().unwrap()
}

#[test]
fn jsondecap_undoes_jsonencap_and_drops_garbage() {
    let proxy = Proxy::start();
    // Encapsulated and decapsulated on the way in; on the way out, plain bytes are not
    // an encapsulated message, so JSONDecap drops them and says so.
    let to = encap_echo_listener(
        &proxy,
        json!([{"spec": {"protocol": "JSONDecap"}}]),
        json!([{"spec": {"protocol": "JSONDecap"}}]),
    );
    let client = udp_client("127.0.0.1");
    client.send_to(b"binary\xff\x00", to).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    assert!(client.recv(&mut [0u8; 64]).is_err());
    let session = &proxy.sessions()[0];
    assert!(
        session["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "TRANSFORM_ERROR"),
        "{session}"
    );
    assert_eq!(session["ingress"][0]["stats"]["packets_in"], 1);
    assert_eq!(session["ingress"][1]["stats"]["packets_in"], 1);
    assert_eq!(session["datapath"], "ring");
}

#[test]
fn jsondecap_round_trip_returns_the_original_bytes() {
    let proxy = Proxy::start();
    let to = encap_echo_listener(
        &proxy,
        json!([]),
        json!([{"spec": {"protocol": "JSONDecap"}}, {"spec": {"protocol": "Metric"}}]),
    );
    let client = udp_client("127.0.0.1");
    assert_eq!(
        udp_roundtrip(&client, to, b"binary\xff\x00"),
        b"binary\xff\x00"
    );
    let metrics = proxy.metrics();
    assert!(metrics.contains("l7mp_metric_bytes_total{cluster=\"roundtrip-RuleList-0-Rule-0-Route-0-egress-Cluster-1\"} 8"), "{metrics}");
}

#[test]
fn hashring_keeps_a_key_on_one_endpoint() {
    let proxy = Proxy::start();
    let (a, _) = udp_upstream(b"A");
    let (b, _) = udp_upstream(b"B");
    let (c, _) = udp_upstream(b"C");
    let endpoints: Vec<Value> = [a, b, c]
        .iter()
        .map(|p| json!({"spec": {"address": "127.0.0.1", "port": p}}))
        .collect();
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "ring", "spec": {"protocol": "UDP"}, "endpoints": endpoints,
            "loadbalancer": {"policy": "HashRing", "key": "/IP/src_addr"}}}),
    );
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "sticky", "spec": {"protocol": "UDP", "port": port},
            "rules": [{"action": {"route": {"destination": "ring"}}}]}}),
    );
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    let mut seen = std::collections::HashMap::new();
    for ip in [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ] {
        for _ in 0..4 {
            // A new source port each time: a new session with the same key.
            let answer = udp_roundtrip(&udp_client(ip), to, b"");
            let first = *seen.entry(ip).or_insert(answer[0]);
            assert_eq!(first, answer[0], "{ip} moved");
        }
    }
    let distinct: std::collections::HashSet<_> = seen.values().collect();
    assert!(
        distinct.len() >= 2,
        "six keys all on one endpoint: {seen:?}"
    );
}

#[test]
fn apply_continues_in_another_rulelist() {
    let proxy = Proxy::start();
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "echo", "spec": {"protocol": "Echo"}}}),
    );
    proxy.create(
        "/api/v1/rulelists",
        json!({"rulelist": {"name": "inner", "rules": [{"match": {"op": "test", "path": "/labels/stage", "value": "outer"},
            "action": {"route": {"destination": "echo"}}}]}}),
    );
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "outer", "spec": {"protocol": "UDP", "port": port},
            "rules": [{"action": {"rewrite": [{"path": "/labels/stage", "value": "outer"}], "apply": "inner"}}]}}),
    );
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.1"), to, b"deep"),
        b"deep"
    );
}

#[test]
fn replacing_a_route_keeps_established_sessions_on_their_copy() {
    let proxy = Proxy::start();
    let (a, _) = udp_upstream(b"A:");
    let (b, _) = udp_upstream(b"B:");
    proxy.create("/api/v1/clusters", json!({"cluster": udp_cluster("a", a)}));
    proxy.create("/api/v1/clusters", json!({"cluster": udp_cluster("b", b)}));
    proxy.create(
        "/api/v1/routes",
        json!({"route": {"name": "r", "destination": "a"}}),
    );
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "live", "spec": {"protocol": "UDP", "port": port}, "rules": [{"action": {"route": "r"}}]}}),
    );
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    let old = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&old, to, b"1"), b"A:1");
    let (status, answer) = proxy.put(
        "/api/v1/routes/r",
        json!({"route": {"name": "r", "destination": "b"}}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(udp_roundtrip(&old, to, b"2"), b"A:2");
    assert_eq!(udp_roundtrip(&udp_client("127.0.0.1"), to, b"3"), b"B:3");
    // The listener kept its socket: PUT with the same binding does not rebind.
    let (status, answer) = proxy.put(
        "/api/v1/listeners/live",
        json!({"listener": {"name": "live", "spec": {"protocol": "UDP", "port": port}, "rules": [{"action": {"route": {"destination": "a"}}}]}}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(udp_roundtrip(&old, to, b"4"), b"A:4");
}
