//! JSONSocket: the header handshake over UDP and TCP, its status codes, and the
//! cluster side that builds a header from metadata.

use std::io::{Read, Write};

use serde_json::{Value, json};

use crate::harness::*;

fn jsonsocket_listener(proxy: &Proxy, name: &str, transport: Value) {
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": name, "spec": {"protocol": "JSONSocket", "transport": transport}, "options": {"track": 30},
            "rules": [{"match": {"op": "test", "path": "/JSONSocket/user", "value": "ann"},
                       "action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
}

fn status(reply: &[u8]) -> (u64, String) {
    let v: Value = serde_json::from_slice(reply)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(reply)));
    assert_eq!(v["JSONSocketVersion"], 1, "{v}");
    (
        v["JSONSocketStatus"].as_u64().unwrap(),
        v["JSONSocketMessage"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[test]
fn jsonsocket_over_udp_answers_every_status() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    jsonsocket_listener(&proxy, "js", json!({"protocol": "UDP", "port": port}));
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = udp_client("127.0.0.1");
    assert_eq!(
        status(&udp_roundtrip(
            &client,
            to,
            br#"{"JSONSocketVersion": 1, "user": "ann"}"#
        ))
        .0,
        200
    );
    assert_eq!(udp_roundtrip(&client, to, b"payload"), b"payload");
    let session = proxy
        .sessions()
        .into_iter()
        .find(|s| s["status"] == "CONNECTED")
        .expect("the session");
    assert_eq!(session["metadata"]["JSONSocket"]["user"], "ann");
    for (header, want) in [
        (&b"{not json"[..], 400),
        (&br#"{"user": "ann"}"#[..], 400),
        (&br#"{"JSONSocketVersion": "1"}"#[..], 400),
        (&br#"{"JSONSocketVersion": 2, "user": "ann"}"#[..], 505),
        (&br#"{"JSONSocketVersion": 1, "user": "bob"}"#[..], 404),
    ] {
        let (code, message) = status(&udp_roundtrip(&udp_client("127.0.0.1"), to, header));
        assert_eq!(code, want, "{}: {message}", String::from_utf8_lossy(header));
    }
}

#[test]
fn jsonsocket_over_tcp_takes_data_right_after_the_header() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    jsonsocket_listener(&proxy, "js-tcp", json!({"protocol": "TCP", "port": port}));
    let mut client = tcp_connect(port);
    client
        .write_all(br#"{"JSONSocketVersion": 1, "user": "ann"} and data"#)
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.ends_with(b" and data") {
        let n = client.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let mut values = serde_json::Deserializer::from_slice(&got).into_iter::<Value>();
    let reply = values.next().unwrap().unwrap();
    assert_eq!(reply["JSONSocketStatus"], 200);
    assert_eq!(&got[values.byte_offset()..], b" and data");
}

#[test]
fn jsonsocket_cluster_builds_its_header_from_metadata() {
    let proxy = Proxy::start();
    let (front, back) = (free_udp_port(), free_udp_port());
    jsonsocket_listener(&proxy, "upstream", json!({"protocol": "UDP", "port": back}));
    let cluster = |name: &str, user: &str| {
        json!({"name": name, "spec": {"protocol": "JSONSocket", "transport": {"protocol": "UDP", "port": back},
            "header": [{"path": {"from": "/IP/src_addr", "to": "/client/ip"}}, {"path": "/labels"},
                       {"set": {"key": "/user", "value": user}}]},
            "endpoints": [{"spec": {"address": "127.0.0.1"}}]})
    };
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": cluster("good", "ann")}),
    );
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": cluster("refused", "bob")}),
    );
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "front", "spec": {"protocol": "UDP", "port": front}, "options": {"track": 30},
            "rules": [
                {"match": {"op": "test", "path": "/IP/src_addr", "value": "127.0.0.2"}, "action": {"route": {"destination": "refused"}}},
                {"action": {"rewrite": [{"path": "/labels/tier", "value": "gold"}], "route": {"destination": "good"}}}
            ]}}),
    );
    let to: std::net::SocketAddr = format!("127.0.0.1:{front}").parse().unwrap();
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.1"), to, b"through the handshake"),
        b"through the handshake"
    );
    let upstream = proxy
        .sessions()
        .into_iter()
        .find(|s| s["source"]["origin"] == "upstream" && s["status"] == "CONNECTED")
        .expect("the upstream session");
    assert_eq!(
        upstream["metadata"]["JSONSocket"],
        json!({"JSONSocketVersion": 1, "client": {"ip": "127.0.0.1"}, "labels": {"tier": "gold"}, "user": "ann"})
    );
    // The upstream refuses bob: the front session fails with the answer.
    udp_client("127.0.0.2").send_to(b"let me in", to).unwrap();
    let failed = eventually("the refused session", || {
        proxy
            .sessions()
            .into_iter()
            .find(|s| s["source"]["origin"] == "front" && s["error"].is_string())
    });
    assert!(
        failed["error"].as_str().unwrap().contains("answered 404"),
        "{failed}"
    );
}

#[test]
fn jsonsocket_over_websocket() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    jsonsocket_listener(
        &proxy,
        "js-ws",
        json!({"protocol": "WebSocket", "port": port}),
    );
    let stream = tcp_connect(port);
    let (mut ws, _) =
        tungstenite::client(format!("ws://127.0.0.1:{port}/media"), stream).expect("upgrade");
    ws.send(tungstenite::Message::text(
        r#"{"JSONSocketVersion": 1, "user": "ann"}"#,
    ))
    .unwrap();
    let answer = ws.read().unwrap().into_data();
    assert_eq!(status(&answer).0, 200);
    ws.send(tungstenite::Message::binary(vec![1u8, 2, 3]))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        tungstenite::Message::binary(vec![1u8, 2, 3])
    );
    let session = proxy
        .sessions()
        .into_iter()
        .find(|s| s["status"] == "CONNECTED")
        .expect("the session");
    assert_eq!(session["metadata"]["HTTP"]["url"]["path"], "/media");
    assert_eq!(session["metadata"]["JSONSocket"]["user"], "ann");
}
