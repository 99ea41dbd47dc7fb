//! Descriptors other than sockets, fcntl, socket options, and garbage from
//! the wire.

mod util;

use std::net::{Ipv4Addr, SocketAddrV4};

use eventpoll::{Errno, Events, O_NONBLOCK};
use netdev::Link;
use netstack::{
    AF_INET, F_GETFD, F_GETFL, F_SETFD, F_SETFL, FD_CLOEXEC, IPPROTO_TCP, SO_KEEPALIVE, SO_RCVBUF,
    SO_REUSEADDR, SO_SNDBUF, SOCK_CLOEXEC, SOCK_STREAM, SOL_SOCKET, SYN_RECEIVED_TIMEOUT, Stack,
    StackConfig, TCP_NODELAY,
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
    let now = Instant::from_secs(1);
    let (mut raw, mut st, l) = raw_server(3, 64, now);
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

/// A hand-made IPv4/TCP segment from `198.18.0.9:sport` to the server's
/// port 80, checksums zero (the link has them off). `offset` is the TCP
/// data offset in 32-bit words as sent, whatever `options` holds.
struct RawSegment<'a> {
    sport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    offset: u8,
    options: &'a [u8],
    payload: &'a [u8],
}

impl RawSegment<'_> {
    /// A SYN from `sport` with sequence number `seq`.
    fn syn(sport: u16, seq: u32) -> RawSegment<'static> {
        RawSegment {
            sport,
            seq,
            ack: 0,
            flags: SYN,
            window: 65535,
            offset: 5,
            options: &[],
            payload: &[],
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let tcp_len = 20 + self.options.len() + self.payload.len();
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 18, 0, 9]);
        p[16..20].copy_from_slice(&SERVER.octets());
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&80u16.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.ack.to_be_bytes());
        p.push(self.offset << 4);
        p.push(self.flags);
        p.extend_from_slice(&self.window.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(self.options);
        p.extend_from_slice(self.payload);
        p
    }
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// What the hand-made peer knows of one connection.
struct RawConn {
    sport: u16,
    /// The next sequence number the peer would send.
    snd_nxt: u32,
    /// The highest sequence number seen from the server, plus its length.
    rcv_nxt: u32,
    /// The server's descriptor, once accepted and until closed.
    fd: Option<i32>,
}

/// Every segment the server sent since the last call: (destination port,
/// sequence number, flags, the sequence space it takes).
fn server_output(raw: &mut netdev::LinkDevice, t: Instant) -> Vec<(u16, u32, u8, u32)> {
    let mut out = Vec::new();
    while let Some((rx, _)) = raw.receive(t) {
        smoltcp::phy::RxToken::consume(rx, |f| {
            if f.len() < 40 || f[9] != 6 {
                return;
            }
            let ihl = usize::from(f[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([f[2], f[3]])).min(f.len());
            let tcp = &f[ihl..total];
            let doff = usize::from(tcp[12] >> 4) * 4;
            let flags = tcp[13];
            let len =
                (tcp.len() - doff.min(tcp.len())) as u32 + u32::from(flags & (SYN | FIN) != 0);
            let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
            out.push((u16::from_be_bytes([tcp[2], tcp[3]]), seq, flags, len));
        });
    }
    out
}

/// A stack at the far end of `raw` (the hand-made peer's side of the
/// link), made at `t` with ISN seed `seed`, listening non-blocking on
/// SERVER:80 with `backlog`.
fn raw_server(
    seed: u64,
    backlog: i32,
    t: Instant,
) -> (netdev::LinkDevice, Stack<netdev::LinkDevice>, i32) {
    let (raw, dev) = Link::pair(1500);
    let mut cfg = StackConfig::new(SERVER, 15);
    cfg.seed = Some(seed);
    let mut st = Stack::new(dev, cfg, t).unwrap();
    let l = st
        .socket(AF_INET, SOCK_STREAM | netstack::SOCK_NONBLOCK, 0)
        .unwrap();
    st.bind(l, SocketAddrV4::new(SERVER, 80)).unwrap();
    st.listen(l, backlog).unwrap();
    (raw, st, l)
}

/// Puts `pkt` on the wire towards the stack.
fn inject(raw: &mut netdev::LinkDevice, t: Instant, pkt: &[u8]) {
    let tx = raw.transmit(t).expect("the link has room");
    tx.consume(pkt.len(), |b| b.copy_from_slice(pkt));
}

/// Sends `syn` to the stack and returns the sequence number of its SYN-ACK.
fn syn_ack(
    st: &mut Stack<netdev::LinkDevice>,
    raw: &mut netdev::LinkDevice,
    t: Instant,
    syn: &RawSegment,
) -> u32 {
    inject(raw, t, &syn.bytes());
    st.poll(t);
    let out = server_output(raw, t);
    let &(_, isn, flags, _) = out
        .iter()
        .find(|o| o.0 == syn.sport)
        .expect("a SYN-ACK for the SYN");
    assert_eq!(flags & (SYN | ACK), SYN | ACK);
    isn
}

#[test]
fn garbage_on_established_connections_never_panics_and_leaks_nothing() {
    for seed in 0..4 {
        garbage_on_established_connections(seed);
    }
}

/// 200 connections from a hand-made peer, 20,000 odd segments on them,
/// then a fresh connection that must still work and a clean-up that must
/// free everything.
fn garbage_on_established_connections(seed: u64) {
    let mut t = Instant::from_secs(1);
    let (mut raw, mut st, l) = raw_server(5 + seed, 256, t);
    let mut rng = SmallRng::seed_from_u64(17 + seed);

    // Handshakes by hand: SYN, the server's SYN-ACK, ACK.
    let mut conns: Vec<RawConn> = (0..200)
        .map(|i| RawConn {
            sport: 20_000 + i,
            snd_nxt: rng.random(),
            rcv_nxt: 0,
            fd: None,
        })
        .collect();
    for c in &mut conns {
        let syn = RawSegment::syn(c.sport, c.snd_nxt);
        let isn = syn_ack(&mut st, &mut raw, t, &syn);
        c.snd_nxt = c.snd_nxt.wrapping_add(1);
        c.rcv_nxt = isn.wrapping_add(1);
        let ack = RawSegment {
            seq: c.snd_nxt,
            ack: c.rcv_nxt,
            flags: ACK,
            ..syn
        };
        inject(&mut raw, t, &ack.bytes());
        st.poll(t);
        let (fd, peer) = st.accept4(l, netstack::SOCK_NONBLOCK).unwrap();
        assert_eq!(peer.port(), c.sport);
        c.fd = Some(fd);
    }
    assert_eq!(st.stats().connections, conns.len());

    // Segments on those connections: some plausible (near the numbers the
    // connection expects, odd flags, junk options), some wholly random;
    // between them the application reads, writes, shuts down and closes.
    let (mut read, mut resets) = (0usize, 0usize);
    let mut buf = [0u8; 4096];
    for _ in 0..20_000 {
        let c = rng.random_range(0..conns.len());
        let conn = &mut conns[c];
        let options: Vec<u8> = (0..4 * rng.random_range(0..=10usize))
            .map(|_| rng.random())
            .collect();
        let options = if rng.random_bool(0.3) {
            &options[..]
        } else {
            &[]
        };
        let payload: Vec<u8> = (0..rng.random_range(0..300usize))
            .map(|_| rng.random())
            .collect();
        let plausible = rng.random_bool(0.7);
        let mut flags = ACK | PSH;
        for (flag, p) in [(FIN, 0.05), (SYN, 0.02), (RST, 0.01)] {
            if rng.random_bool(p) {
                flags |= flag;
            }
        }
        let seg = if plausible {
            RawSegment {
                sport: conn.sport,
                // Half of them exactly in order.
                seq: if rng.random_bool(0.5) {
                    conn.snd_nxt
                } else {
                    conn.snd_nxt
                        .wrapping_add_signed(rng.random_range(-3000..3000))
                },
                ack: if rng.random_bool(0.5) {
                    conn.rcv_nxt
                } else {
                    conn.rcv_nxt
                        .wrapping_add_signed(rng.random_range(-100..100))
                },
                flags,
                window: rng.random(),
                offset: 5 + (options.len() / 4) as u8,
                options,
                payload: &payload,
            }
        } else {
            RawSegment {
                sport: conn.sport,
                seq: rng.random(),
                ack: rng.random(),
                flags: rng.random(),
                window: rng.random(),
                offset: rng.random_range(0..16),
                options,
                payload: &payload,
            }
        };
        if seg.seq == conn.snd_nxt && seg.flags & (SYN | RST) == 0 {
            conn.snd_nxt = conn.snd_nxt.wrapping_add(payload.len() as u32);
        }
        inject(&mut raw, t, &seg.bytes());
        st.poll(t);
        for (port, seq, _, len) in server_output(&mut raw, t) {
            if let Some(c) = conns.iter_mut().find(|c| c.sport == port) {
                let end = seq.wrapping_add(len);
                if (end.wrapping_sub(c.rcv_nxt) as i32) > 0 {
                    c.rcv_nxt = end;
                }
            }
        }
        let conn = &mut conns[c];
        if let Some(fd) = conn.fd {
            match st.recv(fd, &mut buf) {
                Ok(n) if n > 0 => read += 1,
                Err(Errno::ECONNRESET) => resets += 1,
                _ => {}
            }
            match rng.random_range(0..100) {
                0..20 => {
                    let _ = st.send(fd, &payload[..payload.len().min(64)]);
                }
                20 => {
                    let _ = st.shutdown(fd, netstack::SHUT_WR);
                }
                21 => {
                    st.close(fd).unwrap();
                    conn.fd = None;
                }
                _ => {}
            }
        }
        t += Duration::from_millis(rng.random_range(0..50));
    }
    eprintln!(
        "seed {seed}: {read} reads, {resets} resets; {:?}",
        st.stats()
    );
    assert!(read > 50, "data got through to the application: {read}");
    assert!(resets > 0, "some connections were reset by the peer");

    // The stack still works: a fresh handshake on a new port, and data.
    let fresh = RawSegment::syn(30_000, 1000);
    let isn = syn_ack(&mut st, &mut raw, t, &fresh);
    for seg in [
        RawSegment {
            seq: 1001,
            ack: isn.wrapping_add(1),
            flags: ACK,
            ..fresh
        },
        RawSegment {
            seq: 1001,
            ack: isn.wrapping_add(1),
            flags: ACK | PSH,
            payload: b"still here",
            ..fresh
        },
    ] {
        inject(&mut raw, t, &seg.bytes());
        st.poll(t);
    }
    // Garbage that happened to complete a handshake queued before it.
    let fd = loop {
        let (fd, peer) = st.accept4(l, 0).unwrap();
        if peer.port() == 30_000 {
            break fd;
        }
        st.close(fd).unwrap();
    };
    assert_eq!(st.recv(fd, &mut buf), Ok(10));
    assert_eq!(&buf[..10], b"still here");
    st.close(fd).unwrap();

    // Close everything; a silent peer lets every connection time out.
    for c in &mut conns {
        if let Some(fd) = c.fd.take() {
            st.close(fd).unwrap();
        }
    }
    st.close(l).unwrap();
    for _ in 0..400 {
        st.poll(t);
        server_output(&mut raw, t);
        t += Duration::from_secs(1);
    }
    let s = st.stats();
    assert_eq!(
        (s.fds, s.sockets, s.connections, s.demux, s.time_wait),
        (0, 0, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.arena_buffers, 2 * s.pooled, "{s:?}");
}

#[test]
fn half_open_connections_give_up_and_free_the_backlog() {
    // A peer that sends SYNs and never completes a handshake (a SYN
    // flood) fills the backlog; the half-open connections give up as
    // Linux's do, and then a real handshake gets in.
    let mut t = Instant::from_secs(1);
    let (mut raw, mut st, l) = raw_server(5, 4, t);
    for port in 40_000..40_010 {
        inject(&mut raw, t, &RawSegment::syn(port, 7).bytes());
        st.poll(t);
    }
    let s = st.stats();
    assert_eq!((s.connections, s.syn_dropped), (5, 5), "{s:?}");
    let mut run_to = |st: &mut Stack<netdev::LinkDevice>, t: &mut Instant, until: u64| {
        while t.secs() < until as i64 {
            st.poll(*t);
            server_output(&mut raw, *t);
            *t += Duration::from_millis(500);
        }
    };
    // Still waiting just before the SYN-RECEIVED timeout...
    run_to(&mut st, &mut t, netstack::SYN_RECEIVED_TIMEOUT.secs() - 1);
    assert_eq!(st.stats().connections, 5, "{:?}", st.stats());
    // ... and gone after it, with nothing left behind.
    run_to(&mut st, &mut t, netstack::SYN_RECEIVED_TIMEOUT.secs() + 5);
    let s = st.stats();
    assert_eq!((s.connections, s.demux, s.sockets), (0, 0, 1), "{s:?}");
    assert_eq!(st.accept4(l, 0), Err(Errno::EAGAIN));
    // The backlog is free again: a real handshake is accepted.
    let syn = RawSegment::syn(50_000, 1000);
    let isn = syn_ack(&mut st, &mut raw, t, &syn);
    let ack = RawSegment {
        seq: 1001,
        ack: isn.wrapping_add(1),
        flags: ACK,
        ..syn
    }
    .bytes();
    inject(&mut raw, t, &ack);
    st.poll(t);
    let (fd, peer) = st.accept4(l, 0).unwrap();
    assert_eq!(peer.port(), 50_000);
    st.close(fd).unwrap();
}

#[test]
fn a_stale_half_open_connection_makes_room_for_a_new_syn() {
    // A listener whose backlog is full of a SYN flood's half-open
    // connections lets a real client in once they have waited
    // HALF_OPEN_EVICT_AGE, oldest first; completed handshakes are never
    // dropped, however long they wait for accept.
    let t0 = Instant::from_secs(1);
    let (mut raw, mut st, l) = raw_server(6, 4, t0); // room for 5
    let handshake = |st: &mut Stack<netdev::LinkDevice>, raw: &mut netdev::LinkDevice, t, port| {
        let syn = RawSegment::syn(port, 1000);
        let isn = syn_ack(st, raw, t, &syn);
        let ack = RawSegment {
            seq: 1001,
            ack: isn.wrapping_add(1),
            flags: ACK,
            ..syn
        };
        inject(raw, t, &ack.bytes());
        st.poll(t);
        isn
    };
    let flood = |st: &mut Stack<netdev::LinkDevice>, raw: &mut netdev::LinkDevice, t, port| {
        inject(raw, t, &RawSegment::syn(port, 7).bytes());
        st.poll(t);
        server_output(raw, t)
    };
    // The ACK that completes a flood SYN's handshake (its ISN was 7).
    let ack_of = |port, isn: u32| {
        RawSegment {
            seq: 8,
            ack: isn.wrapping_add(1),
            flags: ACK,
            ..RawSegment::syn(port, 7)
        }
        .bytes()
    };
    let counts = |st: &Stack<netdev::LinkDevice>| {
        let s = st.stats();
        (s.connections, s.syn_dropped, s.syn_evicted)
    };
    let evict_age = netstack::HALF_OPEN_EVICT_AGE;
    handshake(&mut st, &mut raw, t0, 41_000);
    handshake(&mut st, &mut raw, t0, 41_001);
    let mut flood_isn = 0;
    for port in 40_000..40_003 {
        let out = flood(&mut st, &mut raw, t0, port);
        if port == 40_000 {
            flood_isn = out.iter().find(|o| o.0 == port).expect("a SYN-ACK").1;
        }
    }
    assert_eq!(counts(&st), (5, 0, 0));

    // Too young to drop: the new SYN is dropped instead.
    let t = t0 + evict_age - Duration::from_millis(10);
    let out = flood(&mut st, &mut raw, t, 50_000);
    assert!(out.iter().all(|o| o.0 != 50_000), "no SYN-ACK: {out:?}");
    assert_eq!(counts(&st), (5, 1, 0));

    // Old enough: the oldest half-open connection (40,000) goes, silently,
    // and the new client completes its handshake.
    let t = t0 + evict_age;
    let out = flood(&mut st, &mut raw, t, 50_001);
    assert!(out.iter().all(|o| o.0 != 40_000), "no RST for it: {out:?}");
    assert!(out.iter().any(|o| o.0 == 50_001), "a SYN-ACK: {out:?}");
    assert_eq!(counts(&st), (5, 1, 1));
    let isn = out.iter().find(|o| o.0 == 50_001).unwrap().1;
    inject(&mut raw, t, &ack_of(50_001, isn));
    st.poll(t);
    // The dropped one's late ACK finds no connection: a RST, and nothing
    // is created.
    inject(&mut raw, t, &ack_of(40_000, flood_isn));
    st.poll(t);
    let out = server_output(&mut raw, t);
    assert!(
        out.iter().any(|o| o.0 == 40_000 && o.2 & RST != 0),
        "{out:?}"
    );
    assert_eq!(st.stats().connections, 5, "{:?}", st.stats());

    // The other two flood connections make room for two more clients,
    // which complete their handshakes: the backlog holds five completed
    // connections and no half-open one...
    let t = t + evict_age;
    handshake(&mut st, &mut raw, t, 60_000);
    handshake(&mut st, &mut raw, t, 60_001);
    assert_eq!(counts(&st), (5, 1, 3));
    // ... and none of them is dropped for a SYN, however old.
    let t = t + SYN_RECEIVED_TIMEOUT;
    st.poll(t);
    server_output(&mut raw, t);
    let out = flood(&mut st, &mut raw, t, 60_002);
    assert!(out.iter().all(|o| o.0 != 60_002), "no SYN-ACK: {out:?}");
    assert_eq!(counts(&st), (5, 2, 3));
    let mut ports = Vec::new();
    while let Ok((fd, peer)) = st.accept4(l, 0) {
        ports.push(peer.port());
        st.close(fd).unwrap();
    }
    assert_eq!(ports, [41_000, 41_001, 50_001, 60_000, 60_001]);
}
