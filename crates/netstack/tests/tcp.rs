//! Two stacks over `netdev::Link`: handshake, data, close, errors.

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};

use eventpoll::{Errno, Events};
use netstack::{AF_INET, SHUT_WR, SO_ERROR, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET};
use smoltcp::time::Duration;
use util::{CLIENT, Pair, SERVER, poll_alone, pump_bulk, ready, watch};

#[test]
fn handshake_raises_listener_in_and_client_out() {
    let mut p = Pair::new();
    let l = p.listen(80, 16);
    let lep = watch(&mut p.server, l, Events::IN);
    let c = p.connect(80);
    let cep = watch(&mut p.client, c, Events::OUT | Events::ET);
    assert_eq!(ready(&mut p.client, cep), vec![], "connecting: no OUT");
    assert_eq!(p.server.accept4(l, 0), Err(Errno::EAGAIN));
    p.settle();
    assert_eq!(ready(&mut p.server, lep), vec![(l, Events::IN)]);
    assert_eq!(ready(&mut p.client, cep), vec![(c, Events::OUT)]);
    let (s, peer) = p.server.accept4(l, SOCK_NONBLOCK).unwrap();
    assert_eq!(*peer.ip(), CLIENT);
    assert_eq!(
        p.client.getpeername(c).unwrap(),
        SocketAddrV4::new(SERVER, 80)
    );
    assert_eq!(p.client.getsockname(c).unwrap(), peer);
    assert_eq!(
        p.server.getsockname(s).unwrap(),
        SocketAddrV4::new(SERVER, 80)
    );
    assert_eq!(p.server.getpeername(s).unwrap(), peer);
    assert_eq!(ready(&mut p.server, lep), vec![], "queue drained");
    assert_eq!(
        p.server.poll_fd(s).unwrap(),
        Events::OUT | Events::WRNORM,
        "established, nothing to read"
    );
    assert_eq!(p.client.getsockopt(c, SOL_SOCKET, SO_ERROR), Ok(0));
}

#[test]
fn one_megabyte_each_way_arrives_intact() {
    let mut p = Pair::new();
    let l = p.listen(5001, 4);
    let (c, s) = p.connected(l, 5001);
    pump_bulk(&mut p, c, s, 1 << 20);
}

/// A SYN's window is never scaled, so a new connection's first flight
/// stops at 64 KiB until the receiver's ACK shows the real window. A
/// receiver that reads at once must send that ACK at once (quick-ACK mode),
/// not after the delayed-ACK time: 256 KiB over a link of MTU 65535 arrive
/// without the clock moving at all.
#[test]
fn first_flight_past_the_syn_window_needs_no_delayed_ack() {
    let mut p = Pair::with_mtu(1 << 20, 65535, 64);
    let l = p.listen(5002, 4);
    let (c, s) = p.connected(l, 5002);
    let data = vec![0xa5u8; 256 * 1024];
    let (mut sent, mut got) = (0, 0);
    let mut buf = vec![0u8; 64 * 1024];
    let start = p.now;
    for _ in 0..1000 {
        if sent < data.len()
            && let Ok(n) = p.client.send(c, &data[sent..])
        {
            sent += n;
        }
        p.client.poll(p.now);
        p.server.poll(p.now);
        while let Ok(n) = p.server.recv(s, &mut buf) {
            got += n;
        }
        if got == data.len() {
            break;
        }
    }
    assert_eq!(p.now, start, "the clock never moved");
    assert_eq!(got, data.len(), "the transfer waited for a timer");
}

#[test]
fn draining_the_receive_queue_clears_in_for_level_triggered_epoll() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    let sep = watch(&mut p.server, s, Events::IN);
    let mut buf = [0u8; 64];
    // Established, then CloseWait: a partial read leaves IN, a drain
    // takes it away, and LT epoll reports nothing more.
    for (round, close) in [(0, false), (1, true)] {
        p.client.send(c, b"0123456789").unwrap();
        if close {
            p.client.shutdown(c, SHUT_WR).unwrap();
        }
        p.settle();
        assert_eq!(ready(&mut p.server, sep).len(), 1, "round {round}");
        assert_eq!(p.server.recv(s, &mut buf[..4]), Ok(4));
        assert!(p.server.poll_fd(s).unwrap().contains(Events::IN));
        assert_eq!(ready(&mut p.server, sep).len(), 1, "round {round}: 6 left");
        assert_eq!(p.server.recv(s, &mut buf), Ok(6));
        let mask = p.server.poll_fd(s).unwrap();
        assert_eq!(mask.contains(Events::IN), close, "round {round}: {mask:?}");
        if close {
            // EOF keeps a level-triggered IN (Linux's tcp_poll), as RDHUP.
            assert!(mask.contains(Events::RDHUP), "{mask:?}");
        } else {
            assert_eq!(ready(&mut p.server, sep), vec![], "drained");
        }
    }
}

#[test]
fn shutdown_wr_gives_peer_in_rdhup_and_eof() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    let sep = watch(&mut p.server, s, Events::IN | Events::RDHUP | Events::ET);
    assert_eq!(ready(&mut p.server, sep), vec![]);
    p.client.send(c, b"last words").unwrap();
    p.client.shutdown(c, SHUT_WR).unwrap();
    assert_eq!(p.client.send(c, b"more"), Err(Errno::EPIPE));
    p.settle();
    let got = ready(&mut p.server, sep);
    assert_eq!(got.len(), 1);
    assert!(got[0].1.contains(Events::IN | Events::RDHUP), "{:?}", got);
    let mut buf = [0u8; 64];
    assert_eq!(p.server.recv(s, &mut buf), Ok(10));
    assert_eq!(&buf[..10], b"last words");
    assert_eq!(p.server.recv(s, &mut buf), Ok(0), "EOF");
    assert_eq!(p.server.recv(s, &mut buf), Ok(0), "EOF again");
    // The server can still send; the client still reads.
    p.server.send(s, b"reply").unwrap();
    p.settle();
    assert_eq!(p.client.recv(c, &mut buf), Ok(5));
    // Server closes too: both see HUP eventually.
    p.server.shutdown(s, SHUT_WR).unwrap();
    p.settle();
    assert!(p.server.poll_fd(s).unwrap().contains(Events::HUP));
    assert!(
        p.client
            .poll_fd(c)
            .unwrap()
            .contains(Events::HUP | Events::RDHUP)
    );
}

#[test]
fn close_with_unread_data_resets_peer() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    let cep = watch(&mut p.client, c, Events::IN | Events::ET);
    p.client.send(c, b"unread").unwrap();
    p.settle();
    p.server.close(s).unwrap();
    p.settle();
    let got = ready(&mut p.client, cep);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].1.contains(Events::ERR | Events::HUP | Events::IN),
        "{:?}",
        got
    );
    assert!(
        p.client
            .poll_fd(c)
            .unwrap()
            .contains(Events::ERR | Events::HUP | Events::IN | Events::OUT | Events::RDHUP)
    );
    let mut buf = [0u8; 8];
    assert_eq!(p.client.recv(c, &mut buf), Err(Errno::ECONNRESET));
    assert_eq!(
        p.client.getsockopt(c, SOL_SOCKET, SO_ERROR),
        Ok(0),
        "cleared"
    );
    assert!(!p.client.poll_fd(c).unwrap().contains(Events::ERR));
    assert_eq!(p.client.send(c, b"x"), Err(Errno::EPIPE));
}

#[test]
fn connect_to_closed_port_is_refused() {
    let mut p = Pair::new();
    let c = p.connect(9);
    let cep = watch(&mut p.client, c, Events::OUT);
    p.settle();
    let got = ready(&mut p.client, cep);
    assert_eq!(got.len(), 1);
    assert!(
        got[0].1.contains(Events::ERR | Events::HUP | Events::OUT),
        "{:?}",
        got
    );
    assert_eq!(
        p.client.getsockopt(c, SOL_SOCKET, SO_ERROR),
        Ok(Errno::ECONNREFUSED.raw())
    );
    assert_eq!(p.client.getsockopt(c, SOL_SOCKET, SO_ERROR), Ok(0));
    assert_eq!(p.client.getpeername(c), Err(Errno::ENOTCONN));
}

#[test]
fn full_backlog_drops_syns_and_clients_connect_after_accept() {
    let mut p = Pair::new();
    let backlog = 1; // Linux semantics: room for backlog + 1.
    let l = p.listen(80, backlog);
    let clients: Vec<i32> = (0..5).map(|_| p.connect(80)).collect();
    p.settle();
    let dropped = p.server.stats().syn_dropped;
    assert_eq!(dropped, 3, "two fit, three SYNs dropped");
    let mut accepted = Vec::new();
    p.run_until(Duration::from_secs(30), |p| {
        while let Ok((fd, _)) = p.server.accept4(l, SOCK_NONBLOCK) {
            accepted.push(fd);
        }
        accepted.len() == clients.len()
    });
    for &c in &clients {
        assert!(p.client.poll_fd(c).unwrap().contains(Events::OUT));
        assert_eq!(p.client.getsockopt(c, SOL_SOCKET, SO_ERROR), Ok(0));
    }
}

#[test]
fn misuse_gives_linux_errno() {
    let mut p = Pair::new();
    let st = &mut p.server;
    let mut buf = [0u8; 4];
    assert_eq!(st.recv(42, &mut buf), Err(Errno::EBADF));
    assert_eq!(st.close(42), Err(Errno::EBADF));
    assert_eq!(st.socket(10, SOCK_STREAM, 0), Err(Errno::EAFNOSUPPORT));
    assert_eq!(st.socket(AF_INET, 2, 0), Err(Errno::EPROTONOSUPPORT));
    assert_eq!(
        st.socket(AF_INET, SOCK_STREAM, 17),
        Err(Errno::EPROTONOSUPPORT)
    );
    assert_eq!(st.socket(AF_INET, 99, 0), Err(Errno::EINVAL));
    assert_eq!(
        st.socket(AF_INET, SOCK_STREAM | 1 << 20, 0),
        Err(Errno::EINVAL)
    );
    let fd = st.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    assert_eq!(st.recv(fd, &mut buf), Err(Errno::ENOTCONN));
    assert_eq!(st.send(fd, b"x"), Err(Errno::EPIPE));
    assert_eq!(st.shutdown(fd, SHUT_WR), Err(Errno::ENOTCONN));
    assert_eq!(st.shutdown(fd, 7), Err(Errno::EINVAL));
    assert_eq!(st.getpeername(fd), Err(Errno::ENOTCONN));
    assert_eq!(
        st.bind(fd, SocketAddrV4::new(Ipv4Addr::new(198, 19, 9, 9), 80)),
        Err(Errno::EADDRNOTAVAIL)
    );
    st.bind(fd, SocketAddrV4::new(SERVER, 80)).unwrap();
    assert_eq!(
        st.bind(fd, SocketAddrV4::new(SERVER, 81)),
        Err(Errno::EINVAL),
        "already bound"
    );
    let other = st.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    assert_eq!(
        st.bind(other, SocketAddrV4::new(SERVER, 80)),
        Err(Errno::EADDRINUSE)
    );
    st.listen(fd, 8).unwrap();
    assert_eq!(st.accept4(fd, 0), Err(Errno::EAGAIN));
    assert_eq!(st.accept4(other, 0), Err(Errno::EINVAL), "not listening");
    assert_eq!(st.accept4(fd, 0x1234), Err(Errno::EINVAL), "bad flags");
    assert_eq!(st.recv(fd, &mut buf), Err(Errno::ENOTCONN));
    assert_eq!(
        st.connect(fd, SocketAddrV4::new(CLIENT, 80)),
        Err(Errno::EISCONN)
    );
    let ep = st.epoll_create1(0).unwrap();
    assert_eq!(
        st.bind(ep, SocketAddrV4::new(SERVER, 1)),
        Err(Errno::ENOTSOCK)
    );
    assert_eq!(st.getsockopt(fd, SOL_SOCKET, 999), Err(Errno::ENOPROTOOPT));
    st.close(other).unwrap();
    assert_eq!(st.recv(other, &mut buf), Err(Errno::EBADF));

    // Connected-socket misuse.
    let l = p.listen(90, 4);
    let (c, _s) = p.connected(l, 90);
    assert_eq!(
        p.client.connect(c, SocketAddrV4::new(SERVER, 90)),
        Err(Errno::EISCONN)
    );
    assert_eq!(p.client.listen(c, 1), Err(Errno::EINVAL));
    assert_eq!(p.client.recv(c, &mut buf), Err(Errno::EAGAIN));
    p.client.shutdown(c, SHUT_WR).unwrap();
    assert_eq!(p.client.send(c, b"x"), Err(Errno::EPIPE));
    let c2 = p.connect(90);
    assert_eq!(
        p.client.connect(c2, SocketAddrV4::new(SERVER, 90)),
        Err(Errno::EALREADY)
    );
    assert_eq!(
        p.client.send(c2, b"x"),
        Err(Errno::EAGAIN),
        "still connecting"
    );
}

#[test]
fn connect_to_silent_peer_times_out() {
    let mut p = Pair::new();
    let c = p.connect(80);
    let cep = watch(&mut p.client, c, Events::OUT);
    // The server stack is never polled: nobody answers the SYNs.
    let end = p.now + netstack::CONNECT_TIMEOUT + Duration::from_secs(5);
    let second = Duration::from_secs(1);
    poll_alone(&mut p.client, &mut p.now, end, second, |s| {
        !ready(s, cep).is_empty()
    });
    assert!(
        p.client
            .poll_fd(c)
            .unwrap()
            .contains(Events::ERR | Events::HUP)
    );
    assert_eq!(
        p.client.getsockopt(c, SOL_SOCKET, SO_ERROR),
        Ok(Errno::ETIMEDOUT.raw())
    );
}

#[test]
fn two_epolls_watching_one_socket_both_see_data() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    let e1 = watch(&mut p.server, s, Events::IN | Events::ET);
    let e2 = watch(&mut p.server, s, Events::IN);
    p.client.send(c, b"x").unwrap();
    p.settle();
    assert_eq!(ready(&mut p.server, e1), vec![(s, Events::IN)]);
    assert_eq!(ready(&mut p.server, e2), vec![(s, Events::IN)]);
    assert_eq!(ready(&mut p.server, e1), vec![], "ET: reported once");
    assert_eq!(ready(&mut p.server, e2), vec![(s, Events::IN)], "LT: again");
}

#[test]
fn dropping_a_sockets_last_handle_removes_its_watches_at_once() {
    // The stack keeps the socket's readiness and wait queue alive after the
    // description is gone, until its next step reaps the connection; the
    // epitems must still go when the last handle drops (Linux's
    // `eventpoll_release` on the final `fput`), not at that later step.
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, _s) = p.connected(l, 80);
    let ep = watch(&mut p.client, c, Events::IN);
    let netstack::File::Basic(eventpoll::BasicFile::Epoll(epoll)) = p.client.file(ep).unwrap()
    else {
        panic!("not an epoll");
    };
    assert_eq!(epoll.len(), 1);
    // Another handle (as a threaded caller holds one) outlives the close.
    let handle = p.client.file(c).unwrap();
    p.client.close(c).unwrap();
    assert_eq!(epoll.len(), 1, "a handle is still open");
    drop(handle);
    assert_eq!(epoll.len(), 0, "the last handle dropped");
    assert_eq!(epoll.budget().used(), 0);
}

#[test]
fn closing_listener_resets_queued_connections() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let c = p.connect(80);
    p.settle();
    assert!(
        p.client.poll_fd(c).unwrap().contains(Events::OUT),
        "connected"
    );
    p.server.close(l).unwrap();
    p.settle();
    assert_eq!(
        p.client.getsockopt(c, SOL_SOCKET, SO_ERROR),
        Ok(Errno::ECONNRESET.raw())
    );
    let s = p.server.stats();
    assert_eq!((s.sockets, s.connections, s.demux), (0, 0, 0), "{s:?}");
}

#[test]
fn shutdown_rd_makes_recv_return_eof_and_polls_rdhup() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, _s) = p.connected(l, 80);
    p.client.shutdown(c, netstack::SHUT_RD).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(p.client.recv(c, &mut buf), Ok(0));
    let r = p.client.poll_fd(c).unwrap();
    assert!(
        r.contains(Events::IN | Events::RDHUP | Events::OUT),
        "{r:?}"
    );
    assert!(!r.contains(Events::HUP), "{r:?}");
    p.client.shutdown(c, SHUT_WR).unwrap();
    assert!(p.client.poll_fd(c).unwrap().contains(Events::HUP));
}

#[test]
fn keepalive_on_a_silent_peer_gives_etimedout() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, _s) = p.connected(l, 80);
    p.client
        .setsockopt(c, SOL_SOCKET, netstack::SO_KEEPALIVE, 1)
        .unwrap();
    // Without keep-alive nothing would ever time out: the client has no
    // data in flight. The server stack is never polled again.
    let minute = Duration::from_secs(60);
    client_gives_up(&mut p, c, netstack::KEEPALIVE_IDLE, minute);
}

/// With the server stack never polled again, polls the client alone
/// (`step` at a time when it has no timer) until `fd` reports an error or
/// twice `limit` has passed; asserts that the error came no sooner than
/// `limit`, with `ERR | HUP` and `ETIMEDOUT`.
fn client_gives_up(p: &mut Pair, fd: i32, limit: Duration, step: Duration) {
    let from = p.now;
    poll_alone(&mut p.client, &mut p.now, from + limit * 2, step, |s| {
        s.poll_fd(fd).unwrap().contains(Events::ERR)
    });
    assert!(p.now >= from + limit, "not before {limit}");
    let r = p.client.poll_fd(fd).unwrap();
    assert!(r.contains(Events::ERR | Events::HUP), "{r:?}");
    assert_eq!(
        p.client.getsockopt(fd, SOL_SOCKET, SO_ERROR),
        Ok(Errno::ETIMEDOUT.raw())
    );
}

#[test]
fn idle_connection_without_keepalive_never_times_out() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    for _ in 0..100 {
        p.now += Duration::from_secs(600);
        p.settle();
    }
    assert_eq!(p.client.getsockopt(c, SOL_SOCKET, SO_ERROR), Ok(0));
    p.client.send(c, b"still here").unwrap();
    p.settle();
    let mut buf = [0u8; 16];
    assert_eq!(p.server.recv(s, &mut buf), Ok(10));
}

/// Closing a connection that has been idle for longer than the orphan
/// timeout still ends it with a FIN (the peer reads end of stream), not a
/// reset: the orphan's timeout counts from the close, not from the peer's
/// last segment.
#[test]
fn close_after_a_long_idle_time_sends_fin_not_reset() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    p.now += netstack::ORPHAN_TIMEOUT * 3;
    p.settle();
    p.server.close(s).unwrap();
    p.run_until(Duration::from_secs(5), |p| {
        p.client.poll_fd(c).unwrap().contains(Events::IN)
    });
    assert_eq!(p.client.getsockopt(c, SOL_SOCKET, SO_ERROR), Ok(0));
    let mut buf = [0u8; 8];
    assert_eq!(p.client.recv(c, &mut buf), Ok(0), "EOF, not a reset");
    // The client closes too: both ends go away cleanly.
    p.client.close(c).unwrap();
    p.run_until(Duration::from_secs(5), |p| {
        p.server.stats().connections == 0
    });
}

/// An orphan whose peer has gone silent is dropped once the peer has been
/// silent for the orphan timeout after the close (Linux's orphan
/// retries), not kept retransmitting its FIN forever, and not before.
#[test]
fn orphan_with_a_silent_peer_is_dropped_after_the_orphan_timeout() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (_c, s) = p.connected(l, 80);
    p.now += netstack::ORPHAN_TIMEOUT * 3;
    p.settle();
    // From now on the client stack is never polled: nobody ACKs the FIN.
    p.server.close(s).unwrap();
    let closed = p.now;
    let end = closed + netstack::ORPHAN_TIMEOUT * 2;
    let second = Duration::from_secs(1);
    poll_alone(&mut p.server, &mut p.now, end, second, |s| {
        s.stats().connections == 0
    });
    assert_eq!(p.server.stats().connections, 0, "never dropped");
    assert!(p.now >= closed + netstack::ORPHAN_TIMEOUT, "dropped early");
}

/// Data that the peer never acknowledges ends the connection with
/// `ETIMEDOUT` after [`netstack::RETRANSMIT_TIMEOUT`] of silence (Linux's
/// `tcp_retries2`); an idle connection with nothing to send never times
/// out.
#[test]
fn unacknowledged_data_times_out_but_an_idle_connection_does_not() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, _s) = p.connected(l, 80);
    let (idle, _s2) = p.connected(l, 80);
    let cep = watch(&mut p.client, c, Events::IN);
    // From now on the server stack is never polled.
    assert_eq!(p.client.send(c, b"hello"), Ok(5));
    let second = Duration::from_secs(1);
    client_gives_up(&mut p, c, netstack::RETRANSMIT_TIMEOUT, second);
    // The client's epoll reports it.
    assert!(!ready(&mut p.client, cep).is_empty());
    // The idle connection, silent just as long, is still there.
    let r = p.client.poll_fd(idle).unwrap();
    assert!(!r.intersects(Events::ERR | Events::HUP), "{r:?}");
    assert_eq!(p.client.getsockopt(idle, SOL_SOCKET, SO_ERROR), Ok(0));
}

/// A FIN that the peer never acknowledges, on a connection whose
/// descriptor is still open, ends with `ETIMEDOUT` after
/// [`netstack::RETRANSMIT_TIMEOUT`] of silence; once the peer has
/// acknowledged the FIN, waiting for the peer's own FIN (FIN-WAIT-2) has no
/// limit, as in Linux for a socket that is not closed.
#[test]
fn unacknowledged_fin_times_out_but_fin_wait_2_does_not() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (acked, _s1) = p.connected(l, 80);
    let (silent, _s2) = p.connected(l, 80);
    // The first FIN gets its ACK: FIN-WAIT-2, the server never closes.
    p.client.shutdown(acked, SHUT_WR).unwrap();
    p.settle();
    // From now on the server stack is never polled.
    p.client.shutdown(silent, SHUT_WR).unwrap();
    let second = Duration::from_secs(1);
    client_gives_up(&mut p, silent, netstack::RETRANSMIT_TIMEOUT, second);
    let r = p.client.poll_fd(acked).unwrap();
    assert!(!r.contains(Events::ERR), "{r:?}");
    assert_eq!(p.client.getsockopt(acked, SOL_SOCKET, SO_ERROR), Ok(0));
}
