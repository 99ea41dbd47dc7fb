//! The servers and clients behind the examples and the end-to-end tests:
//! written once here, so the tests exercise exactly what the examples run.
//!
//! - [`Server`]: an epoll server on a [`Stack`], level-triggered or
//!   edge-triggered, generic over a [`Protocol`]: [`Echo`] or [`Http`]
//!   (HTTP/1.1 with keep-alive and a fixed body, [`HTTP_RESPONSE`]). Output
//!   the peer does not take yet is kept per connection and the connection
//!   waits for `OUT` (it reads nothing more meanwhile, so the peer's window
//!   closes: back-pressure end to end).
//!   A server makes its calls through [`Sockets`], implemented by a
//!   [`Stack`] the caller owns (run-to-completion) and by a [`Net`] handle
//!   of a stack thread (threaded mode).
//! - [`ThreadedServer`]: the threaded mode (`--threads N`): N worker
//!   threads, each a [`Server`] on a [`Net`], sharing one listener that
//!   each watches with its own epoll and `EPOLLEXCLUSIVE`.
//! - [`Client`]: connections from a stack that send a request and check
//!   the exact reply, for the in-process `--link` runs and C10M-style idle
//!   connections.
//! - [`serve_kernel`]: the same [`Protocol`] on kernel sockets with kernel
//!   epoll (`http_server --kernel`), the baseline usertcp is measured
//!   against.
//! - [`run`]: the run-to-completion driver: `poll`, the application's step,
//!   and, when idle, a sleep in `poll(2)` on the device's descriptor
//!   ([`Wake`]) until a frame arrives or the stack's next timer.
//! - [`Clock`]: monotonic time as smoltcp `Instant`s that read as wall
//!   time, so pcap timestamps are real dates.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use eventpoll::{CtlOp, EpollEvent, Errno, Events};
use netdev::{LinkDevice, Pcap, Tap};
use netstack::{AF_INET, Lookahead, Net, SOCK_NONBLOCK, SOCK_STREAM, Stack};
use smoltcp::phy::Device;
use smoltcp::time::Instant;

use crate::sys::{self, KernelEpoll};

/// The body every HTTP response carries.
pub const HTTP_BODY: &[u8] = b"Hello from usertcp\n";
/// The whole HTTP response (status line, headers, [`HTTP_BODY`]).
pub const HTTP_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: usertcp\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\nHello from usertcp\n";
/// A request as `curl`/`wrk` send it, for the in-process clients.
pub const HTTP_REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: 198.18.0.2\r\n\r\n";
/// The largest request head the HTTP server buffers before it gives up on
/// the connection.
const MAX_HEAD: usize = 16 * 1024;
/// The epoll data of the listener (connections use their descriptor).
const LISTENER: u64 = u64::MAX;

/// Monotonic time for the stack, as wall-clock microseconds since 1970.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: std::time::Instant,
    base_us: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock reading the wall time now and counting monotonically after.
    pub fn new() -> Clock {
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            start: std::time::Instant::now(),
            base_us: base.as_micros() as i64,
        }
    }

    /// Now, for [`Stack::poll`].
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.base_us + self.start.elapsed().as_micros() as i64)
    }
}

/// A device a driver can sleep on.
pub trait Wake {
    /// The descriptor to `poll(2)` on, if the device has one (a TAP does;
    /// an in-memory link does not).
    fn wake_fd(&self) -> Option<RawFd>;
    /// True if the device waits to write (sleep for `POLLOUT` too).
    fn wants_write(&self) -> bool;
}

impl Wake for Tap {
    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
    fn wants_write(&self) -> bool {
        self.tx_pending()
    }
}

impl Wake for LinkDevice {
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }
    fn wants_write(&self) -> bool {
        false
    }
}

impl<D: Device + Lookahead + Wake> Wake for Pcap<D> {
    fn wake_fd(&self) -> Option<RawFd> {
        self.get_ref().wake_fd()
    }
    fn wants_write(&self) -> bool {
        self.get_ref().wants_write()
    }
}

/// The socket and epoll calls a [`Server`] makes, so that one server runs
/// on a [`Stack`] it owns (run-to-completion) or on a [`Net`] handle of a
/// stack thread (the threaded mode, from any thread). Same descriptors,
/// same errno.
pub trait Sockets {
    /// `socket(2)`.
    fn socket(&mut self, domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno>;
    /// `bind(2)`.
    fn bind(&mut self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno>;
    /// `listen(2)`.
    fn listen(&mut self, fd: i32, backlog: i32) -> Result<(), Errno>;
    /// `accept4(2)`.
    fn accept4(&mut self, fd: i32, flags: i32) -> Result<(i32, SocketAddrV4), Errno>;
    /// `recv(2)`.
    fn recv(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize, Errno>;
    /// `send(2)`.
    fn send(&mut self, fd: i32, buf: &[u8]) -> Result<usize, Errno>;
    /// `close(2)`.
    fn close(&mut self, fd: i32) -> Result<(), Errno>;
    /// `epoll_create1(2)`.
    fn epoll_create1(&mut self, flags: i32) -> Result<i32, Errno>;
    /// `epoll_ctl(2)`.
    fn epoll_ctl(
        &mut self,
        epfd: i32,
        op: i32,
        fd: i32,
        event: Option<&EpollEvent>,
    ) -> Result<(), Errno>;
    /// `epoll_wait(2)`.
    fn epoll_wait(
        &mut self,
        epfd: i32,
        events: &mut [EpollEvent],
        maxevents: i32,
        timeout_ms: i32,
    ) -> Result<usize, Errno>;
}

macro_rules! forward_sockets {
    () => {
        fn socket(&mut self, domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno> {
            Self::socket(self, domain, ty, protocol)
        }
        fn bind(&mut self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno> {
            Self::bind(self, fd, addr)
        }
        fn listen(&mut self, fd: i32, backlog: i32) -> Result<(), Errno> {
            Self::listen(self, fd, backlog)
        }
        fn accept4(&mut self, fd: i32, flags: i32) -> Result<(i32, SocketAddrV4), Errno> {
            Self::accept4(self, fd, flags)
        }
        fn recv(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
            Self::recv(self, fd, buf)
        }
        fn send(&mut self, fd: i32, buf: &[u8]) -> Result<usize, Errno> {
            Self::send(self, fd, buf)
        }
        fn close(&mut self, fd: i32) -> Result<(), Errno> {
            Self::close(self, fd)
        }
        fn epoll_create1(&mut self, flags: i32) -> Result<i32, Errno> {
            Self::epoll_create1(self, flags)
        }
        fn epoll_ctl(
            &mut self,
            epfd: i32,
            op: i32,
            fd: i32,
            event: Option<&EpollEvent>,
        ) -> Result<(), Errno> {
            Self::epoll_ctl(self, epfd, op, fd, event)
        }
        fn epoll_wait(
            &mut self,
            epfd: i32,
            events: &mut [EpollEvent],
            maxevents: i32,
            timeout_ms: i32,
        ) -> Result<usize, Errno> {
            Self::epoll_wait(self, epfd, events, maxevents, timeout_ms)
        }
    };
}

impl<D: Device + Lookahead> Sockets for Stack<D> {
    forward_sockets!();
}

impl Sockets for Net {
    forward_sockets!();
}

/// The run-to-completion loop: `poll` the stack, run `step` (the
/// application: `epoll_wait(0)` and socket calls; it returns true if it did
/// anything), and when neither had work, sleep in `poll(2)` on the
/// device's descriptor until a frame comes or the stack's next timer (at
/// most 50 ms, to notice `stop`). Returns when `stop` is set.
pub fn run<D: Device + Lookahead + Wake>(
    stack: &mut Stack<D>,
    clock: &Clock,
    stop: &AtomicBool,
    mut step: impl FnMut(&mut Stack<D>) -> bool,
) {
    let max_sleep = StdDuration::from_millis(50);
    while !stop.load(Ordering::Relaxed) {
        let busy = stack.poll(clock.now());
        let worked = step(stack);
        if busy || worked {
            continue;
        }
        let sleep = match stack.poll_delay(clock.now()) {
            Some(d) => StdDuration::from_micros(d.total_micros()).min(max_sleep),
            None => max_sleep,
        };
        if sleep.is_zero() {
            continue;
        }
        match stack.device().wake_fd() {
            Some(fd) => {
                // An error here (EBADF cannot happen: the device owns the
                // descriptor) would only cost a spin; poll again.
                let _ = sys::wait_fd(fd, stack.device().wants_write(), sleep);
            }
            None => std::thread::yield_now(),
        }
    }
}

/// Keeps polling (as [`run`]) until the stack has no connection left or
/// `max` has passed: lets closed connections send their FIN and hear the
/// peer's before a program exits (a program that exits at once leaves the
/// peer's sockets open). Returns true if every connection finished.
pub fn linger<D: Device + Lookahead + Wake>(
    stack: &mut Stack<D>,
    clock: &Clock,
    max: StdDuration,
) -> bool {
    let start = std::time::Instant::now();
    let stop = AtomicBool::new(false);
    run(stack, clock, &stop, |st| {
        if st.stats().connections == 0 || start.elapsed() >= max {
            stop.store(true, Ordering::Relaxed);
        }
        false
    });
    stack.stats().connections == 0
}

/// What a server says to the bytes it receives.
pub trait Protocol {
    /// Per-connection state.
    type Conn: Default;
    /// Takes `input`, appends the reply (if any) to `out`; returns false to
    /// close the connection once `out` is sent.
    fn on_data(&mut self, conn: &mut Self::Conn, input: &[u8], out: &mut Vec<u8>) -> bool;
}

/// Sends back what it receives.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Protocol for Echo {
    type Conn = ();
    fn on_data(&mut self, _: &mut (), input: &[u8], out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(input);
        true
    }
}

/// Minimal HTTP/1.1: every request head (up to the blank line) gets
/// [`HTTP_RESPONSE`]; keep-alive unless the request says
/// `Connection: close` or is HTTP/1.0 without `keep-alive`. Request bodies
/// are not read (GET only, as curl and wrk send).
#[derive(Clone, Copy, Debug, Default)]
pub struct Http {
    /// Requests answered.
    pub requests: u64,
}

/// The bytes of a request head received so far.
#[derive(Debug, Default)]
pub struct HttpConn {
    buf: Vec<u8>,
}

fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

impl Protocol for Http {
    type Conn = HttpConn;
    fn on_data(&mut self, conn: &mut HttpConn, input: &[u8], out: &mut Vec<u8>) -> bool {
        let from = conn.buf.len().saturating_sub(3);
        conn.buf.extend_from_slice(input);
        let mut search = from;
        loop {
            let Some(pos) = conn.buf[search..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + search)
            else {
                return conn.buf.len() <= MAX_HEAD;
            };
            let head = &conn.buf[..pos];
            let close = contains_ignore_case(head, b"connection: close")
                || (head.starts_with(b"GET ")
                    && contains_ignore_case(&head[..head.len().min(256)], b"HTTP/1.0\r\n")
                    && !contains_ignore_case(head, b"keep-alive"));
            self.requests += 1;
            out.extend_from_slice(HTTP_RESPONSE);
            conn.buf.drain(..pos + 4);
            if close {
                return false;
            }
            search = 0;
        }
    }
}

/// Counts a server keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed.
    pub closed: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

impl ServerStats {
    /// The sum of two servers' counts.
    pub fn merged(self, other: ServerStats) -> ServerStats {
        ServerStats {
            accepted: self.accepted + other.accepted,
            closed: self.closed + other.closed,
            rx_bytes: self.rx_bytes + other.rx_bytes,
            tx_bytes: self.tx_bytes + other.tx_bytes,
        }
    }
}

/// Where a server (or the workers of a [`ThreadedServer`], together)
/// stands, for progress lines.
#[derive(Clone, Debug, Default)]
pub struct Progress<P> {
    /// Connections open now.
    pub open: usize,
    /// The counts, summed over the workers.
    pub stats: ServerStats,
    /// Each worker's protocol (one for a run-to-completion server), for
    /// the protocol's own counters.
    pub protos: Vec<P>,
}

/// The threaded mode's server: `workers` application threads, each a
/// [`Server`] on a [`Net`] handle of a stack thread (`NetThread`),
/// sharing one listening socket ([`Server::share`]: each worker watches
/// it with its own epoll and `EPOLLEXCLUSIVE`, accepts, and serves the
/// connections it accepted with non-blocking calls, sleeping in
/// `epoll_wait` (at most 50 ms, to notice `stop`)). Nothing is shared
/// between workers but the stack, so no connection state is locked.
pub struct ThreadedServer<P> {
    workers: Vec<JoinHandle<()>>,
    status: Arc<Vec<Mutex<Progress<P>>>>,
    stop: Arc<AtomicBool>,
    net: Net,
    listener: i32,
}

impl<P: Protocol + Clone + Send + 'static> ThreadedServer<P> {
    /// Listens on `port` of `net`'s stack and starts `workers` threads
    /// (at least one) serving `proto` (each worker gets a clone).
    pub fn start(
        net: &Net,
        port: u16,
        et: bool,
        workers: usize,
        proto: P,
    ) -> Result<ThreadedServer<P>, Errno>
    where
        P::Conn: Send,
    {
        let mut handle = net.clone();
        let listener = listen_socket(&mut handle, port)?;
        let workers = workers.max(1);
        let status: Arc<Vec<Mutex<Progress<P>>>> = Arc::new(
            (0..workers)
                .map(|_| {
                    Mutex::new(Progress {
                        open: 0,
                        stats: ServerStats::default(),
                        protos: vec![proto.clone()],
                    })
                })
                .collect(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let mut net = net.clone();
            let mut server = match Server::share(&mut net, listener, et, proto.clone()) {
                Ok(s) => s,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    for t in threads {
                        let _ = JoinHandle::join(t);
                    }
                    let _ = handle.close(listener);
                    return Err(e);
                }
            };
            let status = status.clone();
            let flag = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("usertcp-worker-{i}"))
                .spawn(move || {
                    while !flag.load(Ordering::Relaxed) {
                        server.step_wait(&mut net, 50);
                        let mut slot = lock(&status[i]);
                        slot.open = server.open();
                        slot.stats = server.stats();
                        slot.protos[0] = server.protocol().clone();
                    }
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    for t in threads {
                        let _ = JoinHandle::join(t);
                    }
                    let _ = handle.close(listener);
                    return Err(Errno::EAGAIN);
                }
            }
        }
        Ok(ThreadedServer {
            workers: threads,
            status,
            stop,
            net: handle,
            listener,
        })
    }

    /// The workers' progress, summed.
    pub fn progress(&self) -> Progress<P> {
        let mut total = Progress {
            open: 0,
            stats: ServerStats::default(),
            protos: Vec::with_capacity(self.status.len()),
        };
        for slot in self.status.iter() {
            let p = lock(slot);
            total.open += p.open;
            total.stats = total.stats.merged(p.stats);
            total.protos.extend(p.protos.iter().cloned());
        }
        total
    }

    /// Stops the workers, joins them, closes the listener and returns the
    /// final progress. (Their connections stay open until the stack shuts
    /// down.)
    pub fn stop(mut self) -> Progress<P> {
        self.halt();
        self.progress()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.workers.drain(..) {
            // A worker only panics on a bug; its counts are then stale.
            let _ = t.join();
        }
        let _ = self.net.close(self.listener);
    }
}

/// Locks a worker's slot; a worker that panicked (a bug) leaves its last
/// counts, which are still worth reading.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<P> Drop for ThreadedServer<P> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.workers.drain(..) {
            let _ = t.join();
        }
    }
}

struct ServerConn<C> {
    proto: C,
    out: Vec<u8>,
    sent: usize,
    /// Waiting for `OUT` (interest is `OUT` only).
    blocked: bool,
    /// Close once `out` is sent.
    closing: bool,
}

/// An epoll server on a [`Stack`] (see the module docs).
pub struct Server<P: Protocol> {
    proto: P,
    ep: i32,
    listener: i32,
    et: bool,
    conns: HashMap<i32, ServerConn<P::Conn>>,
    events: Vec<EpollEvent>,
    buf: Vec<u8>,
    stats: ServerStats,
}

impl<P: Protocol> Server<P> {
    /// Listens on `port` of every local address (backlog 4096) and watches
    /// the listener with a new epoll; `et` makes every watch edge-triggered.
    pub fn listen<S: Sockets>(stack: &mut S, port: u16, et: bool, proto: P) -> Result<Self, Errno> {
        let listener = listen_socket(stack, port)?;
        let ep = stack.epoll_create1(0)?;
        let ev = EpollEvent::new(Events::IN | et_flag(et), LISTENER);
        stack.epoll_ctl(ep, CtlOp::Add.to_raw(), listener, Some(&ev))?;
        Ok(Self::with(proto, ep, listener, et))
    }

    /// One of several servers sharing `listener` (from [`listen_socket`]),
    /// each on its own thread: it watches the listener with a new epoll of
    /// its own and `EPOLLEXCLUSIVE`, so a new connection wakes one of the
    /// sleeping servers rather than all of them, and keeps the connections
    /// it accepts. The listener is not closed when the server goes.
    pub fn share<S: Sockets>(
        stack: &mut S,
        listener: i32,
        et: bool,
        proto: P,
    ) -> Result<Self, Errno> {
        let ep = stack.epoll_create1(0)?;
        let ev = EpollEvent::new(Events::IN | Events::EXCLUSIVE | et_flag(et), LISTENER);
        stack.epoll_ctl(ep, CtlOp::Add.to_raw(), listener, Some(&ev))?;
        Ok(Self::with(proto, ep, listener, et))
    }

    fn with(proto: P, ep: i32, listener: i32, et: bool) -> Self {
        Server {
            proto,
            ep,
            listener,
            et,
            conns: HashMap::new(),
            events: vec![EpollEvent::default(); 256],
            buf: vec![0; 64 * 1024],
            stats: ServerStats::default(),
        }
    }

    /// The protocol (for its counters).
    pub fn protocol(&self) -> &P {
        &self.proto
    }

    /// The protocol, taking the server apart (its sockets stay in the
    /// stack).
    pub fn into_protocol(self) -> P {
        self.proto
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// The counts so far.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Where the server stands: its open connections, its counts and a
    /// copy of its protocol (for the protocol's own counters).
    pub fn progress(&self) -> Progress<P>
    where
        P: Clone,
    {
        Progress {
            open: self.open(),
            stats: self.stats,
            protos: vec![self.proto.clone()],
        }
    }

    /// One pass: `epoll_wait(0)` and every ready event handled. Returns true
    /// if there were events.
    pub fn step<S: Sockets>(&mut self, st: &mut S) -> bool {
        self.step_wait(st, 0)
    }

    /// One pass that waits up to `timeout_ms` for events (the threaded
    /// mode's workers block here; a run-to-completion loop passes 0).
    pub fn step_wait<S: Sockets>(&mut self, st: &mut S, timeout_ms: i32) -> bool {
        let max = self.events.len() as i32;
        let n = match st.epoll_wait(self.ep, &mut self.events, max, timeout_ms) {
            Ok(n) => n,
            Err(_) => return false,
        };
        for i in 0..n {
            let ev = self.events[i];
            if ev.data == LISTENER {
                self.accept_all(st);
            } else {
                self.on_event(st, ev.data as i32, ev.events);
            }
        }
        n > 0
    }

    fn accept_all<S: Sockets>(&mut self, st: &mut S) {
        // Drain the accept queue: required with ET, harmless with LT.
        while let Ok((fd, _)) = st.accept4(self.listener, SOCK_NONBLOCK) {
            let ev = EpollEvent::new(Events::IN | Events::RDHUP | et_flag(self.et), fd as u64);
            if st
                .epoll_ctl(self.ep, CtlOp::Add.to_raw(), fd, Some(&ev))
                .is_err()
            {
                let _ = st.close(fd);
                continue;
            }
            self.stats.accepted += 1;
            self.conns.insert(
                fd,
                ServerConn {
                    proto: P::Conn::default(),
                    out: Vec::new(),
                    sent: 0,
                    blocked: false,
                    closing: false,
                },
            );
        }
    }

    fn on_event<S: Sockets>(&mut self, st: &mut S, fd: i32, events: Events) {
        if !self.conns.contains_key(&fd) {
            return;
        }
        if events.contains(Events::ERR) {
            self.close(st, fd);
            return;
        }
        if events.contains(Events::OUT) && !self.flush(st, fd) {
            return;
        }
        self.pump(st, fd);
    }

    /// Reads and answers until `EAGAIN` (ET) or once (LT), unless output is
    /// waiting for `OUT`.
    fn pump<S: Sockets>(&mut self, st: &mut S, fd: i32) {
        loop {
            let Some(conn) = self.conns.get_mut(&fd) else {
                return;
            };
            if conn.blocked || conn.closing {
                return;
            }
            match st.recv(fd, &mut self.buf) {
                Ok(0) => {
                    self.close(st, fd);
                    return;
                }
                Ok(n) => {
                    self.stats.rx_bytes += n as u64;
                    let keep = self
                        .proto
                        .on_data(&mut conn.proto, &self.buf[..n], &mut conn.out);
                    conn.closing = !keep;
                    if !self.flush(st, fd) {
                        return;
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.close(st, fd);
                    return;
                }
            }
            if !self.et {
                return;
            }
        }
    }

    /// Sends pending output. Returns false if the connection was closed.
    fn flush<S: Sockets>(&mut self, st: &mut S, fd: i32) -> bool {
        let Some(conn) = self.conns.get_mut(&fd) else {
            return false;
        };
        while conn.sent < conn.out.len() {
            match st.send(fd, &conn.out[conn.sent..]) {
                Ok(n) => {
                    conn.sent += n;
                    self.stats.tx_bytes += n as u64;
                }
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    self.close(st, fd);
                    return false;
                }
            }
        }
        let drained = conn.sent == conn.out.len();
        if drained {
            conn.out.clear();
            conn.sent = 0;
            if conn.closing {
                self.close(st, fd);
                return false;
            }
        }
        if drained == conn.blocked {
            // Switch interest: OUT only while blocked, IN otherwise.
            conn.blocked = !drained;
            let mask = if conn.blocked {
                Events::OUT
            } else {
                Events::IN | Events::RDHUP
            };
            let ev = EpollEvent::new(mask | et_flag(self.et), fd as u64);
            if st
                .epoll_ctl(self.ep, CtlOp::Mod.to_raw(), fd, Some(&ev))
                .is_err()
            {
                self.close(st, fd);
                return false;
            }
        }
        true
    }

    fn close<S: Sockets>(&mut self, st: &mut S, fd: i32) {
        if self.conns.remove(&fd).is_some() {
            self.stats.closed += 1;
            let _ = st.close(fd);
        }
    }
}

/// A non-blocking listening socket on `port` of every local address
/// (backlog 4096).
pub fn listen_socket<S: Sockets>(stack: &mut S, port: u16) -> Result<i32, Errno> {
    let listener = stack.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)?;
    stack.bind(
        listener,
        SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port),
    )?;
    stack.listen(listener, 4096)?;
    Ok(listener)
}

fn et_flag(et: bool) -> Events {
    if et { Events::ET } else { Events::empty() }
}

/// Counts a [`Client`] keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Connections established.
    pub connected: u64,
    /// Replies received whole and equal to the expected reply.
    pub replies: u64,
    /// Connections that failed (refused, reset, wrong reply).
    pub errors: u64,
    /// Connections finished and closed.
    pub finished: u64,
}

struct ClientConn {
    sent: usize,
    got: usize,
    rounds_left: u64,
    up: bool,
}

/// Connections from a stack to a server: each sends `request`, checks that
/// the reply is exactly `reply`, `rounds` times, then closes (or, with
/// `rounds == 0`, stays open and idle: C10M-style).
pub struct Client {
    ep: i32,
    request: Vec<u8>,
    reply: Vec<u8>,
    conns: HashMap<i32, ClientConn>,
    events: Vec<EpollEvent>,
    buf: Vec<u8>,
    stats: ClientStats,
}

impl Client {
    /// Opens `conns` connections to `server` (non-blocking; they complete
    /// as the stack is polled).
    pub fn connect<D: Device + Lookahead>(
        st: &mut Stack<D>,
        server: SocketAddrV4,
        conns: usize,
        request: &[u8],
        reply: &[u8],
        rounds: u64,
    ) -> Result<Client, Errno> {
        let ep = st.epoll_create1(0)?;
        let mut map = HashMap::with_capacity(conns);
        for _ in 0..conns {
            let fd = st.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)?;
            match st.connect(fd, server) {
                Err(Errno::EINPROGRESS) | Ok(()) => {}
                Err(e) => return Err(e),
            }
            let ev = EpollEvent::new(Events::OUT | Events::IN | Events::RDHUP, fd as u64);
            st.epoll_ctl(ep, CtlOp::Add.to_raw(), fd, Some(&ev))?;
            map.insert(
                fd,
                ClientConn {
                    sent: 0,
                    got: 0,
                    rounds_left: rounds,
                    up: false,
                },
            );
        }
        Ok(Client {
            ep,
            request: request.to_vec(),
            reply: reply.to_vec(),
            conns: map,
            events: vec![EpollEvent::default(); 256],
            buf: vec![0; 64 * 1024],
            stats: ClientStats::default(),
        })
    }

    /// The counts so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Connections still open.
    pub fn open(&self) -> usize {
        self.conns.len()
    }

    /// One pass over the ready connections. Returns true if there were
    /// events.
    pub fn step<D: Device + Lookahead>(&mut self, st: &mut Stack<D>) -> bool {
        let max = self.events.len() as i32;
        let n = match st.epoll_wait(self.ep, &mut self.events, max, 0) {
            Ok(n) => n,
            Err(_) => return false,
        };
        for i in 0..n {
            let ev = self.events[i];
            let fd = ev.data as i32;
            if ev.events.contains(Events::ERR) {
                self.stats.errors += 1;
                self.finish(st, fd);
                continue;
            }
            self.on_ready(st, fd, ev.events);
        }
        n > 0
    }

    fn on_ready<D: Device + Lookahead>(&mut self, st: &mut Stack<D>, fd: i32, events: Events) {
        let Some(c) = self.conns.get_mut(&fd) else {
            return;
        };
        if !c.up && events.contains(Events::OUT) {
            c.up = true;
            self.stats.connected += 1;
            if c.rounds_left == 0 {
                // Idle: watch only for the peer closing.
                let ev = EpollEvent::new(Events::IN | Events::RDHUP, fd as u64);
                let _ = st.epoll_ctl(self.ep, CtlOp::Mod.to_raw(), fd, Some(&ev));
                return;
            }
        }
        if c.rounds_left > 0 && c.sent < self.request.len() {
            if let Ok(n) = st.send(fd, &self.request[c.sent..]) {
                c.sent += n;
            }
            if c.sent == self.request.len() {
                let ev = EpollEvent::new(Events::IN | Events::RDHUP, fd as u64);
                let _ = st.epoll_ctl(self.ep, CtlOp::Mod.to_raw(), fd, Some(&ev));
            }
        }
        if !events.intersects(Events::IN | Events::RDHUP | Events::HUP) {
            return;
        }
        loop {
            let Some(c) = self.conns.get_mut(&fd) else {
                return;
            };
            match st.recv(fd, &mut self.buf) {
                Ok(0) => {
                    if c.rounds_left > 0 {
                        self.stats.errors += 1;
                    }
                    self.finish(st, fd);
                    return;
                }
                Ok(n) => {
                    let got = &self.buf[..n];
                    if c.got + n > self.reply.len() || self.reply[c.got..c.got + n] != *got {
                        self.stats.errors += 1;
                        self.finish(st, fd);
                        return;
                    }
                    c.got += n;
                    if c.got == self.reply.len() {
                        self.stats.replies += 1;
                        c.got = 0;
                        c.sent = 0;
                        c.rounds_left = c.rounds_left.saturating_sub(1);
                        if c.rounds_left == 0 {
                            self.finish(st, fd);
                            return;
                        }
                        let ev =
                            EpollEvent::new(Events::OUT | Events::IN | Events::RDHUP, fd as u64);
                        let _ = st.epoll_ctl(self.ep, CtlOp::Mod.to_raw(), fd, Some(&ev));
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.stats.errors += 1;
                    self.finish(st, fd);
                    return;
                }
            }
        }
    }

    fn finish<D: Device + Lookahead>(&mut self, st: &mut Stack<D>, fd: i32) {
        if self.conns.remove(&fd).is_some() {
            self.stats.finished += 1;
            let _ = st.close(fd);
        }
    }
}

struct KernelConn<C> {
    stream: TcpStream,
    inner: ServerConn<C>,
}

/// Serves `proto` on kernel sockets at `addr` with kernel epoll
/// (level-triggered, or edge-triggered with `et`), until `stop` is set:
/// the same server as [`Server`], on Linux's stack, for side-by-side
/// measurements. `ready` is called once the socket listens.
pub fn serve_kernel<P: Protocol>(
    addr: SocketAddr,
    mut proto: P,
    et: bool,
    stop: &AtomicBool,
    ready: impl FnOnce(SocketAddr),
) -> io::Result<P> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    ready(listener.local_addr()?);
    let mut ep = KernelEpoll::new(256)?;
    let etf = if et { libc::EPOLLET as u32 } else { 0 };
    let inmask = libc::EPOLLIN as u32 | libc::EPOLLRDHUP as u32 | etf;
    let outmask = libc::EPOLLOUT as u32 | etf;
    ep.add(listener.as_raw_fd(), libc::EPOLLIN as u32, LISTENER)?;
    let mut conns: HashMap<u64, KernelConn<P::Conn>> = HashMap::new();
    let mut next_id: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = ep.wait(50)?;
        for i in 0..n {
            let ev = ep.event(i);
            if ev.data == LISTENER {
                while let Ok((stream, _)) = listener.accept() {
                    stream.set_nonblocking(true)?;
                    stream.set_nodelay(true)?;
                    let id = next_id;
                    next_id += 1;
                    ep.add(stream.as_raw_fd(), inmask, id)?;
                    conns.insert(
                        id,
                        KernelConn {
                            stream,
                            inner: ServerConn {
                                proto: P::Conn::default(),
                                out: Vec::new(),
                                sent: 0,
                                blocked: false,
                                closing: false,
                            },
                        },
                    );
                }
                continue;
            }
            let id = ev.data;
            let Some(c) = conns.get_mut(&id) else {
                continue;
            };
            let masks = (inmask, outmask);
            let mut close =
                ev.events & libc::EPOLLERR as u32 != 0 || !kernel_flush(c, &ep, id, masks);
            // Read and answer while not blocked on output: until EAGAIN
            // with ET, once with LT.
            while !close && !c.inner.blocked {
                match c.stream.read(&mut buf) {
                    Ok(0) => close = true,
                    Ok(n) => {
                        let keep = proto.on_data(&mut c.inner.proto, &buf[..n], &mut c.inner.out);
                        c.inner.closing = !keep;
                        close = !kernel_flush(c, &ep, id, masks);
                        if !et {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => close = true,
                }
            }
            if close && let Some(c) = conns.remove(&id) {
                let _ = ep.delete(c.stream.as_raw_fd());
            }
        }
    }
    Ok(proto)
}

/// Sends a kernel connection's pending output and sets its interest (OUT
/// while blocked, IN otherwise). Returns false if it is to be closed.
fn kernel_flush<C>(c: &mut KernelConn<C>, ep: &KernelEpoll, id: u64, masks: (u32, u32)) -> bool {
    let inner = &mut c.inner;
    while inner.sent < inner.out.len() {
        match c.stream.write(&inner.out[inner.sent..]) {
            Ok(n) => inner.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return false,
        }
    }
    let drained = inner.sent == inner.out.len();
    if drained {
        inner.out.clear();
        inner.sent = 0;
        if inner.closing {
            return false;
        }
    }
    if drained == inner.blocked {
        inner.blocked = !drained;
        let mask = if inner.blocked { masks.1 } else { masks.0 };
        if ep.modify(c.stream.as_raw_fd(), mask, id).is_err() {
            return false;
        }
    }
    true
}

/// Resident memory of this process in bytes (from `/proc/self/status`).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_answers_each_request_and_keeps_partial_heads() {
        let mut h = Http::default();
        let mut c = HttpConn::default();
        let mut out = Vec::new();
        assert!(h.on_data(&mut c, b"GET / HTTP/1.1\r\nHo", &mut out));
        assert!(out.is_empty());
        assert!(h.on_data(&mut c, b"st: x\r\n\r\nGET / HTTP/1.1\r\n\r\n", &mut out));
        assert_eq!(out, [HTTP_RESPONSE, HTTP_RESPONSE].concat());
        assert_eq!(h.requests, 2);
        out.clear();
        assert!(!h.on_data(
            &mut c,
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            &mut out
        ));
        assert_eq!(out, HTTP_RESPONSE);
    }

    #[test]
    fn http_head_split_inside_the_blank_line_is_found() {
        let mut h = Http::default();
        let mut c = HttpConn::default();
        let mut out = Vec::new();
        for piece in [&b"GET / HTTP/1.1\r\n\r"[..], b"\n"] {
            assert!(h.on_data(&mut c, piece, &mut out));
        }
        assert_eq!(out, HTTP_RESPONSE);
    }

    #[test]
    fn http_oversized_head_closes() {
        let mut h = Http::default();
        let mut c = HttpConn::default();
        let mut out = Vec::new();
        assert!(!h.on_data(&mut c, &vec![b'a'; MAX_HEAD + 1], &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn response_length_header_matches_body() {
        let text = std::str::from_utf8(HTTP_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(body.as_bytes(), HTTP_BODY);
        assert!(head.contains(&format!("Content-Length: {}", HTTP_BODY.len())));
    }
}
