//! A hashed timer wheel: the connections' deadlines, O(1) per operation.
//!
//! Every settled connection hands its next deadline (smoltcp's `poll_at`:
//! delayed ACK, retransmission, keep-alive, zero-window probe, TIME-WAIT,
//! user timeout) to the stack, which keeps at most one *live* entry per
//! connection here. With a million connections this runs for every
//! segment, so it must not cost a tree walk or an allocation.
//!
//! ## Layout
//!
//! - [`SLOTS`] buckets of one tick (1 ms) each: one revolution covers about
//!   4 s, which holds the short timers (delayed ACK, RTO) that make up
//!   nearly all of the traffic. An entry goes to the bucket of its
//!   deadline rounded *up* to a tick, so it never fires early.
//! - Deadlines a revolution or more away (keep-alive, TIME-WAIT-like
//!   timeouts) wait in an ordered overflow set and move into the wheel when
//!   it comes within range: O(log n) once per long timer.
//! - A bitmap of non-empty buckets answers "when is the next deadline?"
//!   with at most [`SLOTS`]`/64` word reads, for `poll_delay`.
//!
//! ## No removal
//!
//! Entries are never searched for. The owner of an entry (the stack) keeps
//! the deadline of its live entry, and treats a popped entry whose
//! deadline is not that one as stale and drops it. Moving a deadline
//! earlier therefore costs one push; cancelling costs nothing here. Stale
//! entries leave when their bucket comes round.
//!
//! ## Ticks
//!
//! [`expire`](TimerWheel::expire) at time `now` visits every bucket whose
//! tick is at or before `now` (at most one revolution), so an entry is
//! popped at most one tick after its deadline, never before it.

use std::collections::BTreeSet;

use smoltcp::time::Instant;

/// Buckets in the wheel (a power of two).
pub(crate) const SLOTS: usize = 4096;

/// The wheel's resolution, one tick, in microseconds (1 ms).
const TICK_US: i64 = 1000;
const MASK: i64 = SLOTS as i64 - 1;
/// Entries a drained bucket keeps room for however few it held.
const BUCKET_KEEP: usize = 16;

/// A hashed timer wheel of `(deadline, id)` entries with an overflow set
/// for far deadlines. See the module docs.
pub(crate) struct TimerWheel {
    slots: Vec<Vec<(Instant, u32)>>,
    /// Bit `i` is set iff `slots[i]` is not empty.
    occupied: Vec<u64>,
    /// The last tick [`expire`](TimerWheel::expire) has processed.
    current: i64,
    /// Deadlines at least a revolution ahead of `current`.
    far: BTreeSet<(Instant, u32)>,
    /// Entries in the wheel and the overflow set, stale ones included.
    len: usize,
}

/// The tick a deadline belongs to: rounded up, so that processing tick `t`
/// at a time of at least `t` ms only pops deadlines that have come.
fn tick_of(t: Instant) -> i64 {
    t.total_micros().div_euclid(TICK_US) + i64::from(t.total_micros().rem_euclid(TICK_US) != 0)
}

/// The last tick that has fully come at `now`.
fn tick_at(now: Instant) -> i64 {
    now.total_micros().div_euclid(TICK_US)
}

impl TimerWheel {
    /// An empty wheel whose first tick to process is the one after `now`.
    pub(crate) fn new(now: Instant) -> TimerWheel {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: vec![0; SLOTS / 64],
            current: tick_at(now),
            far: BTreeSet::new(),
            len: 0,
        }
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds an entry for `id` at `deadline`.
    pub(crate) fn push(&mut self, deadline: Instant, id: u32) {
        self.len += 1;
        // A deadline at or before the current tick goes to the next one.
        let tick = tick_of(deadline).max(self.current + 1);
        if tick - self.current >= SLOTS as i64 {
            self.far.insert((deadline, id));
        } else {
            self.put(tick, deadline, id);
        }
    }

    fn put(&mut self, tick: i64, deadline: Instant, id: u32) {
        let slot = (tick & MASK) as usize;
        self.slots[slot].push((deadline, id));
        self.occupied[slot / 64] |= 1 << (slot % 64);
    }

    /// Pops every entry whose tick has come at `now` into `out` (in no
    /// particular order): its deadline is at or before `now`, and at most a
    /// tick (or, for a deadline already past when pushed, one tick after
    /// the push) earlier. Stale entries come out too, for the owner to drop.
    pub(crate) fn expire(&mut self, now: Instant, out: &mut Vec<(Instant, u32)>) {
        let target = tick_at(now);
        if target <= self.current {
            return;
        }
        if self.len == 0 {
            self.current = target;
            return;
        }
        // At most one revolution: after that every bucket has been seen.
        let first = self.current + 1;
        let last = target.min(self.current + SLOTS as i64);
        for tick in first..=last {
            let slot = (tick & MASK) as usize;
            if self.occupied[slot / 64] & (1 << (slot % 64)) == 0 {
                continue;
            }
            let bucket = &mut self.slots[slot];
            // Entries of this bucket belong to this tick (anything further
            // went to `far`), except when `now` jumped more than a
            // revolution: then keep those not yet due.
            let before = bucket.len();
            bucket.retain(|&(deadline, id)| {
                if tick_of(deadline) <= target {
                    out.push((deadline, id));
                    false
                } else {
                    true
                }
            });
            self.len -= before - bucket.len();
            if bucket.is_empty() {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
            // A bucket sized by a peak gives its room back the next time it
            // is drained holding under a quarter of it; a steady load keeps
            // its buckets (a doubling Vec is at most twice what it held).
            if bucket.capacity() > BUCKET_KEEP.max(4 * before) {
                bucket.shrink_to(BUCKET_KEEP.max(2 * before));
            }
        }
        self.current = target;
        // Far deadlines that came within a revolution move into the wheel
        // (or out, if already due).
        while let Some(&(deadline, id)) = self.far.first() {
            let tick = tick_of(deadline);
            if tick - self.current >= SLOTS as i64 {
                break;
            }
            self.far.pop_first();
            if tick <= self.current {
                self.len -= 1;
                out.push((deadline, id));
            } else {
                self.put(tick.max(self.current + 1), deadline, id);
            }
        }
    }

    /// A time by which the earliest entry is due: the end of the first
    /// non-empty bucket's tick, or the earliest far deadline. `None` if
    /// empty. Stale entries count, so this may be early, never late.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let far = self.far.first().map(|&(t, _)| t);
        let start = self.current + 1;
        let words = SLOTS / 64;
        let first_slot = (start & MASK) as usize;
        // Scan the bitmap once round, starting at the bucket of `start`.
        for step in 0..=words {
            let word = (first_slot / 64 + step) % words;
            let mut bits = self.occupied[word];
            if step == 0 {
                bits &= !0u64 << (first_slot % 64);
            } else if step == words {
                bits &= !(!0u64 << (first_slot % 64));
            }
            if bits != 0 {
                let slot = word * 64 + bits.trailing_zeros() as usize;
                let offset = (slot as i64 - first_slot as i64).rem_euclid(SLOTS as i64);
                let at = Instant::from_micros((start + offset) * TICK_US);
                return Some(far.map_or(at, |f| f.min(at)));
            }
        }
        far
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: i64) -> Instant {
        Instant::from_millis(n)
    }

    fn expire(w: &mut TimerWheel, now: Instant) -> Vec<(Instant, u32)> {
        let mut out = Vec::new();
        w.expire(now, &mut out);
        out.sort();
        out
    }

    #[test]
    fn buckets_give_back_the_room_of_a_peak() {
        let mut w = TimerWheel::new(ms(0));
        // A peak: 10,000 deadlines in one tick, then a quiet revolution in
        // which the bucket is used again.
        for id in 0..10_000 {
            w.push(ms(5), id);
        }
        assert_eq!(expire(&mut w, ms(5)).len(), 10_000);
        let slot = (tick_of(ms(5)) & MASK) as usize;
        assert!(w.slots[slot].capacity() >= 10_000);
        // Within a revolution of `current`, so into the bucket (not `far`).
        assert!(expire(&mut w, ms(100)).is_empty());
        for id in 0..3 {
            w.push(ms(5 + SLOTS as i64), id);
        }
        assert_eq!(expire(&mut w, ms(5 + SLOTS as i64)).len(), 3);
        assert!(
            w.slots[slot].capacity() <= BUCKET_KEEP,
            "{}",
            w.slots[slot].capacity()
        );
        // A steady load keeps its room.
        for round in 2..4 {
            assert!(expire(&mut w, ms(100 + (round - 1) * SLOTS as i64)).is_empty());
            for id in 0..1_000 {
                w.push(ms(5 + round * SLOTS as i64), id);
            }
            let cap = w.slots[slot].capacity();
            assert_eq!(expire(&mut w, ms(5 + round * SLOTS as i64)).len(), 1_000);
            if round == 3 {
                assert_eq!(w.slots[slot].capacity(), cap, "no reallocation");
            }
        }
    }

    #[test]
    fn empty_wheel_has_no_deadline() {
        let w = TimerWheel::new(ms(0));
        assert_eq!(w.next_deadline(), None);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn entry_fires_at_its_deadline_not_before() {
        let mut w = TimerWheel::new(ms(0));
        w.push(Instant::from_micros(40_500), 7);
        assert_eq!(w.next_deadline(), Some(ms(41)));
        assert!(expire(&mut w, ms(40)).is_empty());
        assert!(expire(&mut w, Instant::from_micros(40_900)).is_empty());
        assert_eq!(
            expire(&mut w, ms(41)),
            vec![(Instant::from_micros(40_500), 7)]
        );
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn past_deadline_fires_at_next_expire() {
        let mut w = TimerWheel::new(ms(100));
        w.push(ms(50), 1);
        assert_eq!(expire(&mut w, ms(101)), vec![(ms(50), 1)]);
    }

    #[test]
    fn far_deadline_waits_in_overflow_then_fires() {
        let mut w = TimerWheel::new(ms(0));
        let far = ms(7_200_000);
        w.push(far, 3);
        w.push(ms(10), 4);
        assert_eq!(w.next_deadline(), Some(ms(10)));
        assert_eq!(expire(&mut w, ms(10)), vec![(ms(10), 4)]);
        assert_eq!(w.next_deadline(), Some(far));
        assert!(expire(&mut w, ms(7_199_999)).is_empty());
        assert_eq!(expire(&mut w, far), vec![(far, 3)]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn jump_past_several_revolutions_keeps_later_entries() {
        let mut w = TimerWheel::new(ms(0));
        w.push(ms(5), 1);
        w.push(ms(3000), 2);
        // now jumps 3 revolutions ahead: both due.
        let out = expire(&mut w, ms(3 * SLOTS as i64));
        assert_eq!(out, vec![(ms(5), 1), (ms(3000), 2)]);
        w.push(ms(3 * SLOTS as i64 + 2), 9);
        assert_eq!(w.next_deadline(), Some(ms(3 * SLOTS as i64 + 2)));
    }

    #[test]
    fn next_deadline_wraps_around_the_wheel() {
        let mut w = TimerWheel::new(ms(4000));
        // Tick 4100 lands in a bucket with a lower index than tick 4000's.
        w.push(ms(4100), 1);
        assert_eq!(w.next_deadline(), Some(ms(4100)));
        assert!(expire(&mut w, ms(4099)).is_empty());
        assert_eq!(w.next_deadline(), Some(ms(4100)));
        assert_eq!(expire(&mut w, ms(4100)), vec![(ms(4100), 1)]);
    }

    /// Random pushes and expiries against a sorted reference: every entry
    /// comes out exactly once, at the first expire that reaches its tick
    /// (its deadline rounded up to a tick, or the tick after the push for a
    /// deadline already past), and never before its deadline.
    #[test]
    fn random_operations_match_a_sorted_reference() {
        let mut rng = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut now = 1_000_000i64; // µs
        let mut w = TimerWheel::new(Instant::from_micros(now));
        // (tick the entry is due, deadline, id); `current` mirrors the
        // wheel's last processed tick.
        let mut reference: BTreeSet<(i64, Instant, u32)> = BTreeSet::new();
        let mut current = tick_at(Instant::from_micros(now));
        for i in 0..20_000u32 {
            match next() % 4 {
                0 | 1 => {
                    let ahead = match next() % 3 {
                        0 => (next() % 50_000) as i64,
                        1 => (next() % 6_000_000) as i64,
                        _ => -((next() % 10_000) as i64),
                    };
                    let d = Instant::from_micros(now + ahead);
                    w.push(d, i);
                    reference.insert((tick_of(d).max(current + 1), d, i));
                }
                2 => {
                    let next_at = w.next_deadline();
                    let first_due = reference.first().map(|&(t, _, _)| t);
                    let earliest = reference.iter().map(|&(_, d, _)| d).min();
                    match (next_at, first_due, earliest) {
                        (None, None, None) => {}
                        (Some(n), Some(due), Some(e)) => {
                            assert!(n <= Instant::from_micros(due * TICK_US), "{n} late");
                            assert!(n >= e.min(Instant::from_micros(due * TICK_US - TICK_US)));
                        }
                        other => panic!("next_deadline {other:?}"),
                    }
                }
                _ => {
                    now += (next() % 20_000) as i64;
                    let t = Instant::from_micros(now);
                    let mut out = Vec::new();
                    w.expire(t, &mut out);
                    out.sort();
                    current = current.max(tick_at(t));
                    let due: Vec<_> = reference
                        .iter()
                        .copied()
                        .filter(|&(tick, _, _)| tick <= current)
                        .collect();
                    for e in &due {
                        reference.remove(e);
                    }
                    let mut due: Vec<_> = due.into_iter().map(|(_, d, id)| (d, id)).collect();
                    due.sort();
                    assert!(out.iter().all(|&(d, _)| d <= t));
                    assert_eq!(out, due);
                    assert_eq!(w.len(), reference.len());
                }
            }
        }
    }
}
