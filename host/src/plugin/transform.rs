//! A Wasm transform as a cluster: `spec: {protocol: Wasm, plugin: NAME, config,
//! on_fault, limits, grants}`. Each session that opens the stage gets an instance of
//! the plugin's current version and its own `session` resource in it; it keeps that
//! version until it ends, whatever is uploaded meanwhile.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use wasmtime::component::ResourceAny;

use super::bindings::transform::exports::l7mp::plugin::transform::{MetadataUpdate, Output};
use super::usage::{OnFault, PluginUse};
use super::{Fault, Instance, MAX_METADATA, PluginHost, PluginVersion, World};
use crate::core::build::{PluginCatalog, Protocol};
use crate::core::spec::Validation;
use crate::core::{ClusterProtocol, Result, Stage, StageContext, StageError, Target, Transform};

pub const NAME: &str = "Wasm";

pub struct WasmCluster {
    usage: Arc<PluginUse>,
    host: Arc<PluginHost>,
}

impl std::fmt::Debug for WasmCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmCluster")
            .field("usage", &self.usage)
            .finish()
    }
}

impl WasmCluster {
    pub fn from_spec(
        spec: &Value,
        validation: Validation,
        plugins: &dyn PluginCatalog,
        host: Arc<PluginHost>,
    ) -> Result<WasmCluster> {
        let usage = PluginUse::parse(spec, "spec", &[], validation, World::Transform, plugins)?;
        Ok(WasmCluster {
            usage: Arc::new(usage),
            host,
        })
    }
}

fn plugin_gone(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("plugin '{name}' is not loaded any more"),
    )
}

#[async_trait]
impl ClusterProtocol for WasmCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    fn is_virtual(&self) -> bool {
        true
    }
    fn plugin(&self) -> Option<&str> {
        Some(&self.usage.plugin)
    }
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let version = self
            .host
            .runtime()
            .plugins
            .current(&self.usage.plugin)
            .ok_or_else(|| plugin_gone(&self.usage.plugin))?;
        let mut stage = WasmStage {
            host: self.host.clone(),
            usage: self.usage.clone(),
            version,
            metadata: target.metadata.to_string(),
            session: Arc::from(target.session),
            egress: target.egress,
            open: None,
        };
        stage
            .open()
            .await
            .map_err(|e| io::Error::other(format!("plugin '{}': {e}", self.usage.plugin)))?;
        Ok(Stage::Transform(Box::new(stage)))
    }
}

/// One session's use of the plugin.
struct WasmStage {
    host: Arc<PluginHost>,
    usage: Arc<PluginUse>,
    /// The version this session got; it keeps it until it ends.
    version: Arc<PluginVersion>,
    /// The metadata the session opened with, to reopen after a fault.
    metadata: String,
    session: Arc<str>,
    egress: bool,
    /// The instance and the session's resource in it; `None` after a fault until the
    /// next chunk reopens.
    open: Option<(Instance, ResourceAny)>,
}

impl WasmStage {
    async fn open(&mut self) -> std::result::Result<(), String> {
        let opened = self
            .version
            .open(
                &self.usage,
                Some(self.session.clone()),
                &self.metadata,
                &self.host.runtime().plugins,
            )
            .await?;
        self.open = Some(opened);
        Ok(())
    }

    /// Applies a plugin's metadata update to the session.
    fn update_metadata(
        &mut self,
        cx: &dyn StageContext,
        json: &str,
    ) -> std::result::Result<(), String> {
        if json.len() > MAX_METADATA {
            return Err(format!(
                "metadata of {} bytes: at most {MAX_METADATA}",
                json.len()
            ));
        }
        match serde_json::from_str::<Value>(json) {
            Ok(doc @ Value::Object(_)) => {
                self.metadata = json.to_owned();
                cx.replace_metadata(doc);
                Ok(())
            }
            Ok(other) => Err(format!("metadata must be a JSON object, not {other}")),
            Err(e) => Err(format!("metadata is not JSON: {e}")),
        }
    }

    fn fault(
        &mut self,
        fault: Fault,
        cx: &dyn StageContext,
        chunk: Bytes,
        out: &mut Vec<Bytes>,
    ) -> std::result::Result<(), StageError> {
        let message = format!("plugin '{}': {fault}", self.version.label);
        cx.event(
            "PLUGIN_FAULT",
            message.clone(),
            serde_json::json!({ "kind": fault.kind() }),
        );
        match self.usage.on_fault {
            OnFault::Drop => Err(StageError::Chunk(message)),
            OnFault::Close => Err(StageError::Session(message)),
            OnFault::Pass => {
                tracing::warn!(session = %cx.session(), "{message}; the chunk passes unchanged");
                out.push(chunk);
                Ok(())
            }
        }
    }
}

impl WasmStage {
    /// A stateless plugin moves to a fresh instance before the one it has wears out:
    /// after `recycle_after` calls, or once it has grown to most of its memory cap (a
    /// language runtime that leaks a little per call would otherwise trap, and a chunk
    /// would be lost).
    fn recycle_if_worn(&mut self) {
        let worn = self
            .open
            .as_ref()
            .is_some_and(|(instance, _)| !instance.reusable(&self.usage.limits));
        if self.usage.stateless
            && worn
            && let Some((instance, resource)) = self.open.take()
        {
            instance.release_later(resource, self.usage.clone());
        }
    }

    async fn call(
        &mut self,
        chunk: &[u8],
    ) -> std::result::Result<std::result::Result<Output, String>, Fault> {
        if self.open.is_none() {
            // A fault (or a recycle) took the last instance: the session goes on with a
            // fresh one.
            self.open().await.map_err(Fault::Trap)?;
        }
        let Some((instance, resource)) = self.open.as_mut() else {
            return Err(Fault::Trap("no instance".into()));
        };
        let result = instance.transform_hook(*resource, self.egress, chunk).await;
        if result.is_err() {
            self.open = None;
        }
        result
    }
}

#[async_trait]
impl Transform for WasmStage {
    async fn process(
        &mut self,
        chunk: Bytes,
        cx: &dyn StageContext,
        out: &mut Vec<Bytes>,
    ) -> std::result::Result<(), StageError> {
        self.recycle_if_worn();
        let mut result = self.call(&chunk).await;
        if self.usage.stateless && matches!(result, Err(Fault::Memory)) {
            // A stateless plugin loses nothing to running out of memory: the chunk is
            // given once more to a fresh instance.
            result = self.call(&chunk).await;
        }
        match result {
            Ok(Ok(Output { chunks, metadata })) => {
                out.extend(chunks.into_iter().map(Bytes::from));
                if let MetadataUpdate::Replace(json) = metadata {
                    self.update_metadata(cx, &json).map_err(|e| {
                        StageError::Chunk(format!("plugin '{}': {e}", self.version.label))
                    })?;
                }
                Ok(())
            }
            Ok(Err(e)) => Err(StageError::Chunk(format!(
                "plugin '{}': {e}",
                self.version.label
            ))),
            Err(fault) => self.fault(fault, cx, chunk, out),
        }
    }
}

impl Drop for WasmStage {
    fn drop(&mut self) {
        // The guest's destructor runs, then the instance serves another session.
        if let Some((instance, resource)) = self.open.take() {
            instance.release_later(resource, self.usage.clone());
        }
    }
}

/// A Wasm transform plugin.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: None,
    cluster: Some(|spec, cx| cx.plugins.transform(spec, cx.validation)),
    listener_schema: None,
    cluster_schema: Some(super::usage::schema),
    carries: Protocol::CARRIES_NOTHING,
};
