//! A matcher plugin: a canary split. A session matches when a stable hash of the
//! metadata field at `path` falls under `percent`, so the same client always lands on
//! the same side.

use std::hash::{DefaultHasher, Hash, Hasher};

use l7mp_plugin_sdk::matcher::export_matcher;
use l7mp_plugin_sdk::matcher::exports::l7mp::plugin::matcher::Guest;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A JSON pointer into the session's metadata, e.g. `/IP/src_addr`.
    path: String,
    /// 0..=100: the share of values that match.
    percent: u64,
}

struct Plugin;

impl Guest for Plugin {
    fn matches(metadata: String, config: String) -> Result<bool, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("config: {e}"))?;
        if config.percent > 100 {
            return Err("percent must be 0..=100".into());
        }
        let metadata: serde_json::Value =
            serde_json::from_str(&metadata).map_err(|e| e.to_string())?;
        let Some(value) = metadata.pointer(&config.path) else {
            return Ok(false);
        };
        let mut hasher = DefaultHasher::new();
        value.to_string().hash(&mut hasher);
        Ok(hasher.finish() % 100 < config.percent)
    }
}

export_matcher!(Plugin);
