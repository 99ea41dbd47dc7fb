//! The vocabulary of epoll: event bits, the event record, control operations
//! and the Linux errno values every call reports.
//!
//! Bit values and errno numbers are Linux's own (x86-64 and aarch64 agree on
//! all of them), so a mask or an error can cross between this crate and the
//! kernel unchanged.

use std::fmt;

bitflags::bitflags! {
    /// Epoll event bits, with the values of Linux's `EPOLL*` constants.
    ///
    /// The low bits are readiness (what a source's `poll` reports); the four
    /// high bits are modes of a registration (`EXCLUSIVE`, `WAKEUP`,
    /// `ONESHOT`, `ET`) and are never reported.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Events: u32 {
        /// Data can be read (`EPOLLIN`).
        const IN = 0x001;
        /// Urgent / priority data (`EPOLLPRI`).
        const PRI = 0x002;
        /// Data can be written (`EPOLLOUT`).
        const OUT = 0x004;
        /// An error condition; always watched (`EPOLLERR`).
        const ERR = 0x008;
        /// Hang-up; always watched (`EPOLLHUP`).
        const HUP = 0x010;
        /// Normal data can be read (`EPOLLRDNORM`).
        const RDNORM = 0x040;
        /// Priority band data can be read (`EPOLLRDBAND`).
        const RDBAND = 0x080;
        /// Normal data can be written (`EPOLLWRNORM`).
        const WRNORM = 0x100;
        /// Priority data can be written (`EPOLLWRBAND`).
        const WRBAND = 0x200;
        /// Unused by Linux sources, kept for completeness (`EPOLLMSG`).
        const MSG = 0x400;
        /// The peer shut down its writing half (`EPOLLRDHUP`).
        const RDHUP = 0x2000;
        /// Exclusive wake-up for this registration (`EPOLLEXCLUSIVE`, ADD only).
        const EXCLUSIVE = 1 << 28;
        /// Keep the system awake (`EPOLLWAKEUP`); accepted and ignored here.
        const WAKEUP = 1 << 29;
        /// Report once, then disarm until `Mod` (`EPOLLONESHOT`).
        const ONESHOT = 1 << 30;
        /// Edge-triggered (`EPOLLET`).
        const ET = 1 << 31;
    }
}

impl Events {
    /// Linux's `EP_PRIVATE_BITS`: the mode bits. An item whose mask holds
    /// nothing else is disarmed (a delivered `ONESHOT`).
    pub const PRIVATE: Events = Events::WAKEUP
        .union(Events::ONESHOT)
        .union(Events::ET)
        .union(Events::EXCLUSIVE);

    /// Linux's `EPOLLEXCLUSIVE_OK_BITS`: the only bits allowed beside
    /// `EXCLUSIVE` in an `Add`.
    pub const EXCLUSIVE_OK: Events = Events::IN
        .union(Events::OUT)
        .union(Events::ERR)
        .union(Events::HUP)
        .union(Events::WAKEUP)
        .union(Events::ET)
        .union(Events::EXCLUSIVE);

    /// The bits a registration may name (everything Linux defines).
    pub const ALL: Events = Events::all();

    /// Builds a mask from a raw `u32`, keeping unknown bits (as Linux does:
    /// it stores them and they simply never match a readiness).
    pub const fn from_raw(bits: u32) -> Events {
        Events::from_bits_retain(bits)
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("(empty)");
        }
        bitflags::parser::to_writer(self, f)
    }
}

/// One event as `epoll_wait` reports it and `epoll_ctl` takes it: Linux's
/// `struct epoll_event`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct EpollEvent {
    /// The interest mask (in `ctl`) or the readiness reported (in `wait`).
    pub events: Events,
    /// The caller's cookie, returned unchanged with every event.
    pub data: u64,
}

impl EpollEvent {
    /// A new event record.
    pub const fn new(events: Events, data: u64) -> EpollEvent {
        EpollEvent { events, data }
    }
}

/// The `epoll_ctl` operations.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CtlOp {
    /// `EPOLL_CTL_ADD` (1): register a new (object, fd) pair.
    Add,
    /// `EPOLL_CTL_DEL` (2): remove a registration.
    Del,
    /// `EPOLL_CTL_MOD` (3): replace the mask and data of a registration.
    Mod,
}

impl CtlOp {
    /// The Linux value of the operation.
    pub const fn to_raw(self) -> i32 {
        match self {
            CtlOp::Add => 1,
            CtlOp::Del => 2,
            CtlOp::Mod => 3,
        }
    }

    /// The operation for a Linux value, or `None` for an invalid one (which
    /// `epoll_ctl` answers with `EINVAL` once its earlier checks pass).
    pub const fn from_raw(op: i32) -> Option<CtlOp> {
        match op {
            1 => Some(CtlOp::Add),
            2 => Some(CtlOp::Del),
            3 => Some(CtlOp::Mod),
            _ => None,
        }
    }
}

/// A Linux error number. Every fallible call in this crate (and in the
/// socket layer built on it) reports one, and it converts losslessly into
/// [`std::io::Error`] through [`std::io::Error::from_raw_os_error`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident = $val:expr, $msg:expr;)*) => {
        impl Errno {
            $(
                #[doc = $msg]
                pub const $name: Errno = Errno($val);
            )*

            /// The symbolic name (`"EBADF"`), or `None` for a number this
            /// crate does not name.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted (the target cannot be polled).";
    ENOENT = 2, "No such entry (`Mod`/`Del` of an unregistered fd).";
    EINTR = 4, "Interrupted (a blocked call was woken by shutdown).";
    EBADF = 9, "Bad file descriptor.";
    EAGAIN = 11, "Try again (would block in non-blocking mode).";
    ENOMEM = 12, "Out of memory.";
    EFAULT = 14, "Bad address (a missing event record or a short buffer).";
    EEXIST = 17, "Already registered.";
    EINVAL = 22, "Invalid argument.";
    ENFILE = 23, "Too many open files in the system.";
    EMFILE = 24, "Too many open files in this table.";
    ENOSPC = 28, "No space (the `max_watches` limit is reached).";
    EPIPE = 32, "Broken pipe (the reading end is gone).";
    ELOOP = 40, "Too many levels of epoll nesting, or a cycle.";
    ENOTSOCK = 88, "Not a socket.";
    EDESTADDRREQ = 89, "Destination address required.";
    ENOPROTOOPT = 92, "Protocol not available (an unknown socket option).";
    EPROTONOSUPPORT = 93, "Protocol not supported.";
    ESOCKTNOSUPPORT = 94, "Socket type not supported.";
    EOPNOTSUPP = 95, "Operation not supported.";
    EAFNOSUPPORT = 97, "Address family not supported.";
    EADDRINUSE = 98, "Address already in use.";
    EADDRNOTAVAIL = 99, "Cannot assign the requested address.";
    ENETUNREACH = 101, "Network unreachable.";
    ECONNABORTED = 103, "Connection aborted.";
    ECONNRESET = 104, "Connection reset by peer.";
    ENOBUFS = 105, "No buffer space available.";
    EISCONN = 106, "Already connected.";
    ENOTCONN = 107, "Not connected.";
    ETIMEDOUT = 110, "Connection timed out.";
    ECONNREFUSED = 111, "Connection refused.";
    EHOSTUNREACH = 113, "Host unreachable.";
    EALREADY = 114, "Operation already in progress.";
    EINPROGRESS = 115, "Operation now in progress.";
}

impl Errno {
    /// Same as [`Errno::EAGAIN`]; Linux defines both names with one value.
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;

    /// The raw number.
    pub const fn raw(self) -> i32 {
        self.0
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&std::io::Error::from_raw_os_error(self.0), f)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    fn from(errno: Errno) -> std::io::Error {
        std::io::Error::from_raw_os_error(errno.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_bits_equal_linux_constants() {
        assert_eq!(Events::IN.bits(), libc::EPOLLIN as u32);
        assert_eq!(Events::PRI.bits(), libc::EPOLLPRI as u32);
        assert_eq!(Events::OUT.bits(), libc::EPOLLOUT as u32);
        assert_eq!(Events::ERR.bits(), libc::EPOLLERR as u32);
        assert_eq!(Events::HUP.bits(), libc::EPOLLHUP as u32);
        assert_eq!(Events::RDNORM.bits(), libc::EPOLLRDNORM as u32);
        assert_eq!(Events::RDBAND.bits(), libc::EPOLLRDBAND as u32);
        assert_eq!(Events::WRNORM.bits(), libc::EPOLLWRNORM as u32);
        assert_eq!(Events::WRBAND.bits(), libc::EPOLLWRBAND as u32);
        assert_eq!(Events::MSG.bits(), libc::EPOLLMSG as u32);
        assert_eq!(Events::RDHUP.bits(), libc::EPOLLRDHUP as u32);
        assert_eq!(Events::EXCLUSIVE.bits(), libc::EPOLLEXCLUSIVE as u32);
        assert_eq!(Events::WAKEUP.bits(), libc::EPOLLWAKEUP as u32);
        assert_eq!(Events::ONESHOT.bits(), libc::EPOLLONESHOT as u32);
        assert_eq!(Events::ET.bits(), libc::EPOLLET as u32);
    }

    #[test]
    fn errno_values_equal_linux_and_convert_to_io_error() {
        for (ours, theirs) in [
            (Errno::EPERM, libc::EPERM),
            (Errno::ENOENT, libc::ENOENT),
            (Errno::EBADF, libc::EBADF),
            (Errno::EAGAIN, libc::EAGAIN),
            (Errno::EFAULT, libc::EFAULT),
            (Errno::EEXIST, libc::EEXIST),
            (Errno::EINVAL, libc::EINVAL),
            (Errno::EMFILE, libc::EMFILE),
            (Errno::ENOSPC, libc::ENOSPC),
            (Errno::EPIPE, libc::EPIPE),
            (Errno::ELOOP, libc::ELOOP),
            (Errno::ECONNREFUSED, libc::ECONNREFUSED),
            (Errno::ECONNRESET, libc::ECONNRESET),
            (Errno::EINPROGRESS, libc::EINPROGRESS),
            (Errno::ENOTCONN, libc::ENOTCONN),
        ] {
            assert_eq!(ours.raw(), theirs, "{ours:?}");
            let io: std::io::Error = ours.into();
            assert_eq!(io.raw_os_error(), Some(theirs));
        }
        assert_eq!(format!("{:?}", Errno::ELOOP), "ELOOP");
        assert_eq!(format!("{:?}", Errno(9999)), "Errno(9999)");
    }

    #[test]
    fn ctl_op_round_trips_and_rejects_unknown() {
        for op in [CtlOp::Add, CtlOp::Del, CtlOp::Mod] {
            assert_eq!(CtlOp::from_raw(op.to_raw()), Some(op));
        }
        assert_eq!(CtlOp::Add.to_raw(), libc::EPOLL_CTL_ADD);
        assert_eq!(CtlOp::Del.to_raw(), libc::EPOLL_CTL_DEL);
        assert_eq!(CtlOp::Mod.to_raw(), libc::EPOLL_CTL_MOD);
        for bad in [-1, 0, 4, i32::MAX] {
            assert_eq!(CtlOp::from_raw(bad), None);
        }
    }
}
