//! # eventpoll: Linux-exact epoll in user space
//!
//! This crate is the epoll of usertcp: what NtyTcp's `nty_epoll_rb.c` set
//! out to be, with the semantics of Linux's `fs/eventpoll.c`. It knows
//! nothing of TCP: anything that implements [`Pollable`] can be watched.
//! `../shared/EPOLL_SPEC.md` is the behaviour contract; section numbers
//! (§1.2, A5, ...) below refer to it.
//!
//! ## A tour, from the event to `epoll_wait`
//!
//! 1. An event source ([`EventFd`], a [`pipe`] end, a TCP socket in
//!    `netstack`, or another [`EventPoll`]) owns a [`WaitQueue`]. When its
//!    state changes it calls [`WaitQueue::wake`] with a key: the bits that
//!    may have become true.
//! 2. Each registration ("epitem") has an entry on that queue. Its callback
//!    (Linux's `ep_poll_callback`) ignores the key if the item is disarmed or
//!    not interested; otherwise it appends the item to its epoll's **ready
//!    list** (at most once) and wakes one blocked waiter.
//! 3. [`EventPoll::wait`] takes the ready list, **re-polls** every item for
//!    its readiness *now*, reports `readiness & interest` with the item's
//!    current data, and then: level-triggered items go back on the tail of
//!    the list, `ONESHOT` items are disarmed, edge-triggered items stay off.
//!
//! Each step emits a `tracing` event at trace level (callback: filtered,
//! enqueue or dedupe; waiter woken; harvest; chain wake), so a subscriber at
//! `RUST_LOG=trace` shows how an event travels. The events are compiled in by
//! the `trace` feature (on by default); with no subscriber each costs a
//! cached level check, and without the feature nothing at all.
//!
//! The syscall-shaped API ([`FdTable::epoll_create1`],
//! [`FdTable::epoll_ctl`], [`FdTable::epoll_wait`]) adds file descriptors
//! and Linux's exact errno precedence on top of [`EventPoll::ctl`].
//!
//! ## Level- and edge-triggered rules
//!
//! - **LT** (default): after delivery the item is re-queued at the tail; the
//!   next harvest re-polls it and drops it once it is no longer ready (A5,
//!   A6). With more ready items than room, successive waits go round-robin
//!   (§1.6). A harvest that leaves items queued wakes the next waiter, so
//!   every blocked thread sees a persistent LT event (§1.7).
//! - **ET**: reported when a callback queues the item, i.e. on every wake-up
//!   of the source whose key matches, even if readiness did not change
//!   (A9). Not re-queued after delivery.
//! - **ONESHOT**: after one delivered event the mask keeps only its mode
//!   bits; nothing, not even `ERR | HUP`, is reported until `Mod` re-arms it.
//! - **`Mod`** replaces mask and data and re-polls: a ready item is queued
//!   at once (this re-arms an ET edge). It never dequeues; a stale queued
//!   item is filtered by the re-poll at harvest.
//! - **`Del`** unlinks the item from the ready list: nothing is reported for
//!   it afterwards.
//! - **EXCLUSIVE**: the registration's callback sits among the source's
//!   exclusive entries; one wake-up is consumed by the first exclusive epoll
//!   that has a blocked waiter (§1.3 item 23).
//! - `ERR | HUP` are always watched; `WAKEUP` is accepted and ignored.
//!
//! ## Locks, and their order
//!
//! Acquire in this order, never the reverse:
//!
//! 1. the global nesting lock (only `Add` of an epoll into an epoll, for the
//!    loop and depth checks; Linux's `epnested_mutex`);
//! 2. an epoll's **interest lock** (Linux's `ep->mtx`): `ctl`, the whole
//!    harvest, and polling the epoll itself. Outer before inner when epolls
//!    nest;
//! 3. a source's own state lock (taken by its `poll` during a harvest);
//! 4. a source's **wait-queue lock** (held while callbacks run);
//! 5. an epoll's **ready-list lock** (Linux's `ep->lock`): a leaf, held for
//!    a few pointer operations, and for the reads of [`ReadinessCell`]s in
//!    a harvest of an epoll whose every registration has one.
//!
//! Consequences: a source's `poll` is never called with a ready-list lock
//! held (the harvest splices the list out, releases the lock, then polls),
//! so a source that wakes its queue while a harvest re-polls it cannot
//! deadlock (the ABBA case of EPOLL_SPEC §4.1). A readiness cell's `poll`
//! is the exception, so its contract forbids it any lock a wake-up of its
//! object holds (netstack's sockets and eventfds read an atomic); an epoll
//! whose registrations all have one harvests in one hold of the ready-list
//! lock, where no callback can land in between. Blocked waiters are woken
//! after the ready-list lock is released. Callbacks landing during a
//! (splice-and-scan) harvest go to the overflow list and are merged back
//! when the harvest ends, so none is lost (A8).
//!
//! Lifetimes: an epitem holds its object weakly. When the object's last
//! handle drops, its wait queue detaches every entry; the items are marked
//! and removed by the next `ctl` or harvest of their epoll. An object may
//! also hand its epitems a [`ReadinessCell`] (eventfds and netstack's
//! sockets do): the harvest then reads the readiness there, without
//! upgrading the weak reference (two locked instructions per reported event
//! saved). An epoll's own drop unregisters all its items. Callbacks hold only the ready-list half
//! of an epoll, so no callback can ever run an epoll's destructor.
//!
//! ## What differs from Linux, and why
//!
//! - **No signals, no `EINTR`, no `epoll_pwait`**: user-space waits are not
//!   interrupted by signals. A blocked wait ends with events, its timeout,
//!   or [`EventPoll::interrupt`] (`EBADF`, for an owner shutting down).
//! - **No `fork`, no `EPERM` file types but [`BasicFile::Plain`]**: the only
//!   unpollable description is the plain file that tests use.
//! - **`EFAULT`** means a missing event record in `epoll_ctl`, or an event
//!   buffer shorter than `maxevents` in `epoll_wait`; there are no bad user
//!   pointers in safe Rust.
//! - **`EPOLLWAKEUP`** is always cleared, as Linux does for a process without
//!   `CAP_BLOCK_SUSPEND`.
//! - **The reverse-path limit** (`EINVAL` with hundreds of epolls watching
//!   one file, §1.9 item 50) is not enforced.
//! - **Watch accounting** is per [`WatchBudget`] (one per [`FdTable`], or
//!   one per standalone [`EventPoll`]) rather than per Unix user.
//! - **Ready-list lock**: Linux uses a spinlock; this crate uses
//!   `parking_lot`'s mutex, which spins before it parks and so never burns a
//!   core on a descheduled holder. The condvar of blocked waiters needs a
//!   real mutex anyway.
//!
//! ## The rbtree
//!
//! The interest set is `intrusive-collections`' `RBTree`, keyed by (object
//! identity, fd): no allocation beyond the epitem itself, O(log n) lookup,
//! and the ready list threads through the same epitems with an intrusive
//! link, so unlinking on `Del` is O(1).
#![deny(unsafe_code)]
#![warn(missing_docs)]

/// A `tracing` event at trace level, compiled in only with the crate's
/// `trace` feature (on by default). Without the feature the event is dead
/// code (`cfg!` is a constant `false`): its arguments still type-check, so
/// both builds see the same code, but nothing of it is emitted, not even the
/// cached level check a disabled event costs. Benchmarks build without it
/// (loopbench does), applications that want `RUST_LOG=trace` keep it.
macro_rules! trace {
    ($($arg:tt)*) => {
        if cfg!(feature = "trace") {
            ::tracing::trace!($($arg)*);
        }
    };
}

#[allow(unsafe_code)] // one unsafe block: unlinking from the intrusive ready list
mod epoll;
mod eventfd;
mod events;
mod fdtable;
mod pipe;
mod sync;
mod waitqueue;

pub use epoll::{Counters, DEFAULT_MAX_WATCHES, EventPoll, MAX_NESTS, WatchBudget};
pub use eventfd::{EfdFlags, EventFd};
pub use events::{CtlOp, EpollEvent, Errno, Events};
pub use fdtable::{
    BasicFile, DEFAULT_MAX_FDS, EP_MAX_EVENTS, EPOLL_CLOEXEC, FdTable, FileDescription, O_CLOEXEC,
    O_NONBLOCK,
};
pub use pipe::{
    DEFAULT_CAPACITY as PIPE_DEFAULT_CAPACITY, PIPE_BUF, PIPE_PAGE, PipeReader, PipeWriter, pipe,
};
pub use waitqueue::{Pollable, ReadinessCell, WaitQueue, Waiter};
