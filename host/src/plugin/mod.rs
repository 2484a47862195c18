//! WebAssembly plugins: components written against the worlds in `wit/`
//! (`l7mp:plugin@0.1.0`), uploaded at run time and hot-swapped without a restart.
//!
//! They enter through the same seams as the built-ins: a transform is a cluster
//! ([`transform`]), a codec is a listener's framing layer ([`codec`]), a matcher is one
//! more JSONPredicate operator ([`matcher`]).
//!
//! The runtime is one wasmtime [`Engine`] for the process ([`PluginHost`], made where
//! the proxy is put together and handed down), created at the first use:
//! - **Isolation.** Every call has a wall-clock deadline (epoch interruption, the
//!   plugin yields to the scheduler every tick so it never blocks other sessions) and
//!   every instance a memory cap ([`wasmtime::StoreLimits`], a failed grow traps).
//!   A plugin sees WASI with no files, network or environment unless its user grants
//!   directories or variables ([`usage::Grants`]).
//! - **Failure.** A trap, overrun deadline or memory ends only what the instance
//!   serves (the user's `on_fault`: drop the chunk, close the session, or pass it
//!   through), is counted, and the instance is thrown away.
//! - **Speed.** The pooling allocator keeps instance memory ready; each version is
//!   linked once (`InstancePre`); idle instances serve the next session until they
//!   have made `recycle_after` calls; compiled code is cached on disk ([`cache`]).

mod bindings;
mod cache;
pub mod codec;
mod compile;
mod instance;
pub mod matcher;
pub mod memory;
mod registry;
pub mod transform;
pub mod usage;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use wasmtime::component::Linker;

use crate::core::build::{Matcher, PluginCatalog};
use crate::core::spec::Validation;
use crate::metrics::Metrics;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use compile::{DEFAULT_MAX_FUNCTIONS, World, set_max_functions};
pub use instance::{Fault, Instance};
pub use registry::{MAX_UPLOAD, PluginVersion, PluginView, Plugins};

use instance::HostState;

/// The largest metadata a plugin may hand back (its JSON text): metadata is walked by
/// every later stage and listing.
pub const MAX_METADATA: usize = 64 << 10;

/// How often the engine's epoch advances: the granularity of deadlines and of the
/// points where a long call yields to other tasks.
const TICK: Duration = Duration::from_millis(1);
/// Instances that may be alive at once, across all plugins.
const MAX_INSTANCES: u32 = 2000;
/// An instance idle this long is let go (its memory goes back to the system).
const IDLE_INSTANCE_AGE: Duration = Duration::from_secs(10);
/// How often (in ticks) idle instances are looked at.
const REAP_EVERY_TICKS: u64 = 1000;

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<cache::Cache>,
    pub plugins: Plugins,
}

/// The plugin runtime of a proxy: the wasmtime engine and the plugins loaded into it,
/// created the first time a plugin is used (a proxy without plugins never pays for
/// the engine's reservations or its epoch thread).
pub struct PluginHost {
    metrics: Arc<Metrics>,
    /// Where compiled components are cached: `None` turns the cache off.
    cache_dir: Option<PathBuf>,
    runtime: OnceLock<Arc<Runtime>>,
}

impl PluginHost {
    pub fn new(metrics: Arc<Metrics>, cache_dir: Option<PathBuf>) -> Arc<PluginHost> {
        Arc::new(PluginHost {
            metrics,
            cache_dir,
            runtime: OnceLock::new(),
        })
    }

    /// The runtime, created now if this is the first use.
    pub fn runtime(&self) -> &Arc<Runtime> {
        self.runtime
            .get_or_init(|| Runtime::new(self.metrics.clone(), self.cache_dir.as_deref()))
    }

    /// Publishes plugin counters to Prometheus, if plugins were ever used.
    pub fn publish_metrics(&self) {
        if let Some(rt) = self.runtime.get() {
            rt.plugins.publish();
        }
    }
}

/// `$XDG_CACHE_HOME/l7mp/plugins`, else `~/.cache/l7mp/plugins`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("l7mp").join("plugins"))
}

fn config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(MAX_INSTANCES * 4)
            .total_memories(MAX_INSTANCES)
            .total_tables(MAX_INSTANCES * 4)
            .total_stacks(MAX_INSTANCES)
            .max_memory_size((usage::MAX_MEMORY_MB as usize) << 20)
            // A dropped instance's memory goes back to the kernel at once. Batching the
            // decommits spreads a TLB shootdown over several instances (the fresh path
            // was 5 us faster), but a batch that never fills keeps up to 15 slots'
            // memory per core resident for as long as no other instance drops: memory
            // is returned in bounded time instead.
            .decommit_batch_size(1);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Runtime {
    fn new(metrics: Arc<Metrics>, cache_dir: Option<&std::path::Path>) -> Arc<Runtime> {
        let engine = Engine::new(&config(true)).unwrap_or_else(|e| {
            tracing::warn!(
                "plugins: the pooling allocator is unavailable ({e:#}); allocating per instance"
            );
            Engine::new(&config(false)).expect("a default wasmtime engine")
        });
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("WASI links");
        bindings::host::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |state| state,
        )
        .expect("the host interface links");
        bindings::transform::l7mp::plugin::types::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut linker, |state| state)
        .expect("the types interface links");
        let cache = cache_dir.and_then(|dir| {
            cache::Cache::open(dir)
                .inspect_err(|e| tracing::warn!("plugin cache off: {e}"))
                .ok()
        });
        let runtime = Arc::new(Runtime {
            engine,
            linker,
            cache,
            plugins: Plugins::new(metrics),
        });
        let ticker = runtime.engine.weak();
        let reaper = Arc::downgrade(&runtime);
        std::thread::Builder::new()
            .name("l7mp-epoch".into())
            .spawn(move || {
                let mut ticks = 0u64;
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                    ticks += 1;
                    if ticks.is_multiple_of(REAP_EVERY_TICKS)
                        && let Some(rt) = reaper.upgrade()
                    {
                        rt.plugins.reap_idle(IDLE_INSTANCE_AGE);
                    }
                }
            })
            .expect("spawn the epoch thread");
        runtime
    }

    /// Compiles, checks and adds a version (the upload path of the API and the
    /// config's `plugins` section). Compiling is CPU work: it runs off the async
    /// workers.
    pub async fn upload(
        self: &Arc<Self>,
        name: String,
        version: String,
        bytes: bytes::Bytes,
    ) -> Result<std::sync::Arc<PluginVersion>, crate::core::ConfigError> {
        let this = self.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            let compiled = this.compile(&name, &version, &bytes);
            after_compile();
            compiled
        })
        .await
        .map_err(|e| crate::core::ConfigError::internal(format!("compiling: {e}")))??;
        self.plugins.add(compiled)
    }
}

/// Compiling freed a lot, on this thread and on every thread of wasmtime's compile
/// pool: each gives it back to the system now (measured: an 80,000-function component
/// left 25 MiB behind without this).
fn after_compile() {
    crate::memory::collect();
    rayon::broadcast(|_| crate::memory::collect());
}

/// An entry of the config's `plugins` section.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    path: PathBuf,
    /// Defaults to the first 12 hex digits of the file's SHA-256.
    version: Option<String>,
}

/// The plugins one configuration change loads: compiled while the change is built,
/// made current only when it commits (a change that fails leaves every plugin as it
/// was). Objects of the change may name them as if they were loaded.
pub struct Staging {
    host: Arc<PluginHost>,
    host_access: bool,
    staged: Mutex<Vec<PluginVersion>>,
}

impl Staging {
    /// `host_access`: the change may grant plugins host resources.
    pub fn new(host: Arc<PluginHost>, host_access: bool) -> Staging {
        Staging {
            host,
            host_access,
            staged: Mutex::default(),
        }
    }

    fn staged(&self) -> std::sync::MutexGuard<'_, Vec<PluginVersion>> {
        self.staged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every staged version current.
    pub fn publish(self) -> crate::core::Result<()> {
        let staged = self.staged.into_inner().unwrap_or_else(|p| p.into_inner());
        for version in staged {
            self.host.runtime().plugins.add(version)?;
        }
        Ok(())
    }
}

impl PluginCatalog for Staging {
    fn require(&self, name: &str, world: World) -> crate::core::Result<()> {
        match self.staged().iter().find(|v| v.plugin == name) {
            Some(v) if v.world != world => Err(crate::core::ConfigError::invalid(format!(
                "plugin '{name}' is a {} plugin, not a {}",
                v.world.name(),
                world.name()
            ))),
            Some(_) => Ok(()),
            None => self.host.runtime().plugins.require(name, world),
        }
    }

    /// Compiles a plugin listed in the config (`plugins: [{name, path, version}]`),
    /// unless its current version already has these bytes.
    fn stage(&self, entry: &serde_json::Value, strict: Validation) -> crate::core::Result<()> {
        use crate::core::ConfigError;
        let entry: FileEntry = crate::core::spec::typed(entry, "plugins[]", strict)?;
        let context = |e: ConfigError| e.context(format!("plugin '{}'", entry.name));
        let bytes = std::fs::read(&entry.path).map_err(|e| {
            context(ConfigError::invalid(format!(
                "cannot read {}: {e}",
                entry.path.display()
            )))
        })?;
        let sha = compile::sha256_hex(&bytes);
        let rt = self.host.runtime();
        if rt.plugins.is_current(&entry.name, &sha) {
            return Ok(());
        }
        if self.staged().iter().any(|v| v.plugin == entry.name) {
            return Err(context(ConfigError::invalid(
                "listed twice under 'plugins'",
            )));
        }
        let version = entry
            .version
            .clone()
            .unwrap_or_else(|| sha[..12].to_owned());
        // CPU work: config loads run off the I/O workers (`proxy::off_workers`).
        let compiled = rt.compile_hashed(&entry.name, &version, &bytes, sha.clone());
        after_compile();
        let compiled = compiled.map_err(context)?;
        rt.plugins.check(&compiled).map_err(context)?;
        self.staged().push(compiled);
        Ok(())
    }

    fn host_access(&self) -> bool {
        self.host_access
    }

    fn matcher(&self, spec: &serde_json::Value) -> crate::core::Result<Arc<dyn Matcher>> {
        Ok(Arc::new(matcher::PluginMatcher::compile(
            spec,
            self,
            self.host.clone(),
        )?))
    }

    fn transform(
        &self,
        spec: &serde_json::Value,
        validation: Validation,
    ) -> crate::core::Result<Arc<dyn crate::core::ClusterProtocol>> {
        Ok(Arc::new(transform::WasmCluster::from_spec(
            spec,
            validation,
            self,
            self.host.clone(),
        )?))
    }

    fn codec(
        &self,
        transport: Arc<dyn crate::core::ListenerProtocol>,
        spec: &serde_json::Value,
        validation: Validation,
    ) -> crate::core::Result<Arc<dyn crate::core::ListenerProtocol>> {
        Ok(Arc::new(codec::CodecListener::new(
            transport,
            spec,
            validation,
            self,
            self.host.clone(),
        )?))
    }
}
