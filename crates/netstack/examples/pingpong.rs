//! The `pingpong` loop of loopbench, one side at a time: two stacks in this
//! process over a `netdev::Link`, one connection, 64-byte requests echoed
//! back, client and server on one thread; usertcp's netstack, or with
//! `--smoltcp` two stock smoltcp interfaces with one socket each (the
//! loopbench baseline). For profiling: the workload is a count of round
//! trips, not a time, so an instruction counter sees the same work on every
//! run, and the two sides can be compared instruction for instruction.
//!
//! Run (no privileges):
//!
//! ```text
//! cargo build --release -p netstack --no-default-features --example pingpong
//! target/release/examples/pingpong 2000000
//! valgrind --tool=callgrind target/release/examples/pingpong 200000
//! valgrind --tool=callgrind target/release/examples/pingpong --smoltcp 200000
//! ```
//!
//! Expected output: one line, `usertcp: 2000000 round trips in ... s: ...
//! req/s` (under callgrind the rate is ~50x lower; divide its instruction
//! total by the round trips for the cost of one). `--no-default-features`
//! compiles netstack's trace events out, as loopbench does.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::OnceLock;

use eventpoll::{CtlOp, EpollEvent, Errno, Events};
use netdev::Link;
use netstack::{AF_INET, IPPROTO_TCP, SOCK_NONBLOCK, SOCK_STREAM, Stack, StackConfig, TCP_NODELAY};
use smoltcp::time::Instant;

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const PORT: u16 = 7;
/// The size of a request and of its response.
const MSG: usize = 64;
/// The epoll data of the listener (descriptors are small integers).
const LISTENER: u64 = u64::MAX;
/// Round trips when no count is given.
const DEFAULT_ROUND_TRIPS: u64 = 1_000_000;
/// Socket buffer size each way, as loopbench's pingpong.
const BUFFER: usize = 4096;
/// Loop turns without a response before the run gives up.
const STALL: u64 = 10_000_000;

/// Microseconds since the first call, as loopbench's clock.
fn now() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = ORIGIN.get_or_init(std::time::Instant::now);
    Instant::from_micros(i64::try_from(origin.elapsed().as_micros()).unwrap_or(i64::MAX))
}

/// How far a run is: responses completed, and the loop turns since the last.
struct Progress {
    /// Bytes of the current response received.
    got: usize,
    /// Responses completed.
    done: u64,
    /// Loop turns since the last response.
    idle: u64,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            got: 0,
            done: 0,
            idle: 0,
        }
    }

    /// Counts `len` more bytes of responses. Returns how many requests to
    /// send next: one per response completed, none past the last of
    /// `round_trips`.
    fn received(&mut self, len: usize, round_trips: u64) -> u64 {
        self.got += len;
        let mut next = 0;
        while self.got >= MSG {
            self.got -= MSG;
            self.done += 1;
            self.idle = 0;
            if self.done < round_trips {
                next += 1;
            }
        }
        next
    }

    /// Ends a loop turn: an error after [`STALL`] turns without a response.
    fn turn(&mut self) -> Result<(), String> {
        self.idle += 1;
        if self.idle > STALL {
            return Err(format!("no response for {STALL} turns after {}", self.done));
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let smoltcp = args.first().is_some_and(|a| a == "--smoltcp");
    if smoltcp {
        args.remove(0);
    }
    let round_trips = match args.as_slice() {
        [] => Some(DEFAULT_ROUND_TRIPS),
        [n] => n.parse::<u64>().ok().filter(|&n| n > 0),
        _ => None,
    };
    let Some(round_trips) = round_trips else {
        eprintln!(
            "usage: pingpong [--smoltcp] [ROUND_TRIPS]  (a positive count; default {DEFAULT_ROUND_TRIPS})"
        );
        return ExitCode::from(2);
    };
    let start = std::time::Instant::now();
    let (side, result) = if smoltcp {
        ("stock smoltcp", run_smoltcp(round_trips))
    } else {
        ("usertcp", run(round_trips))
    };
    match result {
        Ok(()) => {
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{side}: {round_trips} round trips in {secs:.3} s: {:.0} req/s",
                round_trips as f64 / secs
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pingpong: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `round_trips` request/responses on one connection (the handshake is
/// part of the run).
fn run(round_trips: u64) -> Result<(), String> {
    let errno = |what: &'static str| move |e: Errno| format!("{what}: {e:?}");
    // The link and buffers of loopbench's pingpong.
    let (a, b) = Link::pair_with(1500, 256);
    let mut config = StackConfig::new(SERVER, 15);
    config.buffer_size = BUFFER;
    let mut server = Stack::new(a, config, now()).map_err(errno("server"))?;
    let mut config = StackConfig::new(CLIENT, 15);
    config.buffer_size = BUFFER;
    let mut client = Stack::new(b, config, now()).map_err(errno("client"))?;

    let listener = server
        .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
        .map_err(errno("socket"))?;
    server
        .bind(listener, SocketAddrV4::new(SERVER, PORT))
        .map_err(errno("bind"))?;
    server.listen(listener, 8).map_err(errno("listen"))?;
    let sep = server.epoll_create1(0).map_err(errno("epoll_create1"))?;
    let watch = EpollEvent::new(Events::IN, LISTENER);
    server
        .epoll_ctl(sep, CtlOp::Add.to_raw(), listener, Some(&watch))
        .map_err(errno("epoll_ctl"))?;

    let cep = client.epoll_create1(0).map_err(errno("epoll_create1"))?;
    let conn = client
        .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
        .map_err(errno("socket"))?;
    client
        .setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, 1)
        .map_err(errno("setsockopt"))?;
    match client.connect(conn, SocketAddrV4::new(SERVER, PORT)) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(errno("connect")(e)),
    }
    let watch = EpollEvent::new(Events::IN, conn as u64);
    client
        .epoll_ctl(cep, CtlOp::Add.to_raw(), conn, Some(&watch))
        .map_err(errno("epoll_ctl"))?;

    let request = [0x5au8; MSG];
    let mut events = [EpollEvent::default(); 16];
    let mut buf = [0u8; 2048];
    let mut first_sent = false;
    let mut progress = Progress::new();
    // The loop of loopbench's `UserPair::responses`: poll both stacks,
    // serve, then the client's events.
    while progress.done < round_trips {
        let t = now();
        client.poll(t);
        server.poll(t);
        let n = server
            .epoll_wait(sep, &mut events, 16, 0)
            .map_err(errno("epoll_wait"))?;
        for e in &events[..n] {
            if e.data == LISTENER {
                let (fd, _) = server
                    .accept4(listener, SOCK_NONBLOCK)
                    .map_err(errno("accept4"))?;
                server
                    .setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, 1)
                    .map_err(errno("setsockopt"))?;
                let watch = EpollEvent::new(Events::IN, fd as u64);
                server
                    .epoll_ctl(sep, CtlOp::Add.to_raw(), fd, Some(&watch))
                    .map_err(errno("epoll_ctl"))?;
                continue;
            }
            let fd = e.data as i32;
            match server.recv(fd, &mut buf) {
                Ok(0) => return Err("server: the client closed".into()),
                Ok(len) => {
                    let sent = server.send(fd, &buf[..len]).map_err(errno("send"))?;
                    if sent != len {
                        return Err("server: short send".into());
                    }
                }
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(errno("server recv")(e)),
            }
        }
        if !first_sent {
            match client.send(conn, &request) {
                Ok(_) => first_sent = true,
                // Still connecting.
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(errno("client send")(e)),
            }
        }
        let n = client
            .epoll_wait(cep, &mut events, 16, 0)
            .map_err(errno("epoll_wait"))?;
        for _ in &events[..n] {
            let len = match client.recv(conn, &mut buf) {
                Ok(0) => return Err("client: the server closed".into()),
                Ok(len) => len,
                Err(Errno::EAGAIN) => 0,
                Err(e) => return Err(errno("client recv")(e)),
            };
            for _ in 0..progress.received(len, round_trips) {
                client.send(conn, &request).map_err(errno("client send"))?;
            }
        }
        progress.turn()?;
    }
    Ok(())
}

/// The same round trips between two stock smoltcp interfaces, one socket
/// in each one's set, as loopbench's `SmolPair`: poll both, the server
/// echoes what its socket holds, the client counts responses and sends the
/// next request.
fn run_smoltcp(round_trips: u64) -> Result<(), String> {
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::socket::tcp;
    use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

    fn iface(dev: &mut netdev::LinkDevice, addr: Ipv4Addr, seed: u64) -> Interface {
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, dev, now());
        iface.update_ip_addrs(|addrs| {
            // A fresh interface has room for an address: cannot fail.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(addr), 15));
        });
        iface
    }
    fn socket() -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; BUFFER]),
            tcp::SocketBuffer::new(vec![0; BUFFER]),
        );
        s.set_nagle_enabled(false);
        s
    }

    let (mut sdev, mut cdev) = Link::pair_with(1500, 256);
    let mut siface = iface(&mut sdev, SERVER, 1);
    let mut ciface = iface(&mut cdev, CLIENT, 2);
    let mut sset = SocketSet::new(Vec::new());
    let mut cset = SocketSet::new(Vec::new());
    let mut server = socket();
    server.listen(PORT).map_err(|e| format!("listen: {e}"))?;
    let sh = sset.add(server);
    let mut client = socket();
    client
        .connect(ciface.context(), (SERVER, PORT), 40_000)
        .map_err(|e| format!("connect: {e}"))?;
    let ch = cset.add(client);

    let request = [0x5au8; MSG];
    let mut buf = [0u8; 2048];
    let mut first_sent = false;
    let mut progress = Progress::new();
    while progress.done < round_trips {
        let t = now();
        ciface.poll(t, &mut cdev, &mut cset);
        siface.poll(t, &mut sdev, &mut sset);
        let s = sset.get_mut::<tcp::Socket>(sh);
        if s.can_recv() {
            let len = s.recv_slice(&mut buf).map_err(|e| format!("recv: {e}"))?;
            s.send_slice(&buf[..len])
                .map_err(|e| format!("send: {e}"))?;
        }
        let c = cset.get_mut::<tcp::Socket>(ch);
        if !first_sent && c.may_send() {
            c.send_slice(&request).map_err(|e| format!("send: {e}"))?;
            first_sent = true;
        }
        if c.can_recv() {
            let len = c.recv_slice(&mut buf).map_err(|e| format!("recv: {e}"))?;
            for _ in 0..progress.received(len, round_trips) {
                c.send_slice(&request).map_err(|e| format!("send: {e}"))?;
            }
        }
        progress.turn()?;
    }
    Ok(())
}
