//! A TAP device: Ethernet frames to and from the Linux kernel.
//!
//! [`Tap::open`] attaches to (or creates) a TAP interface through the
//! `tun-tap` crate: `IFF_TAP | IFF_NO_PI` (frames start with the Ethernet
//! header, no packet-information prefix), non-blocking. TUNSETIFF looks the
//! name up in the **calling thread's network namespace**, so a TAP that
//! lives in a namespace must be opened by a thread inside it (run the
//! program under `ip netns exec`, or `setns(2)` a thread first). A name that
//! does not exist there creates a fresh, unconfigured device that vanishes
//! when the `Tap` is dropped.
//!
//! ## Receive: batches into reused buffers
//!
//! When its queue is empty, `receive` reads up to [`RX_BATCH`] frames in a
//! row (one `read(2)` each: a TAP has no batched read without `vnet_hdr`)
//! into buffers allocated when the device was opened, then hands them to
//! smoltcp one by one. A frame longer than the MTU allows is dropped and
//! counted (`rx_oversize`).
//!
//! ## Transmit: back-pressure, never a silent drop
//!
//! A [`TapTxToken`] writes the frame from one reused buffer. If the kernel
//! answers `EAGAIN`, the frame is **kept** (smoltcp believes it sent) and
//! retried first thing at the next `transmit` or `receive`; until it is
//! out, `transmit` returns `None` and `receive` holds its frames back (a
//! received frame may need a reply token that must not fail). That is
//! back-pressure, counted in [`TapStats::tx_blocked`]; [`Tap::tx_pending`]
//! tells a driver to wait for `POLLOUT`.
//!
//! Any other I/O error is counted ([`TapStats::rx_errors`],
//! [`TapStats::tx_errors`]) and kept for [`Tap::take_error`]; nothing
//! panics. A frame whose write failed that way is lost, as on a wire.
//!
//! ## Capabilities
//!
//! `Medium::Ethernet`, `max_transmission_unit` = MTU + 14 (the Ethernet
//! header; smoltcp's convention for Ethernet), and every checksum
//! verified on receive and computed on transmit (the kernel fills in
//! checksums for frames it writes to a TAP, and checks those it reads).
//!
//! The descriptor is exposed through [`AsRawFd`] so that a driver can sleep
//! in `poll(2)` on it.

use std::io;
use std::os::unix::io::{AsRawFd, RawFd};

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use tun_tap::{Iface, Mode};

/// Bytes of an Ethernet header (no VLAN tag).
pub const ETHERNET_HEADER: usize = 14;
/// The IP MTU of [`Tap::open`]: Linux's default for a TAP.
pub const TAP_DEFAULT_MTU: usize = 1500;
/// Most frames read in one go when the receive queue is empty.
pub const RX_BATCH: usize = 32;

/// Counts a [`Tap`] keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Frames handed to smoltcp.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Refills of the receive queue that read at least one frame.
    pub rx_batches: u64,
    /// Frames longer than MTU + 14, dropped.
    pub rx_oversize: u64,
    /// Read errors other than `EAGAIN` / `EINTR`.
    pub rx_errors: u64,
    /// Frames written to the kernel.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Writes that met `EAGAIN` (the frame was kept and retried), plus
    /// `transmit` calls refused while such a frame was waiting.
    pub tx_blocked: u64,
    /// Write errors other than `EAGAIN` / `EINTR` (the frame is lost).
    pub tx_errors: u64,
}

/// How the device reads and writes frames: the TAP's descriptor, or a
/// scripted fake in the tests.
trait FrameIo {
    fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn send_frame(&self, frame: &[u8]) -> io::Result<usize>;
}

impl FrameIo for Iface {
    fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }
    fn send_frame(&self, frame: &[u8]) -> io::Result<usize> {
        self.send(frame)
    }
}

/// A TAP device for smoltcp (see the module docs).
pub struct Tap {
    iface: Iface,
    mtu: usize,
    rx: RxQueue,
    out: Out,
}

/// Frames read from the kernel, waiting for smoltcp.
struct RxQueue {
    /// [`RX_BATCH`] buffers of `frame_len + 1` bytes (one more than a
    /// frame may have, to see oversized frames).
    bufs: Vec<Box<[u8]>>,
    lens: [usize; RX_BATCH],
    next: usize,
    count: usize,
}

/// The transmit side, borrowed by a [`TapTxToken`].
struct Out {
    /// The frame being built; reused for every frame.
    buf: Vec<u8>,
    /// Length of a frame in `buf` that met `EAGAIN` and waits to be
    /// written again.
    pending: Option<usize>,
    stats: TapStats,
    error: Option<io::Error>,
}

/// One received frame, in its receive buffer.
pub struct TapRxToken<'a> {
    frame: &'a [u8],
}

/// Permission to write one frame to the kernel.
pub struct TapTxToken<'a> {
    iface: &'a Iface,
    out: &'a mut Out,
}

impl Tap {
    /// Opens the TAP interface `name` with an MTU of [`TAP_DEFAULT_MTU`].
    pub fn open(name: &str) -> io::Result<Tap> {
        Self::open_with_mtu(name, TAP_DEFAULT_MTU)
    }

    /// Opens the TAP interface `name`, whose IP MTU is `mtu` (the kernel
    /// side's `ip link ... mtu`; 68..=65521), non-blocking, without packet
    /// information.
    pub fn open_with_mtu(name: &str, mtu: usize) -> io::Result<Tap> {
        if !(68..=65535 - ETHERNET_HEADER).contains(&mtu) {
            return Err(io::Error::from_raw_os_error(22)); // EINVAL
        }
        let iface = Iface::without_packet_info(name, Mode::Tap)?;
        iface.set_non_blocking()?;
        let frame_len = mtu + ETHERNET_HEADER;
        Ok(Tap {
            iface,
            mtu,
            rx: RxQueue {
                bufs: (0..RX_BATCH)
                    .map(|_| vec![0u8; frame_len + 1].into_boxed_slice())
                    .collect(),
                lens: [0; RX_BATCH],
                next: 0,
                count: 0,
            },
            out: Out {
                buf: vec![0u8; frame_len],
                pending: None,
                stats: TapStats::default(),
                error: None,
            },
        })
    }

    /// The interface's name, as the kernel gave it.
    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// The IP MTU.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The counts so far.
    pub fn stats(&self) -> TapStats {
        self.out.stats
    }

    /// The last I/O error other than `EAGAIN`, if any, clearing it.
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.out.error.take()
    }

    /// True while a frame that met `EAGAIN` waits to be written: the
    /// device transmits nothing else until then, and a driver that sleeps
    /// should wait for `POLLOUT` as well as `POLLIN`.
    pub fn tx_pending(&self) -> bool {
        self.out.pending.is_some()
    }

    /// Frames read from the kernel and not yet handed to smoltcp: a driver
    /// must not sleep on the descriptor while this is not zero.
    pub fn rx_queued(&self) -> usize {
        self.rx.count - self.rx.next
    }

    /// Tries to write the waiting frame, if any. Returns true when nothing
    /// is waiting any more.
    pub fn flush(&mut self) -> bool {
        self.out.flush(&self.iface)
    }
}

impl Out {
    /// Writes the frame waiting in `buf`, if any. Returns true when nothing
    /// waits any more (written, or lost to an error other than `EAGAIN`).
    fn flush(&mut self, iface: &impl FrameIo) -> bool {
        let Some(len) = self.pending else {
            return true;
        };
        match write_frame(iface, &self.buf[..len]) {
            Ok(()) => {
                self.pending = None;
                self.sent(len);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stats.tx_blocked += 1;
                false
            }
            Err(e) => {
                self.pending = None;
                self.failed(e);
                true
            }
        }
    }

    fn sent(&mut self, len: usize) {
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
    }

    fn failed(&mut self, e: io::Error) {
        self.stats.tx_errors += 1;
        self.error = Some(e);
    }
}

/// Writes one frame, retrying on `EINTR`.
fn write_frame(iface: &impl FrameIo, frame: &[u8]) -> io::Result<()> {
    loop {
        match iface.send_frame(frame) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

impl RxQueue {
    /// Reads up to [`RX_BATCH`] frames into the (empty) queue.
    fn refill(&mut self, iface: &impl FrameIo, out: &mut Out, frame_len: usize) {
        self.next = 0;
        self.count = 0;
        while self.count < RX_BATCH {
            let buf = &mut self.bufs[self.count];
            match iface.recv_frame(buf) {
                Ok(n) if n > frame_len => out.stats.rx_oversize += 1,
                Ok(n) => {
                    self.lens[self.count] = n;
                    self.count += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    out.stats.rx_errors += 1;
                    out.error = Some(e);
                    break;
                }
            }
        }
        if self.count > 0 {
            out.stats.rx_batches += 1;
        }
    }
}

impl phy::Device for Tap {
    type RxToken<'a> = TapRxToken<'a>;
    type TxToken<'a> = TapTxToken<'a>;

    /// The next frame from the kernel, with a token for its reply; `None`
    /// when there is none, or while a frame waits to be written.
    fn receive(&mut self, _timestamp: Instant) -> Option<(TapRxToken<'_>, TapTxToken<'_>)> {
        if !self.out.flush(&self.iface) {
            return None;
        }
        if self.rx.next == self.rx.count {
            self.rx
                .refill(&self.iface, &mut self.out, self.mtu + ETHERNET_HEADER);
        }
        if self.rx.next == self.rx.count {
            return None;
        }
        let i = self.rx.next;
        self.rx.next += 1;
        let len = self.rx.lens[i];
        self.out.stats.rx_packets += 1;
        self.out.stats.rx_bytes += len as u64;
        Some((
            TapRxToken {
                frame: &self.rx.bufs[i][..len],
            },
            TapTxToken {
                iface: &self.iface,
                out: &mut self.out,
            },
        ))
    }

    /// A token to write one frame, or `None` while an earlier frame waits
    /// to be written (back-pressure).
    fn transmit(&mut self, _timestamp: Instant) -> Option<TapTxToken<'_>> {
        if !self.out.flush(&self.iface) {
            return None;
        }
        Some(TapTxToken {
            iface: &self.iface,
            out: &mut self.out,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + ETHERNET_HEADER;
        // Verify on receive, compute on transmit (the default, stated).
        caps.checksum = ChecksumCapabilities::default();
        caps
    }
}

impl phy::RxToken for TapRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

impl phy::TxToken for TapTxToken<'_> {
    /// Builds the frame in the reused buffer and writes it. `EAGAIN` keeps
    /// it for a retry (see the module docs).
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let out = self.out;
        if out.buf.len() < len {
            // smoltcp sizes frames by the MTU, so this does not happen; if
            // it did, the buffer grows once and stays.
            out.buf.resize(len, 0);
        }
        let result = f(&mut out.buf[..len]);
        // The frame waits in `buf` until written: on EAGAIN it stays there
        // for the next transmit/receive to retry.
        out.pending = Some(len);
        out.flush(self.iface);
        result
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("name", &self.iface.name())
            .field("mtu", &self.mtu)
            .field("stats", &self.out.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// Scripted reads and writes; a write with no script left succeeds.
    #[derive(Default)]
    struct Fake {
        reads: RefCell<VecDeque<io::Result<Vec<u8>>>>,
        writes: RefCell<VecDeque<io::ErrorKind>>,
        written: RefCell<Vec<Vec<u8>>>,
    }

    impl FrameIo for Fake {
        fn recv_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
            match self.reads.borrow_mut().pop_front() {
                Some(Ok(f)) => {
                    let n = f.len().min(buf.len());
                    buf[..n].copy_from_slice(&f[..n]);
                    Ok(f.len().min(buf.len()))
                }
                Some(Err(e)) => Err(e),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
        fn send_frame(&self, frame: &[u8]) -> io::Result<usize> {
            match self.writes.borrow_mut().pop_front() {
                Some(kind) => Err(kind.into()),
                None => {
                    self.written.borrow_mut().push(frame.to_vec());
                    Ok(frame.len())
                }
            }
        }
    }

    fn out() -> Out {
        Out {
            buf: vec![0; 1514],
            pending: None,
            stats: TapStats::default(),
            error: None,
        }
    }

    /// What a TapTxToken does, on a fake.
    fn send(out: &mut Out, io: &Fake, frame: &[u8]) {
        out.buf[..frame.len()].copy_from_slice(frame);
        out.pending = Some(frame.len());
        out.flush(io);
    }

    #[test]
    fn eagain_keeps_the_frame_until_a_retry_writes_it_whole() {
        let io = Fake::default();
        io.writes.borrow_mut().extend([
            io::ErrorKind::WouldBlock,
            io::ErrorKind::Interrupted,
            io::ErrorKind::WouldBlock,
        ]);
        let mut out = out();
        send(&mut out, &io, b"frame one");
        assert_eq!(out.pending, Some(9), "kept, not dropped");
        assert!(io.written.borrow().is_empty());
        // EINTR is retried at once; the second EAGAIN keeps it again.
        assert!(!out.flush(&io));
        assert!(out.flush(&io), "written on the third try");
        assert_eq!(*io.written.borrow(), vec![b"frame one".to_vec()]);
        assert_eq!(out.pending, None);
        let s = out.stats;
        assert_eq!(
            (s.tx_packets, s.tx_bytes, s.tx_blocked, s.tx_errors),
            (1, 9, 2, 0)
        );
    }

    #[test]
    fn other_write_errors_are_counted_and_kept_and_the_frame_is_lost() {
        let io = Fake::default();
        io.writes
            .borrow_mut()
            .push_back(io::ErrorKind::InvalidInput);
        let mut out = out();
        send(&mut out, &io, b"bad");
        assert_eq!(out.pending, None);
        assert_eq!(out.stats.tx_errors, 1);
        assert_eq!(
            out.error.take().map(|e| e.kind()),
            Some(io::ErrorKind::InvalidInput)
        );
        send(&mut out, &io, b"good");
        assert_eq!(*io.written.borrow(), vec![b"good".to_vec()]);
    }

    #[test]
    fn refill_reads_a_batch_skipping_oversized_frames_and_stopping_at_errors() {
        let io = Fake::default();
        io.reads.borrow_mut().extend([
            Ok(vec![1; 60]),
            Ok(vec![2; 1515]), // longer than 1514: dropped, counted
            Err(io::ErrorKind::Interrupted.into()),
            Ok(vec![3; 1514]),
            Err(io::Error::from_raw_os_error(5)), // EIO: stop, keep the error
            Ok(vec![4; 60]),
        ]);
        let mut q = RxQueue {
            bufs: (0..RX_BATCH)
                .map(|_| vec![0u8; 1515].into_boxed_slice())
                .collect(),
            lens: [0; RX_BATCH],
            next: 0,
            count: 0,
        };
        let mut out = out();
        q.refill(&io, &mut out, 1514);
        assert_eq!(q.count, 2);
        assert_eq!((q.lens[0], q.bufs[0][0]), (60, 1));
        assert_eq!((q.lens[1], q.bufs[1][0]), (1514, 3));
        assert_eq!(
            (
                out.stats.rx_oversize,
                out.stats.rx_errors,
                out.stats.rx_batches
            ),
            (1, 1, 1)
        );
        assert_eq!(out.error.take().and_then(|e| e.raw_os_error()), Some(5));
        // The next refill goes on after the error, then meets EAGAIN.
        q.refill(&io, &mut out, 1514);
        assert_eq!((q.count, q.lens[0], q.bufs[0][0]), (1, 60, 4));
        q.refill(&io, &mut out, 1514);
        assert_eq!(q.count, 0);
    }

    #[test]
    fn open_with_an_impossible_mtu_is_einval() {
        for mtu in [0, 67, 65535] {
            let err = Tap::open_with_mtu("utcp-never", mtu).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(22), "mtu {mtu}");
        }
    }
}
