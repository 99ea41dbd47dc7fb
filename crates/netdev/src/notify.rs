//! The opt-in readiness fd of a link end: a file descriptor that becomes
//! readable when the peer queues a packet for a consumer that said it is
//! about to sleep.
//!
//! A stack thread that owns a [`LinkDevice`](crate::LinkDevice) sleeps in
//! `poll(2)`; the in-memory ring has no descriptor of its own, so the
//! consumer asks for one ([`LinkDevice::readiness_fd`](crate::LinkDevice::readiness_fd)).
//! It is one end of a `socketpair(AF_UNIX, SOCK_DGRAM)` from std, so the
//! crate stays free of `unsafe`.
//!
//! ## The protocol (no lost wake-ups, no cost while busy)
//!
//! - Consumer, before sleeping ([`Notifier::arm`]): drain the socket, set
//!   `armed`, a `SeqCst` fence, then look at the ring again; sleep only if
//!   it is still empty.
//! - Producer, after publishing a packet ([`Notifier::packet_queued`]): a
//!   `SeqCst` fence, then if `armed` is set, clear it and send one byte.
//!
//! The two fences order "store armed; load tail" against "store tail; load
//! armed" (Dekker's pattern): at least one side sees the other's store, so
//! either the consumer sees the packet and does not sleep, or the producer
//! sees `armed` and makes the descriptor readable. A producer that finds
//! `armed` clear (the consumer is awake) does no system call: a busy link
//! pays one fence and one load per packet. An armed consumer that did not
//! sleep after all costs at most one spurious wake-up later.
//!
//! Without a call to `readiness_fd` nothing of this exists: the producer
//! pays one atomic load of an empty `OnceLock` per packet.
//!
//! ## The arrival hook
//!
//! The consumer may also install a hook ([`ArrivalHook`]) that the producer
//! calls, on its own thread, instead of sending the byte: if it returns
//! true it took care of the packets (netstack's threaded mode runs the
//! receiving stack's ingress right there when its lock is free, as Linux
//! runs a loopback receive in the sender's context), and the sleeping
//! consumer is not woken. Returning false sends the byte as usual. The
//! hook runs only for an armed consumer, with `armed` already cleared: if
//! it handled the packets, it must arm again for the consumer (which
//! sleeps on) before it returns.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering, fence};

/// Called by the producer for an armed consumer: true if it handled the
/// new packets (see the module docs), false to signal the descriptor.
pub type ArrivalHook = Box<dyn Fn() -> bool + Send + Sync>;

/// A readiness signal from a ring's producer to its consumer.
pub(crate) struct Notifier {
    /// The consumer is about to sleep: the next packet must signal.
    armed: AtomicBool,
    /// A byte may be in the socket: set by the producer *after* it sent
    /// one, so `arm` drains (a system call) only when there is something
    /// to drain. A byte sent but not yet flagged is drained by
    /// [`Notifier::drain`], which the consumer calls when `poll` reports
    /// the descriptor readable (otherwise a preempted producer would leave
    /// the consumer waking in a loop until it runs again).
    sent: AtomicBool,
    /// The producer writes here.
    tx: UnixDatagram,
    /// The consumer polls and drains this one.
    rx: UnixDatagram,
    hook: OnceLock<ArrivalHook>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("armed", &self.armed)
            .field("hook", &self.hook.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub(crate) fn new() -> io::Result<Notifier> {
        let (tx, rx) = UnixDatagram::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Notifier {
            armed: AtomicBool::new(false),
            sent: AtomicBool::new(false),
            tx,
            rx,
            hook: OnceLock::new(),
        })
    }

    /// The descriptor that becomes readable.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// Producer side: a packet was published.
    pub(crate) fn packet_queued(&self) {
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::Relaxed) {
            if self.hook.get().is_some_and(|hook| hook()) {
                return;
            }
            // A full socket buffer (WouldBlock) already holds a signal; any
            // other error cannot happen on a connected socketpair.
            let _ = self.tx.send(&[1]);
            self.sent.store(true, Ordering::Release);
        }
    }

    /// Consumer side, after `poll` reported the socket readable: empties
    /// it if the next `arm` would not (a byte in flight, not yet flagged).
    pub(crate) fn drain(&self) {
        if self.sent.load(Ordering::Acquire) {
            return;
        }
        let mut buf = [0u8; 8];
        while self.rx.recv(&mut buf).is_ok() {}
    }

    /// Installs the arrival hook; false if one is installed already.
    pub(crate) fn set_hook(&self, hook: ArrivalHook) -> bool {
        self.hook.set(hook).is_ok()
    }

    /// Consumer side: drains old signals and arms; the caller must look at
    /// the ring again afterwards and sleep only if it is empty.
    pub(crate) fn arm(&self) {
        if self.sent.swap(false, Ordering::Acquire) {
            let mut buf = [0u8; 8];
            while self.rx.recv(&mut buf).is_ok() {}
        }
        self.armed.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }
}
