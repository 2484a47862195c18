//! Why a session or one of its stages ended otherwise than normally. The words are
//! what the session's `error` and its `ERROR` event say; the variants are what code
//! (a retry, a handshake answer) decides on.

use std::io;

use super::connect::StageFailed;
use crate::routing::RouteError;

/// Why a stage's driver gave up.
#[derive(Debug, thiserror::Error)]
pub enum StageEnd {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("its endpoint was removed")]
    EndpointRemoved,
    /// A transform ended the session (a plugin's `on_fault: close`).
    #[error("{0}")]
    Transform(String),
    #[error("{0}")]
    Reconnect(#[from] ReconnectError),
}

/// Why a broken connection was not replaced.
#[derive(Debug, thiserror::Error)]
pub enum ReconnectError {
    #[error("cluster '{cluster}': {why}; no retries left")]
    Exhausted { cluster: String, why: String },
    #[error("{0}")]
    Failed(#[from] StageFailed),
    #[error("cluster '{0}' is no longer a network cluster")]
    NotNetwork(String),
}

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The API deleted it, or an object it used.
    #[error("deleted")]
    Deleted,
    #[error("{0}")]
    NoRoute(#[from] RouteError),
    #[error("{0}")]
    Connect(#[from] StageFailed),
    /// The source's handshake answer could not be sent.
    #[error("source: {0}")]
    Answer(io::Error),
    #[error("source: the routing answer could not be sent")]
    AnswerTimeout,
    /// A stage of the ring, named as listings do (`ingress #0 (cluster 'x')`).
    #[error("{stage}: {end}")]
    Stage { stage: String, end: StageEnd },
    /// A direction of the direct path (splice or relay).
    #[error("{direction}: {error}")]
    Direct {
        direction: &'static str,
        error: io::Error,
    },
    #[error("a stage failed internally: {0}")]
    Internal(String),
}

impl SessionError {
    /// Whether the rules matched nothing (a handshake answers 404 rather than 503).
    pub fn is_no_match(&self) -> bool {
        matches!(self, SessionError::NoRoute(RouteError::NoMatch))
    }
}
