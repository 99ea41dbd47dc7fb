//! Two stacks joined by an in-memory link, on a virtual clock.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

use eventpoll::{CtlOp, EpollEvent, Errno, Events};
use netdev::{FaultConfig, Faulty, Link, LinkDevice};
use netstack::{AF_INET, Lookahead, SOCK_NONBLOCK, SOCK_STREAM, Stack, StackConfig};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use smoltcp::phy::Device;
use smoltcp::time::{Duration, Instant};

/// The server's address (198.18.0.0/15, the benchmark range).
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

pub struct Pair<D: Device + Lookahead = LinkDevice> {
    pub server: Stack<D>,
    pub client: Stack<D>,
    pub now: Instant,
}

/// A pair over a link whose two ends are wrapped in fault injection (each
/// end's faults hit the packets it receives).
pub type FaultyPair = Pair<Faulty<LinkDevice>>;

impl Pair {
    pub fn new() -> Pair {
        Pair::with_buffers(netstack::DEFAULT_BUFFER)
    }

    pub fn with_buffers(buffer_size: usize) -> Pair {
        Pair::with_link(buffer_size, Link::default_capacity(1500))
    }

    /// A pair whose link holds `capacity` packets each way (back-pressure
    /// past it).
    pub fn with_link(buffer_size: usize, capacity: usize) -> Pair {
        Pair::with_mtu(buffer_size, 1500, capacity)
    }

    /// A pair over a link of `mtu` holding `capacity` packets each way.
    pub fn with_mtu(buffer_size: usize, mtu: usize, capacity: usize) -> Pair {
        let (a, b) = Link::pair_with(mtu, capacity);
        Pair::from_devices(a, b, buffer_size)
    }

    /// A pair over a 1500-byte link whose server end receives with the
    /// faults of `server` and whose client end with those of `client`.
    pub fn faulty(server: FaultConfig, client: FaultConfig) -> FaultyPair {
        let (a, b) = Link::pair(1500);
        let a = Faulty::new(a, server).unwrap();
        let b = Faulty::new(b, client).unwrap();
        Pair::from_devices(a, b, netstack::DEFAULT_BUFFER)
    }
}

impl<D: Device + Lookahead> Pair<D> {
    /// Two stacks on the two ends of a link: the server on `a`.
    pub fn from_devices(a: D, b: D, buffer_size: usize) -> Pair<D> {
        let now = Instant::from_secs(1);
        let mut sc = StackConfig::new(SERVER, 15);
        sc.seed = Some(1);
        sc.buffer_size = buffer_size;
        let mut cc = StackConfig::new(CLIENT, 15);
        cc.seed = Some(2);
        cc.buffer_size = buffer_size;
        // Prefetching on at any count, so that every test also runs it (and,
        // in debug builds, checks it stays in step with the link).
        sc.prefetch_min_conns = 0;
        cc.prefetch_min_conns = 0;
        Pair {
            server: Stack::new(a, sc, now).unwrap(),
            client: Stack::new(b, cc, now).unwrap(),
            now,
        }
    }

    /// Polls both stacks until neither has anything to do now.
    pub fn settle(&mut self) {
        for _ in 0..1_000_000 {
            let a = self.server.poll(self.now);
            let b = self.client.poll(self.now);
            let idle = |d: Option<Duration>| d.is_none_or(|d| d > Duration::ZERO);
            if !a
                && !b
                && idle(self.server.poll_delay(self.now))
                && idle(self.client.poll_delay(self.now))
            {
                return;
            }
        }
        panic!("stacks never settled");
    }

    /// Settles, then jumps the clock to the next timer (at most `max`).
    pub fn advance(&mut self, max: Duration) {
        self.settle();
        let next = [
            self.server.poll_delay(self.now),
            self.client.poll_delay(self.now),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(max)
        .min(max)
        .max(Duration::from_millis(1));
        self.now += next;
        self.settle();
    }

    /// Advances virtual time until `cond` holds, or panics after `limit`.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Pair<D>) -> bool) {
        let end = self.now + limit;
        self.settle();
        while !cond(self) {
            assert!(self.now < end, "condition not met within {limit}");
            self.advance(Duration::from_millis(200));
        }
    }

    /// A listening server socket on `port`.
    pub fn listen(&mut self, port: u16, backlog: i32) -> i32 {
        let fd = self
            .server
            .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
            .unwrap();
        self.server
            .bind(fd, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
            .unwrap();
        self.server.listen(fd, backlog).unwrap();
        fd
    }

    /// A client socket connecting to the server's `port` (EINPROGRESS).
    pub fn connect(&mut self, port: u16) -> i32 {
        let fd = self
            .client
            .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
            .unwrap();
        assert_eq!(
            self.client.connect(fd, SocketAddrV4::new(SERVER, port)),
            Err(Errno::EINPROGRESS)
        );
        fd
    }

    /// A connected pair of descriptors: (client fd, server fd).
    pub fn connected(&mut self, listener: i32, port: u16) -> (i32, i32) {
        let c = self.connect(port);
        let mut accepted = None;
        self.run_until(Duration::from_secs(5), |p| {
            if accepted.is_none() {
                accepted = p.server.accept4(listener, SOCK_NONBLOCK).ok();
            }
            accepted.is_some()
        });
        (c, accepted.unwrap().0)
    }
}

/// An epoll on `stack` watching `fd` for `events`, with `fd` as data.
pub fn watch<D: Device + Lookahead>(stack: &mut Stack<D>, fd: i32, events: Events) -> i32 {
    let ep = stack.epoll_create1(0).unwrap();
    add(stack, ep, fd, events);
    ep
}

pub fn add<D: Device + Lookahead>(stack: &mut Stack<D>, ep: i32, fd: i32, events: Events) {
    let ev = EpollEvent::new(events, fd as u64);
    stack
        .epoll_ctl(ep, CtlOp::Add.to_raw(), fd, Some(&ev))
        .unwrap();
}

/// The events ready on `ep` now (timeout 0).
pub fn ready<D: Device + Lookahead>(stack: &mut Stack<D>, ep: i32) -> Vec<(i32, Events)> {
    let mut buf = [EpollEvent::default(); 256];
    let n = stack.epoll_wait(ep, &mut buf, 256, 0).unwrap();
    buf[..n].iter().map(|e| (e.data as i32, e.events)).collect()
}

/// Both ends send `size` random bytes (`a` on the client, `b` on the
/// server) and read everything the other sent; the bytes must arrive
/// intact. The clock moves on every 64 rounds, and in every round that
/// moved no byte (a retransmission to wait for).
pub fn pump_bulk<D: Device + Lookahead>(p: &mut Pair<D>, a: i32, b: i32, size: usize) {
    let mut rng = SmallRng::seed_from_u64(7);
    let out_c: Vec<u8> = (0..size).map(|_| rng.random()).collect();
    let out_s: Vec<u8> = (0..size).map(|_| rng.random()).collect();
    let (mut sent_c, mut sent_s) = (0, 0);
    let (mut in_c, mut in_s) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 16 * 1024];
    let mut rounds = 0;
    while in_c.len() < size || in_s.len() < size {
        rounds += 1;
        assert!(rounds < 200_000, "bulk transfer stalled");
        let moved = (sent_c, sent_s, in_c.len(), in_s.len());
        if sent_c < size {
            match p.client.send(a, &out_c[sent_c..]) {
                Ok(n) => sent_c += n,
                Err(e) => assert_eq!(e, Errno::EAGAIN),
            }
        }
        if sent_s < size {
            match p.server.send(b, &out_s[sent_s..]) {
                Ok(n) => sent_s += n,
                Err(e) => assert_eq!(e, Errno::EAGAIN),
            }
        }
        p.server.poll(p.now);
        p.client.poll(p.now);
        loop {
            match p.client.recv(a, &mut buf) {
                Ok(n) => in_c.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert_eq!(e, Errno::EAGAIN);
                    break;
                }
            }
        }
        loop {
            match p.server.recv(b, &mut buf) {
                Ok(n) => in_s.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert_eq!(e, Errno::EAGAIN);
                    break;
                }
            }
        }
        if rounds % 64 == 0 || moved == (sent_c, sent_s, in_c.len(), in_s.len()) {
            p.advance(Duration::from_millis(20));
        }
    }
    assert_eq!(in_c.len(), size);
    assert_eq!(fnv(&in_c), fnv(&out_s), "server -> client bytes differ");
    assert_eq!(fnv(&in_s), fnv(&out_c), "client -> server bytes differ");
}

/// Whether the IPv4 packet `ip` carries a TCP segment with only the ACK
/// flag and no payload.
pub fn pure_ack(ip: &[u8]) -> bool {
    if ip.len() < 40 || ip[9] != 6 {
        return false;
    }
    let ip_header = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let Some(tcp) = ip.get(ip_header..total) else {
        return false;
    };
    let tcp_header = usize::from(tcp.get(12).copied().unwrap_or(0) >> 4) * 4;
    tcp.get(13) == Some(&0x10) && tcp.len() == tcp_header
}

/// FNV-1a, 64 bits: the hash the bulk test compares.
pub fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Polls `stack` alone (its peer is never polled: silent), jumping the
/// virtual clock `now` from one of its timers to the next (by `idle` when
/// it has none), until `done` holds or the clock reaches `end`.
pub fn poll_alone(
    stack: &mut Stack<LinkDevice>,
    now: &mut Instant,
    end: Instant,
    idle: Duration,
    mut done: impl FnMut(&mut Stack<LinkDevice>) -> bool,
) {
    while *now < end && !done(stack) {
        stack.poll(*now);
        *now += stack
            .poll_delay(*now)
            .unwrap_or(idle)
            .max(Duration::from_millis(1));
    }
}
