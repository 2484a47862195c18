//! UNIX datagram sockets, FIFOs, child processes and Sync groups.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("l7mp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string and mode.
    assert_eq!(
        unsafe { libc_mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
}

unsafe extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

#[test]
fn unix_datagram_listener_and_cluster_keep_boundaries() {
    let proxy = Proxy::start();
    let dir = temp_dir("dgram");
    let (front, back) = (dir.join("front.sock"), dir.join("back.sock"));
    // An upstream that answers every datagram, upper-cased.
    let upstream = UnixDatagram::bind(&back).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = upstream.recv_from(&mut buf) {
            if let Some(path) = from.as_pathname() {
                let _ = upstream.send_to(&buf[..n].to_ascii_uppercase(), path);
            }
        }
    });
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "dgram", "spec": {"protocol": "UnixDomainDgram", "filename": front.display().to_string()},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "UnixDomainDgram"},
                "endpoints": [{"spec": {"address": back.display().to_string()}}]}}}}]}}),
    );
    let client = UnixDatagram::bind(dir.join("client.sock")).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"one", &front).unwrap();
    client.send_to(b"two", &front).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ONE");
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"TWO");
    let session = &proxy.sessions()[0];
    assert_eq!(
        session["metadata"]["UNIX"]["peer"],
        dir.join("client.sock").display().to_string()
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn pipe_cluster_talks_through_fifos_and_reports_missing_ones() {
    let proxy = Proxy::start_trusted();
    let dir = temp_dir("fifo");
    let (to_worker, from_worker) = (dir.join("to-worker"), dir.join("from-worker"));
    mkfifo(&to_worker);
    mkfifo(&from_worker);
    // The worker on the other side of the FIFOs: reads a line, answers it upper-cased.
    let (tw, fw) = (to_worker.clone(), from_worker.clone());
    let worker = std::thread::spawn(move || {
        let mut input = std::fs::File::open(&tw).unwrap();
        let mut buf = [0u8; 5];
        input.read_exact(&mut buf).unwrap();
        let mut output = std::fs::OpenOptions::new().write(true).open(&fw).unwrap();
        output.write_all(&buf.to_ascii_uppercase()).unwrap();
    });
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "fifo", "spec": {"protocol": "TCP", "port": port},
            "rules": [{"action": {"route": {"retry": {"retry_on": "connect-failure", "num_retries": 10, "timeout": 1000},
                "destination": {"spec": {"protocol": "PIPE", "read": from_worker.display().to_string(), "write": to_worker.display().to_string()}}}}}]}}),
    );
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"hello", 5), b"HELLO");
    worker.join().unwrap();

    // A FIFO that does not exist: a clear error for that session, others go on.
    let missing = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "nofifo", "spec": {"protocol": "TCP", "port": missing}, "options": {"track": 30},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "PIPE", "read": "/nonexistent/fifo"}}}}}]}}),
    );
    let mut doomed = tcp_connect(missing);
    assert!(tcp_closed(&mut doomed));
    let failed = eventually("the failed session", || {
        proxy
            .sessions()
            .into_iter()
            .find(|s| s["error"].is_string())
    });
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/fifo"),
        "{failed}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stdio_fork_runs_a_child_per_session_and_reports_its_exit() {
    let proxy = Proxy::start_trusted();
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "exec", "spec": {"protocol": "TCP", "port": port},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "STDIO-fork", "command": ["tr", "a-z", "A-Z"]}}}}}]}}),
    );
    for word in ["first", "second"] {
        let mut client = tcp_connect(port);
        client.write_all(format!("{word}\n").as_bytes()).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        client.read_to_string(&mut out).unwrap();
        assert_eq!(out, format!("{}\n", word.to_uppercase()));
    }
    // A child that fails at once: the session ends with its exit status.
    let failing = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "fails", "spec": {"protocol": "TCP", "port": failing}, "options": {"track": 30},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "STDIO-fork", "command": ["sh", "-c", "exit 3"]}}}}}]}}),
    );
    let mut client = tcp_connect(failing);
    assert!(tcp_closed(&mut client));
    let ended = eventually("the failed session", || {
        proxy
            .sessions()
            .into_iter()
            .find(|s| s["error"].is_string())
    });
    assert!(
        ended["error"].as_str().unwrap().contains("exit status: 3"),
        "{ended}"
    );
    // A program that does not exist is a connect error naming it.
    let (status, body) = proxy.post(
        "/api/v1/clusters",
        json!({"cluster": {"name": "empty", "spec": {"protocol": "STDIO-fork", "command": []}}}),
    );
    assert_eq!(status, 422, "{body}");
}

#[test]
fn sync_groups_broadcast_between_sessions_with_the_same_label() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "room", "spec": {"protocol": "Sync", "query": "/labels/room"}}}),
    );
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "chat", "spec": {"protocol": "UDP", "port": port},
            "rules": [
                {"match": {"op": "test", "path": "/IP/src_addr", "value": "127.0.0.9"}, "action": {"route": {"destination": "room"}}},
                {"action": {"rewrite": [{"path": "/labels/room", "value": "lobby"}], "route": {"destination": "room"}}}
            ]}}),
    );
    let to: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (alice, bob) = (udp_client("127.0.0.1"), udp_client("127.0.0.1"));
    alice.send_to(b"alice joins", to).unwrap();
    bob.send_to(b"bob joins", to).unwrap();
    // Both have joined the group once their sessions are connected.
    eventually("both members", || {
        let sessions = proxy.sessions();
        (sessions.len() == 2 && sessions.iter().all(|s| s["status"] == "CONNECTED")).then_some(())
    });
    // Whether a join message reached the other member depends on who joined first;
    // skip them.
    let next = |socket: &std::net::UdpSocket| loop {
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).expect("a message from the group");
        if !buf[..n].ends_with(b"joins") {
            return buf[..n].to_vec();
        }
    };
    alice.send_to(b"hello bob", to).unwrap();
    assert_eq!(next(&bob), b"hello bob");
    bob.send_to(b"hi alice", to).unwrap();
    assert_eq!(next(&alice), b"hi alice");
    // No label: rejected.
    let nameless = udp_client("127.0.0.9");
    nameless.send_to(b"me too?", to).unwrap();
    let metrics = eventually("the rejection", || {
        let m = proxy.metrics();
        m.contains("l7mp_cluster_connect_failures_total{cluster=\"room\"} 1")
            .then_some(m)
    });
    assert!(
        metrics.contains("l7mp_cluster_sessions_total{cluster=\"room\"} 2"),
        "{metrics}"
    );
}
