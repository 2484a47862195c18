//! Who may use the API: bearer tokens and their roles, what an unauthenticated API
//! may be exposed on, and the Host and Origin checks that keep web pages out.

use std::net::TcpStream;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sha2::Digest;

use crate::harness::*;

const READER: &str = "reader-0123456789abcdef";
const EDITOR: &str = "editor-0123456789abcdef";
const ADMIN: &str = "admin-0123456789abcdef";

fn sha256_hex(secret: &str) -> String {
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// A proxy whose API takes three tokens: the reader's and the admin's as digests, the
/// editor's from a file.
fn secured(dir: &std::path::Path, admin_address: &str) -> (std::path::PathBuf, Vec<String>) {
    std::fs::create_dir_all(dir).unwrap();
    let editor_file = dir.join("editor.token");
    std::fs::write(&editor_file, format!("{EDITOR}\n")).unwrap();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({
            "admin": {"auth": {"tokens": [
                {"name": "ro", "role": "reader", "token_sha256": sha256_hex(READER)},
                {"name": "ops", "role": "editor", "token_file": editor_file},
                {"name": "root", "role": "admin", "token_sha256": sha256_hex(ADMIN)}
            ]}}
        })
        .to_string(),
    )
    .unwrap();
    let args = vec![
        "-c".to_owned(),
        config.display().to_string(),
        "--admin".to_owned(),
        admin_address.to_owned(),
    ];
    (config, args)
}

fn call(
    proxy: &Proxy,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let agent = agent();
    let url = format!("{}{path}", proxy.api);
    let auth = token.map(|t| format!("Bearer {t}"));
    let resp = match (method, body) {
        ("GET", None) => {
            let mut r = agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.call()
        }
        (_, body) => {
            let mut r = agent.post(&url).header("content-type", "application/json");
            if let Some(a) = &auth {
                r = r.header("authorization", a);
            }
            r.send(body.unwrap_or(Value::Null).to_string())
        }
    };
    let mut resp = resp.expect("the API answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn tokens_and_roles_decide_what_a_caller_may_do() {
    let dir = std::env::temp_dir().join(format!("l7mp-auth-{}", std::process::id()));
    let (_config, args) = secured(&dir, "127.0.0.1:0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::start_with(&args);
    let tokens: [(&str, Option<&str>); 5] = [
        ("none", None),
        ("bad", Some("not-a-token-0123456789")),
        ("reader", Some(READER)),
        ("editor", Some(EDITOR)),
        ("admin", Some(ADMIN)),
    ];
    // Expected statuses for: none, bad, reader, editor, admin.
    let mut n = 0;
    let mut next_name = || {
        n += 1;
        format!("obj{n}")
    };
    for (who, token) in tokens {
        let expect = |none: u16, reader: u16, editor: u16, admin: u16| match who {
            "none" | "bad" => none,
            "reader" => reader,
            "editor" => editor,
            _ => admin,
        };
        let read = call(&proxy, "GET", "/api/v1/listeners", token, None);
        assert_eq!(read.0, expect(401, 200, 200, 200), "{who} GET: {}", read.1);
        let metrics = call(&proxy, "GET", "/metrics", token, None);
        assert_eq!(metrics.0, expect(401, 200, 200, 200), "{who} /metrics");
        let listener = json!({"listener": {"name": next_name(), "spec": {"protocol": "TCP", "port": free_tcp_port(), "address": "127.0.0.1"},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}});
        let mutate = call(&proxy, "POST", "/api/v1/listeners", token, Some(listener));
        assert_eq!(
            mutate.0,
            expect(401, 403, 200, 200),
            "{who} POST listener: {}",
            mutate.1
        );
        // A command on the host: the admin role only.
        let fork = json!({"cluster": {"name": next_name(), "spec": {"protocol": "STDIO-fork", "command": ["/bin/true"]}}});
        let host = call(&proxy, "POST", "/api/v1/clusters", token, Some(fork));
        assert_eq!(
            host.0,
            expect(401, 403, 403, 200),
            "{who} STDIO-fork: {}",
            host.1
        );
        let settings = call(
            &proxy,
            "POST",
            "/api/v1/admin",
            token,
            Some(json!({"admin": {"log_level": "warn"}})),
        );
        assert_eq!(
            settings.0,
            expect(401, 403, 403, 200),
            "{who} POST admin: {}",
            settings.1
        );
        // Every refusal says what is missing.
        for (status, body) in [read, mutate, host, settings] {
            if status >= 400 {
                assert_eq!(body["status"], status, "{body}");
                assert!(
                    !body["message"].as_str().unwrap_or_default().is_empty(),
                    "{body}"
                );
            }
        }
    }
    let (_, refused) = call(&proxy, "GET", "/api/v1/listeners", None, None);
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{refused}"
    );
    let (_, editor_refused) = call(
        &proxy,
        "POST",
        "/api/v1/clusters",
        Some(EDITOR),
        Some(
            json!({"cluster": {"name": "nope", "spec": {"protocol": "STDIO-fork", "command": ["id"]}}}),
        ),
    );
    assert!(
        editor_refused["message"]
            .as_str()
            .unwrap()
            .contains("only the admin role"),
        "{editor_refused}"
    );
    let (_, reader_refused) = call(
        &proxy,
        "POST",
        "/api/v1/admin",
        Some(READER),
        Some(json!({})),
    );
    assert!(
        reader_refused["message"]
            .as_str()
            .unwrap()
            .contains("token 'ro' has the reader role"),
        "{reader_refused}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_api_beyond_loopback_needs_authentication() {
    let exit = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_l7mp"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let out = exit(&["--admin", "0.0.0.0:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.auth.tokens"), "{stderr}");
    // With tokens it serves, and answers nothing without one.
    let dir = std::env::temp_dir().join(format!("l7mp-auth-net-{}", std::process::id()));
    let (_config, args) = secured(&dir, "0.0.0.0:0");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::start_with(&args);
    let port = proxy.api.rsplit(':').next().unwrap().to_owned();
    let (status, _) = raw_request(
        &format!("127.0.0.1:{port}"),
        format!(
            "GET /api/v1/admin HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(status, 401);
    drop(proxy);
    // --admin-insecure serves it anyway (and says so loudly).
    let insecure = Proxy::start_with(&["--admin", "0.0.0.0:0", "--admin-insecure"]);
    assert_eq!(insecure.get("/api/v1/admin").0, 200);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn web_pages_cannot_reach_the_api() {
    let proxy = Proxy::start();
    let addr = proxy.api.trim_start_matches("http://").to_owned();
    let request = |headers: &str| {
        raw_request(
            &addr,
            format!("GET /api/v1/listeners HTTP/1.1\r\n{headers}connection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    // DNS rebinding: the page's own name in Host.
    let (status, body) = request("host: rebind.evil.example\r\n");
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("admin.allowed_hosts"),
        "{body}"
    );
    assert_eq!(request(&format!("host: {addr}\r\n")).0, 200);
    assert_eq!(request("host: localhost\r\n").0, 200);
    // A cross-origin request from a browser.
    let (status, body) = request(&format!("host: {addr}\r\norigin: http://evil.example\r\n"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        request(&format!("host: {addr}\r\norigin: http://{addr}\r\n")).0,
        200
    );
    // A form post with no JSON or YAML type is refused before anything happens.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    std::io::Write::write_all(
        &mut s,
        format!("POST /api/v1/listeners HTTP/1.1\r\nhost: {addr}\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}").as_bytes(),
    )
    .unwrap();
    assert_eq!(read_answer(&mut s).0, 415);
}

/// Without tokens the API is on loopback, and its callers may do everything except
/// reach the host: a web page or another local user's script cannot run commands,
/// read descriptors, write files or grant plugins the host's directories.
#[test]
fn without_tokens_nothing_reaches_the_host_unless_the_static_config_allows_it() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    let fork =
        json!({"cluster": {"name": "cmd", "spec": {"protocol": "STDIO-fork", "command": ["id"]}}});
    let (status, body) = proxy.post("/api/v1/clusters", fork.clone());
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("api_host_access"),
        "{body}"
    );
    let logger = json!({"cluster": {"name": "log", "spec": {"protocol": "Logger", "log_file": "/tmp/l7mp-evil.log"}}});
    assert_eq!(proxy.post("/api/v1/clusters", logger).0, 403);
    let pipe = json!({"listener": {"name": "p", "spec": {"protocol": "PIPE", "read": "/etc/passwd"}, "rules": []}});
    assert_eq!(proxy.post("/api/v1/listeners", pipe).0, 403);
    // Nor may it grant itself the right, or point the logs at a file.
    let (status, body) = proxy.post("/api/v1/admin", json!({"admin": {"api_host_access": true}}));
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        proxy
            .post(
                "/api/v1/admin",
                json!({"admin": {"log_file": "/tmp/l7mp-evil.log"}})
            )
            .0,
        403
    );
    let (status, body) = proxy.post(
        "/api/v1/config",
        json!({"admin": {"api_host_access": true}}),
    );
    assert_eq!(status, 403, "{body}");
    // What does not reach the host works as before.
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "echo", "spec": {"protocol": "TCP", "port": port, "address": "127.0.0.1"},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "Echo"}}}}}]}}),
    );
    assert_eq!(
        proxy
            .post("/api/v1/admin", json!({"admin": {"log_level": "warn"}}))
            .0,
        200
    );
    // The operator's own switch.
    let trusted = Proxy::start_trusted();
    assert_eq!(trusted.post("/api/v1/clusters", fork).0, 200);
}

/// An HTTP listener whose rules route to the controller serves the API: beyond
/// loopback it needs tokens too.
#[test]
fn a_listener_serving_the_api_beyond_loopback_needs_authentication() {
    let proxy = Proxy::start();
    let controller = |name: &str, address: &str| {
        json!({"listener": {"name": name, "spec": {"protocol": "HTTP", "port": free_tcp_port(), "address": address},
            "rules": [{"action": {"route": {"destination": {"spec": {"protocol": "L7mpController"}}}}}]}})
    };
    let (status, body) = proxy.post("/api/v1/listeners", controller("open", "0.0.0.0"));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("without authentication"),
        "{body}"
    );
    assert_eq!(
        proxy.get("/api/v1/listeners/open").0,
        404,
        "nothing of it stays"
    );
    proxy.create("/api/v1/listeners", controller("local", "127.0.0.1"));
    let insecure = Proxy::start_with(&["--admin-insecure"]);
    assert_eq!(
        insecure
            .post("/api/v1/listeners", controller("open", "0.0.0.0"))
            .0,
        200
    );
}

/// `curl` over TLS to the API at `api` (`host:port`), verifying it against `ca` and
/// presenting `cert`: the status (0: no TLS connection) and the body.
fn curl_tls(
    api: &str,
    ca: &std::path::Path,
    cert: Option<&crate::tls::Issued>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-m",
        "5",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(ca)
    .args(["-X", method]);
    if let Some(id) = cert {
        c.arg("--cert").arg(&id.cert).arg("--key").arg(&id.key);
    }
    if let Some(body) = body {
        c.args([
            "-H",
            "content-type: application/json",
            "-d",
            &body.to_string(),
        ]);
    }
    let out = c
        .arg(format!("https://{api}{path}"))
        .stderr(Stdio::null())
        .output()
        .expect("missing prerequisite: curl (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    )
}

#[test]
fn the_api_over_mutual_tls_gives_client_certificates_their_roles() {
    let pki = crate::tls::Pki::new("api-mtls");
    let ca = pki.ca("ca");
    let server = pki.server("ca", "api");
    let ops = pki.issue("ca", "ops", "/CN=ops/O=admin", "DNS:ops.example");
    let viewer = pki.issue("ca", "viewer", "/CN=viewer/O=reader", "DNS:viewer.example");
    let named = pki.issue("ca", "named", "/CN=named/O=example", "DNS:named.example");
    let nobody = pki.issue("ca", "nobody", "/CN=nobody/O=guests", "DNS:nobody.example");
    let stranger = pki.issue("other", "stranger", "/CN=ops/O=admin", "DNS:ops.example");
    let config = pki.path("config.json");
    std::fs::write(
        &config,
        json!({"admin": {
            "tls": {"cert": server.cert, "key": server.key, "client_ca": ca},
            "auth": {"mtls": {"role_from": "subject-O",
                "subjects": {"CN=named, O=example": "editor"}}}
        }})
        .to_string(),
    )
    .unwrap();
    // Client certificates with roles are authentication: the API may face the network.
    let proxy = Proxy::start_tls(&["-c", &config.display().to_string(), "--admin", "0.0.0.0:0"]);
    let port = proxy.api.rsplit(':').next().unwrap();
    let api = format!("127.0.0.1:{port}");
    let cluster =
        |name: &str| json!({"cluster": {"name": name, "spec": {"protocol": "TCP", "port": 1}}});
    let get = |id| curl_tls(&api, &ca, id, "GET", "/api/v1/clusters", None);
    eventually("the API to answer over TLS", || {
        (get(Some(&viewer)).0 == 200).then_some(())
    });
    let (status, body) = curl_tls(
        &api,
        &ca,
        Some(&viewer),
        "POST",
        "/api/v1/clusters",
        Some(cluster("v")),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("certificate 'CN=viewer, O=reader' has the reader role"),
        "{body}"
    );
    let (status, body) = curl_tls(
        &api,
        &ca,
        Some(&named),
        "POST",
        "/api/v1/clusters",
        Some(cluster("n")),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = curl_tls(
        &api,
        &ca,
        Some(&named),
        "POST",
        "/api/v1/admin",
        Some(json!({"log_level": "info"})),
    );
    assert_eq!(
        status, 403,
        "an editor may not change admin settings: {body}"
    );
    let (status, body) = curl_tls(
        &api,
        &ca,
        Some(&ops),
        "POST",
        "/api/v1/admin",
        Some(json!({"log_level": "warn"})),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(Some(&nobody));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("has no role"),
        "{body}"
    );
    assert_eq!(get(None).0, 0, "no certificate, no TLS connection");
    assert_eq!(get(Some(&stranger)).0, 0, "a certificate of another CA");
    // Plain HTTP to the TLS port gets no answer.
    let mut plain = TcpStream::connect(&api).unwrap();
    plain
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    std::io::Write::write_all(&mut plain, b"GET /api/v1/admin HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut plain, &mut answer);
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1 200"));
    // Who did what is logged with the certificate's subject; the settings cannot be
    // changed by a reader, nor TLS turned off by an editor.
    let (status, _) = curl_tls(
        &api,
        &ca,
        Some(&named),
        "POST",
        "/api/v1/admin",
        Some(json!({"tls": null})),
    );
    assert_eq!(status, 403);
    assert_eq!(get(Some(&viewer)).0, 200);
}

#[test]
fn certificates_without_tls_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("l7mp-mtls-notls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        json!({"admin": {"auth": {"mtls": {"role_from": "subject-O"}}}}).to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_l7mp"))
        .args(["--admin", "127.0.0.1:0", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.tls.client_ca"), "{err}");
}
