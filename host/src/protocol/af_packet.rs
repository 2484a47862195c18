//! `AF_PACKET`: raw link-layer frames on one interface as a datagram stream (Linux
//! packet sockets; needs CAP_NET_RAW). A listener emits one session for its interface
//! and a new one when that ends; a cluster opens a socket on its interface per session.
//! Frames the socket itself sent (and any other outgoing ones) are not read back.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{
    ChunkRx, ChunkTx, ClusterProtocol, Conn, Framing, Incoming, ListenerContext, ListenerProtocol,
    ListenerTask, Stage, Target,
};

use crate::core::build::{Protocol, typed_cluster, typed_listener};

pub const NAME: &str = "AF_PACKET";
const MAX_FRAME: usize = 65536;

#[derive(Debug, Deserialize, PartialEq, utoipa::ToSchema)]
#[schema(as = PacketSpec)]
pub struct PacketSpec {
    /// The interface to bind, e.g. `eth0`.
    interface: String,
}

/// A packet socket bound to an interface, receiving every protocol.
fn open(interface: &str) -> io::Result<AsyncFd<OwnedFd>> {
    let name = CString::new(interface)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad interface name"))?;
    // SAFETY: plain syscalls; the fd is owned as soon as it exists, the sockaddr is
    // fully initialised before bind reads it.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no interface '{interface}'"),
            ));
        }
        let all = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            all,
        );
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("packet socket on {interface}: {e} (needs CAP_NET_RAW)"),
            ));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = all as u16;
        addr.sll_ifindex = index as i32;
        if libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) < 0
        {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("binding to {interface}: {e}"),
            ));
        }
        // SAFETY: an OwnedFd keeps its descriptor open and the same until dropped.
        AsyncFd::register(fd).map_err(|e| e.into_parts().1)
    }
}

/// The receiving half; dropping it (the session let go) tells a listener to start
/// the next session.
struct FrameRx {
    fd: Arc<AsyncFd<OwnedFd>>,
    _ended: Option<tokio::sync::oneshot::Sender<()>>,
}
struct FrameTx(Arc<AsyncFd<OwnedFd>>);

/// Receives one incoming frame; `None` for a frame that was outgoing.
fn recv_frame(fd: i32, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: recvfrom into a buffer we own, with a correctly sized address.
    unsafe {
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        let n = libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut addr as *mut libc::sockaddr_ll).cast(),
            &mut len,
        );
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((addr.sll_pkttype != libc::PACKET_OUTGOING).then_some(n as usize))
    }
}

#[async_trait]
impl ChunkRx for FrameRx {
    async fn recv(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let mut ready = self.fd.ready(Interest::READABLE).await?;
            match ready.try_io(|fd| recv_frame(fd.as_raw_fd(), &mut buf)) {
                Ok(Ok(Some(n))) => {
                    buf.truncate(n);
                    return Ok(Some(Bytes::from(buf)));
                }
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

#[async_trait]
impl ChunkTx for FrameTx {
    async fn send(&mut self, frame: Bytes) -> io::Result<()> {
        loop {
            let mut ready = self.0.ready(Interest::WRITABLE).await?;
            // SAFETY: send from a buffer that outlives the call.
            let sent = ready.try_io(|fd| {
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match sent {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
    async fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn conn(interface: &str, ended: Option<tokio::sync::oneshot::Sender<()>>) -> io::Result<Conn> {
    let fd = Arc::new(open(interface)?);
    Ok(Conn::chunks(
        Framing::Datagram,
        Box::new(FrameRx {
            fd: fd.clone(),
            _ended: ended,
        }),
        Box::new(FrameTx(fd)),
        interface.to_owned(),
    ))
}

#[async_trait]
impl ListenerProtocol for PacketSpec {
    async fn start(&self, cx: ListenerContext) -> io::Result<ListenerTask> {
        let interface = self.interface.clone();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let first = conn(&interface, Some(done_tx))?;
        let task = tokio::spawn(async move {
            let (mut next, mut done) = (Some(first), done);
            loop {
                let Some(session) = next.take() else { return };
                cx.accept(Incoming {
                    metadata: json!({ "AF_PACKET": { "interface": interface } }),
                    conn: session,
                });
                let _ = done.await;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let (tx, rx) = tokio::sync::oneshot::channel();
                done = rx;
                match conn(&interface, Some(tx)) {
                    Ok(c) => next = Some(c),
                    Err(e) => {
                        tracing::warn!(listener = %cx.name, "AF_PACKET on {interface}: {e}");
                        return;
                    }
                }
            }
        });
        Ok(ListenerTask::new(self.interface.clone(), task))
    }
}

#[async_trait]
impl ClusterProtocol for PacketSpec {
    fn name(&self) -> &'static str {
        NAME
    }
    async fn connect(&self, _target: Target<'_>) -> io::Result<Stage> {
        Ok(Stage::Conn(conn(&self.interface, None)?))
    }
}

/// Raw packets on an interface.
pub const PROTOCOL: Protocol = Protocol {
    name: NAME,
    aliases: &[],
    listener: Some(|spec, cx| {
        cx.reach_host("AF_PACKET takes a raw interface")?;
        typed_listener::<PacketSpec>(spec, cx)
    }),
    cluster: Some(|spec, cx| {
        cx.reach_host("AF_PACKET takes a raw interface")?;
        typed_cluster::<PacketSpec>(spec, cx)
    }),
    listener_schema: Some(crate::core::build::schema::<PacketSpec>),
    cluster_schema: Some(crate::core::build::schema::<PacketSpec>),
    carries: Protocol::CARRIES_NOTHING,
};
