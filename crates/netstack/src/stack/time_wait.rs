//! Segments for a 4-tuple in the light TIME-WAIT, where an orphan's
//! connection has been freed and only a [`TimeWait`] is kept for its
//! 4-tuple (`Core::time_wait`): when the wait ends and the two sequence
//! numbers that tell a segment of this connection from one that is not.
//!
//! TIME-WAIT exists for one job: if the ACK of the peer's FIN is lost,
//! the peer sends its FIN again, and the closed end must acknowledge it
//! again, or the peer stays in LAST-ACK until it gives up. This module
//! answers as Linux's `tcp_timewait_state_process` does (without PAWS: the
//! stack sends no timestamps):
//!
//! - A segment at exactly the next sequence number and without data (a
//!   bare ACK) restarts the wait; a RST there ends it (Linux's default,
//!   `tcp_rfc1337 = 0`).
//! - A SYN without ACK past the next sequence number, to a listener, is a
//!   new connection: the tuple is free again (RFC 6191's rule without
//!   timestamps).
//! - Anything else is out of window: a RST is dropped (a RST guessed
//!   without the sequence number cannot end the wait), and every other
//!   segment, the peer's FIN sent again among them, is answered with an
//!   ACK of our own numbers, at most one per [`ACK_INTERVAL`] per tuple
//!   (Linux's `tcp_invalid_ratelimit`), and restarts the wait if it
//!   carries an ACK.

use smoltcp::phy::{self, ChecksumCapabilities};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl,
    TcpPacket, TcpRepr, TcpSeqNumber,
};

use super::neighbor::ETHERNET_HEADER;
use super::{Core, FourTuple, TIME_WAIT};

/// The TTL of the ACKs sent from TIME-WAIT (smoltcp's default).
const HOP_LIMIT: u8 = 64;
/// The least time between two ACKs from one tuple in TIME-WAIT (Linux's
/// `tcp_invalid_ratelimit` default).
pub const ACK_INTERVAL: Duration = Duration::from_millis(500);

/// What the stack keeps of a connection in the light TIME-WAIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct TimeWait {
    /// When the wait ends (`tw_timers` holds the same deadline).
    pub until: Instant,
    /// The sequence numbers the connection ended with.
    pub seqs: FinalSeqs,
    /// When the last ACK went out from TIME-WAIT, for the rate limit.
    pub acked_at: Option<Instant>,
}

/// A connection's sequence numbers once both FINs are acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FinalSeqs {
    /// The next sequence number the peer sends: just past its FIN.
    pub rcv_nxt: TcpSeqNumber,
    /// Our next sequence number: just past our FIN.
    pub snd_nxt: TcpSeqNumber,
}

impl FinalSeqs {
    /// The numbers after `seg`, the segment that moved the connection into
    /// TIME-WAIT: everything is acknowledged both ways, so the peer's next
    /// number is the end of `seg` and ours is what `seg` acknowledges.
    pub fn after(seq: TcpSeqNumber, len: usize, fin: bool, ack: TcpSeqNumber) -> FinalSeqs {
        FinalSeqs {
            rcv_nxt: seq + len + usize::from(fin),
            snd_nxt: ack,
        }
    }
}

/// What a segment for a tuple in TIME-WAIT gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The wait ends (an in-window RST).
    End,
    /// The tuple is free for a new connection (an acceptable SYN).
    Reopen,
    /// An ACK of our numbers; the wait restarts if `restart`.
    Ack { restart: bool },
    /// No answer; the wait restarts if `restart`.
    Quiet { restart: bool },
}

/// The [`Verdict`] for `seg` arriving at `now` for `tw`; `listening`: a
/// listener would take a SYN to this address and port.
fn verdict(tw: &TimeWait, seg: &TcpRepr, listening: bool, now: Instant) -> Verdict {
    let rst = seg.control == TcpControl::Rst;
    let has_ack = seg.ack_number.is_some();
    if seg.seq_number == tw.seqs.rcv_nxt && (rst || seg.segment_len() == 0) {
        return if rst {
            Verdict::End
        } else {
            Verdict::Quiet { restart: true }
        };
    }
    if seg.control == TcpControl::Syn && !has_ack && seg.seq_number > tw.seqs.rcv_nxt && listening {
        return Verdict::Reopen;
    }
    if rst {
        return Verdict::Quiet { restart: false };
    }
    // A SYN without ACK may be an old duplicate: it does not restart the
    // wait (as in Linux).
    let restart = has_ack;
    if tw.acked_at.is_some_and(|t| now < t + ACK_INTERVAL) {
        Verdict::Quiet { restart }
    } else {
        Verdict::Ack { restart }
    }
}

impl Core {
    /// A segment for `tuple`, which is in the light TIME-WAIT: `frame` as
    /// received, `ip` its IPv4 packet, `reply` the device's token for an
    /// answer, `listening` as for [`verdict`]. Returns `reply` if the
    /// segment is a SYN that opens a new connection on the tuple (the
    /// TIME-WAIT is over and the caller hands the SYN to the listener).
    pub(super) fn time_wait_segment<T: phy::TxToken>(
        &mut self,
        tuple: FourTuple,
        frame: &[u8],
        ip: &[u8],
        listening: bool,
        reply: T,
    ) -> Option<T> {
        let checksums = &self.caps.checksum;
        let Some((ip_repr, seg)) = parse_tcp(ip, checksums) else {
            trace!(?tuple, "TIME-WAIT: malformed segment dropped");
            return None;
        };
        let tw = *self.time_wait.get(&tuple)?;
        let now = self.now;
        let restart = match verdict(&tw, &seg, listening, now) {
            Verdict::End => {
                self.time_wait.remove(&tuple);
                trace!(?tuple, "TIME-WAIT: ended by RST");
                return None;
            }
            Verdict::Reopen => {
                self.time_wait.remove(&tuple);
                trace!(?tuple, "TIME-WAIT: new SYN, tuple reused");
                return Some(reply);
            }
            Verdict::Quiet { restart } => {
                trace!(?tuple, restart, "TIME-WAIT: segment dropped");
                restart
            }
            Verdict::Ack { restart } => {
                self.time_wait_ack(&ip_repr, &seg, tw.seqs, frame, reply);
                trace!(
                    ?tuple,
                    restart, "TIME-WAIT: segment out of window, ACK sent"
                );
                if let Some(entry) = self.time_wait.get_mut(&tuple) {
                    entry.acked_at = Some(now);
                }
                restart
            }
        };
        if restart {
            let until = now + TIME_WAIT;
            if let Some(entry) = self.time_wait.get_mut(&tuple) {
                entry.until = until;
            }
            self.tw_timers.push_back((until, tuple));
        }
        None
    }

    /// Sends, through `reply`, the ACK of a connection in TIME-WAIT whose
    /// numbers are `seqs`, to the sender of `seg` (`ip` its IPv4 header,
    /// `frame` the frame it came in).
    fn time_wait_ack<T: phy::TxToken>(
        &mut self,
        ip: &Ipv4Repr,
        seg: &TcpRepr,
        seqs: FinalSeqs,
        frame: &[u8],
        reply: T,
    ) {
        let checksums = &self.caps.checksum;
        let ack = TcpRepr {
            src_port: seg.dst_port,
            dst_port: seg.src_port,
            control: TcpControl::None,
            seq_number: seqs.snd_nxt,
            ack_number: Some(seqs.rcv_nxt),
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
            src_addr: ip.dst_addr,
            dst_addr: ip.src_addr,
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
        self.stats.time_wait_acks += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    const PEER_NEXT: i32 = 5000;
    const OUR_NEXT: i32 = 9000;

    fn entry(acked_at: Option<Instant>) -> TimeWait {
        TimeWait {
            until: Instant::from_micros_const(60_000_000),
            seqs: FinalSeqs {
                rcv_nxt: TcpSeqNumber(PEER_NEXT),
                snd_nxt: TcpSeqNumber(OUR_NEXT),
            },
            acked_at,
        }
    }

    /// A segment from the peer: `seq`, `control`, an ACK of our FIN if
    /// `ack`, `payload`.
    fn seg(seq: i32, control: TcpControl, ack: bool, payload: &[u8]) -> TcpRepr<'_> {
        TcpRepr {
            src_port: 80,
            dst_port: 40000,
            control,
            seq_number: TcpSeqNumber(seq),
            ack_number: ack.then_some(TcpSeqNumber(OUR_NEXT)),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload,
        }
    }

    const NOW: Instant = Instant::from_micros_const(10_000_000);

    #[test]
    fn the_peers_fin_sent_again_is_acknowledged_and_restarts_the_wait() {
        let fin = seg(PEER_NEXT - 1, TcpControl::Fin, true, &[]);
        let v = verdict(&entry(None), &fin, false, NOW);
        assert_eq!(v, Verdict::Ack { restart: true });
        // With its last data again (FIN and payload sent together).
        let fin = seg(PEER_NEXT - 4, TcpControl::Fin, true, b"bye");
        assert_eq!(
            verdict(&entry(None), &fin, false, NOW),
            Verdict::Ack { restart: true }
        );
    }

    #[test]
    fn only_a_rst_at_the_next_sequence_number_ends_the_wait() {
        let rst = seg(PEER_NEXT, TcpControl::Rst, false, &[]);
        assert_eq!(verdict(&entry(None), &rst, false, NOW), Verdict::End);
        for seq in [PEER_NEXT - 1, PEER_NEXT + 1, PEER_NEXT + 100_000, 0] {
            let rst = seg(seq, TcpControl::Rst, true, &[]);
            let v = verdict(&entry(None), &rst, false, NOW);
            assert_eq!(v, Verdict::Quiet { restart: false }, "seq {seq}");
        }
    }

    #[test]
    fn a_bare_ack_in_window_restarts_the_wait_without_an_answer() {
        let ack = seg(PEER_NEXT, TcpControl::None, true, &[]);
        let v = verdict(&entry(None), &ack, false, NOW);
        assert_eq!(v, Verdict::Quiet { restart: true });
        // Data after the FIN is out of window: ACKed.
        let data = seg(PEER_NEXT, TcpControl::Psh, true, b"late");
        assert_eq!(
            verdict(&entry(None), &data, false, NOW),
            Verdict::Ack { restart: true }
        );
    }

    #[test]
    fn a_syn_reopens_the_tuple_only_past_the_next_sequence_number_and_to_a_listener() {
        let new = seg(PEER_NEXT + 1_000_000, TcpControl::Syn, false, &[]);
        assert_eq!(verdict(&entry(None), &new, true, NOW), Verdict::Reopen);
        // No listener: an ACK, as Linux answers (the wait is not restarted
        // by a SYN without ACK, which may be an old duplicate).
        assert_eq!(
            verdict(&entry(None), &new, false, NOW),
            Verdict::Ack { restart: false }
        );
        // An old SYN (before the next number): an ACK, not a connection.
        let old = seg(PEER_NEXT - 1_000_000, TcpControl::Syn, false, &[]);
        assert_eq!(
            verdict(&entry(None), &old, true, NOW),
            Verdict::Ack { restart: false }
        );
        // A SYN with an ACK is no new connection.
        let syn_ack = seg(PEER_NEXT + 10, TcpControl::Syn, true, &[]);
        assert_eq!(
            verdict(&entry(None), &syn_ack, true, NOW),
            Verdict::Ack { restart: true }
        );
    }

    #[test]
    fn acks_are_rate_limited_per_tuple() {
        let fin = seg(PEER_NEXT - 1, TcpControl::Fin, true, &[]);
        let just = entry(Some(NOW - Duration::from_millis(100)));
        assert_eq!(
            verdict(&just, &fin, false, NOW),
            Verdict::Quiet { restart: true }
        );
        let then = entry(Some(NOW - ACK_INTERVAL));
        assert_eq!(
            verdict(&then, &fin, false, NOW),
            Verdict::Ack { restart: true }
        );
    }

    #[test]
    fn final_numbers_are_the_end_of_the_last_segment_and_its_ack() {
        let s = FinalSeqs::after(TcpSeqNumber(100), 3, true, TcpSeqNumber(7));
        assert_eq!(s.rcv_nxt, TcpSeqNumber(104));
        assert_eq!(s.snd_nxt, TcpSeqNumber(7));
        // Closing -> TIME-WAIT on a bare ACK: no FIN, no data.
        let s = FinalSeqs::after(TcpSeqNumber(i32::MAX), 0, false, TcpSeqNumber(7));
        assert_eq!(s.rcv_nxt, TcpSeqNumber(i32::MAX));
    }
}
