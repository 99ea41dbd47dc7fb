//! The few Linux calls the examples and end-to-end tests need that std
//! does not offer: entering a network namespace, sleeping in `poll(2)` on a
//! device, kernel epoll (for the `--kernel` baseline) and the descriptor
//! limit. All of the facade's `unsafe` is here, each block with its
//! `SAFETY:` reason; everything else in the crate is safe code.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, RawFd};
use std::time::Duration;

/// Turns a -1 return into the OS error.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Why a network namespace with a TAP device cannot be set up here, if it
/// cannot: not root, no `/dev/net/tun`, or no `ip` (iproute2). The TAP
/// end-to-end tests and loopbench's `tap` scenario skip with this reason.
pub fn tap_unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!(
            "not root (euid {euid}): a network namespace and a TAP need it"
        ));
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("no /dev/net/tun".to_owned());
    }
    if std::process::Command::new("ip").arg("-V").output().is_err() {
        return Some("no `ip` (iproute2)".to_owned());
    }
    None
}

/// Moves the **calling thread** into the network namespace `name` (made by
/// `ip netns add name`, so bound at `/var/run/netns/name`). Sockets and TAP
/// devices the thread opens afterwards belong to that namespace; other
/// threads are not affected. Needs `CAP_SYS_ADMIN`.
pub fn enter_netns(name: &str) -> io::Result<()> {
    if name.contains('/') || name.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let ns = File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns takes a descriptor we own (open for the whole call)
    // and a flag constant; it touches no memory of ours.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?;
    Ok(())
}

/// Sleeps until `fd` is readable (or writable too, with `write`), or
/// `timeout` passes. Returns true if the descriptor is ready. `EINTR`
/// counts as a wake-up.
pub fn wait_fd(fd: RawFd, write: bool, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN | if write { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is a valid pollfd for the duration of the call, and we
    // pass a count of one.
    match check(unsafe { libc::poll(&mut pfd, 1, ms) }) {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
        Err(e) => Err(e),
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and
/// returns the new soft limit (for tests and servers holding many kernel
/// sockets).
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write into.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit to read from.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(lim.rlim_cur)
}

/// A kernel epoll instance (`epoll_create1(EPOLL_CLOEXEC)`) with its
/// event buffer, closed on drop.
pub struct KernelEpoll {
    fd: RawFd,
    raw: Vec<libc::epoll_event>,
}

/// One event out of [`KernelEpoll::wait`]: the registration's data and the
/// kernel's event bits (`libc::EPOLLIN` ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelEvent {
    /// The data given at registration.
    pub data: u64,
    /// The events reported.
    pub events: u32,
}

impl KernelEpoll {
    /// A new epoll instance whose `wait` returns up to `max_events` events.
    pub fn new(max_events: usize) -> io::Result<KernelEpoll> {
        // SAFETY: no pointers; the returned descriptor is owned by the
        // KernelEpoll from here on.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(KernelEpoll {
            fd,
            raw: vec![libc::epoll_event { events: 0, u64: 0 }; max_events.max(1)],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event for the call; the kernel
        // copies it.
        check(unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) })?;
        Ok(())
    }

    /// `EPOLL_CTL_ADD`.
    pub fn add(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, events, data)
    }

    /// `EPOLL_CTL_MOD`.
    pub fn modify(&self, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, events, data)
    }

    /// `EPOLL_CTL_DEL`.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// `epoll_wait`, waiting at most `timeout_ms` (-1: forever); returns
    /// how many events [`event`](Self::event) can read (`EINTR`: none).
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<usize> {
        let cap = self.raw.len();
        // SAFETY: `raw` holds `cap` valid, writable epoll_events.
        match check(unsafe {
            libc::epoll_wait(
                self.fd,
                self.raw.as_mut_ptr(),
                cap as libc::c_int,
                timeout_ms,
            )
        }) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Event `i` of the last [`wait`](Self::wait) (`i` below its result).
    pub fn event(&self, i: usize) -> KernelEvent {
        let e = self.raw[i];
        KernelEvent {
            data: e.u64,
            events: e.events,
        }
    }
}

impl std::fmt::Debug for KernelEpoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelEpoll").field("fd", &self.fd).finish()
    }
}

impl Drop for KernelEpoll {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed exactly once.
        unsafe { libc::close(self.fd) };
    }
}
