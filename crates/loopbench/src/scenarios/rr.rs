//! The `rr` scenario: 64-byte request/response over many active
//! connections.
//!
//! N connections are opened first (untimed). One iteration is one round:
//! a [`MSG`]-byte request in flight on each of the N connections, each
//! connection sending its next request as soon as its response is in
//! (closed loop), until N responses came back; the figure is requests per
//! second. The loop runs on from one iteration to the next (no drain in
//! between), so iterations measure the steady state. Client and server run on one thread (see [`net`]). Every side
//! warms up for [`net::WARMUP_ROUNDS`] rounds first.
//!
//! | row | target |
//! |---|---|
//! | 10k connections | usertcp >= 10x the kernel |
//! | 100k connections | usertcp >= 10x the kernel |
//!
//! The kernel needs two descriptors per connection (client and server end)
//! and `RLIMIT_NOFILE` caps them: it runs with as many connections as the
//! limit allows (at most N), and the row says how many; a kernel figure at
//! a different count is not used for a ratio except where it is within 1 %
//! of N (the 10k row with a 20000-descriptor limit). Stock smoltcp with
//! one big socket set scans the whole set per packet: it is measured at
//! [`SMOLTCP_CONNS`] without `--quick` only (a round takes seconds).

use std::time::Instant;

use crate::kernel;
use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Figure, Metric, Report, Row, Target};

use super::net::{self, KernelPair, MSG, SmolPair, UserPair, per_second};
use super::{
    Pinned, boxed, count, measure_sides, raise_nofile_limit, two_core_label, two_core_note,
};

/// Socket buffers (each direction), bytes.
pub const BUFFER: usize = 4096;
/// The connection counts, one row each.
pub const COUNTS: [usize; 2] = [10_000, 100_000];
/// The connection count stock smoltcp is measured at (without `--quick`).
pub const SMOLTCP_CONNS: usize = 10_000;
/// Descriptors kept free for everything but the kernel's connections.
const FD_RESERVE: u64 = 64;

/// The most connections the kernel side can open under the descriptor
/// limit (two descriptors each).
pub fn kernel_max_conns() -> usize {
    kernel::nofile_limit().map_or(0, |(soft, _)| {
        (soft.saturating_sub(FD_RESERVE) / 2) as usize
    })
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
        let kern = KernelPair::new().and_then(|mut p| {
            p.open(kn)?;
            Ok(p)
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
        let mut sides = vec![
            boxed(user.map(|p| net::user_rr(p, n, n as u64))),
            boxed(kern.map(|p| net::kernel_rr(p, kn, kn as u64))),
        ];
        let with_smol = smol.is_some();
        if let Some(smol) = smol {
            sides.push(boxed(smol.map(|p| net::smol_rr(p, n, n as u64))));
        }
        let figures = measure_sides(cfg, 1.0, sides);
        let mut figures = figures.into_iter();
        let mut next = || figures.next().unwrap_or_else(net::not_measured);
        // Each iteration is a round of `n` (or `kn`) requests.
        let u = per_second(scale(next(), n));
        let k = per_second(scale(next(), kn));
        let s = if with_smol {
            per_second(scale(next(), n))
        } else if cfg.quick {
            Figure::NotAvailable("not run with --quick (a round takes seconds)".to_owned())
        } else {
            Figure::NotAvailable(format!(
                "not run at {} (measured at {} only)",
                count(n),
                count(SMOLTCP_CONNS)
            ))
        };
        let label = if kn == n {
            format!("rr, {MSG} B request/response, {} connections", count(n))
        } else {
            format!(
                "rr, {MSG} B request/response, {} connections (kernel: {kn})",
                count(n)
            )
        };
        let user_rate = u.clone();
        let mut row = Row::new(label, Metric::ReqPerSec, u, k)
            .smoltcp(s)
            .target(Target::VsKernelAtLeast(10.0));
        if kn != n {
            // Within 1 % the per-request cost of the kernel is the same.
            if (n - kn) * 100 > n {
                row.comparable = false;
                row = row.note(format!(
                    "kernel measured with {kn} connections, not {} (RLIMIT_NOFILE); no ratio",
                    count(n)
                ));
            } else {
                row = row.note(format!(
                    "kernel measured with {kn} connections (RLIMIT_NOFILE), within 1 % of {}",
                    count(n)
                ));
            }
        }
        let kernel_comparable = row.comparable;
        rows.push(row);
        if kernel_comparable {
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
                    per_second(scale(k2, kn)),
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
        "one iteration = as many responses as connections, closed loop (each connection sends its \
         next request when its response is in, on across iterations); the figure is requests \
         per second."
            .to_owned(),
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

/// Nanoseconds per round as nanoseconds per request.
fn scale(figure: Figure, per_round: usize) -> Figure {
    match figure {
        Figure::Value(ns) => Figure::Value(ns / per_round.max(1) as f64),
        other => other,
    }
}
