//! End to end on a real TAP device: usertcp servers (the same code as the
//! examples, `usertcp::apps`) on a TAP inside a network namespace that each
//! test creates and removes, reached by unmodified kernel clients (curl,
//! wrk, kernel sockets) in that namespace.
//!
//! Each test makes its own namespace (`utcp-<test>-<pid>`, through
//! `scripts/netns-tap.sh`), so they run in parallel; a guard removes it
//! even when the test fails. The server runs on a thread of this process
//! that entered the namespace with `setns(2)` (TUNSETIFF and sockets belong
//! to the calling thread's namespace), so nothing depends on the example
//! binaries having been built. Kernel-socket clients run on threads that
//! entered the namespace too; curl and wrk run under `ip netns exec`.
//! Every client is bounded in time. Without root, `/dev/net/tun` or `ip`,
//! each test prints why and passes without running.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use smoltcp::phy::Device;
use usertcp::apps::{
    self, Clock, Echo, HTTP_BODY, Http, Protocol, Server, ServerStats, ThreadedServer, Wake,
};
use usertcp::eventpoll::{CtlOp, EpollEvent, Events};
use usertcp::netdev::{Tap, pcap_file};
use usertcp::netstack::{
    AF_INET, Lookahead, NetThread, SOCK_NONBLOCK, SOCK_STREAM, Stack, StackConfig,
};
use usertcp::sys;

const STACK: &str = "198.18.0.2";
const TAP: &str = "tap0";
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- fixtures

/// Why TAP tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    usertcp::sys::tap_unavailable()
}

fn has(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
        || Command::new(program).arg("-h").output().is_ok()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/netns-tap.sh")
}

/// A network namespace with `tap0` (kernel side 198.18.0.1/24), removed on
/// drop.
struct Netns {
    name: String,
}

impl Netns {
    /// The namespace for test `tag`, or `None` (with the reason printed)
    /// when TAP tests cannot run here.
    fn new(tag: &str) -> Option<Netns> {
        if let Some(why) = skip_reason() {
            println!("skipped: {why}");
            return None;
        }
        let name = format!("utcp-{tag}-{}", std::process::id());
        let ns = Netns { name };
        let out = ns.script("up");
        assert!(out.status.success(), "netns-tap.sh up: {out:?}");
        Some(ns)
    }

    fn script(&self, cmd: &str) -> Output {
        Command::new(script())
            .arg(cmd)
            .env("USERTCP_NETNS", &self.name)
            .env("USERTCP_TAP", TAP)
            .output()
            .expect("scripts/netns-tap.sh runs")
    }

    /// `program args...` run inside the namespace, bounded by `timeout`.
    fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "timeout", "60", program])
            .args(args)
            .output()
            .expect("ip netns exec runs")
    }

    /// Runs `f` on a thread inside the namespace (kernel sockets made there
    /// belong to it).
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let name = self.name.clone();
        thread::spawn(move || {
            sys::enter_netns(&name).expect("setns into the test namespace");
            f()
        })
        .join()
        .expect("client thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = self.script("down");
        if !out.status.success() {
            eprintln!("netns-tap.sh down {}: {out:?}", self.name);
        }
    }
}

/// A usertcp server on the namespace's TAP, on its own thread; stopped and
/// joined on drop (or by [`TapServer::stop`]).
struct TapServer<P: Protocol + Send + 'static> {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(ServerStats, P)>>,
}

impl<P: Protocol + Send + 'static> TapServer<P> {
    fn start(ns: &Netns, port: u16, et: bool, proto: P, pcap: Option<PathBuf>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let name = ns.name.clone();
        let flag = stop.clone();
        let thread = thread::spawn(move || {
            sys::enter_netns(&name).expect("setns into the test namespace");
            let tap = Tap::open(TAP).expect("open the namespace's TAP");
            let clock = Clock::new();
            let config = StackConfig::new(STACK.parse().unwrap(), 24);
            match pcap {
                Some(path) => {
                    let (dev, _) = pcap_file(tap, path).expect("create the capture");
                    let st = Stack::new(dev, config, clock.now()).unwrap();
                    serve(st, &clock, port, et, proto, &flag, ready_tx)
                }
                None => {
                    let st = Stack::new(tap, config, clock.now()).unwrap();
                    serve(st, &clock, port, et, proto, &flag, ready_tx)
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the server starts listening");
        TapServer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the server and returns its counts and protocol.
    fn stop(mut self) -> (ServerStats, P) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("server thread")
    }
}

impl<P: Protocol + Send + 'static> Drop for TapServer<P> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve<D: Device + Lookahead + Wake, P: Protocol>(
    mut st: Stack<D>,
    clock: &Clock,
    port: u16,
    et: bool,
    proto: P,
    stop: &AtomicBool,
    ready: mpsc::Sender<()>,
) -> (ServerStats, P) {
    let mut server = Server::listen(&mut st, port, et, proto).unwrap();
    ready.send(()).unwrap();
    apps::run(&mut st, clock, stop, |st| server.step(st));
    let stats = server.stats();
    (stats, server.into_protocol())
}

fn connect(port: u16) -> TcpStream {
    let addr: SocketAddr = format!("{STACK}:{port}").parse().unwrap();
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s
}

fn fnv(h: &mut u64, data: &[u8]) {
    for &b in data {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0100_0000_01b3);
    }
}

// ------------------------------------------------------------------- tests

#[test]
fn curl_gets_the_exact_body_from_http_server_on_the_tap() {
    let Some(ns) = Netns::new("curl") else {
        return;
    };
    let server = TapServer::start(&ns, 80, false, Http::default(), None);
    let out = ns.exec("curl", &["-s", "--max-time", "10", "http://198.18.0.2/"]);
    assert!(out.status.success(), "curl: {out:?}");
    assert_eq!(out.stdout, HTTP_BODY);
    let (stats, http) = server.stop();
    assert_eq!((stats.accepted, http.requests), (1, 1));
}

#[test]
fn wrk_two_threads_100_connections_has_no_socket_errors() {
    let Some(ns) = Netns::new("wrk") else {
        return;
    };
    if !has("wrk") {
        println!("skipped: wrk is not installed (.ci/run installs it)");
        return;
    }
    let server = TapServer::start(&ns, 80, false, Http::default(), None);
    // wrk's own per-request timeout (2 s by default) is raised so that a
    // loaded CI machine running the debug build does not count slowness as
    // socket errors; the load is the same.
    let out = ns.exec(
        "wrk",
        &[
            "-t2",
            "-c100",
            "-d3s",
            "--timeout",
            "10s",
            "http://198.18.0.2/",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk: {out:?}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate in {text}"));
    assert!(rate > 0.0, "{text}");
    let (stats, http) = server.stop();
    assert!(stats.accepted >= 100, "{stats:?}");
    assert!(http.requests > 0);
    println!("wrk -t2 -c100 -d3s through the TAP (debug build): {rate} requests/s");
}

/// The threaded mode on the TAP (`http_server --tap tap0 --threads 4`):
/// the stack on a `NetThread` sleeping on the TAP's descriptor, 4 worker
/// threads sharing the listener with `EPOLLEXCLUSIVE`. curl gets the
/// exact body; a short wrk run has no socket errors, and every request wrk
/// counts was answered by the workers.
#[test]
fn threaded_http_server_on_the_tap_serves_curl_and_wrk() {
    let Some(ns) = Netns::new("threads") else {
        return;
    };
    let name = ns.name.clone();
    let net = thread::spawn(move || {
        sys::enter_netns(&name).expect("setns into the test namespace");
        let tap = Tap::open(TAP).expect("open the namespace's TAP");
        NetThread::spawn(tap, StackConfig::new(STACK.parse().unwrap(), 24))
    })
    .join()
    .expect("opening thread")
    .expect("the stack thread starts");
    let server = ThreadedServer::start(&net, 80, false, 4, Http::default()).unwrap();
    let out = ns.exec("curl", &["-s", "--max-time", "10", "http://198.18.0.2/"]);
    assert!(out.status.success(), "curl: {out:?}");
    assert_eq!(out.stdout, HTTP_BODY);
    let mut wrk_requests = 0;
    if has("wrk") {
        let out = ns.exec(
            "wrk",
            &[
                "-t1",
                "-c64",
                "-d2s",
                "--timeout",
                "10s",
                "http://198.18.0.2/",
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "wrk: {out:?}");
        assert!(!text.contains("Socket errors"), "{text}");
        assert!(!text.contains("Non-2xx"), "{text}");
        wrk_requests = text
            .lines()
            .find_map(|l| l.trim().split_once(" requests in "))
            .and_then(|(n, _)| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no request count in {text}"));
        assert!(wrk_requests > 0, "{text}");
        println!("wrk -t1 -c64 -d2s, threaded server (debug build): {wrk_requests} requests");
    } else {
        println!("wrk is not installed (.ci/run installs it): curl only");
    }
    let progress = server.stop();
    let requests: u64 = progress.protos.iter().map(|h| h.requests).sum();
    assert_eq!(progress.protos.len(), 4, "one protocol per worker");
    assert!(
        requests > wrk_requests,
        "curl's request and wrk's {wrk_requests} answered, got {requests}"
    );
    if wrk_requests > 0 {
        assert!(progress.stats.accepted >= 65, "{progress:?}");
    }
    net.shutdown();
}

/// A kernel client sends 10 MB of random bytes and reads them back.
fn bulk_echo(tag: &str, et: bool) {
    let Some(ns) = Netns::new(tag) else {
        return;
    };
    let server = TapServer::start(&ns, 7, et, Echo, None);
    const TOTAL: usize = 10 * 1000 * 1000;
    let (sent, received) = ns.run(|| {
        let mut s = connect(7);
        let mut w = s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let mut rng = 0x2545_f491_4f6c_dd1du64;
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            let mut buf = vec![0u8; 32 * 1024];
            let mut left = TOTAL;
            while left > 0 {
                let n = left.min(buf.len());
                for b in &mut buf[..n] {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    *b = rng as u8;
                }
                w.write_all(&buf[..n]).expect("write");
                fnv(&mut h, &buf[..n]);
                left -= n;
            }
            h
        });
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < TOTAL {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "EOF after {got} bytes");
            fnv(&mut h, &buf[..n]);
            got += n;
        }
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(s.read(&mut buf).unwrap(), 0, "no extra bytes, then EOF");
        (writer.join().unwrap(), h)
    });
    assert_eq!(sent, received, "the echo is byte for byte what was sent");
    let (stats, _) = server.stop();
    assert_eq!(stats.rx_bytes, TOTAL as u64);
    assert_eq!(stats.tx_bytes, TOTAL as u64);
}

#[test]
fn ten_megabytes_echo_back_intact_level_triggered() {
    bulk_echo("bulk-lt", false);
}

#[test]
fn ten_megabytes_echo_back_intact_edge_triggered() {
    bulk_echo("bulk-et", true);
}

#[test]
fn a_thousand_concurrent_kernel_connections_are_accepted_and_served() {
    let Some(ns) = Netns::new("c1k") else {
        return;
    };
    sys::raise_nofile_limit().unwrap();
    let server = TapServer::start(&ns, 7, false, Echo, None);
    const N: usize = 1000;
    let served = ns.run(|| {
        let mut conns: Vec<TcpStream> = (0..N).map(|_| connect(7)).collect();
        for (i, s) in conns.iter_mut().enumerate() {
            s.write_all(format!("ping {i:04}\n").as_bytes()).unwrap();
        }
        let mut served = 0;
        for (i, s) in conns.iter_mut().enumerate() {
            let mut buf = [0u8; 10];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, format!("ping {i:04}\n").as_bytes());
            served += 1;
        }
        served
    });
    assert_eq!(served, N);
    let (stats, _) = server.stop();
    assert_eq!(stats.accepted, N as u64);
}

/// What the close-test server saw on its first connection.
#[derive(Debug)]
struct Seen {
    events: Events,
    recv: Result<usize, usertcp::eventpoll::Errno>,
}

#[test]
fn closes_and_aborts_reach_the_other_side() {
    let Some(ns) = Netns::new("close") else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel();
    let name = ns.name.clone();
    let flag = stop.clone();
    // Connection 0: the kernel closes; record what epoll says and recv.
    // Connection 1: the server closes at once. Connection 2: the server
    // closes with unread data, which aborts (RST), as Linux does.
    let server = thread::spawn(move || {
        sys::enter_netns(&name).unwrap();
        let clock = Clock::new();
        let tap = Tap::open(TAP).unwrap();
        let mut st = Stack::new(
            tap,
            StackConfig::new(STACK.parse().unwrap(), 24),
            clock.now(),
        )
        .unwrap();
        let l = st.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0).unwrap();
        st.bind(l, format!("0.0.0.0:{}", 9000).parse().unwrap())
            .unwrap();
        st.listen(l, 16).unwrap();
        let ep = st.epoll_create1(0).unwrap();
        let add = |st: &mut Stack<Tap>, fd: i32, data: u64| {
            let ev = EpollEvent::new(Events::IN | Events::RDHUP, data);
            st.epoll_ctl(ep, CtlOp::Add.to_raw(), fd, Some(&ev))
                .unwrap();
        };
        add(&mut st, l, u64::MAX);
        ready_tx.send(()).unwrap();
        let mut accepted: Vec<i32> = Vec::new();
        let mut events = [EpollEvent::default(); 16];
        apps::run(&mut st, &clock, &flag, |st| {
            let n = st.epoll_wait(ep, &mut events, 16, 0).unwrap();
            for ev in &events[..n] {
                if ev.data == u64::MAX {
                    while let Ok((fd, _)) = st.accept4(l, SOCK_NONBLOCK) {
                        let index = accepted.len() as u64;
                        accepted.push(fd);
                        if index == 1 {
                            st.close(fd).unwrap();
                        } else {
                            add(st, fd, index);
                        }
                    }
                    continue;
                }
                let fd = accepted[ev.data as usize];
                match ev.data {
                    0 => {
                        let mut buf = [0u8; 16];
                        let recv = st.recv(fd, &mut buf);
                        seen_tx
                            .send(Seen {
                                events: ev.events,
                                recv,
                            })
                            .unwrap();
                        st.close(fd).unwrap();
                    }
                    _ => {
                        // Data arrived and is left unread: close aborts.
                        st.close(fd).unwrap();
                    }
                }
            }
            n > 0
        });
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();

    let (eof, reset) = ns.run(|| {
        // The kernel closes first.
        drop(connect(9000));
        // The server closes: the client reads EOF.
        let mut s = connect(9000);
        let mut buf = [0u8; 8];
        let eof = s.read(&mut buf).map_err(|e| e.kind());
        // The server aborts: the client gets ECONNRESET.
        let mut s = connect(9000);
        s.write_all(b"unread").unwrap();
        let reset = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(0),
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => break Err(e.raw_os_error()),
            }
        };
        (eof, reset)
    });
    let seen = seen_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert_eq!(
        seen.events & (Events::IN | Events::RDHUP),
        Events::IN | Events::RDHUP,
        "{seen:?}"
    );
    assert_eq!(seen.recv, Ok(0), "recv after the peer's FIN");
    assert_eq!(eof, Ok(0), "the kernel client reads EOF");
    assert_eq!(reset, Err(Some(104)), "the kernel client gets ECONNRESET");
}

/// Reads a classic pcap file: its link type and its records' data.
fn read_pcap(bytes: &[u8]) -> (u32, Vec<Vec<u8>>) {
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!(u32_at(0), 0xa1b2_c3d4, "pcap magic (little-endian)");
    assert_eq!((bytes[4], bytes[6]), (2, 4), "version 2.4");
    let mut records = Vec::new();
    let mut i = 24;
    while i + 16 <= bytes.len() {
        let caplen = u32_at(i + 8) as usize;
        assert_eq!(caplen, u32_at(i + 12) as usize, "whole packets");
        let start = i + 16;
        assert!(
            start + caplen <= bytes.len(),
            "record {} cut short",
            records.len()
        );
        records.push(bytes[start..start + caplen].to_vec());
        i = start + caplen;
    }
    assert_eq!(i, bytes.len(), "no trailing bytes");
    (u32_at(20), records)
}

#[test]
fn pcap_capture_of_a_curl_exchange_parses() {
    let Some(ns) = Netns::new("pcap") else {
        return;
    };
    let path = std::env::temp_dir().join(format!("utcp-e2e-{}.pcap", std::process::id()));
    let server = TapServer::start(&ns, 80, false, Http::default(), Some(path.clone()));
    let out = ns.exec("curl", &["-s", "--max-time", "10", "http://198.18.0.2/"]);
    assert_eq!(out.stdout, HTTP_BODY, "{out:?}");
    server.stop();
    let bytes = std::fs::read(&path).unwrap();
    let (link, frames) = read_pcap(&bytes);
    assert_eq!(link, 1, "LINKTYPE_ETHERNET");
    let tcp = |f: &Vec<u8>| f.len() >= 54 && f[12..14] == [8, 0] && f[23] == 6;
    let port = |f: &[u8], at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    assert!(
        frames
            .iter()
            .any(|f| tcp(f) && port(f, 36) == 80 && f[47] & 0x02 != 0),
        "the client's SYN to port 80 is captured"
    );
    assert!(
        frames
            .iter()
            .any(|f| tcp(f) && port(f, 34) == 80 && f.ends_with(HTTP_BODY)),
        "the response is captured"
    );
    if has("tcpdump") {
        let out = Command::new("tcpdump")
            .args(["-n", "-r"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "tcpdump -r: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("198.18.0.2.80 >"), "{text}");
    } else {
        println!("tcpdump not installed: the capture was checked by the test's reader only");
    }
    std::fs::remove_file(&path).unwrap();
}
