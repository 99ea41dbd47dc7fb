//! Fault injection: a wrapper that makes any device's wire unreliable.
//!
//! [`Faulty`] sits between a device and the stack and, on the way in, loses,
//! duplicates, reorders and corrupts packets at the rates of a
//! [`FaultConfig`], from a seed, so a failing run can be replayed. A filter
//! ([`Faulty::drop_if`]) drops exactly the packets a test picks (the ACK of
//! a FIN, say), for the cases where chance would take too long to hit.
//!
//! Faults are applied to received packets only: wrap both ends of a link
//! to disturb both directions. Sent packets go to the wrapped device as
//! they are.
//!
//! A real wire's corruption is caught by checksums, and the in-memory link
//! switches them off. So a `Faulty` device asks for checksums on both ways
//! (its [`capabilities`](Device::capabilities) say so, whatever the wrapped
//! device says): wrap both ends, or the unwrapped end sends packets without
//! checksums that the wrapped end then drops as corrupt.
//!
//! This is a test device: each packet is copied once into a buffer the
//! wrapper owns (buffers are reused, so the steady state does not
//! allocate), and a packet held back for reordering waits until the next
//! one has gone, or until the wrapped device has nothing more.

use std::collections::VecDeque;
use std::fmt;
use std::io;

use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities};
use smoltcp::time::Instant;

/// How often each fault hits a received packet (each a probability in
/// `0.0..=1.0`), and the seed of the generator that decides.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Probability that a packet is lost.
    pub loss: f64,
    /// Probability that a packet arrives twice.
    pub duplicate: f64,
    /// Probability that a packet is held back and arrives after the next.
    pub reorder: f64,
    /// Probability that one bit of a packet is flipped.
    pub corrupt: f64,
    /// Seed of the generator: the same seed and the same traffic give the
    /// same faults.
    pub seed: u64,
}

impl FaultConfig {
    /// No faults, with `seed`; set the rates wanted.
    pub fn new(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            ..FaultConfig::default()
        }
    }

    /// `InvalidInput` naming the first rate that is not a probability.
    fn check(&self) -> io::Result<()> {
        let rates = [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("fault rate {name} = {rate}: not a probability (0.0 to 1.0)"),
                ));
            }
        }
        Ok(())
    }
}

/// What a [`Faulty`] device did to the packets it received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Packets taken from the wrapped device.
    pub received: u64,
    /// Packets lost by chance.
    pub lost: u64,
    /// Packets dropped by the [`drop_if`](Faulty::drop_if) filter.
    pub filtered: u64,
    /// Packets delivered twice.
    pub duplicated: u64,
    /// Packets held back behind the next one.
    pub reordered: u64,
    /// Packets with a bit flipped.
    pub corrupted: u64,
}

/// The filter of [`Faulty::drop_if`].
type Filter = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// A device whose received packets are lost, duplicated, reordered and
/// corrupted as its [`FaultConfig`] says (see the module docs).
pub struct Faulty<D: Device> {
    inner: D,
    config: FaultConfig,
    rng: u64,
    filter: Option<Filter>,
    /// Packets ready to be received, in order.
    ready: VecDeque<Vec<u8>>,
    /// A packet held back to arrive after the next one.
    held: Option<Vec<u8>>,
    /// Buffers to reuse.
    spare: Vec<Vec<u8>>,
    stats: FaultStats,
}

impl<D: Device> fmt::Debug for Faulty<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faulty")
            .field("config", &self.config)
            .field("filter", &self.filter.is_some())
            .field("ready", &self.ready.len())
            .field("held", &self.held.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<D: Device> Faulty<D> {
    /// Wraps `inner`. `InvalidInput` if a rate of `config` is not a
    /// probability.
    pub fn new(inner: D, config: FaultConfig) -> io::Result<Faulty<D>> {
        config.check()?;
        Ok(Faulty {
            inner,
            rng: config.seed,
            config,
            filter: None,
            ready: VecDeque::new(),
            held: None,
            spare: Vec::new(),
            stats: FaultStats::default(),
        })
    }

    /// Drops every received packet for which `filter` returns true (before
    /// any fault by chance), counted in [`FaultStats::filtered`]. The
    /// filter sees the packet as the wrapped device delivered it (an IP
    /// packet on the in-memory link, an Ethernet frame on a TAP device).
    /// Replaces the previous filter.
    pub fn drop_if(&mut self, filter: impl FnMut(&[u8]) -> bool + Send + 'static) {
        self.filter = Some(Box::new(filter));
    }

    /// Removes the filter of [`drop_if`](Faulty::drop_if).
    pub fn clear_filter(&mut self) {
        self.filter = None;
    }

    /// Changes the rates (the generator goes on from where it is).
    /// `InvalidInput` if a rate is not a probability; the old rates stay.
    pub fn set_config(&mut self, config: FaultConfig) -> io::Result<()> {
        config.check()?;
        self.config = config;
        Ok(())
    }

    /// What has been done to the packets so far.
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    /// The wrapped device.
    pub fn get_ref(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// The generator's next number (SplitMix64).
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p` (a rate of 0 draws nothing).
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // The top 53 bits as a fraction in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Takes packets from the wrapped device until one is ready (or it has
    /// none left), applying the faults.
    fn fill(&mut self, now: Instant) {
        while self.ready.is_empty() {
            let mut buf = self.spare.pop().unwrap_or_default();
            let Some((rx, _)) = self.inner.receive(now) else {
                self.spare.push(buf);
                // Nothing more behind a held packet: it goes now.
                if let Some(held) = self.held.take() {
                    self.ready.push_back(held);
                }
                return;
            };
            phy::RxToken::consume(rx, |frame| {
                buf.clear();
                buf.extend_from_slice(frame);
            });
            self.stats.received += 1;
            self.decide(buf);
        }
    }

    /// The fate of one received packet.
    fn decide(&mut self, mut buf: Vec<u8>) {
        if let Some(filter) = self.filter.as_mut()
            && filter(&buf)
        {
            self.stats.filtered += 1;
            self.spare.push(buf);
            return;
        }
        let FaultConfig {
            loss,
            duplicate,
            reorder,
            corrupt,
            ..
        } = self.config;
        if self.chance(loss) {
            self.stats.lost += 1;
            self.spare.push(buf);
            return;
        }
        if !buf.is_empty() && self.chance(corrupt) {
            self.stats.corrupted += 1;
            let bit = (self.next_u64() % (buf.len() as u64 * 8)) as usize;
            buf[bit / 8] ^= 1 << (bit % 8);
        }
        if self.chance(duplicate) {
            self.stats.duplicated += 1;
            let mut copy = self.spare.pop().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(&buf);
            self.ready.push_back(copy);
        }
        if self.held.is_none() && self.chance(reorder) {
            self.stats.reordered += 1;
            self.held = Some(buf);
            return;
        }
        self.ready.push_back(buf);
        if let Some(held) = self.held.take() {
            self.ready.push_back(held);
        }
    }
}

/// A received packet of a [`Faulty`] device.
pub struct FaultyRxToken<'a> {
    buf: Vec<u8>,
    spare: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for FaultyRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let result = f(&self.buf);
        self.spare.push(self.buf);
        result
    }
}

impl<D: Device> Device for Faulty<D> {
    type RxToken<'a>
        = FaultyRxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = D::TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(FaultyRxToken<'_>, D::TxToken<'_>)> {
        self.fill(now);
        let buf = self.ready.pop_front()?;
        let Some(tx) = self.inner.transmit(now) else {
            // No room for a reply: the packet waits for the next call.
            self.ready.push_front(buf);
            return None;
        };
        Some((
            FaultyRxToken {
                buf,
                spare: &mut self.spare,
            },
            tx,
        ))
    }

    fn transmit(&mut self, now: Instant) -> Option<D::TxToken<'_>> {
        self.inner.transmit(now)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = self.inner.capabilities();
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}

// The link's rings use loom's primitives under `--cfg loom`, which only
// work inside a loom model.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::Link;

    /// Sends `n` one-byte packets 0, 1, 2, ... into `tx`'s peer.
    fn send(tx: &mut crate::LinkDevice, n: u8) {
        for i in 0..n {
            let token = tx.transmit(Instant::ZERO).expect("room");
            phy::TxToken::consume(token, 1, |b| b[0] = i);
        }
    }

    /// Everything `rx` delivers now.
    fn drain<D: Device>(rx: &mut Faulty<D>) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        while let Some((token, _)) = rx.receive(Instant::ZERO) {
            got.push(phy::RxToken::consume(token, |b| b.to_vec()));
        }
        got
    }

    #[test]
    fn no_faults_delivers_everything_in_order() {
        let (mut a, b) = Link::pair(1500);
        let mut b = Faulty::new(b, FaultConfig::new(1)).unwrap();
        send(&mut a, 10);
        let got = drain(&mut b);
        assert_eq!(got, (0..10u8).map(|i| vec![i]).collect::<Vec<_>>());
        assert_eq!(b.stats().received, 10);
        assert!(matches!(b.capabilities().checksum.tcp, phy::Checksum::Both));
    }

    #[test]
    fn certain_faults_do_what_they_say() {
        let (mut a, b) = Link::pair(1500);
        let mut cfg = FaultConfig::new(2);
        cfg.loss = 1.0;
        let mut b = Faulty::new(b, cfg).unwrap();
        send(&mut a, 5);
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.stats().lost, 5);

        cfg.loss = 0.0;
        cfg.duplicate = 1.0;
        b.set_config(cfg).unwrap();
        send(&mut a, 3);
        let got = drain(&mut b);
        assert_eq!(got, [[0], [0], [1], [1], [2], [2]]);

        cfg.duplicate = 0.0;
        cfg.corrupt = 1.0;
        b.set_config(cfg).unwrap();
        send(&mut a, 3);
        let got = drain(&mut b);
        assert_eq!(got.len(), 3);
        for (i, p) in got.iter().enumerate() {
            assert_eq!((p[0] ^ i as u8).count_ones(), 1, "one bit flipped: {p:?}");
        }
    }

    #[test]
    fn reordering_swaps_neighbours_and_never_loses_the_last() {
        let (mut a, b) = Link::pair(1500);
        let mut cfg = FaultConfig::new(3);
        cfg.reorder = 1.0;
        let mut b = Faulty::new(b, cfg).unwrap();
        send(&mut a, 5);
        let got: Vec<u8> = drain(&mut b).into_iter().map(|p| p[0]).collect();
        // 0 held, 1 passes it; 2 held, 3 passes it; 4 held, then released
        // when nothing more comes.
        assert_eq!(got, [1, 0, 3, 2, 4]);
    }

    #[test]
    fn the_filter_drops_exactly_what_it_picks() {
        let (mut a, b) = Link::pair(1500);
        let mut b = Faulty::new(b, FaultConfig::new(4)).unwrap();
        b.drop_if(|p| p[0] % 2 == 1);
        send(&mut a, 6);
        let got: Vec<u8> = drain(&mut b).into_iter().map(|p| p[0]).collect();
        assert_eq!(got, [0, 2, 4]);
        assert_eq!(b.stats().filtered, 3);
        b.clear_filter();
        send(&mut a, 2);
        assert_eq!(drain(&mut b).len(), 2);
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let run = |seed| {
            let (mut a, b) = Link::pair(1500);
            let cfg = FaultConfig {
                loss: 0.3,
                duplicate: 0.3,
                reorder: 0.3,
                corrupt: 0.3,
                seed,
            };
            let mut b = Faulty::new(b, cfg).unwrap();
            send(&mut a, 100);
            (drain(&mut b), b.stats())
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9).0, run(10).0);
        let (_, s) = run(9);
        assert!(s.lost > 10 && s.duplicated > 10 && s.reordered > 5 && s.corrupted > 10);
    }

    #[test]
    fn rates_that_are_not_probabilities_are_refused() {
        for bad in [-0.1, 1.5, f64::NAN] {
            let (_, b) = Link::pair(1500);
            let cfg = FaultConfig {
                reorder: bad,
                ..FaultConfig::new(0)
            };
            let err = Faulty::new(b, cfg).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(err.to_string().contains("reorder"), "{err}");
        }
        let (_, b) = Link::pair(1500);
        let mut f = Faulty::new(b, FaultConfig::new(0)).unwrap();
        let cfg = FaultConfig {
            loss: 2.0,
            ..FaultConfig::new(0)
        };
        assert!(f.set_config(cfg).is_err());
        assert_eq!(f.config.loss, 0.0, "the old rates stay");
    }
}
