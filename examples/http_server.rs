//! A minimal HTTP/1.1 server on usertcp (keep-alive, one fixed body:
//! `Hello from usertcp`), enough for `curl` and `wrk`; with `--kernel` the
//! same server on kernel sockets and kernel epoll, to measure both side by
//! side.
//!
//! On a TAP (root):
//!
//! ```text
//! # terminal 1
//! sudo scripts/netns-tap.sh up
//! cargo build --release --example http_server
//! sudo scripts/netns-tap.sh exec target/release/examples/http_server --tap tap0
//! # terminal 2
//! sudo scripts/netns-tap.sh exec curl -s http://198.18.0.2/
//! sudo scripts/netns-tap.sh exec wrk -t1 -c64 -d10s http://198.18.0.2/
//! ```
//!
//! Expected: curl prints `Hello from usertcp`; wrk reports its
//! `Requests/sec` and no `Socket errors` line; terminal 1 prints once a
//! second `[Ns] open 64, accepted 64, closed 0, requests ...`.
//!
//! Threaded mode (`--threads N`, with `--tap` or `--link`): the stack runs
//! on its own thread (`netstack::NetThread`, asleep in `ppoll` on the TAP
//! when idle) and N worker threads serve: they share the listening socket,
//! each watches it with its own usertcp epoll and `EPOLLEXCLUSIVE` (a new
//! connection wakes one sleeping worker, not all of them), accepts, and
//! serves the connections it accepted with non-blocking calls, blocking in
//! `epoll_wait` between events. Workers share nothing but the stack, so no
//! connection state needs a lock (nginx's model, on usertcp's epoll).
//!
//! ```text
//! sudo scripts/netns-tap.sh exec target/release/examples/http_server --tap tap0 --threads 2
//! usertcp at 198.18.0.2 on tap0 (mtu 1500), stack thread + 2 workers
//! listening on 198.18.0.2:80
//! [2s] open 64, accepted 66, closed 2, requests 10363
//! ```
//!
//! (observed with curl, then `wrk -t1 -c64 -d3s`, from terminal 2: curl
//! printed `Hello from usertcp`, wrk no `Socket errors` line).
//!
//! The kernel baseline (no root, 127.0.0.1):
//!
//! ```text
//! cargo run --release --example http_server -- --kernel --port 8080
//! wrk -t1 -c64 -d10s http://127.0.0.1:8080/
//! ```
//!
//! In-process, no root (10 connections x 1000 keep-alive requests, every
//! response checked byte for byte):
//!
//! ```text
//! cargo run --release --example http_server -- --link
//! ...
//! [0s] open 0, accepted 10, closed 10, requests 10000; client: 10000 responses, 0 errors
//! cargo run --release --example http_server -- --link --threads 4
//! [0s] open 0, accepted 10, closed 10, requests 10000; client: 10000 responses, 0 errors
//! ```

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicBool;

use clap::Parser;
use usertcp::apps::{self, HTTP_REQUEST, HTTP_RESPONSE, Http};

/// A minimal HTTP/1.1 server on usertcp (or, with --kernel, on Linux).
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    net: common::Flags,
    /// Port to listen on.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// Edge-triggered epoll (default: level-triggered).
    #[arg(long)]
    et: bool,
    /// Serve the same on kernel sockets with kernel epoll, on 127.0.0.1.
    #[arg(long, conflicts_with_all = ["tap", "link"])]
    kernel: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.kernel {
        let stop = AtomicBool::new(false);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
        let http = apps::serve_kernel(addr, Http::default(), args.et, &stop, |a| {
            eprintln!("kernel sockets: listening on {a}")
        })?;
        println!("requests {}", http.requests);
        return Ok(());
    }
    let client = common::LinkClient {
        conns: 10,
        request: HTTP_REQUEST.to_vec(),
        reply: HTTP_RESPONSE.to_vec(),
        rounds: 1000,
    };
    common::serve(
        &args.net,
        args.port,
        args.et,
        Http::default(),
        client,
        |s, c, t| {
            let st = s.stats;
            let client = c
                .map(|c| {
                    format!(
                        "; client: {} responses, {} errors",
                        c.stats().replies,
                        c.stats().errors
                    )
                })
                .unwrap_or_default();
            println!(
                "[{}s] open {}, accepted {}, closed {}, requests {}{client}",
                t.as_secs(),
                s.open,
                st.accepted,
                st.closed,
                s.protos.iter().map(|h| h.requests).sum::<u64>()
            );
        },
    )
}
