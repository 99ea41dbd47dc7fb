//! The scenarios: one module each, each measuring usertcp and the Linux
//! kernel doing the same work in the same run and returning a
//! [`Report`](crate::report::Report).
//!
//! A new scenario adds a module here and an entry to [`ALL`]; `loopbench
//! all` then runs it, and the CLI gains a subcommand for it in `main.rs`.

pub mod epoll;

use crate::measure::Config;
use crate::report::Report;

/// A scenario the harness can run.
pub struct Scenario {
    /// The name: the subcommand and the JSON file's stem.
    pub name: &'static str,
    /// Runs the scenario and returns its report. Never panics on a failed
    /// measurement: failures become rows with the error.
    pub run: fn(&Config) -> Report,
}

/// Every scenario, in the order `loopbench all` runs them.
pub const ALL: &[Scenario] = &[Scenario {
    name: "epoll",
    run: epoll::run,
}];
