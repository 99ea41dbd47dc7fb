//! The opt-in readiness descriptor of a link end: readable after a packet
//! arrives for an armed receiver, silent otherwise, and it wakes a thread
//! blocked on it.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use netdev::{Link, LinkDevice};
use smoltcp::phy::{Device, TxToken};
use smoltcp::time::Instant;

fn send(dev: &mut LinkDevice, byte: u8) {
    dev.transmit(Instant::ZERO)
        .expect("room in the ring")
        .consume(1, |b| b[0] = byte);
}

/// A duplicate of the readiness descriptor to read the signal from.
fn signal_reader(dev: &LinkDevice) -> UnixDatagram {
    let owned = dev.readiness_fd().unwrap().try_clone_to_owned().unwrap();
    UnixDatagram::from(owned)
}

/// True if a signal is waiting (and consumes it). The descriptor is
/// non-blocking already.
fn signalled(r: &UnixDatagram) -> bool {
    match r.recv(&mut [0u8; 8]) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn armed_receiver_is_signalled_once_per_arming() {
    let (mut a, b) = Link::pair(1500);
    let r = signal_reader(&b);
    assert!(!b.arm_readiness(), "nothing queued yet");
    assert!(!signalled(&r));
    send(&mut a, 1);
    assert!(signalled(&r), "a packet for an armed receiver signals");
    send(&mut a, 2);
    assert!(!signalled(&r), "disarmed after one signal");
    assert!(b.arm_readiness(), "packets already queued: do not sleep");
}

#[test]
fn unarmed_receiver_gets_no_signal() {
    let (mut a, b) = Link::pair(1500);
    let r = signal_reader(&b);
    send(&mut a, 1);
    assert!(!signalled(&r));
}

#[test]
fn arming_drains_stale_signals() {
    let (mut a, mut b) = Link::pair(1500);
    let r = signal_reader(&b);
    assert!(!b.arm_readiness());
    send(&mut a, 1);
    // The receiver takes the packet without reading the signal, then arms
    // again: the stale signal must be gone.
    let (rx, _) = b.receive(Instant::ZERO).unwrap();
    smoltcp::phy::RxToken::consume(rx, |_| ());
    assert!(!b.arm_readiness());
    assert!(!signalled(&r));
}

#[test]
fn blocked_receiver_wakes_when_peer_sends_from_another_thread() {
    let (mut a, mut b) = Link::pair(1500);
    let r = signal_reader(&b);
    for round in 0..200u8 {
        assert!(!b.arm_readiness(), "round {round}: nothing queued");
        let sender = std::thread::spawn(move || {
            send(&mut a, round);
            a
        });
        // Poll the duplicate without blocking: it shares the description,
        // whose O_NONBLOCK the device relies on.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !signalled(&r) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: the signal never came (lost wake-up)"
            );
            std::thread::yield_now();
        }
        a = sender.join().unwrap();
        let (rx, _) = b.receive(Instant::ZERO).unwrap();
        assert_eq!(smoltcp::phy::RxToken::consume(rx, |p| p[0]), round);
    }
}

#[test]
fn arrival_hook_replaces_the_signal_when_it_handles_the_packet() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (mut a, b) = Link::pair(1500);
    let r = signal_reader(&b);
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = Arc::new(AtomicBool::new(true));
    let (c, h) = (calls.clone(), handle.clone());
    b.set_arrival_hook(Box::new(move || {
        c.fetch_add(1, Ordering::SeqCst);
        h.load(Ordering::SeqCst)
    }))
    .unwrap();
    assert!(b.set_arrival_hook(Box::new(|| true)).is_err());
    send(&mut a, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "not armed: no hook");
    assert!(b.arm_readiness());
    let mut b = b;
    while let Some((rx, _)) = b.receive(Instant::ZERO) {
        smoltcp::phy::RxToken::consume(rx, |_| ());
    }
    assert!(!b.arm_readiness());
    send(&mut a, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(!signalled(&r), "the hook handled it: no signal");
    handle.store(false, Ordering::SeqCst);
    assert!(b.arm_readiness());
    let (rx, _) = b.receive(Instant::ZERO).unwrap();
    smoltcp::phy::RxToken::consume(rx, |_| ());
    assert!(!b.arm_readiness());
    send(&mut a, 3);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(signalled(&r), "the hook declined: the signal is sent");
}
