//! SCTP over UDP encapsulation, proxy to proxy: one l7mp turns UDP sessions into SCTP
//! associations, a second one terminates them.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[test]
fn sctp_associations_carry_messages_between_two_proxies() {
    let (edge, core) = (Proxy::start(), Proxy::start());
    let sctp_port = free_udp_port();
    // The terminating side: SCTP listener -> Echo.
    core.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "sctp-in", "spec": {"protocol": "SCTP", "port": sctp_port},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
    // The originating side: UDP listener -> SCTP cluster.
    let udp_port = free_udp_port();
    edge.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "udp-in", "spec": {"protocol": "UDP", "port": udp_port},
            "rules": [{"action": {"route": {"retry": {"retry_on": "connect-failure", "num_retries": 3, "timeout": 3000},
                "destination": {"name": "sctp-out", "spec": {"protocol": "SCTP", "port": sctp_port},
                    "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    let to: std::net::SocketAddr = format!("127.0.0.1:{udp_port}").parse().unwrap();
    let clients: Vec<_> = (0..3).map(|_| udp_client("127.0.0.1")).collect();
    for (i, client) in clients.iter().enumerate() {
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(
            udp_roundtrip(client, to, format!("hello {i}").as_bytes()),
            format!("hello {i}").as_bytes()
        );
    }
    // Message boundaries survive, including a message larger than one SCTP packet.
    let big = vec![b'x'; 20_000];
    clients[0].send_to(b"first", to).unwrap();
    clients[0].send_to(&big, to).unwrap();
    clients[0].send_to(b"last", to).unwrap();
    let mut buf = vec![0u8; 65536];
    for want in [&b"first"[..], &big, b"last"] {
        let n = clients[0].recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
    // One association per session on each side.
    assert_eq!(edge.sessions().len(), 3);
    let terminated = core.sessions();
    assert_eq!(terminated.len(), 3);
    assert!(
        terminated[0]["metadata"]["SCTP"]["src_port"].is_u64(),
        "{}",
        terminated[0]
    );
}

#[test]
fn an_sctp_peer_that_does_not_answer_fails_the_connect() {
    let proxy = Proxy::start();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "udp-in", "spec": {"protocol": "UDP", "port": udp_port}, "options": {"track": 30},
            "rules": [{"action": {"route": {"retry": {"timeout": 500},
                "destination": {"spec": {"protocol": "SCTP", "port": silent.local_addr().unwrap().port()},
                    "endpoints": [{"spec": {"address": "127.0.0.1"}}]}}}}]}}),
    );
    udp_client("127.0.0.1")
        .send_to(b"anyone?", format!("127.0.0.1:{udp_port}"))
        .unwrap();
    let failed = eventually("the failed session", || {
        proxy
            .sessions()
            .into_iter()
            .find(|s| s["error"].is_string())
    });
    assert!(
        failed["error"].as_str().unwrap().contains("timed out"),
        "{failed}"
    );
}

/// A minimal SCTP-over-UDP client of its own (sctp-proto driven by hand, blocking), so
/// that the listener is also checked against a peer that is not l7mp.
fn sctp_peer_roundtrip(port: u16, messages: &[&[u8]]) -> Vec<Vec<u8>> {
    use sctp_proto::{
        ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event, Payload,
        PayloadProtocolIdentifier, StreamEvent,
    };
    use std::sync::Arc;
    use std::time::Instant;

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let remote: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::new()), None);
    let (handle, mut assoc) = endpoint.connect(ClientConfig::new(), remote).unwrap();
    let (mut sent, mut got) = (false, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    while got.len() < messages.len() {
        assert!(
            Instant::now() < deadline,
            "the SCTP peer got {} of {} answers",
            got.len(),
            messages.len()
        );
        let now = Instant::now();
        while let Some(t) = assoc.poll_transmit(now) {
            if let Payload::RawEncode(packets) = t.payload {
                for p in packets {
                    socket.send_to(&p, t.remote).unwrap();
                }
            }
        }
        while let Some(e) = assoc.poll_endpoint_event() {
            if let Some(back) = endpoint.handle_event(handle, e) {
                assoc.handle_event(back);
            }
        }
        while let Some(event) = assoc.poll() {
            match event {
                Event::Connected if !sent => {
                    let mut stream = assoc
                        .open_stream(0, PayloadProtocolIdentifier::Binary)
                        .unwrap();
                    for m in messages {
                        stream
                            .write_sctp(
                                &bytes::Bytes::copy_from_slice(m),
                                PayloadProtocolIdentifier::Binary,
                            )
                            .unwrap();
                    }
                    sent = true;
                }
                Event::Stream(StreamEvent::Readable { id })
                | Event::Stream(StreamEvent::Opened { id }) => {
                    let mut stream = assoc.stream(id).unwrap();
                    while let Ok(Some(chunks)) = stream.read_sctp() {
                        let mut m = vec![0u8; chunks.len()];
                        chunks.read(&mut m).unwrap();
                        got.push(m);
                    }
                }
                _ => {}
            }
        }
        if sent && assoc.accept_stream().is_some() {
            continue;
        }
        let wait = assoc
            .poll_timeout()
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(50));
        socket
            .set_read_timeout(Some(
                wait.clamp(Duration::from_millis(1), Duration::from_millis(50)),
            ))
            .unwrap();
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                if let Some((_, DatagramEvent::AssociationEvent(e))) = endpoint.handle(
                    Instant::now(),
                    from,
                    None,
                    None,
                    bytes::Bytes::copy_from_slice(&buf[..n]),
                ) {
                    assoc.handle_event(e);
                }
            }
            Err(_) => {
                if assoc.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                    assoc.handle_timeout(Instant::now());
                }
            }
        }
    }
    got
}

#[test]
fn an_independent_sctp_peer_talks_to_the_listener() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "sctp-in", "spec": {"protocol": "SCTP", "port": port},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
    let big = vec![7u8; 5000];
    let answers = sctp_peer_roundtrip(port, &[b"one", &big, b"three"]);
    assert_eq!(answers, vec![b"one".to_vec(), big, b"three".to_vec()]);
}
