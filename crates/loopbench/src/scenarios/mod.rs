//! The scenarios: one module each, each measuring usertcp and the Linux
//! kernel doing the same work in the same run and returning a
//! [`crate::report::Report`].
//!
//! A new scenario adds a module here and an entry to [`ALL`]; `loopbench
//! all` then runs it, and the CLI gains a subcommand for it in `main.rs`.

pub mod bulk;
pub mod c1m;
pub mod crr;
pub mod epoll;
pub mod idle;
pub mod kworkers;
pub mod memory;
pub mod net;
pub mod pingpong;
pub mod rr;
pub mod scale;
pub mod tap;
pub mod threaded;

use std::io;
use std::time::Duration;

use crate::kernel;
use crate::measure::{self, Config};
use crate::report::{Figure, Report};

/// A scenario the harness can run.
pub struct Scenario {
    /// The name: the subcommand and the JSON file's stem.
    pub name: &'static str,
    /// Runs the scenario and returns its report. Never panics on a failed
    /// measurement: failures become rows with the error.
    pub run: fn(&Config) -> Report,
}

/// Every scenario, in the order `loopbench all` runs them.
pub const ALL: &[Scenario] = &[
    Scenario {
        name: "epoll",
        run: epoll::run,
    },
    Scenario {
        name: "pingpong",
        run: pingpong::run,
    },
    Scenario {
        name: "idle",
        run: idle::run,
    },
    Scenario {
        name: "rr",
        run: rr::run,
    },
    Scenario {
        name: "crr",
        run: crr::run,
    },
    Scenario {
        name: "c1m",
        run: c1m::run,
    },
    Scenario {
        name: "threaded",
        run: threaded::run,
    },
    Scenario {
        name: "tap",
        run: tap::run,
    },
    Scenario {
        name: "bulk",
        run: bulk::run,
    },
    Scenario {
        name: "scale",
        run: scale::run,
    },
    Scenario {
        name: "memory",
        run: memory::run,
    },
];

/// A workload on one side, boxed so that sides of different types can be
/// measured together.
pub type BoxedWorkload = Box<measure::Workload<'static>>;

/// Boxes a workload, keeping a set-up error as it is.
pub fn boxed<W>(workload: io::Result<W>) -> io::Result<BoxedWorkload>
where
    W: FnMut(u64) -> io::Result<Duration> + 'static,
{
    workload.map(|w| Box::new(w) as BoxedWorkload)
}

/// Measures several sides of one workload together (interleaved, see
/// [`measure::compare`]); a side that failed to set up is reported with its
/// error. Figures are nanoseconds per iteration divided by `per`.
pub fn measure_sides(cfg: &Config, per: f64, sides: Vec<io::Result<BoxedWorkload>>) -> Vec<Figure> {
    let mut ready: Vec<BoxedWorkload> = Vec::new();
    let mut slots: Vec<Result<usize, Figure>> = Vec::new();
    for side in sides {
        match side {
            Ok(workload) => {
                slots.push(Ok(ready.len()));
                ready.push(workload);
            }
            Err(err) => slots.push(Err(Figure::Error(format!("set-up: {err}")))),
        }
    }
    let mut refs: Vec<&mut measure::Workload<'static>> =
        ready.iter_mut().map(|w| &mut **w).collect();
    let results = measure::compare(cfg, &mut refs);
    slots
        .into_iter()
        .map(|slot| match slot {
            Ok(index) => match &results[index] {
                Ok(sample) => Figure::Value(sample.per(per).median_ns),
                Err(err) => Figure::Error(err.to_string()),
            },
            Err(figure) => figure,
        })
        .collect()
}

/// Raises `RLIMIT_NOFILE` so that `want` descriptors can be open: the soft
/// limit to the hard limit, and, when the process may (`CAP_SYS_RESOURCE`),
/// both up to `want` capped at `fs.nr_open`. Returns what it did.
pub fn raise_nofile_limit(want: u64) -> String {
    let (soft, hard) = match kernel::nofile_limit() {
        Ok(limits) => limits,
        Err(err) => return format!("getrlimit failed: {err}"),
    };
    if soft >= want {
        return format!("{soft} already (soft), {hard} (hard)");
    }
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let mut hard_note = String::new();
    if let Some(cap) = nr_open {
        let goal = want.min(cap);
        if goal > hard {
            match kernel::set_nofile_limit(goal, goal) {
                Ok(()) => {
                    return format!(
                        "raised from {soft}/{hard} (soft/hard) to {goal} (fs.nr_open is {cap})"
                    );
                }
                Err(err) => {
                    hard_note = format!("; raising the hard limit to {goal} failed: {err}");
                }
            }
        }
    }
    match kernel::set_nofile_limit(hard, hard) {
        Ok(()) => format!("soft limit raised from {soft} to the hard limit {hard}{hard_note}"),
        Err(err) => format!("could not raise the soft limit {soft} to {hard}: {err}{hard_note}"),
    }
}

/// The calling thread pinned to one CPU (`sched_setaffinity`) for the
/// guard's life; the previous mask comes back on drop. This is the
/// harness's CPU-budget rule: usertcp's two stacks share one thread, and
/// the kernel's client and server, run on that same thread, also share
/// that one core, softirq work included.
pub struct Pinned {
    previous: Option<Vec<usize>>,
    /// The CPU the thread now runs on, if pinning worked.
    pub cpu: Option<usize>,
    /// Another usable CPU, for two-core rows (e.g. a kernel server thread).
    pub other: Option<usize>,
    /// What was done, for the report's footer.
    pub note: String,
}

impl Pinned {
    /// Pins the calling thread to the last CPU it may run on.
    pub fn one_core() -> Pinned {
        let usable = match kernel::thread_affinity() {
            Ok(cpus) if !cpus.is_empty() => cpus,
            Ok(_) => return Pinned::failed("no usable CPU in the affinity mask".to_owned()),
            Err(err) => return Pinned::failed(format!("sched_getaffinity failed: {err}")),
        };
        // The mask is not empty (checked above).
        let cpu = usable[usable.len() - 1];
        let other = usable.iter().copied().find(|&c| c != cpu);
        match kernel::set_thread_affinity(&[cpu]) {
            Ok(()) => Pinned {
                previous: Some(usable),
                cpu: Some(cpu),
                other,
                note: format!(
                    "CPU budget: the measuring thread (usertcp's two stacks; the kernel's client \
                     and server) pinned to CPU {cpu} with sched_setaffinity"
                ),
            },
            Err(err) => Pinned::failed(format!("sched_setaffinity failed: {err}")),
        }
    }

    /// A kernel pair whose server runs on a thread pinned to
    /// [`Pinned::other`], the client staying on this (pinned) thread: the
    /// kernel's two-core rows.
    pub fn two_cores(&self) -> io::Result<net::KernelPair> {
        match self.other {
            Some(cpu) => net::KernelPair::two_cores(cpu),
            None => Err(io::Error::other("no second usable CPU")),
        }
    }

    fn failed(why: String) -> Pinned {
        Pinned {
            previous: None,
            cpu: None,
            other: None,
            note: format!("CPU budget: not pinned ({why}); all sides still share one thread"),
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(cpus) = &self.previous {
            // Best effort: a thread left pinned only narrows later runs.
            let _ = kernel::set_thread_affinity(cpus);
        }
    }
}

/// The label of a kernel two-core row.
pub fn two_core_label(pinned: &Pinned) -> String {
    match (pinned.cpu, pinned.other) {
        (Some(a), Some(b)) => format!("  the same, kernel on two cores (CPUs {a} and {b})"),
        _ => "  the same, kernel on two cores".to_owned(),
    }
}

/// The note of a kernel two-core row.
pub fn two_core_note() -> &'static str {
    "kernel client and server on two pinned cores (server thread spinning on epoll_wait(0) \
     while busy): twice usertcp's CPU budget, shown for context, no target"
}

/// A count for labels: `10k`, `1M`, `1234`.
pub fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
