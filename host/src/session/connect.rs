//! Connecting a session's stages: each through its cluster's load balancer, under the
//! route's retry policy, at setup and again when an established connection breaks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::stage::Reconnect;
use super::{Session, StageEndpoint, StageRef, StageStatus};
use crate::metrics;
use crate::model::Retry;
use crate::protocol::{Conn, Stage, Target};
use crate::proxy::Proxy;

/// Opens one stage, trying up to `attempts` times, each bounded by the retry timeout.
/// Each attempt prefers an endpoint that has not failed yet (`failed` starts with the
/// endpoints the caller already saw fail), so a retry fails over whatever the
/// balancer's policy.
pub(super) async fn connect(
    proxy: &Proxy,
    session: &Session,
    at: StageRef,
    cluster_name: &str,
    retry: Retry,
    attempts: u32,
    mut failed: Vec<String>,
) -> Result<Stage, String> {
    let m = metrics::global();
    let mut last_error = String::new();
    for attempt in 1..=attempts.max(1) {
        let snap = proxy.snapshot();
        let mut tried = None;
        let result = match snap.clusters.get(cluster_name) {
            None => Err(format!("cluster '{cluster_name}' not found")),
            Some(cluster) => {
                let endpoint = cluster
                    .balancer
                    .pick_avoiding(&session.state().metadata, &failed);
                tried = endpoint.as_ref().map(|e| e.name.clone());
                if cluster.protocol.needs_endpoint() && endpoint.is_none() {
                    Err(format!("cluster '{cluster_name}' has no endpoint"))
                } else {
                    let virtual_ = cluster.protocol.is_virtual();
                    session.with_stage(at, |s| {
                        s.endpoint = match &endpoint {
                            Some(e) => Some(StageEndpoint::Endpoint(e.clone())),
                            None if virtual_ => Some(StageEndpoint::Virtual),
                            None => None,
                        }
                    });
                    let metadata = session.state().metadata.clone();
                    let target = Target {
                        cluster: cluster_name,
                        session: &session.name,
                        egress: matches!(at, StageRef::Egress(_)),
                        endpoint: endpoint.as_deref(),
                        metadata: &metadata,
                    };
                    match tokio::time::timeout(
                        Duration::from_millis(retry.timeout.max(1)),
                        cluster.protocol.connect(target),
                    )
                    .await
                    {
                        Ok(Ok(stage)) => Ok(stage),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("connect timed out after {} ms", retry.timeout)),
                    }
                }
            }
        };
        match result {
            Ok(stage) => {
                m.cluster_sessions.with_label_values(&[cluster_name]).inc();
                m.cluster_active.with_label_values(&[cluster_name]).inc();
                let peer = if let Stage::Conn(c) = &stage {
                    Some(c.peer.clone())
                } else {
                    None
                };
                session.with_stage(at, |s| {
                    s.status = StageStatus::Connected;
                    s.peer = peer;
                });
                return Ok(stage);
            }
            Err(e) => {
                m.cluster_connect_failures
                    .with_label_values(&[cluster_name])
                    .inc();
                session.event(
                    "CONNECT_FAILED",
                    format!("cluster '{cluster_name}': attempt {attempt} of {attempts}: {e}"),
                    json!({ "cluster": cluster_name, "attempt": attempt }),
                );
                last_error = e;
                failed.extend(tried);
                if attempt < attempts {
                    session.with_stage(at, |s| s.status = StageStatus::Retrying);
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }
    Err(format!("cluster '{cluster_name}': {last_error}"))
}

/// Pause before retry `attempt + 1`: 100 ms, doubling, at most a second.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << (attempt - 1).min(4)).min(1000))
}

/// Replaces a stage's broken connection under the route's retry policy.
pub(super) struct StageRetry {
    pub(super) proxy: Arc<Proxy>,
    pub(super) session: Arc<Session>,
    pub(super) at: StageRef,
    pub(super) cluster: String,
    pub(super) retry: Retry,
    /// Reconnects left before one succeeds in moving data again.
    pub(super) budget: AtomicU32,
    /// Reconnects in a row whose connection moved nothing: each waits longer.
    pub(super) fruitless: AtomicU32,
}

#[async_trait::async_trait]
impl Reconnect for StageRetry {
    fn allowed(&self) -> bool {
        self.retry.on_disconnect()
    }

    async fn reconnect(&self, why: &str, progressed: bool) -> Result<Conn, String> {
        metrics::global()
            .cluster_active
            .with_label_values(&[&self.cluster])
            .dec();
        if progressed {
            self.budget.store(self.retry.num_retries, Ordering::Relaxed);
            self.fruitless.store(0, Ordering::Relaxed);
        }
        let left = self.budget.load(Ordering::Relaxed);
        self.session.event(
            "DISCONNECT",
            format!("cluster '{}': {why}", self.cluster),
            json!({ "cluster": self.cluster }),
        );
        if left == 0 {
            return Err(format!(
                "cluster '{}': {why}; no retries left",
                self.cluster
            ));
        }
        self.budget.store(left - 1, Ordering::Relaxed);
        let broken_endpoint = self
            .session
            .with_stage(self.at, |s| {
                s.status = StageStatus::Retrying;
                s.endpoint_name().map(str::to_owned)
            })
            .flatten();
        // A connection that broke before moving anything is likely to break again:
        // wait before the next one, longer each time.
        let fruitless = self.fruitless.fetch_add(1, Ordering::Relaxed);
        if fruitless > 0 {
            tokio::time::sleep(backoff(fruitless)).await;
        }
        match connect(
            &self.proxy,
            &self.session,
            self.at,
            &self.cluster,
            self.retry,
            self.retry.num_retries.max(1),
            broken_endpoint.into_iter().collect(),
        )
        .await?
        {
            Stage::Conn(conn) => {
                self.session.event(
                    "RECONNECTED",
                    format!("cluster '{}': reconnected", self.cluster),
                    Value::Null,
                );
                Ok(conn)
            }
            Stage::Transform(_) | Stage::Plugin(_) => Err(format!(
                "cluster '{}' is no longer a network cluster",
                self.cluster
            )),
        }
    }
}
