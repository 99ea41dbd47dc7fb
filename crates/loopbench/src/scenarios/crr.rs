//! The `crr` scenario: connect, one 64-byte request/response, close.
//!
//! One iteration is one whole connection: the client connects
//! (non-blocking), sends [`MSG`] bytes when the connection is writable,
//! reads the echoed response and closes; the server accepts, echoes and
//! closes at end of stream. [`WIDTH`] connections are in flight at once.
//! Client and server run on one thread (see [`net`]); the
//! client closes first, so TIME-WAIT is on the client side: the usertcp
//! client has [`EXTRA_ADDRS`] more local addresses so that its 4-tuples
//! (~28k per address, 60 s of TIME-WAIT) last a whole run; the kernel
//! reuses loopback TIME-WAIT ports (`net.ipv4.tcp_tw_reuse`, 2 by
//! default).
//!
//! | row | target |
//! |---|---|
//! | connections per second | usertcp >= 10x the kernel |
//!
//! Stock smoltcp is not measured here: it has no listen backlog (one
//! listening socket per connection) and the targets do not compare with it.

use std::time::{Duration, Instant};

use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Metric, Report, Row, Target};

use super::net::{self, KernelPair, MSG, UserPair, per_second};
use super::{Pinned, boxed, measure_sides, two_core_label, two_core_note};

/// Socket buffers (each direction), bytes.
pub const BUFFER: usize = 4096;
/// Connections in flight at once.
pub const WIDTH: usize = 16;
/// Local addresses the usertcp client has besides its first.
pub const EXTRA_ADDRS: usize = 64;

/// Runs the scenario and returns its report (progress goes to stderr).
pub fn run(cfg: &Config) -> Report {
    let machine = Machine::detect();
    let started = Instant::now();
    let pinned = Pinned::one_core();
    eprintln!("[crr] set-up and measuring");
    let user = UserPair::new(BUFFER, EXTRA_ADDRS).map(|mut pair| {
        move |iters: u64| {
            let start = Instant::now();
            pair.crr(WIDTH, iters)?;
            Ok::<Duration, std::io::Error>(start.elapsed())
        }
    });
    let kern = KernelPair::new().map(|mut pair| {
        move |iters: u64| {
            let start = Instant::now();
            pair.crr(WIDTH, iters)?;
            Ok::<Duration, std::io::Error>(start.elapsed())
        }
    });
    let kern2 = pinned.two_cores().map(|mut pair| {
        move |iters: u64| {
            let start = Instant::now();
            pair.crr(WIDTH, iters)?;
            Ok::<Duration, std::io::Error>(start.elapsed())
        }
    });
    let figures = measure_sides(cfg, 1.0, vec![boxed(user), boxed(kern), boxed(kern2)]);
    let mut figures = figures.into_iter().map(per_second);
    let mut next = || figures.next().unwrap_or_else(net::not_measured);
    let (u, k, k2) = (next(), next(), next());
    let rows = vec![
        Row::new(
            format!("connect + {MSG} B request/response + close, {WIDTH} in flight"),
            Metric::ConnsPerSec,
            u.clone(),
            k,
        )
        .target(Target::VsKernelAtLeast(10.0)),
        Row::new(two_core_label(&pinned), Metric::ConnsPerSec, u, k2).note(two_core_note()),
    ];
    let footer = vec![
        cfg.describe(),
        net::describe_sides(BUFFER),
        pinned.note.clone(),
        format!(
            "the client closes first (TIME-WAIT on the client); the usertcp client spreads its \
             connections over {} local addresses. Stock smoltcp: not measured (no backlog; no \
             target).",
            EXTRA_ADDRS + 1
        ),
        format!("scenario time {:.1} s", started.elapsed().as_secs_f64()),
    ];
    Report {
        scenario: "crr",
        title: "crr: connect, 64 B request/response, close; client and server on one thread"
            .to_owned(),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}
