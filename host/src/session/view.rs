//! Sessions as the REST API shows them, in the original's shape: `source` is the
//! listener stage (`listener` is the listener's spec), `destination`, `ingress` and
//! `egress` are cluster stages whose `endpoint` is the endpoint object (for a virtual
//! cluster, the `<VIRTUAL>` one), and events carry ISO-8601 timestamps.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Counters, Event, Session, StageEndpoint, StageInfo, StageStatus, Status};
use crate::model::Snapshot;
use crate::model::view::EndpointSpecView;

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub name: String,
    /// The session's metadata after its rules' rewrites.
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub source: SourceView,
    pub destination: StageView,
    pub ingress: Vec<StageView>,
    pub egress: Vec<StageView>,
    pub status: Status,
    pub events: Vec<EventView>,
    /// The route the session copied (an addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// When it started, in Unix seconds (an addition).
    pub created: f64,
    /// How its data moves: `splice`, `relay`, `ring`, `offload` or `ring+offload` (an
    /// addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datapath: Option<&'static str>,
    /// Why it ended, if it failed (an addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_dropped: Option<u64>,
}

/// The listener stage.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    /// The listener's name.
    pub origin: String,
    /// The listener's spec (`<INVALID>` once the listener is gone).
    #[schema(value_type = Value)]
    pub listener: Value,
    pub status: StageStatus,
    pub stats: StatsView,
    /// The client (an addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// A cluster stage.
#[derive(Debug, Serialize, ToSchema)]
pub struct StageView {
    /// The cluster's name.
    pub origin: String,
    /// The endpoint the stage is connected to, if it is.
    pub endpoint: Option<StageEndpointView>,
    pub status: StageStatus,
    pub stats: StatsView,
    /// What is on the other side (an addition).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StageEndpointView {
    pub name: String,
    pub spec: EndpointSpecView,
}

/// Bytes and chunks a stage moved (an addition).
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct StatsView {
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub event: String,
    /// ISO-8601 (RFC 3339), as the original's.
    pub timestamp: String,
    pub message: String,
    #[schema(value_type = Value)]
    pub content: Value,
}

fn stats(c: &Counters) -> StatsView {
    StatsView {
        bytes_in: c.bytes_in.load(Ordering::Relaxed),
        bytes_out: c.bytes_out.load(Ordering::Relaxed),
        packets_in: c.packets_in.load(Ordering::Relaxed),
        packets_out: c.packets_out.load(Ordering::Relaxed),
    }
}

fn stage(info: &StageInfo) -> StageView {
    let endpoint = info.endpoint.as_ref().map(|e| match e {
        StageEndpoint::Endpoint(ep) => StageEndpointView {
            name: ep.name.clone(),
            spec: EndpointSpecView::from(&ep.spec),
        },
        StageEndpoint::Virtual => StageEndpointView {
            name: info.origin.clone(),
            spec: EndpointSpecView::virtual_address(),
        },
    });
    StageView {
        origin: info.origin.clone(),
        endpoint,
        status: info.status,
        stats: stats(&info.counters),
        peer: info.peer.clone(),
    }
}

/// RFC 3339 with milliseconds, in UTC.
pub fn iso8601(t: SystemTime) -> String {
    let format = time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(t)
        .format(&format)
        .unwrap_or_default()
}

fn event(e: &Event) -> EventView {
    EventView {
        event: e.event.clone(),
        timestamp: iso8601(e.timestamp),
        message: e.message.clone(),
        content: e.content.clone(),
    }
}

impl Session {
    /// The session as listings show it; `snap` gives its listener's spec.
    pub fn view(&self, snap: &Snapshot) -> SessionView {
        let state = self.state();
        let listener = snap
            .listeners
            .get(&self.listener)
            .map_or_else(|| Value::String("<INVALID>".into()), |l| l.spec.clone());
        // Before routing there is no destination yet: a stage in INIT with no origin.
        let destination = state.destination.as_ref().map_or_else(
            || StageView {
                origin: String::new(),
                endpoint: None,
                status: StageStatus::Init,
                stats: StatsView::default(),
                peer: None,
            },
            stage,
        );
        SessionView {
            name: self.name.clone(),
            metadata: (*state.metadata).clone(),
            source: SourceView {
                origin: state.source.origin.clone(),
                listener,
                status: state.source.status,
                stats: stats(&state.source.counters),
                peer: state.source.peer.clone(),
            },
            destination,
            ingress: state.ingress.iter().map(stage).collect(),
            egress: state.egress.iter().map(stage).collect(),
            status: state.status,
            events: state.events.iter().map(event).collect(),
            route: state.route.as_ref().map(|r| r.name.clone()),
            created: self
                .created
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default(),
            datapath: state.datapath,
            error: state.error.clone(),
            events_dropped: (state.events_dropped > 0).then_some(state.events_dropped),
        }
    }
}
