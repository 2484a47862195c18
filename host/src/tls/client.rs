//! The client side: a cluster's `spec.tls`, originating TLS to its endpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

use super::reload::Reloading;
use super::server::alpn_or;
use super::{HANDSHAKE_TIMEOUT, ReadsFiles, TlsError, files, provider, set_paths};

fn yes() -> bool {
    true
}

/// `tls` of a cluster: `{ca?, server_name?, cert?, key?, verify: true, alpn?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientTlsSpec {
    /// The CAs (PEM) that sign the endpoints' certificates; the system's roots
    /// without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub ca: Option<PathBuf>,
    /// The name to ask for (SNI) and verify; the endpoint's host without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// A client certificate chain (PEM), for endpoints that want mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub key: Option<PathBuf>,
    /// Verify the endpoint's certificate (default). `false` encrypts without knowing
    /// who is on the other side: for tests only.
    #[serde(default = "yes")]
    pub verify: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

impl ReadsFiles for ClientTlsSpec {
    fn files(&self) -> Vec<&Path> {
        set_paths(&[&self.ca, &self.cert, &self.key])
    }
}

/// Accepts any certificate but still checks that the peer holds its key (`verify:
/// false`).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Spec(
            "the system has no CA certificates: give the cluster's tls.ca".into(),
        ));
    }
    Ok(store)
}

fn client_config(spec: &ClientTlsSpec, default_alpn: &[&str]) -> Result<ClientConfig, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if spec.verify {
        let roots = match &spec.ca {
            Some(ca) => files::roots(ca)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider())))
    };
    let mut config = match (&spec.cert, &spec.key) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(files::certs(cert)?, files::key(key)?)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Spec(
                "a client certificate needs both cert and key".into(),
            ));
        }
    };
    config.alpn_protocols = alpn_or(&spec.alpn, default_alpn)?;
    Ok(config)
}

/// Originates TLS over connected streams.
pub struct Connector {
    config: Reloading<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.trim_matches(['[', ']']).to_owned())
        .map_err(|_| TlsError::Spec(format!("'{name}' is not a DNS name or an IP address")))
}

impl Connector {
    /// Loads the files now; `default_alpn` is offered when the spec names none.
    pub fn new(
        spec: &ClientTlsSpec,
        default_alpn: &'static [&'static str],
    ) -> Result<Connector, TlsError> {
        let server = spec.server_name.as_deref().map(server_name).transpose()?;
        let owned = spec.clone();
        let config = Reloading::new(
            spec.files().into_iter().map(Path::to_owned).collect(),
            move || client_config(&owned, default_alpn),
        )?;
        Ok(Connector {
            config,
            server_name: server,
        })
    }

    /// Shakes hands with `host` (the endpoint; `server_name` wins) over `io`.
    pub async fn connect<IO>(&self, host: &str, io: IO) -> std::io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => server_name(host).map_err(std::io::Error::other)?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.config.current());
        tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, io))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })?
    }
}
