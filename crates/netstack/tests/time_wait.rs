//! TIME-WAIT against the segments anyone can send for a closed
//! connection's 4-tuple: the stack answers with its own sequence numbers,
//! only a RST at the next sequence number ends the wait, and only a SYN
//! past it opens a new connection on the tuple.
//!
//! The segments are written straight into the link (the other stack is
//! not polled meanwhile), and the answers read straight out of it.

mod util;

use std::net::SocketAddrV4;

use netdev::LinkDevice;
use smoltcp::phy::{ChecksumCapabilities, Device, RxToken, TxToken};
use smoltcp::time::Duration;
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};
use util::{CLIENT, Pair, SERVER};

/// A segment's numbers and control flag, as written or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seg {
    seq: i32,
    ack: Option<i32>,
    control: TcpControl,
}

/// Writes `seg` from `from` to `to` into `device`'s side of the link.
fn inject(
    device: &mut LinkDevice,
    now: smoltcp::time::Instant,
    from: SocketAddrV4,
    to: SocketAddrV4,
    seg: Seg,
) {
    let tcp = TcpRepr {
        src_port: from.port(),
        dst_port: to.port(),
        control: seg.control,
        seq_number: TcpSeqNumber(seg.seq),
        ack_number: seg.ack.map(TcpSeqNumber),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: *from.ip(),
        dst_addr: *to.ip(),
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let tx = device.transmit(now).expect("link has room");
    tx.consume(ip.buffer_len() + tcp.buffer_len(), |buf| {
        let mut packet = Ipv4Packet::new_unchecked(buf);
        ip.emit(&mut packet, &caps);
        let mut segment = TcpPacket::new_unchecked(packet.payload_mut());
        tcp.emit(
            &mut segment,
            &IpAddress::Ipv4(*from.ip()),
            &IpAddress::Ipv4(*to.ip()),
            &caps,
        );
    });
}

/// Every segment waiting for `device`, read out of the link.
fn answers(device: &mut LinkDevice, now: smoltcp::time::Instant) -> Vec<Seg> {
    let mut out = Vec::new();
    while let Some((rx, _)) = device.receive(now) {
        rx.consume(|buf| {
            let ip = Ipv4Packet::new_checked(buf).unwrap();
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            let control = if tcp.rst() {
                TcpControl::Rst
            } else if tcp.syn() {
                TcpControl::Syn
            } else if tcp.fin() {
                TcpControl::Fin
            } else {
                TcpControl::None
            };
            out.push(Seg {
                seq: tcp.seq_number().0,
                ack: tcp.ack().then(|| tcp.ack_number().0),
                control,
            });
        });
    }
    out
}

/// A connection opened and closed, the side that closed first (`client_first`)
/// left in the light TIME-WAIT and the other side gone. Returns the pair
/// and the (client, server) addresses of the connection.
fn closed(client_first: bool) -> (Pair, SocketAddrV4, SocketAddrV4) {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    let client_addr = p.client.getsockname(c).unwrap();
    let server_addr = SocketAddrV4::new(SERVER, 80);
    if client_first {
        p.client.close(c).unwrap();
    } else {
        p.server.close(s).unwrap();
    }
    p.settle();
    let mut buf = [0u8; 8];
    if client_first {
        assert_eq!(p.server.recv(s, &mut buf), Ok(0));
        p.server.close(s).unwrap();
    } else {
        assert_eq!(p.client.recv(c, &mut buf), Ok(0));
        p.client.close(c).unwrap();
    }
    p.run_until(Duration::from_secs(5), |p| {
        let (waiting, other) = if client_first {
            (p.client.stats(), p.server.stats())
        } else {
            (p.server.stats(), p.client.stats())
        };
        waiting.time_wait == 1 && waiting.connections == 0 && other.connections == 0
    });
    assert_eq!(*client_addr.ip(), CLIENT);
    (p, client_addr, server_addr)
}

#[test]
fn forged_segments_get_our_own_numbers_and_only_the_right_rst_ends_the_wait() {
    let (mut p, client, server) = closed(true);
    let now = p.now;
    let fin = |seq: i32, ack: i32| Seg {
        seq,
        ack: Some(ack),
        control: TcpControl::Fin,
    };
    // A FIN with made-up numbers: the ACK carries the client's own.
    inject(p.server.device_mut(), now, server, client, fin(12_345, 777));
    p.client.poll(now);
    let first = answers(p.server.device_mut(), now);
    assert_eq!(first.len(), 1, "{first:?}");
    let ours = first[0];
    assert_eq!(ours.control, TcpControl::None);
    assert_ne!(ours.seq, 777, "not the forged ACK number echoed");
    assert_ne!(ours.ack, Some(12_346), "not the forged FIN acknowledged");
    // Another one at once: rate-limited, no answer.
    inject(p.server.device_mut(), now, server, client, fin(-5, 3));
    p.client.poll(now);
    assert_eq!(answers(p.server.device_mut(), now), vec![]);
    // Half a second later, other made-up numbers: the same ACK.
    let later = now + Duration::from_millis(500);
    inject(
        p.server.device_mut(),
        later,
        server,
        client,
        fin(99, 1 << 30),
    );
    p.client.poll(later);
    assert_eq!(answers(p.server.device_mut(), later), vec![ours]);
    assert_eq!(p.client.stats().time_wait_acks, 2);
    // A RST anywhere but at the next sequence number is ignored.
    let next = ours.ack.unwrap();
    for seq in [next - 1, next + 1, next.wrapping_add(1 << 20), 12_346] {
        let rst = Seg {
            seq,
            ack: None,
            control: TcpControl::Rst,
        };
        inject(p.server.device_mut(), later, server, client, rst);
        p.client.poll(later);
        assert_eq!(p.client.stats().time_wait, 1, "RST at {seq} ended it");
    }
    assert_eq!(
        answers(p.server.device_mut(), later),
        vec![],
        "RSTs get no answer"
    );
    // At the next sequence number, it ends the wait.
    let rst = Seg {
        seq: next,
        ack: None,
        control: TcpControl::Rst,
    };
    inject(p.server.device_mut(), later, server, client, rst);
    p.client.poll(later);
    assert_eq!(p.client.stats().time_wait, 0);
}

#[test]
fn a_syn_opens_the_tuple_again_only_past_the_old_connections_numbers() {
    // The server closes first: the TIME-WAIT is on the listening side.
    let (mut p, client, server) = closed(false);
    let now = p.now;
    // Learn the numbers: a bare FIN-less probe out of window is ACKed.
    let probe = Seg {
        seq: 1,
        ack: Some(1),
        control: TcpControl::None,
    };
    inject(p.client.device_mut(), now, client, server, probe);
    p.server.poll(now);
    let acks = answers(p.client.device_mut(), now);
    assert_eq!(acks.len(), 1, "{acks:?}");
    let next = acks[0].ack.unwrap();
    // A SYN below the old connection's next number is an old duplicate:
    // no new connection, the TIME-WAIT stays (and the ACK is rate-limited).
    let syn = |seq: i32| Seg {
        seq,
        ack: None,
        control: TcpControl::Syn,
    };
    inject(p.client.device_mut(), now, client, server, syn(next - 100));
    p.server.poll(now);
    let stats = p.server.stats();
    assert_eq!((stats.connections, stats.time_wait), (0, 1), "{stats:?}");
    assert_eq!(answers(p.client.device_mut(), now), vec![]);
    // Past it, the listener takes the SYN: a SYN-ACK, the tuple reused.
    inject(p.client.device_mut(), now, client, server, syn(next + 100));
    p.server.poll(now);
    let stats = p.server.stats();
    assert_eq!((stats.connections, stats.time_wait), (1, 0), "{stats:?}");
    let synack = answers(p.client.device_mut(), now);
    assert_eq!(synack.len(), 1, "{synack:?}");
    assert_eq!(synack[0].control, TcpControl::Syn);
    assert_eq!(synack[0].ack, Some(next + 101));
}
