//! Address helpers shared by the socket protocols.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `{address, port}` as specs write a bind or connect address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Where a client connected: the listener's address, or, for a listener bound to all
/// addresses, the one the connection arrived at.
pub fn accepted_at(listening: SocketAddr, stream: &tokio::net::TcpStream) -> SocketAddr {
    if listening.ip().is_unspecified() {
        stream.local_addr().unwrap_or(listening)
    } else {
        listening
    }
}

/// An error with the address it is about, so "address in use" names the address.
pub fn at(addr: impl std::fmt::Display, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{addr}: {e}"))
}

/// The spec of a cluster that opens a socket per session: TCP, UDP, SCTP.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SocketClusterSpec {
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

/// Descriptors numbered this or higher are kept for the API (`admin.fd_reserve`): the
/// kernel hands out the lowest free number, so a data socket numbered this high means
/// the data path holds all the others.
static DATA_FD_LIMIT: AtomicI32 = AtomicI32::new(i32::MAX);

/// Keeps the top `reserve` descriptors of the open-files limit for the API.
pub fn set_fd_reserve(reserve: u32) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills a valid struct.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(i32::MAX as u64) as i32
    } else {
        i32::MAX
    };
    // Never below a handful for the data path, whatever the reserve.
    let data = soft.saturating_sub(reserve as i32).max(soft.min(32));
    DATA_FD_LIMIT.store(data, Ordering::Relaxed);
}

/// Refuses a descriptor a data session would take from the API's reserve.
pub fn within_budget(fd: &impl AsRawFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    let limit = DATA_FD_LIMIT.load(Ordering::Relaxed);
    if fd >= limit {
        Err(io::Error::other(format!(
            "out of descriptors for data sessions ({limit} in use; the rest are kept for the API by admin.fd_reserve)"
        )))
    } else {
        Ok(())
    }
}

/// The next connection a data listener may take: accept errors back off, and a
/// connection that would eat into the API's descriptors is closed at once.
pub async fn accept_tcp(
    listener: &tokio::net::TcpListener,
    name: &str,
) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match within_budget(&stream) {
                Ok(()) => return (stream, peer),
                Err(e) => accept_failed(name, e).await,
            },
            Err(e) => accept_failed(name, e).await,
        }
    }
}

/// Whether `path` is a socket file nobody is bound to any more (left behind by a
/// process that died): only such a file may be replaced by a new listener. A live
/// socket of either type (stream or datagram) answers one of the two probes with
/// something other than "connection refused"; a file that is not a socket is never
/// stale.
pub fn stale_unix_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return false;
    }
    let refused =
        |r: io::Result<()>| r.is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused);
    let stream = std::os::unix::net::UnixStream::connect(path).map(drop);
    let datagram = std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.connect(path));
    refused(stream) && refused(datagram)
}

/// Binds a UNIX socket at `path` with `bind`, replacing a stale socket file but never
/// a live socket or another file.
pub fn bind_unix<T>(
    path: &std::path::Path,
    bind: impl Fn(&std::path::Path) -> io::Result<T>,
) -> io::Result<T> {
    match bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && stale_unix_socket(path) => {
            std::fs::remove_file(path)?;
            bind(path)
        }
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!(
                "{}: in use by a live socket or another file",
                path.display()
            ),
        )),
        other => other.map_err(|e| at(path.display(), e)),
    }
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
    within_budget(&socket)?;
    if bind.is_some() {
        socket.set_reuseaddr(true)?;
        let local = local_for(remote, bind)?;
        socket.bind(local).map_err(|e| at(local, e))?;
    }
    let stream = socket.connect(remote).await.map_err(|e| at(remote, e))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
