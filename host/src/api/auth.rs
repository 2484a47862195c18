//! The API's guard, in front of every handler: the request must name this API (Host,
//! and Origin when a browser sends one), carry a valid bearer token when
//! `admin.auth.tokens` lists any, and have a role that may do what it asks. Failures
//! are JSON 401/403 naming what is missing, and go to the log; every mutation goes to
//! the access log with who made it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::body::{ErrorBody, json_response};
use crate::model::auth::{Role, Token, digest};
use crate::proxy::Proxy;
use crate::tls::PeerIdentity;

/// Who is calling, as the guard found out; handlers read it from the request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name; `None` when the API takes no credentials.
    pub name: Option<String>,
    /// What named it: a `token`, a `certificate`.
    via: &'static str,
    pub role: Role,
    /// May create what reaches the host: the admin role, or with no tokens configured
    /// only when the static config says `admin.api_host_access: true`.
    host_access: bool,
}

impl Caller {
    pub fn host_access(&self) -> bool {
        self.host_access
    }

    pub fn who(&self) -> &str {
        self.name.as_deref().unwrap_or("-")
    }
}

/// The host name of an authority (`host`, `host:port`, `[v6]:port`).
fn hostname(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

fn listed(name: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// A Host a request may name: an IP address (a DNS-rebinding page names its own
/// domain, never an address), `localhost`, or one the settings allow.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = hostname(host);
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || listed(name, allowed)
}

/// A browser's `Origin` is allowed when it is this API itself (same host and port as
/// the request's Host) or a host the settings allow.
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    Some(rest) == host || listed(hostname(rest), allowed)
}

/// The role a request needs.
fn needs(method: &Method, path: &str) -> Role {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS => Role::Reader,
        _ if path == "/api/v1/admin" || path == "/api/v1/config" => Role::Admin,
        _ => Role::Editor,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Finds the token's holder, comparing digests in constant time (and every one of
/// them, so the time says nothing about which came close).
fn holder<'a>(tokens: &'a [Token], secret: &str) -> Option<&'a Token> {
    let presented = digest(secret.as_bytes());
    let mut found = None;
    for t in tokens {
        if bool::from(t.sha256.ct_eq(&presented)) {
            found = Some(t);
        }
    }
    found
}

pub async fn guard(State(proxy): State<Arc<Proxy>>, mut req: Request, next: Next) -> Response {
    let snap = proxy.snapshot();
    let admin = &snap.admin;
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(host) = host
        && !host_allowed(host, &admin.allowed_hosts)
    {
        return refused(
            &req,
            StatusCode::FORBIDDEN,
            format!(
                "Host '{host}' does not name this API: use its address, localhost, or add the name to admin.allowed_hosts"
            ),
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && !origin_allowed(origin, host, &admin.allowed_hosts)
    {
        return refused(
            &req,
            StatusCode::FORBIDDEN,
            format!(
                "requests from the web page at '{origin}' are not allowed (add its host to admin.allowed_hosts)"
            ),
        );
    }
    let path = req.uri().path().to_owned();
    let caller = if !proxy.authenticates() {
        // Loopback only (see `main.rs`): its callers may do everything but reach the
        // host, unless the static config allows that too.
        Caller {
            name: None,
            via: "caller",
            role: Role::Admin,
            host_access: admin.api_host_access,
        }
    } else if admin.auth.as_ref().is_some_and(|a| a.public_metrics)
        && req.method() == Method::GET
        && (path == "/metrics" || path == "/api/v1/metrics")
    {
        Caller {
            name: None,
            via: "caller",
            role: Role::Reader,
            host_access: false,
        }
    } else {
        match authenticate(&proxy, &req) {
            Ok(caller) => caller,
            Err((status, message)) => return refused(&req, status, message),
        }
    };
    let wanted = needs(req.method(), &path);
    if caller.role < wanted {
        let message = format!(
            "{} '{}' has the {} role; {} {path} needs {}",
            caller.via,
            caller.who(),
            caller.role.name(),
            req.method(),
            wanted.name()
        );
        return refused(&req, StatusCode::FORBIDDEN, message);
    }
    req.extensions_mut().insert(caller.clone());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(caller);
    resp
}

/// The caller a bearer token names, or else the client certificate (with
/// `admin.auth.mtls`); the refusal otherwise.
fn authenticate(proxy: &Proxy, req: &Request) -> Result<Caller, (StatusCode, String)> {
    if let Some(secret) = bearer(req.headers()) {
        let tokens = proxy.tokens();
        let Some(t) = holder(&tokens, secret) else {
            return Err((
                StatusCode::UNAUTHORIZED,
                "the bearer token is not valid".into(),
            ));
        };
        return Ok(Caller {
            name: Some(t.name.clone()),
            via: "token",
            role: t.role,
            host_access: t.role == Role::Admin,
        });
    }
    let mtls = proxy.mtls();
    match (req.extensions().get::<Arc<PeerIdentity>>(), mtls.as_ref()) {
        (Some(peer), Some(mtls)) => match mtls.role(peer) {
            Some(role) => Ok(Caller {
                name: Some(peer.subject.clone()),
                via: "certificate",
                role,
                host_access: role == Role::Admin,
            }),
            None => Err((
                StatusCode::FORBIDDEN,
                format!(
                    "the client certificate '{}' has no role: list it in admin.auth.mtls.subjects, or give it O=reader|editor|admin with role_from: subject-O",
                    peer.subject
                ),
            )),
        },
        (None, Some(_)) => Err((
            StatusCode::UNAUTHORIZED,
            "this API needs a bearer token ('Authorization: Bearer <token>') or a client certificate over TLS".into(),
        )),
        _ => Err((
            StatusCode::UNAUTHORIZED,
            "this API needs a bearer token: send 'Authorization: Bearer <token>'".into(),
        )),
    }
}

/// A refusal, logged: who tried what, and why not.
fn refused(req: &Request, status: StatusCode, message: String) -> Response {
    tracing::warn!(
        method = %req.method(),
        path = %req.uri().path(),
        status = status.as_u16(),
        "API request refused: {message}"
    );
    let mut resp = json_response(
        status,
        &ErrorBody {
            status: status.as_u16(),
            message,
        },
    );
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"l7mp\""),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let allowed = vec!["l7mp.example".to_owned()];
        for ok in [
            "127.0.0.1:9000",
            "[::1]:9000",
            "localhost:1",
            "LOCALHOST",
            "10.0.0.7",
            "l7mp.example:80",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "evil.example:9000",
            "evil.example",
            "127.0.0.1.evil.example:1",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
        let host = Some("127.0.0.1:9000");
        assert!(origin_allowed("http://127.0.0.1:9000", host, &allowed));
        assert!(origin_allowed("https://l7mp.example", host, &allowed));
        assert!(!origin_allowed("http://127.0.0.1:9001", host, &allowed));
        assert!(!origin_allowed("http://evil.example", host, &allowed));
        assert!(!origin_allowed("null", host, &allowed));
    }

    #[test]
    fn roles_by_method_and_path() {
        assert_eq!(needs(&Method::GET, "/api/v1/admin"), Role::Reader);
        assert_eq!(needs(&Method::POST, "/api/v1/admin"), Role::Admin);
        assert_eq!(needs(&Method::POST, "/api/v1/config"), Role::Admin);
        assert_eq!(needs(&Method::POST, "/api/v1/listeners"), Role::Editor);
        assert_eq!(needs(&Method::DELETE, "/api/v1/sessions/s"), Role::Editor);
        assert!(Role::Admin > Role::Editor && Role::Editor > Role::Reader);
    }
}
