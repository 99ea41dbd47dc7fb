//! Helpers shared by the random-sequence tests (`differential.rs`,
//! `model.rs`).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs eventpoll code whose panics are reported
    /// as results; the message lands in `PANIC_MESSAGE`.
    static CAPTURE_PANICS: Cell<bool> = const { Cell::new(false) };
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The message of a panic payload (`&str` or `String`).
fn payload_str(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("?")
}

/// Runs `f`; a panic becomes `Err(message with its location)` instead of
/// failing the test outright, so the caller can report the sequence that led
/// to it. Panics of other threads, and outside `catch_panic`, print as usual.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURE_PANICS.with(Cell::get) {
                let payload = payload_str(info.payload());
                let message = match info.location() {
                    Some(at) => format!("{payload} at {}:{}", at.file(), at.line()),
                    None => payload.to_string(),
                };
                PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(message));
            } else {
                previous(info);
            }
        }));
    });
    CAPTURE_PANICS.with(|c| c.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURE_PANICS.with(|c| c.set(false));
    result.map_err(|_| {
        PANIC_MESSAGE
            .with(|m| m.borrow_mut().take())
            .unwrap_or_default()
    })
}

/// The number in environment variable `name` (decimal or `0x` hex), if set;
/// panics on anything else, so a mistyped seed is not silently ignored.
pub fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// Shrinks a diverging operation sequence: removes operations one at a
/// time, keeping a removal whenever the shorter sequence still diverges
/// (`diverges_at` returns the index of the first diverging operation), and
/// cuts it after that operation, until no single removal keeps it failing.
pub fn shrink<T: Clone>(ops: &[T], diverges_at: impl Fn(&[T]) -> Option<usize>) -> Vec<T> {
    let mut ops = ops.to_vec();
    loop {
        let mut progress = false;
        let mut i = ops.len();
        while i > 0 {
            i -= 1;
            let mut candidate = ops.clone();
            candidate.remove(i);
            if let Some(at) = diverges_at(&candidate) {
                candidate.truncate(at + 1);
                ops = candidate;
                i = i.min(ops.len());
                progress = true;
            }
        }
        if !progress {
            return ops;
        }
    }
}
