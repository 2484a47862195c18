//! Connecting a session's stages: each through its cluster's load balancer, under the
//! route's retry policy, at setup and again when an established connection breaks.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::engine::Engine;
use super::error::ReconnectError;
use super::stage::Reconnect;
use super::{Session, StageEndpoint, StageRef, StageStatus};
use crate::core::{Conn, EndpointRef, Stage, Target};
use crate::model::{Retry, Snapshot};

/// Why one attempt to open a stage failed: what a retry policy branches on.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cluster '{0}' not found")]
    NoCluster(String),
    #[error("cluster '{0}' has no endpoint")]
    NoEndpoint(String),
    /// The attempt took the route's whole `retry.timeout`.
    #[error("connect timed out after {0} ms")]
    Timeout(u64),
    /// The endpoint answered, and said no.
    #[error("{0}")]
    Refused(io::Error),
    #[error("{0}")]
    Failed(io::Error),
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
                ConnectError::Refused(e)
            }
            _ => ConnectError::Failed(e),
        }
    }
}

impl ConnectError {
    /// Whether the next attempt should wait first: one that timed out has waited
    /// already.
    fn backs_off(&self) -> bool {
        !matches!(self, ConnectError::Timeout(_))
    }
}

/// A stage that could not be opened, with the cluster it belongs to.
#[derive(Debug, thiserror::Error)]
#[error("cluster '{cluster}': {error}")]
pub struct StageFailed {
    pub cluster: String,
    pub error: ConnectError,
}

/// One attempt on the cluster as `snap` has it.
async fn attempt(
    snap: &Snapshot,
    session: &Session,
    at: StageRef,
    cluster_name: &str,
    retry: Retry,
    failed: &[String],
    tried: &mut Option<String>,
) -> Result<Stage, ConnectError> {
    let cluster = snap
        .clusters
        .get(cluster_name)
        .ok_or_else(|| ConnectError::NoCluster(cluster_name.to_owned()))?;
    let endpoint = cluster
        .balancer
        .pick_avoiding(&session.state().metadata, failed);
    *tried = endpoint.as_ref().map(|e| e.name.clone());
    if cluster.protocol.needs_endpoint() && endpoint.is_none() {
        return Err(ConnectError::NoEndpoint(cluster_name.to_owned()));
    }
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
        endpoint: endpoint.as_deref().map(|e| EndpointRef {
            name: &e.name,
            spec: &e.spec,
        }),
        metadata: &metadata,
    };
    match tokio::time::timeout(
        Duration::from_millis(retry.timeout.max(1)),
        cluster.protocol.connect(target),
    )
    .await
    {
        Ok(Ok(stage)) => Ok(stage),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ConnectError::Timeout(retry.timeout)),
    }
}

/// Opens one stage, trying up to `attempts` times, each bounded by the retry timeout.
/// Each attempt prefers an endpoint that has not failed yet (`failed` starts with the
/// endpoints the caller already saw fail), so a retry fails over whatever the
/// balancer's policy.
pub(super) async fn connect(
    engine: &Engine,
    snap: &Snapshot,
    session: &Session,
    (at, cluster_name): (StageRef, &str),
    retry: Retry,
    attempts: u32,
    mut failed: Vec<String>,
) -> Result<Stage, StageFailed> {
    let m = &engine.metrics;
    let attempts = attempts.max(1);
    let mut attempt_no = 1;
    loop {
        let mut tried = None;
        match attempt(snap, session, at, cluster_name, retry, &failed, &mut tried).await {
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
            Err(error) => {
                m.cluster_connect_failures
                    .with_label_values(&[cluster_name])
                    .inc();
                session.event(
                    "CONNECT_FAILED",
                    format!(
                        "cluster '{cluster_name}': attempt {attempt_no} of {attempts}: {error}"
                    ),
                    json!({ "cluster": cluster_name, "attempt": attempt_no }),
                );
                failed.extend(tried);
                if attempt_no >= attempts {
                    return Err(StageFailed {
                        cluster: cluster_name.to_owned(),
                        error,
                    });
                }
                session.with_stage(at, |s| s.status = StageStatus::Retrying);
                if error.backs_off() {
                    tokio::time::sleep(backoff(attempt_no)).await;
                }
                attempt_no += 1;
            }
        }
    }
}

/// Pause before retry `attempt + 1`: 100 ms, doubling, at most a second.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << (attempt - 1).min(4)).min(1000))
}

/// Replaces a stage's broken connection under the route's retry policy.
pub(super) struct StageRetry {
    pub(super) engine: Arc<Engine>,
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

    async fn reconnect(&self, why: &str, progressed: bool) -> Result<Conn, ReconnectError> {
        self.engine
            .metrics
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
            return Err(ReconnectError::Exhausted {
                cluster: self.cluster.clone(),
                why: why.to_owned(),
            });
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
            &self.engine,
            &self.engine.snapshot(),
            &self.session,
            (self.at, &self.cluster),
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
            Stage::Transform(_) => Err(ReconnectError::NotNetwork(self.cluster.clone())),
        }
    }
}
