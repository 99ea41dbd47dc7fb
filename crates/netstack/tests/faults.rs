//! Two stacks over an unreliable wire (`netdev::Faulty` on both ends of
//! the link): data survives loss, duplication, reordering and corruption,
//! and a lost ACK of a FIN is answered from TIME-WAIT.

mod util;

use eventpoll::Events;
use netdev::FaultConfig;
use smoltcp::time::Duration;
use util::{CLIENT, Pair, pump_bulk, ready, watch};

/// Both directions at once: 2 % loss, 1 % duplicates, 2 % reordered, 1 %
/// corrupted, from fixed seeds.
fn rough(seed: u64) -> FaultConfig {
    FaultConfig {
        loss: 0.02,
        duplicate: 0.01,
        reorder: 0.02,
        corrupt: 0.01,
        seed,
    }
}

#[test]
fn one_megabyte_each_way_survives_an_unreliable_wire() {
    let mut p = Pair::faulty(rough(1), rough(2));
    let l = p.listen(5001, 4);
    let (c, s) = p.connected(l, 5001);
    pump_bulk(&mut p, c, s, 1 << 20);
    // Every kind of fault hit both directions (the bytes arrived intact
    // all the same: corrupt packets failed their checksums).
    for stats in [p.server.device().stats(), p.client.device().stats()] {
        assert!(
            stats.lost > 0 && stats.duplicated > 0 && stats.reordered > 0 && stats.corrupted > 0,
            "{stats:?}"
        );
    }
}

#[test]
fn many_connections_echo_over_an_unreliable_wire() {
    let mut p = Pair::faulty(rough(3), rough(4));
    let l = p.listen(7, 64);
    let pairs: Vec<(i32, i32)> = (0..20).map(|_| p.connected(l, 7)).collect();
    for (i, &(c, _)) in pairs.iter().enumerate() {
        let msg = format!("request {i}");
        assert_eq!(p.client.send(c, msg.as_bytes()), Ok(msg.len()));
    }
    let mut answered = vec![false; pairs.len()];
    let mut buf = [0u8; 64];
    p.run_until(Duration::from_secs(60), |p| {
        for (i, &(c, s)) in pairs.iter().enumerate() {
            if let Ok(n) = p.server.recv(s, &mut buf) {
                p.server.send(s, &buf[..n]).unwrap();
            }
            if let Ok(n) = p.client.recv(c, &mut buf) {
                assert_eq!(&buf[..n], format!("request {i}").as_bytes());
                answered[i] = true;
            }
        }
        answered.iter().all(|&a| a)
    });
}

/// Whether `packet` (IPv4) is a pure ACK from the client.
fn pure_ack_from_client(packet: &[u8]) -> bool {
    packet.get(12..16) == Some(&CLIENT.octets()[..]) && util::pure_ack(packet)
}

#[test]
fn a_lost_ack_of_the_last_fin_is_sent_again_from_time_wait() {
    let mut p = Pair::faulty(FaultConfig::new(5), FaultConfig::new(6));
    let l = p.listen(80, 4);
    let (c, s) = p.connected(l, 80);
    let sep = watch(&mut p.server, s, Events::IN | Events::RDHUP);
    // The client closes first and so ends in TIME-WAIT; its descriptor is
    // gone, so the connection is freed and only the 4-tuple stays.
    p.client.close(c).unwrap();
    p.settle();
    assert!(ready(&mut p.server, sep)[0].1.contains(Events::RDHUP));
    // The server's FIN goes out; the client's ACK of it is lost.
    let mut dropped = false;
    p.server.device_mut().drop_if(move |packet| {
        let drop = !dropped && pure_ack_from_client(packet);
        dropped |= drop;
        drop
    });
    p.server.close(s).unwrap();
    p.settle();
    assert_eq!(p.server.device().stats().filtered, 1, "the ACK was lost");
    let client = p.client.stats();
    assert_eq!((client.connections, client.time_wait), (0, 1), "{client:?}");
    assert_eq!(p.server.stats().connections, 1, "LAST-ACK, waiting");
    // The server sends its FIN again after its retransmission timeout
    // (smoltcp's minimum: 1 s); the client acknowledges it from TIME-WAIT,
    // and the server's connection is done (without that ACK, it would
    // wait for the orphan timeout, a minute).
    p.run_until(Duration::from_secs(5), |p| {
        p.server.stats().connections == 0
    });
    let client = p.client.stats();
    assert_eq!(client.time_wait_acks, 1, "{client:?}");
    assert_eq!(client.time_wait, 1, "TIME-WAIT goes on");
    let server = p.server.stats();
    assert_eq!(
        (server.demux, server.fds),
        (0, 2),
        "the listener and the epoll only: {server:?}"
    );
}
