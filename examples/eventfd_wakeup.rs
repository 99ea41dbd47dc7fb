//! Waking an event loop from another thread with an `EventFd`: the classic
//! use of eventfd beside epoll, and the smallest program that shows a
//! source's wake-up travelling to a blocked `epoll_wait`.
//!
//! Run (one terminal, no privileges):
//!
//! ```text
//! cargo run --example eventfd_wakeup
//! ```
//!
//! Expected output (three wake-ups from the worker, then the counters):
//!
//! ```text
//! woken: data=7 events=IN count=1
//! woken: data=7 events=IN count=2
//! woken: data=7 events=IN count=3
//! counters: callbacks=6 enqueues=3 wakeups=3
//! ```
//!
//! Six callbacks for three events: every write wakes the eventfd's queue
//! with key `IN` (queued, a waiter woken), and every read wakes it with key
//! `OUT`, which the item's `IN`-only interest filters out (EPOLL_SPEC A4).
//! On a busy machine two writes can land before the loop wakes: then one
//! line shows two more in `count` and the counters are lower.

use std::thread;
use std::time::Duration;

use usertcp::eventpoll::{EpollEvent, EventFd, EventPoll, Events};

fn main() {
    let ep = EventPoll::new();
    let efd = EventFd::new(0);
    // Edge-triggered: one report per write (every eventfd write is an edge).
    ep.add(&efd, 0, EpollEvent::new(Events::IN | Events::ET, 7))
        .expect("a fresh eventfd can be added");

    let worker = {
        let efd = efd.clone();
        thread::spawn(move || {
            for _ in 0..3 {
                thread::sleep(Duration::from_millis(20));
                efd.write(1).expect("the counter cannot overflow here");
            }
        })
    };

    let mut events = [EpollEvent::default(); 4];
    let mut seen = 0;
    while seen < 3 {
        // Blocks on the epoll's condvar until the worker's write wakes it.
        let n = ep.wait(&mut events, None).expect("a buffer of 4 is valid");
        for e in &events[..n] {
            let count = efd.read().expect("IN means the counter is non-zero");
            seen += count;
            println!("woken: data={} events={:?} count={seen}", e.data, e.events);
        }
    }
    worker.join().expect("the worker does not panic");
    let c = ep.counters();
    println!(
        "counters: callbacks={} enqueues={} wakeups={}",
        c.callbacks, c.enqueues, c.wakeups
    );
}
