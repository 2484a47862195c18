//! AF_PACKET: raw frames bridged between two veth pairs inside a network namespace the
//! test creates (root only: ignored unless run with `--ignored`, as CI does).

use std::process::{Child, Command, Stdio};

use crate::harness::require;

/// Runs a command, returning whether it succeeded.
fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The namespace and the proxy in it, removed however the test ends.
struct Namespace {
    name: String,
    proxy: Option<Child>,
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        run(&["ip", "netns", "del", &self.name]);
    }
}

/// Sends a frame on one side until it shows up on the other, both ways.
const BRIDGE_CHECK: &str = r#"
import socket, sys, time
def sock(name):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
    s.bind((name, 0))
    s.settimeout(0.2)
    return s
def frame(payload):
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + payload
def across(src, dst, payload):
    deadline = time.time() + 10
    while time.time() < deadline:
        src.send(frame(payload))
        try:
            while True:
                data = dst.recv(65536)
                if data[14:14 + len(payload)] == payload:
                    return True
        except socket.timeout:
            pass
    return False
b1, b2 = sock("b1"), sock("b2")
ok = across(b1, b2, b"l7mp there") and across(b2, b1, b"l7mp back again")
print("bridged" if ok else "lost")
sys.exit(0 if ok else 1)
"#;

#[test]
#[ignore = "needs root and iproute2 (a network namespace): cargo test -- --ignored"]
fn af_packet_bridges_raw_frames_between_interfaces() {
    // SAFETY: geteuid has no preconditions.
    require(
        unsafe { geteuid() } == 0,
        "root, to build a network namespace",
    );
    require(run(&["ip", "-V"]), "iproute2 (ip)");
    let name = format!("l7mp-pkt-{}", std::process::id());
    require(run(&["ip", "netns", "add", &name]), "ip netns add");
    let mut ns = Namespace {
        name: name.clone(),
        proxy: None,
    };
    for cmd in [
        "sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
        "sysctl -qw net.ipv6.conf.default.disable_ipv6=1",
        "ip link add a1 type veth peer name b1",
        "ip link add a2 type veth peer name b2",
        "ip link set lo up",
        "ip link set a1 up",
        "ip link set b1 up",
        "ip link set a2 up",
        "ip link set b2 up",
    ] {
        let mut args = vec!["ip", "netns", "exec", &name];
        args.extend(cmd.split_whitespace());
        assert!(run(&args), "{cmd}");
    }
    let config = std::env::temp_dir().join(format!("l7mp-afpacket-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        "listeners:\n  - name: raw\n    spec: {protocol: AF_PACKET, interface: a1}\n    rules:\n      - action:\n          route:\n            destination: {spec: {protocol: AF_PACKET, interface: a2}}\n",
    )
    .unwrap();
    ns.proxy = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &name,
                env!("CARGO_BIN_EXE_l7mp"),
                "-c",
                config.to_str().unwrap(),
                "--admin",
                "off",
                "-l",
                "warn",
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let check = Command::new("ip")
        .args(["netns", "exec", &name, "python3", "-c", BRIDGE_CHECK])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(config);
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "bridged");
}

unsafe extern "C" {
    fn geteuid() -> u32;
}
