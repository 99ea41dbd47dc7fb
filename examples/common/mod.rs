//! The flags every TAP example shares, and the code that turns them into a
//! stack on a TAP (`--tap NAME`) or on an in-process link with a client
//! stack on its other end (`--link`), optionally captured (`--pcap FILE`).
//!
//! Two ways to run the stack:
//!
//! - default, run-to-completion: one thread polls the stack and runs the
//!   server's `epoll_wait(0)` loop ([`apps::run`]), sleeping in `poll(2)`
//!   on the TAP when idle;
//! - `--threads N`: the stack on a `NetThread` (it sleeps in `ppoll` on the
//!   TAP's descriptor) and N worker threads, each a [`Server`] on a `Net`
//!   handle ([`apps::ThreadedServer`]): they share the listening socket,
//!   each watches it with its own epoll and `EPOLLEXCLUSIVE` (a new
//!   connection wakes one sleeping worker, not all), accepts, and serves
//!   the connections it accepted with non-blocking calls, blocking in
//!   `epoll_wait`. With `--link` the in-process client stack stays
//!   run-to-completion on the main thread. A `--pcap` capture of a threaded
//!   run is timed from the stack's start (the `NetThread`'s clock), not
//!   wall-clock dates.
#![allow(dead_code)]

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::phy::Device;
use smoltcp::wire::EthernetAddress;
use usertcp::apps::{self, Client, Clock, Progress, Protocol, Server, ThreadedServer, Wake};
use usertcp::netdev::{Link, LinkDevice, Tap, pcap_file};
use usertcp::netstack::{Lookahead, Net, NetThread, Stack, StackConfig};

/// Where the stack's client side (for `--link`) sits.
pub const LINK_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Flags shared by the TAP examples.
#[derive(clap::Args, Debug, Clone)]
pub struct Flags {
    /// Run on this TAP device, in the current network namespace (see
    /// scripts/netns-tap.sh; run the example under `netns-tap.sh exec`).
    #[arg(long, conflicts_with = "link")]
    pub tap: Option<String>,
    /// Run in-process instead: this stack and a client stack in one process
    /// over netdev::Link (no root needed).
    #[arg(long)]
    pub link: bool,
    /// Capture every frame of this stack to a pcap file (tcpdump -r, Wireshark).
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// The stack's IPv4 address.
    #[arg(long, default_value = "198.18.0.2")]
    pub addr: Ipv4Addr,
    /// The on-link prefix length.
    #[arg(long, default_value_t = 24)]
    pub prefix: u8,
    /// The stack's MAC on the TAP (default 02:00 and the address's bytes).
    #[arg(long, value_parser = parse_mac)]
    pub mac: Option<EthernetAddress>,
    /// Receive and send buffer of each socket, in bytes.
    #[arg(long)]
    pub buffer: Option<usize>,
    /// Stop after this many seconds (0: run until killed; --link runs stop
    /// when their client is done).
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
    /// Threaded mode: the stack on its own thread (NetThread) and this many
    /// worker threads sharing the listener (0: run-to-completion on one
    /// thread).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

fn parse_mac(s: &str) -> Result<EthernetAddress, String> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mac: [u8; 6] = bytes
        .try_into()
        .map_err(|_| "six bytes, like 02:00:c6:12:00:02")?;
    Ok(EthernetAddress(mac))
}

impl Flags {
    /// The stack configuration for `addr`.
    pub fn config(&self, addr: Ipv4Addr) -> StackConfig {
        let mut c = StackConfig::new(addr, self.prefix);
        if let Some(mac) = self.mac {
            c.mac = mac;
        }
        if let Some(b) = self.buffer {
            c.buffer_size = b;
        }
        c
    }
}

/// The callback that reports a run's progress.
type Report<'a, P> = &'a mut dyn FnMut(&Progress<P>, Option<&Client>, Duration);

/// What the in-process client of a `--link` run does.
pub struct LinkClient {
    pub conns: usize,
    pub request: Vec<u8>,
    pub reply: Vec<u8>,
    /// 0: connect and stay idle.
    pub rounds: u64,
}

/// Runs `proto` as an epoll server on `port` on the stack the flags ask
/// for, calling `report` about once a second (and once at the end).
pub fn serve<P>(
    net: &Flags,
    port: u16,
    et: bool,
    proto: P,
    link_client: LinkClient,
    report: impl FnMut(&Progress<P>, Option<&Client>, Duration),
) -> Result<(), Box<dyn Error>>
where
    P: Protocol + Clone + Send + 'static,
    P::Conn: Send,
{
    if net.threads > 0 {
        return serve_threaded(net, port, et, proto, link_client, report);
    }
    let clock = Clock::new();
    let config = net.config(net.addr);
    if let Some(name) = &net.tap {
        let tap = Tap::open(name)
            .map_err(|e| format!("opening TAP {name}: {e} (root? inside the namespace?)"))?;
        eprintln!(
            "usertcp at {} on {} (mtu {})",
            net.addr,
            tap.name(),
            tap.mtu()
        );
        match &net.pcap {
            Some(path) => {
                let (dev, _) = pcap_file(tap, path)?;
                serve_on(
                    net,
                    Stack::new(dev, config, clock.now())?,
                    None,
                    &clock,
                    port,
                    et,
                    proto,
                    report,
                )
            }
            None => serve_on(
                net,
                Stack::new(tap, config, clock.now())?,
                None,
                &clock,
                port,
                et,
                proto,
                report,
            ),
        }
    } else if net.link {
        let (a, b) = Link::pair(1500);
        let client = Stack::new(b, net.config(LINK_CLIENT), clock.now())?;
        let spec = Some((client, link_client));
        match &net.pcap {
            Some(path) => {
                let (dev, _) = pcap_file(a, path)?;
                serve_on(
                    net,
                    Stack::new(dev, config, clock.now())?,
                    spec,
                    &clock,
                    port,
                    et,
                    proto,
                    report,
                )
            }
            None => serve_on(
                net,
                Stack::new(a, config, clock.now())?,
                spec,
                &clock,
                port,
                et,
                proto,
                report,
            ),
        }
    } else {
        Err("choose --tap NAME or --link".into())
    }
}

#[allow(clippy::too_many_arguments)]
fn serve_on<D: Device + Lookahead + Wake, P: Protocol + Clone>(
    net: &Flags,
    mut st: Stack<D>,
    link: Option<(Stack<LinkDevice>, LinkClient)>,
    clock: &Clock,
    port: u16,
    et: bool,
    proto: P,
    mut report: impl FnMut(&Progress<P>, Option<&Client>, Duration),
) -> Result<(), Box<dyn Error>> {
    let mut server = Server::listen(&mut st, port, et, proto)?;
    let start = StdInstant::now();
    let mut last = start;
    let stop = AtomicBool::new(false);
    let limit = (net.seconds > 0).then(|| Duration::from_secs(net.seconds));
    let tick =
        |server: &Server<P>, client: Option<&Client>, last: &mut StdInstant, report: Report<P>| {
            if last.elapsed() >= Duration::from_secs(1) {
                *last = StdInstant::now();
                report(&server.progress(), client, start.elapsed());
            }
            if limit.is_some_and(|l| start.elapsed() >= l) {
                stop.store(true, Ordering::Relaxed);
            }
        };
    match link {
        None => {
            eprintln!("listening on {}:{port}", net.addr);
            apps::run(&mut st, clock, &stop, |st| {
                let worked = server.step(st);
                tick(&server, None, &mut last, &mut report);
                worked
            });
        }
        Some((mut cst, spec)) => {
            let mut client = Client::connect(
                &mut cst,
                SocketAddrV4::new(net.addr, port),
                spec.conns,
                &spec.request,
                &spec.reply,
                spec.rounds,
            )?;
            apps::run(&mut st, clock, &stop, |st| {
                let mut worked = server.step(st);
                worked |= cst.poll(clock.now());
                worked |= client.step(&mut cst);
                tick(&server, Some(&client), &mut last, &mut report);
                if spec.rounds > 0 && client.open() == 0 && server.open() == 0 {
                    stop.store(true, Ordering::Relaxed);
                }
                worked
            });
            report(&server.progress(), Some(&client), start.elapsed());
            return Ok(());
        }
    }
    report(&server.progress(), None, start.elapsed());
    Ok(())
}

/// `--threads N`: the stack on a `NetThread`, N workers (module docs).
fn serve_threaded<P>(
    net: &Flags,
    port: u16,
    et: bool,
    proto: P,
    link_client: LinkClient,
    mut report: impl FnMut(&Progress<P>, Option<&Client>, Duration),
) -> Result<(), Box<dyn Error>>
where
    P: Protocol + Clone + Send + 'static,
    P::Conn: Send,
{
    let config = net.config(net.addr);
    let mut client_stack = None;
    let stack: Net = if let Some(name) = &net.tap {
        let tap = Tap::open(name)
            .map_err(|e| format!("opening TAP {name}: {e} (root? inside the namespace?)"))?;
        eprintln!(
            "usertcp at {} on {} (mtu {}), stack thread + {} workers",
            net.addr,
            tap.name(),
            tap.mtu(),
            net.threads
        );
        match &net.pcap {
            Some(path) => NetThread::spawn(pcap_file(tap, path)?.0, config)?,
            None => NetThread::spawn(tap, config)?,
        }
    } else if net.link {
        let (a, b) = Link::pair(1500);
        let clock = Clock::new();
        client_stack = Some(Stack::new(b, net.config(LINK_CLIENT), clock.now())?);
        match &net.pcap {
            Some(path) => NetThread::spawn(pcap_file(a, path)?.0, config)?,
            None => NetThread::spawn(a, config)?,
        }
    } else {
        return Err("choose --tap NAME or --link".into());
    };
    let server = ThreadedServer::start(&stack, port, et, net.threads, proto)?;
    let start = StdInstant::now();
    let limit = (net.seconds > 0).then(|| Duration::from_secs(net.seconds));
    let over = || limit.is_some_and(|l| start.elapsed() >= l);
    let mut last = start;
    match client_stack {
        None => {
            eprintln!("listening on {}:{port}", net.addr);
            while !over() {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= Duration::from_secs(1) {
                    last = StdInstant::now();
                    report(&server.progress(), None, start.elapsed());
                }
            }
            report(&server.stop(), None, start.elapsed());
        }
        Some(mut cst) => {
            let clock = Clock::new();
            let mut client = Client::connect(
                &mut cst,
                SocketAddrV4::new(net.addr, port),
                link_client.conns,
                &link_client.request,
                &link_client.reply,
                link_client.rounds,
            )?;
            let stop = AtomicBool::new(false);
            apps::run(&mut cst, &clock, &stop, |cst| {
                let worked = client.step(cst);
                if last.elapsed() >= Duration::from_secs(1) {
                    last = StdInstant::now();
                    report(&server.progress(), Some(&client), start.elapsed());
                }
                let done = link_client.rounds > 0 && client.open() == 0;
                if over() || (done && server.progress().open == 0) {
                    stop.store(true, Ordering::Relaxed);
                }
                worked
            });
            report(&server.stop(), Some(&client), start.elapsed());
        }
    }
    stack.shutdown();
    Ok(())
}
