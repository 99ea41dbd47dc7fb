//! Pipes: a byte channel with a reading end and a writing end, each its own
//! pollable object, with Linux's buffering and readiness rules (EPOLL_SPEC
//! §1.11; `fs/pipe.c`).
//!
//! Like Linux, a pipe is a ring of page-sized buffers ("slots"):
//!
//! - The capacity is a number of slots: [`pipe`] rounds the size it is
//!   given up to a power of two pages, as `F_SETPIPE_SZ` does (the default
//!   is 16 pages, 64 KiB).
//! - A write first tries to merge its sub-page remainder (`len % 4096`
//!   bytes) into the last slot if that fits in the slot's page, then fills
//!   fresh slots a page at a time. So a write of at most [`PIPE_BUF`] bytes
//!   is atomic, and a pipe is *full* when every slot is in use, even if the
//!   last one has room left.
//! - A read frees a slot once it has consumed all of it.
//!
//! Readiness: the reader is `IN | RDNORM` while any slot holds data and gets
//! `HUP` once the writer is gone; the writer is `OUT | WRNORM` while a slot
//! is free and gets `ERR` once the reader is gone.
//!
//! Wake-ups, as Linux does them for a pipe that has been polled (a watched
//! pipe always has):
//!
//! - every write call, even one that fails with `EAGAIN` on a full pipe,
//!   wakes the reader's watchers with `IN | RDNORM` (an edge for ET
//!   watchers; readiness is re-checked at harvest);
//! - a read wakes the writer's watchers with `OUT | WRNORM` if the pipe was
//!   full when the read began (whether or not it freed a slot);
//! - dropping one end removes the epitems watching it, then wakes the other
//!   end's watchers with an empty key ("something changed").
//!
//! Page buffers are recycled: steady traffic allocates nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::events::{Errno, Events};
use crate::sync::{Condvar, Mutex};
use crate::waitqueue::{Pollable, WaitQueue};

/// Writes of at most this many bytes are atomic (Linux's `PIPE_BUF`).
pub const PIPE_BUF: usize = 4096;

/// The size of one slot (Linux's `PAGE_SIZE`).
pub const PIPE_PAGE: usize = 4096;

/// Linux's default pipe capacity (16 pages).
pub const DEFAULT_CAPACITY: usize = 16 * PIPE_PAGE;

/// One slot: a page buffer and how far the reader has consumed it.
struct Slot {
    page: Vec<u8>,
    read: usize,
}

impl Slot {
    fn unread(&self) -> &[u8] {
        &self.page[self.read..]
    }
}

struct PipeState {
    slots: VecDeque<Slot>,
    max_slots: usize,
    /// Page buffers of freed slots, reused by later writes.
    spare: Vec<Vec<u8>>,
    reader_open: bool,
    writer_open: bool,
}

impl PipeState {
    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn is_full(&self) -> bool {
        self.slots.len() >= self.max_slots
    }

    fn bytes(&self) -> usize {
        self.slots.iter().map(|slot| slot.unread().len()).sum()
    }

    /// Merges `data` into the last slot if it fits in that slot's page.
    fn try_merge(&mut self, data: &[u8]) -> bool {
        match self.slots.back_mut() {
            Some(last) if last.page.len() + data.len() <= PIPE_PAGE => {
                last.page.extend_from_slice(data);
                true
            }
            _ => false,
        }
    }

    /// Fills a fresh slot with up to a page of `data`; returns the bytes taken.
    fn push_slot(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(PIPE_PAGE);
        let mut page = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(PIPE_PAGE));
        page.extend_from_slice(&data[..n]);
        self.slots.push_back(Slot { page, read: 0 });
        n
    }

    /// Copies out up to `buf.len()` bytes, freeing consumed slots.
    fn take(&mut self, buf: &mut [u8]) -> usize {
        let mut copied = 0;
        while copied < buf.len() {
            let Some(slot) = self.slots.front_mut() else {
                break;
            };
            let unread = slot.unread();
            let n = unread.len().min(buf.len() - copied);
            buf[copied..copied + n].copy_from_slice(&unread[..n]);
            slot.read += n;
            copied += n;
            if slot.read == slot.page.len() {
                let mut page = self.slots.pop_front().expect("front slot exists").page;
                page.clear();
                self.spare.push(page);
            }
        }
        copied
    }
}

struct PipeShared {
    state: Mutex<PipeState>,
    /// Blocked readers and writers.
    changed: Condvar,
    rd_wq: WaitQueue,
    wr_wq: WaitQueue,
}

/// The reading end of a pipe.
pub struct PipeReader {
    shared: Arc<PipeShared>,
    nonblocking: AtomicBool,
}

/// The writing end of a pipe.
pub struct PipeWriter {
    shared: Arc<PipeShared>,
    nonblocking: AtomicBool,
}

/// A new pipe of `capacity` bytes rounded up to a power of two pages (at
/// least one page), both ends blocking.
pub fn pipe(capacity: usize) -> (Arc<PipeReader>, Arc<PipeWriter>) {
    let pages = capacity.div_ceil(PIPE_PAGE).max(1).next_power_of_two();
    let shared = Arc::new(PipeShared {
        state: Mutex::new(PipeState {
            slots: VecDeque::with_capacity(pages),
            max_slots: pages,
            spare: Vec::new(),
            reader_open: true,
            writer_open: true,
        }),
        changed: Condvar::new(),
        rd_wq: WaitQueue::new(),
        wr_wq: WaitQueue::new(),
    });
    (
        Arc::new(PipeReader {
            shared: shared.clone(),
            nonblocking: AtomicBool::new(false),
        }),
        Arc::new(PipeWriter {
            shared,
            nonblocking: AtomicBool::new(false),
        }),
    )
}

impl PipeReader {
    /// Sets or clears non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) {
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    /// True in non-blocking mode.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Bytes buffered now.
    pub fn available(&self) -> usize {
        self.shared.state.lock().bytes()
    }

    /// Reads up to `buf.len()` bytes. Returns 0 at end of file (writer gone
    /// and nothing buffered) or for an empty `buf`; blocks while empty, or
    /// fails with `EAGAIN` if non-blocking.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.shared.state.lock();
        let mut was_full = state.is_full();
        let mut slept = false;
        while state.is_empty() {
            if !state.writer_open {
                return Ok(0);
            }
            if self.is_nonblocking() {
                return Err(Errno::EAGAIN);
            }
            self.shared.changed.wait(&mut state);
            was_full = state.is_full();
            slept = true;
        }
        let n = state.take(buf);
        // Linux wakes the next reader only after a read that had to sleep.
        let wake_next_reader = slept && !state.is_empty();
        drop(state);
        self.shared.changed.notify_all();
        if was_full {
            self.shared.wr_wq.wake(Events::OUT | Events::WRNORM);
        }
        if wake_next_reader {
            self.shared.rd_wq.wake(Events::IN | Events::RDNORM);
        }
        Ok(n)
    }
}

impl PipeWriter {
    /// Sets or clears non-blocking mode.
    pub fn set_nonblocking(&self, nonblocking: bool) {
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    /// True in non-blocking mode.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// Writes `buf` (see the module docs for how it fills slots). Returns the
    /// bytes written: all of them, or fewer if a non-blocking write filled
    /// the pipe part way. `EPIPE` once the reader is gone; `EAGAIN` if
    /// non-blocking and nothing could be written; blocks otherwise.
    pub fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let result = self.write_locked(buf);
        self.shared.changed.notify_all();
        // Every write call wakes the reader's watchers (Linux's poll_usage).
        self.shared.rd_wq.wake(Events::IN | Events::RDNORM);
        result
    }

    fn write_locked(&self, buf: &[u8]) -> Result<usize, Errno> {
        let mut state = self.shared.state.lock();
        if !state.reader_open {
            return Err(Errno::EPIPE);
        }
        let mut written = 0;
        let remainder = buf.len() % PIPE_PAGE;
        if remainder != 0 && state.try_merge(&buf[..remainder]) {
            written = remainder;
        }
        while written < buf.len() {
            if !state.reader_open {
                return if written > 0 {
                    Ok(written)
                } else {
                    Err(Errno::EPIPE)
                };
            }
            if !state.is_full() {
                written += state.push_slot(&buf[written..]);
                continue;
            }
            if self.is_nonblocking() {
                return if written > 0 {
                    Ok(written)
                } else {
                    Err(Errno::EAGAIN)
                };
            }
            // Let readers see what is written so far before sleeping.
            if written > 0 {
                self.shared.changed.notify_all();
                self.shared.rd_wq.wake(Events::IN | Events::RDNORM);
            }
            self.shared.changed.wait(&mut state);
        }
        Ok(written)
    }
}

impl Pollable for PipeReader {
    fn poll(&self) -> Events {
        let state = self.shared.state.lock();
        let mut events = Events::empty();
        if !state.is_empty() {
            events |= Events::IN | Events::RDNORM;
        }
        if !state.writer_open {
            events |= Events::HUP;
        }
        events
    }

    fn wait_queue(&self) -> &WaitQueue {
        &self.shared.rd_wq
    }
}

impl Pollable for PipeWriter {
    fn poll(&self) -> Events {
        let state = self.shared.state.lock();
        let mut events = Events::empty();
        if !state.is_full() {
            events |= Events::OUT | Events::WRNORM;
        }
        if !state.reader_open {
            events |= Events::ERR;
        }
        events
    }

    fn wait_queue(&self) -> &WaitQueue {
        &self.shared.wr_wq
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        // Linux's order: the closing file's epitems go first, then the
        // release wakes the other side.
        self.shared.rd_wq.detach_all();
        let writer_open = {
            let mut state = self.shared.state.lock();
            state.reader_open = false;
            state.writer_open
        };
        self.shared.changed.notify_all();
        if writer_open {
            self.shared.wr_wq.wake_all(Events::empty());
        }
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        self.shared.wr_wq.detach_all();
        let reader_open = {
            let mut state = self.shared.state.lock();
            state.writer_open = false;
            state.reader_open
        };
        self.shared.changed.notify_all();
        if reader_open {
            self.shared.rd_wq.wake_all(Events::empty());
        }
    }
}

impl std::fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeReader")
            .field("available", &self.available())
            .finish()
    }
}

impl std::fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeWriter").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn nonblocking_pipe(capacity: usize) -> (Arc<PipeReader>, Arc<PipeWriter>) {
        let (r, w) = pipe(capacity);
        r.set_nonblocking(true);
        w.set_nonblocking(true);
        (r, w)
    }

    #[test]
    fn empty_pipe_reader_would_block_writer_is_writable() {
        let (r, w) = nonblocking_pipe(PIPE_PAGE);
        assert_eq!(r.read(&mut [0; 4]), Err(Errno::EAGAIN));
        assert_eq!(r.poll(), Events::empty());
        assert_eq!(w.poll(), Events::OUT | Events::WRNORM);
    }

    #[test]
    fn bytes_come_out_in_order_across_slots() {
        let (r, w) = nonblocking_pipe(4 * PIPE_PAGE);
        let data: Vec<u8> = (0..3 * PIPE_PAGE + 17).map(|i| i as u8).collect();
        assert_eq!(w.write(&data), Ok(data.len()));
        assert_eq!(w.write(b"tail"), Ok(4));
        let mut out = vec![0; data.len() + 4];
        assert_eq!(r.read(&mut out[..100]), Ok(100));
        assert_eq!(r.read(&mut out[100..]), Ok(data.len() + 4 - 100));
        assert_eq!(&out[..data.len()], &data[..]);
        assert_eq!(&out[data.len()..], b"tail");
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two_pages() {
        for (asked, slots) in [
            (0, 1),
            (1, 1),
            (PIPE_PAGE, 1),
            (PIPE_PAGE + 1, 2),
            (3 * PIPE_PAGE, 4),
        ] {
            let (_r, w) = nonblocking_pipe(asked);
            let page = vec![0u8; PIPE_PAGE];
            for _ in 0..slots {
                assert_eq!(w.write(&page), Ok(PIPE_PAGE), "asked {asked}");
            }
            assert_eq!(w.write(&page), Err(Errno::EAGAIN), "asked {asked}");
        }
    }

    #[test]
    fn one_slot_pipe_is_full_once_used_but_small_writes_still_merge() {
        let (r, w) = nonblocking_pipe(PIPE_PAGE);
        assert_eq!(w.write(&[1; 4000]), Ok(4000));
        // Every slot is in use: not writable, though 96 bytes still fit.
        assert_eq!(w.poll(), Events::empty());
        assert_eq!(w.write(&[2; 200]), Err(Errno::EAGAIN));
        assert_eq!(w.write(&[3; 96]), Ok(96));
        // Reading part of the slot does not free it.
        assert_eq!(r.read(&mut [0; 10]), Ok(10));
        assert_eq!(w.poll(), Events::empty());
        let mut rest = vec![0; PIPE_PAGE];
        assert_eq!(r.read(&mut rest), Ok(4086));
        assert_eq!(w.poll(), Events::OUT | Events::WRNORM);
    }

    #[test]
    fn large_nonblocking_write_is_partial_when_the_pipe_fills() {
        let (_r, w) = nonblocking_pipe(2 * PIPE_PAGE);
        assert_eq!(w.write(&vec![0; 3 * PIPE_PAGE]), Ok(2 * PIPE_PAGE));
        assert_eq!(w.write(b"x"), Err(Errno::EAGAIN));
    }

    #[test]
    fn writer_gone_gives_reader_hup_then_eof() {
        let (r, w) = nonblocking_pipe(PIPE_PAGE);
        w.write(b"x").unwrap();
        drop(w);
        assert_eq!(r.poll(), Events::IN | Events::RDNORM | Events::HUP);
        assert_eq!(r.read(&mut [0; 4]), Ok(1));
        assert_eq!(r.poll(), Events::HUP);
        assert_eq!(r.read(&mut [0; 4]), Ok(0));
    }

    #[test]
    fn reader_gone_gives_writer_err_and_epipe() {
        let (r, w) = nonblocking_pipe(PIPE_PAGE);
        drop(r);
        assert_eq!(w.poll(), Events::OUT | Events::WRNORM | Events::ERR);
        assert_eq!(w.write(b"x"), Err(Errno::EPIPE));
    }

    #[test]
    fn blocked_writer_gets_epipe_when_reader_goes() {
        let (r, w) = pipe(PIPE_PAGE);
        w.write(&[0; PIPE_PAGE]).unwrap();
        let t = std::thread::spawn(move || w.write(b"y"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(r);
        assert_eq!(t.join().unwrap(), Err(Errno::EPIPE));
    }

    #[test]
    fn blocked_writer_finishes_once_a_slot_is_read() {
        let (r, w) = pipe(PIPE_PAGE);
        w.write(&[7; PIPE_PAGE]).unwrap();
        let t = std::thread::spawn(move || w.write(&[8; 10]));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut page = vec![0; PIPE_PAGE];
        assert_eq!(r.read(&mut page), Ok(PIPE_PAGE));
        assert_eq!(t.join().unwrap(), Ok(10));
        assert_eq!(r.read(&mut page), Ok(10));
    }
}
