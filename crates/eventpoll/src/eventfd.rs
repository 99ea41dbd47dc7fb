//! `EventFd`: Linux's eventfd, a 64-bit counter that is readable while
//! non-zero. Useful on its own to wake an event loop from another thread,
//! and the standard event source of the tests and benchmarks.
//!
//! Readiness (EPOLL_SPEC §1.11): `IN` iff the counter is non-zero, `OUT` iff
//! it is below `u64::MAX - 1`, `ERR` iff it is `u64::MAX` (unreachable
//! through `write`, as in Linux). Every successful write wakes watchers with
//! key `IN` and every successful read with key `OUT`, even a write of 0:
//! edge-triggered watchers see each of them as an edge (EPOLL_SPEC A9).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::events::{Errno, Events};
use crate::sync::{AtomicU64, AtomicUsize, Condvar, Mutex};
use crate::waitqueue::{Pollable, ReadinessCell, WaitQueue};

bitflags::bitflags! {
    /// Flags of [`EventFd::with_flags`], with Linux's `EFD_*` values.
    #[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
    pub struct EfdFlags: i32 {
        /// Reads return 1 and decrement (`EFD_SEMAPHORE`).
        const SEMAPHORE = 0o1;
        /// Reads and writes fail with `EAGAIN` instead of blocking (`EFD_NONBLOCK`).
        const NONBLOCK = 0o4000;
        /// Close on exec (`EFD_CLOEXEC`); recorded by the descriptor table.
        const CLOEXEC = 0o2000000;
    }
}

/// The largest value the counter can hold.
const MAX_COUNT: u64 = u64::MAX - 1;

/// A Linux-style eventfd. Create with [`EventFd::new`] or
/// [`EventFd::with_flags`]; it is shared by `Arc` and watched by epoll.
///
/// The counter is one atomic word: `poll` is a single load and a read or a
/// write that does not block is one compare-and-swap. Only blocking callers
/// touch the mutex and condvar. The word sits in its own allocation, the
/// eventfd's [`ReadinessCell`]: epoll keeps it and reads the readiness
/// there, without a reference count on the eventfd.
pub struct EventFd {
    count: Arc<Counter>,
    semaphore: bool,
    nonblocking: AtomicBool,
    /// Callers blocked in `read` or `write`; they sleep on `changed` under
    /// `sleep_lock`.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    changed: Condvar,
    wq: WaitQueue,
}

/// An eventfd's counter, and its readiness cell.
struct Counter(AtomicU64);

impl Counter {
    fn load(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl ReadinessCell for Counter {
    fn poll(&self) -> Events {
        let count = self.load();
        let mut events = Events::empty();
        if count > 0 {
            events |= Events::IN;
        }
        if count == u64::MAX {
            events |= Events::ERR;
        }
        if count < MAX_COUNT {
            events |= Events::OUT;
        }
        events
    }
}

impl EventFd {
    /// A blocking eventfd in counter mode starting at `initval`.
    pub fn new(initval: u64) -> Arc<EventFd> {
        EventFd::with_flags(initval, EfdFlags::empty()).expect("no flags are always valid")
    }

    /// An eventfd with `EFD_SEMAPHORE` and/or `EFD_NONBLOCK` (`EFD_CLOEXEC`
    /// is accepted and ignored here). `EINVAL` for any other bit.
    pub fn with_flags(initval: u64, flags: EfdFlags) -> Result<Arc<EventFd>, Errno> {
        if EfdFlags::from_bits(flags.bits()).is_none() {
            return Err(Errno::EINVAL);
        }
        Ok(Arc::new(EventFd {
            count: Arc::new(Counter(AtomicU64::new(initval))),
            semaphore: flags.contains(EfdFlags::SEMAPHORE),
            nonblocking: AtomicBool::new(flags.contains(EfdFlags::NONBLOCK)),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            changed: Condvar::new(),
            wq: WaitQueue::new(),
        }))
    }

    /// Sets or clears non-blocking mode (`fcntl(F_SETFL, O_NONBLOCK)`).
    pub fn set_nonblocking(&self, nonblocking: bool) {
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    /// True in non-blocking mode.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    /// The counter now, without changing it.
    pub fn value(&self) -> u64 {
        self.count.load()
    }

    /// Reads the counter: all of it (and resets it to 0), or 1 in semaphore
    /// mode. Blocks while it is 0, or fails with `EAGAIN` if non-blocking.
    pub fn read(&self) -> Result<u64, Errno> {
        let value = self.block_until(|count| {
            if count == 0 {
                return None;
            }
            let take = if self.semaphore { 1 } else { count };
            Some((count - take, take))
        })?;
        self.wq.wake(Events::OUT);
        Ok(value)
    }

    /// Adds `value` to the counter. `EINVAL` for `u64::MAX`; blocks while the
    /// sum would exceed `u64::MAX - 1`, or fails with `EAGAIN` if non-blocking.
    pub fn write(&self, value: u64) -> Result<(), Errno> {
        if value == u64::MAX {
            return Err(Errno::EINVAL);
        }
        self.block_until(|count| (MAX_COUNT - count >= value).then(|| (count + value, ())))?;
        self.wq.wake(Events::IN);
        Ok(())
    }

    /// Applies `step` (current count -> `Some((new count, result))`, or
    /// `None` if the operation must wait) atomically, blocking or failing
    /// with `EAGAIN` while it returns `None`, and wakes blocked callers of
    /// the other kind after a change.
    fn block_until<R>(&self, mut step: impl FnMut(u64) -> Option<(u64, R)>) -> Result<R, Errno> {
        let result = match self.try_step(&mut step) {
            Some(result) => result,
            None if self.is_nonblocking() => return Err(Errno::EAGAIN),
            None => {
                let mut guard = self.sleep_lock.lock();
                // Announce ourselves before re-checking: a changer that misses
                // the announcement made its change before our re-check sees it.
                self.sleepers.fetch_add(1, Ordering::SeqCst);
                let result = loop {
                    if let Some(result) = self.try_step(&mut step) {
                        break result;
                    }
                    self.changed.wait(&mut guard);
                };
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                result
            }
        };
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            // Taking the lock orders this notify after a sleeper's re-check.
            drop(self.sleep_lock.lock());
            self.changed.notify_all();
        }
        Ok(result)
    }

    fn try_step<R>(&self, step: &mut impl FnMut(u64) -> Option<(u64, R)>) -> Option<R> {
        let mut count = self.count.load();
        loop {
            let (new, result) = step(count)?;
            match self
                .count
                .0
                .compare_exchange_weak(count, new, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Some(result),
                Err(actual) => count = actual,
            }
        }
    }

    /// `read(2)` on the descriptor: 8 bytes in native byte order. `EINVAL`
    /// if `buf` is shorter than 8 bytes.
    pub fn read_bytes(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        let Some(out) = buf.get_mut(..8) else {
            return Err(Errno::EINVAL);
        };
        out.copy_from_slice(&self.read()?.to_ne_bytes());
        Ok(8)
    }

    /// `write(2)` on the descriptor: 8 bytes in native byte order. `EINVAL`
    /// if `buf` is shorter than 8 bytes.
    pub fn write_bytes(&self, buf: &[u8]) -> Result<usize, Errno> {
        let Some(bytes) = buf.get(..8) else {
            return Err(Errno::EINVAL);
        };
        let value = u64::from_ne_bytes(bytes.try_into().expect("slice of 8 bytes"));
        self.write(value)?;
        Ok(8)
    }
}

impl Pollable for EventFd {
    fn poll(&self) -> Events {
        self.count.poll()
    }

    fn wait_queue(&self) -> &WaitQueue {
        &self.wq
    }

    fn readiness_cell(&self) -> Option<Arc<dyn ReadinessCell>> {
        Some(self.count.clone())
    }
}

impl std::fmt::Debug for EventFd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFd")
            .field("count", &self.value())
            .field("semaphore", &self.semaphore)
            .field("nonblocking", &self.is_nonblocking())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn nonblocking(init: u64) -> Arc<EventFd> {
        EventFd::with_flags(init, EfdFlags::NONBLOCK).unwrap()
    }

    #[test]
    fn empty_read_would_block_and_poll_is_out_only() {
        let efd = nonblocking(0);
        assert_eq!(efd.read(), Err(Errno::EAGAIN));
        assert_eq!(efd.poll(), Events::OUT);
    }

    #[test]
    fn counter_mode_reads_everything_semaphore_reads_one() {
        let efd = nonblocking(0);
        efd.write(3).unwrap();
        efd.write(4).unwrap();
        assert_eq!(efd.read(), Ok(7));
        assert_eq!(efd.read(), Err(Errno::EAGAIN));
        let sem = EventFd::with_flags(2, EfdFlags::SEMAPHORE | EfdFlags::NONBLOCK).unwrap();
        assert_eq!(sem.read(), Ok(1));
        assert_eq!(sem.read(), Ok(1));
        assert_eq!(sem.read(), Err(Errno::EAGAIN));
    }

    #[test]
    fn full_counter_is_not_writable_and_overflow_would_block() {
        let efd = nonblocking(MAX_COUNT - 1);
        assert_eq!(efd.poll(), Events::IN | Events::OUT);
        efd.write(1).unwrap();
        assert_eq!(efd.poll(), Events::IN);
        assert_eq!(efd.write(1), Err(Errno::EAGAIN));
        assert_eq!(efd.write(0), Ok(()));
        assert_eq!(efd.write(u64::MAX), Err(Errno::EINVAL));
    }

    #[test]
    fn byte_interface_needs_eight_bytes() {
        let efd = nonblocking(0);
        assert_eq!(efd.write_bytes(&[1, 0, 0]), Err(Errno::EINVAL));
        assert_eq!(efd.write_bytes(&5u64.to_ne_bytes()), Ok(8));
        let mut short = [0u8; 7];
        assert_eq!(efd.read_bytes(&mut short), Err(Errno::EINVAL));
        let mut buf = [0u8; 8];
        assert_eq!(efd.read_bytes(&mut buf), Ok(8));
        assert_eq!(u64::from_ne_bytes(buf), 5);
    }

    #[test]
    fn unknown_flags_are_einval() {
        assert_eq!(
            EventFd::with_flags(0, EfdFlags::from_bits_retain(0x4)).err(),
            Some(Errno::EINVAL)
        );
    }

    #[test]
    fn blocking_read_waits_for_a_writer() {
        let efd = EventFd::new(0);
        let writer = efd.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            writer.write(9).unwrap();
        });
        assert_eq!(efd.read(), Ok(9));
        t.join().unwrap();
    }
}
