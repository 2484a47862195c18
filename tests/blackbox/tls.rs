//! TLS on the data plane, against real OpenSSL peers (`openssl s_client`, `openssl
//! s_server`) with certificates OpenSSL issues: termination, mutual TLS, origination,
//! routing on SNI, passthrough, and certificates rotating under a live session.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::*;

/// A scratch PKI: CAs and the certificates they issue, made by the `openssl` CLI.
pub struct Pki {
    dir: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("missing prerequisite: the openssl CLI (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("l7mp-pki-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// A CA named `ca` (its certificate is `ca.pem`).
    pub fn ca(&self, ca: &str) -> PathBuf {
        let cert = format!("{ca}.pem");
        if !self.path(&cert).exists() {
            openssl(
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &cert,
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=l7mp test {ca}"),
                ],
                &self.dir,
            );
        }
        self.path(&cert)
    }

    /// A certificate `name` for `subject` (`/CN=.../O=...`) with the DNS and IP names
    /// in `sans`, signed by `ca`: good for servers and clients alike.
    pub fn issue(&self, ca: &str, name: &str, subject: &str, sans: &str) -> Issued {
        self.ca(ca);
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            format!("subjectAltName={sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n"),
        )
        .unwrap();
        let (key, csr, cert) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subject,
            ],
            &self.dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
            &self.dir,
        );
        Issued {
            cert: self.path(&cert),
            key: self.path(&key),
        }
    }

    /// The usual server certificate: localhost, 127.0.0.1 and two virtual hosts.
    pub fn server(&self, ca: &str, name: &str) -> Issued {
        self.issue(
            ca,
            name,
            &format!("/CN={name}"),
            "DNS:localhost,IP:127.0.0.1,DNS:a.example,DNS:b.example",
        )
    }
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A line-oriented OpenSSL peer process: what it prints arrives line by line.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    fn spawn(args: &[String]) -> Peer {
        Peer::spawn_in(args, &std::env::temp_dir())
    }

    /// `openssl` with `args`, in `dir`.
    fn spawn_in(args: &[String], dir: &Path) -> Peer {
        let mut child = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("missing prerequisite: the openssl CLI (.ci/run installs it)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// `openssl s_client` to 127.0.0.1:`port`, verifying against `ca`, asking for
    /// `sni`, presenting `cert` if given.
    pub fn client(port: u16, ca: &Path, sni: Option<&str>, cert: Option<&Issued>) -> Peer {
        Peer::client_with(&[], port, ca, sni, cert)
    }

    /// `openssl s_client` with `extra` options first (`-dtls1_2`).
    pub fn client_with(
        extra: &[&str],
        port: u16,
        ca: &Path,
        sni: Option<&str>,
        cert: Option<&Issued>,
    ) -> Peer {
        let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        args.splice(0..0, ["s_client".to_owned()]);
        args.extend(["-quiet", "-verify_return_error", "-connect"].map(String::from));
        args.push(format!("127.0.0.1:{port}"));
        args.extend(["-CAfile".into(), s(ca)]);
        match sni {
            Some(name) => args.extend(["-servername".into(), name.into()]),
            None => args.push("-noservername".into()),
        }
        if let Some(c) = cert {
            args.extend(["-cert".into(), s(&c.cert), "-key".into(), s(&c.key)]);
        }
        Peer::spawn(&args)
    }

    /// Sends a line, answers the line that comes back (`None`: nothing within 5 s,
    /// or the peer gave up).
    pub fn line(&mut self, msg: &str) -> Option<String> {
        self.send(msg)?;
        self.next_line()
    }

    /// Writes a line to the peer's input (what it sends on).
    pub fn send(&mut self, msg: &str) -> Option<()> {
        let stdin = self.stdin.as_mut()?;
        stdin.write_all(format!("{msg}\n").as_bytes()).ok()?;
        stdin.flush().ok()
    }

    /// The next line the peer prints (what it received), within 5 s.
    pub fn next_line(&mut self) -> Option<String> {
        self.lines.recv_timeout(Duration::from_secs(5)).ok()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl s_server -quiet` on 127.0.0.1:`port` with `options` (`-rev`, `-WWW`,
/// `-dtls1_2`, ...), serving `id`, in `dir`.
pub fn openssl_server(port: u16, id: &Issued, options: &[&str], dir: &Path) -> Peer {
    let mut args: Vec<String> = ["s_server", "-quiet"].map(String::from).into();
    args.extend(options.iter().map(|a| a.to_string()));
    args.extend(["-accept".into(), format!("127.0.0.1:{port}")]);
    args.extend(["-cert".into(), s(&id.cert), "-key".into(), s(&id.key)]);
    Peer::spawn_in(&args, dir)
}

/// `openssl s_server -rev` on `port`: it answers every line reversed.
pub fn reversing_server(port: u16, id: &Issued, extra: &[&str]) -> Peer {
    let options = [&["-rev"], extra].concat();
    let server = openssl_server(port, id, &options, &std::env::temp_dir());
    eventually("openssl s_server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    server
}

pub fn tcp_cluster(name: &str, port: u16, tls: Option<Value>) -> Value {
    let mut spec = json!({"protocol": "TCP", "port": port});
    if let Some(tls) = tls {
        spec["tls"] = tls;
    }
    json!({"cluster": {"name": name, "spec": spec,
        "endpoints": [{"spec": {"address": "127.0.0.1"}}]}})
}

fn tls_listener(proxy: &Proxy, name: &str, tls: Value, rules: Value) -> u16 {
    let port = free_tcp_port();
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": name, "spec": {"protocol": "TCP", "port": port, "tls": tls},
            "rules": rules}}),
    );
    port
}

pub fn route_to(cluster: &str) -> Value {
    json!([{"action": {"route": {"destination": cluster}}}])
}

fn sni_rule(sni: &str, cluster: &str) -> Value {
    json!({"match": {"op": "test", "path": "/TLS/sni", "value": sni},
        "action": {"route": {"destination": cluster}}})
}

pub fn only_session(proxy: &Proxy) -> Value {
    eventually("one session", || {
        let sessions = proxy.sessions();
        (sessions.len() == 1).then(|| sessions[0].clone())
    })
}

#[test]
fn terminates_tls_for_openssl_clients_and_routes_on_sni() {
    let pki = Pki::new("sni");
    let ca = pki.ca("ca");
    let id = pki.server("ca", "server");
    let proxy = Proxy::start_trusted();
    let a = tcp_upstream(b"A:");
    let b = tcp_upstream(b"B:");
    proxy.create("/api/v1/clusters", tcp_cluster("a", a, None));
    proxy.create("/api/v1/clusters", tcp_cluster("b", b, None));
    let port = tls_listener(
        &proxy,
        "tls",
        json!({"cert": id.cert, "key": id.key}),
        json!([sni_rule("a.example", "a"), sni_rule("b.example", "b")]),
    );
    let mut to_a = Peer::client(port, &ca, Some("a.example"), None);
    assert_eq!(to_a.line("hello").as_deref(), Some("A:hello"));
    let tls = &only_session(&proxy)["metadata"]["TLS"];
    assert_eq!(tls["sni"], "a.example", "{tls}");
    assert_eq!(tls["version"], "TLSv1.3", "{tls}");
    assert!(
        tls["cipher"].as_str().unwrap().starts_with("TLS13_"),
        "{tls}"
    );
    assert_eq!(tls["peer"], Value::Null, "no client certificate: {tls}");
    drop(to_a);
    let mut to_b = Peer::client(port, &ca, Some("b.example"), None);
    assert_eq!(to_b.line("there").as_deref(), Some("B:there"));
    // No rule for a client that names no host: no session, and the proxy goes on.
    let mut nameless = Peer::client(port, &ca, None, None);
    assert_eq!(nameless.line("nobody"), None);
    assert_eq!(to_b.line("again").as_deref(), Some("B:again"));
}

#[test]
fn mutual_tls_takes_only_certificates_its_ca_signed() {
    let pki = Pki::new("mtls");
    let ca = pki.ca("ca");
    let id = pki.server("ca", "server");
    let client = pki.issue("ca", "client", "/CN=client/O=editors", "DNS:client.example");
    let stranger = pki.issue("other", "stranger", "/CN=stranger", "DNS:stranger.example");
    let proxy = Proxy::start_trusted();
    let up = tcp_upstream(b"up:");
    proxy.create("/api/v1/clusters", tcp_cluster("up", up, None));
    let port = tls_listener(
        &proxy,
        "mtls",
        json!({"cert": id.cert, "key": id.key, "client_ca": ca}),
        route_to("up"),
    );
    let mut ok = Peer::client(port, &ca, Some("localhost"), Some(&client));
    assert_eq!(ok.line("hi").as_deref(), Some("up:hi"));
    let peer = &only_session(&proxy)["metadata"]["TLS"]["peer"];
    assert_eq!(peer["subject"], "CN=client, O=editors", "{peer}");
    assert_eq!(peer["sans"], json!(["client.example"]), "{peer}");
    let mut anonymous = Peer::client(port, &ca, Some("localhost"), None);
    assert_eq!(anonymous.line("hi"), None, "no certificate, no session");
    let mut foreign = Peer::client(port, &ca, Some("localhost"), Some(&stranger));
    assert_eq!(foreign.line("hi"), None, "a certificate of another CA");
    assert_eq!(proxy.sessions().len(), 1);
    assert_eq!(ok.line("still").as_deref(), Some("up:still"));
}

#[test]
fn originates_tls_to_openssl_servers_and_verifies_them() {
    let pki = Pki::new("origin");
    let ca = pki.ca("ca");
    pki.ca("other");
    let id = pki.server("ca", "server");
    let client = pki.issue("ca", "client", "/CN=l7mp/O=mesh", "DNS:l7mp.example");
    let open_port = free_tcp_port();
    let _open = reversing_server(open_port, &id, &[]);
    let mutual_port = free_tcp_port();
    let ca_arg = s(&ca);
    let _mutual = reversing_server(mutual_port, &id, &["-Verify", "1", "-CAfile", &ca_arg]);
    let proxy = Proxy::start_trusted();
    let clusters = [
        (
            "verified",
            open_port,
            json!({"ca": ca, "server_name": "localhost"}),
        ),
        ("by-ip", open_port, json!({"ca": ca})),
        ("wrong-ca", open_port, json!({"ca": pki.path("other.pem")})),
        (
            "wrong-name",
            open_port,
            json!({"ca": ca, "server_name": "c.example"}),
        ),
        (
            "client-cert",
            mutual_port,
            json!({"ca": ca, "cert": client.cert, "key": client.key}),
        ),
        ("no-client-cert", mutual_port, json!({"ca": ca})),
    ];
    for (name, port, tls) in clusters {
        proxy.create("/api/v1/clusters", tcp_cluster(name, port, Some(tls)));
    }
    let through = |cluster: &str| {
        let port = free_tcp_port();
        proxy.create(
            "/api/v1/listeners",
            json!({"listener": {"name": format!("to-{cluster}"),
                "spec": {"protocol": "TCP", "port": port}, "rules": route_to(cluster)}}),
        );
        let mut s = tcp_connect(port);
        s.write_all(b"hello\n").unwrap();
        let mut answer = String::new();
        let _ = BufReader::new(s).read_line(&mut answer);
        answer
    };
    assert_eq!(through("verified"), "olleh\n");
    assert_eq!(
        through("by-ip"),
        "olleh\n",
        "the endpoint's address is verified"
    );
    assert_eq!(through("client-cert"), "olleh\n");
    for refused in ["wrong-ca", "wrong-name", "no-client-cert"] {
        assert_eq!(through(refused), "", "{refused}: nothing gets through");
    }
}

#[test]
fn passes_tls_through_routing_on_the_client_hello() {
    let pki = Pki::new("pass");
    let ca = pki.ca("ca");
    let id_a = pki.issue("ca", "a", "/CN=a", "DNS:a.example");
    let id_b = pki.issue("ca", "b", "/CN=b", "DNS:b.example");
    let (port_a, port_b) = (free_tcp_port(), free_tcp_port());
    let _a = reversing_server(port_a, &id_a, &[]);
    let _b = reversing_server(port_b, &id_b, &[]);
    // No files: passing through needs no host access.
    let proxy = Proxy::start();
    proxy.create("/api/v1/clusters", tcp_cluster("a", port_a, None));
    proxy.create("/api/v1/clusters", tcp_cluster("b", port_b, None));
    let port = tls_listener(
        &proxy,
        "pass",
        json!({"mode": "passthrough"}),
        json!([sni_rule("a.example", "a"), sni_rule("b.example", "b")]),
    );
    // The clients verify the servers' own certificates: the proxy never decrypted.
    let mut to_a = Peer::client(port, &ca, Some("a.example"), None);
    assert_eq!(to_a.line("abc").as_deref(), Some("cba"));
    let tls = &only_session(&proxy)["metadata"]["TLS"];
    assert_eq!(tls["mode"], "passthrough", "{tls}");
    assert_eq!(tls["sni"], "a.example", "{tls}");
    let mut to_b = Peer::client(port, &ca, Some("b.example"), None);
    assert_eq!(to_b.line("xyz").as_deref(), Some("zyx"));
    // Plain text is not a ClientHello: dropped, and nobody else notices.
    let mut plain = tcp_connect(port);
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    assert!(tcp_closed(&mut plain));
    assert_eq!(to_a.line("def").as_deref(), Some("fed"));
}

#[test]
fn rotates_certificates_under_a_live_session() {
    let pki = Pki::new("rotate");
    let (old_ca, new_ca) = (pki.ca("old"), pki.ca("new"));
    let old = pki.server("old", "old-server");
    let new = pki.server("new", "new-server");
    let live = Issued {
        cert: pki.path("live.pem"),
        key: pki.path("live.key"),
    };
    std::fs::copy(&old.cert, &live.cert).unwrap();
    std::fs::copy(&old.key, &live.key).unwrap();
    let proxy = Proxy::start_trusted();
    let up = tcp_upstream(b"up:");
    proxy.create("/api/v1/clusters", tcp_cluster("up", up, None));
    let port = tls_listener(
        &proxy,
        "rotating",
        json!({"cert": live.cert, "key": live.key}),
        route_to("up"),
    );
    let mut session = Peer::client(port, &old_ca, Some("localhost"), None);
    assert_eq!(session.line("one").as_deref(), Some("up:one"));
    // As a secret volume updates: each file replaced whole.
    for (from, to) in [(&new.key, &live.key), (&new.cert, &live.cert)] {
        let partial = to.with_extension("partial");
        std::fs::copy(from, &partial).unwrap();
        std::fs::rename(&partial, to).unwrap();
    }
    eventually("the new certificate to be served", || {
        Peer::client(port, &new_ca, Some("localhost"), None)
            .line("two")
            .filter(|l| l == "up:two")
    });
    assert_eq!(
        session.line("three").as_deref(),
        Some("up:three"),
        "the old session lives on"
    );
}

#[test]
fn tunnels_between_two_proxies_over_mutual_tls() {
    let pki = Pki::new("tunnel");
    let ca = pki.ca("ca");
    let edge = pki.issue("ca", "edge", "/CN=edge/O=mesh", "DNS:edge.example");
    let core = pki.server("ca", "core");
    let (entry, exit) = (Proxy::start_trusted(), Proxy::start_trusted());
    let up = tcp_upstream(b"up:");
    exit.create("/api/v1/clusters", tcp_cluster("up", up, None));
    let tunnel = tls_listener(
        &exit,
        "from-edge",
        json!({"cert": core.cert, "key": core.key, "client_ca": ca}),
        json!([{"match": {"op": "test", "path": "/TLS/peer/subject", "value": "CN=edge, O=mesh"},
            "action": {"route": {"destination": "up"}}}]),
    );
    entry.create(
        "/api/v1/clusters",
        tcp_cluster(
            "core",
            tunnel,
            Some(json!({"ca": ca, "server_name": "localhost",
            "cert": edge.cert, "key": edge.key})),
        ),
    );
    let port = free_tcp_port();
    entry.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "in", "spec": {"protocol": "TCP", "port": port},
            "rules": route_to("core")}}),
    );
    let mut s = tcp_connect(port);
    let big = vec![b'x'; 256 << 10];
    let mut expect = b"up:".to_vec();
    expect.extend_from_slice(b"ping");
    assert_eq!(tcp_exchange(&mut s, b"ping", expect.len()), expect);
    // A quarter MiB both ways, in order, over the encrypted hop.
    s.write_all(&big).unwrap();
    let mut got = Vec::new();
    while got.iter().filter(|&&c| c == b'x').count() < big.len() {
        let mut buf = [0u8; 65536];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        only_session(&exit)["metadata"]["TLS"]["peer"]["subject"],
        "CN=edge, O=mesh"
    );
}

#[test]
fn certificate_files_are_host_access() {
    let pki = Pki::new("files");
    let id = pki.server("ca", "server");
    let proxy = Proxy::start();
    proxy.create("/api/v1/clusters", tcp_cluster("x", 1, None));
    let port = free_tcp_port();
    let (status, body) = proxy.post(
        "/api/v1/listeners",
        json!({"listener": {"name": "l", "spec": {"protocol": "TCP", "port": port,
            "tls": {"cert": id.cert, "key": id.key}}, "rules": route_to("x")}}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("spec.tls"),
        "{body}"
    );
    let trusted = Proxy::start_trusted();
    trusted.create("/api/v1/clusters", tcp_cluster("x", 1, None));
    for (tls, says) in [
        (
            json!({"cert": pki.path("missing.pem"), "key": id.key}),
            "missing.pem",
        ),
        (json!({"cert": id.key, "key": id.key}), "no PEM certificate"),
        (json!({"cert": id.cert}), "needs cert and key"),
        (
            json!({"cert": id.cert, "key": id.key, "alpn": [""]}),
            "alpn",
        ),
    ] {
        let (status, body) = trusted.post(
            "/api/v1/listeners",
            json!({"listener": {"name": "l", "spec": {"protocol": "TCP", "port": port, "tls": tls},
                "rules": route_to("x")}}),
        );
        assert_eq!(status, 422, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{says}: {body}"
        );
    }
}
