//! Ethernet (`Medium::Ethernet`, the TAP): the link header, and keeping
//! smoltcp's neighbor (ARP) cache warm for the peers on the subnet.
//!
//! ## Why the cache needs help
//!
//! smoltcp fills its neighbor cache only from ARP packets, and an entry
//! lives 60 s past the last IPv4 packet from that neighbor. When a
//! connection wants to send and its neighbor is missing (never seen by
//! ARP, or expired after a minute of silence), smoltcp sends an ARP
//! request and silences the socket for one second (`DISCOVERY_SILENT_TIME`)
//! — and this stack, which runs smoltcp on one connection at a time, only
//! comes back to the connection when its timer fires: the ARP reply does
//! not wake it. So a stale entry costs a one-second stall. Two common
//! cases hit it on a TAP: a kernel client that already knows our MAC
//! (a restarted server) sends a SYN without ARP first, and an idle server
//! (C10M) that sends first after a quiet minute.
//!
//! ## What is done: learn from IPv4 frames, and pin
//!
//! - **Learn.** Every IPv4 frame from an on-link sender with a unicast
//!   MAC tells us its (IP, MAC). A new or changed pair is handed to smoltcp
//!   at once as a synthesized ARP reply (sender = the peer, target = us),
//!   which smoltcp takes into its cache like any ARP packet aimed at it,
//!   before it processes the frame itself, so its reply finds the entry.
//!   The last pair seen is remembered, so the common case (one kernel
//!   peer) costs one comparison per frame.
//! - **Pin.** Every [`REFRESH`] (20 s, a third of smoltcp's 60 s lifetime),
//!   at the start of `poll` and so before any egress, each learned pair is
//!   fed again: entries of known neighbors never expire while the stack
//!   polls, like a static ARP entry whose MAC follows what the peer last
//!   sent. No packet goes on the wire for it. A neighbor that changes MAC
//!   updates its pin with its next frame (and smoltcp itself with its next
//!   ARP).
//!
//! At most [`MAX_PINS`] neighbors are pinned (smoltcp's cache size, set in
//! the workspace `Cargo.toml` with `iface-neighbor-cache-count-256`: a /24
//! of kernel-side client addresses); beyond that, smoltcp's own ARP works
//! as usual.

use std::net::Ipv4Addr;

use rustc_hash::FxHashMap;
use smoltcp::iface::Interface;
use smoltcp::phy;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, Ipv4Cidr,
};

use super::{Core, OneShot};

/// Bytes of an Ethernet header.
pub(super) const ETHERNET_HEADER: usize = 14;
/// How often learned neighbors are fed to smoltcp again.
pub(super) const REFRESH: Duration = Duration::from_secs(20);
/// Most neighbors pinned: smoltcp's neighbor cache size.
pub(super) const MAX_PINS: usize = 256;
/// An Ethernet header plus an IPv4-over-Ethernet ARP packet.
const ARP_FRAME: usize = ETHERNET_HEADER + 28;

/// The learned neighbors of an Ethernet stack.
pub(super) struct Neighbors {
    /// Our MAC address.
    mac: EthernetAddress,
    /// Our on-link subnet.
    subnet: Ipv4Cidr,
    pins: FxHashMap<Ipv4Addr, EthernetAddress>,
    /// The pair seen last (the fast path).
    last: Option<(Ipv4Addr, EthernetAddress)>,
    next_refresh: Instant,
}

impl Neighbors {
    pub(super) fn new(mac: EthernetAddress, addr: Ipv4Addr, prefix_len: u8) -> Neighbors {
        Neighbors {
            mac,
            subnet: Ipv4Cidr::new(addr, prefix_len),
            pins: FxHashMap::default(),
            last: None,
            next_refresh: Instant::ZERO,
        }
    }

    /// Our MAC address.
    pub(super) fn mac(&self) -> EthernetAddress {
        self.mac
    }
}

/// A reply token for a synthesized ARP reply, which smoltcp never answers.
/// If it ever did, the answer would go nowhere (written to a scratch
/// buffer and dropped).
struct NoReply;

impl phy::TxToken for NoReply {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut scratch = vec![0u8; len];
        f(&mut scratch)
    }
}

impl Core {
    /// The IPv4 packet inside an Ethernet frame, or `None` for anything
    /// else (ARP, IPv6, runts), after learning the sender's (IP, MAC).
    pub(super) fn ethernet_ipv4<'f>(
        &mut self,
        iface: &mut Interface,
        frame: &'f [u8],
    ) -> Option<&'f [u8]> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return None;
        }
        let ip = &frame[ETHERNET_HEADER..];
        if ip.len() >= 20 {
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            self.learn(iface, src, eth.src_addr());
        }
        Some(ip)
    }

    /// Takes note of a neighbor's (IP, MAC), feeding smoltcp if it is new.
    fn learn(&mut self, iface: &mut Interface, ip: Ipv4Addr, mac: EthernetAddress) {
        let Some(n) = self.neighbors.as_mut() else {
            return;
        };
        if n.last == Some((ip, mac)) {
            return;
        }
        if !mac.is_unicast()
            || !n.subnet.contains_addr(&ip)
            || ip == n.subnet.broadcast().unwrap_or(Ipv4Addr::BROADCAST)
            || self.addrs.contains(&ip)
        {
            return;
        }
        n.last = Some((ip, mac));
        match n.pins.get(&ip) {
            Some(&known) if known == mac => return,
            None if n.pins.len() >= MAX_PINS => return,
            _ => {}
        }
        n.pins.insert(ip, mac);
        trace!(%ip, %mac, "neighbor learned: pinned");
        self.feed_arp(iface, ip, mac);
    }

    /// Feeds every pinned neighbor to smoltcp again, when due.
    pub(super) fn refresh_neighbors(&mut self, iface: &mut Interface) {
        let now = self.now;
        let pins = match self.neighbors.as_mut() {
            Some(n) if now >= n.next_refresh => {
                n.next_refresh = now + REFRESH;
                std::mem::take(&mut n.pins)
            }
            _ => return,
        };
        for (&ip, &mac) in &pins {
            self.feed_arp(iface, ip, mac);
        }
        if let Some(n) = self.neighbors.as_mut() {
            n.pins = pins;
        }
    }

    /// Hands smoltcp an ARP reply from `ip` at `mac` to us, which fills its
    /// neighbor cache for 60 s.
    fn feed_arp(&mut self, iface: &mut Interface, ip: Ipv4Addr, mac: EthernetAddress) {
        let Some(n) = self.neighbors.as_ref() else {
            return;
        };
        let mut frame = [0u8; ARP_FRAME];
        let mut eth = EthernetFrame::new_unchecked(&mut frame[..]);
        eth.set_dst_addr(n.mac);
        eth.set_src_addr(mac);
        eth.set_ethertype(EthernetProtocol::Arp);
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Reply,
            source_hardware_addr: mac,
            source_protocol_addr: ip,
            target_hardware_addr: n.mac,
            target_protocol_addr: self.addr,
        }
        .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        self.stats.neighbor_feeds += 1;
        let mut one = OneShot {
            frame: Some(&frame[..]),
            reply: Some(NoReply),
            caps: self.caps.clone(),
        };
        iface.poll_ingress_single(self.now, &mut one, &mut self.empty);
    }
}
