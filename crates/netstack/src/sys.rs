//! The system calls of the threaded mode's stack thread: an eventfd to be
//! woken by application threads, `ppoll(2)` on it and the device's
//! descriptor, and `gettid(2)` to name the thread for CPU accounting.
//!
//! All of the crate's `unsafe` is here, each block with its `SAFETY`
//! argument; errors come back as `std::io::Error` with the errno.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An `eventfd(2)`, non-blocking, close-on-exec: the stack thread's wake
/// fd. Writers add 1; the stack thread drains it after each sleep.
#[derive(Debug)]
pub(crate) struct WakeFd(OwnedFd);

impl WakeFd {
    pub(crate) fn new() -> io::Result<WakeFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(WakeFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// Makes the descriptor readable. A saturated counter (`EAGAIN`) is
    /// readable already, so errors are ignored.
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local `u64` to our descriptor.
        let _ = unsafe { libc::write(self.raw(), (&raw const one).cast(), 8) };
    }

    /// Resets the counter (non-blocking: `EAGAIN` when already zero).
    pub(crate) fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live local `u64`.
        let _ = unsafe { libc::read(self.raw(), (&raw mut value).cast(), 8) };
    }
}

/// Sleeps until one of `fds` is readable (or, for those paired with
/// `true`, writable) or `timeout` passes (`None`: forever). `EINTR` counts
/// as a wake-up. Returns a bit mask of the descriptors reported ready (bit
/// i for `fds[i]`).
pub(crate) fn poll_fds(fds: &[(RawFd, bool)], timeout: Option<Duration>) -> io::Result<u32> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    let n = fds.len().min(pfds.len());
    for (p, &(fd, write)) in pfds.iter_mut().zip(fds) {
        p.fd = fd;
        p.events = if write {
            libc::POLLIN | libc::POLLOUT
        } else {
            libc::POLLIN
        };
    }
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        // Below 1e9, so it fits any `c_long`.
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `pfds` is a live array of at least `n` pollfds; `ts_ptr` is
    // null or points to a live timespec; a null sigmask keeps the mask.
    let r = unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            n as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
        return Ok(0);
    }
    Ok(pfds[..n]
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .fold(0, |mask, (i, _)| mask | (1 << i)))
}

/// The kernel's id of the calling thread (for `/proc/self/task/TID/stat`).
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}
