//! The `bulk` scenario: throughput of one and of 8 TCP streams, at MTU 1500
//! and 65535, in Gbit/s of payload received.
//!
//! Each stream carries the same deterministic byte pattern ([`pattern`]) from
//! a [`Source`] on the client to a [`Sink`] on the server. One iteration is
//! [`CHUNK`] bytes in total, split evenly over the streams; a workload call
//! of `n` iterations returns once the sinks have *received* all `n * CHUNK`
//! bytes (the bytes are counted as `recv` returns them, not as `send`
//! accepts them). The sinks can also check every byte against the pattern;
//! the benchmark runs count only (the check costs the same on every side
//! and would blur the stacks' difference), the unit tests check.
//!
//! The sides, all with [`BUFFER`]-byte socket buffers each direction:
//!
//! - usertcp: two `netstack::Stack`s over `netdev::Link::pair_with(mtu, ..)`
//!   with room for 16 MiB of packets per direction, one thread, a loop of
//!   poll both stacks, `send` on every stream until `EAGAIN`, `recv` on
//!   every stream until `EAGAIN`. No epoll: the loop visits the few streams.
//! - kernel, one core: the same loop over non-blocking sockets on
//!   127.0.0.1, `SO_SNDBUF`/`SO_RCVBUF` set to [`BUFFER`] before the
//!   handshake (Linux doubles them for its bookkeeping). The host's `lo`
//!   has an MTU of 65536; for the MTU 1500 rows the sockets set
//!   `TCP_MAXSEG` to 1460 (the MSS of a 1500-byte MTU) instead of touching
//!   `lo`, which the rows say.
//! - kernel, two cores: the sender on the measuring thread, the receiver
//!   on a thread pinned to another CPU, each blocking in its own epoll when
//!   it cannot go on. Twice the CPU budget: no target, shown for context.
//! - stock smoltcp: two `Interface`s over the same kind of link, one
//!   `SocketSet` each, the same loop.
//!
//! | row | target |
//! |---|---|
//! | one stream, MTU 65535 | usertcp >= 1.5x the kernel and >= 1.5x stock smoltcp |

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use eventpoll::Errno;
use netdev::{Link, LinkDevice};
use netstack::{AF_INET, SOCK_NONBLOCK, SOCK_STREAM, Stack, StackConfig};
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use crate::kernel;
use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Figure, Metric, Report, Row, Target};

use super::net::{self, CLIENT, PORT, PREFIX, SERVER, now, smol_iface};
use super::{Pinned, boxed, measure_sides, two_core_label};

/// The cases, one row each: (streams, MTU).
pub const CASES: [(usize, usize); 4] = [(1, 1500), (8, 1500), (1, 65535), (8, 65535)];
/// Socket buffers of every side, each direction, bytes.
pub const BUFFER: usize = 1 << 20;
/// Bytes per iteration, over all streams.
pub const CHUNK: u64 = 256 * 1024;
/// The pattern's period: a prime, so that it lines up with no segment or
/// buffer size.
const PATTERN_LEN: usize = 65_521;
/// Bytes of packets each direction of an in-memory link can hold.
const LINK_BYTES: usize = 16 << 20;
/// Loop iterations without progress before a transfer gives up.
const STALL: u64 = 20_000_000;
/// The MSS of a 1500-byte MTU (IPv4 and TCP headers without options).
const MSS_1500: i32 = 1460;

/// Two periods of the pattern, so that any `PATTERN_LEN` bytes from any
/// offset are one slice. Byte `i` of a stream is `pattern()[i % PATTERN_LEN]`.
pub fn pattern() -> &'static [u8] {
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    PATTERN.get_or_init(|| {
        (0..2 * PATTERN_LEN)
            .map(|i| {
                let i = (i % PATTERN_LEN) as u32;
                (i.wrapping_mul(2_654_435_761) >> 13) as u8
            })
            .collect()
    })
}

/// The sending end of a stream: how far it got and how far it may go.
#[derive(Clone, Debug, Default)]
pub struct Source {
    /// Bytes handed to the stack so far.
    pub sent: u64,
    /// Bytes it may send in all (grows by each transfer's share).
    pub quota: u64,
}

impl Source {
    /// The next bytes to send: the pattern from offset `sent`, at most up
    /// to the quota (empty once it is reached).
    pub fn next(&self) -> &'static [u8] {
        let left = self.quota.saturating_sub(self.sent);
        let start = (self.sent % PATTERN_LEN as u64) as usize;
        let len = left.min(PATTERN_LEN as u64) as usize;
        &pattern()[start..start + len]
    }

    /// True once the quota is sent.
    pub fn done(&self) -> bool {
        self.sent >= self.quota
    }
}

/// The receiving end of a stream: counts bytes and, if asked, checks each
/// one against the pattern.
#[derive(Clone, Debug, Default)]
pub struct Sink {
    /// Bytes received so far.
    pub received: u64,
    /// Whether to check the bytes.
    pub verify: bool,
    /// Bytes that differed from the pattern (only counted with `verify`).
    pub mismatches: u64,
}

impl Sink {
    /// A sink that checks every byte against the pattern when `verify`.
    pub fn new(verify: bool) -> Sink {
        Sink {
            verify,
            ..Sink::default()
        }
    }

    /// Takes `data`, the next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) {
        if self.verify {
            let p = pattern();
            let mut offset = (self.received % PATTERN_LEN as u64) as usize;
            for chunk in data.chunks(PATTERN_LEN) {
                let expected = &p[offset..offset + chunk.len()];
                if chunk != expected {
                    let wrong = chunk.iter().zip(expected).filter(|(a, b)| a != b).count();
                    self.mismatches += wrong as u64;
                }
                offset = (offset + chunk.len()) % PATTERN_LEN;
            }
        }
        self.received += data.len() as u64;
    }
}

/// The streams of one side: a source and a sink each (stream `i`'s source
/// on the client, its sink on the server end of the same connection).
#[derive(Clone, Debug)]
pub struct Streams {
    /// The sending ends.
    pub sources: Vec<Source>,
    /// The receiving ends, by server-side connection.
    pub sinks: Vec<Sink>,
}

impl Streams {
    fn new(n: usize, verify: bool) -> Streams {
        Streams {
            sources: vec![Source::default(); n],
            sinks: vec![Sink::new(verify); n],
        }
    }

    /// Adds `bytes` (split evenly) to the quotas; returns the total each
    /// sink must reach.
    fn grant(&mut self, bytes: u64) -> u64 {
        let share = bytes / self.sources.len().max(1) as u64;
        for source in &mut self.sources {
            source.quota += share;
        }
        self.sources.first().map_or(0, |s| s.quota)
    }

    fn all_received(&self, target: u64) -> bool {
        self.sinks.iter().all(|s| s.received >= target)
    }

    /// Bytes received over all sinks.
    #[cfg(test)]
    pub fn received(&self) -> u64 {
        self.sinks.iter().map(|s| s.received).sum()
    }

    /// Mismatched bytes over all sinks.
    #[cfg(test)]
    pub fn mismatches(&self) -> u64 {
        self.sinks.iter().map(|s| s.mismatches).sum()
    }
}

fn errno(err: Errno) -> io::Error {
    err.into()
}

fn stalled(what: &str) -> io::Error {
    io::Error::other(format!("{what}: no progress (stalled)"))
}

/// Packets per direction of a link of `mtu`: [`LINK_BYTES`] worth.
fn link_capacity(mtu: usize) -> usize {
    (LINK_BYTES / mtu).clamp(64, netdev::MAX_CAPACITY)
}

// ---------------------------------------------------------------------------
// usertcp

/// usertcp's side: two stacks over an in-memory link, `n` connections.
pub struct UserBulk {
    client: Stack<LinkDevice>,
    server: Stack<LinkDevice>,
    cfds: Vec<i32>,
    sfds: Vec<i32>,
    /// The streams' ends.
    pub streams: Streams,
    buf: Vec<u8>,
}

impl UserBulk {
    /// `n` established streams over a link of `mtu`.
    pub fn new(n: usize, mtu: usize, verify: bool) -> io::Result<UserBulk> {
        let (a, b) = Link::pair_with(mtu, link_capacity(mtu));
        let t = now();
        let mut sc = StackConfig::new(SERVER, PREFIX);
        sc.buffer_size = BUFFER;
        let mut cc = StackConfig::new(CLIENT, PREFIX);
        cc.buffer_size = BUFFER;
        let mut server = Stack::new(a, sc, t).map_err(errno)?;
        let mut client = Stack::new(b, cc, t).map_err(errno)?;
        let listener = server
            .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
            .map_err(errno)?;
        server
            .bind(listener, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))
            .map_err(errno)?;
        server.listen(listener, 128).map_err(errno)?;
        let mut cfds = Vec::with_capacity(n);
        for _ in 0..n {
            let fd = client
                .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
                .map_err(errno)?;
            match client.connect(fd, SocketAddrV4::new(SERVER, PORT)) {
                Err(Errno::EINPROGRESS) | Ok(()) => {}
                Err(e) => return Err(errno(e)),
            }
            cfds.push(fd);
        }
        let mut sfds = Vec::with_capacity(n);
        let mut spins = 0u64;
        while sfds.len() < n {
            let t = now();
            client.poll(t);
            server.poll(t);
            match server.accept4(listener, SOCK_NONBLOCK) {
                Ok((fd, _)) => sfds.push(fd),
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(errno(e)),
            }
            spins += 1;
            if spins > STALL {
                return Err(stalled("usertcp bulk connect"));
            }
        }
        Ok(UserBulk {
            client,
            server,
            cfds,
            sfds,
            streams: Streams::new(n, verify),
            buf: vec![0; 256 * 1024],
        })
    }

    /// Moves `bytes` more (split over the streams) and returns once they
    /// are all received.
    pub fn transfer(&mut self, bytes: u64) -> io::Result<()> {
        let target = self.streams.grant(bytes);
        let mut spins = 0u64;
        while !self.streams.all_received(target) {
            let mut progress = false;
            for (fd, source) in self.cfds.iter().zip(&mut self.streams.sources) {
                while !source.done() {
                    match self.client.send(*fd, source.next()) {
                        Ok(n) => {
                            source.sent += n as u64;
                            progress = true;
                        }
                        Err(Errno::EAGAIN) => break,
                        Err(e) => return Err(errno(e)),
                    }
                }
            }
            let t = now();
            self.client.poll(t);
            self.server.poll(t);
            for (fd, sink) in self.sfds.iter().zip(&mut self.streams.sinks) {
                loop {
                    match self.server.recv(*fd, &mut self.buf) {
                        Ok(0) => return Err(io::Error::other("usertcp bulk: stream closed")),
                        Ok(n) => {
                            sink.feed(&self.buf[..n]);
                            progress = true;
                        }
                        Err(Errno::EAGAIN) => break,
                        Err(e) => return Err(errno(e)),
                    }
                }
            }
            spins = if progress { 0 } else { spins + 1 };
            if spins > STALL {
                return Err(stalled("usertcp bulk"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// kernel

/// The socket options of the kernel side for `mtu`.
fn kernel_options(mtu: usize) -> Vec<kernel::SockOpt> {
    let mut options = vec![
        (libc::SOL_SOCKET, libc::SO_SNDBUF, BUFFER as i32),
        (libc::SOL_SOCKET, libc::SO_RCVBUF, BUFFER as i32),
    ];
    if mtu <= 1500 {
        options.push((libc::IPPROTO_TCP, libc::TCP_MAXSEG, MSS_1500));
    }
    options
}

/// `n` connected kernel socket pairs over 127.0.0.1: (client, server).
fn kernel_connect(n: usize, mtu: usize) -> io::Result<Vec<(OwnedFd, OwnedFd)>> {
    let options = kernel_options(mtu);
    let (listener, port) = kernel::tcp_listener_with(128, &options)?;
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(kernel::tcp_connect_with(port, &options)?);
    }
    let mut pairs = Vec::with_capacity(n);
    let mut spins = 0u64;
    let mut clients = clients.into_iter();
    while pairs.len() < n {
        match kernel::tcp_accept(listener.as_fd()) {
            // Loopback connections complete in connect order.
            Ok(server) => pairs.push((clients.next().ok_or_else(|| stalled("accept"))?, server)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                spins += 1;
                if spins > STALL {
                    return Err(stalled("kernel bulk connect"));
                }
                std::hint::spin_loop();
            }
            Err(e) => return Err(e),
        }
    }
    Ok(pairs)
}

/// The kernel on one thread: the same loop as [`UserBulk`].
pub struct KernelBulk {
    pairs: Vec<(OwnedFd, OwnedFd)>,
    /// The streams' ends.
    pub streams: Streams,
    buf: Vec<u8>,
}

impl KernelBulk {
    /// `n` established streams; `mtu` 1500 sets `TCP_MAXSEG` 1460.
    pub fn new(n: usize, mtu: usize, verify: bool) -> io::Result<KernelBulk> {
        Ok(KernelBulk {
            pairs: kernel_connect(n, mtu)?,
            streams: Streams::new(n, verify),
            buf: vec![0; 256 * 1024],
        })
    }

    /// See [`UserBulk::transfer`].
    pub fn transfer(&mut self, bytes: u64) -> io::Result<()> {
        let target = self.streams.grant(bytes);
        let mut spins = 0u64;
        while !self.streams.all_received(target) {
            let mut progress = false;
            for ((client, _), source) in self.pairs.iter().zip(&mut self.streams.sources) {
                while !source.done() {
                    match kernel::send(client.as_fd(), source.next()) {
                        Ok(n) => {
                            source.sent += n as u64;
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            for ((_, server), sink) in self.pairs.iter().zip(&mut self.streams.sinks) {
                loop {
                    match kernel::recv(server.as_fd(), &mut self.buf) {
                        Ok(0) => return Err(io::Error::other("kernel bulk: stream closed")),
                        Ok(n) => {
                            sink.feed(&self.buf[..n]);
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            spins = if progress { 0 } else { spins + 1 };
            if spins > STALL {
                return Err(stalled("kernel bulk"));
            }
        }
        Ok(())
    }
}

/// The kernel on two cores: the sender on the calling thread, the receiver
/// on a thread pinned to `receiver_cpu`; each blocks in its own epoll when
/// it cannot go on.
pub struct KernelBulk2 {
    clients: Vec<OwnedFd>,
    cep: OwnedFd,
    sources: Vec<Source>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    receiver: Option<JoinHandle<io::Result<Streams>>>,
}

impl KernelBulk2 {
    /// `n` established streams, the receiving ends on `receiver_cpu`.
    pub fn new(n: usize, mtu: usize, receiver_cpu: usize, verify: bool) -> io::Result<KernelBulk2> {
        let pairs = kernel_connect(n, mtu)?;
        let cep = kernel::epoll_create1(kernel::EPOLL_CLOEXEC)?;
        let sep = kernel::epoll_create1(kernel::EPOLL_CLOEXEC)?;
        let mut clients = Vec::with_capacity(n);
        let mut servers = Vec::with_capacity(n);
        for (i, (client, server)) in pairs.into_iter().enumerate() {
            kernel::epoll_ctl(
                cep.as_fd(),
                kernel::CtlOp::Add,
                client.as_fd(),
                kernel::EPOLLOUT,
                i as u64,
            )?;
            kernel::epoll_ctl(
                sep.as_fd(),
                kernel::CtlOp::Add,
                server.as_fd(),
                kernel::EPOLLIN,
                i as u64,
            )?;
            clients.push(client);
            servers.push(server);
        }
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let receiver = std::thread::Builder::new()
            .name("bulk-receiver".to_owned())
            .spawn(move || {
                kernel::set_thread_affinity(&[receiver_cpu])?;
                receive(&servers, &sep, Streams::new(n, verify), &r, &s)
            })?;
        Ok(KernelBulk2 {
            clients,
            cep,
            sources: vec![Source::default(); n],
            received,
            stop,
            receiver: Some(receiver),
        })
    }

    /// See [`UserBulk::transfer`].
    pub fn transfer(&mut self, bytes: u64) -> io::Result<()> {
        let share = bytes / self.sources.len().max(1) as u64;
        for source in &mut self.sources {
            source.quota += share;
        }
        let goal: u64 = self.sources.iter().map(|s| s.quota).sum();
        let mut events = [kernel::empty_event(); 16];
        while self.sources.iter().any(|s| !s.done()) {
            let mut blocked = false;
            for (client, source) in self.clients.iter().zip(&mut self.sources) {
                while !source.done() {
                    match kernel::send(client.as_fd(), source.next()) {
                        Ok(n) => source.sent += n as u64,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            blocked = true;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            if blocked {
                self.check_receiver()?;
                kernel::epoll_wait(self.cep.as_fd(), &mut events, 10)?;
            }
        }
        let mut spins = 0u64;
        while self.received.load(Ordering::Acquire) < goal {
            spins += 1;
            if spins.is_multiple_of(1 << 16) {
                self.check_receiver()?;
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
        Ok(())
    }

    /// An error if the receiver thread has stopped.
    fn check_receiver(&mut self) -> io::Result<()> {
        if self.receiver.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        match self.receiver.take().map(JoinHandle::join) {
            Some(Ok(Err(err))) => Err(err),
            _ => Err(io::Error::other("kernel bulk: the receiver thread stopped")),
        }
    }

    /// Stops the receiver and returns its streams (their sinks).
    #[cfg(test)]
    pub fn finish(mut self) -> io::Result<Streams> {
        self.stop.store(true, Ordering::Release);
        match self.receiver.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(io::Error::other("kernel bulk: the receiver thread failed")),
        }
    }
}

impl Drop for KernelBulk2 {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.receiver.take() {
            let _ = handle.join();
        }
    }
}

/// The receiver thread of [`KernelBulk2`]: reads every ready stream into
/// its sink, publishes the total, blocks in epoll (10 ms at most, to see
/// `stop`) when nothing is ready.
fn receive(
    servers: &[OwnedFd],
    sep: &OwnedFd,
    mut streams: Streams,
    received: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<Streams> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut events = [kernel::empty_event(); 16];
    while !stop.load(Ordering::Acquire) {
        let n = kernel::epoll_wait(sep.as_fd(), &mut events, 10)?;
        for ev in &events[..n] {
            let i = ev.u64 as usize;
            let (Some(server), Some(sink)) = (servers.get(i), streams.sinks.get_mut(i)) else {
                continue;
            };
            loop {
                match kernel::recv(server.as_fd(), &mut buf) {
                    Ok(0) => break,
                    Ok(len) => {
                        sink.feed(&buf[..len]);
                        received.fetch_add(len as u64, Ordering::Release);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(streams)
}

// ---------------------------------------------------------------------------
// stock smoltcp

/// Stock smoltcp's side: two interfaces over an in-memory link.
pub struct SmolBulk {
    cdev: LinkDevice,
    sdev: LinkDevice,
    ciface: Interface,
    siface: Interface,
    cset: SocketSet<'static>,
    sset: SocketSet<'static>,
    conns: Vec<(SocketHandle, SocketHandle)>,
    /// The streams' ends.
    pub streams: Streams,
    buf: Vec<u8>,
}

fn smol_socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; BUFFER]),
        tcp::SocketBuffer::new(vec![0; BUFFER]),
    );
    s.set_nagle_enabled(false);
    s
}

fn smol_err(what: &str, err: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("smoltcp {what}: {err}"))
}

impl SmolBulk {
    /// `n` established streams over a link of `mtu`.
    pub fn new(n: usize, mtu: usize, verify: bool) -> io::Result<SmolBulk> {
        let (mut sdev, mut cdev) = Link::pair_with(mtu, link_capacity(mtu));
        let siface = smol_iface(&mut sdev, SERVER, 0x5eed_0011);
        let ciface = smol_iface(&mut cdev, CLIENT, 0x5eed_0012);
        let mut pair = SmolBulk {
            cdev,
            sdev,
            ciface,
            siface,
            cset: SocketSet::new(Vec::new()),
            sset: SocketSet::new(Vec::new()),
            conns: Vec::with_capacity(n),
            streams: Streams::new(n, verify),
            buf: vec![0; 256 * 1024],
        };
        for i in 0..n {
            let port = PORT + i as u16;
            let mut s = smol_socket();
            s.listen(port).map_err(|e| smol_err("listen", e))?;
            let sh = pair.sset.add(s);
            let mut c = smol_socket();
            c.connect(pair.ciface.context(), (SERVER, port), 40_000 + i as u16)
                .map_err(|e| smol_err("connect", e))?;
            let ch = pair.cset.add(c);
            pair.conns.push((ch, sh));
        }
        let mut spins = 0u64;
        loop {
            pair.poll();
            let up = pair.conns.iter().all(|&(ch, sh)| {
                pair.cset.get::<tcp::Socket>(ch).state() == tcp::State::Established
                    && pair.sset.get::<tcp::Socket>(sh).state() == tcp::State::Established
            });
            if up {
                return Ok(pair);
            }
            spins += 1;
            if spins > STALL {
                return Err(stalled("smoltcp bulk connect"));
            }
        }
    }

    fn poll(&mut self) {
        let t = now();
        self.ciface.poll(t, &mut self.cdev, &mut self.cset);
        self.siface.poll(t, &mut self.sdev, &mut self.sset);
    }

    /// See [`UserBulk::transfer`].
    pub fn transfer(&mut self, bytes: u64) -> io::Result<()> {
        let target = self.streams.grant(bytes);
        let mut spins = 0u64;
        while !self.streams.all_received(target) {
            let mut progress = false;
            for (&(ch, _), source) in self.conns.iter().zip(&mut self.streams.sources) {
                let c = self.cset.get_mut::<tcp::Socket>(ch);
                while !source.done() {
                    let n = c
                        .send_slice(source.next())
                        .map_err(|e| smol_err("send", e))?;
                    if n == 0 {
                        break;
                    }
                    source.sent += n as u64;
                    progress = true;
                }
            }
            self.poll();
            for (&(_, sh), sink) in self.conns.iter().zip(&mut self.streams.sinks) {
                let s = self.sset.get_mut::<tcp::Socket>(sh);
                while s.can_recv() {
                    let n = s
                        .recv_slice(&mut self.buf)
                        .map_err(|e| smol_err("recv", e))?;
                    if n == 0 {
                        break;
                    }
                    sink.feed(&self.buf[..n]);
                    progress = true;
                }
            }
            spins = if progress { 0 } else { spins + 1 };
            if spins > STALL {
                return Err(stalled("smoltcp bulk"));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// the scenario

/// A workload of `CHUNK` bytes per iteration.
fn workload(
    mut transfer: impl FnMut(u64) -> io::Result<()>,
) -> impl FnMut(u64) -> io::Result<Duration> {
    move |iters| {
        let start = Instant::now();
        transfer(iters * CHUNK)?;
        Ok(start.elapsed())
    }
}

/// Nanoseconds per byte as gigabits per second.
fn gbits(figure: Figure) -> Figure {
    match figure {
        Figure::Value(ns) if ns > 0.0 => Figure::Value(8.0 / ns),
        Figure::Value(ns) => Figure::Error(format!("{ns} ns per byte")),
        other => other,
    }
}

/// Runs the scenario and returns its report (progress goes to stderr).
pub fn run(cfg: &Config) -> Report {
    let machine = Machine::detect();
    let started = Instant::now();
    let pinned = Pinned::one_core();
    let mut rows = Vec::new();
    let progress = crate::progress::bar("bulk", CASES.len() as u64);
    for &(streams, mtu) in &CASES {
        progress.set_message(format!("{streams} stream(s), MTU {mtu}"));
        let user = UserBulk::new(streams, mtu, false);
        let kern = KernelBulk::new(streams, mtu, false);
        let kern2 = match pinned.other {
            Some(cpu) => KernelBulk2::new(streams, mtu, cpu, false),
            None => Err(io::Error::other("only one usable CPU")),
        };
        let smol = SmolBulk::new(streams, mtu, false);
        let figures = measure_sides(
            cfg,
            CHUNK as f64,
            vec![
                boxed(user.map(|mut p| workload(move |b| p.transfer(b)))),
                boxed(kern.map(|mut p| workload(move |b| p.transfer(b)))),
                boxed(smol.map(|mut p| workload(move |b| p.transfer(b)))),
                boxed(kern2.map(|mut p| workload(move |b| p.transfer(b)))),
            ],
        );
        let mut figures = figures.into_iter().map(gbits);
        let mut next = || figures.next().unwrap_or_else(net::not_measured);
        let (u, k, s, k2) = (next(), next(), next(), next());
        let label = format!(
            "bulk, {streams} stream{}, MTU {mtu}",
            if streams == 1 { "" } else { "s" }
        );
        let mss_note = (mtu <= 1500).then(|| {
            format!("kernel over lo (MTU 65536) with TCP_MAXSEG {MSS_1500} for an MTU-1500 MSS")
        });
        let mut row = Row::new(label.clone(), Metric::GbitPerSec, u.clone(), k).smoltcp(s);
        if streams == 1 && mtu == 65535 {
            row = row.target(Target::VsBothAtLeast {
                kernel: 1.5,
                smoltcp: 1.5,
            });
        }
        if let Some(note) = &mss_note {
            row = row.note(note.clone());
        }
        rows.push(row);
        let mut two = Row::new(two_core_label(&pinned), Metric::GbitPerSec, u, k2).note(
            "kernel sender and receiver on two pinned cores: twice usertcp's CPU budget, no target",
        );
        if let Some(note) = mss_note {
            two = two.note(note);
        }
        rows.push(two);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let footer = vec![
        cfg.describe(),
        format!(
            "one iteration = {} KiB of payload over all streams, counted as received; socket \
             buffers {} KiB each direction on every side; usertcp and stock smoltcp over \
             netdev::Link::pair_with(mtu, {} MiB of packets per direction); the kernel over \
             127.0.0.1 with SO_SNDBUF/SO_RCVBUF {} KiB.",
            CHUNK / 1024,
            BUFFER / 1024,
            LINK_BYTES >> 20,
            BUFFER / 1024
        ),
        pinned.note.clone(),
        format!("scenario time {:.1} s", started.elapsed().as_secs_f64()),
    ];
    Report {
        scenario: "bulk",
        title: "bulk: TCP throughput, 1 and 8 streams, MTU 1500 and 65535, one thread".to_owned(),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_counts_and_catches_a_wrong_byte() {
        let mut sink = Sink::new(true);
        let mut source = Source {
            sent: 0,
            quota: 3 * PATTERN_LEN as u64 + 17,
        };
        while !source.done() {
            // Odd-sized pieces, so that pieces straddle the pattern's period.
            let piece = &source.next()[..source.next().len().min(4099)];
            sink.feed(piece);
            source.sent += piece.len() as u64;
        }
        assert_eq!(sink.received, source.quota);
        assert_eq!(sink.mismatches, 0);
        let mut bad = source.next().to_vec();
        assert!(bad.is_empty(), "the quota is exhausted");
        source.quota += 100;
        bad.extend_from_slice(source.next());
        bad[42] ^= 1;
        sink.feed(&bad);
        assert_eq!(sink.mismatches, 1);
        assert_eq!(sink.received, source.quota);
    }

    fn check(streams: &Streams, bytes: u64) {
        assert_eq!(streams.received(), bytes);
        assert_eq!(streams.mismatches(), 0);
        assert!(streams.sinks.iter().all(|s| s.verify));
    }

    #[test]
    fn every_side_delivers_the_pattern_intact() {
        let bytes = 4 * CHUNK;
        let mut user = UserBulk::new(2, 1500, true).unwrap();
        user.transfer(bytes).unwrap();
        user.transfer(bytes).unwrap();
        check(&user.streams, 2 * bytes);
        let mut kern = KernelBulk::new(2, 1500, true).unwrap();
        kern.transfer(bytes).unwrap();
        check(&kern.streams, bytes);
        let mut smol = SmolBulk::new(2, 65535, true).unwrap();
        smol.transfer(bytes).unwrap();
        check(&smol.streams, bytes);
        let cpu = kernel::thread_affinity().unwrap()[0];
        let mut two = KernelBulk2::new(2, 65535, cpu, true).unwrap();
        two.transfer(bytes).unwrap();
        check(&two.finish().unwrap(), bytes);
    }
}
