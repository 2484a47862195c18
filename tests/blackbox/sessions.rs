//! Sessions through the API: list, get, delete, track, and recursive deletes.

use serde_json::json;

use crate::harness::*;

fn tcp_echo_listener(proxy: &Proxy, name: &str, port: u16, options: serde_json::Value) {
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": name, "spec": {"protocol": "TCP", "port": port}, "options": options,
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
}

#[test]
fn sessions_list_get_and_delete() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    tcp_echo_listener(&proxy, "echo", port, json!({}));
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"hi", 2), b"hi");
    let sessions = proxy.sessions();
    assert_eq!(sessions.len(), 1);
    let name = sessions[0]["name"].as_str().unwrap().to_owned();
    let (status, session) = proxy.get(&format!("/api/v1/sessions/{name}"));
    assert_eq!(status, 200);
    assert_eq!(session["status"], "CONNECTED");
    assert_eq!(session["source"]["origin"], "echo");
    assert_eq!(session["destination"]["status"], "READY");
    assert!(
        session["ingress"].is_array() && session["egress"].is_array(),
        "{session}"
    );
    assert_eq!(session["metadata"]["TCP"]["dst_port"], port);
    assert_eq!(proxy.delete(&format!("/api/v1/sessions/{name}")).0, 200);
    assert!(tcp_closed(&mut client));
    eventually("the session to go", || {
        proxy.sessions().is_empty().then_some(())
    });
    assert_eq!(proxy.get(&format!("/api/v1/sessions/{name}")).0, 404);
    assert_eq!(proxy.delete(&format!("/api/v1/sessions/{name}")).0, 404);
}

#[test]
fn track_keeps_ended_sessions_visible() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    tcp_echo_listener(&proxy, "tracked", port, json!({"track": 30}));
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"x", 1), b"x");
    drop(client);
    let ended = eventually("the session to end", || {
        proxy
            .sessions()
            .into_iter()
            .find(|s| s["status"] == "DESTROYED")
    });
    let events: Vec<_> = ended["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        events.first().map(String::as_str),
        Some("ROUTED"),
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("END"), "{events:?}");
    assert_eq!(ended["source"]["stats"]["bytes_in"], 1);
}

#[test]
fn recursive_listener_delete_ends_its_sessions_and_inline_objects() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    tcp_echo_listener(&proxy, "doomed", port, json!({}));
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"x", 1), b"x");
    assert_eq!(proxy.get("/api/v1/rulelists/doomed-RuleList-0").0, 200);
    assert_eq!(
        proxy.delete("/api/v1/listeners/doomed?recursive=true").0,
        200
    );
    assert!(tcp_closed(&mut client));
    for path in [
        "listeners/doomed",
        "rulelists/doomed-RuleList-0",
        "rules/doomed-RuleList-0-Rule-0",
        "routes/doomed-RuleList-0-Rule-0-Route-0",
    ] {
        assert_eq!(proxy.get(&format!("/api/v1/{path}")).0, 404, "{path}");
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening"
    );
}

#[test]
fn plain_listener_delete_keeps_established_sessions() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    tcp_echo_listener(&proxy, "gentle", port, json!({}));
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"a", 1), b"a");
    assert_eq!(proxy.delete("/api/v1/listeners/gentle").0, 200);
    assert_eq!(tcp_exchange(&mut client, b"b", 1), b"b");
    // Its inline rulelist stays: only a recursive delete removes it.
    assert_eq!(proxy.get("/api/v1/rulelists/gentle-RuleList-0").0, 200);
}
