//! # loopbench: usertcp against the Linux kernel, in the same run
//!
//! Every scenario runs the same workload twice in one process: once on
//! usertcp and once on the Linux kernel (and, for network scenarios, on
//! stock smoltcp), on the same thread(s), interleaved, and prints a table of
//! both figures, their ratio, the target and PASS/MISS, with the machine
//! (CPU model, cores, kernel version) it ran on. Absolute figures depend on
//! the machine and on its load; the ratios taken in one run are what the
//! project's targets are about.
//!
//! ## Scenarios
//!
//! - `epoll`: `eventpoll::EventPoll` with `eventpoll::EventFd` sources
//!   against kernel epoll over real eventfds: `epoll_ctl` ADD/MOD/DEL, an
//!   empty `epoll_wait(0)`, a wait returning 64 level-triggered events, the
//!   write + wait + read cycle, the wait cost with 1k and 1M registrations,
//!   the cross-thread wake-up latency (a ping-pong between two blocked
//!   threads, same core and across cores) and the memory per watch. See
//!   [`scenarios::epoll`].
//! - `pingpong`: 64 B request/response on one connection; usertcp (two
//!   `netstack::Stack`s over `netdev::Link`), the kernel over 127.0.0.1 and
//!   stock smoltcp (one big `SocketSet`), client and server on one thread.
//!   See [`scenarios::pingpong`] and, for the three sides,
//!   [`scenarios::net`].
//! - `idle`: the same with 100k idle connections open, against none. See
//!   [`scenarios::idle`].
//! - `rr`: 64 B request/response over 10k and 100k active connections. See
//!   [`scenarios::rr`].
//! - `crr`: connect, 64 B request/response, close. See [`scenarios::crr`].
//! - `c1m`: 1,000,000 concurrent connections, then one request on each;
//!   establish rate, request rate, RSS (`--connections N` for another
//!   size). See [`scenarios::c1m`].
//! - `threaded`: netstack's threaded mode (`NetThread`, blocking
//!   `TcpStream`s from 4 client threads, a thread-per-connection server)
//!   against the kernel with the same threads and against run-to-completion
//!   usertcp; and the stack threads' CPU while idle. See
//!   [`scenarios::threaded`].
//! - `tap`: `wrk -t1 -c64` keep-alive requests/s against usertcp's HTTP
//!   server on a TAP in a network namespace it creates and removes, vs
//!   the same server on kernel sockets on 127.0.0.1; bulk Gbit/s from a
//!   kernel client. Needs root, `/dev/net/tun`, `ip` and `wrk`; otherwise
//!   its rows are `n/a` with the reason. See [`scenarios::tap`].
//! - `bulk`: throughput of 1 and 8 streams at MTU 1500 and 65535, Gbit/s
//!   of payload received. See [`scenarios::bulk`].
//! - `scale`: requests/s as active connections grow 1, 10, ... 1M
//!   (`--max-connections N`; 10k with `--quick`). See [`scenarios::scale`].
//! - `memory`: bytes per idle established connection, both ends, usertcp
//!   vs the kernel. See [`scenarios::memory`].
//!
//! ## Fairness: the rules every scenario follows
//!
//! 1. **The same CPU budget.** usertcp's two stacks (client and server)
//!    share one thread; the kernel's client and server share one thread
//!    too, and the network scenarios pin that thread to one CPU with
//!    `sched_setaffinity` ([`scenarios::Pinned`]) so that the kernel's
//!    softirq work for loopback runs on the same core. Where it applies
//!    (`pingpong`, `rr`, `crr`, `bulk`) a second kernel row gives the
//!    kernel two cores (its server or receiver on a thread pinned to the
//!    other CPU): twice the budget, shown for context, never a target.
//! 2. **Warm-up** before measuring, on every side.
//! 3. **Several runs, the median**: each side is calibrated to runs of
//!    about 100 ms, warmed up, then run 5 times (3 with `--quick`), the
//!    sides' runs interleaved so that noise from other processes hits all
//!    alike; the median is reported (see [`measure`]). `c1m` and `memory`
//!    are the exceptions (connections opened once: single readings, or the
//!    median of a few rounds for the kernel's system-wide counters), and
//!    say so.
//! 4. **The machine** (CPU model, cores, kernel, load average) is printed
//!    with every table and stored in every JSON file ([`machine`]).
//! 5. **The same work**: the same message sizes, buffer sizes and
//!    connection counts on every side; where the kernel cannot follow (the
//!    descriptor limit, an MTU the host's `lo` does not have) the row says
//!    what was done instead, and gives no ratio if the figures are not
//!    comparable.
//!
//! Memory is measured with a counting global allocator (see
//! [`alloc_count`]). Nothing printed is computed from constants: every
//! figure comes from this run.
//!
//! ## Output
//!
//! Every report prints a table (usertcp, kernel, stock smoltcp where it
//! applies, the ratios, the target and PASS/MISS); `--json FILE` (or
//! `all --json-dir DIR`) writes the same as JSON; `--plot DIR` draws PNG
//! charts ([`plot`]). Long scenarios show a progress bar when stderr is a
//! terminal ([`progress`]).
//!
//! ## Running it
//!
//! ```sh
//! cargo run --release -p loopbench -- epoll                 # full run, ~30 s
//! cargo run --release -p loopbench -- pingpong --quick
//! cargo run --release -p loopbench -- c1m --connections 200000
//! cargo run --release -p loopbench -- epoll --quick         # ~10-20 s
//! cargo run --release -p loopbench -- epoll --json out.json # table + JSON
//! cargo run --release -p loopbench -- all --quick --json-dir results/
//! cargo run --release -p loopbench -- all --quick --plot target/plots
//! cargo run --release -p loopbench -- scale --max-connections 100000
//! ```
//!
//! Always build in release mode: a debug build measures the debug build.
//! The kernel sides of `idle`, `rr` and `c1m` need two descriptors per
//! connection and run with as many connections as `RLIMIT_NOFILE` allows,
//! saying so in the row; `rr` instead runs the kernel in several worker
//! processes (the hidden `kernel-rr-worker` subcommand), all pinned to
//! the measuring thread's core, when one process cannot hold its count. The kernel side of the 1M-watch test raises `RLIMIT_NOFILE` (to the hard
//! limit, or to `fs.nr_open` when the process may raise the hard limit); if
//! it still cannot open 1M eventfds it reports the largest count it reached.

mod alloc_count;
mod kernel;
mod machine;
mod measure;
mod plot;
mod progress;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use clap::{Args, Parser, Subcommand};

use crate::measure::Config;
use crate::report::Report;

/// The allocator of the whole binary: the system allocator, counting live
/// bytes while a memory measurement asks it to (and otherwise costing one
/// relaxed load per call). Unit tests keep the default allocator so that
/// parallel tests cannot disturb `alloc_count`'s own test.
#[cfg(not(test))]
#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

/// Measures usertcp and the Linux kernel doing the same work in the same
/// run, and prints both figures, their ratio and the target.
#[derive(Parser, Debug)]
#[command(name = "loopbench", version)]
#[command(
    after_help = "Build with --release. Figures are noisy on a busy machine; the ratios of one run are what counts.\n\
                  Examples:\n  loopbench epoll --quick\n  loopbench all --json-dir results/"
)]
struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    command: Command,
    /// Also draw PNG charts into DIR (created if needed): a bar chart of
    /// the ratios of every report, and for `scale` requests/s against
    /// connections on log axes.
    #[arg(long, value_name = "DIR", global = true)]
    plot: Option<PathBuf>,
}

/// The `--plot` directory, set once in `main`.
static PLOT_DIR: OnceLock<PathBuf> = OnceLock::new();

/// The subcommands: one per scenario, plus `all`.
#[derive(Subcommand, Debug)]
enum Command {
    /// eventpoll vs kernel epoll over eventfds: ctl ADD/MOD/DEL, empty wait,
    /// 64-event wait, write+wait+read cycle, 1k vs 1M watches, cross-thread
    /// wake-up latency, memory per watch.
    Epoll {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write the results as JSON to FILE (`{"scenario", "machine",
        /// "results": [{"workload", "metric", "usertcp", "kernel",
        /// "vs_kernel", ...}]}`; null where a figure is n/a).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// 64 B request/response on one connection: usertcp vs the kernel over
    /// 127.0.0.1 vs stock smoltcp, client and server on one thread.
    Pingpong {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// The pingpong with 100k idle connections open vs none: usertcp,
    /// the kernel (at the descriptor limit) and stock smoltcp.
    Idle {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// 64 B request/response over 10k and 100k active connections: usertcp
    /// vs the kernel (at the descriptor limit) vs stock smoltcp (not with
    /// --quick; at 100k in time-bounded windows over part of a round).
    Rr {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Connect, 64 B request/response, close: connections per second,
    /// usertcp vs the kernel over 127.0.0.1.
    Crr {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Open 1M concurrent connections, then one 64 B request/response on
    /// each: establish rate, request rate, RSS per connection and in total.
    C1m {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Connections to open (default 1,000,000; 50,000 with --quick).
        #[arg(long, value_name = "N")]
        connections: Option<usize>,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// netstack's threaded mode: 4 blocking client threads and a
    /// thread-per-connection server, vs the kernel with the same threads and
    /// vs run-to-completion usertcp; idle stack-thread CPU.
    Threaded {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Kernel clients against usertcp on a TAP (root): wrk -t1 -c64
    /// requests/s vs the kernel on 127.0.0.1, and bulk Gbit/s.
    Tap {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Throughput of 1 and 8 streams at MTU 1500 and 65535, Gbit/s:
    /// usertcp vs the kernel (one core, and two) vs stock smoltcp.
    Bulk {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Requests/s as active connections grow 1, 10, ... 1M: usertcp, the
    /// kernel (to the descriptor limit), stock smoltcp (within a time
    /// budget).
    Scale {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// The largest connection count (default 1M; 10k with --quick).
        #[arg(long, value_name = "N")]
        max_connections: Option<usize>,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Bytes per idle established connection, both ends: usertcp's heap
    /// vs the kernel's slab and socket memory.
    Memory {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write the results as JSON to FILE.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Internal: one kernel worker process of `rr` (started by `rr` itself
    /// when one process cannot hold the kernel's connections): opens CONNS
    /// connections on 127.0.0.1, prints `ready CONNS`, then serves `run MS`
    /// (answering `done RESPONSES ELAPSED_NS`) and `quit` from stdin.
    #[command(hide = true)]
    KernelRrWorker {
        /// Connections to open (client and server end in this process).
        #[arg(long, value_name = "CONNS")]
        conns: usize,
        /// The CPU to pin the worker to.
        #[arg(long, value_name = "CPU")]
        cpu: Option<usize>,
    },
    /// Every scenario in turn, one table each.
    All {
        /// How long to measure.
        #[command(flatten)]
        opts: RunOpts,
        /// Also write one JSON file per scenario into DIR (DIR/epoll.json,
        /// ...), creating DIR if needed.
        #[arg(long, value_name = "DIR")]
        json_dir: Option<PathBuf>,
    },
}

/// Options shared by every subcommand.
#[derive(Args, Debug)]
struct RunOpts {
    /// Quick mode: 3 runs of ~50 ms per side after 50 ms of warm-up,
    /// instead of 5 runs of ~100 ms after 100 ms. Keeps a whole run well
    /// under a minute; figures are noisier.
    #[arg(long)]
    quick: bool,
}

impl RunOpts {
    fn config(&self) -> Config {
        if self.quick {
            Config::quick()
        } else {
            Config::full()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = cli.plot {
        let _ = PLOT_DIR.set(dir);
    }
    let mut ok = true;
    match cli.command {
        Command::Epoll { opts, json } => {
            let report = (scenarios::epoll::run)(&opts.config());
            ok &= emit(&report, json.as_deref());
        }
        Command::Pingpong { opts, json } => {
            let report = (scenarios::pingpong::run)(&opts.config());
            ok &= emit(&report, json.as_deref());
        }
        Command::Idle { opts, json } => {
            let report = (scenarios::idle::run)(&opts.config());
            ok &= emit(&report, json.as_deref());
        }
        Command::Rr { opts, json } => {
            let report = (scenarios::rr::run)(&opts.config());
            ok &= emit(&report, json.as_deref());
        }
        Command::Crr { opts, json } => {
            let report = (scenarios::crr::run)(&opts.config());
            ok &= emit(&report, json.as_deref());
        }
        Command::Threaded { opts, json } => {
            let report = (scenarios::threaded::run)(&opts.config());
            ok &= emit(&report, json.as_deref());
        }
        Command::Tap { opts, json } => {
            let report = (scenarios::tap::run)(&opts.config());
            ok &= emit(&report, json.as_deref());
        }
        Command::C1m {
            opts,
            connections,
            json,
        } => {
            let config = opts.config();
            let report = match connections {
                Some(n) => scenarios::c1m::run_with(&config, n),
                None => scenarios::c1m::run(&config),
            };
            ok &= emit(&report, json.as_deref());
        }
        Command::Bulk { opts, json } => {
            let report = (scenarios::bulk::run)(&opts.config());
            ok &= emit(&report, json.as_deref());
        }
        Command::Scale {
            opts,
            max_connections,
            json,
        } => {
            let config = opts.config();
            let report = match max_connections {
                Some(n) => scenarios::scale::run_with(&config, n),
                None => scenarios::scale::run(&config),
            };
            ok &= emit(&report, json.as_deref());
        }
        Command::Memory { opts, json } => {
            let report = (scenarios::memory::run)(&opts.config());
            ok &= emit(&report, json.as_deref());
        }
        Command::KernelRrWorker { conns, cpu } => {
            return scenarios::kworkers::worker_main(conns, cpu);
        }
        Command::All { opts, json_dir } => {
            let config = opts.config();
            if let Some(dir) = &json_dir
                && let Err(err) = std::fs::create_dir_all(dir)
            {
                eprintln!("loopbench: cannot create {}: {err}", dir.display());
                return ExitCode::FAILURE;
            }
            let started = std::time::Instant::now();
            for scenario in scenarios::ALL {
                let report = (scenario.run)(&config);
                let path = json_dir
                    .as_ref()
                    .map(|dir| dir.join(format!("{}.json", scenario.name)));
                ok &= emit(&report, path.as_deref());
            }
            eprintln!(
                "loopbench: all scenarios took {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints the report's table, writes its JSON to `json` if given and its
/// charts into the `--plot` directory if one was given. Returns false if a
/// file could not be written.
fn emit(report: &Report, json: Option<&Path>) -> bool {
    println!("{}", report.table());
    let mut ok = true;
    if let Some(dir) = PLOT_DIR.get() {
        if plot::font().is_none() {
            eprintln!(
                "loopbench: no TrueType font found (set LOOPBENCH_FONT, or install \
                 fonts-dejavu-core): charts without text"
            );
        }
        match plot::write(report, dir) {
            Ok(paths) => {
                for path in paths {
                    eprintln!("loopbench: wrote {}", path.display());
                }
            }
            Err(err) => {
                eprintln!(
                    "loopbench: cannot draw the charts of {}: {err}",
                    report.scenario
                );
                ok = false;
            }
        }
    }
    let Some(path) = json else { return ok };
    match std::fs::write(path, report.json()) {
        Ok(()) => {
            eprintln!("loopbench: wrote {}", path.display());
            ok
        }
        Err(err) => {
            eprintln!("loopbench: cannot write {}: {err}", path.display());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed_and_parses_the_documented_forms() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["loopbench", "epoll", "--quick", "--json", "x.json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Epoll {
                opts: RunOpts { quick: true },
                json: Some(_)
            }
        ));
        let cli = Cli::try_parse_from(["loopbench", "all", "--json-dir", "d"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::All {
                opts: RunOpts { quick: false },
                json_dir: Some(_)
            }
        ));
        assert!(Cli::try_parse_from(["loopbench", "epoll", "--json-dir", "d"]).is_err());
        for name in [
            "pingpong", "idle", "rr", "crr", "c1m", "threaded", "tap", "bulk", "scale", "memory",
        ] {
            assert!(
                Cli::try_parse_from(["loopbench", name, "--quick"]).is_ok(),
                "{name}"
            );
        }
        let cli =
            Cli::try_parse_from(["loopbench", "all", "--quick", "--plot", "target/p"]).unwrap();
        assert_eq!(cli.plot.as_deref(), Some(Path::new("target/p")));
        let cli = Cli::try_parse_from(["loopbench", "scale", "--max-connections", "100"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Scale {
                max_connections: Some(100),
                ..
            }
        ));
        let cli = Cli::try_parse_from([
            "loopbench",
            "kernel-rr-worker",
            "--conns",
            "5",
            "--cpu",
            "1",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::KernelRrWorker {
                conns: 5,
                cpu: Some(1)
            }
        ));
        assert!(Cli::try_parse_from(["loopbench", "kernel-rr-worker"]).is_err());
        let help = Cli::command().render_help().to_string();
        assert!(!help.contains("kernel-rr-worker"), "{help}");
        let cli = Cli::try_parse_from(["loopbench", "c1m", "--connections", "1000"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::C1m {
                connections: Some(1000),
                ..
            }
        ));
    }
}
