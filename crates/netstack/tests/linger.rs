//! `SO_LINGER` on two stacks over `netdev::Link`: a zero time makes the
//! last close a reset (no FIN, no TIME-WAIT), accepted sockets inherit the
//! option, the run-to-completion close never blocks, and the option's
//! errno; then the same on the kernel's TCP over 127.0.0.1, which shows
//! that what the peer sees is Linux's. (The threaded mode's waiting close
//! is tested in `threaded.rs`.)

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use eventpoll::{Errno, Events};
use netstack::{AF_INET, SO_LINGER, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET};
use util::{Pair, ready, watch};

#[test]
fn so_linger_value_is_linux_value() {
    assert_eq!(SO_LINGER, libc::SO_LINGER);
}

#[test]
fn zero_linger_close_resets_the_peer_and_leaves_no_time_wait() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    let ep = watch(&mut p.server, s, Events::IN | Events::RDHUP);
    p.client.setsockopt_linger(c, Some(Duration::ZERO)).unwrap();
    p.client.close(c).unwrap();
    p.settle();
    // The peer sees a reset: ERR and HUP with IN and RDHUP, as Linux's
    // `tcp_poll` gives after one.
    assert_eq!(
        ready(&mut p.server, ep),
        vec![(s, Events::IN | Events::RDHUP | Events::ERR | Events::HUP)]
    );
    let mut buf = [0u8; 4];
    assert_eq!(p.server.recv(s, &mut buf), Err(Errno::ECONNRESET));
    let stats = p.client.stats();
    assert_eq!(stats.time_wait, 0, "an abortive close skips TIME-WAIT");
    assert_eq!(stats.connections, 0);
}

#[test]
fn default_close_sends_a_fin_and_keeps_time_wait() {
    // The contrast to the test above: without the option the peer reads
    // end of stream and the closing side keeps the tuple in TIME-WAIT.
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    p.client.close(c).unwrap();
    p.settle();
    let mut buf = [0u8; 4];
    assert_eq!(p.server.recv(s, &mut buf), Ok(0));
    p.server.close(s).unwrap();
    p.settle();
    assert_eq!(p.client.stats().time_wait, 1);
}

#[test]
fn accepted_sockets_inherit_linger_from_their_listener() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    p.server.setsockopt_linger(l, Some(Duration::ZERO)).unwrap();
    let (c, s) = p.connected(l, 80);
    assert_eq!(p.server.getsockopt_linger(s), Ok(Some(Duration::ZERO)));
    assert_eq!(p.client.getsockopt_linger(c), Ok(None));
    p.server.close(s).unwrap();
    p.settle();
    let mut buf = [0u8; 4];
    assert_eq!(p.client.recv(c, &mut buf), Err(Errno::ECONNRESET));
}

#[test]
fn zero_linger_after_shutdown_resets_in_fin_wait_2() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    p.client.shutdown(c, netstack::SHUT_WR).unwrap();
    p.settle();
    let mut buf = [0u8; 4];
    assert_eq!(p.server.recv(s, &mut buf), Ok(0), "the FIN came");
    p.client.setsockopt_linger(c, Some(Duration::ZERO)).unwrap();
    p.client.close(c).unwrap();
    p.settle();
    // The server's half is still open: the reset reaches it.
    assert_eq!(p.server.send(s, b"late"), Err(Errno::ECONNRESET));
    assert_eq!(p.client.stats().time_wait, 0);
}

#[test]
fn a_linger_time_does_not_block_the_run_to_completion_close() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    p.client
        .setsockopt_linger(c, Some(Duration::from_secs(30)))
        .unwrap();
    p.client.send(c, b"last words").unwrap();
    // Returns at once (the stack is not even polled), and the data and
    // the FIN still go out in the background.
    p.client.close(c).unwrap();
    assert_eq!(p.client.stats().fds, 0);
    p.settle();
    let mut buf = [0u8; 32];
    assert_eq!(p.server.recv(s, &mut buf), Ok(10));
    assert_eq!(&buf[..10], b"last words");
    assert_eq!(p.server.recv(s, &mut buf), Ok(0));
}

#[test]
fn linger_option_values_and_errno() {
    let mut p = Pair::new();
    let fd = p
        .client
        .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
        .unwrap();
    assert_eq!(p.client.getsockopt_linger(fd), Ok(None), "off by default");
    p.client
        .setsockopt_linger(fd, Some(Duration::from_millis(2700)))
        .unwrap();
    assert_eq!(
        p.client.getsockopt_linger(fd),
        Ok(Some(Duration::from_secs(2))),
        "whole seconds, as Linux keeps them"
    );
    p.client.setsockopt_linger(fd, None).unwrap();
    assert_eq!(p.client.getsockopt_linger(fd), Ok(None));
    // The option is a struct: an int value is refused.
    assert_eq!(
        p.client.setsockopt(fd, SOL_SOCKET, SO_LINGER, 1),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        p.client.getsockopt(fd, SOL_SOCKET, SO_LINGER),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        p.client.setsockopt_linger(999, Some(Duration::ZERO)),
        Err(Errno::EBADF)
    );
    assert_eq!(p.client.getsockopt_linger(999), Err(Errno::EBADF));
    let efd = p.client.eventfd(0, 0).unwrap();
    assert_eq!(p.client.getsockopt_linger(efd), Err(Errno::ENOTSOCK));
    assert_eq!(p.client.setsockopt_linger(efd, None), Err(Errno::ENOTSOCK));
    // A socket that never connected closes without fuss.
    p.client
        .setsockopt_linger(fd, Some(Duration::ZERO))
        .unwrap();
    p.client.close(fd).unwrap();
    p.client.close(efd).unwrap();
    p.settle();
    let stats = p.client.stats();
    assert_eq!((stats.fds, stats.sockets, stats.connections), (0, 0, 0));
}

// ---- the same on the kernel ------------------------------------------

/// The kernel's `setsockopt(fd, SOL_SOCKET, SO_LINGER, value)` with the
/// size of `T`: the errno on failure.
fn kernel_set_linger<T>(fd: i32, value: &T) -> Result<(), i32> {
    // SAFETY: `value` is live for the call and its size is passed.
    #[allow(unsafe_code)]
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[test]
fn the_kernel_resets_the_peer_on_a_zero_linger_close() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let l = std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut s, _) = l.accept().unwrap();
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    assert_eq!(kernel_set_linger(c.as_raw_fd(), &linger), Ok(()));
    // An int-sized value is refused with EINVAL, as the stack does.
    let one: libc::c_int = 1;
    assert_eq!(kernel_set_linger(c.as_raw_fd(), &one), Err(libc::EINVAL));
    drop(c);
    let mut buf = [0u8; 4];
    let e = s.read(&mut buf).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(Errno::ECONNRESET.raw()));
}
