//! The demultiplexing table: 4-tuple → connection, one cache line per
//! lookup.
//!
//! Every segment in starts with this lookup, so at a million connections,
//! where nothing else is in cache either, its cache misses are the
//! stack's single biggest cost. A general hash map (hashbrown, behind
//! `FxHashMap`) costs two: its control bytes, then the bucket. Here a slot
//! is the whole key and the connection id, 16 bytes aligned so that four
//! fit one cache line, in an open-addressing array with linear probing
//! kept at most half full: a lookup reads the line of its home slot and
//! almost always finds the key, or an empty slot, there. At 1M
//! connections the hashbrown probe took about a quarter of the
//! request/response time (`perf`, two misses); this table takes one.
//!
//! Removal shifts later entries of the probe run back (no tombstones), so
//! the table never degrades under connection churn. The hash is a keyed
//! multiply-xorshift mix with a per-stack random key: not cryptographic
//! (neither was the FxHash before it), but a peer cannot precompute
//! colliding ports without knowing the key.

use std::net::SocketAddrV4;

use crate::stack::FourTuple;

/// A connection's index in the stack's connection slab.
type ConnId = u32;

/// Marks an empty slot (no connection slab grows to 2^32 entries: each
/// connection holds kilobytes).
const EMPTY: ConnId = ConnId::MAX;

/// The fewest slots a table that holds anything has.
const MIN_SLOTS: usize = 16;

/// A 4-tuple packed into 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    /// Local address (high half) and remote address (low half).
    addrs: u64,
    /// Local port (high half) and remote port (low half).
    ports: u32,
}

impl Key {
    fn of(tuple: &FourTuple) -> Key {
        let addr = |a: &SocketAddrV4| u32::from(*a.ip()) as u64;
        Key {
            addrs: addr(&tuple.local) << 32 | addr(&tuple.remote),
            ports: (tuple.local.port() as u32) << 16 | tuple.remote.port() as u32,
        }
    }
}

/// One slot: a key (flattened, so that the connection id fills what would
/// be the key's padding) and its connection, or empty (`conn == EMPTY`).
#[derive(Clone, Copy, Debug)]
#[repr(C, align(16))]
struct Slot {
    addrs: u64,
    ports: u32,
    conn: ConnId,
}

impl Slot {
    fn key(&self) -> Key {
        Key {
            addrs: self.addrs,
            ports: self.ports,
        }
    }
}

const VACANT: Slot = Slot {
    addrs: 0,
    ports: 0,
    conn: EMPTY,
};

/// The 4-tuple → connection table (see the module docs).
pub(crate) struct Demux {
    /// A power of two in length (or empty before the first insert).
    slots: Vec<Slot>,
    /// Occupied slots.
    len: usize,
    /// `64 - log2(slots.len())`: a hash's top bits are its home slot.
    shift: u32,
    /// The hash key.
    seed: [u64; 2],
}

impl Demux {
    /// An empty table whose hash is keyed by `seed` (random per stack).
    pub(crate) fn new(seed: u64) -> Demux {
        Demux {
            slots: Vec::new(),
            len: 0,
            shift: 64,
            seed: [seed, seed.rotate_left(32) ^ 0x243f_6a88_85a3_08d3],
        }
    }

    /// Entries in the table.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of its slots.
    pub(crate) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// The connection of `tuple`, if it has one.
    pub(crate) fn get(&self, tuple: &FourTuple) -> Option<ConnId> {
        let key = Key::of(tuple);
        self.find(&key).map(|i| self.slots[i].conn)
    }

    /// Hints the CPU to bring `tuple`'s home slot into cache.
    pub(crate) fn prefetch(&self, tuple: &FourTuple) {
        if self.len == 0 {
            // No slots yet (and no home: the shift would be 64).
            return;
        }
        if let Some(slot) = self.slots.get(self.home(&Key::of(tuple))) {
            crate::lookahead::prefetch(slot, std::mem::size_of::<Slot>());
        }
    }

    /// True if `tuple` has a connection.
    pub(crate) fn contains_key(&self, tuple: &FourTuple) -> bool {
        self.find(&Key::of(tuple)).is_some()
    }

    /// Maps `tuple` to `conn`; returns the connection it replaced.
    pub(crate) fn insert(&mut self, tuple: FourTuple, conn: ConnId) -> Option<ConnId> {
        debug_assert_ne!(conn, EMPTY, "connection ids stay below u32::MAX");
        let key = Key::of(&tuple);
        if let Some(i) = self.find(&key) {
            return Some(std::mem::replace(&mut self.slots[i].conn, conn));
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.put(Slot {
            addrs: key.addrs,
            ports: key.ports,
            conn,
        });
        self.len += 1;
        None
    }

    /// Removes `tuple`; returns its connection.
    pub(crate) fn remove(&mut self, tuple: &FourTuple) -> Option<ConnId> {
        let mut hole = self.find(&Key::of(tuple))?;
        let removed = self.slots[hole].conn;
        let mask = self.slots.len() - 1;
        // Backward shift: an entry later in the run moves into the hole if
        // its home slot is not after the hole (cyclically), so every entry
        // stays reachable from its home without tombstones.
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let slot = self.slots[next];
            if slot.conn == EMPTY {
                break;
            }
            let home = self.home(&slot.key());
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = slot;
                hole = next;
            }
        }
        self.slots[hole] = VACANT;
        self.len -= 1;
        if self.len * 8 < self.slots.len() && self.slots.len() > MIN_SLOTS {
            // An eighth full: half the slots, a quarter full. Growing at
            // half and shrinking at an eighth leaves a factor of four
            // between, so each resize is paid for by the inserts or
            // removes since the previous one.
            self.resize(self.slots.len() / 2);
        }
        Some(removed)
    }

    /// The slot holding `key`.
    fn find(&self, key: &Key) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let slot = &self.slots[i];
            if slot.conn == EMPTY {
                return None;
            }
            if slot.addrs == key.addrs && slot.ports == key.ports {
                return Some(i);
            }
            // The table is at most half full: an empty slot comes.
            i = (i + 1) & mask;
        }
    }

    /// Puts `slot` in the first empty slot from its home (the key is not
    /// in the table and there is room).
    fn put(&mut self, slot: Slot) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(&slot.key());
        while self.slots[i].conn != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    /// Doubles the slots (or makes the first ones).
    fn grow(&mut self) {
        self.resize((self.slots.len() * 2).max(MIN_SLOTS));
    }

    /// Moves every entry into `size` (a power of two) new slots.
    fn resize(&mut self, size: usize) {
        let old = std::mem::replace(&mut self.slots, vec![VACANT; size]);
        self.shift = 64 - size.trailing_zeros();
        for slot in old {
            if slot.conn != EMPTY {
                self.put(slot);
            }
        }
    }

    /// The home slot of `key`: the top bits of a keyed multiply-xorshift
    /// hash.
    fn home(&self, key: &Key) -> usize {
        let a = (key.addrs ^ self.seed[0]).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let b = (key.ports as u64 ^ self.seed[1] ^ a.rotate_left(31))
            .wrapping_mul(0xd6e8_feb8_6659_fd93);
        ((b ^ (b >> 29)) >> self.shift) as usize
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    use super::*;

    fn tuple(local: u32, lport: u16, remote: u32, rport: u16) -> FourTuple {
        FourTuple {
            local: SocketAddrV4::new(Ipv4Addr::from(local), lport),
            remote: SocketAddrV4::new(Ipv4Addr::from(remote), rport),
        }
    }

    /// xorshift64*: deterministic operations.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn slots_are_sixteen_bytes_four_to_a_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        assert_eq!(std::mem::align_of::<Slot>(), 16);
    }

    #[test]
    fn each_field_of_the_tuple_tells_keys_apart() {
        let mut d = Demux::new(7);
        let base = tuple(1, 2, 3, 4);
        let others = [
            tuple(9, 2, 3, 4),
            tuple(1, 9, 3, 4),
            tuple(1, 2, 9, 4),
            tuple(1, 2, 3, 9),
            // Local and remote swapped.
            tuple(3, 4, 1, 2),
        ];
        assert_eq!(d.insert(base, 0), None);
        for (i, t) in others.iter().enumerate() {
            assert_eq!(d.get(t), None);
            assert_eq!(d.insert(*t, i as u32 + 1), None);
        }
        assert_eq!(d.get(&base), Some(0));
        assert_eq!(d.insert(base, 42), Some(0), "insert replaces");
        assert_eq!(d.len(), 6);
        assert_eq!(d.remove(&base), Some(42));
        assert_eq!(d.remove(&base), None);
        assert!(!d.contains_key(&base));
        for (i, t) in others.iter().enumerate() {
            assert_eq!(d.get(t), Some(i as u32 + 1));
        }
    }

    /// Random inserts and removes over a small key space (long probe runs,
    /// every removal shifting entries back, growth) agree with a HashMap.
    #[test]
    fn random_operations_agree_with_a_hash_map() {
        for seed in [1u64, 0x5eed, 0xdead_beef] {
            let mut d = Demux::new(seed);
            let mut reference: HashMap<FourTuple, u32> = HashMap::new();
            let mut state = seed | 1;
            for op in 0..200_000u32 {
                let r = next(&mut state);
                // 2,000 distinct tuples: same addresses, nearby ports.
                let t = tuple(
                    0xc612_0001,
                    80,
                    0xc612_0002 + (r % 2) as u32,
                    (r >> 8) as u16 % 1000,
                );
                match (r >> 32) % 3 {
                    0 | 1 => assert_eq!(d.insert(t, op), reference.insert(t, op)),
                    _ => assert_eq!(d.remove(&t), reference.remove(&t)),
                }
                assert_eq!(d.len(), reference.len());
                if op % 997 == 0 {
                    for (k, v) in &reference {
                        assert_eq!(d.get(k), Some(*v));
                    }
                }
            }
            for (k, v) in &reference {
                assert_eq!(d.get(k), Some(*v));
            }
            let keys: Vec<FourTuple> = reference.keys().copied().collect();
            for k in keys {
                assert_eq!(d.remove(&k), reference.remove(&k));
            }
            assert_eq!(d.len(), 0);
            assert!(d.slots.iter().all(|s| s.conn == EMPTY));
        }
    }

    #[test]
    fn stays_at_most_half_full() {
        let mut d = Demux::new(3);
        for i in 0..10_000u32 {
            d.insert(tuple(i, 1, 2, 3), i);
            assert!(d.len() * 2 <= d.slots.len());
        }
        assert_eq!(d.slots.len(), 32_768);
    }

    #[test]
    fn shrinks_as_it_empties_and_keeps_what_is_left() {
        let mut d = Demux::new(4);
        for i in 0..10_000u32 {
            d.insert(tuple(i, 1, 2, 3), i);
        }
        for i in 0..9_990u32 {
            assert_eq!(d.remove(&tuple(i, 1, 2, 3)), Some(i));
            assert!(d.len() * 8 >= d.slots.len() || d.slots.len() == MIN_SLOTS);
        }
        assert_eq!(d.slots.len(), 64);
        for i in 9_990..10_000u32 {
            assert_eq!(d.get(&tuple(i, 1, 2, 3)), Some(i));
        }
        for i in 9_990..10_000u32 {
            d.remove(&tuple(i, 1, 2, 3));
        }
        assert_eq!((d.len(), d.slots.len()), (0, MIN_SLOTS));
        d.insert(tuple(1, 1, 2, 3), 1);
        assert_eq!(d.get(&tuple(1, 1, 2, 3)), Some(1));
    }
}
