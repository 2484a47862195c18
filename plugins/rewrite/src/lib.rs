//! `rewrite`: a transform that edits every chunk: replaces substrings, adds a prefix
//! and a suffix, and counts what it did.
//!
//! ```yaml
//! spec:
//!   protocol: Wasm
//!   plugin: rewrite
//!   config:
//!     replace: [{from: "http://", to: "https://"}]
//!     prepend: "> "
//!     append: ""
//!     mark: rewritten   # optional: counts chunks in the session's metadata under this key
//!     prepend_file: /data/banner.txt  # optional: the prefix read from a granted directory
//!     prepend_from: 10.0.0.5:7000     # optional: the prefix a granted TCP peer sends
//!   grants: {dirs: [{host: /etc/l7mp/banners, guest: /data}], connect: ["10.0.0.5:7000"]}
//! ```

use std::cell::RefCell;

use l7mp_plugin_sdk::transform::export_transform;
use l7mp_plugin_sdk::transform::exports::l7mp::plugin::transform::{
    Guest, GuestSession, MetadataUpdate, Output, Session,
};
use l7mp_plugin_sdk::transform::l7mp::plugin::host;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    replace: Vec<Replace>,
    #[serde(default)]
    prepend: String,
    #[serde(default)]
    append: String,
    mark: Option<String>,
    /// Read once per session; needs a directory granted to the plugin.
    prepend_file: Option<String>,
    /// Read once per session from a TCP peer (up to 1 KiB, until it closes); needs the
    /// peer granted to the plugin.
    prepend_from: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replace {
    from: String,
    to: String,
}

struct Rewrite {
    config: Config,
    metadata: RefCell<serde_json::Value>,
    chunks: RefCell<u64>,
}

impl Rewrite {
    fn apply(&self, chunk: Vec<u8>) -> Output {
        let mut text = match String::from_utf8(chunk) {
            Ok(text) => text,
            // Binary payload: only the prefix and suffix apply.
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        for r in &self.config.replace {
            if !r.from.is_empty() && text.contains(&r.from) {
                text = text.replace(&r.from, &r.to);
            }
        }
        let mut out = Vec::with_capacity(self.config.prepend.len() + text.len() + self.config.append.len());
        out.extend_from_slice(self.config.prepend.as_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(self.config.append.as_bytes());
        host::counter_add("chunks", 1);
        let metadata = match &self.config.mark {
            Some(key) => {
                let mut n = self.chunks.borrow_mut();
                *n += 1;
                let mut md = self.metadata.borrow_mut();
                md[key.as_str()] = (*n).into();
                MetadataUpdate::Replace(md.to_string())
            }
            None => MetadataUpdate::Keep,
        };
        Output { chunks: vec![out], metadata }
    }
}

impl GuestSession for Rewrite {
    fn open(metadata: String, config: String) -> Result<Session, String> {
        let mut config: Config =
            serde_json::from_str(&config).map_err(|e| format!("rewrite: config: {e}"))?;
        if let Some(path) = &config.prepend_file {
            let banner = std::fs::read_to_string(path).map_err(|e| format!("rewrite: {path}: {e}"))?;
            config.prepend = banner + &config.prepend;
        }
        if let Some(peer) = &config.prepend_from {
            use std::io::Read;
            let mut banner = String::new();
            std::net::TcpStream::connect(peer.as_str())
                .and_then(|s| s.take(1024).read_to_string(&mut banner))
                .map_err(|e| format!("rewrite: {peer}: {e}"))?;
            config.prepend = banner + &config.prepend;
        }
        let metadata = serde_json::from_str(&metadata).map_err(|e| e.to_string())?;
        Ok(Session::new(Rewrite {
            config,
            metadata: RefCell::new(metadata),
            chunks: RefCell::new(0),
        }))
    }

    fn ingress(&self, chunk: Vec<u8>) -> Result<Output, String> {
        Ok(self.apply(chunk))
    }

    fn egress(&self, chunk: Vec<u8>) -> Result<Output, String> {
        Ok(self.apply(chunk))
    }
}

struct Plugin;

impl Guest for Plugin {
    type Session = Rewrite;
}

export_transform!(Plugin);
