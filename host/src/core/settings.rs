//! The settings implementations of the seam read: a listener's `options`, the HTTP
//! bounds of `admin.http`, an endpoint's address. Plain data, parsed and bounded where
//! the configuration is read.

use serde::{Deserialize, Serialize};

use super::bounds::{self, Seconds};

/// `listener.options`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ListenerOptions {
    /// Seconds to keep ended sessions visible in the session list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<Seconds>,
    /// UDP: `singleton` or `server` (also accepted under `spec.options`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// UDP server mode: seconds of silence in both directions that end a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Seconds>,
    /// Byte streams: once one direction has ended (a half-close), the seconds the other
    /// may stay silent before the session ends (default 5; 0 waits for it forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_close_timeout: Option<Seconds>,
}

/// How long a half-closed byte-stream session may idle by default.
pub const DEFAULT_HALF_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl ListenerOptions {
    /// The half-close timeout to apply, `None` for none.
    pub fn half_close(&self) -> Option<std::time::Duration> {
        match self.half_close_timeout {
            None => Some(DEFAULT_HALF_CLOSE_TIMEOUT),
            Some(s) if s.get() == 0.0 => None,
            Some(s) => Some(s.duration()),
        }
    }
}

/// How long HTTP clients may take and how much they may send, so that slow or huge
/// requests cannot hold the API (or an HTTP listener) hostage. A timeout of 0 turns it
/// off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct HttpLimits {
    /// Seconds a client may take to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    pub header_timeout: Seconds,
    /// Seconds a client may take to send a request's body.
    pub body_timeout: Seconds,
    /// Seconds a connection may move nothing while no request is being answered.
    pub idle_timeout: Seconds,
    /// API connections served at once; more are answered 503 and closed.
    #[serde(deserialize_with = "bounds::connections")]
    pub max_connections: u32,
    /// The largest request body the API reads (plugin uploads have their own bound).
    #[serde(deserialize_with = "bounds::body_size")]
    pub max_body: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Seconds::whole(10),
            body_timeout: Seconds::whole(30),
            idle_timeout: Seconds::whole(60),
            max_connections: 128,
            max_body: 4 << 20,
        }
    }
}

impl HttpLimits {
    fn timeout(s: Seconds) -> Option<std::time::Duration> {
        (s.get() > 0.0).then(|| s.duration())
    }
    pub fn header(&self) -> Option<std::time::Duration> {
        Self::timeout(self.header_timeout)
    }
    pub fn body(&self) -> Option<std::time::Duration> {
        Self::timeout(self.body_timeout)
    }
    pub fn idle(&self) -> Option<std::time::Duration> {
        Self::timeout(self.idle_timeout)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EndpointSpec {
    /// Host name, IP address, or for UNIX sockets the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Overrides the cluster's `spec.port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Some configs write the weight here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// A UNIX socket path, as some configs write it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}
