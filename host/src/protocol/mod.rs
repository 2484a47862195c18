//! One file per protocol, each implementing the [`crate::core`] seam: a listener
//! protocol hands sessions to its sink, a cluster protocol opens a stage.
//! [`registry`] lists them.

pub mod af_packet;
pub mod controller;
pub mod fork;
pub mod http;
pub mod http_conn;
pub mod http_meta;
pub mod json_header;
pub mod jsonsocket;
pub mod net;
pub mod pipe;
pub mod sctp;
pub mod stdio;
pub mod sync;
pub mod tcp;
pub mod udp;
mod udp_batch;
mod udp_server;
pub mod unix;
pub mod unix_dgram;
pub mod websocket;

use crate::core::{
    ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Incoming, ListenerContext, ListenerProtocol,
    ListenerTask, Stage, Target, stream,
};
