//! The SDK's templates are what a plugin author starts from: each must build as it is
//! and work when uploaded.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::harness::*;

/// Builds `sdk/templates/<name>` as an author would, into the plugins' target
/// directory (so dependencies built for the examples are reused).
fn build_template(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target: PathBuf = root.join("plugins/target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join(format!("sdk/templates/{name}/Cargo.toml")))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .status()
        .expect("cargo runs");
    assert!(status.success(), "template {name} builds");
    let crate_name = format!("my_{}", name.trim_start_matches("rust-"));
    std::fs::read(target.join(format!("wasm32-wasip2/release/{crate_name}.wasm"))).unwrap()
}

#[test]
fn the_rust_templates_build_and_serve_traffic() {
    let proxy = Proxy::start();
    for (name, template) in [
        ("upper", "rust-transform"),
        ("lines", "rust-codec"),
        ("canary", "rust-matcher"),
    ] {
        let (status, doc) = proxy.upload(name, "1", &build_template(template));
        assert_eq!(status, 201, "{template}: {doc}");
    }
    // Lines whose command is PING go to an upper-casing answerer; the canary matcher
    // at 100% takes everything else there too, tagged by the route.
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "lines", "spec": {"protocol": "TCP", "port": port,
                "codec": {"plugin": "lines"}},
            "rules": [
                {"match": {"op": "test", "path": "/codec/command", "value": "PING"},
                 "action": {"route": {"destination": {"spec": {"protocol": "Wasm", "plugin": "upper"}}}}},
                {"match": {"plugin": "canary", "config": {"path": "/IP/src_addr", "percent": 0}},
                 "action": {"route": {"destination": {"spec": {"protocol": "Discard"}}}}},
                {"match": {"plugin": "canary", "config": {"path": "/IP/src_addr", "percent": 100}},
                 "action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
    let mut ping = tcp_connect(port);
    assert_eq!(
        tcp_exchange(&mut ping, b"PING hello\nPING again\n", 22),
        b"PING HELLO\nPING AGAIN\n"
    );
    let mut other = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut other, b"echo me\n", 8), b"echo me\n");
}
