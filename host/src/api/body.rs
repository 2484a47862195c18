//! Request bodies in, JSON (or YAML) out, and errors as `{"status", "message"}`.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::model::ConfigError;
use crate::model::parse;
use crate::proxy::Proxy;

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

/// A request body: read within `admin.http` (size at once from `Content-Length`, then
/// while reading; time), checked for its media type, and parsed off the I/O workers so
/// that no request body can stall data sessions.
pub struct Document(pub Value);

impl FromRequest<Arc<Proxy>> for Document {
    type Rejection = ApiError;

    async fn from_request(req: Request, proxy: &Arc<Proxy>) -> Result<Self, ApiError> {
        let limits = proxy.snapshot().admin.http.clone();
        let (parts, body) = req.into_parts();
        let syntax = media_type(&parts.headers)?;
        let bytes = read_body(&parts.headers, body, limits.max_body, limits.body()).await?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ConfigError::malformed("the body is not UTF-8 text"))?;
        if text.trim().is_empty() {
            return Err(ConfigError::malformed("the body is empty").into());
        }
        let value = crate::proxy::off_workers(move || {
            parse::parse_as(&text, syntax).map_err(ConfigError::malformed)
        })
        .await?;
        Ok(Document(value))
    }
}

impl Document {
    /// The object in `{<key>: {...}}`, or the body itself when it is not wrapped. An
    /// object kind's body must be an object either way.
    pub fn unwrap_as(self, key: &str) -> Result<Value, ApiError> {
        let value = match self.0 {
            Value::Object(mut obj) if obj.len() == 1 && obj.contains_key(key) => {
                obj.remove(key).unwrap_or_default()
            }
            v => v,
        };
        if value.is_object() {
            Ok(value)
        } else {
            Err(ConfigError::invalid(format!(
                "the body must be an object, {{\"{key}\": {{...}}}} or {{...}}, not {}",
                kind_of(&value)
            ))
            .into())
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The syntax a `Content-Type` announces; none at all means "either".
fn media_type(headers: &HeaderMap) -> Result<parse::Syntax, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(parse::Syntax::Any);
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" => Ok(parse::Syntax::Any),
        "application/json" | "text/json" => Ok(parse::Syntax::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Ok(parse::Syntax::Yaml)
        }
        other => Err(ConfigError::new(
            415,
            format!(
                "unsupported content type '{other}': send application/json or application/yaml"
            ),
        )
        .into()),
    }
}

/// Reads a body of at most `max` bytes within `timeout`: a larger `Content-Length` is
/// refused before anything is read.
pub async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    max: u64,
    timeout: Option<std::time::Duration>,
) -> Result<Bytes, ConfigError> {
    let too_large = || ConfigError::new(413, format!("the body is larger than {max} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let collect = Limited::new(body, limit).collect();
    let collected = match timeout {
        Some(t) => tokio::time::timeout(t, collect)
            .await
            .map_err(|_| ConfigError::new(408, format!("the body did not arrive within {t:?}")))?,
        None => collect.await,
    };
    collected.map(|c| c.to_bytes()).map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            too_large()
        } else {
            ConfigError::malformed(format!("reading the body: {e}"))
        }
    })
}
