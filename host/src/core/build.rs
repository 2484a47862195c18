//! Building implementations from specs. Each protocol file declares one [`Protocol`]:
//! its name, aliases, what it can be (listener, cluster, the transport under a codec
//! or JSONSocket) and how to build itself from its typed spec. The composition root
//! lists them once and hands a [`BuildContext`] to every build, so a layer that wraps
//! another (JSONSocket, a codec) builds its transport through the same list, and a
//! plugin named by a spec is checked against what this change loads, not only what is
//! already live.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::{RefOr, Schema};

use super::error::Result;
use super::spec::{Validation, typed};
use super::{ClusterProtocol, ListenerProtocol};
use crate::metrics::Metrics;

/// Builds a listener from its spec (`protocol` already removed).
pub type ListenerFactory = fn(&Value, &BuildContext<'_>) -> Result<Arc<dyn ListenerProtocol>>;
/// Builds a cluster from its spec (`protocol` already removed).
pub type ClusterFactory = fn(&Value, &BuildContext<'_>) -> Result<Arc<dyn ClusterProtocol>>;

/// Appends the schemas a spec's schema refers to, and returns its own: the JSON schema
/// of the typed spec, from the same type serde parses.
pub type SchemaFn = fn(&mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema>;

/// The [`SchemaFn`] of a spec type.
pub fn schema<T: ToSchema>(refs: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    T::schemas(refs);
    T::schema()
}

/// One protocol, as its file declares it.
pub struct Protocol {
    /// The name as l7mp spells it; `spec.protocol` matches it case-insensitively.
    pub name: &'static str,
    /// Other names configs in the wild use.
    pub aliases: &'static [&'static str],
    pub listener: Option<ListenerFactory>,
    pub cluster: Option<ClusterFactory>,
    /// The listener spec's schema (beside `protocol`).
    pub listener_schema: Option<SchemaFn>,
    /// The cluster spec's schema (beside `protocol`).
    pub cluster_schema: Option<SchemaFn>,
    pub carries: Carries,
}

/// Which layers a protocol can carry.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carries {
    /// A Wasm codec may frame its listeners (`spec.codec`).
    pub codec: bool,
    /// JSONSocket runs over its listeners.
    pub jsonsocket_listener: bool,
    /// JSONSocket runs over its clusters.
    pub jsonsocket_cluster: bool,
}

impl Protocol {
    /// A protocol nothing can run over.
    pub const CARRIES_NOTHING: Carries = Carries {
        codec: false,
        jsonsocket_listener: false,
        jsonsocket_cluster: false,
    };

    /// A cluster-only protocol with no settings of its own (`Echo`, `Stdio`, ...).
    pub const fn bare_cluster<T: ClusterProtocol + Default + 'static>(
        name: &'static str,
        carries: Carries,
    ) -> Protocol {
        Protocol {
            name,
            aliases: &[],
            listener: None,
            cluster: Some(bare_cluster::<T>),
            listener_schema: None,
            cluster_schema: Some(schema::<NoSettings>),
            carries,
        }
    }

    /// JSONSocket clusters may run over it.
    pub const JSONSOCKET_CLUSTER: Carries = Carries {
        codec: false,
        jsonsocket_listener: false,
        jsonsocket_cluster: true,
    };

    pub fn is_called(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
            || self.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}

/// The protocol list, as builds see it.
pub trait Protocols: Sync {
    /// Builds a listener from a whole spec (with its `protocol`, and a `codec` if any).
    fn listener(&self, spec: &Value, cx: &BuildContext<'_>) -> Result<Arc<dyn ListenerProtocol>>;
    /// Builds a cluster from a whole spec (with its `protocol`).
    fn cluster(&self, spec: &Value, cx: &BuildContext<'_>) -> Result<Arc<dyn ClusterProtocol>>;
    /// The protocol a spec names, if it is known.
    fn find(&self, name: &str) -> Option<&'static Protocol> {
        self.all().iter().copied().find(|p| p.is_called(name))
    }
    /// Every protocol, in the order errors list them.
    fn all(&self) -> &'static [&'static Protocol];
}

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Transform,
    Codec,
    Matcher,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::Transform => "transform",
            World::Codec => "codec",
            World::Matcher => "matcher",
        }
    }
}

/// A predicate operator evaluated outside the predicate engine (a Wasm matcher).
#[async_trait]
pub trait Matcher: Send + Sync + fmt::Debug {
    /// The plugin it runs, for the objects a session uses.
    fn plugin(&self) -> &str;
    /// Whether `metadata` matches; any failure is no match.
    async fn matches(&self, metadata: &Value) -> bool;
}

/// The plugins a change may name: those loaded now, and those the change itself loads
/// (they go live with it, or not at all).
pub trait PluginCatalog: Sync {
    /// Checks that `name` is loaded (or being loaded) and implements `world`.
    fn require(&self, name: &str, world: World) -> Result<()>;
    /// Compiles a config file's `plugins[]` entry and holds it until the change
    /// commits.
    fn stage(&self, entry: &Value, validation: Validation) -> Result<()>;
    /// Whether plugins of this change may be granted host resources.
    fn host_access(&self) -> bool;
    /// Builds a `{plugin: NAME, config}` predicate operator.
    fn matcher(&self, spec: &Value) -> Result<Arc<dyn Matcher>>;
    /// Builds a `Wasm` cluster (`{plugin, config, ...}`).
    fn transform(&self, spec: &Value, validation: Validation) -> Result<Arc<dyn ClusterProtocol>>;
    /// Puts the codec of `spec.codec` over a transport listener.
    fn codec(
        &self,
        transport: Arc<dyn ListenerProtocol>,
        spec: &Value,
        validation: Validation,
    ) -> Result<Arc<dyn ListenerProtocol>>;
}

/// Who may create what reaches the host, for refusals to say.
pub const HOST_ACCESS: &str = "only the admin role may create it (with no admin.auth tokens: only when the static config sets admin.api_host_access: true)";

/// What every build gets.
#[derive(Clone, Copy)]
pub struct BuildContext<'a> {
    pub validation: Validation,
    pub protocols: &'a dyn Protocols,
    pub plugins: &'a dyn PluginCatalog,
    /// Where stages that count (the `Metric` transform) count.
    pub metrics: &'a Metrics,
    /// The change may create what reaches the host (commands, descriptors, files,
    /// raw interfaces, plugin grants): the static config, or an API caller with the
    /// admin role.
    pub host_access: bool,
}

impl BuildContext<'_> {
    /// Refuses `what` (e.g. "STDIO-fork runs commands") unless the change may reach
    /// the host.
    pub fn reach_host(&self, what: &str) -> Result<()> {
        if self.host_access {
            Ok(())
        } else {
            Err(super::ConfigError::forbidden(format!(
                "{what} on the host: {}",
                HOST_ACCESS
            )))
        }
    }

    /// Parses a spec into its typed form, `what` naming it in errors.
    pub fn parse<T: DeserializeOwned>(&self, spec: &Value, what: &str) -> Result<T> {
        typed(spec, what, self.validation)
    }
}

/// A listener whose typed spec is the listener itself.
pub fn typed_listener<T>(spec: &Value, cx: &BuildContext<'_>) -> Result<Arc<dyn ListenerProtocol>>
where
    T: ListenerProtocol + DeserializeOwned + 'static,
{
    Ok(Arc::new(cx.parse::<T>(spec, "spec")?))
}

/// A cluster whose typed spec is the cluster itself.
pub fn typed_cluster<T>(spec: &Value, cx: &BuildContext<'_>) -> Result<Arc<dyn ClusterProtocol>>
where
    T: ClusterProtocol + DeserializeOwned + 'static,
{
    Ok(Arc::new(cx.parse::<T>(spec, "spec")?))
}

/// The spec of a protocol with no settings of its own (strict mode still reports or
/// rejects fields it does not know).
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct NoSettings {}

/// Checks that a spec has no settings (strict mode reports or rejects what it has).
pub fn no_settings(spec: &Value, cx: &BuildContext<'_>) -> Result<()> {
    cx.parse::<NoSettings>(spec, "spec").map(drop)
}

/// A cluster with no settings.
pub fn bare_cluster<T>(spec: &Value, cx: &BuildContext<'_>) -> Result<Arc<dyn ClusterProtocol>>
where
    T: ClusterProtocol + Default + 'static,
{
    no_settings(spec, cx)?;
    Ok(Arc::new(T::default()))
}
