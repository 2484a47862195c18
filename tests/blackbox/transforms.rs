//! Virtual clusters seen from outside: Stdio, Discard, Logger, and the warning for
//! routes that join datagrams to byte streams.

use std::io::{BufRead, BufReader, Read, Write};

use serde_json::json;

use crate::harness::*;

#[test]
fn stdio_cluster_bridges_a_tcp_client_and_the_proxy_stdio() {
    let mut proxy = Proxy::start_piped();
    let (mut stdin, stdout) = proxy.stdio();
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "console", "spec": {"protocol": "TCP", "port": port},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Stdio"}}}}}]}}),
    );
    let mut client = tcp_connect(port);
    client.write_all(b"to the console\n").unwrap();
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "to the console\n");
    stdin.write_all(b"from the console").unwrap();
    stdin.flush().unwrap();
    let mut got = [0u8; 16];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from the console");
    // A second session cannot have stdio while the first holds it.
    let mut second = tcp_connect(port);
    assert!(tcp_closed(&mut second));
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("l7mp_cluster_connect_failures_total{cluster=\"console-RuleList-0-Rule-0-Route-0-Cluster-0\"} 1"),
        "{metrics}"
    );
    // The first session still has it.
    client.write_all(b"still here\n").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "still here\n");
}

#[test]
fn discard_swallows_and_logger_logs_while_passing_through() {
    let proxy = Proxy::start_trusted();
    let log = std::env::temp_dir().join(format!("l7mp-logger-bb-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "sink", "spec": {"protocol": "UDP", "port": port}, "options": {"track": 30},
            "rules": [{"action": {"route": {
                "destination": {"spec": {"protocol": "Discard"}},
                "ingress": [{"spec": {"protocol": "Logger", "log_file": log.display().to_string(), "log_prefix": "in"}}]}}}]}}),
    );
    let client = udp_client("127.0.0.1");
    client
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    client
        .send_to(b"into the void", format!("127.0.0.1:{port}"))
        .unwrap();
    assert!(client.recv(&mut [0u8; 64]).is_err(), "Discard answered");
    let logged = eventually("the log line", || {
        std::fs::read_to_string(&log).ok().filter(|t| !t.is_empty())
    });
    assert!(
        logged.starts_with("in: sink-") && logged.ends_with(": \"into the void\"\n"),
        "{logged}"
    );
    let session = &proxy.sessions()[0];
    assert_eq!(session["destination"]["stats"]["bytes_out"], 13);
    let _ = std::fs::remove_file(log);
}

#[test]
fn joining_datagrams_to_a_byte_stream_warns() {
    let proxy = Proxy::start();
    let upstream = tcp_upstream(b"");
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "mixed", "spec": {"protocol": "UDP", "port": port},
            "rules": [{"action": {"route": {"destination": {"name": "tcp-up", "spec": {"protocol": "TCP", "port": upstream},
                "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.1"), to, b"dgram"),
        b"dgram"
    );
    let session = &proxy.sessions()[0];
    let warning = session["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "WARNING")
        .expect("a warning event");
    assert!(
        warning["message"]
            .as_str()
            .unwrap()
            .contains("message boundaries are not kept"),
        "{warning}"
    );
}

#[test]
fn udp_cluster_binds_its_source_address() {
    let proxy = Proxy::start();
    let (upstream, _) = udp_upstream(b"");
    let bind_port = free_udp_port();
    let port = free_udp_port();
    let seen = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = (upstream, &seen);
    let observer_port = seen.local_addr().unwrap().port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "bound", "spec": {"protocol": "UDP", "port": port},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "UDP", "port": observer_port,
                "bind": {"address": "127.0.0.1", "port": bind_port}}, "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    udp_client("127.0.0.1")
        .send_to(b"who am i", format!("127.0.0.1:{port}"))
        .unwrap();
    seen.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = seen.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"who am i");
    assert_eq!(from.port(), bind_port);
}

#[test]
fn a_failing_session_does_not_disturb_others() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "mixed-fate", "spec": {"protocol": "TCP", "port": port},
            "rules": [
                {"match": {"op": "more", "path": "/TCP/src_port", "value": 0}, "action": {"apply": "missing-rulelist"}}
            ]}}),
    );
    let echo_port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "steady", "spec": {"protocol": "TCP", "port": echo_port},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
    let mut steady = tcp_connect(echo_port);
    assert_eq!(tcp_exchange(&mut steady, b"1", 1), b"1");
    for _ in 0..20 {
        let mut doomed = tcp_connect(port);
        assert!(tcp_closed(&mut doomed));
    }
    assert_eq!(tcp_exchange(&mut steady, b"2", 1), b"2");
    let metrics = proxy.metrics();
    assert!(
        metrics.contains("l7mp_sessions_rejected_total{listener=\"mixed-fate\"} 20"),
        "{metrics}"
    );
}
