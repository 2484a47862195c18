//! Routing: a listener's rulelists, their predicates and rewrites, down to a route.
//! Pure: it reads one configuration snapshot and a session's metadata, and touches no
//! socket, so sessions and HTTP requests route the same way and tests need no network.

use std::sync::Arc;

use serde_json::Value;

use crate::model::{Kind, Route, Snapshot};

/// How deep `apply` may chain rulelists (a loop would otherwise never end).
pub const MAX_APPLY_DEPTH: usize = 16;

/// Why a session has no route. The words are the original's where it had them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("listener '{0}' not found")]
    NoListener(String),
    #[error("rulelist '{0}' not found")]
    NoRuleList(String),
    #[error("No route for session")]
    NoMatch,
    #[error("route '{0}' not found")]
    NoRoute(String),
    #[error("rule '{rule}': rewrite: {error}")]
    Rewrite { rule: String, error: String },
    #[error("rule '{0}' has neither a route nor an apply")]
    NoAction(String),
    #[error("rulelists apply each other more than {MAX_APPLY_DEPTH} deep")]
    TooDeep,
}

/// Finds the route for a session of `listener`, applying the matching rules' rewrites
/// to `metadata` on the way; `uses` collects the objects it went through (their
/// recursive deletion ends the session).
pub async fn route(
    snap: &Snapshot,
    listener: &str,
    metadata: &mut Value,
    uses: &mut Vec<(Kind, String)>,
) -> Result<Arc<Route>, RouteError> {
    let l = snap
        .listeners
        .get(listener)
        .ok_or_else(|| RouteError::NoListener(listener.to_owned()))?;
    let mut rulelist = l.rules.clone();
    for _ in 0..MAX_APPLY_DEPTH {
        let rl = snap
            .rulelists
            .get(&rulelist)
            .ok_or_else(|| RouteError::NoRuleList(rulelist.clone()))?;
        uses.push((Kind::RuleList, rl.name.clone()));
        let mut found = None;
        for rule in rl.rules.iter().filter_map(|name| snap.rules.get(name)) {
            let matched = if rule.predicate.calls_plugin() {
                rule.predicate.eval_async(metadata).await
            } else {
                rule.predicate.eval(metadata)
            };
            if matched {
                found = Some(rule);
                break;
            }
        }
        let rule = found.ok_or(RouteError::NoMatch)?;
        uses.push((Kind::Rule, rule.name.clone()));
        for rewrite in &rule.action.rewrite {
            rewrite
                .path
                .set(metadata, rewrite.value.clone())
                .map_err(|e| RouteError::Rewrite {
                    rule: rule.name.clone(),
                    error: e.to_string(),
                })?;
        }
        if let Some(route) = &rule.action.route {
            let route = snap
                .routes
                .get(route)
                .ok_or_else(|| RouteError::NoRoute(route.clone()))?;
            uses.push((Kind::Route, route.name.clone()));
            return Ok(route.clone());
        }
        match &rule.action.apply {
            Some(next) => rulelist = next.clone(),
            None => return Err(RouteError::NoAction(rule.name.clone())),
        }
    }
    Err(RouteError::TooDeep)
}

/// Whether any rule reachable from a listener routes to a cluster `wanted` accepts
/// (the config declares where the API is served when one routes to the controller).
pub fn reaches(
    snap: &Snapshot,
    listener: &str,
    wanted: impl Fn(&crate::model::Cluster) -> bool,
) -> bool {
    let Some(l) = snap.listeners.get(listener) else {
        return false;
    };
    let mut pending = vec![l.rules.clone()];
    let mut seen = Vec::new();
    while let Some(name) = pending.pop() {
        if seen.contains(&name) {
            continue;
        }
        for rule in snap
            .rulelists
            .get(&name)
            .iter()
            .flat_map(|rl| rl.rules.iter())
            .filter_map(|r| snap.rules.get(r))
        {
            pending.extend(rule.action.apply.clone());
            let cluster = rule
                .action
                .route
                .as_ref()
                .and_then(|r| snap.routes.get(r))
                .and_then(|route| snap.clusters.get(&route.destination));
            if cluster.is_some_and(|c| wanted(c)) {
                return true;
            }
        }
        seen.push(name);
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::core::spec::Validation;

    /// A configuration built from a document, without binding anything.
    fn snapshot(doc: Value) -> Snapshot {
        let services = crate::services::Services::new(None);
        crate::registry::build(
            &Snapshot::default(),
            Validation::LENIENT,
            &services,
            true,
            |b| b.add_config(&doc),
        )
        .map(|change| change.snap)
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn config(rulelists: Value) -> Value {
        json!({
            "admin": {},
            "listeners": [{"name": "l", "spec": {"protocol": "UDP", "port": 0}, "rules": "main"}],
            "clusters": [
                {"name": "a", "spec": {"protocol": "Echo"}},
                {"name": "b", "spec": {"protocol": "Discard"}}
            ],
            "rulelists": rulelists
        })
    }

    async fn route_of(snap: &Snapshot, metadata: Value) -> (Result<String, RouteError>, Value) {
        let mut metadata = metadata;
        let mut uses = Vec::new();
        let routed = route(snap, "l", &mut metadata, &mut uses).await;
        (routed.map(|r| r.destination.clone()), metadata)
    }

    #[tokio::test]
    async fn the_first_matching_rule_routes_and_its_rewrites_stay() {
        let snap = snapshot(config(json!([{"name": "main", "rules": [
            {"name": "to-b", "match": {"op": "test", "path": "/user", "value": "bob"},
             "action": {"rewrite": [{"path": "/labels/tier", "value": "gold"}],
                        "route": {"destination": "b"}}},
            {"name": "to-a", "action": {"route": {"destination": "a"}}}
        ]}])));
        let (routed, md) = route_of(&snap, json!({"user": "bob"})).await;
        assert_eq!(routed.unwrap(), "b");
        assert_eq!(md["labels"]["tier"], "gold");
        let (routed, md) = route_of(&snap, json!({"user": "eve"})).await;
        assert_eq!(routed.unwrap(), "a");
        assert!(md.get("labels").is_none());
    }

    #[tokio::test]
    async fn apply_chains_rulelists_and_a_loop_is_an_error() {
        let snap = snapshot(config(json!([
            {"name": "main", "rules": [{"name": "go", "action": {"apply": "next"}}]},
            {"name": "next", "rules": [
                {"name": "n1", "match": {"op": "test", "path": "/x", "value": 1},
                 "action": {"route": {"destination": "a"}}},
                {"name": "back", "action": {"apply": "main"}}
            ]}
        ])));
        assert_eq!(route_of(&snap, json!({"x": 1})).await.0.unwrap(), "a");
        assert_eq!(route_of(&snap, json!({})).await.0, Err(RouteError::TooDeep));
    }

    #[tokio::test]
    async fn no_matching_rule_and_unknown_listener_say_so() {
        let snap = snapshot(config(json!([{"name": "main", "rules": [
            {"name": "only", "match": {"op": "test", "path": "/x", "value": 1},
             "action": {"route": {"destination": "a"}}}
        ]}])));
        assert_eq!(route_of(&snap, json!({})).await.0, Err(RouteError::NoMatch));
        let mut md = json!({});
        let e = route(&snap, "nope", &mut md, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "listener 'nope' not found");
        assert!(reaches(&snap, "l", |c| c.name == "a"));
        assert!(!reaches(&snap, "l", |c| c.name == "b"));
    }
}
