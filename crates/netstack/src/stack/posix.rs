//! The POSIX-style calls: sockets, descriptors and epoll on a [`Stack`],
//! with Linux errno.
//!
//! Every call first closes the sockets whose last descriptor went away
//! (`Core::reap`), then works on the socket tables, and leaves the wire to
//! the next [`Stack::poll`]: a call that queues data, opens a window or
//! closes a connection marks the connection dirty. Every socket behaves as
//! non-blocking in this milestone (`EAGAIN`, `EINPROGRESS`).

use super::*;

impl<D: Device + Lookahead> Stack<D> {
    // ---- socket calls -------------------------------------------------

    /// `socket(AF_INET, SOCK_STREAM [| SOCK_NONBLOCK | SOCK_CLOEXEC], 0 or
    /// IPPROTO_TCP)`, with Linux's checks in its order: `EINVAL` for
    /// unknown flags or a type past `SOCK_MAX`, `EAFNOSUPPORT` for another
    /// domain, [`Errno::EPROTONOSUPPORT`] for another type (`SOCK_DGRAM`, ...) or
    /// protocol, `EMFILE`.
    pub fn socket(&mut self, domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno> {
        self.core.reap();
        let kind = ty & !(SOCK_NONBLOCK | SOCK_CLOEXEC);
        if !(1..SOCK_MAX).contains(&kind) {
            return Err(Errno::EINVAL);
        }
        if domain != AF_INET {
            return Err(Errno::EAFNOSUPPORT);
        }
        if kind != SOCK_STREAM || (protocol != 0 && protocol != IPPROTO_TCP) {
            return Err(Errno::EPROTONOSUPPORT);
        }
        let opts = Opts {
            nodelay: false,
            keepalive: false,
            reuseaddr: false,
            rcvbuf: None,
            sndbuf: None,
            linger: None,
        };
        self.install(
            Kind::Fresh,
            opts,
            ty & SOCK_NONBLOCK != 0,
            ty & SOCK_CLOEXEC != 0,
        )
    }

    /// `bind(fd, addr)`. `EBADF`, `ENOTSOCK`, `EINVAL` (already bound or
    /// connected), `EADDRNOTAVAIL` (not our address), `EADDRINUSE`.
    /// Port 0 picks a free ephemeral port.
    pub fn bind(&mut self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno> {
        let id = self.sock_id(fd)?;
        let core = &mut self.core;
        let entry = core.entry(id)?;
        if !matches!(entry.kind, Kind::Fresh) || entry.bound.is_some() {
            return Err(Errno::EINVAL);
        }
        if !addr.ip().is_unspecified() && !core.addrs.contains(addr.ip()) {
            return Err(Errno::EADDRNOTAVAIL);
        }
        let reuse = entry.opts.reuseaddr;
        let port = if addr.port() == 0 {
            core.free_port()?
        } else {
            addr.port()
        };
        core.reserve_port(port, reuse)?;
        core.entry_mut(id)?.bound = Some(SocketAddrV4::new(*addr.ip(), port));
        trace!(fd, %addr, port, "bind");
        Ok(())
    }

    /// `listen(fd, backlog)`. `EINVAL` on a connected socket, `EADDRINUSE`
    /// if an unbound socket's ephemeral port cannot be had or a listener
    /// already holds the port. Like Linux, the accept queue holds
    /// `backlog + 1` connections (half-open ones counted); SYNs past that
    /// are dropped and counted in [`Stats::syn_dropped`], unless a half-open
    /// connection has waited [`HALF_OPEN_EVICT_AGE`] for its ACK: then it is
    /// dropped instead ([`Stats::syn_evicted`]), where Linux would answer
    /// with a SYN cookie.
    pub fn listen(&mut self, fd: i32, backlog: i32) -> Result<(), Errno> {
        let id = self.sock_id(fd)?;
        let core = &mut self.core;
        let backlog = usize::try_from(backlog).unwrap_or(0).min(65535);
        let entry = core.entry_mut(id)?;
        match &mut entry.kind {
            Kind::Listener(l) => {
                l.backlog = backlog;
                return Ok(());
            }
            Kind::Conn(_) => return Err(Errno::EINVAL),
            Kind::Fresh => {}
        }
        let bound = match entry.bound {
            Some(b) => b,
            None => {
                let port = core.free_port()?;
                core.reserve_port(port, false)?;
                let b = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
                core.entry_mut(id)?.bound = Some(b);
                b
            }
        };
        if core.listeners.contains_key(&bound.port()) {
            return Err(Errno::EADDRINUSE);
        }
        core.ports.entry(bound.port()).or_default().listening = true;
        core.listeners.insert(bound.port(), id);
        core.entry_mut(id)?.kind = Kind::Listener(Box::new(Listener {
            addr: *bound.ip(),
            port: bound.port(),
            backlog,
            pending: FxHashSet::default(),
            queue: VecDeque::new(),
            half_open: VecDeque::new(),
        }));
        core.refresh(id);
        trace!(fd, port = bound.port(), backlog, "listen");
        Ok(())
    }

    /// `accept4(fd, flags)`: the new descriptor and the peer's address.
    /// `EINVAL` (not listening, or unknown flags), `EAGAIN` (queue empty).
    pub fn accept4(&mut self, fd: i32, flags: i32) -> Result<(i32, SocketAddrV4), Errno> {
        let lid = self.sock_id(fd)?;
        if flags & !(SOCK_NONBLOCK | SOCK_CLOEXEC) != 0 {
            return Err(Errno::EINVAL);
        }
        let core = &mut self.core;
        let entry = core.entry_mut(lid)?;
        let (opts, cid) = match &mut entry.kind {
            Kind::Listener(l) => {
                let cid = l.queue.pop_front().ok_or(Errno::EAGAIN)?;
                l.pending.remove(&cid);
                (entry.opts, cid)
            }
            _ => return Err(Errno::EINVAL),
        };
        core.refresh(lid);
        let conn = core.conn_mut(cid).ok_or(Errno::EINVAL)?;
        conn.listener = None;
        conn.queued = false;
        let peer = conn.tuple.remote;
        let mut opts = opts;
        opts.reuseaddr = false;
        let nfd = self.install(
            Kind::Conn(cid),
            opts,
            flags & SOCK_NONBLOCK != 0,
            flags & SOCK_CLOEXEC != 0,
        );
        let nfd = match nfd {
            Ok(nfd) => nfd,
            Err(e) => {
                // No descriptor: the connection is closed as if accepted
                // and closed at once.
                if let Some(conn) = self.core.conn_mut(cid) {
                    conn.orphan = true;
                    conn.tcp_mut().abort();
                }
                self.core.mark_dirty(cid);
                return Err(e);
            }
        };
        let sid = self.sock_id(nfd)?;
        conn_set_owner(&mut self.core, cid, sid);
        self.core.refresh(sid);
        trace!(fd, new_fd = nfd, %peer, "accept");
        Ok((nfd, peer))
    }

    /// `connect(fd, addr)`. Non-blocking for this milestone: a fresh
    /// socket starts the handshake and returns `EINPROGRESS`; the result
    /// comes as `OUT` (connected) or `ERR` with `SO_ERROR`. `EALREADY`
    /// while connecting, `EISCONN` when connected or listening,
    /// `EADDRNOTAVAIL` when no ephemeral port gives a unique 4-tuple,
    /// `ENETUNREACH` for an unspecified address.
    pub fn connect(&mut self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno> {
        let id = self.sock_id(fd)?;
        let core = &mut self.core;
        let entry = core.entry_mut(id)?;
        match entry.kind {
            Kind::Fresh => {}
            Kind::Listener(_) => return Err(Errno::EISCONN),
            Kind::Conn(cid) => {
                if let Some(e) = entry.error.take() {
                    core.refresh(id);
                    return Err(e);
                }
                let state = core.conn(cid).map(|c| c.tcp().state());
                return Err(match state {
                    Some(State::SynSent) => Errno::EALREADY,
                    Some(State::Closed) if entry_never_connected(core, cid) => Errno::ECONNABORTED,
                    _ => Errno::EISCONN,
                });
            }
        }
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(Errno::ENETUNREACH);
        }
        let opts = entry.opts;
        let local = match entry.bound {
            Some(b) => {
                let tuple = FourTuple {
                    local: SocketAddrV4::new(
                        if b.ip().is_unspecified() {
                            core.addr
                        } else {
                            *b.ip()
                        },
                        b.port(),
                    ),
                    remote: addr,
                };
                if core.demux.contains_key(&tuple) || core.time_wait.contains_key(&tuple) {
                    return Err(Errno::EADDRNOTAVAIL);
                }
                tuple.local
            }
            None => core.ephemeral(addr)?,
        };
        let tuple = FourTuple {
            local,
            remote: addr,
        };
        let cid = core.new_conn(tuple, &opts);
        let conn = core.conn_mut(cid).ok_or(Errno::ENOMEM)?;
        let result = conn.set.get_mut::<tcp::Socket>(conn.handle).connect(
            self.iface.context(),
            endpoint(addr),
            IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(*local.ip())),
                port: local.port(),
            },
        );
        if result.is_err() {
            core.free_conn(cid);
            return Err(Errno::EINVAL);
        }
        // smoltcp's timeout counts time since the peer was last heard: on
        // while connecting only (lifted once established), so an idle
        // established connection never times out by itself.
        conn.set
            .get_mut::<tcp::Socket>(conn.handle)
            .set_timeout(Some(CONNECT_TIMEOUT));
        conn_set_owner(core, cid, id);
        core.demux.insert(tuple, cid);
        if let Some(conn) = core.conn_mut(cid) {
            conn.in_demux = true;
            conn.resnap();
        }
        core.entry_mut(id)?.kind = Kind::Conn(cid);
        core.mark_dirty(cid);
        core.refresh(id);
        trace!(fd, conn = cid, %local, remote = %addr, "connect: SYN queued");
        Err(Errno::EINPROGRESS)
    }

    /// `recv(fd, buf, 0)`: bytes read, 0 at end of stream. `ENOTCONN` (not
    /// connected), `EAGAIN` (nothing yet), a pending `SO_ERROR`
    /// (`ECONNRESET`, ...), which it clears.
    pub fn recv(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
        self.recv_flags(fd, buf, 0)
    }

    /// `recv(fd, buf, flags)`: [`recv`](Stack::recv) with Linux's TCP
    /// flags. [`MSG_PEEK`] leaves the data queued; [`MSG_TRUNC`] discards
    /// up to `buf.len()` bytes without copying them (with `MSG_PEEK`: counts
    /// them); [`MSG_ERRQUEUE`] is `EAGAIN` (the error queue is always
    /// empty); [`MSG_OOB`] is `EINVAL` (no urgent data, `ENOTCONN` on a
    /// listener); [`MSG_DONTWAIT`] and [`MSG_WAITALL`] change nothing here
    /// (this stack never blocks). Other bits are ignored, as Linux ignores
    /// them.
    pub fn recv_flags(&mut self, fd: i32, buf: &mut [u8], flags: i32) -> Result<usize, Errno> {
        self.recv_with(fd, buf, flags, true)
    }

    /// [`recv_flags`](Stack::recv_flags); with `take_error` false a pending
    /// `SO_ERROR` is returned but stays pending (for a `MSG_WAITALL` read
    /// that already has bytes to return, as Linux reports the error on the
    /// next call).
    pub(crate) fn recv_with(
        &mut self,
        fd: i32,
        buf: &mut [u8],
        flags: i32,
        take_error: bool,
    ) -> Result<usize, Errno> {
        let id = self.sock_id(fd)?;
        let core = &mut self.core;
        let entry = core.entry_mut(id)?;
        if flags & (MSG_ERRQUEUE | MSG_OOB) != 0 {
            // Linux's order: the error queue before anything else, then a
            // listener, then the (absent) urgent byte.
            if flags & MSG_ERRQUEUE != 0 {
                return Err(Errno::EAGAIN);
            }
            return Err(match entry.kind {
                Kind::Listener(_) => Errno::ENOTCONN,
                _ => Errno::EINVAL,
            });
        }
        let cid = match entry.kind {
            Kind::Conn(cid) => cid,
            _ => return Err(Errno::ENOTCONN),
        };
        let shut_rd = entry.shut_rd;
        let pending_error = entry.error;
        let prefetching = core.prefetching();
        let conn = core.conn_mut(cid).ok_or(Errno::ENOTCONN)?;
        let sock = conn.tcp_mut();
        if sock.recv_queue() > 0 && !buf.is_empty() {
            let n = match flags & (MSG_PEEK | MSG_TRUNC) {
                0 => sock.recv_slice(buf).unwrap_or(0),
                MSG_PEEK => return Ok(sock.peek_slice(buf).unwrap_or(0)),
                MSG_TRUNC => discard(sock, buf.len()),
                _ => return Ok(sock.recv_queue().min(buf.len())),
            };
            if prefetching && sock.recv_queue() == 0 {
                // Drained: the next segment's payload goes where the read
                // stopped (an empty slice there points at it).
                conn.rx_next_at = sock.peek(0).map_or(0, |rest| rest.as_ptr() as usize);
            }
            self.recv_step(cid);
            trace!(fd, bytes = n, flags, "recv");
            return Ok(n);
        }
        if let Some(e) = pending_error {
            if take_error && let Ok(entry) = core.entry_mut(id) {
                entry.error = None;
                core.refresh(id);
            }
            return Err(e);
        }
        let state = sock.state();
        if buf.is_empty() || shut_rd || fin_received(state) || state == State::Closed {
            return Ok(0);
        }
        Err(Errno::EAGAIN)
    }

    /// `send(fd, buf, 0)`: bytes queued. `EPIPE` after `shutdown(SHUT_WR)`
    /// or on a socket that never connected, `EAGAIN` while connecting or
    /// with the send buffer full, a pending `SO_ERROR` (cleared).
    pub fn send(&mut self, fd: i32, buf: &[u8]) -> Result<usize, Errno> {
        self.send_flags(fd, buf, 0)
    }

    /// `send(fd, buf, flags)`: [`send`](Stack::send) with Linux's flags.
    /// [`MSG_OOB`] is `EOPNOTSUPP` (no urgent data in this stack);
    /// [`MSG_DONTWAIT`], [`MSG_NOSIGNAL`] (no signals here) and [`MSG_MORE`]
    /// are accepted and change nothing; other bits are ignored, as Linux
    /// ignores them.
    pub fn send_flags(&mut self, fd: i32, buf: &[u8], flags: i32) -> Result<usize, Errno> {
        let id = self.sock_id(fd)?;
        if flags & MSG_OOB != 0 {
            return Err(Errno::EOPNOTSUPP);
        }
        let core = &mut self.core;
        let entry = core.entry_mut(id)?;
        if let Some(e) = entry.error.take() {
            core.refresh(id);
            return Err(e);
        }
        let cid = match entry.kind {
            Kind::Conn(cid) => cid,
            Kind::Fresh => return Err(Errno::EPIPE),
            Kind::Listener(_) => return Err(Errno::ENOTCONN),
        };
        if entry.shut_wr {
            return Err(Errno::EPIPE);
        }
        let conn = core.conn_mut(cid).ok_or(Errno::EPIPE)?;
        let sock = conn.tcp();
        match sock.state() {
            State::SynSent | State::SynReceived => return Err(Errno::EAGAIN),
            State::Established | State::CloseWait => {}
            _ => return Err(Errno::EPIPE),
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if conn.tx_start_at == 0 && sock.send_queue() == 0 {
            // Where an empty send buffer starts over: a zero-byte enqueue
            // into it shows its free space from there, changing nothing.
            let start = conn
                .tcp_mut()
                .send(|free: &mut [u8]| (0, free.as_ptr() as usize))
                .unwrap_or(0);
            conn.tx_start_at = start;
        }
        let sock = conn.tcp_mut();
        let n = sock.send_slice(buf).map_err(|_| Errno::EPIPE)?;
        if n == 0 {
            return Err(Errno::EAGAIN);
        }
        self.send_step(cid);
        trace!(fd, bytes = n, flags, "send");
        Ok(n)
    }

    /// `read(fd, buf)`: [`recv`](Stack::recv) on a socket; eventfds and
    /// pipe readers as eventpoll defines them.
    pub fn read(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
        // A socket is read by `recv` once the table is no longer borrowed.
        let basic = self.files.with_exclusive(fd, |file| match file {
            File::Socket(_) => None,
            File::Basic(BasicFile::EventFd(efd)) => Some(efd.read_bytes(buf)),
            File::Basic(BasicFile::PipeReader(r)) => Some(r.read(buf)),
            File::Basic(BasicFile::PipeWriter(_)) => Some(Err(Errno::EBADF)),
            File::Basic(_) => Some(Err(Errno::EINVAL)),
        })?;
        basic.unwrap_or_else(|| self.recv(fd, buf))
    }

    /// `write(fd, buf)`: [`send`](Stack::send) on a socket; eventfds and
    /// pipe writers as eventpoll defines them.
    pub fn write(&mut self, fd: i32, buf: &[u8]) -> Result<usize, Errno> {
        // A socket is written by `send` once the table is no longer borrowed.
        let basic = self.files.with_exclusive(fd, |file| match file {
            File::Socket(_) => None,
            File::Basic(BasicFile::EventFd(efd)) => Some(efd.write_bytes(buf)),
            File::Basic(BasicFile::PipeWriter(w)) => Some(w.write(buf)),
            File::Basic(BasicFile::PipeReader(_)) => Some(Err(Errno::EBADF)),
            File::Basic(_) => Some(Err(Errno::EINVAL)),
        })?;
        basic.unwrap_or_else(|| self.send(fd, buf))
    }

    /// `shutdown(fd, how)`. `SHUT_WR` queues our FIN (the peer sees
    /// `IN | RDHUP` and end of stream); `SHUT_RD` makes `recv` return 0.
    /// `EINVAL` (bad `how`), `ENOTCONN` (not connected).
    pub fn shutdown(&mut self, fd: i32, how: i32) -> Result<(), Errno> {
        let id = self.sock_id(fd)?;
        if !(SHUT_RD..=SHUT_RDWR).contains(&how) {
            return Err(Errno::EINVAL);
        }
        let core = &mut self.core;
        let entry = core.entry_mut(id)?;
        let cid = match entry.kind {
            Kind::Conn(cid) => cid,
            _ => return Err(Errno::ENOTCONN),
        };
        if how != SHUT_WR {
            entry.shut_rd = true;
        }
        if how != SHUT_RD {
            entry.shut_wr = true;
            if let Some(conn) = core.conn_mut(cid) {
                conn.tcp_mut().close();
            }
        }
        trace!(fd, how, "shutdown");
        self.user_step(cid);
        Ok(())
    }

    /// `close(fd)`. When the last descriptor of a socket closes, its
    /// connection is closed gracefully (FIN), or reset if unread data is
    /// left, as Linux does; its epoll registrations go with it.
    pub fn close(&mut self, fd: i32) -> Result<(), Errno> {
        self.files.close(fd)?;
        trace!(fd, "close");
        self.core.reap();
        Ok(())
    }

    /// `close(fd)` for the threaded mode's `SO_LINGER`: when `fd` is the
    /// last descriptor of a connected socket with a linger time and no
    /// unread data, its FIN is queued and the descriptor closed, but the
    /// socket is kept alive and returned with the time to wait: the caller
    /// waits on its queue until [`linger_done`](Stack::linger_done) holds
    /// or the time is up, then drops it (the reaper then orphans the
    /// connection as any close does). Any other case is a plain
    /// [`close`](Stack::close), and returns `None`.
    pub(crate) fn close_lingering(
        &mut self,
        fd: i32,
    ) -> Result<Option<(Arc<Socket>, std::time::Duration)>, Errno> {
        self.core.reap();
        let socket = match self.files.get(fd)? {
            File::Socket(s) => s,
            File::Basic(_) => return self.close(fd).map(|()| None),
        };
        // One reference in the table, one here: no other descriptor (a
        // `dup`) and no call holds the socket, so this close releases it.
        let last = Arc::strong_count(&socket) == 2;
        let core = &mut self.core;
        let plan = match core.entry(socket.id()) {
            Ok(entry) => match (&entry.kind, &entry.opts.linger) {
                (Kind::Conn(cid), Some(secs)) if *secs > 0 && last => {
                    core.conn(*cid).and_then(|c| {
                        let sock = c.tcp();
                        let state = sock.state();
                        let lingers = matches!(state, State::Established | State::CloseWait)
                            || fin_unacked(state);
                        (lingers && sock.recv_queue() == 0)
                            .then_some((*cid, std::time::Duration::from_secs(u64::from(*secs))))
                    })
                }
                _ => None,
            },
            Err(_) => None,
        };
        let Some((cid, wait)) = plan else {
            drop(socket);
            return self.close(fd).map(|()| None);
        };
        self.files.close(fd)?;
        let core = &mut self.core;
        if let Ok(entry) = core.entry_mut(socket.id()) {
            entry.lingering = true;
        }
        // Threads blocked on the socket through the closed descriptor
        // fail with `EBADF`, as after any last close.
        socket.wait_queue().wake_all(Events::empty());
        if let Some(conn) = core.conn_mut(cid) {
            conn.tcp_mut().close();
        }
        trace!(
            fd,
            secs = wait.as_secs(),
            "close: SO_LINGER waits for the FIN's ACK"
        );
        self.user_step(cid);
        Ok(Some((socket, wait)))
    }

    /// Whether a lingering close of `socket` may return: its FIN is
    /// acknowledged, or the connection is gone or failed.
    pub(crate) fn linger_done(&self, socket: &Socket) -> bool {
        let core = &self.core;
        let Ok(entry) = core.entry(socket.id()) else {
            return true;
        };
        match entry.kind {
            Kind::Conn(cid) => {
                entry.error.is_some()
                    || core.conn(cid).is_none_or(|c| !fin_unacked(c.tcp().state()))
            }
            _ => true,
        }
    }

    /// `dup(fd)`: a new number for the same description.
    pub fn dup(&mut self, fd: i32) -> Result<i32, Errno> {
        self.files.dup(fd)
    }

    /// `fcntl(fd, cmd, arg)` for `F_GETFL`, `F_SETFL` (only `O_NONBLOCK`
    /// is kept), `F_GETFD` and `F_SETFD` (`FD_CLOEXEC`). `EINVAL` for other
    /// commands.
    pub fn fcntl(&mut self, fd: i32, cmd: i32, arg: i32) -> Result<i32, Errno> {
        let file = self.files.get(fd)?;
        match cmd {
            F_GETFD => Ok(if self.files.cloexec(fd)? {
                FD_CLOEXEC
            } else {
                0
            }),
            F_SETFD => {
                self.files.set_cloexec(fd, arg & FD_CLOEXEC != 0)?;
                Ok(0)
            }
            F_GETFL => {
                let nonblocking = match &file {
                    File::Socket(s) => s.is_nonblocking(),
                    File::Basic(BasicFile::EventFd(e)) => e.is_nonblocking(),
                    File::Basic(BasicFile::PipeReader(r)) => r.is_nonblocking(),
                    File::Basic(BasicFile::PipeWriter(w)) => w.is_nonblocking(),
                    File::Basic(_) => false,
                };
                let access = match &file {
                    File::Basic(BasicFile::PipeWriter(_)) => 1,
                    File::Basic(BasicFile::PipeReader(_)) => 0,
                    _ => 2,
                };
                Ok(access | if nonblocking { O_NONBLOCK } else { 0 })
            }
            F_SETFL => {
                let nb = arg & O_NONBLOCK != 0;
                match &file {
                    File::Socket(s) => s.set_nonblocking(nb),
                    File::Basic(BasicFile::EventFd(e)) => e.set_nonblocking(nb),
                    File::Basic(BasicFile::PipeReader(r)) => r.set_nonblocking(nb),
                    File::Basic(BasicFile::PipeWriter(w)) => w.set_nonblocking(nb),
                    File::Basic(_) => {}
                }
                Ok(0)
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// `getsockopt(fd, level, name)` for `SO_ERROR` (read and cleared),
    /// `SO_REUSEADDR`, `SO_KEEPALIVE`, `SO_RCVBUF`, `SO_SNDBUF` and
    /// `TCP_NODELAY`; `EINVAL` for `SO_LINGER` (a struct:
    /// [`getsockopt_linger`](Stack::getsockopt_linger)); [`Errno::ENOPROTOOPT`]
    /// for any other option.
    pub fn getsockopt(&mut self, fd: i32, level: i32, name: i32) -> Result<i32, Errno> {
        let id = self.sock_id(fd)?;
        let core = &mut self.core;
        let default = core.buffer_size;
        let entry = core.entry_mut(id)?;
        let size = |v: Option<usize>| i32::try_from(v.unwrap_or(default)).unwrap_or(i32::MAX);
        let value = match (level, name) {
            (SOL_SOCKET, SO_ERROR) => {
                let e = entry.error.take().map_or(0, Errno::raw);
                core.refresh(id);
                e
            }
            (SOL_SOCKET, SO_REUSEADDR) => i32::from(entry.opts.reuseaddr),
            (SOL_SOCKET, SO_KEEPALIVE) => i32::from(entry.opts.keepalive),
            (SOL_SOCKET, SO_RCVBUF) => size(entry.opts.rcvbuf),
            (SOL_SOCKET, SO_SNDBUF) => size(entry.opts.sndbuf),
            (IPPROTO_TCP, TCP_NODELAY) => i32::from(entry.opts.nodelay),
            (SOL_SOCKET, SO_LINGER) => return Err(Errno::EINVAL),
            _ => return Err(Errno::ENOPROTOOPT),
        };
        Ok(value)
    }

    /// `setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger)`: `None` is
    /// `l_onoff = 0`, `Some(t)` is `l_onoff = 1, l_linger = t` in whole
    /// seconds (fractions are dropped, as Linux's field holds seconds).
    ///
    /// With zero, the last close of a connection resets it (RST, no FIN,
    /// no TIME-WAIT), as on Linux. With more, the threaded mode's
    /// [`Net::close`](crate::Net::close) waits up to that long for the
    /// FIN's ACK; this run-to-completion stack cannot block, so its
    /// [`close`](Stack::close) returns at once and the FIN goes out in the
    /// background as without the option. Accepted sockets inherit it from
    /// their listener.
    pub fn setsockopt_linger(
        &mut self,
        fd: i32,
        linger: Option<std::time::Duration>,
    ) -> Result<(), Errno> {
        let id = self.sock_id(fd)?;
        let entry = self.core.entry_mut(id)?;
        entry.opts.linger = linger.map(|t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX));
        Ok(())
    }

    /// `getsockopt(fd, SOL_SOCKET, SO_LINGER)`: `None` when off, else the
    /// time in whole seconds.
    pub fn getsockopt_linger(&mut self, fd: i32) -> Result<Option<std::time::Duration>, Errno> {
        let id = self.sock_id(fd)?;
        let entry = self.core.entry(id)?;
        Ok(entry
            .opts
            .linger
            .map(|s| std::time::Duration::from_secs(u64::from(s))))
    }

    /// `setsockopt(fd, level, name, value)` for `TCP_NODELAY`,
    /// `SO_KEEPALIVE`, `SO_REUSEADDR`, `SO_RCVBUF` and `SO_SNDBUF` (buffer
    /// sizes apply to connections made after the call, clamped to
    /// [`MIN_BUFFER`]..=[`MAX_BUFFER`]); `EINVAL` for `SO_LINGER`, whose
    /// value is a struct ([`setsockopt_linger`](Stack::setsockopt_linger);
    /// Linux too refuses an `int` for it); [`Errno::ENOPROTOOPT`] for any
    /// other option.
    pub fn setsockopt(&mut self, fd: i32, level: i32, name: i32, value: i32) -> Result<(), Errno> {
        let id = self.sock_id(fd)?;
        let core = &mut self.core;
        let entry = core.entry_mut(id)?;
        let on = value != 0;
        let size = usize::try_from(value)
            .unwrap_or(0)
            .clamp(MIN_BUFFER, MAX_BUFFER);
        match (level, name) {
            (SOL_SOCKET, SO_REUSEADDR) => entry.opts.reuseaddr = on,
            (SOL_SOCKET, SO_KEEPALIVE) => entry.opts.keepalive = on,
            (SOL_SOCKET, SO_RCVBUF) => entry.opts.rcvbuf = Some(size),
            (SOL_SOCKET, SO_SNDBUF) => entry.opts.sndbuf = Some(size),
            (IPPROTO_TCP, TCP_NODELAY) => entry.opts.nodelay = on,
            (SOL_SOCKET, SO_LINGER) => return Err(Errno::EINVAL),
            _ => return Err(Errno::ENOPROTOOPT),
        }
        let opts = entry.opts;
        if let Kind::Conn(cid) = entry.kind
            && let Some(conn) = core.conn_mut(cid)
        {
            apply_opts(conn, &opts);
            core.mark_dirty(cid);
        }
        Ok(())
    }

    /// `getsockname(fd)`: the local address (`0.0.0.0:0` when unbound).
    pub fn getsockname(&mut self, fd: i32) -> Result<SocketAddrV4, Errno> {
        let id = self.sock_id(fd)?;
        let core = &self.core;
        let entry = core.entry(id)?;
        Ok(match &entry.kind {
            Kind::Conn(cid) => core
                .conn(*cid)
                .map_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0), |c| {
                    c.tuple.local
                }),
            Kind::Listener(l) => SocketAddrV4::new(l.addr, l.port),
            Kind::Fresh => entry
                .bound
                .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
        })
    }

    /// `getpeername(fd)`. `ENOTCONN` unless connected (or connecting).
    pub fn getpeername(&mut self, fd: i32) -> Result<SocketAddrV4, Errno> {
        let id = self.sock_id(fd)?;
        let core = &self.core;
        match core.entry(id)?.kind {
            Kind::Conn(cid) => match core.conn(cid) {
                Some(c) if c.tcp().state() != State::Closed => Ok(c.tuple.remote),
                _ => Err(Errno::ENOTCONN),
            },
            _ => Err(Errno::ENOTCONN),
        }
    }

    // ---- epoll and other descriptors ------------------------------------

    /// `epoll_create1(flags)`.
    pub fn epoll_create1(&mut self, flags: i32) -> Result<i32, Errno> {
        self.files.epoll_create1(flags)
    }

    /// `epoll_ctl(epfd, op, fd, event)` with Linux's errno order.
    pub fn epoll_ctl(
        &mut self,
        epfd: i32,
        op: i32,
        fd: i32,
        event: Option<&EpollEvent>,
    ) -> Result<(), Errno> {
        self.files.epoll_ctl_exclusive(epfd, op, fd, event)
    }

    /// `epoll_wait(epfd, events, maxevents, timeout_ms)`. In
    /// run-to-completion use pass a zero timeout: nothing else advances the
    /// stack while this call blocks.
    pub fn epoll_wait(
        &mut self,
        epfd: i32,
        events: &mut [EpollEvent],
        maxevents: i32,
        timeout_ms: i32,
    ) -> Result<usize, Errno> {
        let n = self
            .files
            .epoll_wait_exclusive(epfd, events, maxevents, timeout_ms)?;
        if cfg!(feature = "trace")
            && tracing::enabled!(tracing::Level::TRACE)
            && let Ok(file) = self.files.get(epfd)
            && let Some(ep) = eventpoll::FileDescription::event_poll(&file)
        {
            // eventpoll keeps its own counters; the totals so far show the
            // callbacks, enqueues and dedupe hits behind this harvest.
            let c = ep.counters();
            trace!(
                epfd,
                events = n,
                callbacks = c.callbacks,
                enqueues = c.enqueues,
                dedupe_hits = c.dedupe_hits,
                stale_drops = c.stale_drops,
                "epoll_wait harvest"
            );
        }
        Ok(n)
    }

    /// `eventfd(initval, flags)`.
    pub fn eventfd(&mut self, initval: u32, flags: i32) -> Result<i32, Errno> {
        let flags = EfdFlags::from_bits(flags).ok_or(Errno::EINVAL)?;
        let efd = EventFd::with_flags(u64::from(initval), flags)?;
        self.files.insert(
            File::Basic(BasicFile::EventFd(efd)),
            flags.contains(EfdFlags::CLOEXEC),
        )
    }

    /// `pipe2(flags)` with `O_NONBLOCK` and `O_CLOEXEC`: `[read, write]`.
    pub fn pipe2(&mut self, flags: i32) -> Result<[i32; 2], Errno> {
        if flags & !(O_NONBLOCK | O_CLOEXEC) != 0 {
            return Err(Errno::EINVAL);
        }
        let (r, w) = eventpoll::pipe(PIPE_DEFAULT_CAPACITY);
        let nb = flags & O_NONBLOCK != 0;
        r.set_nonblocking(nb);
        w.set_nonblocking(nb);
        let cloexec = flags & O_CLOEXEC != 0;
        let rfd = self
            .files
            .insert(File::Basic(BasicFile::PipeReader(r)), cloexec)?;
        match self
            .files
            .insert(File::Basic(BasicFile::PipeWriter(w)), cloexec)
        {
            Ok(wfd) => Ok([rfd, wfd]),
            Err(e) => {
                self.files.close(rfd)?;
                Err(e)
            }
        }
    }

    /// The readiness of `fd` now, as `poll(2)` would report it.
    pub fn poll_fd(&self, fd: i32) -> Result<Events, Errno> {
        eventpoll::FileDescription::pollable(&self.files.get(fd)?)
            .map_or(Err(Errno::EPERM), |p| Ok(p.poll()))
    }

    /// The file description behind `fd` (`EBADF` if none), for drivers
    /// that wait on its wait queue (the threaded mode).
    pub fn file(&self, fd: i32) -> Result<File, Errno> {
        self.files.get(fd)
    }

    /// Closes every descriptor, as a process exit does: sockets close
    /// (FIN, or RST with unread data) at the next [`poll`](Stack::poll),
    /// epolls drop their registrations.
    pub fn close_all(&mut self) {
        self.files.clear();
        self.core.reap();
        // Sockets whose descriptor is gone already but whose close still
        // waits (a threaded `SO_LINGER`): wake those closes, so that they
        // see the stack shut down instead of waiting out their time.
        for slot in &self.core.socks {
            if let Some(entry) = &slot.entry
                && entry.lingering
            {
                entry.events.wait_queue().wake_all(Events::empty());
            }
        }
    }

    // ---- helpers ------------------------------------------------------------

    pub(super) fn sock_id(&mut self, fd: i32) -> Result<SockId, Errno> {
        self.core.reap();
        self.files.with_exclusive(fd, |file| match file {
            File::Socket(s) => Ok(s.id()),
            File::Basic(_) => Err(Errno::ENOTSOCK),
        })?
    }

    fn install(
        &mut self,
        kind: Kind,
        opts: Opts,
        nonblocking: bool,
        cloexec: bool,
    ) -> Result<i32, Errno> {
        let core = &mut self.core;
        let index = match core.free_socks.pop() {
            Some(i) => i,
            None => {
                let i = u32::try_from(core.socks.len()).map_err(|_| Errno::ENFILE)?;
                core.socks.push(SockSlot {
                    generation: core.retired_generation,
                    entry: None,
                });
                core.sock_mark.grew(core.socks.len());
                i
            }
        };
        let slot = &mut core.socks[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let id = SockId {
            index,
            generation: slot.generation,
        };
        let (socket, events) = Socket::new(id, nonblocking, Events::empty(), core.reaper.clone());
        slot.entry = Some(SockEntry {
            events,
            kind,
            opts,
            bound: None,
            error: None,
            shut_rd: false,
            shut_wr: false,
            lingering: false,
        });
        core.sock_count += 1;
        core.refresh(id);
        match self.files.insert(File::Socket(Arc::new(socket)), cloexec) {
            Ok(fd) => Ok(fd),
            Err(e) => {
                // The socket dropped and posted itself to the reaper; take
                // the entry back without closing the connection it was
                // meant for (the caller does that).
                let core = &mut self.core;
                if let Some(slot) = core.socks.get_mut(index as usize) {
                    slot.entry = None;
                }
                core.free_socks.push(index);
                core.sock_count -= 1;
                core.reaper.forget(id);
                Err(e)
            }
        }
    }
}

fn entry_never_connected(core: &Core, cid: ConnId) -> bool {
    core.conn(cid)
        .is_some_and(|c| c.last.state == State::Closed)
}

fn conn_set_owner(core: &mut Core, cid: ConnId, sock: SockId) {
    let events_at = core
        .entry(sock)
        .map_or(0, |entry| Arc::as_ptr(&entry.events) as usize);
    if let Some(conn) = core.conn_mut(cid) {
        conn.sock = Some(sock);
        conn.events_at = events_at;
    }
}

/// Drops up to `len` queued bytes from `sock`'s receive buffer without
/// copying them (`MSG_TRUNC`); the buffer is a ring, so the bytes may lie
/// in two runs. Returns how many went.
fn discard(sock: &mut tcp::Socket<'static>, len: usize) -> usize {
    let mut dropped = 0;
    while dropped < len {
        let want = len - dropped;
        match sock.recv(|run: &mut [u8]| {
            let n = run.len().min(want);
            (n, n)
        }) {
            Ok(0) | Err(_) => break,
            Ok(n) => dropped += n,
        }
    }
    dropped
}
