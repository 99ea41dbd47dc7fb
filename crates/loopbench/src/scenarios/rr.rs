//! The `rr` scenario: 64-byte request/response over many active
//! connections.
//!
//! N connections are opened first (untimed). One iteration is one round:
//! a [`MSG`]-byte request in flight on each of the N connections, each
//! connection sending its next request as soon as its response is in
//! (closed loop), until N responses came back; the figure is requests per
//! second. The loop runs on from one iteration to the next (no drain in
//! between), so iterations measure the steady state; the responses of a
//! run are counted, not assumed, since a round ends with some connections
//! one ahead already (see `net::rr_timed`). Client and server run on one
//! thread (see [`net`]). Every side warms up for [`net::WARMUP_ROUNDS`]
//! rounds first.
//!
//! | row | target |
//! |---|---|
//! | 10k connections | usertcp >= 10x the kernel |
//! | 100k connections | usertcp >= 10x the kernel and >= 100x stock smoltcp |
//!
//! The kernel needs two descriptors per connection (client and server end)
//! and `RLIMIT_NOFILE` caps them (`raise_nofile_limit` raises it where the
//! process may). When one process can hold N kernel connections, or all
//! but 1 % of them (the 10k row under a 20,000-descriptor limit), the
//! kernel runs as a single client + server pair on the measuring thread,
//! interleaved with usertcp, and a second row shows it on two cores.
//! Otherwise (the 100k row here) the kernel runs in several worker
//! processes ([`kworkers`]), each an echo client + server pair on one
//! thread with its share of the N connections (at most what its own
//! `RLIMIT_NOFILE` allows), **all pinned to the one CPU the measuring
//! thread uses**, so the kernel gets exactly usertcp's CPU budget: one
//! core. The scheduler time-slices the workers, and each worker's epolls
//! watch only its share. Those workers are measured after usertcp (not
//! interleaved) with their own warm-up (at least four whole rounds of N)
//! and runs of several rounds each; the row's note says how many workers
//! and runs, and has no two-core kernel row.
//!
//! Stock smoltcp (one big socket set each side) is measured without
//! `--quick` only. Its ingress finds a packet's socket by a linear search
//! of the set and its egress walks the set in order, so a request costs
//! O(N) and a round O(N²):
//!
//! - At [`SMOLTCP_CONNS`] (10k) in whole rounds like the other sides,
//!   interleaved with them (a round takes about half a second).
//! - At [`SMOLTCP_WINDOWED_CONNS`] (100k) a whole round takes 45 s or
//!   more (and opening the connections ~20 s, untimed): after the other
//!   sides, the same paced closed loop ([`SmolPair::rr_until`]) runs in
//!   windows of [`SMOLTCP_WINDOW`], [`SMOLTCP_WARMUP_WINDOWS`] of warm-up
//!   and [`SMOLTCP_WINDOWS`] measured (one iteration of
//!   [`crate::measure`] each, [`net::smol_rr_windows`]), and the figure is
//!   the median window's whole responses per second. The windows cover
//!   part of one round only. The pacing keeps every connection within one
//!   request of the round, so the sockets smoltcp serves first cannot run
//!   ahead; but the loop sweeps through the set in its order, and a
//!   request costs more the later its socket is in the set (the linear
//!   search): the rate falls window by window, and a figure from the first
//!   part of a round is above smoltcp's whole-round rate (conservative for
//!   the 100x target). The row's note gives every window's rate, how many
//!   connections answered and which part of the set they are.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::alloc_count::Counting;
use crate::kernel;
use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Figure, Metric, Report, Row, Target};

use super::kworkers::{self, Workers};
use super::net::{self, KernelPair, MSG, SmolPair, UserPair, WindowLog, requests_per_second};
use super::{
    Pinned, boxed, count, measure_sides, raise_nofile_limit, two_core_label, two_core_note,
};

/// Socket buffers (each direction), bytes.
pub const BUFFER: usize = 4096;
/// The connection counts, one row each.
pub const COUNTS: [usize; 2] = [10_000, 100_000];
/// The connection count stock smoltcp is measured at in whole rounds,
/// interleaved with usertcp (without `--quick`).
pub const SMOLTCP_CONNS: usize = 10_000;
/// The connection count stock smoltcp is measured at in time-bounded
/// windows, after the other sides (without `--quick`): a whole round
/// there takes 45 s or more.
pub const SMOLTCP_WINDOWED_CONNS: usize = 100_000;
/// One window of stock smoltcp at [`SMOLTCP_WINDOWED_CONNS`].
pub const SMOLTCP_WINDOW: Duration = Duration::from_secs(3);
/// The measured windows (the median is reported).
pub const SMOLTCP_WINDOWS: usize = 5;
/// The windows of warm-up before them.
pub const SMOLTCP_WARMUP_WINDOWS: u64 = 2;
/// Below this share of one core (their CPU time over wall time) the
/// kernel's worker processes shared their core with other tasks, and the
/// row says so.
const SHARED_CORE: f64 = 0.9;
/// Descriptors kept free for everything but the kernel's connections.
pub const FD_RESERVE: u64 = 64;

/// The most connections one process's kernel pair can open under a
/// descriptor limit of `limit` (two descriptors each).
pub fn conns_for_limit(limit: u64) -> usize {
    (limit.saturating_sub(FD_RESERVE) / 2) as usize
}

/// The most connections the kernel side can open under this process's
/// (soft) descriptor limit.
pub fn kernel_max_conns() -> usize {
    kernel::nofile_limit().map_or(0, |(soft, _)| conns_for_limit(soft))
}

/// Runs the scenario and returns its report (progress goes to stderr).
pub fn run(cfg: &Config) -> Report {
    // One iteration is a round over all connections: warm up for several.
    let cfg = &cfg.with_warmup_iters(net::WARMUP_ROUNDS);
    let machine = Machine::detect();
    let started = Instant::now();
    let limit_note = raise_nofile_limit(2 * COUNTS[1] as u64 + FD_RESERVE);
    let pinned = Pinned::one_core();
    let kmax = kernel_max_conns();
    let mut rows = Vec::new();
    for &n in &COUNTS {
        eprintln!("[rr] {} connections: set-up", count(n));
        let t = Instant::now();
        let user = UserPair::new(BUFFER, n / 20_000).and_then(|mut p| {
            p.open(n)?;
            Ok(p)
        });
        let user_setup = t.elapsed();
        let kn = n.min(kmax);
        // One process holds the kernel's connections (or all but 1 % of
        // them): measured interleaved with usertcp. Otherwise: worker
        // processes on usertcp's core, measured after it.
        let in_one = kn == n || (n - kn) * 100 <= n;
        let kern = in_one.then(|| {
            KernelPair::new().and_then(|mut p| {
                p.open(kn)?;
                Ok(p)
            })
        });
        let workers = (!in_one).then(|| {
            eprintln!("[rr] {} connections: starting kernel workers", count(n));
            start_workers(n, kmax, pinned.cpu)
        });
        let smol = (!cfg.quick && n == SMOLTCP_CONNS).then(|| {
            let mut p = SmolPair::new(BUFFER);
            p.open(n).map(|()| p)
        });
        eprintln!(
            "[rr] {} connections: measuring (usertcp set-up {:.2} s)",
            count(n),
            user_setup.as_secs_f64()
        );
        let with_smol = smol.is_some();
        let sides = net::rr_sides(n, user, kern.map(|k| (k, kn)), smol);
        let figures = measure_sides(cfg, 1.0, sides);
        let mut figures = figures.into_iter();
        let mut next = || figures.next().unwrap_or_else(net::not_measured);
        // Each iteration is a round of `n` (or `kn`) requests.
        let u = requests_per_second(next(), n);
        let (k, workers_note) = match workers {
            None => (requests_per_second(next(), kn), None),
            Some(workers) => {
                eprintln!(
                    "[rr] {} connections: measuring the kernel workers",
                    count(n)
                );
                let (k, note) = measure_workers(cfg, workers, &pinned);
                (k, Some(note))
            }
        };
        let mut smol_note = None;
        let s = if with_smol {
            requests_per_second(next(), n)
        } else if cfg.quick && n == SMOLTCP_WINDOWED_CONNS {
            Figure::NotAvailable(format!(
                "not run with --quick (at {} opening the connections alone takes ~20 s; without \
                 --quick it is measured in time-bounded windows)",
                count(n)
            ))
        } else if cfg.quick {
            Figure::NotAvailable("not run with --quick (a round takes seconds)".to_owned())
        } else if n == SMOLTCP_WINDOWED_CONNS {
            let (s, note) = measure_smol_windows(n);
            smol_note = Some(note);
            s
        } else {
            Figure::NotAvailable(format!("not run at {}", count(n)))
        };
        let label = if in_one && kn != n {
            format!(
                "rr, {MSG} B request/response, {} connections (kernel: {kn})",
                count(n)
            )
        } else {
            format!("rr, {MSG} B request/response, {} connections", count(n))
        };
        let user_rate = u.clone();
        // Issue 6: at 100k, also >= 100x stock smoltcp.
        let target = if n == SMOLTCP_WINDOWED_CONNS {
            Target::VsBothAtLeast {
                kernel: 10.0,
                smoltcp: 100.0,
            }
        } else {
            Target::VsKernelAtLeast(10.0)
        };
        let mut row = Row::new(label, Metric::ReqPerSec, u, k)
            .smoltcp(s)
            .target(target);
        if let Some(note) = workers_note {
            row = row
                .note(note)
                .note("no two-core kernel row at this count (one process cannot hold it)");
        } else if kn != n {
            // Within 1 % the per-request cost of the kernel is the same.
            row = row.note(format!(
                "kernel measured with {kn} connections (RLIMIT_NOFILE), within 1 % of {}",
                count(n)
            ));
        }
        if let Some(note) = smol_note {
            row = row.note(note);
        }
        rows.push(row);
        if in_one {
            // The descriptor limit holds one kernel pair at a time: the
            // two-core pair runs after the one-core pair is closed.
            eprintln!("[rr] {} connections: kernel on two cores", count(n));
            let kern2 = pinned.two_cores().and_then(|mut p| {
                p.open(kn)?;
                Ok(p)
            });
            let figures = measure_sides(
                cfg,
                1.0,
                vec![boxed(kern2.map(|p| net::kernel_rr(p, kn, kn as u64)))],
            );
            let k2 = figures.into_iter().next().unwrap_or_else(net::not_measured);
            rows.push(
                Row::new(
                    two_core_label(&pinned),
                    Metric::ReqPerSec,
                    user_rate,
                    requests_per_second(k2, kn),
                )
                .note(two_core_note())
                .note("measured after the row above, not interleaved with it (descriptor limit)"),
            );
        }
    }
    let footer = vec![
        cfg.describe(),
        net::describe_sides(BUFFER),
        pinned.note.clone(),
        net::RR_ITERATION.to_owned(),
        format!("RLIMIT_NOFILE: {limit_note}"),
        format!("scenario time {:.1} s", started.elapsed().as_secs_f64()),
    ];
    Report {
        scenario: "rr",
        title: "rr: 64 B request/response over 10k and 100k active connections, one thread"
            .to_owned(),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}

/// Stock smoltcp's figure at `n` connections measured in time-bounded
/// windows (see the module docs), and the row's note saying how. Opens the
/// connections (untimed) and closes them before returning.
fn measure_smol_windows(n: usize) -> (Figure, String) {
    let started = Instant::now();
    eprintln!("[rr] {} connections: stock smoltcp set-up", count(n));
    // The heap the pair keeps (the process's RSS does not tell: memory
    // freed by the sides before is reused).
    let counting = Counting::start();
    let mut pair = SmolPair::new(BUFFER);
    let opened = pair.open(n);
    let heap = counting.as_ref().map(Counting::live_bytes);
    drop(counting);
    if let Err(err) = opened {
        return (
            Figure::Error(format!("smoltcp set-up: {err}")),
            format!("smoltcp at {}: set-up failed", count(n)),
        );
    }
    let setup = started.elapsed();
    let heap = match heap {
        Some(bytes) => format!(
            "the two socket sets keep {:.2} GiB of heap ({:.0} B per connection, both ends)",
            bytes as f64 / GIB,
            bytes as f64 / n as f64
        ),
        None => "heap not counted (another count was running)".to_owned(),
    };
    let rss = match net::rss_bytes() {
        Ok(rss) => format!("{heap}, process RSS {:.2} GiB", rss as f64 / GIB),
        Err(err) => format!("{heap}, RSS unreadable: {err}"),
    };
    eprintln!(
        "[rr] {} connections: stock smoltcp open in {:.1} s ({rss}); measuring {} windows of \
         {:.0} s after {} of warm-up",
        count(n),
        setup.as_secs_f64(),
        SMOLTCP_WINDOWS,
        SMOLTCP_WINDOW.as_secs_f64(),
        SMOLTCP_WARMUP_WINDOWS
    );
    // One iteration is one window, one window per call.
    let cfg = Config {
        runs: SMOLTCP_WINDOWS,
        warmup: Duration::ZERO,
        warmup_iters: SMOLTCP_WARMUP_WINDOWS,
        run_time: SMOLTCP_WINDOW,
        quick: false,
        fixed_iters: Some(1),
    };
    let log = Rc::new(RefCell::new(WindowLog::default()));
    let side = net::smol_rr_windows(pair, n, SMOLTCP_WINDOW, log.clone());
    let figures = measure_sides(&cfg, 1.0, vec![boxed(Ok(side))]);
    let s = requests_per_second(
        figures.into_iter().next().unwrap_or_else(net::not_measured),
        n,
    );
    let log = log.borrow();
    for (i, w) in log.windows.iter().enumerate() {
        eprintln!(
            "[rr] {} connections: smoltcp window {}: {} responses in {:.2} s, {:.0} req/s",
            count(n),
            i + 1,
            w.responses,
            w.elapsed.as_secs_f64(),
            w.rate()
        );
    }
    let total = started.elapsed();
    eprintln!(
        "[rr] {} connections: stock smoltcp done in {:.1} s (set-up {:.1} s)",
        count(n),
        total.as_secs_f64(),
        setup.as_secs_f64()
    );
    let how = format!(
        "smoltcp at {}: not whole rounds but time-bounded windows over part of one round (the \
         same paced closed loop, measured after the other sides; set-up {:.1} s, untimed, \
         {rss}; whole smoltcp part {:.1} s)",
        count(n),
        setup.as_secs_f64(),
        total.as_secs_f64()
    );
    let rates = |ws: &[net::Window]| {
        let r: Vec<String> = ws.iter().map(|w| format!("{:.0}", w.rate())).collect();
        r.join(", ")
    };
    let split = log.windows.len().saturating_sub(SMOLTCP_WINDOWS);
    let note = match (log.summary(SMOLTCP_WINDOWS), s.value()) {
        (Some(sum), Some(rate)) => format!(
            "{how}: {} windows ({:.1} s) of warm-up, then the median of {} windows of {:.1} s \
             each; window rates in order: {} (warm-up), {} req/s. In the measured windows {} \
             connections of {} had a response ({} to {} each), connections {} to {} of the \
             set: smoltcp's egress serves sockets in set order and its ingress finds a \
             packet's socket by a linear search of the set, so the loop sweeps through the set \
             and a request costs more the later its socket is; the rate falls window by \
             window, and this figure from the first part of a round is above smoltcp's \
             whole-round rate (a whole round at this rate would take {:.0} s; the rest of the \
             set costs more)",
            sum.before.0,
            sum.before.1.as_secs_f64(),
            sum.windows,
            sum.time.as_secs_f64() / sum.windows.max(1) as f64,
            rates(&log.windows[..split]),
            rates(&log.windows[split..]),
            sum.answered,
            count(n),
            sum.per_conn.0,
            sum.per_conn.1,
            sum.slots.0,
            sum.slots.1,
            n as f64 / rate,
        ),
        _ => how,
    };
    (s, note)
}

/// Bytes in a GiB.
const GIB: f64 = (1u64 << 30) as f64;

/// Starts the kernel worker processes for `n` connections, at most `per`
/// each, pinned to `cpu` (see [`kworkers`]).
pub fn start_workers(n: usize, per: usize, cpu: Option<usize>) -> io::Result<Workers> {
    let shares = kworkers::shares(n, per);
    if shares.is_empty() {
        return Err(io::Error::other(
            "RLIMIT_NOFILE leaves no room for a kernel connection",
        ));
    }
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let workers = Workers::start(&exe, &shares, cpu, kworkers::READY_TIMEOUT)?;
    eprintln!(
        "[kernel workers] {} processes, {} connections open in {:.2} s",
        workers.processes(),
        count(n),
        t.elapsed().as_secs_f64()
    );
    Ok(workers)
}

/// The kernel's figure from its worker processes (ended when this
/// returns), and the row's note saying how it was measured.
pub fn measure_workers(
    cfg: &Config,
    workers: io::Result<Workers>,
    pinned: &Pinned,
) -> (Figure, String) {
    let core = match pinned.cpu {
        Some(cpu) => format!("all pinned to CPU {cpu}, the measuring thread's"),
        None => "not pinned (pinning failed, see below)".to_owned(),
    };
    let mut workers = match workers {
        Ok(workers) => workers,
        Err(err) => {
            return (
                Figure::Error(format!("kernel workers' set-up: {err}")),
                format!("kernel: worker processes ({core}) failed to start"),
            );
        }
    };
    let how = format!(
        "kernel: {} worker processes of at most {} connections each (RLIMIT_NOFILE of one \
         process), {core}: the same one core as usertcp; the scheduler time-slices the \
         workers, each worker's epolls watch only its share",
        workers.processes(),
        workers.largest_share()
    );
    match kworkers::measure(cfg, &mut workers) {
        Ok(m) => (
            Figure::Value(m.rate),
            format!(
                "{how}; measured after usertcp, not interleaved: {:.1} s of warm-up (>= {} \
                 rounds), median of {} runs of {:.1} s (slowest {:.0}, fastest {:.0} req/s); \
                 the workers' CPU time was {:.0} % of the runs' wall time{}",
                m.warmup.as_secs_f64(),
                kworkers::WARMUP_ROUNDS,
                m.runs,
                m.run_time.as_secs_f64(),
                m.spread.0,
                m.spread.1,
                100.0 * m.cpu_share,
                if m.cpu_share < SHARED_CORE {
                    " (other tasks ran on that core meanwhile: the kernel figure is low)"
                } else {
                    ""
                }
            ),
        ),
        Err(err) => (Figure::Error(format!("kernel workers: {err}")), how),
    }
}
