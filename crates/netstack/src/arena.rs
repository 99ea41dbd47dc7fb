//! Socket buffers of the default size, carved from 2 MiB slabs that ask
//! for transparent huge pages.
//!
//! Why: with many active connections each request touches a line or two
//! of each of four socket buffers (both ends' receive and send buffers),
//! and with a heap allocation per buffer every buffer sits on its own
//! 4 KiB page: at 10k connections and 4 KiB buffers that is 80k pages,
//! forty times what the CPU's TLB holds, so nearly every touch also walks
//! the page table. Slabs of [`SLAB_BYTES`], aligned to it and marked
//! `MADV_HUGEPAGE`, put 512 such buffers behind one TLB entry. The kernel
//! keeps its own socket memory in its direct map, which uses huge pages
//! too. Measured with `loopbench rr --quick`: 10k connections went from
//! 425k to ~630k requests/s when all heap memory was on huge pages
//! (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`); the socket buffers are the
//! bulk of those pages.
//!
//! The slabs come from the global allocator (so a counting allocator sees
//! them) and are freed when the arena is dropped; a buffer given back is
//! reused for the next connection. Where the kernel does not do huge pages
//! (`never`, or not Linux) the hint is ignored and the slabs are ordinary
//! memory.
//!
//! Safety rests on one rule, kept by `stack::Core`: every buffer taken
//! from an arena is dropped (with the smoltcp socket that holds it) before
//! the arena is. `Core` declares its arena after every field that holds
//! sockets, so its fields drop in that order.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Bytes per slab: one huge page on x86-64 and aarch64 (4 KiB base pages).
pub(crate) const SLAB_BYTES: usize = 2 << 20;

/// Buffers are laid out on cache-line boundaries.
const LINE: usize = 64;

/// The start of one buffer handed out by a [`BufferArena`].
#[derive(Debug)]
pub(crate) struct Chunk(NonNull<u8>);

// SAFETY: a `Chunk` is only an address into memory its arena owns; it is
// never dereferenced, only given back (see `BufferArena::give_back`).
unsafe impl Send for Chunk {}

/// Buffers of one length, carved from huge-page slabs.
#[derive(Debug)]
pub(crate) struct BufferArena {
    /// Bytes of each buffer handed out.
    len: usize,
    /// Bytes between the starts of two buffers: `len` rounded up to an odd
    /// number of lines (see [`stride_for`]).
    stride: usize,
    /// Every slab, each `SLAB_BYTES` long and aligned to it.
    slabs: Vec<NonNull<u8>>,
    /// Buffers already carved from the last slab.
    carved: usize,
    /// Buffers given back, taken again first.
    free: Vec<Chunk>,
}

// SAFETY: the arena owns its slabs as a `Vec<u8>` owns its buffer; nothing
// in it is tied to a thread.
unsafe impl Send for BufferArena {}

impl BufferArena {
    /// An arena of `len`-byte buffers, or `None` when `len` is 0 or no
    /// buffer of that length fits in a slab.
    pub(crate) fn new(len: usize) -> Option<BufferArena> {
        let stride = stride_for(len)?;
        if len == 0 || stride > SLAB_BYTES {
            return None;
        }
        Some(BufferArena {
            len,
            stride,
            slabs: Vec::new(),
            carved: 0,
            free: Vec::new(),
        })
    }

    /// The length of every buffer of this arena.
    pub(crate) fn buffer_len(&self) -> usize {
        self.len
    }

    /// Buffers that fit in one slab.
    fn per_slab(&self) -> usize {
        SLAB_BYTES / self.stride
    }

    /// A buffer of [`buffer_len`](Self::buffer_len) bytes, with the chunk
    /// to give back when the buffer is no longer used. A new buffer is
    /// zeroed; a reused one holds what its last connection left (smoltcp
    /// reads no byte of its buffers it has not written).
    ///
    /// # Safety
    ///
    /// The slice is not `'static`: it lives as long as the arena. The
    /// caller must drop it before the arena, and must not use it after
    /// giving its chunk back.
    pub(crate) unsafe fn take(&mut self) -> (&'static mut [u8], Chunk) {
        let start = match self.free.pop() {
            Some(Chunk(start)) => start,
            None => self.carve(),
        };
        // SAFETY: `start` begins `len` initialised bytes inside a live slab
        // (zeroed when carved) that no other slice covers: a chunk is
        // either free or handed out once. The lifetime is the caller's to
        // keep (see above).
        let buf = unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), self.len) };
        (buf, Chunk(start))
    }

    /// Gives back a buffer taken from this arena, for the next
    /// [`take`](Self::take).
    ///
    /// # Safety
    ///
    /// `chunk` came from this arena's `take`, and the slice taken with it
    /// has been dropped.
    pub(crate) unsafe fn give_back(&mut self, chunk: Chunk) {
        self.free.push(chunk);
    }

    /// The next unused buffer of the last slab, with a new slab first if
    /// it is used up.
    fn carve(&mut self) -> NonNull<u8> {
        if self.slabs.is_empty() || self.carved == self.per_slab() {
            self.slabs.push(new_slab());
            self.carved = 0;
        }
        let slab = *self.slabs.last().expect("a slab was just pushed");
        // SAFETY: `carved < per_slab`, so the offset stays inside the slab.
        let start = unsafe { slab.add(self.carved * self.stride) };
        self.carved += 1;
        start
    }

    /// Bytes of all slabs.
    pub(crate) fn slab_bytes(&self) -> usize {
        self.slabs.len() * SLAB_BYTES
    }

    /// Buffers taken and not given back.
    pub(crate) fn in_use(&self) -> usize {
        let carved = match self.slabs.len() {
            0 => 0,
            n => (n - 1) * self.per_slab() + self.carved,
        };
        carved - self.free.len()
    }
}

impl Drop for BufferArena {
    fn drop(&mut self) {
        for slab in self.slabs.drain(..) {
            // SAFETY: allocated by `new_slab` with `slab_layout`, freed once.
            unsafe { alloc::dealloc(slab.as_ptr(), slab_layout()) };
        }
    }
}

/// `len` rounded up to an odd number of cache lines, or `None` on overflow.
///
/// Why odd: connections that run in step (a benchmark, or any closed loop
/// of equal requests) sit at the same offset of their ring buffers. With a
/// stride of a power of two those offsets fall into a few cache sets and
/// evict one another; an odd number of lines walks every set.
fn stride_for(len: usize) -> Option<usize> {
    let lines = len.checked_next_multiple_of(LINE)? / LINE;
    let lines = if lines.is_multiple_of(2) {
        lines.checked_add(1)?
    } else {
        lines
    };
    lines.checked_mul(LINE)
}

fn slab_layout() -> Layout {
    Layout::from_size_align(SLAB_BYTES, SLAB_BYTES).expect("a power of two")
}

/// A zeroed slab, marked for huge pages before its first touch (so the
/// zeroing faults it in as huge pages).
fn new_slab() -> NonNull<u8> {
    let layout = slab_layout();
    // SAFETY: the layout has a non-zero size.
    let Some(slab) = NonNull::new(unsafe { alloc::alloc(layout) }) else {
        alloc::handle_alloc_error(layout);
    };
    #[cfg(target_os = "linux")]
    // SAFETY: the range is the slab just allocated, owned by us; the advice
    // changes no content. Its result is ignored: without huge pages
    // (`transparent_hugepage=never`) the slab is ordinary memory.
    unsafe {
        libc::madvise(slab.as_ptr().cast(), SLAB_BYTES, libc::MADV_HUGEPAGE);
    }
    // SAFETY: the slab is `SLAB_BYTES` writable bytes.
    unsafe { slab.as_ptr().write_bytes(0, SLAB_BYTES) };
    slab
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_that_fit_no_slab_get_no_arena() {
        assert!(BufferArena::new(0).is_none());
        assert!(BufferArena::new(SLAB_BYTES + 1).is_none());
        assert!(BufferArena::new(usize::MAX).is_none());
        assert!(
            BufferArena::new(SLAB_BYTES).is_none(),
            "its stride is a line longer"
        );
        assert_eq!(BufferArena::new(SLAB_BYTES - LINE).unwrap().per_slab(), 1);
    }

    #[test]
    fn strides_are_odd_numbers_of_lines() {
        assert_eq!(stride_for(1), Some(LINE));
        assert_eq!(stride_for(512), Some(9 * LINE));
        assert_eq!(stride_for(4096), Some(65 * LINE));
        assert_eq!(stride_for(4097), Some(65 * LINE));
        assert_eq!(stride_for(usize::MAX), None);
    }

    #[test]
    fn buffers_are_disjoint_zeroed_lines_and_a_slab_is_filled_before_the_next() {
        let mut arena = BufferArena::new(1000).unwrap();
        let per_slab = arena.per_slab();
        assert_eq!(per_slab, SLAB_BYTES / (17 * LINE));
        let mut taken = Vec::new();
        for i in 0..per_slab + 1 {
            // SAFETY: the slices are dropped (with `taken`) before the arena.
            let (buf, chunk) = unsafe { arena.take() };
            assert_eq!(buf.len(), 1000);
            assert!(buf.iter().all(|&b| b == 0), "buffer {i} is not zeroed");
            assert_eq!(buf.as_ptr() as usize % LINE, 0);
            buf.fill(i as u8);
            taken.push((buf, chunk));
        }
        assert_eq!(arena.slab_bytes(), 2 * SLAB_BYTES);
        assert_eq!(arena.in_use(), per_slab + 1);
        // No buffer overwrote another.
        for (i, (buf, _)) in taken.iter().enumerate() {
            assert!(
                buf.iter().all(|&b| b == i as u8),
                "buffer {i} was overwritten"
            );
        }
        let mut starts: Vec<usize> = taken.iter().map(|(b, _)| b.as_ptr() as usize).collect();
        starts.sort_unstable();
        assert!(starts.windows(2).all(|w| w[1] - w[0] >= 1000));
    }

    #[test]
    fn a_buffer_given_back_is_taken_again_before_a_new_one() {
        let mut arena = BufferArena::new(4096).unwrap();
        // SAFETY: every slice is dropped before its chunk is given back and
        // before the arena.
        unsafe {
            let (first, chunk) = arena.take();
            let first_at = first.as_ptr() as usize;
            let (second, second_chunk) = arena.take();
            assert_ne!(second.as_ptr() as usize, first_at);
            arena.give_back(chunk);
            assert_eq!(arena.in_use(), 1);
            let (again, _) = arena.take();
            assert_eq!(again.as_ptr() as usize, first_at);
            let (fresh, _) = arena.take();
            assert_ne!(fresh.as_ptr() as usize, first_at);
            assert_ne!(fresh.as_ptr(), second.as_ptr());
            arena.give_back(second_chunk);
            assert_eq!(arena.in_use(), 2);
        }
        assert_eq!(arena.slab_bytes(), SLAB_BYTES);
    }
}
