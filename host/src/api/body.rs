//! Request bodies in, JSON (or YAML) out, and errors as `{"status", "message"}`.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::error::ErrorKind;
use crate::core::spec as parse;
use crate::model::ConfigError;
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

/// Every error answer: the HTTP status again, and what was wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub status: u16,
    pub message: String,
}

/// What a change answers: `{"status": 200, "message": "OK"}`, as the original, plus
/// what it accepted but did not use and what it made.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct StatusBody {
    pub status: u16,
    pub message: String,
    /// Unknown fields the change accepted (see `admin.strict`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The object the POST created (the one its body described).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// `DELETE /plugins/{name}`: the plugin, and how many config objects went with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects_deleted: Option<usize>,
}

impl StatusBody {
    pub fn ok() -> StatusBody {
        StatusBody {
            status: 200,
            message: "OK".into(),
            ..StatusBody::default()
        }
    }
}

/// The HTTP status of each kind of error: the one place it is decided.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Malformed => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.0.kind);
        json_response(
            status,
            &ErrorBody {
                status: status.as_u16(),
                message: self.0.message,
            },
        )
    }
}

pub type ApiResult = Result<Response, ApiError>;

pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
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
pub fn reply(query: &Query, body: &impl Serialize) -> ApiResult {
    match query.format.as_deref() {
        // The original's layouts of JSON (its schema's JSONFormat) all answer JSON.
        None | Some("json" | "plain" | "terse" | "space" | "lines" | "diffy") => {
            Ok(json_response(StatusCode::OK, body))
        }
        Some("yaml") => {
            let text =
                serde_yaml::to_string(body).map_err(|e| ConfigError::internal(e.to_string()))?;
            let mut resp = (StatusCode::OK, text).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            Ok(resp)
        }
        Some(other) => {
            Err(ConfigError::malformed(format!(
                "unknown format '{other}' (json, yaml, or the original's plain, terse, space, lines, diffy)"
            ))
            .into())
        }
    }
}

/// `{"status": 200, "message": "OK"}`, with the unknown fields the change accepted.
pub fn ok(warnings: &[String]) -> ApiResult {
    let body = StatusBody {
        warnings: warnings.to_vec(),
        ..StatusBody::ok()
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// OK, naming the first object a POST created (the one its body described).
pub fn created(built: &crate::proxy::Built) -> ApiResult {
    let body = StatusBody {
        warnings: built.warnings.clone(),
        created: Some(
            built
                .created
                .first()
                .map(|(_, name)| name.clone())
                .unwrap_or_default(),
        ),
        ..StatusBody::ok()
    };
    Ok(json_response(StatusCode::OK, &body))
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
        let value = self.unwrapped(key);
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

impl Document {
    /// What `{<key>: ...}` wraps (whatever else the wrapper holds), or the body itself.
    pub fn unwrapped(self, key: &str) -> Value {
        match self.0 {
            Value::Object(mut obj) if obj.contains_key(key) => obj.remove(key).unwrap_or_default(),
            v => v,
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

/// The media types a body may come in, as the original took them.
const MEDIA_TYPES: &str = "application/json, application/x-json, text/json, text/x-json, \
    application/yaml, application/x-yaml, text/yaml or text/x-yaml";

/// The syntax a `Content-Type` announces (with or without parameters). A body without
/// one is refused, as the original refused it: a web page cannot send JSON to the API
/// without a preflight, so the type is also what keeps cross-site requests out.
fn media_type(headers: &HeaderMap) -> Result<parse::Syntax, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ConfigError::new(
            ErrorKind::UnsupportedMedia,
            format!("the body needs a Content-Type: {MEDIA_TYPES}"),
        )
        .into());
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
        "application/json" | "application/x-json" | "text/json" | "text/x-json" => {
            Ok(parse::Syntax::Json)
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => {
            Ok(parse::Syntax::Yaml)
        }
        other => Err(ConfigError::new(
            ErrorKind::UnsupportedMedia,
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
    let too_large = || {
        ConfigError::new(
            ErrorKind::TooLarge,
            format!("the body is larger than {max} bytes"),
        )
    };
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
        Some(t) => tokio::time::timeout(t, collect).await.map_err(|_| {
            ConfigError::new(
                ErrorKind::Timeout,
                format!("the body did not arrive within {t:?}"),
            )
        })?,
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
