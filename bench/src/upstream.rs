//! The servers behind the proxies: a verifying sink, an echo server, a connection
//! holder, all on loopback, each in its own threads.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The byte at `offset` of every test stream: a pattern the sink can check.
pub fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// Accepts connections and reads each to end of stream, checking the pattern; adds
/// the bytes to `received` and counts corrupted streams in `corrupt`.
pub struct Sink {
    pub port: u16,
    pub received: Arc<AtomicU64>,
    pub corrupt: Arc<AtomicU64>,
    pub finished: Arc<AtomicU64>,
}

pub fn tcp_sink() -> Sink {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (received, corrupt, finished) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let (r, c, f) = (received.clone(), corrupt.clone(), finished.clone());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let (r, c, f) = (r.clone(), c.clone(), f.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut offset = 0u64;
                let mut ok = true;
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            // Checking every byte would measure the checker; check a stride.
                            for i in (0..n).step_by(4093) {
                                ok &= buf[i] == pattern(offset + i as u64);
                            }
                            ok &= buf[n - 1] == pattern(offset + n as u64 - 1);
                            offset += n as u64;
                            r.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
                if !ok {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                f.fetch_add(1, Ordering::Relaxed);
            });
        }
    });
    Sink {
        port,
        received,
        corrupt,
        finished,
    }
}

/// Echoes every connection's bytes back. A pool of threads accepts and serves one
/// connection at a time each, so a new connection costs no thread start (the session
/// rate would otherwise measure thread creation).
pub fn tcp_echo() -> u16 {
    const POOL: usize = 32;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    for _ in 0..POOL {
        let l = l.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { return };
                let _ = conn.set_nodelay(true);
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        });
    }
    port
}

/// Echoes every datagram back to its sender.
pub fn udp_echo() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], peer);
        }
    });
    port
}

/// Counts datagrams.
pub fn udp_counter() -> (u16, Arc<AtomicU64>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    set_rcvbuf(&s, 8 << 20);
    let port = s.local_addr().unwrap().port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while s.recv(&mut buf).is_ok() {
            c.fetch_add(1, Ordering::Relaxed);
        }
    });
    (port, count)
}

pub fn set_rcvbuf(s: &impl std::os::fd::AsRawFd, bytes: i32) {
    // SAFETY: setsockopt on a live socket with a correctly sized int.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            4,
        );
    }
}

/// Accepts connections and keeps them open without reading; connections their
/// proxy has closed are let go now and then, so one peer's idle test does not leave
/// the next one without descriptors.
pub fn tcp_holder() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for (accepted, conn) in l.incoming().enumerate() {
            match conn {
                Ok(c) => {
                    let _ = c.set_nonblocking(true);
                    held.push(c);
                }
                Err(_) => return,
            }
            if accepted % 500 == 499 {
                // Still open: nothing to read yet (WouldBlock) or data waiting.
                let mut probe = [0u8; 1];
                held.retain(|c| match c.peek(&mut probe) {
                    Ok(n) => n > 0,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                });
            }
        }
    });
    port
}
