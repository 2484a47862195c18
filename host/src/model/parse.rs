//! Typed parsing of JSON values into config structs, with the failing field's path in
//! the error and, in strict mode, unknown fields rejected instead of ignored.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ConfigError, Result};

/// Parses `value` as `T`. `what` names the object for the error message.
pub fn typed<T: DeserializeOwned>(value: &Value, what: &str, strict: bool) -> Result<T> {
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
    if strict && !unknown.is_empty() {
        return Err(ConfigError::invalid(format!(
            "{what}: unknown field{} {} (strict mode)",
            if unknown.len() > 1 { "s" } else { "" },
            unknown
                .iter()
                .map(|u| format!("'{u}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(parsed)
}

/// Parses a JSON or YAML document (YAML is a superset, but JSON errors read better).
pub fn document(text: &str) -> std::result::Result<Value, String> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(json_err) => serde_yaml::from_str::<Value>(text).map_err(|yaml_err| {
            if text.trim_start().starts_with(['{', '[']) {
                format!("invalid JSON: {json_err}")
            } else {
                format!("invalid YAML: {yaml_err}")
            }
        }),
    }
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
            false,
        )
        .unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.contains("field 'inner.address'"), "{e}");
        let e = typed::<Spec>(&json!({"port": "x"}), "l", false).unwrap_err();
        assert!(e.message.contains("field 'port'"), "{e}");
    }

    #[test]
    fn strict_rejects_unknown_fields() {
        let v = json!({"port": 1, "prot": "x", "inner": {"address": "a", "b": 1}});
        assert!(typed::<Spec>(&v, "l", false).is_ok());
        let e = typed::<Spec>(&v, "l", true).unwrap_err();
        assert!(
            e.message.contains("'prot'") && e.message.contains("'inner.b'"),
            "{e}"
        );
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
