//! The `tap` scenario: usertcp serving real kernel clients through a TAP
//! device, against the kernel serving the same on 127.0.0.1.
//!
//! - **HTTP keep-alive**: `wrk -t1 -c64` against usertcp's HTTP server
//!   (`usertcp::apps::Server` with `apps::Http`, the `http_server`
//!   example's code) on a TAP inside a network namespace this scenario
//!   creates (wrk runs in the namespace, so every packet crosses the kernel
//!   twice: wrk's socket, then the TAP), against the same protocol served
//!   by kernel sockets with kernel epoll on 127.0.0.1 (`apps::serve_kernel`,
//!   `http_server --kernel`). Rounds alternate between the two sides; the
//!   median round is reported. Target: usertcp >= 0.5x the kernel.
//! - **bulk**: a kernel-socket client sends [`BULK`] bytes (10 MB with
//!   `--quick`) to usertcp's echo server on the TAP and reads them back,
//!   checked by hash; Gbit/s each way. The kernel side is the same client
//!   against the kernel echo server on 127.0.0.1. No target (issue 5 asks
//!   for the figure).
//! - **HTTP keep-alive, threaded**: the same wrk run against usertcp's
//!   threaded mode (`http_server --threads 2`: the stack on a
//!   `netstack::NetThread` sleeping on a second TAP, [`WORKERS`] worker
//!   threads sharing the listener, `apps::ThreadedServer`), alternating
//!   with the other two sides. A reference row, no target.
//!
//! usertcp's two servers share one stack on one thread, run-to-completion
//! (`apps::run`: it sleeps in `poll(2)` on the TAP when idle), on a thread
//! of this process that entered the namespace (`setns`); the kernel's two
//! servers run on a thread each. Nothing is pinned: wrk, the server and
//! the kernel's softirq work share the machine's cores on both sides.
//!
//! The namespace is `utcp-bench-<pid>` with `tap0`, the kernel at
//! 198.18.0.1/24 and usertcp at 198.18.0.2 (as `scripts/netns-tap.sh`),
//! and `tap1` for the threaded server (198.18.1.1/24, usertcp at
//! 198.18.1.2); it
//! is removed when the scenario ends, on every path (a guard). Every wrk
//! run is a child process killed if it overruns its bound; every client
//! socket has a timeout; the servers are stopped and joined.
//!
//! Without root, `/dev/net/tun`, `ip` or `wrk` every row is `n/a` with the
//! reason, so `loopbench all --quick` runs anywhere.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use netdev::Tap;
use netstack::{Net, NetThread, Stack, StackConfig};
use usertcp::apps::{self, Clock, Echo, Http, Server, ThreadedServer};
use usertcp::sys;

use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Figure, Metric, Report, Row, Target};

/// Bytes each way in one bulk round (without `--quick`).
pub const BULK: usize = 100_000_000;
/// wrk's connections (`-c`), as the issue asks.
pub const CONNECTIONS: usize = 64;
/// Worker threads of the threaded server's row.
pub const WORKERS: usize = 2;
const STACK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const KERNEL_SIDE: &str = "198.18.0.1/24";
const TAP: &str = "tap0";
const THREADED_STACK: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const THREADED_KERNEL_SIDE: &str = "198.18.1.1/24";
const THREADED_TAP: &str = "tap1";
const HTTP_PORT: u16 = 80;
const ECHO_PORT: u16 = 7;
/// Socket timeouts of the bulk client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// The scenario's sizes: rounds per side, wrk's duration, bulk bytes.
#[derive(Clone, Copy, Debug)]
struct Plan {
    rounds: usize,
    wrk_secs: u64,
    warmup_secs: u64,
    bulk: usize,
}

impl Plan {
    fn new(cfg: &Config) -> Plan {
        if cfg.quick {
            Plan {
                rounds: 1,
                wrk_secs: 1,
                warmup_secs: 0,
                bulk: 10_000_000,
            }
        } else {
            Plan {
                rounds: 3,
                wrk_secs: 5,
                warmup_secs: 1,
                bulk: BULK,
            }
        }
    }
}

/// Runs the scenario and returns its report (progress goes to stderr).
pub fn run(cfg: &Config) -> Report {
    let machine = Machine::detect();
    let started = Instant::now();
    let plan = Plan::new(cfg);
    let (http, threaded, bulk, mut notes) = match skip_reason() {
        Some(why) => {
            eprintln!("[tap] skipped: {why}");
            let na = || Figure::NotAvailable(why.clone());
            (
                (na(), na()),
                (na(), na()),
                (na(), na()),
                vec![format!("not run: {why}")],
            )
        }
        None => {
            eprintln!(
                "[tap] namespace, TAP and servers; wrk {}x{} s per side, bulk {} MB x{}",
                plan.rounds,
                plan.wrk_secs,
                plan.bulk / 1_000_000,
                plan.rounds
            );
            match measure(plan) {
                Ok(m) => m,
                Err(e) => {
                    let err = || Figure::Error(e.to_string());
                    ((err(), err()), (err(), err()), (err(), err()), Vec::new())
                }
            }
        }
    };
    let rows = vec![
        Row::new(
            format!(
                "HTTP keep-alive, wrk -t1 -c{CONNECTIONS}: usertcp through a TAP vs kernel on 127.0.0.1"
            ),
            Metric::ReqPerSec,
            http.0,
            http.1,
        )
        .target(Target::VsKernelAtLeast(0.5))
        .note("every packet to usertcp crosses the kernel twice (wrk's socket, then the TAP)"),
        Row::new(
            format!(
                "  the same, usertcp threaded: stack thread + {WORKERS} epoll workers \
                 (http_server --threads {WORKERS})"
            ),
            Metric::ReqPerSec,
            threaded.0,
            threaded.1,
        )
        .note("reference row: netstack's threaded mode on its own TAP, no target"),
        Row::new(
            "bulk echo from a kernel client, each way: usertcp through a TAP vs kernel on 127.0.0.1",
            Metric::GbitPerSec,
            bulk.0,
            bulk.1,
        ),
    ];
    let mut footer = vec![
        format!(
            "HTTP: wrk -t1 -c{CONNECTIONS} -d{}s, {} round(s) per side alternating (after a {} s \
             warm-up each), median round; usertcp: apps::Server with apps::Http on one \
             run-to-completion stack on tap0 in namespace utcp-bench-PID, wrk inside the \
             namespace; kernel: apps::serve_kernel (kernel sockets, kernel epoll, one thread) \
             on 127.0.0.1, wrk in the host namespace",
            plan.wrk_secs, plan.rounds, plan.warmup_secs
        ),
        format!(
            "bulk: a kernel-socket client writes {} MB and reads the echo back (FNV hash \
             checked), {} round(s) per side, median; Gbit/s of payload each way",
            plan.bulk / 1_000_000,
            plan.rounds
        ),
        "not pinned: wrk, the server and the kernel's softirq work share the machine's cores on \
         both sides"
            .to_owned(),
    ];
    footer.append(&mut notes);
    footer.push(format!(
        "scenario time {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Report {
        scenario: "tap",
        title: format!(
            "tap: kernel clients (wrk -t1 -c{CONNECTIONS}, bulk echo) against usertcp on a TAP \
             and the kernel on 127.0.0.1"
        ),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}

/// Why the scenario cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if let Some(why) = usertcp::sys::tap_unavailable() {
        return Some(why);
    }
    if Command::new("wrk").arg("-v").output().is_err() {
        return Some("wrk is not installed".to_owned());
    }
    None
}

type Pair = (Figure, Figure);

/// Sets everything up, measures, tears everything down.
fn measure(plan: Plan) -> io::Result<(Pair, Pair, Pair, Vec<String>)> {
    let ns = Netns::create(&format!("utcp-bench-{}", std::process::id()))?;
    let user = UserServers::start(&ns.name)?;
    let threaded = Threaded::start(&ns)?;
    let kernel_http = KernelServer::start(Http::default())?;
    let kernel_echo = KernelServer::start(Echo)?;
    let mut notes = Vec::new();

    let tap_url = format!("http://{STACK}:{HTTP_PORT}/");
    let kernel_url = format!("http://{}/", kernel_http.addr);
    let threaded_url = format!("http://{THREADED_STACK}:{HTTP_PORT}/");
    let wrk_tap = |secs: u64| wrk(Some(&ns.name), &tap_url, secs);
    let wrk_kernel = |secs: u64| wrk(None, &kernel_url, secs);
    let wrk_threaded = |secs: u64| wrk(Some(&ns.name), &threaded_url, secs);
    if plan.warmup_secs > 0 {
        wrk_tap(plan.warmup_secs)?;
        wrk_kernel(plan.warmup_secs)?;
        wrk_threaded(plan.warmup_secs)?;
    }
    let (mut user_rates, mut kernel_rates) = (Vec::new(), Vec::new());
    let mut threaded_rates = Vec::new();
    for round in 0..plan.rounds {
        for (side, result, rates) in [
            ("usertcp", wrk_tap(plan.wrk_secs), &mut user_rates),
            ("kernel", wrk_kernel(plan.wrk_secs), &mut kernel_rates),
            (
                "usertcp threaded",
                wrk_threaded(plan.wrk_secs),
                &mut threaded_rates,
            ),
        ] {
            let run = result?;
            if let Some(errors) = &run.socket_errors {
                notes.push(format!("{side}, round {}: wrk: {errors}", round + 1));
            }
            rates.push(run.rate);
        }
        eprintln!(
            "[tap] round {}: usertcp {:.0} req/s, kernel {:.0} req/s, usertcp threaded {:.0} req/s",
            round + 1,
            user_rates[round],
            kernel_rates[round],
            threaded_rates[round]
        );
    }
    let kernel_median = median(&mut kernel_rates);
    let http = (median(&mut user_rates), kernel_median.clone());
    let threaded_http = (median(&mut threaded_rates), kernel_median);
    let threaded_served = threaded.stop();

    let tap_echo = SocketAddr::from(SocketAddrV4::new(STACK, ECHO_PORT));
    let (mut user_gbps, mut kernel_gbps) = (Vec::new(), Vec::new());
    for _ in 0..plan.rounds {
        let bytes = plan.bulk;
        user_gbps.push(ns.run(move || bulk_echo(tap_echo, bytes))??);
        kernel_gbps.push(bulk_echo(kernel_echo.addr, bytes)?);
    }
    eprintln!(
        "[tap] bulk: usertcp {:?} Gbit/s, kernel {:?} Gbit/s",
        user_gbps, kernel_gbps
    );
    let bulk = (median(&mut user_gbps), median(&mut kernel_gbps));
    let served = user.stop()?;
    notes.push(format!(
        "usertcp's HTTP server answered {} requests on {} connections in all; the threaded one \
         {} requests on {} connections",
        served.0, served.1, threaded_served.0, threaded_served.1
    ));
    drop(kernel_http);
    drop(kernel_echo);
    drop(ns);
    Ok((http, threaded_http, bulk, notes))
}

fn median(values: &mut [f64]) -> Figure {
    if values.is_empty() {
        return Figure::Error("no run".to_owned());
    }
    values.sort_by(f64::total_cmp);
    Figure::Value(values[values.len() / 2])
}

// ---- the namespace ----------------------------------------------------------

/// A network namespace with [`TAP`] inside, the kernel's side configured;
/// deleted (with the TAP) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: &str) -> io::Result<Netns> {
        ip(&["netns", "add", name])?;
        // From here on the guard removes it, whatever fails next.
        let ns = Netns {
            name: name.to_owned(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        ip(&["-n", name, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
        ip(&["-n", name, "addr", "add", KERNEL_SIDE, "dev", TAP])?;
        ip(&["-n", name, "link", "set", TAP, "up"])?;
        ip(&[
            "-n",
            name,
            "tuntap",
            "add",
            "dev",
            THREADED_TAP,
            "mode",
            "tap",
        ])?;
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            THREADED_KERNEL_SIDE,
            "dev",
            THREADED_TAP,
        ])?;
        ip(&["-n", name, "link", "set", THREADED_TAP, "up"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        let name = self.name.clone();
        thread::spawn(move || {
            sys::enter_netns(&name)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("client thread panicked"))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("[tap] could not remove namespace {}: {e}", self.name);
        }
    }
}

/// `ip ARGS`, bounded to 10 s; an error carries its stderr.
fn ip(args: &[&str]) -> io::Result<()> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    let out = bounded(cmd, Duration::from_secs(10))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs `cmd` to its end, killing it if it runs past `limit`.
fn bounded(mut cmd: Command, limit: Duration) -> io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            return child.wait_with_output();
        }
        if Instant::now() >= deadline {
            kill(&mut child);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} ran past {} s and was killed", limit.as_secs()),
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---- wrk --------------------------------------------------------------------

struct WrkRun {
    rate: f64,
    socket_errors: Option<String>,
}

/// `wrk -t1 -c64 -dSECS URL`, inside namespace `ns` if given.
fn wrk(ns: Option<&str>, url: &str, secs: u64) -> io::Result<WrkRun> {
    let mut cmd = match ns {
        Some(name) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", name, "wrk"]);
            c
        }
        None => Command::new("wrk"),
    };
    cmd.args([
        "-t1".to_owned(),
        format!("-c{CONNECTIONS}"),
        format!("-d{secs}s"),
        "--timeout".to_owned(),
        "5s".to_owned(),
        url.to_owned(),
    ]);
    let out = bounded(cmd, Duration::from_secs(secs + 30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "wrk {url}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| io::Error::other(format!("no Requests/sec in wrk's output: {text}")))?;
    let socket_errors = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map(|l| l.trim().to_owned());
    Ok(WrkRun {
        rate,
        socket_errors,
    })
}

// ---- the servers ------------------------------------------------------------

/// usertcp's HTTP and echo servers on one stack on the namespace's TAP,
/// run-to-completion on a thread that entered the namespace.
struct UserServers {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(u64, u64)>>,
}

impl UserServers {
    fn start(ns: &str) -> io::Result<UserServers> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let name = ns.to_owned();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let thread = thread::Builder::new()
            .name("tap-server".into())
            .spawn(move || {
                let setup = || -> io::Result<_> {
                    sys::enter_netns(&name)?;
                    let tap = Tap::open(TAP)?;
                    let clock = Clock::new();
                    let mut st = Stack::new(tap, StackConfig::new(STACK, 24), clock.now())?;
                    let http = Server::listen(&mut st, HTTP_PORT, false, Http::default())?;
                    let echo = Server::listen(&mut st, ECHO_PORT, false, Echo)?;
                    Ok((clock, st, http, echo))
                };
                let (clock, mut st, mut http, mut echo) = match setup() {
                    Ok(s) => {
                        let _ = ready_tx.send(Ok(()));
                        s
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return (0, 0);
                    }
                };
                apps::run(&mut st, &clock, &flag, |st| {
                    let a = http.step(st);
                    let b = echo.step(st);
                    a || b
                });
                (http.protocol().requests, http.stats().accepted)
            })?;
        let mut servers = UserServers {
            stop,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(servers),
            Ok(Err(e)) => {
                servers.halt();
                Err(io::Error::new(e.kind(), format!("usertcp on {TAP}: {e}")))
            }
            Err(_) => {
                servers.halt();
                Err(io::Error::other("usertcp's server did not start"))
            }
        }
    }

    /// Stops the servers; returns (requests answered, connections accepted).
    fn stop(mut self) -> io::Result<(u64, u64)> {
        self.halt()
            .ok_or_else(|| io::Error::other("usertcp's server thread panicked"))
    }

    fn halt(&mut self) -> Option<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl Drop for UserServers {
    fn drop(&mut self) {
        self.halt();
    }
}

/// usertcp's threaded HTTP server: a `NetThread` on [`THREADED_TAP`]
/// (opened by a thread inside the namespace) and [`WORKERS`] workers.
struct Threaded {
    net: Net,
    server: Option<ThreadedServer<Http>>,
}

impl Threaded {
    fn start(ns: &Netns) -> io::Result<Threaded> {
        let net = ns.run(|| {
            let tap = Tap::open(THREADED_TAP)?;
            NetThread::spawn(tap, StackConfig::new(THREADED_STACK, 24))
        })??;
        let server = ThreadedServer::start(&net, HTTP_PORT, false, WORKERS, Http::default())
            .map_err(io::Error::from);
        match server {
            Ok(server) => Ok(Threaded {
                net,
                server: Some(server),
            }),
            Err(e) => {
                net.shutdown();
                Err(e)
            }
        }
    }

    /// Stops the workers and the stack; (requests answered, connections
    /// accepted).
    fn stop(mut self) -> (u64, u64) {
        let progress = self.server.take().map(ThreadedServer::stop);
        self.net.shutdown();
        progress.map_or((0, 0), |p| {
            (p.protos.iter().map(|h| h.requests).sum(), p.stats.accepted)
        })
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        drop(self.server.take());
        self.net.shutdown();
    }
}

/// A kernel-socket server (`apps::serve_kernel`) on 127.0.0.1, an
/// ephemeral port, its own thread; stopped and joined on drop.
struct KernelServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KernelServer {
    fn start<P: apps::Protocol + Send + 'static>(proto: P) -> io::Result<KernelServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (tx, rx) = mpsc::channel::<SocketAddr>();
        let thread = thread::Builder::new()
            .name("kernel-server".into())
            .spawn(move || {
                let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
                if let Err(e) = apps::serve_kernel(any, proto, false, &flag, |a| {
                    let _ = tx.send(a);
                }) {
                    eprintln!("[tap] kernel server: {e}");
                }
            })?;
        let mut server = KernelServer {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            stop,
            thread: Some(thread),
        };
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => Err(io::Error::other("the kernel server did not start")),
        }
    }
}

impl Drop for KernelServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---- bulk ---------------------------------------------------------------------

fn fnv(h: &mut u64, data: &[u8]) {
    for &b in data {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

/// Sends `total` pseudo-random bytes to the echo server at `addr` from one
/// thread while another reads the echo; checks it by hash. Gbit/s of
/// payload each way.
fn bulk_echo(addr: SocketAddr, total: usize) -> io::Result<f64> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut w = s.try_clone()?;
    let start = Instant::now();
    let writer = thread::spawn(move || -> io::Result<u64> {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len());
            for chunk in buf[..n].chunks_mut(8) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
            }
            w.write_all(&buf[..n])?;
            fnv(&mut h, &buf[..n]);
            left -= n;
        }
        Ok(h)
    });
    let mut r = &s;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let read = (|| -> io::Result<()> {
        while got < total {
            let n = r.read(&mut buf)?;
            if n == 0 {
                return Err(io::Error::other(format!(
                    "EOF after {got} of {total} bytes"
                )));
            }
            fnv(&mut h, &buf[..n]);
            got += n;
        }
        Ok(())
    })();
    let elapsed = start.elapsed();
    if read.is_err() {
        // Unblocks the writer if it waits for window space.
        let _ = s.shutdown(Shutdown::Both);
    }
    let sent = writer
        .join()
        .map_err(|_| io::Error::other("bulk writer panicked"))?;
    read?;
    if sent? != h {
        return Err(io::Error::other("the echo differs from what was sent"));
    }
    let _ = s.shutdown(Shutdown::Write);
    Ok(total as f64 * 8.0 / elapsed.as_secs_f64() / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_round_and_reports_no_run() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Figure::Value(2.0));
        assert_eq!(median(&mut [5.0]), Figure::Value(5.0));
        assert!(matches!(median(&mut []), Figure::Error(_)));
    }

    #[test]
    fn bulk_echo_checks_a_kernel_echo_byte_for_byte() {
        let server = KernelServer::start(Echo).unwrap();
        let gbps = bulk_echo(server.addr, 1_000_000).unwrap();
        assert!(gbps > 0.0);
    }
}
