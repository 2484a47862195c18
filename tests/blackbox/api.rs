//! The REST API: every verb's success and error answers.

use std::io::Write;

use serde_json::{Value, json};

use crate::harness::*;

fn listener(name: &str, port: u16) -> Value {
    json!({"listener": {"name": name, "spec": {"protocol": "TCP", "port": port}, "rules": "rl"}})
}

#[test]
fn error_codes_name_the_problem() {
    let proxy = Proxy::start();
    let port = free_tcp_port();
    let check = |(status, body): (u16, Value), want: u16, needle: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["status"], want, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{body} lacks {needle:?}"
        );
    };
    check(
        proxy.get("/api/v1/listeners/nope"),
        404,
        "listener 'nope' not found",
    );
    check(proxy.get("/api/v1/gizmos"), 404, "no such collection");
    check(
        proxy.delete("/api/v1/clusters/nope"),
        404,
        "cluster 'nope' not found",
    );
    check(
        proxy.get("/api/v1/nothing/here/at/all"),
        404,
        "no such path",
    );
    proxy.create("/api/v1/listeners", listener("l1", port));
    check(
        proxy.post("/api/v1/listeners", listener("l1", free_tcp_port())),
        409,
        "already exists",
    );
    check(
        proxy.send_raw(
            "POST",
            "/api/v1/listeners",
            "application/json",
            "{\"listener\": ",
        ),
        400,
        "invalid JSON",
    );
    check(
        proxy.send_raw("POST", "/api/v1/listeners", "application/json", ""),
        400,
        "empty",
    );
    check(
        proxy.send_raw("POST", "/api/v1/listeners", "text/plain", "name: x"),
        415,
        "unsupported content type 'text/plain'",
    );
    check(
        proxy.post("/api/v1/listeners", json!({"listener": {"name": "l2"}})),
        422,
        "missing field `spec`",
    );
    check(
        proxy.post("/api/v1/listeners", json!({"listener": {"name": "l2", "spec": {"protocol": "TCP", "port": "x"}, "rules": "rl"}})),
        422,
        "field 'port'",
    );
    check(
        proxy.post(
            "/api/v1/clusters",
            json!({"cluster": {"name": "c", "spec": {"protocol": "Wasm", "plugin": "p"}}}),
        ),
        422,
        "plugin 'p' is not loaded",
    );
    check(
        proxy.post("/api/v1/rules", json!({"rule": {"name": "bad", "match": {"op": "matches", "path": "/a", "value": "("}, "action": {"route": "r"}}})),
        422,
        "bad regex",
    );
    check(
        proxy.post("/api/v1/clusters", json!({"cluster": {"name": "c", "spec": {"protocol": "TCP"}, "loadbalancer": {"policy": "Random"}}})),
        422,
        "unknown load-balancer policy",
    );
    // A port in use: an error, and no object is created.
    check(
        proxy.post("/api/v1/listeners", listener("l3", port)),
        409,
        "cannot start",
    );
    assert_eq!(proxy.get("/api/v1/listeners/l3").0, 404);
    // The same for UDP, where SO_REUSEADDR/SO_REUSEPORT must not make a second bind
    // succeed silently.
    let udp_port = free_udp_port();
    let udp = |name: &str| json!({"listener": {"name": name, "spec": {"protocol": "UDP", "port": udp_port}, "rules": "rl"}});
    proxy.create("/api/v1/listeners", udp("u1"));
    check(
        proxy.post("/api/v1/listeners", udp("u2")),
        409,
        "Address already in use",
    );
    assert_eq!(proxy.get("/api/v1/listeners/u2").0, 404);
    // A failed request leaves nothing half-made: the inline cluster is not there either.
    let (status, _) = proxy.post(
        "/api/v1/listeners",
        json!({"listener": {"name": "l4", "spec": {"protocol": "TCP", "port": port},
            "rules": [{"action": {"route": {"destination": {"name": "orphan", "spec": {"protocol": "Echo"}}}}}]}}),
    );
    assert_eq!(status, 409);
    assert_eq!(proxy.get("/api/v1/clusters/orphan").0, 404);
    let (status, body) = proxy.post("/api/v1/admin", json!({"admin": {"log_level": "chatty"}}));
    assert_eq!(
        (
            status,
            body["message"]
                .as_str()
                .unwrap()
                .contains("unknown log level")
        ),
        (422, true),
        "{body}"
    );
}

#[test]
fn yaml_bodies_recursive_gets_and_yaml_listings() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    let yaml = format!(
        "listener:\n  name: y\n  spec: {{protocol: UDP, port: {port}}}\n  rules:\n    - match: {{op: starts, path: /IP/src_addr, value: '127.'}}\n      action:\n        route:\n          destination: {{spec: {{protocol: Echo}}}}\n"
    );
    let (status, body) = proxy.send_raw("POST", "/api/v1/listeners", "application/yaml", &yaml);
    assert_eq!(status, 200, "{body}");
    let (_, flat) = proxy.get("/api/v1/listeners/y");
    assert_eq!(flat["rules"], "y-RuleList-0");
    let (_, deep) = proxy.get("/api/v1/listeners/y?recursive=true");
    assert_eq!(
        deep["rules"][0]["action"]["route"]["destination"]["spec"]["protocol"],
        "Echo"
    );
    assert_eq!(deep["rules"][0]["match"]["op"], "starts");
    assert_eq!(deep["rules"][0]["autogenerated"], true);
    let (status, text) = proxy.get("/api/v1/listeners/y?format=yaml");
    assert_eq!(status, 200);
    assert!(text.as_str().unwrap().contains("name: y"), "{text}");
}

#[test]
fn config_round_trips_through_get_and_post() {
    let proxy = Proxy::start();
    let port = free_udp_port();
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "echo", "spec": {"protocol": "Echo"}}}),
    );
    proxy.create(
        "/api/v1/listeners",
        json!({"listener": {"name": "u", "spec": {"protocol": "UDP", "port": port}, "rules": [{"action": {"route": {"destination": "echo"}}}]}}),
    );
    let (_, config) = proxy.get("/api/v1/config");
    let to = format!("127.0.0.1:{port}").parse().unwrap();
    let client = udp_client("127.0.0.1");
    assert_eq!(udp_roundtrip(&client, to, b"before"), b"before");
    // Loading the same config again keeps the listener's socket and its session.
    let (status, body) = proxy.post("/api/v1/config", config.clone());
    assert_eq!(status, 200, "{body}");
    let without_sessions = |mut c: Value| {
        c.as_object_mut().unwrap().remove("sessions");
        c
    };
    let reloaded = proxy.get("/api/v1/config").1;
    assert_eq!(
        reloaded["sessions"].as_array().map(Vec::len),
        Some(1),
        "{reloaded}"
    );
    assert_eq!(without_sessions(reloaded), without_sessions(config));
    assert_eq!(udp_roundtrip(&client, to, b"after"), b"after");
    // An empty config removes everything.
    assert_eq!(
        proxy
            .post("/api/v1/config", json!({"listeners": [], "clusters": []}))
            .0,
        200
    );
    assert_eq!(proxy.get("/api/v1/listeners").1, json!([]));
    // A broken config changes nothing.
    let (status, _) = proxy.post(
        "/api/v1/config",
        json!({"listeners": [{"name": "x", "spec": {"protocol": "Nope"}, "rules": "r"}]}),
    );
    assert_eq!(status, 422);
}

#[test]
fn endpoints_and_rule_positions() {
    let proxy = Proxy::start();
    proxy.create(
        "/api/v1/clusters",
        json!({"cluster": {"name": "c", "spec": {"protocol": "TCP", "port": 80}}}),
    );
    proxy.create(
        "/api/v1/clusters/c/endpoints",
        json!({"endpoint": {"name": "e1", "spec": {"address": "127.0.0.1"}, "weight": 2}}),
    );
    proxy.create(
        "/api/v1/clusters/c/endpoints",
        json!({"endpoint": {"spec": {"address": "127.0.0.2"}}}),
    );
    let (_, eps) = proxy.get("/api/v1/clusters/c/endpoints");
    assert_eq!(eps.as_array().unwrap().len(), 2);
    let (status, e1) = proxy.get("/api/v1/endpoints/e1");
    assert_eq!((status, e1["weight"].as_f64()), (200, Some(2.0)));
    assert_eq!(
        proxy.get("/api/v1/endpoints/c-EndPoint-1").1["spec"]["address"],
        "127.0.0.2"
    );
    assert_eq!(proxy.delete("/api/v1/endpoints/e1").0, 200);
    assert_eq!(
        proxy.get("/api/v1/clusters/c").1["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    proxy.create(
        "/api/v1/rulelists",
        json!({"rulelist": {"name": "rl", "rules": []}}),
    );
    proxy.create(
        "/api/v1/rulelists/rl/rules/0",
        json!({"rule": {"name": "second", "action": {"route": "r2"}}}),
    );
    proxy.create(
        "/api/v1/rulelists/rl/rules/0",
        json!({"rule": {"name": "first", "action": {"route": "r1"}}}),
    );
    assert_eq!(
        proxy.get("/api/v1/rulelists/rl").1["rules"],
        json!(["first", "second"])
    );
    assert_eq!(
        proxy.get("/api/v1/rulelists/rl/rules/1").1["name"],
        "second"
    );
    assert_eq!(
        proxy.get("/api/v1/rulelists/rl/rules/first").1["action"]["route"],
        "r1"
    );
    assert_eq!(proxy.get("/api/v1/rulelists/rl/rules/5").0, 404);
    assert_eq!(proxy.delete("/api/v1/rulelists/rl/rules/first").0, 200);
    assert_eq!(
        proxy.get("/api/v1/rulelists/rl").1["rules"],
        json!(["second"])
    );
}

#[test]
fn admin_changes_the_log_level_at_run_time() {
    let proxy = Proxy::start();
    assert_eq!(proxy.get("/api/v1/admin").1["log_level"], "warn");
    assert_eq!(
        proxy
            .post("/api/v1/admin", json!({"admin": {"log_level": "silly"}}))
            .0,
        200
    );
    let (_, admin) = proxy.get("/api/v1/admin");
    assert_eq!(admin["log_level"], "silly");
    assert_eq!(admin["version"], env!("CARGO_PKG_VERSION"));
}

/// Hostile bodies at every path: always a 4xx JSON answer naming the problem, and the
/// proxy keeps serving.
#[test]
fn hostile_requests_get_4xx_and_never_take_the_proxy_down() {
    let proxy = Proxy::start_trusted();
    let port = free_tcp_port();
    proxy.create("/api/v1/listeners", listener("keep", port));
    let bodies = [
        "null",
        "[]",
        "42",
        "\"text\"",
        "{}",
        "{\"listener\": null}",
        "{\"listener\": []}",
        "{\"listener\": {\"name\": 7, \"spec\": {}}}",
        "{\"listener\": {\"name\": \"x\", \"spec\": {\"protocol\": \"TCP\", \"port\": 70000}, \"rules\": \"r\"}}",
        "{\"listener\": {\"name\": \"x\", \"spec\": {\"protocol\": \"UDP\", \"port\": 1, \"connect\": \"nope\"}, \"rules\": []}}",
        "{\"listener\": {\"name\": \"has space\", \"spec\": {\"protocol\": \"TCP\", \"port\": 1}, \"rules\": \"r\"}}",
        "{\"cluster\": {\"name\": \"c\", \"spec\": {\"protocol\": \"TCP\"}, \"endpoints\": [{\"spec\": {}}]}}",
        "{\"cluster\": {\"name\": \"c\", \"spec\": {\"protocol\": \"TCP\"}, \"endpoints\": [{\"spec\": {\"address\": \"a\"}, \"weight\": -1}]}}",
        "{\"cluster\": {\"name\": \"c\", \"spec\": {\"protocol\": \"STDIO-fork\", \"command\": \"sh\"}}}",
        "{\"cluster\": {\"name\": \"c\", \"spec\": {\"protocol\": \"JSONSocket\", \"transport\": {\"protocol\": \"Echo\"}}}}",
        "{\"cluster\": {\"name\": \"c\", \"spec\": {\"protocol\": \"PIPE\"}}}",
        "{\"rule\": {\"name\": \"r\", \"match\": {\"op\": \"and\", \"apply\": [{\"op\": \"nope\"}]}, \"action\": {\"route\": \"x\"}}}",
        "{\"rule\": {\"name\": \"r\", \"action\": {}}}",
        "{\"route\": {\"name\": \"r\"}}",
        "{\"route\": {\"name\": \"r\", \"destination\": \"c\", \"retry\": {\"retry_on\": \"sometimes\"}}}",
        "{\"rulelist\": {\"name\": \"rl\", \"rules\": [5]}}",
        "{\"admin\": {\"offload\": \"maybe\"}}",
        "{ \"unterminated\": ",
        "\u{0}\u{1}binary",
    ];
    let paths = [
        "/api/v1/listeners",
        "/api/v1/clusters",
        "/api/v1/rules",
        "/api/v1/routes",
        "/api/v1/rulelists",
        "/api/v1/admin",
        "/api/v1/clusters/missing/endpoints",
        "/api/v1/rulelists/missing/rules/0",
    ];
    for path in paths {
        for body in bodies {
            let (status, answer) = proxy.send_raw("POST", path, "application/json", body);
            assert!(
                (200..500).contains(&status) && (status == 200 || answer["status"] == status),
                "POST {path} {body:?}: {status} {answer}"
            );
        }
    }
    // A whole config that is broken replaces nothing ("{}" is a valid, empty config).
    for body in bodies.iter().filter(|b| **b != "{}") {
        let (status, answer) = proxy.send_raw("POST", "/api/v1/config", "application/json", body);
        assert!(
            (400..500).contains(&status) && answer["status"] == status,
            "POST /config {body:?}: {status} {answer}"
        );
    }
    // Still serving, with the first listener intact and nothing half-made.
    assert_eq!(proxy.get("/api/v1/listeners/keep").0, 200);
    let mut client = tcp_connect(port);
    assert!(client.write_all(b"x").is_ok());
}

#[test]
fn access_log_records_api_requests() {
    let proxy = Proxy::start_trusted();
    let log = std::env::temp_dir().join(format!("l7mp-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let (status, body) = proxy.post(
        "/api/v1/admin",
        json!({"admin": {"access_log_path": log.display().to_string()}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.get("/api/v1/listeners").0, 200);
    assert_eq!(proxy.get("/api/v1/nowhere").0, 404);
    // The access log is written by a background thread: wait for both lines.
    eventually("both requests in the access log", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.contains(" GET /api/v1/listeners 200 ") && text.contains(" GET /api/v1/nowhere 404 "))
            .then_some(())
    });
    let _ = std::fs::remove_file(log);
}
