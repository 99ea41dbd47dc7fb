//! Loom models of eventpoll's races: every interleaving of a few threads at
//! the crate's lock and condvar operations (under `--cfg loom` the crate's
//! `Mutex` and `Condvar` are loom's, see `src/sync.rs`).
//!
//! - A callback racing a harvest delivers an edge exactly once (A8).
//! - A callback racing a harvest and a `Mod` or `Del` of the same item: no
//!   lost event, no phantom event, nothing after `Del` (§1.4, §4.5).
//! - A source that wakes its queue while holding the lock its `poll` takes,
//!   racing a harvest that re-polls it (also through a nested epoll and a
//!   concurrent `Mod`): no deadlock (§4.1).
//! - Blocked waiters (timeout `None`) always wake: a write, a `Mod` re-arming
//!   an ET item (epoll59), the LT chain wake (§1.7), a nested epoll, two
//!   `EXCLUSIVE` epolls and two writes. Loom reports a lost wake-up as a
//!   deadlock.
//! - Two zero-timeout polls of an always-ready LT item both get it (epoll65).
//! - `interrupt` racing two blocking waits releases both with `EBADF`.
//! - The same races on an epoll whose every source hands it a readiness
//!   cell (eventfds do), whose harvest runs in one hold of the ready-list
//!   lock: an ET edge racing it is reported exactly once, nothing after
//!   `Del`, the LT chain wake. (The blocked-waiter models below use
//!   eventfds alone, so they run on that harvest too; the models with a
//!   `ballast` and the locked sources run on Linux's splice-and-scan one.)
//!
//! Loom has no time: `wait` is only called with `None` or `Duration::ZERO`.
//!
//! Limits of the model: the crate's lock-free "maybe ready" hint, the wait
//! queues' entry counts and the epitem fields are std atomics, invisible to
//! loom: it never switches threads at them. A `wait(0)` that reads a clear
//! hint returns without touching any loom object, so a model racing such a
//! poll against a write would explore a single execution. The harvest
//! models therefore register a *ballast* item (an always-ready LT eventfd)
//! that keeps the hint set, so every `wait` takes the locked harvest path;
//! the lock-free fast path itself is not model-checked. The nesting locks
//! are `parking_lot` mutexes, so no model runs two nested `Add`s at once
//! (one would block the loom scheduler's only OS thread).
//!
//! The models are explored exhaustively (no preemption bound), except the
//! four-thread one (bound 3); the whole file takes a few seconds in release.
//! `LOOM_MAX_PREEMPTIONS=N` bounds every model. Add `--nocapture` to see how
//! many executions each one explored.
//!
//! Run (release):
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p eventpoll --release --test loom -- --test-threads=1`
#![cfg(loom)]

use std::sync::Arc;
use std::time::Duration;

use eventpoll::{
    EfdFlags, EpollEvent, EventFd, EventPoll, Events, Pollable, ReadinessCell, WaitQueue, pipe,
};
use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

/// Runs `f` under loom, exhaustively unless `LOOM_MAX_PREEMPTIONS` bounds
/// the preemptions, and prints how many executions loom explored (see them
/// with `--nocapture`).
fn check(f: impl Fn() + Sync + Send + 'static) {
    check_bounded(None, f);
}

/// [`check`] with at most `bound` preemptions per execution, for models too
/// large to explore exhaustively (`LOOM_MAX_PREEMPTIONS` still overrides).
fn check_bounded(bound: Option<usize>, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = bound;
    }
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    builder.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let runs = runs.load(std::sync::atomic::Ordering::Relaxed);
    let name = thread_name();
    eprintln!("{name}: {runs} executions explored");
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_owned()
}

fn efd(init: u64) -> Arc<EventFd> {
    EventFd::with_flags(init, EfdFlags::NONBLOCK).unwrap()
}

fn ev(events: Events, data: u64) -> EpollEvent {
    EpollEvent::new(events, data)
}

/// The data of the ballast item; [`harvest`] leaves it out.
const BALLAST: u64 = 99;

/// Registers an always-ready LT item on `ep`, so that the epoll's
/// lock-free "maybe ready" hint stays set and every `wait` takes the locked
/// harvest path, where loom can interleave other threads. The item's source
/// has no readiness cell, so the epoll harvests as Linux does (splice the
/// ready list out, poll without the lock, merge back with the overflow
/// list), the path these models are about; `cell_ballast` keeps an epoll
/// on the one-lock-hold harvest instead. Keep the returned handle alive for
/// the whole model (dropping it removes the item).
fn ballast(ep: &EventPoll) -> Arc<AlwaysReady> {
    let src = Arc::new(AlwaysReady(WaitQueue::new()));
    ep.add(&src, 99, ev(Events::IN, BALLAST)).unwrap();
    src
}

/// A source that is always readable and has no readiness cell.
struct AlwaysReady(WaitQueue);

impl Pollable for AlwaysReady {
    fn poll(&self) -> Events {
        Events::IN
    }

    fn wait_queue(&self) -> &WaitQueue {
        &self.0
    }
}

/// One `wait`, without the ballast item's report.
fn harvest(ep: &EventPoll, timeout: Option<Duration>) -> Vec<(u64, Events)> {
    let mut buf = [EpollEvent::default(); 4];
    let n = ep.wait(&mut buf, timeout).unwrap();
    buf[..n]
        .iter()
        .filter(|e| e.data != BALLAST)
        .map(|e| (e.data, e.events))
        .collect()
}

fn harvest0(ep: &EventPoll) -> Vec<(u64, Events)> {
    harvest(ep, Some(Duration::ZERO))
}

fn blocking_harvest(ep: &EventPoll) -> Vec<(u64, Events)> {
    harvest(ep, None)
}

/// What the models shared by several kinds of source need of one.
trait Source: Pollable + Sized {
    /// A source whose readiness counts `count` events.
    fn with_count(count: u64) -> Arc<Self>;
    /// One more event, and a wake-up.
    fn produce(&self);
    /// Takes every event: not ready any more.
    fn drain(&self);
}

impl Source for EventFd {
    fn with_count(count: u64) -> Arc<EventFd> {
        efd(count)
    }

    fn produce(&self) {
        self.write(1).unwrap();
    }

    fn drain(&self) {
        self.read().unwrap();
    }
}

// --- callback vs harvest (vs ctl) ---------------------------------------------

/// One write of an ET eventfd races a harvest: the edge is reported exactly
/// once, by that harvest or by the one after the write (A8: a callback
/// landing mid-harvest goes to the overflow list and is kept).
#[test]
fn et_edge_racing_a_harvest_is_reported_exactly_once() {
    check(et_edge_racing_a_harvest::<EventFd, _>(ballast));
}

/// The model of [`et_edge_racing_a_harvest_is_reported_exactly_once`], on
/// a source of kind `S` beside the item `ballast` registers.
fn et_edge_racing_a_harvest<S: Source, B: 'static>(
    ballast: fn(&EventPoll) -> B,
) -> impl Fn() + Sync + Send + 'static {
    move || {
        let ep = EventPoll::new();
        let _ballast = ballast(&ep);
        let src = S::with_count(0);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 1)).unwrap();
        let producer = {
            let src = src.clone();
            thread::spawn(move || src.produce())
        };
        let first = harvest0(&ep);
        producer.join().unwrap();
        let second = harvest0(&ep);
        let mut all = first.clone();
        all.extend(&second);
        assert_eq!(
            all,
            vec![(1, Events::IN)],
            "first {first:?}, second {second:?}"
        );
        assert_eq!(harvest0(&ep), vec![]);
    }
}

/// The item is already queued (ready at `Add`) and a write lands while a
/// harvest delivers it: the harvest reports it, and the write's edge may
/// cause one more report, never more (§1.6 item 40).
#[test]
fn et_edge_during_the_delivery_of_the_same_item_reports_at_most_twice() {
    check(|| {
        let ep = EventPoll::new();
        let _ballast = ballast(&ep);
        let src = efd(1);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 1)).unwrap();
        let writer = {
            let src = src.clone();
            thread::spawn(move || src.write(1).unwrap())
        };
        let first = harvest0(&ep);
        assert_eq!(first, vec![(1, Events::IN)]);
        writer.join().unwrap();
        let second = harvest0(&ep);
        assert!(second.is_empty() || second == vec![(1, Events::IN)]);
        assert_eq!(harvest0(&ep), vec![]);
    });
}

/// Write, harvest and `Del` of the same ET item at once: a harvest that
/// starts after `Del` returned reports nothing, and nothing is ever
/// reported after everything joined.
#[test]
fn callback_harvest_and_del_never_report_a_deleted_item() {
    check(callback_harvest_and_del::<EventFd, _>(ballast));
}

/// The model of [`callback_harvest_and_del_never_report_a_deleted_item`],
/// on a source of kind `S` beside the item `ballast` registers.
fn callback_harvest_and_del<S: Source, B: 'static>(
    ballast: fn(&EventPoll) -> B,
) -> impl Fn() + Sync + Send + 'static {
    move || {
        let ep = EventPoll::new();
        let _ballast = ballast(&ep);
        let src = S::with_count(0);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 1)).unwrap();
        let deleted = Arc::new(AtomicBool::new(false));
        let producer = {
            let src = src.clone();
            thread::spawn(move || src.produce())
        };
        let deleter = {
            let (ep, src, deleted) = (ep.clone(), src.clone(), deleted.clone());
            thread::spawn(move || {
                ep.delete(&src, 0).unwrap();
                deleted.store(true, Ordering::SeqCst);
            })
        };
        let after_del = deleted.load(Ordering::SeqCst);
        let got = harvest0(&ep);
        if after_del {
            assert_eq!(got, vec![], "reported after Del returned");
        } else {
            assert!(got.is_empty() || got == vec![(1, Events::IN)]);
        }
        producer.join().unwrap();
        deleter.join().unwrap();
        assert_eq!(harvest0(&ep), vec![], "reported after Del");
        assert_eq!(ep.len(), 1, "only the ballast is left");
    }
}

/// Write, harvest and `Mod` (same interest, new data) at once: the edge is
/// reported at least once (not lost); a harvest after the `Mod` shows the
/// new data; the eventfd is never read, so there are no stale reports to
/// excuse.
#[test]
fn callback_harvest_and_mod_lose_no_event() {
    check(|| {
        let ep = EventPoll::new();
        let _ballast = ballast(&ep);
        let src = efd(0);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 1)).unwrap();
        let modded = Arc::new(AtomicBool::new(false));
        let writer = {
            let src = src.clone();
            thread::spawn(move || src.write(1).unwrap())
        };
        let modder = {
            let (ep, src, modded) = (ep.clone(), src.clone(), modded.clone());
            thread::spawn(move || {
                ep.modify(&src, 0, ev(Events::IN | Events::ET, 2)).unwrap();
                modded.store(true, Ordering::SeqCst);
            })
        };
        let after_mod = modded.load(Ordering::SeqCst);
        let first = harvest0(&ep);
        for &(data, events) in &first {
            assert_eq!(events, Events::IN);
            assert!(data == 2 || (data == 1 && !after_mod), "data {data}");
        }
        writer.join().unwrap();
        modder.join().unwrap();
        let second = harvest0(&ep);
        for &(data, _) in &second {
            assert_eq!(data, 2, "stale data after Mod");
        }
        assert!(first.len() + second.len() >= 1, "the write's edge was lost");
    });
}

/// Write, harvest and a `Mod` that drops `IN` from the interest: once the
/// `Mod` returned, `IN` is never reported (the queued item is filtered by
/// the re-poll with the new mask).
#[test]
fn callback_harvest_and_mod_away_report_no_phantom() {
    check(|| {
        let ep = EventPoll::new();
        let _ballast = ballast(&ep);
        let src = efd(0);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 1)).unwrap();
        let modded = Arc::new(AtomicBool::new(false));
        let writer = {
            let src = src.clone();
            thread::spawn(move || src.write(1).unwrap())
        };
        let modder = {
            let (ep, src, modded) = (ep.clone(), src.clone(), modded.clone());
            thread::spawn(move || {
                ep.modify(&src, 0, ev(Events::ET, 2)).unwrap();
                modded.store(true, Ordering::SeqCst);
            })
        };
        let after_mod = modded.load(Ordering::SeqCst);
        let got = harvest0(&ep);
        if after_mod {
            assert_eq!(got, vec![], "IN reported after a Mod without IN");
        }
        writer.join().unwrap();
        modder.join().unwrap();
        assert_eq!(harvest0(&ep), vec![], "IN reported after a Mod without IN");
    });
}

// --- §4.1: a source that wakes under its own lock -------------------------------

/// A counter that wakes its queue while holding the lock `poll` takes: the
/// ABBA hazard of EPOLL_SPEC §4.1 if a harvest held a ready-list lock across
/// `poll`. Its lock is loom's, so loom sees the whole cycle if there is one.
struct LockedSource {
    count: Mutex<u64>,
    wq: WaitQueue,
}

impl LockedSource {
    fn new() -> Arc<LockedSource> {
        Arc::new(LockedSource {
            count: Mutex::new(0),
            wq: WaitQueue::new(),
        })
    }

    fn produce(&self) {
        let mut count = self.count.lock().unwrap();
        *count += 1;
        self.wq.wake(Events::IN);
        drop(count);
    }
}

impl Pollable for LockedSource {
    fn poll(&self) -> Events {
        if *self.count.lock().unwrap() > 0 {
            Events::IN
        } else {
            Events::empty()
        }
    }

    fn wait_queue(&self) -> &WaitQueue {
        &self.wq
    }
}

/// The source produces (waking under its lock) while a harvest re-polls it
/// and a `Mod` re-polls it too: no deadlock, and the edge is reported.
#[test]
fn source_waking_under_its_lock_racing_harvest_and_mod_does_not_deadlock() {
    check(|| {
        let ep = EventPoll::new();
        let _ballast = ballast(&ep);
        let src = LockedSource::new();
        let event = ev(Events::IN | Events::ET, 1);
        ep.add(&src, 0, event).unwrap();
        let producer = {
            let src = src.clone();
            thread::spawn(move || src.produce())
        };
        let modder = {
            let (ep, src) = (ep.clone(), src.clone());
            thread::spawn(move || ep.modify(&src, 0, event).unwrap())
        };
        let first = harvest0(&ep);
        producer.join().unwrap();
        modder.join().unwrap();
        let second = harvest0(&ep);
        assert!(first.len() + second.len() >= 1, "the edge was lost");
    });
}

/// The same source under a nested epoll: the outer harvest polls the inner
/// epoll, which polls the source, while the source's wake-up runs from its
/// lock up through the inner epoll to the outer one. No deadlock; the inner
/// item stays queued (polling an epoll consumes nothing), so the outer epoll
/// reports the inner one after the write.
#[test]
fn nested_harvest_racing_a_source_waking_under_its_lock_does_not_deadlock() {
    check(|| {
        let outer = EventPoll::new();
        let _ballast = ballast(&outer);
        let inner = EventPoll::new();
        let src = LockedSource::new();
        inner.add(&src, 0, ev(Events::IN | Events::ET, 3)).unwrap();
        outer.add(&inner, 1, ev(Events::IN, 4)).unwrap();
        let producer = {
            let src = src.clone();
            thread::spawn(move || src.produce())
        };
        let first = harvest0(&outer);
        assert!(first.is_empty() || first == vec![(4, Events::IN)]);
        producer.join().unwrap();
        assert_eq!(harvest0(&outer), vec![(4, Events::IN)]);
        assert_eq!(harvest0(&inner), vec![(3, Events::IN)]);
    });
}

// --- blocked waiters always wake -------------------------------------------------

/// A waiter blocked without timeout and one write: it always returns the
/// event.
#[test]
fn blocked_waiter_wakes_on_a_write() {
    check(|| {
        let ep = EventPoll::new();
        let src = efd(0);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 1)).unwrap();
        let writer = {
            let src = src.clone();
            thread::spawn(move || src.write(1).unwrap())
        };
        assert_eq!(blocking_harvest(&ep), vec![(1, Events::IN)]);
        writer.join().unwrap();
    });
}

/// A waiter blocked on a pipe's read end wakes on a write (IN) and on the
/// write end going away (HUP).
#[test]
fn blocked_waiter_wakes_on_a_pipe_write_and_on_hangup() {
    check(|| {
        let ep = EventPoll::new();
        let (reader, writer) = pipe(16);
        ep.add(&reader, 0, ev(Events::IN | Events::ET, 1)).unwrap();
        let t = {
            let writer = writer.clone();
            thread::spawn(move || assert_eq!(writer.write(b"x"), Ok(1)))
        };
        assert_eq!(blocking_harvest(&ep), vec![(1, Events::IN)]);
        t.join().unwrap();
    });
    check(|| {
        let ep = EventPoll::new();
        let (reader, writer) = pipe(16);
        ep.add(&reader, 0, ev(Events::IN, 1)).unwrap();
        let t = thread::spawn(move || drop(writer));
        assert_eq!(blocking_harvest(&ep), vec![(1, Events::HUP)]);
        t.join().unwrap();
    });
}

/// Selftest epoll59: a ready ET (or ET|ONESHOT) item already reported; a
/// `Mod` re-arms it while a thread blocks in `wait`: the waiter wakes.
#[test]
fn mod_rearming_a_ready_item_wakes_a_blocked_waiter() {
    for mode in [Events::ET, Events::ET | Events::ONESHOT] {
        check(move || {
            let ep = EventPoll::new();
            let src = efd(1);
            let event = ev(Events::IN | mode, 1);
            ep.add(&src, 0, event).unwrap();
            assert_eq!(harvest0(&ep), vec![(1, Events::IN)]);
            let modder = {
                let (ep, src) = (ep.clone(), src.clone());
                thread::spawn(move || ep.modify(&src, 0, event).unwrap())
            };
            assert_eq!(blocking_harvest(&ep), vec![(1, Events::IN)]);
            modder.join().unwrap();
        });
    }
}

/// Two waiters blocked on one LT item, one write: both return it (the LT
/// chain wake of §1.7 item 41).
#[test]
fn lt_event_wakes_both_blocked_waiters() {
    check(lt_event_wakes_both::<EventFd>());
}

/// The model of [`lt_event_wakes_both_blocked_waiters`] on a source of
/// kind `S`.
fn lt_event_wakes_both<S: Source>() -> impl Fn() + Sync + Send + 'static {
    || {
        let ep = EventPoll::new();
        let src = S::with_count(0);
        ep.add(&src, 0, ev(Events::IN, 1)).unwrap();
        let other = {
            let ep = ep.clone();
            thread::spawn(move || blocking_harvest(&ep))
        };
        let producer = {
            let src = src.clone();
            thread::spawn(move || src.produce())
        };
        assert_eq!(blocking_harvest(&ep), vec![(1, Events::IN)]);
        assert_eq!(other.join().unwrap(), vec![(1, Events::IN)]);
        producer.join().unwrap();
    }
}

/// Three waiters blocked on one LT item, one write: all three return it.
/// (Bounded: four threads are too many for an exhaustive search.)
#[test]
fn lt_event_wakes_three_blocked_waiters() {
    check_bounded(Some(3), || {
        let ep = EventPoll::new();
        let src = efd(0);
        ep.add(&src, 0, ev(Events::IN, 1)).unwrap();
        let others: Vec<_> = (0..2)
            .map(|_| {
                let ep = ep.clone();
                thread::spawn(move || blocking_harvest(&ep))
            })
            .collect();
        let writer = {
            let src = src.clone();
            thread::spawn(move || src.write(1).unwrap())
        };
        assert_eq!(blocking_harvest(&ep), vec![(1, Events::IN)]);
        for other in others {
            assert_eq!(other.join().unwrap(), vec![(1, Events::IN)]);
        }
        writer.join().unwrap();
    });
}

/// A waiter blocked on an outer epoll that watches an inner one; the write
/// is on the inner epoll's source. The waiter wakes.
#[test]
fn blocked_waiter_on_an_outer_epoll_wakes() {
    check(|| {
        let outer = EventPoll::new();
        let inner = EventPoll::new();
        let src = efd(0);
        inner.add(&src, 0, ev(Events::IN | Events::ET, 3)).unwrap();
        outer
            .add(&inner, 1, ev(Events::IN | Events::ET, 4))
            .unwrap();
        let writer = {
            let src = src.clone();
            thread::spawn(move || src.write(1).unwrap())
        };
        assert_eq!(blocking_harvest(&outer), vec![(4, Events::IN)]);
        writer.join().unwrap();
        assert_eq!(harvest0(&inner), vec![(3, Events::IN)]);
    });
}

/// Two epolls with `IN | ET | EXCLUSIVE` on one eventfd, a thread blocked
/// on each, two writes: both threads wake, in every interleaving. (Linux: a
/// write is consumed by the first exclusive epoll with a waiter still on
/// its wait queue; a woken waiter leaves the queue at once, so the second
/// write goes to the other epoll, and an epoll without a waiter keeps the
/// item queued for its next `wait`.)
#[test]
fn exclusive_epolls_two_writes_wake_both_waiters() {
    check(|| {
        let src = efd(0);
        let eps: Vec<Arc<EventPoll>> = (0..2).map(|_| EventPoll::new()).collect();
        for (i, ep) in eps.iter().enumerate() {
            let mask = Events::IN | Events::ET | Events::EXCLUSIVE;
            ep.add(&src, 0, ev(mask, i as u64)).unwrap();
        }
        let other = {
            let ep = eps[1].clone();
            thread::spawn(move || blocking_harvest(&ep))
        };
        let writer = {
            let src = src.clone();
            thread::spawn(move || {
                src.write(1).unwrap();
                src.write(1).unwrap();
            })
        };
        assert_eq!(blocking_harvest(&eps[0]), vec![(0, Events::IN)]);
        assert_eq!(other.join().unwrap(), vec![(1, Events::IN)]);
        writer.join().unwrap();
    });
}

/// Two threads poll with timeout zero an LT item that is always ready: both
/// get it, even when one polls while the other has the ready list spliced
/// out (epoll65).
#[test]
fn zero_timeout_polls_never_see_a_false_empty_result() {
    check(|| {
        let ep = EventPoll::new();
        let src = efd(1);
        ep.add(&src, 0, ev(Events::IN, 1)).unwrap();
        let other = {
            let ep = ep.clone();
            thread::spawn(move || harvest0(&ep))
        };
        assert_eq!(harvest0(&ep), vec![(1, Events::IN)]);
        assert_eq!(other.join().unwrap(), vec![(1, Events::IN)]);
    });
}

/// `interrupt` racing two blocking waits (one may not have gone to sleep
/// yet): both end with `EBADF`; a lost interrupt shows as a deadlock.
#[test]
fn interrupt_releases_blocked_waiters() {
    check(|| {
        let ep = EventPoll::new();
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let ep = ep.clone();
                thread::spawn(move || {
                    let mut buf = [EpollEvent::default(); 1];
                    ep.wait(&mut buf, None)
                })
            })
            .collect();
        ep.interrupt();
        for w in waiters {
            assert_eq!(w.join().unwrap(), Err(eventpoll::Errno::EBADF));
        }
    });
}

// --- sources with a readiness cell (the harvest in one lock hold) -------------

/// A counter whose readiness lives in a cell apart from it, as netstack's
/// sockets keep theirs: epoll holds the cell and reads it under its
/// ready-list lock. `produce` updates the cell, releases its lock, then
/// wakes the queue (the cell contract). The cell's lock is loom's.
struct CellSource {
    cell: Arc<CountCell>,
    wq: WaitQueue,
}

struct CountCell(Mutex<u64>);

impl ReadinessCell for CountCell {
    fn poll(&self) -> Events {
        if *self.0.lock().unwrap() > 0 {
            Events::IN
        } else {
            Events::empty()
        }
    }
}

impl Source for CellSource {
    fn with_count(count: u64) -> Arc<CellSource> {
        Arc::new(CellSource {
            cell: Arc::new(CountCell(Mutex::new(count))),
            wq: WaitQueue::new(),
        })
    }

    fn produce(&self) {
        *self.cell.0.lock().unwrap() += 1;
        self.wq.wake(Events::IN);
    }

    fn drain(&self) {
        *self.cell.0.lock().unwrap() = 0;
    }
}

impl Pollable for CellSource {
    fn poll(&self) -> Events {
        self.cell.poll()
    }

    fn wait_queue(&self) -> &WaitQueue {
        &self.wq
    }

    fn readiness_cell(&self) -> Option<Arc<dyn ReadinessCell>> {
        Some(self.cell.clone())
    }
}

/// [`ballast`] with a cell source, so that the epoll keeps harvesting in
/// one lock hold (an eventfd ballast has no cell and would switch it to the
/// scanning harvest).
fn cell_ballast(ep: &EventPoll) -> Arc<CellSource> {
    let src = CellSource::with_count(1);
    ep.add(&src, 99, ev(Events::IN, BALLAST)).unwrap();
    src
}

/// [`et_edge_racing_a_harvest_is_reported_exactly_once`] with cells: the
/// edge lands before or after the harvest's one lock hold, never lost and
/// never twice.
#[test]
fn cell_et_edge_racing_an_in_place_harvest_is_reported_exactly_once() {
    check(et_edge_racing_a_harvest::<CellSource, _>(cell_ballast));
}

/// [`callback_harvest_and_del_never_report_a_deleted_item`] with cells.
#[test]
fn cell_callback_harvest_and_del_never_report_a_deleted_item() {
    check(callback_harvest_and_del::<CellSource, _>(cell_ballast));
}

/// [`lt_event_wakes_both_blocked_waiters`] with a cell whose poll takes a
/// lock: the harvest in one lock hold passes the LT item on to the other
/// waiter.
#[test]
fn cell_lt_event_wakes_both_blocked_waiters() {
    check(lt_event_wakes_both::<CellSource>());
}

/// An LT item delivered and then drained: the next harvest drops it as
/// stale while a new write lands. The write's event is never lost: the
/// item is queued again, and a harvest after the write reports it. (The
/// one-lock-hold harvest once unlinked the items it took off the list only
/// after its unlock, and a callback in that gap took the item for queued
/// and lost its event. loom does not preempt right after an unlock, so it
/// cannot see that gap; `threads.rs`'s ping-pong test does, most runs.)
#[test]
fn write_racing_a_stale_drop_is_not_lost() {
    check(write_racing_a_stale_drop::<EventFd>());
}

/// [`write_racing_a_stale_drop_is_not_lost`] with a cell whose poll takes
/// a lock.
#[test]
fn cell_write_racing_a_stale_drop_is_not_lost() {
    check(write_racing_a_stale_drop::<CellSource>());
}

fn write_racing_a_stale_drop<S: Source>() -> impl Fn() + Sync + Send + 'static {
    || {
        let ep = EventPoll::new();
        let src = S::with_count(1);
        ep.add(&src, 0, ev(Events::IN, 1)).unwrap();
        assert_eq!(harvest0(&ep), vec![(1, Events::IN)]);
        src.drain();
        let producer = {
            let src = src.clone();
            thread::spawn(move || src.produce())
        };
        let racing = harvest0(&ep);
        assert!(racing.is_empty() || racing == vec![(1, Events::IN)]);
        producer.join().unwrap();
        assert_eq!(harvest0(&ep), vec![(1, Events::IN)], "the write was lost");
    }
}
