//! A whole config document (`l7mp -c`, `POST /api/v1/config`): its sections, loaded
//! in the order that lets each refer to the ones before.

use serde_json::Value;

use super::inline::Builder;
use crate::core::spec::{report_unknown, require, typed};
use crate::core::{ConfigError, Result};

/// The top-level sections of a config document. `sessions` is what `GET /config`
/// shows; a config posted back carries it, and it is ignored.
pub const CONFIG_SECTIONS: [&str; 9] = [
    "admin",
    "plugins",
    "listeners",
    "clusters",
    "rulelists",
    "rules",
    "routes",
    "endpoints",
    "sessions",
];

impl Builder<'_> {
    /// Loads a whole config document: `admin`, `plugins`, `listeners`, `clusters`,
    /// `rulelists`, `rules`, `routes`. Plugins come first so objects may use them,
    /// clusters next so listeners' inline routes may name them.
    pub fn add_config(&mut self, doc: &Value) -> Result<()> {
        let obj = doc
            .as_object()
            .ok_or_else(|| ConfigError::invalid("a config must be an object"))?;
        require(self.validation, doc, "admin", "config")?;
        let unknown: Vec<String> = obj
            .keys()
            .filter(|k| !CONFIG_SECTIONS.contains(&k.as_str()))
            .cloned()
            .collect();
        report_unknown("config", &unknown, self.validation)?;
        if let Some(admin) = obj.get("admin") {
            self.snap.admin = typed(admin, "admin", self.validation)?;
            self.snap.admin.validate().map_err(ConfigError::invalid)?;
        }
        let list = |key: &str| -> Result<Vec<Value>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => Ok(items.clone()),
                Some(other) => Err(ConfigError::invalid(format!(
                    "config: '{key}' must be a list, not {other}"
                ))),
            }
        };
        for p in list("plugins")? {
            self.cx.plugins.stage(&p, self.validation)?;
        }
        for c in list("clusters")? {
            self.add_cluster(&c, None)?;
        }
        for r in list("routes")? {
            self.add_route(&r, None)?;
        }
        for r in list("rules")? {
            self.add_rule(&r, None)?;
        }
        for r in list("rulelists")? {
            self.add_rulelist(&r, None)?;
        }
        for l in list("listeners")? {
            self.add_listener(&l)?;
        }
        Ok(())
    }
}
