//! The plugins the proxy knows: each a name with its uploaded versions, one of them
//! current. A new version is a hot swap (sessions that start afterwards get it,
//! sessions that hold an older one keep it until they end); a rollback makes an
//! earlier version current again. Uploads are compiled and type-checked against the
//! worlds of `wit/` ([`super::compile`]) before they are accepted.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, IntCounterVec};
use wasmtime::component::ResourceAny;

use super::compile::{World, WorldPre};
use super::instance::{Fault, Instance};
use super::usage::PluginUse;
use crate::core::ConfigError;
use crate::metrics::Metrics;

/// The largest component the API accepts.
pub const MAX_UPLOAD: usize = 32 << 20;
/// Idle instances kept per version for the next session.
const MAX_IDLE: usize = 32;
/// Distinct counter names one plugin may create (each is a time series).
const MAX_GUEST_COUNTERS: usize = 64;

/// What a version has done, for `GET /plugins` and `/metrics`.
pub struct Stats {
    pub live: AtomicI64,
    pub calls: AtomicU64,
    pub instantiations: AtomicU64,
    pub faults: AtomicU64,
    calls_metric: IntCounter,
    labels: [String; 2],
    metrics: Arc<Metrics>,
}

impl Stats {
    fn new(plugin: &str, version: &str, metrics: &Arc<Metrics>) -> Stats {
        Stats {
            live: AtomicI64::new(0),
            calls: AtomicU64::new(0),
            instantiations: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            calls_metric: metrics.plugin_calls.with_label_values(&[plugin, version]),
            labels: [plugin.to_owned(), version.to_owned()],
            metrics: metrics.clone(),
        }
    }

    pub fn fault(&self, fault: &Fault) {
        self.faults.fetch_add(1, Ordering::Relaxed);
        let [plugin, version] = &self.labels;
        self.metrics
            .plugin_faults
            .with_label_values(&[plugin, version, fault.kind()])
            .inc();
    }

    /// Removes the version's series from `/metrics` (the plugin was deleted).
    fn forget(&self) {
        let m = &self.metrics;
        let [plugin, version] = &self.labels;
        let _ = m.plugin_calls.remove_label_values(&[plugin, version]);
        let _ = m.plugin_instances.remove_label_values(&[plugin, version]);
        for kind in ["deadline", "memory", "trap"] {
            let _ = m
                .plugin_faults
                .remove_label_values(&[plugin, version, kind]);
        }
    }

    /// Copies the atomics into Prometheus (at scrape and render time, not per call).
    fn publish(&self) {
        let calls = self.calls.load(Ordering::Relaxed);
        let seen = self.calls_metric.get();
        if calls > seen {
            self.calls_metric.inc_by(calls - seen);
        }
        let [plugin, version] = &self.labels;
        self.metrics
            .plugin_instances
            .with_label_values(&[plugin, version])
            .set(self.live.load(Ordering::Relaxed));
    }
}

/// The counters a plugin keeps through `host.counter-add`.
pub struct GuestCounters {
    plugin: String,
    names: Mutex<HashMap<String, IntCounter>>,
    /// `l7mp_plugin_counter_total`.
    vec: IntCounterVec,
}

impl GuestCounters {
    fn forget(&self) {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        for name in names.keys() {
            let _ = self.vec.remove_label_values(&[&self.plugin, name]);
        }
    }

    pub fn add(&self, name: &str, delta: u64) {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = names.get(name) {
            c.inc_by(delta);
            return;
        }
        if names.len() >= MAX_GUEST_COUNTERS {
            tracing::warn!(plugin = %self.plugin, "counter '{name}' ignored: a plugin may keep {MAX_GUEST_COUNTERS} counters");
            return;
        }
        let c = self.vec.with_label_values(&[&self.plugin, name]);
        c.inc_by(delta);
        names.insert(name.to_owned(), c);
    }
}

/// A plugin as `GET /api/v1/plugins/{name}` shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PluginView {
    pub name: String,
    /// The world its current version implements (`transform`, `codec`, `matcher`).
    pub world: &'static str,
    /// The version sessions start on.
    pub current: String,
    /// Every uploaded version, oldest first (the ones a rollback can go back to).
    pub versions: Vec<PluginVersionView>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PluginVersionView {
    pub version: String,
    pub current: bool,
    pub world: &'static str,
    pub sha256: String,
    pub size: usize,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// Unix seconds.
    pub uploaded: u64,
    pub precompiled_from_cache: bool,
    pub live_instances: i64,
    pub instantiations: u64,
    pub calls: u64,
    pub traps: u64,
}

/// One uploaded version of a plugin.
pub struct PluginVersion {
    pub plugin: String,
    pub version: String,
    /// `name@version`, for logs.
    pub label: Arc<str>,
    pub world: World,
    pub sha256: String,
    pub size: usize,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    pub uploaded: u64,
    /// Compiled now, or loaded from the on-disk cache.
    pub cached: bool,
    pub pre: WorldPre,
    pub stats: Stats,
    pub counters: Arc<GuestCounters>,
    /// Instances between users, with when they went idle.
    idle: Mutex<Vec<(Instant, Instance)>>,
    /// No longer current: its instances are not kept for later sessions.
    retired: AtomicBool,
}

/// What an upload was found to be.
pub struct Described {
    pub sha256: String,
    pub size: usize,
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// Loaded precompiled from the on-disk cache.
    pub cached: bool,
}

impl PluginVersion {
    pub fn new(
        plugin: &str,
        version: &str,
        world: World,
        described: Described,
        pre: WorldPre,
        metrics: &Arc<Metrics>,
    ) -> PluginVersion {
        let Described {
            sha256,
            size,
            exports,
            imports,
            cached,
        } = described;
        PluginVersion {
            plugin: plugin.to_owned(),
            version: version.to_owned(),
            label: format!("{plugin}@{version}").into(),
            world,
            sha256,
            size,
            exports,
            imports,
            uploaded: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            cached,
            pre,
            stats: Stats::new(plugin, version, metrics),
            counters: Arc::new(GuestCounters {
                plugin: plugin.to_owned(),
                names: Mutex::default(),
                vec: metrics.plugin_guest_counters.clone(),
            }),
            idle: Mutex::default(),
            retired: AtomicBool::new(false),
        }
    }

    /// An instance for `usage`: an idle one when there is one, else a fresh one. When
    /// the memory budget is used up, idle instances of every plugin are let go to make
    /// room before the new one is refused.
    pub async fn take(
        self: &Arc<Self>,
        usage: &PluginUse,
        session: Option<Arc<str>>,
        plugins: &Plugins,
    ) -> Result<Instance, Fault> {
        let pooled = if usage.grants.is_empty() {
            self.lock_idle().pop().map(|(_, instance)| instance)
        } else {
            None
        };
        if let Some(mut instance) = pooled
            && instance.adopt(&usage.limits, session.clone()).is_ok()
        {
            return Ok(instance);
        }
        let mut instance = match Instance::new(self, &usage.limits, &usage.grants).await {
            Err(Fault::Budget(_)) => {
                plugins.evict_idle();
                Instance::new(self, &usage.limits, &usage.grants).await?
            }
            other => other?,
        };
        instance.adopt(&usage.limits, session)?;
        Ok(instance)
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, Instance)>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An instance for `usage` with the world's resource (a transform's `session`, a
    /// codec's `connection`) opened in it for `metadata`. A refusal gives the instance
    /// back; a fault lets it go.
    pub async fn open(
        self: &Arc<Self>,
        usage: &PluginUse,
        session: Option<Arc<str>>,
        metadata: &str,
        plugins: &Plugins,
    ) -> Result<(Instance, ResourceAny), String> {
        let mut instance = self
            .take(usage, session, plugins)
            .await
            .map_err(|f| f.to_string())?;
        match instance.open(metadata, &usage.config_json).await {
            Ok(Ok(resource)) => Ok((instance, resource)),
            Ok(Err(refused)) => {
                self.give_back(instance, usage);
                Err(format!("refused: {refused}"))
            }
            Err(fault) => Err(fault.to_string()),
        }
    }

    /// Takes an instance back after a use; a poisoned, granted or worn-out one is
    /// dropped instead.
    pub fn give_back(&self, mut instance: Instance, usage: &PluginUse) {
        if !instance.reusable(&usage.limits) || self.retired.load(Ordering::Relaxed) {
            return;
        }
        if instance.adopt(&usage.limits, None).is_err() {
            return;
        }
        let mut idle = self.lock_idle();
        if idle.len() < MAX_IDLE {
            idle.push((Instant::now(), instance));
        }
    }

    /// Marks the version as current or not; a retired version lets its idle
    /// instances go.
    fn set_current(&self, current: bool) {
        self.retired.store(!current, Ordering::Relaxed);
        if !current {
            self.lock_idle().clear();
        }
    }

    fn render(&self, current: bool) -> PluginVersionView {
        self.stats.publish();
        PluginVersionView {
            version: self.version.clone(),
            current,
            world: self.world.name(),
            sha256: self.sha256.clone(),
            size: self.size,
            exports: self.exports.clone(),
            imports: self.imports.clone(),
            uploaded: self.uploaded,
            precompiled_from_cache: self.cached,
            live_instances: self.stats.live.load(Ordering::Relaxed),
            instantiations: self.stats.instantiations.load(Ordering::Relaxed),
            calls: self.stats.calls.load(Ordering::Relaxed),
            traps: self.stats.faults.load(Ordering::Relaxed),
        }
    }
}

struct Plugin {
    versions: Vec<Arc<PluginVersion>>,
    current: usize,
}

impl Plugin {
    fn make_current(&mut self, index: usize) {
        self.current = index;
        for (i, v) in self.versions.iter().enumerate() {
            v.set_current(i == index);
        }
    }
}

/// All plugins, by name.
pub struct Plugins {
    map: RwLock<BTreeMap<String, Plugin>>,
    /// Where their calls, faults and instances are counted.
    pub metrics: Arc<Metrics>,
}

impl Plugins {
    pub fn new(metrics: Arc<Metrics>) -> Plugins {
        Plugins {
            map: RwLock::default(),
            metrics,
        }
    }
}

fn check(map: &BTreeMap<String, Plugin>, version: &PluginVersion) -> Result<(), ConfigError> {
    valid_name("plugin name", &version.plugin)?;
    valid_name("version", &version.version)?;
    let Some(p) = map.get(&version.plugin) else {
        return Ok(());
    };
    let world = p.versions[p.current].world;
    if world != version.world {
        return Err(ConfigError::conflict(format!(
            "plugin '{}' is a {} plugin; version '{}' is a {} plugin (delete the plugin first to change its world)",
            version.plugin,
            world.name(),
            version.version,
            version.world.name()
        )));
    }
    if p.versions.iter().any(|v| v.version == version.version) {
        return Err(ConfigError::conflict(format!(
            "plugin '{}' already has a version '{}'",
            version.plugin, version.version
        )));
    }
    Ok(())
}

fn valid_name(what: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::malformed(format!(
            "{what} {name:?}: use 1-128 letters, digits, '-', '_' or '.'"
        )))
    }
}

impl Plugins {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Plugin>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Plugin>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The version new sessions get.
    pub fn current(&self, name: &str) -> Option<Arc<PluginVersion>> {
        self.read().get(name).map(|p| p.versions[p.current].clone())
    }

    /// Checks that `name` is loaded and implements `world`, for config objects that use
    /// it.
    pub fn require(&self, name: &str, world: World) -> Result<(), ConfigError> {
        match self.current(name) {
            None => Err(ConfigError::invalid(format!(
                "plugin '{name}' is not loaded (upload it to /api/v1/plugins or list it under 'plugins' in the config)"
            ))),
            Some(v) if v.world != world => Err(ConfigError::invalid(format!(
                "plugin '{name}' is a {} plugin, not a {}",
                v.world.name(),
                world.name()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Adds a compiled version and makes it current. The name's earlier versions must
    /// be of the same world, and the version string new.
    pub fn add(&self, version: PluginVersion) -> Result<Arc<PluginVersion>, ConfigError> {
        let version = Arc::new(version);
        let mut map = self.write();
        check(&map, &version)?;
        match map.get_mut(&version.plugin) {
            None => {
                map.insert(
                    version.plugin.clone(),
                    Plugin {
                        versions: vec![version.clone()],
                        current: 0,
                    },
                );
            }
            Some(p) => {
                p.versions.push(version.clone());
                p.make_current(p.versions.len() - 1);
            }
        }
        tracing::info!(plugin = %version.label, world = version.world.name(), "plugin version is current");
        Ok(version)
    }

    /// Whether `version` could be added now (what [`Plugins::add`] checks).
    pub fn check(&self, version: &PluginVersion) -> Result<(), ConfigError> {
        check(&self.read(), version)
    }

    /// Whether `name`'s current version already has these bytes (a config reload that
    /// changed nothing).
    pub fn is_current(&self, name: &str, sha256: &str) -> bool {
        self.current(name).is_some_and(|v| v.sha256 == sha256)
    }

    /// Makes `to` (or else the version before the current one) current again.
    pub fn rollback(
        &self,
        name: &str,
        to: Option<&str>,
    ) -> Result<Arc<PluginVersion>, ConfigError> {
        let mut map = self.write();
        let p = map
            .get_mut(name)
            .ok_or_else(|| ConfigError::not_found(format!("plugin '{name}' not found")))?;
        let index = match to {
            Some(to) => p
                .versions
                .iter()
                .position(|v| v.version == to)
                .ok_or_else(|| {
                    ConfigError::not_found(format!("plugin '{name}' has no version '{to}'"))
                })?,
            None if p.current == 0 => {
                return Err(ConfigError::conflict(format!(
                    "plugin '{name}' has no version before '{}'",
                    p.versions[0].version
                )));
            }
            None => p.current - 1,
        };
        p.make_current(index);
        let v = p.versions[index].clone();
        tracing::info!(plugin = %v.label, "plugin rolled back");
        Ok(v)
    }

    /// Removes a plugin; sessions holding one of its versions keep it until they end.
    pub fn remove(&self, name: &str) -> Result<(), ConfigError> {
        let p = self
            .write()
            .remove(name)
            .ok_or_else(|| ConfigError::not_found(format!("plugin '{name}' not found")))?;
        for v in &p.versions {
            v.set_current(false);
            v.stats.forget();
        }
        if let Some(v) = p.versions.first() {
            v.counters.forget();
        }
        Ok(())
    }

    pub fn exists(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// Live instances of every version of `name`.
    pub fn live_instances(&self, name: &str) -> i64 {
        self.read().get(name).map_or(0, |p| {
            p.versions
                .iter()
                .map(|v| v.stats.live.load(Ordering::Relaxed) - v.lock_idle().len() as i64)
                .sum()
        })
    }

    pub fn render(&self, name: &str) -> Option<PluginView> {
        let map = self.read();
        let p = map.get(name)?;
        let current = &p.versions[p.current];
        Some(PluginView {
            name: name.to_owned(),
            world: current.world.name(),
            current: current.version.clone(),
            versions: p
                .versions
                .iter()
                .enumerate()
                .map(|(i, v)| v.render(i == p.current))
                .collect(),
        })
    }

    pub fn render_all(&self) -> Vec<PluginView> {
        let names: Vec<String> = self.read().keys().cloned().collect();
        names.iter().filter_map(|n| self.render(n)).collect()
    }

    /// Lets go of instances idle for longer than `age`, so their memory goes back.
    pub fn reap_idle(&self, age: std::time::Duration) {
        for p in self.read().values() {
            for v in &p.versions {
                v.lock_idle().retain(|(since, _)| since.elapsed() < age);
            }
        }
    }

    /// Lets go of every idle instance (the memory budget is needed elsewhere).
    pub fn evict_idle(&self) {
        for p in self.read().values() {
            for v in &p.versions {
                v.lock_idle().clear();
            }
        }
    }

    /// Publishes every version's counters to Prometheus (called at scrape time).
    pub fn publish(&self) {
        for p in self.read().values() {
            for v in &p.versions {
                v.stats.publish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_are_plain() {
        assert!(valid_name("version", "1.2.0-rc1").is_ok());
        assert!(valid_name("version", "").is_err());
        assert!(valid_name("plugin name", "a/b").is_err());
        assert!(valid_name("plugin name", "x y").is_err());
    }
}
