//! A counting wrapper around the system allocator, installed as the
//! binary's `#[global_allocator]`, so that memory figures are measured, not
//! computed from `size_of`.
//!
//! Counting is off by default and costs one relaxed load per allocation
//! then, so timed workloads are not slowed down. While a [`Counting`] scope
//! is alive, every allocation adds its size to the process-wide count of
//! live bytes and every deallocation subtracts it; the difference between
//! two readings is what the code in between kept allocated. Measure with no
//! other thread allocating.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// The system allocator, counting live bytes while enabled.
pub struct CountingAlloc;

static ENABLED: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicI64 = AtomicI64::new(0);

fn count(delta: i64) {
    if ENABLED.load(Ordering::Relaxed) {
        LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System`, which upholds the GlobalAlloc
// contract; the counting touches only two atomics and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc_zeroed` is passed on unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: the caller's contract for `dealloc` is passed on unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is passed on unchanged.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        new
    }
}

/// A scope in which allocations are counted. One at a time: scopes do not
/// nest, and creating one while another lives is an error.
pub struct Counting {
    start: i64,
}

impl Counting {
    /// Starts counting; `None` if another scope is already counting.
    pub fn start() -> Option<Counting> {
        if ENABLED.swap(true, Ordering::SeqCst) {
            return None;
        }
        Some(Counting {
            start: LIVE.load(Ordering::SeqCst),
        })
    }

    /// Bytes allocated and not yet freed since [`Counting::start`]
    /// (negative if more was freed than allocated).
    pub fn live_bytes(&self) -> i64 {
        LIVE.load(Ordering::SeqCst) - self.start
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        ENABLED.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_live_bytes_of_a_scope() {
        // Tests run on the default allocator, so drive this one directly.
        let scope = Counting::start().expect("no other scope");
        assert!(Counting::start().is_none());
        let layout = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a non-zero-sized layout, freed below with the same layout.
        let ptr = unsafe { CountingAlloc.alloc(layout) };
        assert!(!ptr.is_null());
        assert_eq!(scope.live_bytes(), 1000);
        // SAFETY: `ptr` came from this allocator with `layout`.
        let ptr = unsafe { CountingAlloc.realloc(ptr, layout, 1500) };
        assert!(!ptr.is_null());
        assert_eq!(scope.live_bytes(), 1500);
        let layout = Layout::from_size_align(1500, 8).unwrap();
        // SAFETY: `ptr` came from this allocator, now of size 1500.
        unsafe { CountingAlloc.dealloc(ptr, layout) };
        assert_eq!(scope.live_bytes(), 0);
        drop(scope);
        assert!(Counting::start().is_some());
    }
}
