//! End to end: two smoltcp interfaces over a [`Link::pair`], one TCP
//! connection, 256 KiB from client to server (and back, in some tests).
//!
//! Addresses are 198.18.0.1 and 198.18.0.2 (the benchmark range), and they
//! exist only in this process. The single-threaded tests run on a simulated
//! clock that moves 100 µs per round, and the whole transfer must finish in
//! well under one simulated second: smoltcp's minimum retransmission timeout
//! is one second, so a lost packet would show as a stall past that.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use netdev::{Link, LinkDevice, LinkStats};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};

const CLIENT_ADDR: Ipv4Address = Ipv4Address::new(198, 18, 0, 1);
const SERVER_ADDR: Ipv4Address = Ipv4Address::new(198, 18, 0, 2);
const PORT: u16 = 5000;
const TRANSFER: usize = 256 * 1024;
const SOCKET_BUFFER: usize = 128 * 1024;
const STEP_MICROS: i64 = 100;
/// The deadline: well under smoltcp's one-second minimum RTO.
const DEADLINE_MICROS: i64 = 500_000;

/// How to run a transfer.
#[derive(Clone, Copy)]
struct Plan {
    /// `iface.poll` calls per round on each side. smoltcp sends at most one
    /// segment per socket per poll, so more polls than the link capacity
    /// make a sender run into back-pressure.
    polls: usize,
    /// Whether the server sends [`TRANSFER`] bytes back at the same time.
    both_ways: bool,
    /// Whether to turn delayed ACKs off, so that most received segments
    /// are answered through `receive`'s reply token.
    immediate_acks: bool,
}

const ONE_WAY: Plan = Plan {
    polls: 1,
    both_ways: false,
    immediate_acks: false,
};

/// One side: an interface on one end of the link, with one TCP socket, the
/// bytes it is to send, and what it has sent and received so far.
struct Host {
    iface: Interface,
    dev: LinkDevice,
    sockets: SocketSet<'static>,
    tcp: SocketHandle,
    data: Vec<u8>,
    sent: usize,
    received: Vec<u8>,
    established: bool,
}

impl Host {
    fn new(mut dev: LinkDevice, addr: Ipv4Address, seed: u64, data: Vec<u8>) -> Host {
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut dev, Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(IpAddress::Ipv4(addr), 24))
                .expect("one address fits");
        });
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        );
        let mut sockets = SocketSet::new(Vec::new());
        let tcp = sockets.add(socket);
        Host {
            iface,
            dev,
            sockets,
            tcp,
            data,
            sent: 0,
            received: Vec::with_capacity(TRANSFER),
            established: false,
        }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut(self.tcp)
    }

    /// Polls `polls` times, after each poll queueing more data and reading
    /// what arrived.
    fn step(&mut self, now: Instant, polls: usize) {
        let mut buf = [0; 16 * 1024];
        for _ in 0..polls {
            self.iface.poll(now, &mut self.dev, &mut self.sockets);
            let socket = self.sockets.get_mut::<tcp::Socket>(self.tcp);
            self.established |= socket.state() == tcp::State::Established;
            if socket.may_send() && self.sent < self.data.len() {
                let n = socket.send_slice(&self.data[self.sent..]).expect("send");
                self.sent += n;
            }
            while socket.can_recv() {
                let n = socket.recv_slice(&mut buf).expect("recv");
                self.received.extend_from_slice(&buf[..n]);
            }
        }
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// A client and a listening server on the two ends of `link`, the client's
/// SYN queued. The client is to send [`TRANSFER`] bytes, the server as many
/// back if `plan.both_ways`.
fn hosts(link: (LinkDevice, LinkDevice), plan: Plan) -> (Host, Host) {
    let (client_dev, server_dev) = link;
    let down = if plan.both_ways {
        pattern(TRANSFER, 2)
    } else {
        Vec::new()
    };
    let mut client = Host::new(client_dev, CLIENT_ADDR, 1, pattern(TRANSFER, 1));
    let mut server = Host::new(server_dev, SERVER_ADDR, 2, down);
    server.socket().listen(PORT).expect("listen");
    for host in [&mut client, &mut server] {
        if plan.immediate_acks {
            host.socket().set_ack_delay(None);
        }
    }
    let remote = (IpAddress::Ipv4(SERVER_ADDR), PORT);
    let Host {
        iface,
        sockets,
        tcp,
        ..
    } = &mut client;
    sockets
        .get_mut::<tcp::Socket>(*tcp)
        .connect(iface.context(), remote, 49152)
        .expect("connect");
    (client, server)
}

/// Whether `host` has read everything `peer` was to send.
fn has_all(host: &Host, peer: &Host) -> bool {
    host.received.len() >= peer.data.len()
}

/// Runs the plan on one thread, on the simulated clock, until both sides
/// have read everything or the deadline passes; returns the simulated time.
fn transfer(client: &mut Host, server: &mut Host, plan: Plan) -> i64 {
    let mut micros = 0;
    while micros <= DEADLINE_MICROS && !(has_all(server, client) && has_all(client, server)) {
        let now = Instant::from_micros(micros);
        client.step(now, plan.polls);
        server.step(now, plan.polls);
        micros += STEP_MICROS;
    }
    eprintln!(
        "{micros} µs simulated; client {:?}; server {:?}",
        client.dev.stats(),
        server.dev.stats()
    );
    micros
}

/// Both sides read exactly what the other sent; the link lost nothing.
fn check(client: &Host, server: &Host) {
    assert!(client.established, "the handshake completed");
    assert!(server.received == client.data, "client's bytes intact");
    assert!(client.received == server.data, "server's bytes intact");
    let (c, s) = (client.dev.stats(), server.dev.stats());
    assert_eq!((c.tx_oversize, s.tx_oversize), (0, 0));
    // What one side sent, the other received or has still queued.
    assert_eq!(c.tx_packets, s.rx_packets + server.dev.rx_queued() as u64);
    assert_eq!(s.tx_packets, c.rx_packets + client.dev.rx_queued() as u64);
    assert!(c.tx_bytes > TRANSFER as u64);
}

#[test]
fn mtu_1500_default_capacity_transfers_256_kib() {
    let (mut client, mut server) = hosts(Link::pair(1500), ONE_WAY);
    let micros = transfer(&mut client, &mut server, ONE_WAY);
    assert!(micros < DEADLINE_MICROS);
    check(&client, &server);
    assert_eq!(client.dev.stats().tx_full, 0);
}

#[test]
fn mtu_65535_default_capacity_transfers_256_kib() {
    let (mut client, mut server) = hosts(Link::pair(65535), ONE_WAY);
    let micros = transfer(&mut client, &mut server, ONE_WAY);
    assert!(micros < DEADLINE_MICROS);
    check(&client, &server);
    // Jumbo segments: 256 KiB fits in a handful of packets.
    let stats = client.dev.stats();
    assert!(stats.tx_packets < 16, "{stats:?}");
}

/// With two slots per direction the sender hits back-pressure all the time,
/// and TCP still never needs a retransmission timeout.
#[test]
fn tiny_capacity_back_pressure_transfers_256_kib_without_loss() {
    let plan = Plan {
        polls: 8,
        ..ONE_WAY
    };
    let (mut client, mut server) = hosts(Link::pair_with(1500, 2), plan);
    let micros = transfer(&mut client, &mut server, plan);
    assert!(micros < DEADLINE_MICROS);
    check(&client, &server);
    let stats = client.dev.stats();
    assert!(stats.tx_full > 0, "{stats:?}");
}

/// One slot per direction, both sides sending, every segment acknowledged
/// at once: back-pressure both ways, no loss, no deadlock.
#[test]
fn one_slot_both_ways_transfers_without_loss_or_deadlock() {
    let plan = Plan {
        polls: 4,
        both_ways: true,
        immediate_acks: true,
    };
    let (mut client, mut server) = hosts(Link::pair_with(1500, 1), plan);
    let micros = transfer(&mut client, &mut server, plan);
    assert!(micros < DEADLINE_MICROS);
    check(&client, &server);
    let stats = [client.dev.stats(), server.dev.stats()];
    assert!(stats.iter().all(|s| s.tx_full > 0), "{stats:?}");
}

/// The two ends on two threads, each polling as fast as it can on the wall
/// clock, both ways, one slot per direction. Only the bytes are checked:
/// timing depends on the scheduler.
#[test]
fn hosts_on_two_threads_transfer_both_ways() {
    let plan = Plan {
        polls: 1,
        both_ways: true,
        immediate_acks: true,
    };
    let (client, server) = hosts(Link::pair_with(1500, 1), plan);
    let done = Arc::new(AtomicUsize::new(0));
    let start = std::time::Instant::now();
    let run = |mut host: Host, expect: usize| {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut counted = false;
            while done.load(Ordering::Acquire) < 2 {
                let elapsed = start.elapsed();
                assert!(elapsed.as_secs() < 60, "transfer stalled");
                let now = Instant::from_micros(elapsed.as_micros() as i64);
                host.step(now, 1);
                if !counted && host.received.len() >= expect {
                    counted = true;
                    done.fetch_add(1, Ordering::AcqRel);
                }
                std::thread::yield_now();
            }
            host
        })
    };
    let client = run(client, TRANSFER);
    let server = run(server, TRANSFER);
    let (client, server) = (client.join().unwrap(), server.join().unwrap());
    eprintln!(
        "{:?} wall; client {:?}; server {:?}",
        start.elapsed(),
        client.dev.stats(),
        server.dev.stats()
    );
    check(&client, &server);
}

/// Before the server polls, the client's SYN waits in the link, counted
/// as sent on one side and queued on the other (what [`check`] relies on).
#[test]
fn first_client_poll_queues_the_syn() {
    let (mut client, server) = hosts(Link::pair(1500), ONE_WAY);
    client.step(Instant::ZERO, 1);
    let stats: LinkStats = client.dev.stats();
    assert_eq!(stats.tx_packets, 1, "the SYN");
    assert!(stats.tx_bytes >= 40, "IPv4 and TCP headers");
    assert_eq!(server.dev.rx_queued(), 1);
    assert_eq!(server.dev.stats(), LinkStats::default());
}
