//! The synchronisation primitives of the link rings, behind one facade so
//! that `RUSTFLAGS="--cfg loom"` swaps them for loom's model-checked versions
//! (the tokio habit, as in `eventpoll::sync`).
//!
//! A ring slot is an [`UnsafeCell`] with loom's closure API (`with` to read,
//! `with_mut` to write, each handed a raw pointer). Outside loom it is
//! std's cell and the closures cost nothing; under loom every access is
//! recorded, and a read and a write of one slot that the ring's positions do
//! not order fail the model: loom checks the ownership protocol that
//! `ring.rs`'s `SAFETY` comments rely on.
//!
//! Run the models with
//! `RUSTFLAGS="--cfg loom" cargo test -p netdev --lib loom`.

#[cfg(not(loom))]
mod imp {
    pub(crate) use std::sync::atomic::AtomicUsize;

    /// std's `UnsafeCell` with loom's access API.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) fn new(value: T) -> Self {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        /// Calls `f` with a pointer for reading the value.
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Calls `f` with a pointer for writing the value.
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::cell::UnsafeCell;
    pub(crate) use loom::sync::atomic::AtomicUsize;
}

pub(crate) use imp::*;
pub(crate) use std::sync::atomic::Ordering;
