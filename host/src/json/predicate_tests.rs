//! The JSONPredicate operator matrix.

use super::*;
use serde_json::json;

fn doc() -> Value {
    json!({
        "IP": {"src_addr": "10.0.0.1", "dst_addr": "10.0.0.2"},
        "UDP": {"src_port": 9000, "dst_port": 5000},
        "HTTP": {"url": {"path": "/Admin/users"}, "headers": {"x-id": "Abc-42"}},
        "labels": {"tags": ["a", "B"], "ratio": 0.5, "flag": true, "none": null, "obj": {}}
    })
}

fn eval(spec: Value) -> bool {
    Predicate::compile(&spec)
        .unwrap_or_else(|e| panic!("{spec}: {e}"))
        .eval(&doc())
}

#[test]
fn operator_matrix() {
    let cases: &[(Value, bool)] = &[
        (
            json!({"op": "test", "path": "/IP/src_addr", "value": "10.0.0.1"}),
            true,
        ),
        (
            json!({"op": "test", "path": "IP/src_addr", "value": "10.0.0.9"}),
            false,
        ),
        (
            json!({"op": "test", "path": "/UDP/src_port", "value": 9000.0}),
            true,
        ),
        (
            json!({"op": "test", "path": "/HTTP/headers/x-id", "value": "abc-42"}),
            false,
        ),
        (
            json!({"op": "test", "path": "/HTTP/headers/x-id", "value": "abc-42", "ignore_case": true}),
            true,
        ),
        (
            json!({"op": "test", "path": "/missing", "value": null}),
            false,
        ),
        (
            json!({"op": "contains", "path": "/HTTP/url/path", "value": "min/u"}),
            true,
        ),
        (
            json!({"op": "contains", "path": "/HTTP/url/path", "value": "ADMIN"}),
            false,
        ),
        (
            json!({"op": "contains", "path": "/HTTP/url/path", "value": "ADMIN", "ignore_case": true}),
            true,
        ),
        (
            json!({"op": "contains", "path": "/labels/tags", "value": "b", "ignore_case": true}),
            true,
        ),
        (
            json!({"op": "contains", "path": "/labels/tags", "value": "c"}),
            false,
        ),
        (
            json!({"op": "starts", "path": "/HTTP/url/path", "value": "/Admin"}),
            true,
        ),
        (
            json!({"op": "starts", "path": "/HTTP/url/path", "value": "/admin"}),
            false,
        ),
        (
            json!({"op": "starts", "path": "/HTTP/url/path", "value": "/admin", "ignore_case": true}),
            true,
        ),
        (
            json!({"op": "starts", "path": "/UDP/src_port", "value": "9"}),
            false,
        ),
        (
            json!({"op": "ends", "path": "/HTTP/url/path", "value": "users"}),
            true,
        ),
        (
            json!({"op": "ends", "path": "/HTTP/url/path", "value": "USERS", "ignore_case": true}),
            true,
        ),
        (
            json!({"op": "ends", "path": "/HTTP/url/path", "value": "user"}),
            false,
        ),
        (
            json!({"op": "matches", "path": "/HTTP/headers/x-id", "value": "^[A-Z][a-z]+-\\d+$"}),
            true,
        ),
        (
            json!({"op": "matches", "path": "/HTTP/headers/x-id", "value": "^abc"}),
            false,
        ),
        (
            json!({"op": "matches", "path": "/HTTP/headers/x-id", "value": "^abc", "ignore_case": true}),
            true,
        ),
        (
            json!({"op": "matches", "path": "/UDP/src_port", "value": "^90"}),
            true,
        ),
        (
            json!({"op": "in", "path": "/IP/src_addr", "value": ["10.0.0.1", "10.0.0.3"]}),
            true,
        ),
        (
            json!({"op": "in", "path": "/IP/src_addr", "value": ["10.0.0.3"]}),
            false,
        ),
        (
            json!({"op": "in", "path": "/HTTP/headers/x-id", "value": ["ABC-42"], "ignore_case": true}),
            true,
        ),
        (
            json!({"op": "less", "path": "/UDP/src_port", "value": 9001}),
            true,
        ),
        (
            json!({"op": "less", "path": "/UDP/src_port", "value": 9000}),
            false,
        ),
        (
            json!({"op": "more", "path": "/UDP/src_port", "value": 8999}),
            true,
        ),
        (
            json!({"op": "more", "path": "/labels/ratio", "value": 0.5}),
            false,
        ),
        (
            json!({"op": "more", "path": "/IP/src_addr", "value": 1}),
            false,
        ),
        (
            json!({"op": "type", "path": "/UDP/src_port", "value": "integer"}),
            true,
        ),
        (
            json!({"op": "type", "path": "/labels/ratio", "value": "integer"}),
            false,
        ),
        (
            json!({"op": "type", "path": "/labels/ratio", "value": "number"}),
            true,
        ),
        (
            json!({"op": "type", "path": "/labels/flag", "value": "boolean"}),
            true,
        ),
        (
            json!({"op": "type", "path": "/labels/none", "value": "null"}),
            true,
        ),
        (
            json!({"op": "type", "path": "/labels/obj", "value": "object"}),
            true,
        ),
        (
            json!({"op": "type", "path": "/labels/tags", "value": "array"}),
            true,
        ),
        (
            json!({"op": "type", "path": "/IP/src_addr", "value": "string"}),
            true,
        ),
        (
            json!({"op": "type", "path": "/nope", "value": "undefined"}),
            true,
        ),
        (
            json!({"op": "type", "path": "/IP", "value": "undefined"}),
            false,
        ),
        (json!({"op": "defined", "path": "/labels/none"}), true),
        (json!({"op": "defined", "path": "/labels/nothing"}), false),
        (json!({"op": "undefined", "path": "/labels/nothing"}), true),
        (json!({"op": "undefined", "path": "/IP"}), false),
    ];
    for (spec, expected) in cases {
        assert_eq!(eval(spec.clone()), *expected, "{spec}");
    }
}

#[test]
fn logical_operators_nest() {
    let src = json!({"op": "test", "path": "/IP/src_addr", "value": "10.0.0.1"});
    let port = json!({"op": "more", "path": "/UDP/src_port", "value": 8999});
    let wrong = json!({"op": "test", "path": "/IP/src_addr", "value": "1.1.1.1"});
    assert!(eval(json!({"op": "and", "apply": [src, port]})));
    assert!(!eval(json!({"op": "and", "apply": [src, wrong]})));
    assert!(eval(json!({"op": "or", "apply": [wrong, port]})));
    assert!(!eval(json!({"op": "or", "apply": [wrong]})));
    assert!(eval(json!({"op": "not", "apply": [wrong]})));
    assert!(!eval(json!({"op": "not", "apply": [src, port]})));
    assert!(eval(json!({"op": "not", "apply": [src, wrong]})));
    assert!(eval(json!({"op": "and", "apply": [
        {"op": "or", "apply": [wrong, {"op": "not", "apply": [wrong]}]},
        {"op": "test", "path": "/UDP/dst_port", "value": 5000}
    ]})));
}

#[test]
fn nested_paths_are_relative() {
    assert!(eval(json!({"op": "and", "path": "/IP", "apply": [
        {"op": "test", "path": "/src_addr", "value": "10.0.0.1"},
        {"op": "ends", "path": "dst_addr", "value": ".2"}
    ]})));
}

#[test]
fn wildcards() {
    assert!(matches!(
        Predicate::compile(&json!(null)),
        Ok(Predicate::Any)
    ));
    assert!(matches!(
        Predicate::compile(&json!("*")),
        Ok(Predicate::Any)
    ));
}

#[test]
fn bad_predicates_are_named() {
    for (spec, needle) in [
        (
            json!({"op": "frobnicate", "path": "/a"}),
            "unknown JSONPredicate operation 'frobnicate'",
        ),
        (json!({"op": "test", "path": "/a"}), "needs a 'value'"),
        (
            json!({"op": "matches", "path": "/a", "value": "("}),
            "bad regex",
        ),
        (json!({"op": "in", "path": "/a", "value": 1}), "array value"),
        (json!({"op": "less", "path": "/a", "value": "x"}), "numeric"),
        (json!({"op": "and", "apply": []}), "non-empty 'apply'"),
        (
            json!({"op": "type", "path": "/a", "value": "date"}),
            "unknown type",
        ),
        (json!({"path": "/a"}), "no string 'op'"),
        (json!(42), "must be a JSONPredicate object"),
    ] {
        let e = Predicate::compile(&spec).unwrap_err();
        assert!(e.0.contains(needle), "{spec}: {e}");
    }
}
