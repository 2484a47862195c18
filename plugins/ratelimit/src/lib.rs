//! `ratelimit`: a token bucket per session and direction. Chunks over the rate are
//! dropped and counted (`l7mp_plugin_counter_total{name="dropped"}`).
//!
//! ```yaml
//! spec:
//!   protocol: Wasm
//!   plugin: ratelimit
//!   config: {chunks_per_second: 100, burst: 20}
//! ```

use std::cell::RefCell;

use l7mp_plugin_sdk::transform::export_transform;
use l7mp_plugin_sdk::transform::exports::l7mp::plugin::transform::{
    Guest, GuestSession, MetadataUpdate, Output, Session,
};
use l7mp_plugin_sdk::transform::l7mp::plugin::host;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    chunks_per_second: f64,
    #[serde(default = "default_burst")]
    burst: f64,
}

fn default_burst() -> f64 {
    1.0
}

struct Bucket {
    tokens: f64,
    last_ns: u64,
}

struct Limiter {
    rate: f64,
    burst: f64,
    ingress: RefCell<Bucket>,
    egress: RefCell<Bucket>,
}

impl Limiter {
    fn admit(&self, bucket: &RefCell<Bucket>, chunk: Vec<u8>) -> Output {
        let mut b = bucket.borrow_mut();
        let now = host::monotonic();
        let elapsed = now.saturating_sub(b.last_ns) as f64 / 1e9;
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last_ns = now;
        let chunks = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            vec![chunk]
        } else {
            host::counter_add("dropped", 1);
            Vec::new()
        };
        Output { chunks, metadata: MetadataUpdate::Keep }
    }
}

impl GuestSession for Limiter {
    fn open(_metadata: String, config: String) -> Result<Session, String> {
        let c: Config =
            serde_json::from_str(&config).map_err(|e| format!("ratelimit: config: {e}"))?;
        if !(c.chunks_per_second > 0.0) || !(c.burst >= 1.0) {
            return Err("ratelimit: chunks_per_second must be > 0 and burst >= 1".into());
        }
        let now = host::monotonic();
        let bucket = || RefCell::new(Bucket { tokens: c.burst, last_ns: now });
        Ok(Session::new(Limiter {
            rate: c.chunks_per_second,
            burst: c.burst,
            ingress: bucket(),
            egress: bucket(),
        }))
    }

    fn ingress(&self, chunk: Vec<u8>) -> Result<Output, String> {
        Ok(self.admit(&self.ingress, chunk))
    }

    fn egress(&self, chunk: Vec<u8>) -> Result<Output, String> {
        Ok(self.admit(&self.egress, chunk))
    }
}

struct Plugin;

impl Guest for Plugin {
    type Session = Limiter;
}

export_transform!(Plugin);
