//! DTLS 1.2 contexts (OpenSSL, through the `openssl` crate: rustls has no DTLS), built
//! from the same `{cert, key, client_ca}` / `{ca, server_name, cert, key, verify}`
//! specs as TLS and reloaded the same way. A server context answers a first
//! ClientHello with a HelloVerifyRequest carrying a cookie (an HMAC of the peer's
//! address under a key of this process) and goes on only with a ClientHello that
//! returns it: a spoofed source gets one small datagram back, never a flight of
//! certificates, so the listener cannot be used to amplify.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use openssl::ex_data::Index;
use openssl::hash::MessageDigest;
use openssl::memcmp;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslOptions, SslRef, SslVerifyMode,
    SslVersion,
};

use super::reload::Reloading;
use super::{ClientTlsSpec, ReadsFiles, ServerTlsSpec, TlsError, TlsMode};

/// The path MTU the handshake's flights are cut to (a certificate chain does not fit
/// one datagram on most links).
pub const MTU: u32 = 1400;

fn failed(what: &str) -> impl Fn(openssl::error::ErrorStack) -> TlsError + '_ {
    move |e| TlsError::Spec(format!("{what}: {e}"))
}

fn context(what: &str) -> Result<SslContextBuilder, TlsError> {
    let mut ctx = SslContext::builder(SslMethod::dtls()).map_err(failed(what))?;
    ctx.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .map_err(failed(what))?;
    ctx.set_options(SslOptions::NO_QUERY_MTU);
    Ok(ctx)
}

fn identity(ctx: &mut SslContextBuilder, cert: &Path, key: &Path) -> Result<(), TlsError> {
    ctx.set_certificate_chain_file(cert)
        .map_err(|e| TlsError::Pem {
            path: cert.to_owned(),
            what: format!("not a usable certificate chain: {e}"),
        })?;
    ctx.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| TlsError::Pem {
            path: key.to_owned(),
            what: format!("not a usable private key: {e}"),
        })?;
    ctx.check_private_key()
        .map_err(failed("the key does not match the certificate"))
}

fn ca_file(ctx: &mut SslContextBuilder, ca: &Path) -> Result<(), TlsError> {
    ctx.set_ca_file(ca).map_err(|e| TlsError::Pem {
        path: ca.to_owned(),
        what: format!("not a usable CA file: {e}"),
    })
}

/// Where a server session's peer is, for its cookie.
fn peer_index() -> Index<Ssl, String> {
    static INDEX: OnceLock<Index<Ssl, String>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().expect("an OpenSSL ex_data index"))
}

/// The cookie of the peer a server session talks to.
fn cookie(secret: &[u8], ssl: &SslRef) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let key = PKey::hmac(secret)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    let peer = ssl
        .ex_data(peer_index())
        .map(String::as_bytes)
        .unwrap_or_default();
    signer.update(peer)?;
    signer.sign_to_vec()
}

fn server_context(spec: &ServerTlsSpec, secret: Arc<[u8; 32]>) -> Result<SslContext, TlsError> {
    let (Some(cert), Some(key)) = (&spec.cert, &spec.key) else {
        return Err(TlsError::Spec("DTLS needs cert and key (PEM files)".into()));
    };
    let mut ctx = context("dtls")?;
    identity(&mut ctx, cert, key)?;
    if let Some(ca) = &spec.client_ca {
        ca_file(&mut ctx, ca)?;
        ctx.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    ctx.set_options(SslOptions::COOKIE_EXCHANGE);
    let generate = secret.clone();
    ctx.set_cookie_generate_cb(move |ssl, out| {
        let c = cookie(&generate[..], ssl)?;
        let n = c.len().min(out.len());
        out[..n].copy_from_slice(&c[..n]);
        Ok(n)
    });
    ctx.set_cookie_verify_cb(move |ssl, presented| {
        cookie(&secret[..], ssl).is_ok_and(|c| {
            c.len().min(255) == presented.len() && memcmp::eq(&c[..presented.len()], presented)
        })
    });
    Ok(ctx.build())
}

/// Shakes DTLS hands as a server, per peer.
pub struct DtlsAcceptor {
    context: Reloading<SslContext>,
}

impl std::fmt::Debug for DtlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DtlsAcceptor")
    }
}

impl DtlsAcceptor {
    pub fn new(spec: &ServerTlsSpec) -> Result<DtlsAcceptor, TlsError> {
        if spec.mode != TlsMode::Terminate {
            return Err(TlsError::Spec("DTLS cannot pass through".into()));
        }
        let secret: [u8; 32] = rand::random();
        let secret = Arc::new(secret);
        let owned = spec.clone();
        let context = Reloading::new(
            spec.files().into_iter().map(Path::to_owned).collect(),
            move || server_context(&owned, secret.clone()),
        )?;
        Ok(DtlsAcceptor { context })
    }

    /// A server session for the peer at `peer` (its cookie is bound to it).
    pub fn session(&self, peer: &str) -> Result<Ssl, TlsError> {
        let mut ssl = Ssl::new(&self.context.current()).map_err(failed("dtls"))?;
        ssl.set_mtu(MTU).map_err(failed("dtls"))?;
        ssl.set_ex_data(peer_index(), peer.to_owned());
        Ok(ssl)
    }
}

fn client_context(spec: &ClientTlsSpec) -> Result<SslContext, TlsError> {
    let mut ctx = context("dtls")?;
    if spec.verify {
        match &spec.ca {
            Some(ca) => ca_file(&mut ctx, ca)?,
            None => ctx
                .set_default_verify_paths()
                .map_err(failed("the system's CA certificates"))?,
        }
        ctx.set_verify(SslVerifyMode::PEER);
    } else {
        ctx.set_verify(SslVerifyMode::NONE);
    }
    match (&spec.cert, &spec.key) {
        (Some(cert), Some(key)) => identity(&mut ctx, cert, key)?,
        (None, None) => {}
        _ => {
            return Err(TlsError::Spec(
                "a client certificate needs both cert and key".into(),
            ));
        }
    }
    Ok(ctx.build())
}

/// Shakes DTLS hands as a client.
pub struct DtlsConnector {
    context: Reloading<SslContext>,
    server_name: Option<String>,
}

impl std::fmt::Debug for DtlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsConnector")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl DtlsConnector {
    pub fn new(spec: &ClientTlsSpec) -> Result<DtlsConnector, TlsError> {
        let owned = spec.clone();
        let context = Reloading::new(
            spec.files().into_iter().map(Path::to_owned).collect(),
            move || client_context(&owned),
        )?;
        Ok(DtlsConnector {
            context,
            server_name: spec.server_name.clone(),
        })
    }

    /// A client session to `host` (`server_name` wins): SNI for a name, and the
    /// certificate checked against the name or address.
    pub fn session(&self, host: &str) -> Result<Ssl, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name.trim_matches(['[', ']']);
        let mut ssl = Ssl::new(&self.context.current()).map_err(failed("dtls"))?;
        ssl.set_mtu(MTU).map_err(failed("dtls"))?;
        match name.parse::<IpAddr>() {
            Ok(ip) => ssl.param_mut().set_ip(ip),
            Err(_) => {
                ssl.set_hostname(name).map_err(failed("server_name"))?;
                ssl.param_mut().set_host(name)
            }
        }
        .map_err(failed("server_name"))?;
        Ok(ssl)
    }
}
