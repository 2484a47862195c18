//! Sessions: what a listener accepted, routed through a copy of its route. This module
//! keeps the session objects the API lists; [`engine`] routes and connects them (and
//! answers HTTP listeners' requests, in `http`),
//! [`stage`] moves their data on a ring of stage drivers, and `direct` joins a source
//! and a destination with nothing between them (splice(2) or a one-task relay).

mod connect;
mod direct;
pub mod engine;
pub mod error;
mod http;
pub mod stage;
pub mod view;

pub use connect::{ConnectError, StageFailed};
pub use engine::Engine;
pub use error::SessionError;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::core::StageContext;
use crate::model::{Kind, Route};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Init,
    Connected,
    Finalizing,
    Destroyed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum StageStatus {
    Init,
    Connected,
    Ready,
    Disconnected,
    Retrying,
    End,
}

/// Bytes and chunks a stage moved; shared with the stage's driver, read by listings.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
}

/// Where a cluster stage is connected.
#[derive(Debug, Clone)]
pub enum StageEndpoint {
    Endpoint(Arc<crate::model::Endpoint>),
    /// A virtual cluster's stage (an in-process one).
    Virtual,
}

impl StageEndpoint {
    /// The endpoint's name, if the stage has a real one.
    pub fn name(&self) -> Option<&str> {
        match self {
            StageEndpoint::Endpoint(e) => Some(&e.name),
            StageEndpoint::Virtual => None,
        }
    }
}

/// One stage as listings show it.
#[derive(Debug)]
pub struct StageInfo {
    /// The listener (source) or cluster the stage belongs to.
    pub origin: String,
    pub endpoint: Option<StageEndpoint>,
    pub peer: Option<String>,
    pub status: StageStatus,
    pub counters: Arc<Counters>,
    /// Wakes the stage's driver to drop its connection (and retry, if it may).
    pub kick: Arc<Notify>,
}

impl StageInfo {
    pub fn new(origin: &str) -> StageInfo {
        StageInfo {
            origin: origin.to_owned(),
            endpoint: None,
            peer: None,
            status: StageStatus::Init,
            counters: Arc::default(),
            kick: Arc::default(),
        }
    }

    /// The name of the endpoint the stage is connected to, if it has a real one.
    pub fn endpoint_name(&self) -> Option<&str> {
        self.endpoint.as_ref().and_then(StageEndpoint::name)
    }
}

/// Which stage of a session: the ring is source, ingress..., destination, egress....
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageRef {
    Source,
    Ingress(usize),
    Destination,
    Egress(usize),
}

#[derive(Debug, Clone)]
pub struct Event {
    pub event: String,
    pub timestamp: SystemTime,
    pub message: String,
    pub content: Value,
}

/// Events kept per session; older ones are dropped (and counted).
const MAX_EVENTS: usize = 100;

#[derive(Debug)]
pub struct SessionState {
    pub status: Status,
    /// Fixed once the rules have rewritten it; stages share it.
    pub metadata: Arc<Value>,
    pub route: Option<Arc<Route>>,
    pub source: StageInfo,
    pub ingress: Vec<StageInfo>,
    pub destination: Option<StageInfo>,
    pub egress: Vec<StageInfo>,
    pub events: Vec<Event>,
    pub events_dropped: u64,
    /// Objects whose recursive deletion ends this session.
    pub uses: Vec<(Kind, String)>,
    pub error: Option<String>,
    pub ended: Option<Instant>,
    /// How data moves: `splice`, `relay` (one task, no ring) or `ring`.
    pub datapath: Option<&'static str>,
}

pub struct Session {
    pub name: String,
    pub listener: String,
    pub created: SystemTime,
    pub state: Mutex<SessionState>,
    /// Cancelled to end the session (API delete, recursive deletes).
    pub kill: CancellationToken,
}

impl Session {
    pub fn new(name: String, listener: &str, metadata: Value) -> Session {
        Session {
            name,
            listener: listener.to_owned(),
            created: SystemTime::now(),
            state: Mutex::new(SessionState {
                status: Status::Init,
                metadata: Arc::new(metadata),
                route: None,
                source: StageInfo::new(listener),
                ingress: Vec::new(),
                destination: None,
                egress: Vec::new(),
                events: Vec::new(),
                events_dropped: 0,
                uses: vec![(Kind::Listener, listener.to_owned())],
                error: None,
                ended: None,
                datapath: None,
            }),
            kill: CancellationToken::new(),
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an event and logs it.
    pub fn event(&self, event: &str, message: impl Into<String>, content: Value) {
        let message = message.into();
        tracing::debug!(session = %self.name, event, "{message}");
        let mut state = self.state();
        if state.events.len() >= MAX_EVENTS {
            state.events.remove(0);
            state.events_dropped += 1;
        }
        state.events.push(Event {
            event: event.to_owned(),
            timestamp: SystemTime::now(),
            message,
            content,
        });
    }

    pub fn set_status(&self, status: Status) {
        self.state().status = status;
    }

    /// Runs `f` on one stage's info.
    pub fn with_stage<R>(&self, at: StageRef, f: impl FnOnce(&mut StageInfo) -> R) -> Option<R> {
        let mut state = self.state();
        let stage = match at {
            StageRef::Source => Some(&mut state.source),
            StageRef::Ingress(i) => state.ingress.get_mut(i),
            StageRef::Destination => state.destination.as_mut(),
            StageRef::Egress(i) => state.egress.get_mut(i),
        };
        stage.map(f)
    }

    pub fn uses(&self, kind: Kind, name: &str) -> bool {
        let state = self.state();
        state.uses.iter().any(|(k, n)| *k == kind && n == name)
            || (kind == Kind::Endpoint && state.stages().any(|s| s.endpoint_name() == Some(name)))
    }
}

/// What its stages see of a session: one context for built-in transforms and plugins.
impl StageContext for Session {
    fn session(&self) -> &str {
        &self.name
    }
    fn metadata(&self) -> Arc<Value> {
        self.state().metadata.clone()
    }
    fn replace_metadata(&self, metadata: Value) {
        self.state().metadata = Arc::new(metadata);
    }
    fn event(&self, event: &str, message: String, content: Value) {
        Session::event(self, event, message, content)
    }
}

impl SessionState {
    pub fn stages(&self) -> impl Iterator<Item = &StageInfo> {
        std::iter::once(&self.source)
            .chain(&self.ingress)
            .chain(&self.destination)
            .chain(&self.egress)
    }
}

/// All sessions the API can see: running ones and ended ones kept for `track`.
/// Sharded, so that sessions starting on different threads do not wait for each other.
#[derive(Default)]
pub struct Registry {
    sessions: dashmap::DashMap<String, Arc<Session>>,
    next_id: AtomicU64,
}

impl Registry {
    pub fn next_name(&self, listener: &str) -> String {
        format!(
            "{listener}-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub fn insert(&self, session: Arc<Session>) {
        self.sessions.insert(session.name.clone(), session);
    }

    pub fn remove(&self, name: &str) {
        self.sessions.remove(name);
    }

    pub fn get(&self, name: &str) -> Option<Arc<Session>> {
        self.sessions.get(name).map(|s| s.value().clone())
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        let mut all: Vec<_> = self.sessions.iter().map(|s| s.value().clone()).collect();
        all.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
        all
    }

    /// Sessions still running that use an object.
    pub fn using(&self, kind: Kind, name: &str) -> Vec<Arc<Session>> {
        self.all()
            .into_iter()
            .filter(|s| s.state().ended.is_none() && s.uses(kind, name))
            .collect()
    }
}
