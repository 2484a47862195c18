//! One handler per path and verb.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query as QueryParams, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::auth::Caller;
use super::body::{ApiResult, Document, Query, created, json_response, ok, reply};
use crate::model::config::CONFIG_SECTIONS;
use crate::model::inline::Builder;
use crate::model::view::{ListenerStatus, ObjectView, ObjectsView};
use crate::model::{Admin, ConfigError, Kind, RuleList, render};
use crate::proxy::Proxy;
use crate::session::view::SessionView;

type Proxied = State<Arc<Proxy>>;
type Q = QueryParams<Query>;

fn kind(collection: &str) -> Result<Kind, ConfigError> {
    Kind::from_collection(collection)
        .ok_or_else(|| ConfigError::not_found(format!("no such collection: '{collection}'")))
}

pub async fn metrics(State(proxy): State<Arc<Proxy>>) -> Response {
    let services = &proxy.services;
    services.plugins.publish_metrics();
    let mut resp = services.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

pub async fn openapi_json() -> Response {
    json_response(StatusCode::OK, super::openapi::document())
}

pub async fn openapi_yaml() -> ApiResult {
    let query = Query {
        format: Some("yaml".into()),
        recursive: None,
    };
    reply(&query, super::openapi::document())
}

fn session_views(proxy: &Proxy) -> Vec<SessionView> {
    let snap = proxy.snapshot();
    proxy.sessions.all().iter().map(|s| s.view(&snap)).collect()
}

/// The admin settings as `GET /admin` shows them: with the version and what the
/// proxy reports about its state (these extra keys are ignored when posted back).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminView {
    #[serde(flatten)]
    pub admin: Admin,
    pub version: &'static str,
    pub offload_status: OffloadStatus,
    pub plugin_memory: PluginMemory,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OffloadStatus {
    /// Sessions are moved into the kernel.
    pub active: bool,
    /// Why not, or where.
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PluginMemory {
    pub held_mb: u64,
    pub budget_mb: u64,
}

fn admin_view(proxy: &Proxy) -> AdminView {
    let offload = &proxy.services.offload;
    let (held_mb, budget_mb) = crate::plugin::memory::usage_mb();
    AdminView {
        admin: proxy.snapshot().admin.clone(),
        version: env!("CARGO_PKG_VERSION"),
        offload_status: OffloadStatus {
            active: offload.active(),
            reason: offload.reason(),
        },
        plugin_memory: PluginMemory { held_mb, budget_mb },
    }
}

/// `GET /config`: the config document, with the running sessions as the original
/// showed them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigView {
    pub admin: AdminView,
    #[serde(flatten)]
    pub objects: ObjectsView,
    pub sessions: Vec<SessionView>,
}

pub async fn get_config(State(proxy): Proxied, QueryParams(q): Q) -> ApiResult {
    let doc = ConfigView {
        admin: admin_view(&proxy),
        objects: render::objects(&proxy.snapshot()),
        sessions: session_views(&proxy),
    };
    reply(&q, &doc)
}

pub async fn post_config(
    State(proxy): Proxied,
    Extension(caller): Extension<Caller>,
    doc: Document,
) -> ApiResult {
    let doc = doc.unwrap_as("config")?;
    // Unlike a config file, a posted config replaces a running one: a misdirected
    // body (say `{"listener": ...}` meant for /listeners) must not empty the proxy.
    if let Some(unknown) = doc
        .as_object()
        .and_then(|o| o.keys().find(|k| !CONFIG_SECTIONS.contains(&k.as_str())))
    {
        return Err(ConfigError::invalid(format!(
            "config: unknown section '{unknown}' (POST /api/v1/config replaces the whole configuration)"
        ))
        .into());
    }
    let warnings = proxy.load_config(caller.host_access(), doc).await?;
    ok(&warnings)
}

pub async fn get_admin(State(proxy): Proxied, QueryParams(q): Q) -> ApiResult {
    reply(&q, &admin_view(&proxy))
}

pub async fn post_admin(
    State(proxy): Proxied,
    Extension(caller): Extension<Caller>,
    doc: Document,
) -> ApiResult {
    let admin = doc.unwrap_as("admin")?;
    let warnings = proxy.update_admin(caller.host_access(), &admin).await?;
    ok(&warnings)
}

pub async fn list_objects(
    State(proxy): Proxied,
    Path(collection): Path<String>,
    QueryParams(q): Q,
) -> ApiResult {
    let kind = kind(&collection)?;
    reply(
        &q,
        &render::collection(&proxy.snapshot(), kind, q.recursive()),
    )
}

pub async fn post_object(
    State(proxy): Proxied,
    Extension(caller): Extension<Caller>,
    Path(collection): Path<String>,
    doc: Document,
) -> ApiResult {
    let kind = kind(&collection)?;
    let value = doc.unwrap_as(kind.singular())?;
    let created_objects = proxy
        .add(caller.host_access(), move |b| {
            match kind {
                Kind::Listener => b.add_listener(&value)?,
                Kind::Cluster => b.add_cluster(&value, None)?,
                Kind::RuleList => b.add_rulelist(&value, None)?,
                Kind::Rule => b.add_rule(&value, None)?,
                Kind::Route => b.add_route(&value, None)?,
                Kind::Endpoint => {
                    let cluster = value.get("cluster").and_then(Value::as_str).ok_or_else(|| {
                        ConfigError::invalid("an endpoint needs its 'cluster', or POST it to /api/v1/clusters/{name}/endpoints")
                    })?;
                    b.add_endpoint(cluster, &value)?
                }
            };
            Ok(())
        })
        .await?;
    created(&created_objects)
}

pub async fn get_object(
    State(proxy): Proxied,
    Path((collection, name)): Path<(String, String)>,
    QueryParams(q): Q,
) -> ApiResult {
    let kind = kind(&collection)?;
    let snap = proxy.snapshot();
    let mut object = render::object(&snap, kind, &name, q.recursive())
        .ok_or_else(|| ConfigError::not_found(format!("{} '{name}' not found", kind.singular())))?;
    if let ObjectView::Listener(listener) = &mut object {
        listener.status = proxy
            .bound_address(&name)
            .map(|address| ListenerStatus { address });
    }
    reply(&q, &object)
}

pub async fn put_object(
    State(proxy): Proxied,
    Extension(caller): Extension<Caller>,
    Path((collection, name)): Path<(String, String)>,
    doc: Document,
) -> ApiResult {
    let kind = kind(&collection)?;
    let value = doc.unwrap_as(kind.singular())?;
    let warnings = proxy
        .replace(caller.host_access(), kind, &name, value)
        .await?;
    ok(&warnings)
}

pub async fn delete_object(
    State(proxy): Proxied,
    Path((collection, name)): Path<(String, String)>,
    QueryParams(q): Q,
) -> ApiResult {
    let kind = kind(&collection)?;
    proxy.delete(kind, &name, q.recursive()).await?;
    ok(&[])
}

pub async fn list_sessions(State(proxy): Proxied, QueryParams(q): Q) -> ApiResult {
    reply(&q, &session_views(&proxy))
}

pub async fn get_session(
    State(proxy): Proxied,
    Path(name): Path<String>,
    QueryParams(q): Q,
) -> ApiResult {
    let session = proxy
        .sessions
        .get(&name)
        .ok_or_else(|| ConfigError::not_found(format!("session '{name}' not found")))?;
    reply(&q, &session.view(&proxy.snapshot()))
}

pub async fn delete_session(State(proxy): Proxied, Path(name): Path<String>) -> ApiResult {
    let session = proxy
        .sessions
        .get(&name)
        .ok_or_else(|| ConfigError::not_found(format!("session '{name}' not found")))?;
    if session.state().ended.is_some() {
        proxy.sessions.remove(&name);
    } else {
        session.kill.cancel();
    }
    ok(&[])
}

pub async fn list_endpoints(
    State(proxy): Proxied,
    Path(cluster): Path<String>,
    QueryParams(q): Q,
) -> ApiResult {
    let snap = proxy.snapshot();
    let c = snap
        .clusters
        .get(&cluster)
        .ok_or_else(|| ConfigError::not_found(format!("cluster '{cluster}' not found")))?;
    reply(&q, &render::endpoints(c))
}

pub async fn post_endpoint(
    State(proxy): Proxied,
    Extension(caller): Extension<Caller>,
    Path(cluster): Path<String>,
    doc: Document,
) -> ApiResult {
    let value = doc.unwrap_as("endpoint")?;
    let names = proxy
        .add(caller.host_access(), move |b| {
            b.add_endpoint(&cluster, &value).map(drop)
        })
        .await?;
    created(&names)
}

/// A rule's index in a rulelist: a number, or the rule's name.
fn position(rl: &RuleList, position: &str, inserting: bool) -> Result<usize, ConfigError> {
    let limit = if inserting {
        rl.rules.len()
    } else {
        rl.rules.len().saturating_sub(1)
    };
    match position.parse::<usize>() {
        Ok(i) if i <= limit && (inserting || !rl.rules.is_empty()) => Ok(i),
        Ok(i) => Err(ConfigError::not_found(format!(
            "rulelist '{}' has no position {i}",
            rl.name
        ))),
        Err(_) => rl.rules.iter().position(|r| r == position).ok_or_else(|| {
            ConfigError::not_found(format!("rulelist '{}' has no rule '{position}'", rl.name))
        }),
    }
}

fn rulelist(proxy: &Proxy, name: &str) -> Result<Arc<RuleList>, ConfigError> {
    proxy
        .snapshot()
        .rulelists
        .get(name)
        .cloned()
        .ok_or_else(|| ConfigError::not_found(format!("rulelist '{name}' not found")))
}

pub async fn get_rule_at(
    State(proxy): Proxied,
    Path((name, pos)): Path<(String, String)>,
    QueryParams(q): Q,
) -> ApiResult {
    let rl = rulelist(&proxy, &name)?;
    let rule_name = &rl.rules[position(&rl, &pos, false)?];
    let snap = proxy.snapshot();
    let rule = snap
        .rules
        .get(rule_name)
        .ok_or_else(|| ConfigError::not_found(format!("rule '{rule_name}' not found")))?;
    reply(&q, &render::rule(&snap, rule, q.recursive()))
}

fn with_rules(rl: &RuleList, rules: Vec<String>) -> Arc<RuleList> {
    Arc::new(RuleList {
        name: rl.name.clone(),
        rules,
        autogenerated: rl.autogenerated,
    })
}

pub async fn post_rule_at(
    State(proxy): Proxied,
    Extension(caller): Extension<Caller>,
    Path((name, pos)): Path<(String, String)>,
    doc: Document,
) -> ApiResult {
    // A rule object, or the name of an existing rule (the schema's RuleRequestUnchecked).
    let value = match doc.unwrapped("rule") {
        name @ Value::String(_) => name,
        other => Document(other).unwrap_as("rule")?,
    };
    let created_objects = proxy
        .add(caller.host_access(), move |b: &mut Builder| {
            let rl =
                b.snap.rulelists.get(&name).cloned().ok_or_else(|| {
                    ConfigError::not_found(format!("rulelist '{name}' not found"))
                })?;
            let at = position(&rl, &pos, true)?;
            let rule = b.rule_ref(&value, format!("{name}-Rule-{}", rl.rules.len()))?;
            let mut rules = rl.rules.clone();
            rules.insert(at, rule);
            b.snap
                .rulelists
                .insert(name.clone(), with_rules(&rl, rules));
            Ok(())
        })
        .await?;
    created(&created_objects)
}

pub async fn delete_rule_at(
    State(proxy): Proxied,
    Extension(caller): Extension<Caller>,
    Path((name, pos)): Path<(String, String)>,
    QueryParams(q): Q,
) -> ApiResult {
    let rl = rulelist(&proxy, &name)?;
    let at = position(&rl, &pos, false)?;
    let rule = rl.rules[at].clone();
    proxy
        .add(caller.host_access(), move |b: &mut Builder| {
            let mut rules = rl.rules.clone();
            rules.remove(at);
            b.snap
                .rulelists
                .insert(name.clone(), with_rules(&rl, rules));
            Ok(())
        })
        .await?;
    // Recursive: the rule goes too, as the schema says (and what it made inline).
    if q.recursive() && proxy.snapshot().rules.contains_key(&rule) {
        proxy.delete(Kind::Rule, &rule, true).await?;
    }
    ok(&[])
}
