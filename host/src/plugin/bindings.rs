//! The component boundary: host bindings for the three worlds of `wit/`, generated in
//! one place, and the `host` interface every plugin imports.
//!
//! The worlds share `l7mp:plugin/types` and `l7mp:plugin/host`; they are generated once
//! (with the transform world) and reused by the others, so one `Host` implementation
//! and one linker serve every plugin.

use std::time::{SystemTime, UNIX_EPOCH};

use super::instance::HostState;

pub mod transform {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "l7mp:plugin/transform-plugin",
        exports: { default: async },
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

pub mod codec {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "l7mp:plugin/codec-plugin",
        exports: { default: async },
        ownership: Borrowing { duplicate_if_necessary: true },
        with: {
            "l7mp:plugin/host": super::transform::l7mp::plugin::host,
        },
    });
}

pub mod matcher {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "l7mp:plugin/matcher-plugin",
        exports: { default: async },
                with: {
            "l7mp:plugin/host": super::transform::l7mp::plugin::host,
        },
    });
}

pub use transform::l7mp::plugin::host;
pub use transform::l7mp::plugin::types::Level;

/// The exported interface of each world, as component export names: how an upload is
/// recognised.
pub const TRANSFORM_EXPORT: &str = "l7mp:plugin/transform@0.1.0";
pub const CODEC_EXPORT: &str = "l7mp:plugin/codec@0.1.0";
pub const MATCHER_EXPORT: &str = "l7mp:plugin/matcher@0.1.0";

impl transform::l7mp::plugin::types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let (plugin, session) = (&*self.plugin, self.session.as_deref().unwrap_or("-"));
        match level {
            Level::Trace => tracing::trace!(plugin, session, "{message}"),
            Level::Debug => tracing::debug!(plugin, session, "{message}"),
            Level::Info => tracing::info!(plugin, session, "{message}"),
            Level::Warn => tracing::warn!(plugin, session, "{message}"),
            Level::Error => tracing::error!(plugin, session, "{message}"),
        }
    }

    fn counter_add(&mut self, name: String, delta: u64) {
        self.counters.add(&name, delta);
    }

    fn now(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    fn monotonic(&mut self) -> u64 {
        super::instance::monotonic_ns()
    }
}
