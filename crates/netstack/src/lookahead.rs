//! Prefetching: look at the packets waiting in the device, and bring the
//! state they will touch into cache before the stack gets to them.
//!
//! With thousands of active connections, nothing about the connection a
//! segment belongs to is in cache when the segment arrives: its demux
//! slot, its `Conn`, its smoltcp socket are each a miss to memory, and
//! each miss is paid in turn, because each address comes from the one
//! before. A device that can show its queue ([`Lookahead`]) lets
//! [`Stack::poll`](crate::Stack::poll) run that chain a few packets ahead,
//! one link per packet: while it processes packet *i*, it prefetches the
//! demux slot of packet *i + 3*, the `Conn` of packet *i + 2* (its slot
//! came in one packet ago), and for packet *i + 1* (its `Conn` came in one
//! packet ago) the smoltcp socket, the receive-buffer line its payload
//! will go to, the send buffer's first line (where the reply will be
//! written), and the socket entry and `SocketEvents` its events will go
//! to. The `Conn` keeps those addresses, learnt when they were last hot. Egress
//! over the dirty list runs the same chain (the `Conn` two ahead, the
//! socket of the next one). A prefetch is a hint: it changes no state,
//! and a wrong address costs nothing but the hint.
//!
//! Below [`StackConfig::prefetch_min_conns`](crate::StackConfig)
//! connections nothing is prefetched: there connection state stays in
//! cache, and the look-ahead only costs.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};

/// A device that can show the packets waiting in it before they are
/// received. Devices that cannot keep the default (no look-ahead, no
/// prefetching).
pub trait Lookahead {
    /// Passes the `k`-th packet waiting to be received (0 = the next one)
    /// to `f` without receiving it, if that many are waiting and the device
    /// can show them.
    fn peek<R>(&self, k: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        let _ = (k, f);
        None
    }

    /// How many packets are waiting to be received, as far as the device
    /// can tell (0 if it cannot).
    fn waiting(&self) -> usize {
        0
    }
}

impl Lookahead for netdev::LinkDevice {
    fn peek<R>(&self, k: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        netdev::LinkDevice::peek(self, k, f)
    }

    fn waiting(&self) -> usize {
        self.rx_queued()
    }
}

/// A TAP device's queue is in the kernel: no look-ahead.
impl Lookahead for netdev::Tap {}

/// A capture shows what the device it wraps shows.
impl<D: Lookahead + smoltcp::phy::Device> Lookahead for netdev::Pcap<D> {
    fn peek<R>(&self, k: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        self.get_ref().peek(k, f)
    }

    fn waiting(&self) -> usize {
        self.get_ref().waiting()
    }
}

/// Fault injection decides a packet's fate only when it is received, so
/// there is nothing reliable to show: no look-ahead.
impl<D: smoltcp::phy::Device> Lookahead for netdev::Faulty<D> {}

/// Hints the CPU to bring the `bytes` bytes at `start` into cache.
#[allow(unsafe_code)] // one intrinsic, with its SAFETY below
pub(crate) fn prefetch<T>(start: *const T, bytes: usize) {
    let start = start.cast::<u8>();
    let mut offset = 0;
    while offset < bytes {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch never
        // dereferences its address: any address, even an invalid one, is
        // only a hint that may be ignored.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset).cast());
        }
        offset += 64;
    }
}
