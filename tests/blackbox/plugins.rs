//! Wasm plugins seen from outside: uploads and their checks, hot swap and rollback
//! under live traffic, deletes, and plugins loaded from the static config. The example
//! components are built from `plugins/` and uploaded over REST.

use std::io::Write;
use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::harness::*;

/// A UDP listener whose sessions are answered by the Wasm transform `plugin`.
fn answered_by(proxy: &Proxy, listener: &str, plugin: &str, config: Value) -> SocketAddr {
    wasm_destination(proxy, listener, json!({"plugin": plugin, "config": config}))
}

fn version_field(proxy: &Proxy, plugin: &str, version: &str, field: &str) -> Value {
    let (status, doc) = proxy.get(&format!("/api/v1/plugins/{plugin}"));
    assert_eq!(status, 200, "{doc}");
    doc["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .unwrap_or_else(|| panic!("no version {version}: {doc}"))[field]
        .clone()
}

#[test]
fn uploads_are_checked_against_the_worlds() {
    let proxy = Proxy::start();
    // A component for the transform world is accepted and described.
    let (status, doc) = proxy.upload("rewrite", "1", &plugin_wasm("rewrite"));
    assert_eq!(status, 201, "{doc}");
    assert_eq!(doc["world"], "transform");
    let v = &doc["versions"][0];
    assert_eq!(v["size"], plugin_wasm("rewrite").len());
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert!(
        v["exports"][0]
            .as_str()
            .unwrap()
            .starts_with("l7mp:plugin/transform@0.1.0"),
        "{v}"
    );

    // A core module is not a component: 400.
    let (status, doc) = proxy.upload("core", "1", b"\0asm\x01\0\0\0");
    assert_eq!(status, 400, "{doc}");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("core WebAssembly module"),
        "{doc}"
    );
    let (status, _) = proxy.upload("junk", "1", b"#!/bin/sh\nrm -rf /\n");
    assert_eq!(status, 400);

    // A component that claims the transform interface but lacks its hooks: 422,
    // naming the missing export.
    let (status, doc) = proxy.upload("wrong", "1", &plugin_wasm("wrong-world"));
    assert_eq!(status, 422, "{doc}");
    let message = doc["message"].as_str().unwrap();
    assert!(
        message.contains("l7mp:plugin/transform-plugin@0.1.0"),
        "{message}"
    );
    assert!(message.contains("[method]session.ingress"), "{message}");

    // Too large, wrong type, missing parameters, a duplicate version.
    // Refused on its declared length, before the body is read.
    let mut raw = std::net::TcpStream::connect(proxy.api.trim_start_matches("http://")).unwrap();
    write!(
        raw,
        "POST /api/v1/plugins?name=big&version=1 HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\n\r\n",
        33 << 20
    )
    .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut raw, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    let (status, _) = proxy.send_raw(
        "POST",
        "/api/v1/plugins?name=x&version=1",
        "text/plain",
        "hi",
    );
    assert_eq!(status, 415);
    let (status, doc) = proxy.upload("rewrite", "", &plugin_wasm("rewrite"));
    assert_eq!(status, 400, "{doc}");
    let (status, doc) = proxy.upload("rewrite", "1", &plugin_wasm("rewrite"));
    assert_eq!(status, 409, "{doc}");
    // A version of another world under the same name.
    let (status, doc) = proxy.upload("rewrite", "2", &plugin_wasm("mqtt-codec"));
    assert_eq!(status, 409, "{doc}");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("is a transform plugin"),
        "{doc}"
    );

    // Objects must name a loaded plugin of their world.
    proxy.load_plugin("mqtt", "mqtt-codec");
    let (status, doc) = proxy.post(
        "/api/v1/clusters",
        json!({"cluster": {"name": "c", "spec": {"protocol": "Wasm", "plugin": "nope"}}}),
    );
    assert_eq!(status, 422, "{doc}");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("plugin 'nope' is not loaded"),
        "{doc}"
    );
    let (status, doc) = proxy.post(
        "/api/v1/clusters",
        json!({"cluster": {"name": "c", "spec": {"protocol": "Wasm", "plugin": "mqtt"}}}),
    );
    assert_eq!(status, 422, "{doc}");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("is a codec plugin, not a transform"),
        "{doc}"
    );
    let (status, doc) = proxy.post(
        "/api/v1/clusters",
        json!({"cluster": {"name": "c", "spec": {"protocol": "Wasm", "plugin": "rewrite",
            "limits": {"memory_mb": 100000}}}}),
    );
    assert_eq!(status, 422, "{doc}");
    assert!(
        doc["message"].as_str().unwrap().contains("memory_mb"),
        "{doc}"
    );

    let (status, list) = proxy.get("/api/v1/plugins");
    assert_eq!(status, 200);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mqtt", "rewrite"]);
}

#[test]
fn a_new_version_serves_new_sessions_while_old_ones_keep_theirs_and_rollback_restores() {
    let proxy = Proxy::start();
    // Version 1 tags every datagram; version 2 (another build) passes them unchanged.
    let (status, doc) = proxy.upload("tagger", "1", &plugin_wasm("rewrite"));
    assert_eq!(status, 201, "{doc}");
    let addr = answered_by(&proxy, "swap", "tagger", json!({"prepend": "[v1] "}));

    let old = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&old, addr, b"a"), b"[v1] a");

    let (status, doc) = proxy.upload("tagger", "2", &plugin_wasm("hostile"));
    assert_eq!(status, 201, "{doc}");
    assert_eq!(doc["current"], "2");
    // The established session keeps version 1, under live traffic.
    for i in 0..20 {
        let msg = format!("old-{i}");
        assert_eq!(
            udp_roundtrip(&old, addr, msg.as_bytes()),
            format!("[v1] {msg}").as_bytes()
        );
    }
    // A new session gets version 2.
    let new = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&new, addr, b"b"), b"b");
    assert_eq!(version_field(&proxy, "tagger", "1", "live_instances"), 1);
    assert_eq!(version_field(&proxy, "tagger", "2", "live_instances"), 1);

    // Rolling back makes version 1 current again for the next session; the session on
    // version 2 keeps it.
    let (status, doc) = proxy.post("/api/v1/plugins/tagger/rollback", json!({}));
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["current"], "1");
    let third = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&third, addr, b"c"), b"[v1] c");
    assert_eq!(udp_roundtrip(&new, addr, b"b2"), b"b2");
    assert_eq!(udp_roundtrip(&old, addr, b"a2"), b"[v1] a2");
    // Nothing before version 1.
    let (status, _) = proxy.post("/api/v1/plugins/tagger/rollback", json!({}));
    assert_eq!(status, 409);
    // Forward again to a named version.
    let (status, doc) = proxy.post("/api/v1/plugins/tagger/rollback?version=2", json!({}));
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["current"], "2");
    assert!(
        version_field(&proxy, "tagger", "1", "calls")
            .as_u64()
            .unwrap()
            >= 23
    );
}

#[test]
fn delete_is_refused_while_in_use_unless_drained_or_recursive() {
    let proxy = Proxy::start();
    proxy.load_plugin("tagger", "rewrite");
    let addr = answered_by(&proxy, "used", "tagger", json!({"prepend": "> "}));
    let client = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&client, addr, b"x"), b"> x");

    // A cluster uses it.
    let (status, doc) = proxy.delete("/api/v1/plugins/tagger");
    assert_eq!(status, 409, "{doc}");
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("cluster 'used-plugin'"),
        "{doc}"
    );

    // Without the cluster, a live session still runs on it.
    let (status, doc) = proxy.delete("/api/v1/listeners/used");
    assert_eq!(status, 200, "{doc}");
    let (status, doc) = proxy.delete("/api/v1/clusters/used-plugin");
    assert_eq!(status, 200, "{doc}");
    let (status, doc) = proxy.delete("/api/v1/plugins/tagger");
    assert_eq!(status, 409, "{doc}");
    assert!(
        doc["message"].as_str().unwrap().contains("live instance"),
        "{doc}"
    );

    // Draining removes the plugin now and lets the session finish on its version.
    let (status, doc) = proxy.delete("/api/v1/plugins/tagger?drain=true");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(proxy.get("/api/v1/plugins/tagger").0, 404);
    let session = proxy
        .sessions()
        .into_iter()
        .find(|s| s["source"]["origin"] == "used")
        .expect("the session");
    assert_eq!(session["status"], "CONNECTED");

    // Recursive: the objects that use the plugin go, and their sessions end.
    proxy.load_plugin("tagger2", "rewrite");
    let addr = answered_by(&proxy, "used2", "tagger2", json!({"prepend": "> "}));
    let client = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&client, addr, b"y"), b"> y");
    let (status, doc) = proxy.delete("/api/v1/plugins/tagger2?recursive=true");
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["objects_deleted"], 1);
    assert_eq!(proxy.get("/api/v1/clusters/used2-plugin").0, 404);
    eventually("the session to end", || {
        proxy
            .sessions()
            .iter()
            .all(|s| s["source"]["origin"] != "used2" || s["status"] == "DESTROYED")
            .then_some(())
    });
}

#[test]
fn the_config_loads_plugins_from_files_and_restarts_use_the_compile_cache() {
    let dir = std::env::temp_dir().join(format!("l7mp-plugin-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let wasm = dir.join("rewrite.wasm");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(&wasm, plugin_wasm("rewrite")).unwrap();
    let port = free_udp_port();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "plugins:\n  - {{name: upper, path: {}, version: v1}}\nlisteners:\n  - name: l\n    spec: {{protocol: UDP, port: {port}}}\n    rules:\n      - action:\n          route:\n            destination:\n              spec: {{protocol: Wasm, plugin: upper, config: {{replace: [{{from: a, to: A}}]}}}}\n",
            wasm.display()
        ),
    )
    .unwrap();
    let cache = dir.join("cache");
    let args = [
        "-c",
        config.to_str().unwrap(),
        "--plugin-cache",
        cache.to_str().unwrap(),
    ];
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    {
        let proxy = Proxy::start_with(&args);
        assert_eq!(
            udp_roundtrip(&udp_client("127.0.0.1"), addr, b"banana"),
            b"bAnAnA"
        );
        assert_eq!(
            version_field(&proxy, "upper", "v1", "precompiled_from_cache"),
            false
        );
    }
    let proxy = Proxy::start_with(&args);
    assert_eq!(
        version_field(&proxy, "upper", "v1", "precompiled_from_cache"),
        true
    );
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.1"), addr, b"cab"),
        b"cAb"
    );

    // `--check` compiles and checks plugins too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_l7mp"))
        .args([
            "--check",
            "-c",
            config.to_str().unwrap(),
            "--plugin-cache",
            "off",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&wasm, b"not wasm").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_l7mp"))
        .args([
            "--check",
            "-c",
            config.to_str().unwrap(),
            "--plugin-cache",
            "off",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plugin 'upper': not a WebAssembly binary"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_load_that_fails_loads_no_plugin_and_one_that_succeeds_loads_them_all() {
    let proxy = Proxy::start();
    proxy.load_plugin("upper", "rewrite");
    let dir = std::env::temp_dir().join(format!("l7mp-plugin-tx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (rewrite, hostile) = (dir.join("rewrite.wasm"), dir.join("hostile.wasm"));
    std::fs::write(&rewrite, plugin_wasm("rewrite")).unwrap();
    std::fs::write(&hostile, plugin_wasm("hostile")).unwrap();
    // A port someone else holds: the listener cannot bind, so the load fails after
    // every plugin has compiled.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = |port: u16| {
        json!({
            "admin": {},
            "plugins": [
                {"name": "upper", "path": hostile, "version": "v2"},
                {"name": "fresh", "path": rewrite, "version": "v1"}
            ],
            "listeners": [{"name": "l", "spec": {"protocol": "UDP", "port": port, "address": "127.0.0.1"},
                "rules": [{"action": {"route": {"destination":
                    {"spec": {"protocol": "Wasm", "plugin": "fresh"}}}}}]}]
        })
    };
    let (status, answer) = proxy.post("/api/v1/config", config(taken.local_addr().unwrap().port()));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(
        proxy.get("/api/v1/plugins/fresh").0,
        404,
        "nothing of the failed load is live"
    );
    let (_, upper) = proxy.get("/api/v1/plugins/upper");
    assert_eq!(upper["current"], "1", "{upper}");
    assert_eq!(upper["versions"].as_array().unwrap().len(), 1, "{upper}");

    let (status, answer) = proxy.post("/api/v1/config", config(free_udp_port()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(version_field(&proxy, "fresh", "v1", "version"), "v1");
    let (_, upper) = proxy.get("/api/v1/plugins/upper");
    assert_eq!(upper["current"], "v2", "{upper}");
    let _ = std::fs::remove_dir_all(&dir);
}
