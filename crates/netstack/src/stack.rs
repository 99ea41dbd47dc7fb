//! The protocol core: one smoltcp `Interface`, one one-slot `SocketSet` per
//! connection, our own demultiplexing, a dirty list and a timer queue.
//!
//! ## The path of a packet
//!
//! 1. [`Stack::poll`] takes one packet from the device and parses its IPv4
//!    and TCP headers itself ([`parse`]) to get the 4-tuple. Before it
//!    does, if the device can show the packets behind it
//!    ([`Lookahead`]), it prefetches what they will touch, a few packets
//!    ahead ([`Core::prefetch_ahead`], the `lookahead` module).
//! 2. The 4-tuple is looked up in the demux table ([`crate::demux`]: one
//!    cache line per lookup). A SYN with no connection, to a port with a
//!    listener, makes a new connection on the spot (unless the listener's
//!    backlog is full: then the oldest half-open connection gives up its
//!    place if it is stale, see [`HALF_OPEN_EVICT_AGE`], and otherwise the
//!    SYN is dropped and counted). Anything else
//!    (unknown flows, non-TCP) is handed to smoltcp with an *empty* socket
//!    set, so smoltcp answers with a RST (or an ICMP reply) as it should.
//! 3. The packet is handed to `Interface::poll_ingress_single` through
//!    [`OneShot`], a device that yields exactly this packet (plus the real
//!    device's reply token), with the socket set of that one connection.
//!    smoltcp therefore never scans more than one socket. The price is that
//!    smoltcp sees the packet inside the device's receive closure, so no
//!    copy is made.
//! 4. The connection is *settled*: its observable state is compared with
//!    the snapshot taken at its previous step, and each change becomes an
//!    event mask (the table in DESIGN.md, see [`Core::settle`]). The socket's
//!    readiness is recomputed by `tcp_poll` rules, stored, and then the
//!    socket's wait queue is woken with the mask.
//! 5. If smoltcp's `poll_at` says the connection has something to send now
//!    (an ACK, data, a FIN), it goes on the dirty list. After ingress,
//!    [`Stack::poll`] runs egress over dirty connections only, each looped
//!    until smoltcp has nothing more to send (smoltcp sends at most one
//!    segment per socket per egress pass) or the device pushes back; a
//!    connection that still has something to send stays dirty for the next
//!    poll. User calls that leave something to send (`send`, a `recv` that
//!    opens the window, `shutdown`) run egress on their connection at once,
//!    as Linux does, instead of waiting for the next poll.
//!
//! ## Timers: a hashed wheel
//!
//! Each settled connection asks smoltcp for its `poll_at` (O(1): the set
//! has one socket) and keeps at most one live entry in a hashed timer wheel
//! of 1 ms ticks (the `timer` module), with an ordered overflow set for
//! deadlines more than a revolution (~4 s) away. Deadlines that move later
//! leave the entry in place (it comes out early and is pushed again);
//! deadlines that move earlier push a new entry and leave the old one
//! stale. So arming, moving and cancelling are O(1) without a search, and
//! nothing ever scans all connections. Expired connections are marked
//! dirty; egress then runs smoltcp's timers (retransmission, delayed ACK,
//! keep-alive, TIME-WAIT, user timeout).
//!
//! ## Buffers
//!
//! Buffers of the default size come from the stack's `BufferArena`
//! (`arena.rs`): 2 MiB slabs on transparent huge pages, so that thousands
//! of active connections do not cost a TLB miss per buffer touched. A
//! freed connection's socket set (socket, rx and tx buffers) goes back to
//! a pool when its buffers have the default size, and is reused by the
//! next connection: `listen`/`connect` reset the smoltcp socket, and the
//! stack resets its options; past `pool_max` the set is dropped and its
//! buffers go back to the arena, which gives the memory of slabs left
//! empty back to the kernel. Buffers of other sizes (`SO_RCVBUF`,
//! `SO_SNDBUF`) are ordinary heap vectors. An orphaned connection (its
//! descriptor closed) that reaches TIME-WAIT is freed at once and only its
//! 4-tuple and last sequence numbers are kept, in a small TIME-WAIT table,
//! so TIME-WAIT never pins buffers.
//!
//! ## Clock
//!
//! The stack never reads a clock: callers pass `now`. Time is kept monotonic
//! (a `now` earlier than the last one is replaced by the last one). User
//! calls between polls use the time of the last poll.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use crate::lookahead::{Lookahead, prefetch};
use eventpoll::{
    BasicFile, EfdFlags, EpollEvent, Errno, EventFd, Events, FdTable, O_CLOEXEC, O_NONBLOCK,
    PIPE_DEFAULT_CAPACITY, Pollable,
};
use rustc_hash::{FxHashMap, FxHashSet};
use smoltcp::iface::{Config, Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, IpProtocol,
    Ipv4Packet, TcpPacket, TcpSeqNumber,
};

use crate::arena::{BufferArena, Chunk};
use crate::demux::Demux;
use crate::socket::{File, PollState, Reaper, SockId, Socket, SocketEvents, tcp_poll};
use crate::timer::TimerWheel;

mod neighbor;
mod posix;
mod shrink;
mod time_wait;
use time_wait::{FinalSeqs, TimeWait};

/// `AF_INET`.
pub const AF_INET: i32 = 2;
/// `SOCK_STREAM`.
pub const SOCK_STREAM: i32 = 1;
/// Linux's `SOCK_MAX`: socket types are below it.
const SOCK_MAX: i32 = 10;
/// `SOCK_NONBLOCK` (equal to `O_NONBLOCK`).
pub const SOCK_NONBLOCK: i32 = O_NONBLOCK;
/// `SOCK_CLOEXEC` (equal to `O_CLOEXEC`).
pub const SOCK_CLOEXEC: i32 = O_CLOEXEC;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: i32 = 6;
/// `SOL_SOCKET`.
pub const SOL_SOCKET: i32 = 1;
/// `SO_REUSEADDR`.
pub const SO_REUSEADDR: i32 = 2;
/// `SO_ERROR`.
pub const SO_ERROR: i32 = 4;
/// `SO_SNDBUF`.
pub const SO_SNDBUF: i32 = 7;
/// `SO_RCVBUF`.
pub const SO_RCVBUF: i32 = 8;
/// `SO_KEEPALIVE`.
pub const SO_KEEPALIVE: i32 = 9;
/// `SO_LINGER`: takes a `struct linger`, so it has its own calls,
/// [`Stack::setsockopt_linger`] and [`Stack::getsockopt_linger`].
pub const SO_LINGER: i32 = 13;
/// `TCP_NODELAY` (level [`IPPROTO_TCP`]).
pub const TCP_NODELAY: i32 = 1;
/// `SHUT_RD`.
pub const SHUT_RD: i32 = 0;
/// `SHUT_WR`.
pub const SHUT_WR: i32 = 1;
/// `SHUT_RDWR`.
pub const SHUT_RDWR: i32 = 2;
/// `MSG_OOB`: urgent data. TCP urgent data is not supported (smoltcp has
/// none): `recv` gives `EINVAL`, as Linux does with no urgent data
/// pending, and `send` gives `EOPNOTSUPP`.
pub const MSG_OOB: i32 = 0x1;
/// `MSG_PEEK`: `recv` copies the data but leaves it queued.
pub const MSG_PEEK: i32 = 0x2;
/// `MSG_TRUNC`: `recv` on TCP discards up to `buf.len()` bytes without
/// copying them (Linux's TCP meaning) and returns the count.
pub const MSG_TRUNC: i32 = 0x20;
/// `MSG_DONTWAIT`: this one call does not block. [`Stack`] never blocks;
/// it matters to [`Net`](crate::Net).
pub const MSG_DONTWAIT: i32 = 0x40;
/// `MSG_WAITALL`: a blocking `recv` waits for all of `buf` (or end of
/// stream, an error, the `SO_RCVTIMEO`). [`Stack`] never blocks; it matters
/// to [`Net`](crate::Net).
pub const MSG_WAITALL: i32 = 0x100;
/// `MSG_ERRQUEUE`: the socket error queue, which is always empty here
/// (`EAGAIN`, as on Linux with nothing queued).
pub const MSG_ERRQUEUE: i32 = 0x2000;
/// `MSG_NOSIGNAL`: accepted; this stack never raises `SIGPIPE` (a send on
/// a closed stream is `EPIPE` only).
pub const MSG_NOSIGNAL: i32 = 0x4000;
/// `MSG_MORE`: accepted as a hint this stack does not act on (segments go
/// out as the socket's `TCP_NODELAY` setting says).
pub const MSG_MORE: i32 = 0x8000;
/// `F_GETFD`.
pub const F_GETFD: i32 = 1;
/// `F_SETFD`.
pub const F_SETFD: i32 = 2;
/// `F_GETFL`.
pub const F_GETFL: i32 = 3;
/// `F_SETFL`.
pub const F_SETFL: i32 = 4;
/// `FD_CLOEXEC`.
pub const FD_CLOEXEC: i32 = 1;

/// The first port of the ephemeral range (Linux's default
/// `ip_local_port_range`).
pub const EPHEMERAL_FIRST: u16 = 32768;
/// The last port of the ephemeral range.
pub const EPHEMERAL_LAST: u16 = 60999;
/// The default [`StackConfig::pool_max`]. A pooled set spares the next
/// connection a socket allocation, worth 5-10 % of `loopbench crr`'s rate
/// against no pool, and 256 did as well there as 4096. What the pool holds
/// stays in memory after the connections are gone: 256 sets with
/// default-size buffers are 32 MiB, 4096 were 512 MiB.
pub const POOL_MAX: usize = 256;
/// Default size of each socket's receive and send buffer.
pub const DEFAULT_BUFFER: usize = 64 * 1024;
/// Smallest buffer `SO_RCVBUF` / `SO_SNDBUF` (or
/// [`StackConfig::buffer_size`]) can set.
///
/// smoltcp allocates both ring buffers when a connection is made and keeps
/// them for its life, so the buffer size *is* the memory of an idle
/// connection (Linux's idle sockets hold no buffers). 512 bytes each way
/// keeps a million idle connections with small messages within a few GB; a
/// window smaller than one MSS still works, only slower for bulk data.
pub const MIN_BUFFER: usize = 512;
/// Largest buffer `SO_RCVBUF` / `SO_SNDBUF` can set.
pub const MAX_BUFFER: usize = 16 * 1024 * 1024;
/// How long a closed connection's 4-tuple stays in TIME-WAIT (2 MSL).
pub const TIME_WAIT: Duration = Duration::from_secs(60);
/// Idle time before keep-alive probes when `SO_KEEPALIVE` is on (Linux's
/// `tcp_keepalive_time`).
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(7200);
/// How long keep-alive probes go unanswered before the connection is
/// dropped with `ETIMEDOUT` (Linux: 9 probes, 75 s apart).
pub const KEEPALIVE_PROBING: Duration = Duration::from_secs(9 * 75);
/// How long an orphaned connection (descriptor closed) may go without a
/// segment from the peer, counted from the close at the earliest, before it
/// is dropped with a RST (Linux's `tcp_fin_timeout`, 60 s).
pub const ORPHAN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection with data or a FIN the peer has not acknowledged
/// may go without a segment from the peer before it is dropped with
/// `ETIMEDOUT`:
/// Linux's `tcp_retries2` (15 retransmissions, about 924.6 s from a 200 ms
/// RTO). smoltcp has no retransmission limit of its own.
pub const RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(924);
/// How long an active open waits for the peer before `ETIMEDOUT` (Linux's
/// six SYN retries take about 127 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(127);
/// How long a passive open waits in SYN-RECEIVED for the peer's ACK before
/// the connection is dropped (Linux's five SYN-ACK retries,
/// `tcp_synack_retries`, give up after about 63 s). Without it a peer that
/// never completes its handshakes would hold the backlog forever.
pub const SYN_RECEIVED_TIMEOUT: Duration = Duration::from_secs(63);
/// How long a passive connection must have been half-open before a new SYN
/// to its full listener may take its place (see [`Stats::syn_evicted`]).
///
/// A peer that answers completes its handshake within one round trip; a
/// connection still half-open after 3 s left its SYN-ACK and the first
/// retransmission (at 1 s) unanswered, the mark of a SYN flood's spoofed
/// sources. Linux answers a flood with SYN cookies, which smoltcp cannot
/// take up (it cannot make an established socket from a cookie); without
/// them, [`SYN_RECEIVED_TIMEOUT`] alone would keep a flooded listener shut
/// for a minute at a time. Dropping the oldest stale half-open connection
/// instead (as FreeBSD's syncache drops its oldest entry) lets a real
/// client in as soon as one has gone stale. Connections whose handshake
/// completed are never dropped: a backlog full of those means the
/// application is not accepting, and the SYN is dropped as in Linux.
pub const HALF_OPEN_EVICT_AGE: Duration = Duration::from_secs(3);
/// How long a received segment may wait for its ACK once the connection is
/// past its first [`QUICKACKS`] data segments: Linux's minimum delayed-ACK
/// time (`TCP_DELACK_MIN`, 40 ms), not smoltcp's 10 ms. With many active
/// connections a round takes longer than 10 ms and almost every segment
/// would get its own pure ACK (loopbench rr at 10k connections: ~110k ->
/// ~230-290k req/s).
const ACK_DELAY: Duration = Duration::from_millis(40);
/// Full-sized data segments a new connection acknowledges at once (a
/// short, targeted form of Linux's quick-ACK mode). A SYN's window is
/// never scaled, so a sender's first flight stops at 64 KiB until an ACK
/// shows the receiver's real window; smoltcp, which books the SYN's window
/// as if it were scaled, sees no window update to send, and it only ACKs at
/// once for two full segments left *unread*. A receiver that reads at once
/// therefore held that first ACK for the whole delay: a 40 ms stall at the
/// start of every transfer past 64 KiB. Two quick ACKs put the real window
/// in front of the sender. Only segments of at least
/// [`QUICKACK_MIN_SEGMENT`] bytes count: a small request keeps the delay
/// and its ACK rides on the reply (Linux's 16 quick ACKs for every
/// segment, tried here, cost rr ~15 % and crr ~10 %).
const QUICKACKS: u8 = 2;
/// The smallest segment that gets a quick ACK: the minimum MSS (RFC 1122).
const QUICKACK_MIN_SEGMENT: usize = 536;
/// Segments one connection may send in one egress pass before the next
/// connection gets its turn.
const EGRESS_BUDGET: usize = 64;

/// How a stack is set up.
#[derive(Clone, Debug)]
pub struct StackConfig {
    /// The stack's IPv4 address.
    pub addr: Ipv4Addr,
    /// Its prefix length (the on-link subnet).
    pub prefix_len: u8,
    /// Default receive and send buffer size of each socket.
    pub buffer_size: usize,
    /// Seed for ISNs and ephemeral ports; `None` takes one from the OS
    /// (`getrandom`). Tests pass a seed to be deterministic.
    pub seed: Option<u64>,
    /// Maximum number of open descriptors (`EMFILE` past it).
    pub max_fds: usize,
    /// More local addresses (on-link, in `addr/prefix_len`). Connections
    /// from unbound sockets spread over `addr` and these, so one client
    /// stack can hold ~28k connections per address to one server port.
    pub extra_addrs: Vec<Ipv4Addr>,
    /// Most socket sets (with their buffers) kept in the pool for reuse
    /// (default [`POOL_MAX`]).
    pub pool_max: usize,
    /// The stack's MAC address on an Ethernet device (`Medium::Ethernet`,
    /// the TAP); unused on `Medium::Ip`. It must be unicast. The default is
    /// the locally administered `02:00:a:b:c:d` for the address `a.b.c.d`,
    /// so stacks with different addresses never share one.
    pub mac: EthernetAddress,
    /// From this many connections on, [`Stack::poll`] prefetches the state
    /// of the packets waiting behind the one it works on, on devices that
    /// can show them ([`Lookahead`]); below it, where connection state stays
    /// in cache, prefetching would only cost. `usize::MAX` turns it off,
    /// 0 always on. Default [`PREFETCH_MIN_CONNS`].
    pub prefetch_min_conns: usize,
}

impl StackConfig {
    /// A configuration for `addr/prefix_len` with default buffers, a seed
    /// from the OS, and Linux's default descriptor limit.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> StackConfig {
        StackConfig {
            addr,
            prefix_len,
            buffer_size: DEFAULT_BUFFER,
            seed: None,
            max_fds: eventpoll::DEFAULT_MAX_FDS,
            extra_addrs: Vec::new(),
            pool_max: POOL_MAX,
            mac: default_mac(addr),
            prefetch_min_conns: PREFETCH_MIN_CONNS,
        }
    }
}

/// The default MAC of a stack at `addr`: `02:00` (locally administered,
/// unicast) then the address's four bytes.
fn default_mac(addr: Ipv4Addr) -> EthernetAddress {
    let [a, b, c, d] = addr.octets();
    EthernetAddress([0x02, 0x00, a, b, c, d])
}

/// A connection's identity: local and remote address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourTuple {
    /// Our end.
    pub local: SocketAddrV4,
    /// The peer's end.
    pub remote: SocketAddrV4,
}

/// Counts the stack reports, for tests and leak checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Open descriptors (sockets, epolls, eventfds, pipe ends).
    pub fds: usize,
    /// Live sockets (descriptions not yet reaped).
    pub sockets: usize,
    /// Live connections (each with its own socket set and buffers).
    pub connections: usize,
    /// Socket sets with buffers waiting in the pool for reuse.
    pub pooled: usize,
    /// Default-size buffers taken from the huge-page arena and not given
    /// back: two per live default-size connection and two per pooled set.
    pub arena_buffers: usize,
    /// Bytes of the arena's 2 MiB slabs in memory. A slab whose buffers
    /// have all come back gives its memory back to the kernel, except one
    /// kept for the next connections; the address space is freed with the
    /// stack.
    pub arena_bytes: usize,
    /// 4-tuples in TIME-WAIT (no buffers held).
    pub time_wait: usize,
    /// ACKs sent from TIME-WAIT: for a FIN the peer sent again (its first
    /// ACK was lost), or any other segment out of window (at most one per
    /// tuple every 500 ms).
    pub time_wait_acks: u64,
    /// Entries in the demux map.
    pub demux: usize,
    /// Entries in the timer queue.
    pub timers: usize,
    /// Bytes the descriptor, connection, socket, demux and TIME-WAIT tables
    /// hold, their free room included (not the sockets' buffers or the smoltcp
    /// sockets, which are counted per connection). They grow with the
    /// connections and, once most are gone, give the memory back
    /// (`stack::shrink`).
    pub table_bytes: usize,
    /// SYNs dropped because a listener's backlog was full (of completed
    /// handshakes, or of half-open connections younger than
    /// [`HALF_OPEN_EVICT_AGE`]).
    pub syn_dropped: u64,
    /// Half-open passive connections dropped, silently, to make room in
    /// their listener's full backlog for a new SYN: each had waited at least
    /// [`HALF_OPEN_EVICT_AGE`] for the peer's ACK.
    pub syn_evicted: u64,
    /// Connections created by a SYN to a listener.
    pub passive_opens: u64,
    /// Steps taken on single connections (an ingress segment, an egress
    /// pass, a user call each settle one connection): with the work per
    /// step O(1), this is the stack's work, whatever the number of idle
    /// connections.
    pub conn_steps: u64,
    /// Packets received from the device.
    pub rx_packets: u64,
    /// Packets handed to smoltcp without a connection (RST or ICMP replies;
    /// on Ethernet also ARP).
    pub unmatched: u64,
    /// Ethernet only: neighbor (IP, MAC) pairs fed to smoltcp's ARP cache
    /// by the stack, when learned and every 20 s after (see the
    /// `stack::neighbor` module).
    pub neighbor_feeds: u64,
}

/// A connection's index in the connection slab.
type ConnId = u32;

/// What a connection looked like after its previous step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Snap {
    state: State,
    recv_queue: usize,
    send_free: usize,
}

/// How many packets waiting in the device prefetching looks at: the one
/// about to be received, and three more (see the `lookahead` module).
const PREFETCH_DEPTH: usize = 4;

/// The default [`StackConfig::prefetch_min_conns`]. On the
/// 2-core EPYC this was measured on (32 MB of L3), prefetching cost 10 %
/// of the request/response rate at 10 and 100 connections and 5 % at 1k,
/// where connection state stays in cache, and gained 14 % at 10k, where
/// it does not (`loopbench scale`).
pub const PREFETCH_MIN_CONNS: usize = 4096;

/// A packet waiting in the device, as prefetching knows it.
struct Ahead {
    /// Its 4-tuple, if it is a TCP segment.
    tuple: Option<FourTuple>,
    /// Its connection, once looked up (two packets ahead).
    conn: Option<ConnId>,
}

struct Conn {
    set: SocketSet<'static>,
    handle: SocketHandle,
    tuple: FourTuple,
    /// The socket that owns the connection (active, or accepted).
    sock: Option<SockId>,
    /// The listener a passive connection belongs to until it is accepted.
    listener: Option<SockId>,
    /// In the listener's accept queue.
    queued: bool,
    /// Its descriptor is closed: free it when smoltcp is done.
    orphan: bool,
    in_demux: bool,
    /// When smoltcp next wants this connection polled (its `poll_at`), if
    /// later than now.
    timer: Option<Instant>,
    /// The deadline of this connection's entry in the timer queue, if it
    /// has one: never later than `timer` (see `Core::arm_timer`).
    timer_entry: Option<Instant>,
    /// Data segments still to be acknowledged at once (see `QUICKACKS`).
    quickacks: u8,
    dirty: bool,
    /// Buffers of the default size (returned to the pool when freed).
    poolable: bool,
    /// The receive and send buffers' chunks, when they came from the
    /// stack's arena (given back when the socket set is dropped).
    bufs: Option<[Chunk; 2]>,
    /// `SO_KEEPALIVE` is on (decides the timeout once established).
    keepalive: bool,
    /// The connection is aborted at this time if the peer stays silent
    /// until then: an orphan [`ORPHAN_TIMEOUT`] after its close, and a
    /// connection whose FIN waits for its ACK [`RETRANSMIT_TIMEOUT`] after
    /// sending it; every segment from the peer pushes it back.
    give_up_at: Option<Instant>,
    last: Snap,
    /// Where the smoltcp socket lives (it never moves: the set holds it in
    /// a one-slot `Vec` that never grows), for prefetching only; never
    /// dereferenced.
    socket_at: usize,
    /// Where the next payload will be written in the receive buffer, as of
    /// the last `recv` that drained it (0: unknown), for prefetching only;
    /// never dereferenced.
    rx_next_at: usize,
    /// Where the owning socket's [`SocketEvents`] live (0: no owner): the
    /// readiness and wait queue its events go to. For prefetching only;
    /// never dereferenced.
    events_at: usize,
    /// Where the send buffer starts (0: not known yet): the next `send`
    /// writes there when the buffer is empty, as it is between a request
    /// and its response. For prefetching only; never dereferenced.
    tx_start_at: usize,
    /// The sequence numbers the connection ended with, from the segment
    /// that moved it into TIME-WAIT: its light TIME-WAIT keeps them.
    final_seqs: Option<FinalSeqs>,
}

impl Conn {
    // Invariant: every connection's set holds exactly one socket, the TCP
    // socket behind `handle`, from creation (or the pool) until it is freed;
    // so `get`/`get_mut` (which panic on a foreign handle) cannot panic.
    fn tcp(&self) -> &tcp::Socket<'static> {
        self.set.get::<tcp::Socket>(self.handle)
    }

    fn tcp_mut(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket>(self.handle)
    }

    /// Prefetches its smoltcp socket.
    fn prefetch_socket(&self) {
        prefetch(
            self.socket_at as *const tcp::Socket,
            std::mem::size_of::<tcp::Socket>(),
        );
    }

    /// Takes a new snapshot into `last`; returns the previous one and the
    /// new one.
    ///
    /// The fields are stored one by one, not as a struct: a struct copy
    /// went through the stack as a 1-byte store read back by an 8-byte load,
    /// which cannot be forwarded and waited for every older store to reach
    /// the cache, among them the payload just written into a cold receive
    /// buffer (`perf` put 8 % of request/response time at 10k connections
    /// on that load).
    fn resnap(&mut self) -> (Snap, Snap) {
        let before = self.last;
        let s = self.tcp();
        let state = s.state();
        let recv_queue = s.recv_queue();
        let send_free = s.send_capacity() - s.send_queue();
        self.last.state = state;
        self.last.recv_queue = recv_queue;
        self.last.send_free = send_free;
        (
            before,
            Snap {
                state,
                recv_queue,
                send_free,
            },
        )
    }
}

#[derive(Clone, Copy, Debug)]
struct Opts {
    nodelay: bool,
    keepalive: bool,
    reuseaddr: bool,
    rcvbuf: Option<usize>,
    sndbuf: Option<usize>,
    /// `SO_LINGER` in whole seconds (`None`: off). Zero makes the last
    /// close reset the connection; more makes the threaded mode's close
    /// wait that long for the FIN's ACK.
    linger: Option<u32>,
}

struct Listener {
    addr: Ipv4Addr,
    port: u16,
    backlog: usize,
    /// Half-open plus queued connections (the backlog counts both).
    pending: FxHashSet<ConnId>,
    queue: VecDeque<ConnId>,
    /// Half-open connections in the order their SYNs came. Entries go stale
    /// when the handshake completes or the connection is freed;
    /// [`Listener::take_stale_half_open`] skips them and
    /// [`Listener::push_half_open`] compacts, so the queue stays within a
    /// small multiple of the backlog.
    half_open: VecDeque<HalfOpen>,
}

/// A passive connection as its SYN found it (see `Listener::half_open`).
struct HalfOpen {
    since: Instant,
    id: ConnId,
    tuple: FourTuple,
}

impl HalfOpen {
    /// Still the same connection of listener `lid`, and still half-open.
    fn is_live(&self, lid: SockId, conns: &[Option<Conn>]) -> bool {
        matches!(
            conns.get(self.id as usize),
            Some(Some(c)) if c.listener == Some(lid) && !c.queued && c.tuple == self.tuple
        )
    }
}

impl Listener {
    /// Records a new half-open connection; drops stale entries once the
    /// queue has grown to twice the room of the backlog.
    fn push_half_open(&mut self, entry: HalfOpen, lid: SockId, conns: &[Option<Conn>]) {
        if self.half_open.len() >= 2 * (self.backlog + 1) + 8 {
            self.half_open.retain(|h| h.is_live(lid, conns));
        }
        self.half_open.push_back(entry);
    }

    /// The oldest live half-open connection, taken off the queue, if its
    /// SYN came at or before `cutoff`; stale entries in front of it go.
    fn take_stale_half_open(
        &mut self,
        lid: SockId,
        conns: &[Option<Conn>],
        cutoff: Instant,
    ) -> Option<ConnId> {
        while let Some(front) = self.half_open.front() {
            if front.is_live(lid, conns) {
                if front.since > cutoff {
                    return None;
                }
                let id = front.id;
                self.half_open.pop_front();
                return Some(id);
            }
            self.half_open.pop_front();
        }
        None
    }
}

enum Kind {
    Fresh,
    /// Boxed: a million connection sockets should not each carry the room
    /// of a listener's queues (it would take their slot from one cache line
    /// to three).
    Listener(Box<Listener>),
    Conn(ConnId),
}

struct SockEntry {
    /// The readiness and wait queue shared with the socket's description
    /// (held strongly: see the `socket` module's docs).
    events: Arc<SocketEvents>,
    kind: Kind,
    opts: Opts,
    /// Port reserved by `bind` or `listen`, released on close.
    bound: Option<SocketAddrV4>,
    error: Option<Errno>,
    shut_rd: bool,
    shut_wr: bool,
    /// A threaded close waits on the socket for its FIN's ACK
    /// (`SO_LINGER`): the ACK wakes its queue.
    lingering: bool,
}

struct SockSlot {
    generation: u32,
    entry: Option<SockEntry>,
}

#[derive(Default)]
struct PortUse {
    users: usize,
    all_reuse: bool,
    listening: bool,
}

/// Why a connection is being settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    Ingress,
    Egress,
    User,
}

/// Everything but the device and the interface, so that a packet borrowed
/// from the device can be processed against these tables.
struct Core {
    addr: Ipv4Addr,
    /// Every local address, `addr` first.
    addrs: Vec<Ipv4Addr>,
    /// Bytes before the IP header: 0 on `Medium::Ip`, 14 on Ethernet.
    link_header: usize,
    /// Ethernet only: the neighbors kept in smoltcp's ARP cache.
    neighbors: Option<neighbor::Neighbors>,
    pool_max: usize,
    /// See [`StackConfig::prefetch_min_conns`].
    prefetch_min_conns: usize,
    buffer_size: usize,
    caps: DeviceCapabilities,
    now: Instant,
    conns: Vec<Option<Conn>>,
    /// What prefetching knows of the packets waiting in the device, front
    /// first (see [`Core::prefetch_ahead`]).
    ahead: VecDeque<Ahead>,
    free_conns: Vec<ConnId>,
    conn_count: usize,
    /// When `conns` next tries to drop its free tail (the `shrink` module).
    conn_mark: shrink::ShrinkMark,
    demux: Demux,
    listeners: FxHashMap<u16, SockId>,
    ports: FxHashMap<u16, PortUse>,
    socks: Vec<SockSlot>,
    free_socks: Vec<u32>,
    sock_count: usize,
    /// When `socks` next tries to drop its free tail.
    sock_mark: shrink::ShrinkMark,
    /// The highest generation of a socket slot dropped from the end of
    /// `socks`: new slots start above it.
    retired_generation: u32,
    /// Connections waiting for egress, in order (each at most once: see
    /// `Conn::dirty`).
    dirty: VecDeque<ConnId>,
    /// Connection deadlines (entries may be stale: see `arm_timer`).
    timers: TimerWheel,
    /// Connections with a live entry in `timers`.
    armed: usize,
    /// The device refused a packet since the start of the last egress
    /// pass: user calls leave their connections on the dirty list instead
    /// of trying the device again.
    tx_blocked: bool,
    /// Scratch list for `expire_timers` (kept for its capacity).
    expired: Vec<(Instant, ConnId)>,
    /// The light TIME-WAIT: tuples of freed orphans (see `time_wait`).
    time_wait: FxHashMap<FourTuple, TimeWait>,
    /// TIME-WAIT expiries in deadline order: every tuple stays for the same
    /// [`TIME_WAIT`], so a FIFO is already sorted.
    tw_timers: VecDeque<(Instant, FourTuple)>,
    pool: Vec<Pooled>,
    empty: SocketSet<'static>,
    reaper: Reaper,
    rng: u64,
    stats: Stats,
    /// Default-size socket buffers on huge pages (`None` when the default
    /// size fits no slab). Declared last, so that it drops after `conns`
    /// and `pool`, whose sockets borrow from it (see the `arena` module).
    arena: Option<BufferArena>,
}

/// A freed connection's socket set, kept with its default-size buffers for
/// the next connection.
struct Pooled {
    set: SocketSet<'static>,
    handle: SocketHandle,
    bufs: Option<[Chunk; 2]>,
}

/// A single-threaded TCP/IP stack over a smoltcp device, with its own
/// descriptor table and POSIX-style calls.
///
/// Run-to-completion: the application owns the stack and loops
/// [`poll`](Stack::poll), then [`epoll_wait`](Stack::epoll_wait) with a
/// zero timeout, then its socket calls. `send`, `recv` and `shutdown`
/// transmit what they leave to send at once; `connect`, `close` and
/// `listen` take effect on the wire at the next `poll`.
///
/// Methods by role: inputs [`poll`](Stack::poll) (packets, timers, queued
/// sends); output [`poll_delay`](Stack::poll_delay) (when to poll again);
/// the socket calls ([`socket`](Stack::socket) ... [`close`](Stack::close));
/// the epoll calls; and [`stats`](Stack::stats).
pub struct Stack<D: Device + Lookahead> {
    device: D,
    iface: Interface,
    core: Core,
    files: FdTable<File>,
}

/// A device that yields one packet, already received, and the reply token
/// that came with it; it cannot transmit otherwise.
struct OneShot<'f, T> {
    frame: Option<&'f [u8]>,
    reply: Option<T>,
    caps: DeviceCapabilities,
}

struct SliceRx<'f>(&'f [u8]);

impl phy::RxToken for SliceRx<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

impl<'f, T: phy::TxToken> Device for OneShot<'f, T> {
    type RxToken<'a>
        = SliceRx<'f>
    where
        Self: 'a;
    type TxToken<'a>
        = T
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(SliceRx<'f>, T)> {
        let frame = self.frame.take()?;
        let reply = self.reply.take()?;
        Some((SliceRx(frame), reply))
    }

    fn transmit(&mut self, _now: Instant) -> Option<T> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// The headers of a received TCP segment.
#[derive(Clone, Copy, Debug)]
struct Segment {
    tuple: FourTuple,
    seq: TcpSeqNumber,
    /// The acknowledgment number, meaningful if `ack`.
    ack_number: TcpSeqNumber,
    syn: bool,
    ack: bool,
    rst: bool,
    fin: bool,
    len: usize,
}

/// Parses an IPv4 packet carrying a whole TCP segment; `None` for anything
/// else (other protocols, fragments, malformed packets).
fn parse(frame: &[u8]) -> Option<Segment> {
    let ip = Ipv4Packet::new_checked(frame).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.more_frags() || ip.frag_offset() != 0 {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    Some(Segment {
        tuple: FourTuple {
            local: SocketAddrV4::new(ip.dst_addr(), tcp.dst_port()),
            remote: SocketAddrV4::new(ip.src_addr(), tcp.src_port()),
        },
        seq: tcp.seq_number(),
        ack_number: tcp.ack_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        rst: tcp.rst(),
        fin: tcp.fin(),
        len: tcp.payload().len(),
    })
}

/// The 4-tuple of an IPv4 packet carrying TCP, for prefetching: a quick
/// read of the headers' fixed fields, without the checks [`parse`] makes
/// (a wrong tuple only prefetches the wrong line).
fn quick_tuple(ip: &[u8]) -> Option<FourTuple> {
    if ip.get(9) != Some(&u8::from(IpProtocol::Tcp)) {
        return None;
    }
    let header_len = usize::from(ip.first()? & 0x0f) * 4;
    let addr = |at: usize| {
        Some(Ipv4Addr::from(
            <[u8; 4]>::try_from(ip.get(at..at + 4)?).ok()?,
        ))
    };
    let port = |at: usize| Some(u16::from_be_bytes(ip.get(at..at + 2)?.try_into().ok()?));
    Some(FourTuple {
        local: SocketAddrV4::new(addr(16)?, port(header_len + 2)?),
        remote: SocketAddrV4::new(addr(12)?, port(header_len)?),
    })
}

fn fin_received(state: State) -> bool {
    matches!(
        state,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait
    )
}

fn fin_sent(state: State) -> bool {
    matches!(
        state,
        State::FinWait1 | State::FinWait2 | State::Closing | State::LastAck | State::TimeWait
    )
}

fn synchronized(state: State) -> bool {
    !matches!(
        state,
        State::Closed | State::Listen | State::SynSent | State::SynReceived
    )
}

fn endpoint(addr: SocketAddrV4) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(*addr.ip()), addr.port())
}

/// SplitMix64: the stack's own small generator for ephemeral ports.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<D: Device + Lookahead> Stack<D> {
    /// A stack on `device` (`Medium::Ip`, or `Medium::Ethernet` with
    /// [`StackConfig::mac`]; `EINVAL` otherwise, or for a multicast MAC), at
    /// time `now`. Fails with the OS error if no random seed can be had.
    pub fn new(mut device: D, config: StackConfig, now: Instant) -> Result<Stack<D>, Errno> {
        let caps = device.capabilities();
        let (hardware_addr, link_header) = match caps.medium {
            Medium::Ip => (HardwareAddress::Ip, 0),
            Medium::Ethernet if config.mac.is_unicast() => (
                HardwareAddress::Ethernet(config.mac),
                neighbor::ETHERNET_HEADER,
            ),
            _ => return Err(Errno::EINVAL),
        };
        if config.prefix_len > 32 {
            return Err(Errno::EINVAL);
        }
        let seed = match config.seed {
            Some(seed) => seed,
            None => getrandom::u64().map_err(|e| Errno(e.raw_os_error().unwrap_or(5)))?,
        };
        let mut rng = seed;
        let mut iface_config = Config::new(hardware_addr);
        iface_config.random_seed = next_random(&mut rng);
        let mut iface = Interface::new(iface_config, &mut device, now);
        let mut added = true;
        iface.update_ip_addrs(|addrs| {
            added = addrs
                .push(IpCidr::new(IpAddress::Ipv4(config.addr), config.prefix_len))
                .is_ok();
        });
        if !added {
            return Err(Errno::EINVAL);
        }
        let mut addrs = vec![config.addr];
        for &a in &config.extra_addrs {
            if a.is_unspecified() || a.is_broadcast() {
                return Err(Errno::EINVAL);
            }
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        if addrs.len() > 1 {
            // smoltcp keeps at most two addresses on an interface; with
            // more, it accepts every destination and the stack's own demux
            // filters (packets to foreign addresses are dropped).
            iface.set_any_ip(true);
        }
        let buffer_size = config.buffer_size.clamp(MIN_BUFFER, MAX_BUFFER);
        Ok(Stack {
            device,
            iface,
            core: Core {
                addr: config.addr,
                addrs,
                link_header,
                neighbors: (link_header != 0)
                    .then(|| neighbor::Neighbors::new(config.mac, config.addr, config.prefix_len)),
                pool_max: config.pool_max,
                prefetch_min_conns: config.prefetch_min_conns,
                buffer_size,
                caps,
                now,
                conns: Vec::new(),
                ahead: VecDeque::with_capacity(PREFETCH_DEPTH),
                free_conns: Vec::new(),
                conn_count: 0,
                conn_mark: shrink::ShrinkMark::default(),
                demux: Demux::new(next_random(&mut rng)),
                listeners: FxHashMap::default(),
                ports: FxHashMap::default(),
                socks: Vec::new(),
                free_socks: Vec::new(),
                sock_count: 0,
                sock_mark: shrink::ShrinkMark::default(),
                retired_generation: 0,
                dirty: VecDeque::new(),
                timers: TimerWheel::new(now),
                armed: 0,
                tx_blocked: false,
                expired: Vec::new(),
                time_wait: FxHashMap::default(),
                tw_timers: VecDeque::new(),
                pool: Vec::new(),
                empty: SocketSet::new(Vec::new()),
                reaper: Reaper::default(),
                rng,
                stats: Stats::default(),
                arena: BufferArena::new(buffer_size),
            },
            files: FdTable::with_limits(config.max_fds, eventpoll::DEFAULT_MAX_WATCHES),
        })
    }

    /// The device, for its statistics.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably: to change a wrapper's settings (a fault
    /// injector's rates, say). The stack keeps no state about the device
    /// but its capabilities, read once by [`Stack::new`].
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The stack's (first) address.
    pub fn addr(&self) -> Ipv4Addr {
        self.core.addr
    }

    /// Every local address, the first one first.
    pub fn addrs(&self) -> &[Ipv4Addr] {
        &self.core.addrs
    }

    /// The counts the stack keeps (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let mut stats = self.core.stats;
        stats.fds = self.files.len();
        stats.sockets = self.core.sock_count;
        stats.connections = self.core.conn_count;
        stats.pooled = self.core.pool.len();
        if let Some(arena) = &self.core.arena {
            stats.arena_buffers = arena.in_use();
            stats.arena_bytes = arena.resident_bytes();
        }
        stats.time_wait = self.core.time_wait.len();
        stats.demux = self.core.demux.len();
        stats.timers = self.core.armed;
        stats.table_bytes = self.core.table_bytes() + self.files.table_bytes();
        stats
    }

    /// Processes everything due at `now`: closed descriptors, received
    /// packets, expired timers, then egress of the connections touched.
    /// Returns true if anything happened (a packet in or out, a timer).
    pub fn poll(&mut self, now: Instant) -> bool {
        let Stack {
            device,
            iface,
            core,
            ..
        } = self;
        if now > core.now {
            core.now = now;
        }
        let now = core.now;
        core.reap();
        core.refresh_neighbors(iface);
        let mut busy = false;
        core.ahead.clear();
        while let Some((rx, reply)) = {
            core.prefetch_ahead(device);
            device.receive(now)
        } {
            busy = true;
            core.stats.rx_packets += 1;
            let peeked = core.ahead.pop_front();
            phy::RxToken::consume(rx, |frame| {
                // The prefetch pipeline is in step with the device's queue.
                debug_assert!(peeked.is_none_or(|p| p.tuple == core.peeked_tuple(frame)));
                core.ingress(iface, frame, reply)
            });
        }
        busy |= core.expire_timers(now);
        // The peer may have drained the link since the last refusal.
        core.tx_blocked = false;
        // Connections dirtied during this pass join the back of the list
        // and wait for the next one.
        let waiting = core.dirty.len();
        for visited in 1..=waiting {
            let Some(id) = core.dirty.pop_front() else {
                break;
            };
            core.prefetch_dirty();
            busy |= egress(device, iface, core, id) > 0;
            if core.tx_blocked {
                // The device is full: the connections not yet visited keep
                // their turn at the front, instead of each finding the
                // device full again.
                trace!(left = waiting - visited, "egress: device full");
                break;
            }
        }
        busy
    }

    /// After a user call changed connection `id` (data queued or taken, a
    /// shutdown): settle it and, if smoltcp has something to send now (the
    /// data, a FIN, a window update), send it now, as Linux's
    /// `tcp_sendmsg` and `tcp_recvmsg` do, instead of at the next poll.
    pub(crate) fn user_step(&mut self, id: ConnId) {
        self.call_step(id, false);
    }

    /// After a `recv` took data from connection `id`: [`user_step`]'s work,
    /// with the short settle of [`settle_after_recv`] when smoltcp has
    /// nothing to send.
    ///
    /// [`user_step`]: Stack::user_step
    /// [`settle_after_recv`]: Core::settle_after_recv
    pub(crate) fn recv_step(&mut self, id: ConnId) {
        self.call_step(id, true);
    }

    /// [`user_step`](Stack::user_step) (`after_recv`: after a `recv`, see
    /// [`recv_step`](Stack::recv_step)).
    fn call_step(&mut self, id: ConnId, after_recv: bool) {
        let Stack {
            device,
            iface,
            core,
            ..
        } = self;
        let now = core.now;
        let blocked = core.tx_blocked;
        let Some(conn) = core.conn_mut(id) else {
            return;
        };
        let at = iface.poll_at(now, &conn.set);
        if at.is_some_and(|t| t <= now) && !blocked {
            // Something to send: egress settles the connection after it.
            conn.dirty = true;
            egress(device, iface, core, id);
        } else if after_recv {
            core.settle_after_recv(at, id);
        } else {
            // Nothing to send now, or the device refused a packet since
            // the last poll: settling puts the connection on the dirty list
            // if it has something to send, for the next poll.
            core.settle_at(at, id, Cause::User);
        }
    }

    /// After a `send` queued data on connection `id`: [`user_step`]'s work,
    /// without its first `poll_at`. Queued data almost always has a segment
    /// to go now, so egress is tried straight away; when smoltcp holds it
    /// back (a closed window, Nagle) the attempt finds nothing, and egress
    /// settles the connection from its own `poll_at` as before. The
    /// snapshot always differs after a send (less send space), so settling
    /// as egress rather than as a user call refreshes the socket all the
    /// same, and a send never closes the connection, so the cause cannot
    /// change an error. Saves one `poll_at` per send (callgrind, 200k
    /// pingpong round trips: 1.1 % fewer instructions in all).
    ///
    /// [`user_step`]: Stack::user_step
    pub(crate) fn send_step(&mut self, id: ConnId) {
        if self.core.tx_blocked {
            self.user_step(id);
            return;
        }
        let Stack {
            device,
            iface,
            core,
            ..
        } = self;
        let Some(conn) = core.conn_mut(id) else {
            return;
        };
        conn.dirty = true;
        egress(device, iface, core, id);
    }

    /// How long the caller may wait before the next [`poll`](Stack::poll):
    /// zero if work is pending, the earliest timer otherwise, `None` if
    /// nothing is scheduled (only a packet or a call can create work).
    pub fn poll_delay(&self, now: Instant) -> Option<Duration> {
        if !self.core.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let first = [
            self.core.timers.next_deadline(),
            self.core.tw_timers.front().map(|&(t, _)| t),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(if first > now {
            first - now
        } else {
            Duration::ZERO
        })
    }
}

/// Egress of one dirty connection: smoltcp is asked for segments until it
/// has none left (it sends at most one per socket per call), the device
/// pushes back, or [`EGRESS_BUDGET`] is spent; then the connection is
/// settled (a connection with more to send is marked dirty again). Sets
/// `Core::tx_blocked` if the device refused a packet. Returns the number of
/// segments sent.
fn egress<D: Device>(device: &mut D, iface: &mut Interface, core: &mut Core, id: ConnId) -> usize {
    let now = core.now;
    let mut sent = 0;
    let Some(Some(conn)) = core.conns.get_mut(id as usize) else {
        return sent;
    };
    if !conn.dirty {
        return sent;
    }
    conn.dirty = false;
    // smoltcp's `poll_at` is cheaper than a `poll_egress` that finds
    // nothing to send, and settling needs it anyway.
    let mut at = None;
    let mut refused = false;
    while sent < EGRESS_BUDGET {
        match iface.poll_egress(now, device, &mut conn.set) {
            PollResult::SocketStateChanged => sent += 1,
            PollResult::None => {
                refused = true;
                break;
            }
        }
        let next = iface.poll_at(now, &conn.set);
        if next.is_none_or(|t| t > now) {
            at = Some(next);
            break;
        }
    }
    if sent > 0 {
        trace!(conn = id, segments = sent, "egress");
    }
    let at = match at {
        Some(at) => at,
        None => iface.poll_at(now, &conn.set),
    };
    // smoltcp had something to send now and sent nothing more: the device
    // refused a packet.
    core.tx_blocked |= refused && at.is_some_and(|t| t <= now);
    core.settle_at(at, id, Cause::Egress);
    sent
}

/// The earlier of two optional deadlines (`None`: no deadline).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Applies socket options to a connection's smoltcp socket.
fn apply_opts(conn: &mut Conn, opts: &Opts) {
    conn.keepalive = opts.keepalive;
    let sock = conn.tcp_mut();
    sock.set_nagle_enabled(!opts.nodelay);
    sock.set_keep_alive(opts.keepalive.then_some(KEEPALIVE_IDLE));
    if synchronized(sock.state()) {
        let unacked = sock.send_queue() > 0;
        sock.set_timeout(established_timeout(opts.keepalive, unacked));
    }
}

/// The states in which an abortive close (`SO_LINGER` 0) sends a reset:
/// Linux's `tcp_need_reset`. In the others the connection closes as usual
/// (a SYN-SENT one silently).
fn resets_on_abort(state: State) -> bool {
    matches!(
        state,
        State::SynReceived
            | State::Established
            | State::FinWait1
            | State::FinWait2
            | State::CloseWait
    )
}

/// A FIN is out and not acknowledged yet: what a lingering close waits
/// for (Linux's `sk_stream_wait_close`).
fn fin_unacked(state: State) -> bool {
    matches!(state, State::FinWait1 | State::Closing | State::LastAck)
}

/// How long a connection with a give-up time may wait for the peer (see
/// `Conn::give_up_at`).
fn give_up_after(orphan: bool) -> Duration {
    if orphan {
        ORPHAN_TIMEOUT
    } else {
        RETRANSMIT_TIMEOUT
    }
}

/// smoltcp's timeout for a synchronized connection that has a descriptor.
/// smoltcp aborts a connection once the peer has been silent for its
/// timeout, counting from the first transmission when data joins an empty
/// send buffer. So:
/// - with data waiting for its ACK, [`RETRANSMIT_TIMEOUT`] (Linux's
///   `tcp_retries2`);
/// - otherwise, with keep-alive probes every [`KEEPALIVE_IDLE`], idle +
///   probe time: a live peer answers within each interval, so this gives
///   Linux's `SO_KEEPALIVE` outcome (`ETIMEDOUT` after about 2 h 11 min of
///   silence);
/// - otherwise none: an idle connection never times out. (A timeout on an
///   idle connection would count from the peer's last segment, however
///   long ago, and abort it at once.)
fn established_timeout(keepalive: bool, unacked_data: bool) -> Option<Duration> {
    if unacked_data {
        Some(RETRANSMIT_TIMEOUT)
    } else {
        keepalive.then_some(KEEPALIVE_IDLE + KEEPALIVE_PROBING)
    }
}

impl Core {
    fn entry(&self, id: SockId) -> Result<&SockEntry, Errno> {
        match self.socks.get(id.index as usize) {
            Some(slot) if slot.generation == id.generation => {
                slot.entry.as_ref().ok_or(Errno::EBADF)
            }
            _ => Err(Errno::EBADF),
        }
    }

    fn entry_mut(&mut self, id: SockId) -> Result<&mut SockEntry, Errno> {
        match self.socks.get_mut(id.index as usize) {
            Some(slot) if slot.generation == id.generation => {
                slot.entry.as_mut().ok_or(Errno::EBADF)
            }
            _ => Err(Errno::EBADF),
        }
    }

    /// Listener `lid` and the connection table, borrowed together.
    fn listener_with_conns(&mut self, lid: SockId) -> Option<(&mut Listener, &[Option<Conn>])> {
        let slot = self
            .socks
            .get_mut(lid.index as usize)
            .filter(|slot| slot.generation == lid.generation)?;
        match &mut slot.entry {
            Some(SockEntry {
                kind: Kind::Listener(l),
                ..
            }) => Some((l, &self.conns)),
            _ => None,
        }
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id as usize)?.as_ref()
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id as usize)?.as_mut()
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conn_mut(id)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push_back(id);
            trace!(conn = id, "dirty");
        }
    }

    /// A port for `bind(0)` / `listen` on an unbound socket: random within
    /// the ephemeral range, not bound or listened on.
    fn free_port(&mut self) -> Result<u16, Errno> {
        let span = u32::from(EPHEMERAL_LAST - EPHEMERAL_FIRST) + 1;
        let start = (next_random(&mut self.rng) % u64::from(span)) as u32;
        for i in 0..span {
            let port = EPHEMERAL_FIRST + ((start + i) % span) as u16;
            if !self.ports.contains_key(&port) {
                return Ok(port);
            }
        }
        Err(Errno::EADDRINUSE)
    }

    /// A local address for a connection to `remote`: a random local
    /// address and ephemeral port such that the 4-tuple is unused (also in
    /// TIME-WAIT) and the port is not bound. Random probes first (O(1)
    /// while the space is not nearly full), then, Linux-style, a random
    /// start and sequential probing over every address.
    fn ephemeral(&mut self, remote: SocketAddrV4) -> Result<SocketAddrV4, Errno> {
        let span = u32::from(EPHEMERAL_LAST - EPHEMERAL_FIRST) + 1;
        let naddrs = self.addrs.len() as u64;
        let free = |core: &Core, addr: Ipv4Addr, port: u16| {
            let tuple = FourTuple {
                local: SocketAddrV4::new(addr, port),
                remote,
            };
            !core.ports.contains_key(&port)
                && !core.demux.contains_key(&tuple)
                && !core.time_wait.contains_key(&tuple)
        };
        for _ in 0..64 {
            let r = next_random(&mut self.rng);
            let addr = self.addrs[(r % naddrs) as usize];
            let port = EPHEMERAL_FIRST + ((r >> 32) % u64::from(span)) as u16;
            if free(self, addr, port) {
                return Ok(SocketAddrV4::new(addr, port));
            }
        }
        let start = (next_random(&mut self.rng) % u64::from(span)) as u32;
        for &addr in &self.addrs {
            for i in 0..span {
                let port = EPHEMERAL_FIRST + ((start + i) % span) as u16;
                if free(self, addr, port) {
                    return Ok(SocketAddrV4::new(addr, port));
                }
            }
        }
        Err(Errno::EADDRNOTAVAIL)
    }

    fn reserve_port(&mut self, port: u16, reuse: bool) -> Result<(), Errno> {
        let usage = self.ports.entry(port).or_default();
        if usage.users > 0 && (!reuse || !usage.all_reuse || usage.listening) {
            return Err(Errno::EADDRINUSE);
        }
        usage.all_reuse = if usage.users == 0 {
            reuse
        } else {
            usage.all_reuse && reuse
        };
        usage.users += 1;
        Ok(())
    }

    fn release_port(&mut self, port: u16, listening: bool) {
        if let Some(usage) = self.ports.get_mut(&port) {
            usage.users = usage.users.saturating_sub(1);
            if listening {
                usage.listening = false;
            }
            if usage.users == 0 {
                self.ports.remove(&port);
            }
        }
    }

    /// A connection with a socket set from the pool (or new buffers).
    fn new_conn(&mut self, tuple: FourTuple, opts: &Opts) -> ConnId {
        let default = self.buffer_size;
        let rx = opts.rcvbuf.unwrap_or(default);
        let tx = opts.sndbuf.unwrap_or(default);
        let poolable = rx == default && tx == default;
        let (set, handle, bufs) = match self.pool.pop() {
            Some(p) if poolable => (p.set, p.handle, p.bufs),
            other => {
                if let Some(p) = other {
                    self.pool.push(p);
                }
                let (rx_buf, tx_buf, bufs) = self.new_buffers(rx, tx, poolable);
                let socket = tcp::Socket::new(rx_buf, tx_buf);
                let mut set = SocketSet::new(Vec::with_capacity(1));
                let handle = set.add(socket);
                (set, handle, bufs)
            }
        };
        let mut conn = Conn {
            set,
            handle,
            tuple,
            sock: None,
            listener: None,
            queued: false,
            orphan: false,
            in_demux: false,
            timer: None,
            timer_entry: None,
            quickacks: QUICKACKS,
            dirty: false,
            keepalive: false,
            give_up_at: None,
            poolable,
            bufs,
            last: Snap {
                state: State::Closed,
                recv_queue: 0,
                send_free: 0,
            },
            socket_at: 0,
            rx_next_at: 0,
            events_at: 0,
            tx_start_at: 0,
            final_seqs: None,
        };
        conn.socket_at = std::ptr::from_ref(conn.tcp()) as usize;
        let sock = conn.tcp_mut();
        sock.set_timeout(None);
        // Delayed ACKs, but for the first full-sized segments (`QUICKACKS`).
        sock.set_ack_delay(Some(ACK_DELAY));
        apply_opts(&mut conn, opts);
        conn.resnap();
        self.conn_count += 1;
        match self.free_conns.pop() {
            Some(id) => {
                self.conns[id as usize] = Some(conn);
                id
            }
            None => {
                self.conns.push(Some(conn));
                self.conn_mark.grew(self.conns.len());
                (self.conns.len() - 1) as ConnId
            }
        }
    }

    /// Frees a connection: demux, timer, listener bookkeeping; its socket
    /// set goes to the pool.
    #[allow(unsafe_code)] // gives arena buffers back, with its SAFETY
    fn free_conn(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.free_conns.push(id);
        self.conn_count -= 1;
        if conn.in_demux && self.demux.get(&conn.tuple) == Some(id) {
            self.demux.remove(&conn.tuple);
        }
        if conn.timer_entry.is_some() {
            // Its wheel entry goes stale.
            self.armed -= 1;
        }
        if let Some(lid) = conn.listener
            && let Ok(entry) = self.entry_mut(lid)
            && let Kind::Listener(l) = &mut entry.kind
        {
            l.pending.remove(&id);
            if conn.queued {
                l.queue.retain(|&c| c != id);
            }
            self.refresh(lid);
        }
        trace!(conn = id, tuple = ?conn.tuple, "free connection");
        if conn.poolable && self.pool.len() < self.pool_max {
            conn.tcp_mut().abort();
            self.pool.push(Pooled {
                set: conn.set,
                handle: conn.handle,
                bufs: conn.bufs,
            });
        } else {
            let Conn { set, bufs, .. } = conn;
            // The socket borrows its buffers: it goes before they are
            // given back.
            drop(set);
            if let (Some(chunks), Some(arena)) = (bufs, self.arena.as_mut()) {
                for chunk in chunks {
                    // SAFETY: the chunk came from this arena and its slice
                    // went with the socket set just dropped.
                    unsafe { arena.give_back(chunk) };
                }
            }
        }
        self.shrink_conns_if_due();
    }

    /// Receive and send buffers of `rx` and `tx` bytes for a new socket:
    /// from the arena when both have the default size (`default_size`) and
    /// the arena exists, with their chunks; from the heap otherwise.
    #[allow(unsafe_code)] // takes arena buffers, with its SAFETY
    fn new_buffers(
        &mut self,
        rx: usize,
        tx: usize,
        default_size: bool,
    ) -> (
        tcp::SocketBuffer<'static>,
        tcp::SocketBuffer<'static>,
        Option<[Chunk; 2]>,
    ) {
        if default_size && let Some(arena) = self.arena.as_mut() {
            debug_assert_eq!(arena.buffer_len(), rx);
            // SAFETY: the slices go into the socket of one connection,
            // which is dropped before the arena (`Core` drops `arena`
            // last) and before its chunks are given back (`free_conn`).
            let ((rx_buf, rx_chunk), (tx_buf, tx_chunk)) = unsafe { (arena.take(), arena.take()) };
            return (
                tcp::SocketBuffer::new(rx_buf),
                tcp::SocketBuffer::new(tx_buf),
                Some([rx_chunk, tx_chunk]),
            );
        }
        (
            tcp::SocketBuffer::new(vec![0; rx]),
            tcp::SocketBuffer::new(vec![0; tx]),
            None,
        )
    }

    /// Closes the sockets whose last descriptor went away.
    fn reap(&mut self) {
        let ids = self.reaper.take();
        for id in ids {
            let Some(slot) = self.socks.get_mut(id.index as usize) else {
                continue;
            };
            if slot.generation != id.generation {
                continue;
            }
            let Some(entry) = slot.entry.take() else {
                continue;
            };
            self.free_socks.push(id.index);
            self.sock_count -= 1;
            trace!(sock = id.index, "reap closed socket");
            match entry.kind {
                Kind::Fresh => {
                    if let Some(b) = entry.bound {
                        self.release_port(b.port(), false);
                    }
                }
                Kind::Listener(l) => {
                    self.listeners.remove(&l.port);
                    self.release_port(l.port, true);
                    for cid in l.pending {
                        if let Some(conn) = self.conn_mut(cid) {
                            conn.listener = None;
                            conn.queued = false;
                            conn.orphan = true;
                            conn.tcp_mut().abort();
                        }
                        self.mark_dirty(cid);
                    }
                }
                Kind::Conn(cid) => {
                    if let Some(b) = entry.bound {
                        self.release_port(b.port(), false);
                    }
                    let give_up_at = self.now + ORPHAN_TIMEOUT;
                    if let Some(conn) = self.conn_mut(cid) {
                        conn.sock = None;
                        conn.orphan = true;
                        conn.give_up_at = Some(give_up_at);
                        let sock = conn.tcp_mut();
                        // Orphans do not live forever (Linux's
                        // tcp_fin_timeout / orphan retries). Not smoltcp's
                        // timeout: it would count from the peer's last
                        // segment, and reset a connection closed after a
                        // long idle time instead of sending its FIN.
                        sock.set_timeout(None);
                        if sock.recv_queue() > 0 {
                            // Linux: closing with unread data resets.
                            trace!(conn = cid, "close with unread data: RST");
                            sock.abort();
                        } else if entry.opts.linger == Some(0) && resets_on_abort(sock.state()) {
                            // SO_LINGER with a zero time: an abortive
                            // close, no FIN and no TIME-WAIT (Linux's
                            // `tcp_disconnect`).
                            trace!(conn = cid, "SO_LINGER 0: RST");
                            sock.abort();
                        } else {
                            sock.close();
                        }
                        if conn.tcp().state() == State::Closed && !conn.in_demux {
                            self.free_conn(cid);
                        } else {
                            self.mark_dirty(cid);
                        }
                    }
                }
            }
        }
        self.shrink_socks_if_due();
    }

    /// Handles one received packet.
    /// The 4-tuple of a frame waiting in the device, for prefetching.
    fn peeked_tuple(&self, frame: &[u8]) -> Option<FourTuple> {
        quick_tuple(frame.get(self.link_header..)?)
    }

    /// The same for egress over the dirty list, before its front is sent:
    /// the `Conn` two ahead, the socket of the next one.
    fn prefetch_dirty(&self) {
        if !self.prefetching() {
            return;
        }
        if let Some(&id) = self.dirty.get(1) {
            self.prefetch_conn(id);
        }
        if let Some(conn) = self.dirty.front().and_then(|&id| self.conn(id)) {
            conn.prefetch_socket();
        }
    }

    /// True from `prefetch_min_conns` connections on; below, everything
    /// fits in cache and prefetching (and learning addresses for it)
    /// would only cost.
    fn prefetching(&self) -> bool {
        self.conn_count >= self.prefetch_min_conns
    }

    /// Prefetches connection `id`'s `Conn`.
    fn prefetch_conn(&self, id: ConnId) {
        if let Some(slot) = self.conns.get(id as usize) {
            prefetch(slot, std::mem::size_of::<Option<Conn>>());
        }
    }

    /// Runs the prefetch chain ahead of ingress (see the `lookahead`
    /// module), before the packet at the front of the device's queue is
    /// received. `ahead[k]` is what is known of the `k`-th packet waiting.
    fn prefetch_ahead<D: Lookahead>(&mut self, device: &D) {
        if !self.prefetching() {
            return;
        }
        if self.ahead.is_empty() && device.waiting() < 2 {
            // Only the packet about to be received: nothing to run ahead of.
            return;
        }
        while self.ahead.len() < PREFETCH_DEPTH {
            let Some(tuple) = device.peek(self.ahead.len(), |f| self.peeked_tuple(f)) else {
                break;
            };
            if let Some(tuple) = &tuple {
                self.demux.prefetch(tuple);
            }
            self.ahead.push_back(Ahead { tuple, conn: None });
        }
        // Two ahead: its demux slot came in one packet ago; now its `Conn`.
        if let Some(entry) = self.ahead.get_mut(2)
            && let Some(tuple) = &entry.tuple
        {
            entry.conn = self.demux.get(tuple);
            if let Some(id) = entry.conn {
                self.prefetch_conn(id);
            }
        }
        // One ahead: its `Conn` came in one packet ago; now its socket.
        if let Some(conn) = self
            .ahead
            .get(1)
            .and_then(|entry| entry.conn)
            .and_then(|id| self.conn(id))
        {
            conn.prefetch_socket();
            if conn.rx_next_at != 0 {
                prefetch(conn.rx_next_at as *const u8, 1);
            }
            if conn.tx_start_at != 0 {
                prefetch(conn.tx_start_at as *const u8, 1);
            }
            // The socket layer the segment's events go to.
            if let Some(slot) = conn.sock.and_then(|sid| self.socks.get(sid.index as usize)) {
                prefetch(slot, std::mem::size_of_val(slot));
            }
            if conn.events_at != 0 {
                prefetch(
                    conn.events_at as *const SocketEvents,
                    std::mem::size_of::<SocketEvents>(),
                );
            }
        }
    }

    fn ingress<T: phy::TxToken>(&mut self, iface: &mut Interface, frame: &[u8], reply: T) {
        let packet = if self.link_header == 0 {
            Some(frame)
        } else {
            self.ethernet_ipv4(iface, frame)
        };
        let Some(seg) = packet.and_then(parse) else {
            if self.addrs.len() > 1
                && let Some(packet) = packet
                && let Ok(ip) = Ipv4Packet::new_checked(packet)
                && !self.addrs.contains(&ip.dst_addr())
            {
                trace!(dst = %ip.dst_addr(), "packet to a foreign address dropped");
                return;
            }
            trace!(bytes = frame.len(), "packet in: not TCP, to smoltcp");
            self.feed_unmatched(iface, frame, reply);
            return;
        };
        trace!(
            local = %seg.tuple.local,
            remote = %seg.tuple.remote,
            syn = seg.syn,
            ack = seg.ack,
            fin = seg.fin,
            rst = seg.rst,
            len = seg.len,
            "segment in"
        );
        let (id, reply) = match self.demux.get(&seg.tuple) {
            Some(id) => (id, reply),
            None if !self.addrs.contains(seg.tuple.local.ip()) => {
                trace!(dst = %seg.tuple.local.ip(), "segment to a foreign address dropped");
                return;
            }
            None => {
                let listening = seg.syn && !seg.ack && !seg.rst && self.listening(&seg);
                let mut reply = reply;
                if self.time_wait.contains_key(&seg.tuple) {
                    let Some(ip) = packet else {
                        return;
                    };
                    match self.time_wait_segment(seg.tuple, frame, ip, listening, reply) {
                        // A SYN that opens a new connection on the tuple.
                        Some(back) => reply = back,
                        None => return,
                    }
                }
                if !listening {
                    self.feed_unmatched(iface, frame, reply);
                    return;
                }
                match self.passive_open(&seg) {
                    Some(id) => (id, reply),
                    None => return,
                }
            }
        };
        let now = self.now;
        let caps = self.caps.clone();
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.give_up_at.is_some() {
            // The peer is alive: the wait starts again.
            conn.give_up_at = Some(now + give_up_after(conn.orphan));
        }
        // Quick ACK for the first full-sized segments (see `QUICKACKS`):
        // small ones (a request) keep the delay, so their ACK rides on the
        // reply.
        let quick = conn.quickacks > 0 && seg.len >= QUICKACK_MIN_SEGMENT;
        if quick {
            conn.quickacks -= 1;
            conn.tcp_mut().set_ack_delay(None);
        }
        let mut one = OneShot {
            frame: Some(frame),
            reply: Some(reply),
            caps,
        };
        iface.poll_ingress_single(now, &mut one, &mut conn.set);
        if seg.ack && conn.last.state != State::TimeWait && conn.tcp().state() == State::TimeWait {
            conn.final_seqs = Some(FinalSeqs::after(seg.seq, seg.len, seg.fin, seg.ack_number));
        }
        if quick {
            conn.tcp_mut().set_ack_delay(Some(ACK_DELAY));
        }
        // Settling marks the connection dirty if smoltcp has something to
        // send now (an ACK, data the window let through).
        self.settle(iface, id, Cause::Ingress);
    }

    fn feed_unmatched<T: phy::TxToken>(&mut self, iface: &mut Interface, frame: &[u8], reply: T) {
        self.stats.unmatched += 1;
        let mut one = OneShot {
            frame: Some(frame),
            reply: Some(reply),
            caps: self.caps.clone(),
        };
        iface.poll_ingress_single(self.now, &mut one, &mut self.empty);
    }

    /// True if a listener takes connections to the segment's address and
    /// port.
    fn listening(&self, seg: &Segment) -> bool {
        let Some(&lid) = self.listeners.get(&seg.tuple.local.port()) else {
            return false;
        };
        match self.entry(lid).map(|e| &e.kind) {
            Ok(Kind::Listener(l)) => l.addr.is_unspecified() || l.addr == *seg.tuple.local.ip(),
            _ => false,
        }
    }

    /// A SYN with no connection, to a listener: if its backlog has room,
    /// make a connection listening on exactly this address and port;
    /// otherwise drop the SYN and count it.
    fn passive_open(&mut self, seg: &Segment) -> Option<ConnId> {
        let port = seg.tuple.local.port();
        let lid = *self.listeners.get(&port)?;
        let entry = self.entry_mut(lid).ok()?;
        let opts = entry.opts;
        let Kind::Listener(l) = &mut entry.kind else {
            return None;
        };
        if !l.addr.is_unspecified() && l.addr != *seg.tuple.local.ip() {
            return None;
        }
        if l.pending.len() > l.backlog {
            let backlog = l.backlog;
            let cutoff = self.now - HALF_OPEN_EVICT_AGE;
            let victim = self
                .listener_with_conns(lid)
                .and_then(|(l, conns)| l.take_stale_half_open(lid, conns, cutoff));
            let Some(victim) = victim else {
                trace!(port, backlog, "SYN dropped: backlog full");
                self.stats.syn_dropped += 1;
                return None;
            };
            // Freed without a RST: its peer is most likely a spoofed
            // address, and a real one that answers late gets one then.
            trace!(
                conn = victim,
                port, backlog, "backlog full: stale half-open connection dropped"
            );
            self.stats.syn_evicted += 1;
            self.free_conn(victim);
        }
        // A new SYN reuses a TIME-WAIT tuple (RFC 6191 spirit); its queue
        // entry goes stale.
        self.time_wait.remove(&seg.tuple);
        let id = self.new_conn(seg.tuple, &opts);
        if let Ok(entry) = self.entry_mut(lid)
            && let Kind::Listener(l) = &mut entry.kind
        {
            l.pending.insert(id);
        }
        let conn = self.conn_mut(id)?;
        conn.listener = Some(lid);
        let listen = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*seg.tuple.local.ip())),
            port,
        };
        if conn.tcp_mut().listen(listen).is_err() {
            self.free_conn(id);
            return None;
        }
        // Lifted once the handshake completes (`settle_at`).
        conn.tcp_mut().set_timeout(Some(SYN_RECEIVED_TIMEOUT));
        let conn = self.conn_mut(id)?;
        conn.resnap();
        conn.in_demux = true;
        self.demux.insert(seg.tuple, id);
        let entry = HalfOpen {
            since: self.now,
            id,
            tuple: seg.tuple,
        };
        if let Some((l, conns)) = self.listener_with_conns(lid) {
            l.push_half_open(entry, lid, conns);
        }
        self.stats.passive_opens += 1;
        trace!(conn = id, tuple = ?seg.tuple, "SYN to listener: new connection");
        Some(id)
    }

    fn settle(&mut self, iface: &mut Interface, id: ConnId, cause: Cause) {
        let Some(conn) = self.conn(id) else {
            return;
        };
        let at = iface.poll_at(self.now, &conn.set);
        self.settle_at(at, id, cause);
    }

    /// After a step on connection `id`: turn the changes since the previous
    /// step into events (DESIGN.md's table), run the connection's life
    /// cycle (accept queue, free, TIME-WAIT), refresh and wake its socket,
    /// and reschedule its timer (when `iface` is given).
    /// `at` is smoltcp's `poll_at` for the connection as it is now.
    fn settle_at(&mut self, at: Option<Instant>, id: ConnId, cause: Cause) {
        let now = self.now;
        self.stats.conn_steps += 1;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let (before, after) = conn.resnap();
        let mut key = Events::empty();
        let mut error = None;
        if before.state != after.state {
            trace!(conn = id, from = %before.state, to = %after.state, "state change");
        }
        if !conn.orphan {
            // A FIN waiting for its ACK: give up after the retransmission
            // limit of silence (smoltcp's own timeout would count from the
            // peer's last segment, however long ago).
            if !fin_unacked(after.state) {
                conn.give_up_at = None;
            } else if conn.give_up_at.is_none() {
                conn.give_up_at = Some(now + RETRANSMIT_TIMEOUT);
            }
        }
        if after.state != State::Closed && conn.give_up_at.is_some_and(|t| t <= now) {
            // The peer has been silent for too long: reset (the next
            // egress sends the RST; an orphan is then freed, a socket gets
            // ETIMEDOUT).
            trace!(conn = id, orphan = conn.orphan, "peer silent: abort");
            conn.give_up_at = None;
            conn.tcp_mut().abort();
            self.mark_dirty(id);
            return;
        }
        if synchronized(after.state) && !conn.orphan {
            // Established: the connect timeout gives way to the
            // retransmission limit or keep-alive's.
            let unacked = conn.tcp().send_queue() > 0;
            let timeout = established_timeout(conn.keepalive, unacked);
            if conn.tcp().timeout() != timeout {
                conn.tcp_mut().set_timeout(timeout);
            }
        }
        if before.state == State::SynSent && synchronized(after.state) {
            key |= Events::OUT | Events::WRNORM;
        }
        if after.recv_queue > before.recv_queue {
            key |= Events::IN | Events::RDNORM;
        }
        if !fin_received(before.state) && fin_received(after.state) {
            key |= Events::IN | Events::RDNORM | Events::RDHUP;
        }
        if after.send_free > before.send_free && synchronized(after.state) {
            key |= Events::OUT | Events::WRNORM;
        }
        if after.state == State::Closed && before.state != State::Closed {
            error = match (before.state, cause) {
                (State::SynSent, Cause::Ingress) => Some(Errno::ECONNREFUSED),
                (
                    State::SynReceived
                    | State::Established
                    | State::FinWait1
                    | State::FinWait2
                    | State::CloseWait
                    | State::Closing,
                    Cause::Ingress,
                ) => Some(Errno::ECONNRESET),
                (State::TimeWait | State::Listen, _) => None,
                (State::LastAck, Cause::Ingress) => None,
                (_, Cause::Egress) if !conn.orphan => Some(Errno::ETIMEDOUT),
                _ => None,
            };
            key |= if error.is_some() {
                Events::ERR | Events::HUP | Events::IN | Events::OUT | Events::RDHUP
            } else {
                Events::HUP
            };
        } else if fin_received(after.state)
            && fin_sent(after.state)
            && !(fin_received(before.state) && fin_sent(before.state))
        {
            key |= Events::HUP;
        }

        // Life cycle.
        let state = after.state;
        if let Some(lid) = conn.listener {
            if synchronized(state) && !conn.queued {
                conn.queued = true;
                if let Ok(entry) = self.entry_mut(lid)
                    && let Kind::Listener(l) = &mut entry.kind
                {
                    l.queue.push_back(id);
                    trace!(
                        conn = id,
                        queued = l.queue.len(),
                        "handshake done: accept queue"
                    );
                }
                self.refresh_and_wake(lid, Events::IN | Events::RDNORM);
            } else if matches!(state, State::Closed | State::Listen) {
                trace!(conn = id, "pending connection reset before accept");
                self.free_conn(id);
                return;
            }
        }
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        // An orphan in TIME-WAIT is freed once its last ACK is out: after
        // an egress pass that left nothing to send.
        let flushed = cause == Cause::Egress && at.is_none_or(|t| t > now);
        if state == State::Closed || (state == State::TimeWait && conn.orphan && flushed) {
            if conn.in_demux {
                conn.in_demux = false;
                let tuple = conn.tuple;
                if self.demux.get(&tuple) == Some(id) {
                    self.demux.remove(&tuple);
                }
                if state == State::TimeWait {
                    if let Some(seqs) = self.conn_mut(id).and_then(|c| c.final_seqs) {
                        let until = now + TIME_WAIT;
                        let tw = TimeWait {
                            until,
                            seqs,
                            acked_at: None,
                        };
                        // A tuple already in TIME-WAIT keeps a stale queue
                        // entry; `expire_timers` skips it.
                        self.time_wait.insert(tuple, tw);
                        self.tw_timers.push_back((until, tuple));
                        trace!(?tuple, "TIME-WAIT: buffers freed, tuple kept");
                    } else {
                        // Cannot happen: TIME-WAIT is entered on a segment
                        // (`ingress`), which records the numbers.
                        trace!(?tuple, "TIME-WAIT without sequence numbers: tuple freed");
                    }
                }
            }
            let Some(conn) = self.conn_mut(id) else {
                return;
            };
            conn.timer = None;
            if conn.timer_entry.take().is_some() {
                self.armed -= 1;
            }
            let Some(conn) = self.conn_mut(id) else {
                return;
            };
            if conn.orphan {
                self.free_conn(id);
                return;
            }
        } else {
            let give_up_at = conn.give_up_at;
            if at.is_some_and(|t| t <= now) {
                self.mark_dirty(id);
            }
            let deadline = earliest(at.filter(|&t| t > now), give_up_at);
            self.arm_timer(id, deadline);
        }

        // The socket.
        let Some(conn) = self.conn(id) else {
            return;
        };
        if let Some(sid) = conn.sock {
            // A packet or an egress pass that changed nothing observable
            // leaves the socket's readiness as it was: nothing to store,
            // nothing to wake. (User calls may have changed the socket's
            // own flags, so they always refresh.)
            if cause != Cause::User && before == after && key.is_empty() && error.is_none() {
                return;
            }
            if let Some(e) = error
                && let Ok(entry) = self.entry_mut(sid)
            {
                entry.error = Some(e);
                trace!(conn = id, error = ?e, "SO_ERROR set");
            }
            let fin_acked = fin_unacked(before.state) && !fin_unacked(after.state);
            self.refresh_and_wake(sid, key);
            if fin_acked
                && let Ok(entry) = self.entry(sid)
                && entry.lingering
            {
                // Wake the lingering close. The readiness may not have
                // changed (the key may be empty, or hold only what an
                // ACK of data raises); an empty key wakes every waiter
                // (Linux's `sk_state_change`).
                trace!(conn = id, "FIN acknowledged: wake lingering close");
                entry.events.wait_queue().wake_all(Events::empty());
            }
        }
    }

    /// [`settle_at`](Core::settle_at) after a `recv` that took data from
    /// connection `id`, when smoltcp has nothing to send now.
    ///
    /// Taking data changes the receive queue and nothing else: not the
    /// state, the send queue or the timers. So in a state with no FIN
    /// waiting for its ACK (Established, CloseWait) there is no event to
    /// raise, no life-cycle step and no timeout to change; what is left of
    /// the settle is to store the new snapshot, reschedule the timer and
    /// refresh the socket's readiness (no longer readable once drained).
    /// Any other case takes the full settle.
    fn settle_after_recv(&mut self, at: Option<Instant>, id: ConnId) {
        let now = self.now;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let state = conn.tcp().state();
        let quiet = matches!(state, State::Established | State::CloseWait);
        let due = at.is_some_and(|t| t <= now);
        match conn.sock {
            Some(sid) if !due && quiet && state == conn.last.state => {
                conn.resnap();
                let deadline = earliest(at, conn.give_up_at);
                self.stats.conn_steps += 1;
                self.arm_timer(id, deadline);
                self.refresh(sid);
            }
            _ => self.settle_at(at, id, Cause::User),
        }
    }

    /// Sets connection `id`'s deadline to `deadline`, lazily.
    ///
    /// Most steps move a deadline *later* (a delayed ACK or a
    /// retransmission timer pushed back by new traffic) or clear it. Those
    /// leave the wheel alone: the connection's live entry stays where it
    /// is, comes out early, and [`expire_timers`](Core::expire_timers)
    /// pushes it again at the deadline of that moment. Only a deadline
    /// earlier than the live entry pushes a new entry (the old one goes
    /// stale: the wheel never searches). So a busy connection costs about
    /// one O(1) push per timer period, not one per segment.
    fn arm_timer(&mut self, id: ConnId, deadline: Option<Instant>) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        conn.timer = deadline;
        let Some(t) = deadline else {
            return;
        };
        let old = conn.timer_entry;
        if old.is_some_and(|e| e <= t) {
            return;
        }
        conn.timer_entry = Some(t);
        if old.is_none() {
            self.armed += 1;
        }
        self.timers.push(t, id);
    }

    /// Pops expired timer entries: a connection whose deadline has come is
    /// marked dirty (egress runs smoltcp's timers); one whose deadline moved
    /// later is re-queued. Returns true if any deadline came.
    fn expire_timers(&mut self, now: Instant) -> bool {
        let mut fired = false;
        let mut expired = std::mem::take(&mut self.expired);
        self.timers.expire(now, &mut expired);
        let count = expired.len();
        for (t, id) in expired.drain(..) {
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            if conn.timer_entry != Some(t) {
                // Stale: the deadline moved earlier, or the connection
                // was freed (and its slot perhaps reused).
                continue;
            }
            conn.timer_entry = None;
            match conn.timer {
                Some(deadline) if deadline > now => {
                    conn.timer_entry = Some(deadline);
                    self.timers.push(deadline, id);
                }
                Some(_) => {
                    conn.timer = None;
                    self.armed -= 1;
                    fired = true;
                    trace!(conn = id, "timer expired");
                    self.mark_dirty(id);
                }
                None => self.armed -= 1,
            }
        }
        if expired.capacity() > shrink::SHRINK_MIN_SLOTS.max(4 * count) {
            // Sized by a burst of expiries: keep room for this many.
            expired.shrink_to(shrink::SHRINK_MIN_SLOTS.max(2 * count));
        }
        self.expired = expired;
        while let Some(&(t, tuple)) = self.tw_timers.front() {
            if t > now {
                break;
            }
            self.tw_timers.pop_front();
            // Skip stale entries: the tuple was reused, or re-entered
            // TIME-WAIT later.
            if self.time_wait.get(&tuple).map(|tw| tw.until) == Some(t) {
                self.time_wait.remove(&tuple);
                trace!(?tuple, "TIME-WAIT over");
            }
        }
        self.shrink_time_wait_if_due();
        fired
    }

    /// The `tcp_poll` inputs of a socket.
    fn poll_state(&self, entry: &SockEntry) -> PollState {
        let mut s = PollState {
            error: entry.error.is_some(),
            rcv_shutdown: entry.shut_rd,
            send_shutdown: entry.shut_wr,
            ..PollState::default()
        };
        match &entry.kind {
            Kind::Fresh => {
                s.closed = true;
                s.writable = true;
            }
            Kind::Listener(l) => {
                s.listening = true;
                s.accept_ready = !l.queue.is_empty();
            }
            Kind::Conn(cid) => match self.conn(*cid) {
                Some(conn) => {
                    let sock = conn.tcp();
                    let state = sock.state();
                    s.connecting = matches!(state, State::SynSent | State::SynReceived);
                    s.closed = state == State::Closed;
                    let over = s.closed && conn.last.state == State::Closed;
                    s.rcv_shutdown |= fin_received(state) || over;
                    s.send_shutdown |= fin_sent(state) || over;
                    s.readable = sock.recv_queue() > 0;
                    let queued = sock.send_queue();
                    let free = sock.send_capacity() - queued;
                    s.writable = free > 0 && free >= queued / 2;
                }
                None => {
                    s.closed = true;
                    s.rcv_shutdown = true;
                    s.send_shutdown = true;
                }
            },
        }
        s
    }

    /// Recomputes a socket's readiness and stores it.
    fn refresh(&mut self, id: SockId) {
        self.refresh_and_wake(id, Events::empty());
    }

    /// Recomputes a socket's readiness, stores it, then wakes its queue with
    /// `key` (if not empty).
    fn refresh_and_wake(&mut self, id: SockId, key: Events) {
        let Ok(entry) = self.entry(id) else {
            return;
        };
        let readiness = tcp_poll(&self.poll_state(entry));
        let events = &entry.events;
        events.set_readiness(readiness);
        if !key.is_empty() {
            trace!(
                sock = id.index,
                mask = ?key,
                readiness = ?readiness,
                watchers = events.wait_queue().len(),
                "mask raised: wake"
            );
            events.wait_queue().wake(key);
        }
    }
}

impl<D: Device + Lookahead> std::fmt::Debug for Stack<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("addr", &self.core.addr)
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn_packet(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x02;
        p
    }

    #[test]
    fn quick_tuple_reads_what_parse_reads() {
        let p = syn_packet([198, 18, 0, 2], [198, 18, 0, 1], 40000, 80);
        assert_eq!(quick_tuple(&p), parse(&p).map(|seg| seg.tuple));
        assert!(quick_tuple(&p).is_some());
        // With 4 bytes of IP options, the ports move.
        let mut opts = p[..20].to_vec();
        opts[0] = 0x46;
        opts[2..4].copy_from_slice(&44u16.to_be_bytes());
        opts.extend_from_slice(&[1, 1, 1, 0]);
        opts.extend_from_slice(&p[20..]);
        assert_eq!(quick_tuple(&opts), parse(&opts).map(|seg| seg.tuple));
        assert!(quick_tuple(&opts).is_some());
        // Not TCP, or cut short: nothing.
        let mut udp = p.clone();
        udp[9] = 17;
        assert_eq!(quick_tuple(&udp), None);
        assert_eq!(quick_tuple(&p[..21]), None);
        assert_eq!(quick_tuple(&[]), None);
    }

    #[test]
    fn syn_packet_parses_to_its_four_tuple() {
        let p = syn_packet([198, 18, 0, 2], [198, 18, 0, 1], 40000, 80);
        let seg = parse(&p).unwrap();
        assert_eq!(
            seg.tuple,
            FourTuple {
                local: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 80),
                remote: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40000),
            }
        );
        assert!(seg.syn && !seg.ack && !seg.rst && !seg.fin);
        assert_eq!(seg.len, 0);
    }

    #[test]
    fn truncated_or_foreign_packet_parses_to_none() {
        let p = syn_packet([198, 18, 0, 2], [198, 18, 0, 1], 40000, 80);
        for len in 0..p.len() {
            assert!(parse(&p[..len]).is_none(), "truncated at {len}");
        }
        let mut udp = p.clone();
        udp[9] = 17;
        assert!(parse(&udp).is_none());
        let mut fragment = p;
        fragment[6] = 0x20; // more fragments
        assert!(parse(&fragment).is_none());
    }

    #[test]
    fn half_open_queue_of_a_busy_listener_stays_bounded() {
        // Handshakes that complete leave stale entries behind; pushing
        // compacts them away, so a listener that never fills up does not
        // grow its queue with every SYN it ever got.
        let lid = SockId {
            index: 3,
            generation: 1,
        };
        let mut l = Listener {
            addr: Ipv4Addr::UNSPECIFIED,
            port: 80,
            backlog: 4,
            pending: FxHashSet::default(),
            queue: VecDeque::new(),
            half_open: VecDeque::new(),
        };
        let tuple = FourTuple {
            local: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 80),
            remote: SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40000),
        };
        // No connection exists: every entry is stale once pushed.
        let conns: Vec<Option<Conn>> = Vec::new();
        let bound = 2 * (l.backlog + 1) + 8 + 1;
        for id in 0..10_000 {
            let entry = HalfOpen {
                since: Instant::from_millis(id),
                id: id as ConnId,
                tuple,
            };
            l.push_half_open(entry, lid, &conns);
            assert!(l.half_open.len() <= bound, "{} entries", l.half_open.len());
        }
        // Nothing live to drop, however old; the stale entries go.
        let cutoff = Instant::from_secs(1_000_000);
        assert_eq!(l.take_stale_half_open(lid, &conns, cutoff), None);
        assert!(l.half_open.is_empty());
    }

    #[test]
    fn a_socket_slot_dropped_from_the_table_returns_with_a_newer_generation() {
        // Thousands of sockets, all closed: the socket table drops its
        // slots. Grown again, the slot of the last one must not accept the
        // old id.
        let (_peer, dev) = netdev::Link::pair(1500);
        let t = Instant::from_secs(1);
        let mut st =
            Stack::new(dev, StackConfig::new(Ipv4Addr::new(198, 18, 0, 1), 15), t).unwrap();
        let n = 3 * shrink::SHRINK_MIN_SLOTS;
        let open = |st: &mut Stack<netdev::LinkDevice>| -> Vec<i32> {
            (0..n)
                .map(|_| st.socket(AF_INET, SOCK_STREAM, 0).unwrap())
                .collect()
        };
        let fds = open(&mut st);
        let last = st.sock_id(fds[n - 1]).unwrap();
        for fd in fds {
            st.close(fd).unwrap();
        }
        st.poll(t);
        assert!(
            st.core.socks.len() <= last.index as usize,
            "{}",
            st.core.socks.len()
        );
        assert!(st.core.socks.capacity() < n);
        assert_eq!(st.core.entry(last).err(), Some(Errno::EBADF));
        let fds = open(&mut st);
        let ids: Vec<SockId> = fds.iter().map(|&fd| st.sock_id(fd).unwrap()).collect();
        let again = ids
            .iter()
            .find(|id| id.index == last.index)
            .expect("the slot is back");
        assert!(again.generation > last.generation, "{again:?} vs {last:?}");
        assert_eq!(st.core.entry(last).err(), Some(Errno::EBADF));
        assert!(st.core.entry(*again).is_ok());
    }

    #[test]
    fn next_random_is_deterministic_per_seed_and_spreads() {
        let (mut a, mut b) = (5, 5);
        assert_eq!(next_random(&mut a), next_random(&mut b));
        let mut s = 1;
        let ports: std::collections::HashSet<u64> =
            (0..100).map(|_| next_random(&mut s) % 28232).collect();
        assert!(ports.len() > 95);
    }

    #[test]
    fn state_classes_match_rfc793() {
        assert!(fin_received(State::CloseWait) && fin_received(State::TimeWait));
        assert!(!fin_received(State::FinWait2));
        assert!(fin_sent(State::FinWait1) && fin_sent(State::LastAck));
        assert!(!fin_sent(State::CloseWait));
        assert!(synchronized(State::Established) && !synchronized(State::SynReceived));
    }
}
