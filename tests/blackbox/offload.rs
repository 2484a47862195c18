//! Kernel offload of UDP sessions: data through the eBPF fast path on loopback and
//! across a veth pair into a namespace the test builds, counters in the session and
//! in /metrics, flows removed with their session, and the fallback to userspace when
//! the proxy lacks the capabilities. Root only (skipped with a message otherwise).

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

unsafe extern "C" {
    fn geteuid() -> u32;
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { geteuid() == 0 }
}

/// Turns offload on for `interfaces`, insisting that it works (these tests run as root,
/// with the kernel program built: `.ci/run` installs clang and libbpf).
fn enable(proxy: &Proxy, interfaces: &[&str]) {
    let (status, body) = proxy.post(
        "/api/v1/admin",
        json!({"admin": {"offload": "init", "offload_ifs": interfaces}}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, admin) = proxy.get("/api/v1/admin");
    let offload = &admin["offload_status"];
    assert_eq!(
        offload["active"], true,
        "offload should work as root: {offload}"
    );
}

/// A proxy with offload on loopback.
fn offloading_proxy() -> Proxy {
    require(
        is_root(),
        "root (CAP_BPF, CAP_NET_ADMIN) for kernel offload",
    );
    let proxy = Proxy::start();
    enable(&proxy, &["lo"]);
    proxy
}

fn udp_route(
    proxy: &Proxy,
    name: &str,
    listen: &str,
    port: u16,
    upstream: &str,
    upstream_port: u16,
) {
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": name, "spec": {"protocol": "UDP", "address": listen, "port": port},
            "rules": [{"action": {"route": {"destination": {"name": format!("{name}-up"), "spec": {"protocol": "UDP", "port": upstream_port},
                "endpoints": [{"spec": {"address": upstream}}]}}}}]}}),
    );
}

fn session_of(proxy: &Proxy, listener: &str) -> Value {
    proxy
        .sessions()
        .into_iter()
        .find(|s| s["source"]["origin"] == listener)
        .expect("a session")
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN): cargo test -- --ignored"]
fn udp_sessions_move_into_the_kernel_on_loopback() {
    let proxy = offloading_proxy();
    let (upstream, received) = udp_upstream(b"up:");
    let port = free_udp_port();
    udp_route(&proxy, "fast", "127.0.0.1", port, "127.0.0.1", upstream);
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = udp_client("127.0.0.1");
    for i in 0..20 {
        let msg = format!("datagram {i}");
        assert_eq!(
            udp_roundtrip(&client, to, msg.as_bytes()),
            format!("up:{msg}").as_bytes()
        );
        assert_eq!(received.recv_timeout(WAIT).unwrap(), msg.as_bytes());
    }
    let session = session_of(&proxy, "fast");
    assert_eq!(session["datapath"], "offload");
    // The kernel's counters reach the session and the metrics (read every 500 ms).
    let stats = eventually("the kernel counters", || {
        let s = session_of(&proxy, "fast");
        (s["source"]["stats"]["packets_in"] == 20 && s["source"]["stats"]["packets_out"] == 20)
            .then_some(s)
    });
    assert_eq!(stats["destination"]["stats"]["packets_out"], 20);
    let metrics = proxy.metrics();
    assert!(metrics.contains("l7mp_offload_active 1"), "{metrics}");
    assert!(
        metrics.contains("l7mp_listener_packets_total{direction=\"in\",listener=\"fast\"} 20"),
        "{metrics}"
    );
    // Ending the session takes its flows out: the next datagram reaches userspace and
    // starts a new session, which answers as before.
    let name = session["name"].as_str().unwrap().to_owned();
    assert_eq!(proxy.delete(&format!("/api/v1/sessions/{name}")).0, 200);
    eventually("the session to go", || {
        proxy
            .sessions()
            .iter()
            .all(|s| s["name"] != name.as_str())
            .then_some(())
    });
    assert_eq!(udp_roundtrip(&client, to, b"again"), b"up:again");
    let fresh = session_of(&proxy, "fast");
    assert_ne!(fresh["name"], name.as_str());
    assert_eq!(fresh["source"]["stats"]["packets_in"], 1);
}

/// `no_init` loads the program when the first session could use it, on the blocking
/// pool: that session stays in userspace (it never waits for the kernel), the next
/// ones go through the kernel.
#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN): cargo test -- --ignored"]
fn no_init_loads_the_program_beside_the_first_session_not_inside_it() {
    require(
        is_root(),
        "root (CAP_BPF, CAP_NET_ADMIN) for kernel offload",
    );
    let proxy = Proxy::start();
    let (status, body) = proxy.post(
        "/api/v1/admin",
        json!({"admin": {"offload": "no_init", "offload_ifs": ["lo"]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        proxy.get("/api/v1/admin").1["offload_status"]["active"],
        false
    );
    let (upstream, _received) = udp_upstream(b"up:");
    let port = free_udp_port();
    udp_route(&proxy, "lazy", "127.0.0.1", port, "127.0.0.1", upstream);
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let first = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&first, to, b"one"), b"up:one");
    assert_eq!(session_of(&proxy, "lazy")["datapath"], "relay");
    eventually("the program to be loaded", || {
        (proxy.get("/api/v1/admin").1["offload_status"]["active"] == true).then_some(())
    });
    let second = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&second, to, b"two"), b"up:two");
    let datapaths: Vec<Value> = eventually("the second session", || {
        let all: Vec<Value> = proxy
            .sessions()
            .into_iter()
            .filter(|s| s["source"]["origin"] == "lazy")
            .map(|s| s["datapath"].clone())
            .collect();
        (all.len() == 2).then_some(all)
    });
    assert!(datapaths.contains(&json!("offload")), "{datapaths:?}");
    assert!(datapaths.contains(&json!("relay")), "{datapaths:?}");
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN): cargo test -- --ignored"]
fn without_capabilities_the_proxy_says_why_and_forwards_in_userspace() {
    require(is_root(), "root, to drop capabilities");
    require(
        Command::new("setpriv")
            .arg("--help")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "setpriv (util-linux)",
    );
    let proxy = Proxy::start_wrapped(&["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]);
    let (status, _) = proxy.post(
        "/api/v1/admin",
        json!({"admin": {"offload": "init", "offload_ifs": ["lo"]}}),
    );
    assert_eq!(status, 200);
    let (_, admin) = proxy.get("/api/v1/admin");
    assert_eq!(admin["offload_status"]["active"], false, "{admin}");
    let reason = admin["offload_status"]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("CAP_BPF") || reason.contains("no kernel program"),
        "{reason}"
    );
    assert!(proxy.metrics().contains("l7mp_offload_active 0"));
    let (upstream, _) = udp_upstream(b"slow:");
    let port = free_udp_port();
    udp_route(&proxy, "slow", "127.0.0.1", port, "127.0.0.1", upstream);
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(udp_roundtrip(&udp_client("127.0.0.1"), to, b"x"), b"slow:x");
    assert_eq!(session_of(&proxy, "slow")["datapath"], "relay");
}

fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Namespace(String, String);

impl Drop for Namespace {
    fn drop(&mut self) {
        run(&["ip", "link", "del", &self.1]);
        run(&["ip", "netns", "del", &self.0]);
    }
}

/// A client and an upstream in another namespace, across a veth pair: the kernel path
/// forwards with a FIB lookup and new MAC addresses.
const PEERS: &str = r#"
import socket, sys, threading
proxy, port, up_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
up.bind(("0.0.0.0", up_port))
def echo():
    while True:
        data, peer = up.recvfrom(2048)
        up.sendto(b"up:" + data, peer)
threading.Thread(target=echo, daemon=True).start()
client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
client.settimeout(3)
ok = 0
for i in range(30):
    msg = b"veth %d" % i
    client.sendto(msg, (proxy, port))
    if client.recvfrom(2048)[0] == b"up:" + msg:
        ok += 1
print(ok)
"#;

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN): cargo test -- --ignored"]
fn udp_sessions_move_into_the_kernel_across_a_veth_pair() {
    require(is_root(), "root, to build a network namespace");
    require(run(&["ip", "-V"]), "iproute2 (ip)");
    let id = std::process::id() % 100_000;
    let (ns, host_if, peer_if) = (
        format!("l7mp-off-{id}"),
        format!("l7o{id}a"),
        format!("l7o{id}b"),
    );
    let subnet = 200 + (id % 50);
    let (host_ip, peer_ip) = (format!("10.{subnet}.7.1"), format!("10.{subnet}.7.2"));
    assert!(run(&["ip", "netns", "add", &ns]), "ip netns add");
    let _guard = Namespace(ns.clone(), host_if.clone());
    for cmd in [
        format!("ip link add {host_if} type veth peer name {peer_if}"),
        format!("ip link set {peer_if} netns {ns}"),
        format!("ip addr add {host_ip}/24 dev {host_if}"),
        format!("ip link set {host_if} up"),
        format!("ip -n {ns} addr add {peer_ip}/24 dev {peer_if}"),
        format!("ip -n {ns} link set {peer_if} up"),
        format!("ip -n {ns} link set lo up"),
    ] {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        assert!(run(&args), "{cmd}");
    }
    let proxy = Proxy::start();
    enable(&proxy, &[host_if.as_str()]);
    let (port, up_port) = (free_udp_port(), 17_000 + (id % 1000) as u16);
    udp_route(&proxy, "veth", &host_ip, port, &peer_ip, up_port);
    std::thread::sleep(Duration::from_millis(200));
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "python3",
            "-c",
            PEERS,
            &host_ip,
            &port.to_string(),
            &up_port.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "30",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let session = session_of(&proxy, "veth");
    assert_eq!(session["datapath"], "offload");
    let stats = eventually("the kernel counters", || {
        let s = session_of(&proxy, "veth");
        (s["source"]["stats"]["packets_in"] == 30).then_some(s)
    });
    // Most of the datagrams never reached the proxy's sockets.
    assert_eq!(stats["source"]["stats"]["packets_out"], 30);
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN): cargo test -- --ignored"]
fn ipv6_and_jsonsocket_sessions_are_offloaded_too() {
    let proxy = offloading_proxy();
    // IPv6 on loopback.
    require(
        std::net::UdpSocket::bind("[::1]:0").is_ok(),
        "an IPv6 loopback (::1)",
    );
    {
        let up = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let up_port = up.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, peer)) = up.recv_from(&mut buf) {
                let _ = up.send_to(&[b"v6:", &buf[..n]].concat(), peer);
            }
        });
        let port = free_udp_port();
        udp_route(&proxy, "six", "::1", port, "::1", up_port);
        let client = std::net::UdpSocket::bind("[::1]:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let to: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
        for i in 0..10 {
            let msg = format!("six {i}");
            assert_eq!(
                udp_roundtrip(&client, to, msg.as_bytes()),
                format!("v6:{msg}").as_bytes()
            );
        }
        assert_eq!(session_of(&proxy, "six")["datapath"], "offload");
        eventually("the IPv6 kernel counters", || {
            (session_of(&proxy, "six")["source"]["stats"]["packets_in"] == 10).then_some(())
        });
    }
    // JSONSocket over UDP: the handshake in userspace, the data in the kernel.
    let (upstream, _) = udp_upstream(b"js:");
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "js", "spec": {"protocol": "JSONSocket", "transport": {"protocol": "UDP", "address": "127.0.0.1", "port": port}},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "UDP", "port": upstream},
                "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = udp_client("127.0.0.1");
    let answer: Value =
        serde_json::from_slice(&udp_roundtrip(&client, to, br#"{"JSONSocketVersion": 1}"#))
            .unwrap();
    assert_eq!(answer["JSONSocketStatus"], 200);
    for i in 0..10 {
        let msg = format!("js {i}");
        assert_eq!(
            udp_roundtrip(&client, to, msg.as_bytes()),
            format!("js:{msg}").as_bytes()
        );
    }
    assert_eq!(session_of(&proxy, "js")["datapath"], "offload");
    eventually("the kernel counters", || {
        (session_of(&proxy, "js")["source"]["stats"]["packets_in"].as_u64() >= Some(10))
            .then_some(())
    });
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN): cargo test -- --ignored"]
fn a_direction_without_transforms_is_offloaded_while_the_other_runs_in_userspace() {
    let proxy = offloading_proxy();
    let (upstream, received) = udp_upstream(b"up:");
    let port = free_udp_port();
    // Requests are wrapped in JSON in userspace; answers go straight back in the kernel.
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "half", "spec": {"protocol": "UDP", "address": "127.0.0.1", "port": port},
            "rules": [{"action": {"route": {
                "ingress": [{"spec": {"protocol": "JSONEncap"}}],
                "destination": {"spec": {"protocol": "UDP", "port": upstream}, "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = udp_client("127.0.0.1");
    for i in 0..10 {
        let answer = udp_roundtrip(&client, to, format!("q{i}").as_bytes());
        assert!(
            answer.starts_with(b"up:{"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        let wrapped: Value = serde_json::from_slice(&received.recv_timeout(WAIT).unwrap()).unwrap();
        assert!(wrapped["payload"].is_string());
    }
    assert_eq!(session_of(&proxy, "half")["datapath"], "ring+offload");
    eventually("the kernel counters for the answers", || {
        (session_of(&proxy, "half")["source"]["stats"]["packets_out"] == 10).then_some(())
    });
}
