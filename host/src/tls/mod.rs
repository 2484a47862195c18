//! TLS, for the API and for the data plane's stream protocols: rustls with the ring
//! provider. A listener terminates with an [`Acceptor`] (mutual TLS when it names a
//! `client_ca`) or passes TLS through, reading only the ClientHello ([`sni`]); a
//! cluster originates with a [`Connector`]. Both re-read their files when they
//! change ([`reload`]), so certificates rotate without dropping a session, and the
//! handshake's facts become session metadata ([`meta`]) that rules can route on.
//!
//! DTLS ([`dtls`]) is OpenSSL's, since rustls has none; its contexts follow the same
//! specs and reload the same way.
//!
//! This layer knows files, sockets, rustls and OpenSSL; the protocols that use it
//! know it.

mod client;
pub mod dtls;
mod files;
pub mod meta;
mod reload;
mod server;
pub mod sni;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use client::{ClientTlsSpec, Connector};
pub use meta::PeerIdentity;
pub use server::{Acceptor, ServerTlsSpec, TlsMode};

/// How long a peer has to complete a handshake (or send its ClientHello) before the
/// connection is dropped: a silent client holds no session.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong setting TLS up, naming the file or field.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("{0}")]
    Spec(String),
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider: ring (no C toolchain beyond cc, no cmake).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The file paths a spec reads, for checks that a caller may read host files.
pub trait ReadsFiles {
    fn files(&self) -> Vec<&std::path::Path>;
}

/// The paths of those fields that are set.
fn set_paths<'a>(fields: &[&'a Option<PathBuf>]) -> Vec<&'a std::path::Path> {
    fields.iter().filter_map(|f| f.as_deref()).collect()
}
