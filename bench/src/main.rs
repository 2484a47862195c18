//! `l7mp-bench`: l7mp side by side with socat, HAProxy, nginx's stream module and a
//! direct no-proxy baseline, on loopback, interleaved round by round (A B C A B C ...),
//! reported as medians with their spread and as ratios. Run it with `bench/run`.

mod load;
mod peers;
mod tls;
mod upstream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;

use peers::{Peer, Upstreams};
use serde_json::{Value, json};

struct Options {
    rounds: usize,
    quick: bool,
    sessions: usize,
    out: Option<PathBuf>,
    l7mp: PathBuf,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 3,
        quick: false,
        sessions: 9_000,
        out: None,
        l7mp: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/release/l7mp"
        )),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => {
                o.rounds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rounds N")
            }
            "--sessions" => {
                o.sessions = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--sessions N")
            }
            "--out" => o.out = args.next().map(PathBuf::from),
            "--l7mp" => o.l7mp = args.next().map(PathBuf::from).expect("--l7mp PATH"),
            other => {
                eprintln!(
                    "usage: l7mp-bench [--quick] [--rounds N] [--sessions N] [--out FILE] [--l7mp PATH]\nunknown argument {other}"
                );
                std::process::exit(2);
            }
        }
    }
    if o.quick {
        o.rounds = o.rounds.min(2);
        o.sessions = o.sessions.min(2000);
    }
    o
}

/// Lets this process and the peers it starts hold as many sockets as allowed (an idle
/// session through a proxy costs the proxy two descriptors, so the open-file limit
/// bounds `--sessions`).
fn raise_fd_limit() -> u64 {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct; a failure leaves the old limit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
        cur.rlim_cur = cur.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
    }
    cur.rlim_cur
}

struct Context {
    sink: upstream::Sink,
    udp_counter: std::sync::Arc<AtomicU64>,
}

type Results = BTreeMap<&'static str, BTreeMap<&'static str, Vec<f64>>>;

fn record(
    results: &mut Results,
    metric: &'static str,
    peer: &'static str,
    value: Result<f64, String>,
) {
    match value {
        Ok(v) => results
            .entry(metric)
            .or_default()
            .entry(peer)
            .or_default()
            .push(v),
        Err(e) => eprintln!("  {metric} / {peer}: {e}"),
    }
}

fn main() {
    let mut o = options();
    let fds = raise_fd_limit();
    let most = (fds.saturating_sub(500) / 2) as usize;
    if o.sessions > most {
        eprintln!(
            "--sessions {} needs more than the open-file limit ({fds}) allows: using {most}",
            o.sessions
        );
        o.sessions = most;
    }
    assert!(
        o.l7mp.exists(),
        "{} not found: build it with cargo build --release -p l7mp",
        o.l7mp.display()
    );
    let sink = upstream::tcp_sink();
    let (udp_counter_port, udp_counter) = upstream::udp_counter();
    let up = Upstreams {
        sink: sink.port,
        tcp_echo: upstream::tcp_echo(),
        udp_echo: upstream::udp_echo(),
        udp_counter: udp_counter_port,
        holder: upstream::tcp_holder(),
    };
    let cx = Context { sink, udp_counter };
    let certs_dir = peers::TempDir::new("certs");
    let certs = tls::Certs::new(&certs_dir.0);
    let mut peers: Vec<Peer> = vec![
        peers::direct(up),
        peers::l7mp(&o.l7mp, up, &certs),
        peers::l7mp_offload(&o.l7mp, up),
    ];
    for (program, start) in [
        ("socat", peers::socat as fn(Upstreams, &tls::Certs) -> Peer),
        ("haproxy", peers::haproxy),
        ("nginx", peers::nginx),
    ] {
        if peers::available(program) {
            peers.push(start(up, &certs));
        } else {
            eprintln!("{program} is not installed: left out (bench/run installs it)");
        }
    }
    let names: Vec<&'static str> = peers.iter().map(|p| p.name).collect();
    let gib = 1u64 << 30;
    let (one_stream, per_stream8) = if o.quick {
        (gib / 4, gib / 32)
    } else {
        (2 * gib, gib / 4)
    };
    let mut results = Results::new();

    for round in 0..o.rounds {
        eprintln!("round {} of {}", round + 1, o.rounds);
        for p in &peers {
            let f = p.fronts;
            if let Some(port) = f.sink {
                record(
                    &mut results,
                    "tcp_1stream_gbps",
                    p.name,
                    load::tcp_throughput(&load::plain(port), &cx.sink, 1, one_stream),
                );
                record(
                    &mut results,
                    "tcp_8streams_gbps",
                    p.name,
                    load::tcp_throughput(&load::plain(port), &cx.sink, 8, per_stream8),
                );
            }
            if let Some(port) = f.tcp_echo {
                match load::tcp_rtt(&load::plain(port), 5000) {
                    Ok((p50, p99)) => {
                        record(&mut results, "tcp_rtt_p50_us", p.name, Ok(p50));
                        record(&mut results, "tcp_rtt_p99_us", p.name, Ok(p99));
                    }
                    Err(e) => eprintln!("  tcp rtt / {}: {e}", p.name),
                }
            }
            if let Some(port) = f.udp_echo {
                match load::udp_rtt(port, 5000) {
                    Ok((p50, p99)) => {
                        record(&mut results, "udp_rtt_p50_us", p.name, Ok(p50));
                        record(&mut results, "udp_rtt_p99_us", p.name, Ok(p99));
                    }
                    Err(e) => eprintln!("  udp rtt / {}: {e}", p.name),
                }
            }
            if let Some(port) = f.udp_counter {
                let cpu_before = load::cpu_ms(&p.pids());
                let pps = load::udp_pps(port, &cx.udp_counter, 2.0, 5_000_000);
                if p.name != "direct" && pps.is_ok() {
                    // The proxy's CPU for the 2-second flood, in milliseconds.
                    let cpu = load::cpu_ms(&p.pids()) - cpu_before;
                    record(&mut results, "udp_flood_proxy_cpu_ms", p.name, Ok(cpu));
                }
                record(&mut results, "udp_100b_pps", p.name, pps);
            }
            if let Some(port) = f.tls_sink {
                record(
                    &mut results,
                    "tls_1stream_gbps",
                    p.name,
                    load::tcp_throughput(&certs.dial(port), &cx.sink, 1, one_stream / 2),
                );
            }
            if let Some(port) = f.tls_echo {
                match load::tcp_rtt(&certs.dial(port), 5000) {
                    Ok((p50, p99)) => {
                        record(&mut results, "tls_rtt_p50_us", p.name, Ok(p50));
                        record(&mut results, "tls_rtt_p99_us", p.name, Ok(p99));
                    }
                    Err(e) => eprintln!("  tls rtt / {}: {e}", p.name),
                }
                record(
                    &mut results,
                    "tls_handshakes_per_s",
                    p.name,
                    load::session_rate(&certs.dial(port), 8, 2.0),
                );
            }
            if let Some(port) = f.dtls_echo {
                match load::udp_rtt(port, 5000) {
                    Ok((p50, p99)) => {
                        record(&mut results, "dtls_tunnel_rtt_p50_us", p.name, Ok(p50));
                        record(&mut results, "dtls_tunnel_rtt_p99_us", p.name, Ok(p99));
                    }
                    Err(e) => eprintln!("  dtls rtt / {}: {e}", p.name),
                }
            }
            if let Some(port) = f.dtls_counter {
                record(
                    &mut results,
                    "dtls_tunnel_100b_pps",
                    p.name,
                    load::udp_pps(port, &cx.udp_counter, 2.0, 5_000_000),
                );
            }
            if let Some(port) = f.rules_echo.or(f.tcp_echo) {
                record(
                    &mut results,
                    "tcp_new_sessions_per_s",
                    p.name,
                    load::session_rate(&load::plain(port), 8, 2.0),
                );
            }
        }
    }
    eprintln!(
        "idle sessions ({} each; socat forks a process per session, so it gets 300)",
        o.sessions
    );
    for p in peers
        .iter()
        .filter(|p| p.name != "direct" && p.name != "l7mp-offload")
    {
        let n = if p.name == "socat" {
            o.sessions.min(300)
        } else {
            o.sessions
        };
        if let Some(port) = p.fronts.holder {
            record(
                &mut results,
                "idle_tcp_bytes_per_session",
                p.name,
                load::idle_tcp_memory(port, &p.pids(), n),
            );
        }
        if let Some(port) = p.fronts.udp_echo {
            record(
                &mut results,
                "idle_udp_bytes_per_session",
                p.name,
                load::idle_udp_memory(port, &p.pids(), n),
            );
        }
    }
    let report = report(&results, &names);
    println!("{report}");
    let doc = json!({
        "tool": "l7mp-bench",
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rounds": o.rounds,
        "quick": o.quick,
        "sessions": o.sessions,
        "results": results,
        "medians": medians(&results),
        "targets": targets(&results),
    });
    let out = o.out.unwrap_or_else(|| PathBuf::from("bench-results.json"));
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    eprintln!("results written to {}", out.display());
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn medians(results: &Results) -> Value {
    json!(
        results
            .iter()
            .map(|(m, peers)| (
                *m,
                peers
                    .iter()
                    .map(|(p, v)| (*p, median(v)))
                    .collect::<BTreeMap<_, _>>()
            ))
            .collect::<BTreeMap<_, _>>()
    )
}

fn get(results: &Results, metric: &str, peer: &str) -> Option<f64> {
    results.get(metric)?.get(peer).map(|v| median(v))
}

/// Latency rows compare what a proxy adds to the direct round trip.
fn is_latency(metric: &str) -> bool {
    metric.contains("rtt")
}

/// A latency is compared as what the proxy adds to the direct round trip, where there
/// is one (TLS and DTLS have no direct baseline: their latencies compare whole).
fn comparable(results: &Results, metric: &str, peer: &str) -> Option<f64> {
    let v = get(results, metric, peer)?;
    match get(results, metric, "direct") {
        Some(direct) if is_latency(metric) => Some(v - direct),
        _ => Some(v),
    }
}

fn report(results: &Results, peers: &[&'static str]) -> String {
    let mut out = String::from("metric (median [min..max])");
    let width = 26;
    out = format!("{out:<30}");
    for p in peers {
        out += &format!("{p:>width$}");
    }
    let others: Vec<&&str> = peers
        .iter()
        .filter(|p| **p != "l7mp" && **p != "l7mp-offload")
        .collect();
    for o in &others {
        out += &format!("{:>14}", format!("l7mp/{o}"));
    }
    out.push('\n');
    for (metric, by_peer) in results {
        out += &format!("{metric:<30}");
        for p in peers {
            let cell = by_peer.get(p).map(|v| {
                let mut s = v.clone();
                s.sort_by(f64::total_cmp);
                format!(
                    "{} [{}..{}]",
                    fmt(median(v)),
                    fmt(s[0]),
                    fmt(s[s.len() - 1])
                )
            });
            out += &format!("{:>width$}", cell.unwrap_or_else(|| "-".into()));
        }
        for o in &others {
            let ratio = match (
                comparable(results, metric, "l7mp"),
                comparable(results, metric, o),
            ) {
                (Some(a), Some(b)) if b != 0.0 && !(is_latency(metric) && **o == "direct") => {
                    format!("{:.2}x", a / b)
                }
                _ => "-".into(),
            };
            out += &format!("{ratio:>14}");
        }
        out.push('\n');
    }
    out += "(rtt ratios compare the latency each proxy adds to the direct round trip; tls and dtls\n rtts compare whole; a dtls tunnel is two of the peer's instances, client and server side)\n\n";
    for (target, met) in targets(results).as_object().into_iter().flatten() {
        out += &format!("target {target}: {}\n", met);
    }
    out
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn targets(r: &Results) -> Value {
    let check = |v: Option<bool>| match v {
        Some(true) => json!("met"),
        Some(false) => json!("NOT met"),
        None => json!("not measured"),
    };
    let ratio = |m: &str, a: &str, b: &str| Some(comparable(r, m, a)? / comparable(r, m, b)?);
    json!({
        "tcp throughput >= 2x socat": check(ratio("tcp_1stream_gbps", "l7mp", "socat").map(|x| x >= 2.0)),
        "tcp throughput >= 0.7x direct": check(ratio("tcp_1stream_gbps", "l7mp", "direct").map(|x| x >= 0.7)),
        "added tcp rtt p50 <= 0.5x socat's": check(ratio("tcp_rtt_p50_us", "l7mp", "socat").map(|x| x <= 0.5)),
        "udp pps >= 1.5x socat": check(ratio("udp_100b_pps", "l7mp", "socat").map(|x| x >= 1.5)),
        ">= 20k new tcp sessions/s": check(get(r, "tcp_new_sessions_per_s", "l7mp").map(|x| x >= 20_000.0)),
        "<= 16 KiB per idle tcp session": check(get(r, "idle_tcp_bytes_per_session", "l7mp").map(|x| x <= 16384.0)),
    })
}
