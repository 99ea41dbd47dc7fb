//! # netdev: the devices usertcp runs on
//!
//! The `phy` layer of usertcp: things that implement
//! [`smoltcp::phy::Device`]. It knows nothing of sockets; `netstack` drives
//! these devices with `iface.poll`.
//!
//! What is here:
//!
//! - [`Link::pair`]: two devices joined in memory, for two stacks in one
//!   process (tests, benchmarks). `Medium::Ip`, checksums off, the MTU
//!   chosen by the caller (1500 and 65535 are the usual ones). **Lossless**:
//!   a full queue is back-pressure (`transmit` returns `None`), never a
//!   drop, because smoltcp's minimum retransmission timeout is one second
//!   and a lost packet would stall a benchmark. Packet buffers are allocated
//!   when the pair is made and reused: no allocation per packet.
//!
//! - [`Tap`]: a TAP device (`Medium::Ethernet`) for real kernel peers,
//!   opened with the `tun-tap` crate, non-blocking, read in batches into
//!   reused buffers; `EAGAIN` on write is back-pressure (the frame is kept
//!   and retried, never dropped behind smoltcp's back), other errors are
//!   counted and kept, never a panic. Its descriptor is exposed
//!   (`AsRawFd`) for a driver that sleeps in `poll(2)`. See the `tap`
//!   module docs.
//! - [`pcap_file`]: any device wrapped in smoltcp's `PcapWriter`, writing a
//!   capture that `tcpdump -r` and Wireshark read, through a sink
//!   ([`PcapFile`]) that never panics.
//! - Fault injection ([`Faulty`]): loss, duplication, reordering and
//!   corruption of received packets at seeded rates, and a filter that
//!   drops the packets a test picks.
//!
//! ## The link
//!
//! Each direction is a bounded ring of `capacity + 1` slots of `mtu` bytes
//! ([`Link::pair_with`]; [`Link::default_capacity`] otherwise). The tokens
//! smoltcp gets borrow slots: a [`LinkTxToken`] is a reserved free slot in
//! the peer's ring, a [`LinkRxToken`] the oldest packet in one's own, so a
//! packet is copied once on the way in (smoltcp writes it into the slot) and
//! read in place on the way out.
//!
//! ### Back-pressure, and why `receive` can refuse too
//!
//! `transmit` returns `None` while the peer has `capacity` packets waiting
//! (counted in [`LinkStats::tx_full`]). `receive` hands smoltcp a
//! [`TxToken`](smoltcp::phy::TxToken) as well, for the reply to the packet
//! (an ACK, a RST), and that token must not fail; so `receive` gives out a
//! packet only while a slot is free for the reply (otherwise it returns
//! `None` and counts [`LinkStats::rx_deferred`]). The extra slot of each
//! ring is reserved for such replies.
//!
//! This cannot deadlock. `transmit` adds a packet only to a ring holding
//! fewer than `capacity`, and a `receive` removes one packet and adds at
//! most one, so the two rings together never hold more than
//! `2 * capacity + 1` packets: one short of both being full. Whenever
//! packets are queued, at least one of the two devices can `receive`.
//!
//! smoltcp sends at most one segment per socket per `iface.poll`, so a
//! driver that wants throughput polls again while there is work.
//!
//! ## Threads
//!
//! A [`LinkDevice`] is `Send`, so the two ends of a pair may run on
//! different threads. Each ring is a single-producer, single-consumer queue:
//! positions are atomics written with plain `Release` stores, and each slot
//! belongs to one side at a time by those positions, so a packet costs no
//! locked instruction. Reaching a slot is the crate's only `unsafe` (the
//! `ring` module, each block with its `SAFETY` reason), and the loom
//! models check the ownership it relies on. The slots used to have a lock
//! each, never contended, to keep the crate free of `unsafe`: four locked
//! instructions per packet, which measured about +17 ns per 64-byte packet
//! on an AMD EPYC and 2.6 % of a request/response round trip between two
//! stacks on an Intel Xeon where a locked instruction costs ~5 ns. By default nothing wakes a thread when a packet arrives: the
//! receiving side polls ([`LinkDevice::rx_queued`]). A receiver that wants
//! to sleep opts in to a readiness descriptor
//! ([`LinkDevice::readiness_fd`], [`LinkDevice::arm_readiness`]) that the
//! peer signals when a packet arrives for an armed receiver; it costs
//! nothing until asked for.
//!
//! ## Example
//!
//! ```
//! use netdev::Link;
//! use smoltcp::phy::{Device, RxToken, TxToken};
//! use smoltcp::time::Instant;
//!
//! let (mut a, mut b) = Link::pair(1500);
//! let now = Instant::ZERO;
//! a.transmit(now).unwrap().consume(3, |buf| buf.copy_from_slice(b"abc"));
//! let (rx, _reply) = b.receive(now).unwrap();
//! assert_eq!(rx.consume(|packet| packet.to_vec()), b"abc");
//! assert_eq!(b.stats().rx_bytes, 3);
//! ```

#![deny(unsafe_code)]

mod faults;
mod link;
mod notify;
mod pcap;
mod ring;
mod sync;
mod tap;

pub use faults::{FaultConfig, FaultStats, Faulty, FaultyRxToken};
pub use link::{
    DEFAULT_CAPACITY, DEFAULT_RING_BYTES, Link, LinkDevice, LinkRxToken, LinkStats, LinkTxToken,
    MAX_CAPACITY, MAX_MTU, MIN_MTU,
};
pub use notify::ArrivalHook;
pub use pcap::{Pcap, PcapCounters, PcapFile, pcap_file};
pub use tap::{ETHERNET_HEADER, RX_BATCH, TAP_DEFAULT_MTU, Tap, TapRxToken, TapStats, TapTxToken};
