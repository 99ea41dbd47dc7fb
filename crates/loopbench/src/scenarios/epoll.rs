//! The `epoll` scenario: usertcp's `eventpoll` against the kernel's epoll.
//!
//! usertcp's side is an [`EventPoll`] watching [`EventFd`]s; the kernel's is
//! an `epoll_create1` descriptor watching real `eventfd(2)` descriptors,
//! driven through [`crate::kernel`]. Both sides do the same calls in the
//! same order on the same thread, level-triggered `IN` interest, timeout
//! zero unless stated, and every result is passed through
//! [`std::hint::black_box`] so nothing is optimised away.
//!
//! | row | what one iteration does | target |
//! |---|---|---|
//! | ctl ADD / MOD / DEL | one `epoll_ctl` on a set of 1k eventfds (ADD fills it, DEL empties it, MOD changes the data of a registered one) | usertcp >= 10x faster |
//! | wait, nothing ready | `epoll_wait(timeout 0)` with 1k idle eventfds registered | >= 10x |
//! | wait, 64 ready | `epoll_wait` returning 64 ready LT events (64 registered); per event | >= 5x |
//! | signal + wait + drain | write 1 to an eventfd, wait (1 event), read it back | >= 5x |
//! | wait with 1k / 1M registered | as "64 ready", 64 of N registered ready (spread evenly); per event | usertcp's 1M figure within 1.3x of its 1k figure |
//! | wake-up latency | thread A writes B's eventfd and blocks in wait; B, blocked in wait, wakes, reads, writes A's eventfd; half the round trip | no worse than the kernel |
//! | memory per watch | bytes allocated by N registrations / N (sources allocated first); kernel: slab object sizes of `eventpoll_epi` + `eventpoll_pwq` | usertcp <= 200 B |

use std::hint::black_box;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use eventpoll::{EfdFlags, EpollEvent, Errno, EventFd, EventPoll, Events};

use crate::alloc_count::Counting;
use crate::kernel::{self, CtlOp};
use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Figure, Metric, Report, Row, Target};

use super::{boxed, count, measure_sides, raise_nofile_limit};

/// Eventfds in the ctl set.
const CTL_FDS: usize = 1_000;
/// Idle eventfds registered for the empty wait.
const IDLE_FDS: usize = 1_000;
/// Ready events per wait (and the event buffer size everywhere).
const READY: usize = 64;
/// The small registered set of the scaling rows.
const SMALL_SET: usize = 1_000;
/// The large registered set of the scaling rows.
const LARGE_SET: usize = 1_000_000;
/// Registrations counted for the memory figure.
const MEMORY_WATCHES: usize = 100_000;
/// The value thread A writes to tell its partner to stop.
const STOP: u64 = 1 << 40;
/// The value the partner writes back when it failed.
const FAILED: u64 = 1 << 41;

/// Runs the scenario and returns its report (progress goes to stderr).
pub fn run(cfg: &Config) -> Report {
    let machine = Machine::detect();
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut footer = vec![
        cfg.describe(),
        "usertcp: eventpoll::EventPoll watching eventpoll::EventFd; kernel: epoll_create1/epoll_ctl/\
         epoll_wait on eventfd(2) via libc. Level-triggered EPOLLIN, timeout 0, 64-slot event \
         buffer, unless stated."
            .to_owned(),
    ];

    progress("ctl ADD / MOD / DEL");
    for op in [CtlOp::Add, CtlOp::Mod, CtlOp::Del] {
        let (user, kern) = pair(cfg, user_ctl(op), kernel_ctl(op), 1.0);
        rows.push(
            Row::new(
                format!("ctl {} (set of 1k eventfds)", op_name(op)),
                Metric::NsPerOp,
                user,
                kern,
            )
            .target(Target::VsKernelAtLeast(10.0)),
        );
    }

    progress("wait, nothing ready");
    let (user, kern) = pair(
        cfg,
        user_set(IDLE_FDS, 0).map(|set| user_wait(set, 0)),
        kernel_set(IDLE_FDS, 0).map(|set| kernel_wait(set, 0)),
        1.0,
    );
    rows.push(
        Row::new(
            "wait, nothing ready, timeout 0 (1k registered)",
            Metric::NsPerOp,
            user,
            kern,
        )
        .target(Target::VsKernelAtLeast(10.0)),
    );

    progress("wait, 64 ready");
    let (user, kern) = pair(
        cfg,
        user_set(READY, READY).map(|set| user_wait(set, READY)),
        kernel_set(READY, READY).map(|set| kernel_wait(set, READY)),
        READY as f64,
    );
    rows.push(
        Row::new(
            "wait returning 64 ready LT events (64 registered)",
            Metric::NsPerEvent,
            user,
            kern,
        )
        .target(Target::VsKernelAtLeast(5.0)),
    );

    progress("signal + wait + drain");
    let (user, kern) = pair(
        cfg,
        user_set(1, 0).map(user_cycle),
        kernel_set(1, 0).map(kernel_cycle),
        1.0,
    );
    rows.push(
        Row::new(
            "signal + wait + drain (eventfd write, wait, read)",
            Metric::NsPerOp,
            user,
            kern,
        )
        .target(Target::VsKernelAtLeast(5.0)),
    );

    rows.extend(scaling(cfg, &mut footer));
    rows.extend(latency(cfg, &mut footer));

    progress("memory per watch");
    rows.push(memory());

    footer.push(format!(
        "scenario time {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Report {
        scenario: "epoll",
        title: "epoll: usertcp eventpoll vs Linux epoll (eventfd sources), same thread, same run"
            .to_owned(),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}

fn progress(what: &str) {
    eprintln!("[epoll] {what}");
}

fn op_name(op: CtlOp) -> &'static str {
    match op {
        CtlOp::Add => "ADD",
        CtlOp::Mod => "MOD",
        CtlOp::Del => "DEL",
    }
}

fn errno(err: Errno) -> io::Error {
    err.into()
}

fn unexpected(got: usize, want: usize) -> io::Error {
    io::Error::other(format!("wait returned {got} events, expected {want}"))
}

/// Measures one workload on usertcp and on the kernel (either may have
/// failed to set up) and returns the two figures, per iteration divided by
/// `per`.
fn pair<U, K>(cfg: &Config, user: io::Result<U>, kern: io::Result<K>, per: f64) -> (Figure, Figure)
where
    U: FnMut(u64) -> io::Result<Duration> + 'static,
    K: FnMut(u64) -> io::Result<Duration> + 'static,
{
    let mut figures = measure_sides(cfg, per, vec![boxed(user), boxed(kern)]).into_iter();
    let missing = || Figure::Error("not measured".to_owned());
    let user = figures.next().unwrap_or_else(missing);
    let kern = figures.next().unwrap_or_else(missing);
    (user, kern)
}

// ---------------------------------------------------------------------------
// Registered sets

/// usertcp: an epoll and its eventfds. The epoll is dropped first (it
/// unregisters everything), then the sources.
struct UserSet {
    ep: Arc<EventPoll>,
    fds: Vec<Arc<EventFd>>,
}

/// The kernel: an epoll descriptor and its eventfds. The epoll is closed
/// first, which frees every epitem at once, then the eventfds.
struct KernelSet {
    ep: OwnedFd,
    fds: Vec<OwnedFd>,
}

fn user_fds(n: usize) -> io::Result<Vec<Arc<EventFd>>> {
    (0..n)
        .map(|_| EventFd::with_flags(0, EfdFlags::NONBLOCK).map_err(errno))
        .collect()
}

fn kernel_fds(n: usize) -> io::Result<Vec<OwnedFd>> {
    (0..n)
        .map(|_| kernel::eventfd(0, kernel::EFD_NONBLOCK))
        .collect()
}

/// Indices of `ready` items spread evenly over `n`.
fn spread(n: usize, ready: usize) -> impl Iterator<Item = usize> {
    (0..ready).map(move |k| k * n / ready)
}

/// `n` eventfds registered (LT `IN`, data = index) with `ready` of them
/// signalled.
fn user_set(n: usize, ready: usize) -> io::Result<UserSet> {
    let fds = user_fds(n)?;
    user_register(fds, ready)
}

fn user_register(fds: Vec<Arc<EventFd>>, ready: usize) -> io::Result<UserSet> {
    let ep = EventPoll::new();
    for (i, fd) in fds.iter().enumerate() {
        ep.add(fd, i as i32, EpollEvent::new(Events::IN, i as u64))
            .map_err(errno)?;
    }
    for i in spread(fds.len(), ready) {
        fds[i].write(1).map_err(errno)?;
    }
    Ok(UserSet { ep, fds })
}

/// The kernel twin of [`user_set`].
fn kernel_set(n: usize, ready: usize) -> io::Result<KernelSet> {
    let ep = kernel::epoll_create1(kernel::EPOLL_CLOEXEC)?;
    let fds = kernel_fds(n)?;
    kernel_register(ep, fds, ready)
}

/// Registers `fds` with `ep` (created first, so that it never lacks a
/// descriptor when `fds` has used up the limit) and signals `ready` of them.
fn kernel_register(ep: OwnedFd, fds: Vec<OwnedFd>, ready: usize) -> io::Result<KernelSet> {
    for (i, fd) in fds.iter().enumerate() {
        kernel::epoll_ctl(
            ep.as_fd(),
            CtlOp::Add,
            fd.as_fd(),
            kernel::EPOLLIN,
            i as u64,
        )?;
    }
    for i in spread(fds.len(), ready) {
        kernel::eventfd_write(fds[i].as_fd(), 1)?;
    }
    Ok(KernelSet { ep, fds })
}

// ---------------------------------------------------------------------------
// ctl

/// One iteration = one ctl call on a set of [`CTL_FDS`] eventfds. ADD and
/// DEL go in chunks of up to the whole set: ADD fills the set (timed) and
/// it is emptied untimed; DEL empties it (timed) after an untimed fill. MOD
/// changes the data of a registered item.
fn user_ctl(op: CtlOp) -> io::Result<impl FnMut(u64) -> io::Result<Duration>> {
    let fds = user_fds(CTL_FDS)?;
    let ep = EventPoll::new();
    let add = |ep: &EventPoll, fds: &[Arc<EventFd>]| -> io::Result<()> {
        for (i, fd) in fds.iter().enumerate() {
            ep.add(
                fd,
                black_box(i as i32),
                EpollEvent::new(Events::IN, i as u64),
            )
            .map_err(errno)?;
        }
        Ok(())
    };
    let del = |ep: &EventPoll, fds: &[Arc<EventFd>]| -> io::Result<()> {
        for (i, fd) in fds.iter().enumerate() {
            ep.delete(fd, black_box(i as i32)).map_err(errno)?;
        }
        Ok(())
    };
    if op == CtlOp::Mod {
        add(&ep, &fds)?;
    }
    let mut round = 0u64;
    Ok(move |iters: u64| {
        let mut timed = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let chunk = &fds[..left.min(CTL_FDS as u64) as usize];
            match op {
                CtlOp::Add => {
                    let start = Instant::now();
                    add(&ep, chunk)?;
                    timed += start.elapsed();
                    del(&ep, chunk)?;
                }
                CtlOp::Mod => {
                    round += 1;
                    let start = Instant::now();
                    for (i, fd) in chunk.iter().enumerate() {
                        ep.modify(fd, black_box(i as i32), EpollEvent::new(Events::IN, round))
                            .map_err(errno)?;
                    }
                    timed += start.elapsed();
                }
                CtlOp::Del => {
                    add(&ep, chunk)?;
                    let start = Instant::now();
                    del(&ep, chunk)?;
                    timed += start.elapsed();
                }
            }
            left -= chunk.len() as u64;
        }
        Ok(timed)
    })
}

/// The kernel twin of [`user_ctl`].
fn kernel_ctl(op: CtlOp) -> io::Result<impl FnMut(u64) -> io::Result<Duration>> {
    let fds = kernel_fds(CTL_FDS)?;
    let ep = kernel::epoll_create1(kernel::EPOLL_CLOEXEC)?;
    let ctl = |ep: &OwnedFd, fds: &[OwnedFd], op: CtlOp, data: Option<u64>| -> io::Result<()> {
        for (i, fd) in fds.iter().enumerate() {
            let data = data.unwrap_or(i as u64);
            kernel::epoll_ctl(ep.as_fd(), op, black_box(fd.as_fd()), kernel::EPOLLIN, data)?;
        }
        Ok(())
    };
    if op == CtlOp::Mod {
        ctl(&ep, &fds, CtlOp::Add, None)?;
    }
    let mut round = 0u64;
    Ok(move |iters: u64| {
        let mut timed = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let chunk = &fds[..left.min(CTL_FDS as u64) as usize];
            match op {
                CtlOp::Add => {
                    let start = Instant::now();
                    ctl(&ep, chunk, CtlOp::Add, None)?;
                    timed += start.elapsed();
                    ctl(&ep, chunk, CtlOp::Del, None)?;
                }
                CtlOp::Mod => {
                    round += 1;
                    let start = Instant::now();
                    ctl(&ep, chunk, CtlOp::Mod, Some(round))?;
                    timed += start.elapsed();
                }
                CtlOp::Del => {
                    ctl(&ep, chunk, CtlOp::Add, None)?;
                    let start = Instant::now();
                    ctl(&ep, chunk, CtlOp::Del, None)?;
                    timed += start.elapsed();
                }
            }
            left -= chunk.len() as u64;
        }
        Ok(timed)
    })
}

// ---------------------------------------------------------------------------
// wait

/// One iteration = one `wait(timeout 0)` that must return `expect` events.
fn user_wait(set: UserSet, expect: usize) -> impl FnMut(u64) -> io::Result<Duration> {
    let mut buf = [EpollEvent::default(); READY];
    move |iters| {
        // Use the whole set: a closure capturing only `set.ep` would drop
        // the sources, and their registrations with them.
        let set = &set;
        let start = Instant::now();
        for _ in 0..iters {
            let n = set
                .ep
                .wait(black_box(&mut buf), Some(Duration::ZERO))
                .map_err(errno)?;
            if black_box(n) != expect {
                return Err(unexpected(n, expect));
            }
        }
        let elapsed = start.elapsed();
        black_box(&buf);
        Ok(elapsed)
    }
}

/// The kernel twin of [`user_wait`].
fn kernel_wait(set: KernelSet, expect: usize) -> impl FnMut(u64) -> io::Result<Duration> {
    let mut buf = [kernel::empty_event(); READY];
    move |iters| {
        // Use the whole set: a closure capturing only `set.ep` would drop
        // the sources, and their registrations with them.
        let set = &set;
        let start = Instant::now();
        for _ in 0..iters {
            let n = kernel::epoll_wait(set.ep.as_fd(), black_box(&mut buf), 0)?;
            if black_box(n) != expect {
                return Err(unexpected(n, expect));
            }
        }
        let elapsed = start.elapsed();
        black_box(&buf);
        Ok(elapsed)
    }
}

/// One iteration = write 1 to the set's only eventfd, wait (one event),
/// read the counter back.
fn user_cycle(set: UserSet) -> impl FnMut(u64) -> io::Result<Duration> {
    let mut buf = [EpollEvent::default(); READY];
    move |iters| {
        let set = &set;
        let fd = &set.fds[0];
        let start = Instant::now();
        for _ in 0..iters {
            fd.write(black_box(1)).map_err(errno)?;
            let n = set
                .ep
                .wait(black_box(&mut buf), Some(Duration::ZERO))
                .map_err(errno)?;
            if n != 1 {
                return Err(unexpected(n, 1));
            }
            black_box(fd.read().map_err(errno)?);
        }
        Ok(start.elapsed())
    }
}

/// The kernel twin of [`user_cycle`].
fn kernel_cycle(set: KernelSet) -> impl FnMut(u64) -> io::Result<Duration> {
    let mut buf = [kernel::empty_event(); READY];
    move |iters| {
        let set = &set;
        let fd = set.fds[0].as_fd();
        let start = Instant::now();
        for _ in 0..iters {
            kernel::eventfd_write(fd, black_box(1))?;
            let n = kernel::epoll_wait(set.ep.as_fd(), black_box(&mut buf), 0)?;
            if n != 1 {
                return Err(unexpected(n, 1));
            }
            black_box(kernel::eventfd_read(fd)?);
        }
        Ok(start.elapsed())
    }
}

// ---------------------------------------------------------------------------
// scaling

/// The wait with 64 ready at 1k and at 1M registered, and usertcp's ratio
/// of the two. The kernel opens as many eventfds as it can, up to 1M.
fn scaling(cfg: &Config, footer: &mut Vec<String>) -> Vec<Row> {
    let limit_note = raise_nofile_limit(LARGE_SET as u64 + SMALL_SET as u64 + 1024);
    footer.push(format!("RLIMIT_NOFILE: {limit_note}"));
    footer.push(
        "1k vs 1M: both sets of both sides exist at once and their four runs are interleaved, \
         so the ratio is not skewed by load changing between two measurements."
            .to_owned(),
    );
    progress(&format!(
        "wait, 64 ready of {} and of {} registered: set-up",
        count(SMALL_SET),
        count(LARGE_SET)
    ));
    let t = Instant::now();
    let user_small = user_set(SMALL_SET, READY);
    let user_large = user_set(LARGE_SET, READY);
    let user_setup = t.elapsed();
    let t = Instant::now();
    let kern_small = kernel_set(SMALL_SET, READY);
    let opened = kernel::epoll_create1(kernel::EPOLL_CLOEXEC)
        .and_then(|ep| Ok((ep, kernel_fds_upto(LARGE_SET)?)));
    let (kern_large, reached, why_short) = match opened {
        Ok((ep, (fds, short))) => {
            let reached = fds.len();
            let set = if reached < READY {
                Err(io::Error::other(format!(
                    "only {reached} eventfds could be opened"
                )))
            } else {
                kernel_register(ep, fds, READY)
            };
            (set, reached, short)
        }
        Err(err) => (Err(err), 0, None),
    };
    let kernel_setup = t.elapsed();
    progress(&format!(
        "wait, 64 ready of 1k and 1M registered: measuring (set-up took {:.2} s usertcp, \
         {:.2} s kernel for {} eventfds)",
        user_setup.as_secs_f64(),
        kernel_setup.as_secs_f64(),
        reached + SMALL_SET
    ));
    let figures = measure_sides(
        cfg,
        READY as f64,
        vec![
            boxed(user_small.map(|set| user_wait(set, READY))),
            boxed(user_large.map(|set| user_wait(set, READY))),
            boxed(kern_small.map(|set| kernel_wait(set, READY))),
            boxed(kern_large.map(|set| kernel_wait(set, READY))),
        ],
    );
    let [user_small, user_large, kern_small, kern_large] = <[Figure; 4]>::try_from(figures)
        .unwrap_or_else(|_| unreachable!("four sides in, four figures out"));
    let short = reached < LARGE_SET && kern_large.value().is_some();
    let mut rows = vec![Row::new(
        format!("wait, 64 ready LT, {} registered", count(SMALL_SET)),
        Metric::NsPerEvent,
        user_small.clone(),
        kern_small.clone(),
    )];
    let label = if short {
        format!(
            "wait, 64 ready LT, {} registered (kernel: {})",
            count(LARGE_SET),
            count(reached)
        )
    } else {
        format!("wait, 64 ready LT, {} registered", count(LARGE_SET))
    };
    let mut large = Row::new(
        label,
        Metric::NsPerEvent,
        user_large.clone(),
        kern_large.clone(),
    );
    if short {
        large.comparable = false;
        large = large.note(format!(
            "kernel figure measured with {} eventfds registered, not {} ({}); no ratio",
            count(reached),
            count(LARGE_SET),
            why_short
                .as_ref()
                .map_or("limit".to_owned(), |e| e.to_string())
        ));
    }
    rows.push(large);
    let ratio = |large: &Figure, small: &Figure| match (large.value(), small.value()) {
        (Some(l), Some(s)) => Figure::Value(l / s),
        _ => Figure::NotAvailable("a figure above is missing".to_owned()),
    };
    let mut row = Row::new(
        "  1M / 1k ratio of the two rows above",
        Metric::Ratio,
        ratio(&user_large, &user_small),
        ratio(&kern_large, &kern_small),
    )
    .target(Target::UsertcpAtMost(1.3));
    if short {
        row.comparable = false;
        row = row.note(format!(
            "kernel ratio is its {} / 1k figure",
            count(reached)
        ));
    }
    rows.push(row);
    rows
}

/// Opens up to `n` kernel eventfds; stops at the first failure and returns
/// what it opened with the error that stopped it.
fn kernel_fds_upto(n: usize) -> io::Result<(Vec<OwnedFd>, Option<io::Error>)> {
    let mut fds = Vec::new();
    fds.try_reserve_exact(n)
        .map_err(|e| io::Error::new(io::ErrorKind::OutOfMemory, e))?;
    while fds.len() < n {
        match kernel::eventfd(0, kernel::EFD_NONBLOCK) {
            Ok(fd) => fds.push(fd),
            Err(err) => return Ok((fds, Some(err))),
        }
    }
    Ok((fds, None))
}

// ---------------------------------------------------------------------------
// cross-thread wake-up latency

/// The ping-pong on the same core and across two cores.
fn latency(cfg: &Config, footer: &mut Vec<String>) -> Vec<Row> {
    let original = match kernel::thread_affinity() {
        Ok(cpus) => cpus,
        Err(err) => {
            let missing = || Figure::Error(format!("sched_getaffinity: {err}"));
            return vec![Row::new(
                "wake-up latency (ping-pong / 2)",
                Metric::NsPerWakeup,
                missing(),
                missing(),
            )];
        }
    };
    let first = original.first().copied().unwrap_or(0);
    let placements = [
        ("same core", Some((first, first))),
        (
            "across cores",
            original.get(1).map(|&second| (first, second)),
        ),
    ];
    footer.push(format!(
        "wake-up latency: thread A (CPU {}) writes B's eventfd then blocks in wait (no timeout); B, \
         blocked in its own epoll's wait, reads it and writes A's eventfd; figure = round trip / 2. \
         Across cores uses CPU {} for B. Each sample spawns B afresh; its first round trip is untimed.",
        first,
        original
            .get(1)
            .map_or("(none)".to_owned(), |c| c.to_string())
    ));
    let mut rows = Vec::new();
    for (label, placement) in placements {
        progress(&format!("wake-up latency, {label}"));
        let workload = format!("cross-thread wake-up, blocked waiter, {label}");
        let Some((cpu_a, cpu_b)) = placement else {
            let missing = || Figure::NotAvailable("only one usable CPU".to_owned());
            rows.push(
                Row::new(workload, Metric::NsPerWakeup, missing(), missing())
                    .target(Target::VsKernelAtLeast(1.0)),
            );
            continue;
        };
        let (user, kern) = match kernel::set_thread_affinity(&[cpu_a]) {
            Ok(()) => pair(
                cfg,
                Ok(user_pingpong(cpu_b)),
                Ok(kernel_pingpong(cpu_b)),
                2.0,
            ),
            Err(err) => {
                let missing = || Figure::Error(format!("sched_setaffinity: {err}"));
                (missing(), missing())
            }
        };
        if let Err(err) = kernel::set_thread_affinity(&original) {
            eprintln!("[epoll] could not restore the CPU affinity: {err}");
        }
        rows.push(
            Row::new(workload, Metric::NsPerWakeup, user, kern)
                .target(Target::VsKernelAtLeast(1.0)),
        );
    }
    rows
}

/// Runs `round_trip` once untimed (the partner thread starting), then
/// `iters` times timed; then stops the partner with `stop` and joins it.
/// A partner's error wins over the main side's (it explains it).
fn ping_pong(
    iters: u64,
    mut round_trip: impl FnMut() -> io::Result<()>,
    stop: impl FnOnce(),
    partner: thread::JoinHandle<io::Result<()>>,
) -> io::Result<Duration> {
    let result = (|| {
        round_trip()?;
        let start = Instant::now();
        for _ in 0..iters {
            round_trip()?;
        }
        Ok(start.elapsed())
    })();
    stop();
    let joined = partner
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the partner thread panicked")));
    joined?;
    result
}

fn partner_failed() -> io::Error {
    io::Error::other("the partner thread reported a failure")
}

/// One iteration = one round trip between two threads over two
/// [`EventPoll`]s and two [`EventFd`]s, each thread blocked in `wait(None)`.
fn user_pingpong(cpu_b: usize) -> impl FnMut(u64) -> io::Result<Duration> {
    move |iters| {
        let new_fd = || EventFd::with_flags(0, EfdFlags::NONBLOCK).map_err(errno);
        let (ep_a, ep_b) = (EventPoll::new(), EventPoll::new());
        let (fd_a, fd_b) = (new_fd()?, new_fd()?);
        ep_a.add(&fd_a, 0, EpollEvent::new(Events::IN, 0))
            .map_err(errno)?;
        ep_b.add(&fd_b, 0, EpollEvent::new(Events::IN, 0))
            .map_err(errno)?;
        let partner = {
            let (ep_b, fd_a, fd_b) = (ep_b.clone(), fd_a.clone(), fd_b.clone());
            thread::Builder::new()
                .name("loopbench-b".to_owned())
                .spawn(move || {
                    let result = (|| -> io::Result<()> {
                        kernel::set_thread_affinity(&[cpu_b])?;
                        let mut buf = [EpollEvent::default(); 4];
                        loop {
                            ep_b.wait(&mut buf, None).map_err(errno)?;
                            if fd_b.read().map_err(errno)? >= STOP {
                                return Ok(());
                            }
                            fd_a.write(1).map_err(errno)?;
                        }
                    })();
                    if result.is_err() {
                        let _ = fd_a.write(FAILED);
                    }
                    result
                })?
        };
        let mut buf = [EpollEvent::default(); 4];
        let round_trip = || -> io::Result<()> {
            fd_b.write(1).map_err(errno)?;
            ep_a.wait(black_box(&mut buf), None).map_err(errno)?;
            match fd_a.read().map_err(errno)? {
                1 => Ok(()),
                _ => Err(partner_failed()),
            }
        };
        ping_pong(
            iters,
            round_trip,
            || {
                let _ = fd_b.write(STOP);
            },
            partner,
        )
    }
}

/// The descriptors of the kernel ping-pong, shared by the two threads.
struct KernelPingPong {
    ep_a: OwnedFd,
    ep_b: OwnedFd,
    fd_a: OwnedFd,
    fd_b: OwnedFd,
}

/// The kernel twin of [`user_pingpong`].
fn kernel_pingpong(cpu_b: usize) -> impl FnMut(u64) -> io::Result<Duration> {
    move |iters| {
        let fds = Arc::new(KernelPingPong {
            ep_a: kernel::epoll_create1(kernel::EPOLL_CLOEXEC)?,
            ep_b: kernel::epoll_create1(kernel::EPOLL_CLOEXEC)?,
            fd_a: kernel::eventfd(0, kernel::EFD_NONBLOCK)?,
            fd_b: kernel::eventfd(0, kernel::EFD_NONBLOCK)?,
        });
        kernel::epoll_ctl(
            fds.ep_a.as_fd(),
            CtlOp::Add,
            fds.fd_a.as_fd(),
            kernel::EPOLLIN,
            0,
        )?;
        kernel::epoll_ctl(
            fds.ep_b.as_fd(),
            CtlOp::Add,
            fds.fd_b.as_fd(),
            kernel::EPOLLIN,
            0,
        )?;
        let partner = {
            let fds = fds.clone();
            thread::Builder::new()
                .name("loopbench-b".to_owned())
                .spawn(move || {
                    let result = (|| -> io::Result<()> {
                        kernel::set_thread_affinity(&[cpu_b])?;
                        let mut buf = [kernel::empty_event(); 4];
                        loop {
                            kernel::epoll_wait(fds.ep_b.as_fd(), &mut buf, -1)?;
                            if kernel::eventfd_read(fds.fd_b.as_fd())? >= STOP {
                                return Ok(());
                            }
                            kernel::eventfd_write(fds.fd_a.as_fd(), 1)?;
                        }
                    })();
                    if result.is_err() {
                        let _ = kernel::eventfd_write(fds.fd_a.as_fd(), FAILED);
                    }
                    result
                })?
        };
        let mut buf = [kernel::empty_event(); 4];
        let round_trip = || -> io::Result<()> {
            kernel::eventfd_write(fds.fd_b.as_fd(), 1)?;
            kernel::epoll_wait(fds.ep_a.as_fd(), black_box(&mut buf), -1)?;
            match kernel::eventfd_read(fds.fd_a.as_fd())? {
                1 => Ok(()),
                _ => Err(partner_failed()),
            }
        };
        ping_pong(
            iters,
            round_trip,
            || {
                let _ = kernel::eventfd_write(fds.fd_b.as_fd(), STOP);
            },
            partner,
        )
    }
}

// ---------------------------------------------------------------------------
// memory

/// usertcp: bytes allocated (and still live) while registering
/// [`MEMORY_WATCHES`] already-allocated eventfds, per registration. Kernel:
/// the slab object sizes of one `eventpoll_epi` and one `eventpoll_pwq`.
fn memory() -> Row {
    let user = match user_bytes_per_watch(MEMORY_WATCHES) {
        Ok(bytes) => Figure::Value(bytes),
        Err(err) => Figure::Error(err.to_string()),
    };
    let (kern, note) = kernel_bytes_per_watch();
    let mut row = Row::new(
        format!("memory per watch ({} watches)", count(MEMORY_WATCHES)),
        Metric::BytesPerWatch,
        user,
        kern,
    )
    .target(Target::UsertcpAtMost(200.0))
    .note(format!(
        "usertcp: live bytes allocated by {} registrations / {}, counted by the global \
         allocator; the eventfds are allocated before counting starts",
        count(MEMORY_WATCHES),
        count(MEMORY_WATCHES)
    ));
    if let Some(note) = note {
        row = row.note(note);
    }
    row
}

fn user_bytes_per_watch(n: usize) -> io::Result<f64> {
    let fds = user_fds(n)?;
    let ep = EventPoll::new();
    let scope =
        Counting::start().ok_or_else(|| io::Error::other("another allocation count is running"))?;
    for (i, fd) in fds.iter().enumerate() {
        ep.add(fd, i as i32, EpollEvent::new(Events::IN, i as u64))
            .map_err(errno)?;
    }
    let bytes = scope.live_bytes();
    drop(scope);
    black_box((&ep, &fds));
    Ok(bytes as f64 / n as f64)
}

/// The kernel's bytes per watch from the slab caches, with a note saying
/// where the sizes came from.
fn kernel_bytes_per_watch() -> (Figure, Option<String>) {
    let slabinfo = match std::fs::read_to_string("/proc/slabinfo") {
        Ok(text) => text,
        Err(err) => {
            return (
                Figure::NotAvailable(format!("/proc/slabinfo is not readable ({err})")),
                None,
            );
        }
    };
    let mut sources = Vec::new();
    let mut total = 0u64;
    for cache in ["eventpoll_epi", "eventpoll_pwq"] {
        if let Some(size) = slabinfo_objsize(&slabinfo, cache) {
            total += size;
            sources.push(format!("{cache} {size} B (/proc/slabinfo)"));
            continue;
        }
        // SLUB merges caches of one size; a merged one keeps only an alias
        // in sysfs, with its object size.
        let sysfs = format!("/sys/kernel/slab/{cache}/slab_size");
        match std::fs::read_to_string(&sysfs)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            Some(size) => {
                total += size;
                sources.push(format!(
                    "{cache} {size} B ({sysfs}: the cache is merged, absent from /proc/slabinfo)"
                ));
            }
            None => {
                return (
                    Figure::NotAvailable(format!(
                        "{cache} is in neither /proc/slabinfo nor {sysfs}"
                    )),
                    None,
                );
            }
        }
    }
    (
        Figure::Value(total as f64),
        Some(format!("kernel: {}", sources.join(" + "))),
    )
}

/// The `<objsize>` column of `cache`'s line in `/proc/slabinfo`.
fn slabinfo_objsize(slabinfo: &str, cache: &str) -> Option<u64> {
    slabinfo.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()? != cache {
            return None;
        }
        // name active_objs num_objs objsize ...
        fields.nth(2)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slabinfo_parsing_and_counts() {
        let text = "slabinfo - version: 2.1\n\
                    # name <active_objs> <num_objs> <objsize> ...\n\
                    eventpoll_epi 288 288 128 32 1 : tunables 0 0 0 : slabdata 9 9 0\n";
        assert_eq!(slabinfo_objsize(text, "eventpoll_epi"), Some(128));
        assert_eq!(slabinfo_objsize(text, "eventpoll_pwq"), None);
        assert_eq!(count(1_000_000), "1M");
        assert_eq!(count(1_000), "1k");
        assert_eq!(count(19_990), "19990");
        assert_eq!(spread(1000, 4).collect::<Vec<_>>(), vec![0, 250, 500, 750]);
    }

    #[test]
    fn every_workload_runs_on_both_sides() {
        let iters = 3;
        let mut sides: Vec<Box<dyn FnMut(u64) -> io::Result<Duration>>> = vec![
            Box::new(user_ctl(CtlOp::Add).unwrap()),
            Box::new(kernel_ctl(CtlOp::Del).unwrap()),
            Box::new(user_ctl(CtlOp::Mod).unwrap()),
            Box::new(kernel_ctl(CtlOp::Mod).unwrap()),
            Box::new(user_wait(user_set(10, 0).unwrap(), 0)),
            Box::new(kernel_wait(kernel_set(10, 0).unwrap(), 0)),
            Box::new(user_wait(user_set(100, READY).unwrap(), READY)),
            Box::new(kernel_wait(kernel_set(100, READY).unwrap(), READY)),
            Box::new(user_cycle(user_set(1, 0).unwrap())),
            Box::new(kernel_cycle(kernel_set(1, 0).unwrap())),
            Box::new(user_pingpong(kernel::thread_affinity().unwrap()[0])),
            Box::new(kernel_pingpong(kernel::thread_affinity().unwrap()[0])),
        ];
        for (i, side) in sides.iter_mut().enumerate() {
            if let Err(err) = side(iters) {
                panic!("workload {i}: {err}");
            }
        }
        // Unit tests run on the default allocator, which counts nothing.
        user_bytes_per_watch(100).unwrap();
    }
}
