//! The l7mp proxy as a library: the binary (`main.rs`) is its command line, the
//! benchmarks in `benches/` measure its parts in-process.
//!
//! Top-down: [`proxy`] holds the live configuration ([`model`]) and the running
//! listeners; [`api`] serves the REST API over it; a listener ([`protocol`]) hands each
//! new session to the [`session`] engine, which routes it through rules ([`json`]
//! predicates), load balancers ([`lb`]) and clusters (protocols, built-in
//! [`transform`]s and Wasm [`plugin`]s), on the kernel fast path ([`offload`]) when
//! nothing in-process sits between two sockets.

pub mod api;
pub mod core;
pub mod json;
pub mod lb;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod offload;
pub mod plugin;
pub mod protocol;
pub mod proxy;
pub mod registry;
pub mod routing;
pub mod services;
pub mod session;
pub mod tls;
pub mod transform;
