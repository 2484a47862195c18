//! The Rust SDK for l7mp plugins.
//!
//! A plugin is a WebAssembly component for one of the worlds in `wit/` (package
//! `l7mp:plugin@0.1.0`). Enable the feature of your world, implement its `Guest`
//! traits, and export them with the world's macro:
//!
//! ```ignore
//! use l7mp_plugin_sdk::transform::export_transform;
//! use l7mp_plugin_sdk::transform::exports::l7mp::plugin::transform::{
//!     Guest, GuestSession, MetadataUpdate, Output, Session,
//! };
//!
//! struct Upper;
//!
//! impl GuestSession for Upper {
//!     fn open(_metadata: String, _config: String) -> Result<Session, String> {
//!         Ok(Session::new(Upper))
//!     }
//!     fn ingress(&self, chunk: Vec<u8>) -> Result<Output, String> {
//!         Ok(Output { chunks: vec![chunk.to_ascii_uppercase()], metadata: MetadataUpdate::Keep })
//!     }
//!     fn egress(&self, chunk: Vec<u8>) -> Result<Output, String> {
//!         Ok(Output { chunks: vec![chunk], metadata: MetadataUpdate::Keep })
//!     }
//! }
//!
//! struct Plugin;
//! impl Guest for Plugin {
//!     type Session = Upper;
//! }
//! export_transform!(Plugin);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the component to upload:
//! `curl --data-binary @x.wasm -H 'content-type: application/wasm'
//! 'http://127.0.0.1:1234/api/v1/plugins?name=x&version=1'`.
//!
//! The templates in `sdk/templates/` are complete plugins to start from.

/// Bindings for the `transform-plugin` world: an in-process stage of a session.
#[cfg(feature = "transform")]
pub mod transform {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "l7mp:plugin/transform-plugin@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_transform",
        default_bindings_module: "l7mp_plugin_sdk::transform",
    });
}

/// Bindings for the `codec-plugin` world: a listener's framing layer.
#[cfg(feature = "codec")]
pub mod codec {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "l7mp:plugin/codec-plugin@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_codec",
        default_bindings_module: "l7mp_plugin_sdk::codec",
    });
}

/// Bindings for the `matcher-plugin` world: a predicate operator for rules.
#[cfg(feature = "matcher")]
pub mod matcher {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "l7mp:plugin/matcher-plugin@0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_matcher",
        default_bindings_module: "l7mp_plugin_sdk::matcher",
    });
}
