//! One connection, one echo, between two stacks in this process, with the
//! stack's trace events printed: how a segment becomes an epoll event.
//!
//! Run (one terminal, no privileges):
//!
//! ```text
//! RUST_LOG=trace cargo run -p netstack --example trace_echo
//! ```
//!
//! Expected output: trace lines such as `segment in local=198.18.0.1:7
//! remote=198.18.0.2:... syn=true`, `SYN to listener: new connection`,
//! `state change from=SYN-RECEIVED to=ESTABLISHED`, `handshake done: accept
//! queue`, `mask raised: wake mask=IN | RDNORM`, `epoll_wait harvest
//! events=1`, then `echoed "ping"` at the end. Without `RUST_LOG` only the
//! last line is printed.

use std::net::{Ipv4Addr, SocketAddrV4};

use eventpoll::{CtlOp, EpollEvent, Errno, Events};
use netdev::Link;
use netstack::{AF_INET, SOCK_NONBLOCK, SOCK_STREAM, Stack, StackConfig};
use smoltcp::time::{Duration, Instant};

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn main() -> Result<(), Errno> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let (a, b) = Link::pair(1500);
    let mut now = Instant::ZERO;
    let mut server = Stack::new(a, StackConfig::new(SERVER, 15), now)?;
    let mut client = Stack::new(b, StackConfig::new(CLIENT, 15), now)?;

    let l = server.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)?;
    server.bind(l, SocketAddrV4::new(SERVER, 7))?;
    server.listen(l, 8)?;
    let ep = server.epoll_create1(0)?;
    let ev = EpollEvent::new(Events::IN, l as u64);
    server.epoll_ctl(ep, CtlOp::Add.to_raw(), l, Some(&ev))?;

    let c = client.socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0)?;
    match client.connect(c, SocketAddrV4::new(SERVER, 7)) {
        Err(Errno::EINPROGRESS) => {}
        other => panic!("connect: {other:?}"),
    }
    let mut sent = false;
    let mut buf = [0u8; 64];
    let mut events = [EpollEvent::default(); 16];
    // The run-to-completion loop of both applications.
    for _ in 0..1000 {
        server.poll(now);
        client.poll(now);
        let n = server.epoll_wait(ep, &mut events, 16, 0)?;
        for e in &events[..n] {
            let fd = e.data as i32;
            if fd == l {
                let (s, _) = server.accept4(l, SOCK_NONBLOCK)?;
                let ev = EpollEvent::new(Events::IN, s as u64);
                server.epoll_ctl(ep, CtlOp::Add.to_raw(), s, Some(&ev))?;
            } else if let Ok(k) = server.recv(fd, &mut buf) {
                server.send(fd, &buf[..k])?;
            }
        }
        if !sent && client.send(c, b"ping").is_ok() {
            sent = true;
        }
        if let Ok(k) = client.recv(c, &mut buf) {
            println!("echoed {:?}", String::from_utf8_lossy(&buf[..k]));
            return Ok(());
        }
        now += Duration::from_millis(1);
    }
    panic!("no echo");
}
