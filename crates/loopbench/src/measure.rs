//! Timing: calibration, warm-up, several runs, the median.
//!
//! A workload is a closure that performs a given number of iterations and
//! returns the time its measured part took (so it can leave set-up and
//! clean-up outside the clock). [`compare`] measures several such closures,
//! the same workload on each side (usertcp, the kernel, ...), fairly:
//!
//! 1. **Calibration**: each side runs 1, 10, 100, ... iterations until one
//!    call takes a measurable time, and from that picks the iteration count
//!    that makes one run last about [`Config::run_time`]. Each side gets its
//!    own count, so a fast side is not measured over a shorter time. A
//!    workload whose iteration is a fixed time window sets
//!    [`Config::fixed_iters`] instead.
//! 2. **Warm-up**: each side runs for [`Config::warmup`], untimed (caches,
//!    branch predictors, allocator pools, CPU frequency), and for at least
//!    [`Config::warmup_iters`] iterations. A workload whose iteration is a
//!    round over many connections sets the latter (see
//!    [`Config::with_warmup_iters`]): TCP learns each connection's round
//!    trip time from one sample per round (RFC 6298), and until it has,
//!    rounds longer than the minimum retransmission timeout (1 s in
//!    smoltcp, 200 ms in Linux) retransmit segments that were only queued.
//! 3. **Runs**: [`Config::runs`] runs per side, *interleaved* (usertcp,
//!    kernel, usertcp, kernel, ...) so that a burst of noise from other
//!    processes hits both sides alike. The figure reported is the median
//!    time per iteration; the minimum and maximum are kept as a spread.
//!
//! A side whose closure fails is stopped and reported with its error; the
//! other sides go on.

use std::io;
use std::time::{Duration, Instant};

/// How long and how often to measure.
#[derive(Clone, Debug)]
pub struct Config {
    /// Measured runs per side; the median is reported.
    pub runs: usize,
    /// Untimed warm-up per side before the first run.
    pub warmup: Duration,
    /// The fewest iterations warm-up runs, however long they take (0: no
    /// minimum; calibration's own iterations are not counted).
    pub warmup_iters: u64,
    /// The target duration of one run.
    pub run_time: Duration,
    /// True for `--quick` (fewer, shorter runs).
    pub quick: bool,
    /// `Some(n)`: no calibration, every call (warm-up and runs) does `n`
    /// iterations. For a workload whose iteration has a fixed wall time
    /// (a time window) and whose reported time is not that wall time.
    pub fixed_iters: Option<u64>,
}

impl Config {
    /// The default: 5 runs of about 100 ms after 100 ms of warm-up.
    pub fn full() -> Config {
        Config {
            runs: 5,
            warmup: Duration::from_millis(100),
            warmup_iters: 0,
            run_time: Duration::from_millis(100),
            quick: false,
            fixed_iters: None,
        }
    }

    /// `--quick`: 3 runs of about 50 ms after 50 ms of warm-up.
    pub fn quick() -> Config {
        Config {
            runs: 3,
            warmup: Duration::from_millis(50),
            warmup_iters: 0,
            run_time: Duration::from_millis(50),
            quick: true,
            fixed_iters: None,
        }
    }

    /// The same configuration with warm-up running at least `iters`
    /// iterations on every side.
    pub fn with_warmup_iters(&self, iters: u64) -> Config {
        Config {
            warmup_iters: iters,
            ..self.clone()
        }
    }

    /// One line for a table footer describing the method.
    pub fn describe(&self) -> String {
        let at_least = match self.warmup_iters {
            0 => String::new(),
            1 => " and at least 1 iteration".to_owned(),
            n => format!(" and at least {n} iterations"),
        };
        format!(
            "each figure is the median of {} runs of ~{} ms per side, after {} ms of \
             warm-up{at_least}; usertcp and kernel runs are interleaved on the same thread(s) \
             in the same process",
            self.runs,
            self.run_time.as_millis(),
            self.warmup.as_millis()
        )
    }
}

/// The result of measuring one side.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Median nanoseconds per iteration over the runs.
    pub median_ns: f64,
    /// Fastest run, nanoseconds per iteration.
    pub min_ns: f64,
    /// Slowest run, nanoseconds per iteration.
    pub max_ns: f64,
    /// Iterations per run.
    pub iters: u64,
}

impl Sample {
    /// The sample with every figure divided by `n` (e.g. events per
    /// iteration, to report nanoseconds per event).
    pub fn per(&self, n: f64) -> Sample {
        Sample {
            median_ns: self.median_ns / n,
            min_ns: self.min_ns / n,
            max_ns: self.max_ns / n,
            iters: self.iters,
        }
    }
}

/// A workload on one side: does `iters` iterations and returns the time
/// the measured part took.
pub type Workload<'a> = dyn FnMut(u64) -> io::Result<Duration> + 'a;

/// The most iterations one run may ask for.
const MAX_ITERS: u64 = 1 << 40;

/// Measures every side of one workload (see the module docs) and returns
/// one result per side, in order.
pub fn compare(cfg: &Config, sides: &mut [&mut Workload<'_>]) -> Vec<io::Result<Sample>> {
    let mut iters: Vec<io::Result<u64>> = sides
        .iter_mut()
        .map(|side| calibrate(cfg, &mut **side))
        .collect();
    for (side, n) in sides.iter_mut().zip(iters.iter_mut()) {
        if let Ok(count) = *n
            && let Err(err) = warm_up(cfg, &mut **side, count).map(drop)
        {
            *n = Err(err);
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(cfg.runs); sides.len()];
    for _ in 0..cfg.runs.max(1) {
        for ((side, n), runs) in sides.iter_mut().zip(iters.iter_mut()).zip(times.iter_mut()) {
            let Ok(count) = *n else { continue };
            match side(count) {
                Ok(elapsed) => runs.push(elapsed.as_nanos() as f64 / count as f64),
                Err(err) => *n = Err(err),
            }
        }
    }
    iters
        .into_iter()
        .zip(times)
        .map(|(n, mut runs)| {
            let count = n?;
            Ok(Sample {
                median_ns: median(&mut runs),
                min_ns: runs.first().copied().unwrap_or(f64::NAN),
                max_ns: runs.last().copied().unwrap_or(f64::NAN),
                iters: count,
            })
        })
        .collect()
}

/// The iteration count for one run of about `cfg.run_time` (or
/// `cfg.fixed_iters`, without calling `side`).
fn calibrate(cfg: &Config, side: &mut Workload<'_>) -> io::Result<u64> {
    if let Some(iters) = cfg.fixed_iters {
        return Ok(iters.clamp(1, MAX_ITERS));
    }
    let probe_floor = (cfg.run_time / 10).max(Duration::from_millis(1));
    let mut iters = 1u64;
    loop {
        let elapsed = side(iters)?;
        if elapsed >= probe_floor || iters >= MAX_ITERS {
            let per_iter = elapsed.as_nanos().max(1) as f64 / iters as f64;
            let wanted = cfg.run_time.as_nanos() as f64 / per_iter;
            return Ok((wanted as u64).clamp(1, MAX_ITERS));
        }
        iters = iters.saturating_mul(10).min(MAX_ITERS);
    }
}

/// Runs `side` untimed, `iters` iterations at a time, for at least
/// `cfg.warmup` and at least `cfg.warmup_iters` iterations (and at least
/// once). Returns the number of iterations run.
fn warm_up(cfg: &Config, side: &mut Workload<'_>, iters: u64) -> io::Result<u64> {
    let start = Instant::now();
    let mut done = 0u64;
    loop {
        side(iters)?;
        done = done.saturating_add(iters);
        if start.elapsed() >= cfg.warmup && done >= cfg.warmup_iters {
            return Ok(done);
        }
    }
}

/// Sorts `values` and returns their median (the mean of the middle two for
/// an even count; NaN for none).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn compare_reports_each_side_and_keeps_errors_apart() {
        let cfg = Config {
            runs: 3,
            warmup: Duration::from_millis(1),
            warmup_iters: 0,
            run_time: Duration::from_millis(2),
            quick: true,
            fixed_iters: None,
        };
        // A side whose iterations "take" 100 ns each, by its own account.
        let mut fake = |iters: u64| Ok(Duration::from_nanos(iters * 100));
        let mut failing = |_iters: u64| Err(io::Error::other("boom"));
        let results = compare(&cfg, &mut [&mut fake, &mut failing]);
        let sample = results[0].as_ref().unwrap();
        assert_eq!(sample.median_ns, 100.0);
        assert_eq!(sample.per(4.0).median_ns, 25.0);
        assert!(sample.iters >= 10_000);
        assert_eq!(results[1].as_ref().unwrap_err().to_string(), "boom");
    }

    #[test]
    fn fixed_iters_skips_calibration_and_sets_every_call() {
        let cfg = Config {
            runs: 3,
            warmup: Duration::ZERO,
            warmup_iters: 2,
            run_time: Duration::from_millis(100),
            quick: true,
            fixed_iters: Some(1),
        };
        // Each call "takes" 1 us per iteration: calibration would ask for
        // 100,000 iterations per run.
        let mut calls = Vec::new();
        let mut side = |iters: u64| {
            calls.push(iters);
            Ok(Duration::from_micros(iters))
        };
        let results = compare(&cfg, &mut [&mut side]);
        let sample = results[0].as_ref().unwrap();
        assert_eq!(sample.iters, 1);
        assert_eq!(sample.median_ns, 1000.0);
        // Two warm-up calls, three runs, one iteration each.
        assert_eq!(calls, vec![1; 5]);
    }

    #[test]
    fn warm_up_runs_at_least_the_minimum_iterations() {
        let cfg = Config {
            runs: 1,
            warmup: Duration::ZERO,
            warmup_iters: 0,
            run_time: Duration::from_millis(1),
            quick: true,
            fixed_iters: None,
        };
        let mut calls = 0u64;
        let mut side = |iters: u64| {
            calls += 1;
            Ok(Duration::from_secs(iters))
        };
        // No minimum: one call, whatever its length.
        assert_eq!(warm_up(&cfg, &mut side, 2).unwrap(), 2);
        // A minimum of 5 iterations in calls of 2: three calls.
        assert_eq!(warm_up(&cfg.with_warmup_iters(5), &mut side, 2).unwrap(), 6);
        assert_eq!(calls, 4);
        assert!(
            cfg.with_warmup_iters(5)
                .describe()
                .contains("at least 5 iterations")
        );
    }
}
