//! Batched datagram I/O on connected UDP sockets: recvmmsg(2) and sendmmsg(2), with
//! UDP GRO on receive and UDP GSO on send where the kernel has them.
//!
//! A batch of received datagrams is copied into one buffer and handed out as slices
//! of it, so a busy relay makes one allocation and two syscalls per batch, not per
//! datagram. The receive slots belong to the worker thread, not to the sessions. With
//! GRO the kernel may hand over several same-size datagrams in one slot; they are split
//! again here, so boundaries are kept either way. A run of same-size datagrams is sent
//! as one GSO super-datagram that the kernel segments.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

use bytes::{Bytes, BytesMut};

/// Datagrams (or GRO super-datagrams) moved per receive syscall at most.
pub const BATCH: usize = 32;
/// The largest UDP payload: a slot per datagram never truncates.
pub const SLOT: usize = 65536;
/// From linux/udp.h (not in the libc crate for glibc targets).
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// The kernel's limit on segments in one GSO send.
const GSO_MAX_SEGMENTS: usize = 64;
/// The largest UDP payload over IPv4, the smaller of the two families.
const GSO_MAX_BYTES: usize = 65507;
/// Room for one control message carrying an int.
const CONTROL: usize = 64;

thread_local! {
    static SLOTS: RefCell<Vec<u8>> = RefCell::new(vec![0; BATCH * SLOT]);
}

/// Asks the kernel to coalesce received datagrams (GRO); kernels without it say no,
/// which is fine.
pub fn enable_gro(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a live socket with a correctly sized int.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            4,
        );
    }
}

/// The GRO segment size in a received message's control data, if any.
///
/// SAFETY: `hdr` must be a header the kernel just filled, with its control buffer.
unsafe fn gro_segment(hdr: &libc::msghdr) -> Option<usize> {
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        let c = unsafe { &*cmsg };
        if c.cmsg_level == libc::SOL_UDP && c.cmsg_type == UDP_GRO {
            let size =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int) };
            return usize::try_from(size).ok().filter(|s| *s > 0);
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    None
}

/// Receives what is waiting on `fd` (at most [`BATCH`] messages) and appends the
/// datagrams to `out`. `WouldBlock` when there is nothing.
pub fn try_recv(fd: RawFd, out: &mut Vec<Bytes>) -> io::Result<usize> {
    SLOTS.with_borrow_mut(|slots| {
        // SAFETY: zeroed iovec/mmsghdr arrays are valid initial values; each header
        // points at one iovec and one control buffer, each iovec at its own slot, all
        // of which outlive the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut control = [[0u8; CONTROL]; BATCH];
        for (i, ((v, h), c)) in iov
            .iter_mut()
            .zip(hdrs.iter_mut())
            .zip(control.iter_mut())
            .enumerate()
        {
            v.iov_base = slots[i * SLOT..].as_mut_ptr().cast();
            v.iov_len = SLOT;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = c.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = CONTROL as _;
        }
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let msgs = &hdrs[..n as usize];
        let total: usize = msgs.iter().map(|h| h.msg_len as usize).sum();
        let mut joined = BytesMut::with_capacity(total);
        for (i, h) in msgs.iter().enumerate() {
            joined.extend_from_slice(&slots[i * SLOT..i * SLOT + h.msg_len as usize]);
        }
        let joined = joined.freeze();
        let before = out.len();
        let mut at = 0;
        for h in msgs {
            let len = h.msg_len as usize;
            // SAFETY: the kernel filled this header and its control buffer above.
            let segment = unsafe { gro_segment(&h.msg_hdr) }.unwrap_or(len).max(1);
            let end = at + len;
            while at < end {
                let next = (at + segment).min(end);
                out.push(joined.slice(at..next));
                at = next;
            }
            if len == 0 {
                out.push(Bytes::new());
            }
        }
        Ok(out.len() - before)
    })
}

/// How many of `datagrams` (from the start) can go as one GSO send: the same size,
/// the last one possibly shorter.
fn gso_run(datagrams: &[Bytes]) -> usize {
    let Some(first) = datagrams.first() else {
        return 0;
    };
    let size = first.len();
    if size == 0 {
        return 0;
    }
    let mut total = 0;
    let mut n = 0;
    for d in datagrams.iter().take(GSO_MAX_SEGMENTS) {
        if d.len() > size || total + d.len() > GSO_MAX_BYTES {
            break;
        }
        total += d.len();
        n += 1;
        if d.len() < size {
            break;
        }
    }
    n
}

fn send_gso(fd: RawFd, datagrams: &[Bytes]) -> io::Result<usize> {
    let segment = datagrams[0].len() as u16;
    let iov: Vec<libc::iovec> = datagrams
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut control = [0u8; CONTROL];
    // SAFETY: the header points at live iovecs and a control buffer large enough for
    // one u16 control message; the kernel only reads them.
    unsafe {
        let mut hdr: libc::msghdr = std::mem::zeroed();
        hdr.msg_iov = iov.as_ptr() as *mut libc::iovec;
        hdr.msg_iovlen = iov.len() as _;
        hdr.msg_control = control.as_mut_ptr().cast();
        hdr.msg_controllen = libc::CMSG_SPACE(2) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, segment);
        if libc::sendmsg(fd, &hdr, libc::MSG_DONTWAIT) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(datagrams.len())
}

fn send_each(fd: RawFd, datagrams: &[Bytes]) -> io::Result<usize> {
    let n = datagrams.len().min(BATCH);
    // SAFETY: as in `try_recv`; the iovecs point into `datagrams`, which the kernel
    // only reads and which outlive the call.
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (d, (v, h)) in datagrams[..n]
        .iter()
        .zip(iov.iter_mut().zip(hdrs.iter_mut()))
    {
        v.iov_base = d.as_ptr() as *mut libc::c_void;
        v.iov_len = d.len();
        h.msg_hdr.msg_iov = v;
        h.msg_hdr.msg_iovlen = 1;
    }
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

/// Sends as many of `datagrams` as the socket takes now; returns how many. A run of
/// same-size datagrams goes as one GSO send while `gso` holds; a kernel or device that
/// refuses GSO turns it off for this socket.
pub fn try_send(fd: RawFd, datagrams: &[Bytes], gso: &mut bool) -> io::Result<usize> {
    if *gso {
        let run = gso_run(datagrams);
        if run >= 2 {
            match send_gso(fd, &datagrams[..run]) {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    ) =>
                {
                    *gso = false;
                }
                other => return other,
            }
        }
    }
    send_each(fd, datagrams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        (a, b)
    }

    fn transfer(datagrams: &[Bytes], gro: bool) -> Vec<Bytes> {
        let (a, b) = pair();
        if gro {
            enable_gro(b.as_raw_fd());
        }
        let mut gso = true;
        let mut sent = 0;
        while sent < datagrams.len() {
            sent += try_send(a.as_raw_fd(), &datagrams[sent..], &mut gso).unwrap();
        }
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < datagrams.len() && start.elapsed().as_secs() < 5 {
            match try_recv(b.as_raw_fd(), &mut got) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            matches!(try_recv(b.as_raw_fd(), &mut got), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        );
        got
    }

    #[test]
    fn mixed_sizes_keep_their_boundaries() {
        let datagrams: Vec<Bytes> = (0..40u8)
            .map(|i| Bytes::from(vec![i; 1 + i as usize * 100]))
            .collect();
        assert_eq!(transfer(&datagrams, false), datagrams);
        assert_eq!(transfer(&datagrams, true), datagrams);
    }

    #[test]
    fn same_size_runs_go_as_gso_and_come_back_split() {
        let mut datagrams: Vec<Bytes> = (0..100u8).map(|i| Bytes::from(vec![i; 100])).collect();
        datagrams.push(Bytes::from_static(b"short"));
        datagrams.push(Bytes::from(vec![9u8; 1400]));
        assert_eq!(gso_run(&datagrams), 64);
        assert_eq!(gso_run(&datagrams[64..]), 37);
        assert_eq!(transfer(&datagrams, false), datagrams);
        assert_eq!(transfer(&datagrams, true), datagrams);
    }
}
