//! Hostile input as the normal case: requests, bodies and connections that used to
//! crash, stall or lock out the proxy. Each test sends the input and checks that the
//! answer is a clean JSON 4xx and that the proxy (and its other sessions) go on.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

fn echo_listener(name: &str, port: u16) -> Value {
    json!({"listener": {"name": name, "spec": {"protocol": "UDP", "port": port},
        "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}})
}

fn assert_error(answer: (u16, Value), status: u16, needle: &str) {
    let (got, body) = answer;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["status"], status, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

#[test]
fn inputs_that_used_to_panic_are_422s_naming_the_field() {
    let proxy = Proxy::start_trusted();
    let port = free_udp_port();
    proxy.create("/api/v1/listeners", echo_listener("keep", port));
    // A PUT with a wrapped non-object panicked in the handler.
    for body in [r#"{"listener": [1]}"#, "5", "\"s\"", "true", "[]"] {
        let answer = proxy.send_raw("PUT", "/api/v1/listeners/keep", "application/json", body);
        assert_error(answer, 422, "must be an object");
    }
    let with_options = |options: Value| {
        let mut l = echo_listener("l", free_udp_port());
        l["listener"]["options"] = options;
        l
    };
    // Durations too large for a timer: a panic at POST, or in every ended session.
    for field in ["idle_timeout", "track", "half_close_timeout"] {
        let answer = proxy.post("/api/v1/listeners", with_options(json!({field: 1e308})));
        assert_error(answer, 422, &format!("options.{field}"));
        let answer = proxy.post("/api/v1/listeners", with_options(json!({field: -1})));
        assert_error(answer, 422, "out of range");
    }
    let route = |retry: Value| json!({"route": {"name": "r", "destination": "c", "retry": retry}});
    assert_error(
        proxy.post("/api/v1/routes", route(json!({"timeout": 1e12}))),
        422,
        "retry.timeout",
    );
    assert_error(
        proxy.post("/api/v1/routes", route(json!({"num_retries": 1_000_000}))),
        422,
        "num_retries",
    );
    let weighted = json!({"cluster": {"name": "c", "spec": {"protocol": "TCP", "port": 1},
        "loadbalancer": {"policy": "HashRing"},
        "endpoints": [{"spec": {"address": "127.0.0.1"}, "weight": 1e12}]}});
    assert_error(proxy.post("/api/v1/clusters", weighted), 422, "weight");
    let ws = json!({"listener": {"name": "ws", "spec": {"protocol": "WebSocket", "port": free_tcp_port(), "max_message_size": 0}, "rules": []}});
    assert_error(proxy.post("/api/v1/listeners", ws), 422, "max_message_size");
    for fd in [-1, 0, 1, 2, 3, 5, 8, 1 << 20] {
        let pipe = json!({"listener": {"name": "p", "spec": {"protocol": "PIPE", "read_fd": fd}, "rules": []}});
        assert_error(proxy.post("/api/v1/listeners", pipe), 422, "read_fd");
    }
    // Still serving, the first listener untouched, and a bounded track works.
    let client = udp_client("127.0.0.1");
    assert_eq!(
        udp_roundtrip(&client, ([127, 0, 0, 1], port).into(), b"ok"),
        b"ok"
    );
    proxy.create("/api/v1/listeners", with_options(json!({"track": 0.2})));
}

#[test]
fn deep_pointers_and_predicates_are_refused_when_written() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    let mut listener = echo_listener("deep", port);
    let path = "/a".repeat(50_000);
    listener["listener"]["rules"][0]["action"]["rewrite"] = json!([{"path": path, "value": 1}]);
    assert_error(
        proxy.post("/api/v1/listeners", listener.clone()),
        422,
        "JSON pointer",
    );
    listener["listener"]["rules"][0]["action"]["rewrite"] =
        json!([{"path": "/a".repeat(40), "value": 1}]);
    assert_error(
        proxy.post("/api/v1/listeners", listener.clone()),
        422,
        "segments",
    );
    let mut predicate = json!({"op": "test", "path": "/a", "value": 1});
    for _ in 0..20 {
        predicate = json!({"op": "not", "apply": [predicate]});
    }
    listener["listener"]["rules"][0]["action"]["rewrite"] = json!([]);
    listener["listener"]["rules"][0]["match"] = predicate;
    assert_error(
        proxy.post("/api/v1/listeners", listener.clone()),
        422,
        "deeper than",
    );
    // The deepest allowed rewrite, with a live session: listings and expiry survive it.
    let allowed = "/a".repeat(32);
    listener["listener"]["rules"][0]["match"] = Value::Null;
    listener["listener"]["rules"][0]["action"]["rewrite"] =
        json!([{"path": allowed, "value": [[[1]]]}]);
    listener["listener"]["options"] = json!({"idle_timeout": 0.3});
    proxy.create("/api/v1/listeners", listener);
    let client = udp_client("127.0.0.1");
    assert_eq!(
        udp_roundtrip(&client, ([127, 0, 0, 1], port).into(), b"x"),
        b"x"
    );
    assert_eq!(proxy.sessions().len(), 1);
    eventually("the session to idle out", || {
        proxy.sessions().is_empty().then_some(())
    });
    assert_eq!(proxy.get("/api/v1/admin").0, 200);
}

#[test]
fn nested_bodies_are_refused_fast_and_never_stall_sessions() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    proxy.create("/api/v1/listeners", echo_listener("echo", port));
    let bomb = format!("{}{}", "[".repeat(122_000), "]".repeat(122_000));
    let api = proxy.api.clone();
    let bombers: Vec<_> = (0..4)
        .map(|_| {
            let (api, bomb) = (api.clone(), bomb.clone());
            std::thread::spawn(move || {
                let agent = agent();
                for _ in 0..3 {
                    let mut resp = agent
                        .post(format!("{api}/api/v1/listeners"))
                        .header("content-type", "application/yaml")
                        .send(&bomb)
                        .unwrap();
                    let body: Value =
                        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
                    assert_eq!(resp.status().as_u16(), 400, "{body}");
                    assert!(
                        body["message"]
                            .as_str()
                            .unwrap()
                            .contains("nests deeper than"),
                        "{body}"
                    );
                }
            })
        })
        .collect();
    // Meanwhile an unrelated UDP session loses nothing.
    let client = udp_client("127.0.0.1");
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for i in 0..200u32 {
        let msg = i.to_be_bytes();
        assert_eq!(udp_roundtrip(&client, to, &msg), msg, "datagram {i}");
    }
    for b in bombers {
        b.join().unwrap();
    }
}

#[test]
fn huge_declared_bodies_are_413_at_once() {
    let proxy = Proxy::start();
    for path in [
        "/api/v1/listeners",
        "/api/v1/config",
        "/api/v1/admin",
        "/api/v1/plugins?name=p&version=1",
    ] {
        let content_type = if path.contains("plugins") {
            "application/wasm"
        } else {
            "application/json"
        };
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: {content_type}\r\ncontent-length: 1000000000000\r\n\r\n"
        );
        assert_error(
            raw_request(&proxy.api, request.as_bytes()),
            413,
            "larger than",
        );
    }
    // A body larger than admin.http.max_body is refused while it is read, too.
    proxy.create(
        "/api/v1/admin",
        json!({"admin": {"http": {"max_body": 2048}}}),
    );
    let big = format!("{{\"listener\": {{\"name\": \"{}\"}}}}", "x".repeat(4096));
    let (status, body) = proxy.send_raw("POST", "/api/v1/listeners", "application/json", &big);
    assert_eq!(status, 413, "{body}");
}

#[test]
fn every_api_error_is_json_even_hypers_own() {
    let proxy = Proxy::start();
    assert_error(
        raw_request(&proxy.api, b"GARBAGE\r\n\r\n"),
        400,
        "malformed",
    );
    let long_header = format!(
        "GET /api/v1/admin HTTP/1.1\r\nhost: localhost\r\nx-big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    assert_error(
        raw_request(&proxy.api, long_header.as_bytes()),
        431,
        "headers",
    );
    let long_uri = format!(
        "GET /api/v1/listeners?{} HTTP/1.1\r\nhost: localhost\r\n\r\n",
        "a".repeat(70_000)
    );
    assert_error(raw_request(&proxy.api, long_uri.as_bytes()), 414, "URI");
    let (status, body) = proxy.get("/api/v1/listeners?format=yaml&format=json");
    assert_eq!((status, &body["status"]), (400, &json!(400)), "{body}");
    let (status, body) = proxy.get("/api/v1/nothing/here/at/all");
    assert_eq!((status, &body["status"]), (404, &json!(404)), "{body}");
    assert_error(
        raw_request(
            &proxy.api,
            b"PATCH /api/v1/listeners HTTP/1.1\r\nhost: localhost\r\ncontent-length: 0\r\n\r\n",
        ),
        405,
        "not allowed",
    );
}

#[test]
fn slow_and_idle_clients_cannot_lock_out_the_api() {
    let proxy = Proxy::start();
    proxy.create(
        "/api/v1/admin",
        json!({"admin": {"http": {"header_timeout": 1, "idle_timeout": 2, "max_connections": 8}}}),
    );
    let addr = proxy.api.trim_start_matches("http://").to_owned();
    // Slowloris: eight connections that trickle a header byte by byte.
    let slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /api/v1/admin HTTP/1.1\r\nx-slow: ")
                .unwrap();
            s
        })
        .collect();
    let trickle: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
    std::thread::spawn(move || {
        for _ in 0..40 {
            for mut s in &trickle {
                let _ = s.write_all(b"a");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // Over the limit, a client is told why at once.
    let refused = raw_request(
        &proxy.api,
        b"GET /api/v1/admin HTTP/1.1\r\nhost: localhost\r\n\r\n",
    );
    assert_error(refused, 503, "connections at once");
    // The header timeout frees the slots: the API answers again.
    eventually("the API to answer again", || {
        let (status, _) = raw_request(
            &proxy.api,
            b"GET /api/v1/admin HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        );
        (status == 200).then_some(())
    });
    for mut s in slow {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        // Closed without an answer, or (over the limit) told so.
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 503"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(WAIT)).unwrap();
    idle.write_all(b"GET /api/v1/admin HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .unwrap();
    assert_eq!(read_answer(&mut idle).0, 200);
    let mut buf = [0u8; 64];
    assert!(
        matches!(idle.read(&mut buf), Ok(0) | Err(_)),
        "the idle connection was closed"
    );
}

#[test]
fn out_of_descriptors_the_api_stays_reachable() {
    raise_fd_limit();
    let proxy = Proxy::start_wrapped(&["prlimit", "--nofile=256:256"]);
    let upstream = tcp_upstream(b"");
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "tcp", "spec": {"protocol": "TCP", "port": port},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "TCP", "port": upstream},
                "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    // Each proxied session costs the proxy two descriptors: 200 sessions would need
    // far more than 256.
    let clients: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // A new connection (not one the test's client keeps alive) needs a descriptor.
    let (status, body) = raw_request(
        &proxy.api,
        b"GET /api/v1/admin HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert!(proxy.sessions().len() < 200);
    drop(clients);
    eventually("the sessions to end", || {
        proxy.sessions().is_empty().then_some(())
    });
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"again", 5), b"again");
}

/// An upstream that serves one connection (answering with `tag` + data), then goes
/// away for good: its port refuses from then on.
fn dies_after_one_connection(tag: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut conn, _) = l.accept().unwrap();
        drop(l);
        let mut buf = [0u8; 1024];
        let n = conn.read(&mut buf).unwrap_or(0);
        let mut reply = tag.to_vec();
        reply.extend_from_slice(&buf[..n]);
        let _ = conn.write_all(&reply);
    });
    port
}

#[test]
fn retries_fail_over_to_another_endpoint() {
    let proxy = Proxy::start();
    let (first, second) = (dies_after_one_connection(b"1:"), tcp_upstream(b"2:"));
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "pool", "spec": {"protocol": "TCP"},
            "endpoints": [{"name": "first", "spec": {"address": "127.0.0.1", "port": first}},
                          {"name": "second", "spec": {"address": "127.0.0.1", "port": second}}]}}),
    );
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "l", "spec": {"protocol": "TCP", "port": port},
            "rules": [{"action": {"route": {"destination": "pool",
                "retry": {"retry_on": "always", "num_retries": 3, "timeout": 1000}}}}]}}),
    );
    let mut client = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut client, b"a", 3), b"1:a");
    eventually("the stage to fail over", || {
        (proxy.sessions()[0]["destination"]["endpoint"]["name"] == "second").then_some(())
    });
    assert_eq!(tcp_exchange(&mut client, b"b", 3), b"2:b");
    // At setup too: a new session whose first endpoint refuses goes to the second.
    let mut other = tcp_connect(port);
    assert_eq!(tcp_exchange(&mut other, b"c", 3), b"2:c");
}

#[test]
fn unix_listeners_never_take_over_a_live_socket() {
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    let proxy = Proxy::start();
    let dir = std::env::temp_dir().join(format!("l7mp-hijack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listener = |name: &str, protocol: &str, path: &std::path::Path| {
        json!({"listener": {"name": name, "spec": {"protocol": protocol, "filename": path.display().to_string()},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}})
    };
    // A live stream socket is not taken by a datagram listener, nor the reverse.
    let stream_path = dir.join("stream.sock");
    let stream = UnixListener::bind(&stream_path).unwrap();
    let answer = proxy.post(
        "/api/v1/listeners",
        listener("d", "UnixDomainDgram", &stream_path),
    );
    assert_error(answer, 409, "in use");
    assert!(UnixStream::connect(&stream_path).is_ok());
    drop(stream.accept());
    let dgram_path = dir.join("dgram.sock");
    let dgram = UnixDatagram::bind(&dgram_path).unwrap();
    let answer = proxy.post(
        "/api/v1/listeners",
        listener("s", "UnixDomainSocket", &dgram_path),
    );
    assert_error(answer, 409, "in use");
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"still mine", &dgram_path)
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(dgram.recv(&mut buf).unwrap(), 10);
    // A socket file nobody is bound to any more is replaced.
    drop(dgram);
    proxy.create(
        "/api/v1/listeners",
        listener("s", "UnixDomainSocket", &dgram_path),
    );
    let mut client = UnixStream::connect(&dgram_path).unwrap();
    client.write_all(b"x").unwrap();
}

#[test]
fn a_session_whose_upstream_is_gone_ends() {
    let proxy = Proxy::start();
    for (name, ingress) in [
        ("direct", json!([])),
        ("ring", json!([{"spec": {"protocol": "Metric"}}])),
    ] {
        let upstream = dies_after_one_connection(b"up:");
        let port = free_tcp_port();
        proxy.create(
            "/api/v1/listeners",
            json!({"listener": {"name": name, "spec": {"protocol": "TCP", "port": port},
                "options": {"half_close_timeout": 0.5},
                "rules": [{"action": {"route": {"retry": {"retry_on": "never"}, "ingress": ingress,
                    "destination": {"spec": {"protocol": "TCP", "port": upstream},
                        "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
        );
        let mut client = tcp_connect(port);
        assert_eq!(tcp_exchange(&mut client, b"a", 4), b"up:a");
        assert!(
            tcp_closed(&mut client),
            "{name}: the upstream's end reaches the client"
        );
        // The client keeps its socket open; the session ends anyway.
        eventually("the session to end", || {
            proxy
                .sessions()
                .iter()
                .all(|s| s["source"]["origin"] != name)
                .then_some(())
        });
        drop(client);
    }
    // A half-close that the other side answers still works as before.
    let upstream = tcp_upstream(b"");
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "half", "spec": {"protocol": "TCP", "port": port},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "TCP", "port": upstream},
                "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    let mut client = tcp_connect(port);
    client.write_all(b"request").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request");
}

/// A pipe the test makes without close-on-exec, so that a proxy started now inherits it.
fn inheritable_pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: pipe fills two descriptors, which the test owns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

#[test]
fn pipe_descriptors_are_inherited_pipes_duplicated_per_session() {
    use std::os::fd::FromRawFd;
    let (read_end, write_end) = inheritable_pipe();
    let proxy = Proxy::start_trusted();
    // SAFETY: the test's own descriptors, closed here once the proxy has its copies.
    unsafe { libc::close(write_end) };
    let _ = read_end;
    // The API socket and every other descriptor of the proxy's own are refused...
    let own: Vec<i32> = std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
        .unwrap()
        .flatten()
        .filter(|e| {
            !std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("pipe:"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    assert!(own.len() > 3, "{own:?}");
    for fd in own {
        let spec = json!({"cluster": {"name": format!("p{fd}"), "spec": {"protocol": "PIPE", "write_fd": fd}}});
        let (status, _) = proxy.post("/api/v1/clusters", spec);
        assert_eq!(status, 422, "descriptor {fd} was taken");
    }
    assert_eq!(proxy.get("/api/v1/admin").0, 200, "the API still accepts");
    // ... the inherited pipe is used, by one session after another, each on a copy.
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "to-pipe", "spec": {"protocol": "UDP", "port": port},
            "options": {"idle_timeout": 0.2},
            "rules": [{"action": {"route": {"destination": {"name": "pipe",
                "spec": {"protocol": "PIPE", "write_fd": write_end}}}}}]}}),
    );
    // SAFETY: the test's read end.
    let mut reader = unsafe { std::fs::File::from_raw_fd(read_end) };
    for round in 0..3u8 {
        let client = udp_client("127.0.0.1");
        client
            .send_to(&[b'a' + round], ("127.0.0.1", port))
            .unwrap();
        let mut poll = libc::pollfd {
            fd: read_end,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; bounded wait, so a proxy that never writes fails the test.
        let ready = unsafe { libc::poll(&mut poll, 1, WAIT.as_millis() as i32) };
        assert_eq!(ready, 1, "round {round}: nothing arrived on the pipe");
        let mut got = [0u8; 1];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(got[0], b'a' + round);
        eventually("the session to end", || {
            proxy.sessions().is_empty().then_some(())
        });
    }
}
