//! Stored objects, after inline objects have been lifted to the top level.

use indexmap::IndexMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::core::bounds;
pub use crate::core::settings::{
    DEFAULT_HALF_CLOSE_TIMEOUT, EndpointSpec, HttpLimits, ListenerOptions,
};
use crate::core::{ClusterProtocol, ListenerProtocol};
use crate::json::Predicate;
use crate::json::pointer::Pointer;
pub use crate::lb::LoadBalancerSpec;
use crate::lb::{Balancer, Member};
use crate::model::auth::AuthSettings;
use crate::tls::{ServerTlsSpec, TlsMode};

/// Proxy-wide settings.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Admin {
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default = "default_log_file")]
    pub log_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_path: Option<String>,
    #[serde(default)]
    pub strict: bool,
    /// Unknown fields are a 422 instead of a warning (off by default: the original's
    /// schema allows additional properties, and its clients send them).
    #[serde(default)]
    pub reject_unknown_fields: bool,
    #[serde(default = "default_offload")]
    pub offload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub offload_ifs: Option<Value>,
    /// Bounds of the API server (and the timeouts of HTTP listeners).
    #[serde(default)]
    pub http: HttpLimits,
    /// Descriptors kept free for the API: data sessions are refused before they would
    /// take the last ones.
    #[serde(
        default = "default_fd_reserve",
        deserialize_with = "bounds::fd_reserve"
    )]
    pub fd_reserve: u32,
    /// The memory all plugin instances together may hold, in MiB (default: half the
    /// machine's memory).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounds::plugin_memory_mb"
    )]
    pub plugin_memory_mb: Option<u64>,
    /// The most functions an uploaded plugin may have (compiling costs memory in
    /// proportion to them).
    #[serde(
        default = "default_max_functions",
        deserialize_with = "bounds::max_functions"
    )]
    pub plugin_max_functions: u32,
    /// Bearer tokens and their roles; none: the API takes no credentials and listens
    /// on loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSettings>,
    /// Host names (beside addresses and `localhost`) requests may name in `Host`, and
    /// browser origins may come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Without `auth`, API callers may create what reaches the host (commands,
    /// descriptors, files, raw interfaces, plugin grants). Off by default; only the
    /// static config (or `--api-host-access`) turns it on.
    #[serde(default)]
    pub api_host_access: bool,
    /// Serves the API over TLS (`{cert, key, client_ca?}`); with `client_ca`, only
    /// clients with a certificate it signed connect, and `auth.mtls` gives them roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSpec>,
}

fn default_max_functions() -> u32 {
    bounds::DEFAULT_MAX_FUNCTIONS
}

fn default_fd_reserve() -> u32 {
    64
}

fn default_log_level() -> String {
    "info".into()
}
fn default_log_file() -> String {
    "stderr".into()
}
fn default_offload() -> String {
    "disable".into()
}

impl Admin {
    /// The settings that reach the host, named, where `other` differs from these: a
    /// log file, an access log path, who may authenticate, and the host-access switch.
    pub fn host_reaching_changes(&self, other: &Admin) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.log_file != other.log_file {
            changed.push("log_file");
        }
        if self.access_log_path != other.access_log_path {
            changed.push("access_log_path");
        }
        if self.auth != other.auth {
            changed.push("auth");
        }
        if self.api_host_access != other.api_host_access {
            changed.push("api_host_access");
        }
        if self.tls != other.tls {
            changed.push("tls");
        }
        changed
    }

    /// Checks the settings a type cannot: the log level and the offload mode.
    pub fn validate(&self) -> Result<(), String> {
        crate::logging::parse_level(&self.log_level).map_err(|e| format!("admin: {e}"))?;
        if !["init", "no_init", "disable"].contains(&self.offload.as_str()) {
            return Err(format!(
                "admin: offload '{}' is not one of init, no_init, disable",
                self.offload
            ));
        }
        if let Some(tls) = &self.tls
            && tls.mode != TlsMode::Terminate
        {
            return Err("admin.tls: the API terminates TLS (no mode: passthrough)".into());
        }
        let mtls = self.auth.as_ref().is_some_and(|a| a.mtls.is_some());
        if mtls && self.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
            return Err(
                "admin.auth.mtls: client certificates need the API served over TLS with admin.tls.client_ca".into(),
            );
        }
        Ok(())
    }
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            log_level: default_log_level(),
            log_file: default_log_file(),
            access_log_path: None,
            strict: false,
            reject_unknown_fields: false,
            offload: default_offload(),
            offload_ifs: None,
            http: HttpLimits::default(),
            fd_reserve: default_fd_reserve(),
            plugin_memory_mb: None,
            plugin_max_functions: default_max_functions(),
            auth: None,
            allowed_hosts: Vec::new(),
            api_host_access: false,
            tls: None,
        }
    }
}

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub spec: Value,
    pub protocol: Arc<dyn ListenerProtocol>,
    /// The rulelist's name (inline rules become an autogenerated rulelist).
    pub rules: String,
    pub options: ListenerOptions,
    pub autogenerated: bool,
}

#[derive(Debug)]
pub struct Endpoint {
    pub name: String,
    pub cluster: String,
    pub spec: EndpointSpec,
    pub weight: f64,
    pub autogenerated: bool,
}

impl Member for Endpoint {
    fn name(&self) -> &str {
        &self.name
    }
    fn weight(&self) -> f64 {
        self.weight
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub spec: Value,
    pub protocol: Arc<dyn ClusterProtocol>,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub loadbalancer: LoadBalancerSpec,
    pub balancer: Balancer<Endpoint>,
    pub options: Value,
    pub autogenerated: bool,
}

#[derive(Debug)]
pub struct RuleList {
    pub name: String,
    pub rules: Vec<String>,
    pub autogenerated: bool,
}

/// One `rewrite` of a rule: store `value` at `path` in the session's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    pub path: Pointer,
    pub value: Value,
}

#[derive(Debug, Clone, Default)]
pub struct Action {
    pub rewrite: Vec<Rewrite>,
    pub route: Option<String>,
    pub apply: Option<String>,
}

#[derive(Debug)]
pub struct Rule {
    pub name: String,
    /// The `match` as written, for listings.
    pub match_spec: Value,
    pub predicate: Predicate,
    pub action: Action,
    pub autogenerated: bool,
}

/// When a stage is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    Never,
    ConnectFailure,
    Disconnect,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Retry {
    #[serde(default = "default_retry_on")]
    pub retry_on: RetryOn,
    #[serde(default = "default_num_retries", deserialize_with = "bounds::retries")]
    pub num_retries: u32,
    /// Milliseconds one attempt may take.
    #[serde(default = "default_timeout", deserialize_with = "bounds::timeout_ms")]
    pub timeout: u64,
}

fn default_retry_on() -> RetryOn {
    RetryOn::Never
}
fn default_num_retries() -> u32 {
    1
}
fn default_timeout() -> u64 {
    2000
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            retry_on: RetryOn::Never,
            num_retries: 1,
            timeout: 2000,
        }
    }
}

impl Retry {
    pub fn on_connect_failure(&self) -> bool {
        matches!(self.retry_on, RetryOn::ConnectFailure | RetryOn::Always)
    }
    pub fn on_disconnect(&self) -> bool {
        matches!(self.retry_on, RetryOn::Disconnect | RetryOn::Always)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub destination: String,
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
    pub retry: Retry,
    pub autogenerated: bool,
}

/// One consistent configuration.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub admin: Admin,
    pub listeners: IndexMap<String, Arc<Listener>>,
    pub clusters: IndexMap<String, Arc<Cluster>>,
    pub endpoints: IndexMap<String, Arc<Endpoint>>,
    pub rulelists: IndexMap<String, Arc<RuleList>>,
    pub rules: IndexMap<String, Arc<Rule>>,
    pub routes: IndexMap<String, Arc<Route>>,
}

/// The object kinds, as the REST API names their collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Listener,
    Cluster,
    Endpoint,
    RuleList,
    Rule,
    Route,
}

impl Kind {
    pub fn from_collection(name: &str) -> Option<Kind> {
        Some(match name {
            "listeners" => Kind::Listener,
            "clusters" => Kind::Cluster,
            "endpoints" => Kind::Endpoint,
            "rulelists" => Kind::RuleList,
            "rules" => Kind::Rule,
            "routes" => Kind::Route,
            _ => return None,
        })
    }

    /// The key that wraps a body of this kind: `{listener: {...}}`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Listener => "listener",
            Kind::Cluster => "cluster",
            Kind::Endpoint => "endpoint",
            Kind::RuleList => "rulelist",
            Kind::Rule => "rule",
            Kind::Route => "route",
        }
    }
}

impl Snapshot {
    pub fn contains(&self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Listener => self.listeners.contains_key(name),
            Kind::Cluster => self.clusters.contains_key(name),
            Kind::Endpoint => self.endpoints.contains_key(name),
            Kind::RuleList => self.rulelists.contains_key(name),
            Kind::Rule => self.rules.contains_key(name),
            Kind::Route => self.routes.contains_key(name),
        }
    }

    pub fn is_autogenerated(&self, kind: Kind, name: &str) -> bool {
        match kind {
            Kind::Listener => self.listeners.get(name).is_some_and(|o| o.autogenerated),
            Kind::Cluster => self.clusters.get(name).is_some_and(|o| o.autogenerated),
            Kind::Endpoint => self.endpoints.get(name).is_some_and(|o| o.autogenerated),
            Kind::RuleList => self.rulelists.get(name).is_some_and(|o| o.autogenerated),
            Kind::Rule => self.rules.get(name).is_some_and(|o| o.autogenerated),
            Kind::Route => self.routes.get(name).is_some_and(|o| o.autogenerated),
        }
    }

    /// Removes an object from its table; endpoints also leave their cluster.
    pub fn remove(&mut self, kind: Kind, name: &str) {
        match kind {
            Kind::Listener => {
                self.listeners.shift_remove(name);
            }
            Kind::Cluster => {
                if let Some(cluster) = self.clusters.shift_remove(name) {
                    for ep in &cluster.endpoints {
                        if self
                            .endpoints
                            .get(&ep.name)
                            .is_some_and(|e| e.cluster == cluster.name)
                        {
                            self.endpoints.shift_remove(&ep.name);
                        }
                    }
                }
            }
            Kind::Endpoint => {
                if let Some(ep) = self.endpoints.shift_remove(name)
                    && let Some(cluster) = self.clusters.get(&ep.cluster).cloned()
                {
                    let endpoints = cluster
                        .endpoints
                        .iter()
                        .filter(|e| e.name != name)
                        .cloned()
                        .collect();
                    self.clusters.insert(
                        cluster.name.clone(),
                        Arc::new(cluster.with_endpoints(endpoints)),
                    );
                }
            }
            Kind::RuleList => {
                self.rulelists.shift_remove(name);
            }
            Kind::Rule => {
                self.rules.shift_remove(name);
            }
            Kind::Route => {
                self.routes.shift_remove(name);
            }
        }
    }

    /// A name of `kind` derived from `base` that is not taken yet: `base`, `base_1`, ...
    pub fn free_name(&self, kind: Kind, base: &str, taken: &dyn Fn(&str) -> bool) -> String {
        if !self.contains(kind, base) && !taken(base) {
            return base.to_owned();
        }
        (1..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.contains(kind, n) && !taken(n))
            .expect("an unbounded range has a free name")
    }
}

impl Cluster {
    /// The same cluster with another endpoint list (and a balancer rebuilt for it).
    pub fn with_endpoints(&self, endpoints: Vec<Arc<Endpoint>>) -> Cluster {
        Cluster {
            name: self.name.clone(),
            spec: self.spec.clone(),
            protocol: self.protocol.clone(),
            balancer: Balancer::new(&self.loadbalancer, &endpoints),
            endpoints,
            loadbalancer: self.loadbalancer.clone(),
            options: self.options.clone(),
            autogenerated: self.autogenerated,
        }
    }
}
