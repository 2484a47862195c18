//! The REST API and the metrics exposition as l7mp configs declare them: an `HTTP`
//! listener whose rules route to an `L7mpController` or `Prometheus` cluster serves
//! the API (and `/metrics`) on its port. General HTTP proxying is a protocol of its
//! own and not part of this file.

use std::io;

use async_trait::async_trait;
use serde::Deserialize;

use super::{ClusterProtocol, ListenerContext, ListenerProtocol, ListenerTask, Stage, Target, net};
use crate::model::Snapshot;

pub const CONTROLLER: &str = "L7mpController";
pub const PROMETHEUS: &str = "Prometheus";

/// `L7mpController` and `Prometheus` clusters: only HTTP listeners can route to them.
#[derive(Debug)]
pub struct ServiceCluster {
    pub name: &'static str,
}

#[async_trait]
impl ClusterProtocol for ServiceCluster {
    fn name(&self) -> &'static str {
        self.name
    }
    async fn connect(&self, _target: Target<'_>) -> io::Result<Stage> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the {} cluster is served by HTTP listeners only", self.name),
        ))
    }
}

#[derive(Debug, Deserialize)]
pub struct HttpListenerSpec {
    #[allow(dead_code)]
    protocol: String,
    port: u16,
    #[serde(default)]
    address: Option<String>,
}

/// Whether every route the listener's rules can reach ends in a controller or
/// Prometheus cluster.
fn serves_only_controller(snap: &Snapshot, listener: &str) -> Result<(), String> {
    let rulelist = snap
        .listeners
        .get(listener)
        .map(|l| l.rules.clone())
        .unwrap_or_default();
    let mut pending = vec![rulelist];
    let mut seen = Vec::new();
    while let Some(name) = pending.pop() {
        if seen.contains(&name) {
            continue;
        }
        let rules = snap
            .rulelists
            .get(&name)
            .ok_or_else(|| format!("rulelist '{name}' not found"))?;
        for rule in rules.rules.iter().filter_map(|r| snap.rules.get(r)) {
            if let Some(apply) = &rule.action.apply {
                pending.push(apply.clone());
            }
            let Some(route) = rule.action.route.as_ref().and_then(|r| snap.routes.get(r)) else {
                continue;
            };
            let cluster = route
                .destination
                .as_ref()
                .and_then(|c| snap.clusters.get(c));
            let proto = cluster
                .map(|c| c.protocol.name())
                .unwrap_or("an unknown cluster");
            if proto != CONTROLLER && proto != PROMETHEUS {
                return Err(format!(
                    "HTTP listeners route only to L7mpController or Prometheus clusters so far; route '{}' goes to {proto}",
                    route.name
                ));
            }
        }
        seen.push(name);
    }
    Ok(())
}

#[async_trait]
impl ListenerProtocol for HttpListenerSpec {
    fn name(&self) -> &'static str {
        "HTTP"
    }
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        serves_only_controller(&cx.snapshot, &cx.name)
            .map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
        let addr = net::bind_addr(self.address.as_deref(), self.port)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| net::at(addr, e))?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(crate::api::serve(listener, cx.proxy.clone()));
        Ok(ListenerTask::new(local.to_string(), task))
    }
}
