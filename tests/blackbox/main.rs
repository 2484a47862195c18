//! Black-box tests: each starts the real `l7mp` binary on ephemeral ports, drives it
//! over REST and sends real bytes through real sockets.

mod harness;

mod af_packet;

mod http;

mod api;
mod auth;
mod cli;
mod compat;
mod dtls;
mod hardening;
mod ipc;
mod jsonsocket;
mod offload;
mod plugin_limits;
mod plugin_worlds;
mod plugins;
mod routing;
mod sctp;
mod sdk;
mod sessions;
mod stream;
mod tls;
mod tls_web;
mod transforms;
mod udp;
mod websocket;
