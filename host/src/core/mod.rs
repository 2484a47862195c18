//! The seam every protocol, transform and plugin implements, and the only thing they
//! depend on. A listener ([`ListenerProtocol`]) hands what it accepts to a
//! [`SessionSink`]; a cluster ([`ClusterProtocol`]) opens a [`Stage`] for a
//! [`Target`]: a connection ([`Conn`], chunks on a transport the host owns) or an
//! in-process [`Transform`] that sees its session through a [`StageContext`].
//!
//! Also here, because every implementation parses and bounds its own typed spec: the
//! spec parser ([`spec`]), numeric bounds ([`bounds`]), the settings a listener reads
//! ([`settings`]) and the configuration error ([`error`]).

pub mod bounds;
pub mod build;
pub mod conn;
pub mod error;
pub mod http;
pub mod listener;
pub mod settings;
pub mod spec;
pub mod stage;
pub mod stream;

pub use conn::{ChunkRx, ChunkTx, Conn, Framing, UdpPath, Unrouted};
pub use error::{ConfigError, Result};
pub use listener::{Incoming, ListenerContext, ListenerProtocol, ListenerTask, SessionSink};
pub use stage::{
    ClusterProtocol, EndpointRef, HttpForward, Stage, StageContext, StageError, Target, Transform,
};
