//! Address helpers shared by the socket protocols.

use std::io;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `{address, port}` as specs write a bind or connect address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostPort {
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

/// The local address a listener binds: `address` (default all IPv4 interfaces) and port.
pub fn bind_addr(address: Option<&str>, port: u16) -> io::Result<SocketAddr> {
    let ip: IpAddr = match address {
        None | Some("") => IpAddr::from([0, 0, 0, 0]),
        Some(a) => a.trim_matches(['[', ']']).parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{a}' is not an IP address"),
            )
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// Resolves `host:port` (a name or a literal address) to the first address.
pub async fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    let host = host.trim_matches(['[', ']']);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("'{host}' resolves to no address"),
            )
        })
}

/// An IPv4-mapped IPv6 address shown as the IPv4 address it is.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The `IP` and `<proto>` metadata of a connection.
pub fn metadata(proto: &str, local: SocketAddr, peer: SocketAddr) -> Value {
    let (local, peer) = (canonical(local), canonical(peer));
    let mut md = json!({
        "IP": { "src_addr": peer.ip().to_string(), "dst_addr": local.ip().to_string() },
    });
    md[proto] = json!({ "src_port": peer.port(), "dst_port": local.port() });
    md
}

/// An error with the address it is about, so "address in use" names the address.
pub fn at(addr: impl std::fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{addr}: {e}"))
}

/// The spec of a cluster that opens a socket per session: TCP, UDP, SCTP.
#[derive(Debug, Deserialize)]
pub struct SocketClusterSpec {
    #[allow(dead_code)]
    protocol: String,
    /// The endpoints' port (an endpoint's own `spec.port` wins).
    #[serde(default)]
    pub port: Option<u16>,
    /// Where the cluster's sockets bind.
    #[serde(default)]
    pub bind: Option<HostPort>,
}

impl SocketClusterSpec {
    /// Where a session stage connects (the endpoint, its port or the cluster's) and
    /// the local address to bind for it.
    pub async fn addresses(
        &self,
        target: &super::Target<'_>,
    ) -> io::Result<(SocketAddr, SocketAddr)> {
        let (host, port) = target.host_port(self.port)?;
        let remote = resolve(&host, port).await?;
        Ok((remote, local_for(remote, self.bind.as_ref())?))
    }
}

/// A TCP listening socket on `address` (all IPv4 interfaces by default) and `port`.
pub fn listen_tcp(address: Option<&str>, port: u16) -> io::Result<tokio::net::TcpListener> {
    let addr = bind_addr(address, port)?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr).map_err(|e| at(addr, e))?;
    socket.listen(1024).map_err(|e| at(addr, e))
}

/// What an accept loop does when accept fails (EMFILE and friends): say so and back
/// off instead of spinning.
pub async fn accept_failed(listener: &str, e: io::Error) {
    tracing::warn!(listener, "accept failed: {e}");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

/// The local address a cluster socket binds to reach `remote`: `bind` when given,
/// else any address of the remote's family.
pub fn local_for(remote: SocketAddr, bind: Option<&HostPort>) -> io::Result<SocketAddr> {
    let port = bind.and_then(|b| b.port).unwrap_or(0);
    match bind.and_then(|b| b.address.as_deref()) {
        Some(a) => bind_addr(Some(a), port),
        None if remote.is_ipv6() => bind_addr(Some("::"), port),
        None => bind_addr(None, port),
    }
}

/// A TCP connection to `host:port` from `bind` (if given), with Nagle off.
pub async fn connect_tcp(
    host: &str,
    port: u16,
    bind: Option<&HostPort>,
) -> io::Result<tokio::net::TcpStream> {
    let remote = resolve(host, port).await?;
    let socket = if remote.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if bind.is_some() {
        socket.set_reuseaddr(true)?;
        let local = local_for(remote, bind)?;
        socket.bind(local).map_err(|e| at(local, e))?;
    }
    let stream = socket.connect(remote).await.map_err(|e| at(remote, e))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
