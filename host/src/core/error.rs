//! The one error type of configuration and API operations. It carries the HTTP status
//! the REST API answers with, so the CLI and the API report the same words.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub status: u16,
    pub message: String,
}

impl ConfigError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ConfigError {
            status,
            message: message.into(),
        }
    }
    /// 400: the body is not JSON or YAML at all.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    /// 404: a name that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    /// 409: a name that exists already, an object in use, an address in use.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    /// 422: well-formed, but not a valid object.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, message)
    }
    /// Prefixes the message with where the problem is, e.g. `listener 'udp-1'`.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;
