//! Model-based test: `EventPoll` against a tiny pure model of Linux's ready
//! list, driven through mock event sources.
//!
//! The model (`Model` below) is a `Vec` of registrations and a `VecDeque`
//! ready list with Linux's rules (EPOLL_SPEC §0, §1.4, §1.6, §4.2–4.4):
//!
//! - a wake-up calls the source's non-exclusive entries newest first (Linux
//!   adds them at the head of the wait queue), then its `EXCLUSIVE` entries
//!   oldest first (added at the tail; with no blocked waiter none consumes
//!   the wake-up, so all are called);
//! - the callback ignores a disarmed item and a non-empty key that misses
//!   the mask (A4), merges a callback for a queued item (A3, FIFO dedupe);
//! - `epoll_wait` takes the list, re-polls each item (`revents = readiness &
//!   mask`; an item with nothing is dropped, A5), stops at `maxevents`,
//!   re-queues delivered LT items at the tail, not ET ones, disarms ONESHOT
//!   (A6), and rebuilds the list as `[undelivered] ++ [delivered LT]` (the
//!   round robin of §1.6 item 39);
//! - ADD and MOD re-poll and queue a ready item that is not queued; MOD
//!   never dequeues; DEL unlinks (§1.4 items 25, 27, 28); ADD/MOD/DEL errno
//!   rules (EEXIST, ENOENT, the EXCLUSIVE rules; WAKEUP is cleared);
//! - polling the epoll itself drops non-ready items from the front until it
//!   finds a ready one and consumes nothing (§1.8);
//! - dropping a source removes its registrations without an event.
//!
//! Each source is a `Mock` whose readiness the test sets directly and whose
//! `WaitQueue` it wakes with a chosen key (the empty key included); half of
//! them hand epoll a readiness cell, which the harvest reads instead of
//! polling the source. Four
//! sources, each registrable under two fd numbers (two keys for one object,
//! A1), are driven by random sequences of: set readiness, wake, set and
//! wake, ADD / MOD / DEL with random masks and data, `wait(timeout 0,
//! maxevents 0..=4)`, poll of the epoll, and drop of a source. After every
//! operation the result, `EventPoll::len` and the `Counters` (callbacks,
//! enqueues, dedupe_hits, stale_drops, and wakeups, which stays 0 with no
//! blocked waiter) must equal the model's. On a mismatch the test fails
//! with the seed, the operation log and a shrunk sequence.
//!
//! By default 10,000 sequences of 60 operations run from a fixed base seed.
//! Run more seeds (sequence `i` uses the seed `base + i`, so a failing one
//! reruns alone with `EVENTPOLL_MODEL_SEED=base+i EVENTPOLL_MODEL_SEQUENCES=1`):
//!
//! ```text
//! EVENTPOLL_MODEL_SEED=12345 EVENTPOLL_MODEL_SEQUENCES=100000 \
//!     cargo test -p eventpoll --test model -- --nocapture
//! ```

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod util;

use eventpoll::{
    Counters, CtlOp, EpollEvent, Errno, EventPoll, Events, Pollable, ReadinessCell, WaitQueue,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const OPS_PER_SEQUENCE: usize = 60;
const DEFAULT_SEQUENCES: u64 = 10_000;
const DEFAULT_SEED: u64 = 0x0de1_5eed_0001;
const SOURCES: usize = 4;
/// Each source can be registered under this many fd numbers.
const SLOTS: usize = 2;
const MAX_EVENTS: usize = 4;

// ---------------------------------------------------------------------------
// The mock source
// ---------------------------------------------------------------------------

/// An event source whose readiness the test sets and whose wait queue the
/// test wakes. Some sources hand epoll their readiness as a
/// [`ReadinessCell`] (see [`Cells`]), so the harvest reads it there instead
/// of polling the source: every path must follow the model.
struct Mock {
    ready: Arc<MockReadiness>,
    with_cell: bool,
    wq: WaitQueue,
}

struct MockReadiness(Mutex<Events>);

impl ReadinessCell for MockReadiness {
    fn poll(&self) -> Events {
        *self.0.lock().expect("mock lock")
    }
}

impl Mock {
    fn set(&self, ready: Events) {
        *self.ready.0.lock().expect("mock lock") = ready;
    }
}

impl Pollable for Mock {
    fn poll(&self) -> Events {
        self.ready.poll()
    }

    fn wait_queue(&self) -> &WaitQueue {
        &self.wq
    }

    fn readiness_cell(&self) -> Option<Arc<dyn ReadinessCell>> {
        self.with_cell
            .then(|| self.ready.clone() as Arc<dyn ReadinessCell>)
    }
}

fn fd_of(src: usize, slot: usize) -> i32 {
    (src * SLOTS + slot) as i32
}

// ---------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Set the readiness without waking anyone.
    Set {
        src: usize,
        ready: Events,
    },
    /// Wake the source's queue with `key` without changing readiness.
    Wake {
        src: usize,
        key: Events,
    },
    /// Set the readiness, then wake with `key`.
    Change {
        src: usize,
        ready: Events,
        key: Events,
    },
    Ctl {
        op: CtlOp,
        src: usize,
        slot: usize,
        events: Events,
        data: u64,
    },
    Wait {
        max: usize,
    },
    /// Poll the epoll itself (`Pollable::poll` on the `EventPoll`).
    PollEpoll,
    /// Drop the source (its last handle): its registrations go away.
    Drop {
        src: usize,
    },
}

impl Op {
    fn source(&self) -> Option<usize> {
        match *self {
            Op::Set { src, .. }
            | Op::Wake { src, .. }
            | Op::Change { src, .. }
            | Op::Ctl { src, .. }
            | Op::Drop { src } => Some(src),
            Op::Wait { .. } | Op::PollEpoll => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Set { src, ready } => write!(f, "set s{src} ready={ready:?}"),
            Op::Wake { src, key } => write!(f, "wake s{src} key={key:?}"),
            Op::Change { src, ready, key } => {
                write!(f, "set s{src} ready={ready:?}, wake key={key:?}")
            }
            Op::Ctl {
                op,
                src,
                slot,
                events,
                data,
            } => match op {
                CtlOp::Del => write!(f, "DEL s{src} fd={}", fd_of(src, slot)),
                _ => write!(
                    f,
                    "{op:?} s{src} fd={} {events:?} data={data}",
                    fd_of(src, slot)
                ),
            },
            Op::Wait { max } => write!(f, "wait max={max} timeout=0"),
            Op::PollEpoll => write!(f, "poll the epoll"),
            Op::Drop { src } => write!(f, "drop s{src}"),
        }
    }
}

/// The result of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Res {
    Unit,
    Ctl(Result<(), Errno>),
    Wait(Result<Vec<(u64, Events)>, Errno>),
    Poll(Events),
    Skipped,
    /// eventpoll panicked (message and location).
    Panicked(String),
}

impl fmt::Display for Res {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Res::Unit | Res::Ctl(Ok(())) => write!(f, "ok"),
            Res::Ctl(Err(e)) | Res::Wait(Err(e)) => write!(f, "Err({e:?})"),
            Res::Wait(Ok(evs)) => {
                let list: Vec<String> = evs
                    .iter()
                    .map(|(data, ev)| format!("({data}, {ev:?})"))
                    .collect();
                write!(f, "[{}]", list.join(", "))
            }
            Res::Poll(ev) => write!(f, "{ev:?}"),
            Res::Skipped => write!(f, "skipped (source dropped)"),
            Res::Panicked(msg) => write!(f, "PANICKED: {msg}"),
        }
    }
}

/// What is compared after each operation.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    res: Res,
    len: usize,
    counters: Counters,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        write!(
            f,
            "{}  (len {}, callbacks {}, enqueues {}, dedupe {}, stale {}, wakeups {})",
            self.res, self.len, c.callbacks, c.enqueues, c.dedupe_hits, c.stale_drops, c.wakeups
        )
    }
}

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

fn random_bits(rng: &mut SmallRng, bits: &[(Events, f64)]) -> Events {
    let mut out = Events::empty();
    for &(bit, p) in bits {
        if rng.random_bool(p) {
            out |= bit;
        }
    }
    out
}

fn random_readiness(rng: &mut SmallRng) -> Events {
    random_bits(
        rng,
        &[
            (Events::IN, 0.5),
            (Events::OUT, 0.4),
            (Events::PRI, 0.15),
            (Events::RDNORM, 0.2),
            (Events::WRNORM, 0.2),
            (Events::RDHUP, 0.1),
            (Events::ERR, 0.07),
            (Events::HUP, 0.07),
        ],
    )
}

fn random_key(rng: &mut SmallRng, ready: Events) -> Events {
    match rng.random_range(0..10) {
        0..=2 => Events::empty(),
        3..=6 => ready,
        _ => random_readiness(rng),
    }
}

fn random_mask(rng: &mut SmallRng) -> Events {
    let mut mask = random_bits(
        rng,
        &[
            (Events::IN, 0.55),
            (Events::OUT, 0.45),
            (Events::PRI, 0.15),
            (Events::RDNORM, 0.1),
            (Events::WRNORM, 0.1),
            (Events::RDHUP, 0.15),
            (Events::ERR, 0.1),
            (Events::HUP, 0.1),
            (Events::ET, 0.3),
            (Events::ONESHOT, 0.25),
            (Events::WAKEUP, 0.05),
        ],
    );
    if rng.random_bool(0.1) {
        mask |= Events::EXCLUSIVE;
        if rng.random_bool(0.6) {
            mask &= Events::EXCLUSIVE_OK;
        }
    }
    mask
}

fn generate(rng: &mut SmallRng) -> Vec<Op> {
    (0..OPS_PER_SEQUENCE)
        .map(|_| {
            let src = rng.random_range(0..SOURCES);
            match rng.random_range(0..100) {
                0..=19 => {
                    let ready = random_readiness(rng);
                    let key = random_key(rng, ready);
                    Op::Change { src, ready, key }
                }
                20..=26 => Op::Set {
                    src,
                    ready: random_readiness(rng),
                },
                27..=36 => {
                    let ready = random_readiness(rng);
                    Op::Wake {
                        src,
                        key: random_key(rng, ready),
                    }
                }
                37..=67 => {
                    let op = match rng.random_range(0..10) {
                        0..=4 => CtlOp::Add,
                        5..=7 => CtlOp::Mod,
                        _ => CtlOp::Del,
                    };
                    Op::Ctl {
                        op,
                        src,
                        slot: rng.random_range(0..SLOTS),
                        events: random_mask(rng),
                        data: rng.random_range(0..1000),
                    }
                }
                68..=92 => Op::Wait {
                    max: rng.random_range(1..=MAX_EVENTS),
                },
                93..=96 => Op::PollEpoll,
                97 => Op::Wait { max: 0 },
                _ => Op::Drop { src },
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct Item {
    src: usize,
    fd: i32,
    /// With `ERR | HUP` and the mode bits, as Linux stores it.
    mask: Events,
    data: u64,
}

#[derive(Default)]
struct Model {
    ready: [Events; SOURCES],
    dropped: [bool; SOURCES],
    /// Registrations in ADD order (the wait-queue order depends on it).
    items: Vec<Item>,
    /// The ready list, as (source, fd) keys.
    rdllist: VecDeque<(usize, i32)>,
    counters: Counters,
}

impl Model {
    fn find(&self, src: usize, fd: i32) -> Option<usize> {
        self.items.iter().position(|i| i.src == src && i.fd == fd)
    }

    fn item(&self, key: (usize, i32)) -> &Item {
        &self.items[self.find(key.0, key.1).expect("queued item is registered")]
    }

    fn is_queued(&self, key: (usize, i32)) -> bool {
        self.rdllist.contains(&key)
    }

    /// The source's wait queue is woken with `key`: Linux's
    /// `__wake_up_common` calls non-exclusive entries newest first, then
    /// exclusive ones oldest first.
    fn wake(&mut self, src: usize, key: Events) {
        let shared = self
            .items
            .iter()
            .rev()
            .filter(|i| i.src == src && !i.mask.contains(Events::EXCLUSIVE));
        let exclusive = self
            .items
            .iter()
            .filter(|i| i.src == src && i.mask.contains(Events::EXCLUSIVE));
        let order: Vec<(usize, i32)> = shared.chain(exclusive).map(|i| (i.src, i.fd)).collect();
        for k in order {
            self.callback(k, key);
        }
    }

    /// `ep_poll_callback`.
    fn callback(&mut self, k: (usize, i32), key: Events) {
        self.counters.callbacks += 1;
        let mask = self.item(k).mask;
        if (mask & !Events::PRIVATE).is_empty() || (!key.is_empty() && (key & mask).is_empty()) {
            return;
        }
        if self.is_queued(k) {
            self.counters.dedupe_hits += 1;
        } else {
            self.rdllist.push_back(k);
            self.counters.enqueues += 1;
        }
    }

    /// ADD/MOD finding the source ready: queue unless queued.
    fn queue_if_ready(&mut self, k: (usize, i32)) {
        let mask = self.item(k).mask;
        if !(self.ready[k.0] & mask).is_empty() && !self.is_queued(k) {
            self.rdllist.push_back(k);
            self.counters.enqueues += 1;
        }
    }

    fn ctl(
        &mut self,
        op: CtlOp,
        src: usize,
        fd: i32,
        events: Events,
        data: u64,
    ) -> Result<(), Errno> {
        let events = events - Events::WAKEUP;
        // EXCLUSIVE: never with MOD, and only beside EXCLUSIVE_OK bits.
        if op != CtlOp::Del
            && events.contains(Events::EXCLUSIVE)
            && (op == CtlOp::Mod || !(events - Events::EXCLUSIVE_OK).is_empty())
        {
            return Err(Errno::EINVAL);
        }
        let mask = events | Events::ERR | Events::HUP;
        match (op, self.find(src, fd)) {
            (CtlOp::Add, Some(_)) => Err(Errno::EEXIST),
            (CtlOp::Add, None) => {
                self.items.push(Item {
                    src,
                    fd,
                    mask,
                    data,
                });
                self.queue_if_ready((src, fd));
                Ok(())
            }
            (CtlOp::Mod | CtlOp::Del, None) => Err(Errno::ENOENT),
            (CtlOp::Mod, Some(i)) => {
                if self.items[i].mask.contains(Events::EXCLUSIVE) {
                    return Err(Errno::EINVAL);
                }
                self.items[i].mask = mask;
                self.items[i].data = data;
                self.queue_if_ready((src, fd));
                Ok(())
            }
            (CtlOp::Del, Some(i)) => {
                self.items.remove(i);
                self.rdllist.retain(|&k| k != (src, fd));
                Ok(())
            }
        }
    }

    /// `ep_send_events` + `ep_done_scan`.
    fn wait(&mut self, max: usize) -> Result<Vec<(u64, Events)>, Errno> {
        if max == 0 {
            return Err(Errno::EINVAL);
        }
        let mut txlist = std::mem::take(&mut self.rdllist);
        let mut delivered_lt = VecDeque::new();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(k) = txlist.pop_front() else {
                break;
            };
            let i = self.find(k.0, k.1).expect("queued item is registered");
            let item = self.items[i];
            let revents = self.ready[k.0] & item.mask;
            if revents.is_empty() {
                self.counters.stale_drops += 1;
                continue;
            }
            out.push((item.data, revents));
            if item.mask.contains(Events::ONESHOT) {
                self.items[i].mask &= Events::PRIVATE;
            } else if !item.mask.contains(Events::ET) {
                delivered_lt.push_back(k);
            }
        }
        txlist.extend(delivered_lt);
        self.rdllist = txlist;
        Ok(out)
    }

    /// `ep_eventpoll_poll`: drop non-ready items from the front until a
    /// ready one is found; consume nothing.
    fn poll_epoll(&mut self) -> Events {
        while let Some(&k) = self.rdllist.front() {
            if !(self.ready[k.0] & self.item(k).mask).is_empty() {
                return Events::IN | Events::RDNORM;
            }
            self.rdllist.pop_front();
            self.counters.stale_drops += 1;
        }
        Events::empty()
    }

    fn apply(&mut self, op: Op) -> Res {
        match op {
            Op::Set { src, ready } => {
                self.ready[src] = ready;
                Res::Unit
            }
            Op::Wake { src, key } => {
                self.wake(src, key);
                Res::Unit
            }
            Op::Change { src, ready, key } => {
                self.ready[src] = ready;
                self.wake(src, key);
                Res::Unit
            }
            Op::Ctl {
                op,
                src,
                slot,
                events,
                data,
            } => Res::Ctl(self.ctl(op, src, fd_of(src, slot), events, data)),
            Op::Wait { max } => Res::Wait(self.wait(max)),
            Op::PollEpoll => Res::Poll(self.poll_epoll()),
            Op::Drop { src } => {
                self.dropped[src] = true;
                self.items.retain(|i| i.src != src);
                self.rdllist.retain(|&(s, _)| s != src);
                Res::Unit
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The real thing
// ---------------------------------------------------------------------------

/// Which sources hand epoll a readiness cell. With none, every harvest
/// polls the sources (Linux's splice-and-scan); with all, every harvest
/// reads the cells in one hold of the ready-list lock; with some, a harvest
/// takes either path depending on what is registered.
#[derive(Clone, Copy, Debug)]
enum Cells {
    None,
    All,
    OddSources,
}

impl Cells {
    /// The pattern of the sequence of `seed` (a third of the seeds each),
    /// so that a sequence rerun alone from its seed has its pattern.
    fn of_seed(seed: u64) -> Cells {
        [Cells::None, Cells::All, Cells::OddSources][(seed % 3) as usize]
    }

    fn has_cell(self, src: usize) -> bool {
        match self {
            Cells::None => false,
            Cells::All => true,
            Cells::OddSources => src % 2 == 1,
        }
    }
}

struct Real {
    ep: Arc<EventPoll>,
    sources: Vec<Option<Arc<Mock>>>,
}

impl Real {
    fn new(cells: Cells) -> Real {
        Real {
            ep: EventPoll::new(),
            sources: (0..SOURCES)
                .map(|src| {
                    Some(Arc::new(Mock {
                        ready: Arc::new(MockReadiness(Mutex::new(Events::empty()))),
                        with_cell: cells.has_cell(src),
                        wq: WaitQueue::new(),
                    }))
                })
                .collect(),
        }
    }

    fn source(&self, src: usize) -> &Arc<Mock> {
        self.sources[src].as_ref().expect("live source")
    }

    fn apply(&mut self, op: Op) -> Res {
        match op {
            Op::Set { src, ready } => {
                self.source(src).set(ready);
                Res::Unit
            }
            Op::Wake { src, key } => {
                self.source(src).wq.wake(key);
                Res::Unit
            }
            Op::Change { src, ready, key } => {
                let source = self.source(src);
                source.set(ready);
                source.wq.wake(key);
                Res::Unit
            }
            Op::Ctl {
                op,
                src,
                slot,
                events,
                data,
            } => {
                let target: Arc<dyn Pollable> = self.source(src).clone();
                let event = (op != CtlOp::Del).then_some(EpollEvent::new(events, data));
                Res::Ctl(self.ep.ctl(op, &target, fd_of(src, slot), event))
            }
            Op::Wait { max } => {
                let mut buf = [EpollEvent::default(); MAX_EVENTS];
                Res::Wait(
                    self.ep
                        .wait(&mut buf[..max], Some(Duration::ZERO))
                        .map(|n| buf[..n].iter().map(|e| (e.data, e.events)).collect()),
                )
            }
            Op::PollEpoll => Res::Poll(Pollable::poll(&*self.ep)),
            Op::Drop { src } => {
                self.sources[src] = None;
                Res::Unit
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Running, shrinking, reporting
// ---------------------------------------------------------------------------

struct Entry {
    index: usize,
    op: Op,
    model: Observed,
    real: Observed,
}

struct Run {
    log: Vec<Entry>,
    divergence: Option<usize>,
}

fn run(ops: &[Op], cells: Cells) -> Run {
    let mut model = Model::default();
    let mut real = Real::new(cells);
    let mut log = Vec::new();
    let mut divergence = None;
    for (index, &op) in ops.iter().enumerate() {
        let skipped = op.source().is_some_and(|src| model.dropped[src]);
        let model_res = if skipped {
            Res::Skipped
        } else {
            model.apply(op)
        };
        let model_obs = Observed {
            res: model_res,
            len: model.items.len(),
            counters: model.counters,
        };
        let real_obs = util::catch_panic(|| {
            let res = if skipped {
                Res::Skipped
            } else {
                real.apply(op)
            };
            Observed {
                res,
                len: real.ep.len(),
                counters: real.ep.counters(),
            }
        })
        .unwrap_or_else(|message| Observed {
            res: Res::Panicked(message),
            len: usize::MAX,
            counters: Counters::default(),
        });
        let same = model_obs == real_obs;
        log.push(Entry {
            index,
            op,
            model: model_obs,
            real: real_obs,
        });
        if !same {
            divergence = Some(index);
            break;
        }
    }
    Run { log, divergence }
}

fn format_log(out: &mut String, run: &Run) {
    for entry in &run.log {
        if entry.model == entry.real {
            let _ = writeln!(
                out,
                "    #{:<2} {} -> {}",
                entry.index, entry.op, entry.model
            );
        } else {
            let _ = writeln!(out, "    #{:<2} {}   <-- DIVERGES", entry.index, entry.op);
            let _ = writeln!(out, "          model:     {}", entry.model);
            let _ = writeln!(out, "          eventpoll: {}", entry.real);
        }
    }
}

#[test]
fn eventpoll_matches_the_ready_list_model() {
    let base = util::env_u64("EVENTPOLL_MODEL_SEED").unwrap_or(DEFAULT_SEED);
    let sequences = util::env_u64("EVENTPOLL_MODEL_SEQUENCES").unwrap_or(DEFAULT_SEQUENCES);
    println!(
        "model: EVENTPOLL_MODEL_SEED={base:#x} EVENTPOLL_MODEL_SEQUENCES={sequences} \
         ({OPS_PER_SEQUENCE} ops each)"
    );
    let mut events = 0u64;
    let mut counters = Counters::default();
    for index in 0..sequences {
        let seed = base.wrapping_add(index);
        let ops = generate(&mut SmallRng::seed_from_u64(seed));
        let cells = Cells::of_seed(seed);
        let result = run(&ops, cells);
        let Some(at) = result.divergence else {
            for entry in &result.log {
                if let Res::Wait(Ok(evs)) = &entry.model.res {
                    events += evs.len() as u64;
                }
            }
            if let Some(last) = result.log.last() {
                let c = last.model.counters;
                counters.callbacks += c.callbacks;
                counters.enqueues += c.enqueues;
                counters.dedupe_hits += c.dedupe_hits;
                counters.stale_drops += c.stale_drops;
            }
            continue;
        };
        let mut report = String::new();
        let _ = writeln!(
            report,
            "eventpoll diverges from the ready-list model\n  base seed {base:#x}, sequence \
             {index}, readiness cells: {cells:?} (rerun alone: EVENTPOLL_MODEL_SEED={seed:#x} \
             EVENTPOLL_MODEL_SEQUENCES=1)"
        );
        let _ = writeln!(report, "  operations up to the divergence (op #{at}):");
        format_log(&mut report, &result);
        let shrunk = util::shrink(&ops[..=at], |ops| run(ops, cells).divergence);
        let _ = writeln!(report, "  shrunk to {} operations:", shrunk.len());
        format_log(&mut report, &run(&shrunk, cells));
        panic!("{report}");
    }
    println!(
        "model: {sequences} sequences agree; {events} events reported, {} callbacks, {} \
         enqueues, {} dedupe hits, {} stale drops",
        counters.callbacks, counters.enqueues, counters.dedupe_hits, counters.stale_drops
    );
}
