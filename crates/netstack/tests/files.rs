//! Descriptors other than sockets, fcntl, socket options, and garbage from
//! the wire.

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};

use eventpoll::{Errno, Events, O_NONBLOCK};
use netdev::Link;
use netstack::{
    AF_INET, F_GETFD, F_GETFL, F_SETFD, F_SETFL, FD_CLOEXEC, IPPROTO_TCP, SO_KEEPALIVE, SO_RCVBUF,
    SO_REUSEADDR, SO_SNDBUF, SOCK_CLOEXEC, SOCK_STREAM, SOL_SOCKET, Stack, StackConfig,
    TCP_NODELAY,
};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use smoltcp::phy::{Device, TxToken};
use smoltcp::time::{Duration, Instant};
use util::{Pair, SERVER, add, ready, watch};

#[test]
fn eventfd_and_pipe_work_through_the_stack_epoll() {
    let mut p = Pair::new();
    let st = &mut p.server;
    let efd = st.eventfd(0, O_NONBLOCK).unwrap();
    let [r, w] = st.pipe2(O_NONBLOCK).unwrap();
    let ep = watch(st, efd, Events::IN);
    add(st, ep, r, Events::IN);
    assert_eq!(ready(st, ep), vec![]);
    st.write(efd, &3u64.to_ne_bytes()).unwrap();
    assert_eq!(st.write(w, b"abc"), Ok(3));
    let mut got = ready(st, ep);
    got.sort_by_key(|e| e.0);
    assert_eq!(got, vec![(efd, Events::IN), (r, Events::IN)]);
    let mut buf = [0u8; 8];
    assert_eq!(st.read(efd, &mut buf), Ok(8));
    assert_eq!(u64::from_ne_bytes(buf), 3);
    assert_eq!(st.read(r, &mut buf), Ok(3));
    assert_eq!(st.read(r, &mut buf), Err(Errno::EAGAIN));
    assert_eq!(st.read(w, &mut buf), Err(Errno::EBADF));
    assert_eq!(ready(st, ep), vec![]);
    assert_eq!(st.pipe2(0x1), Err(Errno::EINVAL));
    for fd in [efd, r, w, ep] {
        st.close(fd).unwrap();
    }
    assert_eq!(st.stats().fds, 0);
}

#[test]
fn fcntl_sets_and_reports_nonblocking() {
    let mut p = Pair::new();
    let st = &mut p.server;
    let fd = st.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    assert_eq!(st.fcntl(fd, F_GETFL, 0).unwrap() & O_NONBLOCK, 0);
    st.fcntl(fd, F_SETFL, O_NONBLOCK).unwrap();
    assert_eq!(st.fcntl(fd, F_GETFL, 0).unwrap() & O_NONBLOCK, O_NONBLOCK);
    st.fcntl(fd, F_SETFL, 0).unwrap();
    assert_eq!(st.fcntl(fd, F_GETFL, 0).unwrap() & O_NONBLOCK, 0);
    assert_eq!(st.fcntl(fd, 12345, 0), Err(Errno::EINVAL));
    assert_eq!(st.fcntl(99, F_GETFL, 0), Err(Errno::EBADF));
}

#[test]
fn fcntl_sets_and_reports_close_on_exec() {
    let mut p = Pair::new();
    let st = &mut p.server;
    let fd = st.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0).unwrap();
    assert_eq!(st.fcntl(fd, F_GETFD, 0), Ok(FD_CLOEXEC));
    st.fcntl(fd, F_SETFD, 0).unwrap();
    assert_eq!(st.fcntl(fd, F_GETFD, 0), Ok(0));
    st.fcntl(fd, F_SETFD, FD_CLOEXEC).unwrap();
    assert_eq!(st.fcntl(fd, F_GETFD, 0), Ok(FD_CLOEXEC));
    assert_eq!(st.fcntl(99, F_SETFD, FD_CLOEXEC), Err(Errno::EBADF));
}

#[test]
fn socket_options_round_trip_and_reuseaddr_shares_a_port() {
    let mut p = Pair::new();
    let st = &mut p.server;
    let a = st.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    for (level, name) in [
        (IPPROTO_TCP, TCP_NODELAY),
        (SOL_SOCKET, SO_KEEPALIVE),
        (SOL_SOCKET, SO_REUSEADDR),
    ] {
        assert_eq!(st.getsockopt(a, level, name), Ok(0));
        st.setsockopt(a, level, name, 1).unwrap();
        assert_eq!(st.getsockopt(a, level, name), Ok(1));
    }
    st.setsockopt(a, SOL_SOCKET, SO_RCVBUF, 8192).unwrap();
    assert_eq!(st.getsockopt(a, SOL_SOCKET, SO_RCVBUF), Ok(8192));
    st.setsockopt(a, SOL_SOCKET, SO_SNDBUF, 1).unwrap();
    assert_eq!(
        st.getsockopt(a, SOL_SOCKET, SO_SNDBUF),
        Ok(netstack::MIN_BUFFER as i32),
        "clamped"
    );
    assert_eq!(
        st.setsockopt(a, SOL_SOCKET, 999, 1),
        Err(Errno::ENOPROTOOPT)
    );
    let b = st.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    st.setsockopt(b, SOL_SOCKET, SO_REUSEADDR, 1).unwrap();
    let addr = SocketAddrV4::new(SERVER, 8080);
    st.bind(a, addr).unwrap();
    st.bind(b, addr).unwrap();
    st.listen(a, 4).unwrap();
    assert_eq!(st.listen(b, 4), Err(Errno::EADDRINUSE), "one listener");
    let c = st.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    st.setsockopt(c, SOL_SOCKET, SO_REUSEADDR, 1).unwrap();
    assert_eq!(
        st.bind(c, addr),
        Err(Errno::EADDRINUSE),
        "port is listening"
    );
    // Small buffers still carry data.
    let l = p.listen(81, 4);
    let (cl, sv) = p.connected(l, 81);
    p.client
        .setsockopt(cl, IPPROTO_TCP, TCP_NODELAY, 1)
        .unwrap();
    assert_eq!(p.client.send(cl, b"x"), Ok(1));
    p.settle();
    let mut buf = [0u8; 4];
    assert_eq!(p.server.recv(sv, &mut buf), Ok(1));
}

#[test]
fn bind_port_zero_picks_an_ephemeral_port() {
    let mut p = Pair::new();
    let st = &mut p.server;
    let fd = st.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    st.bind(fd, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
        .unwrap();
    let port = st.getsockname(fd).unwrap().port();
    assert!((netstack::EPHEMERAL_FIRST..=netstack::EPHEMERAL_LAST).contains(&port));
}

#[test]
fn ephemeral_ports_are_random_and_unique() {
    let mut p = Pair::new();
    let mut ports = std::collections::HashSet::new();
    for _ in 0..200 {
        let c = p.connect(80);
        let port = p.client.getsockname(c).unwrap().port();
        assert!(ports.insert(port), "port {port} reused");
    }
    let mut sorted: Vec<u16> = ports.into_iter().collect();
    sorted.sort_unstable();
    let sequential = sorted.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert!(sequential < 150, "ports look sequential");
}

#[test]
fn garbage_from_the_wire_never_panics_and_leaks_nothing() {
    let (mut raw, dev) = Link::pair(1500);
    let now = Instant::from_secs(1);
    let mut cfg = StackConfig::new(SERVER, 15);
    cfg.seed = Some(3);
    let mut st = Stack::new(dev, cfg, now).unwrap();
    let l = st.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    st.bind(l, SocketAddrV4::new(SERVER, 80)).unwrap();
    st.listen(l, 64).unwrap();
    let mut rng = SmallRng::seed_from_u64(11);
    let mut t = now;
    for i in 0..5000 {
        // A valid IPv4/TCP header to the listener with random flags,
        // ports, numbers and length, or pure noise.
        let len = rng.random_range(0..120usize);
        let mut pkt: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if i % 2 == 0 && len >= 40 {
            pkt[0] = 0x45;
            pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            pkt[6] = 0;
            pkt[7] = 0;
            pkt[9] = 6;
            pkt[12..16].copy_from_slice(&[198, 18, 0, 9]);
            pkt[16..20].copy_from_slice(&SERVER.octets());
            pkt[22..24].copy_from_slice(&80u16.to_be_bytes());
            pkt[32] = 5 << 4;
        }
        if let Some(tx) = raw.transmit(t) {
            tx.consume(pkt.len(), |b| b.copy_from_slice(&pkt));
        }
        st.poll(t);
        while let Some((rx, _)) = raw.receive(t) {
            smoltcp::phy::RxToken::consume(rx, |_| ());
        }
        t += Duration::from_millis(1);
    }
    let s = st.stats();
    assert!(
        s.passive_opens > 10,
        "the noise reached the listener: {s:?}"
    );
    assert!(s.unmatched > 10, "and smoltcp's reset path: {s:?}");
    st.close(l).unwrap();
    // Everything half-open is reset and freed; nothing stays behind.
    for _ in 0..1000 {
        st.poll(t);
        while let Some((rx, _)) = raw.receive(t) {
            smoltcp::phy::RxToken::consume(rx, |_| ());
        }
        t += Duration::from_millis(100);
    }
    let s = st.stats();
    assert_eq!(
        (s.fds, s.sockets, s.connections, s.demux),
        (0, 0, 0, 0),
        "{s:?}"
    );
}

#[test]
fn extra_local_addresses_spread_connections_and_carry_data() {
    let (a, b) = Link::pair(1500);
    let now = Instant::from_secs(1);
    let mut sc = StackConfig::new(SERVER, 15);
    sc.seed = Some(1);
    let mut cc = StackConfig::new(util::CLIENT, 15);
    cc.seed = Some(2);
    let extra = [Ipv4Addr::new(198, 18, 1, 1), Ipv4Addr::new(198, 19, 0, 7)];
    cc.extra_addrs = extra.to_vec();
    let mut p = Pair {
        server: Stack::new(a, sc, now).unwrap(),
        client: Stack::new(b, cc, now).unwrap(),
        now,
    };
    assert_eq!(p.client.addrs().len(), 3);
    let l = p.listen(80, 512);
    // An explicit bind to an extra address is honoured.
    let fixed = p
        .client
        .socket(AF_INET, SOCK_STREAM | netstack::SOCK_NONBLOCK, 0)
        .unwrap();
    p.client
        .bind(fixed, SocketAddrV4::new(extra[1], 0))
        .unwrap();
    assert_eq!(
        p.client.connect(fixed, SocketAddrV4::new(SERVER, 80)),
        Err(Errno::EINPROGRESS)
    );
    let clients: Vec<i32> = (0..300).map(|_| p.connect(80)).collect();
    let mut peers = std::collections::HashMap::new();
    p.run_until(Duration::from_secs(10), |p| {
        while let Ok((fd, peer)) = p.server.accept4(l, 0) {
            peers.insert(peer, fd);
        }
        peers.len() == clients.len() + 1
    });
    let fixed_local = p.client.getsockname(fixed).unwrap();
    assert_eq!(*fixed_local.ip(), extra[1]);
    assert!(peers.contains_key(&fixed_local));
    let used: std::collections::HashSet<Ipv4Addr> = peers.keys().map(|a| *a.ip()).collect();
    assert_eq!(used.len(), 3, "all three local addresses used: {used:?}");
    // Data flows on a connection from an extra address.
    let c = *clients
        .iter()
        .find(|&&c| *p.client.getsockname(c).unwrap().ip() != util::CLIENT)
        .unwrap();
    p.client.send(c, b"hi").unwrap();
    p.settle();
    let s = peers[&p.client.getsockname(c).unwrap()];
    let mut buf = [0u8; 4];
    assert_eq!(p.server.recv(s, &mut buf), Ok(2));
    // An address the stack does not have cannot be bound.
    let other = p.client.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    assert_eq!(
        p.client
            .bind(other, SocketAddrV4::new(Ipv4Addr::new(198, 18, 9, 9), 0)),
        Err(Errno::EADDRNOTAVAIL)
    );
}
