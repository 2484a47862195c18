//! Starting the proxy and talking to its API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Proxy {
    child: Child,
    pub api: String,
    agent: ureq::Agent,
}

/// Fails the test, naming what it needs, when a prerequisite is missing: no test passes
/// green without testing anything. `.ci/run` installs every prerequisite.
pub fn require(available: bool, what: &str) {
    assert!(available, "missing prerequisite: {what}");
}

/// Ports for tests' listeners come from below the kernel's ephemeral range (32768 and
/// up on Linux), so no socket the kernel numbers itself (an outgoing connection, a
/// `bind(0)`) can take one between the test choosing it and the proxy binding it, and
/// each port is handed out once per test process (parallel tests never share one).
/// Each process starts at its own offset, so concurrent test runs rarely meet.
fn next_port(free: impl Fn(u16) -> bool) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 397) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if free(port) {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN);
}

/// A port no TCP or UDP socket on 127.0.0.1 holds now.
fn unused(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

pub fn free_tcp_port() -> u16 {
    next_port(unused)
}

pub fn free_udp_port() -> u16 {
    next_port(unused)
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(WAIT))
        .build()
        .into()
}

/// Lets this test process open as many descriptors as its hard limit allows (tests
/// that open hundreds of sockets).
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Polls `f` until it returns `Some`, for at most [`WAIT`].
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Proxy {
    /// The proxy on the default config, its API on a free port.
    pub fn start() -> Proxy {
        Self::start_with(&[])
    }

    /// The proxy whose unauthenticated API may create what reaches the host
    /// (`--api-host-access`): for tests of commands, pipes, files and grants.
    pub fn start_trusted() -> Proxy {
        Self::start_with(&["--api-host-access"])
    }

    pub fn start_with(args: &[&str]) -> Proxy {
        Self::spawn(args, false)
    }

    /// The proxy with its stdin and stdout piped to the test (see [`Proxy::stdio`]).
    pub fn start_piped() -> Proxy {
        Self::spawn(&[], true)
    }

    /// The proxy's stdin and stdout, when started with [`Proxy::start_piped`].
    pub fn stdio(&mut self) -> (std::process::ChildStdin, std::process::ChildStdout) {
        (
            self.child.stdin.take().expect("piped stdin"),
            self.child.stdout.take().expect("piped stdout"),
        )
    }

    /// The proxy run through a wrapper command (e.g. `setpriv` to drop capabilities).
    pub fn start_wrapped(wrapper: &[&str]) -> Proxy {
        Self::spawn_with(wrapper, &[], false)
    }

    fn spawn(args: &[&str], piped: bool) -> Proxy {
        Self::spawn_with(&[], args, piped)
    }

    /// The proxy with its API over TLS (`admin.tls` in its config): `api` is its
    /// `host:port`, and the test speaks to it with a TLS client of its own.
    pub fn start_tls(args: &[&str]) -> Proxy {
        let mut proxy = Self::launch(&[], args, false);
        proxy.api = proxy.api.replacen("http://", "", 1);
        proxy
    }

    fn spawn_with(wrapper: &[&str], args: &[&str], piped: bool) -> Proxy {
        let proxy = Self::launch(wrapper, args, piped);
        eventually("the API to answer", || {
            proxy
                .agent
                .get(format!("{}/api/v1/admin", proxy.api))
                .call()
                .ok()
        });
        proxy
    }

    /// Starts the proxy and waits until it says where its API listens.
    fn launch(wrapper: &[&str], args: &[&str], piped: bool) -> Proxy {
        // The kernel picks the API's port; the proxy says which.
        static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let address_file = std::env::temp_dir().join(format!(
            "l7mp-test-{}-{}.admin",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&address_file);
        let pipe = || if piped { Stdio::piped() } else { Stdio::null() };
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(env!("CARGO_BIN_EXE_l7mp"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_l7mp")),
        };
        let mut child = command
            .args(["--admin", "127.0.0.1:0", "-l", "warn"])
            .arg("--admin-address-file")
            .arg(&address_file)
            .args(args)
            .stdin(pipe())
            .stdout(pipe())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("l7mp starts");
        let api = eventually("the proxy to report its API address", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("l7mp exited at start: {status}");
            }
            std::fs::read_to_string(&address_file).ok()
        });
        let _ = std::fs::remove_file(&address_file);
        Proxy {
            child,
            api: format!("http://{api}"),
            agent: agent(),
        }
    }

    fn answer(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
        let mut resp = resp.expect("the API answers");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::answer(self.agent.get(format!("{}{path}", self.api)).call())
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        Self::answer(self.agent.delete(format!("{}{path}", self.api)).call())
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_raw("POST", path, "application/json", &body.to_string())
    }

    pub fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.send_raw("PUT", path, "application/json", &body.to_string())
    }

    pub fn send_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.api);
        let resp = match method {
            "POST" => self
                .agent
                .post(url)
                .header("content-type", content_type)
                .send(body),
            "PUT" => self
                .agent
                .put(url)
                .header("content-type", content_type)
                .send(body),
            // Clients send a content type with body-less requests too.
            "GET" if body.is_empty() => self
                .agent
                .get(url)
                .header("content-type", content_type)
                .call(),
            "DELETE" if body.is_empty() => self
                .agent
                .delete(url)
                .header("content-type", content_type)
                .call(),
            other => panic!("no {other} with a body here"),
        };
        Self::answer(resp)
    }

    /// POSTs and insists on success.
    pub fn create(&self, path: &str, body: Value) {
        let (status, answer) = self.post(path, body);
        assert_eq!(status, 200, "POST {path}: {answer}");
    }

    pub fn sessions(&self) -> Vec<Value> {
        match self.get("/api/v1/sessions") {
            (200, Value::Array(all)) => all,
            other => panic!("GET sessions: {other:?}"),
        }
    }

    pub fn metrics(&self) -> String {
        let mut resp = self
            .agent
            .get(format!("{}/metrics", self.api))
            .call()
            .expect("metrics");
        resp.body_mut().read_to_string().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A UDP client socket bound on `ip`, with a receive timeout.
pub fn udp_client(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind(format!("{ip}:0")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s
}

/// Sends `msg` to `to` until an answer arrives (the listener may still be starting).
pub fn udp_roundtrip(s: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    s.send_to(msg, to).unwrap();
    let mut buf = [0u8; 65536];
    let (n, _) = s.recv_from(&mut buf).expect("an answer");
    buf[..n].to_vec()
}

/// A UDP server on loopback that answers every datagram with `prefix` + datagram and
/// reports what it received.
pub fn udp_upstream(prefix: &'static [u8]) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, peer)) = s.recv_from(&mut buf) {
            let _ = tx.send(buf[..n].to_vec());
            let mut reply = prefix.to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, peer);
        }
    });
    (port, rx)
}

/// A TCP server that answers each connection's data with `prefix` + data.
pub fn tcp_upstream(prefix: &'static [u8]) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || serve_prefixed(l, prefix));
    port
}

pub fn serve_prefixed(l: TcpListener, prefix: &'static [u8]) {
    for conn in l.incoming() {
        let Ok(mut conn) = conn else { return };
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut reply = prefix.to_vec();
                reply.extend_from_slice(&buf[..n]);
                if conn.write_all(&reply).is_err() {
                    break;
                }
            }
        });
    }
}

pub fn tcp_connect(port: u16) -> TcpStream {
    let s = eventually("the listener to accept", || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Writes `msg` and reads until `expect.len()` bytes came back.
pub fn tcp_exchange(s: &mut TcpStream, msg: &[u8], expect_len: usize) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; expect_len];
    s.read_exact(&mut got).expect("the answer");
    got
}

/// Whether the peer has closed: a read returns 0 (or an error) within the timeout.
pub fn tcp_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// The example plugins of `plugins/`, built once per test run (cargo skips the build
/// when nothing changed) to WebAssembly components.
pub fn plugin_wasm(crate_name: &str) -> Vec<u8> {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "--locked", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            // The outer build's settings are for the host, not for Wasm.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building plugins/ failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
        );
        root.join("target/wasm32-wasip2/release")
    });
    let file = dir.join(format!("{}.wasm", crate_name.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

impl Proxy {
    /// Uploads a component: `POST /api/v1/plugins?name=&version=`.
    pub fn upload(&self, name: &str, version: &str, wasm: &[u8]) -> (u16, Value) {
        Self::answer(
            self.agent
                .post(format!(
                    "{}/api/v1/plugins?name={name}&version={version}",
                    self.api
                ))
                .header("content-type", "application/wasm")
                .send(wasm),
        )
    }

    /// Uploads and insists on success.
    pub fn load_plugin(&self, name: &str, crate_name: &str) {
        let (status, answer) = self.upload(name, "1", &plugin_wasm(crate_name));
        assert_eq!(status, 201, "upload {crate_name}: {answer}");
    }
}

/// A UDP listener on a free port whose sessions are answered by a Wasm cluster named
/// `<listener>-plugin`; `plugin_use` is its spec beside `protocol: Wasm`.
pub fn wasm_destination(proxy: &Proxy, listener: &str, plugin_use: Value) -> SocketAddr {
    let port = free_udp_port();
    let mut spec = plugin_use;
    spec["protocol"] = Value::from("Wasm");
    proxy.create(
        "/api/v1/listeners",
        serde_json::json!({"listener": {"name": listener, "spec": {"protocol": "UDP", "port": port},
            "rules": [{"action": {"route": {"destination": {"name": format!("{listener}-plugin"), "spec": spec}}}}]}}),
    );
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Sends `request` as written (any header, any garbage) and reads the whole answer
/// (the server closes, or `Content-Length` says where it ends): the status and the
/// JSON body.
pub fn raw_request(api: &str, request: &[u8]) -> (u16, Value) {
    let addr = api.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    read_answer(&mut s)
}

pub fn read_answer(s: &mut TcpStream) -> (u16, Value) {
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("an answer");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let mut length = 0;
    let mut content_type = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap(),
            "content-type" => content_type = value.trim().to_owned(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{status}: content type {content_type:?}, body {:?}",
        String::from_utf8_lossy(&body)
    );
    (status, serde_json::from_slice(&body).unwrap())
}
