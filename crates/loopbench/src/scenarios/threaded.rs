//! The `threaded` scenario: netstack's threaded mode (`NetThread`, `Net`,
//! blocking sockets) against the kernel with the same threads.
//!
//! The workload: [`THREADS`] client threads, each with its own connection,
//! each doing [`MSG`]-byte request/response in a closed loop (blocking
//! `write_all` then `read_exact`), against a blocking thread-per-connection
//! echo server ([`THREADS`] server threads). One iteration is one round
//! trip on every connection; the figure is requests per second.
//!
//! - usertcp threaded: a server stack and a client stack, each on its own
//!   `NetThread`, joined by `netdev::Link::pair(1500)`; the application
//!   threads use `TcpStream` on the `Net` handles (2 stack threads + 8
//!   application threads).
//! - kernel: `std::net::TcpStream` over 127.0.0.1 with `TCP_NODELAY`, the
//!   same 8 application threads.
//! - usertcp run-to-completion: the `rr` machinery with [`THREADS`]
//!   connections, client and server on one thread (no thread hops at all),
//!   for reference.
//!
//! All three are measured interleaved in the same run.
//!
//! Then the idle cost: a fresh threaded pair with [`THREADS`] connections
//! open and idle; the CPU time of both stack threads over [`IDLE`] (1 s
//! with `--quick`), from `/proc/self/task/TID/schedstat` (nanoseconds on
//! CPU), as a fraction of one core.
//!
//! | row | target |
//! |---|---|
//! | threaded vs kernel threads | no worse than the kernel |
//! | run-to-completion vs kernel threads | (reference) |
//! | stack threads' CPU, idle | < 1 % of a core |

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use netdev::Link;
use netstack::{Net, NetThread, StackConfig};

use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Figure, Metric, Report, Row, Target};

use super::net::{self, MSG, UserPair, per_second};
use super::{boxed, measure_sides};

/// Client threads (and connections, and server threads).
pub const THREADS: usize = 4;
/// How long the idle stack threads are watched (without `--quick`).
pub const IDLE: Duration = Duration::from_secs(10);
/// Socket buffers of the run-to-completion side, bytes.
const BUFFER: usize = 4096;
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PORT: u16 = 7;

/// Runs the scenario and returns its report (progress goes to stderr).
pub fn run(cfg: &Config) -> Report {
    let machine = Machine::detect();
    let started = Instant::now();
    eprintln!("[threaded] set-up and measuring");
    let threaded = ThreadedPair::new().and_then(ThreadedPair::crew);
    let nets: Vec<Net> = threaded
        .as_ref()
        .map(|c| c.nets.clone())
        .unwrap_or_default();
    let kern = kernel_crew();
    let rtc = UserPair::new(BUFFER, 0).and_then(|mut p| {
        p.open(THREADS)?;
        Ok(p)
    });
    let cpu: [CpuTally; 3] = Default::default();
    let figures = measure_sides(
        cfg,
        THREADS as f64,
        vec![
            boxed(threaded.map(|c| tallied(c.workload(), &cpu[0]))),
            boxed(kern.map(|c| tallied(c.workload(), &cpu[1]))),
            boxed(rtc.map(|p| tallied(net::user_rr(p, THREADS, THREADS as u64), &cpu[2]))),
        ],
    );
    let cpu_note = format!(
        "process CPU (all threads, user + system, from /proc/self/stat) per request over the \
         measured and calibration runs: threaded {}, kernel {}, run-to-completion {}",
        cpu[0].per_request(),
        cpu[1].per_request(),
        cpu[2].per_request()
    );
    let mut figures = figures.into_iter().map(per_second);
    let mut next = || figures.next().unwrap_or_else(net::not_measured);
    let (t, k, r) = (next(), next(), next());
    let counters: Vec<String> = nets
        .iter()
        .zip(["server", "client"])
        .map(|(n, name)| {
            let s = n.thread_stats();
            format!(
                "{name}: {} stack-thread wake-ups, {} kicks, {} arrivals received outside the stack thread, \
                 {} left to the lock holder, {} parks",
                s.wakeups, s.kicks, s.sender_received, s.left_to_holder, s.parks
            )
        })
        .collect();
    drop(nets);
    let idle_time = if cfg.quick {
        Duration::from_secs(1)
    } else {
        IDLE
    };
    eprintln!(
        "[threaded] idle stack threads for {:.0} s",
        idle_time.as_secs_f64()
    );
    let idle = idle_cpu(idle_time);
    let rows = vec![
        Row::new(
            format!("threaded, {MSG} B request/response, {THREADS} client + {THREADS} server threads"),
            Metric::ReqPerSec,
            t,
            k.clone(),
        )
        .target(Target::VsKernelAtLeast(1.0)),
        Row::new(
            format!(
                "run-to-completion usertcp ({THREADS} connections, one thread) vs the kernel's \
                 {THREADS}+{THREADS} threads"
            ),
            Metric::ReqPerSec,
            r,
            k,
        )
        .note("reference row: the same request/response workload without a thread hop"),
        Row::new(
            format!(
                "stack threads' CPU while idle ({:.0} s, {THREADS} idle connections), fraction of a core",
                idle_time.as_secs_f64()
            ),
            Metric::Ratio,
            idle,
            Figure::NotAvailable("the kernel has no stack thread to measure".to_owned()),
        )
        .target(Target::UsertcpAtMost(0.01)),
    ];
    let footer = vec![
        cfg.describe(),
        format!(
            "threaded: two netstack NetThreads over netdev::Link::pair(1500), {THREADS} client \
             threads with a blocking TcpStream each, a blocking thread-per-connection echo \
             server; kernel: std::net::TcpStream over 127.0.0.1 with TCP_NODELAY, the same \
             threads; run-to-completion: the rr scenario's usertcp pair, {BUFFER} B buffers, \
             {THREADS} connections, one thread. One iteration = one round trip on each of the \
             {THREADS} connections; figures are requests per second."
        ),
        cpu_note,
        format!(
            "threaded side's counters over the whole measurement: {}",
            counters.join("; ")
        ),
        "idle CPU: utime+stime of both stack threads (schedstat run time) over the idle period, \
         divided by its length; the client and server stack threads together."
            .to_owned(),
        format!("scenario time {:.1} s", started.elapsed().as_secs_f64()),
    ];
    Report {
        scenario: "threaded",
        title: format!(
            "threaded: {MSG} B request/response, {THREADS} blocking client threads, \
             thread-per-connection server"
        ),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}

/// Process CPU time and requests of one side's runs.
#[derive(Default, Clone)]
struct CpuTally(std::rc::Rc<std::cell::Cell<(Duration, u64)>>);

impl CpuTally {
    fn per_request(&self) -> String {
        let (cpu, reqs) = self.0.get();
        if reqs == 0 {
            return "n/a".to_owned();
        }
        format!("{:.1} us", cpu.as_secs_f64() * 1e6 / reqs as f64)
    }
}

/// The process's CPU time so far (user + system, every thread), from
/// `/proc/self/stat` in `USER_HZ` (100 per second) ticks.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// `workload` that also adds its process CPU time and requests
/// ([`THREADS`] per iteration) to `tally`.
fn tallied(
    mut workload: impl FnMut(u64) -> io::Result<Duration> + 'static,
    tally: &CpuTally,
) -> impl FnMut(u64) -> io::Result<Duration> + 'static {
    let tally = tally.clone();
    move |iters| {
        let before = process_cpu();
        let elapsed = workload(iters)?;
        if let (Some(b), Some(a)) = (before, process_cpu()) {
            let (cpu, reqs) = tally.0.get();
            tally
                .0
                .set((cpu + a.saturating_sub(b), reqs + iters * THREADS as u64));
        }
        Ok(elapsed)
    }
}

/// One blocking echo client's round trip.
trait Conn: Read + Write + Send + 'static {}
impl<T: Read + Write + Send + 'static> Conn for T {}

fn round_trip(conn: &mut dyn Conn) -> io::Result<()> {
    let msg = [0x5au8; MSG];
    conn.write_all(&msg)?;
    let mut back = [0u8; MSG];
    conn.read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::other("echo mismatch"));
    }
    Ok(())
}

/// Serves one connection: echo until end of stream or an error.
fn echo(mut conn: impl Conn) {
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Client threads, each owning one connection, told how many round trips
/// to make; plus the server threads, joined on drop.
struct Crew {
    orders: Vec<mpsc::Sender<Option<u64>>>,
    done: mpsc::Receiver<io::Result<()>>,
    clients: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<()>>,
    /// Kept alive while the crew runs (the threaded side's stacks).
    nets: Vec<Net>,
}

impl Crew {
    fn new(conns: Vec<Box<dyn Conn>>, servers: Vec<JoinHandle<()>>, nets: Vec<Net>) -> Crew {
        let (done_tx, done) = mpsc::channel();
        let mut orders = Vec::new();
        let mut clients = Vec::new();
        for mut conn in conns {
            let (tx, rx) = mpsc::channel::<Option<u64>>();
            let done_tx = done_tx.clone();
            orders.push(tx);
            clients.push(thread::spawn(move || {
                while let Ok(Some(rounds)) = rx.recv() {
                    let mut r = Ok(());
                    for _ in 0..rounds {
                        r = round_trip(&mut *conn);
                        if r.is_err() {
                            break;
                        }
                    }
                    if done_tx.send(r).is_err() {
                        return;
                    }
                }
            }));
        }
        Crew {
            orders,
            done,
            clients,
            servers,
            nets,
        }
    }

    /// `iters` round trips on every connection, all threads at once.
    fn run(&mut self, iters: u64) -> io::Result<Duration> {
        let start = Instant::now();
        for o in &self.orders {
            o.send(Some(iters))
                .map_err(|_| io::Error::other("client thread gone"))?;
        }
        for _ in 0..self.orders.len() {
            self.done
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| io::Error::other("client thread stalled"))??;
        }
        Ok(start.elapsed())
    }

    fn workload(mut self) -> impl FnMut(u64) -> io::Result<Duration> {
        move |iters| self.run(iters)
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        for o in &self.orders {
            let _ = o.send(None);
        }
        // Clients exit and drop their connections; servers then see end
        // of stream and exit.
        for h in self.clients.drain(..).chain(self.servers.drain(..)) {
            let _ = h.join();
        }
    }
}

/// A server and a client stack, each on its own `NetThread`.
struct ThreadedPair {
    server: Net,
    client: Net,
}

impl ThreadedPair {
    fn new() -> io::Result<ThreadedPair> {
        let (a, b) = Link::pair(1500);
        Ok(ThreadedPair {
            server: NetThread::spawn(a, StackConfig::new(SERVER, 15))?,
            client: NetThread::spawn(b, StackConfig::new(CLIENT, 15))?,
        })
    }

    /// [`THREADS`] connections with a server thread each.
    fn connect(&self) -> io::Result<(Vec<netstack::TcpStream>, Vec<JoinHandle<()>>)> {
        let listener = netstack::TcpListener::bind(&self.server, SocketAddrV4::new(SERVER, PORT))?;
        let mut conns = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..THREADS {
            let c = netstack::TcpStream::connect(&self.client, SocketAddrV4::new(SERVER, PORT))?;
            c.set_nodelay(true)?;
            let (s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            servers.push(thread::spawn(move || echo(s)));
            conns.push(c);
        }
        Ok((conns, servers))
    }

    fn crew(self) -> io::Result<Crew> {
        let (conns, servers) = self.connect()?;
        let conns = conns
            .into_iter()
            .map(|c| Box::new(c) as Box<dyn Conn>)
            .collect();
        Ok(Crew::new(conns, servers, vec![self.server, self.client]))
    }
}

/// The kernel side: the same threads over 127.0.0.1.
fn kernel_crew() -> io::Result<Crew> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut conns: Vec<Box<dyn Conn>> = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..THREADS {
        let c = std::net::TcpStream::connect(addr)?;
        c.set_nodelay(true)?;
        let (s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        servers.push(thread::spawn(move || echo(s)));
        conns.push(Box::new(c));
    }
    Ok(Crew::new(conns, servers, Vec::new()))
}

/// Nanoseconds thread `tid` of this process has run, from schedstat.
fn thread_cpu_ns(tid: i32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("unreadable schedstat"))
}

/// Both stack threads' CPU over `period` with idle connections open, as a
/// fraction of one core.
fn idle_cpu(period: Duration) -> Figure {
    let measure = || -> io::Result<f64> {
        let pair = ThreadedPair::new()?;
        let (mut conns, servers) = pair.connect()?;
        for c in &mut conns {
            round_trip(c)?;
        }
        // Let delayed ACKs go out before watching.
        thread::sleep(Duration::from_millis(200));
        let tids = [pair.server.stack_tid(), pair.client.stack_tid()];
        let before: u64 = tids
            .iter()
            .map(|&t| thread_cpu_ns(t))
            .sum::<io::Result<u64>>()?;
        let start = Instant::now();
        thread::sleep(period);
        let after: u64 = tids
            .iter()
            .map(|&t| thread_cpu_ns(t))
            .sum::<io::Result<u64>>()?;
        let elapsed = start.elapsed();
        drop(conns);
        for h in servers {
            let _ = h.join();
        }
        Ok(after.saturating_sub(before) as f64 / elapsed.as_nanos() as f64)
    };
    match measure() {
        Ok(v) => Figure::Value(v),
        Err(e) => Figure::Error(e.to_string()),
    }
}
