//! The `c1m` scenario: open 1,000,000 concurrent connections, then one
//! 64-byte request/response on each.
//!
//! usertcp: two stacks over an in-memory link on one thread (see
//! [`net`]), the smallest socket buffers netstack allows
//! ([`netstack::MIN_BUFFER`], each direction), the client spread over
//! enough local addresses (198.18.1.0 and up, ~28k connections each to one
//! server port). The connections are opened [`net::BATCH`] at a time
//! (the listen backlog) and every one stays open; then one request goes
//! out on each, all in flight at once, until every response is back.
//! Memory: the process's `VmRSS` (`/proc/self/status`) once the two stacks
//! and their link exist, before any connection (after `malloc_trim`, so
//! that memory freed by earlier scenarios does not hide the growth), and
//! after the requests; the difference is what the connections cost both
//! stacks, and over the count the RSS per connection, both ends included.
//! The link's packet rings (the wire) are in the baseline. The heap bytes the stacks hold are also counted by the
//! counting allocator ([`crate::alloc_count`]). Then every connection is
//! closed (client first, so its tuples stay in TIME-WAIT without buffers)
//! and, after `malloc_trim`, the RSS still added over the baseline is
//! reported: what the stacks keep once their connections are gone (empty
//! buffer slabs go back to the kernel, tables their free tails; the
//! client's tuples are still in TIME-WAIT).
//!
//! The kernel does the same over 127.0.0.1 with as many connections as
//! `RLIMIT_NOFILE` allows (two descriptors each); its socket memory is
//! kernel memory, not in the process RSS. Stock smoltcp is not run: each
//! packet scans its whole socket set, and adding a socket scans it too.
//!
//! These are single measurements (a million connections are opened once),
//! not medians of interleaved runs.
//!
//! | row | target |
//! |---|---|
//! | connections established | all of them |
//! | total RSS, both stacks | <= 6 GB |

use std::io;
use std::time::Instant;

use crate::alloc_count::Counting;
use crate::kernel;
use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Figure, Metric, Report, Row, Target};

use super::net::{self, KernelPair, MSG, UserPair, rss_bytes};
use super::{count, raise_nofile_limit, rr};

/// Connections by default.
pub const CONNECTIONS: usize = 1_000_000;
/// Connections with `--quick` (CI's smoke test).
pub const QUICK_CONNECTIONS: usize = 50_000;
/// The memory target: RSS of both stacks' connections, bytes.
pub const RSS_TARGET: f64 = 6e9;

/// What one side reached.
struct Outcome {
    established: usize,
    open_rate: Figure,
    rr_rate: Figure,
    rss_delta: Option<u64>,
    rss_total: Option<u64>,
    heap: Option<i64>,
    /// RSS over the baseline once every connection is closed (after
    /// `malloc_trim`); usertcp only.
    rss_closed: Option<Figure>,
}

/// Runs the scenario with its default size.
pub fn run(cfg: &Config) -> Report {
    let n = if cfg.quick {
        QUICK_CONNECTIONS
    } else {
        CONNECTIONS
    };
    run_with(cfg, n)
}

/// Runs the scenario with `n` connections.
pub fn run_with(cfg: &Config, n: usize) -> Report {
    let machine = Machine::detect();
    let started = Instant::now();
    let limit_note = raise_nofile_limit(2 * n as u64 + 256);
    let kn = rr::kernel_max_conns().min(n);
    eprintln!("[c1m] kernel: {kn} connections");
    let kern = kernel_side(kn);
    drop_note("kernel");
    eprintln!("[c1m] usertcp: {} connections", count(n));
    let user = user_side(n);
    let short = kn < n;
    let klabel = if short {
        format!(" (kernel: {kn})")
    } else {
        String::new()
    };
    let mut rows = Vec::new();
    let mut established = Row::new(
        format!("connections established, of {}{klabel}", count(n)),
        Metric::Count,
        Figure::Value(user.established as f64),
        Figure::Value(kern.established as f64),
    );
    established.comparable = false;
    established = established.target(Target::UsertcpAtLeast(n as f64));
    rows.push(established);
    let mut open = Row::new(
        format!("establish rate{klabel}"),
        Metric::ConnsPerSec,
        user.open_rate.clone(),
        kern.open_rate.clone(),
    );
    let mut req = Row::new(
        format!("one {MSG} B request/response on every connection{klabel}"),
        Metric::ReqPerSec,
        user.rr_rate.clone(),
        kern.rr_rate.clone(),
    );
    if short {
        for row in [&mut open, &mut req] {
            row.comparable = false;
        }
        open = open.note(format!(
            "kernel at {kn} connections, not {} (RLIMIT_NOFILE); no ratio",
            count(n)
        ));
    }
    rows.push(open);
    rows.push(req);
    let kernel_memory =
        || Figure::NotAvailable("kernel socket memory is not in the process RSS".to_owned());
    let per_conn = |bytes: Option<f64>| match bytes {
        Some(b) if user.established > 0 => Figure::Value(b / user.established as f64),
        _ => Figure::NotAvailable("not measured".to_owned()),
    };
    rows.push(Row::new(
        "RSS per connection, both ends",
        Metric::BytesPerConn,
        per_conn(user.rss_delta.map(|d| d as f64)),
        kernel_memory(),
    ));
    rows.push(Row::new(
        "heap bytes per connection, both ends (counting allocator)",
        Metric::BytesPerConn,
        per_conn(user.heap.map(|h| h as f64)),
        kernel_memory(),
    ));
    rows.push(
        Row::new(
            format!(
                "RSS added by {} connections, both stacks",
                count(user.established)
            ),
            Metric::Bytes,
            user.rss_delta.map_or_else(
                || Figure::NotAvailable("no RSS reading".to_owned()),
                |r| Figure::Value(r as f64),
            ),
            kernel_memory(),
        )
        .target(Target::UsertcpAtMost(RSS_TARGET)),
    );
    rows.push(
        Row::new(
            "  RSS still added once every connection is closed",
            Metric::Bytes,
            user.rss_closed
                .clone()
                .unwrap_or_else(|| Figure::NotAvailable("not measured".to_owned())),
            kernel_memory(),
        )
        .note(
            "usertcp: after closing all (client first: its tuples stay in TIME-WAIT, \
             without buffers) and malloc_trim; empty buffer slabs went back to the kernel",
        ),
    );
    rows.push(Row::new(
        "  total RSS of the process",
        Metric::Bytes,
        user.rss_total.map_or_else(
            || Figure::NotAvailable("no RSS reading".to_owned()),
            |r| Figure::Value(r as f64),
        ),
        kernel_memory(),
    ));
    let footer = vec![
        "single measurements, not medians: the connections are opened once.".to_owned(),
        format!(
            "usertcp: two netstack Stacks over one in-memory link, {} B socket buffers (netstack's \
             MIN_BUFFER) each direction, client over {} local addresses; opened {} at a time (the \
             backlog); RSS = VmRSS of the whole process.",
            netstack::MIN_BUFFER,
            n / 20_000 + 1,
            net::BATCH
        ),
        format!("RLIMIT_NOFILE: {limit_note}"),
        format!("scenario time {:.1} s", started.elapsed().as_secs_f64()),
    ];
    Report {
        scenario: "c1m",
        title: format!(
            "c1m: {} concurrent connections, then one 64 B request/response on each",
            count(n)
        ),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}

fn drop_note(side: &str) {
    eprintln!("[c1m] {side}: done, connections closed");
}

fn rate(count: usize, elapsed: std::time::Duration) -> Figure {
    Figure::Value(count as f64 / elapsed.as_secs_f64())
}

/// The establish rate of `n` connections opened in `open_time`, and, if
/// they all opened, the rate of `request_each` (one request on every
/// connection); an error says how far opening got.
fn rates(
    n: usize,
    established: usize,
    opened: io::Result<()>,
    open_time: std::time::Duration,
    request_each: impl FnOnce() -> io::Result<()>,
) -> (Figure, Figure) {
    match opened {
        Ok(()) => {
            let t = Instant::now();
            let rr_rate = match request_each() {
                Ok(()) => rate(n, t.elapsed()),
                Err(err) => error(&err),
            };
            (rate(n, open_time), rr_rate)
        }
        Err(err) => (
            Figure::Error(format!("after {established} connections: {err}")),
            Figure::NotAvailable("connections not all established".to_owned()),
        ),
    }
}

fn error(err: &io::Error) -> Figure {
    Figure::Error(err.to_string())
}

fn user_side(n: usize) -> Outcome {
    let mut pair = match UserPair::new(netstack::MIN_BUFFER, n / 20_000) {
        Ok(pair) => pair,
        Err(err) => {
            return Outcome {
                established: 0,
                open_rate: error(&err),
                rr_rate: error(&err),
                rss_delta: None,
                rss_total: None,
                heap: None,
                rss_closed: None,
            };
        }
    };
    // The baseline is taken with the stacks and the link made but no
    // connection open: the link's packet rings are the wire, not
    // per-connection state.
    kernel::malloc_trim();
    let before = rss_bytes().ok();
    let counting = Counting::start();
    let t = Instant::now();
    let opened = pair.open(n);
    let open_time = t.elapsed();
    let established = pair.conns.len();
    eprintln!(
        "[c1m] usertcp: {established} connections in {:.2} s",
        open_time.as_secs_f64()
    );
    let (open_rate, rr_rate) = rates(n, established, opened, open_time, || pair.request_each());
    let after = rss_bytes().ok();
    let heap = counting.as_ref().map(Counting::live_bytes);
    let stats = (pair.client.stats(), pair.server.stats());
    eprintln!(
        "[c1m] usertcp: client {} / server {} connections; RSS {:?} -> {:?}",
        stats.0.connections, stats.1.connections, before, after
    );
    // What stays once they are all closed: the stacks give buffer slabs
    // back to the kernel, and the heap its free pages (`malloc_trim`).
    let t = Instant::now();
    let rss_closed = match pair.close_all() {
        Ok(()) => {
            kernel::malloc_trim();
            let closed = rss_bytes().ok();
            eprintln!(
                "[c1m] usertcp: all closed in {:.2} s, {} tuples in TIME-WAIT; RSS {closed:?}, \
                 heap still held {:?} B, tables {} + {} B",
                t.elapsed().as_secs_f64(),
                pair.client.stats().time_wait,
                counting.as_ref().map(Counting::live_bytes),
                pair.client.stats().table_bytes,
                pair.server.stats().table_bytes,
            );
            match before.zip(closed) {
                Some((b, c)) => Figure::Value(c.saturating_sub(b) as f64),
                None => Figure::NotAvailable("no RSS reading".to_owned()),
            }
        }
        Err(err) => error(&err),
    };
    drop(counting);
    drop(pair);
    drop_note("usertcp");
    Outcome {
        established,
        open_rate,
        rr_rate,
        rss_delta: before.zip(after).map(|(b, a)| a.saturating_sub(b)),
        rss_total: after,
        heap,
        rss_closed: Some(rss_closed),
    }
}

fn kernel_side(n: usize) -> Outcome {
    let mut pair = match KernelPair::new() {
        Ok(pair) => pair,
        Err(err) => {
            return Outcome {
                established: 0,
                open_rate: error(&err),
                rr_rate: error(&err),
                rss_delta: None,
                rss_total: None,
                heap: None,
                rss_closed: None,
            };
        }
    };
    let t = Instant::now();
    let opened = pair.open(n);
    let open_time = t.elapsed();
    let established = pair.conns.len();
    let (open_rate, rr_rate) = rates(n, established, opened, open_time, || pair.request_each());
    Outcome {
        established,
        open_rate,
        rr_rate,
        rss_delta: None,
        rss_total: None,
        heap: None,
        rss_closed: None,
    }
}
