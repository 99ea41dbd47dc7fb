//! The synchronisation primitives eventpoll uses, behind one facade so that
//! `RUSTFLAGS="--cfg loom"` swaps them for loom's model-checked versions
//! (the tokio habit: `tokio/src/loom/`).
//!
//! The API is parking_lot's (no poisoning, `Condvar::wait(&mut guard)`).
//! The atomics of the lock-free fast paths (the epoll's "maybe ready" hint,
//! a wait queue's length, the eventfd counter) come from here too, so that
//! loom explores the interleavings around them. Atomics that are only read
//! or written under a lock stay std's.
//!
//! Under loom a timed wait is an untimed one: loom does not model time, so
//! the loom models only use blocking waits and zero timeouts.

#[cfg(not(loom))]
mod imp {
    pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
    pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
    use std::time::Instant;

    /// Waits on `cv` until notified or until `deadline`; true if it timed out.
    pub(crate) fn wait_until<T>(
        cv: &Condvar,
        guard: &mut MutexGuard<'_, T>,
        deadline: Instant,
    ) -> bool {
        cv.wait_until(guard, deadline).timed_out()
    }
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    /// A loom mutex with parking_lot's API.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Its guard; the `Option` lets a condvar wait take the guard and put it back.
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap()))
        }
        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap()
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("guard present outside a wait")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("guard present outside a wait")
        }
    }

    /// A loom condvar with parking_lot's API.
    #[derive(Debug)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("guard present");
            guard.0 = Some(self.0.wait(inner).unwrap());
        }
        pub(crate) fn notify_one(&self) -> bool {
            self.0.notify_one();
            true
        }
        pub(crate) fn notify_all(&self) -> usize {
            self.0.notify_all();
            1
        }
    }

    pub(crate) fn wait_until<T>(
        cv: &Condvar,
        guard: &mut MutexGuard<'_, T>,
        _deadline: Instant,
    ) -> bool {
        cv.wait(guard);
        false
    }
}

pub(crate) use imp::*;
