//! `SCTP`: associations carried in UDP datagrams (RFC 6951 encapsulation), driven in
//! userspace by `sctp-proto`, since the kernel here has no SCTP.
//!
//! A datagram stream: every SCTP user message, on whichever SCTP stream it arrives, is
//! one chunk; chunks are sent as messages on stream 0. The listener binds the UDP
//! encapsulation `port` and emits a session per association; a cluster opens its own
//! UDP socket and association per session. One task drives each endpoint: it feeds
//! datagrams and timers to the state machines and carries messages to and from the
//! sessions.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use sctp_proto::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    Payload, PayloadProtocolIdentifier, ServerConfig, StreamEvent,
};
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::net::{self};
use super::{
    ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Incoming, ListenerContext, ListenerProtocol,
    ListenerTask, Stage, Target,
};

use crate::core::build::{Protocol, typed_cluster, typed_listener};

pub const NAME: &str = "SCTP";
/// Messages queued towards one session before the association stops reading.
const SESSION_QUEUE: usize = 256;
const MAX_DATAGRAM: usize = 65536;
/// The stream outgoing messages use.
const STREAM: u16 = 0;

enum Command {
    Send(AssociationHandle, Bytes),
    Close(AssociationHandle),
}

/// What a new association turns into once it is established.
enum Waiting {
    /// Server side: a session for the listener.
    Accept,
    /// Client side: the cluster's connect call.
    Connect(oneshot::Sender<io::Result<Conn>>),
}

struct Assoc {
    inner: Association,
    to_session: Option<mpsc::Sender<Bytes>>,
    waiting: Option<Waiting>,
}

/// Receives a session's messages; the association closes when the session lets go.
struct SctpRx {
    rx: mpsc::Receiver<Bytes>,
    handle: AssociationHandle,
    commands: mpsc::Sender<Command>,
}

impl Drop for SctpRx {
    fn drop(&mut self) {
        let _ = self.commands.try_send(Command::Close(self.handle));
    }
}

#[async_trait]
impl ChunkRx for SctpRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        Ok(self.rx.recv().await)
    }
}

struct SctpTx {
    handle: AssociationHandle,
    commands: mpsc::Sender<Command>,
}

#[async_trait]
impl ChunkTx for SctpTx {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        self.commands
            .send(Command::Send(self.handle, chunk))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the SCTP association is gone"))
    }
    async fn close(&mut self) -> io::Result<()> {
        let _ = self.commands.send(Command::Close(self.handle)).await;
        Ok(())
    }
}

/// Drives one endpoint (one UDP socket) and its associations.
struct Driver {
    socket: Arc<UdpSocket>,
    endpoint: Endpoint,
    assocs: HashMap<AssociationHandle, Assoc>,
    commands: mpsc::Receiver<Command>,
    commands_tx: mpsc::Sender<Command>,
    /// Server side: where established associations go; client side: `None`, and the
    /// driver ends with its last association.
    accept: Option<Box<dyn Fn(Conn, SocketAddr) + Send + Sync>>,
}

impl Driver {
    fn new(
        socket: Arc<UdpSocket>,
        server: bool,
        accept: Option<Box<dyn Fn(Conn, SocketAddr) + Send + Sync>>,
    ) -> Driver {
        let server_config = server.then(|| Arc::new(ServerConfig::new()));
        let (commands_tx, commands) = mpsc::channel(1024);
        Driver {
            socket,
            endpoint: Endpoint::new(Arc::new(EndpointConfig::new()), server_config),
            assocs: HashMap::new(),
            commands,
            commands_tx,
            accept,
        }
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            self.flush().await;
            if self.accept.is_none() && self.assocs.is_empty() {
                return;
            }
            let deadline = self
                .assocs
                .values()
                .filter_map(|a| a.inner.poll_timeout())
                .min();
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.datagram(from, Bytes::copy_from_slice(&buf[..n])),
                    Err(e) => tracing::debug!("SCTP socket: {e}"),
                },
                Some(command) = self.commands.recv() => self.command(command),
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                    let now = Instant::now();
                    for a in self.assocs.values_mut() {
                        if a.inner.poll_timeout().is_some_and(|t| t <= now) {
                            a.inner.handle_timeout(now);
                        }
                    }
                }
            }
        }
    }

    fn datagram(&mut self, from: SocketAddr, data: Bytes) {
        match self.endpoint.handle(Instant::now(), from, None, None, data) {
            Some((handle, DatagramEvent::NewAssociation(inner))) => {
                self.assocs.insert(
                    handle,
                    Assoc {
                        inner,
                        to_session: None,
                        waiting: Some(Waiting::Accept),
                    },
                );
            }
            Some((handle, DatagramEvent::AssociationEvent(event))) => {
                if let Some(a) = self.assocs.get_mut(&handle) {
                    a.inner.handle_event(event);
                }
            }
            None => {}
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Send(handle, chunk) => {
                let Some(a) = self.assocs.get_mut(&handle) else {
                    return;
                };
                if chunk.is_empty() {
                    return;
                }
                let written = match a.inner.stream(STREAM) {
                    Ok(mut s) => s.write_sctp(&chunk, PayloadProtocolIdentifier::Binary),
                    Err(_) => a
                        .inner
                        .open_stream(STREAM, PayloadProtocolIdentifier::Binary)
                        .and_then(|mut s| s.write_sctp(&chunk, PayloadProtocolIdentifier::Binary)),
                };
                if let Err(e) = written {
                    tracing::debug!("SCTP write: {e}");
                }
            }
            Command::Close(handle) => {
                if let Some(a) = self.assocs.get_mut(&handle) {
                    a.to_session = None;
                    let _ = a.inner.shutdown();
                }
            }
        }
    }

    /// Sends what the state machines want sent and hands their events on.
    async fn flush(&mut self) {
        let now = Instant::now();
        // Answers the endpoint gives without an association (stateless replies).
        while let Some(t) = self.endpoint.poll_transmit() {
            self.send(t).await;
        }
        let mut gone = Vec::new();
        let handles: Vec<AssociationHandle> = self.assocs.keys().copied().collect();
        for handle in handles {
            let Some(a) = self.assocs.get_mut(&handle) else {
                continue;
            };
            let mut transmits = Vec::new();
            while let Some(t) = a.inner.poll_transmit(now) {
                transmits.push(t);
            }
            for t in transmits {
                self.send(t).await;
            }
            let Some(a) = self.assocs.get_mut(&handle) else {
                continue;
            };
            while let Some(event) = a.inner.poll_endpoint_event() {
                if let Some(back) = self.endpoint.handle_event(handle, event) {
                    a.inner.handle_event(back);
                }
            }
            let mut events = Vec::new();
            while let Some(event) = a.inner.poll() {
                events.push(event);
            }
            for event in events {
                match event {
                    Event::Connected => self.established(handle),
                    Event::HandshakeFailed { reason } => {
                        if let Some(Waiting::Connect(reply)) =
                            self.assocs.get_mut(&handle).and_then(|a| a.waiting.take())
                        {
                            let _ = reply.send(Err(io::Error::new(
                                io::ErrorKind::ConnectionRefused,
                                format!("SCTP handshake: {reason}"),
                            )));
                        }
                        gone.push(handle);
                    }
                    Event::AssociationLost { .. } => gone.push(handle),
                    Event::Stream(StreamEvent::Readable { id })
                    | Event::Stream(StreamEvent::Opened { id }) => {
                        self.read(handle, id);
                    }
                    _ => {}
                }
                if !self.assocs.contains_key(&handle) {
                    break;
                }
            }
            let Some(a) = self.assocs.get_mut(&handle) else {
                continue;
            };
            // Drain the accept queue so that peer-opened streams are read.
            while a.inner.accept_stream().is_some() {}
            // A server's association stays "closed" until the cookie echo: only a drained
            // one is finished with.
            if a.inner.is_drained() {
                gone.push(handle);
            }
        }
        for handle in gone {
            self.assocs.remove(&handle);
        }
    }

    async fn send(&self, t: sctp_proto::Transmit) {
        let remote = t.remote;
        let Payload::RawEncode(packets) = t.payload else {
            return;
        };
        for packet in packets {
            let _ = self.socket.send_to(&packet, remote).await;
        }
    }

    fn read(&mut self, handle: AssociationHandle, id: u16) {
        let Some(a) = self.assocs.get_mut(&handle) else {
            return;
        };
        let Ok(mut stream) = a.inner.stream(id) else {
            return;
        };
        while let Ok(Some(chunks)) = stream.read_sctp() {
            let mut message = vec![0u8; chunks.len()];
            if chunks.read(&mut message).is_ok()
                && let Some(to) = &a.to_session
            {
                // A session that does not keep up loses messages, as a datagram socket would.
                let _ = to.try_send(Bytes::from(message));
            }
        }
    }

    fn established(&mut self, handle: AssociationHandle) {
        let Some(a) = self.assocs.get_mut(&handle) else {
            return;
        };
        let (to_session, rx) = mpsc::channel(SESSION_QUEUE);
        a.to_session = Some(to_session);
        let remote = a.inner.remote_addr();
        let conn = Conn::chunks(
            Framing::Datagram,
            Box::new(SctpRx {
                rx,
                handle,
                commands: self.commands_tx.clone(),
            }),
            Box::new(SctpTx {
                handle,
                commands: self.commands_tx.clone(),
            }),
            remote.to_string(),
        );
        match a.waiting.take() {
            Some(Waiting::Connect(reply)) => {
                let _ = reply.send(Ok(conn));
            }
            Some(Waiting::Accept) => {
                if let Some(accept) = &self.accept {
                    accept(conn, remote);
                }
            }
            None => {}
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SctpListenerSpec {
    /// The UDP encapsulation port.
    port: u16,
    #[serde(default)]
    address: Option<String>,
}

#[async_trait]
impl ListenerProtocol for SctpListenerSpec {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let addr = net::bind_addr(self.address.as_deref(), self.port)?;
        let socket = Arc::new(UdpSocket::bind(addr).await.map_err(|e| net::at(addr, e))?);
        let local = socket.local_addr()?;
        let accept = move |conn: Conn, remote: SocketAddr| {
            cx.accept(Incoming {
                metadata: net::metadata("SCTP", local, remote),
                conn,
            });
        };
        let driver = Driver::new(socket, true, Some(Box::new(accept)));
        Ok(ListenerTask::new(
            local.to_string(),
            tokio::spawn(driver.run()),
        ))
    }
}

/// `port` and `bind`, as every socket cluster.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct SctpClusterSpec(net::SocketClusterSpec);

#[async_trait]
impl ClusterProtocol for SctpClusterSpec {
    fn name(&self) -> &'static str {
        NAME
    }
    fn needs_endpoint(&self) -> bool {
        true
    }
    async fn connect(&self, target: Target<'_>) -> io::Result<Stage> {
        let (remote, local) = self.0.addresses(&target).await?;
        let socket = Arc::new(
            UdpSocket::bind(local)
                .await
                .map_err(|e| net::at(local, e))?,
        );
        let mut driver = Driver::new(socket, false, None);
        let (handle, inner) = driver
            .endpoint
            .connect(ClientConfig::new(), remote)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("SCTP connect to {remote}: {e}"),
                )
            })?;
        let (reply, connected) = oneshot::channel();
        driver.assocs.insert(
            handle,
            Assoc {
                inner,
                to_session: None,
                waiting: Some(Waiting::Connect(reply)),
            },
        );
        tokio::spawn(driver.run());
        let conn = connected.await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("SCTP association to {remote} ended during setup"),
            )
        })??;
        Ok(Stage::Conn(conn))
    }
}

/// SCTP, in userspace over UDP.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(typed_listener::<SctpListenerSpec>),
    cluster: Some(typed_cluster::<SctpClusterSpec>),
    listener_schema: Some(crate::core::build::schema::<SctpListenerSpec>),
    cluster_schema: Some(crate::core::build::schema::<net::SocketClusterSpec>),
    carries: Protocol::CARRIES_NOTHING,
};
