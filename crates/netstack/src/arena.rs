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
//! reused for the next connection, from the lowest-numbered slab with room,
//! so that as connections come and go the last slabs empty out. The
//! memory of an empty slab goes back to the kernel (`MADV_DONTNEED`; one
//! empty slab is kept): after a peak of connections the stack's buffer
//! memory falls with their number, as Linux's socket memory does. Where
//! the kernel does not do huge pages (`never`, or not Linux) the hint is
//! ignored and the slabs are ordinary memory.
//!
//! Safety rests on one rule, kept by `stack::Core`: every buffer taken
//! from an arena is dropped (with the smoltcp socket that holds it) before
//! the arena is. `Core` declares its arena after every field that holds
//! sockets, so its fields drop in that order.

use std::alloc::{self, Layout};
use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::ptr::NonNull;

/// Bytes per slab: one huge page on x86-64 and aarch64 (4 KiB base pages).
pub(crate) const SLAB_BYTES: usize = 2 << 20;

/// Buffers are laid out on cache-line boundaries.
const LINE: usize = 64;

/// Slabs with no buffer in use kept in memory, for the next connections;
/// the memory of any further empty slab goes back to the kernel.
const EMPTY_SLABS_KEPT: usize = 1;

/// One buffer handed out by a [`BufferArena`]: where it sits, its slab
/// and its place in the slab. Eight bytes with a niche, as a pointer would
/// be, so the `Option<[Chunk; 2]>` every connection keeps is 16 bytes.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// The slab's number plus one.
    slab: NonZeroU32,
    index: u32,
}

impl Chunk {
    fn slab(&self) -> usize {
        self.slab.get() as usize - 1
    }
}

/// One slab of an arena and what of it is in use.
#[derive(Debug)]
struct Slab {
    /// `SLAB_BYTES` long, aligned to it.
    base: NonNull<u8>,
    /// Buffers carved so far (buffers are carved in order, on first use).
    carved: u32,
    /// Carved buffers given back, by their place in the slab.
    free: Vec<u32>,
    /// Buffers handed out and not given back.
    live: u32,
    /// False once its memory went back to the kernel (`MADV_DONTNEED`):
    /// the pages come back, zeroed, when a buffer of it is next written.
    resident: bool,
}

/// Buffers of one length, carved from huge-page slabs.
///
/// A buffer comes from the lowest-numbered slab with room, so that as
/// connections come and go the buffers in use gather in the first slabs
/// and the last ones empty out. When a slab's last buffer comes back and
/// [`EMPTY_SLABS_KEPT`] empty slabs are already kept, its memory goes back
/// to the kernel (the address range stays the arena's): the stack's memory
/// shrinks as its connections close, as Linux's socket memory does.
#[derive(Debug)]
pub(crate) struct BufferArena {
    /// Bytes of each buffer handed out.
    len: usize,
    /// Bytes between the starts of two buffers: `len` rounded up to an odd
    /// number of lines (see [`stride_for`]).
    stride: usize,
    /// Every slab.
    slabs: Vec<Slab>,
    /// The slabs with a buffer free or not yet carved, by number.
    with_room: BTreeSet<u32>,
    /// Slabs in memory with no buffer in use.
    empty_resident: usize,
    /// Slabs whose memory has not gone back to the kernel.
    resident: usize,
    /// Buffers handed out and not given back, over all slabs.
    in_use: usize,
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
            with_room: BTreeSet::new(),
            empty_resident: 0,
            resident: 0,
            in_use: 0,
        })
    }

    /// The length of every buffer of this arena.
    pub(crate) fn buffer_len(&self) -> usize {
        self.len
    }

    /// Buffers that fit in one slab.
    fn per_slab(&self) -> u32 {
        // At most SLAB_BYTES / LINE = 32768.
        (SLAB_BYTES / self.stride) as u32
    }

    /// A buffer of [`buffer_len`](Self::buffer_len) bytes, with the chunk
    /// to give back when the buffer is no longer used. A buffer new to its
    /// slab, or of a slab whose memory went back to the kernel, is zeroed;
    /// a reused one holds what its last connection left (smoltcp reads no
    /// byte of its buffers it has not written).
    ///
    /// # Safety
    ///
    /// The slice is not `'static`: it lives as long as the arena. The
    /// caller must drop it before the arena, and must not use it after
    /// giving its chunk back.
    pub(crate) unsafe fn take(&mut self) -> (&'static mut [u8], Chunk) {
        let per_slab = self.per_slab();
        let number = match self.with_room.first() {
            Some(&n) => n,
            None => {
                // 2^32 - 1 slabs would be 8 EiB.
                let n = u32::try_from(self.slabs.len())
                    .ok()
                    .filter(|&n| n < u32::MAX)
                    .expect("fewer than 2^32 - 1 slabs");
                self.slabs.push(Slab {
                    base: new_slab(),
                    carved: 0,
                    free: Vec::new(),
                    live: 0,
                    resident: true,
                });
                // A new slab counts as empty until its first buffer goes.
                self.empty_resident += 1;
                self.resident += 1;
                self.with_room.insert(n);
                n
            }
        };
        let slab = &mut self.slabs[number as usize];
        let index = match slab.free.pop() {
            Some(i) => i,
            None => {
                slab.carved += 1;
                slab.carved - 1
            }
        };
        if slab.live == 0 {
            if slab.resident {
                self.empty_resident -= 1;
            } else {
                slab.resident = true;
                self.resident += 1;
            }
        }
        slab.live += 1;
        if slab.free.is_empty() && slab.carved == per_slab {
            self.with_room.remove(&number);
        }
        self.in_use += 1;
        // SAFETY: `index < per_slab`, so the buffer lies inside the slab.
        let start = unsafe { slab.base.add(index as usize * self.stride) };
        // SAFETY: `start` begins `len` initialised bytes inside a live slab
        // (zeroed when made, or by the kernel after `MADV_DONTNEED`) that no
        // other slice covers: a buffer is either free or handed out once.
        // The lifetime is the caller's to keep (see above).
        let buf = unsafe { std::slice::from_raw_parts_mut(start.as_ptr(), self.len) };
        (
            buf,
            Chunk {
                slab: NonZeroU32::MIN.saturating_add(number),
                index,
            },
        )
    }

    /// Gives back a buffer taken from this arena, for the next
    /// [`take`](Self::take). If that empties its slab and enough empty
    /// slabs are kept already, the slab's memory goes back to the kernel.
    ///
    /// # Safety
    ///
    /// `chunk` came from this arena's `take`, and the slice taken with it
    /// has been dropped.
    pub(crate) unsafe fn give_back(&mut self, chunk: Chunk) {
        let slab = &mut self.slabs[chunk.slab()];
        debug_assert!(chunk.index < slab.carved && !slab.free.contains(&chunk.index));
        slab.free.push(chunk.index);
        slab.live -= 1;
        self.in_use -= 1;
        self.with_room.insert(chunk.slab() as u32);
        if slab.live > 0 {
            return;
        }
        if self.empty_resident < EMPTY_SLABS_KEPT || !release(slab.base) {
            self.empty_resident += 1;
            return;
        }
        slab.resident = false;
        self.resident -= 1;
    }

    /// Bytes of all slabs, in memory or not (the address space held).
    #[cfg(test)]
    fn slab_bytes(&self) -> usize {
        self.slabs.len() * SLAB_BYTES
    }

    /// Bytes of the slabs whose memory has not gone back to the kernel.
    pub(crate) fn resident_bytes(&self) -> usize {
        debug_assert_eq!(
            self.resident,
            self.slabs.iter().filter(|s| s.resident).count()
        );
        self.resident * SLAB_BYTES
    }

    /// Buffers taken and not given back.
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }
}

impl Drop for BufferArena {
    fn drop(&mut self) {
        for slab in self.slabs.drain(..) {
            // SAFETY: allocated by `new_slab` with `slab_layout`, freed once.
            unsafe { alloc::dealloc(slab.base.as_ptr(), slab_layout()) };
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

/// Gives the memory of a slab with no buffer in use back to the kernel;
/// true if it went. The range stays allocated to the arena; on Linux its
/// next touch faults in zeroed pages (still under the `MADV_HUGEPAGE`
/// advice). Elsewhere nothing happens and the slab stays in memory.
fn release(slab: NonNull<u8>) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: the range is one of the arena's slabs with no buffer of
        // it handed out, so no slice covers it; `MADV_DONTNEED` on private
        // anonymous memory only replaces its content with zeroes, and the
        // buffers stay initialised memory. A failure changes nothing.
        let done = unsafe { libc::madvise(slab.as_ptr().cast(), SLAB_BYTES, libc::MADV_DONTNEED) };
        done == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = slab;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_keeps_its_two_chunks_in_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Option<[Chunk; 2]>>(), 16);
    }

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
        let per_slab = arena.per_slab() as usize;
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

    #[test]
    fn a_buffer_comes_from_the_lowest_slab_with_room() {
        let mut arena = BufferArena::new(SLAB_BYTES / 4).unwrap();
        let per_slab = arena.per_slab() as usize;
        assert_eq!(per_slab, 3);
        // SAFETY: every slice is dropped before its chunk is given back and
        // before the arena.
        unsafe {
            let mut taken: Vec<_> = (0..3 * per_slab).map(|_| arena.take()).collect();
            let slab_of = |b: &[u8]| b.as_ptr() as usize & !(SLAB_BYTES - 1);
            let first = slab_of(taken[0].0);
            let last = slab_of(taken[3 * per_slab - 1].0);
            // One buffer back in the last slab, then one in the first: the
            // next comes from the first.
            let (_, chunk) = taken.remove(3 * per_slab - 1);
            arena.give_back(chunk);
            let (_, chunk) = taken.remove(0);
            arena.give_back(chunk);
            let (again, chunk) = arena.take();
            assert_eq!(slab_of(again), first);
            taken.push((again, chunk));
            let (again, chunk) = arena.take();
            assert_eq!(slab_of(again), last);
            taken.push((again, chunk));
            assert_eq!(arena.in_use(), 3 * per_slab);
            for (_, chunk) in taken {
                arena.give_back(chunk);
            }
        }
        assert_eq!(arena.in_use(), 0);
    }

    #[test]
    fn empty_slabs_past_the_one_kept_go_back_and_come_again_zeroed() {
        let mut arena = BufferArena::new(SLAB_BYTES / 4).unwrap();
        let per_slab = arena.per_slab() as usize;
        // SAFETY: every slice is dropped before its chunk is given back and
        // before the arena.
        unsafe {
            let taken: Vec<_> = (0..3 * per_slab).map(|_| arena.take()).collect();
            assert_eq!(arena.resident_bytes(), 3 * SLAB_BYTES);
            for (buf, chunk) in taken {
                buf.fill(0xa5);
                arena.give_back(chunk);
            }
            assert_eq!(arena.in_use(), 0);
            assert_eq!(
                arena.slab_bytes(),
                3 * SLAB_BYTES,
                "the address space stays"
            );
            let expected = if cfg!(target_os = "linux") {
                EMPTY_SLABS_KEPT * SLAB_BYTES
            } else {
                3 * SLAB_BYTES
            };
            assert_eq!(arena.resident_bytes(), expected);
            // Taken again: the kept slab first (its buffers hold what they
            // held), then the released ones, which read as zeroes.
            let again: Vec<_> = (0..3 * per_slab).map(|_| arena.take()).collect();
            assert_eq!(arena.resident_bytes(), 3 * SLAB_BYTES);
            assert_eq!(arena.slab_bytes(), 3 * SLAB_BYTES, "no new slab");
            if cfg!(target_os = "linux") {
                let zeroed = again
                    .iter()
                    .filter(|(b, _)| b.iter().all(|&x| x == 0))
                    .count();
                assert_eq!(zeroed, 2 * per_slab);
            }
            for (_, chunk) in again {
                arena.give_back(chunk);
            }
        }
    }
}
