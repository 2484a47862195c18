//! Typed parsing of JSON values into config structs, with the failing field's path in
//! the error. Unknown fields are accepted (the original's schema allows additional
//! properties, and its clients send them): reported in strict mode, rejected only when
//! asked to ([`Validation::reject_unknown`]).

use std::cell::RefCell;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::core::error::{ConfigError, Result};

/// How strictly requests and configs are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Validation {
    /// The original's strict mode (`-s`, `admin.strict`): the schema's required
    /// properties, types and enums are enforced; unknown fields are reported.
    pub strict: bool,
    /// Unknown fields are a 422 (`--reject-unknown-fields`,
    /// `admin.reject_unknown_fields`), for users who want typos caught.
    pub reject_unknown: bool,
}

impl Validation {
    pub const LENIENT: Validation = Validation {
        strict: false,
        reject_unknown: false,
    };

    /// These flags (from the command line) or what `admin` turns on.
    pub fn with(self, strict: bool, reject_unknown: bool) -> Validation {
        Validation {
            strict: self.strict || strict,
            reject_unknown: self.reject_unknown || reject_unknown,
        }
    }

    /// These flags or what a whole config document's `admin` turns on.
    pub fn for_document(self, doc: &Value) -> Validation {
        let on = |key: &str| {
            doc.get("admin")
                .and_then(|a| a.get(key))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        Validation {
            strict: self.strict || on("strict"),
            reject_unknown: self.reject_unknown || on("reject_unknown_fields"),
        }
    }
}

thread_local! {
    /// Unknown fields seen while building on this thread, for the API's answer.
    static UNKNOWN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The unknown fields reported since the last call (on this thread).
pub fn take_unknown_fields() -> Vec<String> {
    UNKNOWN.with_borrow_mut(std::mem::take)
}

/// Parses `value` as `T`. `what` names the object for the error message.
pub fn typed<T: DeserializeOwned>(value: &Value, what: &str, v: Validation) -> Result<T> {
    let mut unknown = Vec::new();
    let parsed: T = {
        let mut track =
            |path: serde_ignored::Path| unknown.push(path.to_string().replace(".?", ""));
        let de = serde_ignored::Deserializer::new(value, &mut track);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ConfigError::invalid(format!("{what}: {inner}"))
            } else {
                ConfigError::invalid(format!("{what}: field '{path}': {inner}"))
            }
        })?
    };
    report_unknown(what, &unknown, v)?;
    Ok(parsed)
}

/// Reports fields the model does not know: a 422 when they are refused, else a warning
/// (strict mode) or a debug line, and a note for the API's answer.
pub fn report_unknown(what: &str, unknown: &[String], v: Validation) -> Result<()> {
    if unknown.is_empty() {
        return Ok(());
    }
    let list = unknown
        .iter()
        .map(|u| format!("'{u}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let plural = if unknown.len() > 1 { "s" } else { "" };
    if v.reject_unknown {
        return Err(ConfigError::invalid(format!(
            "{what}: unknown field{plural} {list} (reject_unknown_fields is on)"
        )));
    }
    if v.strict {
        tracing::warn!("{what}: unknown field{plural} {list} accepted");
    } else {
        tracing::debug!("{what}: unknown field{plural} {list} ignored");
    }
    UNKNOWN.with_borrow_mut(|all| {
        all.extend(
            unknown
                .iter()
                .map(|u| format!("{what}: unknown field '{u}'")),
        )
    });
    Ok(())
}

/// In strict mode, fails unless `object` has `field` (a property the schema requires
/// that has a default here).
pub fn require(v: Validation, object: &Value, field: &str, what: &str) -> Result<()> {
    if v.strict && object.get(field).is_none() {
        return Err(ConfigError::invalid(format!(
            "{what}: '{field}' is required (strict mode)"
        )));
    }
    Ok(())
}

/// The deepest a config document may nest. Real configs nest about a dozen levels
/// (listener, rules, rule, action, route, destination, spec, transport, ...); the bound
/// keeps every later walk over a document (parsing, rendering, dropping) shallow.
pub const MAX_NESTING: usize = 64;

/// The syntaxes a document may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Json,
    Yaml,
    /// Either: JSON is tried first (its errors read better), then YAML.
    Any,
}

/// Parses a JSON or YAML document, after checking in one linear pass that it does not
/// nest deeper than [`MAX_NESTING`]: the YAML scanner is quadratic in flow nesting, so
/// a deep document must be refused before it reaches the parser.
pub fn document(text: &str) -> std::result::Result<Value, String> {
    parse_as(text, Syntax::Any)
}

/// [`document`] in a given syntax.
pub fn parse_as(text: &str, syntax: Syntax) -> std::result::Result<Value, String> {
    check_nesting(text, MAX_NESTING)?;
    let json = || serde_json::from_str::<Value>(text).map_err(|e| format!("invalid JSON: {e}"));
    let yaml = || serde_yaml::from_str::<Value>(text).map_err(|e| format!("invalid YAML: {e}"));
    match syntax {
        Syntax::Json => json(),
        Syntax::Yaml => yaml(),
        Syntax::Any => json().or_else(|json_err| {
            yaml().map_err(|yaml_err| {
                if text.trim_start().starts_with(['{', '[']) {
                    json_err
                } else {
                    yaml_err
                }
            })
        }),
    }
}

/// Fails when `text` (JSON or YAML) nests deeper than `max`: block indentation levels
/// (and `- ` / `? ` entries that open a node on the same line) plus open flow
/// collections (`[`, `{`). Quoted strings, comments and block scalars are skipped. An
/// upper bound, not a parser: it never lets a deeper document through.
pub fn check_nesting(text: &str, max: usize) -> std::result::Result<(), String> {
    let too_deep = |line: usize| {
        Err(format!(
            "the document nests deeper than {max} levels (at line {line})"
        ))
    };
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    // Inside a quoted scalar that spans lines: its closing quote.
    let mut quote: Option<u8> = None;
    // Inside a block scalar (`|`, `>`): the indentation of the line that opened it.
    let mut block_scalar: Option<usize> = None;
    for (number, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let indent = bytes.iter().take_while(|b| **b == b' ').count();
        let blank = indent == bytes.len() || bytes[indent] == b'#';
        if let Some(opener) = block_scalar {
            if blank || indent > opener {
                continue;
            }
            block_scalar = None;
        }
        let mut at = 0;
        let mut extra = 0;
        if flow == 0 && quote.is_none() {
            if blank {
                continue;
            }
            while indents.last().is_some_and(|&i| i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            at = indent;
            // `- - x` and `? x` open nested nodes on one line.
            while bytes.len() > at + 1 && matches!(bytes[at], b'-' | b'?') && bytes[at + 1] == b' '
            {
                extra += 1;
                at += 2;
                while at < bytes.len() && bytes[at] == b' ' {
                    at += 1;
                }
            }
        }
        // The last character that can precede the start of a flow collection.
        let mut prev = b'\n';
        while at < bytes.len() {
            let b = bytes[at];
            let after_space = at == 0 || matches!(bytes[at - 1], b' ' | b'\t');
            at += 1;
            if let Some(q) = quote {
                if b == b'\\' && q == b'"' {
                    at += 1;
                } else if b == q {
                    quote = None;
                    prev = b'x';
                }
                continue;
            }
            match b {
                b'"' | b'\'' => quote = Some(b),
                b'#' if after_space => break,
                b'[' | b'{' if matches!(prev, b'\n' | b'[' | b'{' | b',' | b':' | b'-' | b'?') => {
                    flow += 1;
                    if indents.len() + extra + flow > max {
                        return too_deep(number + 1);
                    }
                }
                b']' | b'}' if flow > 0 => flow -= 1,
                _ => {}
            }
            if !matches!(b, b' ' | b'\t') {
                prev = b;
            }
        }
        if indents.len() + extra + flow > max {
            return too_deep(number + 1);
        }
        if flow == 0 && quote.is_none() {
            let end = line.trim_end();
            let trailing =
                end.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '+');
            if trailing.ends_with(['|', '>'])
                && (trailing.len() == 1
                    || trailing[..trailing.len() - 1].ends_with([' ', ':', '-']))
            {
                block_scalar = Some(indent);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Spec {
        port: u16,
        #[serde(default)]
        inner: Option<Inner>,
    }
    #[derive(Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        address: String,
    }

    #[test]
    fn errors_name_the_field() {
        let e = typed::<Spec>(
            &json!({"port": 1, "inner": {"address": 5}}),
            "listener 'l'",
            Validation::LENIENT,
        )
        .unwrap_err();
        assert_eq!(e.kind, crate::core::error::ErrorKind::Invalid);
        assert!(e.message.contains("field 'inner.address'"), "{e}");
        let e = typed::<Spec>(&json!({"port": "x"}), "l", Validation::LENIENT).unwrap_err();
        assert!(e.message.contains("field 'port'"), "{e}");
    }

    #[test]
    fn unknown_fields_are_accepted_and_reported_unless_rejected() {
        let v = json!({"port": 1, "prot": "x", "inner": {"address": "a", "b": 1}});
        let _ = take_unknown_fields();
        let strict = Validation {
            strict: true,
            reject_unknown: false,
        };
        assert!(typed::<Spec>(&v, "l", strict).is_ok());
        assert_eq!(
            take_unknown_fields(),
            vec!["l: unknown field 'inner.b'", "l: unknown field 'prot'"]
        );
        let reject = Validation {
            strict: true,
            reject_unknown: true,
        };
        let e = typed::<Spec>(&v, "l", reject).unwrap_err();
        assert!(
            e.message.contains("'prot'") && e.message.contains("'inner.b'"),
            "{e}"
        );
    }

    #[test]
    fn deep_documents_are_refused_before_parsing() {
        let deep_flow = format!("{}{}", "[".repeat(120_000), "]".repeat(120_000));
        let start = std::time::Instant::now();
        assert!(
            document(&deep_flow)
                .unwrap_err()
                .contains("nests deeper than 64")
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let deep_block: String = (0..100).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        assert!(document(&deep_block).unwrap_err().contains("nests deeper"));
        assert!(
            document(&"- ".repeat(100))
                .unwrap_err()
                .contains("nests deeper")
        );
        let deep_json = format!("{}1{}", "{\"a\":".repeat(80), "}".repeat(80));
        assert!(document(&deep_json).unwrap_err().contains("nests deeper"));
        // What is not structure does not count.
        let text = format!(
            "a: \"{}\"\nb: '{}'\nc: |\n  {}\n    {}\nd: x[y # {}\n",
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500)
        );
        let doc = document(&text).unwrap();
        assert_eq!(doc["d"], "x[y");
        let nested = "listener:\n  spec: {protocol: UDP, port: 1, connect: {address: a}}\n  rules:\n    - match: {op: and, apply: [{op: test, path: /a, value: [1, {b: [2]}]}]}\n      action: {route: {destination: {spec: {protocol: Echo}}}}\n";
        assert!(document(nested).is_ok());
    }

    #[test]
    fn documents_in_both_syntaxes() {
        assert_eq!(document("{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert_eq!(
            document("a: 1\nb: [x]").unwrap(),
            json!({"a": 1, "b": ["x"]})
        );
        assert!(
            document("{\"a\": ")
                .unwrap_err()
                .starts_with("invalid JSON")
        );
        assert!(document("a: [").unwrap_err().starts_with("invalid YAML"));
    }
}
