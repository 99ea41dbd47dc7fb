//! The `idle` scenario: the `pingpong` round trip with 100k idle
//! connections open, against the same with none.
//!
//! Each side runs two pairs: one with only the measured connection, one
//! with [`IDLE`] more connections established and left idle (opened first,
//! untimed). All six workloads (three sides, two pairs each) are measured
//! together, interleaved, so that the ratio of the two rates of one side is
//! not skewed by the machine's load changing between them.
//!
//! | row | target |
//! |---|---|
//! | idle-to-no-idle rate ratio | usertcp >= 0.8 |
//!
//! usertcp looks a segment's connection up in a hash map and never scans
//! connections, so idle ones should cost nothing but memory. Stock smoltcp
//! scans its whole socket set for every packet and every egress pass: its
//! idle connections are established in small sets and moved into the big
//! one (an in-set handshake would make set-up quadratic). The kernel holds
//! as many idle connections as `RLIMIT_NOFILE` allows (two descriptors
//! each), and its row says how many.

use std::time::Instant;

use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Figure, Metric, Report, Row, Target};

use super::net::{self, KernelPair, MSG, SmolPair, UserPair, per_second};
use super::{Pinned, boxed, count, measure_sides, raise_nofile_limit, rr};

/// Socket buffers (each direction), bytes: the same on every side and in
/// both pairs.
pub const BUFFER: usize = 4096;
/// Idle connections.
pub const IDLE: usize = 100_000;
/// Idle connections of stock smoltcp with `--quick`: adding a socket to a
/// smoltcp `SocketSet` scans the set for a free slot, so building a set of
/// 100k sockets takes about half a minute here (quadratic).
pub const SMOLTCP_QUICK_IDLE: usize = 10_000;

/// Runs the scenario and returns its report (progress goes to stderr).
pub fn run(cfg: &Config) -> Report {
    let machine = Machine::detect();
    let started = Instant::now();
    let pinned = Pinned::one_core();
    let limit_note = raise_nofile_limit(2 * IDLE as u64 + 256);
    let kidle = rr::kernel_max_conns().saturating_sub(2).min(IDLE);
    let sidle = if cfg.quick { SMOLTCP_QUICK_IDLE } else { IDLE };
    eprintln!("[idle] set-up: {} idle connections", count(IDLE));
    let t = Instant::now();
    let user0 = UserPair::new(BUFFER, 0).and_then(|mut p| {
        p.open(1)?;
        Ok(p)
    });
    let user_idle = UserPair::new(BUFFER, IDLE / 20_000).and_then(|mut p| {
        p.open(1 + IDLE)?;
        Ok(p)
    });
    let user_setup = t.elapsed();
    let kern0 = KernelPair::new().and_then(|mut p| {
        p.open(1)?;
        Ok(p)
    });
    let kern_idle = KernelPair::new().and_then(|mut p| {
        p.open(1 + kidle)?;
        Ok(p)
    });
    let t = Instant::now();
    let mut smol0 = SmolPair::new(BUFFER);
    let smol0 = smol0.open(1).map(|()| smol0);
    let mut smol_idle = SmolPair::new(BUFFER);
    let smol_idle = smol_idle.open(1 + sidle).map(|()| smol_idle);
    let smol_setup = t.elapsed();
    eprintln!(
        "[idle] measuring (set-up: usertcp {:.2} s, smoltcp {:.2} s)",
        user_setup.as_secs_f64(),
        smol_setup.as_secs_f64()
    );
    let figures = measure_sides(
        cfg,
        1.0,
        vec![
            boxed(user0.map(|p| net::user_rr(p, 1, 1))),
            boxed(user_idle.map(|p| net::user_rr(p, 1, 1))),
            boxed(kern0.map(|p| net::kernel_rr(p, 1, 1))),
            boxed(kern_idle.map(|p| net::kernel_rr(p, 1, 1))),
            boxed(smol0.map(|p| net::smol_rr(p, 1, 1))),
            boxed(smol_idle.map(|p| net::smol_rr(p, 1, 1))),
        ],
    );
    let mut figures = figures.into_iter().map(per_second);
    let mut next = || figures.next().unwrap_or_else(net::not_measured);
    let (u0, ui, k0, ki, s0, si) = (next(), next(), next(), next(), next(), next());
    let ratio = |idle: &Figure, none: &Figure| match (idle.value(), none.value()) {
        (Some(i), Some(n)) => Figure::Value(i / n),
        _ => Figure::NotAvailable("a rate above is missing".to_owned()),
    };
    let short = kidle < IDLE;
    let mut others = Vec::new();
    if short {
        others.push(format!("kernel: {kidle}"));
    }
    if sidle < IDLE {
        others.push(format!("smoltcp: {}", count(sidle)));
    }
    let kernel_label = if others.is_empty() {
        String::new()
    } else {
        format!(" ({})", others.join(", "))
    };
    let mut idle_row = Row::new(
        format!(
            "pingpong, {MSG} B, with {} idle connections{kernel_label}",
            count(IDLE)
        ),
        Metric::ReqPerSec,
        ui.clone(),
        ki.clone(),
    )
    .smoltcp(si.clone());
    let mut ratio_row = Row::new(
        format!(
            "  rate with {} idle / rate with none{kernel_label}",
            count(IDLE)
        ),
        Metric::Fraction,
        ratio(&ui, &u0),
        ratio(&ki, &k0),
    )
    .smoltcp(ratio(&si, &s0))
    .target(Target::UsertcpAtLeast(0.8));
    // Ratios of ratios mean nothing: the row compares each side with itself.
    ratio_row.comparable = false;
    ratio_row.smoltcp_comparable = false;
    if short {
        idle_row.comparable = false;
        idle_row = idle_row.note(format!(
            "kernel measured with {kidle} idle connections, not {} (RLIMIT_NOFILE); no ratio",
            count(IDLE)
        ));
    }
    if sidle < IDLE {
        idle_row.smoltcp_comparable = false;
        idle_row = idle_row.note(format!(
            "smoltcp measured with {} idle connections, not {} (--quick: building a big \
             SocketSet is quadratic); no ratio",
            count(sidle),
            count(IDLE)
        ));
    }
    let rows = vec![
        Row::new(
            format!("pingpong, {MSG} B, no idle connections"),
            Metric::ReqPerSec,
            u0,
            k0,
        )
        .smoltcp(s0),
        idle_row,
        ratio_row,
    ];
    let footer = vec![
        cfg.describe(),
        net::describe_sides(BUFFER),
        pinned.note.clone(),
        format!("RLIMIT_NOFILE: {limit_note}"),
        format!("scenario time {:.1} s", started.elapsed().as_secs_f64()),
    ];
    Report {
        scenario: "idle",
        title: "idle: 64 B pingpong with 100k idle connections open vs none, one thread".to_owned(),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}
