//! How a config object uses a plugin: `{plugin, config, on_fault, limits, grants}`,
//! the same shape for a `Wasm` cluster, a listener's `codec` and a rule's `match`.

use crate::core::spec::Validation;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happens to a session when its plugin traps, overruns its deadline or its
/// memory. Whatever the choice, the faulty instance is thrown away: the next call
/// gets a fresh one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFault {
    /// The chunk being processed is lost; the session goes on.
    #[default]
    Drop,
    /// The session ends with the fault as its error.
    Close,
    /// The chunk goes on unchanged, as if the plugin were not there.
    Pass,
}

/// Per-call and per-instance bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(as = PluginLimits)]
pub struct Limits {
    /// Wall-clock budget of one call into the plugin.
    pub deadline_ms: u64,
    /// Linear memory an instance may grow to.
    pub memory_mb: u64,
    /// An instance is replaced by a fresh one after this many calls (between
    /// sessions), for language runtimes that leak.
    pub recycle_after: u64,
}

/// The largest memory an instance may be given (the pooling allocator's slot size).
pub const MAX_MEMORY_MB: u64 = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_ms: 50,
            memory_mb: 64,
            recycle_after: 100_000,
        }
    }
}

impl Limits {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }
}

/// A directory of the host the plugin may see, at `guest` inside its filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    #[schema(value_type = String)]
    pub host: PathBuf,
    pub guest: String,
    #[serde(default)]
    pub writable: bool,
}

/// What the plugin may reach beyond its own memory. Empty by default: no files, no
/// network, no environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(as = PluginGrants)]
pub struct Grants {
    pub dirs: Vec<DirGrant>,
    pub env: BTreeMap<String, String>,
    /// Peers (`IP:port`) the plugin may connect to over TCP or exchange UDP datagrams
    /// with. Nothing else: no listening, no other peer, no name lookups.
    #[schema(value_type = Vec<String>)]
    pub connect: Vec<std::net::SocketAddr>,
}

impl Grants {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.env.is_empty() && self.connect.is_empty()
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = WasmSpec)]
struct RawUse {
    plugin: String,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    on_fault: OnFault,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    grants: Grants,
    #[serde(default)]
    stateless: bool,
}

/// The schema of a `Wasm` cluster's spec.
pub fn schema(
    refs: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::Schema>)>,
) -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
    crate::core::build::schema::<RawUse>(refs)
}

/// A checked use of a plugin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawUse")]
pub struct PluginUse {
    pub plugin: String,
    pub config: Value,
    /// `config` as the JSON text handed to the plugin, made once.
    pub config_json: Arc<str>,
    pub on_fault: OnFault,
    pub limits: Limits,
    pub grants: Grants,
    /// The plugin keeps nothing from one chunk to the next that matters, so a session
    /// may move it to a fresh instance between chunks (before it wears out) and give a
    /// chunk to a fresh instance again when one runs out of memory. Without it, a
    /// fault applies `on_fault` to the chunk.
    pub stateless: bool,
}

impl TryFrom<RawUse> for PluginUse {
    type Error = String;
    fn try_from(raw: RawUse) -> Result<Self, String> {
        if raw.plugin.is_empty() {
            return Err("'plugin' must name a plugin".into());
        }
        let config = match raw.config {
            Value::Null => Value::Object(Default::default()),
            c @ Value::Object(_) => c,
            other => return Err(format!("'config' must be an object, not {other}")),
        };
        let l = raw.limits;
        if l.deadline_ms == 0 || l.deadline_ms > 60_000 {
            return Err("limits.deadline_ms must be 1..=60000".into());
        }
        if l.memory_mb == 0 || l.memory_mb > MAX_MEMORY_MB {
            return Err(format!("limits.memory_mb must be 1..={MAX_MEMORY_MB}"));
        }
        if l.recycle_after == 0 {
            return Err("limits.recycle_after must be at least 1".into());
        }
        for dir in &raw.grants.dirs {
            if !dir.host.is_dir() {
                return Err(format!(
                    "grants.dirs: '{}' is not a directory",
                    dir.host.display()
                ));
            }
        }
        Ok(PluginUse {
            plugin: raw.plugin,
            config_json: config.to_string().into(),
            config,
            on_fault: raw.on_fault,
            limits: raw.limits,
            grants: raw.grants,
            stateless: raw.stateless,
        })
    }
}

impl PluginUse {
    /// Parses a use from `value` (leaving out the keys in `skip`, such as a cluster
    /// spec's `protocol`) and checks that the plugin is loaded and of `world`.
    pub fn parse(
        value: &Value,
        at: &str,
        skip: &[&str],
        strict: Validation,
        world: super::World,
        plugins: &dyn crate::core::build::PluginCatalog,
    ) -> crate::core::Result<PluginUse> {
        let mut rest = value.clone();
        if let Some(obj) = rest.as_object_mut() {
            for key in skip {
                obj.remove(*key);
            }
        }
        let usage: PluginUse = crate::core::spec::typed(&rest, at, strict)?;
        if !usage.grants.is_empty() && !plugins.host_access() {
            return Err(crate::core::ConfigError::forbidden(format!(
                "{at}: grants give a plugin host resources: {}",
                crate::core::build::HOST_ACCESS
            )));
        }
        plugins
            .require(&usage.plugin, world)
            .map_err(|e| e.context(at))?;
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<PluginUse, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_safe_and_config_is_serialized_once() {
        let u = parse(json!({"plugin": "p"})).unwrap();
        assert_eq!(u.on_fault, OnFault::Drop);
        assert_eq!(u.limits, Limits::default());
        assert!(u.grants.is_empty());
        assert_eq!(&*u.config_json, "{}");
        let u = parse(json!({"plugin": "p", "config": {"a": [1]}, "on_fault": "pass"})).unwrap();
        assert_eq!(&*u.config_json, r#"{"a":[1]}"#);
        assert_eq!(u.on_fault, OnFault::Pass);
    }

    #[test]
    fn bad_uses_say_what_is_wrong() {
        let err = |v| parse(v).unwrap_err();
        assert!(err(json!({"plugin": ""})).contains("must name a plugin"));
        assert!(err(json!({"plugin": "p", "config": [1]})).contains("'config' must be an object"));
        assert!(err(json!({"plugin": "p", "limits": {"deadline_ms": 0}})).contains("deadline_ms"));
        assert!(err(json!({"plugin": "p", "limits": {"memory_mb": 1024}})).contains("memory_mb"));
        assert!(err(json!({"plugin": "p", "on_fault": "explode"})).contains("unknown variant"));
        assert!(err(json!({"plugin": "p", "grants": {"dirs": [{"host": "/nonexistent-dir", "guest": "/x"}]}}))
            .contains("is not a directory"));
        assert!(err(json!({"plugin": "p", "grant": {}})).contains("unknown field"));
    }
}
