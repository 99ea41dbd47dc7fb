//! The threaded mode: two stacks on their own threads, a blocking
//! thread-per-connection echo server, and client threads that connect,
//! echo and close, all with `std::net`-shaped types (`TcpListener`,
//! `TcpStream`) on `Net` handles.
//!
//! Run (one terminal, no privileges):
//!
//! ```text
//! cargo run --example threaded_echo
//! ```
//!
//! Expected output (the client lines in any order; the counters vary from
//! run to run):
//!
//! ```text
//! client 0: 10 round trips of 64 B
//! client 1: 10 round trips of 64 B
//! client 2: 10 round trips of 64 B
//! client 3: 10 round trips of 64 B
//! server echoed 2560 bytes
//! server stack thread: ThreadStats { wakeups: .., kicks: .., sender_received: .., left_to_holder: .., parks: .. }
//! ```
//!
//! `sender_received` counts packets that the client's sending thread fed
//! to the sleeping server stack itself (no stack-thread hop); `wakeups`
//! counts the server stack thread's own wake-ups (timers, packets it had
//! to take because its lock was busy, its 200 ms sleep cap).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;

use usertcp::netdev::Link;
use usertcp::netstack::StackConfig;
use usertcp::{NetThread, TcpListener, TcpStream};

const CLIENTS: usize = 4;
const ROUNDS: usize = 10;

fn main() -> std::io::Result<()> {
    let (a, b) = Link::pair(1500);
    let server_ip = Ipv4Addr::new(198, 18, 0, 1);
    let server = NetThread::spawn(a, StackConfig::new(server_ip, 15))?;
    let client = NetThread::spawn(b, StackConfig::new(Ipv4Addr::new(198, 18, 0, 2), 15))?;
    let addr = SocketAddrV4::new(server_ip, 7);
    let listener = TcpListener::bind(&server, addr)?;

    let acceptor = thread::spawn(move || -> std::io::Result<usize> {
        let mut handlers = Vec::new();
        for _ in 0..CLIENTS {
            let (mut conn, _peer) = listener.accept()?;
            handlers.push(thread::spawn(move || {
                let mut buf = [0u8; 512];
                let mut total = 0;
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return total,
                        Ok(n) => {
                            if conn.write_all(&buf[..n]).is_err() {
                                return total;
                            }
                            total += n;
                        }
                    }
                }
            }));
        }
        Ok(handlers.into_iter().map(|h| h.join().unwrap_or(0)).sum())
    });

    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = client.clone();
            thread::spawn(move || -> std::io::Result<()> {
                let mut s = TcpStream::connect(&client, addr)?;
                let msg = [i as u8; 64];
                let mut back = [0u8; 64];
                for _ in 0..ROUNDS {
                    s.write_all(&msg)?;
                    s.read_exact(&mut back)?;
                    assert_eq!(back, msg);
                }
                println!("client {i}: {ROUNDS} round trips of 64 B");
                Ok(())
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread")?;
    }
    let echoed = acceptor.join().expect("acceptor thread")?;
    println!("server echoed {echoed} bytes");
    println!("server stack thread: {:?}", server.thread_stats());
    // Dropping the handles shuts both stacks down and joins their threads.
    Ok(())
}
