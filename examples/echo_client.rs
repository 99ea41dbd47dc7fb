//! Echo clients, three ways:
//!
//! - `--kernel`: **kernel sockets** (run it where the kernel side is, e.g.
//!   inside the TAP's namespace) against usertcp's `echo_server` or
//!   `c10m_server`: one bulk transfer of `--bytes` random bytes checked by
//!   hash (and its Gbit/s), or `--conns` connections that each echo one
//!   line and then stay open `--hold` seconds;
//! - `--tap NAME`: **usertcp** as the client, on a TAP, against a kernel
//!   echo server at `--connect`;
//! - `--link`: usertcp client and server in one process (no root).
//!
//! Kernel client against usertcp on a TAP (root):
//!
//! ```text
//! # terminal 1
//! sudo scripts/netns-tap.sh up
//! cargo build --release --example echo_server --example echo_client
//! sudo scripts/netns-tap.sh exec target/release/examples/echo_server --tap tap0
//! # terminal 2
//! sudo scripts/netns-tap.sh exec target/release/examples/echo_client --kernel \
//!     --connect 198.18.0.2:7 --bytes 200000000
//! ```
//!
//! Expected in terminal 2 (as measured once; the rate varies):
//!
//! ```text
//! 200000000 bytes echoed intact (hash 0x68e0c3e9d4a10e1f) in 1.80 s: 0.89 Gbit/s each way
//! ```
//!
//! usertcp as the client, against a kernel echo server in the namespace:
//!
//! ```text
//! # terminal 1: a kernel echo server (line by line)
//! sudo scripts/netns-tap.sh exec python3 -c 'import socketserver as s
//! class H(s.StreamRequestHandler):
//!     def handle(self): [self.wfile.write(l) for l in self.rfile]
//! s.ThreadingTCPServer(("198.18.0.1", 7), H).serve_forever()'
//! # terminal 2
//! sudo scripts/netns-tap.sh exec target/release/examples/echo_client --tap tap0 --connect 198.18.0.1:7
//! ```
//!
//! Expected: `4 connections x 10 lines echoed, 0 errors`.
//!
//! In-process: `cargo run --example echo_client -- --link` prints the same
//! line for its in-process server.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use clap::Parser;
use usertcp::apps::{self, Client, Clock, Echo, Server};
use usertcp::netdev::{Link, Tap};
use usertcp::netstack::Stack;

const LINE: &[u8] = b"hello from an echo client\n";
const CONNS: usize = 4;
const ROUNDS: u64 = 10;

/// Echo clients on kernel sockets or on usertcp.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    net: common::Flags,
    /// Use kernel sockets (run where the kernel side of the TAP is).
    #[arg(long, conflicts_with_all = ["tap", "link"])]
    kernel: bool,
    /// The echo server.
    #[arg(long, default_value = "198.18.0.2:7")]
    connect: SocketAddr,
    /// --kernel: bytes for one bulk transfer (0: none).
    #[arg(long, default_value_t = 0)]
    bytes: u64,
    /// --kernel: connections that each echo one line, then stay open.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// --kernel: seconds to hold the connections open.
    #[arg(long, default_value_t = 0)]
    hold: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.kernel {
        return kernel(&args);
    }
    let SocketAddr::V4(server) = args.connect else {
        return Err("IPv4 only".into());
    };
    let clock = Clock::new();
    let stop = AtomicBool::new(false);
    let (client, errors) = if let Some(name) = &args.net.tap {
        let tap = Tap::open(name)?;
        let mut st = Stack::new(tap, args.net.config(args.net.addr), clock.now())?;
        let mut c = Client::connect(&mut st, server, CONNS, LINE, LINE, ROUNDS)?;
        apps::run(&mut st, &clock, &stop, |st| {
            let w = c.step(st);
            if c.open() == 0 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            w
        });
        let e = c.stats().errors;
        apps::linger(&mut st, &clock, Duration::from_secs(2));
        (c, e)
    } else if args.net.link {
        let (a, b) = Link::pair(1500);
        let addr = *server.ip();
        let mut sst = Stack::new(a, args.net.config(addr), clock.now())?;
        let mut server_app = Server::listen(&mut sst, server.port(), false, Echo)?;
        let mut st = Stack::new(b, args.net.config(common::LINK_CLIENT), clock.now())?;
        let mut c = Client::connect(
            &mut st,
            SocketAddrV4::new(addr, server.port()),
            CONNS,
            LINE,
            LINE,
            ROUNDS,
        )?;
        apps::run(&mut st, &clock, &stop, |st| {
            let mut w = sst.poll(clock.now());
            w |= server_app.step(&mut sst);
            w |= c.step(st);
            if c.open() == 0 {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            w
        });
        let e = c.stats().errors;
        (c, e)
    } else {
        return Err("choose --kernel, --tap NAME or --link".into());
    };
    let s = client.stats();
    println!(
        "{} connections x {} lines echoed, {errors} errors",
        s.connected,
        s.replies / s.connected.max(1)
    );
    if errors > 0 {
        Err("echo errors".into())
    } else {
        Ok(())
    }
}

/// Kernel-socket clients (see the module docs).
fn kernel(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Some(Duration::from_secs(30));
    if args.bytes > 0 {
        let mut s = TcpStream::connect_timeout(&args.connect, Duration::from_secs(10))?;
        s.set_read_timeout(timeout)?;
        s.set_write_timeout(timeout)?;
        let mut w = s.try_clone()?;
        let total = args.bytes;
        let start = Instant::now();
        let writer = std::thread::spawn(move || -> std::io::Result<u64> {
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let mut hash = Fnv::default();
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = total;
            while left > 0 {
                let n = (left as usize).min(buf.len());
                for b in &mut buf[..n] {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    *b = rng as u8;
                }
                w.write_all(&buf[..n])?;
                hash.update(&buf[..n]);
                left -= n as u64;
            }
            Ok(hash.0)
        });
        let mut hash = Fnv::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        while got < total {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(format!("EOF after {got} of {total} bytes").into());
            }
            hash.update(&buf[..n]);
            got += n as u64;
        }
        let secs = start.elapsed().as_secs_f64();
        let sent = writer.join().map_err(|_| "writer panicked")??;
        if sent != hash.0 {
            return Err(format!("echo differs: hash {:#x} != {sent:#x}", hash.0).into());
        }
        println!(
            "{total} bytes echoed intact (hash {sent:#018x}) in {secs:.2} s: {:.2} Gbit/s each way",
            total as f64 * 8.0 / secs / 1e9
        );
    }
    if args.conns > 0 && args.bytes == 0 {
        usertcp::sys::raise_nofile_limit()?;
        let mut streams = Vec::with_capacity(args.conns);
        for i in 0..args.conns {
            let s = TcpStream::connect_timeout(&args.connect, Duration::from_secs(10))
                .map_err(|e| format!("connection {i}: {e}"))?;
            s.set_read_timeout(timeout)?;
            streams.push(s);
        }
        let mut buf = [0u8; LINE.len()];
        for s in &mut streams {
            s.write_all(LINE)?;
        }
        for s in &mut streams {
            s.read_exact(&mut buf)?;
            if buf != LINE {
                return Err("wrong echo".into());
            }
        }
        println!("{} connections open and echoing", streams.len());
        std::thread::sleep(Duration::from_secs(args.hold));
    }
    Ok(())
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
