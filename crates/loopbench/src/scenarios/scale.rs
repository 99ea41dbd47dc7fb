//! The `scale` scenario: requests per second as the number of active
//! connections grows, 1, 10, 100, 1k, 10k, 100k, 1M.
//!
//! At each count N, N connections are opened (untimed) and one iteration
//! is a round of one 64-byte request/response on every connection,
//! all of them in flight (the `rr` workload, see [`net`]: a closed loop
//! that runs on from one iteration to the next); the figure is requests
//! per second, from the responses counted in each run (see
//! `net::rr_timed`: above ~10k connections a run is a single round, and a
//! round's count is off by the connections that ran one ahead).
//! Every side warms up for [`net::WARMUP_ROUNDS`] rounds first, so that
//! TCP has learned how long a round takes. Each count is one row, placed
//! at N on the chart that `--plot` draws (requests/s against connections,
//! log axes).
//!
//! - usertcp runs every count (up to `--max-connections`; 10k with
//!   `--quick`), with [`netstack::MIN_BUFFER`]-byte socket buffers so that
//!   a million connections fit in memory.
//! - The kernel runs in one process as far as `RLIMIT_NOFILE` allows (two
//!   descriptors per connection); a count within 1 % of the limit is run
//!   at the limit and says so. Larger counts up to [`KERNEL_WORKERS_MAX`]
//!   run in worker processes all pinned to the measuring thread's one core,
//!   as `rr` does at 100k (see [`super::kworkers`]), measured after the
//!   other sides; larger counts are n/a.
//! - Stock smoltcp scans its whole socket set on every poll, so a round
//!   costs O(N²): it runs a count only while the round time predicted from
//!   the previous count (×(N/N')²) fits [`SMOLTCP_ROUND_BUDGET`] (a
//!   quarter of it with `--quick`), and says where it stopped.
//!
//! The last row is usertcp's rate at its largest count over its rate at
//! one connection (and the kernel's, at its largest count).
//!
//! | row | target |
//! |---|---|
//! | rate at 1M over rate at 1 | usertcp >= 0.5 |

use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Figure, Metric, Report, Row, Target};

use super::net::{self, KernelPair, SmolPair, UserPair, requests_per_second};
use super::{Pinned, count, measure_sides, raise_nofile_limit, rr};

/// The connection counts, one row each.
pub const COUNTS: [usize; 7] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000];
/// The largest count with `--quick`.
pub const QUICK_MAX: usize = 10_000;
/// Socket buffers of every side, each direction.
pub const BUFFER: usize = netstack::MIN_BUFFER;
/// The longest predicted round stock smoltcp is given at one count (a
/// quarter of it with `--quick`).
pub const SMOLTCP_ROUND_BUDGET: Duration = Duration::from_secs(1);
/// The largest count the kernel runs at in worker processes: its socket
/// memory is ~8 KB per connection (both ends, see `memory`), ~0.8 GB at
/// 100k; 1M would take ~8 GB and over a hundred processes.
pub const KERNEL_WORKERS_MAX: usize = 100_000;
/// The target: rate at 1M over rate at 1.
pub const TARGET_FRACTION: f64 = 0.5;

/// Runs the scenario up to its default largest count.
pub fn run(cfg: &Config) -> Report {
    let max = if cfg.quick {
        QUICK_MAX
    } else {
        *COUNTS.last().unwrap_or(&1)
    };
    run_with(cfg, max)
}

/// Runs the scenario at every count up to `max`.
pub fn run_with(cfg: &Config, max: usize) -> Report {
    // One iteration is a round over all connections: warm up for several.
    let cfg = &cfg.with_warmup_iters(net::WARMUP_ROUNDS);
    let machine = Machine::detect();
    let started = Instant::now();
    let counts: Vec<usize> = COUNTS.iter().copied().filter(|&n| n <= max).collect();
    let largest = counts.last().copied().unwrap_or(1);
    let limit_note = raise_nofile_limit(2 * largest as u64 + 64);
    let kmax = rr::kernel_max_conns();
    let pinned = Pinned::one_core();
    let budget = if cfg.quick {
        SMOLTCP_ROUND_BUDGET / 4
    } else {
        SMOLTCP_ROUND_BUDGET
    };
    let progress = crate::progress::bar("scale", counts.len() as u64);
    let mut rows = Vec::new();
    // (count, rate) of the last count stock smoltcp ran.
    let mut smol_last: Option<(usize, f64)> = None;
    let mut smol_stopped: Option<String> = None;
    // Each side's rate at its first count, and (count, rate) at its last.
    let mut firsts: (Option<f64>, Option<f64>) = (None, None);
    let mut user_last: Option<(usize, f64)> = None;
    let mut kern_last: Option<(usize, f64)> = None;
    for &n in &counts {
        progress.set_message(format!("{} connections", count(n)));
        eprintln!("[scale] {} connections: set-up", count(n));
        let t = Instant::now();
        let user = UserPair::new(BUFFER, n / 20_000).and_then(|mut p| {
            p.open(n)?;
            Ok(p)
        });
        let user_setup = t.elapsed();
        // Within 1 % of the limit the kernel runs at the limit.
        let kn = if n <= kmax || (n - kmax) * 100 <= n {
            n.min(kmax)
        } else {
            0
        };
        let kern = (kn > 0).then(|| {
            KernelPair::new().and_then(|mut p| {
                p.open(kn)?;
                Ok(p)
            })
        });
        let workers = (kn == 0 && n <= KERNEL_WORKERS_MAX).then(|| {
            eprintln!("[scale] {} connections: starting kernel workers", count(n));
            rr::start_workers(n, kmax, pinned.cpu)
        });
        let smol_go = match (smol_last, &smol_stopped) {
            (_, Some(_)) => false,
            (None, None) => true,
            (Some((m, rate)), None) => {
                let round = predicted_round(m, rate, n);
                if round > budget.as_secs_f64() {
                    smol_stopped = Some(format!(
                        "stopped after {}: a round at {} is predicted to take {:.2} s (O(N^2) \
                         scan), over the {:.2} s budget",
                        count(m),
                        count(n),
                        round,
                        budget.as_secs_f64()
                    ));
                    false
                } else {
                    true
                }
            }
        };
        let smol = smol_go.then(|| {
            let mut p = SmolPair::new(BUFFER);
            p.open(n).map(|()| p)
        });
        eprintln!(
            "[scale] {} connections: measuring (usertcp set-up {:.2} s)",
            count(n),
            user_setup.as_secs_f64()
        );
        let with_kern = kern.is_some();
        let with_smol = smol.is_some();
        let sides = net::rr_sides(n, user, kern.map(|k| (k, kn)), smol);
        let figures = measure_sides(cfg, 1.0, sides);
        let mut figures = figures.into_iter();
        let mut next = || figures.next().unwrap_or_else(net::not_measured);
        let u = requests_per_second(next(), n);
        let mut workers_note = None;
        let k = if with_kern {
            requests_per_second(next(), kn)
        } else if let Some(workers) = workers {
            eprintln!(
                "[scale] {} connections: measuring the kernel workers",
                count(n)
            );
            let (k, note) = rr::measure_workers(cfg, workers, &pinned);
            workers_note = Some(note);
            k
        } else {
            Figure::NotAvailable(format!(
                "RLIMIT_NOFILE allows {kmax} connections per process (2 descriptors each); \
                 worker processes run up to {}",
                count(KERNEL_WORKERS_MAX)
            ))
        };
        let s = if with_smol {
            requests_per_second(next(), n)
        } else {
            Figure::NotAvailable(smol_stopped.clone().unwrap_or_default())
        };
        if let Some(rate) = s.value() {
            smol_last = Some((n, rate));
        } else if with_smol && smol_stopped.is_none() {
            smol_stopped = Some(format!("failed at {}", count(n)));
        }
        if let Some(rate) = u.value() {
            firsts.0.get_or_insert(rate);
            user_last = Some((n, rate));
        }
        if let Some(rate) = k.value() {
            firsts.1.get_or_insert(rate);
            kern_last = Some((if with_kern { kn } else { n }, rate));
        }
        let mut row = Row::new(
            format!("{} connection{}", count(n), if n == 1 { "" } else { "s" }),
            Metric::ReqPerSec,
            u,
            k,
        )
        .smoltcp(s)
        .at(n as f64);
        if with_kern && kn != n {
            row = row.note(format!(
                "kernel at {kn} connections (RLIMIT_NOFILE), within 1 % of {}",
                count(n)
            ));
        }
        if let Some(note) = workers_note {
            row = row.note(note);
        }
        rows.push(row);
        progress.inc(1);
    }
    progress.finish_and_clear();
    let fraction = |first: Option<f64>, last: Option<(usize, f64)>| match (first, last) {
        (Some(a), Some((_, b))) => Figure::Value(b / a),
        _ => Figure::NotAvailable("a rate is missing".to_owned()),
    };
    let mut last_row = Row::new(
        format!(
            "rate at {} / rate at 1 connection",
            count(user_last.map_or(largest, |(n, _)| n))
        ),
        Metric::Fraction,
        fraction(firsts.0, user_last),
        fraction(firsts.1, kern_last),
    );
    // The two fractions span different counts: not a ratio.
    last_row.comparable = false;
    if let Some((kn, _)) = kern_last {
        last_row = last_row.note(format!("kernel: its rate at {kn} over its rate at 1"));
    }
    if largest == 1_000_000 {
        last_row = last_row.target(Target::UsertcpAtLeast(TARGET_FRACTION));
    }
    rows.push(last_row);
    let footer = vec![
        cfg.describe(),
        net::describe_sides(BUFFER),
        net::RR_ITERATION.to_owned(),
        pinned.note.clone(),
        format!("RLIMIT_NOFILE: {limit_note}"),
        format!("scenario time {:.1} s", started.elapsed().as_secs_f64()),
    ];
    Report {
        scenario: "scale",
        title: format!(
            "scale: 64 B request/response rate as active connections grow, 1 to {}, one thread",
            count(largest)
        ),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}

/// Stock smoltcp's predicted round time at `n` connections, seconds, from
/// its `rate` (requests/s) at `m`: a round is `n` requests, and each costs
/// O(N) (the socket-set scan), so the round grows as (n/m)² × m/rate.
fn predicted_round(m: usize, rate: f64, n: usize) -> f64 {
    let (m, n) = (m.max(1) as f64, n as f64);
    m / rate * (n / m).powi(2)
}

/// Nanoseconds per round of `n` requests as nanoseconds per request.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoltcp_round_prediction_grows_with_the_square_of_the_count_per_request() {
        // 1k connections at 200k req/s: a round takes 5 ms.
        assert!((predicted_round(1000, 200_000.0, 1000) - 0.005).abs() < 1e-12);
        // 10x the connections: 10x the requests, each 10x dearer.
        assert!((predicted_round(1000, 200_000.0, 10_000) - 0.5).abs() < 1e-9);
        // 1 ms per round of 1,000 requests: 1 us each, 1M per second.
        assert_eq!(
            requests_per_second(Figure::Value(1e6), 1000),
            Figure::Value(1e6)
        );
    }
}
