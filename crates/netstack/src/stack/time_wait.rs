//! Segments for a 4-tuple in the light TIME-WAIT, where an orphan's
//! connection has been freed and only its 4-tuple is kept
//! (`Core::time_wait`).
//!
//! TIME-WAIT exists for one job: if the ACK of the peer's FIN is lost,
//! the peer sends its FIN again, and the closed end must acknowledge it
//! again, or the peer stays in LAST-ACK until it gives up. Linux answers
//! every segment in TIME-WAIT but a RST or a SYN with an ACK of its own
//! (`tcp_timewait_state_process`); this stack answers the one that matters,
//! a FIN, without its own connection state: the segment carries it. The
//! peer's FIN acknowledges our FIN, so its ACK number is our next sequence
//! number, and its sequence number plus its length and the FIN is the ACK
//! the peer waits for. The wait then starts again, as in Linux.
//!
//! A RST ends the TIME-WAIT at once (Linux's default, `tcp_rfc1337 = 0`).
//! Anything else is dropped: a new SYN is taken by the listener
//! (`Core::passive_open`), and other segments have no answer worth
//! sending.

use smoltcp::phy::{self, ChecksumCapabilities};
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl,
    TcpPacket, TcpRepr,
};

use super::neighbor::ETHERNET_HEADER;
use super::{Core, FourTuple, TIME_WAIT};

/// The TTL of the ACKs sent from TIME-WAIT (smoltcp's default).
const HOP_LIMIT: u8 = 64;

impl Core {
    /// A segment for `tuple`, which is in the light TIME-WAIT: `frame` as
    /// received, `ip` its IPv4 packet, `reply` the device's token for an
    /// answer.
    pub(super) fn time_wait_segment<T: phy::TxToken>(
        &mut self,
        tuple: FourTuple,
        frame: &[u8],
        ip: &[u8],
        reply: T,
    ) {
        let checksums = &self.caps.checksum;
        let Some((ip_repr, seg)) = parse_tcp(ip, checksums) else {
            trace!(?tuple, "TIME-WAIT: malformed segment dropped");
            return;
        };
        if seg.control == TcpControl::Rst {
            self.time_wait.remove(&tuple);
            trace!(?tuple, "TIME-WAIT: ended by RST");
            return;
        }
        let Some(our_next) = seg.ack_number else {
            trace!(?tuple, "TIME-WAIT: segment without ACK dropped");
            return;
        };
        if seg.control != TcpControl::Fin {
            trace!(?tuple, "TIME-WAIT: segment dropped");
            return;
        }
        let ack = TcpRepr {
            src_port: seg.dst_port,
            dst_port: seg.src_port,
            control: TcpControl::None,
            seq_number: our_next,
            ack_number: Some(seg.seq_number + seg.payload.len() + 1),
            // Nothing more can be received after the peer's FIN.
            window_len: 0,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        let out_ip = Ipv4Repr {
            src_addr: ip_repr.dst_addr,
            dst_addr: ip_repr.src_addr,
            next_header: IpProtocol::Tcp,
            payload_len: ack.buffer_len(),
            hop_limit: HOP_LIMIT,
        };
        let link_header = self.link_header;
        let our_mac = self.neighbors.as_ref().map(|n| n.mac());
        let len = link_header + out_ip.buffer_len() + ack.buffer_len();
        reply.consume(len, |buf| {
            if link_header == ETHERNET_HEADER {
                let peer_mac = EthernetFrame::new_unchecked(frame).src_addr();
                let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
                eth.set_dst_addr(peer_mac);
                if let Some(mac) = our_mac {
                    eth.set_src_addr(mac);
                }
                eth.set_ethertype(EthernetProtocol::Ipv4);
            }
            let mut packet = Ipv4Packet::new_unchecked(&mut buf[link_header..]);
            out_ip.emit(&mut packet, checksums);
            let mut tcp = TcpPacket::new_unchecked(packet.payload_mut());
            ack.emit(
                &mut tcp,
                &IpAddress::Ipv4(out_ip.src_addr),
                &IpAddress::Ipv4(out_ip.dst_addr),
                checksums,
            );
        });
        let until = self.now + TIME_WAIT;
        self.time_wait.insert(tuple, until);
        self.tw_timers.push_back((until, tuple));
        self.stats.time_wait_acks += 1;
        trace!(?tuple, "TIME-WAIT: FIN again, ACK again, wait restarted");
    }
}

/// The IPv4 and TCP headers of `ip`, checksums verified as the device's
/// capabilities ask; `None` if it is not a well-formed IPv4 TCP segment.
fn parse_tcp<'a>(
    ip: &'a [u8],
    checksums: &ChecksumCapabilities,
) -> Option<(Ipv4Repr, TcpRepr<'a>)> {
    let packet = Ipv4Packet::new_checked(ip).ok()?;
    let ip_repr = Ipv4Repr::parse(&packet, checksums).ok()?;
    let tcp =
        TcpPacket::new_checked(&ip[packet.header_len().into()..usize::from(packet.total_len())])
            .ok()?;
    let repr = TcpRepr::parse(
        &tcp,
        &IpAddress::Ipv4(ip_repr.src_addr),
        &IpAddress::Ipv4(ip_repr.dst_addr),
        checksums,
    )
    .ok()?;
    Some((ip_repr, repr))
}
