//! Batched datagram I/O: recvmmsg(2) and sendmmsg(2) on connected UDP sockets.
//!
//! A batch of received datagrams is copied into one buffer and handed out as slices
//! of it, so a busy relay makes one allocation and two syscalls per batch, not per
//! datagram. The receive slots belong to the worker thread, not to the sessions.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

use bytes::{Bytes, BytesMut};

/// Datagrams moved per syscall at most.
pub const BATCH: usize = 32;
/// The largest UDP payload: a slot per datagram never truncates.
pub const SLOT: usize = 65536;

thread_local! {
    static SLOTS: RefCell<Vec<u8>> = RefCell::new(vec![0; BATCH * SLOT]);
}

/// Receives the datagrams waiting on `fd` (at most [`BATCH`]) and appends them to
/// `out`. `WouldBlock` when there are none.
pub fn try_recv(fd: RawFd, out: &mut Vec<Bytes>) -> io::Result<usize> {
    SLOTS.with_borrow_mut(|slots| {
        // SAFETY: zeroed iovec/mmsghdr arrays are valid initial values; each header
        // points at one iovec, each iovec at its own slot of `slots`, all of which
        // outlive the call.
        let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, (v, h)) in iov.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            v.iov_base = slots[i * SLOT..].as_mut_ptr().cast();
            v.iov_len = SLOT;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
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
        let n = n as usize;
        let total: usize = hdrs[..n].iter().map(|h| h.msg_len as usize).sum();
        let mut joined = BytesMut::with_capacity(total);
        for (i, h) in hdrs[..n].iter().enumerate() {
            joined.extend_from_slice(&slots[i * SLOT..i * SLOT + h.msg_len as usize]);
        }
        let joined = joined.freeze();
        let mut at = 0;
        for h in &hdrs[..n] {
            let len = h.msg_len as usize;
            out.push(joined.slice(at..at + len));
            at += len;
        }
        Ok(n)
    })
}

/// Sends as many of `datagrams` as the socket takes now; returns how many.
pub fn try_send(fd: RawFd, datagrams: &[Bytes]) -> io::Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_and_comes_back_whole() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        let datagrams: Vec<Bytes> = (0..40u8)
            .map(|i| Bytes::from(vec![i; 1 + i as usize * 100]))
            .collect();
        let mut sent = 0;
        while sent < datagrams.len() {
            sent += try_send(a.as_raw_fd(), &datagrams[sent..]).unwrap();
        }
        let mut got = Vec::new();
        while got.len() < datagrams.len() {
            match try_recv(b.as_raw_fd(), &mut got) {
                Ok(n) => assert!(n <= BATCH),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, datagrams);
        assert!(
            matches!(try_recv(b.as_raw_fd(), &mut got), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        );
    }
}
