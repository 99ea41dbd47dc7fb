//! The `memory` scenario: bytes per idle established connection, usertcp
//! against the kernel, both ends of each connection counted.
//!
//! Both sides open N connections the way `rr` does (client and server end,
//! each end registered with its side's epoll for `IN`), then read how much
//! memory the N idle connections hold:
//!
//! - usertcp: the heap bytes the two stacks allocated and kept while the
//!   connections were opened, counted by the binary's counting allocator
//!   ([`crate::alloc_count`]): socket buffers
//!   ([`netstack::MIN_BUFFER`] each direction, the smallest netstack
//!   allows; smoltcp allocates them up front), connection state, demux and
//!   timer entries, descriptors, epoll items. A second row gives the growth
//!   of the process's `VmRSS` (after `malloc_trim`), which also counts
//!   allocator overhead and fragmentation.
//! - kernel: the growth of all slab caches (`/proc/slabinfo`: the sum of
//!   active objects × object size over every cache: `TCP`, `sock_inode_cache`,
//!   `filp`, `dentry`, `eventpoll_epi`, `kmalloc-*`, ...; or `Slab:` in
//!   `/proc/meminfo` when slabinfo is not readable) plus the growth of TCP's
//!   socket memory (`mem` pages in `/proc/net/sockstat`). These are
//!   system-wide counters, so other processes add noise: the kernel figure
//!   is the median of [`REPEATS`] open/measure/close rounds. The harness's
//!   own user-space bookkeeping for the kernel sockets (a few bytes per
//!   descriptor) is not counted.
//!
//! | row | target |
//! |---|---|
//! | bytes per idle connection (usertcp heap vs kernel slab + socket memory) | usertcp <= 1.0x the kernel |

use std::io;
use std::time::Instant;

use crate::alloc_count::Counting;
use crate::kernel;
use crate::machine::Machine;
use crate::measure::{Config, median};
use crate::report::{Figure, Metric, Report, Row, Target};

use super::net::{KernelPair, UserPair, rss_bytes};
use super::{count, raise_nofile_limit, rr};

/// usertcp's connections.
pub const CONNECTIONS: usize = 100_000;
/// usertcp's connections with `--quick`.
pub const QUICK_CONNECTIONS: usize = 10_000;
/// The kernel's connections (fewer if `RLIMIT_NOFILE` says so).
pub const KERNEL_CONNECTIONS: usize = 10_000;
/// Open/measure/close rounds of the kernel side.
pub const REPEATS: usize = 3;

/// What the usertcp side measured.
struct UserMemory {
    conns: usize,
    heap: Figure,
    rss: Figure,
}

/// Runs the scenario and returns its report (progress goes to stderr).
pub fn run(cfg: &Config) -> Report {
    let n = if cfg.quick {
        QUICK_CONNECTIONS
    } else {
        CONNECTIONS
    };
    let machine = Machine::detect();
    let started = Instant::now();
    let limit_note = raise_nofile_limit(2 * KERNEL_CONNECTIONS as u64 + 64);
    let kn = rr::kernel_max_conns().min(KERNEL_CONNECTIONS);
    let progress = crate::progress::bar("memory", REPEATS as u64 + 1);
    eprintln!("[memory] kernel: {kn} connections, {REPEATS} rounds");
    let (kern, kern_source) = kernel_side(kn, &progress);
    eprintln!("[memory] usertcp: {} connections", count(n));
    let user = user_side(n);
    progress.inc(1);
    progress.finish_and_clear();
    let mut rows = vec![
        Row::new(
            "bytes per idle established connection, both ends",
            Metric::BytesPerConn,
            user.heap,
            kern.clone(),
        )
        .target(Target::VsKernelAtLeast(1.0))
        .note(format!(
            "usertcp: heap bytes held by both stacks (counting allocator), {} connections, \
             {} B socket buffers each direction; kernel: {kern_source}, {kn} connections, median \
             of {REPEATS}",
            count(user.conns),
            netstack::MIN_BUFFER
        )),
        Row::new(
            "  usertcp by RSS growth instead of heap bytes",
            Metric::BytesPerConn,
            user.rss,
            kern,
        )
        .note("VmRSS growth after malloc_trim: heap plus allocator overhead and fragmentation"),
    ];
    if kn < KERNEL_CONNECTIONS {
        rows[0] = rows[0].clone().note(format!(
            "kernel measured at {kn} connections (RLIMIT_NOFILE, 2 descriptors each)"
        ));
    }
    let footer = vec![
        "single readings per side (usertcp) and the median of several rounds (kernel), not \
         timed runs; memory is per connection, client and server end together."
            .to_owned(),
        format!("RLIMIT_NOFILE: {limit_note}"),
        format!("scenario time {:.1} s", started.elapsed().as_secs_f64()),
    ];
    Report {
        scenario: "memory",
        title: "memory: bytes per idle established connection, both ends, usertcp vs the kernel"
            .to_owned(),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}

fn user_side(n: usize) -> UserMemory {
    let failed = |err: io::Error| UserMemory {
        conns: n,
        heap: Figure::Error(err.to_string()),
        rss: Figure::Error(err.to_string()),
    };
    let mut pair = match UserPair::new(netstack::MIN_BUFFER, n / 20_000) {
        Ok(pair) => pair,
        Err(err) => return failed(err),
    };
    // The stacks and the link (the wire) are the baseline.
    kernel::malloc_trim();
    let before = rss_bytes();
    let Some(counting) = Counting::start() else {
        return failed(io::Error::other("another memory count is running"));
    };
    if let Err(err) = pair.open(n) {
        return failed(err);
    }
    let heap = counting.live_bytes();
    drop(counting);
    kernel::malloc_trim();
    let after = rss_bytes();
    let conns = pair.conns.len();
    drop(pair);
    let per = |bytes: f64| Figure::Value(bytes / conns.max(1) as f64);
    UserMemory {
        conns,
        heap: per(heap as f64),
        rss: match (before, after) {
            (Ok(b), Ok(a)) => per(a.saturating_sub(b) as f64),
            (Err(err), _) | (_, Err(err)) => Figure::Error(err.to_string()),
        },
    }
}

/// The kernel's memory per connection (median over rounds) and what was
/// read.
fn kernel_side(n: usize, progress: &indicatif::ProgressBar) -> (Figure, String) {
    if n == 0 {
        return (
            Figure::NotAvailable("RLIMIT_NOFILE leaves no room".to_owned()),
            String::new(),
        );
    }
    let mut per_conn = Vec::new();
    let mut source = String::new();
    for _ in 0..REPEATS {
        match kernel_round(n) {
            Ok((bytes, what)) => {
                per_conn.push(bytes / n as f64);
                source = what;
            }
            Err(err) => return (Figure::Error(err.to_string()), source),
        }
        progress.inc(1);
    }
    (Figure::Value(median(&mut per_conn)), source)
}

/// Opens `n` kernel connections and returns the kernel memory they added
/// (bytes) and where it was read.
fn kernel_round(n: usize) -> io::Result<(f64, String)> {
    let mut pair = KernelPair::new()?;
    let before = kernel_memory()?;
    pair.open(n)?;
    // Let deferred work (RCU-freed objects, request socks) settle.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let after = kernel_memory()?;
    drop(pair);
    Ok((after.0 - before.0, after.1))
}

/// The kernel memory counters this scenario reads: bytes, and a
/// description of the source.
fn kernel_memory() -> io::Result<(f64, String)> {
    let page = 4096.0;
    let sockstat = std::fs::read_to_string("/proc/net/sockstat")?;
    let tcp_pages = sockstat_tcp_mem(&sockstat)
        .ok_or_else(|| io::Error::other("no TCP mem in /proc/net/sockstat"))?;
    let tcp = tcp_pages as f64 * page;
    match std::fs::read_to_string("/proc/slabinfo") {
        Ok(text) => {
            let slab =
                slab_bytes(&text).ok_or_else(|| io::Error::other("unreadable /proc/slabinfo"))?;
            Ok((
                slab as f64 + tcp,
                "growth of all slab caches (/proc/slabinfo, active objects x size) + TCP socket \
                 memory (/proc/net/sockstat mem pages)"
                    .to_owned(),
            ))
        }
        Err(_) => {
            let meminfo = std::fs::read_to_string("/proc/meminfo")?;
            let slab = meminfo_kb(&meminfo, "Slab")
                .ok_or_else(|| io::Error::other("no Slab in /proc/meminfo"))?;
            Ok((
                slab as f64 * 1024.0 + tcp,
                "growth of Slab (/proc/meminfo; /proc/slabinfo is not readable) + TCP socket \
                 memory (/proc/net/sockstat mem pages)"
                    .to_owned(),
            ))
        }
    }
}

/// The `mem` field of the `TCP:` line of `/proc/net/sockstat` (pages).
fn sockstat_tcp_mem(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = line.split_whitespace();
    while let Some(name) = fields.next() {
        if name == "mem" {
            return fields.next()?.parse().ok();
        }
    }
    None
}

/// Sum over the caches of `/proc/slabinfo` of active objects × object
/// size, bytes.
fn slab_bytes(text: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut lines = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("slabinfo"))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let active: u64 = fields.get(1)?.parse().ok()?;
        let size: u64 = fields.get(3)?.parse().ok()?;
        total += active * size;
        lines += 1;
    }
    (lines > 0).then_some(total)
}

/// A `Name:   123 kB` field of `/proc/meminfo`, in kB.
fn meminfo_kb(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_counters() {
        let sockstat =
            "sockets: used 11\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 213\nUDP: inuse 0 mem 7\n";
        assert_eq!(sockstat_tcp_mem(sockstat), Some(213));
        assert_eq!(sockstat_tcp_mem("UDP: inuse 0 mem 7\n"), None);
        let slabinfo = "slabinfo - version: 2.1\n\
            # name <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables\n\
            TCP 30 32 2432 13 8 : tunables 0 0 0 : slabdata 2 2 0\n\
            filp 100 128 256 16 1 : tunables 0 0 0 : slabdata 8 8 0\n";
        assert_eq!(slab_bytes(slabinfo), Some(30 * 2432 + 100 * 256));
        assert_eq!(slab_bytes("slabinfo - version: 2.1\n"), None);
        assert_eq!(slab_bytes("TCP x 1 2\n"), None);
        let meminfo = "MemTotal: 100 kB\nSlab:   2048 kB\nSReclaimable: 10 kB\n";
        assert_eq!(meminfo_kb(meminfo, "Slab"), Some(2048));
        assert_eq!(meminfo_kb(meminfo, "Sl"), None);
    }
}
