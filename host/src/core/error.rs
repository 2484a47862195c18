//! The one error type of configuration and API operations. It says what kind of
//! problem it is; the API's edge (`api::body`) turns the kind into an HTTP status, so
//! the CLI and the API report the same words.

use std::fmt;

/// What went wrong, as the caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not JSON or YAML at all, or not what the endpoint takes.
    Malformed,
    /// A name that does not exist.
    NotFound,
    /// A name that exists already, an object in use, an address in use.
    Conflict,
    /// Well-formed, but not a valid object.
    Invalid,
    /// A body of a media type the endpoint does not take.
    UnsupportedMedia,
    /// A body larger than allowed.
    TooLarge,
    /// A body that did not arrive in time.
    Timeout,
    /// The caller may not do it (its role, or what the object would reach).
    Forbidden,
    /// The proxy cannot do it now (shutting down).
    Unavailable,
    /// A fault of the proxy's own.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ConfigError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            message: message.into(),
        }
    }
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Malformed, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
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
