//! The flags every TAP example shares, and the code that turns them into a
//! stack on a TAP (`--tap NAME`) or on an in-process link with a client
//! stack on its other end (`--link`), optionally captured (`--pcap FILE`).
//!
//! `--threads` is not here yet: the threaded stack mode is being built
//! separately; these examples run the stack on one thread,
//! run-to-completion.
#![allow(dead_code)]

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::phy::Device;
use smoltcp::wire::EthernetAddress;
use usertcp::apps::{self, Client, Clock, Protocol, Server, Wake};
use usertcp::netdev::{Link, LinkDevice, Tap, pcap_file};
use usertcp::netstack::{Stack, StackConfig};

/// Where the stack's client side (for `--link`) sits.
pub const LINK_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// Flags shared by the TAP examples.
#[derive(clap::Args, Debug, Clone)]
pub struct Net {
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

impl Net {
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
type Report<'a, P> = &'a mut dyn FnMut(&Server<P>, Option<&Client>, Duration);

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
pub fn serve<P: Protocol>(
    net: &Net,
    port: u16,
    et: bool,
    proto: P,
    link_client: LinkClient,
    report: impl FnMut(&Server<P>, Option<&Client>, Duration),
) -> Result<(), Box<dyn Error>> {
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
fn serve_on<D: Device + Wake, P: Protocol>(
    net: &Net,
    mut st: Stack<D>,
    link: Option<(Stack<LinkDevice>, LinkClient)>,
    clock: &Clock,
    port: u16,
    et: bool,
    proto: P,
    mut report: impl FnMut(&Server<P>, Option<&Client>, Duration),
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
                report(server, client, start.elapsed());
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
            report(&server, Some(&client), start.elapsed());
            return Ok(());
        }
    }
    report(&server, None, start.elapsed());
    Ok(())
}
