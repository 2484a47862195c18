//! What a handshake tells, as session metadata under `TLS`:
//! `{sni, alpn, version, cipher, peer: {subject, sans}}`, so that rules can route on
//! the name a client asked for or on who its certificate says it is.

use rustls::{CommonState, ProtocolVersion};
use serde_json::{Value, json};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Who a peer certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject as RFC 4514 writes it (`CN=client, O=editors`).
    pub subject: String,
    /// The subject's organization (`O`), if it has one.
    pub organization: Option<String>,
    /// Subject alternative names: DNS names, addresses, URIs, e-mail addresses.
    pub sans: Vec<String>,
}

impl PeerIdentity {
    /// Reads a verified certificate; `None` if it does not parse (rustls verified it,
    /// so that means an extension this parser does not know).
    pub fn from_der(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let organization = subject
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .map(str::to_owned);
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(n) | GeneralName::RFC822Name(n) => {
                        sans.push((*n).to_owned())
                    }
                    GeneralName::URI(u) => sans.push((*u).to_owned()),
                    GeneralName::IPAddress(ip) => {
                        if let Some(ip) = ip_of(ip) {
                            sans.push(ip.to_string())
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(PeerIdentity {
            subject: subject.to_string(),
            organization,
            sans,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({ "subject": self.subject, "sans": self.sans })
    }
}

fn ip_of(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => Some(<[u8; 4]>::try_from(bytes).ok()?.into()),
        16 => Some(<[u8; 16]>::try_from(bytes).ok()?.into()),
        _ => None,
    }
}

/// The version as OpenSSL and the original's users write it.
fn version_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::TLSv1_3 => "TLSv1.3".into(),
        ProtocolVersion::TLSv1_2 => "TLSv1.2".into(),
        other => format!("{other:?}"),
    }
}

/// The identity of the peer's leaf certificate, if it sent one.
pub fn peer(state: &CommonState) -> Option<PeerIdentity> {
    let leaf = state.peer_certificates()?.first()?;
    PeerIdentity::from_der(leaf)
}

/// The `TLS` metadata of an established connection; `sni` is the name the client
/// asked for (a server knows it, a client chose it).
pub fn handshake(state: &CommonState, sni: Option<&str>) -> Value {
    json!({
        "sni": sni,
        "alpn": state.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
        "version": state.protocol_version().map(version_name),
        "cipher": state.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())),
        "peer": peer(state).map(|p| p.to_json()),
    })
}
