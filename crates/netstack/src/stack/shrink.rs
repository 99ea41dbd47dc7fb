//! Giving table memory back after a peak.
//!
//! The connection and socket tables are slot vectors indexed by id, with a
//! free list; a million connections make them a million slots long (208
//! and 96 bytes a slot), and without this module they would stay that long
//! once the connections are gone. Ids are held elsewhere (the dirty list,
//! timer entries, listener queues, `Socket` objects), so slots never move:
//! only free slots at the *end* can go. Two rules make that work:
//!
//! - When the live count falls to a quarter of the slots, then to half of
//!   what it was at the previous try ([`ShrinkMark`]), the free slots at
//!   the end are dropped, the vector's memory is given back
//!   ([`truncate_free_tail`]), and the free list is sorted so that the
//!   lowest ids are reused first. New connections then fill the bottom of
//!   the table and the top drains as its connections close, for the next
//!   try to drop. Tries are O(slots) and come once per halving of the live
//!   count, so their cost is amortised over the frees between them.
//! - A socket slot that is dropped takes its generation with it; new slots
//!   start above the highest generation ever dropped, so that a stale
//!   `SockId` can never name a socket made later in a re-grown slot.
//!
//! The TIME-WAIT table (a hash map) and its expiry queue shrink the same
//! way as their entries expire; the demux table halves itself when an
//! eighth full (`Demux::remove`).
//!
//! Tables below [`SHRINK_MIN_SLOTS`] are left alone: they are small, and a
//! stack that opens and closes a connection at a time should not
//! reallocate on every close.

use super::Core;

/// Tables with at most this many slots never shrink, and never below it.
pub(super) const SHRINK_MIN_SLOTS: usize = 4096;

/// When a slot table is next worth compacting.
#[derive(Debug, Default)]
pub(super) struct ShrinkMark {
    /// Try once the live count is at or below this.
    at: usize,
}

impl ShrinkMark {
    /// True if a table of `slots` slots with `live` of them in use should
    /// try to shrink now.
    pub(super) fn due(&self, live: usize, slots: usize) -> bool {
        slots > SHRINK_MIN_SLOTS && live <= self.at
    }

    /// The table grew to `slots` (every slot in use): try again once three
    /// quarters of them are free.
    pub(super) fn grew(&mut self, slots: usize) {
        self.at = self.at.max(slots / 4);
    }

    /// A try was made with `live` slots in use: the next one once half of
    /// those are gone too.
    pub(super) fn tried(&mut self, live: usize) {
        self.at = live / 2;
    }
}

/// Drops the free slots at the end of `slots` (each passed to `dropped`
/// first), removes their ids from `free`, gives the vector's spare memory
/// back (keeping room for [`SHRINK_MIN_SLOTS`]), and sorts `free` so that
/// popping it yields the lowest id. Returns the number of slots dropped.
pub(super) fn truncate_free_tail<T>(
    slots: &mut Vec<T>,
    free: &mut Vec<u32>,
    is_free: impl Fn(&T) -> bool,
    mut dropped: impl FnMut(&T),
) -> usize {
    let before = slots.len();
    while let Some(last) = slots.last() {
        if !is_free(last) {
            break;
        }
        dropped(last);
        slots.pop();
    }
    let len = slots.len();
    if len < before {
        free.retain(|&id| (id as usize) < len);
        slots.shrink_to(len.max(SHRINK_MIN_SLOTS));
        free.shrink_to(free.len().max(SHRINK_MIN_SLOTS));
    }
    // Popped from the end: lowest last.
    free.sort_unstable_by(|a, b| b.cmp(a));
    before - len
}

impl Core {
    /// What [`Stats::table_bytes`](super::Stats::table_bytes) reports.
    pub(super) fn table_bytes(&self) -> usize {
        use std::mem::size_of;
        self.conns.capacity() * size_of::<Option<super::Conn>>()
            + self.free_conns.capacity() * size_of::<super::ConnId>()
            + self.socks.capacity() * size_of::<super::SockSlot>()
            + self.free_socks.capacity() * size_of::<u32>()
            + self.demux.bytes()
            + self.time_wait.capacity() * (size_of::<(super::FourTuple, super::TimeWait)>() + 1)
            + self.tw_timers.capacity() * size_of::<(smoltcp::time::Instant, super::FourTuple)>()
    }

    /// After a connection is freed: drops the connection table's free tail
    /// if it is due (see the module header).
    pub(super) fn shrink_conns_if_due(&mut self) {
        if !self.conn_mark.due(self.conn_count, self.conns.len()) {
            return;
        }
        let dropped = truncate_free_tail(
            &mut self.conns,
            &mut self.free_conns,
            Option::is_none,
            |_| (),
        );
        self.conn_mark.tried(self.conn_count);
        trace!(
            dropped,
            slots = self.conns.len(),
            live = self.conn_count,
            "connection table shrunk"
        );
    }

    /// After a socket is reaped: drops the socket table's free tail if it
    /// is due, remembering the highest generation dropped.
    pub(super) fn shrink_socks_if_due(&mut self) {
        if !self.sock_mark.due(self.sock_count, self.socks.len()) {
            return;
        }
        let retired = &mut self.retired_generation;
        let dropped = truncate_free_tail(
            &mut self.socks,
            &mut self.free_socks,
            |slot| slot.entry.is_none(),
            |slot| *retired = (*retired).max(slot.generation),
        );
        self.sock_mark.tried(self.sock_count);
        trace!(
            dropped,
            slots = self.socks.len(),
            live = self.sock_count,
            "socket table shrunk"
        );
    }

    /// After TIME-WAIT entries expire: once the TIME-WAIT table and its
    /// expiry queue are an eighth full, gives back all but twice what is
    /// left (a factor of four before the next time, so the rehash is paid
    /// for by the expiries between).
    pub(super) fn shrink_time_wait_if_due(&mut self) {
        let len = self.time_wait.len();
        if self.time_wait.capacity() > SHRINK_MIN_SLOTS.max(8 * len) {
            self.time_wait.shrink_to(2 * len);
        }
        let queued = self.tw_timers.len();
        if self.tw_timers.capacity() > SHRINK_MIN_SLOTS.max(8 * queued) {
            self.tw_timers.shrink_to(2 * queued);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_come_once_per_halving() {
        let mut mark = ShrinkMark::default();
        assert!(!mark.due(0, SHRINK_MIN_SLOTS), "small tables never shrink");
        mark.grew(100_000);
        assert!(!mark.due(25_001, 100_000));
        assert!(mark.due(25_000, 100_000));
        mark.tried(25_000);
        assert!(!mark.due(12_501, 100_000));
        assert!(mark.due(12_500, 100_000));
        mark.tried(0);
        assert!(mark.due(0, 100_000));
        assert!(!mark.due(1, 100_000));
    }

    #[test]
    fn only_the_free_tail_goes_and_low_ids_come_back_first() {
        // Slots 0..10,000; live: 5 and 7,000; everything else free, freed
        // in a shuffled order.
        let mut slots: Vec<Option<u32>> = (0..10_000).map(|_| None).collect();
        slots[5] = Some(5);
        slots[7_000] = Some(7_000);
        let mut free: Vec<u32> = (0..10_000u32)
            .map(|i| i * 7_919 % 10_000)
            .filter(|&i| i != 5 && i != 7_000)
            .collect();
        let mut seen = Vec::new();
        let n = truncate_free_tail(&mut slots, &mut free, Option::is_none, |s| seen.push(*s));
        assert_eq!(n, 2_999);
        assert_eq!(seen.len(), 2_999);
        assert_eq!(slots.len(), 7_001);
        assert!(slots.capacity() < 10_000);
        assert_eq!(free.len(), 7_001 - 2);
        assert!(
            free.iter()
                .all(|&i| (i as usize) < 7_001 && i != 5 && i != 7_000)
        );
        assert_eq!(free.pop(), Some(0));
        assert_eq!(free.pop(), Some(1));
        // A live slot at the end: nothing goes, the free list stays sorted.
        free.push(6_000);
        assert_eq!(
            truncate_free_tail(&mut slots, &mut free, Option::is_none, |_| ()),
            0
        );
        assert_eq!(slots.len(), 7_001);
        assert_eq!(free.pop(), Some(2));
        // Everything free: everything goes.
        slots[5] = None;
        slots[7_000] = None;
        free.extend([5, 7_000]);
        truncate_free_tail(&mut slots, &mut free, Option::is_none, |_| ());
        assert!(slots.is_empty() && free.is_empty());
    }
}
