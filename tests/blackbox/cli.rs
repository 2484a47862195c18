//! The command line: configs from files, and errors that stop start-up.

use std::process::{Command, Stdio};

use crate::harness::*;

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("l7mp-{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs l7mp expecting it to exit by itself; returns (code, stderr).
/// Runs the proxy with `args` and expects it to exit by itself within 20 s: a config it
/// should refuse but accepts would otherwise leave the test waiting on a serving proxy.
fn run_to_exit(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_l7mp"))
        .args(["--admin", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("l7mp {args:?} kept running instead of exiting");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code().unwrap_or(-1), stderr)
}

#[test]
fn config_errors_exit_non_zero_naming_the_problem() {
    let cases = [
        ("bad-yaml.yaml", "listeners: [", "invalid YAML"),
        (
            "bad-field.yaml",
            "listeners:\n  - name: l\n    spec: {protocol: UDP, port: notaport}\n    rules: r\n",
            "listener 'l': spec: field 'port'",
        ),
        (
            "bad-proto.yaml",
            "clusters:\n  - name: sc\n    spec: {protocol: Wasm, plugin: p}\n",
            "cluster 'sc': spec: plugin 'p' is not loaded",
        ),
        (
            "bad-rule.yaml",
            "rules:\n  - name: r\n    match: {op: nope, path: /a}\n    action: {route: x}\n",
            "rule 'r': match: unknown JSONPredicate operation 'nope'",
        ),
    ];
    for (file, text, needle) in cases {
        let path = write_config(file, text);
        let (code, stderr) = run_to_exit(&["-c", path.to_str().unwrap()]);
        assert_ne!(code, 0, "{file} was accepted");
        assert!(stderr.contains(needle), "{file}: {stderr}");
        let _ = std::fs::remove_file(path);
    }
    let (code, stderr) = run_to_exit(&["-c", "/nonexistent/l7mp.yaml"]);
    assert!(
        code != 0 && stderr.contains("cannot read config"),
        "{stderr}"
    );
    let (code, stderr) = run_to_exit(&["-l", "loud"]);
    assert!(
        code != 0 && stderr.contains("unknown log level 'loud'"),
        "{stderr}"
    );
}

/// Strict mode is the original's: unknown fields (and sections) are accepted and
/// reported; only `--reject-unknown-fields` refuses them.
#[test]
fn unknown_fields_are_reported_in_strict_mode_and_refused_only_on_request() {
    let path = write_config(
        "strict.yaml",
        "admin: {log_level: warn}\nlistners: []\nclusters:\n  - name: e\n    spec: {protocol: Echo, colour: blue}\n",
    );
    let (code, stderr) = run_to_exit(&["--reject-unknown-fields", "-c", path.to_str().unwrap()]);
    assert!(
        code != 0 && stderr.contains("unknown field 'listners'"),
        "{stderr}"
    );
    let proxy = Proxy::start_with(&["-s", "-c", path.to_str().unwrap()]);
    assert_eq!(proxy.get("/api/v1/clusters/e").0, 200);
    let (code, answer) = proxy.post(
        "/api/v1/clusters",
        serde_json::json!({"cluster": {"name": "e2", "spec": {"protocol": "Echo", "colour": "blue"}}}),
    );
    assert_eq!(code, 200, "{answer}");
    assert!(
        answer["warnings"]
            .to_string()
            .contains("unknown field 'colour'"),
        "{answer}"
    );
    let _ = std::fs::remove_file(path);
}

/// A config written the way the original l7mp's examples are: the controller as an
/// HTTP listener routed to an L7mpController cluster, names bound late, inline objects.
#[test]
fn an_original_style_config_loads_and_serves() {
    let (api, udp) = (free_tcp_port(), free_udp_port());
    let config = format!(
        r#"# in the style of the original's examples
admin:
  log_level: info
  log_file: stderr
  access_log_path: /tmp/admin_access.log
listeners:
  - name: controller-listener
    spec: {{ protocol: HTTP, port: {api}, address: 127.0.0.1 }}
    rules:
      - action:
          route:
            destination:
              name: l7mp-controller
              spec: {{ protocol: L7MPController }}
  - name: udp-listener
    spec: {{ protocol: UDP, port: {udp} }}
    rules:
      - match: {{op: starts, path: '/IP/src_addr', value: '127.'}}
        action:
          rewrite:
            - path: "labels/session_id"
              value: 1
          route:
            cluster: echo
            ingress:
              - spec: {{ protocol: "Logger", log_prefix: "ingress" }}
            retry: {{retry_on: always, num_retries: 3, timeout: 2000}}
clusters:
  - name: echo
    spec: {{ protocol: "Echo" }}
  - name: stdio
    spec: {{ protocol: "Stdio" }}
"#
    );
    let path = write_config("original.yaml", &config);
    let child = Command::new(env!("CARGO_BIN_EXE_l7mp"))
        .args(["-c", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let agent = agent();
    let url = format!("http://127.0.0.1:{api}/api/v1/listeners/udp-listener");
    let mut resp = eventually("the controller listener", || agent.get(&url).call().ok());
    let listener: serde_json::Value =
        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(listener["rules"], "udp-listener-RuleList-0");
    let to = format!("127.0.0.1:{udp}").parse().unwrap();
    assert_eq!(
        udp_roundtrip(&udp_client("127.0.0.1"), to, b"compatible"),
        b"compatible"
    );
    let mut metrics = agent
        .get(format!("http://127.0.0.1:{api}/metrics"))
        .call()
        .unwrap();
    assert!(
        metrics
            .body_mut()
            .read_to_string()
            .unwrap()
            .contains("l7mp_listener_sessions_total{listener=\"udp-listener\"} 1")
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn every_example_config_is_valid_and_check_reports_errors() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    // Examples with Wasm plugins load them from plugins/target.
    plugin_wasm("mqtt-codec");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "json") {
            // Strict mode, as the original's -s: the examples are what users copy.
            let (code, stderr) = run_to_exit(&["-s", "--check", "-c", path.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {stderr}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} examples");
    let bad = write_config(
        "check-bad.yaml",
        "listeners:\n  - name: l\n    spec: {protocol: TCP}\n    rules: r\n",
    );
    let (code, stderr) = run_to_exit(&["--check", "-c", bad.to_str().unwrap()]);
    assert!(
        code == 2 && stderr.contains("missing field `port`"),
        "{code}: {stderr}"
    );
    let _ = std::fs::remove_file(bad);
}
