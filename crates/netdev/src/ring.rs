//! A bounded single-producer, single-consumer ring of pre-allocated packet
//! buffers: one direction of a [`Link`](crate::Link).
//!
//! [`channel`] allocates every slot once, each `slot_size` bytes long; after
//! that, sending and receiving only copy into and out of those slots. The
//! [`Producer`] and [`Consumer`] halves are the only handles on a ring and are
//! not `Clone`, and every operation takes `&mut self`: one writer and one
//! reader, enforced by the types. Each half may live on its own thread.
//!
//! ## Invariants
//!
//! - `head` and `tail` are positions in `0..2 * n` (n slots), so that a full
//!   ring (`tail - head == n`) differs from an empty one (`tail == head`)
//!   without a spare slot and without ever overflowing. Slot index is
//!   `position % n`. Only the consumer writes `head`; only the producer
//!   writes `tail`.
//! - The slots in `head..tail` belong to the consumer, the others to the
//!   producer. A slot changes hands only by a `Release` store of `head` or
//!   `tail` after the last access of its old owner, and its new owner
//!   loads that position with `Acquire` before its first access. So a slot
//!   is never read and written at once, and needs no lock: each access is
//!   an `unsafe` block whose `SAFETY` comment names the rule, and the loom
//!   models check it (loom's `UnsafeCell` fails a model on any access the
//!   positions do not order). The slots had a lock each, never contended,
//!   to keep the crate free of `unsafe`; its lock and unlock were four
//!   locked instructions per packet, ~20 ns on a machine where one costs
//!   ~5 ns.
//! - A [`Reservation`] proves there is a free slot: it is made only when
//!   the ring has room, it borrows the producer mutably, and only the
//!   producer can fill slots. Likewise a [`Pending`] proves a packet is
//!   queued. Dropping either without using it changes nothing.
//! - A slot's `len` is set only after `buf.get_mut(..len)` succeeded, so
//!   `len <= buf.len()` always.

use std::sync::{Arc, OnceLock};

use crate::notify::Notifier;
use crate::sync::{AtomicUsize, Ordering, UnsafeCell};

/// Creates a ring of `slots` packet buffers of `slot_size` bytes each
/// (`slots` is at least 1), and returns its two halves.
pub(crate) fn channel(slots: usize, slot_size: usize) -> (Producer, Consumer) {
    let slots: Box<[UnsafeCell<Slot>]> = (0..slots.max(1))
        .map(|_| {
            UnsafeCell::new(Slot {
                len: 0,
                buf: vec![0; slot_size].into_boxed_slice(),
            })
        })
        .collect();
    let ring = Arc::new(Ring {
        slots,
        slot_size,
        head: AtomicUsize::new(0),
        tail: AtomicUsize::new(0),
        notifier: OnceLock::new(),
    });
    (
        Producer {
            ring: Arc::clone(&ring),
        },
        Consumer { ring },
    )
}

/// The writing half of a ring.
pub(crate) struct Producer {
    ring: Arc<Ring>,
}

/// The reading half of a ring.
pub(crate) struct Consumer {
    ring: Arc<Ring>,
}

/// A free slot, held for the producer until [`Reservation::commit`].
pub(crate) struct Reservation<'a> {
    producer: &'a mut Producer,
    tail: usize,
}

/// The oldest queued packet, held for the consumer until
/// [`Pending::consume`].
pub(crate) struct Pending<'a> {
    consumer: &'a mut Consumer,
    head: usize,
}

struct Ring {
    /// Each owned by the producer or the consumer, by the positions (see the
    /// module invariants).
    slots: Box<[UnsafeCell<Slot>]>,
    /// The length of every slot's buffer.
    slot_size: usize,
    /// Position of the oldest queued packet; written by the consumer only.
    head: AtomicUsize,
    /// Position one past the newest queued packet; written by the producer only.
    tail: AtomicUsize,
    /// The consumer's readiness notifier, once it asked for one
    /// ([`Consumer::notifier`]). Unset, it costs the producer one load per
    /// packet.
    notifier: OnceLock<Notifier>,
}

struct Slot {
    len: usize,
    buf: Box<[u8]>,
}

// SAFETY: the ring's slots are shared between the producer's and the
// consumer's threads, but each slot is accessed only by the side that owns
// it, and ownership passes with a Release store of a position that the
// other side loads with Acquire (the module invariants). Everything else in
// the ring is atomic or `OnceLock`. `Slot` itself (a length and a boxed
// buffer) is `Send`.
#[allow(unsafe_code)]
unsafe impl Sync for Ring {}

impl Producer {
    /// Packets queued and not yet consumed.
    pub(crate) fn len(&self) -> usize {
        let tail = self.ring.tail.load(Ordering::Relaxed);
        let head = self.ring.head.load(Ordering::Acquire);
        self.ring.distance(head, tail)
    }

    /// Reserves the next slot if fewer than `limit` packets are queued
    /// (`limit` is capped at the number of slots).
    pub(crate) fn reserve(&mut self, limit: usize) -> Option<Reservation<'_>> {
        if self.len() >= limit.min(self.ring.slots.len()) {
            return None;
        }
        let tail = self.ring.tail.load(Ordering::Relaxed);
        Some(Reservation {
            producer: self,
            tail,
        })
    }
}

impl Reservation<'_> {
    /// Fills the slot with `len` bytes written by `f` and queues it. If `len`
    /// is more than a slot holds, nothing is queued and `f` comes back
    /// unused.
    pub(crate) fn commit<R, F>(self, len: usize, f: F) -> Result<R, F>
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let ring = &self.producer.ring;
        if len > ring.slot_size {
            return Err(f);
        }
        let result = ring.slot(self.tail).with_mut(|slot| {
            // SAFETY: the slot at `tail` belongs to the producer: a
            // reservation is made only when fewer than n packets are queued,
            // after an Acquire load of `head` that ordered the consumer's
            // last access of this slot before this one; the consumer does
            // not touch it until the Release store of `tail` below. The
            // reservation borrows the one producer mutably, so no other
            // access of the producer's runs meanwhile.
            #[allow(unsafe_code)]
            let slot = unsafe { &mut *slot };
            // Every slot is `slot_size` long: `len` fits, the fallback
            // (an empty packet) is never taken.
            let buf = slot.buf.get_mut(..len).unwrap_or_default();
            slot.len = buf.len();
            f(buf)
        });
        ring.tail.store(ring.advance(self.tail), Ordering::Release);
        if let Some(notifier) = ring.notifier.get() {
            notifier.packet_queued();
        }
        Ok(result)
    }
}

impl Consumer {
    /// Packets queued and not yet consumed.
    pub(crate) fn len(&self) -> usize {
        let head = self.ring.head.load(Ordering::Relaxed);
        let tail = self.ring.tail.load(Ordering::Acquire);
        self.ring.distance(head, tail)
    }

    /// The readiness notifier of this ring, made on first use: from then on
    /// the producer signals it (see [`Notifier`]).
    pub(crate) fn notifier(&self) -> std::io::Result<&Notifier> {
        if let Some(n) = self.ring.notifier.get() {
            return Ok(n);
        }
        // Only the consumer sets it, through `&self` of its one handle; a
        // lost race is impossible, but `set` failing would be harmless.
        let _ = self.ring.notifier.set(Notifier::new()?);
        self.ring
            .notifier
            .get()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::Other))
    }

    /// The notifier, if [`notifier`](Consumer::notifier) made one.
    pub(crate) fn notifier_if_enabled(&self) -> Option<&Notifier> {
        self.ring.notifier.get()
    }

    /// The oldest queued packet, if any.
    pub(crate) fn peek(&mut self) -> Option<Pending<'_>> {
        let head = self.ring.head.load(Ordering::Relaxed);
        if self.ring.tail.load(Ordering::Acquire) == head {
            return None;
        }
        Some(Pending {
            consumer: self,
            head,
        })
    }
}

impl Consumer {
    /// Passes the `k`-th queued packet (0 = the oldest) to `f` without
    /// consuming it, if that many are queued.
    pub(crate) fn peek_nth<R>(&self, k: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let head = self.ring.head.load(Ordering::Relaxed);
        let tail = self.ring.tail.load(Ordering::Acquire);
        if k >= self.ring.distance(head, tail) {
            return None;
        }
        let mut position = head + k;
        if position >= 2 * self.ring.slots.len() {
            position -= 2 * self.ring.slots.len();
        }
        self.ring.slot(position).with(|slot| {
            // SAFETY: the slot is in `head..tail`, so it belongs to the
            // consumer (the Acquire load of `tail` above ordered the
            // producer's writes before this read), and `&self` of the one
            // consumer excludes a `consume` meanwhile: nobody writes it.
            #[allow(unsafe_code)]
            let slot = unsafe { &*slot };
            // `len <= buf.len()` (module invariants); the fallback is never taken.
            Some(f(slot.buf.get(..slot.len).unwrap_or_default()))
        })
    }
}

impl Pending<'_> {
    /// Passes the packet to `f`, then frees its slot.
    pub(crate) fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let ring = &self.consumer.ring;
        let result = ring.slot(self.head).with(|slot| {
            // SAFETY: the slot at `head` is queued, so it belongs to the
            // consumer: `peek` saw `tail` past it with an Acquire load,
            // which ordered the producer's writes before this read, and the
            // producer does not reuse it until the Release store of `head`
            // below.
            #[allow(unsafe_code)]
            let slot = unsafe { &*slot };
            // `len <= buf.len()` (module invariants); the fallback is never taken.
            f(slot.buf.get(..slot.len).unwrap_or_default())
        });
        ring.head.store(ring.advance(self.head), Ordering::Release);
        result
    }
}

impl Ring {
    /// The slot at `position` (in `0..2 * n`, so the index is in `0..n`).
    fn slot(&self, position: usize) -> &UnsafeCell<Slot> {
        let n = self.slots.len();
        &self.slots[if position >= n {
            position - n
        } else {
            position
        }]
    }

    /// The position after `position`, wrapping at `2 * n`.
    fn advance(&self, position: usize) -> usize {
        let next = position + 1;
        if next == 2 * self.slots.len() {
            0
        } else {
            next
        }
    }

    /// Packets between `head` and `tail` (both in `0..2n`; a compare, not
    /// a `%`: the slot count is rarely a power of two, and this runs for
    /// every packet sent and received).
    fn distance(&self, head: usize, tail: usize) -> usize {
        if tail >= head {
            tail - head
        } else {
            tail + 2 * self.slots.len() - head
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn push(tx: &mut Producer, bytes: &[u8]) -> bool {
        match tx.reserve(usize::MAX) {
            Some(r) => r
                .commit(bytes.len(), |buf| buf.copy_from_slice(bytes))
                .is_ok(),
            None => false,
        }
    }

    fn pop(rx: &mut Consumer) -> Option<Vec<u8>> {
        rx.peek().map(|p| p.consume(<[u8]>::to_vec))
    }

    #[test]
    fn ring_of_three_many_wraps_keeps_order_and_counts() {
        let (mut tx, mut rx) = channel(3, 8);
        for round in 0u8..20 {
            let fill = 1 + round % 3;
            for i in 0..fill {
                assert!(push(&mut tx, &[round, i]));
            }
            assert_eq!((tx.len(), rx.len()), (fill as usize, fill as usize));
            for i in 0..fill {
                assert_eq!(pop(&mut rx), Some(vec![round, i]));
            }
            assert_eq!(pop(&mut rx), None);
        }
    }

    #[test]
    fn full_ring_reserve_refused_until_pop() {
        let (mut tx, mut rx) = channel(2, 8);
        assert!(push(&mut tx, b"a") && push(&mut tx, b"b"));
        assert!(tx.reserve(usize::MAX).is_none());
        assert_eq!(pop(&mut rx).as_deref(), Some(&b"a"[..]));
        assert!(push(&mut tx, b"c"));
        assert_eq!(pop(&mut rx).as_deref(), Some(&b"b"[..]));
        assert_eq!(pop(&mut rx).as_deref(), Some(&b"c"[..]));
    }

    #[test]
    fn reserve_below_limit_refused_at_limit() {
        let (mut tx, _rx) = channel(4, 8);
        assert!(push(&mut tx, b"a"));
        assert!(tx.reserve(1).is_none());
        assert!(tx.reserve(2).is_some());
    }

    #[test]
    fn dropped_reservation_and_pending_change_nothing() {
        let (mut tx, mut rx) = channel(2, 8);
        let _ = tx.reserve(usize::MAX);
        assert_eq!(rx.len(), 0);
        assert!(push(&mut tx, b"x"));
        let _ = rx.peek();
        assert_eq!(pop(&mut rx).as_deref(), Some(&b"x"[..]));
    }

    #[test]
    fn peek_nth_shows_each_queued_packet_across_the_wrap_without_consuming() {
        let (mut tx, mut rx) = channel(3, 8);
        for round in 0u8..7 {
            // Positions move around the ring (and past its 2n wrap).
            assert!(push(&mut tx, &[round, 0]) && push(&mut tx, &[round, 1]));
            assert!(push(&mut tx, &[round, 2]));
            for k in 0..3u8 {
                assert_eq!(rx.peek_nth(k.into(), <[u8]>::to_vec), Some(vec![round, k]));
            }
            assert_eq!(rx.peek_nth(3, <[u8]>::to_vec), None);
            assert_eq!(rx.len(), 3, "peeking consumes nothing");
            assert_eq!(pop(&mut rx), Some(vec![round, 0]));
            assert_eq!(rx.peek_nth(0, <[u8]>::to_vec), Some(vec![round, 1]));
            assert_eq!(rx.peek_nth(2, <[u8]>::to_vec), None);
            assert_eq!(pop(&mut rx), Some(vec![round, 1]));
            assert_eq!(pop(&mut rx), Some(vec![round, 2]));
            assert_eq!(rx.peek_nth(0, <[u8]>::to_vec), None);
        }
    }

    #[test]
    fn oversized_commit_returns_closure_and_queues_nothing() {
        let (mut tx, rx) = channel(2, 4);
        let r = tx.reserve(usize::MAX).expect("room");
        let f = r.commit(5, |_| ()).expect_err("5 > slot size 4");
        f(&mut []);
        assert_eq!(rx.len(), 0);
        let r = tx.reserve(usize::MAX).expect("room");
        assert!(matches!(r.commit(4, |buf| buf.len()), Ok(4)));
        assert_eq!(rx.len(), 1);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    /// The producer sends `count` numbered packets through `slots` slots,
    /// spinning (yielding to loom) while the ring is full; the consumer must
    /// see them all, in order, and no slot is ever read and written at once
    /// (loom's `UnsafeCell` fails the model on an unordered access).
    fn transfer(slots: usize, count: u8) {
        loom::model(move || {
            let (mut tx, mut rx) = channel(slots, 2);
            let producer = loom::thread::spawn(move || {
                for i in 0..count {
                    loop {
                        if let Some(r) = tx.reserve(usize::MAX) {
                            assert!(r.commit(2, |buf| buf.copy_from_slice(&[i, !i])).is_ok());
                            break;
                        }
                        loom::thread::yield_now();
                    }
                }
            });
            for i in 0..count {
                loop {
                    if let Some(p) = rx.peek() {
                        assert_eq!(p.consume(<[u8]>::to_vec), vec![i, !i]);
                        break;
                    }
                    loom::thread::yield_now();
                }
            }
            producer.join().unwrap();
            assert_eq!(rx.len(), 0);
        });
    }

    #[test]
    fn one_slot_three_packets() {
        transfer(1, 3);
    }

    #[test]
    fn two_slots_three_packets_wrap() {
        transfer(2, 3);
    }
}
