//! The server side: a listener's `spec.tls` (and the API's `admin.tls`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::reload::Reloading;
use super::{HANDSHAKE_TIMEOUT, ReadsFiles, TlsError, files, meta, provider, set_paths};

/// The most ALPN protocols a spec may offer.
const MAX_ALPN: usize = 16;

/// What a TLS listener does with TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Shakes hands and decrypts: the session carries plaintext.
    #[default]
    Terminate,
    /// Reads the ClientHello (SNI, ALPN) for the rules and forwards the encrypted
    /// bytes untouched (and, with nothing in between, by splice(2)).
    Passthrough,
}

/// `tls` of a listener: `{cert, key, client_ca?, alpn?}`, or `{mode: passthrough}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerTlsSpec {
    #[serde(default)]
    pub mode: TlsMode,
    /// The certificate chain (PEM), leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub key: Option<PathBuf>,
    /// Clients must present a certificate this CA (PEM) signed: mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub client_ca: Option<PathBuf>,
    /// The application protocols offered, most preferred first (`h2`, `http/1.1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

impl ReadsFiles for ServerTlsSpec {
    fn files(&self) -> Vec<&Path> {
        set_paths(&[&self.cert, &self.key, &self.client_ca])
    }
}

/// Checks an ALPN list: a few non-empty names of at most 255 bytes.
pub(super) fn alpn_list(alpn: &[String]) -> Result<Vec<Vec<u8>>, TlsError> {
    if alpn.len() > MAX_ALPN {
        return Err(TlsError::Spec(format!("at most {MAX_ALPN} alpn protocols")));
    }
    alpn.iter()
        .map(|p| match p.len() {
            1..=255 => Ok(p.as_bytes().to_vec()),
            _ => Err(TlsError::Spec(format!(
                "alpn protocol '{p}' must be 1 to 255 bytes"
            ))),
        })
        .collect()
}

/// The spec's ALPN list, or `default` when it names none.
pub(super) fn alpn_or(alpn: &[String], default: &[&str]) -> Result<Vec<Vec<u8>>, TlsError> {
    if alpn.is_empty() {
        Ok(default.iter().map(|p| p.as_bytes().to_vec()).collect())
    } else {
        alpn_list(alpn)
    }
}

fn server_config(spec: &ServerTlsSpec, default_alpn: &[&str]) -> Result<ServerConfig, TlsError> {
    let (Some(cert), Some(key)) = (&spec.cert, &spec.key) else {
        return Err(TlsError::Spec(
            "terminating TLS needs cert and key (PEM files)".into(),
        ));
    };
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match &spec.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(files::roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Spec(format!("client_ca {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(files::certs(cert)?, files::key(key)?)?;
    config.alpn_protocols = alpn_or(&spec.alpn, default_alpn)?;
    Ok(config)
}

/// Terminates TLS on accepted connections.
pub struct Acceptor {
    config: Reloading<ServerConfig>,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Acceptor")
    }
}

impl Acceptor {
    /// Loads the files now; `default_alpn` is offered when the spec names none (an
    /// HTTP listener offers `h2` and `http/1.1`).
    pub fn new(
        spec: &ServerTlsSpec,
        default_alpn: &'static [&'static str],
    ) -> Result<Acceptor, TlsError> {
        if spec.mode != TlsMode::Terminate {
            return Err(TlsError::Spec(
                "this listener cannot pass TLS through".into(),
            ));
        }
        alpn_list(&spec.alpn)?;
        let owned = spec.clone();
        let config = Reloading::new(
            spec.files().into_iter().map(Path::to_owned).collect(),
            move || server_config(&owned, default_alpn),
        )?;
        Ok(Acceptor { config })
    }

    /// Shakes hands (within [`HANDSHAKE_TIMEOUT`]); answers the stream and the
    /// handshake's `TLS` metadata.
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<(TlsStream<IO>, Value)>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        let conn = stream.get_ref().1;
        let metadata = meta::handshake(conn, conn.server_name());
        Ok((stream, metadata))
    }
}
