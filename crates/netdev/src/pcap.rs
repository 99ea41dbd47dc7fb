//! Packet capture to a file that `tcpdump -r` and Wireshark read.
//!
//! [`pcap_file`] wraps any device in smoltcp's [`PcapWriter`], which
//! records every frame received and sent (libpcap format, link type from
//! the device's medium: `EN10MB` for Ethernet/TAP, `RAW` IP for the
//! in-memory link) with the timestamp smoltcp passes to the device.
//!
//! The sink is [`PcapFile`], not smoltcp's `impl PcapSink for Write`,
//! because that one panics on a write error (a full disk would take the
//! stack down). `PcapFile` stops writing at the first error and counts it
//! in its [`PcapCounters`] (shared, so they stay readable after the sink
//! moved into the `PcapWriter`); the stack goes on. It buffers
//! each record and flushes it whole (smoltcp flushes after each packet),
//! so a capture cut short by a signal ends on a record boundary.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use smoltcp::phy::{Device, PcapMode, PcapSink, PcapWriter};

/// A device whose frames are captured to a [`PcapFile`].
pub type Pcap<D> = PcapWriter<D, PcapFile>;

/// Wraps `device` so that every frame it receives or sends is appended to
/// a new pcap file at `path` (created or truncated). The counters tell how
/// many records were written and whether writing failed.
pub fn pcap_file<D: Device>(
    device: D,
    path: impl AsRef<Path>,
) -> io::Result<(Pcap<D>, Arc<PcapCounters>)> {
    let sink = PcapFile::create(path)?;
    let counters = sink.counters();
    Ok((PcapWriter::new(device, sink, PcapMode::Both), counters))
}

/// What a [`PcapFile`] has done, readable from any thread.
#[derive(Debug, Default)]
pub struct PcapCounters {
    records: AtomicU64,
    errors: AtomicU64,
}

impl PcapCounters {
    /// Records (packets) flushed to the file so far.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Write errors (the first one stops the capture).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// A pcap sink on a file that never panics (see the module docs).
#[derive(Debug)]
pub struct PcapFile {
    out: BufWriter<File>,
    failed: bool,
    counters: Arc<PcapCounters>,
}

impl PcapFile {
    /// A sink writing to a new file at `path`.
    pub fn create(path: impl AsRef<Path>) -> io::Result<PcapFile> {
        Ok(PcapFile {
            out: BufWriter::with_capacity(64 * 1024, File::create(path)?),
            failed: false,
            counters: Arc::default(),
        })
    }

    /// Its counters, shared.
    pub fn counters(&self) -> Arc<PcapCounters> {
        self.counters.clone()
    }

    fn fail(&mut self) {
        self.failed = true;
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl PcapSink for PcapFile {
    fn write(&mut self, data: &[u8]) {
        if !self.failed && Write::write_all(&mut self.out, data).is_err() {
            self.fail();
        }
    }

    /// smoltcp calls this after each packet record.
    fn flush(&mut self) {
        if self.failed {
            return;
        }
        match Write::flush(&mut self.out) {
            Ok(()) => {
                self.counters.records.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => self.fail(),
        }
    }
}

// The link's rings use loom's primitives under `--cfg loom`, which only
// work inside a loom model.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::Link;
    use smoltcp::phy::{RxToken, TxToken};
    use smoltcp::time::Instant;

    /// Reads a classic pcap file: (link type, [(ts_sec, ts_usec, data)]).
    fn read_pcap(bytes: &[u8]) -> (u32, Vec<(u32, u32, Vec<u8>)>) {
        let u32_at = |i: usize| u32::from_ne_bytes(bytes[i..i + 4].try_into().unwrap());
        assert_eq!(u32_at(0), 0xa1b2_c3d4, "magic");
        let link = u32_at(20);
        let mut records = Vec::new();
        let mut i = 24;
        while i < bytes.len() {
            let (sec, usec, caplen, len) =
                (u32_at(i), u32_at(i + 4), u32_at(i + 8), u32_at(i + 12));
            assert_eq!(caplen, len);
            let start = i + 16;
            records.push((sec, usec, bytes[start..start + caplen as usize].to_vec()));
            i = start + caplen as usize;
        }
        (link, records)
    }

    #[test]
    fn captured_link_packets_read_back_in_order_with_timestamps() {
        let dir = std::env::temp_dir().join(format!("netdev-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("link.pcap");
        let (a, mut b) = Link::pair(1500);
        let (mut a, counters) = pcap_file(a, &path).unwrap();
        let t = Instant::from_micros(3_000_250);
        a.transmit(t)
            .unwrap()
            .consume(3, |buf| buf.copy_from_slice(b"abc"));
        b.transmit(t)
            .unwrap()
            .consume(2, |buf| buf.copy_from_slice(b"xy"));
        let (rx, _) = a.receive(Instant::from_micros(4_000_000)).unwrap();
        assert_eq!(rx.consume(|p| p.to_vec()), b"xy");
        assert_eq!(a.get_ref().stats().rx_packets, 1);
        assert_eq!((counters.records(), counters.errors()), (2, 0));
        drop(a);
        let (link, records) = read_pcap(&std::fs::read(&path).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(link, 101, "LINKTYPE_RAW for the IP medium");
        assert_eq!(
            records,
            vec![(3, 250, b"abc".to_vec()), (4, 0, b"xy".to_vec())]
        );
    }
}
