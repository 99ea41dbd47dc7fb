//! Behaviour of eventpoll under real threads: the multi-threaded rules of
//! EPOLL_SPEC §1.7 and the lock and wake-up design of §4.1-4.4.
//!
//! - LT: one ready event wakes every blocked waiter (the chain wake-up,
//!   §1.7 item 41; selftests epoll9/epoll64).
//! - ET: one edge wakes exactly one of many waiters (epoll10).
//! - EXCLUSIVE: one write wakes exactly one of several exclusive epolls (LTP
//!   epoll_wait16), and N writes wake N of them; N distinct events wake N
//!   waiters of one epoll (epoll12/epoll60).
//! - `Mod` racing a blocked wait never loses the wake-up (epoll59); a wake-up
//!   at the timeout instant is never lost (epoll61); polling with timeout
//!   zero never reports a false empty result (epoll65).
//! - A source that wakes its queue (even under its own lock) while a harvest
//!   re-polls it neither deadlocks nor loses the last event (§4.1).
//! - Dropping or closing the watched object does not wake a blocked waiter.
//! - Two threads ping-ponging through two epolls lose no write.
//! - A randomised stress test of writers, waiters and `ctl`.
//!
//! Nothing here measures speed. Durations are only generous upper bounds for
//! what must happen (`MUST`, 10 s, sized for a loaded 2-core CI machine) and
//! short bounded waits for what must not (`GRACE`). Every blocked thread is
//! released or joined; no test can hang forever. Waiters are known to be
//! asleep before an event is sent by reading their state in
//! `/proc/self/task/TID/stat` (LTP's `TST_PROCESS_STATE_WAIT`).
//!
//! Run: `cargo test -p eventpoll --test threads` (a few seconds in debug).
//! Longer: `EVENTPOLL_STRESS_ITERS=50 cargo test -p eventpoll --release --test threads`
//! multiplies every loop count by 50.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use eventpoll::{
    BasicFile, CtlOp, EfdFlags, EpollEvent, EventFd, EventPoll, Events, FdTable,
    PIPE_DEFAULT_CAPACITY, Pollable, WaitQueue, pipe,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Upper bound for anything that must happen.
const MUST: Duration = Duration::from_secs(10);
/// The timeout of the waits of [`Waiters`]: longer than `MUST`, so that a
/// waiter that was not woken is still asleep when a `MUST` bound expires.
const WAITER_LIMIT: Duration = Duration::from_secs(30);
/// How long to watch for something that must not happen.
const GRACE: Duration = Duration::from_millis(50);

/// The `EVENTPOLL_STRESS_ITERS` multiplier (default 1).
fn stress_factor() -> usize {
    std::env::var("EVENTPOLL_STRESS_ITERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1)
}

fn iters(base: usize) -> usize {
    base * stress_factor()
}

fn efd(init: u64) -> Arc<EventFd> {
    EventFd::with_flags(init, EfdFlags::NONBLOCK).unwrap()
}

fn ev(events: Events, data: u64) -> EpollEvent {
    EpollEvent::new(events, data)
}

/// One `wait` with room for `max` events.
fn harvest(ep: &EventPoll, max: usize, timeout: Option<Duration>) -> Vec<(u64, Events)> {
    let mut buf = vec![EpollEvent::default(); max];
    let n = ep.wait(&mut buf, timeout).unwrap();
    buf[..n].iter().map(|e| (e.data, e.events)).collect()
}

fn harvest0(ep: &EventPoll, max: usize) -> Vec<(u64, Events)> {
    harvest(ep, max, Some(Duration::ZERO))
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
fn eventually(limit: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// Sets its flag when dropped, so that helper threads looping on the flag
/// stop even when the test thread panics (no test hangs).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The kernel thread id of the calling thread, from `/proc/thread-self`.
fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// The scheduler state letter of thread `tid` of this process.
fn thread_state(tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits until every thread in `tids` is asleep (state `S`, seen on two
/// passes 5 ms apart). Without `/proc`, sleeps 200 ms instead.
fn wait_until_asleep(tids: &[Option<u32>]) {
    let Some(tids) = tids.iter().copied().collect::<Option<Vec<u32>>>() else {
        thread::sleep(Duration::from_millis(200));
        return;
    };
    let all_asleep = || tids.iter().all(|&tid| thread_state(tid) == Some('S'));
    let deadline = Instant::now() + MUST;
    loop {
        if all_asleep() {
            thread::sleep(Duration::from_millis(5));
            if all_asleep() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "a waiter never went to sleep in wait (busy-waiting?)"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Threads each blocked in one `wait(Some(WAITER_LIMIT))`.
struct Waiters {
    handles: Vec<thread::JoinHandle<Vec<(u64, Events)>>>,
    tids: Vec<Option<u32>>,
    returned: Arc<AtomicUsize>,
}

impl Waiters {
    /// One thread per entry of `eps`, each waiting once on its epoll with
    /// room for `max` events; returns once all of them are asleep.
    fn spawn(eps: &[Arc<EventPoll>], max: usize) -> Waiters {
        let returned = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let handles = eps
            .iter()
            .map(|ep| {
                let ep = ep.clone();
                let tx = tx.clone();
                let returned = returned.clone();
                thread::spawn(move || {
                    tx.send(current_tid()).unwrap();
                    let got = harvest(&ep, max, Some(WAITER_LIMIT));
                    returned.fetch_add(1, Ordering::SeqCst);
                    got
                })
            })
            .collect();
        let tids = (0..eps.len())
            .map(|_| rx.recv_timeout(MUST).expect("waiter thread started"))
            .collect();
        let waiters = Waiters {
            handles,
            tids,
            returned,
        };
        wait_until_asleep(&waiters.tids);
        waiters
    }

    fn returned(&self) -> usize {
        self.returned.load(Ordering::SeqCst)
    }

    /// Joins every thread; each result is what its one `wait` returned
    /// (empty if it ran into `WAITER_LIMIT`).
    fn join(self) -> Vec<Vec<(u64, Events)>> {
        self.handles
            .into_iter()
            .map(|h| h.join().expect("waiter thread panicked"))
            .collect()
    }
}

// --- §1.7 item 41: LT, ET, EXCLUSIVE and many waiters -------------------------

/// Eight waiters blocked on one epoll; one LT event that stays ready: each
/// of them returns it (the harvest that re-queues an LT item wakes the next
/// waiter). Selftests epoll9/epoll64.
fn lt_chain_wake(rounds: usize) {
    for round in 0..rounds {
        let ep = EventPoll::new();
        let src = efd(0);
        ep.add(&src, 3, ev(Events::IN, 33)).unwrap();
        let waiters = Waiters::spawn(&vec![ep.clone(); 8], 4);
        src.write(1).unwrap();
        for (i, got) in waiters.join().into_iter().enumerate() {
            assert_eq!(
                got,
                vec![(33, Events::IN)],
                "round {round}: waiter {i} did not get the LT event"
            );
        }
        assert_eq!(harvest0(&ep, 4), vec![(33, Events::IN)]);
    }
}

#[test]
fn lt_event_wakes_every_blocked_waiter() {
    lt_chain_wake(iters(5));
}

/// Eight waiters, one ET edge: exactly one returns, the others stay asleep;
/// each further edge (sent once the previous one was taken) releases one
/// more. Selftest epoll10.
fn et_one_edge_one_waiter(rounds: usize) {
    for round in 0..rounds {
        let ep = EventPoll::new();
        let src = efd(0);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 7)).unwrap();
        let waiters = Waiters::spawn(&vec![ep.clone(); 8], 4);
        src.write(1).unwrap();
        assert!(
            eventually(MUST, || waiters.returned() >= 1),
            "no waiter woke"
        );
        thread::sleep(GRACE);
        let after_first = waiters.returned();
        for k in 2..=8 {
            src.write(1).unwrap();
            assert!(
                eventually(MUST, || waiters.returned() >= k),
                "round {round}: edge {k} woke nobody"
            );
        }
        let results = waiters.join();
        assert_eq!(
            after_first, 1,
            "round {round}: one ET edge woke {after_first} waiters"
        );
        for got in results {
            assert_eq!(got, vec![(7, Events::IN)], "round {round}");
        }
        assert_eq!(harvest0(&ep, 4), vec![]);
    }
}

#[test]
fn et_edge_wakes_exactly_one_waiter() {
    et_one_edge_one_waiter(iters(3));
}

/// Eight epolls, each with `IN | ET | EXCLUSIVE` on one pipe read end and a
/// thread asleep in its `wait`: each 1-byte write (the byte is read back
/// before the next) wakes exactly one of them. LTP epoll_wait16.
fn exclusive_one_write_one_epoll(rounds: usize) {
    for round in 0..rounds {
        let (reader, writer) = pipe(PIPE_DEFAULT_CAPACITY);
        reader.set_nonblocking(true);
        let eps: Vec<Arc<EventPoll>> = (0..8).map(|_| EventPoll::new()).collect();
        for (i, ep) in eps.iter().enumerate() {
            let mask = Events::IN | Events::ET | Events::EXCLUSIVE;
            ep.add(&reader, 0, ev(mask, i as u64)).unwrap();
        }
        let waiters = Waiters::spawn(&eps, 1);
        let mut woken = Vec::new();
        for write in 1..=8 {
            writer.write(b"x").unwrap();
            assert!(
                eventually(MUST, || waiters.returned() >= write),
                "round {round}: write {write} woke nobody"
            );
            thread::sleep(GRACE);
            woken.push(waiters.returned());
            assert_eq!(reader.read(&mut [0; 1]), Ok(1));
        }
        let results = waiters.join();
        assert_eq!(
            woken,
            (1..=8).collect::<Vec<_>>(),
            "round {round}: waiters woken in total after each write"
        );
        for (i, got) in results.into_iter().enumerate() {
            assert_eq!(got, vec![(i as u64, Events::IN)], "round {round}");
        }
    }
}

#[test]
fn exclusive_each_write_wakes_exactly_one_epoll() {
    exclusive_one_write_one_epoll(iters(2));
}

/// The same eight exclusive epolls, four writes back to back: Linux wakes
/// four distinct waiters, because a woken waiter leaves its epoll's wait
/// queue at once (`ep_autoremove_wake_function`) and the next write's
/// exclusive callback on that epoll then declines and passes the wake-up on
/// (§1.3 item 23, §1.7 item 41).
#[test]
fn exclusive_burst_of_writes_wakes_as_many_epolls() {
    for round in 0..iters(2) {
        let (reader, writer) = pipe(PIPE_DEFAULT_CAPACITY);
        reader.set_nonblocking(true);
        let eps: Vec<Arc<EventPoll>> = (0..8).map(|_| EventPoll::new()).collect();
        for (i, ep) in eps.iter().enumerate() {
            let mask = Events::IN | Events::ET | Events::EXCLUSIVE;
            ep.add(&reader, 0, ev(mask, i as u64)).unwrap();
        }
        let waiters = Waiters::spawn(&eps, 1);
        for _ in 0..4 {
            writer.write(b"x").unwrap();
        }
        eventually(MUST, || waiters.returned() >= 4);
        thread::sleep(GRACE);
        let woken = waiters.returned();
        // Release the rest one write at a time, so that nothing is left blocked.
        while waiters.returned() < 8 {
            let before = waiters.returned();
            writer.write(b"x").unwrap();
            assert!(
                eventually(MUST, || waiters.returned() > before),
                "round {round}: a write woke none of the remaining waiters"
            );
        }
        waiters.join();
        assert_eq!(
            woken, 4,
            "round {round}: four back-to-back writes woke {woken} of eight exclusive epolls"
        );
    }
}

/// N distinct events wake N waiters of one epoll (epoll60: 10 eventfds, 10
/// waiters), and one write seen by two registrations of the same eventfd
/// (two fds) wakes two waiters (Miri multiple_events_wake_multiple_threads).
fn distinct_events_many_waiters(rounds: usize) {
    for round in 0..rounds {
        let ep = EventPoll::new();
        let srcs: Vec<Arc<EventFd>> = (0..10).map(|_| efd(0)).collect();
        for (i, src) in srcs.iter().enumerate() {
            ep.add(src, i as i32, ev(Events::IN | Events::ET, i as u64))
                .unwrap();
        }
        let waiters = Waiters::spawn(&vec![ep.clone(); 10], 1);
        for src in &srcs {
            src.write(1).unwrap();
        }
        let mut seen: Vec<u64> = waiters
            .join()
            .into_iter()
            .map(|got| {
                assert_eq!(got.len(), 1, "round {round}: a waiter was not woken");
                assert_eq!(got[0].1, Events::IN);
                got[0].0
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<u64>>(), "round {round}");

        let ep = EventPoll::new();
        let src = efd(0);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 100)).unwrap();
        ep.add(&src, 1, ev(Events::IN | Events::ET, 101)).unwrap();
        let waiters = Waiters::spawn(&vec![ep.clone(); 2], 1);
        src.write(1).unwrap();
        let mut seen: Vec<u64> = waiters
            .join()
            .into_iter()
            .map(|got| {
                assert_eq!(got.len(), 1, "round {round}: a dup waiter was not woken");
                got[0].0
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![100, 101], "round {round}");
    }
}

#[test]
fn distinct_events_wake_as_many_waiters() {
    distinct_events_many_waiters(iters(3));
}

// --- §1.7 items 42 and 44, §1.5 item 37: the races ---------------------------

/// A `Mod` of a ready ET (or ET|ONESHOT) item re-arms it and must wake a
/// thread blocked in `wait`, whatever the interleaving (selftest epoll59,
/// §1.7 item 44). Each round: the waiter waits, the other thread mods.
fn mod_vs_blocked_wait(mode: Events, rounds: usize) {
    let ep = EventPoll::new();
    let src = efd(1);
    let event = ev(Events::IN | mode, 5);
    ep.add(&src, 0, event).unwrap();
    // The item was ready at Add: take that report first.
    assert_eq!(harvest0(&ep, 1), vec![(5, Events::IN)]);
    let barrier = Arc::new(Barrier::new(2));
    let modder = {
        let (ep, src, barrier) = (ep.clone(), src.clone(), barrier.clone());
        thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(59);
            for _ in 0..rounds {
                barrier.wait();
                for _ in 0..rng.random_range(0..3) {
                    thread::yield_now();
                }
                ep.modify(&src, 0, event).unwrap();
            }
        })
    };
    for round in 0..rounds {
        barrier.wait();
        let got = harvest(&ep, 1, Some(MUST));
        assert_eq!(
            got,
            vec![(5, Events::IN)],
            "{mode:?} round {round}: the Mod's wake-up was lost"
        );
    }
    modder.join().unwrap();
    assert_eq!(harvest0(&ep, 1), vec![]);
}

#[test]
fn mod_racing_a_blocked_wait_never_loses_the_wakeup() {
    mod_vs_blocked_wait(Events::ET, iters(1000));
    mod_vs_blocked_wait(Events::ET | Events::ONESHOT, iters(1000));
}

/// Two waiters with ~1 ms timeouts and a writer that fires around the
/// deadline: the one edge is reported exactly once, by one of the waits or
/// by the `wait(0)` that follows (§1.7 item 42).
fn timeout_instant_race(rounds: usize, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..rounds {
        let ep = EventPoll::new();
        let src = efd(0);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 61)).unwrap();
        let delay = Duration::from_micros(rng.random_range(700..1300));
        let seen: usize = thread::scope(|s| {
            let waits: Vec<_> = (0..2)
                .map(|_| s.spawn(|| harvest(&ep, 1, Some(Duration::from_millis(1))).len()))
                .collect();
            s.spawn(|| {
                thread::sleep(delay);
                src.write(1).unwrap();
            });
            waits.into_iter().map(|t| t.join().unwrap()).sum()
        });
        let late = harvest0(&ep, 1).len();
        assert_eq!(
            seen + late,
            1,
            "round {round}: waits saw {seen}, wait(0) after saw {late}"
        );
    }
}

#[test]
fn wakeup_at_the_timeout_instant_is_not_lost() {
    timeout_instant_race(iters(150), 61);
}

/// Selftest epoll61 as written: a writer fires just before a 2 ms timeout;
/// one waiter has that timeout, another blocks. The timed waiter, if it got
/// the edge, sends a second one. The blocked waiter must always return.
fn timeout_vs_blocked_waiter(rounds: usize, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..rounds {
        let ep = EventPoll::new();
        let src = efd(0);
        ep.add(&src, 0, ev(Events::IN | Events::ET, 61)).unwrap();
        let delay = Duration::from_micros(rng.random_range(1700..2300));
        let (timed, blocked) = thread::scope(|s| {
            let blocked = s.spawn(|| harvest(&ep, 1, Some(MUST)).len());
            let timed = s.spawn(|| {
                let n = harvest(&ep, 1, Some(Duration::from_millis(2))).len();
                if n == 1 {
                    src.write(1).unwrap();
                }
                n
            });
            s.spawn(|| {
                thread::sleep(delay);
                src.write(1).unwrap();
            });
            (timed.join().unwrap(), blocked.join().unwrap())
        });
        assert_eq!(
            blocked, 1,
            "round {round}: the blocked waiter was never woken (timed waiter saw {timed})"
        );
        assert_eq!(harvest0(&ep, 1), vec![], "round {round}");
    }
}

#[test]
fn timed_out_waiter_does_not_swallow_the_wakeup() {
    timeout_vs_blocked_waiter(iters(100), 6161);
}

/// 64 threads polling with timeout zero while an LT item is always ready:
/// none ever gets an empty result, even while another thread has the ready
/// list spliced out for its harvest (the epoll65 fix, §1.5 item 37).
fn zero_timeout_no_false_empty(threads: usize, polls: usize) {
    let ep = EventPoll::new();
    let src = efd(1);
    ep.add(&src, 0, ev(Events::IN, 65)).unwrap();
    let barrier = Barrier::new(threads);
    thread::scope(|s| {
        for t in 0..threads {
            let (ep, barrier) = (&ep, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..polls {
                    assert_eq!(
                        harvest0(ep, 2),
                        vec![(65, Events::IN)],
                        "thread {t}, poll {i}: false empty result"
                    );
                }
            });
        }
    });
}

#[test]
fn zero_timeout_polls_never_see_a_false_empty_result() {
    zero_timeout_no_false_empty(64, iters(100));
}

/// Two threads pass a token back and forth through two LT eventfds, each
/// blocked in its own epoll's `wait` between turns (loopbench's wake-up
/// ping-pong). Each write lands while the other side may be dropping the
/// drained item of its last turn from the ready list as stale: no write is
/// ever lost. A lost one shows as a `wait` that times out (`MUST`) instead
/// of a hang. (The one-lock-hold harvest once dropped such items only
/// after unlocking, and a callback in between took the item for queued.)
fn ping_pong_round_trips(rounds: usize) {
    let (ep_a, ep_b) = (EventPoll::new(), EventPoll::new());
    let (fd_a, fd_b) = (efd(0), efd(0));
    ep_a.add(&fd_a, 0, ev(Events::IN, 0)).unwrap();
    ep_b.add(&fd_b, 0, ev(Events::IN, 0)).unwrap();
    let partner = {
        let (ep_b, fd_a, fd_b) = (ep_b.clone(), fd_a.clone(), fd_b.clone());
        thread::spawn(move || {
            for round in 0..rounds {
                let got = harvest(&ep_b, 4, Some(MUST));
                assert_eq!(got, vec![(0, Events::IN)], "B lost write {round}");
                fd_b.read().unwrap();
                fd_a.write(1).unwrap();
            }
        })
    };
    for round in 0..rounds {
        fd_b.write(1).unwrap();
        let got = harvest(&ep_a, 4, Some(MUST));
        assert_eq!(got, vec![(0, Events::IN)], "A lost write {round}");
        fd_a.read().unwrap();
    }
    partner.join().unwrap();
}

#[test]
fn blocked_ping_pong_through_two_epolls_loses_no_write() {
    ping_pong_round_trips(iters(60_000));
}

// --- §4.1: sources waking while a harvest re-polls them ----------------------

/// A counter source that wakes its queue while holding its own state lock,
/// the pattern a socket's callback path has (EPOLL_SPEC §4.1, "User-space
/// analogue"). `poll` takes the same lock.
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

    fn take(&self) -> u64 {
        std::mem::take(&mut *self.count.lock().unwrap())
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

/// A producer writes an ET eventfd `n` times while a consumer harvests and
/// reads it: the consumer must account for every write (the last edge is
/// never lost) and nothing deadlocks.
fn producer_consumer_eventfd(n: u64) {
    let ep = EventPoll::new();
    let src = efd(0);
    ep.add(&src, 0, ev(Events::IN | Events::ET, 1)).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..n {
                src.write(1).unwrap();
            }
        });
        let mut total = 0;
        while total < n {
            let got = harvest(&ep, 4, Some(MUST));
            assert!(!got.is_empty(), "edge lost: consumed {total} of {n}");
            if let Ok(v) = src.read() {
                total += v;
            }
        }
        assert_eq!(total, n);
    });
}

/// The same with [`LockedSource`] (wakes under its lock), and a third
/// thread re-arming the item with `Mod` throughout, so that `ctl`'s re-poll
/// also races the producer.
fn producer_consumer_locked_source(n: u64) {
    let ep = EventPoll::new();
    let src = LockedSource::new();
    let event = ev(Events::IN | Events::ET, 2);
    ep.add(&src, 0, event).unwrap();
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..n {
                src.produce();
            }
        });
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                ep.modify(&src, 0, event).unwrap();
                thread::yield_now();
            }
        });
        let _stop = StopOnDrop(&done);
        let mut total = 0;
        while total < n {
            let got = harvest(&ep, 4, Some(MUST));
            assert!(!got.is_empty(), "edge lost: consumed {total} of {n}");
            total += src.take();
        }
        assert_eq!(total, n);
    });
}

/// Nested: an outer epoll (LT) watches an inner one (ET on a
/// [`LockedSource`]). The outer harvest polls the inner epoll, which polls
/// the source, while the producer's wake-ups run up the same chain.
fn producer_consumer_nested(n: u64) {
    let outer = EventPoll::new();
    let inner = EventPoll::new();
    let src = LockedSource::new();
    inner.add(&src, 0, ev(Events::IN | Events::ET, 3)).unwrap();
    outer.add(&inner, 1, ev(Events::IN, 4)).unwrap();
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..n {
                src.produce();
            }
        });
        let mut total = 0;
        while total < n {
            let got = harvest(&outer, 4, Some(MUST));
            assert!(!got.is_empty(), "nested edge lost: consumed {total} of {n}");
            assert_eq!(got, vec![(4, Events::IN)]);
            harvest0(&inner, 4);
            total += src.take();
        }
        assert_eq!(total, n);
    });
}

#[test]
fn source_waking_during_harvest_neither_deadlocks_nor_loses_the_last_event() {
    let n = iters(20_000) as u64;
    producer_consumer_eventfd(n);
    producer_consumer_locked_source(n);
    producer_consumer_nested(n / 2);
}

// --- dropping and closing while a thread waits --------------------------------

/// Waits on `ep` in a thread for `timeout`, starting once it is asleep;
/// `action` runs then. Returns what the wait got and how long it took.
fn wait_while(
    ep: &Arc<EventPoll>,
    timeout: Duration,
    action: impl FnOnce(),
) -> (Vec<(u64, Events)>, Duration) {
    let (tx, rx) = mpsc::channel();
    let ep2 = ep.clone();
    let t = thread::spawn(move || {
        tx.send(current_tid()).unwrap();
        let start = Instant::now();
        let got = harvest(&ep2, 4, Some(timeout));
        (got, start.elapsed())
    });
    wait_until_asleep(&[rx.recv_timeout(MUST).unwrap()]);
    action();
    t.join().unwrap()
}

#[test]
fn dropping_the_watched_object_does_not_wake_a_blocked_waiter() {
    let timeout = Duration::from_millis(200);

    // An eventfd whose last handle goes away.
    let ep = EventPoll::new();
    let src = efd(0);
    ep.add(&src, 0, ev(Events::IN, 1)).unwrap();
    let wakeups = ep.counters().wakeups;
    let (got, took) = wait_while(&ep, timeout, move || drop(src));
    assert_eq!(got, vec![]);
    assert!(took >= timeout, "the wait ended early ({took:?})");
    assert_eq!(ep.counters().wakeups, wakeups, "a waiter was woken");
    assert_eq!(ep.len(), 0);
    assert_eq!(ep.budget().used(), 0);

    // The watched read end of a pipe goes away; the write end stays.
    let ep = EventPoll::new();
    let (reader, writer) = pipe(PIPE_DEFAULT_CAPACITY);
    ep.add(&reader, 0, ev(Events::IN, 2)).unwrap();
    let wakeups = ep.counters().wakeups;
    let (got, took) = wait_while(&ep, timeout, move || drop(reader));
    assert_eq!(got, vec![]);
    assert!(took >= timeout, "the wait ended early ({took:?})");
    assert_eq!(ep.counters().wakeups, wakeups, "a waiter was woken");
    assert_eq!(ep.len(), 0);
    assert!(writer.poll().contains(Events::ERR));

    // By contrast, the peer going away is an event: HUP (LTP epoll_wait11).
    let ep = EventPoll::new();
    let (reader, writer) = pipe(PIPE_DEFAULT_CAPACITY);
    ep.add(&reader, 0, ev(Events::IN, 3)).unwrap();
    let (got, _) = wait_while(&ep, MUST, move || drop(writer));
    assert_eq!(got, vec![(3, Events::HUP)]);
    drop(reader);
}

#[test]
fn closing_fds_while_a_thread_is_in_epoll_wait() {
    let table = Arc::new(FdTable::<BasicFile>::new());
    let epfd = table.epoll_create1(0).unwrap();
    let efd_fd = table.eventfd(0, 0).unwrap();
    let add = EpollEvent::new(Events::IN, 9);
    table
        .epoll_ctl(epfd, CtlOp::Add.to_raw(), efd_fd, Some(&add))
        .unwrap();

    // Closing the watched fd (its last reference) removes the registration
    // and wakes nobody: the wait times out.
    let spawn_wait = |timeout_ms: i32| {
        let (tx, rx) = mpsc::channel();
        let table = table.clone();
        let t = thread::spawn(move || {
            tx.send(current_tid()).unwrap();
            let mut buf = [EpollEvent::default(); 4];
            let n = table.epoll_wait(epfd, &mut buf, 4, timeout_ms).unwrap();
            buf[..n]
                .iter()
                .map(|e| (e.data, e.events))
                .collect::<Vec<_>>()
        });
        wait_until_asleep(&[rx.recv_timeout(MUST).unwrap()]);
        t
    };
    let t = spawn_wait(200);
    table.close(efd_fd).unwrap();
    assert_eq!(t.join().unwrap(), vec![]);
    let del = table.epoll_ctl(epfd, CtlOp::Del.to_raw(), efd_fd, None);
    assert!(del.is_err(), "closed fd still accepted by epoll_ctl");

    // Closing the epoll fd itself while a thread waits on it does not end
    // the wait: the waiter holds the epoll, and an event still arrives.
    let efd_fd = table.eventfd(0, 0).unwrap();
    table
        .epoll_ctl(epfd, CtlOp::Add.to_raw(), efd_fd, Some(&add))
        .unwrap();
    let t = spawn_wait(MUST.as_millis() as i32);
    table.close(epfd).unwrap();
    thread::sleep(GRACE);
    assert!(!t.is_finished(), "closing the epoll fd ended the wait");
    table.write(efd_fd, &1u64.to_ne_bytes()).unwrap();
    assert_eq!(t.join().unwrap(), vec![(9, Events::IN)]);
}

// --- stress -------------------------------------------------------------------

const STRESS_SOURCES: usize = 6;

fn tag(src: usize, generation: u64) -> u64 {
    ((src as u64) << 32) | generation
}

fn untag(data: u64) -> (usize, u64) {
    ((data >> 32) as usize, data & 0xffff_ffff)
}

/// Writers, waiters and a `ctl` thread on one epoll, at random. Every
/// registration carries a generation in its data; `Del` and `Mod` retire
/// the old generation. Checked throughout: a harvest that starts after a
/// `Del` or `Mod` returned never reports the retired generation (§1.4, A5),
/// every report is exactly `IN`, no item appears twice in one result. At
/// the end every source, freshly registered and written once, is reported
/// exactly once: nothing is stuck.
fn stress_mixed(ops: usize, seed: u64) {
    let ep = EventPoll::new();
    let srcs: Vec<Arc<EventFd>> = (0..STRESS_SOURCES).map(|_| efd(0)).collect();
    // Generations below this are retired, per source.
    let live_from: Vec<AtomicU64> = (0..STRESS_SOURCES).map(|_| AtomicU64::new(1)).collect();
    let modes = [
        Events::empty(),
        Events::ET,
        Events::ONESHOT,
        Events::ET | Events::ONESHOT,
    ];
    let stop = AtomicBool::new(false);
    let reports = AtomicUsize::new(0);
    let mut registered = [false; STRESS_SOURCES];
    let mut generation = [1u64; STRESS_SOURCES];

    thread::scope(|s| {
        for w in 0..2u64 {
            let (ep, srcs, live_from, stop, reports) = (&ep, &srcs, &live_from, &stop, &reports);
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed ^ (w + 1));
                while !stop.load(Ordering::SeqCst) {
                    let floor: Vec<u64> =
                        live_from.iter().map(|g| g.load(Ordering::SeqCst)).collect();
                    let max = rng.random_range(1..=4);
                    let got = harvest(ep, max, Some(Duration::from_millis(5)));
                    let mut seen = [false; STRESS_SOURCES];
                    for (data, events) in got {
                        let (src, generation) = untag(data);
                        assert!(src < STRESS_SOURCES, "bad data {data:#x}");
                        assert!(
                            generation >= floor[src],
                            "source {src}: retired generation {generation} reported (live from {})",
                            floor[src]
                        );
                        assert_eq!(events, Events::IN, "source {src}");
                        assert!(!seen[src], "source {src} twice in one result");
                        seen[src] = true;
                        reports.fetch_add(1, Ordering::Relaxed);
                        if rng.random_bool(0.7) {
                            let _ = srcs[src].read();
                        }
                    }
                }
            });
        }
        {
            let (srcs, stop) = (&srcs, &stop);
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed ^ 0x77);
                while !stop.load(Ordering::SeqCst) {
                    srcs[rng.random_range(0..STRESS_SOURCES)].write(1).unwrap();
                    if rng.random_bool(0.3) {
                        thread::yield_now();
                    }
                }
            });
        }
        let _stop = StopOnDrop(&stop);
        let mut rng = SmallRng::seed_from_u64(seed);
        // At least `ops` operations, and on until something was reported
        // (a loaded machine may not have run the waiters yet).
        let deadline = Instant::now() + MUST;
        let mut done = 0;
        while done < ops || (reports.load(Ordering::Relaxed) == 0 && Instant::now() < deadline) {
            done += 1;
            let i = rng.random_range(0..STRESS_SOURCES);
            let mode = modes[rng.random_range(0..modes.len())];
            if !registered[i] {
                let data = tag(i, generation[i]);
                ep.add(&srcs[i], i as i32, ev(Events::IN | mode, data))
                    .unwrap();
                registered[i] = true;
            } else if rng.random_bool(0.5) {
                generation[i] += 1;
                let data = tag(i, generation[i]);
                ep.modify(&srcs[i], i as i32, ev(Events::IN | mode, data))
                    .unwrap();
                live_from[i].store(generation[i], Ordering::SeqCst);
            } else {
                ep.delete(&srcs[i], i as i32).unwrap();
                registered[i] = false;
                generation[i] += 1;
                live_from[i].store(generation[i], Ordering::SeqCst);
            }
            if rng.random_bool(0.2) {
                thread::yield_now();
            }
        }
    });
    assert!(
        reports.load(Ordering::Relaxed) > 0,
        "nothing was ever reported"
    );

    // Quiesced: re-register everything ET with a fresh generation, drained.
    for (i, src) in srcs.iter().enumerate() {
        if registered[i] {
            ep.delete(src, i as i32).unwrap();
        }
        let _ = src.read();
        generation[i] += 1;
        ep.add(
            src,
            i as i32,
            ev(Events::IN | Events::ET, tag(i, generation[i])),
        )
        .unwrap();
    }
    assert_eq!(harvest0(&ep, 16), vec![], "stale reports after quiescing");
    assert_eq!(ep.len(), STRESS_SOURCES);
    for src in &srcs {
        src.write(1).unwrap();
    }
    let mut seen = vec![0; STRESS_SOURCES];
    let deadline = Instant::now() + MUST;
    while seen.contains(&0) && Instant::now() < deadline {
        for (data, events) in harvest(&ep, 16, Some(MUST)) {
            let (src, generation_seen) = untag(data);
            assert_eq!(generation_seen, generation[src]);
            assert_eq!(events, Events::IN);
            seen[src] += 1;
        }
    }
    assert_eq!(seen, vec![1; STRESS_SOURCES], "final edges per source");
    assert_eq!(harvest0(&ep, 16), vec![]);
}

#[test]
fn stress_mixed_ctl_wait_write() {
    for round in 0..iters(2) {
        stress_mixed(3000, 0x5eed + round as u64);
    }
}

/// The race scenarios above, looped and run side by side (each in its own
/// thread, on its own epolls), so that they also disturb one another's
/// timing.
#[test]
fn stress_loops_the_races() {
    let rounds = iters(3);
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..rounds {
                mod_vs_blocked_wait(Events::ET, 300);
            }
        });
        s.spawn(|| {
            for round in 0..rounds {
                timeout_instant_race(40, 1000 + round as u64);
                timeout_vs_blocked_waiter(20, 2000 + round as u64);
            }
        });
        s.spawn(|| {
            for _ in 0..rounds {
                zero_timeout_no_false_empty(16, 50);
                producer_consumer_locked_source(3000);
                producer_consumer_nested(2000);
            }
        });
        s.spawn(|| {
            for round in 0..rounds {
                stress_mixed(500, 0xabc + round as u64);
            }
        });
        s.spawn(|| {
            for _ in 0..rounds {
                lt_chain_wake(1);
                distinct_events_many_waiters(1);
            }
        });
    });
}

// --- EventPoll::interrupt: how an owner shutting down releases waiters ------

/// Four threads asleep in `wait` (three without a timeout, one with a long
/// one) are all released with `EBADF` by `interrupt`; later waits that
/// would block fail at once, a zero timeout still returns 0, and an event
/// that is ready is still harvested.
#[test]
fn interrupt_releases_every_blocked_waiter_with_ebadf() {
    let ep = EventPoll::new();
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let ep = ep.clone();
            let tx = tx.clone();
            thread::spawn(move || {
                tx.send(current_tid()).unwrap();
                let mut buf = [EpollEvent::default(); 4];
                let timeout = (i == 3).then_some(WAITER_LIMIT);
                ep.wait(&mut buf, timeout)
            })
        })
        .collect();
    let tids: Vec<_> = (0..4).map(|_| rx.recv_timeout(MUST).unwrap()).collect();
    wait_until_asleep(&tids);
    assert!(!ep.is_interrupted());
    ep.interrupt();
    assert!(ep.is_interrupted());
    let start = Instant::now();
    for h in handles {
        assert_eq!(h.join().unwrap(), Err(eventpoll::Errno::EBADF));
    }
    assert!(start.elapsed() < MUST, "waiters not released");
    let mut buf = [EpollEvent::default(); 4];
    assert_eq!(
        ep.wait(&mut buf, Some(Duration::from_secs(5))),
        Err(eventpoll::Errno::EBADF)
    );
    assert_eq!(ep.wait(&mut buf, Some(Duration::ZERO)), Ok(0));
    let e = efd(1);
    ep.add(&e, 7, ev(Events::IN, 7)).unwrap();
    assert_eq!(harvest(&ep, 4, None), vec![(7, Events::IN)]);
}

/// `interrupt` racing waiters that are just going to sleep: none of them
/// may stay asleep (a lost interrupt would hang until `WAITER_LIMIT`).
#[test]
fn interrupt_racing_new_waiters_loses_none() {
    for _ in 0..iters(50) {
        let ep = EventPoll::new();
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let ep = ep.clone();
                thread::spawn(move || {
                    let mut buf = [EpollEvent::default(); 1];
                    let start = Instant::now();
                    let r = ep.wait(&mut buf, Some(WAITER_LIMIT));
                    (r, start.elapsed())
                })
            })
            .collect();
        ep.interrupt();
        for h in handles {
            let (r, took) = h.join().unwrap();
            assert_eq!(r, Err(eventpoll::Errno::EBADF));
            assert!(took < MUST, "a waiter missed the interrupt");
        }
    }
}
