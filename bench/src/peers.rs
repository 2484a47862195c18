//! The proxies under test, each started on its own ports in front of the same
//! upstreams: l7mp, socat, HAProxy, nginx (stream module), and no proxy at all.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::Certs;

#[derive(Clone, Copy)]
pub struct Upstreams {
    pub sink: u16,
    pub tcp_echo: u16,
    pub udp_echo: u16,
    pub udp_counter: u16,
    pub holder: u16,
}

/// Front ports of one peer, one per upstream (`None`: the peer cannot do that).
#[derive(Clone, Copy, Default)]
pub struct Fronts {
    pub sink: Option<u16>,
    pub tcp_echo: Option<u16>,
    pub udp_echo: Option<u16>,
    pub udp_counter: Option<u16>,
    pub holder: Option<u16>,
    /// l7mp only: a listener with a few rules in front of a HashRing cluster (echo).
    pub rules_echo: Option<u16>,
    /// TLS terminated in front of the sink and the echo upstream.
    pub tls_sink: Option<u16>,
    pub tls_echo: Option<u16>,
    /// Plain UDP in, through a DTLS tunnel between two of the peer's own ends, to the
    /// echo and the counter.
    pub dtls_echo: Option<u16>,
    pub dtls_counter: Option<u16>,
}

pub struct Peer {
    pub name: &'static str,
    pub fronts: Fronts,
    children: Vec<Child>,
    _dir: Option<TempDir>,
}

impl Peer {
    /// Process ids whose memory counts for this peer (forked children are found at
    /// measurement time).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for Peer {
    /// Kills each peer's whole process group: nginx's workers and socat's forked
    /// children outlive their parent otherwise, and would load the next measurements.
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: signalling a process group this harness created.
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("l7mp-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free for both TCP and UDP on 127.0.0.1, never handed out twice: fronts of
/// either kind, and the inner ends of tunnels, must not meet each other or the
/// upstreams (a UDP socket bound with SO_REUSEADDR would share a port silently).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && GIVEN.lock().unwrap().insert(port)
        {
            return port;
        }
    }
}

fn wait_tcp(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(cmd: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    // A process group of its own, so that Drop can stop everything the peer forks.
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

pub fn direct(up: Upstreams) -> Peer {
    let fronts = Fronts {
        sink: Some(up.sink),
        tcp_echo: Some(up.tcp_echo),
        udp_echo: Some(up.udp_echo),
        udp_counter: Some(up.udp_counter),
        holder: Some(up.holder),
        ..Fronts::default()
    };
    Peer {
        name: "direct",
        fronts,
        children: Vec::new(),
        _dir: None,
    }
}

fn fronts_all() -> Fronts {
    Fronts {
        sink: Some(free_port()),
        tcp_echo: Some(free_port()),
        udp_echo: Some(free_port()),
        udp_counter: Some(free_port()),
        holder: Some(free_port()),
        rules_echo: None,
        tls_sink: Some(free_port()),
        tls_echo: Some(free_port()),
        dtls_echo: None,
        dtls_counter: None,
    }
}

/// An l7mp UDP listener (server mode) in front of a UDP upstream, as config YAML.
fn udp_listener(name: &str, port: u16, upstream: u16) -> String {
    format!(
        "  - name: {name}\n    spec: {{protocol: UDP, port: {port}, address: 127.0.0.1}}\n    options: {{mode: server, idle_timeout: 60}}\n    rules:\n      - action:\n          route:\n            destination:\n              spec: {{protocol: UDP, port: {upstream}}}\n              endpoints: [{{spec: {{address: 127.0.0.1}}}}]\n"
    )
}

pub fn l7mp(binary: &Path, up: Upstreams, certs: &Certs) -> Peer {
    let mut f = fronts_all();
    f.rules_echo = Some(free_port());
    f.dtls_echo = Some(free_port());
    f.dtls_counter = Some(free_port());
    let listener = |name: &str, port: u16, upstream: u16, tls: &str| {
        format!(
            "  - name: {name}\n    spec: {{protocol: TCP, port: {port}, address: 127.0.0.1{tls}}}\n    rules:\n      - action:\n          route:\n            destination:\n              spec: {{protocol: TCP, port: {upstream}}}\n              endpoints: [{{spec: {{address: 127.0.0.1}}}}]\n"
        )
    };
    let tcp = |name: &str, port: u16, upstream: u16| listener(name, port, upstream, "");
    let tls = format!(
        ", tls: {{cert: {}, key: {}}}",
        certs.cert.display(),
        certs.key.display()
    );
    let rules = format!(
        "  - name: rules\n    spec: {{protocol: TCP, port: {port}, address: 127.0.0.1}}\n    rules:\n      - match: {{op: test, path: /IP/src_addr, value: 10.1.1.1}}\n        action: {{route: {{destination: ring}}}}\n      - match: {{op: and, apply: [{{op: starts, path: /IP/src_addr, value: '192.'}}, {{op: more, path: /TCP/src_port, value: 0}}]}}\n        action: {{route: {{destination: ring}}}}\n      - match: {{op: starts, path: /IP/src_addr, value: '127.'}}\n        action:\n          rewrite: [{{path: /labels/tenant, value: bench}}]\n          route: {{destination: ring}}\nclusters:\n  - name: ring\n    spec: {{protocol: TCP, port: {upstream}}}\n    loadbalancer: {{policy: HashRing, key: /TCP/src_port}}\n    endpoints:\n      - {{name: e1, spec: {{address: 127.0.0.1}}}}\n      - {{name: e2, spec: {{address: 127.0.0.1}}, weight: 2}}\n      - {{name: e3, spec: {{address: 127.0.0.1}}}}\n",
        port = f.rules_echo.unwrap(),
        upstream = up.tcp_echo
    );
    let config = format!(
        "admin: {{log_level: error}}\nlisteners:\n{}{}{}{}{}{}{}{}{}{}",
        tcp("sink", f.sink.unwrap(), up.sink),
        tcp("echo", f.tcp_echo.unwrap(), up.tcp_echo),
        listener("tls-sink", f.tls_sink.unwrap(), up.sink, &tls),
        listener("tls-echo", f.tls_echo.unwrap(), up.tcp_echo, &tls),
        tcp("holder", f.holder.unwrap(), up.holder),
        udp_listener("uecho", f.udp_echo.unwrap(), up.udp_echo),
        udp_listener("ucount", f.udp_counter.unwrap(), up.udp_counter),
        dtls_tunnel(certs, "techo", f.dtls_echo.unwrap(), up.udp_echo),
        dtls_tunnel(certs, "tcount", f.dtls_counter.unwrap(), up.udp_counter),
        // Last: it ends with the clusters.
        rules
    );
    run_l7mp(binary, "l7mp", &config, f)
}

/// Two l7mp listeners as config YAML: plain UDP on `front`, tunnelled over DTLS to a
/// DTLS listener that forwards to `upstream`.
fn dtls_tunnel(certs: &Certs, name: &str, front: u16, upstream: u16) -> String {
    let inner = free_port();
    format!(
        "  - name: {name}-in\n    spec: {{protocol: UDP, port: {front}, address: 127.0.0.1}}\n    options: {{mode: server, idle_timeout: 60}}\n    rules:\n      - action:\n          route:\n            destination:\n              spec: {{protocol: UDP, port: {inner}, dtls: {{ca: {ca}, server_name: localhost}}}}\n              endpoints: [{{spec: {{address: 127.0.0.1}}}}]\n  - name: {name}-out\n    spec: {{protocol: UDP, port: {inner}, address: 127.0.0.1, dtls: {{cert: {cert}, key: {key}}}}}\n    options: {{mode: server, idle_timeout: 60}}\n    rules:\n      - action:\n          route:\n            destination:\n              spec: {{protocol: UDP, port: {upstream}}}\n              endpoints: [{{spec: {{address: 127.0.0.1}}}}]\n",
        ca = certs.ca.display(),
        cert = certs.cert.display(),
        key = certs.key.display(),
    )
}

/// l7mp with the kernel UDP fast path on loopback (UDP workloads only).
pub fn l7mp_offload(binary: &Path, up: Upstreams) -> Peer {
    let f = Fronts {
        udp_echo: Some(free_port()),
        udp_counter: Some(free_port()),
        ..Fronts::default()
    };
    let config = format!(
        "admin: {{log_level: error, offload: init, offload_ifs: [lo]}}\nlisteners:\n{}{}",
        udp_listener("uecho", f.udp_echo.unwrap(), up.udp_echo),
        udp_listener("ucount", f.udp_counter.unwrap(), up.udp_counter)
    );
    run_l7mp(binary, "l7mp-offload", &config, f)
}

/// Starts l7mp on `config`, written into a directory of its own, and waits until it
/// listens.
fn run_l7mp(binary: &Path, name: &'static str, config: &str, fronts: Fronts) -> Peer {
    let dir = TempDir::new(name);
    let path = dir.0.join("l7mp.yaml");
    std::fs::write(&path, config).unwrap();
    let child = spawn(Command::new(binary).args([
        "-c",
        path.to_str().unwrap(),
        "--admin",
        "off",
        "-l",
        "error",
    ]));
    match fronts.tcp_echo {
        Some(port) => wait_tcp(port),
        // UDP only: nothing to connect to; give it the time to bind and attach.
        None => std::thread::sleep(Duration::from_millis(500)),
    }
    Peer {
        name,
        fronts,
        children: vec![child],
        _dir: Some(dir),
    }
}

pub fn socat(up: Upstreams, certs: &Certs) -> Peer {
    let mut f = fronts_all();
    f.dtls_echo = Some(free_port());
    f.dtls_counter = Some(free_port());
    let mut children = Vec::new();
    for (front, upstream) in [(f.dtls_echo, up.udp_echo), (f.dtls_counter, up.udp_counter)] {
        let inner = free_port();
        children.push(spawn(Command::new("socat").args([
            format!(
                "UDP-LISTEN:{},bind=127.0.0.1,fork,reuseaddr",
                front.unwrap()
            ),
            format!(
                "OPENSSL-DTLS-CLIENT:127.0.0.1:{inner},cafile={},commonname=localhost",
                certs.ca.display()
            ),
        ])));
        children.push(spawn(Command::new("socat").args([
            format!(
                "OPENSSL-DTLS-SERVER:{inner},bind=127.0.0.1,fork,reuseaddr,cert={},verify=0",
                certs.combined.display()
            ),
            format!("UDP:127.0.0.1:{upstream}"),
        ])));
    }
    for (front, upstream) in [(f.tls_sink, up.sink), (f.tls_echo, up.tcp_echo)] {
        children.push(spawn(Command::new("socat").args([
            format!(
                "OPENSSL-LISTEN:{},bind=127.0.0.1,fork,reuseaddr,backlog=4096,cert={},verify=0",
                front.unwrap(),
                certs.combined.display()
            ),
            format!("TCP:127.0.0.1:{upstream},nodelay"),
        ])));
    }
    for (front, upstream) in [
        (f.sink, up.sink),
        (f.tcp_echo, up.tcp_echo),
        (f.holder, up.holder),
    ] {
        let front = front.unwrap();
        children.push(spawn(Command::new("socat").args([
            format!("TCP-LISTEN:{front},bind=127.0.0.1,fork,reuseaddr,backlog=4096"),
            format!("TCP:127.0.0.1:{upstream},nodelay"),
        ])));
    }
    for (front, upstream) in [(f.udp_echo, up.udp_echo), (f.udp_counter, up.udp_counter)] {
        children.push(spawn(Command::new("socat").args([
            format!(
                "UDP-LISTEN:{},bind=127.0.0.1,fork,reuseaddr",
                front.unwrap()
            ),
            format!("UDP:127.0.0.1:{upstream}"),
        ])));
    }
    wait_tcp(f.tcp_echo.unwrap());
    Peer {
        name: "socat",
        fronts: f,
        children,
        _dir: None,
    }
}

pub fn haproxy(up: Upstreams, certs: &Certs) -> Peer {
    let dir = TempDir::new("haproxy");
    let mut f = fronts_all();
    f.udp_echo = None;
    f.udp_counter = None;
    let mut cfg = String::from(
        "global\n  maxconn 9500\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 5m\n  timeout server 5m\n",
    );
    for (name, front, upstream) in [
        ("sink", f.sink, up.sink),
        ("echo", f.tcp_echo, up.tcp_echo),
        ("hold", f.holder, up.holder),
    ] {
        cfg += &format!(
            "frontend f_{name}\n  bind 127.0.0.1:{}\n  default_backend b_{name}\nbackend b_{name}\n  server s 127.0.0.1:{upstream}\n",
            front.unwrap()
        );
    }
    for (name, front) in [("sink", f.tls_sink), ("echo", f.tls_echo)] {
        cfg += &format!(
            "frontend f_tls_{name}\n  bind 127.0.0.1:{} ssl crt {}\n  default_backend b_{name}\n",
            front.unwrap(),
            certs.combined.display()
        );
    }
    let path = dir.0.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = spawn(Command::new("haproxy").args(["-f", path.to_str().unwrap(), "-db"]));
    wait_tcp(f.tcp_echo.unwrap());
    Peer {
        name: "haproxy",
        fronts: f,
        children: vec![child],
        _dir: Some(dir),
    }
}

pub fn nginx(up: Upstreams, certs: &Certs) -> Peer {
    let dir = TempDir::new("nginx");
    let f = fronts_all();
    let mut servers = String::new();
    for (front, upstream) in [
        (f.sink, up.sink),
        (f.tcp_echo, up.tcp_echo),
        (f.holder, up.holder),
    ] {
        servers += &format!(
            "  server {{ listen 127.0.0.1:{}; proxy_pass 127.0.0.1:{upstream}; tcp_nodelay on; }}\n",
            front.unwrap()
        );
    }
    for (front, upstream) in [(f.tls_sink, up.sink), (f.tls_echo, up.tcp_echo)] {
        servers += &format!(
            "  server {{ listen 127.0.0.1:{} ssl; ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.2 TLSv1.3; proxy_pass 127.0.0.1:{upstream}; tcp_nodelay on; }}\n",
            front.unwrap(),
            certs.cert.display(),
            certs.key.display()
        );
    }
    for (front, upstream) in [(f.udp_echo, up.udp_echo), (f.udp_counter, up.udp_counter)] {
        servers += &format!(
            "  server {{ listen 127.0.0.1:{} udp; proxy_pass 127.0.0.1:{upstream}; proxy_timeout 60s; }}\n",
            front.unwrap()
        );
    }
    let d = dir.0.display();
    let cfg = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\nuser root;\nworker_processes 2;\nworker_rlimit_nofile 20000;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log error;\nevents {{ worker_connections 9500; }}\nstream {{\n{servers}}}\n"
    );
    let path = dir.0.join("nginx.conf");
    std::fs::write(&path, cfg).unwrap();
    let child =
        spawn(Command::new("nginx").args(["-c", path.to_str().unwrap(), "-p", &d.to_string()]));
    wait_tcp(f.tcp_echo.unwrap());
    Peer {
        name: "nginx",
        fronts: f,
        children: vec![child],
        _dir: Some(dir),
    }
}

/// Whether a peer's program is installed.
pub fn available(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
