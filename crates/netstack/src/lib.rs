//! # netstack: the usertcp protocol stack
//!
//! A single-threaded TCP/IPv4 stack on smoltcp whose TCP events drive
//! [`eventpoll`], with a descriptor table and POSIX-style socket calls that
//! return Linux errno. Two ways to run it: run-to-completion (the
//! application owns the [`Stack`] and polls it), or threaded (the
//! [`threaded`] module: [`NetThread::spawn`] gives the stack its own thread
//! and returns a [`Net`] handle whose sockets block, callable from any
//! thread).
//!
//! ## What it does
//!
//! - [`Stack`] runs over any smoltcp [`Device`](smoltcp::phy::Device) with
//!   `Medium::Ip` (the in-memory `netdev::Link`) or `Medium::Ethernet` (the
//!   TAP, `netdev::Tap`, with the MAC of [`StackConfig::mac`]: the stack
//!   skips the 14-byte header to demux IPv4, hands ARP to smoltcp, and keeps
//!   the peers it hears from pinned in smoltcp's 256-entry ARP cache so that
//!   an expired entry never stalls a connection for a second; see the
//!   `stack::neighbor` module). It never reads a clock:
//!   the caller passes `now` to [`Stack::poll`] and asks
//!   [`Stack::poll_delay`] when to come back.
//! - **No step scans all connections.** One smoltcp `Interface`; one
//!   one-slot `SocketSet` per connection; a 4-tuple hash map finds the
//!   connection of each received segment (the stack parses the IPv4/TCP
//!   header itself); a dirty list limits egress to the connections touched;
//!   a hashed timer wheel fed by each connection's `poll_at` runs
//!   smoltcp's timers. See the `stack` module docs for the data path.
//! - **Prefetching** on devices that can show their queue ([`Lookahead`]:
//!   `netdev::LinkDevice`, a capture of one): with many connections
//!   ([`StackConfig::prefetch_min_conns`]), [`Stack::poll`] brings the
//!   demux slot, connection, smoltcp socket, receive-buffer line and socket
//!   entry of the packets waiting behind the current one into cache, one
//!   link of that chain of misses per packet (the `lookahead` module).
//! - **Socket buffers on huge pages**: buffers of the default size are
//!   carved from 2 MiB slabs marked `MADV_HUGEPAGE` (the `arena` module)
//!   and pooled with their sockets for the next connection, so many active
//!   connections do not cost a TLB miss per buffer touched; the memory of
//!   slabs left empty as connections close goes back to the kernel, and so
//!   does the room of the connection, socket, demux and TIME-WAIT tables
//!   once most of their entries are gone (the `stack::shrink` module).
//! - **Listeners** with an accept queue and a backlog: a SYN to a listening
//!   port makes a connection on the spot; SYNs past the backlog are dropped
//!   and counted, and the client's retransmitted SYN gets in once the
//!   application accepts. A half-open connection that has waited
//!   [`HALF_OPEN_EVICT_AGE`] for its ACK gives its place to a new SYN, so
//!   a SYN flood cannot keep a listener shut (smoltcp leaves no room for
//!   SYN cookies).
//! - **Events**: each [`Socket`] has a [`WaitQueue`](eventpoll::WaitQueue)
//!   (shared with the stack, which wakes it without touching a reference
//!   count; dropping the socket's last handle detaches it) and implements
//!   [`Pollable`](eventpoll::Pollable) with Linux's `tcp_poll` rules, so
//!   any number of epolls can watch it. After every
//!   step that touches a connection, its state is compared with the
//!   previous step and each change raises a mask, per DESIGN.md:
//!
//!   | TCP event | mask |
//!   |---|---|
//!   | passive handshake completes, joins the accept queue | listener: `IN` |
//!   | `SynSent -> Established` | `OUT` |
//!   | in-order data received | `IN` |
//!   | FIN received (CloseWait, Closing, TimeWait) | `IN \| RDHUP` |
//!   | ACK frees send space | `OUT` |
//!   | RST, user timeout, refused | `ERR \| HUP \| IN \| OUT \| RDHUP`, `SO_ERROR` |
//!   | both directions shut, or closed | `HUP` |
//!
//! - **Correctness smoltcp leaves to us**: a monotonic clock, the ISN seed
//!   and ephemeral ports from `getrandom` (or a seed, for tests), random
//!   ephemeral ports with unique 4-tuples (also against TIME-WAIT),
//!   `SO_ERROR` (`ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT` from the connect
//!   timeout or failed keep-alive), TIME-WAIT that keeps only the 4-tuple
//!   and the connection's last sequence numbers, and answers with them as
//!   Linux does (a FIN sent again is acknowledged again, a RST ends the
//!   wait only at the next sequence number, a SYN reuses the tuple only
//!   past it), orphans (closed descriptors) that time out, and several local
//!   addresses ([`StackConfig::extra_addrs`]) over which connections from
//!   unbound sockets spread, ~28k per address and server port.
//! - **`recv`/`send` flags** with Linux's TCP meaning
//!   ([`Stack::recv_flags`], [`Stack::send_flags`]): [`MSG_PEEK`],
//!   [`MSG_TRUNC`] (discard without copying), [`MSG_DONTWAIT`] and
//!   [`MSG_WAITALL`] (for [`Net`]'s blocking calls), [`MSG_NOSIGNAL`] and
//!   [`MSG_MORE`] accepted, [`MSG_ERRQUEUE`] and [`MSG_OOB`] with Linux's
//!   errno; `tests/flags.rs` checks the same calls against the kernel.
//! - **`SO_LINGER`** ([`Stack::setsockopt_linger`]): with a zero time the
//!   last close resets the connection (no FIN, no TIME-WAIT), as Linux's
//!   `tcp_disconnect`; with more, [`Net::close`] waits for the FIN's ACK
//!   or the time (the run-to-completion [`Stack::close`] cannot block and
//!   returns at once). Accepted sockets inherit it from their listener.
//! - **Descriptors**: one [`eventpoll::FdTable`] of [`File`]s per stack;
//!   closing the last descriptor of a socket closes its connection and
//!   removes its epoll registrations (Linux's file-description rule).
//! - **Tracing**: every step emits a `tracing` event at trace level
//!   (segment in with its 4-tuple and flags, state change, mask raised and
//!   wake, dirty, egress, timer, accept, harvest), and eventpoll's own
//!   (callback, enqueue or dedupe, harvest). They are compiled in by the
//!   `trace` feature, on by default ([`TRACE_EVENTS`] tells). With it, an
//!   event with no subscriber costs a cached level check, and the checks
//!   and the code around them were 2.6 % of the instructions of a
//!   run-to-completion round trip (callgrind, 12.8k instructions per round
//!   trip, both stacks). Without it the events are dead code and cost
//!   nothing: loopbench measures that build (`default-features = false`;
//!   its `trace` feature measures the other). The
//!   `tests/trace_events.rs` test checks both builds.
//!
//! ## What it does not do (yet)
//!
//! - Blocking sockets in run-to-completion use: every [`Stack`] call
//!   behaves as non-blocking (`EAGAIN`, `EINPROGRESS`) whatever
//!   `O_NONBLOCK` says. Blocking sockets are the [`threaded`] mode's:
//!   [`NetThread::spawn`] puts the stack on its own thread, and its [`Net`]
//!   handle (and [`TcpListener`], [`TcpStream`], [`Epoll`]) block.
//! - Media other than IP and Ethernet: [`Stack::new`] refuses them with
//!   `EINVAL`. No default gateway: peers must be on-link (the TAP subnet).
//! - TIME-WAIT without timestamps (no PAWS), and a connection that reuses
//!   a TIME-WAIT tuple starts from a random initial sequence number, not
//!   from past the old connection's as Linux's does. (Unacknowledged data
//!   or FINs give up after [`RETRANSMIT_TIMEOUT`] of silence, Linux's
//!   `tcp_retries2`, and an orphan after [`ORPHAN_TIMEOUT`].)
//! - `SO_RCVLOWAT`, urgent data (`MSG_OOB`), IPv6.
//!   `MSG_WAITALL` with `MSG_PEEK` does not wait for more than is queued
//!   (Linux does).
//!
//! ## Invariants
//!
//! - A connection is in the demux map iff it is not `Closed` (and, once its
//!   descriptor is closed, not in TIME-WAIT).
//! - A connection has at most one live timer entry (`timer_entry`), never
//!   later than its deadline (`timer`); other entries for it are stale and
//!   dropped when they come out of the wheel.
//! - A socket's stored readiness is updated before its queue is woken.
//! - Nothing a peer sends or a caller passes panics: malformed packets are
//!   handed to smoltcp or dropped, bad arguments are errno.
#![deny(unsafe_code)]

/// A `tracing` event at trace level, compiled in only with the crate's
/// `trace` feature (on by default). Without the feature the event is dead
/// code (`cfg!` is a constant `false`): its arguments still type-check, so
/// both builds see the same code, but nothing of it is emitted, not even the
/// cached level check a disabled event costs. Benchmarks build without it
/// (loopbench does), applications that want `RUST_LOG=trace` keep it.
macro_rules! trace {
    ($($arg:tt)*) => {
        if cfg!(feature = "trace") {
            ::tracing::trace!($($arg)*);
        }
    };
}

#[allow(unsafe_code)] // huge-page slabs lent to smoltcp sockets, each with its SAFETY
mod arena;
mod demux;
mod lookahead;
mod socket;
mod stack;
#[allow(unsafe_code)] // the stack thread's system calls, each with its SAFETY
mod sys;
pub mod threaded;
mod timer;

/// Whether this build has netstack's trace-level events compiled in (its
/// `trace` feature, which also turns on eventpoll's). Benchmarks print it
/// beside their figures.
pub const TRACE_EVENTS: bool = cfg!(feature = "trace");

pub use lookahead::Lookahead;
pub use socket::{File, Socket};
pub use stack::{
    AF_INET, CONNECT_TIMEOUT, DEFAULT_BUFFER, EPHEMERAL_FIRST, EPHEMERAL_LAST, F_GETFD, F_GETFL,
    F_SETFD, F_SETFL, FD_CLOEXEC, FourTuple, HALF_OPEN_EVICT_AGE, IPPROTO_TCP, KEEPALIVE_IDLE,
    KEEPALIVE_PROBING, MAX_BUFFER, MIN_BUFFER, MSG_DONTWAIT, MSG_ERRQUEUE, MSG_MORE, MSG_NOSIGNAL,
    MSG_OOB, MSG_PEEK, MSG_TRUNC, MSG_WAITALL, ORPHAN_TIMEOUT, POOL_MAX, PREFETCH_MIN_CONNS,
    RETRANSMIT_TIMEOUT, SHUT_RD, SHUT_RDWR, SHUT_WR, SO_ERROR, SO_KEEPALIVE, SO_LINGER, SO_RCVBUF,
    SO_REUSEADDR, SO_SNDBUF, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM, SOL_SOCKET,
    SYN_RECEIVED_TIMEOUT, Stack, StackConfig, Stats, TCP_NODELAY, TIME_WAIT,
};
pub use threaded::{
    Epoll, Net, NetThread, SO_RCVTIMEO, SO_SNDTIMEO, SleepDevice, TcpListener, TcpStream,
    ThreadOptions, ThreadStats,
};
