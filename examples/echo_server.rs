//! An epoll echo server on usertcp: level-triggered by default, `--et` for
//! edge-triggered. Real kernel clients reach it through a TAP device.
//!
//! On a TAP (root; terminal 1 sets up the namespace and runs the server in
//! it, terminal 2 is a kernel client in the same namespace):
//!
//! ```text
//! # terminal 1
//! sudo scripts/netns-tap.sh up
//! cargo build --example echo_server
//! sudo scripts/netns-tap.sh exec target/debug/examples/echo_server --tap tap0
//! # terminal 2
//! echo hello | sudo scripts/netns-tap.sh exec nc -N 198.18.0.2 7
//! sudo scripts/netns-tap.sh down            # when done
//! ```
//!
//! Expected: terminal 2 prints `hello`; terminal 1 prints
//!
//! ```text
//! usertcp at 198.18.0.2 on tap0 (mtu 1500)
//! listening on 198.18.0.2:7
//! [1s] open 0, accepted 1, closed 1, rx 6 B, tx 6 B
//! ```
//!
//! In-process, no root (a client stack over `netdev::Link` sends 10
//! connections x 100 messages of 1000 bytes and checks every echo):
//!
//! ```text
//! cargo run --example echo_server -- --link
//! ...
//! [0s] open 0, accepted 10, closed 10, rx 1000000 B, tx 1000000 B; client: 1000 replies, 0 errors
//! ```
//!
//! `--threads N` (with `--tap` or `--link`) runs the stack on a
//! `netstack::NetThread` and N worker threads sharing the listener, each
//! with its own epoll watching it with `EPOLLEXCLUSIVE` (see
//! `http_server`'s header and `usertcp::apps::ThreadedServer`):
//!
//! ```text
//! cargo run --example echo_server -- --link --threads 2 --et
//! ...
//! [0s] open 0, accepted 10, closed 10, rx 1000000 B, tx 1000000 B; client: 1000 replies, 0 errors
//! sudo scripts/netns-tap.sh exec target/debug/examples/echo_server --tap tap0 --threads 2
//! usertcp at 198.18.0.2 on tap0 (mtu 1500), stack thread + 2 workers
//! listening on 198.18.0.2:7
//! [2s] open 0, accepted 1, closed 1, rx 6 B, tx 6 B
//! ```
//!
//! (after `echo hello | sudo scripts/netns-tap.sh exec nc -N 198.18.0.2 7`,
//! which prints `hello`).

mod common;

use clap::Parser;
use usertcp::apps::Echo;

/// An epoll echo server on usertcp.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    net: common::Flags,
    /// Port to listen on.
    #[arg(long, default_value_t = 7)]
    port: u16,
    /// Edge-triggered epoll (default: level-triggered).
    #[arg(long)]
    et: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let request: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let client = common::LinkClient {
        conns: 10,
        reply: request.clone(),
        request,
        rounds: 100,
    };
    common::serve(&args.net, args.port, args.et, Echo, client, |s, c, t| {
        let st = s.stats;
        let client = c
            .map(|c| {
                format!(
                    "; client: {} replies, {} errors",
                    c.stats().replies,
                    c.stats().errors
                )
            })
            .unwrap_or_default();
        println!(
            "[{}s] open {}, accepted {}, closed {}, rx {} B, tx {} B{client}",
            t.as_secs(),
            s.open,
            st.accepted,
            st.closed,
            st.rx_bytes,
            st.tx_bytes
        );
    })
}
