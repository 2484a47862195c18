//! The proxy's live state: the current configuration snapshot, the running listeners
//! and the sessions. Every change builds a new snapshot, binds what it must, and swaps
//! the snapshot in whole, or changes nothing and says why.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::core::error::ErrorKind;
use crate::core::spec::{Validation, take_unknown_fields, typed};
use crate::core::{ListenerContext, ListenerTask};
use crate::logging;
use crate::model::auth::{MtlsSettings, Token};
use crate::model::inline::Builder;
use crate::model::{Admin, ConfigError, Kind, Result, Snapshot};
use crate::registry::{self, Change};
use crate::services::Services;
use crate::session::{Engine, Registry};
use crate::tls::{Acceptor, ServerTlsSpec};

pub struct Proxy {
    config: Arc<ArcSwap<Snapshot>>,
    /// Serializes changes; readers never wait for it.
    write: tokio::sync::Mutex<()>,
    listeners: Mutex<HashMap<String, ListenerTask>>,
    pub sessions: Arc<Registry>,
    /// What listeners hand their sessions to; it reads the same configuration.
    pub engine: Arc<Engine>,
    pub services: Services,
    /// `admin.auth`'s tokens, resolved when the settings were applied.
    tokens: ArcSwap<Vec<Token>>,
    mtls: ArcSwap<Option<MtlsSettings>>,
    /// `admin.tls` as loaded, and the acceptor built from it.
    api_tls: Mutex<Option<(ServerTlsSpec, Arc<Acceptor>)>>,
    /// `--admin-insecure`: the API may be served beyond loopback without tokens.
    insecure: AtomicBool,
    /// The command line's `-s` and `--reject-unknown-fields`, whatever the admin
    /// settings say.
    flags: Validation,
}

impl Proxy {
    pub fn new(flags: Validation, services: Services) -> Arc<Proxy> {
        let config = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let sessions = Arc::new(Registry::default());
        Arc::new(Proxy {
            engine: Engine::new(
                config.clone(),
                sessions.clone(),
                services.metrics.clone(),
                services.offload.clone(),
            ),
            services,
            tokens: ArcSwap::from_pointee(Vec::new()),
            api_tls: Mutex::default(),
            mtls: ArcSwap::from_pointee(None),
            insecure: AtomicBool::new(false),
            config,
            write: tokio::sync::Mutex::new(()),
            listeners: Mutex::default(),
            sessions,
            flags,
        })
    }

    /// The bearer tokens the API takes; none: it takes no credentials.
    pub fn tokens(&self) -> Arc<Vec<Token>> {
        self.tokens.load_full()
    }

    /// Whether the API takes credentials (tokens, or client certificates with
    /// roles); without, it may only listen on loopback.
    pub fn authenticates(&self) -> bool {
        !self.tokens().is_empty() || self.mtls().is_some()
    }

    /// How client certificates map to roles, if they do.
    pub fn mtls(&self) -> Arc<Option<MtlsSettings>> {
        self.mtls.load_full()
    }

    /// The TLS the API's own server terminates now (`admin.tls`).
    pub fn api_tls(&self) -> Option<Arc<Acceptor>> {
        let current = self.api_tls.lock().unwrap_or_else(|p| p.into_inner());
        current.as_ref().map(|(_, acceptor)| acceptor.clone())
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.config.load_full()
    }

    fn validation(&self, snap: &Snapshot) -> Validation {
        self.flags
            .with(snap.admin.strict, snap.admin.reject_unknown_fields)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, ListenerTask>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a listener is bound, for listings.
    pub fn bound_address(&self, listener: &str) -> Option<String> {
        self.running().get(listener).map(|t| t.local_addr.clone())
    }

    async fn start_listener(&self, snap: &Arc<Snapshot>, name: &str) -> Result<ListenerTask> {
        let listener = snap.listeners.get(name).expect("started listeners exist");
        let cx = ListenerContext {
            name: name.to_owned(),
            sink: self.engine.sink(name),
            options: listener.options.clone(),
        };
        let task = listener.protocol.start(cx).await.map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::AddrInUse {
                ErrorKind::Conflict
            } else {
                ErrorKind::Invalid
            };
            ConfigError::new(kind, format!("listener '{name}': cannot start: {e}"))
        })?;
        // A listener that serves the API is the API: beyond loopback it needs tokens.
        let exposed = task
            .local_addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| !a.ip().is_loopback());
        if exposed
            && !self.authenticates()
            && !self.insecure.load(Ordering::Relaxed)
            && crate::routing::reaches(snap, name, |c| c.protocol.serves_api())
        {
            let message = format!(
                "listener '{name}' would serve the API on {} without authentication: bind it to 127.0.0.1, or configure admin.auth.tokens (or start with --admin-insecure)",
                task.local_addr
            );
            task.stop().await;
            return Err(ConfigError::forbidden(message));
        }
        Ok(task)
    }

    /// Lets the API be served beyond loopback without tokens (`--admin-insecure`).
    pub fn allow_insecure_api(&self) {
        self.insecure.store(true, Ordering::Relaxed);
    }

    /// Adds objects: `build` fills a working copy (off the I/O workers: building
    /// compiles predicates and regexes); new listeners are bound before the copy goes
    /// live. Returns what was created.
    pub async fn add(
        &self,
        host_access: bool,
        build: impl FnOnce(&mut Builder<'_>) -> Result<()> + Send + 'static,
    ) -> Result<Built> {
        let _guard = self.write.lock().await;
        let current = self.snapshot();
        let strict = self.validation(&current);
        let services = self.services.clone();
        let change =
            off_workers(move || registry::build(&current, strict, &services, host_access, build))
                .await?;
        let created = change.created.clone();
        let warnings = change.warnings.clone();
        self.commit(change, HashMap::new()).await?;
        Ok(Built { created, warnings })
    }

    /// Binds the change's new listeners, makes its plugins current, then makes its
    /// snapshot current: all of it, or on a failure nothing (listeners in `keep` go
    /// back to running).
    async fn commit(&self, change: Change, keep: HashMap<String, ListenerTask>) -> Result<()> {
        let snap = Arc::new(change.snap);
        let mut started = HashMap::new();
        for (kind, name) in &change.created {
            if *kind == Kind::Listener && !keep.contains_key(name) {
                match self.start_listener(&snap, name).await {
                    Ok(task) => {
                        started.insert(name.clone(), task);
                    }
                    Err(e) => {
                        self.running().extend(keep);
                        return Err(e);
                    }
                }
            }
        }
        if let Err(e) = change.plugins.publish() {
            for (_, task) in started {
                task.stop().await;
            }
            self.running().extend(keep);
            return Err(e);
        }
        let mut running = self.running();
        running.extend(keep);
        running.extend(started);
        self.config.store(snap);
        Ok(())
    }

    /// `PUT`: replaces an object. Established sessions keep their copied routes; a
    /// listener whose binding did not change keeps its socket.
    pub async fn replace(
        &self,
        host_access: bool,
        kind: Kind,
        name: &str,
        value: Value,
    ) -> Result<Vec<String>> {
        let _guard = self.write.lock().await;
        let current = self.snapshot();
        exists(&current, kind, name)?;
        let Value::Object(mut fields) = value else {
            return Err(ConfigError::invalid(format!(
                "a {} must be an object",
                kind.singular()
            )));
        };
        if fields.get("name").is_some_and(|n| n.as_str() != Some(name)) {
            return Err(ConfigError::invalid(format!(
                "the body names another object than '{name}'"
            )));
        }
        fields.insert("name".into(), Value::String(name.to_owned()));
        let value = Value::Object(fields);
        let strict = self.validation(&current);
        let (base, owned) = (current.clone(), name.to_owned());
        let services = self.services.clone();
        let change = off_workers(move || {
            registry::build(&base.clone(), strict, &services, host_access, |builder| {
                for (k, n) in autogenerated_tree(&base, kind, &owned) {
                    builder.snap.remove(k, &n);
                }
                builder.snap.remove(kind, &owned);
                match kind {
                    Kind::Listener => builder.add_listener(&value).map(drop)?,
                    Kind::Cluster => builder.add_cluster(&value, None).map(drop)?,
                    Kind::RuleList => builder.add_rulelist(&value, None).map(drop)?,
                    Kind::Rule => builder.add_rule(&value, None).map(drop)?,
                    Kind::Route => builder.add_route(&value, None).map(drop)?,
                    Kind::Endpoint => {
                        let cluster = base.endpoints[&owned].cluster.clone();
                        builder.add_endpoint(&cluster, &value).map(drop)?
                    }
                }
                Ok(())
            })
        })
        .await?;
        let warnings = change.warnings.clone();
        let mut keep = HashMap::new();
        if kind == Kind::Listener {
            let same = same_binding(&current.listeners[name], &change.snap.listeners[name]);
            let task = self.running().remove(name);
            match task {
                Some(task) if same => {
                    keep.insert(name.to_owned(), task);
                }
                Some(task) => task.stop().await, // frees the port for the new binding
                None => {}
            }
            if keep.is_empty() {
                if let Err(e) = self.commit(change, keep).await {
                    // Put the old listener back on its socket.
                    if let Ok(task) = self.start_listener(&current, name).await {
                        self.running().insert(name.to_owned(), task);
                    }
                    return Err(e);
                }
                return Ok(warnings);
            }
        }
        self.commit(change, keep).await?;
        Ok(warnings)
    }

    /// Deletes an object. `recursive` also deletes what it created inline and ends the
    /// sessions that use any of it; for an endpoint it disconnects its sessions'
    /// stages so that their retry policy can move them.
    pub async fn delete(&self, kind: Kind, name: &str, recursive: bool) -> Result<()> {
        let _guard = self.write.lock().await;
        let current = self.snapshot();
        exists(&current, kind, name)?;
        let mut doomed = vec![(kind, name.to_owned())];
        if recursive {
            doomed.extend(autogenerated_tree(&current, kind, name));
        }
        let mut next = (*current).clone();
        for (k, n) in &doomed {
            next.remove(*k, n);
        }
        self.config.store(Arc::new(next));
        let m = &self.services.metrics;
        for (k, n) in &doomed {
            match k {
                Kind::Listener => {
                    let task = self.running().remove(n);
                    if let Some(task) = task {
                        task.stop().await;
                    }
                    m.forget_listener(n);
                }
                Kind::Cluster => m.forget_cluster(n),
                _ => {}
            }
        }
        if recursive {
            for (k, n) in &doomed {
                if *k == Kind::Endpoint {
                    for session in self.sessions.using(Kind::Endpoint, n) {
                        let state = session.state();
                        for stage in state
                            .stages()
                            .filter(|s| s.endpoint_name() == Some(n.as_str()))
                        {
                            stage.kick.notify_one();
                        }
                    }
                } else {
                    for session in self.sessions.using(*k, n) {
                        session.kill.cancel();
                    }
                }
            }
        }
        Ok(())
    }

    /// `POST /api/v1/config`: makes `doc` the whole configuration. Unchanged listeners
    /// keep their sockets; sessions keep running on their copied routes.
    pub async fn load_config(&self, host_access: bool, doc: Value) -> Result<Vec<String>> {
        let _guard = self.write.lock().await;
        let current = self.snapshot();
        let strict = self.flags.for_document(&doc);
        let base = Snapshot {
            admin: current.admin.clone(),
            ..Snapshot::default()
        };
        let services = self.services.clone();
        let change = off_workers(move || {
            registry::build(&base, strict, &services, host_access, |builder| {
                builder.add_config(&doc)
            })
        })
        .await?;
        let warnings = change.warnings.clone();
        host_reaching(host_access, &current.admin, &change.snap.admin)?;
        // Logging settings first: a log file that cannot be opened stops the load
        // before any listener is touched.
        self.apply_admin(&change.snap.admin)
            .map_err(ConfigError::invalid)?;
        // Listeners that stay the same keep running; the others stop before the new
        // ones bind (they may want the same ports).
        let mut keep = HashMap::new();
        let mut stopped = Vec::new();
        for (name, old) in &current.listeners {
            let same = change
                .snap
                .listeners
                .get(name)
                .is_some_and(|new| same_binding(old, new));
            let task = self.running().remove(name);
            if let Some(task) = task {
                if same {
                    keep.insert(name.clone(), task);
                } else {
                    task.stop().await;
                    stopped.push(name.clone());
                }
            }
        }
        if let Err(e) = self.commit(change, keep).await {
            let _ = self.apply_admin(&current.admin);
            for name in stopped {
                if let Ok(task) = self.start_listener(&current, &name).await {
                    self.running().insert(name, task);
                }
            }
            return Err(e);
        }
        for name in current
            .listeners
            .keys()
            .filter(|n| !self.snapshot().listeners.contains_key(*n))
        {
            self.services.metrics.forget_listener(name);
        }
        Ok(warnings)
    }

    /// `POST /api/v1/admin`: merges the given settings; answers the unknown fields it
    /// accepted.
    pub async fn update_admin(&self, host_access: bool, value: &Value) -> Result<Vec<String>> {
        let _guard = self.write.lock().await;
        let current = self.snapshot();
        let mut merged = serde_json::to_value(&current.admin).unwrap_or_default();
        let Some(fields) = value.as_object() else {
            return Err(ConfigError::invalid("admin must be an object"));
        };
        for (k, v) in fields {
            // What GET /admin shows but nobody sets: a GET posted back is fine.
            if READ_ONLY_ADMIN.contains(&k.as_str()) {
                continue;
            }
            merged[k] = v.clone();
        }
        // Taken whether or not it parses: nothing is left behind on this worker.
        let parsed: Result<Admin> = typed(&merged, "admin", self.validation(&current));
        let warnings = take_unknown_fields();
        let admin = parsed?;
        admin.validate().map_err(ConfigError::invalid)?;
        host_reaching(host_access, &current.admin, &admin)?;
        self.apply_admin(&admin).map_err(ConfigError::invalid)?;
        let mut next = (*current).clone();
        next.admin = admin;
        self.config.store(Arc::new(next));
        Ok(warnings)
    }
}

/// What a change created, and the unknown fields it accepted.
pub struct Built {
    pub created: Vec<(Kind, String)>,
    pub warnings: Vec<String>,
}

/// Runs CPU-heavy work (parsing a body, building objects with their predicates and
/// regexes, compiling plugins) on the blocking pool, two at a time, so that it never
/// holds an I/O worker: data sessions keep moving while the API works.
pub async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    static HEAVY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let _permit = HEAVY
        .acquire()
        .await
        .map_err(|_| ConfigError::new(ErrorKind::Unavailable, "the proxy is shutting down"))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ConfigError::internal(format!("internal error: {e}")))?
}

/// Two listeners that bind the same way can swap without closing the socket: the same
/// spec, and the same options (a UDP listener reads its mode from them when it binds).
fn same_binding(old: &crate::model::Listener, new: &crate::model::Listener) -> bool {
    old.spec == new.spec && old.options == new.options
}

/// Refuses admin settings that reach the host when the caller may not.
fn host_reaching(host_access: bool, current: &Admin, next: &Admin) -> Result<()> {
    let changed = current.host_reaching_changes(next);
    if host_access || changed.is_empty() {
        return Ok(());
    }
    Err(ConfigError::forbidden(format!(
        "admin.{} reaches the host: {}",
        changed.join(", admin."),
        crate::core::build::HOST_ACCESS.replace("create", "change")
    )))
}

/// Keys of `GET /api/v1/admin` that report state rather than settings.
pub const READ_ONLY_ADMIN: &[&str] = &["version", "offload_status", "plugin_memory"];

fn exists(snap: &Snapshot, kind: Kind, name: &str) -> Result<()> {
    if snap.contains(kind, name) {
        Ok(())
    } else {
        Err(ConfigError::not_found(format!(
            "{} '{name}' not found",
            kind.singular()
        )))
    }
}

impl Proxy {
    /// Puts the admin settings into effect (logging, offload, the descriptor reserve).
    /// Loads `admin.tls` when it changed (new API connections use it).
    fn set_api_tls(&self, spec: Option<&ServerTlsSpec>) -> std::result::Result<(), String> {
        let mut current = self.api_tls.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_ref().map(|(s, _)| s) == spec {
            return Ok(());
        }
        *current = match spec {
            None => None,
            Some(spec) => {
                let acceptor =
                    Acceptor::new(spec, &["http/1.1"]).map_err(|e| format!("admin.tls: {e}"))?;
                Some((spec.clone(), Arc::new(acceptor)))
            }
        };
        Ok(())
    }

    fn apply_admin(&self, admin: &Admin) -> std::result::Result<(), String> {
        // `init` loads and attaches the kernel program now; `no_init` waits for the first
        // session that can use it; `disable` keeps everything in userspace.
        if admin.offload != "no_init" {
            self.services
                .offload
                .configure(&admin.offload, admin.offload_ifs.as_ref());
        }
        crate::protocol::net::set_fd_reserve(admin.fd_reserve);
        crate::plugin::memory::set_budget_mb(admin.plugin_memory_mb);
        crate::plugin::set_max_functions(admin.plugin_max_functions);
        logging::parse_level(&admin.log_level).map_err(|e| format!("admin: {e}"))?;
        let tokens = match &admin.auth {
            Some(auth) => auth.resolve()?,
            None => Vec::new(),
        };
        self.set_api_tls(admin.tls.as_ref())?;
        self.tokens.store(Arc::new(tokens));
        self.mtls
            .store(Arc::new(admin.auth.as_ref().and_then(|a| a.mtls.clone())));
        logging::set_file(&admin.log_file).map_err(|e| format!("admin: {e}"))?;
        logging::set_level(&admin.log_level)
    }
}

/// What an object created inline, transitively: deleted with it when recursive.
fn autogenerated_tree(snap: &Snapshot, kind: Kind, name: &str) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let mut pending = vec![(kind, name.to_owned())];
    while let Some((k, n)) = pending.pop() {
        let children: Vec<(Kind, String)> = match k {
            Kind::Listener => snap
                .listeners
                .get(&n)
                .map(|l| vec![(Kind::RuleList, l.rules.clone())])
                .unwrap_or_default(),
            Kind::RuleList => snap
                .rulelists
                .get(&n)
                .map(|rl| rl.rules.iter().map(|r| (Kind::Rule, r.clone())).collect())
                .unwrap_or_default(),
            Kind::Rule => snap
                .rules
                .get(&n)
                .and_then(|r| r.action.route.clone())
                .map(|r| vec![(Kind::Route, r)])
                .unwrap_or_default(),
            Kind::Route => snap
                .routes
                .get(&n)
                .map(|r| {
                    std::iter::once(&r.destination)
                        .chain(&r.ingress)
                        .chain(&r.egress)
                        .map(|c| (Kind::Cluster, c.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            Kind::Cluster => snap
                .clusters
                .get(&n)
                .map(|c| {
                    c.endpoints
                        .iter()
                        .map(|e| (Kind::Endpoint, e.name.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            Kind::Endpoint => Vec::new(),
        };
        for (ck, cn) in children {
            let owned = ck == Kind::Endpoint || snap.is_autogenerated(ck, &cn);
            if owned && !out.contains(&(ck, cn.clone())) {
                out.push((ck, cn.clone()));
                pending.push((ck, cn));
            }
        }
    }
    out
}
