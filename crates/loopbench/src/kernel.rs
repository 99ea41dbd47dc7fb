//! The Linux side of every scenario: thin, safe wrappers over the raw
//! system calls the baselines make.
//!
//! Each wrapper is one `libc` call. A return of -1 becomes
//! [`std::io::Error::last_os_error`] (mio's `syscall!` habit), so a failing
//! call is reported in its table row instead of panicking. File descriptors
//! come back as [`OwnedFd`] and are closed when dropped.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Runs a libc call and turns a -1 return into the thread's last OS error.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: each call site states why its arguments are valid; this
        // macro only checks the return value.
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// `EFD_NONBLOCK`, for [`eventfd`].
pub const EFD_NONBLOCK: i32 = libc::EFD_NONBLOCK;
/// `EPOLL_CLOEXEC`, for [`epoll_create1`].
pub const EPOLL_CLOEXEC: i32 = libc::EPOLL_CLOEXEC;
/// `EPOLLIN`: readable.
pub const EPOLLIN: u32 = libc::EPOLLIN as u32;

/// `epoll_ctl` operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtlOp {
    /// `EPOLL_CTL_ADD`.
    Add,
    /// `EPOLL_CTL_MOD`.
    Mod,
    /// `EPOLL_CTL_DEL`.
    Del,
}

impl CtlOp {
    fn raw(self) -> i32 {
        match self {
            CtlOp::Add => libc::EPOLL_CTL_ADD,
            CtlOp::Mod => libc::EPOLL_CTL_MOD,
            CtlOp::Del => libc::EPOLL_CTL_DEL,
        }
    }
}

/// An empty `struct epoll_event`, for event buffers.
pub const fn empty_event() -> libc::epoll_event {
    libc::epoll_event { events: 0, u64: 0 }
}

/// `eventfd(initval, flags)`: a new eventfd.
pub fn eventfd(initval: u32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes two integers and touches no memory of ours.
    let fd = syscall!(eventfd(initval, flags))?;
    // SAFETY: the kernel just returned this descriptor and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_create1(flags)`: a new epoll instance.
pub fn epoll_create1(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes one integer and touches no memory of ours.
    let fd = syscall!(epoll_create1(flags))?;
    // SAFETY: the kernel just returned this descriptor and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `epoll_ctl(epfd, op, fd, &event)`. `events` and `data` are ignored for
/// [`CtlOp::Del`] (a null event pointer is passed, as Linux allows since 2.6.9).
pub fn epoll_ctl(
    epfd: BorrowedFd<'_>,
    op: CtlOp,
    fd: BorrowedFd<'_>,
    events: u32,
    data: u64,
) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: data };
    let ptr = if op == CtlOp::Del {
        std::ptr::null_mut()
    } else {
        &mut event as *mut libc::epoll_event
    };
    // SAFETY: both descriptors are borrowed, hence open for the call; `ptr`
    // is null (DEL) or points to a live `epoll_event` on our stack that the
    // kernel only reads.
    syscall!(epoll_ctl(epfd.as_raw_fd(), op.raw(), fd.as_raw_fd(), ptr))?;
    Ok(())
}

/// `epoll_wait(epfd, events, events.len(), timeout_ms)`: the number of
/// events written to the front of `events`. `timeout_ms` -1 blocks.
pub fn epoll_wait(
    epfd: BorrowedFd<'_>,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> io::Result<usize> {
    let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
    // SAFETY: `events` is a live, writable buffer of at least `max`
    // `epoll_event`s, and the kernel writes at most `max` of them.
    let n = syscall!(epoll_wait(
        epfd.as_raw_fd(),
        events.as_mut_ptr(),
        max,
        timeout_ms
    ))?;
    Ok(n as usize)
}

/// `write(fd, &value, 8)` on an eventfd: adds `value` to its counter.
pub fn eventfd_write(fd: BorrowedFd<'_>, value: u64) -> io::Result<()> {
    let bytes = value.to_ne_bytes();
    // SAFETY: `bytes` is 8 readable bytes that outlive the call; the
    // descriptor is borrowed, hence open.
    let n = syscall!(write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()))?;
    short_io(n, "write")
}

/// `read(fd, &value, 8)` on an eventfd: takes and returns its counter.
pub fn eventfd_read(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is 8 writable bytes that outlive the call; the
    // descriptor is borrowed, hence open.
    let n = syscall!(read(fd.as_raw_fd(), bytes.as_mut_ptr().cast(), bytes.len()))?;
    short_io(n, "read")?;
    Ok(u64::from_ne_bytes(bytes))
}

fn short_io(n: isize, what: &str) -> io::Result<()> {
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "eventfd {what} moved {n} bytes, not 8"
        )))
    }
}

/// `getrlimit(RLIMIT_NOFILE)`: (soft, hard).
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live, writable rlimit.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 here, not on every target
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// `setrlimit(RLIMIT_NOFILE, {soft, hard})`.
pub fn set_nofile_limit(soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `lim` is a live rlimit that the kernel only reads.
    syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim))?;
    Ok(())
}

/// `EPOLLOUT`: writable.
pub const EPOLLOUT: u32 = libc::EPOLLOUT as u32;

/// A non-blocking, close-on-exec IPv4 TCP socket with `TCP_NODELAY` set
/// (`socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)`).
pub fn tcp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes three integers and touches no memory of ours.
    let fd = syscall!(socket(
        libc::AF_INET,
        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        0
    ))?;
    // SAFETY: the kernel just returned this descriptor and nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_option(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    Ok(fd)
}

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub fn set_int_option(fd: BorrowedFd<'_>, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live int that the kernel only reads, and its
    // size is passed; the descriptor is borrowed, hence open.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&value as *const i32).cast(),
        std::mem::size_of::<i32>() as libc::socklen_t
    ))?;
    Ok(())
}

fn loopback(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// A listening socket on 127.0.0.1 at a port the kernel picks
/// (`SO_REUSEADDR`, `bind`, `listen(backlog)`), and that port.
pub fn tcp_listener(backlog: i32) -> io::Result<(OwnedFd, u16)> {
    tcp_listener_with(backlog, &[])
}

/// An integer socket option: (level, name, value), for `setsockopt`.
pub type SockOpt = (i32, i32, i32);

/// Like [`tcp_listener`], with `options` set before `listen` (accepted
/// sockets inherit `SO_SNDBUF`, `SO_RCVBUF` and `TCP_MAXSEG` from it).
pub fn tcp_listener_with(backlog: i32, options: &[SockOpt]) -> io::Result<(OwnedFd, u16)> {
    let fd = tcp_socket()?;
    for &(level, name, value) in options {
        set_int_option(fd.as_fd(), level, name, value)?;
    }
    set_int_option(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let addr = loopback(0);
    // SAFETY: `addr` is a live sockaddr_in of the size passed, only read.
    syscall!(bind(
        fd.as_raw_fd(),
        (&addr as *const libc::sockaddr_in).cast(),
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
    ))?;
    // SAFETY: listen takes two integers; the descriptor is open (owned).
    syscall!(listen(fd.as_raw_fd(), backlog))?;
    let port = local_port(fd.as_fd())?;
    Ok((fd, port))
}

/// The local port of a bound socket (`getsockname`).
pub fn local_port(fd: BorrowedFd<'_>) -> io::Result<u16> {
    let mut bound = loopback(0);
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `bound` is a writable sockaddr_in and `len` holds its size;
    // the kernel writes at most `len` bytes and updates `len`.
    syscall!(getsockname(
        fd.as_raw_fd(),
        (&mut bound as *mut libc::sockaddr_in).cast(),
        &mut len
    ))?;
    Ok(u16::from_be(bound.sin_port))
}

/// A non-blocking connect to 127.0.0.1:`port`: the new socket, the
/// connection completing (`EINPROGRESS` is success here) or complete.
pub fn tcp_connect(port: u16) -> io::Result<OwnedFd> {
    tcp_connect_with(port, &[])
}

/// Like [`tcp_connect`], with `options` set before `connect` (so that
/// `TCP_MAXSEG` and the buffer sizes shape the handshake).
pub fn tcp_connect_with(port: u16, options: &[SockOpt]) -> io::Result<OwnedFd> {
    let fd = tcp_socket()?;
    for &(level, name, value) in options {
        set_int_option(fd.as_fd(), level, name, value)?;
    }
    let addr = loopback(port);
    // SAFETY: `addr` is a live sockaddr_in of the size passed, only read;
    // the descriptor is open (owned).
    match syscall!(connect(
        fd.as_raw_fd(),
        (&addr as *const libc::sockaddr_in).cast(),
        std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
    )) {
        Ok(_) => Ok(fd),
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => Ok(fd),
        Err(err) => Err(err),
    }
}

/// `accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)` with
/// `TCP_NODELAY` set on the new socket (Linux does not inherit it).
pub fn tcp_accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: null address pointers ask for no peer address; the listener
    // is borrowed, hence open.
    let fd = syscall!(accept4(
        listener.as_raw_fd(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC
    ))?;
    // SAFETY: the kernel just returned this descriptor and nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_option(fd.as_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    Ok(fd)
}

/// `send(fd, buf, len, MSG_NOSIGNAL)`: bytes sent.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is readable for its length during the call; the
    // descriptor is borrowed, hence open.
    let n = syscall!(send(
        fd.as_raw_fd(),
        buf.as_ptr().cast(),
        buf.len(),
        libc::MSG_NOSIGNAL
    ))?;
    Ok(n as usize)
}

/// `recv(fd, buf, len, 0)`: bytes received (0 at end of stream).
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length during the call; the
    // descriptor is borrowed, hence open.
    let n = syscall!(recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0))?;
    Ok(n as usize)
}

/// `malloc_trim(0)`: glibc hands the free memory of its heaps back to the
/// kernel, so that a following `VmRSS` reading counts live memory only.
/// Returns true if any memory was released.
pub fn malloc_trim() -> bool {
    // SAFETY: malloc_trim takes one integer; it only touches the
    // allocator's own free memory, under the allocator's lock.
    unsafe { libc::malloc_trim(0) != 0 }
}

/// The CPUs the calling thread may run on (`sched_getaffinity(0)`).
pub fn thread_affinity() -> io::Result<Vec<usize>> {
    let mut set = MaybeUninit::<libc::cpu_set_t>::zeroed();
    // SAFETY: `set` is a zeroed cpu_set_t of the size we pass; the kernel
    // writes at most that many bytes.
    syscall!(sched_getaffinity(
        0,
        std::mem::size_of::<libc::cpu_set_t>(),
        set.as_mut_ptr()
    ))?;
    // SAFETY: zeroed is a valid cpu_set_t, and the kernel filled it in.
    let set = unsafe { set.assume_init() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    let is_set = |cpu: usize| {
        // SAFETY: every `cpu` below `max` is in bounds of the set.
        unsafe { libc::CPU_ISSET(cpu, &set) }
    };
    Ok((0..max).filter(|&cpu| is_set(cpu)).collect())
}

/// Restricts the calling thread to `cpus` (`sched_setaffinity(0)`).
pub fn set_thread_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &cpu in cpus {
        if cpu >= max {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `cpu` is below the size of the set (checked above).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a live cpu_set_t of the size we pass; the kernel
    // only reads it.
    syscall!(sched_setaffinity(
        0,
        std::mem::size_of::<libc::cpu_set_t>(),
        &set
    ))?;
    Ok(())
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the calling
/// process when the thread that started it exits, so that a worker
/// process cannot outlive its parent. Fails with `ESRCH` if the parent
/// exited before the call (the process was re-parented meanwhile).
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: getppid takes nothing and cannot fail.
    let before = unsafe { libc::getppid() };
    // SAFETY: PR_SET_PDEATHSIG takes the signal number as an integer
    // argument and touches no memory of ours.
    syscall!(prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong
    ))?;
    // SAFETY: as above.
    let after = unsafe { libc::getppid() };
    if before != after || after == 1 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`: the CPU time (user and
/// system) all threads of the calling process have used so far.
pub fn process_cpu_time() -> io::Result<std::time::Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live, writable timespec.
    syscall!(clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts))?;
    Ok(std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    ))
}

/// `uname()`: (sysname, release, machine), e.g. ("Linux", "6.18.0", "x86_64").
pub fn uname() -> io::Result<(String, String, String)> {
    let mut uts = MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: `uts` is a writable utsname; the kernel fills it in.
    syscall!(uname(uts.as_mut_ptr()))?;
    // SAFETY: zeroed is a valid utsname, and the kernel filled it in.
    let uts = unsafe { uts.assume_init() };
    let field = |raw: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates every utsname field within its
        // array; and the array was zeroed first, so a NUL exists regardless.
        unsafe { CStr::from_ptr(raw.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Ok((
        field(&uts.sysname),
        field(&uts.release),
        field(&uts.machine),
    ))
}

/// `sysconf(_SC_NPROCESSORS_ONLN)`: the CPUs online.
pub fn cpus_online() -> io::Result<usize> {
    // SAFETY: sysconf takes one integer and touches no memory of ours.
    let n = syscall!(sysconf(libc::_SC_NPROCESSORS_ONLN))?;
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_round_trip_through_epoll() {
        let ep = epoll_create1(EPOLL_CLOEXEC).unwrap();
        let efd = eventfd(0, EFD_NONBLOCK).unwrap();
        epoll_ctl(ep.as_fd(), CtlOp::Add, efd.as_fd(), EPOLLIN, 7).unwrap();
        let mut buf = [empty_event(); 4];
        assert_eq!(epoll_wait(ep.as_fd(), &mut buf, 0).unwrap(), 0);
        eventfd_write(efd.as_fd(), 3).unwrap();
        assert_eq!(epoll_wait(ep.as_fd(), &mut buf, 0).unwrap(), 1);
        let data = buf[0].u64;
        assert_eq!(data, 7);
        assert_eq!(eventfd_read(efd.as_fd()).unwrap(), 3);
        let err = eventfd_read(efd.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        epoll_ctl(ep.as_fd(), CtlOp::Del, efd.as_fd(), 0, 0).unwrap();
        let err = epoll_ctl(ep.as_fd(), CtlOp::Del, efd.as_fd(), 0, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn uname_and_affinity_answer() {
        assert!(!uname().unwrap().1.is_empty());
        assert!(!thread_affinity().unwrap().is_empty());
        assert!(cpus_online().unwrap() >= 1);
    }
}
