//! A Wasm matcher as a JSONPredicate operator: `{plugin: NAME, config: {...}}` wherever
//! a predicate may stand, alone or inside `and`, `or` and `not`. Each evaluation
//! borrows an idle instance of the plugin's current version.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::usage::PluginUse;
use super::{PluginHost, World};
use crate::core::build::{Matcher, PluginCatalog};

#[derive(Clone)]
pub struct PluginMatcher {
    usage: Arc<PluginUse>,
    host: Arc<PluginHost>,
}

impl std::fmt::Debug for PluginMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginMatcher")
            .field("usage", &self.usage)
            .finish()
    }
}

impl PluginMatcher {
    pub fn compile(
        spec: &Value,
        plugins: &dyn PluginCatalog,
        host: Arc<PluginHost>,
    ) -> crate::core::Result<PluginMatcher> {
        let usage = PluginUse::parse(
            spec,
            "match",
            &[],
            crate::core::spec::Validation::LENIENT,
            World::Matcher,
            plugins,
        )?;
        Ok(PluginMatcher {
            usage: Arc::new(usage),
            host,
        })
    }
}

#[async_trait]
impl Matcher for PluginMatcher {
    fn plugin(&self) -> &str {
        &self.usage.plugin
    }

    /// Whether `metadata` matches. A missing plugin, an error or a fault is no match
    /// (logged); the rule list goes on.
    async fn matches(&self, metadata: &Value) -> bool {
        let usage = &self.usage;
        let plugins = &self.host.runtime().plugins;
        let Some(version) = plugins.current(&usage.plugin) else {
            tracing::warn!("matcher plugin '{}' is not loaded: no match", usage.plugin);
            return false;
        };
        let mut instance = match version.take(usage, None, plugins).await {
            Ok(instance) => instance,
            Err(fault) => {
                tracing::warn!(plugin = %version.label, "no instance: {fault}; no match");
                return false;
            }
        };
        let verdict = instance
            .matches(metadata.to_string(), &usage.config_json)
            .await;
        version.give_back(instance, usage);
        match verdict {
            Ok(Ok(matched)) => matched,
            Ok(Err(e)) => {
                tracing::warn!(plugin = %version.label, "matcher error: {e}; no match");
                false
            }
            Err(fault) => {
                tracing::warn!(plugin = %version.label, "{fault}; no match");
                false
            }
        }
    }
}
