//! Moving packets over a link allocates nothing: all buffers are made with
//! the pair.
//!
//! A counting global allocator records, per thread, every allocation made
//! while counting is on. The workload is what `iface.poll` does to a
//! device: bursts through `transmit`, then `receive` with a reply through
//! the paired token, and back-pressure once the ring is full.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use netdev::{Link, LinkDevice};
use smoltcp::phy::{Device, RxToken, TxToken};
use smoltcp::time::Instant;

/// Counts the allocations of the current thread while `COUNTING` is on.
struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the thread-locals may be gone while a thread exits. They
    // are const-initialised with no destructor, so using them here never
    // allocates.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            BYTES.with(|n| n.set(n.get() + size as u64));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; `record` only touches thread-local cells.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: as for `alloc`; `ptr` and `layout` come from this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` come from this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Runs `f` and returns (allocations, bytes) it made on this thread.
fn count<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    BYTES.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    let result = f();
    COUNTING.with(|c| c.set(false));
    (result, ALLOCATIONS.with(Cell::get), BYTES.with(Cell::get))
}

const NOW: Instant = Instant::ZERO;

/// One cycle: `a` sends until refused, `b` receives everything and answers
/// each packet through the reply token, `a` receives the answers. Returns
/// the packets moved.
fn cycle(a: &mut LinkDevice, b: &mut LinkDevice, payload: &[u8]) -> usize {
    let mut moved = 0;
    while let Some(tx) = a.transmit(NOW) {
        tx.consume(payload.len(), |buf| buf.copy_from_slice(payload));
    }
    while let Some((rx, tx)) = b.receive(NOW) {
        let len = rx.consume(|packet| packet.len());
        tx.consume(len / 2, |buf| buf.fill(0xa5));
        moved += 2;
    }
    while let Some((rx, _tx)) = a.receive(NOW) {
        rx.consume(|packet| assert!(packet.iter().all(|&b| b == 0xa5)));
    }
    moved
}

#[test]
fn steady_state_send_and_receive_allocate_nothing() {
    for (mtu, capacity) in [(1500, 64), (65535, 8)] {
        let (mut a, mut b) = Link::pair_with(mtu, capacity);
        let payload = vec![7u8; mtu];
        // The link itself needs no warm-up: even the first cycle is free.
        let (_, warm_up, _) = count(|| cycle(&mut a, &mut b, &payload));
        assert_eq!(warm_up, 0, "mtu {mtu}");
        let (moved, allocations, bytes) = count(|| {
            (0..1000)
                .map(|_| cycle(&mut a, &mut b, &payload))
                .sum::<usize>()
        });
        assert_eq!((allocations, bytes), (0, 0), "mtu {mtu}");
        assert_eq!(moved, 1000 * 2 * capacity);
        assert_eq!(a.stats().tx_full, 1001);
    }
}

/// The counter works: making a pair is counted (its one-time allocation).
#[test]
fn counting_allocator_sees_pair_creation() {
    let (_pair, allocations, bytes) = count(|| Link::pair_with(1500, 4));
    assert!(allocations > 0);
    assert!(bytes >= 2 * 5 * 1500);
}
