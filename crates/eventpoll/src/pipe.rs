//! Pipes: a byte channel with a reading end and a writing end, each its own
//! pollable object, with Linux's readiness rules (EPOLL_SPEC §1.11).
//!
//! - Reader: `IN | RDNORM` while bytes are buffered; `HUP` once the writer
//!   is gone (with `IN` too while bytes remain).
//! - Writer: `OUT | WRNORM` while there is free space; `ERR` once the
//!   reader is gone.
//! - Every write wakes the reader's watchers with `IN | RDNORM` (Linux does
//!   so whenever a pipe has been polled, which a watched pipe always has).
//!   A read wakes the writer's watchers with `OUT | WRNORM` only when the
//!   pipe was full before it, as Linux's `pipe_read` does.
//! - Dropping one end removes the epitems watching it, then wakes the other
//!   end's watchers with an empty key ("something changed").
//!
//! Capacity is counted in bytes. Linux counts page-sized slots (16 by
//! default) and merges small writes into the last page, so the exact point
//! where a Linux pipe turns full differs; writes of at most [`PIPE_BUF`]
//! bytes are atomic here as there (all or `EAGAIN`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::events::{Errno, Events};
use crate::sync::{Condvar, Mutex};
use crate::waitqueue::{Pollable, WaitQueue};

/// Writes of at most this many bytes are atomic (Linux's `PIPE_BUF`).
pub const PIPE_BUF: usize = 4096;

/// Linux's default pipe capacity (16 pages).
pub const DEFAULT_CAPACITY: usize = 65536;

struct PipeState {
    buf: VecDeque<u8>,
    capacity: usize,
    reader_open: bool,
    writer_open: bool,
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

/// A new pipe holding at most `capacity` bytes (at least 1), both ends
/// blocking.
pub fn pipe(capacity: usize) -> (Arc<PipeReader>, Arc<PipeWriter>) {
    let shared = Arc::new(PipeShared {
        state: Mutex::new(PipeState {
            buf: VecDeque::new(),
            capacity: capacity.max(1),
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
        self.shared.state.lock().buf.len()
    }

    /// Reads up to `buf.len()` bytes. Returns 0 at end of file (writer gone
    /// and nothing buffered) or for an empty `buf`; blocks while empty, or
    /// fails with `EAGAIN` if non-blocking.
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.shared.state.lock();
        while state.buf.is_empty() {
            if !state.writer_open {
                return Ok(0);
            }
            if self.is_nonblocking() {
                return Err(Errno::EAGAIN);
            }
            self.shared.changed.wait(&mut state);
        }
        let was_full = state.buf.len() >= state.capacity;
        let n = buf.len().min(state.buf.len());
        for (dst, src) in buf.iter_mut().zip(state.buf.drain(..n)) {
            *dst = src;
        }
        drop(state);
        self.shared.changed.notify_all();
        if was_full {
            self.shared.wr_wq.wake(Events::OUT | Events::WRNORM);
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

    /// Writes `buf`: all of it when it is at most [`PIPE_BUF`] bytes,
    /// otherwise as much as fits. `EPIPE` once the reader is gone; blocks
    /// while there is no room, or fails with `EAGAIN` if non-blocking.
    pub fn write(&self, buf: &[u8]) -> Result<usize, Errno> {
        let mut state = self.shared.state.lock();
        if !state.reader_open {
            return Err(Errno::EPIPE);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let free = state.capacity.saturating_sub(state.buf.len());
            let fits = if buf.len() <= PIPE_BUF {
                free >= buf.len().min(state.capacity)
            } else {
                free > 0
            };
            if fits {
                break;
            }
            if self.is_nonblocking() {
                return Err(Errno::EAGAIN);
            }
            self.shared.changed.wait(&mut state);
            if !state.reader_open {
                return Err(Errno::EPIPE);
            }
        }
        let free = state.capacity - state.buf.len();
        let n = buf.len().min(free);
        state.buf.extend(&buf[..n]);
        drop(state);
        self.shared.changed.notify_all();
        self.shared.rd_wq.wake(Events::IN | Events::RDNORM);
        Ok(n)
    }
}

impl Pollable for PipeReader {
    fn poll(&self) -> Events {
        let state = self.shared.state.lock();
        let mut events = Events::empty();
        if !state.buf.is_empty() {
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
        if state.buf.len() < state.capacity {
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
        let (r, w) = nonblocking_pipe(16);
        assert_eq!(r.read(&mut [0; 4]), Err(Errno::EAGAIN));
        assert_eq!(r.poll(), Events::empty());
        assert_eq!(w.poll(), Events::OUT | Events::WRNORM);
    }

    #[test]
    fn bytes_come_out_in_order() {
        let (r, w) = nonblocking_pipe(16);
        assert_eq!(w.write(b"hello"), Ok(5));
        assert_eq!(r.poll(), Events::IN | Events::RDNORM);
        let mut buf = [0; 3];
        assert_eq!(r.read(&mut buf), Ok(3));
        assert_eq!(&buf, b"hel");
        assert_eq!(r.read(&mut buf), Ok(2));
        assert_eq!(&buf[..2], b"lo");
    }

    #[test]
    fn full_pipe_is_not_writable_and_small_writes_are_atomic() {
        let (r, w) = nonblocking_pipe(8);
        assert_eq!(w.write(b"123456"), Ok(6));
        assert_eq!(w.write(b"abc"), Err(Errno::EAGAIN));
        assert_eq!(w.write(b"ab"), Ok(2));
        assert_eq!(w.poll(), Events::empty());
        assert_eq!(r.read(&mut [0; 1]), Ok(1));
        assert_eq!(w.poll(), Events::OUT | Events::WRNORM);
    }

    #[test]
    fn writer_gone_gives_reader_hup_then_eof() {
        let (r, w) = nonblocking_pipe(8);
        w.write(b"x").unwrap();
        drop(w);
        assert_eq!(r.poll(), Events::IN | Events::RDNORM | Events::HUP);
        assert_eq!(r.read(&mut [0; 4]), Ok(1));
        assert_eq!(r.poll(), Events::HUP);
        assert_eq!(r.read(&mut [0; 4]), Ok(0));
    }

    #[test]
    fn reader_gone_gives_writer_err_and_epipe() {
        let (r, w) = nonblocking_pipe(8);
        drop(r);
        assert_eq!(w.poll(), Events::OUT | Events::WRNORM | Events::ERR);
        assert_eq!(w.write(b"x"), Err(Errno::EPIPE));
    }

    #[test]
    fn blocked_writer_gets_epipe_when_reader_goes() {
        let (r, w) = pipe(1);
        w.write(b"x").unwrap();
        let t = std::thread::spawn(move || w.write(b"y"));
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(r);
        assert_eq!(t.join().unwrap(), Err(Errno::EPIPE));
    }
}
