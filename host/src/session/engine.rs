//! The session engine: listener -> rulelist -> route copy -> stages connected in
//! parallel under the retry policy -> the direct path (splice or relay) when nothing
//! sits between source and destination, else the ring of stage drivers. A session
//! reads the configuration once, when it is accepted: routing, connecting and driving
//! all see that one snapshot (a reconnect later follows the cluster as it is then).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::connect::{StageRetry, connect};
use super::error::{SessionError, StageEnd};
use super::stage::{self, Meters, StageStats, Wiring};
use super::{Registry, Session, StageInfo, StageRef, StageStatus, Status};
use crate::core::http::{HttpBody, HttpReply};
use crate::core::settings::HttpLimits;
use crate::core::{Conn, Framing, Incoming, SessionSink, Stage, Unrouted};
use crate::metrics::Metrics;
use crate::model::{Kind, Retry, Route, Snapshot};
use crate::offload::Offload;
use crate::routing;

/// Chunks buffered between two stages.
const RING_CAPACITY: usize = 64;

/// What sessions run on: the live configuration, the session table, and the services
/// the composition root plugs in (the REST API an HTTP listener may route to).
pub struct Engine {
    config: Arc<ArcSwap<Snapshot>>,
    pub sessions: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub offload: Arc<Offload>,
    api: OnceLock<axum::Router>,
}

impl Engine {
    pub fn new(
        config: Arc<ArcSwap<Snapshot>>,
        sessions: Arc<Registry>,
        metrics: Arc<Metrics>,
        offload: Arc<Offload>,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            config,
            sessions,
            metrics,
            offload,
            api: OnceLock::new(),
        })
    }

    /// The configuration as it is now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.config.load_full()
    }

    /// The REST API (and `/metrics`), for HTTP routes to `L7mpController` and
    /// `Prometheus` clusters. Set once, by whoever builds the proxy.
    pub fn serve_api(&self, api: axum::Router) {
        let _ = self.api.set(api);
    }

    pub(super) fn api(&self) -> Option<&axum::Router> {
        self.api.get()
    }

    /// Where a listener hands its sessions.
    pub fn sink(self: &Arc<Self>, listener: &str) -> Arc<dyn SessionSink> {
        Arc::new(EngineSink {
            engine: self.clone(),
            listener: listener.to_owned(),
        })
    }
}

/// A listener's way into the engine.
struct EngineSink {
    engine: Arc<Engine>,
    listener: String,
}

#[async_trait::async_trait]
impl SessionSink for EngineSink {
    fn accept(&self, incoming: Incoming) {
        spawn(self.engine.clone(), &self.listener, incoming);
    }

    async fn request(
        &self,
        req: hyper::Request<HttpBody>,
        metadata: Value,
        peer: SocketAddr,
    ) -> HttpReply {
        super::http::request(&self.engine, &self.listener, req, metadata, peer).await
    }

    fn http_limits(&self) -> HttpLimits {
        self.engine.snapshot().admin.http.clone()
    }
}

/// Starts a session for what a listener accepted, on the configuration of now.
fn spawn(engine: Arc<Engine>, listener: &str, incoming: Incoming) {
    let session = Arc::new(Session::new(
        engine.sessions.next_name(listener),
        listener,
        incoming.metadata.clone(),
    ));
    session.with_stage(StageRef::Source, |s| {
        s.peer = Some(incoming.conn.peer.clone())
    });
    engine.sessions.insert(session.clone());
    let m = &engine.metrics;
    m.listener_sessions.with_label_values(&[listener]).inc();
    m.listener_active.with_label_values(&[listener]).inc();
    m.active_sessions.inc();
    let snap = engine.snapshot();
    tokio::spawn(async move {
        let track = snap
            .listeners
            .get(&session.listener)
            .and_then(|l| l.options.track);
        let result = tokio::select! {
            r = run(&engine, &snap, &session, incoming) => r,
            _ = session.kill.cancelled() => Err(SessionError::Deleted),
        };
        finish(&engine, &session, result, track);
    });
}

fn finish(
    engine: &Engine,
    session: &Arc<Session>,
    result: Result<(), SessionError>,
    track: Option<crate::core::bounds::Seconds>,
) {
    let (m, sessions) = (&engine.metrics, &engine.sessions);
    m.listener_active
        .with_label_values(&[&session.listener])
        .dec();
    m.active_sessions.dec();
    session.set_status(Status::Finalizing);
    match result {
        Ok(()) => session.event("END", "session ended", Value::Null),
        Err(e) => {
            let e = e.to_string();
            tracing::info!(session = %session.name, "session ended: {e}");
            session.event("ERROR", e.clone(), Value::Null);
            session.state().error = Some(e);
        }
    }
    {
        let mut state = session.state();
        state.status = Status::Destroyed;
        state.ended = Some(std::time::Instant::now());
    }
    match track {
        Some(secs) if secs.get() > 0.0 => {
            let (sessions, name) = (sessions.clone(), session.name.clone());
            tokio::spawn(async move {
                tokio::time::sleep(secs.duration()).await;
                sessions.remove(&name);
            });
        }
        _ => sessions.remove(&session.name),
    }
}

async fn run(
    engine: &Arc<Engine>,
    snap: &Snapshot,
    session: &Arc<Session>,
    incoming: Incoming,
) -> Result<(), SessionError> {
    let Incoming { metadata, mut conn } = incoming;
    // A peer waiting for a handshake answer gets it, but never holds the session up long.
    let answer = Duration::from_secs(2);
    match open(engine, snap, session, metadata).await {
        Ok((opened, retry)) => {
            match tokio::time::timeout(answer, conn.routed(Ok(()))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(SessionError::Answer(e)),
                Err(_) => return Err(SessionError::AnswerTimeout),
            }
            warn_on_mixed_framing(session, &conn, &opened);
            session.set_status(Status::Connected);
            session.with_stage(StageRef::Source, |s| s.status = StageStatus::Connected);
            session.event("CONNECTED", "all stages connected", Value::Null);
            drive(engine, snap, session, conn, opened, retry).await
        }
        Err(e) => {
            let message = e.to_string();
            let unrouted = Unrouted {
                no_match: e.is_no_match(),
                message: &message,
            };
            let _ = tokio::time::timeout(answer, conn.routed(Err(unrouted))).await;
            Err(e)
        }
    }
}

/// Routes the session and connects all its stages.
async fn open(
    engine: &Engine,
    snap: &Snapshot,
    session: &Arc<Session>,
    mut metadata: Value,
) -> Result<(Vec<(StageRef, String, Stage)>, Retry), SessionError> {
    let mut uses = Vec::new();
    let routed = routing::route(snap, &session.listener, &mut metadata, &mut uses).await;
    {
        let mut state = session.state();
        state.metadata = Arc::new(metadata);
        state.uses.extend(uses);
    }
    let route = routed.inspect_err(|_| {
        engine
            .metrics
            .sessions_rejected
            .with_label_values(&[&session.listener])
            .inc();
    })?;
    let destination = route.destination.clone();
    // The session's own copy: later changes to the route do not reach it.
    let route: Route = (*route).clone();
    let mut stages: Vec<(StageRef, String)> = route
        .ingress
        .iter()
        .enumerate()
        .map(|(i, c)| (StageRef::Ingress(i), c.clone()))
        .collect();
    stages.push((StageRef::Destination, destination.clone()));
    stages.extend(
        route
            .egress
            .iter()
            .enumerate()
            .map(|(i, c)| (StageRef::Egress(i), c.clone())),
    );
    {
        let mut state = session.state();
        state.route = Some(Arc::new(route.clone()));
        state.ingress = route.ingress.iter().map(|c| StageInfo::new(c)).collect();
        state.destination = Some(StageInfo::new(&destination));
        state.egress = route.egress.iter().map(|c| StageInfo::new(c)).collect();
        state
            .uses
            .extend(stages.iter().map(|(_, c)| (Kind::Cluster, c.clone())));
    }
    session.event(
        "ROUTED",
        format!("route '{}'", route.name),
        json!({ "route": route.name }),
    );

    let attempts = if route.retry.on_connect_failure() {
        route.retry.num_retries + 1
    } else {
        1
    };
    let connects = stages.iter().map(|(at, cluster)| {
        connect(
            engine,
            snap,
            session,
            (*at, cluster),
            route.retry,
            attempts,
            Vec::new(),
        )
    });
    let connected = futures_util::future::join_all(connects).await;
    let mut opened = Vec::with_capacity(connected.len());
    for ((at, cluster), result) in stages.into_iter().zip(connected) {
        opened.push((at, cluster, result?));
    }
    Ok((opened, route.retry))
}

/// Routing a datagram stream into a byte stream loses message boundaries: say so.
fn warn_on_mixed_framing(session: &Session, source: &Conn, opened: &[(StageRef, String, Stage)]) {
    let streams: Vec<&str> = std::iter::once((source.framing, session.listener.as_str()))
        .chain(opened.iter().filter_map(|(_, c, s)| match s {
            Stage::Conn(conn) => Some((conn.framing, c.as_str())),
            Stage::Transform(_) => None,
        }))
        .filter(|(f, _)| *f == Framing::Stream)
        .map(|(_, n)| n)
        .collect();
    let datagrams = std::iter::once(source.framing)
        .chain(opened.iter().filter_map(|(_, _, s)| {
            if let Stage::Conn(c) = s {
                Some(c.framing)
            } else {
                None
            }
        }))
        .any(|f| f == Framing::Datagram);
    if datagrams && !streams.is_empty() {
        let msg = format!(
            "this route joins datagram streams to byte streams ({}): message boundaries are not kept",
            streams.join(", ")
        );
        tracing::warn!(session = %session.name, "{msg}");
        session.event("WARNING", msg, Value::Null);
    }
}

fn meters(m: &Metrics, at: StageRef, origin: &str) -> Meters {
    let (bytes, packets) = if at == StageRef::Source {
        (&m.listener_bytes, &m.listener_packets)
    } else {
        (&m.cluster_bytes, &m.cluster_packets)
    };
    Meters {
        bytes_in: bytes.with_label_values(&[origin, "in"]),
        bytes_out: bytes.with_label_values(&[origin, "out"]),
        packets_in: packets.with_label_values(&[origin, "in"]),
        packets_out: packets.with_label_values(&[origin, "out"]),
        errors: (at != StageRef::Source).then(|| m.transform_errors.with_label_values(&[origin])),
    }
}

fn stats_for(
    engine: &Engine,
    session: &Arc<Session>,
    at: StageRef,
    origin: &str,
) -> (StageStats, Arc<tokio::sync::Notify>) {
    let (counters, kick) = session
        .with_stage(at, |s| (s.counters.clone(), s.kick.clone()))
        .expect("every stage of a session has its info");
    (
        StageStats {
            session: session.clone(),
            at,
            counters,
            meters: meters(&engine.metrics, at, origin),
        },
        kick,
    )
}

/// Moves the session's data until it ends: directly between source and destination
/// when nothing sits between them and no reconnect may be needed, else on the ring.
async fn drive(
    engine: &Arc<Engine>,
    snap: &Snapshot,
    session: &Arc<Session>,
    source: Conn,
    mut opened: Vec<(StageRef, String, Stage)>,
    retry: Retry,
) -> Result<(), SessionError> {
    let bare = opened.len() == 1 && matches!(opened[0].2, Stage::Conn(_)) && !retry.on_disconnect();
    if !bare {
        return drive_ring(engine, snap, session, source, opened, retry).await;
    }
    let Some((_, cluster, Stage::Conn(destination))) = opened.pop() else {
        unreachable!("checked above")
    };
    let (source_stats, _) = stats_for(engine, session, StageRef::Source, &session.listener);
    let (destination_stats, kick) = stats_for(engine, session, StageRef::Destination, &cluster);
    let half_close = half_close_of(snap, session);
    for at in [StageRef::Source, StageRef::Destination] {
        session.with_stage(at, |s| s.status = StageStatus::Ready);
    }
    let splice = source.is_socket() && destination.is_socket();
    let offloaded = if splice {
        None
    } else {
        super::direct::offload(
            &engine.offload,
            &snap.admin,
            &source,
            &destination,
            true,
            true,
        )
    };
    session.state().datapath = Some(match (splice, &offloaded) {
        (true, _) => "splice",
        (false, Some(_)) => "offload",
        (false, None) => "relay",
    });
    let watch = async {
        match &offloaded {
            Some(o) => o.watch(&source_stats, &destination_stats).await,
            None => std::future::pending().await,
        }
    };
    let relay = async {
        if splice {
            let (a, b) = (
                source.into_socket().expect("a socket"),
                destination.into_socket().expect("a socket"),
            );
            super::direct::splice_pair(a, b, &source_stats, &destination_stats, half_close).await
        } else {
            super::direct::relay_pair(
                source,
                destination,
                &source_stats,
                &destination_stats,
                half_close,
            )
            .await
        }
    };
    let result = tokio::select! {
        r = relay => r,
        () = watch => unreachable!("watching runs until the session ends"),
        _ = kick.notified() => Err(SessionError::Stage {
            stage: describe(StageRef::Destination, &cluster),
            end: StageEnd::EndpointRemoved,
        }),
    };
    drop(offloaded);
    engine
        .metrics
        .cluster_active
        .with_label_values(&[&cluster])
        .dec();
    for at in [StageRef::Source, StageRef::Destination] {
        session.with_stage(at, |s| s.status = StageStatus::End);
    }
    result
}

/// Wires the ring and runs the drivers until every stage has ended, or one fails.
async fn drive_ring(
    engine: &Arc<Engine>,
    snap: &Snapshot,
    session: &Arc<Session>,
    source: Conn,
    opened: Vec<(StageRef, String, Stage)>,
    retry: Retry,
) -> Result<(), SessionError> {
    session.state().datapath = Some("ring");
    let mut ring: Vec<(StageRef, String, Stage)> = Vec::with_capacity(opened.len() + 1);
    ring.push((
        StageRef::Source,
        session.listener.clone(),
        Stage::Conn(source),
    ));
    ring.extend(opened);
    // A direction with no transforms may still go through the kernel while the other
    // one runs on the ring.
    let offloaded = {
        let has = |which: fn(&StageRef) -> bool| ring.iter().any(|(at, _, _)| which(at));
        let (no_ingress, no_egress) = (
            !has(|at| matches!(at, StageRef::Ingress(_))),
            !has(|at| matches!(at, StageRef::Egress(_))),
        );
        let destination = ring.iter().find(|(at, _, _)| *at == StageRef::Destination);
        match (&ring[0].2, destination) {
            (Stage::Conn(src), Some((_, cluster, Stage::Conn(dst)))) if !retry.on_disconnect() => {
                super::direct::offload(
                    &engine.offload,
                    &snap.admin,
                    src,
                    dst,
                    no_ingress,
                    no_egress,
                )
                .map(|o| (o, cluster.clone()))
            }
            _ => None,
        }
    };
    if offloaded.is_some() {
        session.state().datapath = Some("ring+offload");
    }
    let watch = async {
        match &offloaded {
            Some((o, cluster)) => {
                let (source_stats, _) =
                    stats_for(engine, session, StageRef::Source, &session.listener);
                let (destination_stats, _) =
                    stats_for(engine, session, StageRef::Destination, cluster);
                o.watch(&source_stats, &destination_stats).await
            }
            None => std::future::pending().await,
        }
    };
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..ring.len())
        .map(|_| mpsc::channel::<Bytes>(RING_CAPACITY))
        .unzip();
    let mut drivers = JoinSet::new();
    let half_close = half_close_of(snap, session);
    for (i, ((at, origin, stage), inbox)) in ring.into_iter().zip(inboxes).enumerate() {
        let (stats, kick) = stats_for(engine, session, at, &origin);
        let wiring = Wiring {
            inbox,
            out: Some(senders[(i + 1) % senders.len()].clone()),
            kick,
            stats,
            half_close,
        };
        let cluster = origin.clone();
        let retry: Option<Box<dyn stage::Reconnect>> = (at != StageRef::Source).then(|| {
            Box::new(StageRetry {
                engine: engine.clone(),
                session: session.clone(),
                at,
                cluster: cluster.clone(),
                retry,
                budget: AtomicU32::new(retry.num_retries),
                fruitless: AtomicU32::new(0),
            }) as Box<dyn stage::Reconnect>
        });
        let metrics = engine.metrics.clone();
        drivers.spawn(async move {
            let result = match stage {
                Stage::Conn(conn) => stage::run_conn(wiring, conn, retry).await,
                Stage::Transform(t) => stage::run_transform(wiring, t).await,
            };
            if at != StageRef::Source {
                metrics.cluster_active.with_label_values(&[&cluster]).dec();
            }
            result.map_err(|end| SessionError::Stage {
                stage: describe(at, &origin),
                end,
            })
        });
    }
    // Only the drivers hold senders now, so a closed inbox means its writer ended.
    drop(senders);
    let ring_done = async {
        while let Some(joined) = drivers.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) if e.is_panic() => return Err(SessionError::Internal(e.to_string())),
                Err(_) => {}
            }
        }
        Ok(())
    };
    tokio::select! {
        r = ring_done => r,
        () = watch => unreachable!("watching runs until the session ends"),
    }
}

/// The session's listener's half-close timeout (see `ListenerOptions`).
fn half_close_of(snap: &Snapshot, session: &Session) -> Option<Duration> {
    snap.listeners.get(&session.listener).map_or(
        Some(crate::core::settings::DEFAULT_HALF_CLOSE_TIMEOUT),
        |l| l.options.half_close(),
    )
}

fn describe(at: StageRef, origin: &str) -> String {
    match at {
        StageRef::Source => format!("source (listener '{origin}')"),
        StageRef::Destination => format!("destination (cluster '{origin}')"),
        StageRef::Ingress(i) => format!("ingress #{i} (cluster '{origin}')"),
        StageRef::Egress(i) => format!("egress #{i} (cluster '{origin}')"),
    }
}
