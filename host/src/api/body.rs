//! Request bodies in, JSON (or YAML) out, and errors as `{"status", "message"}`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::ConfigError;
use crate::model::parse;

/// Query parameters every endpoint understands.
#[derive(Debug, Default, Deserialize)]
pub struct Query {
    #[serde(default)]
    pub recursive: Option<String>,
    #[serde(default)]
    pub format: Option<String>,
}

impl Query {
    pub fn recursive(&self) -> bool {
        flag(self.recursive.as_deref())
    }
}

/// A boolean query parameter: `?x`, `?x=true`, `?x=1`, `?x=yes`.
pub fn flag(value: Option<&str>) -> bool {
    matches!(value, Some("true" | "1" | "yes" | ""))
}

pub struct ApiError(pub ConfigError);

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_response(
            status,
            &json!({ "status": self.0.status, "message": self.0.message }),
        )
    }
}

pub type ApiResult = Result<Response, ApiError>;

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut text = serde_json::to_vec_pretty(body).unwrap_or_default();
    text.push(b'\n');
    let mut resp = (status, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An object or listing, in the format the query asks for.
pub fn reply(query: &Query, body: &Value) -> ApiResult {
    match query.format.as_deref() {
        None | Some("json") => Ok(json_response(StatusCode::OK, body)),
        Some("yaml") => {
            let text =
                serde_yaml::to_string(body).map_err(|e| ConfigError::new(500, e.to_string()))?;
            let mut resp = (StatusCode::OK, text).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            Ok(resp)
        }
        Some(other) => {
            Err(ConfigError::malformed(format!("unknown format '{other}' (json or yaml)")).into())
        }
    }
}

/// `{"status": 200, "message": "OK"}`.
pub fn ok() -> ApiResult {
    Ok(json_response(
        StatusCode::OK,
        &json!({ "status": 200, "message": "OK" }),
    ))
}

/// OK, naming the first object a POST created (the one its body described).
pub fn created(objects: &[(crate::model::Kind, String)]) -> ApiResult {
    let first = objects
        .first()
        .map(|(_, name)| name.as_str())
        .unwrap_or_default();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "status": 200, "message": "OK", "created": first }),
    ))
}

/// Parses a JSON or YAML body and unwraps `{<wrapper>: ...}` when present.
pub fn parse(headers: &HeaderMap, body: &Bytes, wrapper: Option<&str>) -> Result<Value, ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| {
        v.to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let text = std::str::from_utf8(body)
        .map_err(|_| ConfigError::malformed("the body is not UTF-8 text"))?;
    if text.trim().is_empty() {
        return Err(ConfigError::malformed("the body is empty").into());
    }
    let value = match content_type.as_deref() {
        None | Some("") => parse::document(text).map_err(ConfigError::malformed)?,
        Some("application/json") | Some("text/json") => serde_json::from_str(text)
            .map_err(|e| ConfigError::malformed(format!("invalid JSON: {e}")))?,
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => {
            serde_yaml::from_str(text)
                .map_err(|e| ConfigError::malformed(format!("invalid YAML: {e}")))?
        }
        Some(other) => {
            return Err(ConfigError::new(
                415,
                format!(
                    "unsupported content type '{other}': send application/json or application/yaml"
                ),
            )
            .into());
        }
    };
    Ok(match (wrapper, value) {
        (Some(key), Value::Object(mut obj)) if obj.len() == 1 && obj.contains_key(key) => {
            obj.remove(key).unwrap_or_default()
        }
        (Some(key), v) if !v.is_object() => {
            return Err(ConfigError::invalid(format!(
                "the body must be an object: {{\"{key}\": {{...}}}}"
            ))
            .into());
        }
        (_, v) => v,
    })
}
