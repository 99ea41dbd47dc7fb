//! Two stacks joined by an in-memory link, on a virtual clock.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

use eventpoll::{CtlOp, EpollEvent, Errno, Events};
use netdev::{Link, LinkDevice};
use netstack::{AF_INET, SOCK_NONBLOCK, SOCK_STREAM, Stack, StackConfig};
use smoltcp::time::{Duration, Instant};

/// The server's address (198.18.0.0/15, the benchmark range).
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

pub struct Pair {
    pub server: Stack<LinkDevice>,
    pub client: Stack<LinkDevice>,
    pub now: Instant,
}

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
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&mut Pair) -> bool) {
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
pub fn watch(stack: &mut Stack<LinkDevice>, fd: i32, events: Events) -> i32 {
    let ep = stack.epoll_create1(0).unwrap();
    add(stack, ep, fd, events);
    ep
}

pub fn add(stack: &mut Stack<LinkDevice>, ep: i32, fd: i32, events: Events) {
    let ev = EpollEvent::new(events, fd as u64);
    stack
        .epoll_ctl(ep, CtlOp::Add.to_raw(), fd, Some(&ev))
        .unwrap();
}

/// The events ready on `ep` now (timeout 0).
pub fn ready(stack: &mut Stack<LinkDevice>, ep: i32) -> Vec<(i32, Events)> {
    let mut buf = [EpollEvent::default(); 256];
    let n = stack.epoll_wait(ep, &mut buf, 256, 0).unwrap();
    buf[..n].iter().map(|e| (e.data as i32, e.events)).collect()
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
