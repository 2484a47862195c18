//! Real traffic through each plugin world (transform, codec, matcher), and hostile
//! plugins that may hurt no one but the session they serve.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn wasm(plugin: &str, config: Value) -> Value {
    json!({"spec": {"protocol": "Wasm", "plugin": plugin, "config": config}})
}

#[test]
fn transforms_rewrite_both_directions_and_update_metadata() {
    let proxy = Proxy::start();
    proxy.load_plugin("rewrite", "rewrite");
    let upstream = tcp_upstream(b"UP:");
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "backend", "spec": {"protocol": "TCP", "port": upstream},
            "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}),
    );
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "rw", "spec": {"protocol": "TCP", "port": port},
            "rules": [{"action": {"route": {
                "ingress": [wasm("rewrite", json!({"replace": [{"from": "cat", "to": "dog"}], "mark": "rewritten"}))],
                "destination": "backend",
                "egress": [wasm("rewrite", json!({"append": "!"}))]}}}]}}),
    );
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"a cat", 9), b"UP:a dog!");
    assert_eq!(tcp_exchange(&mut client, b"cat cat", 11), b"UP:dog dog!");
    // The ingress instance counted its chunks into the session's metadata.
    let session = proxy
        .sessions()
        .into_iter()
        .find(|s| s["source"]["origin"] == "rw")
        .unwrap();
    assert_eq!(session["metadata"]["rewritten"], 2, "{session}");
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("l7mp_plugin_counter_total{name=\"chunks\",plugin=\"rewrite\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("l7mp_plugin_calls_total{plugin=\"rewrite\",version=\"1\"}"),
        "{metrics}"
    );
}

/// MQTT packets: CONNECT with a client id, PUBLISH with a topic.
fn mqtt_connect(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

fn mqtt_publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![0x30, body.len() as u8];
    packet.extend(body);
    packet
}

#[test]
fn a_codec_frames_mqtt_and_routes_on_its_client_id() {
    let proxy = Proxy::start();
    proxy.load_plugin("mqtt", "mqtt-codec");
    // Sensors go to a UDP collector, one datagram per MQTT packet; others to a broker.
    let (collector, datagrams) = udp_upstream(b"");
    let broker = tcp_upstream(b"");
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "mqtt", "spec": {"protocol": "TCP", "port": port,
                "codec": {"plugin": "mqtt", "config": {"max_packet": 4096}}},
            "rules": [
                {"match": {"op": "starts", "path": "/codec/client_id", "value": "sensor-"},
                 "action": {"route": {"destination": {"spec": {"protocol": "UDP", "port": collector},
                    "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}},
                {"action": {"route": {"destination": {"spec": {"protocol": "TCP", "port": broker},
                    "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    let connect = mqtt_connect("sensor-7");
    let publish = mqtt_publish("temp/room1", b"21.5");
    let mut sensor = tcp_connect(port);
    // CONNECT and PUBLISH in one write, then a PUBLISH split across two writes.
    sensor
        .write_all(&[connect.clone(), publish.clone()].concat())
        .unwrap();
    let second = mqtt_publish("temp/room2", b"19.0");
    sensor.write_all(&second[..3]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    sensor.write_all(&second[3..]).unwrap();
    let recv = |what| datagrams.recv_timeout(Duration::from_secs(5)).expect(what);
    assert_eq!(recv("CONNECT"), connect);
    assert_eq!(recv("PUBLISH 1"), publish);
    assert_eq!(recv("PUBLISH 2"), second);
    // Answers come back through the codec's encoder.
    let mut echoed = vec![0u8; connect.len()];
    sensor.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, connect);
    let session = eventually("the sensor session", || {
        proxy
            .sessions()
            .into_iter()
            .find(|s| s["metadata"]["codec"]["client_id"] == "sensor-7")
    });
    assert_eq!(session["metadata"]["codec"]["type"], "CONNECT");
    assert_eq!(session["metadata"]["codec"]["protocol_level"], 4);

    // Another client goes to the broker, as a byte stream.
    let mut app = tcp_connect(port);
    let hello = [mqtt_connect("app-1"), mqtt_publish("cmd", b"on")].concat();
    assert_eq!(tcp_exchange(&mut app, &hello, hello.len()), hello);

    // A client that does not speak MQTT is closed, and the others go on.
    let mut stranger = tcp_connect(port);
    stranger.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(tcp_closed(&mut stranger));
    let more = mqtt_publish("temp/room3", b"20.0");
    sensor.write_all(&more).unwrap();
    assert_eq!(recv("PUBLISH 3"), more);

    // Over UDP the codec sees one datagram at a time.
    let udp_port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "mqtt-udp", "spec": {"protocol": "UDP", "port": udp_port,
                "codec": {"plugin": "mqtt"}},
            "rules": [{"match": {"op": "test", "path": "/codec/client_id", "value": "dgram-1"},
                "action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
    let client = udp_client("127.0.0.1");
    let to: SocketAddr = format!("127.0.0.1:{udp_port}").parse().unwrap();
    let hello = mqtt_connect("dgram-1");
    assert_eq!(udp_roundtrip(&client, to, &hello), hello);
    let publish = mqtt_publish("t", b"x");
    assert_eq!(udp_roundtrip(&client, to, &publish), publish);

    // And over a UNIX socket.
    let path = std::env::temp_dir().join(format!("l7mp-mqtt-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "mqtt-unix", "spec": {"protocol": "UnixDomainSocket",
                "filename": path, "codec": {"plugin": "mqtt"}},
            "rules": [{"match": {"op": "test", "path": "/codec/client_id", "value": "local-1"},
                "action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
    let mut local = eventually("the UNIX listener", || {
        std::os::unix::net::UnixStream::connect(&path).ok()
    });
    local
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let hello = [mqtt_connect("local-1"), mqtt_publish("u", b"1")].concat();
    local.write_all(&hello).unwrap();
    let mut echoed = vec![0u8; hello.len()];
    local.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, hello);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_matcher_plugin_is_one_more_predicate_operator() {
    let proxy = Proxy::start();
    proxy.load_plugin("cidr", "cidr-matcher");
    proxy.load_plugin("tag", "rewrite");
    let port = free_udp_port();
    let cidr = |cidrs: Value| json!({"plugin": "cidr", "config": {"cidrs": cidrs}});
    let answer =
        |prefix: &str| json!({"route": {"destination": wasm("tag", json!({"prepend": prefix}))}});
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "by-source", "spec": {"protocol": "UDP", "port": port},
            "rules": [
                // Inside and/not, next to built-in operators.
                {"match": {"op": "and", "apply": [
                    cidr(json!(["127.0.0.2/32", "10.0.0.0/8"])),
                    {"op": "test", "path": "/UDP/dst_port", "value": port}]},
                 "action": answer("lab:")},
                {"match": {"op": "not", "apply": [cidr(json!(["127.0.0.0/30"]))]},
                 "action": answer("far:")},
                {"match": cidr(json!(["127.0.0.1"])), "action": answer("local:")}]}}),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.2"), addr, b"x"),
        b"lab:x"
    );
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.9"), addr, b"y"),
        b"far:y"
    );
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.1"), addr, b"z"),
        b"local:z"
    );
    // 127.0.0.3 matches no rule: no session, no answer.
    let lost = udp_client("127.0.0.3");
    lost.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    lost.send_to(b"w", addr).unwrap();
    assert!(lost.recv_from(&mut [0u8; 16]).is_err());
    let (_, doc) = proxy.get("/api/v1/plugins/cidr");
    assert!(doc["versions"][0]["calls"].as_u64().unwrap() >= 6, "{doc}");
}

/// Sends `msg` and waits briefly for an answer.
fn try_roundtrip(s: &std::net::UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    s.send_to(msg, to).unwrap();
    let mut buf = [0u8; 1024];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

#[test]
fn hostile_plugins_end_only_what_they_serve() {
    let proxy = Proxy::start();
    proxy.load_plugin("hostile", "hostile");
    let listener = |name: &str, on_fault: &str| {
        wasm_destination(
            &proxy,
            name,
            json!({"plugin": "hostile", "on_fault": on_fault, "limits": {"deadline_ms": 100, "memory_mb": 32}}),
        )
    };
    let dropping = listener("dropping", "drop");

    // A bystander keeps talking through the same plugin the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystander = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let s = udp_client("127.0.0.1");
            let mut answered = 0;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let msg = format!("ok-{i}");
                assert_eq!(udp_roundtrip(&s, dropping, msg.as_bytes()), msg.as_bytes());
                answered += 1;
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            answered
        })
    };

    let attacker = udp_client("127.0.0.1");
    attacker
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert_eq!(
        try_roundtrip(&attacker, dropping, b"hi").as_deref(),
        Some(&b"hi"[..])
    );
    for bad in [&b"loop"[..], b"grow", b"trap"] {
        // The chunk is dropped; the session goes on with a fresh instance.
        assert_eq!(try_roundtrip(&attacker, dropping, bad), None, "{bad:?}");
        assert_eq!(
            try_roundtrip(&attacker, dropping, b"again").as_deref(),
            Some(&b"again"[..])
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = bystander.join().expect("the bystander was never refused");
    assert!(answered > 0);

    let metrics = proxy.metrics();
    for kind in ["deadline", "memory", "trap"] {
        assert!(
            metrics.contains(&format!(
                "l7mp_plugin_faults_total{{kind=\"{kind}\",plugin=\"hostile\",version=\"1\"}} 1"
            )),
            "{kind}: {metrics}"
        );
    }
    let (_, doc) = proxy.get("/api/v1/plugins/hostile");
    assert_eq!(doc["versions"][0]["traps"], 3, "{doc}");
    let session = proxy.sessions().into_iter().find(|s| {
        s["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["event"] == "PLUGIN_FAULT"))
    });
    assert!(session.is_some(), "the fault is among the session's events");

    // `pass` lets the chunk through unchanged; `close` ends the session.
    let passing = listener("passing", "pass");
    let s = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&s, passing, b"trap"), b"trap");
    assert_eq!(udp_roundtrip(&s, passing, b"after"), b"after");
    let closing = listener("closing", "close");
    let s = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&s, closing, b"first"), b"first");
    s.send_to(b"trap", closing).unwrap();
    eventually("the session to end on the fault", || {
        proxy
            .sessions()
            .iter()
            .find(|x| x["source"]["origin"] == "closing")
            .is_none_or(|x| x["status"] == "DESTROYED" || x["status"] == "FINALIZING")
            .then_some(())
    });
    // The proxy is fine.
    assert_eq!(proxy.get("/api/v1/admin").0, 200);
}

#[test]
fn plugins_reach_no_peer_unless_granted() {
    let proxy = Proxy::start_trusted();
    proxy.load_plugin("rewrite", "rewrite");
    // A peer that tells every connection a banner.
    let banner = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = banner.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in banner.incoming() {
            let _ = conn.and_then(|mut c| c.write_all(b"[net] "));
        }
    });
    let listener = |name: &str, grants: Value| {
        wasm_destination(
            &proxy,
            name,
            json!({"plugin": "rewrite", "config": {"prepend_from": peer.to_string()}, "grants": grants}),
        )
    };
    let granted = listener("granted", json!({"connect": [peer.to_string()]}));
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.1"), granted, b"hi"),
        b"[net] hi"
    );
    // Another peer's grant does not reach this one.
    let other = listener("other", json!({"connect": ["127.0.0.1:9"]}));
    let s = udp_client("127.0.0.1");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(try_roundtrip(&s, other, b"hi"), None);
    let denied = listener("denied", json!({}));
    assert_eq!(try_roundtrip(&s, denied, b"hi"), None);
    for name in ["other", "denied"] {
        eventually("the refused session to be counted", || {
            proxy
                .metrics()
                .contains(&format!(
                    "l7mp_cluster_connect_failures_total{{cluster=\"{name}-plugin\"}} 1"
                ))
                .then_some(())
        });
    }
}

#[test]
fn plugins_see_no_files_unless_granted() {
    let proxy = Proxy::start_trusted();
    proxy.load_plugin("rewrite", "rewrite");
    let dir = std::env::temp_dir().join(format!("l7mp-grant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("banner.txt"), "[banner] ").unwrap();
    let listener = |name: &str, grants: Value| {
        wasm_destination(
            &proxy,
            name,
            json!({"plugin": "rewrite", "config": {"prepend_file": "/data/banner.txt"}, "grants": grants}),
        )
    };
    let granted = listener(
        "granted",
        json!({"dirs": [{"host": dir, "guest": "/data"}]}),
    );
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.1"), granted, b"hi"),
        b"[banner] hi"
    );
    // Without the grant the plugin cannot open the file, so it refuses the session.
    let denied = listener("denied", json!({}));
    let s = udp_client("127.0.0.1");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(try_roundtrip(&s, denied, b"hi"), None);
    eventually("the refused session to be counted", || {
        proxy
            .metrics()
            .contains("l7mp_cluster_connect_failures_total{cluster=\"denied-plugin\"} 1")
            .then_some(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn instances_serve_session_after_session_until_recycled() {
    let proxy = Proxy::start();
    proxy.load_plugin("pooled", "rewrite");
    proxy.load_plugin("recycled", "rewrite");
    let listener = |plugin: &str, limits: Value| {
        wasm_destination(&proxy, plugin, json!({"plugin": plugin, "limits": limits}))
    };
    let pooled = listener("pooled", json!({}));
    // open + ingress + close is 3 calls: every session wears an instance out.
    let recycled = listener("recycled", json!({"recycle_after": 3}));
    for to in [pooled, recycled] {
        for i in 0..3 {
            let s = udp_client("127.0.0.1");
            assert_eq!(udp_roundtrip(&s, to, b"x"), b"x");
            // The session ends (deleted) before the next one starts.
            let name = eventually("the session", || {
                proxy
                    .sessions()
                    .into_iter()
                    .find(|x| x["status"] == "CONNECTED")
                    .map(|x| x["name"].as_str().unwrap().to_owned())
            });
            assert_eq!(
                proxy.delete(&format!("/api/v1/sessions/{name}")).0,
                200,
                "session {i}"
            );
            eventually("the session to go", || {
                proxy
                    .sessions()
                    .iter()
                    .all(|x| x["status"] != "CONNECTED")
                    .then_some(())
            });
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let instantiations = |plugin: &str| {
        proxy.get(&format!("/api/v1/plugins/{plugin}")).1["versions"][0]["instantiations"].clone()
    };
    assert_eq!(instantiations("pooled"), 1);
    assert_eq!(instantiations("recycled"), 3);
}

#[test]
fn a_rate_limiting_transform_drops_what_exceeds_its_bucket() {
    let proxy = Proxy::start();
    proxy.load_plugin("ratelimit", "ratelimit");
    let (upstream, received) = udp_upstream(b"");
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "limited", "spec": {"protocol": "UDP", "port": port},
            "rules": [{"action": {"route": {
                "ingress": [wasm("ratelimit", json!({"chunks_per_second": 1, "burst": 3}))],
                "destination": {"spec": {"protocol": "UDP", "port": upstream},
                    "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = udp_client("127.0.0.1");
    for i in 0..10 {
        client.send_to(format!("m{i}").as_bytes(), to).unwrap();
    }
    // The burst passes, the rest of the flood is dropped and counted.
    let mut got = Vec::new();
    while let Ok(d) = received.recv_timeout(Duration::from_millis(500)) {
        got.push(String::from_utf8(d).unwrap());
    }
    assert_eq!(got, ["m0", "m1", "m2"]);
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("l7mp_plugin_counter_total{name=\"dropped\",plugin=\"ratelimit\"} 7"),
        "{metrics}"
    );
    // A second later a token is back.
    std::thread::sleep(Duration::from_millis(1100));
    client.send_to(b"later", to).unwrap();
    assert_eq!(
        received.recv_timeout(Duration::from_secs(3)).unwrap(),
        b"later"
    );
}
