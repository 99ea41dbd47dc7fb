//! Idiomatic types over a [`Net`]: [`TcpListener`], [`TcpStream`] and
//! [`Epoll`], shaped like `std::net` and errors as `std::io::Error` with
//! the Linux errno ([`std::io::Error::raw_os_error`]).
//!
//! Each owns one descriptor of its stack and closes it on drop; each keeps
//! a [`Net`] clone, so the stack thread lives as long as any of them.
//! [`fd`](TcpStream::fd) gives the descriptor number for the raw calls and
//! for [`Epoll::add`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddrV4};
use std::time::Duration;

use eventpoll::{CtlOp, EpollEvent, Errno, Events};

use super::{Net, SO_RCVTIMEO, SO_SNDTIMEO};
use crate::stack::{
    AF_INET, F_GETFL, F_SETFL, IPPROTO_TCP, SHUT_RD, SHUT_RDWR, SHUT_WR, SO_REUSEADDR, SOCK_STREAM,
    SOL_SOCKET, TCP_NODELAY,
};

fn err(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// The backlog of [`TcpListener::bind`] (std's choice).
const LISTEN_BACKLOG: i32 = 128;

/// Sets or clears `O_NONBLOCK` on `fd`.
fn set_nonblocking(net: &Net, fd: i32, nonblocking: bool) -> io::Result<()> {
    let flags = net.fcntl(fd, F_GETFL, 0).map_err(err)?;
    let flags = if nonblocking {
        flags | eventpoll::O_NONBLOCK
    } else {
        flags & !eventpoll::O_NONBLOCK
    };
    net.fcntl(fd, F_SETFL, flags).map(|_| ()).map_err(err)
}

/// Std's rule for socket timeouts: `Some(0)` is an error.
fn check_timeout(timeout: Option<Duration>) -> io::Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cannot set a 0 duration timeout",
        ));
    }
    Ok(())
}

/// A listening TCP socket on a [`Net`].
#[derive(Debug)]
pub struct TcpListener {
    net: Net,
    fd: i32,
}

impl TcpListener {
    /// `socket`, `SO_REUSEADDR`, `bind(addr)` and `listen(128)`, like
    /// `std::net::TcpListener::bind`. Port 0 picks a free port.
    pub fn bind(net: &Net, addr: SocketAddrV4) -> io::Result<TcpListener> {
        let fd = net.socket(AF_INET, SOCK_STREAM, 0).map_err(err)?;
        let listener = TcpListener {
            net: net.clone(),
            fd,
        };
        net.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            .map_err(err)?;
        net.bind(fd, addr).map_err(err)?;
        net.listen(fd, LISTEN_BACKLOG).map_err(err)?;
        Ok(listener)
    }

    /// Waits for a connection (unless non-blocking: `WouldBlock`) and
    /// returns it with the peer's address. The new stream is blocking.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddrV4)> {
        let (fd, peer) = self.net.accept4(self.fd, 0).map_err(err)?;
        Ok((
            TcpStream {
                net: self.net.clone(),
                fd,
            },
            peer,
        ))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.net.getsockname(self.fd).map_err(err)
    }

    /// Sets or clears `O_NONBLOCK`: `accept` then fails with `WouldBlock`
    /// instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        set_nonblocking(&self.net, self.fd, nonblocking)
    }

    /// `SO_RCVTIMEO` for `accept` (`WouldBlock` when it expires).
    pub fn set_accept_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.net
            .set_timeout(self.fd, SO_RCVTIMEO, timeout)
            .map_err(err)
    }

    /// The descriptor number in its stack.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// The stack it lives on.
    pub fn net(&self) -> &Net {
        &self.net
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        // EBADF after the stack shut down is the only possible error.
        let _ = self.net.close(self.fd);
    }
}

/// A TCP connection on a [`Net`]: `Read`, `Write`, timeouts, `shutdown`.
#[derive(Debug)]
pub struct TcpStream {
    net: Net,
    fd: i32,
}

impl TcpStream {
    /// Connects to `addr`, waiting for the handshake, like
    /// `std::net::TcpStream::connect`.
    pub fn connect(net: &Net, addr: SocketAddrV4) -> io::Result<TcpStream> {
        let fd = net.socket(AF_INET, SOCK_STREAM, 0).map_err(err)?;
        let stream = TcpStream {
            net: net.clone(),
            fd,
        };
        net.connect(fd, addr).map_err(err)?;
        Ok(stream)
    }

    /// Like [`connect`](TcpStream::connect), giving up after `timeout`
    /// (`TimedOut`; the half-open socket is closed).
    pub fn connect_timeout(
        net: &Net,
        addr: SocketAddrV4,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        check_timeout(Some(timeout))?;
        let fd = net.socket(AF_INET, SOCK_STREAM, 0).map_err(err)?;
        let stream = TcpStream {
            net: net.clone(),
            fd,
        };
        net.set_timeout(fd, SO_SNDTIMEO, Some(timeout))
            .map_err(err)?;
        match net.connect(fd, addr) {
            Ok(()) => {}
            Err(Errno::EINPROGRESS) => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(err(e)),
        }
        net.set_timeout(fd, SO_SNDTIMEO, None).map_err(err)?;
        Ok(stream)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddrV4> {
        self.net.getpeername(self.fd).map_err(err)
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddrV4> {
        self.net.getsockname(self.fd).map_err(err)
    }

    /// `shutdown(2)`: `Write` sends our FIN, `Read` makes reads return 0.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => SHUT_RD,
            Shutdown::Write => SHUT_WR,
            Shutdown::Both => SHUT_RDWR,
        };
        self.net.shutdown_socket(self.fd, how).map_err(err)
    }

    /// Sets or clears `O_NONBLOCK`: reads and writes then fail with
    /// `WouldBlock` instead of waiting.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        set_nonblocking(&self.net, self.fd, nonblocking)
    }

    /// `SO_RCVTIMEO`: a read waits at most this long (`WouldBlock` after).
    /// `Some(0)` is an error, as in std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.net
            .set_timeout(self.fd, SO_RCVTIMEO, timeout)
            .map_err(err)
    }

    /// `SO_SNDTIMEO`: a write waits at most this long for send space.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        check_timeout(timeout)?;
        self.net
            .set_timeout(self.fd, SO_SNDTIMEO, timeout)
            .map_err(err)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        self.net.timeout(self.fd, SO_RCVTIMEO).map_err(err)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        self.net.timeout(self.fd, SO_SNDTIMEO).map_err(err)
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.net
            .setsockopt(self.fd, IPPROTO_TCP, TCP_NODELAY, i32::from(nodelay))
            .map_err(err)
    }

    /// `SO_LINGER`, like `std::net::TcpStream::set_linger`: `Some(ZERO)`
    /// makes the drop of the last handle reset the connection; a longer
    /// time makes that drop wait for the FIN's ACK ([`Net::close`]).
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        self.net.setsockopt_linger(self.fd, linger).map_err(err)
    }

    /// The `SO_LINGER` time (`None`: off).
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        self.net.getsockopt_linger(self.fd).map_err(err)
    }

    /// Reads without taking the data off the queue (`MSG_PEEK`), like
    /// `std::net::TcpStream::peek`: waits for data on a blocking stream.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.net
            .recv_flags(self.fd, buf, crate::MSG_PEEK)
            .map_err(err)
    }

    /// A second handle on the same connection (`dup`).
    pub fn try_clone(&self) -> io::Result<TcpStream> {
        Ok(TcpStream {
            net: self.net.clone(),
            fd: self.net.dup(self.fd).map_err(err)?,
        })
    }

    /// The descriptor number in its stack.
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// The stack it lives on.
    pub fn net(&self) -> &Net {
        &self.net
    }
}

impl Read for &TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.net.recv(self.fd, buf).map_err(err)
    }
}

impl Write for &TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.net.send(self.fd, buf).map_err(err)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for TcpStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for TcpStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // EBADF after the stack shut down is the only possible error.
        let _ = self.net.close(self.fd);
    }
}

/// An epoll on a [`Net`]: register descriptors of the same stack, wait
/// from any thread (several threads may wait on one `Epoll`).
#[derive(Debug)]
pub struct Epoll {
    net: Net,
    fd: i32,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`.
    pub fn new(net: &Net) -> io::Result<Epoll> {
        Ok(Epoll {
            net: net.clone(),
            fd: net.epoll_create1(eventpoll::EPOLL_CLOEXEC).map_err(err)?,
        })
    }

    /// `EPOLL_CTL_ADD` of descriptor `fd` with `events` (mode bits
    /// included: `ET`, `ONESHOT`, `EXCLUSIVE`) and `data`.
    pub fn add(&self, fd: i32, events: Events, data: u64) -> io::Result<()> {
        self.ctl(CtlOp::Add, fd, Some(&EpollEvent::new(events, data)))
    }

    /// `EPOLL_CTL_MOD` (re-arms a `ONESHOT` registration).
    pub fn modify(&self, fd: i32, events: Events, data: u64) -> io::Result<()> {
        self.ctl(CtlOp::Mod, fd, Some(&EpollEvent::new(events, data)))
    }

    /// `EPOLL_CTL_DEL`.
    pub fn delete(&self, fd: i32) -> io::Result<()> {
        self.ctl(CtlOp::Del, fd, None)
    }

    fn ctl(&self, op: CtlOp, fd: i32, event: Option<&EpollEvent>) -> io::Result<()> {
        self.net
            .epoll_ctl(self.fd, op.to_raw(), fd, event)
            .map_err(err)
    }

    /// Waits for events (`None` blocks; zero polls) and fills `events`;
    /// returns how many. Fails with `EBADF` if the stack shuts down.
    pub fn wait(&self, events: &mut [EpollEvent], timeout: Option<Duration>) -> io::Result<usize> {
        let max = i32::try_from(events.len().min(eventpoll::EP_MAX_EVENTS as usize))
            .unwrap_or(eventpoll::EP_MAX_EVENTS);
        self.net
            .epoll_wait_for(self.fd, events, max, timeout)
            .map_err(err)
    }

    /// The descriptor number in its stack.
    pub fn fd(&self) -> i32 {
        self.fd
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // EBADF after the stack shut down is the only possible error.
        let _ = self.net.close(self.fd);
    }
}
