//! `EventPoll`: Linux's `struct eventpoll`, its epitems, the callback that
//! queues them and the harvest that reports them.
//!
//! Structure (names from `fs/eventpoll.c`):
//!
//! - `interest` (`ep->mtx`): the epitems, in a red-black tree keyed by
//!   (object identity, fd number). Held by `ctl`, by the whole harvest and
//!   by `poll` of the epoll itself, so a harvest never sees an item vanish
//!   and `ctl` is serialised with it.
//! - `Ready` under `ReadyShared::ready` (`ep->lock`): the ready list
//!   (`rdllist`, an intrusive FIFO, each item at most once), the overflow
//!   list (`ovflist`) that catches callbacks while a harvest has the ready
//!   list spliced out, the blocked waiters' bookkeeping and the counters.
//!   Linux's `ep->lock` is a spinlock; here it is a `parking_lot::Mutex`,
//!   which spins briefly before parking and so never burns a core on a
//!   preempted holder. Its critical sections are a few pointer updates, and
//!   blocked waiters sleep on a condvar tied to it (Linux's `ep->wq`).
//!
//! Items hold the ready-list half (`ReadyShared`) by `Arc`, never the
//! `EventPoll` itself: a callback therefore never owns the last reference to
//! an epoll and can never run an epoll's destructor inside a source's wake-up.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use intrusive_collections::rbtree::Entry as RBTreeEntry;
use intrusive_collections::{
    KeyAdapter, LinkedList, RBTree, SinglyLinkedList, intrusive_adapter, linked_list, rbtree,
    singly_linked_list,
};

use crate::events::{CtlOp, EpollEvent, Errno, Events};
use crate::sync::{AtomicBool as HintFlag, Condvar, Mutex, wait_until};
use crate::waitqueue::{DeferredWakes, Entry, Pollable, ReadinessCell, WaitQueue};

/// Linux's `EP_MAX_NESTS`: at most this many epoll-to-epoll links on any
/// path, i.e. a chain of five epoll instances.
pub const MAX_NESTS: usize = 4;

/// The default number of registrations a [`WatchBudget`] allows: the order
/// of Linux's `max_user_watches` on a machine with 16–24 GiB of memory
/// (4 % of memory divided by roughly 200 bytes per watch).
pub const DEFAULT_MAX_WATCHES: usize = 1 << 22;

/// A limit on registrations shared by the epolls of one "user" (Linux's
/// per-user `max_user_watches` counter). `Add` past the limit fails with
/// `ENOSPC`.
#[derive(Debug)]
pub struct WatchBudget {
    used: AtomicUsize,
    limit: usize,
}

impl WatchBudget {
    /// A budget of `limit` registrations.
    pub fn new(limit: usize) -> Arc<WatchBudget> {
        Arc::new(WatchBudget {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Registrations counted now, over every epoll sharing the budget.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    fn acquire(&self) -> Result<(), Errno> {
        // One read-modify-write in the common case; an Add that overshoots
        // gives its count back.
        if self.used.fetch_add(1, Ordering::Relaxed) < self.limit {
            Ok(())
        } else {
            self.used.fetch_sub(1, Ordering::Relaxed);
            Err(Errno::ENOSPC)
        }
    }

    fn release(&self) {
        self.used.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Always-on counters of one epoll, for tests and the benchmark harness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Callbacks received from watched objects (`ep_poll_callback` calls).
    pub callbacks: u64,
    /// Items put on the ready list or the overflow list, by a callback or by
    /// `Add`/`Mod` finding the object ready.
    pub enqueues: u64,
    /// Callbacks for an item already queued (merged, not queued twice).
    pub dedupe_hits: u64,
    /// Items taken off the ready list that re-polled as not ready and were
    /// dropped without being reported.
    pub stale_drops: u64,
    /// Blocked waiters woken (one per queueing, plus chain wake-ups).
    pub wakeups: u64,
}

/// The key of an epitem: the identity of the watched object (its wait
/// queue's id) and the fd number it was registered under (Linux's
/// `struct epoll_filefd`; EPOLL_SPEC A1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ItemKey {
    file: u64,
    fd: i32,
}

/// One registration (Linux's `struct epitem`).
///
/// `repr(C)` keeps the fields a tree lookup reads (the tree link and the
/// key) together at the front, in one cache line with the `Arc` header.
#[repr(C)]
pub(crate) struct EpItem {
    /// In the interest tree (under `interest`).
    tree_link: rbtree::AtomicLink,
    key: ItemKey,
    /// The interest mask with its mode bits. Written under `interest`, read
    /// by callbacks under `ready`; a delivered ONESHOT keeps only the mode bits.
    events: AtomicU32,
    /// Set (under `ready`) once the item is removed by `Del`, by the epoll's
    /// drop or by its object going away. A gone item is never reported.
    gone: AtomicBool,
    /// The watched object is itself an epoll (a nesting link).
    nested: bool,
    data: AtomicU64,
    /// On the ready list or a harvest's private list (under `ready`).
    ready_link: linked_list::AtomicLink,
    /// On the overflow list (under `ready`); Linux's `epi->next`.
    ovf_link: singly_linked_list::AtomicLink,
    /// The watched object, weakly: dropping its last handle removes the item.
    source: Weak<dyn Pollable>,
    /// The object's readiness, if it keeps it apart
    /// ([`Pollable::readiness_cell`]): polled without upgrading `source`.
    cell: Option<Arc<dyn ReadinessCell>>,
    /// The epoll's ready-list half.
    ep: Arc<ReadyShared>,
}

intrusive_adapter!(TreeAdapter = Arc<EpItem>: EpItem { tree_link => rbtree::AtomicLink });
intrusive_adapter!(ReadyAdapter = Arc<EpItem>: EpItem { ready_link => linked_list::AtomicLink });
intrusive_adapter!(OvfAdapter = Arc<EpItem>: EpItem { ovf_link => singly_linked_list::AtomicLink });

impl<'a> KeyAdapter<'a> for TreeAdapter {
    type Key = ItemKey;
    fn get_key(&self, item: &'a EpItem) -> ItemKey {
        item.key
    }
}

impl EpItem {
    fn mask(&self) -> Events {
        Events::from_raw(self.events.load(Ordering::SeqCst))
    }

    /// Reports `revents` (non-empty) of this item, whose mask is `mask`,
    /// into `event`, and disarms a ONESHOT item. Returns true if the item
    /// goes back on the ready list (level-triggered, not ONESHOT).
    fn deliver(&self, mask: Events, revents: Events, event: &mut EpollEvent) -> bool {
        *event = EpollEvent::new(revents, self.data.load(Ordering::SeqCst));
        if mask.contains(Events::ONESHOT) {
            self.events
                .store((mask & Events::PRIVATE).bits(), Ordering::SeqCst);
            return false;
        }
        !mask.contains(Events::ET)
    }

    /// The watched object's readiness now; empty if the object is gone.
    fn poll_source(&self) -> Events {
        match &self.cell {
            Some(cell) => cell.poll(),
            None => self
                .source
                .upgrade()
                .map_or(Events::empty(), |source| source.poll()),
        }
    }

    /// `ep_poll_callback`: called by the watched object's wait queue.
    pub(crate) fn callback(self: &Arc<Self>, key: Events, deferred: &mut DeferredWakes) -> bool {
        self.ep.callback(self, key, deferred)
    }

    /// The watched object is gone (`POLLFREE`).
    pub(crate) fn release(self: &Arc<Self>) {
        self.ep.release(self);
    }
}

/// The ready-list state (under `ep->lock`).
struct Ready {
    rdllist: LinkedList<ReadyAdapter>,
    /// Callbacks that land while a harvest has the ready list spliced out.
    /// LIFO like Linux's; the harvest's end restores FIFO order.
    ovflist: SinglyLinkedList<OvfAdapter>,
    /// A harvest (or a poll of this epoll) is between start and done.
    scanning: bool,
    /// Threads blocked in `wait` and not yet chosen to wake: Linux's entries
    /// on `ep->wq`.
    sleepers: usize,
    /// Wake-ups handed to sleepers that have not yet run. Choosing a sleeper
    /// moves it from `sleepers` to here at once, as Linux's
    /// `ep_autoremove_wake_function` removes a woken waiter from the queue
    /// atomically: a second callback before the first woken thread runs
    /// then sees one sleeper fewer (and an EXCLUSIVE item passes the wake-up
    /// on to another epoll).
    wake_tokens: usize,
    /// Items whose object went away, to be removed from the tree by the next
    /// holder of `interest`.
    zombies: Vec<Arc<EpItem>>,
    /// Set by [`EventPoll::interrupt`]: waits that would sleep fail.
    interrupted: bool,
    counters: Counters,
}

impl Ready {
    /// Chooses one sleeper to wake, if any (Linux's `wake_up(&ep->wq)` of
    /// one exclusive waiter); the caller notifies the condvar after
    /// unlocking.
    fn take_sleeper(&mut self) -> bool {
        if self.sleepers == 0 {
            return false;
        }
        self.sleepers -= 1;
        self.wake_tokens += 1;
        self.counters.wakeups += 1;
        true
    }
}

/// The half of an epoll that callbacks touch: the ready list, its lock, the
/// waiters' condvar and the epoll's own wait queue.
pub(crate) struct ReadyShared {
    ready: Mutex<Ready>,
    /// Blocked `wait` callers (Linux's `ep->wq`, exclusive waiters).
    waiters_cv: Condvar,
    /// Lock-free hint, written under `ready`: the ready list is non-empty or
    /// a scan is in progress. A clear hint lets `wait` with timeout zero
    /// return without locking.
    maybe_ready: HintFlag,
    /// Lock-free hint, written under `ready`: `zombies` is non-empty.
    zombies_pending: HintFlag,
    /// This epoll's own wait queue (`ep->poll_wait`): outer epolls and
    /// pollers of the epoll itself.
    poll_wait: WaitQueue,
}

impl ReadyShared {
    fn update_hint(&self, ready: &Ready) {
        let hint = !ready.rdllist.is_empty() || ready.scanning;
        self.maybe_ready.store(hint, Ordering::Release);
    }

    /// Wakes the next blocked waiter chosen by a harvest that left items
    /// on the ready list (the LT chain wake of EPOLL_SPEC §1.7). Call after
    /// releasing the ready-list lock.
    fn chain_wake(&self) {
        trace!(
            epoll = self.poll_wait.id(),
            "items left after the harvest: chain wake"
        );
        self.waiters_cv.notify_one();
    }

    /// `ep_poll_callback` (EPOLL_SPEC §4.2). Returns Linux's `ewake`: false
    /// only for an exclusive item that did not consume the wake-up.
    fn callback(&self, item: &Arc<EpItem>, key: Events, deferred: &mut DeferredWakes) -> bool {
        let mut ready = self.ready.lock();
        ready.counters.callbacks += 1;
        let mask = item.mask();
        let exclusive = mask.contains(Events::EXCLUSIVE);
        // Disarmed (delivered ONESHOT), not interested, or removed: nothing.
        if item.gone.load(Ordering::Relaxed)
            || (mask & !Events::PRIVATE).is_empty()
            || (!key.is_empty() && (key & mask).is_empty())
        {
            drop(ready);
            trace!(
                epoll = self.poll_wait.id(),
                fd = item.key.fd,
                ?key,
                ?mask,
                "callback: filtered"
            );
            return !exclusive;
        }
        let outcome = if ready.scanning {
            if item.ovf_link.is_linked() {
                ready.counters.dedupe_hits += 1;
                "dedupe (overflow list)"
            } else {
                ready.ovflist.push_front(item.clone());
                ready.counters.enqueues += 1;
                "enqueue (overflow list, harvest running)"
            }
        } else if item.ready_link.is_linked() {
            ready.counters.dedupe_hits += 1;
            "dedupe"
        } else {
            ready.rdllist.push_back(item.clone());
            ready.counters.enqueues += 1;
            self.maybe_ready.store(true, Ordering::Release);
            "enqueue"
        };
        // Every callback wakes one waiter, even a merged one (Linux does too).
        let has_waiters = ready.take_sleeper();
        // An EXCLUSIVE item consumes the wake-up only if a waiter was there
        // and the key's IN/OUT bit is one it watches (a key of 0 counts).
        let ewake = if !exclusive {
            true
        } else if !has_waiters {
            false
        } else {
            let inout = key & (Events::IN | Events::OUT);
            if inout == Events::IN {
                mask.contains(Events::IN)
            } else if inout == Events::OUT {
                mask.contains(Events::OUT)
            } else {
                inout.is_empty()
            }
        };
        drop(ready);
        trace!(
            epoll = self.poll_wait.id(),
            fd = item.key.fd,
            ?key,
            wake = has_waiters,
            "callback: {outcome}"
        );
        if has_waiters {
            // Notified once the source's wait-queue lock is released.
            deferred.push(&item.ep);
        }
        // ep_poll_safewake: outer epolls and pollers, outside our lock.
        self.poll_wait.wake(Events::IN);
        ewake
    }

    /// Wakes one thread blocked in `wait`.
    pub(crate) fn notify_waiter(&self) {
        self.waiters_cv.notify_one();
    }

    /// The watched object of `item` is gone: mark the item so it is never
    /// reported and leave it for the next holder of `interest` to unlink.
    fn release(&self, item: &Arc<EpItem>) {
        let mut ready = self.ready.lock();
        if item.gone.swap(true, Ordering::Relaxed) {
            return;
        }
        ready.zombies.push(item.clone());
        self.zombies_pending.store(true, Ordering::Release);
    }

    /// Queues `item` if it is not queued, and wakes one waiter and the
    /// epoll's own watchers. Used by `Add` and `Mod` when the object is
    /// already ready (no harvest can be running: the caller holds `interest`).
    fn queue_ready(&self, item: &Arc<EpItem>) {
        let mut ready = self.ready.lock();
        if item.ready_link.is_linked() || item.gone.load(Ordering::Relaxed) {
            return;
        }
        ready.rdllist.push_back(item.clone());
        ready.counters.enqueues += 1;
        self.maybe_ready.store(true, Ordering::Release);
        let wake = ready.take_sleeper();
        drop(ready);
        trace!(
            epoll = self.poll_wait.id(),
            fd = item.key.fd,
            wake,
            "ctl found it ready: enqueue"
        );
        if wake {
            self.waiters_cv.notify_one();
        }
        self.poll_wait.wake(Events::IN);
    }
}

/// Unlinks `item` from the ready list if it is on it.
///
/// Call only with `interest` held and no scan running: the ready link is
/// then used by nothing but `ready.rdllist`.
fn unlink_ready(ready: &mut Ready, item: &Arc<EpItem>) {
    debug_assert!(!ready.scanning);
    if item.ready_link.is_linked() {
        // SAFETY: the item is linked, and with `interest` held outside a scan
        // the only list its `ready_link` can be in is this `rdllist` (a
        // harvest's private lists exist only during a scan, under `interest`).
        let mut cursor = unsafe { ready.rdllist.cursor_mut_from_ptr(Arc::as_ptr(item)) };
        cursor.remove();
    }
}

/// The interest set (under `ep->mtx`).
struct Interest {
    tree: RBTree<TreeAdapter>,
    count: usize,
    /// Registrations without a [`ReadinessCell`], whose harvest polls the
    /// object itself. While there are none, a harvest runs in one hold of
    /// the ready-list lock (see [`EventPoll::send_events`]).
    polling_objects: usize,
}

impl Interest {
    /// Counts an item leaving the tree.
    fn removed(&mut self, item: &EpItem) {
        self.count -= 1;
        if item.cell.is_none() {
            self.polling_objects -= 1;
        }
    }
}

/// Epoll-to-epoll links, for the loop and depth checks of `Add`. Links are
/// added only with `NEST_LOCK` held (Linux's `epnested_mutex`), which
/// serialises the checks; they are removed under the per-epoll `nest` lock
/// alone, which can only make a concurrent check more conservative.
#[derive(Default)]
struct NestLinks {
    /// Epolls this one watches, with the key of the item watching each.
    children: Vec<(ItemKey, Weak<EventPoll>)>,
    /// Epolls watching this one, with the key of their item.
    parents: Vec<(ItemKey, Weak<EventPoll>)>,
}

static NEST_LOCK: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// An epoll instance: Linux's `struct eventpoll`.
///
/// Create one with [`EventPoll::new`]; register objects with
/// [`ctl`](EventPoll::ctl) (or [`add`](EventPoll::add),
/// [`modify`](EventPoll::modify), [`delete`](EventPoll::delete)); collect
/// events with [`wait`](EventPoll::wait). An `EventPoll` is itself
/// [`Pollable`], so it can be watched by another epoll. See the crate docs
/// for the exact semantics.
pub struct EventPoll {
    interest: Mutex<Interest>,
    shared: Arc<ReadyShared>,
    budget: Arc<WatchBudget>,
    nest: parking_lot::Mutex<NestLinks>,
    this: Weak<EventPoll>,
}

impl EventPoll {
    /// A new, empty epoll with its own budget of [`DEFAULT_MAX_WATCHES`].
    pub fn new() -> Arc<EventPoll> {
        EventPoll::with_budget(WatchBudget::new(DEFAULT_MAX_WATCHES))
    }

    /// A new epoll whose registrations count against `budget`, which may be
    /// shared with other epolls (like Linux's per-user watch count).
    pub fn with_budget(budget: Arc<WatchBudget>) -> Arc<EventPoll> {
        Arc::new_cyclic(|this| EventPoll {
            interest: Mutex::new(Interest {
                tree: RBTree::new(TreeAdapter::new()),
                count: 0,
                polling_objects: 0,
            }),
            shared: Arc::new(ReadyShared {
                ready: Mutex::new(Ready {
                    rdllist: LinkedList::new(ReadyAdapter::new()),
                    ovflist: SinglyLinkedList::new(OvfAdapter::new()),
                    scanning: false,
                    sleepers: 0,
                    wake_tokens: 0,
                    zombies: Vec::new(),
                    interrupted: false,
                    counters: Counters::default(),
                }),
                waiters_cv: Condvar::new(),
                maybe_ready: HintFlag::new(false),
                zombies_pending: HintFlag::new(false),
                poll_wait: WaitQueue::new(),
            }),
            budget,
            nest: parking_lot::Mutex::new(NestLinks::default()),
            this: this.clone(),
        })
    }

    /// The budget this epoll's registrations count against.
    pub fn budget(&self) -> &Arc<WatchBudget> {
        &self.budget
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.ready.lock().counters
    }

    /// The number of registrations (items in the interest tree).
    pub fn len(&self) -> usize {
        let mut interest = self.interest.lock();
        self.reap(&mut interest);
        interest.count
    }

    /// True if nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers `target` under `fd` (Linux's `EPOLL_CTL_ADD`).
    pub fn add<T: Pollable>(
        &self,
        target: &Arc<T>,
        fd: i32,
        event: EpollEvent,
    ) -> Result<(), Errno> {
        self.ctl_on(
            CtlOp::Add,
            &**target,
            || Arc::downgrade(target) as Weak<dyn Pollable>,
            fd,
            Some(event),
        )
    }

    /// Replaces the mask and data of a registration (`EPOLL_CTL_MOD`).
    pub fn modify<T: Pollable>(
        &self,
        target: &Arc<T>,
        fd: i32,
        event: EpollEvent,
    ) -> Result<(), Errno> {
        self.ctl_on(
            CtlOp::Mod,
            &**target,
            || Arc::downgrade(target) as Weak<dyn Pollable>,
            fd,
            Some(event),
        )
    }

    /// Removes a registration (`EPOLL_CTL_DEL`).
    pub fn delete<T: Pollable>(&self, target: &Arc<T>, fd: i32) -> Result<(), Errno> {
        self.ctl_on(
            CtlOp::Del,
            &**target,
            || Arc::downgrade(target) as Weak<dyn Pollable>,
            fd,
            None,
        )
    }

    /// `epoll_ctl` on objects: the checks of EPOLL_SPEC §1.2 from row 0 that
    /// exist once the descriptors are resolved, in Linux's order:
    ///
    /// - `EFAULT`: `event` is `None` for `Add` or `Mod`;
    /// - `EINVAL`: `target` is this epoll;
    /// - `EINVAL`: `EXCLUSIVE` with `Mod`, with an epoll target, or beside a
    ///   bit outside [`Events::EXCLUSIVE_OK`];
    /// - `ELOOP`: `Add` of an epoll that would close a cycle or nest deeper
    ///   than [`MAX_NESTS`] links;
    /// - `EEXIST` / `ENOENT`: the (object, fd) key is / is not registered;
    /// - `EINVAL`: `Mod` of an item added with `EXCLUSIVE`;
    /// - `ENOSPC`: the [`WatchBudget`] is spent.
    ///
    /// `WAKEUP` is accepted and cleared, as Linux does for a caller without
    /// `CAP_BLOCK_SUSPEND`; `ERR | HUP` are always added to the mask.
    pub fn ctl(
        &self,
        op: CtlOp,
        target: &Arc<dyn Pollable>,
        fd: i32,
        event: Option<EpollEvent>,
    ) -> Result<(), Errno> {
        self.ctl_on(op, &**target, || Arc::downgrade(target), fd, event)
    }

    /// The body of `ctl`. `weak` makes the item's weak handle to the
    /// target; it is called only by a successful `Add`, so `Mod` and `Del`
    /// touch no reference count of the target.
    fn ctl_on(
        &self,
        op: CtlOp,
        target: &dyn Pollable,
        weak: impl FnOnce() -> Weak<dyn Pollable>,
        fd: i32,
        event: Option<EpollEvent>,
    ) -> Result<(), Errno> {
        let event = match (op, event) {
            (CtlOp::Del, _) => EpollEvent::default(),
            (_, None) => return Err(Errno::EFAULT),
            (_, Some(mut event)) => {
                event.events.remove(Events::WAKEUP);
                event
            }
        };
        let file = target.wait_queue().id();
        if file == self.shared.poll_wait.id() {
            return Err(Errno::EINVAL);
        }
        let target_ep = target.as_event_poll();
        if op != CtlOp::Del && event.events.contains(Events::EXCLUSIVE) {
            let bad_bits = !(event.events - Events::EXCLUSIVE_OK).is_empty();
            if op == CtlOp::Mod || target_ep.is_some() || bad_bits {
                return Err(Errno::EINVAL);
            }
        }
        // An Add that nests epolls holds the global nesting lock throughout,
        // so two concurrent Adds cannot build a cycle between them.
        let _nest_guard = match (op, target_ep) {
            (CtlOp::Add, Some(inner)) => {
                let guard = NEST_LOCK.lock();
                self.loop_check(inner)?;
                Some(guard)
            }
            _ => None,
        };
        let key = ItemKey { file, fd };
        let mut interest = self.interest.lock();
        self.reap(&mut interest);
        match op {
            CtlOp::Add => self.insert(&mut interest, target, weak, key, event),
            CtlOp::Mod => {
                let cursor = interest.tree.find(&key);
                let item = cursor.get().ok_or(Errno::ENOENT)?;
                if item.mask().contains(Events::EXCLUSIVE) {
                    return Err(Errno::EINVAL);
                }
                // ep_modify: new mask and data, then re-poll; never dequeues.
                let mask = event.events | Events::ERR | Events::HUP;
                // The harvest reads the data under `interest`, held here.
                item.data.store(event.data, Ordering::Relaxed);
                // SeqCst pairs with the callback's load of the mask (Linux's
                // smp_mb() in ep_modify): either the callback sees the new
                // mask or the poll below sees the new state.
                item.events.store(mask.bits(), Ordering::SeqCst);
                if !(target.poll() & mask).is_empty() {
                    let item = cursor.clone_pointer().expect("cursor is on the item");
                    self.shared.queue_ready(&item);
                }
                Ok(())
            }
            CtlOp::Del => {
                let item = interest.tree.find_mut(&key).remove().ok_or(Errno::ENOENT)?;
                interest.removed(&item);
                self.budget.release();
                self.detach_item(&item, Some(target));
                Ok(())
            }
        }
    }

    /// `ep_insert` (EPOLL_SPEC §4.5).
    fn insert(
        &self,
        interest: &mut Interest,
        target: &dyn Pollable,
        weak: impl FnOnce() -> Weak<dyn Pollable>,
        key: ItemKey,
        event: EpollEvent,
    ) -> Result<(), Errno> {
        let Interest {
            tree,
            count,
            polling_objects,
        } = interest;
        let RBTreeEntry::Vacant(slot) = tree.entry(&key) else {
            return Err(Errno::EEXIST);
        };
        self.budget.acquire()?;
        let mask = event.events | Events::ERR | Events::HUP;
        let nested = target.as_event_poll();
        let item = Arc::new(EpItem {
            tree_link: rbtree::AtomicLink::new(),
            ready_link: linked_list::AtomicLink::new(),
            ovf_link: singly_linked_list::AtomicLink::new(),
            key,
            events: AtomicU32::new(mask.bits()),
            data: AtomicU64::new(event.data),
            source: weak(),
            cell: target.readiness_cell(),
            ep: self.shared.clone(),
            gone: AtomicBool::new(false),
            nested: nested.is_some(),
        });
        let exclusive = mask.contains(Events::EXCLUSIVE);
        if !target
            .wait_queue()
            .add(Entry::Item(item.clone()), exclusive)
        {
            // The object is being destroyed under the caller's feet.
            self.budget.release();
            return Err(Errno::EBADF);
        }
        if item.cell.is_none() {
            *polling_objects += 1;
        }
        let cursor = slot.insert(item);
        *count += 1;
        if let Some(inner) = nested {
            // NEST_LOCK is held by ctl for an Add of an epoll.
            self.nest.lock().children.push((key, inner.this.clone()));
            inner.nest.lock().parents.push((key, self.this.clone()));
        }
        // From here callbacks can queue the item; poll once for the present.
        if !(target.poll() & mask).is_empty() {
            let item = cursor
                .as_cursor()
                .clone_pointer()
                .expect("cursor is on the new item");
            self.shared.queue_ready(&item);
        }
        Ok(())
    }

    /// The rest of `ep_remove` once the item is out of the tree: unregister
    /// it from its object, mark it gone, unlink it from the ready list, and
    /// drop its nesting link. `target` is the object if the caller has it.
    fn detach_item(&self, item: &Arc<EpItem>, target: Option<&dyn Pollable>) {
        let upgraded;
        let target = match target {
            Some(target) => Some(target),
            None => {
                upgraded = item.source.upgrade();
                upgraded.as_deref()
            }
        };
        if let Some(target) = target {
            target.wait_queue().remove_item(item);
        }
        {
            let mut ready = self.shared.ready.lock();
            item.gone.store(true, Ordering::Relaxed);
            unlink_ready(&mut ready, item);
            self.shared.update_hint(&ready);
        }
        if item.nested {
            // Links are only added under NEST_LOCK; removing one needs just
            // the leaf `nest` locks, so this path never takes NEST_LOCK while
            // holding `interest` (ctl takes them in the other order).
            self.nest
                .lock()
                .children
                .retain(|(key, _)| *key != item.key);
            if let Some(inner) = target.and_then(|t| t.as_event_poll()) {
                inner
                    .nest
                    .lock()
                    .parents
                    .retain(|(key, parent)| !(*key == item.key && parent.ptr_eq(&self.this)));
            }
        }
    }

    /// Removes the items whose objects went away. Cheap when there are none.
    fn reap(&self, interest: &mut Interest) {
        if !self.shared.zombies_pending.load(Ordering::Acquire) {
            return;
        }
        let zombies = {
            let mut ready = self.shared.ready.lock();
            self.shared.zombies_pending.store(false, Ordering::Release);
            std::mem::take(&mut ready.zombies)
        };
        for item in &zombies {
            let mut cursor = interest.tree.find_mut(&item.key);
            if cursor
                .get()
                .is_some_and(|found| std::ptr::eq(found, &**item))
            {
                cursor.remove();
                interest.removed(item);
                self.budget.release();
            }
            self.detach_item(item, None);
        }
    }

    /// The ELOOP checks of `Add` for an epoll target (Linux's
    /// `ep_loop_check`): the depth below `inner`, plus this link, plus the
    /// depth above `self`, must not exceed [`MAX_NESTS`], and `self` must not
    /// be reachable from `inner`.
    fn loop_check(&self, inner: &EventPoll) -> Result<(), Errno> {
        let below = inner.depth_below(self, 0);
        if below > MAX_NESTS || below + 1 + self.depth_above(0) > MAX_NESTS {
            return Err(Errno::ELOOP);
        }
        Ok(())
    }

    fn depth_below(&self, inserting_into: &EventPoll, depth: usize) -> usize {
        let children: Vec<Arc<EventPoll>> = self
            .nest
            .lock()
            .children
            .iter()
            .filter_map(|(_, child)| child.upgrade())
            .collect();
        let mut result = 0;
        for child in children {
            if std::ptr::eq(&*child, inserting_into) || depth > MAX_NESTS {
                return MAX_NESTS + 1;
            }
            result = result.max(child.depth_below(inserting_into, depth + 1) + 1);
            if result > MAX_NESTS {
                break;
            }
        }
        result
    }

    fn depth_above(&self, depth: usize) -> usize {
        if depth > MAX_NESTS {
            return depth;
        }
        let parents: Vec<Arc<EventPoll>> = self
            .nest
            .lock()
            .parents
            .iter()
            .filter_map(|(_, parent)| parent.upgrade())
            .collect();
        parents
            .iter()
            .map(|parent| parent.depth_above(depth + 1) + 1)
            .max()
            .unwrap_or(0)
    }

    /// `epoll_wait`: fills `events` with up to `events.len()` ready events.
    ///
    /// - `timeout` `None` blocks until at least one event is ready; it never
    ///   returns 0.
    /// - `Some(Duration::ZERO)` never blocks, but still harvests.
    /// - `Some(t)` waits until a monotonic deadline of now + `t`; a wake-up
    ///   that finds nothing ready goes back to sleep for the remainder, and a
    ///   wake-up that races the deadline is still harvested.
    ///
    /// `EINVAL` if `events` is empty (Linux's `maxevents <= 0`); `EBADF`
    /// once the epoll is [interrupted](EventPoll::interrupt) and nothing is
    /// ready.
    pub fn wait(
        &self,
        events: &mut [EpollEvent],
        timeout: Option<Duration>,
    ) -> Result<usize, Errno> {
        if events.is_empty() {
            return Err(Errno::EINVAL);
        }
        // A timeout too large to represent as a deadline waits forever.
        let deadline = timeout
            .filter(|t| !t.is_zero())
            .and_then(|t| Instant::now().checked_add(t));
        let mut timed_out = timeout.is_some_and(|t| t.is_zero());
        loop {
            if self.shared.maybe_ready.load(Ordering::Acquire) {
                let n = self.send_events(events);
                if n > 0 {
                    return Ok(n);
                }
            }
            if timed_out {
                return Ok(0);
            }
            let mut ready = self.shared.ready.lock();
            if ready.interrupted {
                return Err(Errno::EBADF);
            }
            if ready.rdllist.is_empty() && !ready.scanning {
                ready.sleepers += 1;
                loop {
                    match deadline {
                        None => self.shared.waiters_cv.wait(&mut ready),
                        Some(deadline) => {
                            if wait_until(&self.shared.waiters_cv, &mut ready, deadline) {
                                timed_out = true;
                            }
                        }
                    }
                    // Chosen to wake: harvest, even if the deadline passed
                    // meanwhile (a wake-up racing the timeout is not lost).
                    if ready.wake_tokens > 0 {
                        ready.wake_tokens -= 1;
                        trace!(epoll = self.shared.poll_wait.id(), "waiter woken");
                        break;
                    }
                    if ready.interrupted {
                        ready.sleepers -= 1;
                        return Err(Errno::EBADF);
                    }
                    if timed_out {
                        ready.sleepers -= 1;
                        break;
                    }
                    // A spurious wake-up: still a sleeper, sleep again.
                }
            }
        }
    }

    /// Ends every blocked [`wait`](EventPoll::wait) on this epoll, and every
    /// later one that would block, with `EBADF`, as if the epoll's
    /// descriptor had gone away under the waiters. Not in Linux (whose
    /// waits end only with events, a timeout or a signal): it is how an
    /// owner that shuts down (netstack's stack thread) releases threads
    /// blocked in `epoll_wait`. Permanent. Waits that find events ready
    /// still harvest them, and a zero timeout still returns 0.
    ///
    /// A waiter already chosen for a wake-up harvests first; every other
    /// sleeper is woken with `EBADF`.
    pub fn interrupt(&self) {
        let mut ready = self.shared.ready.lock();
        ready.interrupted = true;
        drop(ready);
        self.shared.waiters_cv.notify_all();
    }

    /// True once [`interrupt`](EventPoll::interrupt) was called.
    pub fn is_interrupted(&self) -> bool {
        self.shared.ready.lock().interrupted
    }

    /// `ep_send_events` (EPOLL_SPEC §4.3): the harvest.
    ///
    /// Linux splices the ready list out under `ep->lock`, polls each item
    /// without it, and takes it again to put the list back together (a
    /// source's poll may take locks that its wake-ups hold while they take
    /// `ep->lock`). That is [`send_events_scanning`]. When every
    /// registration has a [`ReadinessCell`], whose poll may run under the
    /// ready-list lock (its contract), the harvest instead runs in one hold
    /// of that lock ([`send_events_in_place`]): the same result, since no
    /// callback can land in between, for one lock and unlock fewer (two
    /// locked instructions; netstack's sockets all have cells).
    ///
    /// [`send_events_scanning`]: EventPoll::send_events_scanning
    /// [`send_events_in_place`]: EventPoll::send_events_in_place
    fn send_events(&self, events: &mut [EpollEvent]) -> usize {
        let mut interest = self.interest.lock();
        self.reap(&mut interest);
        let (n, stale) = if interest.polling_objects == 0 {
            self.send_events_in_place(events)
        } else {
            self.send_events_scanning(events)
        };
        trace!(
            epoll = self.shared.poll_wait.id(),
            events = n,
            stale,
            "harvest"
        );
        n
    }

    /// The harvest in one hold of the ready-list lock, for an epoll whose
    /// every registration has a [`ReadinessCell`]. Caller holds `interest`.
    /// Returns the events reported and the stale items dropped.
    ///
    /// Items leave the list from the front, as in the scanning harvest;
    /// what is not reached stays in front, and the delivered
    /// level-triggered items go to the back: `[undelivered] ++ [delivered
    /// LT]`, the scanning harvest's order with nothing queued during a scan.
    /// Items that go (stale, gone, delivered ET or ONESHOT) are dropped at
    /// once, under the lock. They must be: an item taken off the list but
    /// still linked into a private list would look queued to a callback
    /// landing after the unlock, which would then drop its event (a lost
    /// wake-up; loopbench's blocked ping-pong hung on it). Dropping them
    /// under the lock runs no destructor: every item on the ready list is
    /// also held by the interest tree (which `interest`, held here, keeps
    /// as it is) or, if its object went away, by the zombie list (changed
    /// only under this lock), so the reference taken off the list is never
    /// the last.
    fn send_events_in_place(&self, events: &mut [EpollEvent]) -> (usize, u64) {
        let mut delivered_lt = LinkedList::new(ReadyAdapter::new());
        let mut ready = self.shared.ready.lock();
        debug_assert!(!ready.scanning && ready.ovflist.is_empty());
        let mut stale = 0;
        let mut n = 0;
        while n < events.len() {
            let Some(item) = ready.rdllist.pop_front() else {
                break;
            };
            debug_assert!(
                Arc::strong_count(&item) > 1,
                "the list held the last reference"
            );
            let mask = item.mask();
            let revents = if item.gone.load(Ordering::Relaxed) {
                Events::empty()
            } else {
                let revents = item.poll_source() & mask;
                stale += u64::from(revents.is_empty());
                revents
            };
            if revents.is_empty() {
                continue;
            }
            if item.deliver(mask, revents, &mut events[n]) {
                delivered_lt.push_back(item);
            }
            n += 1;
        }
        ready.counters.stale_drops += stale;
        ready.rdllist.back_mut().splice_after(delivered_lt);
        let wake_next = !ready.rdllist.is_empty() && ready.take_sleeper();
        self.shared.update_hint(&ready);
        drop(ready);
        if wake_next {
            self.shared.chain_wake();
        }
        (n, stale)
    }

    /// The harvest as Linux's: splice the ready list out, poll each item
    /// without the ready-list lock, put the list back together. Caller
    /// holds `interest`. Returns the events reported and the stale items
    /// dropped.
    fn send_events_scanning(&self, events: &mut [EpollEvent]) -> (usize, u64) {
        let mut txlist = self.start_scan();
        let mut delivered_lt = LinkedList::new(ReadyAdapter::new());
        let mut stale = 0;
        let mut n = 0;
        while n < events.len() {
            let Some(item) = txlist.pop_front() else {
                break;
            };
            if item.gone.load(Ordering::Relaxed) {
                continue;
            }
            let mask = item.mask();
            // The poll may drop the last handle of the object (its owner
            // closed it meanwhile); the release callback it triggers only
            // takes the ready lock, which is not held here.
            let revents = item.poll_source() & mask;
            if revents.is_empty() {
                stale += 1;
                continue;
            }
            if item.deliver(mask, revents, &mut events[n]) {
                delivered_lt.push_back(item);
            }
            n += 1;
        }
        self.done_scan(txlist, delivered_lt, stale);
        (n, stale)
    }

    /// `ep_start_scan`: take the ready list and divert callbacks to the
    /// overflow list. Caller holds `interest`.
    fn start_scan(&self) -> LinkedList<ReadyAdapter> {
        let mut ready = self.shared.ready.lock();
        ready.scanning = true;
        self.shared.maybe_ready.store(true, Ordering::Release);
        ready.rdllist.take()
    }

    /// `ep_done_scan`: rebuild the ready list as
    /// `[undelivered] ++ [queued during the scan, FIFO] ++ [delivered LT]`
    /// and wake the next waiter if anything is left (the LT chain wake).
    fn done_scan(
        &self,
        undelivered: LinkedList<ReadyAdapter>,
        delivered_lt: LinkedList<ReadyAdapter>,
        stale: u64,
    ) {
        let mut ready = self.shared.ready.lock();
        ready.scanning = false;
        ready.counters.stale_drops += stale;
        let mut overflow = ready.ovflist.take();
        while let Some(item) = overflow.pop_front() {
            // Popping the LIFO chain and pushing at the front restores FIFO.
            if !item.ready_link.is_linked() && !item.gone.load(Ordering::Relaxed) {
                ready.rdllist.push_front(item);
            }
        }
        let mut cursor = ready.rdllist.cursor_mut();
        cursor.splice_before(delivered_lt);
        cursor.splice_after(undelivered);
        let wake_next = !ready.rdllist.is_empty() && ready.take_sleeper();
        self.shared.update_hint(&ready);
        drop(ready);
        if wake_next {
            self.shared.chain_wake();
        }
    }

    /// `__ep_eventpoll_poll`: is any queued item really ready? Items that
    /// re-poll as not ready are dropped from the ready list; nothing is
    /// consumed (ET and ONESHOT items stay queued).
    fn poll_ready(&self) -> bool {
        if !self.shared.maybe_ready.load(Ordering::Acquire) {
            return false;
        }
        let mut interest = self.interest.lock();
        self.reap(&mut interest);
        let mut txlist = self.start_scan();
        let mut stale = 0;
        let mut found = false;
        let mut cursor = txlist.front_mut();
        while let Some(item) = cursor.get() {
            let ready = !item.gone.load(Ordering::Relaxed)
                && !(item.poll_source() & item.mask()).is_empty();
            if ready {
                found = true;
                break;
            }
            cursor.remove();
            stale += 1;
        }
        self.done_scan(txlist, LinkedList::new(ReadyAdapter::new()), stale);
        drop(interest);
        found
    }
}

impl Pollable for EventPoll {
    /// `IN | RDNORM` while at least one queued item re-polls as ready; never
    /// `OUT` (EPOLL_SPEC §1.8).
    fn poll(&self) -> Events {
        if self.poll_ready() {
            Events::IN | Events::RDNORM
        } else {
            Events::empty()
        }
    }

    fn wait_queue(&self) -> &WaitQueue {
        &self.shared.poll_wait
    }

    fn as_event_poll(&self) -> Option<&EventPoll> {
        Some(self)
    }
}

impl Drop for EventPoll {
    /// Closing the last handle of an epoll (`ep_clear_and_put`): every item
    /// is unregistered from its object, and epolls watching this one lose
    /// their items for it.
    fn drop(&mut self) {
        let interest = self.interest.get_mut();
        let mut tree = interest.tree.take();
        let mut cursor = tree.front_mut();
        while let Some(item) = cursor.remove() {
            if let Some(source) = item.source.upgrade() {
                source.wait_queue().remove_item(&item);
                if let Some(inner) = source.as_event_poll() {
                    inner
                        .nest
                        .lock()
                        .parents
                        .retain(|(key, parent)| !(*key == item.key && parent.ptr_eq(&self.this)));
                }
            }
            let mut ready = self.shared.ready.lock();
            item.gone.store(true, Ordering::Relaxed);
            unlink_ready(&mut ready, &item);
            drop(ready);
            self.budget.release();
        }
        self.shared.ready.lock().zombies.clear();
        self.shared.poll_wait.detach_all();
    }
}

impl std::fmt::Debug for EventPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventPoll")
            .field("id", &self.shared.poll_wait.id())
            .finish_non_exhaustive()
    }
}
