//! UDP: datagram-stream sessions.
//!
//! The listener runs in one of two modes. `singleton` (the default when `connect` has
//! both address and port) connects its socket to that one peer and emits one session
//! at a time. `server` ([`super::udp_server`]) emits a session per new peer; datagrams are demultiplexed by
//! peer address in userspace, replies leave through the listening socket, and a session
//! that hears nothing in either direction for `idle_timeout` seconds ends (the
//! original never expired UDP sessions). `connect.address` or `connect.port` alone
//! filter which peers a server accepts. The cluster opens a socket per session stage,
//! bound to `bind` when given and connected to the endpoint.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::net::{self, HostPort};
use super::udp_batch;
use super::udp_server::{self, Activity, DemuxEntry};
use super::{
    ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Incoming, ListenerContext, ListenerProtocol,
    ListenerTask, Stage, Target,
};
use crate::core::UdpPath;
use crate::core::bounds::Seconds;
use super::dtls::{self, DtlsSink};
use super::secure;
use crate::core::build::{BuildContext, Carries, Protocol};
use crate::tls::dtls::{DtlsAcceptor, DtlsConnector};
use crate::tls::{ClientTlsSpec, ServerTlsSpec};

pub const NAME: &str = "UDP";
/// The largest UDP payload.
pub(super) const MAX_DATAGRAM: usize = 65536;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The shortest idle timeout (0 would end every session at once).
const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(1);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = UdpListenerSpec)]
pub struct UdpListenerSpec {
    port: u16,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    connect: Option<HostPort>,
    #[serde(default)]
    options: Option<UdpOptions>,
    /// DTLS 1.2 per session: `{cert, key, client_ca?}`.
    #[serde(default)]
    dtls: Option<ServerTlsSpec>,
}

/// A UDP listener, shaking DTLS hands with each session when it has `spec.dtls`.
#[derive(Debug)]
pub struct UdpListener {
    spec: UdpListenerSpec,
    dtls: Option<Arc<DtlsAcceptor>>,
}

#[async_trait]
impl ListenerProtocol for UdpListener {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        match &self.dtls {
            None => self.spec.start(cx).await,
            Some(acceptor) => {
                let sink = Arc::new(DtlsSink {
                    inner: cx.sink.clone(),
                    acceptor: acceptor.clone(),
                    listener: cx.name.clone(),
                });
                self.spec.start(cx.with_sink(sink)).await
            }
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone, utoipa::ToSchema)]
pub struct UdpOptions {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    idle_timeout: Option<Seconds>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Singleton,
    Server,
}

impl UdpListenerSpec {
    pub fn validate(&self) -> Result<(), String> {
        self.mode(None).map(|_| ())
    }

    fn mode(&self, listener_mode: Option<&str>) -> Result<Mode, String> {
        let connect = self.connect.clone().unwrap_or_default();
        let full_peer = connect.address.is_some() && connect.port.is_some();
        let requested = listener_mode.or(self.options.as_ref().and_then(|o| o.mode.as_deref()));
        match requested {
            None if full_peer => Ok(Mode::Singleton),
            None => Ok(Mode::Server),
            Some(m) if m.eq_ignore_ascii_case("server") => Ok(Mode::Server),
            Some(m) if m.eq_ignore_ascii_case("singleton") => {
                if full_peer {
                    Ok(Mode::Singleton)
                } else {
                    Err("singleton mode needs both connect.address and connect.port".into())
                }
            }
            Some(other) => Err(format!("unknown UDP mode '{other}' (singleton or server)")),
        }
    }
}

pub(super) enum Reuse {
    /// A listener: the port must be free; sessions will share it.
    Listener,
    /// A server-mode session: the listener's address again, connected to one peer.
    Session,
    /// A cluster socket: `bind` may name a port that other sessions bind too.
    Cluster,
}

pub(super) fn new_socket(
    addr: SocketAddr,
    reuse: Reuse,
    peer: Option<SocketAddr>,
) -> io::Result<UdpSocket> {
    if matches!(reuse, Reuse::Listener) && addr.port() != 0 {
        // SO_REUSEPORT would let a second bind succeed silently: check that the port
        // is free with a plain bind first.
        std::net::UdpSocket::bind(addr).map_err(|e| net::at(addr, e))?;
    }
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if !matches!(reuse, Reuse::Listener) {
        net::within_budget(&socket)?;
    }
    socket.set_nonblocking(true)?;
    match reuse {
        Reuse::Listener | Reuse::Session => socket.set_reuse_port(true)?,
        Reuse::Cluster => socket.set_reuse_address(addr.port() != 0)?,
    }
    socket.bind(&addr.into()).map_err(|e| net::at(addr, e))?;
    if let Some(peer) = peer {
        socket.connect(&peer.into()).map_err(|e| net::at(peer, e))?;
    }
    UdpSocket::from_std(socket.into())
}

impl UdpListenerSpec {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let options = &cx.options;
        let mode = self
            .mode(options.mode.as_deref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let idle = options
            .idle_timeout
            .or(self.options.as_ref().and_then(|o| o.idle_timeout))
            .map_or(DEFAULT_IDLE_TIMEOUT, Seconds::duration)
            .max(MIN_IDLE_TIMEOUT);
        let addr = net::bind_addr(self.address.as_deref(), self.port)?;
        let socket = Arc::new(new_socket(addr, Reuse::Listener, None)?);
        let local = socket.local_addr()?;
        let connect = self.connect.clone().unwrap_or_default();
        let task = match mode {
            Mode::Singleton => {
                let host = connect.address.clone().unwrap_or_default();
                let peer = net::resolve(&host, connect.port.unwrap_or_default()).await?;
                socket.connect(peer).await.map_err(|e| net::at(peer, e))?;
                tokio::spawn(run_singleton(cx, socket, local, peer))
            }
            Mode::Server => {
                let filter = PeerFilter {
                    address: connect.address.as_deref().map(parse_ip).transpose()?,
                    port: connect.port,
                };
                tokio::spawn(udp_server::run(cx, socket, local, filter, idle))
            }
        };
        Ok(ListenerTask::new(local.to_string(), task))
    }
}

fn parse_ip(a: &str) -> io::Result<std::net::IpAddr> {
    a.trim_matches(['[', ']']).parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("connect.address '{a}' is not an IP address"),
        )
    })
}

pub(super) struct PeerFilter {
    address: Option<std::net::IpAddr>,
    port: Option<u16>,
}

impl PeerFilter {
    pub(super) fn admits(&self, peer: SocketAddr) -> bool {
        let peer = net::canonical(peer);
        self.address.is_none_or(|a| a.to_canonical() == peer.ip())
            && self.port.is_none_or(|p| p == peer.port())
    }
}

/// One session at a time on a socket connected to the configured peer; when it ends,
/// the next datagram from the peer starts the next one. A session that ended without
/// reading anything (it could not be routed or connected) takes the datagram that
/// started it along, so a bad route does not spin.
async fn run_singleton(
    cx: ListenerContext,
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    peer: SocketAddr,
) {
    loop {
        let (ended_tx, ended) = oneshot::channel();
        let mut conn = Conn::chunks(
            Framing::Datagram,
            Box::new(SocketRx::connected(
                socket.clone(),
                Some(EndSignal {
                    tx: Some(ended_tx),
                    read_any: false,
                }),
            )),
            Box::new(SocketTx::new(socket.clone(), None)),
            peer.to_string(),
        );
        conn.udp = udp_path(&socket, None);
        cx.accept(Incoming {
            metadata: net::metadata("UDP", local, peer),
            conn,
        });
        let read_any = ended.await.unwrap_or(false);
        if socket.readable().await.is_err() {
            return;
        }
        if !read_any {
            let _ = socket.try_recv(&mut [0u8; 1]);
        }
    }
}

/// Tells a singleton listener that its session let go of the socket, and whether the
/// session read from it.
struct EndSignal {
    tx: Option<oneshot::Sender<bool>>,
    read_any: bool,
}

impl Drop for EndSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(self.read_any);
        }
    }
}

/// A connected socket's addresses for the kernel fast path (after connect, the local
/// address is the one the kernel chose for the peer, not a wildcard).
pub(super) fn udp_path(
    socket: &UdpSocket,
    keepalive: Option<Arc<dyn Fn() + Send + Sync>>,
) -> Option<UdpPath> {
    Some(UdpPath {
        local: socket.local_addr().ok()?,
        peer: socket.peer_addr().ok()?,
        keepalive,
    })
}

/// The receiving half of a connected socket: a cluster's, a singleton listener's, or a
/// server-mode session's. A server-mode session also takes the few datagrams that
/// reached the listening socket first (the one that started it, and any that raced its
/// connect) and ends after `idle` without traffic. ICMP port-unreachable surfaces as
/// ECONNREFUSED on a later call; for a datagram stream that is a lost datagram, not a
/// broken session.
pub(super) struct SocketRx {
    socket: Arc<UdpSocket>,
    /// Received in a batch, not yet taken by `recv`.
    queued: VecDeque<Bytes>,
    stragglers: Option<mpsc::Receiver<Bytes>>,
    idle: Option<(Duration, Arc<Activity>)>,
    ended: Option<EndSignal>,
    _entry: Option<DemuxEntry>,
}

impl SocketRx {
    /// A server-mode session's: it also takes what the listener received for it
    /// (`stragglers`) and ends after `idle` without traffic.
    pub(super) fn server_session(
        socket: Arc<UdpSocket>,
        stragglers: mpsc::Receiver<Bytes>,
        idle: (Duration, Arc<Activity>),
        entry: DemuxEntry,
    ) -> SocketRx {
        SocketRx {
            stragglers: Some(stragglers),
            idle: Some(idle),
            _entry: Some(entry),
            ..SocketRx::connected(socket, None)
        }
    }

    fn connected(socket: Arc<UdpSocket>, ended: Option<EndSignal>) -> SocketRx {
        udp_batch::enable_gro(socket.as_raw_fd());
        SocketRx {
            socket,
            queued: VecDeque::new(),
            stragglers: None,
            idle: None,
            ended,
            _entry: None,
        }
    }

    fn received(&mut self) {
        if let Some((_, activity)) = &self.idle {
            activity.touch();
        }
        if let Some(ended) = &mut self.ended {
            ended.read_any = true;
        }
    }

    /// When the session idles out, if it can.
    fn deadline(&self) -> Option<Instant> {
        self.idle
            .as_ref()
            .map(|(idle, activity)| activity.idle_until(*idle))
    }
}

/// Waits until `socket` has datagrams and appends a batch of them to `out`.
async fn recv_batch_on(socket: &UdpSocket, out: &mut Vec<Bytes>) -> io::Result<()> {
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || {
            udp_batch::try_recv(socket.as_raw_fd(), out)
        }) {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
    }
}

#[async_trait]
impl ChunkRx for SocketRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        if self.queued.is_empty() {
            let mut batch = Vec::new();
            if !self.recv_batch(&mut batch).await? {
                return Ok(None);
            }
            self.queued.extend(batch);
        }
        Ok(self.queued.pop_front())
    }

    async fn recv_batch(&mut self, out: &mut Vec<Bytes>) -> io::Result<bool> {
        if !self.queued.is_empty() {
            out.extend(self.queued.drain(..));
            return Ok(true);
        }
        loop {
            let deadline = self.deadline();
            tokio::select! {
                biased;
                straggler = async { self.stragglers.as_mut()?.recv().await }, if self.stragglers.is_some() => {
                    match straggler {
                        Some(datagram) => {
                            out.push(datagram);
                            break;
                        }
                        None => self.stragglers = None,
                    }
                }
                received = recv_batch_on(&self.socket, out) => {
                    received?;
                    break;
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    if self.deadline().is_some_and(|d| Instant::now() >= d) {
                        tracing::debug!("UDP session idle for {:?}, ending it", self.idle.as_ref().map(|i| i.0));
                        return Ok(false);
                    }
                }
            }
        }
        self.received();
        Ok(true)
    }
}

pub(super) struct SocketTx {
    socket: Arc<UdpSocket>,
    activity: Option<Arc<Activity>>,
    /// Whether GSO sends still work on this socket.
    gso: bool,
}

impl SocketTx {
    pub(super) fn new(socket: Arc<UdpSocket>, activity: Option<Arc<Activity>>) -> SocketTx {
        SocketTx {
            socket,
            activity,
            gso: true,
        }
    }
}

#[async_trait]
impl ChunkTx for SocketTx {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        self.send_batch(&mut vec![chunk]).await
    }

    async fn send_batch(&mut self, chunks: &mut Vec<Bytes>) -> io::Result<()> {
        if let Some(activity) = &self.activity {
            activity.touch();
        }
        let mut at = 0;
        while at < chunks.len() {
            self.socket.writable().await?;
            let (socket, gso) = (&self.socket, &mut self.gso);
            match socket.try_io(Interest::WRITABLE, || {
                udp_batch::try_send(socket.as_raw_fd(), &chunks[at..], gso)
            }) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // The peer's port is closed: that datagram is lost, the session is not.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => at += 1,
                Err(e) => return Err(e),
            }
        }
        chunks.clear();
        Ok(())
    }

    async fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `port` and `bind`, as every socket cluster, and `dtls`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UdpClusterSpec {
    /// The endpoints' port (an endpoint's own `spec.port` wins).
    #[serde(default)]
    port: Option<u16>,
    /// Where the cluster's sockets bind.
    #[serde(default)]
    bind: Option<HostPort>,
    /// DTLS 1.2 to the endpoints: `{ca?, server_name?, cert?, key?, verify}`.
    #[serde(default)]
    dtls: Option<ClientTlsSpec>,
}

#[derive(Debug)]
pub struct UdpCluster {
    socket: net::SocketClusterSpec,
    dtls: Option<Arc<DtlsConnector>>,
}

fn udp_cluster(
    spec: &serde_json::Value,
    cx: &BuildContext<'_>,
) -> crate::core::Result<Arc<dyn ClusterProtocol>> {
    let spec: UdpClusterSpec = cx.parse(spec, "spec")?;
    let dtls = secure::dtls_connector(spec.dtls.as_ref(), cx)?;
    let socket = net::SocketClusterSpec {
        port: spec.port,
        bind: spec.bind,
    };
    Ok(Arc::new(UdpCluster { socket, dtls }))
}

#[async_trait]
impl ClusterProtocol for UdpCluster {
    fn name(&self) -> &'static str {
        NAME
    }
    fn needs_endpoint(&self) -> bool {
        true
    }
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let (remote, local) = self.socket.addresses(&target).await?;
        let socket = Arc::new(new_socket(local, Reuse::Cluster, None)?);
        socket
            .connect(remote)
            .await
            .map_err(|e| net::at(remote, e))?;
        let mut conn = Conn::chunks(
            Framing::Datagram,
            Box::new(SocketRx::connected(socket.clone(), None)),
            Box::new(SocketTx::new(socket.clone(), None)),
            remote.to_string(),
        );
        match &self.dtls {
            None => {
                conn.udp = udp_path(&socket, None);
                Ok(Stage::Conn(conn))
            }
            // Encrypted in userspace: the kernel fast path cannot take it over.
            Some(dtls) => {
                let host = target.host_port(self.socket.port)?.0;
                Ok(Stage::Conn(dtls::connect(dtls, &host, conn).await?))
            }
        }
    }
}

/// UDP: a codec or JSONSocket may run over it.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(udp_listener),
    cluster: Some(udp_cluster),
    listener_schema: Some(crate::core::build::schema::<UdpListenerSpec>),
    cluster_schema: Some(crate::core::build::schema::<UdpClusterSpec>),
    carries: Carries {
        codec: true,
        jsonsocket_listener: true,
        jsonsocket_cluster: true,
    },
};

fn udp_listener(
    spec: &serde_json::Value,
    cx: &BuildContext<'_>,
) -> crate::core::Result<Arc<dyn ListenerProtocol>> {
    let udp: UdpListenerSpec = cx.parse(spec, "spec")?;
    udp.validate()
        .map_err(|e| crate::core::ConfigError::invalid(format!("spec: {e}")))?;
    let dtls = secure::dtls_acceptor(udp.dtls.as_ref(), cx)?;
    Ok(Arc::new(UdpListener { spec: udp, dtls }))
}
