//! The synchronisation primitives of the link rings, behind one facade so
//! that `RUSTFLAGS="--cfg loom"` swaps them for loom's model-checked versions
//! (the tokio habit, as in `eventpoll::sync`).
//!
//! The API is parking_lot's: `lock()` returns the guard, no poisoning. Under
//! loom, `lock()` *asserts* that the lock is free: the ring's protocol gives
//! every slot to one side at a time, so a slot lock is never contended. One
//! limit: loom does not switch threads at an unlock, so it cannot see a slot
//! published *before* its lock is released. That order ("unlock, then
//! store the position") is kept by the block structure in `ring.rs`.
//!
//! Run the models with
//! `RUSTFLAGS="--cfg loom" cargo test -p netdev --lib loom`.

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::Mutex;
    pub(crate) use std::sync::atomic::AtomicUsize;
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::AtomicUsize;

    /// A loom mutex whose `lock` fails the model if the lock is contended.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0
                .try_lock()
                .expect("a ring slot lock is never contended")
        }
    }
}

pub(crate) use imp::*;
pub(crate) use std::sync::atomic::Ordering;
