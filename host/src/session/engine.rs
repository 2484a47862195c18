//! The session engine: listener -> rulelist -> route copy -> stages connected in
//! parallel under the retry policy -> the direct path (splice or relay) when nothing
//! sits between source and destination, else the ring of stage drivers.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::connect::{StageRetry, connect};
use super::stage::{self, Meters, Processor, Reconnect, StageStats, Wiring};
use super::{Session, StageInfo, StageRef, StageStatus, Status};
use crate::metrics;
use crate::model::{Kind, Retry, Route, Snapshot};
use crate::protocol::{Conn, Framing, Incoming, Stage};
use crate::proxy::Proxy;

/// Chunks buffered between two stages.
const RING_CAPACITY: usize = 64;
/// How deep `apply` may chain rulelists (a loop would otherwise never end).
const MAX_APPLY_DEPTH: usize = 16;

/// Starts a session for what a listener accepted.
pub fn spawn(proxy: Arc<Proxy>, listener: &str, incoming: Incoming) {
    let session = Arc::new(Session::new(
        proxy.sessions.next_name(listener),
        listener,
        incoming.metadata.clone(),
    ));
    session.with_stage(StageRef::Source, |s| {
        s.peer = Some(incoming.conn.peer.clone())
    });
    proxy.sessions.insert(session.clone());
    let m = metrics::global();
    m.listener_sessions.with_label_values(&[listener]).inc();
    m.listener_active.with_label_values(&[listener]).inc();
    m.active_sessions.inc();
    tokio::spawn(async move {
        let track = proxy
            .snapshot()
            .listeners
            .get(&session.listener)
            .and_then(|l| l.options.track);
        let result = tokio::select! {
            r = run(&proxy, &session, incoming) => r,
            _ = session.kill.cancelled() => Err("deleted".to_owned()),
        };
        finish(&proxy, &session, result, track);
    });
}

fn finish(
    proxy: &Arc<Proxy>,
    session: &Arc<Session>,
    result: Result<(), String>,
    track: Option<crate::model::bounds::Seconds>,
) {
    let m = metrics::global();
    m.listener_active
        .with_label_values(&[&session.listener])
        .dec();
    m.active_sessions.dec();
    session.set_status(Status::Finalizing);
    match result {
        Ok(()) => session.event("END", "session ended", Value::Null),
        Err(e) => {
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
            let (proxy, name) = (proxy.clone(), session.name.clone());
            tokio::spawn(async move {
                tokio::time::sleep(secs.duration()).await;
                proxy.sessions.remove(&name);
            });
        }
        _ => proxy.sessions.remove(&session.name),
    }
}

/// Finds the route for a session, applying rewrites to its metadata on the way.
pub async fn lookup(
    snap: &Snapshot,
    listener: &str,
    metadata: &mut Value,
    uses: &mut Vec<(Kind, String)>,
) -> Result<Arc<Route>, String> {
    let l = snap
        .listeners
        .get(listener)
        .ok_or_else(|| format!("listener '{listener}' not found"))?;
    let mut rulelist = l.rules.clone();
    for _ in 0..MAX_APPLY_DEPTH {
        let rl = snap
            .rulelists
            .get(&rulelist)
            .ok_or_else(|| format!("rulelist '{rulelist}' not found"))?;
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
        let rule = found.ok_or_else(|| "No route for session".to_owned())?;
        uses.push((Kind::Rule, rule.name.clone()));
        for rewrite in &rule.action.rewrite {
            rewrite
                .path
                .set(metadata, rewrite.value.clone())
                .map_err(|e| format!("rule '{}': rewrite: {e}", rule.name))?;
        }
        if let Some(route) = &rule.action.route {
            let route = snap
                .routes
                .get(route)
                .ok_or_else(|| format!("route '{route}' not found"))?;
            uses.push((Kind::Route, route.name.clone()));
            return Ok(route.clone());
        }
        match &rule.action.apply {
            Some(next) => rulelist = next.clone(),
            None => {
                return Err(format!(
                    "rule '{}' has neither a route nor an apply",
                    rule.name
                ));
            }
        }
    }
    Err(format!(
        "rulelists apply each other more than {MAX_APPLY_DEPTH} deep"
    ))
}

async fn run(proxy: &Arc<Proxy>, session: &Arc<Session>, incoming: Incoming) -> Result<(), String> {
    let Incoming { metadata, mut conn } = incoming;
    // A peer waiting for a handshake answer gets it, but never holds the session up long.
    let answer = Duration::from_secs(2);
    match open(proxy, session, metadata).await {
        Ok((opened, retry)) => {
            match tokio::time::timeout(answer, conn.routed(Ok(()))).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("source: {e}")),
                Err(_) => return Err("source: the routing answer could not be sent".into()),
            }
            warn_on_mixed_framing(session, &conn, &opened);
            session.set_status(Status::Connected);
            session.with_stage(StageRef::Source, |s| s.status = StageStatus::Connected);
            session.event("CONNECTED", "all stages connected", Value::Null);
            drive(proxy, session, conn, opened, retry).await
        }
        Err(e) => {
            let _ = tokio::time::timeout(answer, conn.routed(Err(&e))).await;
            Err(e)
        }
    }
}

/// Routes the session and connects all its stages.
async fn open(
    proxy: &Arc<Proxy>,
    session: &Arc<Session>,
    mut metadata: Value,
) -> Result<(Vec<(StageRef, String, Stage)>, Retry), String> {
    let snap = proxy.snapshot();
    let mut uses = Vec::new();
    let routed = lookup(&snap, &session.listener, &mut metadata, &mut uses).await;
    {
        let mut state = session.state();
        state.metadata = Arc::new(metadata);
        state.uses.extend(uses);
    }
    let route = routed.inspect_err(|_| {
        metrics::global()
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
            proxy,
            session,
            *at,
            cluster,
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
            Stage::Transform(_) | Stage::Plugin(_) => None,
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

fn meters(at: StageRef, origin: &str) -> Meters {
    let m = metrics::global();
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
            meters: meters(at, origin),
        },
        kick,
    )
}

/// Moves the session's data until it ends: directly between source and destination
/// when nothing sits between them and no reconnect may be needed, else on the ring.
async fn drive(
    proxy: &Arc<Proxy>,
    session: &Arc<Session>,
    source: Conn,
    mut opened: Vec<(StageRef, String, Stage)>,
    retry: Retry,
) -> Result<(), String> {
    let bare = opened.len() == 1 && matches!(opened[0].2, Stage::Conn(_)) && !retry.on_disconnect();
    if !bare {
        return drive_ring(proxy, session, source, opened, retry).await;
    }
    let Some((_, cluster, Stage::Conn(destination))) = opened.pop() else {
        unreachable!("checked above")
    };
    let (source_stats, _) = stats_for(session, StageRef::Source, &session.listener);
    let (destination_stats, kick) = stats_for(session, StageRef::Destination, &cluster);
    let half_close = half_close_of(proxy, session);
    for at in [StageRef::Source, StageRef::Destination] {
        session.with_stage(at, |s| s.status = StageStatus::Ready);
    }
    let splice = source.is_socket() && destination.is_socket();
    let offloaded = if splice {
        None
    } else {
        super::direct::offload(&proxy.snapshot().admin, &source, &destination, true, true)
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
        _ = kick.notified() => Err(format!("{}: its endpoint was removed", describe(StageRef::Destination, &cluster))),
    };
    drop(offloaded);
    metrics::global()
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
    proxy: &Arc<Proxy>,
    session: &Arc<Session>,
    source: Conn,
    opened: Vec<(StageRef, String, Stage)>,
    retry: Retry,
) -> Result<(), String> {
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
                super::direct::offload(&proxy.snapshot().admin, src, dst, no_ingress, no_egress)
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
                let (source_stats, _) = stats_for(session, StageRef::Source, &session.listener);
                let (destination_stats, _) = stats_for(session, StageRef::Destination, cluster);
                o.watch(&source_stats, &destination_stats).await
            }
            None => std::future::pending().await,
        }
    };
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..ring.len())
        .map(|_| mpsc::channel::<Bytes>(RING_CAPACITY))
        .unzip();
    let mut drivers = JoinSet::new();
    let half_close = half_close_of(proxy, session);
    for (i, ((at, origin, stage), inbox)) in ring.into_iter().zip(inboxes).enumerate() {
        let (stats, kick) = stats_for(session, at, &origin);
        let wiring = Wiring {
            inbox,
            out: Some(senders[(i + 1) % senders.len()].clone()),
            kick,
            stats,
            half_close,
        };
        let cluster = origin.clone();
        let retry: Option<Box<dyn Reconnect>> = (at != StageRef::Source).then(|| {
            Box::new(StageRetry {
                proxy: proxy.clone(),
                session: session.clone(),
                at,
                cluster: cluster.clone(),
                retry,
                budget: AtomicU32::new(retry.num_retries),
                fruitless: AtomicU32::new(0),
            }) as Box<dyn Reconnect>
        });
        drivers.spawn(async move {
            let result = match stage {
                Stage::Conn(conn) => stage::run_conn(wiring, conn, retry).await,
                Stage::Transform(t) => stage::run_transform(wiring, Processor::Builtin(t)).await,
                Stage::Plugin(t) => stage::run_transform(wiring, Processor::Plugin(t)).await,
            };
            if at != StageRef::Source {
                metrics::global()
                    .cluster_active
                    .with_label_values(&[&cluster])
                    .dec();
            }
            result.map_err(|e| format!("{}: {e}", describe(at, &origin)))
        });
    }
    // Only the drivers hold senders now, so a closed inbox means its writer ended.
    drop(senders);
    let ring_done = async {
        while let Some(joined) = drivers.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) if e.is_panic() => return Err(format!("a stage failed internally: {e}")),
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
fn half_close_of(proxy: &Proxy, session: &Session) -> Option<Duration> {
    proxy
        .snapshot()
        .listeners
        .get(&session.listener)
        .map_or(Some(crate::model::DEFAULT_HALF_CLOSE_TIMEOUT), |l| {
            l.options.half_close()
        })
}

fn describe(at: StageRef, origin: &str) -> String {
    match at {
        StageRef::Source => format!("source (listener '{origin}')"),
        StageRef::Destination => format!("destination (cluster '{origin}')"),
        StageRef::Ingress(i) => format!("ingress #{i} (cluster '{origin}')"),
        StageRef::Egress(i) => format!("egress #{i} (cluster '{origin}')"),
    }
}
