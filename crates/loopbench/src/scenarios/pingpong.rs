//! The `pingpong` scenario: 64-byte request/response on one connection.
//!
//! One iteration is one round trip: the client sends [`MSG`] bytes, the
//! echo server returns them, the client reads them all. Client and server
//! run on one thread (see [`net`]): usertcp as two stacks over
//! an in-memory link with an epoll each, the kernel over 127.0.0.1 with
//! kernel epoll, stock smoltcp as two interfaces with one socket set each.
//! All three run interleaved (see [`measure`](crate::measure)).
//!
//! | row | target |
//! |---|---|
//! | round trips per second | usertcp >= 8x the kernel and >= 1.2x stock smoltcp |

use std::time::Instant;

use crate::machine::Machine;
use crate::measure::Config;
use crate::report::{Metric, Report, Row, Target};

use super::net::{self, KernelPair, MSG, SmolPair, UserPair, per_second};
use super::{Pinned, measure_sides, two_core_label, two_core_note};

/// Socket buffers of every side, bytes (each direction).
pub const BUFFER: usize = 4096;

/// Runs the scenario and returns its report (progress goes to stderr).
pub fn run(cfg: &Config) -> Report {
    let machine = Machine::detect();
    let started = Instant::now();
    let pinned = Pinned::one_core();
    eprintln!("[pingpong] set-up and measuring");
    let user = UserPair::new(BUFFER, 0).and_then(|mut p| {
        p.open(1)?;
        Ok(p)
    });
    let kern = KernelPair::new().and_then(|mut p| {
        p.open(1)?;
        Ok(p)
    });
    let mut smol = SmolPair::new(BUFFER);
    let smol = smol.open(1).map(|()| smol);
    let kern2 = pinned.two_cores().and_then(|mut p| {
        p.open(1)?;
        Ok(p)
    });
    let figures = measure_sides(
        cfg,
        1.0,
        vec![
            super::boxed(user.map(|p| net::user_rr(p, 1, 1))),
            super::boxed(kern.map(|p| net::kernel_rr(p, 1, 1))),
            super::boxed(smol.map(|p| net::smol_rr(p, 1, 1))),
            super::boxed(kern2.map(|p| net::kernel_rr(p, 1, 1))),
        ],
    );
    let mut figures = figures.into_iter().map(per_second);
    let mut next = || figures.next().unwrap_or_else(net::not_measured);
    let (u, k, s, k2) = (next(), next(), next(), next());
    let rows = vec![
        Row::new(
            format!("pingpong, {MSG} B request/response, 1 connection"),
            Metric::ReqPerSec,
            u.clone(),
            k,
        )
        .smoltcp(s)
        .target(Target::VsBothAtLeast {
            kernel: 8.0,
            smoltcp: 1.2,
        }),
        Row::new(two_core_label(&pinned), Metric::ReqPerSec, u, k2).note(two_core_note()),
    ];
    let footer = vec![
        cfg.describe(),
        net::describe_sides(BUFFER),
        pinned.note.clone(),
        format!("scenario time {:.1} s", started.elapsed().as_secs_f64()),
    ];
    Report {
        scenario: "pingpong",
        title: "pingpong: 64 B request/response on one connection, client and server on one thread"
            .to_owned(),
        machine,
        config: cfg.clone(),
        rows,
        footer,
    }
}
