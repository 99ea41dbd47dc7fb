//! `recv` and `send` flags (`MSG_PEEK`, `MSG_TRUNC`, `MSG_ERRQUEUE`,
//! `MSG_OOB`, ...) on two stacks over `netdev::Link`, and the same calls on
//! the kernel's TCP over 127.0.0.1, which shows that the errno and counts
//! the stack gives are Linux's.

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};

use eventpoll::{Errno, Events};
use netstack::{
    AF_INET, MSG_DONTWAIT, MSG_ERRQUEUE, MSG_MORE, MSG_NOSIGNAL, MSG_OOB, MSG_PEEK, MSG_TRUNC,
    MSG_WAITALL, SHUT_WR, SO_ERROR, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET,
};
use smoltcp::time::Duration;
use util::{Pair, ready, watch};

/// `len` bytes counting up from `start` (mod 251, so runs do not line up
/// with the ring's size).
fn pattern(start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn flag_values_are_linux_values() {
    assert_eq!(MSG_OOB, libc::MSG_OOB);
    assert_eq!(MSG_PEEK, libc::MSG_PEEK);
    assert_eq!(MSG_TRUNC, libc::MSG_TRUNC);
    assert_eq!(MSG_DONTWAIT, libc::MSG_DONTWAIT);
    assert_eq!(MSG_WAITALL, libc::MSG_WAITALL);
    assert_eq!(MSG_ERRQUEUE, libc::MSG_ERRQUEUE);
    assert_eq!(MSG_NOSIGNAL, libc::MSG_NOSIGNAL);
    assert_eq!(MSG_MORE, libc::MSG_MORE);
}

#[test]
fn peek_leaves_the_data_queued_and_in_raised() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    let ep = watch(&mut p.server, s, Events::IN);
    p.client.send(c, b"hello world").unwrap();
    p.settle();
    let mut buf = [0u8; 5];
    assert_eq!(p.server.recv_flags(s, &mut buf, MSG_PEEK), Ok(5));
    assert_eq!(&buf, b"hello");
    assert_eq!(p.server.recv_flags(s, &mut buf, MSG_PEEK), Ok(5));
    assert_eq!(&buf, b"hello", "a second peek sees the same bytes");
    assert_eq!(ready(&mut p.server, ep), vec![(s, Events::IN)]);
    let mut all = [0u8; 32];
    assert_eq!(p.server.recv(s, &mut all), Ok(11));
    assert_eq!(&all[..11], b"hello world");
    assert_eq!(ready(&mut p.server, ep), vec![]);
    assert_eq!(
        p.server.recv_flags(s, &mut all, MSG_PEEK),
        Err(Errno::EAGAIN)
    );
    p.client.shutdown(c, SHUT_WR).unwrap();
    p.settle();
    assert_eq!(p.server.recv_flags(s, &mut all, MSG_PEEK), Ok(0), "EOF");
}

/// A connection whose server-side receive ring (1 KiB) has wrapped: 700
/// bytes were sent and 600 of them read, then `second` more were queued
/// behind the 100 left, from the ring's offset 700 past its end. Queued:
/// `pattern(600, 100 + second)`.
fn wrapped(second: usize) -> (Pair, i32, i32) {
    let mut p = Pair::with_buffers(1024);
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    p.client.send(c, &pattern(0, 700)).unwrap();
    p.settle();
    let mut first = vec![0u8; 600];
    assert_eq!(p.server.recv(s, &mut first), Ok(600));
    p.settle();
    assert_eq!(p.client.send(c, &pattern(700, second)), Ok(second));
    p.settle();
    let mut probe = vec![0u8; 100 + second];
    assert_eq!(
        p.server.recv_flags(s, &mut probe, MSG_PEEK | MSG_TRUNC),
        Ok(100 + second),
        "the second run arrived"
    );
    (p, c, s)
}

#[test]
fn peek_reads_across_the_end_of_the_receive_ring() {
    let (mut p, _c, s) = wrapped(600);
    let mut peeked = vec![0u8; 700];
    assert_eq!(p.server.recv_flags(s, &mut peeked, MSG_PEEK), Ok(700));
    assert_eq!(peeked, pattern(600, 700));
    let mut read = vec![0u8; 700];
    assert_eq!(p.server.recv(s, &mut read), Ok(700));
    assert_eq!(read, peeked);
}

#[test]
fn trunc_discards_without_copying_across_the_end_of_the_ring() {
    let (mut p, c, s) = wrapped(600);
    let mut untouched = vec![0xEEu8; 500];
    assert_eq!(
        p.server.recv_flags(s, &mut untouched, MSG_PEEK | MSG_TRUNC),
        Ok(500),
        "peek and trunc count what is there up to the length"
    );
    assert_eq!(p.server.recv_flags(s, &mut untouched, MSG_TRUNC), Ok(500));
    assert!(untouched.iter().all(|&b| b == 0xEE), "nothing was copied");
    let mut rest = vec![0u8; 600];
    assert_eq!(p.server.recv(s, &mut rest), Ok(200));
    assert_eq!(&rest[..200], &pattern(1100, 200)[..]);
    assert_eq!(
        p.server.recv_flags(s, &mut rest, MSG_TRUNC),
        Err(Errno::EAGAIN)
    );
    // The discarded bytes freed their room: the window is open again.
    p.settle();
    assert_eq!(p.client.send(c, &pattern(0, 1000)), Ok(1000));
    p.settle();
    assert_eq!(p.server.recv_flags(s, &mut rest, MSG_TRUNC), Ok(600));
    assert_eq!(p.server.recv(s, &mut rest), Ok(400));
    assert_eq!(&rest[..400], &pattern(600, 400)[..]);
}

#[test]
fn errqueue_oob_and_bad_descriptors_give_linux_errno() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    p.client.send(c, b"data").unwrap();
    p.settle();
    let mut buf = [0u8; 8];
    let st = &mut p.server;
    assert_eq!(st.recv_flags(s, &mut buf, MSG_ERRQUEUE), Err(Errno::EAGAIN));
    assert_eq!(st.recv_flags(s, &mut buf, MSG_OOB), Err(Errno::EINVAL));
    assert_eq!(st.recv_flags(l, &mut buf, MSG_OOB), Err(Errno::ENOTCONN));
    assert_eq!(st.recv_flags(l, &mut buf, MSG_ERRQUEUE), Err(Errno::EAGAIN));
    let fresh = st.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0).unwrap();
    assert_eq!(st.recv_flags(fresh, &mut buf, MSG_OOB), Err(Errno::EINVAL));
    assert_eq!(
        st.recv_flags(fresh, &mut buf, MSG_PEEK),
        Err(Errno::ENOTCONN)
    );
    assert_eq!(st.send_flags(s, b"urgent", MSG_OOB), Err(Errno::EOPNOTSUPP));
    assert_eq!(st.recv_flags(99, &mut buf, MSG_PEEK), Err(Errno::EBADF));
    assert_eq!(st.send_flags(99, b"x", MSG_DONTWAIT), Err(Errno::EBADF));
    let efd = st.eventfd(0, 0).unwrap();
    assert_eq!(st.recv_flags(efd, &mut buf, MSG_PEEK), Err(Errno::ENOTSOCK));
    assert_eq!(st.send_flags(efd, b"x", 0), Err(Errno::ENOTSOCK));
    // None of that lost the queued data, and the urgent send sent nothing.
    assert_eq!(st.recv(s, &mut buf), Ok(4));
    assert_eq!(&buf[..4], b"data");
    p.settle();
    assert_eq!(p.client.recv(c, &mut buf), Err(Errno::EAGAIN));
}

#[test]
fn send_flags_that_change_nothing_deliver_the_data() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    let flags = MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE;
    assert_eq!(p.client.send_flags(c, b"one ", flags), Ok(4));
    assert_eq!(p.client.send_flags(c, b"two", MSG_WAITALL), Ok(3));
    let mut buf = [0u8; 16];
    // Nagle holds the second piece until the first is acknowledged.
    p.run_until(Duration::from_secs(1), |p| {
        p.server.recv_flags(s, &mut [0; 16], MSG_PEEK | MSG_TRUNC) == Ok(7)
    });
    assert_eq!(
        p.server.recv_flags(s, &mut buf, MSG_DONTWAIT | MSG_WAITALL),
        Ok(7)
    );
    assert_eq!(&buf[..7], b"one two");
    p.client.shutdown(c, SHUT_WR).unwrap();
    assert_eq!(
        p.client.send_flags(c, b"late", MSG_NOSIGNAL),
        Err(Errno::EPIPE)
    );
}

#[test]
fn peek_reports_and_clears_a_pending_reset() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    p.client.send(c, b"unread").unwrap();
    p.settle();
    p.server.close(s).unwrap();
    p.settle();
    let mut buf = [0u8; 8];
    assert_eq!(
        p.client.recv_flags(c, &mut buf, MSG_PEEK),
        Err(Errno::ECONNRESET)
    );
    assert_eq!(p.client.getsockopt(c, SOL_SOCKET, SO_ERROR), Ok(0));
}

// ---- the same calls on the kernel ------------------------------------

/// `-errno` of the last call, or its result.
fn sys(r: isize) -> Result<usize, Errno> {
    if r < 0 {
        Err(Errno(
            std::io::Error::last_os_error().raw_os_error().unwrap(),
        ))
    } else {
        Ok(r as usize)
    }
}

fn krecv(fd: i32, buf: &mut [u8], flags: i32) -> Result<usize, Errno> {
    // SAFETY: `buf` is live and writable for its length.
    #[allow(unsafe_code)]
    sys(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) })
}

fn ksend(fd: i32, buf: &[u8], flags: i32) -> Result<usize, Errno> {
    // SAFETY: `buf` is live and readable for its length.
    #[allow(unsafe_code)]
    sys(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) })
}

/// A connected kernel pair over 127.0.0.1: (listener, client, server),
/// the client non-blocking. The std types own the descriptors.
fn kernel_pair() -> (
    std::net::TcpListener,
    std::net::TcpStream,
    std::net::TcpStream,
) {
    let l = std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    c.set_nonblocking(true).unwrap();
    s.set_nonblocking(true).unwrap();
    l.set_nonblocking(true).unwrap();
    (l, c, s)
}

/// Waits (bounded) until `fd` has `len` bytes queued to read.
fn kernel_wait_queued(fd: i32, len: usize) {
    let mut probe = vec![0u8; len];
    for _ in 0..2000 {
        if krecv(fd, &mut probe, MSG_PEEK) == Ok(len) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("{len} bytes never arrived");
}

#[test]
fn the_kernel_gives_the_same_errno_and_counts() {
    use std::os::fd::AsRawFd;
    let (l, c, s) = kernel_pair();
    let (l, c, s) = (l.as_raw_fd(), c.as_raw_fd(), s.as_raw_fd());
    assert_eq!(ksend(c, &pattern(0, 300), 0), Ok(300));
    kernel_wait_queued(s, 300);
    let mut buf = [0u8; 8];
    assert_eq!(krecv(s, &mut buf, MSG_ERRQUEUE), Err(Errno::EAGAIN));
    assert_eq!(krecv(s, &mut buf, MSG_OOB), Err(Errno::EINVAL));
    assert_eq!(krecv(l, &mut buf, MSG_OOB), Err(Errno::ENOTCONN));
    assert_eq!(krecv(l, &mut buf, MSG_ERRQUEUE), Err(Errno::EAGAIN));
    // SAFETY: plain socket(2); the descriptor is closed below.
    #[allow(unsafe_code)]
    let fresh = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fresh >= 0);
    assert_eq!(krecv(fresh, &mut buf, MSG_OOB), Err(Errno::EINVAL));
    assert_eq!(krecv(fresh, &mut buf, MSG_PEEK), Err(Errno::ENOTCONN));
    // SAFETY: `fresh` is ours and closed once.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(fresh)
    };
    let mut big = vec![0xEEu8; 100];
    assert_eq!(krecv(s, &mut big, MSG_PEEK | MSG_TRUNC), Ok(100));
    assert_eq!(krecv(s, &mut big, MSG_TRUNC), Ok(100));
    assert!(big.iter().all(|&b| b == 0xEE), "nothing was copied");
    let mut rest = vec![0u8; 300];
    assert_eq!(krecv(s, &mut rest, MSG_PEEK), Ok(200));
    assert_eq!(krecv(s, &mut rest, 0), Ok(200));
    assert_eq!(&rest[..200], &pattern(100, 200)[..]);
    assert_eq!(krecv(s, &mut rest, MSG_TRUNC), Err(Errno::EAGAIN));
}
