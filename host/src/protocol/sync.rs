//! `Sync`: sessions whose metadata has the same value at `query` form a broadcast
//! group; every member's input goes to every other member. A session with no value
//! there is rejected. Chunks keep their boundaries; a member that cannot keep up
//! loses chunks rather than stalling the group.

use crate::core::build::Protocol;
use crate::core::spec::Validation;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Stage, Target};
use crate::json::pointer::Pointer;

pub const NAME: &str = "Sync";
/// Chunks queued for one member.
const MEMBER_QUEUE: usize = 256;

#[derive(Deserialize, utoipa::ToSchema)]
struct SyncSpec {
    query: String,
}

type Members = Arc<Mutex<HashMap<u64, mpsc::Sender<Bytes>>>>;

#[derive(Debug)]
pub struct SyncCluster {
    query: Pointer,
    groups: Mutex<HashMap<String, Members>>,
    next_member: AtomicU64,
}

impl SyncCluster {
    pub fn from_spec(
        spec: &serde_json::Value,
        strict: Validation,
    ) -> crate::core::Result<SyncCluster> {
        let spec: SyncSpec = crate::core::spec::typed(spec, "spec", strict)?;
        Ok(SyncCluster {
            query: Pointer::parse(&spec.query)
                .map_err(|e| crate::core::ConfigError::invalid(format!("spec.query: {e}")))?,
            groups: Mutex::default(),
            next_member: AtomicU64::new(0),
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A member's receiving half; leaving the group when dropped.
struct MemberRx {
    rx: mpsc::Receiver<Bytes>,
    id: u64,
    members: Members,
}

impl Drop for MemberRx {
    fn drop(&mut self) {
        lock(&self.members).remove(&self.id);
    }
}

#[async_trait]
impl ChunkRx for MemberRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.rx.recv().await)
    }
}

struct MemberTx {
    id: u64,
    members: Members,
}

#[async_trait]
impl ChunkTx for MemberTx {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        for (id, member) in lock(&self.members).iter() {
            if *id != self.id {
                let _ = member.try_send(chunk.clone());
            }
        }
        Ok(())
    }
    async fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ClusterProtocol for SyncCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    fn is_virtual(&self) -> bool {
        true
    }

    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let label = match self.query.get(target.metadata) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("Sync: the session has no label at {}", self.query.as_str()),
                ));
            }
        };
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(MEMBER_QUEUE);
        // Joining under the groups lock: a concurrent join prunes empty groups, and must
        // not take this one for empty between its lookup and this member's insert.
        let members = {
            let mut groups = lock(&self.groups);
            groups.retain(|_, m| !lock(m).is_empty());
            let members = groups.entry(label.clone()).or_default().clone();
            lock(&members).insert(id, tx);
            members
        };
        Ok(Stage::Conn(Conn::chunks(
            Framing::Datagram,
            Box::new(MemberRx {
                rx,
                id,
                members: members.clone(),
            }),
            Box::new(MemberTx { id, members }),
            format!("sync group {label}"),
        )))
    }
}

/// Sessions with the same label, broadcast to each other.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: None,
    cluster: Some(|spec, cx| {
        Ok(std::sync::Arc::new(SyncCluster::from_spec(
            spec,
            cx.validation,
        )?))
    }),
    listener_schema: None,
    cluster_schema: Some(crate::core::build::schema::<SyncSpec>),
    carries: Protocol::CARRIES_NOTHING,
};
