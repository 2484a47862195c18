//! A transform plugin: upper-cases what clients send, passes answers unchanged.
//! Rename it, change `ingress`/`egress`, rebuild, upload.

use std::cell::Cell;

use l7mp_plugin_sdk::transform::export_transform;
use l7mp_plugin_sdk::transform::exports::l7mp::plugin::transform::{
    Guest, GuestSession, MetadataUpdate, Output, Session,
};
use l7mp_plugin_sdk::transform::l7mp::plugin::host::{self, Level};
use serde::Deserialize;

/// The cluster's `config`, checked when a session opens.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Config {
    /// Also upper-case the answers.
    both_ways: bool,
}

/// Per-session state: one per session that routes through the cluster.
struct Upper {
    config: Config,
    chunks: Cell<u64>,
}

fn keep(chunks: Vec<Vec<u8>>) -> Output {
    Output { chunks, metadata: MetadataUpdate::Keep }
}

impl GuestSession for Upper {
    fn open(_metadata: String, config: String) -> Result<Session, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("config: {e}"))?;
        host::log(Level::Debug, "session opened");
        Ok(Session::new(Upper { config, chunks: Cell::new(0) }))
    }

    fn ingress(&self, chunk: Vec<u8>) -> Result<Output, String> {
        self.chunks.set(self.chunks.get() + 1);
        host::counter_add("chunks", 1);
        Ok(keep(vec![chunk.to_ascii_uppercase()]))
    }

    fn egress(&self, chunk: Vec<u8>) -> Result<Output, String> {
        Ok(keep(vec![if self.config.both_ways { chunk.to_ascii_uppercase() } else { chunk }]))
    }
}

struct Plugin;

impl Guest for Plugin {
    type Session = Upper;
}

export_transform!(Plugin);
