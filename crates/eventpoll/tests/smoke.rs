//! Quick end-to-end checks of the core paths; the full suites are in
//! `conformance.rs`, `differential.rs`, `model.rs` and `threads.rs`.

use std::sync::Arc;
use std::time::Duration;

use eventpoll::{EfdFlags, EpollEvent, EventFd, EventPoll, Events};

fn efd(init: u64) -> Arc<EventFd> {
    EventFd::with_flags(init, EfdFlags::NONBLOCK).unwrap()
}

fn wait0(ep: &EventPoll, max: usize) -> Vec<(u64, Events)> {
    let mut buf = vec![EpollEvent::default(); max];
    let n = ep.wait(&mut buf, Some(Duration::ZERO)).unwrap();
    buf[..n].iter().map(|e| (e.data, e.events)).collect()
}

#[test]
fn lt_et_oneshot_and_round_robin() {
    let ep = EventPoll::new();
    let a = efd(1);
    let b = efd(1);
    let c = efd(0);
    ep.add(&a, 0, EpollEvent::new(Events::IN, 10)).unwrap();
    ep.add(&b, 1, EpollEvent::new(Events::IN | Events::ET, 11))
        .unwrap();
    ep.add(&c, 2, EpollEvent::new(Events::IN | Events::ONESHOT, 12))
        .unwrap();
    assert_eq!(wait0(&ep, 8), vec![(10, Events::IN), (11, Events::IN)]);
    // LT repeats, ET does not.
    assert_eq!(wait0(&ep, 8), vec![(10, Events::IN)]);
    c.write(1).unwrap();
    assert_eq!(wait0(&ep, 8), vec![(10, Events::IN), (12, Events::IN)]);
    c.write(1).unwrap();
    assert_eq!(wait0(&ep, 8), vec![(10, Events::IN)]);
    // An ET edge on every write, even of 0.
    b.write(0).unwrap();
    assert_eq!(wait0(&ep, 8), vec![(10, Events::IN), (11, Events::IN)]);
    // Round robin with maxevents 1.
    b.write(0).unwrap();
    assert_eq!(wait0(&ep, 1), vec![(10, Events::IN)]);
    assert_eq!(wait0(&ep, 2), vec![(11, Events::IN), (10, Events::IN)]);
    let counters = ep.counters();
    assert!(
        counters.callbacks >= 3 && counters.enqueues >= 3,
        "{counters:?}"
    );
}

#[test]
fn dropping_the_source_removes_its_item() {
    let ep = EventPoll::new();
    let a = efd(1);
    ep.add(&a, 0, EpollEvent::new(Events::IN, 1)).unwrap();
    assert_eq!(ep.len(), 1);
    drop(a);
    assert_eq!(wait0(&ep, 4), vec![]);
    assert_eq!(ep.len(), 0);
    assert_eq!(ep.budget().used(), 0);
}

#[test]
fn nested_epoll_reports_in_and_blocking_wait_wakes() {
    let outer = EventPoll::new();
    let inner = EventPoll::new();
    let a = efd(0);
    inner.add(&a, 0, EpollEvent::new(Events::IN, 7)).unwrap();
    outer
        .add(&inner, 1, EpollEvent::new(Events::IN, 8))
        .unwrap();
    assert_eq!(wait0(&outer, 4), vec![]);
    let writer = a.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        writer.write(1).unwrap();
    });
    let mut buf = [EpollEvent::default(); 4];
    let n = outer.wait(&mut buf, None).unwrap();
    assert_eq!((n, buf[0].data, buf[0].events), (1, 8, Events::IN));
    assert_eq!(wait0(&inner, 4), vec![(7, Events::IN)]);
    t.join().unwrap();
}
