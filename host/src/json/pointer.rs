//! JSON pointers (RFC 6901) as l7mp uses them: a missing leading `/` is tolerated
//! (`labels/session_id` is `/labels/session_id`), and `set` creates missing parents so
//! a rewrite can add a label to metadata that has no `labels` object yet.

use serde_json::{Map, Value};

/// Returns `path` with a leading `/` (the empty pointer stays empty: the whole document).
pub fn normalize(path: &str) -> String {
    if path.is_empty() || path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// The most segments a pointer may have. Metadata is a shallow document (`IP`,
/// `HTTP.url.path`, `labels.x`); a bound here also bounds how deep a rewrite can make
/// the metadata, which every later walk over it (listings, encoders) relies on.
pub const MAX_SEGMENTS: usize = 32;
/// The longest pointer text accepted.
pub const MAX_LEN: usize = 1024;

/// A pointer parsed once (at config time), so following it on the session path
/// allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// As written (listings show what the user wrote, `a/b` stays `a/b`).
    written: String,
    tokens: Vec<String>,
}

impl Pointer {
    /// Parses `path`, refusing pointers longer than [`MAX_LEN`] or deeper than
    /// [`MAX_SEGMENTS`].
    pub fn parse(path: &str) -> Result<Pointer, String> {
        if path.len() > MAX_LEN {
            return Err(format!(
                "JSON pointer of {} bytes: at most {MAX_LEN}",
                path.len()
            ));
        }
        let text = normalize(path);
        let segments = if text.is_empty() {
            0
        } else {
            text.matches('/').count()
        };
        if segments > MAX_SEGMENTS {
            return Err(format!(
                "JSON pointer with {segments} segments: at most {MAX_SEGMENTS}"
            ));
        }
        let tokens = if text.is_empty() {
            Vec::new()
        } else {
            text[1..]
                .split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect()
        };
        Ok(Pointer {
            written: path.to_owned(),
            tokens,
        })
    }

    /// The pointer as written.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// The value this pointer names in `doc`, if there is one.
    pub fn get<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        self.tokens.iter().try_fold(doc, |cur, token| match cur {
            Value::Object(map) => map.get(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }

    /// Stores `value` at this pointer, creating objects for missing parents and
    /// replacing scalars that stand in the way. Array elements are addressed by index;
    /// `-` appends. Fails only when an array index is neither a number in range nor `-`.
    pub fn set(&self, doc: &mut Value, value: Value) -> Result<(), String> {
        let Some((last, parents)) = self.tokens.split_last() else {
            *doc = value;
            return Ok(());
        };
        let mut cur = doc;
        for token in parents {
            cur = child_mut(cur, token, &self.written)?;
        }
        match cur {
            Value::Array(items) => {
                if last == "-" {
                    items.push(value);
                } else {
                    let index = array_index(last, items.len(), &self.written)?;
                    if index == items.len() {
                        items.push(value);
                    } else {
                        items[index] = value;
                    }
                }
            }
            other => {
                if !other.is_object() {
                    *other = Value::Object(Map::new());
                }
                other
                    .as_object_mut()
                    .expect("just made an object")
                    .insert(last.clone(), value);
            }
        }
        Ok(())
    }
}

/// Pointers deserialize from their text, checked as [`Pointer::parse`] checks them, and
/// serialize back as written.
impl<'de> serde::Deserialize<'de> for Pointer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        Pointer::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Pointer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.written)
    }
}

/// In the API's OpenAPI document: a string of at most [`MAX_LEN`] bytes.
impl utoipa::PartialSchema for Pointer {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(MAX_LEN))
            .description(Some("A JSON pointer (a leading '/' may be left out)"))
            .into()
    }
}

impl utoipa::ToSchema for Pointer {}

fn child_mut<'a>(cur: &'a mut Value, token: &str, path: &str) -> Result<&'a mut Value, String> {
    if let Value::Array(items) = cur {
        let index = array_index(token, items.len(), path)?;
        if index == items.len() {
            items.push(Value::Object(Map::new()));
        }
        return Ok(&mut items[index]);
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    Ok(cur
        .as_object_mut()
        .expect("just made an object")
        .entry(token.to_owned())
        .or_insert_with(|| Value::Object(Map::new())))
}

fn array_index(token: &str, len: usize, path: &str) -> Result<usize, String> {
    match token.parse::<usize>() {
        Ok(i) if i <= len => Ok(i),
        _ => Err(format!(
            "JSON pointer {path}: '{token}' is not an index into an array of {len}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
        Pointer::parse(path).unwrap().get(doc)
    }

    fn set(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
        Pointer::parse(path).unwrap().set(doc, value)
    }

    #[test]
    fn get_tolerates_missing_slash() {
        let doc = json!({"IP": {"src_addr": "10.0.0.1"}, "a/b": {"~x": 1}});
        assert_eq!(get(&doc, "/IP/src_addr"), Some(&json!("10.0.0.1")));
        assert_eq!(get(&doc, "IP/src_addr"), Some(&json!("10.0.0.1")));
        assert_eq!(get(&doc, "/a~1b/~0x"), Some(&json!(1)));
        assert_eq!(get(&doc, "/IP/missing"), None);
        assert_eq!(get(&doc, ""), Some(&doc));
    }

    #[test]
    fn set_creates_parents() {
        let mut doc = json!({});
        set(&mut doc, "labels/session_id", json!(1)).unwrap();
        set(&mut doc, "/HTTP/headers", json!({"a": "b"})).unwrap();
        assert_eq!(
            doc,
            json!({"labels": {"session_id": 1}, "HTTP": {"headers": {"a": "b"}}})
        );
    }

    #[test]
    fn set_replaces_scalars_and_handles_arrays() {
        let mut doc = json!({"a": 5, "list": [1, 2]});
        set(&mut doc, "/a/b", json!("x")).unwrap();
        set(&mut doc, "/list/0", json!(9)).unwrap();
        set(&mut doc, "/list/-", json!(3)).unwrap();
        set(&mut doc, "/list/3", json!(4)).unwrap();
        assert_eq!(doc, json!({"a": {"b": "x"}, "list": [9, 2, 3, 4]}));
        assert!(set(&mut doc, "/list/9", json!(0)).is_err());
        assert!(set(&mut doc, "/list/x", json!(0)).is_err());
    }

    #[test]
    fn pointers_are_bounded_and_kept_as_written() {
        let deep = "/a".repeat(MAX_SEGMENTS + 1);
        assert!(Pointer::parse(&deep).unwrap_err().contains("segments"));
        assert!(Pointer::parse(&"/a".repeat(MAX_SEGMENTS)).is_ok());
        assert!(Pointer::parse(&"x".repeat(MAX_LEN + 1)).is_err());
        assert_eq!(Pointer::parse("a/b").unwrap().as_str(), "a/b");
    }

    #[test]
    fn set_root_replaces_document() {
        let mut doc = json!({"a": 1});
        set(&mut doc, "", json!([1])).unwrap();
        assert_eq!(doc, json!([1]));
    }
}
