//! What a proxy process has once: its metrics, the kernel offload and the plugin
//! runtime. Made by whoever starts the proxy (the binary, a test) and handed down to
//! the parts that use them; nothing below reaches for a process-wide global.

use std::path::PathBuf;
use std::sync::Arc;

use crate::metrics::Metrics;
use crate::offload::Offload;
use crate::plugin::PluginHost;

#[derive(Clone)]
pub struct Services {
    pub metrics: Arc<Metrics>,
    pub offload: Arc<Offload>,
    pub plugins: Arc<PluginHost>,
}

impl Services {
    /// `plugin_cache`: where compiled plugins are kept (`None`: not kept).
    pub fn new(plugin_cache: Option<PathBuf>) -> Services {
        let metrics = Arc::new(Metrics::new());
        Services {
            offload: Arc::new(Offload::new(metrics.offload_active.clone())),
            plugins: PluginHost::new(metrics.clone(), plugin_cache),
            metrics,
        }
    }
}
