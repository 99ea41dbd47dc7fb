//! The kernel side of `rr` at connection counts one process cannot hold:
//! several worker processes sharing one core.
//!
//! The kernel needs two descriptors per connection when client and server
//! run in one process, and `RLIMIT_NOFILE` caps a process's descriptors
//! (the hard limit cannot always be raised). For N connections beyond that
//! cap, [`Workers`] starts several copies of this binary (the hidden
//! subcommand `kernel-rr-worker`, [`worker_main`]), each one echo server
//! and client on one thread ([`KernelPair`], with its own listener port)
//! holding its share of the N connections, at most what its own
//! `RLIMIT_NOFILE` allows ([`shares`]).
//!
//! **Fairness.** Every worker is pinned to the one CPU the measuring thread
//! (usertcp's) is pinned to, so the kernel gets exactly usertcp's CPU
//! budget: one core, softirq work included. The scheduler time-slices the
//! workers; each worker's epolls watch only its own share of the
//! connections (the kernel's per-connection costs do not depend on that;
//! what splitting saves is at most the cost of a bigger epoll set).
//!
//! **Protocol** (one line each, on the worker's stdin and stdout): the
//! worker opens its connections and prints `ready <conns>`; then `run <ms>`
//! runs the closed loop of [`KernelPair::rr_until`] (all its connections in
//! flight, each sending its next request when its response is in) for that
//! long and prints `done <responses> <elapsed_ns> <cpu_ns>` (the last the
//! CPU time the worker used meanwhile, softirq work done in its context
//! included); `quit` or the end of
//! stdin closes everything and exits 0. Errors go to stderr with a non-zero
//! exit; the parent turns them (and any silence past a time bound) into an
//! [`io::Error`] carrying the worker's message, never a panic.
//!
//! **Lifetime.** A worker asks the kernel to kill it when its parent dies
//! (`PR_SET_PDEATHSIG`) and exits at the end of its stdin; [`Workers`]
//! closes their stdins, then kills and reaps whatever is left on drop, so
//! no exit path of the parent leaves a worker behind.
//!
//! **Measuring** ([`measure()`]): every run sends `run <ms>` to all workers at
//! once; its rate is the sum of their responses over the run's wall time
//! (from the first command sent to the last answer read). The workers' CPU
//! time over the runs' wall time shows what share of the core they had
//! (about 100 % on an otherwise idle core; other tasks on that core take
//! their share from usertcp's thread alike). Warm-up lasts at
//! least [`WARMUP_ROUNDS`] whole rounds of N requests (TCP's RTT estimators
//! need a few rounds) and at least the configured warm-up; each measured
//! run lasts [`ROUNDS_PER_RUN`] rounds at the warm-up rate (so that each
//! worker completes several of its own rounds despite time-slicing),
//! between the configured run time and [`MAX_RUN`]; the median of the
//! configured number of runs is reported.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::kernel;
use crate::measure::{self, Config};

use super::net::KernelPair;
use super::rr;

/// The hidden subcommand a worker process runs.
pub const SUBCOMMAND: &str = "kernel-rr-worker";
/// The longest wait for every worker to open its connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long past a run's length a worker may take to answer.
const RUN_SLACK: Duration = Duration::from_secs(30);
/// How long workers get to exit after their stdin closed before they are
/// killed.
const QUIT_GRACE: Duration = Duration::from_secs(5);
/// Warm-up: at least this many whole rounds of N requests.
pub const WARMUP_ROUNDS: f64 = 4.0;
/// The length of one warm-up run.
const WARMUP_STEP: Duration = Duration::from_secs(1);
/// The longest warm-up before giving up.
const MAX_WARMUP: Duration = Duration::from_secs(120);
/// A measured run lasts this many rounds (at the warm-up rate).
pub const ROUNDS_PER_RUN: f64 = 3.0;
/// The longest measured run.
pub const MAX_RUN: Duration = Duration::from_secs(20);

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn context(what: &str, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// Splits `n` connections into as few shares as possible of at most
/// `per_process` each, as even as possible (none if `per_process` is 0).
pub fn shares(n: usize, per_process: usize) -> Vec<usize> {
    if per_process == 0 || n == 0 {
        return Vec::new();
    }
    let k = n.div_ceil(per_process);
    (0..k).map(|i| n / k + usize::from(i < n % k)).collect()
}

// ---------------------------------------------------------------------------
// The worker process

/// The `kernel-rr-worker` subcommand: pins itself to `cpu`, raises its
/// soft `RLIMIT_NOFILE`, opens `conns` connections and serves the commands
/// on stdin (see the module docs). Errors are printed to stderr and make
/// the exit status non-zero.
pub fn worker_main(conns: usize, cpu: Option<usize>) -> ExitCode {
    match worker(conns, cpu, io::stdin().lock(), io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loopbench {SUBCOMMAND}: {err}");
            ExitCode::FAILURE
        }
    }
}

fn worker(
    conns: usize,
    cpu: Option<usize>,
    input: impl BufRead,
    mut output: impl Write,
) -> io::Result<()> {
    kernel::die_with_parent().map_err(|e| context("PR_SET_PDEATHSIG", e))?;
    if conns == 0 {
        return Err(invalid("--conns must be at least 1".to_owned()));
    }
    if let Some(cpu) = cpu {
        kernel::set_thread_affinity(&[cpu])
            .map_err(|e| context(&format!("pinning to CPU {cpu}"), e))?;
    }
    let (soft, hard) = kernel::nofile_limit().map_err(|e| context("getrlimit", e))?;
    if soft < hard {
        kernel::set_nofile_limit(hard, hard).map_err(|e| context("setrlimit", e))?;
    }
    let max = rr::conns_for_limit(hard);
    if conns > max {
        return Err(invalid(format!(
            "{conns} connections need {} descriptors; RLIMIT_NOFILE ({hard}) allows {max} \
             connections",
            (conns as u64)
                .saturating_mul(2)
                .saturating_add(rr::FD_RESERVE)
        )));
    }
    let mut pair = KernelPair::new().map_err(|e| context("set-up", e))?;
    pair.open(conns)
        .map_err(|e| context(&format!("opening {conns} connections"), e))?;
    output.write_all(format!("ready {conns}\n").as_bytes())?;
    output.flush()?;
    serve(&mut pair, conns, input, output)
}

/// Serves `run <ms>` and `quit` commands from `input` (one per line) on
/// `pair`'s first `width` connections, answering on `output`; returns at
/// `quit` or at the end of `input`, and fails on anything else.
pub fn serve(
    pair: &mut KernelPair,
    width: usize,
    input: impl BufRead,
    mut output: impl Write,
) -> io::Result<()> {
    for line in input.lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["run", ms] => {
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| invalid(format!("bad run time in {line:?}")))?;
                let cpu = kernel::process_cpu_time()?;
                let start = Instant::now();
                let done = pair.rr_until(width, start + Duration::from_millis(ms))?;
                let elapsed = start.elapsed();
                let cpu = kernel::process_cpu_time()?.saturating_sub(cpu);
                let answer = format!("done {done} {} {}\n", elapsed.as_nanos(), cpu.as_nanos());
                output.write_all(answer.as_bytes())?;
                output.flush()?;
            }
            ["quit"] => return Ok(()),
            _ => return Err(invalid(format!("unknown command {line:?}"))),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The parent

/// What a worker's stdout reader thread reports.
enum Msg {
    Line(String),
    /// End of output, or the read error that ended it.
    End(Option<io::Error>),
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    conns: usize,
    reader: Option<JoinHandle<()>>,
}

/// Running worker processes (see the module docs), each with its share of
/// the connections open. Dropping it ends them all.
pub struct Workers {
    workers: Vec<Worker>,
    lines: mpsc::Receiver<(usize, Msg)>,
}

/// One run of every worker.
#[derive(Clone, Debug)]
pub struct Run {
    /// Responses each worker counted, in worker order.
    pub responses: Vec<u64>,
    /// CPU time each worker used during the run, in worker order.
    pub cpu: Vec<Duration>,
    /// Wall time from the first command sent to the last answer read.
    pub wall: Duration,
}

impl Run {
    /// All workers' responses.
    pub fn total(&self) -> u64 {
        self.responses.iter().sum()
    }

    /// All workers' CPU time.
    pub fn total_cpu(&self) -> Duration {
        self.cpu.iter().sum()
    }

    /// Responses per second of wall time.
    pub fn rate(&self) -> f64 {
        self.total() as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

impl Workers {
    /// Starts one worker (`exe kernel-rr-worker`) per entry of `shares`
    /// with that many connections, pinned to `cpu` if given, and waits up
    /// to `timeout` until every one has its connections open.
    pub fn start(
        exe: &Path,
        shares: &[usize],
        cpu: Option<usize>,
        timeout: Duration,
    ) -> io::Result<Workers> {
        let (tx, rx) = mpsc::channel();
        let mut me = Workers {
            workers: Vec::with_capacity(shares.len()),
            lines: rx,
        };
        for (i, &conns) in shares.iter().enumerate() {
            let mut cmd = Command::new(exe);
            cmd.arg(SUBCOMMAND).arg("--conns").arg(conns.to_string());
            if let Some(cpu) = cpu {
                cmd.arg("--cpu").arg(cpu.to_string());
            }
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .map_err(|e| context(&format!("starting {}", exe.display()), e))?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take();
            // Pushed before anything else can fail: dropping `me` ends it.
            me.workers.push(Worker {
                child,
                stdin,
                conns,
                reader: None,
            });
            let stdout =
                stdout.ok_or_else(|| io::Error::other("worker spawned without a stdout pipe"))?;
            let tx = tx.clone();
            let reader = std::thread::Builder::new()
                .name(format!("kernel-worker-{i}"))
                .spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let msg = match line {
                            Ok(line) => Msg::Line(line),
                            Err(err) => {
                                let _ = tx.send((i, Msg::End(Some(err))));
                                return;
                            }
                        };
                        if tx.send((i, msg)).is_err() {
                            return;
                        }
                    }
                    let _ = tx.send((i, Msg::End(None)));
                })?;
            me.workers[i].reader = Some(reader);
        }
        drop(tx);
        let lines = me.collect(Instant::now() + timeout, "ready")?;
        for (i, line) in lines.iter().enumerate() {
            let want = format!("ready {}", me.workers[i].conns);
            if *line != want {
                return Err(io::Error::other(format!(
                    "kernel worker {i}: said {line:?}, not {want:?}"
                )));
            }
        }
        Ok(me)
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.workers.len()
    }

    /// The connections of all workers together.
    pub fn conns(&self) -> usize {
        self.workers.iter().map(|w| w.conns).sum()
    }

    /// The largest share of one worker.
    pub fn largest_share(&self) -> usize {
        self.workers.iter().map(|w| w.conns).max().unwrap_or(0)
    }

    /// The process ids of the workers.
    #[cfg(test)]
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.child.id()).collect()
    }

    /// Runs the closed loop on every worker at once for `time` and returns
    /// what each counted.
    pub fn run(&mut self, time: Duration) -> io::Result<Run> {
        let ms = time.as_millis().max(1);
        let command = format!("run {ms}\n");
        let start = Instant::now();
        for i in 0..self.workers.len() {
            let sent = match self.workers[i].stdin.as_mut() {
                Some(stdin) => stdin.write_all(command.as_bytes()),
                None => Err(io::Error::other("stdin already closed")),
            };
            if let Err(err) = sent {
                return Err(self.failure(i, Some(err)));
            }
        }
        let lines = self.collect(start + time + RUN_SLACK, "run")?;
        let wall = start.elapsed();
        let mut responses = Vec::with_capacity(lines.len());
        let mut cpu = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let parsed = match words[..] {
                ["done", n, _ns, cpu_ns] => n.parse::<u64>().ok().zip(cpu_ns.parse::<u64>().ok()),
                _ => None,
            };
            match parsed {
                Some((n, cpu_ns)) => {
                    responses.push(n);
                    cpu.push(Duration::from_nanos(cpu_ns));
                }
                None => {
                    return Err(io::Error::other(format!(
                        "kernel worker {i}: answered {line:?} to a run"
                    )));
                }
            }
        }
        Ok(Run {
            responses,
            cpu,
            wall,
        })
    }

    /// One line from every worker, waiting until `deadline`.
    fn collect(&mut self, deadline: Instant, what: &str) -> io::Result<Vec<String>> {
        let mut got: Vec<Option<String>> = vec![None; self.workers.len()];
        let mut left = got.len();
        while left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(wait) {
                Ok((i, Msg::Line(line))) => {
                    if let Some(earlier) = &got[i] {
                        return Err(io::Error::other(format!(
                            "kernel worker {i}: said {line:?} after {earlier:?}"
                        )));
                    }
                    got[i] = Some(line);
                    left -= 1;
                }
                Ok((i, Msg::End(err))) => return Err(self.failure(i, err)),
                Err(RecvTimeoutError::Timeout) => {
                    let late: Vec<usize> = (0..got.len()).filter(|&i| got[i].is_none()).collect();
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("kernel workers {late:?}: no answer to {what} in time"),
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other("every kernel worker's output closed"));
                }
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// The error of worker `i`, whose output ended (or could not be
    /// written to): kills and reaps it, and returns its exit status and
    /// what it wrote to stderr.
    fn failure(&mut self, i: usize, err: Option<io::Error>) -> io::Error {
        let w = &mut self.workers[i];
        w.stdin = None;
        let _ = w.child.kill();
        let status = match w.child.wait() {
            Ok(status) => status.to_string(),
            Err(err) => format!("wait failed: {err}"),
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = w.child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let io = err.map(|e| format!(" ({e})")).unwrap_or_default();
        io::Error::other(format!(
            "kernel worker {i} ({} connections) stopped{io}, {status}: {}",
            w.conns,
            stderr.trim()
        ))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // End of stdin: each worker closes its connections and exits.
        for w in &mut self.workers {
            w.stdin = None;
        }
        let deadline = Instant::now() + QUIT_GRACE;
        for w in &mut self.workers {
            loop {
                match w.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    _ => {
                        let _ = w.child.kill();
                        let _ = w.child.wait();
                        break;
                    }
                }
            }
        }
        // Every worker is gone, so every reader has seen the end of its
        // pipe (or will at once).
        for w in &mut self.workers {
            if let Some(reader) = w.reader.take() {
                let _ = reader.join();
            }
        }
    }
}

/// The kernel's rate measured on `workers` (see the module docs).
#[derive(Clone, Debug)]
pub struct Measured {
    /// Median requests per second over the runs.
    pub rate: f64,
    /// The slowest and fastest run, requests per second.
    pub spread: (f64, f64),
    /// The length asked of each measured run.
    pub run_time: Duration,
    /// The warm-up's wall time.
    pub warmup: Duration,
    /// Measured runs.
    pub runs: usize,
    /// The workers' CPU time over the wall time of the measured runs: the
    /// share of one core they had.
    pub cpu_share: f64,
}

/// Warms `workers` up and measures them (see the module docs).
pub fn measure(cfg: &Config, workers: &mut Workers) -> io::Result<Measured> {
    let n = workers.conns() as f64;
    let started = Instant::now();
    let mut responses = 0u64;
    let mut busy = Duration::ZERO;
    loop {
        let run = workers.run(WARMUP_STEP)?;
        responses += run.total();
        busy += run.wall;
        if responses as f64 >= WARMUP_ROUNDS * n && started.elapsed() >= cfg.warmup {
            break;
        }
        if started.elapsed() >= MAX_WARMUP {
            return Err(io::Error::other(format!(
                "warm-up: {responses} responses in {:.0} s, fewer than {WARMUP_ROUNDS} rounds of {n}",
                started.elapsed().as_secs_f64()
            )));
        }
    }
    let warmup = started.elapsed();
    let round = n / (responses as f64 / busy.as_secs_f64().max(1e-9));
    let run_time = Duration::from_secs_f64(round * ROUNDS_PER_RUN)
        .max(cfg.run_time)
        .min(MAX_RUN);
    let mut rates = Vec::with_capacity(cfg.runs);
    let (mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..cfg.runs.max(1) {
        let run = workers.run(run_time)?;
        if let Some(i) = run.responses.iter().position(|&r| r == 0) {
            return Err(io::Error::other(format!(
                "kernel worker {i} answered no request in a {:.1} s run",
                run_time.as_secs_f64()
            )));
        }
        rates.push(run.rate());
        cpu += run.total_cpu();
        wall += run.wall;
    }
    let rate = measure::median(&mut rates);
    Ok(Measured {
        rate,
        spread: (rates[0], rates[rates.len() - 1]),
        run_time,
        warmup,
        runs: rates.len(),
        cpu_share: cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The loopbench binary next to this test binary (`target/debug/deps/
    /// loopbench-<hash>` -> `target/debug/loopbench`); cargo builds it for
    /// the integration tests in `tests/`.
    fn loopbench_exe() -> PathBuf {
        let test = std::env::current_exe().unwrap();
        let exe = test
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("loopbench");
        assert!(
            exe.exists(),
            "{} is not built (cargo test builds it for crates/loopbench/tests)",
            exe.display()
        );
        exe
    }

    #[test]
    fn shares_are_even_and_within_the_cap() {
        assert_eq!(shares(100_000, 9_968).len(), 11);
        assert!(shares(100_000, 9_968).iter().all(|&s| s <= 9_968));
        assert_eq!(shares(100_000, 9_968).iter().sum::<usize>(), 100_000);
        assert_eq!(shares(10, 3), vec![3, 3, 2, 2]);
        assert_eq!(shares(6, 6), vec![6]);
        assert!(shares(6, 0).is_empty());
    }

    #[test]
    fn two_workers_answer_and_their_counts_add_up() {
        let exe = loopbench_exe();
        let usable = kernel::thread_affinity().unwrap();
        let cpu = usable[usable.len() - 1];
        let mut workers =
            Workers::start(&exe, &[300, 200], Some(cpu), Duration::from_secs(60)).unwrap();
        assert_eq!(workers.processes(), 2);
        assert_eq!(workers.conns(), 500);
        // Each worker pinned itself to the one CPU it was given.
        for pid in workers.pids() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let allowed = status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .unwrap();
            assert_eq!(allowed.trim(), cpu.to_string(), "worker {pid}");
        }
        for _ in 0..2 {
            let run = workers.run(Duration::from_millis(200)).unwrap();
            assert_eq!(run.responses.len(), 2);
            assert!(run.responses.iter().all(|&r| r > 0), "{:?}", run.responses);
            assert_eq!(run.total(), run.responses[0] + run.responses[1]);
            assert!(run.wall >= Duration::from_millis(200), "{:?}", run.wall);
            // Both used CPU, and together no more than the one core they
            // share (plus the clock's granularity).
            assert_eq!(run.cpu.len(), 2);
            assert!(run.cpu.iter().all(|c| !c.is_zero()), "{:?}", run.cpu);
            assert!(
                run.total_cpu() <= run.wall + Duration::from_millis(20),
                "{:?} of CPU in {:?}",
                run.total_cpu(),
                run.wall
            );
            assert!(run.rate() > 0.0);
        }
        let pids = workers.pids();
        drop(workers);
        for pid in pids {
            // Reaped: no such process any more.
            assert!(!Path::new(&format!("/proc/{pid}")).exists(), "worker {pid}");
        }
    }

    #[test]
    fn a_worker_dies_with_the_thread_that_started_it() {
        let exe = loopbench_exe();
        let pid = std::thread::spawn(move || {
            let workers = Workers::start(&exe, &[2], None, Duration::from_secs(60)).unwrap();
            let pid = workers.pids()[0];
            // Neither its stdin closed nor killed: only PR_SET_PDEATHSIG
            // can end it now.
            std::mem::forget(workers);
            pid
        })
        .join()
        .unwrap();
        // The state field of /proc/PID/stat: Z once dead (a zombie, never
        // reaped here: the forgotten Child was its only owner).
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(str::to_owned)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while state().is_some_and(|s| s != "Z" && s != "X") {
            assert!(
                Instant::now() < deadline,
                "worker {pid} outlived its thread"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn workers_failing_to_start_report_their_message() {
        let exe = loopbench_exe();
        let timeout = Duration::from_secs(60);
        // More connections than any RLIMIT_NOFILE allows (fs.nr_open < 2^31).
        let err = Workers::start(&exe, &[10, 1 << 40], None, timeout)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("kernel worker 1"), "{err}");
        assert!(err.contains("RLIMIT_NOFILE"), "{err}");
        let err = Workers::start(&exe, &[10], Some(1 << 20), timeout)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("pinning to CPU"), "{err}");
    }

    #[test]
    fn a_worker_serves_runs_until_quit_and_refuses_nonsense() {
        let mut pair = KernelPair::new().unwrap();
        pair.open(20).unwrap();
        let mut out = Vec::new();
        let input = "run 30\nrun 30\nquit\nrun 30\n";
        serve(&mut pair, 20, input.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let answers: Vec<&str> = out.lines().collect();
        assert_eq!(answers.len(), 2, "{out}");
        for answer in answers {
            let words: Vec<u64> = answer
                .strip_prefix("done ")
                .unwrap()
                .split(' ')
                .map(|w| w.parse().unwrap())
                .collect();
            assert!(words[0] > 0, "{answer}");
            assert!(words[1] >= 30_000_000, "{answer}");
            assert!(words[2] > 0, "{answer}");
        }
        let err = serve(&mut pair, 20, "run soon\n".as_bytes(), Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(serve(&mut pair, 20, "jump\n".as_bytes(), Vec::new()).is_err());
    }
}
