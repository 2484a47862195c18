//! One live instance of a plugin version: its store (memory cap, per-call deadline,
//! WASI context with only what was granted) and the calls into its exports. A call
//! that traps, overruns its deadline or its memory poisons the instance; the caller
//! drops it and the next call gets a fresh one.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wasmtime::component::{ResourceAny, ResourceTable};
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use super::bindings::{codec, matcher, transform};
use super::compile::WorldPre;
use super::memory::{Limiter, Reservation};
use super::registry::{GuestCounters, PluginVersion};
use super::usage::{Grants, Limits};

/// What a plugin did wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A call ran past its deadline.
    Deadline,
    /// The instance tried to grow its memory past its cap.
    Memory,
    /// Any other trap (a panic, `unreachable`, an out-of-bounds access), or an
    /// instantiation that failed.
    Trap(String),
    /// No instance could be made: the plugins' memory budget is used up. Not the
    /// plugin's doing, so not counted against it.
    Budget(String),
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Deadline => "deadline",
            Fault::Memory => "memory",
            Fault::Trap(_) => "trap",
            Fault::Budget(_) => "budget",
        }
    }

    fn classify(err: wasmtime::Error) -> Fault {
        if let Some(wasmtime::Trap::Interrupt) = err.downcast_ref::<wasmtime::Trap>() {
            return Fault::Deadline;
        }
        if format!("{err:#}").contains("growing memory") {
            return Fault::Memory;
        }
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => Fault::Trap(trap.to_string()),
            None => Fault::Trap(err.to_string()),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Deadline => write!(f, "the plugin overran its deadline"),
            Fault::Memory => write!(f, "the plugin overran its memory limit"),
            Fault::Trap(why) => write!(f, "the plugin trapped: {why}"),
            Fault::Budget(why) => f.write_str(why),
        }
    }
}

/// Nanoseconds on a process-wide monotonic clock.
pub fn monotonic_ns() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// What a store holds for its instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    /// `name@version`, for logs.
    pub plugin: Arc<str>,
    /// The session being served, for logs.
    pub session: Option<Arc<str>>,
    pub counters: Arc<GuestCounters>,
    /// When the running call must give up.
    deadline: Instant,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn wasi_ctx(grants: &Grants) -> Result<WasiCtx, String> {
    let mut builder = WasiCtx::builder();
    for (key, value) in &grants.env {
        builder.env(key, value);
    }
    for dir in &grants.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| format!("grants.dirs: '{}': {e}", dir.host.display()))?;
    }
    if !grants.connect.is_empty() {
        let peers = Arc::new(grants.connect.clone());
        builder
            .allow_tcp(true)
            .allow_udp(true)
            .socket_addr_check(move |addr, use_| {
                let allowed = match use_ {
                    // The implicit bind before a connect or a send: an ephemeral port.
                    SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
                        addr.ip().is_unspecified() && addr.port() == 0
                    }
                    SocketAddrUse::TcpConnect
                    | SocketAddrUse::UdpSend
                    | SocketAddrUse::UdpReceive => peers.contains(&addr),
                    SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
                };
                Box::pin(async move { allowed })
            });
    }
    Ok(builder.build())
}

/// The exports of one instance, by world.
enum Exports {
    Transform(transform::TransformPlugin),
    Codec(codec::CodecPlugin),
    Matcher(matcher::MatcherPlugin),
}

/// The exports of a world; which world was checked at upload.
fn transform_of(exports: &Exports) -> &transform::TransformPlugin {
    match exports {
        Exports::Transform(t) => t,
        _ => unreachable!("a transform plugin, checked at upload"),
    }
}

fn codec_of(exports: &Exports) -> &codec::CodecPlugin {
    match exports {
        Exports::Codec(c) => c,
        _ => unreachable!("a codec plugin, checked at upload"),
    }
}

pub struct Instance {
    store: Store<HostState>,
    exports: Exports,
    calls: u64,
    /// The wall-clock budget of each call, from the current user's limits.
    budget: Duration,
    /// The instance trapped: it must not be called again.
    poisoned: bool,
    /// Made with grants: never pooled for another use.
    pub private: bool,
    pub version: Arc<PluginVersion>,
    /// Its memory cap, held against the plugins' budget.
    reserved: Reservation,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.version.stats.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Instance {
    /// Instantiates `version` afresh.
    pub async fn new(
        version: &Arc<PluginVersion>,
        limits: &Limits,
        grants: &Grants,
    ) -> Result<Instance, Fault> {
        let reserved = Reservation::take(limits.memory_bytes() as u64).map_err(Fault::Budget)?;
        let wasi = wasi_ctx(grants).map_err(Fault::Trap)?;
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limits: Limiter::new(limits),
            plugin: version.label.clone(),
            session: None,
            counters: version.counters.clone(),
            deadline: Instant::now() + limits.deadline(),
        };
        let mut store = Store::new(version.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|cx| {
            if Instant::now() >= cx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let instantiated = match &version.pre {
            WorldPre::Transform(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(Exports::Transform),
            WorldPre::Codec(pre) => pre.instantiate_async(&mut store).await.map(Exports::Codec),
            WorldPre::Matcher(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(Exports::Matcher),
        };
        let exports = instantiated.map_err(|e| {
            let fault = Fault::classify(e);
            version.stats.fault(&fault);
            fault
        })?;
        version.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        version.stats.live.fetch_add(1, Ordering::Relaxed);
        Ok(Instance {
            store,
            exports,
            calls: 0,
            budget: limits.deadline(),
            poisoned: false,
            private: !grants.is_empty(),
            version: version.clone(),
            reserved,
        })
    }

    /// How far the instance's memory has grown, in bytes.
    pub fn memory_used(&self) -> usize {
        self.store.data().limits.memory
    }

    /// Calls made into the instance since it was made.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Whether the instance may serve again: not poisoned, not private, under
    /// `recycle_after` calls and under three quarters of its memory cap (a fresh
    /// instance is cheaper than one that is about to run out).
    pub fn reusable(&self, limits: &Limits) -> bool {
        !self.poisoned
            && !self.private
            && self.calls < limits.recycle_after
            && self.memory_used() < limits.memory_bytes() / 4 * 3
    }

    /// Prepares a pooled instance for a new user, whose memory cap it then holds
    /// against the budget.
    pub fn adopt(&mut self, limits: &Limits, session: Option<Arc<str>>) -> Result<(), Fault> {
        let bytes = limits.memory_bytes() as u64;
        if bytes != self.reserved.bytes() {
            self.reserved = Reservation::none();
            self.reserved = Reservation::take(bytes).map_err(Fault::Budget)?;
        }
        let state = self.store.data_mut();
        state.limits.recap(limits);
        state.session = session;
        self.budget = limits.deadline();
        Ok(())
    }

    fn arm(&mut self) {
        self.calls += 1;
        self.version.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.store.data_mut().deadline = Instant::now() + self.budget;
    }

    fn settle<T>(&mut self, result: wasmtime::Result<T>) -> Result<T, Fault> {
        result.map_err(|e| {
            let fault = Fault::classify(e);
            self.poisoned = true;
            self.version.stats.fault(&fault);
            fault
        })
    }

    /// `open` of the world's resource: a transform's `session`, a codec's
    /// `connection`. `Ok(Err(_))` is the plugin's refusal.
    pub async fn open(
        &mut self,
        metadata: &str,
        config: &str,
    ) -> Result<Result<ResourceAny, String>, Fault> {
        self.arm();
        let r = match &self.exports {
            Exports::Transform(t) => {
                let guest = t.l7mp_plugin_transform().session();
                guest.call_open(&mut self.store, metadata, config).await
            }
            Exports::Codec(c) => {
                let guest = c.l7mp_plugin_codec().connection();
                guest.call_open(&mut self.store, metadata, config).await
            }
            Exports::Matcher(_) => unreachable!("matchers have no resource"),
        };
        self.settle(r)
    }

    /// `transform.session.ingress` or `.egress`.
    pub async fn transform_hook(
        &mut self,
        session: ResourceAny,
        egress: bool,
        chunk: &[u8],
    ) -> Result<Result<transform::exports::l7mp::plugin::transform::Output, String>, Fault> {
        self.arm();
        let guest = transform_of(&self.exports)
            .l7mp_plugin_transform()
            .session();
        let r = if egress {
            guest.call_egress(&mut self.store, session, chunk).await
        } else {
            guest.call_ingress(&mut self.store, session, chunk).await
        };
        self.settle(r)
    }

    /// `codec.connection.decode`.
    pub async fn decode(
        &mut self,
        connection: ResourceAny,
        data: &[u8],
    ) -> Result<Result<Vec<codec::exports::l7mp::plugin::codec::Message>, String>, Fault> {
        self.arm();
        let r = codec_of(&self.exports)
            .l7mp_plugin_codec()
            .connection()
            .call_decode(&mut self.store, connection, data)
            .await;
        self.settle(r)
    }

    /// `codec.connection.encode`.
    pub async fn encode(
        &mut self,
        connection: ResourceAny,
        message: &[u8],
    ) -> Result<Result<Vec<u8>, String>, Fault> {
        self.arm();
        let r = codec_of(&self.exports)
            .l7mp_plugin_codec()
            .connection()
            .call_encode(&mut self.store, connection, message)
            .await;
        self.settle(r)
    }

    /// `matcher.matches`.
    pub async fn matches(
        &mut self,
        metadata: String,
        config: &str,
    ) -> Result<Result<bool, String>, Fault> {
        self.arm();
        let Exports::Matcher(m) = &self.exports else {
            unreachable!("a matcher plugin, checked at upload")
        };
        let r = m
            .l7mp_plugin_matcher()
            .call_matches(&mut self.store, &metadata, &config.to_owned())
            .await;
        self.settle(r)
    }

    /// Drops `resource`, then hands the instance back to its version's pool, in a task
    /// of its own: what a stage does when its session ends (from `Drop`, which cannot
    /// wait).
    pub fn release_later(mut self, resource: ResourceAny, usage: Arc<super::usage::PluginUse>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                self.release(resource).await;
                let version = self.version.clone();
                version.give_back(self, &usage);
            });
        }
    }

    /// Drops a resource the plugin handed out (its destructor runs in the guest).
    pub async fn release(&mut self, resource: ResourceAny) {
        if self.poisoned {
            return;
        }
        self.arm();
        let r = resource.resource_drop_async(&mut self.store).await;
        let _ = self.settle(r);
    }
}
