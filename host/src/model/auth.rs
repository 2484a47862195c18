//! Who may use the API: `admin.auth` (bearer tokens and their roles) and the hosts a
//! browser may reach it by (`admin.allowed_hosts`). Checked by the API's guard
//! (`api::auth`); the tokens' digests are resolved when the settings are applied.

use std::path::PathBuf;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::tls::PeerIdentity;

/// What a caller may do. Ordered: each role may do what the ones before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// GETs and `/metrics`.
    Reader,
    /// Networking objects, sessions, and plugin uploads: nothing that reaches the host.
    Editor,
    /// Everything: admin settings, whole configs, and what reaches the host (commands
    /// of `STDIO-fork`, `PIPE` descriptors and paths, `AF_PACKET`, log file paths,
    /// plugin grants).
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

/// `admin.auth`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// With none, the API takes no credentials and may only listen on loopback.
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    /// `/metrics` answers scrapes without a token.
    #[serde(default)]
    pub public_metrics: bool,
    /// Roles of client certificates (the API served over TLS with
    /// `admin.tls.client_ca`): callers without a bearer token are who their
    /// certificate says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsSettings>,
}

/// `admin.auth.mtls`: how a verified client certificate maps to a role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MtlsSettings {
    /// Roles of exact subjects, as RFC 4514 writes them (`CN=operator, O=example`):
    /// checked first.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schema(value_type = std::collections::BTreeMap<String, Role>)]
    pub subjects: IndexMap<String, Role>,
    /// `subject-O`: the subject's organization names the role (`O=editor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_from: Option<RoleFrom>,
}

/// Where a certificate's role may come from besides `subjects`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RoleFrom {
    #[serde(rename = "subject-O")]
    SubjectOrganization,
}

impl MtlsSettings {
    /// The role of a verified client certificate, if it has one.
    pub fn role(&self, peer: &PeerIdentity) -> Option<Role> {
        if let Some(role) = self.subjects.get(&peer.subject) {
            return Some(*role);
        }
        match (self.role_from, peer.organization.as_deref()) {
            (Some(RoleFrom::SubjectOrganization), Some(o)) => {
                serde_json::from_value(serde_json::Value::String(o.to_ascii_lowercase())).ok()
            }
            _ => None,
        }
    }
}

/// One bearer token: its SHA-256 (hex), or a file holding the token itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// Who holds it, for the access log.
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub token_file: Option<PathBuf>,
}

/// A token as the guard compares it: the digest of the secret.
#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// The most tokens `admin.auth` may list.
pub const MAX_TOKENS: usize = 256;
/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

impl AuthSettings {
    /// The tokens' digests: a hex digest as written, a file's token hashed. Reads the
    /// files (small, bounded): call where blocking is fine.
    pub fn resolve(&self) -> Result<Vec<Token>, String> {
        if self.tokens.len() > MAX_TOKENS {
            return Err(format!("admin.auth: at most {MAX_TOKENS} tokens"));
        }
        if self
            .mtls
            .as_ref()
            .is_some_and(|m| m.subjects.len() > MAX_TOKENS)
        {
            return Err(format!("admin.auth.mtls: at most {MAX_TOKENS} subjects"));
        }
        let mut out = Vec::with_capacity(self.tokens.len());
        for t in &self.tokens {
            let at = format!("admin.auth.tokens '{}'", t.name);
            if t.name.is_empty() || t.name.len() > 128 {
                return Err(format!("{at}: a name of 1 to 128 bytes"));
            }
            let sha256 = match (&t.token_sha256, &t.token_file) {
                (Some(hex_digest), None) => {
                    let mut digest = [0u8; 32];
                    hex::decode_to_slice(hex_digest.trim(), &mut digest).map_err(|_| {
                        format!("{at}: token_sha256 must be 64 hex digits (sha256sum of the token)")
                    })?;
                    digest
                }
                (None, Some(path)) => {
                    let meta = std::fs::metadata(path)
                        .map_err(|e| format!("{at}: token_file {}: {e}", path.display()))?;
                    if meta.len() > MAX_TOKEN_FILE {
                        return Err(format!(
                            "{at}: token_file is larger than {MAX_TOKEN_FILE} bytes"
                        ));
                    }
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("{at}: token_file {}: {e}", path.display()))?;
                    let token = text.trim();
                    if token.len() < 16 {
                        return Err(format!(
                            "{at}: the token in token_file is shorter than 16 bytes"
                        ));
                    }
                    digest(token.as_bytes())
                }
                _ => {
                    return Err(format!(
                        "{at}: give token_sha256 or token_file (one of them)"
                    ));
                }
            };
            out.push(Token {
                name: t.name.clone(),
                role: t.role,
                sha256,
            });
        }
        Ok(out)
    }
}

pub fn digest(secret: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_map_to_roles_by_subject_then_organization() {
        let mtls: MtlsSettings = serde_json::from_value(serde_json::json!({
            "subjects": {"CN=ops, O=example": "admin"}, "role_from": "subject-O"
        }))
        .unwrap();
        let peer = |subject: &str, o: Option<&str>| PeerIdentity {
            subject: subject.into(),
            organization: o.map(String::from),
            sans: vec![],
        };
        assert_eq!(
            mtls.role(&peer("CN=ops, O=example", Some("example"))),
            Some(Role::Admin)
        );
        assert_eq!(
            mtls.role(&peer("CN=ci, O=Editor", Some("Editor"))),
            Some(Role::Editor)
        );
        assert_eq!(mtls.role(&peer("CN=x, O=example", Some("example"))), None);
        assert_eq!(mtls.role(&peer("CN=x", None)), None);
    }
}
