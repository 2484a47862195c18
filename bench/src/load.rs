//! The workloads. Each is bounded in bytes, count and time, and talks to loopback only.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::upstream::{Sink, pattern};

const WAIT: Duration = Duration::from_secs(60);

/// A client connection of a workload: plain TCP, or TLS over it.
pub trait Stream: Read + Write + Send {
    /// Ends the sending direction (a TLS stream says close_notify first).
    fn close_write(&mut self) -> std::io::Result<()>;
    /// The TCP socket under it.
    fn tcp(&self) -> &TcpStream;
}

impl Stream for TcpStream {
    fn close_write(&mut self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// Opens a workload's connections to one front.
pub type Dial = Arc<dyn Fn() -> std::io::Result<Box<dyn Stream>> + Send + Sync>;

/// A TCP connection to 127.0.0.1:`port`, Nagle off.
pub fn connect_tcp(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Plain TCP connections to 127.0.0.1:`port`.
pub fn plain(port: u16) -> Dial {
    Arc::new(move || Ok(Box::new(connect_tcp(port)?) as Box<dyn Stream>))
}

/// Sends `bytes_per_stream` over each of `streams` connections into the verifying sink;
/// returns Gbit/s of payload that arrived intact.
pub fn tcp_throughput(
    dial: &Dial,
    sink: &Sink,
    streams: usize,
    bytes_per_stream: u64,
) -> Result<f64, String> {
    let finished_before = sink.finished.load(Ordering::SeqCst);
    let received_before = sink.received.load(Ordering::SeqCst);
    let corrupt_before = sink.corrupt.load(Ordering::SeqCst);
    let start = Instant::now();
    let writers: Vec<_> = (0..streams)
        .map(|_| {
            let dial = dial.clone();
            std::thread::spawn(move || {
                let mut s = dial().map_err(|e| e.to_string())?;
                s.tcp().set_read_timeout(None).map_err(|e| e.to_string())?;
                // A whole number of pattern periods, so every block starts the pattern
                // afresh and generating data costs nothing in the loop.
                let block: Vec<u8> = (0..251 * 4096).map(pattern).collect();
                let mut offset = 0u64;
                while offset < bytes_per_stream {
                    let n = block.len().min((bytes_per_stream - offset) as usize);
                    s.write_all(&block[..n]).map_err(|e| e.to_string())?;
                    offset += n as u64;
                }
                s.close_write().map_err(|e| e.to_string())?;
                // Hold the connection until the sink has everything (a proxy may close
                // the upstream side when we close ours).
                let _ = s.read(&mut [0u8; 1]);
                Ok::<_, String>(())
            })
        })
        .collect();
    while sink.finished.load(Ordering::SeqCst) < finished_before + streams as u64 {
        if start.elapsed() > WAIT {
            return Err("timed out".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = start.elapsed().as_secs_f64();
    for w in writers {
        w.join().map_err(|_| "writer panicked".to_string())??;
    }
    let received = sink.received.load(Ordering::SeqCst) - received_before;
    if received != streams as u64 * bytes_per_stream
        || sink.corrupt.load(Ordering::SeqCst) != corrupt_before
    {
        return Err(format!("data lost or corrupted: {received} bytes arrived"));
    }
    Ok(received as f64 * 8.0 / secs / 1e9)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Round trips of a 64-byte message over one TCP connection: (p50, p99) in µs.
pub fn tcp_rtt(dial: &Dial, rounds: usize) -> Result<(f64, f64), String> {
    let mut s = dial().map_err(|e| e.to_string())?;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let mut times = Vec::with_capacity(rounds);
    for i in 0..rounds + 100 {
        let t = Instant::now();
        s.write_all(&msg).map_err(|e| e.to_string())?;
        s.flush().map_err(|e| e.to_string())?;
        s.read_exact(&mut back).map_err(|e| e.to_string())?;
        if i >= 100 {
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// Round trips of a 64-byte datagram: (p50, p99) in µs.
pub fn udp_rtt(front: u16, rounds: usize) -> Result<(f64, f64), String> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(("127.0.0.1", front)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let msg = [7u8; 64];
    let mut back = [0u8; 256];
    let mut times = Vec::with_capacity(rounds);
    let mut lost = 0;
    for i in 0..rounds + 100 {
        let t = Instant::now();
        s.send(&msg).map_err(|e| e.to_string())?;
        match s.recv(&mut back) {
            Ok(_) if i >= 100 => times.push(t.elapsed().as_secs_f64() * 1e6),
            Ok(_) => {}
            Err(_) => lost += 1,
        }
        if lost > 10 {
            return Err("more than 10 datagrams lost".into());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// Floods 100-byte datagrams for `secs` (at most `max` of them) from one socket; returns
/// datagrams per second that reached the upstream.
pub fn udp_pps(front: u16, counter: &AtomicU64, secs: f64, max: u64) -> Result<f64, String> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.connect(("127.0.0.1", front)).unwrap();
    let before = counter.load(Ordering::SeqCst);
    // One datagram first so that the proxy has its session before the flood.
    s.send(&[0u8; 100]).map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    let msg = [1u8; 100];
    while start.elapsed() < deadline && sent < max {
        for _ in 0..64 {
            if s.send(&msg).is_ok() {
                sent += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    // Less the datagram that opened the session.
    let received = counter.load(Ordering::SeqCst).saturating_sub(before + 1);
    if received == 0 {
        return Err("no datagram arrived".into());
    }
    Ok(received as f64 / elapsed)
}

/// New sessions per second: `workers` threads connect (and shake hands, over TLS),
/// exchange one byte, close.
pub fn session_rate(dial: &Dial, workers: usize, secs: f64) -> Result<f64, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            let dial = dial.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = (|| {
                        let mut s = dial().ok()?;
                        s.write_all(b"x").ok()?;
                        s.flush().ok()?;
                        let mut b = [0u8; 1];
                        s.read_exact(&mut b).ok()?;
                        // RST instead of TIME_WAIT on the client side keeps ports free.
                        set_linger_zero(s.tcp());
                        Some(())
                    })();
                    if ok.is_some() {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > done.load(Ordering::Relaxed) / 100 + 10 {
        return Err(format!("{failed} sessions failed"));
    }
    Ok(done.load(Ordering::Relaxed) as f64 / elapsed)
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a live socket with a correctly sized struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// These processes and their descendants.
fn process_tree(pids: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = pids.to_vec();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        if let Ok(children) =
            std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
        {
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all
}

/// CPU time (milliseconds, user + system) these processes have used so far.
pub fn cpu_ms(pids: &[u32]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    process_tree(pids)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        * 1000.0
        / ticks
}

/// Resident memory (bytes) of these processes and all their descendants.
pub fn rss(pids: &[u32]) -> u64 {
    process_tree(pids)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

/// Opens `n` TCP sessions through `front` that stay idle; returns the added resident
/// memory per session in bytes.
pub fn idle_tcp_memory(front: u16, pids: &[u32], n: usize) -> Result<f64, String> {
    let before = rss(pids);
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(("127.0.0.1", front))
            .map_err(|e| format!("after {} sessions: {e}", held.len()))?;
        s.write_all(b"x").map_err(|e| e.to_string())?;
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss(pids);
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// Opens `n` UDP sessions (one datagram from each of `n` sockets); returns the added
/// resident memory per session in bytes.
pub fn idle_udp_memory(front: u16, pids: &[u32], n: usize) -> Result<f64, String> {
    let before = rss(pids);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        s.send_to(b"x", ("127.0.0.1", front))
            .map_err(|e| e.to_string())?;
        held.push(s);
        if i % 500 == 499 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let after = rss(pids);
    drop(held);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}
