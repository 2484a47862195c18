//! A Wasm codec as a listener's framing layer: `codec: {plugin, config, limits,
//! grants}` on a TCP, UDP or UnixDomainSocket listener. The transport accepts; the
//! codec decodes what the client sends into messages, the first message's metadata
//! (under `codec`) routes the session, and every message travels on as one chunk.
//! Answers are encoded on their way back to the client.

use crate::core::build::PluginCatalog;
use crate::core::spec::Validation;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Mutex;
use wasmtime::component::ResourceAny;

use super::usage::PluginUse;
use super::{Fault, Instance, PluginHost, PluginVersion, World};
use crate::core::Result;
use crate::core::{
    ChunkRx, ChunkTx, Conn, Framing, Incoming, ListenerContext, ListenerProtocol, ListenerTask,
    SessionSink,
};

/// How long a client may take to complete its first message.
const FIRST_MESSAGE_WAIT: Duration = Duration::from_secs(10);

pub struct CodecListener {
    transport: Arc<dyn ListenerProtocol>,
    usage: Arc<PluginUse>,
    host: Arc<PluginHost>,
}

impl std::fmt::Debug for CodecListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodecListener")
            .field("transport", &self.transport)
            .field("usage", &self.usage)
            .finish()
    }
}

impl CodecListener {
    /// Wraps `transport` (already parsed without its `codec`) with the codec `spec`.
    pub fn new(
        transport: Arc<dyn ListenerProtocol>,
        spec: &Value,
        validation: Validation,
        plugins: &dyn PluginCatalog,
        host: Arc<PluginHost>,
    ) -> Result<CodecListener> {
        let usage = PluginUse::parse(spec, "spec.codec", &[], validation, World::Codec, plugins)?;
        Ok(CodecListener {
            transport,
            usage: Arc::new(usage),
            host,
        })
    }
}

/// The codec instance of one connection, shared by its two directions.
struct Codec {
    usage: Arc<PluginUse>,
    version: Arc<PluginVersion>,
    /// `None` once a fault poisoned the instance.
    open: Option<(Instance, ResourceAny)>,
}

impl Codec {
    fn fault(&mut self, fault: Fault) -> io::Error {
        self.open = None;
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("codec '{}': {fault}", self.version.label),
        )
    }

    fn closed(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("codec '{}' faulted earlier", self.version.label),
        )
    }

    /// Decodes `data` into message payloads, and the metadata of each.
    async fn decode(&mut self, data: &[u8]) -> io::Result<Vec<(Bytes, Option<String>)>> {
        let Some((instance, conn)) = self.open.as_mut() else {
            return Err(self.closed());
        };
        match instance.decode(*conn, data).await {
            Ok(Ok(messages)) => Ok(messages
                .into_iter()
                .map(|m| (Bytes::from(m.payload), m.metadata))
                .collect()),
            Ok(Err(e)) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("codec '{}': {e}", self.version.label),
            )),
            Err(fault) => Err(self.fault(fault)),
        }
    }

    /// Encodes an answer; `None` drops it (the codec refused this one message).
    async fn encode(&mut self, message: &[u8]) -> io::Result<Option<Bytes>> {
        let Some((instance, conn)) = self.open.as_mut() else {
            return Err(self.closed());
        };
        match instance.encode(*conn, message).await {
            Ok(Ok(bytes)) => Ok(Some(Bytes::from(bytes))),
            Ok(Err(e)) => {
                tracing::warn!(plugin = %self.version.label, "answer dropped: {e}");
                Ok(None)
            }
            Err(fault) => Err(self.fault(fault)),
        }
    }
}

impl Drop for Codec {
    fn drop(&mut self) {
        // The guest's destructor runs, then the instance serves another session.
        if let Some((instance, resource)) = self.open.take() {
            instance.release_later(resource, self.usage.clone());
        }
    }
}

struct DecodingRx {
    inner: Box<dyn ChunkRx>,
    codec: Arc<Mutex<Codec>>,
    pending: VecDeque<Bytes>,
}

#[async_trait]
impl ChunkRx for DecodingRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Ok(Some(message));
            }
            let Some(data) = self.inner.recv().await? else {
                return Ok(None);
            };
            let decoded = self.codec.lock().await.decode(&data).await?;
            self.pending
                .extend(decoded.into_iter().map(|(payload, _)| payload));
        }
    }
}

struct EncodingTx {
    inner: Box<dyn ChunkTx>,
    codec: Arc<Mutex<Codec>>,
}

#[async_trait]
impl ChunkTx for EncodingTx {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        let encoded = self.codec.lock().await.encode(&chunk).await?;
        match encoded {
            Some(bytes) if !bytes.is_empty() => self.inner.send(bytes).await,
            _ => Ok(()),
        }
    }
    async fn routed(
        &mut self,
        outcome: std::result::Result<(), crate::core::Unrouted<'_>>,
    ) -> io::Result<()> {
        self.inner.routed(outcome).await
    }
    async fn close(&mut self) -> io::Result<()> {
        self.inner.close().await
    }
}

/// Opens the codec for a new client and reads until its first message, which routes
/// the session.
async fn accept(
    cx: ListenerContext,
    usage: Arc<PluginUse>,
    host: Arc<PluginHost>,
    incoming: Incoming,
) -> std::result::Result<(), String> {
    let Incoming { mut metadata, conn } = incoming;
    let plugins = &host.runtime().plugins;
    let version = plugins
        .current(&usage.plugin)
        .ok_or_else(|| format!("plugin '{}' is not loaded any more", usage.plugin))?;
    let peer = conn.peer.clone();
    let opened = version
        .open(
            &usage,
            Some(Arc::from(peer.as_str())),
            &metadata.to_string(),
            plugins,
        )
        .await
        .map_err(|e| format!("codec '{}': {e}", version.label))?;
    let codec = Arc::new(Mutex::new(Codec {
        usage: usage.clone(),
        version,
        open: Some(opened),
    }));
    let (mut rx, tx) = conn.into_halves();
    let first = async {
        loop {
            let Some(data) = rx.recv().await? else {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client left before its first message",
                ));
            };
            let decoded = codec.lock().await.decode(&data).await?;
            if !decoded.is_empty() {
                return Ok::<_, io::Error>(decoded);
            }
        }
    };
    let decoded = match tokio::time::timeout(FIRST_MESSAGE_WAIT, first).await {
        Ok(Ok(decoded)) => decoded,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no complete message within {FIRST_MESSAGE_WAIT:?}")),
    };
    if let Some(json) = &decoded[0].1 {
        if json.len() > super::MAX_METADATA {
            return Err(format!(
                "codec '{}': message metadata of {} bytes: at most {}",
                usage.plugin,
                json.len(),
                super::MAX_METADATA
            ));
        }
        match serde_json::from_str::<Value>(json) {
            Ok(fields @ Value::Object(_)) => metadata["codec"] = fields,
            _ => {
                return Err(format!(
                    "codec '{}': message metadata must be a JSON object",
                    usage.plugin
                ));
            }
        }
    }
    let conn = Conn::chunks(
        Framing::Datagram,
        Box::new(DecodingRx {
            inner: rx,
            codec: codec.clone(),
            pending: decoded.into_iter().map(|(payload, _)| payload).collect(),
        }),
        Box::new(EncodingTx { inner: tx, codec }),
        peer,
    );
    cx.accept(Incoming { metadata, conn });
    Ok(())
}

/// The layer between the transport and the sink it wraps: each connection is decoded
/// and encoded by the codec, and its first message's metadata joins the session's.
struct Decoding {
    cx: ListenerContext,
    usage: Arc<PluginUse>,
    host: Arc<PluginHost>,
}

impl SessionSink for Decoding {
    fn accept(&self, incoming: Incoming) {
        let (cx, usage, host) = (self.cx.clone(), self.usage.clone(), self.host.clone());
        tokio::spawn(async move {
            let peer = incoming.conn.peer.clone();
            if let Err(e) = accept(cx.clone(), usage, host, incoming).await {
                tracing::info!(listener = %cx.name, %peer, "connection closed: {e}");
            }
        });
    }
}

#[async_trait]
impl ListenerProtocol for CodecListener {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let layer = Arc::new(Decoding {
            cx: cx.clone(),
            usage: self.usage.clone(),
            host: self.host.clone(),
        });
        self.transport.start(cx.with_sink(layer)).await
    }

    fn plugin(&self) -> Option<&str> {
        Some(&self.usage.plugin)
    }
}
