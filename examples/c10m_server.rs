//! Holds as many idle connections as clients open (an echo server that
//! mostly waits), printing every second how many are open and the memory
//! per connection: the C10M shape of usertcp, one thread, no per-connection
//! work while idle.
//!
//! On a TAP (root), with a kernel client opening 5,000 idle connections
//! (about 28k fit per client address and server port):
//!
//! ```text
//! # terminal 1
//! sudo scripts/netns-tap.sh up
//! cargo build --release --example c10m_server --example echo_client
//! sudo scripts/netns-tap.sh exec target/release/examples/c10m_server --tap tap0 --buffer 4096
//! # terminal 2
//! sudo scripts/netns-tap.sh exec target/release/examples/echo_client --kernel \
//!     --connect 198.18.0.2:7 --conns 5000 --hold 30
//! ```
//!
//! Expected in terminal 1, once a second (as measured once; figures vary):
//!
//! ```text
//! [2s] connections 5000, rss 47.9 MiB, 9.3 KiB per connection
//! ```
//!
//! In-process, no root (a client stack opens `--conns` idle connections;
//! both stacks' memory is counted):
//!
//! ```text
//! cargo run --release --example c10m_server -- --link --conns 100000 --buffer 4096 --seconds 10
//! ```

mod common;

use clap::Parser;
use usertcp::apps::{Echo, rss_bytes};

/// Holds idle connections and reports their count and memory.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    net: common::Flags,
    /// Port to listen on.
    #[arg(long, default_value_t = 7)]
    port: u16,
    /// With --link: idle connections the in-process client opens.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let base = rss_bytes().unwrap_or(0);
    let client = common::LinkClient {
        conns: args.conns,
        request: Vec::new(),
        reply: Vec::new(),
        rounds: 0,
    };
    common::serve(&args.net, args.port, false, Echo, client, |s, _, t| {
        let rss = rss_bytes().unwrap_or(0);
        let n = s.open;
        let per = if n > 0 {
            format!(
                "{:.1} KiB per connection",
                rss.saturating_sub(base) as f64 / n as f64 / 1024.0
            )
        } else {
            "no connections".to_string()
        };
        println!(
            "[{}s] connections {n}, rss {:.1} MiB, {per}",
            t.as_secs(),
            rss as f64 / (1024.0 * 1024.0)
        );
    })
}
