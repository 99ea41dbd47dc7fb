//! End-to-end checks of the facade: the re-exported crates work together.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::Duration;

use usertcp::eventpoll::{CtlOp, EpollEvent, Errno, EventFd, EventPoll, Events};
use usertcp::netdev::Link;
use usertcp::netstack::{AF_INET, SOCK_NONBLOCK, SOCK_STREAM, Stack, StackConfig};

#[test]
fn eventfd_write_from_another_thread_wakes_a_blocked_wait() {
    let ep = EventPoll::new();
    let efd = EventFd::new(0);
    ep.add(&efd, 0, EpollEvent::new(Events::IN | Events::ET, 7))
        .unwrap();
    let writer = {
        let efd = efd.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            efd.write(5).unwrap();
        })
    };
    let mut events = [EpollEvent::default(); 4];
    let n = ep.wait(&mut events, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(&events[..n], &[EpollEvent::new(Events::IN, 7)]);
    assert_eq!(efd.read(), Ok(5));
    writer.join().unwrap();
}

#[test]
fn a_stack_epoll_sees_a_connection_and_an_eventfd() {
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    let (a, b) = Link::pair(1500);
    let mut now = smoltcp_now(0);
    let mut server = Stack::new(a, StackConfig::new(SERVER, 15), now).unwrap();
    let mut client = Stack::new(b, StackConfig::new(CLIENT, 15), now).unwrap();
    let listener = server
        .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
        .unwrap();
    server
        .bind(listener, SocketAddrV4::new(SERVER, 80))
        .unwrap();
    server.listen(listener, 4).unwrap();
    let efd = server.eventfd(0, 0).unwrap();
    let ep = server.epoll_create1(0).unwrap();
    for (fd, data) in [(listener, 1), (efd, 2)] {
        let ev = EpollEvent::new(Events::IN, data);
        server
            .epoll_ctl(ep, CtlOp::Add.to_raw(), fd, Some(&ev))
            .unwrap();
    }
    let c = client
        .socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)
        .unwrap();
    assert_eq!(
        client.connect(c, SocketAddrV4::new(SERVER, 80)),
        Err(Errno::EINPROGRESS)
    );
    server.write(efd, &1u64.to_ne_bytes()).unwrap();
    let mut events = [EpollEvent::default(); 4];
    let mut seen = Vec::new();
    for ms in 1..1000 {
        server.poll(now);
        client.poll(now);
        let n = server.epoll_wait(ep, &mut events, 4, 0).unwrap();
        seen = events[..n].iter().map(|e| e.data).collect();
        if seen.contains(&1) {
            break;
        }
        now = smoltcp_now(ms);
    }
    // The eventfd was ready first, the listener once the handshake completed.
    assert_eq!(seen, vec![2, 1]);
    assert!(server.accept4(listener, SOCK_NONBLOCK).is_ok());
}

fn smoltcp_now(ms: i64) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_millis(ms)
}
