//! What plugins may cost: memory per instance and for all of them, functions per
//! upload, and what a leaking plugin does to a long session.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

fn try_roundtrip(s: &std::net::UdpSocket, to: std::net::SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    s.send_to(msg, to).unwrap();
    let mut buf = [0u8; 1024];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

fn plugin_doc(proxy: &Proxy, name: &str) -> Value {
    let (status, doc) = proxy.get(&format!("/api/v1/plugins/{name}"));
    assert_eq!(status, 200, "{doc}");
    doc
}

#[test]
fn a_leaking_plugin_loses_no_chunk_when_it_is_stateless() {
    let proxy = Proxy::start();
    proxy.load_plugin("hostile", "hostile");
    let limits = json!({"memory_mb": 4, "deadline_ms": 200});
    let stateless = wasm_destination(
        &proxy,
        "stateless",
        json!({"plugin": "hostile", "stateless": true, "limits": limits}),
    );
    let stateful = wasm_destination(
        &proxy,
        "stateful",
        json!({"plugin": "hostile", "limits": limits}),
    );
    // Each `leak` keeps 256 KiB for good: a 4 MiB instance runs out in a dozen calls.
    let s = udp_client("127.0.0.1");
    for i in 0..40 {
        assert_eq!(
            try_roundtrip(&s, stateless, b"leak").as_deref(),
            Some(&b"leak"[..]),
            "chunk {i}"
        );
    }
    let doc = plugin_doc(&proxy, "hostile");
    assert!(
        doc["versions"][0]["instantiations"].as_u64().unwrap() > 1,
        "recycled: {doc}"
    );
    // Without the promise, the instance runs out of memory and a chunk is lost (and
    // counted), as `on_fault: drop` says.
    let s = udp_client("127.0.0.1");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let lost = (0..40)
        .filter(|_| try_roundtrip(&s, stateful, b"leak").is_none())
        .count();
    assert!(
        lost >= 1,
        "a stateful plugin that runs out loses the chunk it was given"
    );
    assert!(
        proxy
            .metrics()
            .contains("l7mp_plugin_faults_total{kind=\"memory\",plugin=\"hostile\",version=\"1\"}"),
        "the memory faults are counted"
    );
}

#[test]
fn the_memory_budget_refuses_instances_beyond_it() {
    let proxy = Proxy::start();
    proxy.load_plugin("rewrite", "rewrite");
    proxy.create("/api/v1/admin", json!({"admin": {"plugin_memory_mb": 100}}));
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "budget", "spec": {"protocol": "UDP", "port": port},
            "options": {"track": 30},
            "rules": [{"action": {"route": {"destination": {"name": "rw", "spec": {"protocol": "Wasm",
                "plugin": "rewrite", "config": {"prepend": ">"}, "limits": {"memory_mb": 64}}}}}}]}}),
    );
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let first = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&first, to, b"a"), b">a");
    // A second live session would take the budget past 100 MiB: refused, and told why.
    let second = udp_client("127.0.0.1");
    second
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(try_roundtrip(&second, to, b"b"), None);
    let refused = eventually("the refused session", || {
        proxy.sessions().into_iter().find(|s| {
            s["error"]
                .as_str()
                .is_some_and(|e| e.contains("memory budget"))
        })
    });
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("admin.plugin_memory_mb"),
        "{refused}"
    );
    let (_, admin) = proxy.get("/api/v1/admin");
    assert_eq!(admin["plugin_memory"]["budget_mb"], 100, "{admin}");
    // With room, the next session gets its instance.
    proxy.create("/api/v1/admin", json!({"admin": {"plugin_memory_mb": 256}}));
    let third = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&third, to, b"c"), b">c");
}

#[test]
fn idle_instances_are_let_go_within_seconds() {
    let proxy = Proxy::start();
    proxy.load_plugin("rewrite", "rewrite");
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "idle", "spec": {"protocol": "UDP", "port": port},
            "options": {"idle_timeout": 0.2},
            "rules": [{"action": {"route": {"destination": {"name": "rw", "spec": {"protocol": "Wasm",
                "plugin": "rewrite", "config": {}}}}}}]}}),
    );
    let s = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&s, ([127, 0, 0, 1], port).into(), b"x"), b"x");
    let live = || {
        plugin_doc(&proxy, "rewrite")["versions"][0]["live_instances"]
            .as_i64()
            .unwrap()
    };
    eventually("the session to end", || {
        proxy.sessions().is_empty().then_some(())
    });
    assert_eq!(
        live(),
        1,
        "the instance waits in the pool for the next session"
    );
    // Nobody comes: it is let go, and its memory with it.
    let start = Instant::now();
    while live() != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the idle instance stayed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn uploads_with_too_many_functions_are_refused_before_compiling() {
    let proxy = Proxy::start();
    proxy.create(
        "/api/v1/admin",
        json!({"admin": {"plugin_max_functions": 10}}),
    );
    let (status, body) = proxy.upload("rewrite", "1", &plugin_wasm("rewrite"));
    assert_eq!(status, 422, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("functions") && message.contains("admin.plugin_max_functions"),
        "{message}"
    );
    assert_eq!(proxy.get("/api/v1/plugins/rewrite").0, 404);
}
