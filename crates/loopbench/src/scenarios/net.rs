//! The three sides of every network scenario, each a client and a server
//! on one thread so that both get the same CPU:
//!
//! - [`UserPair`]: two usertcp [`Stack`]s joined by a [`Link::pair`], the
//!   server and the client each with its own usertcp epoll, driven
//!   run-to-completion (`poll` both stacks, then `epoll_wait(0)` on each).
//! - [`KernelPair`]: non-blocking sockets over 127.0.0.1, the server and
//!   the client each with its own kernel epoll (`epoll_wait(0)`).
//! - [`SmolPair`]: two stock smoltcp `Interface`s over the same kind of
//!   link, one big `SocketSet` each, polled with `iface.poll`.
//!
//! The server is the same everywhere: an echo server (accept everything;
//! echo what arrives; close on end of stream). The clients run closed
//! loops of 64-byte requests ([`MSG`]): [`UserPair::rr`] and friends keep
//! one request in flight on each of a set of connections until a given
//! number of responses came back; [`UserPair::crr`] connects, sends one
//! request, reads the response and closes, with a fixed number of such
//! connections in flight.
//!
//! Clock: the stacks get `smoltcp::time::Instant`s made from one monotonic
//! [`std::time::Instant`] ([`now`]), read once per loop iteration.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use eventpoll::{CtlOp, EpollEvent, Errno, Events};
use netdev::{Link, LinkDevice};
use netstack::{AF_INET, IPPROTO_TCP, SOCK_NONBLOCK, SOCK_STREAM, Stack, StackConfig, TCP_NODELAY};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::{BoxedWorkload, boxed};
use crate::kernel;
use crate::report::Figure;

/// The server's address (198.18.0.0/15, the benchmark range).
pub const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The client's (first) address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The prefix both stacks are on.
pub const PREFIX: u8 = 15;
/// The server's port.
pub const PORT: u16 = 7;
/// The size of a request and of its response.
pub const MSG: usize = 64;
/// The request every client sends (the server echoes it).
const REQUEST: [u8; MSG] = [0x5a; MSG];
/// The MTU of the in-memory links.
pub const MTU: usize = 1500;
/// Packets each direction of a link can hold (back-pressure past it).
/// Small on purpose: a ring of 256 MTU-sized slots (384 KB) stays in the
/// CPU's cache, so a packet is read while the writer's copy is still hot.
/// With netdev's maximum of 65,536 slots (98 MB) every packet touched cold
/// memory: rr at 10k connections ran at ~0.36M req/s instead of ~0.75M,
/// pingpong at ~0.52M instead of ~0.67M (a scratch harness, shared
/// machine). netstack stops an egress pass when the device refuses a
/// packet, so a full ring costs one refused attempt per poll, not one per
/// waiting connection. Stock smoltcp uses the same link.
const LINK_CAPACITY: usize = 256;
/// Warm-up rounds before a request/response workload over many
/// connections is measured (see [`crate::measure::Config::warmup_iters`]).
/// TCP learns a connection's round-trip time from one sample per round
/// (RFC 6298): with a million connections all in flight a round takes
/// about 2-3 s, longer than smoltcp's 1 s minimum retransmission timeout,
/// and until each connection has backed off and then sampled that time,
/// responses still waiting for their turn are retransmitted. In a scratch
/// run of 12 rounds at 1M, rounds 1-3 carried 1.57-1.77 packets per request
/// each way (each retransmission costs a duplicate and its ACK), rounds 4
/// and later 1.00, and ran about 30 % faster. Four rounds here plus the
/// one of calibration put the first measured round at the sixth.
pub const WARMUP_ROUNDS: u64 = 4;
/// The listen backlog, and the most connections opened at once.
pub const BATCH: usize = 4096;
/// The epoll data of a listener (descriptors are small integers).
const LISTENER: u64 = u64::MAX;
/// Loop iterations without progress before a workload gives up.
const STALL: u64 = 50_000_000;

/// The benchmark clock: microseconds since the first call, monotonic.
pub fn now() -> smoltcp::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = ORIGIN.get_or_init(std::time::Instant::now);
    smoltcp::time::Instant::from_micros(origin.elapsed().as_micros() as i64)
}

fn errno(err: Errno) -> io::Error {
    err.into()
}

fn stalled(what: &str) -> io::Error {
    io::Error::other(format!("{what}: no progress (stalled)"))
}

/// The resident set size of this process (`VmRSS` in `/proc/self/status`),
/// in bytes.
pub fn rss_bytes() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("VmRSS:")?;
            let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some(kb * 1024)
        })
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/self/status"))
}

// ---------------------------------------------------------------------------
// rounds

/// Round accounting and pacing of the closed request/response loop that
/// every pair's `rr` runs.
///
/// A call asks for some rounds and returns when every connection has had
/// that many more responses. A connection sends its next request as soon
/// as its response is in, so calls do not end in a drain and the next
/// request carries the ACK of the response (a loop that waited for the
/// round to end would leave every ACK to the delayed-ACK timer); but it
/// may run at most one request ahead of the call's target, then it waits.
/// Without that bound a side that serves some connections over and over
/// while others wait would never finish a round: stock smoltcp's egress
/// visits sockets in set order, so with the link full the first sockets
/// win every time and the last ones starve.
#[derive(Debug, Default)]
struct Rounds {
    /// Per connection, by the pair's slot for it (its descriptor, or its
    /// index).
    conns: Vec<RoundConn>,
    /// The response count that completes the current call.
    target: u64,
    /// Connections below `target`.
    behind: usize,
    /// Requests sent and not yet answered.
    outstanding: usize,
    /// How many requests beyond `target` a connection may send: 1 for the
    /// steady loop, 0 for exactly the rounds asked for.
    lead: u64,
    /// Responses counted since the pair was made, over all calls.
    responses: u64,
}

/// One connection's place in the [`Rounds`].
#[derive(Clone, Copy, Debug, Default)]
struct RoundConn {
    answered: u64,
    in_flight: bool,
}

impl Rounds {
    /// Starts `rounds` more rounds over the connections at `slots`, each
    /// connection at most `lead` requests ahead of them; returns the slots
    /// that must send a request now (each connection's first, or one that
    /// waited at the end of the previous call).
    fn start(&mut self, slots: impl Iterator<Item = usize>, rounds: u64, lead: u64) -> Vec<usize> {
        self.target += rounds;
        self.lead = lead;
        self.behind = 0;
        let mut send = Vec::new();
        for slot in slots {
            if self.conns.len() <= slot {
                self.conns.resize(slot + 1, RoundConn::default());
            }
            let c = &mut self.conns[slot];
            if c.answered < self.target {
                self.behind += 1;
            }
            if !c.in_flight && c.answered < self.target + lead {
                c.in_flight = true;
                self.outstanding += 1;
                send.push(slot);
            }
        }
        send
    }

    /// Plans a call of a pair's paced loop: `total / width` rounds (rounded
    /// up) over the first `width` of `slots`, each connection at most
    /// `lead` requests ahead. Returns the slots that must send a request
    /// now, `None` for no work (`total` 0), or an error for no connection.
    fn plan(
        &mut self,
        slots: impl ExactSizeIterator<Item = usize>,
        width: usize,
        total: u64,
        lead: u64,
        side: &str,
    ) -> io::Result<Option<Vec<usize>>> {
        let k = width.min(slots.len());
        if total == 0 {
            return Ok(None);
        }
        if k == 0 {
            return Err(io::Error::other(format!("{side} rr: no connection")));
        }
        let rounds = total.div_ceil(k as u64);
        Ok(Some(self.start(slots.take(k), rounds, lead)))
    }

    /// Counts a response on the connection at `slot`. Returns true if it
    /// must send its next request now: `resend` and at most `lead`
    /// requests ahead of the target.
    fn answer(&mut self, slot: usize, resend: bool) -> bool {
        if self.conns.len() <= slot {
            self.conns.resize(slot + 1, RoundConn::default());
        }
        let c = &mut self.conns[slot];
        c.answered += 1;
        c.in_flight = false;
        self.responses += 1;
        self.outstanding = self.outstanding.saturating_sub(1);
        if c.answered == self.target {
            self.behind = self.behind.saturating_sub(1);
        }
        let again = resend && c.answered < self.target + self.lead;
        if again {
            c.in_flight = true;
            self.outstanding += 1;
        }
        again
    }

    /// True while the loop must go on: the rounds are not complete
    /// (`resend`), or requests are still out (draining).
    fn running(&self, resend: bool) -> bool {
        if resend {
            self.behind > 0
        } else {
            self.outstanding > 0
        }
    }
}

/// Times `asked` responses of a pair's closed loop, `rr(asked)` being the
/// pair's `rr` over its connections (it returns the responses that came in
/// during the call), and returns the time `asked` responses take at the
/// rate measured.
///
/// A call ends when every connection has its response of the call's last
/// round, and by then the connections done early may already have the next
/// round's (each may run one ahead, see [`Rounds`]), so a call brings in
/// its rounds minus the previous call's lead plus its own. With many
/// connections a run is a single round (a round of 1M takes seconds), so
/// counting a call as the responses asked for was off by that lead: up to
/// about 1 % of a round at 100k and 1M in a run on 2026-12-03, but a whole
/// round at worst, when stragglers hold a round open while everyone else
/// runs ahead. So the responses are counted, not assumed: calls go on until at
/// least half of `asked` came in (a second call is a whole round more, so
/// waiting for all of `asked` would double most runs), and the time is
/// scaled by `asked` over the count.
fn rr_timed(asked: u64, mut rr: impl FnMut(u64) -> io::Result<u64>) -> io::Result<Duration> {
    let start = std::time::Instant::now();
    let mut got = 0u64;
    while got < asked.div_ceil(2) {
        got += rr(asked - got)?;
    }
    Ok(at_rate(start.elapsed(), got, asked))
}

/// The time `asked` responses take at the rate of `got` in `elapsed`.
fn at_rate(elapsed: Duration, got: u64, asked: u64) -> Duration {
    elapsed.mul_f64(asked as f64 / got.max(1) as f64)
}

// ---------------------------------------------------------------------------
// usertcp

/// Two usertcp stacks over an in-memory link: an echo server listening on
/// [`PORT`] and a client, each with an epoll.
pub struct UserPair {
    /// The client stack.
    pub client: Stack<LinkDevice>,
    /// The server stack.
    pub server: Stack<LinkDevice>,
    cep: i32,
    sep: i32,
    listener: i32,
    /// Client descriptors of the connections opened by [`UserPair::open`].
    pub conns: Vec<i32>,
    /// Bytes of the current response received, by client descriptor.
    got: Vec<usize>,
    events: Vec<EpollEvent>,
    accepted: u64,
    /// The closed loop's rounds, by client descriptor (see
    /// [`UserPair::rr`]).
    rounds: Rounds,
}

impl UserPair {
    /// A pair with `buffer`-byte socket buffers; the client has
    /// `extra_addrs` more local addresses (198.18.1.0 and up) so that it
    /// can open more than ~28k connections to one port.
    pub fn new(buffer: usize, extra_addrs: usize) -> io::Result<UserPair> {
        let (a, b) = Link::pair_with(MTU, LINK_CAPACITY);
        let t = now();
        let mut sc = StackConfig::new(SERVER, PREFIX);
        sc.buffer_size = buffer;
        sc.max_fds = usize::MAX / 2;
        let mut cc = StackConfig::new(CLIENT, PREFIX);
        cc.buffer_size = buffer;
        cc.max_fds = usize::MAX / 2;
        cc.extra_addrs = (0..extra_addrs)
            .map(|i| {
                let i = i as u32 + 256;
                Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i)
            })
            .collect();
        let mut server = Stack::new(a, sc, t).map_err(errno)?;
        let mut client = Stack::new(b, cc, t).map_err(errno)?;
        let listener = server
            .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
            .map_err(errno)?;
        server
            .bind(listener, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .map_err(errno)?;
        server.listen(listener, BATCH as i32).map_err(errno)?;
        let sep = server.epoll_create1(0).map_err(errno)?;
        server
            .epoll_ctl(
                sep,
                CtlOp::Add.to_raw(),
                listener,
                Some(&EpollEvent::new(Events::IN, LISTENER)),
            )
            .map_err(errno)?;
        let cep = client.epoll_create1(0).map_err(errno)?;
        Ok(UserPair {
            client,
            server,
            cep,
            sep,
            listener,
            conns: Vec::new(),
            got: Vec::new(),
            events: vec![EpollEvent::default(); 1024],
            accepted: 0,
            rounds: Rounds::default(),
        })
    }

    /// Polls both stacks at the current time.
    fn poll(&mut self) {
        let t = now();
        self.client.poll(t);
        self.server.poll(t);
    }

    /// A non-blocking client socket with `TCP_NODELAY`, connecting to the
    /// server, watched by the client's epoll for `events`.
    fn connect(&mut self, events: Events) -> io::Result<i32> {
        let c = &mut self.client;
        let fd = c
            .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
            .map_err(errno)?;
        c.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)
            .map_err(errno)?;
        match c.connect(fd, SocketAddrV4::new(SERVER, PORT)) {
            Err(Errno::EINPROGRESS) | Ok(()) => {}
            Err(e) => return Err(errno(e)),
        }
        c.epoll_ctl(
            self.cep,
            CtlOp::Add.to_raw(),
            fd,
            Some(&EpollEvent::new(events, fd as u64)),
        )
        .map_err(errno)?;
        let slot = fd as usize;
        if self.got.len() <= slot {
            self.got.resize(slot + 1, 0);
        }
        self.got[slot] = 0;
        Ok(fd)
    }

    /// One pass of the echo server: `epoll_wait(0)`, then accept every
    /// pending connection, echo what arrived, close at end of stream.
    /// Returns the number of events handled.
    fn serve(&mut self) -> io::Result<usize> {
        let s = &mut self.server;
        let n = s
            .epoll_wait(self.sep, &mut self.events, 1024, 0)
            .map_err(errno)?;
        if n == 0 {
            return Ok(0);
        }
        let mut buf = [0u8; 2048];
        for i in 0..n {
            let data = self.events[i].data;
            if data == LISTENER {
                loop {
                    match s.accept4(self.listener, SOCK_NONBLOCK) {
                        Ok((fd, _)) => {
                            self.accepted += 1;
                            s.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)
                                .map_err(errno)?;
                            s.epoll_ctl(
                                self.sep,
                                CtlOp::Add.to_raw(),
                                fd,
                                Some(&EpollEvent::new(Events::IN, fd as u64)),
                            )
                            .map_err(errno)?;
                        }
                        Err(Errno::EAGAIN) => break,
                        Err(e) => return Err(errno(e)),
                    }
                }
                continue;
            }
            let fd = data as i32;
            match s.recv(fd, &mut buf) {
                Ok(0) => s.close(fd).map_err(errno)?,
                Ok(len) => {
                    let sent = s.send(fd, &buf[..len]).map_err(errno)?;
                    if sent != len {
                        return Err(io::Error::other("server: short send"));
                    }
                }
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(errno(e)),
            }
        }
        Ok(n)
    }

    /// Opens `n` more connections (at most [`BATCH`] in the handshake at
    /// once), each end watched for `IN` by its side's epoll.
    pub fn open(&mut self, n: usize) -> io::Result<()> {
        self.conns.reserve(n);
        let mut left = n;
        while left > 0 {
            let batch = left.min(BATCH);
            for _ in 0..batch {
                let fd = self.connect(Events::IN)?;
                self.conns.push(fd);
            }
            let want = self.accepted + batch as u64;
            let mut spins = 0u64;
            while self.accepted < want {
                self.poll();
                self.serve()?;
                spins += 1;
                if spins > STALL {
                    return Err(stalled("usertcp open"));
                }
            }
            left -= batch;
        }
        // Settle: the final ACKs and window updates.
        for _ in 0..16 {
            self.poll();
            self.serve()?;
        }
        Ok(())
    }

    /// About `total` request/responses of [`MSG`] bytes, closed loop over
    /// the connections `conns[..width]`: `total / width` (rounded up)
    /// rounds, each a response on every connection. A connection sends its
    /// next request as soon as its response is in, also across calls, at
    /// most one ahead of the rounds asked for (see [`Rounds`]), so that
    /// consecutive calls measure the steady state, not a burst of `width`
    /// requests and a drain each time. [`drain`](UserPair::drain) waits for
    /// the requests still out.
    ///
    /// Returns the responses that came in during the call. That is not
    /// `total`: responses a connection ran ahead by in the previous call
    /// count there, and this call's lead counts here (see [`rr_timed`]).
    pub fn rr(&mut self, width: usize, total: u64) -> io::Result<u64> {
        let before = self.rounds.responses;
        self.paced(width, total, 1)?;
        Ok(self.rounds.responses - before)
    }

    /// One request on every connection, and its response; no connection
    /// sends a second.
    pub fn request_each(&mut self) -> io::Result<()> {
        let n = self.conns.len();
        self.paced(n, n as u64, 0)
    }

    /// [`rr`](UserPair::rr) with each connection at most `lead` requests
    /// ahead of the rounds asked for.
    fn paced(&mut self, width: usize, total: u64, lead: u64) -> io::Result<()> {
        let slots = self.conns.iter().map(|&fd| fd as usize);
        let Some(send) = self.rounds.plan(slots, width, total, lead, "usertcp")? else {
            return Ok(());
        };
        for slot in send {
            self.client.send(slot as i32, &REQUEST).map_err(errno)?;
        }
        self.responses(true)
    }

    /// Waits for the responses to the requests [`rr`](UserPair::rr) left in
    /// flight.
    pub fn drain(&mut self) -> io::Result<()> {
        self.responses(false)
    }

    /// One turn of both applications' loop: poll both stacks, one pass of
    /// the echo server, then the client's `epoll_wait(0)`. Returns the
    /// client's events (in `self.events`).
    fn turn(&mut self) -> io::Result<usize> {
        self.poll();
        self.serve()?;
        self.client
            .epoll_wait(self.cep, &mut self.events, 1024, 0)
            .map_err(errno)
    }

    /// Runs both stacks until the current rounds are complete (`resend`:
    /// responses are followed by the next request on their connection, see
    /// [`Rounds::answer`]), or until no request is out (not `resend`).
    fn responses(&mut self, resend: bool) -> io::Result<()> {
        let mut buf = [0u8; 2048];
        let mut spins = 0u64;
        while self.rounds.running(resend) {
            let n = self.turn()?;
            for i in 0..n {
                let fd = self.events[i].data as i32;
                let len = match self.client.recv(fd, &mut buf) {
                    Ok(0) => return Err(io::Error::other("usertcp rr: server closed")),
                    Ok(len) => len,
                    Err(Errno::EAGAIN) => continue,
                    Err(e) => return Err(errno(e)),
                };
                let got = &mut self.got[fd as usize];
                *got += len;
                while *got >= MSG {
                    *got -= MSG;
                    spins = 0;
                    if self.rounds.answer(fd as usize, resend) {
                        self.client.send(fd, &REQUEST).map_err(errno)?;
                    }
                }
            }
            spins += 1;
            if spins > STALL {
                return Err(stalled("usertcp rr"));
            }
        }
        Ok(())
    }

    /// Closes every connection [`open`](UserPair::open) made, client first
    /// (the server closes at end of stream), and runs both stacks until
    /// neither holds a connection. The client's tuples stay in TIME-WAIT,
    /// without buffers.
    pub fn close_all(&mut self) -> io::Result<()> {
        for fd in self.conns.drain(..) {
            self.client.close(fd).map_err(errno)?;
        }
        let mut spins = 0u64;
        loop {
            // The client's loop goes on too: its epoll drops the watches of
            // closed descriptors when it next waits (eventpoll reaps them
            // lazily), and nothing is left to report.
            if self.turn()? > 0 {
                return Err(io::Error::other(
                    "usertcp close: an event on a closed socket",
                ));
            }
            if self.client.stats().connections == 0 && self.server.stats().connections == 0 {
                break;
            }
            spins += 1;
            if spins > STALL {
                return Err(stalled("usertcp close"));
            }
        }
        Ok(())
    }

    /// `total` connections, each: connect, one [`MSG`]-byte request, its
    /// response, close; `width` of them in flight at once.
    pub fn crr(&mut self, width: usize, total: u64) -> io::Result<()> {
        self.drain()?;
        let req = REQUEST;
        let mut started = 0u64;
        let mut done = 0u64;
        let mut sent: Vec<bool> = Vec::new();
        let start = |pair: &mut UserPair, sent: &mut Vec<bool>| -> io::Result<()> {
            let fd = pair.connect(Events::IN | Events::OUT)?;
            if sent.len() <= fd as usize {
                sent.resize(fd as usize + 1, false);
            }
            sent[fd as usize] = false;
            Ok(())
        };
        while started < total.min(width as u64) {
            start(self, &mut sent)?;
            started += 1;
        }
        let mut buf = [0u8; 2048];
        let mut spins = 0u64;
        while done < total {
            self.poll();
            self.serve()?;
            let n = self
                .client
                .epoll_wait(self.cep, &mut self.events, 1024, 0)
                .map_err(errno)?;
            for i in 0..n {
                let ev = self.events[i];
                let fd = ev.data as i32;
                if !sent[fd as usize] {
                    if ev.events.intersects(Events::ERR | Events::HUP) {
                        return Err(io::Error::other("usertcp crr: connect failed"));
                    }
                    if ev.events.contains(Events::OUT) {
                        self.client.send(fd, &req).map_err(errno)?;
                        sent[fd as usize] = true;
                        // Only the response matters now.
                        self.client
                            .epoll_ctl(
                                self.cep,
                                CtlOp::Mod.to_raw(),
                                fd,
                                Some(&EpollEvent::new(Events::IN, fd as u64)),
                            )
                            .map_err(errno)?;
                    }
                    continue;
                }
                let len = match self.client.recv(fd, &mut buf) {
                    Ok(0) => return Err(io::Error::other("usertcp crr: server closed early")),
                    Ok(len) => len,
                    Err(Errno::EAGAIN) => continue,
                    Err(e) => return Err(errno(e)),
                };
                let got = &mut self.got[fd as usize];
                *got += len;
                if *got >= MSG {
                    self.client.close(fd).map_err(errno)?;
                    done += 1;
                    spins = 0;
                    if started < total {
                        start(self, &mut sent)?;
                        started += 1;
                    }
                }
            }
            spins += 1;
            if spins > STALL {
                return Err(stalled("usertcp crr"));
            }
        }
        Ok(())
    }
}

/// A usertcp workload: `per_iter` request/responses over the pair's
/// connections per iteration, `width` in flight.
pub fn user_rr(
    mut pair: UserPair,
    width: usize,
    per_iter: u64,
) -> impl FnMut(u64) -> io::Result<Duration> {
    move |iters| rr_timed(iters * per_iter, |asked| pair.rr(width, asked))
}

// ---------------------------------------------------------------------------
// kernel

/// Per-descriptor state of a kernel client connection.
#[derive(Default)]
struct KConn {
    fd: Option<OwnedFd>,
    got: usize,
    sent: bool,
}

/// The kernel echo server: a listener on 127.0.0.1 and an epoll watching
/// it and every accepted connection.
struct KernelServer {
    listener: OwnedFd,
    sep: OwnedFd,
    /// Server connections, by descriptor number.
    served: Vec<Option<OwnedFd>>,
    events: Vec<libc::epoll_event>,
    /// Connections accepted so far (shared with the client side when the
    /// server runs on its own thread).
    accepted: Arc<AtomicU64>,
}

/// Where a [`KernelPair`]'s server runs.
enum ServerSide {
    /// On the client's thread: the client's loops call its `serve`.
    Here(KernelServer),
    /// On a thread of its own, pinned to another CPU (the two-core rows).
    Thread {
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<io::Result<()>>>,
    },
}

/// Empty polls after which the server thread of a two-core pair blocks in
/// `epoll_wait` (10 ms at a time) instead of spinning: it spins while a
/// workload runs and sleeps while the other sides are measured.
const SPIN_POLLS: u32 = 20_000;

/// An echo server and a client over 127.0.0.1, each with a kernel epoll:
/// on one thread ([`KernelPair::new`]), or the server on a thread of its
/// own pinned to another CPU ([`KernelPair::two_cores`]).
pub struct KernelPair {
    server: ServerSide,
    port: u16,
    cep: OwnedFd,
    /// Client connections, by descriptor number.
    clients: Vec<KConn>,
    /// Client descriptor numbers of the connections opened by `open`.
    pub conns: Vec<i32>,
    accepted: Arc<AtomicU64>,
    /// See [`UserPair::rr`]; by client descriptor.
    rounds: Rounds,
}

fn slot<T: Default>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

impl KernelServer {
    fn new() -> io::Result<KernelServer> {
        let (listener, _) = kernel::tcp_listener(BATCH as i32)?;
        let sep = kernel::epoll_create1(kernel::EPOLL_CLOEXEC)?;
        kernel::epoll_ctl(
            sep.as_fd(),
            kernel::CtlOp::Add,
            listener.as_fd(),
            kernel::EPOLLIN,
            LISTENER,
        )?;
        Ok(KernelServer {
            listener,
            sep,
            served: Vec::new(),
            events: vec![kernel::empty_event(); 1024],
            accepted: Arc::new(AtomicU64::new(0)),
        })
    }

    fn port(&self) -> io::Result<u16> {
        kernel::local_port(self.listener.as_fd())
    }

    /// One pass of the echo server (see [`UserPair`]'s): `epoll_wait` with
    /// `timeout_ms`, accept, echo, close at end of stream.
    fn serve(&mut self, timeout_ms: i32) -> io::Result<usize> {
        let n = kernel::epoll_wait(self.sep.as_fd(), &mut self.events, timeout_ms)?;
        if n == 0 {
            return Ok(0);
        }
        let mut buf = [0u8; 2048];
        for i in 0..n {
            let data = self.events[i].u64;
            if data == LISTENER {
                loop {
                    match kernel::tcp_accept(self.listener.as_fd()) {
                        Ok(fd) => {
                            self.accepted.fetch_add(1, Ordering::Release);
                            let raw = fd.as_raw_fd();
                            kernel::epoll_ctl(
                                self.sep.as_fd(),
                                kernel::CtlOp::Add,
                                fd.as_fd(),
                                kernel::EPOLLIN,
                                raw as u64,
                            )?;
                            *slot(&mut self.served, raw as usize) = Some(fd);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let raw = data as usize;
            let Some(fd) = self.served.get(raw).and_then(Option::as_ref) else {
                continue;
            };
            match kernel::recv(fd.as_fd(), &mut buf) {
                Ok(0) => self.served[raw] = None,
                Ok(len) => {
                    if kernel::send(fd.as_fd(), &buf[..len])? != len {
                        return Err(io::Error::other("kernel server: short send"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// The loop of a server thread: spin on `epoll_wait(0)` while there is
    /// work, block after [`SPIN_POLLS`] empty polls, stop when asked.
    fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut idle = 0u32;
        while !stop.load(Ordering::Acquire) {
            let timeout = if idle >= SPIN_POLLS { 10 } else { 0 };
            if self.serve(timeout)? == 0 {
                idle = idle.saturating_add(1);
            } else {
                idle = 0;
            }
        }
        Ok(())
    }
}

impl KernelPair {
    /// A listener on 127.0.0.1 and two epolls, all on the calling thread.
    pub fn new() -> io::Result<KernelPair> {
        let server = KernelServer::new()?;
        let port = server.port()?;
        let accepted = server.accepted.clone();
        KernelPair::with_server(ServerSide::Here(server), port, accepted)
    }

    /// The same with the server on a thread of its own, pinned to `cpu`;
    /// the client stays on the calling thread.
    pub fn two_cores(cpu: usize) -> io::Result<KernelPair> {
        let server = KernelServer::new()?;
        let port = server.port()?;
        let accepted = server.accepted.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("kernel-server".to_owned())
            .spawn(move || {
                kernel::set_thread_affinity(&[cpu])?;
                server.run(&flag)
            })?;
        KernelPair::with_server(
            ServerSide::Thread {
                stop,
                handle: Some(handle),
            },
            port,
            accepted,
        )
    }

    fn with_server(
        server: ServerSide,
        port: u16,
        accepted: Arc<AtomicU64>,
    ) -> io::Result<KernelPair> {
        Ok(KernelPair {
            server,
            port,
            cep: kernel::epoll_create1(kernel::EPOLL_CLOEXEC)?,
            clients: Vec::new(),
            conns: Vec::new(),
            accepted,
            rounds: Rounds::default(),
        })
    }

    fn connect(&mut self, events: u32) -> io::Result<i32> {
        let fd = kernel::tcp_connect(self.port)?;
        let raw = fd.as_raw_fd();
        kernel::epoll_ctl(
            self.cep.as_fd(),
            kernel::CtlOp::Add,
            fd.as_fd(),
            events,
            raw as u64,
        )?;
        *slot(&mut self.clients, raw as usize) = KConn {
            fd: Some(fd),
            got: 0,
            sent: false,
        };
        Ok(raw)
    }

    /// One pass of the server if it runs on this thread; with a server
    /// thread, checks that it is still running.
    fn serve(&mut self) -> io::Result<usize> {
        match &mut self.server {
            ServerSide::Here(server) => server.serve(0),
            ServerSide::Thread { handle, .. } => {
                if handle.as_ref().is_some_and(|h| !h.is_finished()) {
                    return Ok(0);
                }
                match handle.take().map(JoinHandle::join) {
                    Some(Ok(Err(err))) => Err(err),
                    _ => Err(io::Error::other("kernel server thread stopped")),
                }
            }
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Acquire)
    }

    /// Opens `n` more connections (see [`UserPair::open`]). Stops at the
    /// first failure (e.g. `EMFILE`) and returns it.
    pub fn open(&mut self, n: usize) -> io::Result<()> {
        let mut left = n;
        while left > 0 {
            let batch = left.min(BATCH);
            // Counted before connecting: a server thread accepts at once.
            let want = self.accepted() + batch as u64;
            for _ in 0..batch {
                let fd = self.connect(kernel::EPOLLIN)?;
                self.conns.push(fd);
            }
            let mut spins = 0u64;
            while self.accepted() < want {
                self.serve()?;
                if matches!(self.server, ServerSide::Thread { .. }) {
                    // The server thread accepts; give it time.
                    std::thread::sleep(Duration::from_micros(20));
                }
                spins += 1;
                if spins > STALL {
                    return Err(stalled("kernel open"));
                }
            }
            left -= batch;
        }
        Ok(())
    }

    fn client_fd(&self, raw: i32) -> io::Result<std::os::fd::BorrowedFd<'_>> {
        self.clients
            .get(raw as usize)
            .and_then(|c| c.fd.as_ref())
            .map(|fd| fd.as_fd())
            .ok_or_else(|| io::Error::other("kernel: unknown client descriptor"))
    }

    /// See [`UserPair::rr`].
    pub fn rr(&mut self, width: usize, total: u64) -> io::Result<u64> {
        let before = self.rounds.responses;
        self.paced(width, total, 1)?;
        Ok(self.rounds.responses - before)
    }

    /// See [`UserPair::request_each`].
    pub fn request_each(&mut self) -> io::Result<()> {
        let n = self.conns.len();
        self.paced(n, n as u64, 0)
    }

    /// See [`UserPair::paced`].
    fn paced(&mut self, width: usize, total: u64, lead: u64) -> io::Result<()> {
        let slots = self.conns.iter().map(|&fd| fd as usize);
        let Some(send) = self.rounds.plan(slots, width, total, lead, "kernel")? else {
            return Ok(());
        };
        for slot in send {
            kernel::send(self.client_fd(slot as i32)?, &REQUEST)?;
        }
        self.responses(true)
    }

    /// See [`UserPair::drain`].
    pub fn drain(&mut self) -> io::Result<()> {
        self.responses(false)
    }

    /// See [`UserPair::responses`].
    fn responses(&mut self, resend: bool) -> io::Result<()> {
        self.pump(resend, None).map(drop)
    }

    /// The closed loop of [`KernelPair::rr`] bounded by time instead of by
    /// a count: rounds over `conns[..width]` back to back, paced as `rr`
    /// paces them (see [`Rounds`]), until `deadline` (the clock is read
    /// once per pass of the loop, that is every 1,024 client events at
    /// most). Returns the responses that came in.
    ///
    /// The loop never drains: the requests in flight at the deadline stay
    /// in flight, and the next call (of this or of `rr`) goes on where this
    /// one stopped, so every call runs with all `width` connections busy.
    pub fn rr_until(&mut self, width: usize, deadline: std::time::Instant) -> io::Result<u64> {
        let k = width.min(self.conns.len());
        if k == 0 {
            return Err(io::Error::other("kernel rr: no connection"));
        }
        self.pump(true, Some((k, deadline)))
    }

    /// Runs the client and (on this thread) the server and counts the
    /// responses. Without a deadline: until the current rounds are
    /// complete (`resend`) or no request is out (draining). With `(k,
    /// deadline)`: rounds over `conns[..k]` one after the other until the
    /// deadline.
    fn pump(
        &mut self,
        resend: bool,
        until: Option<(usize, std::time::Instant)>,
    ) -> io::Result<u64> {
        let mut done = 0u64;
        let mut buf = [0u8; 2048];
        let mut events = vec![kernel::empty_event(); 1024];
        let mut spins = 0u64;
        loop {
            match until {
                None if !self.rounds.running(resend) => break,
                None => {}
                Some((_, deadline)) if std::time::Instant::now() >= deadline => break,
                // The round is complete: the next one starts.
                Some((k, _)) if !self.rounds.running(true) => {
                    let slots = self.conns[..k].iter().map(|&fd| fd as usize);
                    for slot in self.rounds.start(slots, 1, 1) {
                        kernel::send(self.client_fd(slot as i32)?, &REQUEST)?;
                    }
                }
                Some(_) => {}
            }
            self.serve()?;
            let n = kernel::epoll_wait(self.cep.as_fd(), &mut events, 0)?;
            for ev in &events[..n] {
                let raw = ev.u64 as i32;
                let len = match kernel::recv(self.client_fd(raw)?, &mut buf) {
                    Ok(0) => return Err(io::Error::other("kernel rr: server closed")),
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                let c = &mut self.clients[raw as usize];
                c.got += len;
                while c.got >= MSG {
                    c.got -= MSG;
                    done += 1;
                    spins = 0;
                    if self.rounds.answer(raw as usize, resend) {
                        let fd = c.fd.as_ref().map(|f| f.as_fd());
                        if let Some(fd) = fd {
                            kernel::send(fd, &REQUEST)?;
                        }
                    }
                }
            }
            spins += 1;
            if spins > STALL {
                return Err(stalled("kernel rr"));
            }
        }
        Ok(done)
    }

    /// See [`UserPair::crr`].
    pub fn crr(&mut self, width: usize, total: u64) -> io::Result<()> {
        self.drain()?;
        let req = REQUEST;
        let both = kernel::EPOLLIN | kernel::EPOLLOUT;
        let mut started = 0u64;
        while started < total.min(width as u64) {
            self.connect(both)?;
            started += 1;
        }
        let mut done = 0u64;
        let mut buf = [0u8; 2048];
        let mut events = vec![kernel::empty_event(); 1024];
        let mut spins = 0u64;
        while done < total {
            self.serve()?;
            let n = kernel::epoll_wait(self.cep.as_fd(), &mut events, 0)?;
            for ev in &events[..n] {
                let raw = ev.u64 as i32;
                let flags = ev.events;
                let c = &mut self.clients[raw as usize];
                let Some(fd) = c.fd.as_ref() else { continue };
                if !c.sent {
                    if flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                        return Err(io::Error::other("kernel crr: connect failed"));
                    }
                    if flags & kernel::EPOLLOUT != 0 {
                        kernel::send(fd.as_fd(), &req)?;
                        c.sent = true;
                        kernel::epoll_ctl(
                            self.cep.as_fd(),
                            kernel::CtlOp::Mod,
                            fd.as_fd(),
                            kernel::EPOLLIN,
                            raw as u64,
                        )?;
                    }
                    continue;
                }
                let len = match kernel::recv(fd.as_fd(), &mut buf) {
                    Ok(0) => return Err(io::Error::other("kernel crr: server closed early")),
                    Ok(len) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                };
                c.got += len;
                if c.got >= MSG {
                    // Closing the descriptor removes it from the epoll.
                    c.fd = None;
                    done += 1;
                    spins = 0;
                    if started < total {
                        self.connect(both)?;
                        started += 1;
                    }
                }
            }
            spins += 1;
            if spins > STALL {
                return Err(stalled("kernel crr"));
            }
        }
        Ok(())
    }
}

impl Drop for KernelPair {
    fn drop(&mut self) {
        if let ServerSide::Thread { stop, handle } = &mut self.server {
            stop.store(true, Ordering::Release);
            if let Some(handle) = handle.take() {
                let _ = handle.join();
            }
        }
    }
}

/// The kernel twin of [`user_rr`].
pub fn kernel_rr(
    mut pair: KernelPair,
    width: usize,
    per_iter: u64,
) -> impl FnMut(u64) -> io::Result<Duration> {
    move |iters| rr_timed(iters * per_iter, |asked| pair.rr(width, asked))
}

// ---------------------------------------------------------------------------
// stock smoltcp

/// Two stock smoltcp interfaces over an in-memory link, one big
/// `SocketSet` each. Connection `i` is `(client[i], server[i])`.
pub struct SmolPair {
    cdev: LinkDevice,
    sdev: LinkDevice,
    ciface: Interface,
    siface: Interface,
    cset: SocketSet<'static>,
    sset: SocketSet<'static>,
    conns: Vec<(SocketHandle, SocketHandle)>,
    buffer: usize,
    /// Bytes of the current response received, by connection.
    got: Vec<usize>,
    /// Bytes the clients received in all, responses and parts of them.
    received: u64,
    /// See [`UserPair::rr`]; by connection index.
    rounds: Rounds,
}

/// A stock smoltcp interface on `dev` at `addr` (the benchmark prefix).
pub fn smol_iface(dev: &mut LinkDevice, addr: Ipv4Addr, seed: u64) -> Interface {
    let mut config = IfaceConfig::new(HardwareAddress::Ip);
    config.random_seed = seed;
    let mut iface = Interface::new(config, dev, now());
    iface.update_ip_addrs(|addrs| {
        // A fresh interface has room for an address: cannot fail.
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(addr), PREFIX));
    });
    iface
}

fn smol_socket(buffer: usize) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buffer]),
        tcp::SocketBuffer::new(vec![0; buffer]),
    );
    s.set_nagle_enabled(false);
    s
}

impl SmolPair {
    /// An empty pair with `buffer`-byte socket buffers.
    pub fn new(buffer: usize) -> SmolPair {
        let (mut sdev, mut cdev) = Link::pair_with(MTU, LINK_CAPACITY);
        let siface = smol_iface(&mut sdev, SERVER, 0x5eed_0001);
        let ciface = smol_iface(&mut cdev, CLIENT, 0x5eed_0002);
        SmolPair {
            cdev,
            sdev,
            ciface,
            siface,
            cset: SocketSet::new(Vec::new()),
            sset: SocketSet::new(Vec::new()),
            conns: Vec::new(),
            buffer,
            got: Vec::new(),
            received: 0,
            rounds: Rounds::default(),
        }
    }

    /// Opens `n` connections. They are established in small temporary
    /// socket sets (stock smoltcp scans its whole set per packet, so a
    /// handshake in the big set would make set-up quadratic) and then
    /// moved into the big sets.
    pub fn open(&mut self, n: usize) -> io::Result<()> {
        const SMOL_BATCH: usize = 500;
        const PORTS: usize = 60_000;
        let mut left = n;
        while left > 0 {
            let batch = left.min(SMOL_BATCH);
            let mut cset = SocketSet::new(Vec::with_capacity(batch));
            let mut sset = SocketSet::new(Vec::with_capacity(batch));
            let mut handles = Vec::with_capacity(batch);
            for _ in 0..batch {
                let i = self.conns.len() + handles.len();
                let local = 1024 + (i % PORTS) as u16;
                let port = 5000 + (i / PORTS) as u16;
                let mut s = smol_socket(self.buffer);
                s.listen(port)
                    .map_err(|e| io::Error::other(format!("smoltcp listen: {e}")))?;
                let sh = sset.add(s);
                let mut c = smol_socket(self.buffer);
                c.connect(self.ciface.context(), (SERVER, port), local)
                    .map_err(|e| io::Error::other(format!("smoltcp connect: {e}")))?;
                let ch = cset.add(c);
                handles.push((ch, sh));
            }
            let mut spins = 0u64;
            loop {
                let t = now();
                self.ciface.poll(t, &mut self.cdev, &mut cset);
                self.siface.poll(t, &mut self.sdev, &mut sset);
                let up = handles.iter().all(|&(ch, sh)| {
                    cset.get::<tcp::Socket>(ch).state() == tcp::State::Established
                        && sset.get::<tcp::Socket>(sh).state() == tcp::State::Established
                });
                if up {
                    break;
                }
                spins += 1;
                if spins > STALL {
                    return Err(stalled("smoltcp open"));
                }
            }
            for (ch, sh) in handles {
                let c = self.cset.add(cset.remove(ch));
                let s = self.sset.add(sset.remove(sh));
                self.conns.push((c, s));
            }
            left -= batch;
        }
        Ok(())
    }

    /// See [`UserPair::rr`]: the same closed loop over connections
    /// `0..width`. The server echoes from its big set, visiting the
    /// connections that have data.
    pub fn rr(&mut self, width: usize, total: u64) -> io::Result<u64> {
        let k = width.min(self.conns.len());
        let slots = 0..self.conns.len();
        let before = self.rounds.responses;
        let Some(send) = self.rounds.plan(slots, width, total, 1, "smoltcp")? else {
            return Ok(0);
        };
        self.send_requests(send)?;
        self.pump(k, None)?;
        Ok(self.rounds.responses - before)
    }

    /// The closed loop of [`SmolPair::rr`] bounded by time instead of by a
    /// count, as [`KernelPair::rr_until`]: rounds over connections
    /// `0..width` back to back, paced as `rr` paces them (see [`Rounds`]:
    /// no connection more than one request ahead of the round, so the
    /// sockets first in the set, which smoltcp's egress serves first,
    /// cannot run ahead of the others), until `deadline` (the clock is
    /// read once per pass of the loop). Returns the responses that came in,
    /// each a whole [`MSG`]-byte response to a request of this loop.
    ///
    /// The loop never drains: requests in flight at the deadline stay in
    /// flight, and the next call goes on where this one stopped.
    pub fn rr_until(&mut self, width: usize, deadline: std::time::Instant) -> io::Result<u64> {
        let k = width.min(self.conns.len());
        if k == 0 {
            return Err(io::Error::other("smoltcp rr: no connection"));
        }
        self.pump(k, Some(deadline))
    }

    /// Queues a request on each connection at `slots`.
    fn send_requests(&mut self, slots: Vec<usize>) -> io::Result<()> {
        for slot in slots {
            let (ch, _) = self.conns[slot];
            self.cset
                .get_mut::<tcp::Socket>(ch)
                .send_slice(&REQUEST)
                .map_err(|e| io::Error::other(format!("smoltcp send: {e}")))?;
        }
        Ok(())
    }

    /// Polls both interfaces, echoes on the server and counts the
    /// responses of connections `0..k`. Without a deadline: until the
    /// current rounds are complete. With one: rounds one after the other
    /// until the deadline. Returns the responses counted.
    fn pump(&mut self, k: usize, deadline: Option<std::time::Instant>) -> io::Result<u64> {
        self.got.resize(self.conns.len(), 0);
        let mut done = 0u64;
        let mut buf = [0u8; 2048];
        let mut spins = 0u64;
        loop {
            match deadline {
                None if self.rounds.behind == 0 => break,
                None => {}
                Some(deadline) if std::time::Instant::now() >= deadline => break,
                // The round is complete: the next one starts.
                Some(_) if !self.rounds.running(true) => {
                    let send = self.rounds.start(0..k, 1, 1);
                    self.send_requests(send)?;
                }
                Some(_) => {}
            }
            let t = now();
            self.ciface.poll(t, &mut self.cdev, &mut self.cset);
            self.siface.poll(t, &mut self.sdev, &mut self.sset);
            for (i, &(ch, sh)) in self.conns[..k].iter().enumerate() {
                let s = self.sset.get_mut::<tcp::Socket>(sh);
                if s.can_recv() {
                    let len = s
                        .recv_slice(&mut buf)
                        .map_err(|e| io::Error::other(format!("smoltcp recv: {e}")))?;
                    s.send_slice(&buf[..len])
                        .map_err(|e| io::Error::other(format!("smoltcp send: {e}")))?;
                }
                let c = self.cset.get_mut::<tcp::Socket>(ch);
                if c.can_recv() {
                    let len = c
                        .recv_slice(&mut buf)
                        .map_err(|e| io::Error::other(format!("smoltcp recv: {e}")))?;
                    self.received += len as u64;
                    self.got[i] += len;
                    while self.got[i] >= MSG {
                        self.got[i] -= MSG;
                        done += 1;
                        spins = 0;
                        if self.rounds.answer(i, true) {
                            c.send_slice(&REQUEST)
                                .map_err(|e| io::Error::other(format!("smoltcp send: {e}")))?;
                        }
                    }
                }
            }
            spins += 1;
            if spins > STALL {
                return Err(stalled("smoltcp rr"));
            }
        }
        Ok(done)
    }
}

/// The smoltcp twin of [`user_rr`].
pub fn smol_rr(
    mut pair: SmolPair,
    width: usize,
    per_iter: u64,
) -> impl FnMut(u64) -> io::Result<Duration> {
    move |iters| rr_timed(iters * per_iter, |asked| pair.rr(width, asked))
}

/// The `rr` workload of stock smoltcp bounded by time, for connection
/// counts where a whole round takes too long to measure (see
/// [`crate::scenarios::rr`]): one iteration is a window of `window` of the
/// closed loop of [`SmolPair::rr_until`] over `width` connections, and the
/// time it reports is the time a round of `width` requests takes at the
/// window's rate (the window's time × `width` / its responses), so that
/// [`requests_per_second`]`(figure, width)` is the window's responses per
/// second, as for a side measured in whole rounds. Every window is logged
/// in `log`. A window without a single response is an error (stalled).
pub fn smol_rr_windows(
    mut pair: SmolPair,
    width: usize,
    window: Duration,
    log: Rc<RefCell<WindowLog>>,
) -> impl FnMut(u64) -> io::Result<Duration> {
    move |iters| {
        let mut round_time = Duration::ZERO;
        for _ in 0..iters {
            let start = std::time::Instant::now();
            let responses = pair.rr_until(width, start + window)?;
            let elapsed = start.elapsed();
            if responses == 0 {
                return Err(io::Error::other(format!(
                    "smoltcp rr: no response in {:.1} s",
                    elapsed.as_secs_f64()
                )));
            }
            round_time += elapsed.mul_f64(width as f64 / responses as f64);
            let answered = pair.rounds.conns.iter().map(|c| c.answered).collect();
            log.borrow_mut().windows.push(Window {
                responses,
                elapsed,
                answered,
            });
        }
        Ok(round_time)
    }
}

/// The windows a time-bounded side ran ([`smol_rr_windows`]), in order:
/// warm-up, then the measured runs.
#[derive(Debug, Default)]
pub struct WindowLog {
    /// One entry per window.
    pub windows: Vec<Window>,
}

/// One window of [`smol_rr_windows`].
#[derive(Debug)]
pub struct Window {
    /// Whole responses counted in the window.
    pub responses: u64,
    /// The window's wall time.
    pub elapsed: Duration,
    /// Each connection's responses so far, at the end of the window.
    answered: Vec<u64>,
}

impl Window {
    /// Responses per second.
    pub fn rate(&self) -> f64 {
        self.responses as f64 / self.elapsed.as_secs_f64()
    }
}

/// What the last windows of a [`WindowLog`] (the measured ones) saw.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowSummary {
    /// The windows summed up.
    pub windows: usize,
    /// Their time in all.
    pub time: Duration,
    /// The windows before them (warm-up), and their time.
    pub before: (usize, Duration),
    /// Responses counted in them.
    pub responses: u64,
    /// The slowest and the fastest window, responses per second.
    pub spread: (f64, f64),
    /// Connections with at least one response in them.
    pub answered: usize,
    /// The fewest and the most responses one of those connections had in
    /// them.
    pub per_conn: (u64, u64),
    /// The first and the last of those connections (their index in the
    /// socket sets).
    pub slots: (usize, usize),
}

impl WindowLog {
    /// A summary of the last `last` windows (all of them if fewer), or
    /// `None` with no window.
    pub fn summary(&self, last: usize) -> Option<WindowSummary> {
        let split = self.windows.len().saturating_sub(last.max(1));
        let (before, measured) = self.windows.split_at(split);
        let end = &measured.last()?.answered;
        let deltas = end.iter().enumerate().map(|(i, &a)| {
            let start = before.last().and_then(|w| w.answered.get(i)).copied();
            a.saturating_sub(start.unwrap_or(0))
        });
        let slots: Vec<(usize, u64)> = deltas.enumerate().filter(|&(_, d)| d > 0).collect();
        let answered: Vec<u64> = slots.iter().map(|&(_, d)| d).collect();
        let rates = measured.iter().map(Window::rate);
        Some(WindowSummary {
            windows: measured.len(),
            time: measured.iter().map(|w| w.elapsed).sum(),
            before: (before.len(), before.iter().map(|w| w.elapsed).sum()),
            responses: measured.iter().map(|w| w.responses).sum(),
            spread: (
                rates.clone().fold(f64::INFINITY, f64::min),
                rates.fold(0.0, f64::max),
            ),
            answered: answered.len(),
            per_conn: (
                answered.iter().copied().min().unwrap_or(0),
                answered.iter().copied().max().unwrap_or(0),
            ),
            slots: (
                slots.first().map_or(0, |&(i, _)| i),
                slots.last().map_or(0, |&(i, _)| i),
            ),
        })
    }
}

/// A figure in nanoseconds per operation as operations per second.
pub fn per_second(figure: Figure) -> Figure {
    match figure {
        Figure::Value(ns) if ns > 0.0 => Figure::Value(1e9 / ns),
        Figure::Value(ns) => Figure::Error(format!("{ns} ns per operation")),
        other => other,
    }
}

/// Nanoseconds per iteration of `per_iter` request/responses as requests
/// per second.
pub fn requests_per_second(figure: Figure, per_iter: usize) -> Figure {
    per_second(match figure {
        Figure::Value(ns) => Figure::Value(ns / per_iter.max(1) as f64),
        other => other,
    })
}

/// The `rr` workload (one iteration: a round of a response on every
/// connection) on each side that was set up: usertcp and stock smoltcp
/// over `n` connections, the kernel (if it runs in this process) over
/// `kn`. Returns the sides in that order (usertcp, kernel, smoltcp).
pub fn rr_sides(
    n: usize,
    user: io::Result<UserPair>,
    kern: Option<(io::Result<KernelPair>, usize)>,
    smol: Option<io::Result<SmolPair>>,
) -> Vec<io::Result<BoxedWorkload>> {
    let mut sides = vec![boxed(user.map(|p| user_rr(p, n, n as u64)))];
    if let Some((kern, kn)) = kern {
        sides.push(boxed(kern.map(|p| kernel_rr(p, kn, kn as u64))));
    }
    if let Some(smol) = smol {
        sides.push(boxed(smol.map(|p| smol_rr(p, n, n as u64))));
    }
    sides
}

/// The figure of a side that produced none.
pub fn not_measured() -> Figure {
    Figure::Error("not measured".to_owned())
}

/// A footer line describing an iteration of the `rr` workload (see
/// [`rr_timed`]).
pub const RR_ITERATION: &str = "one iteration = as many responses as connections, closed loop (each \
     connection sends its next request when its response is in, on across iterations; all \
     connections active); responses are counted as they come in, not assumed: a round ends with \
     some connections one ahead already, so a run goes on until its responses are in and its time \
     is scaled to them. The figure is requests per second.";

/// A footer line describing the three sides.
pub fn describe_sides(buffer: usize) -> String {
    format!(
        "usertcp: two netstack Stacks over netdev::Link::pair_with({MTU}, {LINK_CAPACITY}), \
         {buffer} B socket buffers, client and server each with a usertcp epoll, loop of poll + \
         epoll_wait(0); kernel: non-blocking TCP_NODELAY sockets over 127.0.0.1 with two kernel \
         epolls, epoll_wait(0); smoltcp: two stock Interfaces over the same kind of link, one \
         SocketSet each, iface.poll, {buffer} B buffers. Client and server share one thread on \
         every side."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_pair_with_a_server_thread_opens_echoes_and_stops() {
        let cpu = kernel::thread_affinity().unwrap()[0];
        let mut pair = KernelPair::two_cores(cpu).unwrap();
        pair.open(300).unwrap();
        assert_eq!(pair.conns.len(), 300);
        assert_eq!(pair.accepted(), 300);
        pair.rr(300, 3000).unwrap();
        // rr returns with connections still busy (the ones at most one
        // request ahead of the rounds asked for).
        assert!(pair.rounds.outstanding > 0 && pair.rounds.outstanding <= 300);
        pair.crr(8, 50).unwrap();
        assert_eq!(pair.rounds.outstanding, 0, "crr drains rr's requests first");
        // Dropping the pair stops and joins the server thread.
        drop(pair);
    }

    #[test]
    fn a_round_needs_every_connection_and_none_runs_more_than_one_ahead() {
        let mut r = Rounds::default();
        // The first call sends on every connection.
        assert_eq!(r.start([3usize, 5, 9].into_iter(), 1, 1), vec![3, 5, 9]);
        assert_eq!((r.behind, r.outstanding), (3, 3));
        // Slot 3's response completes its round; it may send one more.
        assert!(r.answer(3, true));
        assert_eq!(r.behind, 2);
        // That one answered too: two ahead would be too many, it waits.
        assert!(!r.answer(3, true));
        assert_eq!((r.behind, r.outstanding), (2, 2));
        assert!(r.answer(5, true));
        assert!(r.answer(9, true));
        assert!(!r.running(true));
        // Next call: slot 3, which waited, did its round already and may
        // send its next request; 5 and 9 are still in flight.
        assert_eq!(r.start([3usize, 5, 9].into_iter(), 1, 1), vec![3]);
        assert_eq!((r.target, r.behind, r.outstanding), (2, 2, 3));
        // Draining: responses are counted, nothing is sent.
        assert!(!r.answer(3, false));
        assert!(!r.answer(5, false));
        assert!(!r.answer(9, false));
        assert!(!r.running(false));
        // No lead: one round is one request per connection, no more.
        let mut once = Rounds::default();
        assert_eq!(once.start([1usize, 2].into_iter(), 1, 0), vec![1, 2]);
        assert!(!once.answer(1, true));
        assert!(!once.answer(2, true));
        assert!(!once.running(true));
        assert_eq!(once.outstanding, 0);
    }

    #[test]
    fn user_pair_keeps_requests_in_flight_across_calls_and_drains() {
        let mut pair = UserPair::new(4096, 0).unwrap();
        pair.open(20).unwrap();
        let first = pair.rr(20, 50).unwrap();
        assert!(pair.rounds.outstanding > 0);
        let second = pair.rr(20, 50).unwrap();
        // Two calls of 3 rounds (50 / 20, rounded up).
        assert_eq!(pair.rounds.target, 6);
        let answered = |pair: &UserPair, fd: i32| pair.rounds.conns[fd as usize].answered;
        assert!(
            pair.conns
                .iter()
                .all(|&fd| (6..=7).contains(&answered(&pair, fd)))
        );
        // The calls return the responses that came in, lead included.
        let total: u64 = pair.conns.iter().map(|&fd| answered(&pair, fd)).sum();
        assert_eq!(first + second, total);
        pair.drain().unwrap();
        assert_eq!(pair.rounds.outstanding, 0);
        // Nothing is left to arrive: the client's epoll stays empty.
        for _ in 0..8 {
            pair.poll();
            pair.serve().unwrap();
        }
        let n = pair
            .client
            .epoll_wait(pair.cep, &mut pair.events, 1024, 0)
            .unwrap();
        assert_eq!(n, 0);
        pair.crr(4, 10).unwrap();
        // With no connection there is no request to wait for.
        let mut empty = UserPair::new(4096, 0).unwrap();
        assert!(empty.rr(1, 1).is_err());
    }

    #[test]
    fn user_pair_close_all_frees_every_connection_and_keeps_the_tuples() {
        let mut pair = UserPair::new(netstack::MIN_BUFFER, 0).unwrap();
        pair.open(300).unwrap();
        pair.request_each().unwrap();
        pair.close_all().unwrap();
        assert!(pair.conns.is_empty());
        let (c, s) = (pair.client.stats(), pair.server.stats());
        assert_eq!((c.connections, s.connections), (0, 0), "{c:?} {s:?}");
        assert_eq!((c.sockets, s.sockets), (0, 1), "the listener stays");
        assert_eq!(c.time_wait, 300, "the client closed first");
        assert_eq!(
            (c.arena_buffers, s.arena_buffers),
            (2 * c.pooled, 2 * s.pooled)
        );
    }

    #[test]
    fn rr_timed_calls_until_the_responses_asked_for_came_in() {
        // A call returns far short (connections were ahead), the next one
        // returns a round and its lead: two calls, asked for the rest.
        let mut calls = Vec::new();
        let mut replies = [30u64, 100].into_iter();
        rr_timed(100, |asked| {
            calls.push(asked);
            Ok(replies.next().unwrap())
        })
        .unwrap();
        assert_eq!(calls, vec![100, 70]);
        // Half of what was asked for is enough (a second call would be a
        // whole round more).
        let mut calls = 0;
        rr_timed(100, |_| {
            calls += 1;
            Ok(50)
        })
        .unwrap();
        assert_eq!(calls, 1);
        // 130 responses in 1.3 s: 100 take 1 s.
        let t = at_rate(Duration::from_millis(1300), 130, 100);
        assert_eq!(t, Duration::from_secs(1));
        assert_eq!(
            at_rate(Duration::from_secs(1), 50, 100),
            Duration::from_secs(2)
        );
        // An error of the pair ends the run.
        let err = rr_timed(10, |_| Err(io::Error::other("stalled")));
        assert_eq!(err.unwrap_err().to_string(), "stalled");
    }

    #[test]
    fn smol_pair_keeps_requests_in_flight_across_calls() {
        let mut pair = SmolPair::new(4096);
        pair.open(10).unwrap();
        let first = pair.rr(10, 25).unwrap();
        let second = pair.rr(10, 25).unwrap();
        assert!(pair.got.iter().all(|&g| g < MSG));
        // Two calls of 3 rounds each (25 / 10, rounded up): every
        // connection had 6 responses, or 7 (one ahead).
        assert_eq!(pair.rounds.target, 6);
        assert!(
            pair.rounds.conns[..10]
                .iter()
                .all(|c| (6..=7).contains(&c.answered))
        );
        let total: u64 = pair.rounds.conns[..10].iter().map(|c| c.answered).sum();
        assert_eq!(first + second, total);
    }

    #[test]
    fn smol_rr_until_counts_whole_responses_and_paces_every_connection() {
        let mut pair = SmolPair::new(4096);
        pair.open(200).unwrap();
        let answered = |pair: &SmolPair| -> Vec<u64> {
            let mut a: Vec<u64> = pair.rounds.conns.iter().map(|c| c.answered).collect();
            a.resize(200, 0);
            a
        };
        let mut windows = 0;
        // Windows of 5 ms until every connection had a response.
        while answered(&pair).contains(&0) {
            windows += 1;
            assert!(windows <= 2000, "some connection never answered");
            let before = (pair.received, pair.got.iter().sum::<usize>() as u64);
            let counted: u64 = answered(&pair).iter().sum();
            let deadline = std::time::Instant::now() + Duration::from_millis(5);
            let done = pair.rr_until(200, deadline).unwrap();
            // Every response counted is MSG bytes the client received.
            let left = pair.got.iter().sum::<usize>() as u64;
            let bytes = pair.received - before.0 + before.1 - left;
            assert_eq!(bytes % MSG as u64, 0, "{bytes} bytes");
            assert_eq!(done, bytes / MSG as u64);
            assert_eq!(done, answered(&pair).iter().sum::<u64>() - counted);
            // Paced: within the running round (every connection has
            // finished the previous one), at most one request ahead.
            let a = answered(&pair);
            let (lo, hi) = (a.iter().min().unwrap(), a.iter().max().unwrap());
            assert!(hi - lo <= 2, "{lo}..{hi} after {windows} windows");
        }
        // A deadline already past: no pass, no response.
        assert_eq!(pair.rr_until(200, std::time::Instant::now()).unwrap(), 0);
        // rr goes on from there.
        pair.rr(200, 400).unwrap();
        assert!(answered(&pair).iter().all(|&a| a >= pair.rounds.target));
        let mut empty = SmolPair::new(4096);
        assert!(empty.rr_until(1, std::time::Instant::now()).is_err());
    }

    #[test]
    fn smol_rr_windows_reports_the_median_window_rate() {
        let mut pair = SmolPair::new(4096);
        pair.open(200).unwrap();
        let log = Rc::new(RefCell::new(WindowLog::default()));
        let window = Duration::from_millis(10);
        let cfg = crate::measure::Config {
            runs: 3,
            warmup: Duration::ZERO,
            warmup_iters: 2,
            run_time: window,
            quick: true,
            fixed_iters: Some(1),
        };
        let side = boxed(Ok(smol_rr_windows(pair, 200, window, log.clone())));
        let figures = super::super::measure_sides(&cfg, 1.0, vec![side]);
        let rate = requests_per_second(figures[0].clone(), 200)
            .value()
            .unwrap();
        let log = log.borrow();
        // Two windows of warm-up, then the three runs.
        assert_eq!(log.windows.len(), 5);
        assert!(log.windows.iter().all(|w| w.elapsed >= window));
        let mut rates: Vec<f64> = log.windows[2..].iter().map(Window::rate).collect();
        let median = crate::measure::median(&mut rates);
        // The side reports a round time (a `Duration`, whole nanoseconds)
        // that the rate is derived from: a round of a few hundred
        // microseconds rounds to a few parts in a million. Other windows'
        // rates differ from the median's by far more than 1e-4.
        assert!((rate - median).abs() <= median * 1e-4, "{rate} vs {median}");
        let sum = log.summary(3).unwrap();
        assert_eq!(sum.windows, 3);
        assert_eq!(sum.before.0, 2);
        let responses: u64 = log.windows[2..].iter().map(|w| w.responses).sum();
        assert_eq!(sum.responses, responses);
        assert!(sum.answered > 0 && sum.answered <= 200);
        assert!(sum.spread.0 <= median && median <= sum.spread.1);
    }

    #[test]
    fn window_summary_counts_the_measured_windows_only() {
        let w = |responses, ms, answered: &[u64]| Window {
            responses,
            elapsed: Duration::from_millis(ms),
            answered: answered.to_vec(),
        };
        let log = WindowLog {
            windows: vec![
                w(2, 1000, &[1, 1, 0, 0]),
                w(3, 1000, &[2, 2, 1, 0]),
                w(1, 500, &[2, 3, 1, 0]),
            ],
        };
        let sum = log.summary(2).unwrap();
        assert_eq!(sum.windows, 2);
        assert_eq!(sum.before, (1, Duration::from_secs(1)));
        assert_eq!(sum.time, Duration::from_millis(1500));
        assert_eq!(sum.responses, 4);
        assert_eq!(sum.spread, (2.0, 3.0));
        // Connections 0, 1 and 2 answered (1, 2 and 1 times); 3 did not.
        assert_eq!(sum.answered, 3);
        assert_eq!(sum.per_conn, (1, 2));
        assert_eq!(sum.slots, (0, 2));
        // More windows asked for than logged: all of them.
        assert_eq!(log.summary(9).unwrap().responses, 6);
        assert_eq!(WindowLog::default().summary(1), None);
    }

    #[test]
    fn kernel_rr_until_keeps_every_connection_busy_across_calls() {
        let mut pair = KernelPair::new().unwrap();
        pair.open(50).unwrap();
        let soon = || std::time::Instant::now() + Duration::from_millis(50);
        let first = pair.rr_until(50, soon()).unwrap();
        let second = pair.rr_until(50, soon()).unwrap();
        assert!(first > 0 && second > 0, "{first} then {second} responses");
        // A deadline already past: no pass, no response counted.
        assert_eq!(pair.rr_until(50, std::time::Instant::now()).unwrap(), 0);
        // Paced like rr: no connection ran more than one request ahead of
        // the others, and rr goes on from there.
        let answered: Vec<u64> = pair
            .conns
            .iter()
            .map(|&fd| pair.rounds.conns[fd as usize].answered)
            .collect();
        let (lo, hi) = (answered.iter().min(), answered.iter().max());
        assert!(hi.unwrap() - lo.unwrap() <= 2, "{lo:?}..{hi:?}");
        pair.rr(50, 100).unwrap();
        pair.drain().unwrap();
        assert_eq!(pair.rounds.outstanding, 0);
    }

    #[test]
    fn kernel_pair_on_one_thread_echoes() {
        let mut pair = KernelPair::new().unwrap();
        pair.open(10).unwrap();
        let got = pair.rr(10, 100).unwrap();
        assert_eq!(pair.accepted(), 10);
        // 10 rounds of 10, and whatever the lead added, all counted.
        let answered: u64 = pair
            .conns
            .iter()
            .map(|&fd| pair.rounds.conns[fd as usize].answered)
            .sum();
        assert!((100..=110).contains(&got), "{got}");
        assert_eq!(got, answered);
    }
}
