//! The threaded mode: two stacks, each on its own `NetThread`, joined by an
//! in-memory link, called from many application threads.
//!
//! - a thread-per-connection blocking echo server with 100 clients;
//! - four workers sharing one epoll (`EPOLLEXCLUSIVE` listener,
//!   `EPOLLONESHOT` connections re-armed with `MOD`), and four workers with
//!   an epoll each on one `EPOLLEXCLUSIVE` listener;
//! - `close` of a descriptor while another thread is blocked on it;
//! - `epoll_wait`, `SO_RCVTIMEO` and `SO_SNDTIMEO` timeouts (never early;
//!   late only within a generous bound for a loaded 2-core machine);
//! - shutdown with live connections and callers blocked in `recv`,
//!   `accept`, `connect` and `epoll_wait`;
//! - a connect/echo/close stress loop across threads, 1,000 rounds
//!   (`USERTCP_THREADED_STRESS` sets another count).
//! - a device that cannot take a frame: the stack thread sleeps for
//!   `POLLOUT` instead of spinning, and wakes when the device has room;
//! - `SO_LINGER`: the last close waits for the FIN's ACK (woken by it, not
//!   by its time), gives up after its time, and resets with zero.
//!
//! Every blocked thread is released by the test or by a bounded timeout;
//! nothing can hang forever (the `MUST` bound).
//!
//! Run: `cargo test -p netstack --test threaded` (about a second in debug).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use eventpoll::{EpollEvent, Errno, Events};
use netdev::Link;
use netstack::{
    AF_INET, Epoll, MSG_DONTWAIT, MSG_WAITALL, Net, NetThread, SO_RCVTIMEO, SO_SNDTIMEO,
    SOCK_NONBLOCK, SOCK_STREAM, StackConfig, TcpListener, TcpStream, ThreadOptions,
};

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// An address on the link that nobody answers.
const NOBODY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
/// Upper bound for anything that must happen.
const MUST: Duration = Duration::from_secs(20);

/// A server and a client stack, each on its own thread.
fn pair() -> (Net, Net) {
    pair_with(ThreadOptions::default())
}

/// The pair with every packet received by the stack threads (no ingress
/// on the sending thread).
fn pair_stack_threads_only() -> (Net, Net) {
    pair_with(ThreadOptions {
        sender_receives: false,
    })
}

fn pair_with(options: ThreadOptions) -> (Net, Net) {
    let (a, b) = Link::pair(1500);
    let mut sc = StackConfig::new(SERVER, 15);
    sc.seed = Some(1);
    let mut cc = StackConfig::new(CLIENT, 15);
    cc.seed = Some(2);
    (
        NetThread::spawn_with(a, sc, options).unwrap(),
        NetThread::spawn_with(b, cc, options).unwrap(),
    )
}

fn addr(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// The scheduler state letter of thread `tid` of this process.
fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn current_tid() -> i32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// Waits until thread `tid` is asleep (state `S` twice, 5 ms apart).
fn wait_until_asleep(tid: i32) {
    let deadline = Instant::now() + MUST;
    loop {
        if thread_state(tid) == Some('S') {
            thread::sleep(Duration::from_millis(5));
            if thread_state(tid) == Some('S') {
                return;
            }
        }
        assert!(Instant::now() < deadline, "thread {tid} never slept");
        thread::sleep(Duration::from_millis(1));
    }
}

/// True once thread `tid` has left `/proc` (a joined thread may show there
/// for a moment while the kernel reaps it).
fn gone(tid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while thread_state(tid).is_some() {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Spawns `f` on a thread and returns its handle and kernel tid.
fn spawn_tid<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> (thread::JoinHandle<T>, i32) {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        tx.send(current_tid()).unwrap();
        f()
    });
    (h, rx.recv_timeout(MUST).unwrap())
}

/// Joins `h`, failing if it takes longer than `MUST`.
fn join_within<T: Send + 'static>(h: thread::JoinHandle<T>) -> T {
    let deadline = Instant::now() + MUST;
    while !h.is_finished() {
        assert!(
            Instant::now() < deadline,
            "a blocked thread was not released"
        );
        thread::sleep(Duration::from_millis(2));
    }
    h.join().unwrap()
}

/// A blocking echo client round: write `msg`, read the same back.
fn echo_round(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// Serves one connection: echo until end of stream.
fn echo_conn(mut s: TcpStream) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => {
                s.write_all(&buf[..n]).unwrap();
                total += n;
            }
            Err(e) => panic!("server read: {e}"),
        }
    }
}

#[test]
fn thread_per_connection_echo_serves_100_clients() {
    echo_100(pair());
}

#[test]
fn thread_per_connection_echo_serves_100_clients_through_stack_threads_only() {
    let (server, client) = pair_stack_threads_only();
    echo_100((server.clone(), client.clone()));
    for net in [server, client] {
        let stats = net.thread_stats();
        assert_eq!(stats.sender_received, 0, "{stats:?}");
        assert!(stats.wakeups > 0, "{stats:?}");
    }
}

fn echo_100((server, client): (Net, Net)) {
    let listener = TcpListener::bind(&server, addr(SERVER, 7)).unwrap();
    const CLIENTS: usize = 100;
    let acceptor = thread::spawn(move || {
        let mut handlers = Vec::new();
        for _ in 0..CLIENTS {
            let (s, peer) = listener.accept().unwrap();
            assert_eq!(*peer.ip(), CLIENT);
            handlers.push(thread::spawn(move || echo_conn(s)));
        }
        handlers
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = client.clone();
            thread::spawn(move || {
                let mut s = TcpStream::connect(&client, addr(SERVER, 7)).unwrap();
                assert_eq!(s.peer_addr().unwrap(), addr(SERVER, 7));
                let mut sent = 0;
                for round in 0..10 {
                    let len = 1 + (i * 37 + round * 101) % 3000;
                    let msg: Vec<u8> = (0..len).map(|k| (k + i + round) as u8).collect();
                    echo_round(&mut s, &msg);
                    sent += len;
                }
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
                sent
            })
        })
        .collect();
    let sent: usize = clients.into_iter().map(join_within).sum();
    let echoed = join_within(acceptor);
    assert_eq!(sent, echoed);
}

/// Echo clients for the epoll tests: `conns` connections, `rounds` rounds.
fn run_clients(client: &Net, port: u16, conns: usize, rounds: usize) {
    let handles: Vec<_> = (0..conns)
        .map(|i| {
            let client = client.clone();
            thread::spawn(move || {
                let mut s = TcpStream::connect(&client, addr(SERVER, port)).unwrap();
                for r in 0..rounds {
                    let msg = format!("conn {i} round {r}").into_bytes();
                    echo_round(&mut s, &msg);
                }
            })
        })
        .collect();
    for h in handles {
        join_within(h);
    }
}

/// Four workers on one epoll: the listener `EXCLUSIVE`, connections
/// `ONESHOT`, re-armed with `MOD` after each read. No connection is ever
/// served by two workers at once, and every message is echoed.
#[test]
fn four_workers_share_one_epoll_exclusive_listener_oneshot_connections() {
    let (server, client) = pair();
    let listener = TcpListener::bind(&server, addr(SERVER, 8)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let ep = Arc::new(Epoll::new(&server).unwrap());
    let lfd = listener.fd();
    ep.add(lfd, Events::IN | Events::EXCLUSIVE, u64::MAX)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // One "being served" flag per descriptor number.
    let busy: Arc<Vec<AtomicBool>> = Arc::new((0..4096).map(|_| AtomicBool::new(false)).collect());
    let overlaps = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (server, ep, stop, busy, overlaps, served) = (
                server.clone(),
                ep.clone(),
                stop.clone(),
                busy.clone(),
                overlaps.clone(),
                served.clone(),
            );
            thread::spawn(move || {
                let mut events = [EpollEvent::default(); 8];
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    let n = ep
                        .wait(&mut events, Some(Duration::from_millis(20)))
                        .unwrap();
                    for e in &events[..n] {
                        if e.data == u64::MAX {
                            loop {
                                match server.accept4(lfd, SOCK_NONBLOCK) {
                                    Ok((fd, _)) => {
                                        ep.add(fd, Events::IN | Events::ONESHOT, fd as u64).unwrap()
                                    }
                                    Err(Errno::EAGAIN) => break,
                                    Err(e) => panic!("accept: {e:?}"),
                                }
                            }
                            continue;
                        }
                        let fd = e.data as i32;
                        if busy[fd as usize].swap(true, Ordering::SeqCst) {
                            overlaps.fetch_add(1, Ordering::SeqCst);
                        }
                        // Give a wrongly delivered second event time to
                        // show up in another worker.
                        thread::yield_now();
                        let mut closed = false;
                        loop {
                            match server.recv(fd, &mut buf) {
                                Ok(0) => {
                                    closed = true;
                                    break;
                                }
                                Ok(n) => {
                                    assert_eq!(server.send(fd, &buf[..n]), Ok(n));
                                    served.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(Errno::EAGAIN) => break,
                                Err(Errno::ECONNRESET) => {
                                    closed = true;
                                    break;
                                }
                                Err(e) => panic!("recv: {e:?}"),
                            }
                        }
                        busy[fd as usize].store(false, Ordering::SeqCst);
                        if closed {
                            server.close(fd).unwrap();
                        } else {
                            ep.modify(fd, Events::IN | Events::ONESHOT, fd as u64)
                                .unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    run_clients(&client, 8, 16, 30);
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        join_within(w);
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "ONESHOT let two workers serve one connection"
    );
    assert!(served.load(Ordering::SeqCst) >= 16, "nothing was served");
}

/// Four workers, an epoll each, one listener registered `EXCLUSIVE` in all
/// four: every connection is accepted exactly once, and the workers are
/// woken one per connection (so more than one worker gets some).
#[test]
fn four_exclusive_epolls_on_one_listener_accept_each_connection_once() {
    let (server, client) = pair();
    let listener = TcpListener::bind(&server, addr(SERVER, 9)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let lfd = listener.fd();
    const CONNS: usize = 40;
    let accepted = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(5));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (server, accepted, barrier) = (server.clone(), accepted.clone(), barrier.clone());
            thread::spawn(move || {
                let ep = Epoll::new(&server).unwrap();
                ep.add(lfd, Events::IN | Events::EXCLUSIVE, 0).unwrap();
                barrier.wait();
                let mut mine = Vec::new();
                let mut events = [EpollEvent::default(); 4];
                let deadline = Instant::now() + MUST;
                while accepted.load(Ordering::SeqCst) < CONNS && Instant::now() < deadline {
                    if ep
                        .wait(&mut events, Some(Duration::from_millis(20)))
                        .unwrap()
                        == 0
                    {
                        continue;
                    }
                    loop {
                        match server.accept4(lfd, 0) {
                            Ok((fd, _)) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                                mine.push(fd);
                            }
                            Err(Errno::EAGAIN) => break,
                            Err(e) => panic!("accept: {e:?}"),
                        }
                    }
                }
                mine
            })
        })
        .collect();
    barrier.wait();
    let conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| TcpStream::connect(&client, addr(SERVER, 9)).unwrap())
        .collect();
    let mut all: Vec<i32> = Vec::new();
    for w in workers {
        all.extend(join_within(w));
    }
    assert_eq!(all.len(), CONNS);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), CONNS, "a descriptor was accepted twice");
    drop(conns);
}

#[test]
fn close_while_another_thread_blocks_in_recv_fails_it_with_ebadf() {
    let (server, client) = pair();
    let listener = TcpListener::bind(&server, addr(SERVER, 10)).unwrap();
    let c = TcpStream::connect(&client, addr(SERVER, 10)).unwrap();
    let (s, _) = listener.accept().unwrap();
    let fd = c.fd();
    let net = client.clone();
    let (h, tid) = spawn_tid(move || {
        let mut buf = [0u8; 16];
        net.recv(fd, &mut buf)
    });
    wait_until_asleep(tid);
    // Close the descriptor under the blocked thread (not through the
    // stream, whose drop would close it again).
    std::mem::forget(c);
    client.close(fd).unwrap();
    assert_eq!(join_within(h), Err(Errno::EBADF));
    // The connection was closed: the peer sees end of stream, and both
    // stacks go on working.
    let mut buf = [0u8; 4];
    assert_eq!((&s).read(&mut buf).unwrap(), 0);
    let mut again = TcpStream::connect(&client, addr(SERVER, 10)).unwrap();
    let (s2, _) = listener.accept().unwrap();
    (&s2).write_all(b"ok").unwrap();
    again.read_exact(&mut buf[..2]).unwrap();
    assert_eq!(&buf[..2], b"ok");
}

#[test]
fn close_while_another_thread_blocks_in_accept_fails_it_with_ebadf() {
    let (server, _client) = pair();
    let fd = server.socket(AF_INET, SOCK_STREAM, 0).unwrap();
    server.bind(fd, addr(SERVER, 11)).unwrap();
    server.listen(fd, 8).unwrap();
    let net = server.clone();
    let (h, tid) = spawn_tid(move || net.accept4(fd, 0));
    wait_until_asleep(tid);
    server.close(fd).unwrap();
    assert_eq!(join_within(h).unwrap_err(), Errno::EBADF);
}

#[test]
fn dup_keeps_a_blocked_recv_alive_until_the_last_descriptor_closes() {
    let (server, client) = pair();
    let listener = TcpListener::bind(&server, addr(SERVER, 12)).unwrap();
    let c = TcpStream::connect(&client, addr(SERVER, 12)).unwrap();
    let (s, _) = listener.accept().unwrap();
    let fd2 = client.dup(c.fd()).unwrap();
    let net = client.clone();
    let fd = c.fd();
    let (h, tid) = spawn_tid(move || {
        let mut buf = [0u8; 16];
        net.recv(fd, &mut buf).map(|n| buf[..n].to_vec())
    });
    wait_until_asleep(tid);
    client.close(fd2).unwrap();
    thread::sleep(Duration::from_millis(20));
    assert!(!h.is_finished(), "closing a dup must not end the recv");
    (&s).write_all(b"hi").unwrap();
    assert_eq!(join_within(h), Ok(b"hi".to_vec()));
}

#[test]
fn nonblocking_socket_returns_eagain_at_once() {
    let (server, client) = pair();
    let _listener = TcpListener::bind(&server, addr(SERVER, 13)).unwrap();
    let c = TcpStream::connect(&client, addr(SERVER, 13)).unwrap();
    c.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 8];
    let e = (&c).read(&mut buf).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(Errno::EAGAIN.raw()));
    let fd = client
        .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
        .unwrap();
    assert_eq!(
        client.connect(fd, addr(NOBODY, 80)),
        Err(Errno::EINPROGRESS)
    );
    assert_eq!(client.connect(fd, addr(NOBODY, 80)), Err(Errno::EALREADY));
}

/// `elapsed` is not below `t` and not far above it.
fn assert_timed(elapsed: Duration, t: Duration) {
    assert!(elapsed >= t, "returned early: {elapsed:?} < {t:?}");
    assert!(
        elapsed < t + Duration::from_secs(2),
        "returned late: {elapsed:?} for {t:?}"
    );
}

#[test]
fn epoll_wait_timeout_is_never_early() {
    let (server, _client) = pair();
    let ep = Epoll::new(&server).unwrap();
    let listener = TcpListener::bind(&server, addr(SERVER, 14)).unwrap();
    ep.add(listener.fd(), Events::IN, 1).unwrap();
    let mut events = [EpollEvent::default(); 4];
    for ms in [1u64, 10, 50, 200] {
        let t = Duration::from_millis(ms);
        let start = Instant::now();
        assert_eq!(ep.wait(&mut events, Some(t)).unwrap(), 0);
        assert_timed(start.elapsed(), t);
    }
    let start = Instant::now();
    assert_eq!(server.epoll_wait(ep.fd(), &mut events, 4, 30), Ok(0));
    assert_timed(start.elapsed(), Duration::from_millis(30));
    assert_eq!(server.epoll_wait(ep.fd(), &mut events, 4, 0), Ok(0));
}

#[test]
fn epoll_wait_wakes_on_a_connection_from_the_other_stack() {
    let (server, client) = pair();
    let ep = Epoll::new(&server).unwrap();
    let listener = TcpListener::bind(&server, addr(SERVER, 15)).unwrap();
    ep.add(listener.fd(), Events::IN, 7).unwrap();
    let net = server.clone();
    let epfd = ep.fd();
    let (h, tid) = spawn_tid(move || {
        let mut events = [EpollEvent::default(); 4];
        let n = net.epoll_wait(epfd, &mut events, 4, -1).unwrap();
        (n, events[0].data)
    });
    wait_until_asleep(tid);
    let _c = TcpStream::connect(&client, addr(SERVER, 15)).unwrap();
    assert_eq!(join_within(h), (1, 7));
}

#[test]
fn so_rcvtimeo_ends_a_blocking_recv_with_eagain() {
    let (server, client) = pair();
    let listener = TcpListener::bind(&server, addr(SERVER, 16)).unwrap();
    let c = TcpStream::connect(&client, addr(SERVER, 16)).unwrap();
    let (_s, _) = listener.accept().unwrap();
    c.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert_eq!(c.read_timeout().unwrap(), Some(Duration::from_millis(100)));
    let start = Instant::now();
    let e = (&c).read(&mut [0u8; 8]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
    assert_timed(start.elapsed(), Duration::from_millis(100));
    // Accept times out too.
    listener
        .set_accept_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    assert_eq!(
        listener.accept().unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    assert_timed(start.elapsed(), Duration::from_millis(50));
    assert!(c.set_read_timeout(Some(Duration::ZERO)).is_err());
}

#[test]
fn so_sndtimeo_ends_a_blocked_send_with_the_bytes_queued() {
    let (server, client) = pair();
    let listener = TcpListener::bind(&server, addr(SERVER, 17)).unwrap();
    let c = TcpStream::connect(&client, addr(SERVER, 17)).unwrap();
    let (s, _) = listener.accept().unwrap();
    c.set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // The server never reads: its receive buffer and our send buffer fill.
    let big = vec![7u8; 1 << 20];
    let start = Instant::now();
    let n = client.send(c.fd(), &big).unwrap();
    assert!(n > 0 && n < big.len(), "sent {n}");
    assert_timed(start.elapsed(), Duration::from_millis(100));
    // Now nothing fits: EAGAIN after the timeout.
    let start = Instant::now();
    assert_eq!(client.send(c.fd(), &big), Err(Errno::EAGAIN));
    assert_timed(start.elapsed(), Duration::from_millis(100));
    assert_eq!(
        client.timeout(c.fd(), SO_SNDTIMEO),
        Ok(Some(Duration::from_millis(100)))
    );
    assert_eq!(client.timeout(c.fd(), SO_RCVTIMEO), Ok(None));
    // Draining the server lets a blocked send finish.
    c.set_write_timeout(None).unwrap();
    let reader = thread::spawn(move || {
        let mut total = 0;
        let mut buf = vec![0u8; 65536];
        loop {
            match (&s).read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(k) => total += k,
            }
        }
    });
    assert_eq!(client.send(c.fd(), &big), Ok(big.len()));
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(join_within(reader), n + big.len());
}

#[test]
fn blocking_connect_to_a_closed_port_is_refused() {
    let (_server, client) = pair();
    let e = TcpStream::connect(&client, addr(SERVER, 4444)).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(Errno::ECONNREFUSED.raw()));
    let start = Instant::now();
    let e = TcpStream::connect_timeout(&client, addr(NOBODY, 80), Duration::from_millis(80))
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert_timed(start.elapsed(), Duration::from_millis(80));
}

#[test]
fn shutdown_closes_connections_and_releases_every_blocked_caller() {
    let (server, client) = pair();
    let listener = TcpListener::bind(&server, addr(SERVER, 18)).unwrap();
    let conns: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&client, addr(SERVER, 18)).unwrap())
        .collect();
    let accepted: Vec<TcpStream> = (0..3).map(|_| listener.accept().unwrap().0).collect();
    let ep = Epoll::new(&client).unwrap();
    ep.add(conns[0].fd(), Events::IN, 0).unwrap();
    let mut blocked = Vec::new();
    // recv on each connection.
    for c in &conns {
        let (net, fd) = (client.clone(), c.fd());
        blocked.push(spawn_tid(move || net.recv(fd, &mut [0u8; 8]).map(|_| ())));
    }
    // epoll_wait, through both APIs.
    {
        let (net, epfd) = (client.clone(), ep.fd());
        blocked.push(spawn_tid(move || {
            net.epoll_wait(epfd, &mut [EpollEvent::default(); 4], 4, -1)
                .map(|_| ())
        }));
    }
    // connect to an address nobody answers.
    {
        let net = client.clone();
        blocked.push(spawn_tid(move || {
            let fd = net.socket(AF_INET, SOCK_STREAM, 0)?;
            net.connect(fd, addr(NOBODY, 80))
        }));
    }
    // accept on a client-side listener.
    {
        let net = client.clone();
        let fd = net.socket(AF_INET, SOCK_STREAM, 0).unwrap();
        net.bind(fd, addr(CLIENT, 99)).unwrap();
        net.listen(fd, 4).unwrap();
        blocked.push(spawn_tid(move || net.accept4(fd, 0).map(|_| ())));
    }
    for (_, tid) in &blocked {
        wait_until_asleep(*tid);
    }
    let stack_tid = client.stack_tid();
    assert!(thread_state(stack_tid).is_some(), "stack thread running");
    client.shutdown();
    assert!(client.is_shut_down());
    for (h, _) in blocked {
        assert_eq!(join_within(h), Err(Errno::EBADF));
    }
    // The thread is gone, later calls fail, and the server saw every
    // connection end (FIN or RST).
    assert!(gone(stack_tid), "stack thread not joined");
    assert_eq!(client.socket(AF_INET, SOCK_STREAM, 0), Err(Errno::EBADF));
    for s in &accepted {
        s.set_read_timeout(Some(MUST)).unwrap();
        match (&*s).read(&mut [0u8; 8]) {
            Ok(0) => {}
            Err(e) if e.raw_os_error() == Some(Errno::ECONNRESET.raw()) => {}
            other => panic!("server side after client shutdown: {other:?}"),
        }
    }
    drop(conns);
    drop(ep);
    drop(accepted);
}

#[test]
fn dropping_the_last_handle_joins_the_stack_thread() {
    let (server, client) = pair();
    let tid = server.stack_tid();
    let listener = TcpListener::bind(&server, addr(SERVER, 19)).unwrap();
    let c = TcpStream::connect(&client, addr(SERVER, 19)).unwrap();
    let (s, _) = listener.accept().unwrap();
    drop((listener, s));
    assert!(thread_state(tid).is_some(), "streams keep it alive");
    drop(server);
    assert!(gone(tid), "the last handle joined it");
    drop(c);
}

#[test]
fn idle_stack_thread_sleeps() {
    let (server, client) = pair();
    let listener = TcpListener::bind(&server, addr(SERVER, 20)).unwrap();
    let mut c = TcpStream::connect(&client, addr(SERVER, 20)).unwrap();
    let (s, _) = listener.accept().unwrap();
    let h = thread::spawn(move || echo_conn(s));
    echo_round(&mut c, b"before idling");
    // Let delayed ACKs and other timers run out, then sample the state of
    // both stack threads: an idle stack thread is asleep in ppoll.
    thread::sleep(Duration::from_millis(300));
    let mut asleep = 0;
    for _ in 0..50 {
        for tid in [server.stack_tid(), client.stack_tid()] {
            if thread_state(tid) == Some('S') {
                asleep += 1;
            }
        }
        thread::sleep(Duration::from_millis(2));
    }
    assert!(
        asleep >= 90,
        "stack threads asleep in {asleep} of 100 samples"
    );
    echo_round(&mut c, b"and after");
    drop(c);
    join_within(h);
}

/// Connect, echo, close from 4 threads, `rounds` times in all.
fn stress((server, client): (Net, Net), rounds: usize) {
    let listener = Arc::new(TcpListener::bind(&server, addr(SERVER, 21)).unwrap());
    const THREADS: usize = 4;
    let total = rounds;
    let acceptor = {
        let listener = listener.clone();
        thread::spawn(move || {
            let mut handlers = Vec::new();
            for _ in 0..total {
                let (s, _) = listener.accept().unwrap();
                handlers.push(thread::spawn(move || echo_conn(s)));
                handlers.retain(|h| !h.is_finished());
            }
            for h in handlers {
                h.join().unwrap();
            }
        })
    };
    let per = rounds.div_ceil(THREADS);
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (client, done) = (client.clone(), done.clone());
            thread::spawn(move || {
                for r in 0..per {
                    if done.fetch_add(1, Ordering::SeqCst) >= total {
                        return;
                    }
                    let mut s = TcpStream::connect(&client, addr(SERVER, 21)).unwrap();
                    let msg = format!("thread {t} round {r}").into_bytes();
                    echo_round(&mut s, &msg);
                    echo_round(&mut s, &msg[..3]);
                }
            })
        })
        .collect();
    for c in clients {
        join_within(c);
    }
    join_within(acceptor);
    let stats = client.stats().unwrap();
    assert_eq!(stats.sockets, 0, "client sockets left: {stats:?}");
}

fn stress_rounds() -> usize {
    std::env::var("USERTCP_THREADED_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[test]
fn connect_echo_close_stress_across_threads() {
    stress(pair(), stress_rounds());
}

#[test]
fn connect_echo_close_stress_through_stack_threads_only() {
    stress(pair_stack_threads_only(), stress_rounds() / 4);
}

/// A device with nothing to say whose "send queue" is stuck: its readiness
/// descriptor is a socket whose send buffer is full, and `wants_writable`
/// says a frame waits. The stack thread must sleep (for `POLLOUT`) instead
/// of spinning, and wake as soon as the descriptor becomes writable.
struct StuckDevice {
    link: netdev::LinkDevice,
    fd: std::os::unix::net::UnixStream,
    pending: Arc<AtomicBool>,
}

impl smoltcp::phy::Device for StuckDevice {
    type RxToken<'a> = netdev::LinkRxToken<'a>;
    type TxToken<'a> = netdev::LinkTxToken<'a>;

    fn receive(
        &mut self,
        now: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.link.receive(now)
    }

    fn transmit(&mut self, now: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        self.link.transmit(now)
    }

    fn capabilities(&self) -> smoltcp::phy::DeviceCapabilities {
        self.link.capabilities()
    }
}

/// No look-ahead: the stack runs without prefetching.
impl netstack::Lookahead for StuckDevice {}

impl netstack::SleepDevice for StuckDevice {
    fn readiness_fd(&self) -> std::io::Result<Option<std::os::fd::RawFd>> {
        Ok(Some(std::os::fd::AsRawFd::as_raw_fd(&self.fd)))
    }

    fn wants_writable(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }
}

#[test]
fn stack_thread_sleeps_for_pollout_while_the_device_is_full() {
    let (link, _peer) = Link::pair(1500);
    let (fd, other) = std::os::unix::net::UnixStream::pair().unwrap();
    fd.set_nonblocking(true).unwrap();
    other.set_nonblocking(true).unwrap();
    let fill = |fd: &std::os::unix::net::UnixStream| {
        let chunk = [0u8; 4096];
        while (&*fd).write(&chunk).is_ok() {}
    };
    // Fill the send buffer: the descriptor is not writable any more.
    fill(&fd);
    let writer = fd.try_clone().unwrap();
    let pending = Arc::new(AtomicBool::new(true));
    let dev = StuckDevice {
        link,
        fd,
        pending: pending.clone(),
    };
    let net = NetThread::spawn(dev, StackConfig::new(SERVER, 24)).unwrap();
    thread::sleep(Duration::from_millis(50));
    let before = net.thread_stats().wakeups;
    thread::sleep(Duration::from_millis(500));
    let slept = net.thread_stats().wakeups - before;
    // Asleep in ppoll: only the 200 ms cap wakes it (a spinning thread
    // wakes hundreds of thousands of times in half a second).
    assert!(slept <= 5, "{slept} wake-ups while the device was full");
    // The peer reads: the descriptor turns writable and the thread wakes at
    // once. Several rounds, each within 50 ms: a thread that slept for
    // POLLIN only would be woken by its 200 ms cap, and only by chance
    // within the window of every round.
    let mut sink = vec![0u8; 1 << 16];
    for round in 0..6 {
        let before = net.thread_stats().wakeups;
        let start = Instant::now();
        while (&other).read(&mut sink).is_ok() {}
        let mut woke = false;
        while start.elapsed() < Duration::from_millis(50) {
            if net.thread_stats().wakeups > before {
                woke = true;
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        assert!(
            woke,
            "round {round}: no wake-up when the device became writable"
        );
        // Full again, and let the thread settle back into its sleep.
        fill(&writer);
        thread::sleep(Duration::from_millis(20));
    }
    pending.store(false, Ordering::SeqCst);
    net.shutdown();
}

/// A connected (client stream, server stream) on `port`, both blocking.
fn connected(server: &Net, client: &Net, port: u16) -> (TcpStream, TcpStream) {
    let l = TcpListener::bind(server, addr(SERVER, port)).unwrap();
    let c = TcpStream::connect(client, addr(SERVER, port)).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

#[test]
fn msg_dontwait_makes_one_call_on_a_blocking_stream_non_blocking() {
    let (server, client) = pair();
    let (c, s) = connected(&server, &client, 7301);
    // Bounds, so that a flag ignored fails the test instead of hanging it.
    c.set_read_timeout(Some(MUST)).unwrap();
    c.set_write_timeout(Some(MUST)).unwrap();
    let mut buf = [0u8; 8];
    let parks = client.thread_stats().parks;
    assert_eq!(
        client.recv_flags(c.fd(), &mut buf, MSG_DONTWAIT),
        Err(Errno::EAGAIN)
    );
    assert_eq!(client.thread_stats().parks, parks, "the call never slept");
    // The stream itself is still blocking: a plain recv waits for data.
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        (&s).write_all(b"late").unwrap();
        s
    });
    assert_eq!(client.recv(c.fd(), &mut buf), Ok(4));
    assert!(client.thread_stats().parks > parks, "this one slept");
    let _s = join_within(writer);
    // A full send buffer: MSG_DONTWAIT queues what fits and returns, and
    // once the peer's window and the buffer are full, fails with EAGAIN,
    // never sleeping. (Between two calls the stack may send and free some
    // room, so the first EAGAIN may take a few calls.)
    let big = vec![7u8; 4 << 20];
    let parks = client.thread_stats().parks;
    let mut sent = 0;
    let mut refused = false;
    for _ in 0..100_000 {
        match client.send_flags(c.fd(), &big, MSG_DONTWAIT) {
            Ok(n) => sent += n,
            Err(e) => {
                assert_eq!(e, Errno::EAGAIN);
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "never EAGAIN after {sent} bytes");
    assert!(sent > 0 && sent < big.len(), "sent {sent}");
    assert_eq!(client.thread_stats().parks, parks, "a send slept");
}

#[test]
fn msg_waitall_waits_for_the_whole_buffer_or_the_end_of_the_stream() {
    let (server, client) = pair();
    let (c, s) = connected(&server, &client, 7302);
    let writer = thread::spawn(move || {
        for piece in [b"first ", b"secnd ", b"third "] {
            thread::sleep(Duration::from_millis(10));
            (&s).write_all(piece).unwrap();
        }
        thread::sleep(Duration::from_millis(10));
        (&s).write_all(b"tail").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        s
    });
    let mut buf = [0u8; 18];
    assert_eq!(client.recv_flags(c.fd(), &mut buf, MSG_WAITALL), Ok(18));
    assert_eq!(&buf, b"first secnd third ");
    // End of stream cuts the next one short, then reads 0.
    assert_eq!(client.recv_flags(c.fd(), &mut buf, MSG_WAITALL), Ok(4));
    assert_eq!(&buf[..4], b"tail");
    assert_eq!(client.recv_flags(c.fd(), &mut buf, MSG_WAITALL), Ok(0));
    let _s = join_within(writer);
}

#[test]
fn msg_waitall_cut_short_by_a_reset_reports_it_on_the_next_call() {
    let (server, client) = pair();
    let (c, s) = connected(&server, &client, 7303);
    // Unread data on the server makes its close a reset.
    (&c).write_all(b"never read").unwrap();
    let closer = thread::spawn(move || {
        (&s).write_all(b"0123456789").unwrap();
        thread::sleep(Duration::from_millis(20));
        drop(s);
    });
    let mut buf = [0u8; 30];
    assert_eq!(client.recv_flags(c.fd(), &mut buf, MSG_WAITALL), Ok(10));
    assert_eq!(&buf[..10], b"0123456789");
    assert_eq!(
        client.recv_flags(c.fd(), &mut buf, MSG_WAITALL),
        Err(Errno::ECONNRESET)
    );
    join_within(closer);
}

#[test]
fn peek_waits_for_data_and_leaves_it_for_read() {
    let (server, client) = pair();
    let (c, s) = connected(&server, &client, 7304);
    let writer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        (&s).write_all(b"peekaboo").unwrap();
        s
    });
    let mut buf = [0u8; 8];
    assert_eq!(c.peek(&mut buf).unwrap(), 8);
    assert_eq!(&buf, b"peekaboo");
    let mut again = [0u8; 8];
    (&c).read_exact(&mut again).unwrap();
    assert_eq!(again, buf);
    let _s = join_within(writer);
}

// ---- SO_LINGER: the close that waits ------------------------------------

#[test]
fn lingering_close_waits_for_the_peer_to_take_the_data_and_ack_the_fin() {
    let (server, client) = pair();
    let (c, s) = connected(&server, &client, 7310);
    // More than the window and the send buffer hold: the FIN waits behind
    // data that only goes once the server reads.
    // Fill the server's receive buffer and the client's send buffer: sends
    // until they have taken nothing for 50 ms.
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut sent = 0;
    let mut stuck_since = Instant::now();
    while stuck_since.elapsed() < Duration::from_millis(50) {
        match client.send_flags(c.fd(), &data[sent..], MSG_DONTWAIT) {
            Ok(n) => {
                sent += n;
                stuck_since = Instant::now();
            }
            Err(e) => assert_eq!(e, Errno::EAGAIN),
        }
        thread::sleep(Duration::from_millis(1));
    }
    assert!(sent < data.len(), "the buffers took all {sent} bytes");
    let data = &data[..sent];
    // A thread blocked in recv on the stream when the close starts fails
    // with EBADF at once, as after any last close.
    let fd = c.fd();
    let net = client.clone();
    let (blocked, tid) = spawn_tid(move || {
        let mut buf = [0u8; 8];
        (net.recv(fd, &mut buf), Instant::now())
    });
    wait_until_asleep(tid);
    c.set_linger(Some(MUST)).unwrap();
    assert_eq!(c.linger().unwrap(), Some(MUST));
    let reader_starts = Instant::now() + Duration::from_millis(200);
    let reader = thread::spawn(move || {
        thread::sleep(reader_starts - Instant::now());
        let mut got = Vec::new();
        (&s).read_to_end(&mut got).unwrap();
        // Kept open: its FIN would wake the close too.
        (got, Instant::now(), s)
    });
    let start = Instant::now();
    drop(c);
    let closed_at = Instant::now();
    let (got, eof_at, _s) = join_within(reader);
    assert!(
        got == data,
        "{} of {} bytes, or not the same",
        got.len(),
        data.len()
    );
    assert!(
        closed_at >= reader_starts,
        "close returned {:?} after it began, before the peer took the data",
        closed_at - start
    );
    assert!(
        closed_at - start < MUST / 2,
        "close waited for its time instead of the FIN's ACK: {:?}",
        closed_at - start
    );
    assert!(eof_at <= closed_at + Duration::from_secs(1));
    let (r, failed_at) = join_within(blocked);
    assert_eq!(r, Err(Errno::EBADF));
    assert!(
        failed_at < reader_starts,
        "the blocked recv waited for the close"
    );
}

/// A client stream in CLOSE-WAIT whose server closed, then shut its
/// stack down: nobody will acknowledge the client's FIN.
fn closed_by_a_vanished_server(port: u16) -> (Net, TcpStream) {
    let (server, client) = pair();
    let (c, s) = connected(&server, &client, port);
    drop(s);
    let mut buf = [0u8; 4];
    assert_eq!((&c).read(&mut buf).unwrap(), 0, "the server's FIN");
    server.shutdown();
    (client, c)
}

#[test]
fn lingering_close_gives_up_after_its_time_when_the_peer_is_gone() {
    let (client, c) = closed_by_a_vanished_server(7311);
    let t = Duration::from_secs(1);
    c.set_linger(Some(t)).unwrap();
    // Not the last descriptor: closing it does not wait.
    let start = Instant::now();
    drop(c.try_clone().unwrap());
    assert!(start.elapsed() < t / 2, "a dup's close lingered");
    let start = Instant::now();
    drop(c);
    assert_timed(start.elapsed(), t);
    // The connection goes on closing in the background (not reset).
    let stats = client.stats().unwrap();
    assert_eq!((stats.fds, stats.connections), (0, 1));
}

#[test]
fn shutdown_ends_a_lingering_close() {
    let (client, c) = closed_by_a_vanished_server(7313);
    c.set_linger(Some(MUST)).unwrap();
    let (closer, tid) = spawn_tid(move || {
        drop(c);
        Instant::now()
    });
    wait_until_asleep(tid);
    let start = Instant::now();
    client.shutdown();
    let returned = join_within(closer);
    assert!(
        returned - start < MUST / 2,
        "the close waited out its time: {:?}",
        returned - start
    );
}

#[test]
fn zero_linger_drop_resets_the_peer() {
    let (server, client) = pair();
    let (c, s) = connected(&server, &client, 7312);
    c.set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);
    let mut buf = [0u8; 4];
    let e = (&s).read(&mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
}
