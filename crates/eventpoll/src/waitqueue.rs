//! Wait queues and the [`Pollable`] trait: how an event source tells the
//! epolls watching it that its readiness changed.
//!
//! This is Linux's `wait_queue_head_t` as `fs/eventpoll.c` uses it. Every
//! pollable object owns one [`WaitQueue`]. An epoll registration (an epitem)
//! puts an entry on the queue of the object it watches; when the object's
//! state changes it calls [`WaitQueue::wake`] with a key, the mask of what
//! happened (`IN` on new data, `OUT` on freed space, ...), and every entry's
//! callback runs: for an epitem that is `ep_poll_callback`, which queues the
//! item on its epoll's ready list.
//!
//! Rules, as in Linux's `__wake_up_common`:
//! - Ordinary entries are all called, newest first (Linux's
//!   `add_wait_queue` inserts at the head). This order is observable: two
//!   registrations of one eventfd under a `dup` are queued, and so
//!   reported, newest first.
//! - Exclusive entries (`EPOLLEXCLUSIVE` registrations, and blocking waiters
//!   that want one-at-a-time wake-ups) come after them and are called oldest
//!   first (`add_wait_queue_exclusive` appends) until one reports that it
//!   consumed the wake-up.
//!   [`WaitQueue::wake_all`] calls them all.
//! - Waking allocates nothing and takes the queue's own lock, then whatever
//!   leaf lock the callback takes (an epoll's ready-list lock).
//! - When the object goes away its queue is *detached*: every entry is told
//!   (Linux's `POLLFREE` / `eventpoll_release_file`), so epitems watching a
//!   dropped object are removed as closing the last fd removes them in Linux.
//!   Dropping a `WaitQueue` detaches it; objects whose queue lives on in
//!   shared state (a pipe end) call [`WaitQueue::detach_all`] themselves.
//!
//! Lock order: the queue lock is taken before an epoll's ready-list lock and
//! after an epoll's interest-set lock (registration happens under it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::epoll::{EpItem, EventPoll, ReadyShared};
use crate::events::Events;
use crate::sync::{AtomicUsize, Mutex};

/// An object that epoll can watch: it reports its readiness now and owns the
/// wait queue it wakes when that readiness may have changed.
///
/// `poll` must not block and must not call back into an epoll that watches
/// the object while holding a lock the object's waker also takes (see the
/// crate docs, "Lock order"). Sources wake their queue *after* updating the
/// state `poll` reads.
pub trait Pollable: Send + Sync + 'static {
    /// The readiness of the object now (Linux's `f_op->poll`), as `IN`,
    /// `OUT`, `ERR`, `HUP`, ... bits.
    fn poll(&self) -> Events;

    /// The queue this object wakes on every change of readiness.
    fn wait_queue(&self) -> &WaitQueue;

    /// `Some` if the object is itself an epoll, for loop and depth checks.
    fn as_event_poll(&self) -> Option<&EventPoll> {
        None
    }

    /// The object's readiness kept apart from the object, if it has such a
    /// part: epoll keeps it, strongly, in each registration, and a harvest
    /// reads it instead of upgrading the registration's weak reference to
    /// the object (an upgrade and a drop are two locked instructions per
    /// reported event). Its [`poll`](ReadinessCell::poll) must answer as
    /// the object's own `poll`. `None` (the default): epoll polls the
    /// object.
    ///
    /// A registration lives until its epoll removes it, so the cell should
    /// not own anything large; and if it owns the object's wait queue (a
    /// registration on that queue holds the cell: a cycle), the object must
    /// [`detach`](WaitQueue::detach_all) the queue when it goes away.
    fn readiness_cell(&self) -> Option<Arc<dyn ReadinessCell>> {
        None
    }
}

/// An object's readiness, readable without the object (see
/// [`Pollable::readiness_cell`]).
pub trait ReadinessCell: Send + Sync + 'static {
    /// The object's readiness now, as its [`Pollable::poll`] reports it.
    ///
    /// Called with an epoll's ready-list lock held (an epoll whose every
    /// registration has a cell harvests in one hold of that lock), so it
    /// must not block, and must not take a lock that is held while the
    /// object's wait queue is woken: update the state, release its lock,
    /// then wake (an atomic load, as netstack's sockets use, takes none).
    fn poll(&self) -> Events;
}

/// A watcher on a [`WaitQueue`] other than an epitem: for example a thread
/// blocked in `recv` that sleeps on a condvar until its socket changes.
pub trait Waiter: Send + Sync {
    /// Called with the wake key. Returns true if this waiter consumed the
    /// wake-up, which matters only for exclusive waiters: the queue stops
    /// calling exclusive waiters after the first one that returns true.
    fn wake(&self, key: Events) -> bool;

    /// The object owning the queue is gone; no further wake-ups will come.
    fn detach(&self) {}
}

/// One entry on a queue. Epitems are the hot path and get their own variant
/// so that a wake-up needs no dynamic dispatch and no extra allocation.
#[derive(Clone)]
pub(crate) enum Entry {
    Item(Arc<EpItem>),
    Waiter(Arc<dyn Waiter>),
}

impl Entry {
    fn call(&self, key: Events, deferred: &mut DeferredWakes) -> bool {
        match self {
            Entry::Item(item) => item.callback(key, deferred),
            Entry::Waiter(waiter) => waiter.wake(key),
        }
    }

    fn detach(&self) {
        match self {
            Entry::Item(item) => item.release(),
            Entry::Waiter(waiter) => waiter.detach(),
        }
    }

    fn is_item(&self, item: &EpItem) -> bool {
        matches!(self, Entry::Item(a) if std::ptr::eq(Arc::as_ptr(a), item))
    }

    fn is_waiter(&self, waiter: &Arc<dyn Waiter>) -> bool {
        matches!(self, Entry::Waiter(w) if std::ptr::addr_eq(Arc::as_ptr(w), Arc::as_ptr(waiter)))
    }
}

/// Blocked epoll waiters to notify once the queue's lock is released.
///
/// Notifying a condvar while the queue lock is held lets the woken thread
/// run (on the same core, at once) into that still-held lock, the moment it
/// touches the source; so callbacks only record whom to wake, and the wake
/// happens after the unlock. Room for a few epolls inline, no allocation;
/// past that, the rest are notified on the spot.
pub(crate) struct DeferredWakes {
    pending: [Option<Arc<ReadyShared>>; 4],
    len: usize,
}

impl DeferredWakes {
    fn new() -> DeferredWakes {
        DeferredWakes {
            pending: Default::default(),
            len: 0,
        }
    }

    /// Notifies one waiter of `ep`, now or once the queue lock is released.
    pub(crate) fn push(&mut self, ep: &Arc<ReadyShared>) {
        match self.pending.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(ep.clone());
                self.len += 1;
            }
            None => ep.notify_waiter(),
        }
    }

    fn run(self) {
        for ep in self.pending.into_iter().flatten() {
            ep.notify_waiter();
        }
    }
}

#[derive(Default)]
struct Entries {
    shared: Vec<Entry>,
    exclusive: Vec<Entry>,
    detached: bool,
}

/// The wait queue of one pollable object (Linux's `wait_queue_head_t`).
///
/// Its [`id`](WaitQueue::id) is the identity of the object for epoll's
/// interest set: unique for the life of the process, never reused, so a new
/// object can never be mistaken for a dropped one that had the same address.
pub struct WaitQueue {
    id: u64,
    /// Number of entries, maintained under the lock, read without it so that
    /// waking an unwatched object costs one load. See [`WaitQueue::wake`].
    len: AtomicUsize,
    entries: Mutex<Entries>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl WaitQueue {
    /// A new, empty queue with a fresh identity.
    pub fn new() -> WaitQueue {
        WaitQueue {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            len: AtomicUsize::new(0),
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The identity of the object owning this queue.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The number of watchers registered now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// True if nobody watches the object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers a waiter. An exclusive one is woken one-at-a-time (see the
    /// module docs). Returns false, registering nothing, if the queue has
    /// been detached because its object is gone.
    pub fn add_waiter(&self, waiter: Arc<dyn Waiter>, exclusive: bool) -> bool {
        self.add(Entry::Waiter(waiter), exclusive)
    }

    /// Removes a waiter registered with [`WaitQueue::add_waiter`]; returns
    /// true if it was there.
    pub fn remove_waiter(&self, waiter: &Arc<dyn Waiter>) -> bool {
        self.remove_where(|entry| entry.is_waiter(waiter))
    }

    pub(crate) fn add(&self, entry: Entry, exclusive: bool) -> bool {
        let mut entries = self.entries.lock();
        if entries.detached {
            return false;
        }
        let list = if exclusive {
            &mut entries.exclusive
        } else {
            &mut entries.shared
        };
        // Most objects have one watcher: start with room for exactly one
        // instead of Vec's default of four.
        if list.capacity() == 0 {
            list.reserve_exact(1);
        }
        list.push(entry);
        // Written only under the lock: a plain store, no read-modify-write.
        self.len
            .store(self.len.load(Ordering::Relaxed) + 1, Ordering::Release);
        true
    }

    /// Removes the entry of `item`; returns true if it was there.
    pub(crate) fn remove_item(&self, item: &EpItem) -> bool {
        self.remove_where(|entry| entry.is_item(item))
    }

    fn remove_where(&self, is_it: impl Fn(&Entry) -> bool) -> bool {
        let mut entries = self.entries.lock();
        let Entries {
            shared, exclusive, ..
        } = &mut *entries;
        for list in [shared, exclusive] {
            if let Some(pos) = list.iter().position(&is_it) {
                // Keep registration order: wake-up order depends on it.
                list.remove(pos);
                self.len
                    .store(self.len.load(Ordering::Relaxed) - 1, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Wakes the queue with `key` (Linux's `wake_up_poll(wq, key)`): every
    /// ordinary entry is called, then exclusive entries until one consumes
    /// the wake-up. An empty key means "something changed, unknown what" and
    /// matches every interest.
    ///
    /// An object with no watchers pays one atomic load. That check cannot
    /// miss a watcher that matters: a registration increments the count
    /// before it polls the object, and the poll and the state change are
    /// ordered by the object's own lock, so either the poll sees the new
    /// state or this load sees the registration.
    pub fn wake(&self, key: Events) {
        self.wake_n(key, 1);
    }

    /// Wakes every entry, exclusive ones included (Linux's `wake_up_all`).
    pub fn wake_all(&self, key: Events) {
        self.wake_n(key, usize::MAX);
    }

    fn wake_n(&self, key: Events, mut nr_exclusive: usize) {
        if self.is_empty() {
            return;
        }
        let mut deferred = DeferredWakes::new();
        let entries = self.entries.lock();
        for entry in entries.shared.iter().rev() {
            entry.call(key, &mut deferred);
        }
        for entry in &entries.exclusive {
            if nr_exclusive == 0 {
                break;
            }
            if entry.call(key, &mut deferred) {
                nr_exclusive -= 1;
            }
        }
        drop(entries);
        deferred.run();
    }

    /// Detaches every watcher: the owning object is going away. Epitems
    /// watching it are removed from their epolls; later registrations fail.
    pub fn detach_all(&self) {
        let mut entries = self.entries.lock();
        entries.detached = true;
        let shared = std::mem::take(&mut entries.shared);
        let exclusive = std::mem::take(&mut entries.exclusive);
        self.len.store(0, Ordering::Release);
        for entry in shared.iter().chain(exclusive.iter()) {
            entry.detach();
        }
    }
}

impl Default for WaitQueue {
    fn default() -> Self {
        WaitQueue::new()
    }
}

impl Drop for WaitQueue {
    fn drop(&mut self) {
        self.detach_all();
    }
}

impl std::fmt::Debug for WaitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitQueue")
            .field("id", &self.id)
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counting {
        calls: AtomicUsize,
        consume: bool,
        detached: AtomicUsize,
    }

    impl Counting {
        fn new(consume: bool) -> Arc<Counting> {
            Arc::new(Counting {
                calls: AtomicUsize::new(0),
                consume,
                detached: AtomicUsize::new(0),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Waiter for Counting {
        fn wake(&self, _key: Events) -> bool {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.consume
        }
        fn detach(&self) {
            self.detached.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn wake_calls_all_shared_and_one_consuming_exclusive() {
        let wq = WaitQueue::new();
        let a = Counting::new(false);
        let b = Counting::new(false);
        let x1 = Counting::new(true);
        let x2 = Counting::new(true);
        wq.add_waiter(a.clone(), false);
        wq.add_waiter(x1.clone(), true);
        wq.add_waiter(x2.clone(), true);
        wq.add_waiter(b.clone(), false);
        wq.wake(Events::IN);
        assert_eq!((a.calls(), b.calls(), x1.calls(), x2.calls()), (1, 1, 1, 0));
        wq.wake_all(Events::IN);
        assert_eq!((a.calls(), b.calls(), x1.calls(), x2.calls()), (2, 2, 2, 1));
    }

    #[test]
    fn exclusive_that_declines_passes_the_wake_on() {
        let wq = WaitQueue::new();
        let declines = Counting::new(false);
        let consumes = Counting::new(true);
        wq.add_waiter(declines.clone(), true);
        wq.add_waiter(consumes.clone(), true);
        wq.wake(Events::empty());
        assert_eq!((declines.calls(), consumes.calls()), (1, 1));
    }

    #[test]
    fn removed_waiter_is_not_called_and_detach_tells_the_rest() {
        let wq = WaitQueue::new();
        let a = Counting::new(false);
        let b = Counting::new(false);
        let a_dyn: Arc<dyn Waiter> = a.clone();
        wq.add_waiter(a_dyn.clone(), false);
        wq.add_waiter(b.clone(), false);
        assert_eq!(wq.len(), 2);
        assert!(wq.remove_waiter(&a_dyn));
        assert!(!wq.remove_waiter(&a_dyn));
        wq.wake(Events::OUT);
        assert_eq!((a.calls(), b.calls()), (0, 1));
        drop(wq);
        assert_eq!(b.detached.load(Ordering::SeqCst), 1);
        assert_eq!(a.detached.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn detached_queue_refuses_new_waiters() {
        let wq = WaitQueue::new();
        wq.detach_all();
        assert!(!wq.add_waiter(Counting::new(false), false));
        assert!(wq.is_empty());
    }

    #[test]
    fn ids_are_unique() {
        let a = WaitQueue::new();
        let b = WaitQueue::new();
        assert_ne!(a.id(), b.id());
    }
}
