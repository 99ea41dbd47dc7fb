//! The stack on `Medium::Ethernet` (what runs on a TAP): two stacks on an
//! in-memory Ethernet wire resolve each other by ARP, connect and exchange
//! data with checksums computed and verified; and the neighbor cache never
//! costs a one-second stall (a SYN from a peer that skipped ARP, a server
//! that sends first after minutes of silence).

mod util;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::rc::Rc;

use eventpoll::Errno;
use netstack::{AF_INET, Lookahead, SOCK_NONBLOCK, SOCK_STREAM, Stack, StackConfig};
use smoltcp::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{Ipv4Packet, TcpPacket};

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

/// Both directions of the wire, and every frame that crossed it.
#[derive(Default)]
struct Medium2 {
    queues: [VecDeque<Vec<u8>>; 2],
    /// (sender side, frame).
    log: Vec<(usize, Vec<u8>)>,
}

/// One end of an in-memory Ethernet wire. Cloning gives another handle on
/// the same end (to replace a stack on it).
#[derive(Clone)]
struct Wire {
    shared: Rc<RefCell<Medium2>>,
    side: usize,
}

fn wire() -> (Wire, Wire) {
    let shared = Rc::new(RefCell::new(Medium2::default()));
    (
        Wire {
            shared: shared.clone(),
            side: 0,
        },
        Wire { shared, side: 1 },
    )
}

impl Wire {
    /// ARP frames sent by this side so far.
    fn arps_sent(&self) -> usize {
        let m = self.shared.borrow();
        m.log
            .iter()
            .filter(|(side, f)| *side == self.side && f[12..14] == ETHERTYPE_ARP)
            .count()
    }
}

struct Rx(Vec<u8>);
struct Tx(Wire);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        let mut m = self.0.shared.borrow_mut();
        m.log.push((self.0.side, frame.clone()));
        m.queues[1 - self.0.side].push_back(frame);
        r
    }
}

/// The wire shows its queue, so these tests also run the stack's
/// prefetching over Ethernet frames.
impl Lookahead for Wire {
    fn peek<R>(&self, k: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.shared.borrow().queues[self.side]
            .get(k)
            .map(|frame| f(frame))
    }

    fn waiting(&self) -> usize {
        self.shared.borrow().queues[self.side].len()
    }
}

impl Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx)> {
        let frame = self.shared.borrow_mut().queues[self.side].pop_front()?;
        Some((Rx(frame), Tx(self.clone())))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx> {
        Some(Tx(self.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}

fn stack(dev: Wire, addr: Ipv4Addr, seed: u64, now: Instant) -> Stack<Wire> {
    let mut config = StackConfig::new(addr, 24);
    config.seed = Some(seed);
    // Prefetching on at any count: these tests also run it over Ethernet.
    config.prefetch_min_conns = 0;
    Stack::new(dev, config, now).unwrap()
}

/// Polls both stacks 1 ms apart until `done` holds; returns the time it
/// took, or panics after `limit`.
fn run(
    a: &mut Stack<Wire>,
    b: &mut Stack<Wire>,
    now: &mut Instant,
    limit: Duration,
    mut done: impl FnMut(&mut Stack<Wire>, &mut Stack<Wire>) -> bool,
) -> Duration {
    let start = *now;
    loop {
        a.poll(*now);
        b.poll(*now);
        if done(a, b) {
            return *now - start;
        }
        assert!(*now - start < limit, "not done within {limit}");
        *now += Duration::from_millis(1);
    }
}

fn listen(s: &mut Stack<Wire>, port: u16) -> i32 {
    let fd = s.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0).unwrap();
    s.bind(fd, SocketAddrV4::new(SERVER, port)).unwrap();
    s.listen(fd, 16).unwrap();
    fd
}

fn connect(s: &mut Stack<Wire>, port: u16) -> i32 {
    let fd = s.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0).unwrap();
    assert_eq!(
        s.connect(fd, SocketAddrV4::new(SERVER, port)),
        Err(Errno::EINPROGRESS)
    );
    fd
}

/// Connects client to server and returns (client fd, server fd, time the
/// handshake took until accept).
fn connected(
    server: &mut Stack<Wire>,
    client: &mut Stack<Wire>,
    listener: i32,
    now: &mut Instant,
) -> (i32, i32, Duration) {
    let c = connect(client, 80);
    let mut accepted = None;
    let took = run(server, client, now, Duration::from_secs(5), |s, _| {
        accepted = accepted.or_else(|| s.accept4(listener, SOCK_NONBLOCK).ok());
        accepted.is_some()
    });
    (c, accepted.unwrap().0, took)
}

/// A server and a client stack on an Ethernet wire, connected.
struct Connected {
    /// The server's end of the wire.
    wire: Wire,
    server: Stack<Wire>,
    client: Stack<Wire>,
    /// The client's descriptor.
    c: i32,
    /// The server's (accepted) descriptor.
    s: i32,
    now: Instant,
}

fn two_connected() -> Connected {
    let (a, b) = wire();
    let mut now = Instant::from_secs(1);
    let mut server = stack(a.clone(), SERVER, 1, now);
    let mut client = stack(b, CLIENT, 2, now);
    let l = listen(&mut server, 80);
    let (c, s, _) = connected(&mut server, &mut client, l, &mut now);
    Connected {
        wire: a,
        server,
        client,
        c,
        s,
        now,
    }
}

fn recv_all(s: &mut Stack<Wire>, fd: i32, into: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.recv(fd, &mut buf) {
        if n == 0 {
            break;
        }
        into.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn ethernet_stacks_resolve_by_arp_then_exchange_data_both_ways() {
    let (a, b) = wire();
    let mut now = Instant::from_secs(1);
    let mut server = stack(a.clone(), SERVER, 1, now);
    let mut client = stack(b.clone(), CLIENT, 2, now);
    let l = listen(&mut server, 80);
    let (c, s, _) = connected(&mut server, &mut client, l, &mut now);
    // The client asked for the server's MAC; the server learned the
    // client's from that request and needed no ARP of its own.
    assert_eq!((b.arps_sent(), a.arps_sent()), (1, 1), "request, reply");
    let first = a.shared.borrow().log[0].1.clone();
    assert_eq!(&first[..6], &[0xff; 6], "the request is broadcast");

    let up: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let down = b"pong".repeat(1000);
    let mut sent_up = 0;
    let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
    assert_eq!(server.send(s, &down), Ok(down.len()));
    run(
        &mut server,
        &mut client,
        &mut now,
        Duration::from_secs(10),
        |sv, cl| {
            if sent_up < up.len() {
                sent_up += cl.send(c, &up[sent_up..]).unwrap_or(0);
            }
            recv_all(sv, s, &mut got_up);
            recv_all(cl, c, &mut got_down);
            got_up.len() == up.len() && got_down.len() == down.len()
        },
    );
    assert_eq!(got_up, up);
    assert_eq!(got_down, down);
    // Frames on the wire carry Ethernet headers with the stacks' MACs.
    let m = a.shared.borrow();
    let (side, frame) = m.log.last().unwrap();
    if *side == 0 {
        assert_ipv4_frame(frame, SERVER, CLIENT);
    } else {
        assert_ipv4_frame(frame, CLIENT, SERVER);
    }
}

/// Asserts that `frame` carries IPv4 from the stack at `src` to the one at
/// `dst`, with their (default) MACs.
fn assert_ipv4_frame(frame: &[u8], src: Ipv4Addr, dst: Ipv4Addr) {
    let mac = |ip: Ipv4Addr| {
        let o = ip.octets();
        [2, 0, o[0], o[1], o[2], o[3]]
    };
    assert_eq!(&frame[0..6], &mac(dst));
    assert_eq!(&frame[6..12], &mac(src));
    assert_eq!(&frame[12..14], &[0x08, 0x00]);
}

#[test]
fn corrupted_tcp_checksum_is_dropped_on_ethernet() {
    let Connected {
        wire: a,
        mut server,
        mut client,
        c,
        s,
        mut now,
    } = two_connected();
    assert_eq!(client.send(c, b"hello"), Ok(5));
    client.poll(now);
    {
        // Flip a payload byte of the data segment in flight to the server.
        let mut m = a.shared.borrow_mut();
        let frame = m.queues[0].back_mut().expect("the data segment is queued");
        let last = frame.len() - 1;
        frame[last] ^= 0x20;
    }
    server.poll(now);
    let mut buf = [0u8; 16];
    assert_eq!(
        server.recv(s, &mut buf),
        Err(Errno::EAGAIN),
        "bad checksum taken"
    );
    // The retransmission (after smoltcp's RTO) gets through intact.
    let mut got = Vec::new();
    run(
        &mut server,
        &mut client,
        &mut now,
        Duration::from_secs(5),
        |sv, _| {
            recv_all(sv, s, &mut got);
            !got.is_empty()
        },
    );
    assert_eq!(got, b"hello");
}

#[test]
fn syn_from_a_peer_that_skipped_arp_is_answered_at_once() {
    let (a, b) = wire();
    let mut now = Instant::from_secs(1);
    let mut server = stack(a.clone(), SERVER, 1, now);
    let mut client = stack(b, CLIENT, 2, now);
    let l = listen(&mut server, 80);
    connected(&mut server, &mut client, l, &mut now);
    // The server restarts (same address, same MAC); the client still has
    // it in its ARP cache and sends its next SYN without asking.
    drop(server);
    let mut server = stack(a.clone(), SERVER, 3, now);
    let l = listen(&mut server, 80);
    let arps = a.arps_sent();
    let (_, _, took) = connected(&mut server, &mut client, l, &mut now);
    assert_eq!(
        a.arps_sent(),
        arps,
        "the new server learned the MAC from the SYN"
    );
    assert!(took < Duration::from_millis(100), "handshake took {took}");
    assert!(server.stats().neighbor_feeds >= 1);
}

#[test]
fn server_sends_first_after_minutes_of_silence_without_a_stall() {
    let Connected {
        wire: a,
        mut server,
        mut client,
        c,
        s,
        mut now,
    } = two_connected();
    // Five quiet minutes: smoltcp's 60 s neighbor entries would be long
    // expired. The stacks poll now and then, as an idle server does.
    for _ in 0..10 {
        now += Duration::from_secs(30);
        server.poll(now);
        client.poll(now);
    }
    let arps = a.arps_sent();
    assert_eq!(server.send(s, b"late news"), Ok(9));
    let mut got = Vec::new();
    let took = run(
        &mut server,
        &mut client,
        &mut now,
        Duration::from_secs(5),
        |_, cl| {
            recv_all(cl, c, &mut got);
            got.len() == 9
        },
    );
    assert_eq!(got, b"late news");
    assert_eq!(a.arps_sent(), arps, "the pinned entry was still valid");
    assert!(took < Duration::from_millis(100), "delivery took {took}");
}

#[test]
fn multicast_mac_is_refused_and_ip_medium_still_works() {
    let (a, _b) = wire();
    let mut config = StackConfig::new(SERVER, 24);
    config.mac = smoltcp::wire::EthernetAddress([0x01, 0, 0x5e, 0, 0, 1]);
    assert_eq!(
        Stack::new(a, config, Instant::ZERO).unwrap_err(),
        Errno::EINVAL
    );
    let (l, _) = netdev::Link::pair(1500);
    assert!(Stack::new(l, StackConfig::new(SERVER, 24), Instant::ZERO).is_ok());
}

#[test]
fn time_wait_acknowledges_a_fin_sent_again_with_ethernet_headers() {
    let Connected {
        wire: a,
        mut server,
        mut client,
        c,
        s,
        mut now,
    } = two_connected();
    // The client closes first (and ends in TIME-WAIT, its connection freed).
    client.close(c).unwrap();
    let mut buf = [0u8; 16];
    run(
        &mut server,
        &mut client,
        &mut now,
        Duration::from_secs(5),
        |sv, _| sv.recv(s, &mut buf) == Ok(0),
    );
    // The server's FIN reaches the client; the client's ACK of it is lost.
    server.close(s).unwrap();
    server.poll(now);
    client.poll(now);
    {
        let mut m = a.shared.borrow_mut();
        let before = m.queues[0].len();
        m.queues[0].retain(|f| f[12..14] != [0x08, 0x00] || !util::pure_ack(&f[14..]));
        assert_eq!(before - m.queues[0].len(), 1, "one ACK lost");
    }
    assert_eq!(client.stats().time_wait, 1);
    assert_eq!(server.stats().connections, 1, "LAST-ACK");
    // The server sends its FIN again; the ACK from TIME-WAIT passes its
    // checksum checks and ends its connection.
    run(
        &mut server,
        &mut client,
        &mut now,
        Duration::from_secs(5),
        |sv, _| sv.stats().connections == 0,
    );
    assert_eq!(client.stats().time_wait_acks, 1);
    let m = a.shared.borrow();
    let (side, frame) = m.log.iter().rev().find(|(side, _)| *side == 1).unwrap();
    assert_eq!(*side, 1);
    assert!(
        util::pure_ack(&frame[14..]),
        "the client's last frame is the ACK"
    );
    assert_ipv4_frame(frame, CLIENT, SERVER);
    // The server's last frame (its FIN) made into a RST, at `advance` past
    // the FIN's sequence number.
    let (_, fin) = m.log.iter().rev().find(|(side, _)| *side == 0).unwrap();
    let fin = fin.clone();
    drop(m);
    let rst_at = |advance: usize| {
        let mut rst = fin.clone();
        let mut ip = Ipv4Packet::new_unchecked(&mut rst[14..]);
        let (src, dst) = (ip.src_addr().into(), ip.dst_addr().into());
        let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
        assert!(tcp.fin());
        tcp.set_fin(false);
        tcp.set_rst(true);
        tcp.set_seq_number(tcp.seq_number() + advance);
        tcp.fill_checksum(&src, &dst);
        rst
    };
    // At the FIN's own number (one before the next): out of window, no
    // effect, no answer.
    let acks = client.stats().time_wait_acks;
    a.shared.borrow_mut().queues[1].push_back(rst_at(0));
    client.poll(now);
    assert_eq!(client.stats().time_wait, 1, "{:?}", client.stats());
    assert_eq!(client.stats().time_wait_acks, acks);
    // At the next sequence number it ends the TIME-WAIT (Linux's default).
    a.shared.borrow_mut().queues[1].push_back(rst_at(1));
    client.poll(now);
    assert_eq!(client.stats().time_wait, 0, "{:?}", client.stats());
}
