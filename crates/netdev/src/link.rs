//! [`Link::pair`]: two smoltcp devices joined in memory.
//!
//! Each direction is one ring (`crate::ring`) of `capacity + 1` packet slots
//! of `mtu` bytes, allocated when the pair is made. A device holds the
//! consuming half of its receive ring and the producing half of its peer's.
//! The crate docs explain the back-pressure rules and why they cannot
//! deadlock; `random_operations_match_model` below checks that claim.

use std::fmt;
use std::os::fd::BorrowedFd;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::ring::{self, Consumer, Pending, Producer, Reservation};

/// The smallest MTU a link accepts: the IPv4 minimum (RFC 791).
pub const MIN_MTU: usize = 68;
/// The largest MTU a link accepts: the largest IPv4 packet.
pub const MAX_MTU: usize = 0xffff;
/// The most packets a ring can be asked to hold.
pub const MAX_CAPACITY: usize = 1 << 16;
/// The ring capacity of [`Link::pair`] when `mtu` is small enough.
pub const DEFAULT_CAPACITY: usize = 1024;
/// The byte budget per direction that caps the default capacity for large
/// MTUs: 8 MiB, i.e. 128 slots at MTU 65535.
pub const DEFAULT_RING_BYTES: usize = 8 << 20;

/// Slots per ring kept for replies given out by `receive`.
const REPLY_SLOTS: usize = 1;

/// Makes in-memory link pairs: see [`Link::pair`].
///
/// Never constructed; it only names the constructors.
#[derive(Debug)]
pub struct Link(());

impl Link {
    /// Two devices joined in memory, each carrying IP packets of up to `mtu`
    /// bytes to the other, with [`Link::default_capacity`] packets per
    /// direction.
    ///
    /// `mtu` is clamped to [`MIN_MTU`]`..=`[`MAX_MTU`].
    pub fn pair(mtu: usize) -> (LinkDevice, LinkDevice) {
        Self::pair_with(mtu, Self::default_capacity(mtu))
    }

    /// Like [`Link::pair`], with room for `capacity` packets per direction
    /// (clamped to `1..=`[`MAX_CAPACITY`]).
    ///
    /// Allocates `2 * (capacity + 1)` buffers of `mtu` bytes, once: the extra
    /// slot per direction is for replies (see the [crate docs](crate)).
    pub fn pair_with(mtu: usize, capacity: usize) -> (LinkDevice, LinkDevice) {
        let mtu = mtu.clamp(MIN_MTU, MAX_MTU);
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let (a_to_b, b_from_a) = ring::channel(capacity + REPLY_SLOTS, mtu);
        let (b_to_a, a_from_b) = ring::channel(capacity + REPLY_SLOTS, mtu);
        (
            LinkDevice::new(mtu, capacity, a_to_b, a_from_b),
            LinkDevice::new(mtu, capacity, b_to_a, b_from_a),
        )
    }

    /// The capacity [`Link::pair`] uses for `mtu`: [`DEFAULT_CAPACITY`]
    /// packets, or fewer so that a direction's buffers stay within
    /// [`DEFAULT_RING_BYTES`], but never fewer than 64.
    pub fn default_capacity(mtu: usize) -> usize {
        (DEFAULT_RING_BYTES / mtu.clamp(MIN_MTU, MAX_MTU)).clamp(64, DEFAULT_CAPACITY)
    }
}

/// One end of an in-memory link: a [`smoltcp::phy::Device`] with
/// `Medium::Ip` and every checksum off (memory does not corrupt packets).
///
/// `Send`: the two ends may be driven from different threads (there is no
/// wake-up between them; the receiving side polls). Not `Clone`: each ring
/// has exactly one writer and one reader.
pub struct LinkDevice {
    mtu: usize,
    capacity: usize,
    rx: RxSide,
    tx: TxSide,
}

/// The counters of one [`LinkDevice`], from [`LinkDevice::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets sent to the peer.
    pub tx_packets: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// `transmit` calls refused because the peer's ring was full.
    pub tx_full: u64,
    /// Packets refused because they were longer than the MTU (see
    /// [`LinkTxToken`]); not sent, not in `tx_packets`.
    pub tx_oversize: u64,
    /// Packets received from the peer.
    pub rx_packets: u64,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// `receive` calls that left a queued packet in place because the
    /// peer's ring had no slot left for a reply.
    pub rx_deferred: u64,
}

/// Hands smoltcp the oldest packet from the peer.
///
/// Dropping it without calling `consume` leaves the packet queued.
pub struct LinkRxToken<'a> {
    pending: Pending<'a>,
    stats: &'a mut RxStats,
}

/// A reserved slot in the peer's ring.
///
/// `consume(len, f)` with `len <= mtu` gives `f` a buffer of `len` bytes and
/// then queues it for the peer. With `len > mtu` it cannot fail or panic,
/// so it refuses the packet instead: `f` writes into a scratch buffer of
/// `len` bytes (at most [`MAX_MTU`]; a longer request gets a shorter
/// buffer), nothing is sent, and `tx_oversize` counts it. smoltcp never
/// does this: it sizes packets by the device's MTU. The scratch buffer is
/// allocated on first use; this error path is the only one that allocates.
///
/// Dropping the token without calling `consume` sends nothing.
pub struct LinkTxToken<'a> {
    reservation: Reservation<'a>,
    stats: &'a mut TxStats,
    scratch: &'a mut Vec<u8>,
}

struct RxSide {
    from_peer: Consumer,
    stats: RxStats,
}

struct TxSide {
    to_peer: Producer,
    stats: TxStats,
    /// Where an oversized packet is written and discarded.
    scratch: Vec<u8>,
}

#[derive(Default)]
struct RxStats {
    packets: u64,
    bytes: u64,
    deferred: u64,
}

#[derive(Default)]
struct TxStats {
    packets: u64,
    bytes: u64,
    full: u64,
    oversize: u64,
}

impl LinkDevice {
    fn new(mtu: usize, capacity: usize, to_peer: Producer, from_peer: Consumer) -> Self {
        LinkDevice {
            mtu,
            capacity,
            rx: RxSide {
                from_peer,
                stats: RxStats::default(),
            },
            tx: TxSide {
                to_peer,
                stats: TxStats::default(),
                scratch: Vec::new(),
            },
        }
    }

    /// The MTU, after clamping: the largest packet, in bytes.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// How many packets `transmit` may queue before the peer receives some.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Packets the peer has sent that this device has not yet received.
    pub fn rx_queued(&self) -> usize {
        self.rx.from_peer.len()
    }

    /// Packets this device has sent that the peer has not yet received.
    pub fn tx_queued(&self) -> usize {
        self.tx.to_peer.len()
    }

    /// Turns on this end's readiness descriptor (made on the first call,
    /// the same one afterwards) and returns it: it becomes readable when the
    /// peer queues a packet after [`arm_readiness`](LinkDevice::arm_readiness)
    /// was called. For a thread that sleeps in `poll(2)` until packets come;
    /// the protocol is in the `notify` module docs. Until the first call the
    /// peer pays one atomic load per packet, nothing more. Fails with the OS
    /// error if no socket pair can be made. The descriptor is non-blocking
    /// and must stay so: poll it, do not read it.
    pub fn readiness_fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        Ok(self.rx.from_peer.notifier()?.fd())
    }

    /// Empties the readiness descriptor: call it when `poll(2)` reported it
    /// readable (arming drains it too, but only when it knows a signal was
    /// sent; a signal caught in flight would otherwise wake the sleeper
    /// again and again).
    pub fn drain_readiness(&self) {
        if let Some(n) = self.rx.from_peer.notifier_if_enabled() {
            n.drain();
        }
    }

    /// Installs a hook that the peer calls, on its thread, when it queues a
    /// packet for this end while armed, instead of signalling the readiness
    /// descriptor (which this enables); see [`ArrivalHook`](crate::ArrivalHook)
    /// and the `notify` module docs. `AlreadyExists` if a hook is installed.
    pub fn set_arrival_hook(&self, hook: crate::ArrivalHook) -> std::io::Result<()> {
        if self.rx.from_peer.notifier()?.set_hook(hook) {
            Ok(())
        } else {
            Err(std::io::ErrorKind::AlreadyExists.into())
        }
    }

    /// Before sleeping on [`readiness_fd`](LinkDevice::readiness_fd): drains
    /// old signals, arms the next one, and returns true if packets are
    /// already waiting (then do not sleep: receive them). Without a
    /// readiness descriptor it only reports whether packets are waiting.
    pub fn arm_readiness(&self) -> bool {
        if let Some(n) = self.rx.from_peer.notifier_if_enabled() {
            n.arm();
        }
        self.rx_queued() > 0
    }

    /// The counters so far.
    pub fn stats(&self) -> LinkStats {
        let (rx, tx) = (&self.rx.stats, &self.tx.stats);
        LinkStats {
            tx_packets: tx.packets,
            tx_bytes: tx.bytes,
            tx_full: tx.full,
            tx_oversize: tx.oversize,
            rx_packets: rx.packets,
            rx_bytes: rx.bytes,
            rx_deferred: rx.deferred,
        }
    }
}

impl LinkDevice {
    /// Passes the `k`-th packet waiting to be received (0 = the next one)
    /// to `f` without receiving it, if that many are waiting.
    pub fn peek<R>(&self, k: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.rx.from_peer.peek_nth(k, f)
    }
}

impl phy::Device for LinkDevice {
    type RxToken<'a> = LinkRxToken<'a>;
    type TxToken<'a> = LinkTxToken<'a>;

    /// The oldest packet from the peer, if there is one and the peer's ring
    /// has a slot for a reply (counted in `rx_deferred` when it has not).
    fn receive(&mut self, _timestamp: Instant) -> Option<(LinkRxToken<'_>, LinkTxToken<'_>)> {
        let pending = self.rx.from_peer.peek()?;
        let TxSide {
            to_peer,
            stats: tx_stats,
            scratch,
        } = &mut self.tx;
        let Some(reservation) = to_peer.reserve(self.capacity + REPLY_SLOTS) else {
            self.rx.stats.deferred += 1;
            return None;
        };
        Some((
            LinkRxToken {
                pending,
                stats: &mut self.rx.stats,
            },
            LinkTxToken {
                reservation,
                stats: tx_stats,
                scratch,
            },
        ))
    }

    /// A slot in the peer's ring, or `None` (counted in `tx_full`) while the
    /// peer has `capacity` packets waiting.
    fn transmit(&mut self, _timestamp: Instant) -> Option<LinkTxToken<'_>> {
        let TxSide {
            to_peer,
            stats,
            scratch,
        } = &mut self.tx;
        let Some(reservation) = to_peer.reserve(self.capacity) else {
            stats.full += 1;
            return None;
        };
        Some(LinkTxToken {
            reservation,
            stats,
            scratch,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}

impl phy::RxToken for LinkRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let stats = self.stats;
        self.pending.consume(|packet| {
            stats.packets += 1;
            stats.bytes += packet.len() as u64;
            f(packet)
        })
    }
}

impl phy::TxToken for LinkTxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        match self.reservation.commit(len, f) {
            Ok(result) => {
                self.stats.packets += 1;
                self.stats.bytes += len as u64;
                result
            }
            Err(f) => {
                self.stats.oversize += 1;
                self.scratch.resize(len.min(MAX_MTU), 0);
                f(self.scratch)
            }
        }
    }
}

impl fmt::Debug for LinkDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkDevice")
            .field("mtu", &self.mtu)
            .field("capacity", &self.capacity)
            .field("rx_queued", &self.rx_queued())
            .field("tx_queued", &self.tx_queued())
            .field("stats", &self.stats())
            .finish()
    }
}

impl fmt::Debug for LinkRxToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkRxToken").finish_non_exhaustive()
    }
}

impl fmt::Debug for LinkTxToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkTxToken").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::collections::VecDeque;

    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use smoltcp::phy::{Checksum, Device, RxToken, TxToken};

    use super::*;

    const T0: Instant = Instant::ZERO;

    /// Sends `bytes` from `dev`; false if refused for lack of room.
    fn send(dev: &mut LinkDevice, bytes: &[u8]) -> bool {
        match dev.transmit(T0) {
            Some(tx) => {
                tx.consume(bytes.len(), |buf| buf.copy_from_slice(bytes));
                true
            }
            None => false,
        }
    }

    /// Receives one packet on `dev`, answering it with `reply` if given.
    fn recv(dev: &mut LinkDevice, reply: Option<&[u8]>) -> Option<Vec<u8>> {
        let (rx, tx) = dev.receive(T0)?;
        let packet = rx.consume(<[u8]>::to_vec);
        if let Some(reply) = reply {
            tx.consume(reply.len(), |buf| buf.copy_from_slice(reply));
        }
        Some(packet)
    }

    fn drain(dev: &mut LinkDevice) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| recv(dev, None)).collect()
    }

    fn numbered(i: u32, len: usize) -> Vec<u8> {
        let mut p = vec![0; len.max(4)];
        p[..4].copy_from_slice(&i.to_be_bytes());
        p.truncate(len);
        p
    }

    #[test]
    fn device_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<LinkDevice>();
    }

    #[test]
    fn new_pair_capabilities_are_ip_mtu_and_no_checksums() {
        for mtu in [1500, 65535] {
            let (a, _b) = Link::pair(mtu);
            let caps = a.capabilities();
            assert_eq!(caps.medium, Medium::Ip);
            assert_eq!(caps.max_transmission_unit, mtu);
            assert_eq!(caps.ip_mtu(), mtu);
            let c = caps.checksum;
            for sum in [c.ipv4, c.udp, c.tcp, c.icmpv4] {
                assert!(matches!(sum, Checksum::None));
            }
        }
    }

    #[test]
    fn new_pair_default_capacity_follows_mtu() {
        assert_eq!(Link::pair(1500).0.capacity(), 1024);
        assert_eq!(Link::pair(65535).0.capacity(), 128);
        assert_eq!(Link::pair_with(1500, 7).1.capacity(), 7);
    }

    #[test]
    fn out_of_range_arguments_are_clamped() {
        let (a, _) = Link::pair_with(0, 0);
        assert_eq!((a.mtu(), a.capacity()), (MIN_MTU, 1));
        let (a, _) = Link::pair_with(1 << 20, 2);
        assert_eq!(a.mtu(), MAX_MTU);
        assert_eq!(Link::default_capacity(0), DEFAULT_CAPACITY);
        assert_eq!(Link::default_capacity(usize::MAX), 128);
    }

    #[test]
    fn empty_link_receive_returns_none() {
        let (mut a, mut b) = Link::pair(1500);
        assert!(a.receive(T0).is_none());
        assert!(b.receive(T0).is_none());
        assert_eq!(a.stats(), LinkStats::default());
    }

    #[test]
    fn packets_sent_arrive_in_order_both_ways() {
        let (mut a, mut b) = Link::pair_with(1500, 16);
        for round in 0..10u32 {
            for i in 0..16 {
                assert!(send(&mut a, &numbered(round * 100 + i, 40 + i as usize)));
                assert!(send(&mut b, &numbered(round * 100 + i + 50, 60)));
            }
            let want_b: Vec<_> = (0..16)
                .map(|i| numbered(round * 100 + i, 40 + i as usize))
                .collect();
            let want_a: Vec<_> = (0..16)
                .map(|i| numbered(round * 100 + i + 50, 60))
                .collect();
            assert_eq!(drain(&mut b), want_b);
            assert_eq!(drain(&mut a), want_a);
        }
    }

    #[test]
    fn full_ring_transmit_refused_then_recovers_after_receive() {
        let (mut a, mut b) = Link::pair_with(1500, 4);
        for i in 0..4 {
            assert!(send(&mut a, &numbered(i, 20)));
        }
        assert_eq!((a.tx_queued(), b.rx_queued()), (4, 4));
        assert!(!send(&mut a, &numbered(4, 20)));
        assert!(!send(&mut a, &numbered(4, 20)));
        assert_eq!(a.stats().tx_full, 2);
        assert_eq!(recv(&mut b, None), Some(numbered(0, 20)));
        assert!(send(&mut a, &numbered(4, 20)));
        assert!(!send(&mut a, &numbered(5, 20)));
        let got = drain(&mut b);
        assert_eq!(got, (1..5).map(|i| numbered(i, 20)).collect::<Vec<_>>());
        assert_eq!(a.stats().tx_packets, 5);
    }

    #[test]
    fn full_ring_receive_replies_into_reserved_slot_then_defers() {
        let (mut a, mut b) = Link::pair_with(1500, 2);
        assert!(send(&mut a, b"a1") && send(&mut a, b"a2"));
        assert!(send(&mut b, b"b1") && send(&mut b, b"b2"));
        // a -> b is full for transmit, but a may still answer one packet.
        assert_eq!(recv(&mut a, Some(b"ack1")), Some(b"b1".to_vec()));
        assert_eq!(a.tx_queued(), 3);
        // Now the reply slot is taken too: a's receive waits.
        assert!(a.receive(T0).is_none());
        assert_eq!(a.stats().rx_deferred, 1);
        assert_eq!(a.rx_queued(), 1);
        // b is not blocked (the rings never both fill), and draining it
        // unblocks a.
        assert_eq!(
            drain(&mut b),
            vec![b"a1".to_vec(), b"a2".to_vec(), b"ack1".to_vec()]
        );
        assert_eq!(recv(&mut a, None), Some(b"b2".to_vec()));
    }

    #[test]
    fn full_size_packets_cross_at_both_mtus() {
        for mtu in [1500, 65535] {
            let (mut a, mut b) = Link::pair_with(mtu, 3);
            let big: Vec<u8> = (0..mtu).map(|i| (i % 251) as u8).collect();
            assert!(send(&mut a, &big));
            assert!(send(&mut a, &big[..1]));
            assert!(send(&mut a, &[]));
            assert_eq!(recv(&mut b, None), Some(big.clone()));
            assert_eq!(recv(&mut b, None), Some(big[..1].to_vec()));
            assert_eq!(recv(&mut b, None), Some(Vec::new()));
            assert_eq!(b.stats().rx_bytes, mtu as u64 + 1);
            assert_eq!(a.stats().tx_oversize, 0);
        }
    }

    #[test]
    fn oversize_packet_refused_counted_and_not_sent() {
        let (mut a, mut b) = Link::pair_with(1500, 4);
        let tx = a.transmit(T0).expect("room");
        let seen = tx.consume(1501, |buf| buf.len());
        assert_eq!(seen, 1501);
        let tx = a.transmit(T0).expect("room");
        assert_eq!(tx.consume(usize::MAX, |buf| buf.len()), MAX_MTU);
        assert_eq!(a.stats().tx_oversize, 2);
        assert_eq!(a.stats().tx_packets, 0);
        assert!(b.receive(T0).is_none());
        assert!(send(&mut a, b"fine"));
        assert_eq!(recv(&mut b, None), Some(b"fine".to_vec()));
    }

    #[test]
    fn unconsumed_tokens_change_nothing() {
        let (mut a, mut b) = Link::pair_with(1500, 4);
        let _ = a.transmit(T0);
        assert_eq!(b.rx_queued(), 0);
        assert!(send(&mut a, b"kept"));
        let _ = b.receive(T0);
        assert_eq!(recv(&mut b, None), Some(b"kept".to_vec()));
        assert_eq!(b.stats().rx_packets, 1);
    }

    #[test]
    fn traffic_counters_add_up() {
        let (mut a, mut b) = Link::pair_with(1500, 2);
        assert!(send(&mut a, &[0; 100]) && send(&mut a, &[0; 200]));
        assert!(!send(&mut a, &[0; 300]));
        assert_eq!(recv(&mut b, Some(&[0; 40])), Some(vec![0; 100]));
        assert_eq!(recv(&mut b, None), Some(vec![0; 200]));
        assert_eq!(recv(&mut a, None), Some(vec![0; 40]));
        assert_eq!(
            a.stats(),
            LinkStats {
                tx_packets: 2,
                tx_bytes: 300,
                tx_full: 1,
                rx_packets: 1,
                rx_bytes: 40,
                ..LinkStats::default()
            }
        );
        assert_eq!(
            b.stats(),
            LinkStats {
                tx_packets: 1,
                tx_bytes: 40,
                rx_packets: 2,
                rx_bytes: 300,
                ..LinkStats::default()
            }
        );
    }

    /// Random sends, receives with and without replies, oversized and
    /// abandoned tokens, checked against two `VecDeque`s; and after every
    /// step, the no-deadlock claim: if anything is queued, one side can
    /// receive.
    #[test]
    fn random_operations_match_model() {
        for seed in 0..20 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let capacity = rng.random_range(1..6);
            let mtu = 100;
            let (a, b) = Link::pair_with(mtu, capacity);
            let mut devs = [a, b];
            let mut queues: [VecDeque<Vec<u8>>; 2] = Default::default();
            for next in 0..2000 {
                let me = rng.random_range(0..2);
                let peer = 1 - me;
                let len = rng.random_range(4..=mtu);
                let packet = numbered(next, len);
                match rng.random_range(0..5) {
                    0 | 1 => {
                        let room = queues[peer].len() < capacity;
                        assert_eq!(send(&mut devs[me], &packet), room, "seed {seed}");
                        if room {
                            queues[peer].push_back(packet);
                        }
                    }
                    2 => {
                        let oversize = rng.random_range(mtu + 1..3 * mtu);
                        if let Some(tx) = devs[me].transmit(T0) {
                            tx.consume(oversize, |buf| assert_eq!(buf.len(), oversize));
                        }
                    }
                    3 => {
                        let reply = rng.random_bool(0.7).then_some(&packet[..]);
                        let can = !queues[me].is_empty() && queues[peer].len() <= capacity;
                        let got = recv(&mut devs[me], reply);
                        assert_eq!(got.is_some(), can, "seed {seed}");
                        if can {
                            assert_eq!(got, queues[me].pop_front(), "seed {seed}");
                            if let Some(reply) = reply {
                                queues[peer].push_back(reply.to_vec());
                            }
                        }
                    }
                    _ => {
                        let _ = devs[me].receive(T0);
                    }
                }
                for (dev, queue) in devs.iter().zip(&queues) {
                    assert_eq!(dev.rx_queued(), queue.len());
                    assert!(queue.len() <= capacity + REPLY_SLOTS);
                }
                if queues.iter().any(|q| !q.is_empty()) {
                    let movable =
                        |me: usize| !queues[me].is_empty() && queues[1 - me].len() <= capacity;
                    assert!(movable(0) || movable(1), "seed {seed}: stuck");
                }
            }
            // Two rounds: whichever side is deferred is free after the other drains.
            for _ in 0..2 {
                for (me, dev) in devs.iter_mut().enumerate() {
                    for packet in drain(dev) {
                        assert_eq!(Some(packet), queues[me].pop_front(), "seed {seed}");
                    }
                }
            }
            for (dev, queue) in devs.iter().zip(&queues) {
                assert!(queue.is_empty() && dev.rx_queued() == 0, "seed {seed}");
            }
        }
    }
}
