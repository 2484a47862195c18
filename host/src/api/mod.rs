//! The REST API (`/api/v1`, l7mp's paths and verbs plus `POST /config` and `PUT`) and
//! the Prometheus exposition at `/metrics`.

pub mod auth;
mod body;
mod handlers;
pub mod openapi;
mod plugins;
mod server;

pub use server::serve;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};

use crate::proxy::Proxy;
use body::{ApiError, ErrorBody, json_response};

pub fn router(proxy: Arc<Proxy>) -> Router {
    use handlers::*;
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/metrics", get(metrics))
        .route("/api/v1/config", get(get_config).post(post_config))
        .route("/api/v1/admin", get(get_admin).post(post_admin))
        .route("/api/v1/openapi.json", get(openapi_json))
        .route("/api/v1/openapi.yaml", get(openapi_yaml))
        .route("/api/v1/sessions", get(list_sessions))
        .route("/api/v1/plugins", get(plugins::list).post(plugins::upload))
        .route(
            "/api/v1/plugins/{name}",
            get(plugins::get).put(plugins::put).delete(plugins::delete),
        )
        .route("/api/v1/plugins/{name}/rollback", post(plugins::rollback))
        .route(
            "/api/v1/sessions/{name}",
            get(get_session).delete(delete_session),
        )
        .route(
            "/api/v1/clusters/{name}/endpoints",
            get(list_endpoints).post(post_endpoint),
        )
        .route(
            "/api/v1/rulelists/{name}/rules/{position}",
            get(get_rule_at).post(post_rule_at).delete(delete_rule_at),
        )
        .route("/api/v1/{kind}", get(list_objects).post(post_object))
        .route(
            "/api/v1/{kind}/{name}",
            get(get_object).put(put_object).delete(delete_object),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            proxy.clone(),
            auth::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            proxy.clone(),
            access_log,
        ))
        .with_state(proxy)
}

/// Every error answer is `{"status", "message"}`: the few that axum's extractors
/// write as plain text (a malformed query string, say) are wrapped.
async fn json_errors(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if resp.status().as_u16() < 400 || is_json {
        return resp;
    }
    let status = resp.status();
    // Extractor messages are a line or two.
    let text = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    json_response(
        status,
        &ErrorBody {
            status: status.as_u16(),
            message,
        },
    )
}

/// One line per API request in `admin.access_log_path`, when it is set: time (Unix
/// seconds), who (the token's name, `-` without one), method, path, status,
/// milliseconds. Refusals are in it too (and in the log).
async fn access_log(
    axum::extract::State(proxy): axum::extract::State<Arc<Proxy>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let Some(path) = proxy.snapshot().admin.access_log_path.clone() else {
        return next.run(req).await;
    };
    let (method, uri, start) = (
        req.method().clone(),
        req.uri().clone(),
        std::time::Instant::now(),
    );
    let resp = next.run(req).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let who = resp
        .extensions()
        .get::<auth::Caller>()
        .map_or("-", auth::Caller::who)
        .to_owned();
    let line = format!(
        "{:.3} {who} {method} {uri} {} {:.3}ms\n",
        now.as_secs_f64(),
        resp.status().as_u16(),
        start.elapsed().as_secs_f64() * 1000.0
    );
    match crate::logging::sink(&path) {
        Ok(mut sink) => crate::logging::write_line(&mut sink, line.as_bytes()),
        Err(e) => tracing::warn!("access log {path}: {e}"),
    }
    resp
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError(crate::model::ConfigError::not_found(format!(
        "no such path: {}",
        uri.path()
    )))
}

async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    json_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &ErrorBody {
            status: 405,
            message: format!("{method} is not allowed on {}", uri.path()),
        },
    )
}
