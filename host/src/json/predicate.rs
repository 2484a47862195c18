//! JSONPredicate (draft-snell-json-test-07), the match language of l7mp rules.
//!
//! A predicate is compiled once when its rule is created, so a bad operator or regex is
//! a config error with the rule named, and evaluation on the session path does no
//! parsing. Paths are JSON pointers; nested `and`/`or`/`not` paths are relative to
//! their parent's path, as in the draft.

use std::fmt;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::pointer::{self, Pointer};
use crate::core::build::{Matcher, PluginCatalog};

/// A compiled predicate.
#[derive(Debug, Clone)]
pub enum Predicate {
    /// Matches every session: no `match`, or a string `match` (l7mp's wildcard).
    Any,
    Test {
        path: Pointer,
        value: Value,
        ignore_case: bool,
    },
    Contains {
        path: Pointer,
        value: Value,
        ignore_case: bool,
    },
    Starts {
        path: Pointer,
        value: String,
        ignore_case: bool,
    },
    Ends {
        path: Pointer,
        value: String,
        ignore_case: bool,
    },
    Matches {
        path: Pointer,
        regex: Regex,
    },
    In {
        path: Pointer,
        values: Vec<Value>,
        ignore_case: bool,
    },
    Less {
        path: Pointer,
        value: f64,
    },
    More {
        path: Pointer,
        value: f64,
    },
    Type {
        path: Pointer,
        kind: JsonType,
    },
    Defined {
        path: Pointer,
    },
    Undefined {
        path: Pointer,
    },
    /// A Wasm matcher plugin (`{plugin, config}`), given the whole metadata.
    Plugin(Arc<dyn Matcher>),
    And(Vec<Predicate>),
    Or(Vec<Predicate>),
    /// True when not all of the nested predicates hold.
    Not(Vec<Predicate>),
}

/// The types the `type` operator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Number,
    Integer,
    String,
    Boolean,
    Object,
    Array,
    Null,
    Undefined,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredicateError(pub String);

impl fmt::Display for PredicateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PredicateError {}

fn err<T>(msg: impl Into<String>) -> Result<T, PredicateError> {
    Err(PredicateError(msg.into()))
}

impl Predicate {
    /// Compiles a `match` value. `null` and strings are wildcards. A `{plugin}`
    /// operator is an error: see [`Predicate::compile_with`].
    pub fn compile(spec: &Value) -> Result<Predicate, PredicateError> {
        Self::compile_with(spec, None)
    }

    /// Compiles a `match` value whose `{plugin, config}` operators run the matchers of
    /// `plugins`.
    pub fn compile_with(
        spec: &Value,
        plugins: Option<&dyn PluginCatalog>,
    ) -> Result<Predicate, PredicateError> {
        match spec {
            Value::Null | Value::String(_) => Ok(Predicate::Any),
            Value::Object(_) => compile_op(spec, "", 1, plugins),
            other => err(format!(
                "a match must be a JSONPredicate object, not {other}"
            )),
        }
    }

    /// Whether evaluating needs a plugin call (then use [`Predicate::eval_async`]).
    pub fn calls_plugin(&self) -> bool {
        match self {
            Predicate::Plugin(_) => true,
            Predicate::And(all) | Predicate::Or(all) | Predicate::Not(all) => {
                all.iter().any(Predicate::calls_plugin)
            }
            _ => false,
        }
    }

    /// The matcher plugins the predicate calls.
    pub fn plugins(&self) -> Vec<&str> {
        match self {
            Predicate::Plugin(m) => vec![m.plugin()],
            Predicate::And(all) | Predicate::Or(all) | Predicate::Not(all) => {
                all.iter().flat_map(Predicate::plugins).collect()
            }
            _ => Vec::new(),
        }
    }

    /// Evaluates a predicate that may call plugins, in order and short-circuiting as
    /// [`Predicate::eval`] does.
    pub fn eval_async<'a>(
        &'a self,
        doc: &'a Value,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            match self {
                Predicate::Plugin(m) => m.matches(doc).await,
                Predicate::And(all) => {
                    for p in all {
                        if !p.eval_async(doc).await {
                            return false;
                        }
                    }
                    true
                }
                Predicate::Or(any) => {
                    for p in any {
                        if p.eval_async(doc).await {
                            return true;
                        }
                    }
                    false
                }
                Predicate::Not(all) => {
                    for p in all {
                        if !p.eval_async(doc).await {
                            return true;
                        }
                    }
                    false
                }
                other => other.eval(doc),
            }
        })
    }

    /// Evaluates a predicate without plugins; a plugin operator here is no match
    /// (callers with plugins use [`Predicate::eval_async`]).
    pub fn eval(&self, doc: &Value) -> bool {
        match self {
            Predicate::Plugin(_) => false,
            Predicate::Any => true,
            Predicate::Test {
                path,
                value,
                ignore_case,
            } => path
                .get(doc)
                .is_some_and(|v| json_eq(v, value, *ignore_case)),
            Predicate::Contains {
                path,
                value,
                ignore_case,
            } => match path.get(doc) {
                Some(Value::String(s)) => value.as_str().is_some_and(|needle| {
                    fold(s, *ignore_case).contains(&*fold(needle, *ignore_case))
                }),
                Some(Value::Array(items)) => items.iter().any(|i| json_eq(i, value, *ignore_case)),
                _ => false,
            },
            Predicate::Starts {
                path,
                value,
                ignore_case,
            } => string_at(doc, path)
                .is_some_and(|s| fold(s, *ignore_case).starts_with(&*fold(value, *ignore_case))),
            Predicate::Ends {
                path,
                value,
                ignore_case,
            } => string_at(doc, path)
                .is_some_and(|s| fold(s, *ignore_case).ends_with(&*fold(value, *ignore_case))),
            Predicate::Matches { path, regex } => match path.get(doc) {
                Some(Value::String(s)) => regex.is_match(s),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => regex.is_match(&v.to_string()),
                _ => false,
            },
            Predicate::In {
                path,
                values,
                ignore_case,
            } => path.get(doc).is_some_and(|v| {
                values
                    .iter()
                    .any(|candidate| json_eq(v, candidate, *ignore_case))
            }),
            Predicate::Less { path, value } => number_at(doc, path).is_some_and(|n| n < *value),
            Predicate::More { path, value } => number_at(doc, path).is_some_and(|n| n > *value),
            Predicate::Type { path, kind } => type_matches(path.get(doc), *kind),
            Predicate::Defined { path } => path.get(doc).is_some(),
            Predicate::Undefined { path } => path.get(doc).is_none(),
            Predicate::And(all) => all.iter().all(|p| p.eval(doc)),
            Predicate::Or(any) => any.iter().any(|p| p.eval(doc)),
            Predicate::Not(all) => !all.iter().all(|p| p.eval(doc)),
        }
    }
}

/// How deep `and`/`or`/`not` may nest: evaluation and listings walk predicates
/// recursively, so their depth is bounded where they are written.
pub const MAX_DEPTH: usize = 16;
/// The compiled size a `matches` regex may have (the regex crate's own default is
/// 10 MiB, too much for one rule).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn compile_op(
    spec: &Value,
    parent: &str,
    depth: usize,
    plugins: Option<&dyn PluginCatalog>,
) -> Result<Predicate, PredicateError> {
    if depth > MAX_DEPTH {
        return err(format!("operations nest deeper than {MAX_DEPTH} levels"));
    }
    let obj = spec
        .as_object()
        .ok_or_else(|| PredicateError(format!("expected an operation object, got {spec}")))?;
    if obj.contains_key("plugin") && !obj.contains_key("op") {
        let Some(plugins) = plugins else {
            return err("matcher plugins are not available here");
        };
        return plugins
            .matcher(spec)
            .map(Predicate::Plugin)
            .map_err(|e| PredicateError(e.message));
    }
    let op = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| PredicateError(format!("operation {spec} has no string 'op'")))?;
    let own_path = match obj.get("path") {
        None => String::new(),
        Some(Value::String(p)) => pointer::normalize(p),
        Some(other) => return err(format!("op '{op}': path must be a string, not {other}")),
    };
    let path_text = format!("{parent}{own_path}");
    let path = Pointer::parse(&path_text).map_err(|e| PredicateError(format!("op '{op}': {e}")))?;
    let ignore_case = match obj.get("ignore_case") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return err(format!(
                "op '{op}': ignore_case must be a boolean, not {other}"
            ));
        }
    };
    let value = || {
        obj.get("value")
            .cloned()
            .ok_or_else(|| PredicateError(format!("op '{op}' needs a 'value'")))
    };
    let string_value = || match value()? {
        Value::String(s) => Ok(s),
        other => err(format!("op '{op}' needs a string value, not {other}")),
    };
    let number_value = || {
        value()?
            .as_f64()
            .ok_or_else(|| PredicateError(format!("op '{op}' needs a numeric value")))
    };
    let nested = || -> Result<Vec<Predicate>, PredicateError> {
        match obj.get("apply") {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .map(|item| compile_op(item, &path_text, depth + 1, plugins))
                .collect(),
            _ => err(format!("op '{op}' needs a non-empty 'apply' list")),
        }
    };
    Ok(match op {
        "test" => Predicate::Test {
            path,
            value: value()?,
            ignore_case,
        },
        "contains" => Predicate::Contains {
            path,
            value: value()?,
            ignore_case,
        },
        "starts" => Predicate::Starts {
            path,
            value: string_value()?,
            ignore_case,
        },
        "ends" => Predicate::Ends {
            path,
            value: string_value()?,
            ignore_case,
        },
        "matches" => {
            let source = string_value()?;
            let regex = RegexBuilder::new(&source)
                .case_insensitive(ignore_case)
                .size_limit(REGEX_SIZE_LIMIT)
                .nest_limit(64)
                .build()
                .map_err(|e| PredicateError(format!("op 'matches': bad regex {source:?}: {e}")))?;
            Predicate::Matches { path, regex }
        }
        "in" => match value()? {
            Value::Array(values) => Predicate::In {
                path,
                values,
                ignore_case,
            },
            other => return err(format!("op 'in' needs an array value, not {other}")),
        },
        "less" => Predicate::Less {
            path,
            value: number_value()?,
        },
        "more" => Predicate::More {
            path,
            value: number_value()?,
        },
        "type" => Predicate::Type {
            path,
            kind: parse_type(&string_value()?)?,
        },
        "defined" => Predicate::Defined { path },
        "undefined" => Predicate::Undefined { path },
        "and" => Predicate::And(nested()?),
        "or" => Predicate::Or(nested()?),
        "not" => Predicate::Not(nested()?),
        other => return err(format!("unknown JSONPredicate operation '{other}'")),
    })
}

fn parse_type(name: &str) -> Result<JsonType, PredicateError> {
    Ok(match name {
        "number" => JsonType::Number,
        "integer" => JsonType::Integer,
        "string" => JsonType::String,
        "boolean" => JsonType::Boolean,
        "object" => JsonType::Object,
        "array" => JsonType::Array,
        "null" => JsonType::Null,
        "undefined" => JsonType::Undefined,
        other => return err(format!("op 'type': unknown type '{other}'")),
    })
}

fn type_matches(value: Option<&Value>, kind: JsonType) -> bool {
    match (value, kind) {
        (None, JsonType::Undefined) => true,
        (None, _) => false,
        (Some(v), kind) => match kind {
            JsonType::Number => v.is_number(),
            JsonType::Integer => v.is_i64() || v.is_u64(),
            JsonType::String => v.is_string(),
            JsonType::Boolean => v.is_boolean(),
            JsonType::Object => v.is_object(),
            JsonType::Array => v.is_array(),
            JsonType::Null => v.is_null(),
            JsonType::Undefined => false,
        },
    }
}

fn fold(s: &str, ignore_case: bool) -> std::borrow::Cow<'_, str> {
    if ignore_case {
        s.to_lowercase().into()
    } else {
        s.into()
    }
}

fn string_at<'a>(doc: &'a Value, path: &Pointer) -> Option<&'a str> {
    path.get(doc).and_then(Value::as_str)
}

fn number_at(doc: &Value, path: &Pointer) -> Option<f64> {
    match path.get(doc)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Deep equality where numbers compare by value (1 == 1.0) and, with `ignore_case`,
/// strings compare case-insensitively at every depth.
fn json_eq(a: &Value, b: &Value, ignore_case: bool) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if ignore_case {
                x.to_lowercase() == y.to_lowercase()
            } else {
                x == y
            }
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b, ignore_case))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w, ignore_case)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
#[path = "predicate_tests.rs"]
mod tests;
