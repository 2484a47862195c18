//! `/api/v1/plugins`: upload (a new version is a hot swap), list, show, roll back and
//! delete Wasm plugins.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::body::{ApiResult, Query, StatusBody, flag, json_response, read_body, reply};
use crate::model::{ConfigError, Kind};
use crate::plugin::MAX_UPLOAD;
use crate::proxy::Proxy;

type Proxied = State<Arc<Proxy>>;

#[derive(Debug, Default, Deserialize)]
pub struct PluginQuery {
    name: Option<String>,
    version: Option<String>,
    drain: Option<String>,
    recursive: Option<String>,
    format: Option<String>,
}

fn format_of(q: &PluginQuery) -> Query {
    Query {
        recursive: None,
        format: q.format.clone(),
    }
}

fn show(proxy: &Proxy, name: &str, q: &PluginQuery) -> ApiResult {
    let doc = proxy
        .services
        .plugins
        .runtime()
        .plugins
        .render(name)
        .ok_or_else(|| ConfigError::not_found(format!("plugin '{name}' not found")))?;
    reply(&format_of(q), &doc)
}

pub async fn list(State(proxy): Proxied, QueryParams(q): QueryParams<PluginQuery>) -> ApiResult {
    reply(
        &format_of(&q),
        &proxy.services.plugins.runtime().plugins.render_all(),
    )
}

pub async fn get(
    State(proxy): Proxied,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<PluginQuery>,
) -> ApiResult {
    show(&proxy, &name, &q)
}

/// Reads an `application/wasm` body of at most [`MAX_UPLOAD`] bytes, within the API's
/// body timeout.
async fn wasm_body(
    proxy: &Proxy,
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, ConfigError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/wasm")
        && !essence.eq_ignore_ascii_case("application/octet-stream")
    {
        return Err(ConfigError::new(
            crate::core::error::ErrorKind::UnsupportedMedia,
            format!("upload a component as application/wasm, not '{content_type}'"),
        ));
    }
    let timeout = proxy.snapshot().admin.http.body();
    read_body(headers, body, MAX_UPLOAD as u64, timeout).await
}

async fn upload_as(
    proxy: &Proxy,
    name: String,
    q: PluginQuery,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let version = q
        .version
        .clone()
        .ok_or_else(|| ConfigError::malformed("say which version this is: ?version=..."))?;
    let bytes = wasm_body(proxy, &headers, body).await?;
    let rt = proxy.services.plugins.runtime();
    rt.upload(name.clone(), version, bytes).await?;
    let mut resp = show(proxy, &name, &q)?;
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

/// `POST /api/v1/plugins?name=N&version=V` with the component as the body.
pub async fn upload(
    State(proxy): Proxied,
    QueryParams(q): QueryParams<PluginQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let name = q
        .name
        .clone()
        .ok_or_else(|| ConfigError::malformed("say which plugin this is: ?name=...&version=..."))?;
    upload_as(&proxy, name, q, headers, body).await
}

/// `PUT /api/v1/plugins/{name}?version=V`: the same, with the name in the path.
pub async fn put(
    State(proxy): Proxied,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<PluginQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    upload_as(&proxy, name, q, headers, body).await
}

/// `POST /api/v1/plugins/{name}/rollback[?version=V]`.
pub async fn rollback(
    State(proxy): Proxied,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<PluginQuery>,
) -> ApiResult {
    proxy
        .services
        .plugins
        .runtime()
        .plugins
        .rollback(&name, q.version.as_deref())?;
    show(&proxy, &name, &q)
}

/// The config objects that use plugin `name`.
fn users(proxy: &Proxy, name: &str) -> Vec<(Kind, String)> {
    let snap = proxy.snapshot();
    let mut found = Vec::new();
    for (n, l) in &snap.listeners {
        if l.protocol.plugin() == Some(name) {
            found.push((Kind::Listener, n.clone()));
        }
    }
    for (n, c) in &snap.clusters {
        if c.protocol.plugin() == Some(name) {
            found.push((Kind::Cluster, n.clone()));
        }
    }
    for (n, r) in &snap.rules {
        if r.predicate.plugins().contains(&name) {
            found.push((Kind::Rule, n.clone()));
        }
    }
    found
}

/// `DELETE /api/v1/plugins/{name}`: refused while config objects use the plugin
/// (unless `recursive=true`, which deletes them and ends their sessions) or while
/// sessions run on it (unless `drain=true`, which lets them finish on the version
/// they have).
pub async fn delete(
    State(proxy): Proxied,
    Path(name): Path<String>,
    QueryParams(q): QueryParams<PluginQuery>,
) -> ApiResult {
    let plugins = &proxy.services.plugins.runtime().plugins;
    if !plugins.exists(&name) {
        return Err(ConfigError::not_found(format!("plugin '{name}' not found")).into());
    }
    let (recursive, drain) = (flag(q.recursive.as_deref()), flag(q.drain.as_deref()));
    let users = users(&proxy, &name);
    if !users.is_empty() && !recursive {
        let list: Vec<String> = users
            .iter()
            .map(|(k, n)| format!("{} '{n}'", k.singular()))
            .collect();
        return Err(ConfigError::conflict(format!(
            "plugin '{name}' is in use by {} (delete them first, or use recursive=true)",
            list.join(", ")
        ))
        .into());
    }
    let live = plugins.live_instances(&name);
    if live > 0 && !drain && !recursive {
        return Err(ConfigError::conflict(format!(
            "plugin '{name}' serves {live} live instance(s) (use drain=true to let their sessions finish)"
        ))
        .into());
    }
    for (kind, object) in &users {
        match proxy.delete(*kind, object, true).await {
            Ok(()) => {}
            // Gone already with an earlier object of the list.
            Err(e) if e.kind == crate::core::error::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    plugins.remove(&name)?;
    let body = StatusBody {
        deleted: Some(name),
        objects_deleted: Some(users.len()),
        ..StatusBody::ok()
    };
    Ok(json_response(StatusCode::OK, &body))
}
