//! Turning an upload into something the proxy can run: compile it (or load it from
//! the cache), find which world it is for, link it and check its exports against that
//! world, so a wrong component is refused at upload with a message naming the problem.

use std::sync::atomic::{AtomicU32, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::component::{InstancePre, types::ComponentItem};

use super::Runtime;
use super::bindings::{self, codec, matcher, transform};
use super::instance::HostState;
use super::registry::{Described, PluginVersion};
use crate::core::ConfigError;

pub use crate::core::build::World;

/// The WIT world a plugin of `world` targets.
fn wit(world: World) -> &'static str {
    match world {
        World::Transform => "l7mp:plugin/transform-plugin@0.1.0",
        World::Codec => "l7mp:plugin/codec-plugin@0.1.0",
        World::Matcher => "l7mp:plugin/matcher-plugin@0.1.0",
    }
}

/// The interface a component of `world` exports.
fn export(world: World) -> &'static str {
    match world {
        World::Transform => bindings::TRANSFORM_EXPORT,
        World::Codec => bindings::CODEC_EXPORT,
        World::Matcher => bindings::MATCHER_EXPORT,
    }
}

const WORLDS: [World; 3] = [World::Transform, World::Codec, World::Matcher];

/// A version's component, linked and with its exports resolved, ready to instantiate.
pub enum WorldPre {
    Transform(transform::TransformPluginPre<HostState>),
    Codec(codec::CodecPluginPre<HostState>),
    Matcher(matcher::MatcherPluginPre<HostState>),
}

impl WorldPre {
    pub fn engine(&self) -> &wasmtime::Engine {
        match self {
            WorldPre::Transform(p) => p.engine(),
            WorldPre::Codec(p) => p.engine(),
            WorldPre::Matcher(p) => p.engine(),
        }
    }
}

/// Checks the bytes of an upload and tells what they are.
fn check_header(bytes: &[u8]) -> Result<(), ConfigError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ConfigError::malformed(
            "not a WebAssembly binary (no \\0asm header)",
        ));
    }
    // Bytes 4..8: version and layer. Layer 0 is a core module, layer 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(ConfigError::malformed(
            "a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)",
        ));
    }
    Ok(())
}

fn item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) | ComponentItem::CoreFunc(_) => "func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// The most functions an upload may hold, across its core modules
/// (`admin.plugin_max_functions`). Compiling costs memory in proportion to them (an
/// 80,000-function component took 400-700 MiB), so the count is checked first.
static MAX_FUNCTIONS: AtomicU32 = AtomicU32::new(DEFAULT_MAX_FUNCTIONS);
pub use crate::core::bounds::DEFAULT_MAX_FUNCTIONS;

pub fn set_max_functions(n: u32) {
    MAX_FUNCTIONS.store(n, Ordering::Relaxed);
}

/// Counts the functions of every core module in `bytes` (nested ones included), or
/// says why the bytes are not WebAssembly.
fn count_functions(bytes: &[u8]) -> Result<u64, ConfigError> {
    let mut functions = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload {
            Ok(wasmparser::Payload::CodeSectionStart { count, .. }) => {
                functions += u64::from(count)
            }
            Ok(_) => {}
            Err(e) => {
                return Err(ConfigError::malformed(format!(
                    "not a valid component: {e}"
                )));
            }
        }
    }
    Ok(functions)
}

/// A component's identity: the hex SHA-256 of its bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Runtime {
    /// Compiles (or loads from the cache) and type-checks a component: the first step
    /// of every upload, done before anything changes.
    pub fn compile(
        &self,
        plugin: &str,
        version: &str,
        bytes: &[u8],
    ) -> Result<PluginVersion, ConfigError> {
        self.compile_hashed(plugin, version, bytes, sha256_hex(bytes))
    }

    /// [`Runtime::compile`] for bytes whose SHA-256 the caller already has.
    pub fn compile_hashed(
        &self,
        plugin: &str,
        version: &str,
        bytes: &[u8],
        sha256: String,
    ) -> Result<PluginVersion, ConfigError> {
        check_header(bytes)?;
        let functions = count_functions(bytes)?;
        let max = MAX_FUNCTIONS.load(Ordering::Relaxed);
        if functions > u64::from(max) {
            return Err(ConfigError::invalid(format!(
                "the component has {functions} functions, more than the {max} a plugin may have (admin.plugin_max_functions)"
            )));
        }
        let (component, cached) = match self
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.engine, &sha256))
        {
            Some(component) => (component, true),
            None => {
                let component = wasmtime::component::Component::new(&self.engine, bytes)
                    .map_err(|e| ConfigError::malformed(format!("not a valid component: {e:#}")))?;
                if let Some(cache) = &self.cache {
                    cache.store(&self.engine, &sha256, &component);
                }
                (component, false)
            }
        };
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, item)| format!("{name} ({})", item_kind(&item.ty)))
            .collect();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let worlds: Vec<World> = WORLDS
            .into_iter()
            .filter(|w| ty.get_export(&self.engine, export(*w)).is_some())
            .collect();
        let world = match worlds.as_slice() {
            [one] => *one,
            [] => {
                return Err(ConfigError::invalid(format!(
                    "the component exports none of {}, {}, {} (so it is for no l7mp world); it exports: [{}]",
                    bindings::TRANSFORM_EXPORT,
                    bindings::CODEC_EXPORT,
                    bindings::MATCHER_EXPORT,
                    exports.join(", ")
                )));
            }
            many => {
                return Err(ConfigError::invalid(format!(
                    "the component exports the interfaces of several worlds ({}): a plugin is one of them",
                    many.iter().map(|w| w.name()).collect::<Vec<_>>().join(", ")
                )));
            }
        };
        let mismatch = |e: wasmtime::Error| {
            ConfigError::invalid(format!(
                "the component does not fit world {}: {e:#}",
                wit(world)
            ))
        };
        let pre: InstancePre<HostState> = self.linker.instantiate_pre(&component).map_err(|e| {
            ConfigError::invalid(format!(
                "the component imports what l7mp does not provide (plugins get {} and WASI 0.2): {e:#}",
                "l7mp:plugin/host@0.1.0"
            ))
        })?;
        let pre = match world {
            World::Transform => {
                WorldPre::Transform(transform::TransformPluginPre::new(pre).map_err(mismatch)?)
            }
            World::Codec => WorldPre::Codec(codec::CodecPluginPre::new(pre).map_err(mismatch)?),
            World::Matcher => {
                WorldPre::Matcher(matcher::MatcherPluginPre::new(pre).map_err(mismatch)?)
            }
        };
        Ok(PluginVersion::new(
            plugin,
            version,
            world,
            Described {
                sha256,
                size: bytes.len(),
                exports,
                imports,
                cached,
            },
            pre,
            &self.plugins.metrics,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_told_apart_by_their_header() {
        let status = |b: &[u8]| check_header(b).map_err(|e| (e.kind, e.message));
        assert!(status(b"\0asm\x0d\0\x01\0").is_ok());
        let core = status(b"\0asm\x01\0\0\0").unwrap_err();
        assert_eq!(core.0, crate::core::error::ErrorKind::Malformed);
        assert!(core.1.contains("core WebAssembly module"));
        assert!(
            status(b"MZ\x90\0\x03\0\0\0")
                .unwrap_err()
                .1
                .contains("no \\0asm header")
        );
        assert!(status(b"\0asm").is_err());
    }
}
