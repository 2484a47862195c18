//! What the stream protocols share to speak TLS: building `spec.tls` into an
//! acceptor or a connector (the files are host files: reading them takes host
//! access), and turning a handshaken stream into a connection with its `TLS`
//! metadata.

use std::io;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::core::build::BuildContext;
use crate::core::error::{ConfigError, Result};
use crate::core::{Conn, stream};
use crate::tls::dtls::{DtlsAcceptor, DtlsConnector};
use crate::tls::{Acceptor, ClientTlsSpec, Connector, ReadsFiles, ServerTlsSpec, TlsMode};

/// Refuses TLS files to a change that may not read host files.
fn may_read(spec: &dyn ReadsFiles, cx: &BuildContext<'_>) -> Result<()> {
    if spec.files().is_empty() {
        Ok(())
    } else {
        cx.reach_host("spec.tls (and spec.dtls) reads certificate and key files")
    }
}

fn invalid(e: crate::tls::TlsError) -> ConfigError {
    ConfigError::invalid(format!("spec.tls: {e}"))
}

/// What a listener does with `spec.tls`.
#[derive(Debug, Clone)]
pub enum ServerTls {
    Terminate(Arc<Acceptor>),
    Passthrough,
}

/// Builds a listener's `spec.tls` for a byte stream, which may also pass TLS through.
pub fn server(
    spec: Option<&ServerTlsSpec>,
    cx: &BuildContext<'_>,
    default_alpn: &'static [&'static str],
) -> Result<Option<ServerTls>> {
    match spec {
        None => Ok(None),
        Some(spec) if spec.mode == TlsMode::Passthrough => Ok(Some(ServerTls::Passthrough)),
        Some(spec) => Ok(Some(ServerTls::Terminate(terminate(
            spec,
            cx,
            default_alpn,
        )?))),
    }
}

/// Builds a listener's `spec.tls` where only termination makes sense (HTTP and
/// WebSocket read what they carry).
pub fn acceptor(
    spec: Option<&ServerTlsSpec>,
    cx: &BuildContext<'_>,
    default_alpn: &'static [&'static str],
) -> Result<Option<Arc<Acceptor>>> {
    match spec {
        None => Ok(None),
        Some(spec) if spec.mode == TlsMode::Passthrough => Err(ConfigError::invalid(
            "spec.tls: passthrough is for TCP listeners: this protocol reads what it carries",
        )),
        Some(spec) => terminate(spec, cx, default_alpn).map(Some),
    }
}

fn terminate(
    spec: &ServerTlsSpec,
    cx: &BuildContext<'_>,
    default_alpn: &'static [&'static str],
) -> Result<Arc<Acceptor>> {
    may_read(spec, cx)?;
    Ok(Arc::new(
        Acceptor::new(spec, default_alpn).map_err(invalid)?,
    ))
}

/// Builds a cluster's `spec.tls`; `default_alpn` is offered when it names none.
pub fn connector(
    spec: Option<&ClientTlsSpec>,
    cx: &BuildContext<'_>,
    default_alpn: &'static [&'static str],
) -> Result<Option<Arc<Connector>>> {
    let Some(spec) = spec else { return Ok(None) };
    may_read(spec, cx)?;
    let connector = Connector::new(spec, default_alpn).map_err(invalid)?;
    Ok(Some(Arc::new(connector)))
}

/// Builds a UDP listener's `spec.dtls`.
pub fn dtls_acceptor(
    spec: Option<&ServerTlsSpec>,
    cx: &BuildContext<'_>,
) -> Result<Option<Arc<DtlsAcceptor>>> {
    let Some(spec) = spec else { return Ok(None) };
    may_read(spec, cx)?;
    let acceptor = DtlsAcceptor::new(spec).map_err(invalid_dtls)?;
    Ok(Some(Arc::new(acceptor)))
}

/// Builds a UDP cluster's `spec.dtls`.
pub fn dtls_connector(
    spec: Option<&ClientTlsSpec>,
    cx: &BuildContext<'_>,
) -> Result<Option<Arc<DtlsConnector>>> {
    let Some(spec) = spec else { return Ok(None) };
    may_read(spec, cx)?;
    let connector = DtlsConnector::new(spec).map_err(invalid_dtls)?;
    Ok(Some(Arc::new(connector)))
}

fn invalid_dtls(e: crate::tls::TlsError) -> ConfigError {
    ConfigError::invalid(format!("spec.dtls: {e}"))
}

/// Terminates TLS on an accepted stream: the plaintext connection, with the
/// handshake's facts added to `metadata` under `TLS`.
pub async fn accept<IO>(
    acceptor: &Acceptor,
    io: IO,
    metadata: &mut Value,
    peer: String,
) -> io::Result<Conn>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stream, tls) = acceptor.accept(io).await?;
    metadata["TLS"] = tls;
    let (read, write) = tokio::io::split(stream);
    Ok(stream::conn(read, write, peer))
}

/// Originates TLS to `host` over a connected stream.
pub async fn connect<IO>(
    connector: &Connector,
    host: &str,
    io: IO,
    peer: String,
) -> io::Result<Conn>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream = connector.connect(host, io).await?;
    let (read, write) = tokio::io::split(stream);
    Ok(stream::conn(read, write, peer))
}
