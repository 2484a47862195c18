//! Stage drivers: the tasks that move a session's chunks.
//!
//! A session's stages form a ring: source -> ingress... -> destination -> egress... ->
//! source. Each stage reads its inbox (fed by the previous stage) and feeds the next
//! stage's inbox. A connection stage pumps both directions independently, so a slow
//! reader on one side never stalls the other direction. End of stream travels the ring
//! as a closed channel: a byte stream half-closes, a datagram stage ends outright.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use prometheus::IntCounter;
use tokio::sync::{Notify, mpsc};

use super::error::{ReconnectError, StageEnd};
use super::{Counters, Session, StageRef, StageStatus};
use crate::core::{ChunkRx, ChunkTx, Conn, Framing, StageError, Transform};

/// Prometheus counters of the listener or cluster a stage belongs to.
pub struct Meters {
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    pub packets_in: IntCounter,
    pub packets_out: IntCounter,
    pub errors: Option<IntCounter>,
}

/// Where a stage's traffic is counted and its status shown.
pub struct StageStats {
    pub session: Arc<Session>,
    pub at: StageRef,
    pub counters: Arc<Counters>,
    pub meters: Meters,
}

impl StageStats {
    pub fn received(&self, n: usize) {
        self.received_many(n, 1);
    }
    pub fn sent(&self, n: usize) {
        self.sent_many(n, 1);
    }
    pub fn received_many(&self, bytes: usize, chunks: usize) {
        self.counters
            .bytes_in
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.counters
            .packets_in
            .fetch_add(chunks as u64, Ordering::Relaxed);
        self.meters.bytes_in.inc_by(bytes as u64);
        self.meters.packets_in.inc_by(chunks as u64);
    }
    pub fn sent_many(&self, bytes: usize, chunks: usize) {
        self.counters
            .bytes_out
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.counters
            .packets_out
            .fetch_add(chunks as u64, Ordering::Relaxed);
        self.meters.bytes_out.inc_by(bytes as u64);
        self.meters.packets_out.inc_by(chunks as u64);
    }
    fn status(&self, status: StageStatus) {
        self.session.with_stage(self.at, |s| s.status = status);
    }
}

/// What every driver holds: its inbox, the next stage's inbox, and its stats.
pub struct Wiring {
    pub inbox: mpsc::Receiver<Bytes>,
    pub out: Option<mpsc::Sender<Bytes>>,
    pub kick: Arc<Notify>,
    pub stats: StageStats,
    /// A byte stream whose sending side this stage has closed may stay silent this
    /// long before the stage takes it for ended too (see `ListenerOptions`).
    pub half_close: Option<std::time::Duration>,
}

/// Opens a fresh connection for a stage whose connection broke.
#[async_trait::async_trait]
pub trait Reconnect: Send + Sync {
    /// Whether a broken connection may be replaced (the route's retry policy).
    fn allowed(&self) -> bool;
    /// A new connection, or why there is none (the session then ends).
    /// `progressed`: data arrived since the last (re)connect, so this is not a loop of
    /// connections that break at once.
    async fn reconnect(&self, why: &str, progressed: bool) -> Result<Conn, ReconnectError>;
}

enum RxEnd {
    Eof,
    DownstreamGone,
    Failed(io::Error),
}

enum TxEnd {
    Closed,
    Failed(io::Error),
}

enum Outcome {
    Done,
    Broken(String),
}

/// Moves received chunks to the next stage. At end of stream the next stage is told
/// (its inbox closes) unless the connection is about to be replaced: a retried stage
/// whose own sending side is still open.
async fn pump_rx(
    rx: &mut Box<dyn ChunkRx>,
    out: &mut Option<mpsc::Sender<Bytes>>,
    stats: &StageStats,
    will_reconnect_on_eof: impl Fn() -> bool,
) -> RxEnd {
    loop {
        match rx.recv().await {
            Ok(Some(chunk)) => {
                stats.received(chunk.len());
                let Some(next) = out.as_ref() else {
                    return RxEnd::DownstreamGone;
                };
                if next.send(chunk).await.is_err() {
                    *out = None;
                    return RxEnd::DownstreamGone;
                }
            }
            Ok(None) => {
                if !will_reconnect_on_eof() {
                    *out = None;
                }
                return RxEnd::Eof;
            }
            Err(e) => return RxEnd::Failed(e),
        }
    }
}

async fn pump_tx(
    inbox: &mut mpsc::Receiver<Bytes>,
    tx: &mut Box<dyn ChunkTx>,
    stats: &StageStats,
) -> TxEnd {
    while let Some(chunk) = inbox.recv().await {
        let n = chunk.len();
        if let Err(e) = tx.send(chunk).await {
            return TxEnd::Failed(e);
        }
        stats.sent(n);
    }
    let _ = tx.close().await;
    TxEnd::Closed
}

/// Drives a connection stage until both directions end, or it fails for good.
pub async fn run_conn(
    mut w: Wiring,
    conn: Conn,
    retry: Option<Box<dyn Reconnect>>,
) -> Result<(), StageEnd> {
    let datagram = conn.framing == Framing::Datagram;
    let (mut rx, mut tx) = conn.into_halves();
    let may_retry = || retry.as_ref().is_some_and(|r| r.allowed());
    let (mut rx_done, mut tx_done) = (false, false);
    // Mirrors `tx_done` for the receiving pump, which runs while this loop waits.
    let tx_closed = AtomicBool::new(false);
    let mut received_at_connect = 0;
    w.stats.status(StageStatus::Ready);
    loop {
        let outcome = {
            let (rx, tx) = (&mut rx, &mut tx);
            let Wiring {
                inbox,
                out,
                kick,
                stats,
                half_close,
            } = &mut w;
            let linger = *half_close;
            let stats = &*stats;
            let tx_closed = &tx_closed;
            let mut rxp = std::pin::pin!(pump_rx(rx, out, stats, || may_retry()
                && !tx_closed.load(Ordering::Relaxed)));
            let mut txp = std::pin::pin!(pump_tx(inbox, tx, stats));
            let mut heard = stats.counters.packets_in.load(Ordering::Relaxed);
            loop {
                if rx_done && tx_done {
                    break Outcome::Done;
                }
                let half_closed = tx_done && !rx_done && !datagram;
                tokio::select! {
                    () = tokio::time::sleep(linger.unwrap_or_default()), if half_closed && linger.is_some() => {
                        // Half-closed, and the peer stayed silent: it is gone.
                        let now = stats.counters.packets_in.load(Ordering::Relaxed);
                        if now == heard {
                            rx_done = true;
                        }
                        heard = now;
                    }
                    end = &mut rxp, if !rx_done => match end {
                        RxEnd::Eof if !tx_done && may_retry() => break Outcome::Broken("the peer closed the connection".into()),
                        RxEnd::Eof | RxEnd::DownstreamGone => rx_done = true,
                        RxEnd::Failed(e) if may_retry() => break Outcome::Broken(e.to_string()),
                        RxEnd::Failed(e) => return Err(e.into()),
                    },
                    end = &mut txp, if !tx_done => match end {
                        TxEnd::Closed => {
                            tx_done = true;
                            tx_closed.store(true, Ordering::Relaxed);
                            if datagram {
                                break Outcome::Done;
                            }
                        }
                        TxEnd::Failed(e) if may_retry() => break Outcome::Broken(e.to_string()),
                        TxEnd::Failed(e) => return Err(e.into()),
                    },
                    _ = kick.notified() => {
                        if may_retry() {
                            break Outcome::Broken("its endpoint was removed".into());
                        }
                        return Err(StageEnd::EndpointRemoved);
                    }
                }
            }
        };
        match outcome {
            Outcome::Done => {
                w.stats.status(StageStatus::End);
                return Ok(());
            }
            Outcome::Broken(why) => {
                w.stats.status(StageStatus::Disconnected);
                let retry = retry.as_ref().expect("only a retried stage breaks");
                let received = w.stats.counters.packets_in.load(Ordering::Relaxed);
                (rx, tx) = retry
                    .reconnect(&why, received > received_at_connect)
                    .await?
                    .into_halves();
                received_at_connect = w.stats.counters.packets_in.load(Ordering::Relaxed);
                rx_done = false;
                w.stats.status(StageStatus::Ready);
            }
        }
    }
}

/// Drives a transform stage: inbox -> transform -> next stage, until the inbox closes
/// or the next stage is gone. A chunk the transform rejects is dropped and logged; a
/// transform that gives up on the session ends it.
pub async fn run_transform(
    mut w: Wiring,
    mut transform: Box<dyn Transform>,
) -> Result<(), StageEnd> {
    w.stats.status(StageStatus::Ready);
    let mut produced = Vec::new();
    let mut reported = 0u32;
    let session = w.stats.session.clone();
    while let Some(chunk) = w.inbox.recv().await {
        w.stats.sent(chunk.len());
        match transform.process(chunk, &*session, &mut produced).await {
            Ok(()) => {}
            Err(StageError::Session(e)) => {
                w.stats.status(StageStatus::End);
                return Err(StageEnd::Transform(e));
            }
            Err(StageError::Chunk(e)) => {
                if let Some(errors) = &w.stats.meters.errors {
                    errors.inc();
                }
                // The first few go to the session's events, all to the log.
                tracing::warn!(session = %w.stats.session.name, "{e}");
                if reported < 10 {
                    reported += 1;
                    w.stats
                        .session
                        .event("TRANSFORM_ERROR", e, serde_json::Value::Null);
                }
            }
        }
        for chunk in produced.drain(..) {
            w.stats.received(chunk.len());
            let Some(next) = w.out.as_ref() else { break };
            if next.send(chunk).await.is_err() {
                w.stats.status(StageStatus::End);
                return Ok(());
            }
        }
    }
    w.stats.status(StageStatus::End);
    Ok(())
}
