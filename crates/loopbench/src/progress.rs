//! Progress bars for the long scenarios (`scale`, `bulk`, `memory`), with
//! `indicatif`.
//!
//! A bar is drawn on stderr only when stderr is a terminal: CI logs and
//! redirected runs get the plain `[scenario] ...` lines the scenarios print
//! and no control sequences. Bars redraw only when a scenario reports
//! progress (no ticker thread: a thread allocating in the background would
//! disturb the counting allocator of the memory figures).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps labelled `prefix`, hidden when stderr is not a
/// terminal.
pub fn bar(prefix: &str, len: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>9} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(prefix.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_counts_steps_even_when_hidden() {
        let bar = bar("test", 3);
        bar.inc(2);
        assert_eq!(bar.position(), 2);
        assert_eq!(bar.length(), Some(3));
        bar.finish_and_clear();
    }
}
