//! One file per protocol, each implementing the [`crate::core`] seam: a listener
//! protocol hands sessions to its sink, a cluster protocol opens a stage. Each file
//! declares its `PROTOCOL`; the one line below both adds the file and registers it
//! (the composition root, `registry.rs`, lists [`ALL`]).

pub mod dtls;
pub mod http_conn;
mod http_connect;
pub mod http_meta;
pub mod json_header;
pub mod net;
pub mod secure;
mod udp_batch;
mod udp_server;

/// Declares each protocol's module and lists its descriptor, in the order error
/// messages name them.
macro_rules! protocols {
    ($($protocol:ident),* $(,)?) => {
        $(pub mod $protocol;)*
        /// Every protocol of this directory.
        pub static ALL: &[&crate::core::build::Protocol] = &[$(&$protocol::PROTOCOL),*];
    };
}
pub(crate) use protocols;

protocols![
    tcp, udp, unix, unix_dgram, websocket, jsonsocket, pipe, fork, sync, stdio, http, af_packet,
    sctp, controller, prometheus,
];

use crate::core::{
    ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Incoming, ListenerContext, ListenerProtocol,
    ListenerTask, Stage, Target, stream,
};
