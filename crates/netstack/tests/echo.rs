//! Epoll echo servers (level- and edge-triggered) and many concurrent
//! echoing connections, then the leak check.

mod util;

use eventpoll::{CtlOp, EpollEvent, Errno, Events};
use netdev::LinkDevice;
use netstack::{SOCK_NONBLOCK, Stack, TIME_WAIT};
use smoltcp::time::Duration;
use util::{Pair, add, ready};

/// One pass of an epoll echo server: handle every ready event.
fn serve(st: &mut Stack<LinkDevice>, ep: i32, listener: i32, et: bool) {
    let mut buf = [0u8; 4096];
    for (fd, ev) in ready(st, ep) {
        if fd == listener {
            // ET must drain the accept queue; LT may take one per event.
            loop {
                match st.accept4(listener, SOCK_NONBLOCK) {
                    Ok((c, _)) => {
                        let mode = if et { Events::ET } else { Events::empty() };
                        add(st, ep, c, Events::IN | Events::RDHUP | mode);
                    }
                    Err(e) => {
                        assert_eq!(e, Errno::EAGAIN);
                        break;
                    }
                }
                if !et {
                    break;
                }
            }
            continue;
        }
        assert!(ev.contains(Events::IN), "{fd}: {ev:?}");
        loop {
            match st.recv(fd, &mut buf) {
                Ok(0) => {
                    st.close(fd).unwrap();
                    break;
                }
                Ok(n) => assert_eq!(st.send(fd, &buf[..n]), Ok(n)),
                Err(e) => {
                    assert_eq!(e, Errno::EAGAIN);
                    break;
                }
            }
            if !et {
                break;
            }
        }
    }
}

/// `n` clients each send one message, wait for its echo, and close;
/// a server echoes through one epoll. Then everything is closed and the
/// stacks must report no leftovers.
fn echo(n: usize, et: bool, buffer: usize) {
    echo_over(Pair::with_buffers(buffer), n, et);
}

fn echo_over(mut p: Pair, n: usize, et: bool) {
    let l = p.listen(7, 4096);
    let sep = p.server.epoll_create1(0).unwrap();
    let lmode = if et { Events::ET } else { Events::empty() };
    add(&mut p.server, sep, l, Events::IN | lmode);
    let cep = p.client.epoll_create1(0).unwrap();
    let mut clients = std::collections::HashMap::new();
    for i in 0..n {
        let c = p.connect(7);
        add(&mut p.client, cep, c, Events::OUT | Events::IN | Events::ET);
        clients.insert(c, (format!("hello {i}"), false));
    }
    let mut done = 0;
    let mut rounds = 0;
    let mut buf = [0u8; 64];
    let mut peak_tables = [0usize; 2];
    while done < n {
        for (peak, st) in peak_tables.iter_mut().zip([&p.server, &p.client]) {
            *peak = (*peak).max(st.stats().table_bytes);
        }
        rounds += 1;
        assert!(rounds < 100_000, "echo stalled with {done}/{n} done");
        p.server.poll(p.now);
        serve(&mut p.server, sep, l, et);
        p.client.poll(p.now);
        let mut evs = vec![EpollEvent::default(); 1024];
        let k = p.client.epoll_wait(cep, &mut evs, 1024, 0).unwrap();
        for e in &evs[..k] {
            let fd = e.data as i32;
            let (msg, sent) = clients.get_mut(&fd).unwrap();
            assert!(!e.events.contains(Events::ERR), "{fd}: {:?}", e.events);
            if e.events.contains(Events::OUT) && !*sent {
                assert_eq!(p.client.send(fd, msg.as_bytes()), Ok(msg.len()));
                *sent = true;
            }
            if e.events.contains(Events::IN) {
                let got = p.client.recv(fd, &mut buf).unwrap();
                assert_eq!(&buf[..got], msg.as_bytes(), "echo of {fd}");
                p.client.close(fd).unwrap();
                clients.remove(&fd);
                done += 1;
            }
        }
        if k == 0 && !p.server.poll(p.now) && !p.client.poll(p.now) {
            p.advance(Duration::from_millis(50));
        }
    }
    // Let the closes finish (server sees EOF and closes), then TIME-WAIT.
    p.run_until(Duration::from_secs(30), |p| {
        serve(&mut p.server, sep, l, et);
        p.server.stats().connections == 0 && p.client.stats().connections == 0
    });
    let tw = p.client.stats().time_wait;
    assert_eq!(tw, n, "the active closer keeps only tuples");
    p.run_until(TIME_WAIT + Duration::from_secs(1), |p| {
        p.client.stats().time_wait == 0
    });
    p.server.close(l).unwrap();
    p.server.close(sep).unwrap();
    p.client.close(cep).unwrap();
    p.settle();
    for (peak, st) in peak_tables.into_iter().zip([&p.server, &p.client]) {
        let s = st.stats();
        if n >= 10_000 {
            // The tables gave back their peak (for 10,000 connections,
            // 2.8-6.3 MB) down to the floor they keep: room for a few
            // thousand connections, under 2 MiB.
            assert!(s.table_bytes < 2 << 20, "peak {peak}: {s:?}");
            assert!(peak > 2 * s.table_bytes, "peak {peak}: {s:?}");
        }
        assert_eq!(
            (
                s.fds,
                s.sockets,
                s.connections,
                s.demux,
                s.timers,
                s.time_wait
            ),
            (0, 0, 0, 0, 0, 0),
            "{s:?}"
        );
        assert!(s.pooled <= n, "{s:?}");
        // Every connection had default-size buffers from the huge-page
        // arena; those of freed connections went back to it, except the
        // two each pooled socket set keeps.
        assert!(s.arena_bytes > 0, "{s:?}");
        assert_eq!(s.arena_buffers, 2 * s.pooled, "{s:?}");
    }
}

#[test]
fn level_triggered_epoll_echo_server() {
    echo(50, false, netstack::DEFAULT_BUFFER);
}

#[test]
fn edge_triggered_epoll_echo_server() {
    echo(50, true, netstack::DEFAULT_BUFFER);
}

#[test]
fn ten_thousand_concurrent_echoing_connections() {
    echo(10_000, true, 4096);
}

/// A link of 4 packets refuses almost every transmit: egress passes stop
/// at the first refusal and the connections not yet served keep their
/// turn. Every connection must still get its echo (nothing lost, nothing
/// stuck on the dirty list).
#[test]
fn tiny_link_back_pressure_loses_no_connection() {
    echo_over(Pair::with_link(4096, 4), 1000, false);
}

#[test]
fn closing_last_fd_removes_epoll_registration_dup_keeps_it() {
    let mut p = Pair::new();
    let l = p.listen(80, 4);
    let (c, _s) = p.connected(l, 80);
    let ep = p.client.epoll_create1(0).unwrap();
    add(&mut p.client, ep, c, Events::OUT);
    let d = p.client.dup(c).unwrap();
    p.client.close(c).unwrap();
    assert_eq!(
        ready(&mut p.client, ep),
        vec![(c, Events::OUT)],
        "dup keeps it"
    );
    p.client.close(d).unwrap();
    assert_eq!(ready(&mut p.client, ep), vec![], "last close removes it");
    let ev = EpollEvent::new(Events::IN, 0);
    assert_eq!(
        p.client.epoll_ctl(ep, CtlOp::Mod.to_raw(), c, Some(&ev)),
        Err(Errno::EBADF)
    );
    p.settle();
    assert_eq!(p.client.stats().sockets, 0);
}

#[test]
fn one_request_among_many_idle_connections_touches_one_connection() {
    let mut p = Pair::with_buffers(4096);
    let l = p.listen(7, 4096);
    let mut conns = Vec::new();
    for _ in 0..2000 {
        conns.push(p.connect(7));
    }
    let mut accepted = Vec::new();
    p.run_until(Duration::from_secs(30), |p| {
        while let Ok((fd, _)) = p.server.accept4(l, SOCK_NONBLOCK) {
            accepted.push(fd);
        }
        accepted.len() == conns.len()
    });
    // Let delayed ACKs and other timers of the handshakes run out.
    for _ in 0..10 {
        p.advance(Duration::from_secs(1));
    }
    let (c, s) = p.connected(l, 7);
    p.advance(Duration::from_secs(1));
    let before = (p.client.stats(), p.server.stats());
    p.client.send(c, b"ping").unwrap();
    p.settle();
    let mut buf = [0u8; 8];
    assert_eq!(p.server.recv(s, &mut buf), Ok(4));
    p.server.send(s, b"pong").unwrap();
    p.settle();
    assert_eq!(p.client.recv(c, &mut buf), Ok(4));
    let steps = p.client.stats().conn_steps - before.0.conn_steps + p.server.stats().conn_steps
        - before.1.conn_steps;
    assert!(steps > 0);
    assert!(
        steps <= 16,
        "{steps} connection steps for one round trip among 2000 idle connections"
    );
}

/// Opens `n` connections to `listener` (port 7) and accepts them all:
/// (client fd, server fd) pairs.
fn open_all(p: &mut Pair, listener: i32, n: usize) -> Vec<(i32, i32)> {
    let clients: Vec<i32> = (0..n).map(|_| p.connect(7)).collect();
    let mut servers = Vec::new();
    p.run_until(Duration::from_secs(30), |p| {
        while let Ok((fd, _)) = p.server.accept4(listener, SOCK_NONBLOCK) {
            servers.push(fd);
        }
        servers.len() == n
    });
    // The accept order may differ from the connect order; pair them by
    // address.
    let mut pairs = Vec::new();
    for c in clients {
        let local = p.client.getsockname(c).unwrap();
        let s = *servers
            .iter()
            .find(|&&s| p.server.getpeername(s).unwrap() == local)
            .unwrap();
        pairs.push((c, s));
    }
    pairs
}

#[test]
fn memory_of_closed_connections_goes_back_to_the_kernel() {
    const N: usize = 1500;
    // 4 KiB buffers: 504 to a 2 MiB slab, so N connections take 6 slabs
    // at each end. No pool, so nothing keeps buffers past a close.
    let (a, b) = netdev::Link::pair(1500);
    let now = smoltcp::time::Instant::from_secs(1);
    let config = |addr, seed| {
        let mut c = netstack::StackConfig::new(addr, 15);
        c.seed = Some(seed);
        c.buffer_size = 4096;
        c.pool_max = 0;
        c
    };
    let mut p = Pair {
        server: Stack::new(a, config(util::SERVER, 1), now).unwrap(),
        client: Stack::new(b, config(util::CLIENT, 2), now).unwrap(),
        now,
    };
    let slab = 2 << 20;
    let listener = p.listen(7, N as i32);
    for round in 0..2 {
        let pairs = open_all(&mut p, listener, N);
        for side in [&p.client, &p.server] {
            let s = side.stats();
            assert_eq!(s.arena_buffers, 2 * N, "round {round}: {s:?}");
            assert!(s.arena_bytes >= 6 * slab, "round {round}: {s:?}");
        }
        // Data still flows through buffers of slabs that went back to the
        // kernel in the round before.
        let mut buf = [0u8; 16];
        for &(c, s) in &pairs {
            p.client.send(c, b"ping").unwrap();
            p.settle();
            assert_eq!(p.server.recv(s, &mut buf), Ok(4));
            assert_eq!(&buf[..4], b"ping");
        }
        for &(c, s) in &pairs {
            p.client.close(c).unwrap();
            p.server.close(s).unwrap();
        }
        p.run_until(TIME_WAIT * 2, |p| {
            p.client.stats().connections == 0 && p.server.stats().connections == 0
        });
        for side in [&p.client, &p.server] {
            let s = side.stats();
            assert_eq!(s.arena_buffers, 0, "round {round}: {s:?}");
            if cfg!(target_os = "linux") {
                assert_eq!(s.arena_bytes, slab, "round {round}: one slab kept: {s:?}");
            }
        }
    }
}
