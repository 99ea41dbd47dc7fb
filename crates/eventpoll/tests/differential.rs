//! Differential test: eventpoll's `FdTable<BasicFile>` against the Linux
//! kernel's own epoll.
//!
//! Each sequence creates, on both sides, one epoll and the same objects:
//! three non-blocking eventfds (one `EFD_SEMAPHORE`), a `dup` of the first
//! one (a second key for the same description, EPOLL_SPEC A1 and §1.4 item
//! 29) and two non-blocking pipes. It then applies the same 50 random
//! operations to both: `epoll_ctl` ADD / MOD / DEL with random masks (IN,
//! OUT, PRI, RDHUP, ET, ONESHOT, sometimes ERR/HUP and EXCLUSIVE, never
//! WAKEUP, which the kernel honours for root), eventfd and pipe reads and
//! writes, `close`, `epoll_wait(timeout 0, maxevents 1..=4)`, and a few
//! calls that must fail (ADD of the epoll into itself, fd -1, an invalid op,
//! `maxevents` 0). Every result must be identical: each wait's list of
//! (data, events) in order, each read's bytes or counter, and each call's
//! success or errno. The epoll `data` of a registration is the object's
//! index plus 16 times a random tag, so a MOD's new data is checked too.
//!
//! Pipes are never filled (at most 50 × 64 bytes per sequence); filling and
//! slot accounting are covered by the conformance tests, checked against
//! the kernel with `F_SETPIPE_SZ`. A closed object's fd number is never used again (other tests
//! run in other threads of this process and may reuse it); later operations
//! on it are skipped on both sides, and every kernel fd is closed at the end
//! of its sequence.
//!
//! On a divergence the test fails with the seed, the sequence, the
//! operation log with both sides' results up to the divergence, and a
//! shrunk sequence (operations removed one at a time while it still
//! diverges).
//!
//! By default 10,000 sequences run from a fixed base seed (a few seconds in
//! a debug build). Run more seeds (sequence `i` uses the seed `base + i`,
//! so a failing sequence reruns alone with `EVENTPOLL_DIFF_SEED=base+i` and
//! `EVENTPOLL_DIFF_SEQUENCES=1`):
//!
//! ```text
//! EVENTPOLL_DIFF_SEED=12345 EVENTPOLL_DIFF_SEQUENCES=100000 \
//!     cargo test -p eventpoll --test differential -- --nocapture
//! ```

use std::fmt::{self, Write as _};

mod util;

use eventpoll::{BasicFile, EpollEvent, Events, FdTable, O_NONBLOCK};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const OPS_PER_SEQUENCE: usize = 50;
const DEFAULT_SEQUENCES: u64 = 10_000;
const DEFAULT_SEED: u64 = 0x00e9_011d_1ff0;
/// The largest eventfd counter (`0xfffffffffffffffe`).
const MAX_COUNT: u64 = u64::MAX - 1;
const MAX_EVENTS: usize = 4;

const EPOLL_CTL_ADD: i32 = 1;
const EPOLL_CTL_DEL: i32 = 2;
const EPOLL_CTL_MOD: i32 = 3;

/// What an object is; eventfds name their counter (shared by a `dup`),
/// pipe ends their pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    EventFd { counter: usize, semaphore: bool },
    PipeReader { pipe: usize },
    PipeWriter { pipe: usize },
}

/// The objects of every sequence, in creation order.
const OBJECTS: [(&str, Kind); 8] = [
    (
        "efd0",
        Kind::EventFd {
            counter: 0,
            semaphore: false,
        },
    ),
    (
        "efd1s",
        Kind::EventFd {
            counter: 1,
            semaphore: true,
        },
    ),
    (
        "efd2",
        Kind::EventFd {
            counter: 2,
            semaphore: false,
        },
    ),
    (
        "dup(efd0)",
        Kind::EventFd {
            counter: 0,
            semaphore: false,
        },
    ),
    ("p0r", Kind::PipeReader { pipe: 0 }),
    ("p0w", Kind::PipeWriter { pipe: 0 }),
    ("p1r", Kind::PipeReader { pipe: 1 }),
    ("p1w", Kind::PipeWriter { pipe: 1 }),
];
const DUP_OF: [Option<usize>; 8] = [None, None, None, Some(0), None, None, None, None];
const COUNTERS: usize = 3;

// ---------------------------------------------------------------------------
// Operations and results
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteArg {
    /// An eventfd value.
    Value(u64),
    /// The value that brings the eventfd counter to `0xfffffffffffffffe`.
    ToMax,
    /// An eventfd write of 4 bytes (`EINVAL`).
    Short,
    /// A pipe write of this many bytes.
    Bytes(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Ctl {
        op: i32,
        obj: usize,
        events: u32,
        tag: u64,
    },
    /// ADD of the epoll into itself: `EINVAL`.
    AddSelf,
    /// ADD of fd -1: `EBADF`.
    AddFdMinusOne,
    /// An invalid op (0 or 4) on a valid object: `EINVAL`.
    InvalidCtl {
        op: i32,
        obj: usize,
    },
    Write {
        obj: usize,
        arg: WriteArg,
    },
    Read {
        obj: usize,
        len: usize,
    },
    Close {
        obj: usize,
    },
    Wait {
        max: i32,
    },
}

impl Op {
    fn object(&self) -> Option<usize> {
        match *self {
            Op::Ctl { obj, .. }
            | Op::InvalidCtl { obj, .. }
            | Op::Write { obj, .. }
            | Op::Read { obj, .. }
            | Op::Close { obj } => Some(obj),
            Op::AddSelf | Op::AddFdMinusOne | Op::Wait { .. } => None,
        }
    }
}

fn events_str(bits: u32) -> String {
    format!("{:?}", Events::from_raw(bits))
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Op::Ctl {
                op,
                obj,
                events,
                tag,
            } => {
                let name = OBJECTS[obj].0;
                match op {
                    EPOLL_CTL_DEL => write!(f, "DEL {name}"),
                    _ => write!(
                        f,
                        "{} {name} {} data={}",
                        if op == EPOLL_CTL_ADD { "ADD" } else { "MOD" },
                        events_str(events),
                        data_of(obj, tag)
                    ),
                }
            }
            Op::AddSelf => write!(f, "ADD epfd into itself"),
            Op::AddFdMinusOne => write!(f, "ADD fd -1"),
            Op::InvalidCtl { op, obj } => write!(f, "epoll_ctl op={op} {}", OBJECTS[obj].0),
            Op::Write { obj, arg } => {
                let name = OBJECTS[obj].0;
                match arg {
                    WriteArg::Value(v) => write!(f, "write {name} {v:#x}"),
                    WriteArg::ToMax => write!(f, "write {name} (counter to 0xfffffffffffffffe)"),
                    WriteArg::Short => write!(f, "write {name} 4 bytes"),
                    WriteArg::Bytes(n) => write!(f, "write {name} {n} bytes"),
                }
            }
            Op::Read { obj, len } => write!(f, "read {} {len} bytes", OBJECTS[obj].0),
            Op::Close { obj } => write!(f, "close {}", OBJECTS[obj].0),
            Op::Wait { max } => write!(f, "epoll_wait max={max} timeout=0"),
        }
    }
}

fn data_of(obj: usize, tag: u64) -> u64 {
    obj as u64 + 16 * tag
}

/// The successful result of one operation.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Val {
    Unit,
    Written(usize),
    Counter(u64),
    Bytes(Vec<u8>),
    Events(Vec<(u64, u32)>),
    /// The call panicked (eventpoll only), with the message and location.
    Panicked(String),
}

type Outcome = Result<Val, i32>;

fn outcome_str(outcome: &Outcome) -> String {
    match outcome {
        Ok(Val::Unit) => "ok".to_string(),
        Ok(Val::Written(n)) => format!("ok {n}"),
        Ok(Val::Counter(v)) => format!("ok counter={v:#x}"),
        Ok(Val::Bytes(b)) => format!("ok {} bytes {b:?}", b.len()),
        Ok(Val::Panicked(msg)) => format!("PANICKED: {msg}"),
        Ok(Val::Events(evs)) => {
            let list: Vec<String> = evs
                .iter()
                .map(|&(data, ev)| format!("({data}, {})", events_str(ev)))
                .collect();
            format!("[{}]", list.join(", "))
        }
        Err(e) => {
            let name = eventpoll::Errno(*e)
                .name()
                .map_or_else(|| format!("errno {e}"), str::to_string);
            format!("Err({name})")
        }
    }
}

// ---------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------

/// The random part of a sequence's setup: the eventfds' initial values.
#[derive(Clone, Copy, Debug)]
struct Init {
    counters: [u32; COUNTERS],
}

fn random_mask(rng: &mut SmallRng) -> u32 {
    let mut mask = Events::empty();
    for (bit, p) in [
        (Events::IN, 0.55),
        (Events::OUT, 0.45),
        (Events::PRI, 0.2),
        (Events::RDHUP, 0.2),
        (Events::ET, 0.3),
        (Events::ONESHOT, 0.25),
    ] {
        if rng.random_bool(p) {
            mask |= bit;
        }
    }
    if rng.random_bool(0.1) {
        mask |= Events::ERR;
    }
    if rng.random_bool(0.1) {
        mask |= Events::HUP;
    }
    if rng.random_bool(0.1) {
        mask |= Events::EXCLUSIVE;
        // Half of them stay within the allowed bits, so a valid EXCLUSIVE
        // registration (and the MOD that must then fail) gets exercised.
        if rng.random_bool(0.5) {
            mask &= Events::EXCLUSIVE_OK;
        }
    }
    mask.bits()
}

fn generate(rng: &mut SmallRng) -> (Init, Vec<Op>) {
    let init = Init {
        counters: [
            rng.random_range(0..3),
            rng.random_range(0..3),
            rng.random_range(0..3),
        ],
    };
    let mut ops = Vec::with_capacity(OPS_PER_SEQUENCE);
    for _ in 0..OPS_PER_SEQUENCE {
        let obj = rng.random_range(0..OBJECTS.len());
        let roll = rng.random_range(0..100);
        let op = match roll {
            0..=13 => Op::Ctl {
                op: EPOLL_CTL_ADD,
                obj,
                events: random_mask(rng),
                tag: rng.random_range(0..4),
            },
            14..=23 => Op::Ctl {
                op: EPOLL_CTL_MOD,
                obj,
                events: random_mask(rng),
                tag: rng.random_range(0..4),
            },
            24..=28 => Op::Ctl {
                op: EPOLL_CTL_DEL,
                obj,
                events: 0,
                tag: 0,
            },
            29..=49 => {
                // Mostly a writable object; sometimes a reader (EBADF).
                let obj = if rng.random_bool(0.9) {
                    [0, 1, 2, 3, 5, 7][rng.random_range(0..6)]
                } else {
                    obj
                };
                let arg = match OBJECTS[obj].1 {
                    Kind::EventFd { .. } => match rng.random_range(0..100) {
                        0..=59 => WriteArg::Value(rng.random_range(0..4)),
                        60..=79 => WriteArg::ToMax,
                        80..=89 => WriteArg::Value(rng.random_range(MAX_COUNT - 4..=MAX_COUNT)),
                        90..=94 => WriteArg::Value(u64::MAX),
                        _ => WriteArg::Short,
                    },
                    _ => WriteArg::Bytes(rng.random_range(1..=64)),
                };
                Op::Write { obj, arg }
            }
            50..=68 => {
                let obj = if rng.random_bool(0.9) {
                    [0, 1, 2, 3, 4, 6][rng.random_range(0..6)]
                } else {
                    obj
                };
                let len = match OBJECTS[obj].1 {
                    Kind::EventFd { .. } => [8, 8, 8, 8, 8, 8, 16, 4][rng.random_range(0..8)],
                    _ => rng.random_range(1..=100),
                };
                Op::Read { obj, len }
            }
            69..=71 => Op::Close { obj },
            72..=95 => Op::Wait {
                max: rng.random_range(1..=MAX_EVENTS as i32),
            },
            96 => Op::AddSelf,
            97 => Op::AddFdMinusOne,
            98 => Op::InvalidCtl {
                op: [0, 4][rng.random_range(0..2)],
                obj,
            },
            _ => Op::Wait { max: 0 },
        };
        ops.push(op);
    }
    (init, ops)
}

// ---------------------------------------------------------------------------
// The two sides
// ---------------------------------------------------------------------------

/// The operations both sides implement, on fd numbers of their own.
trait Side {
    fn epfd(&self) -> i32;
    fn ctl(&mut self, op: i32, fd: i32, event: Option<(u32, u64)>) -> Result<(), i32>;
    fn wait(&mut self, max: i32) -> Result<Vec<(u64, u32)>, i32>;
    fn read(&mut self, fd: i32, len: usize) -> Result<Vec<u8>, i32>;
    fn write(&mut self, fd: i32, buf: &[u8]) -> Result<usize, i32>;
    fn close(&mut self, fd: i32) -> Result<(), i32>;
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .expect("an OS error")
}

/// The kernel: real fds. Every fd it still holds is closed on drop, so a
/// panicking sequence leaks nothing.
struct Kernel {
    epfd: i32,
    open: Vec<i32>,
}

impl Kernel {
    fn new() -> Kernel {
        // SAFETY: plain syscall without pointers.
        let epfd = unsafe { libc::epoll_create1(0) };
        assert!(epfd >= 0, "epoll_create1: errno {}", last_errno());
        Kernel {
            epfd,
            open: vec![epfd],
        }
    }

    fn eventfd(&mut self, init: u32, semaphore: bool) -> i32 {
        let mut flags = libc::EFD_NONBLOCK;
        if semaphore {
            flags |= libc::EFD_SEMAPHORE;
        }
        // SAFETY: plain syscall without pointers.
        let fd = unsafe { libc::eventfd(init, flags) };
        assert!(fd >= 0, "eventfd: errno {}", last_errno());
        self.open.push(fd);
        fd
    }

    fn dup(&mut self, fd: i32) -> i32 {
        // SAFETY: `fd` is an fd this side opened and has not closed.
        let new = unsafe { libc::dup(fd) };
        assert!(new >= 0, "dup: errno {}", last_errno());
        self.open.push(new);
        new
    }

    fn pipe(&mut self) -> [i32; 2] {
        let mut fds = [-1; 2];
        // SAFETY: `fds` is a valid array of two c_ints for the kernel to fill.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) };
        assert_eq!(r, 0, "pipe2: errno {}", last_errno());
        self.open.extend(fds);
        fds
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        for &fd in &self.open {
            // SAFETY: `open` holds exactly the fds this side opened and has
            // not closed yet; each is closed once.
            unsafe { libc::close(fd) };
        }
    }
}

impl Side for Kernel {
    fn epfd(&self) -> i32 {
        self.epfd
    }

    fn ctl(&mut self, op: i32, fd: i32, event: Option<(u32, u64)>) -> Result<(), i32> {
        let mut raw = event.map(|(events, data)| libc::epoll_event { events, u64: data });
        let ptr = raw
            .as_mut()
            .map_or(std::ptr::null_mut(), std::ptr::from_mut);
        // SAFETY: `ptr` is null (only for DEL, which Linux allows) or points
        // to a live epoll_event; `fd` is -1, our epfd or an fd this side
        // still holds open, so no other thread's fd is touched.
        let r = unsafe { libc::epoll_ctl(self.epfd, op, fd, ptr) };
        if r == 0 { Ok(()) } else { Err(last_errno()) }
    }

    fn wait(&mut self, max: i32) -> Result<Vec<(u64, u32)>, i32> {
        let mut buf = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        assert!(max as usize <= buf.len());
        // SAFETY: `buf` holds MAX_EVENTS >= max records; timeout 0 never blocks.
        let n = unsafe { libc::epoll_wait(self.epfd, buf.as_mut_ptr(), max, 0) };
        if n < 0 {
            return Err(last_errno());
        }
        Ok(buf[..n as usize]
            .iter()
            .map(|e| {
                // Copy out of the packed struct before use.
                let (data, events) = (e.u64, e.events);
                (data, events)
            })
            .collect())
    }

    fn read(&mut self, fd: i32, len: usize) -> Result<Vec<u8>, i32> {
        let mut buf = vec![0u8; len];
        // SAFETY: `buf` is valid for `len` bytes; `fd` is open and ours.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), len) };
        if n < 0 {
            return Err(last_errno());
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    fn write(&mut self, fd: i32, buf: &[u8]) -> Result<usize, i32> {
        // SAFETY: `buf` is valid for its length; `fd` is open and ours.
        // SIGPIPE is ignored by the Rust runtime, so a write to a pipe
        // without readers returns EPIPE.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(last_errno())
        } else {
            Ok(n as usize)
        }
    }

    fn close(&mut self, fd: i32) -> Result<(), i32> {
        let pos = self
            .open
            .iter()
            .position(|&open| open == fd)
            .expect("closing an fd this side holds");
        self.open.swap_remove(pos);
        // SAFETY: `fd` was open and ours; it is removed from `open` first so
        // it is never closed twice.
        let r = unsafe { libc::close(fd) };
        if r == 0 { Ok(()) } else { Err(last_errno()) }
    }
}

/// eventpoll, through its syscall-shaped descriptor table.
struct Ours {
    table: FdTable<BasicFile>,
    epfd: i32,
}

impl Side for Ours {
    fn epfd(&self) -> i32 {
        self.epfd
    }

    fn ctl(&mut self, op: i32, fd: i32, event: Option<(u32, u64)>) -> Result<(), i32> {
        let event = event.map(|(events, data)| EpollEvent::new(Events::from_raw(events), data));
        self.table
            .epoll_ctl(self.epfd, op, fd, event.as_ref())
            .map_err(|e| e.raw())
    }

    fn wait(&mut self, max: i32) -> Result<Vec<(u64, u32)>, i32> {
        let mut buf = [EpollEvent::default(); MAX_EVENTS];
        let n = self
            .table
            .epoll_wait(self.epfd, &mut buf, max, 0)
            .map_err(|e| e.raw())?;
        Ok(buf[..n].iter().map(|e| (e.data, e.events.bits())).collect())
    }

    fn read(&mut self, fd: i32, len: usize) -> Result<Vec<u8>, i32> {
        let mut buf = vec![0u8; len];
        let n = self.table.read(fd, &mut buf).map_err(|e| e.raw())?;
        buf.truncate(n);
        Ok(buf)
    }

    fn write(&mut self, fd: i32, buf: &[u8]) -> Result<usize, i32> {
        self.table.write(fd, buf).map_err(|e| e.raw())
    }

    fn close(&mut self, fd: i32) -> Result<(), i32> {
        self.table.close(fd).map_err(|e| e.raw())
    }
}

/// Creates the objects of `OBJECTS` on the kernel side; returns their fds.
fn kernel_objects(kernel: &mut Kernel, init: &Init) -> Vec<i32> {
    let mut fds = Vec::with_capacity(OBJECTS.len());
    let mut pipes: Vec<[i32; 2]> = Vec::new();
    for (i, (_, kind)) in OBJECTS.iter().enumerate() {
        let fd = match (*kind, DUP_OF[i]) {
            (_, Some(of)) => kernel.dup(fds[of]),
            (Kind::EventFd { counter, semaphore }, None) => {
                kernel.eventfd(init.counters[counter], semaphore)
            }
            (Kind::PipeReader { pipe }, None) => {
                assert_eq!(pipes.len(), pipe);
                pipes.push(kernel.pipe());
                pipes[pipe][0]
            }
            (Kind::PipeWriter { pipe }, None) => pipes[pipe][1],
        };
        fds.push(fd);
    }
    fds
}

/// Creates the objects of `OBJECTS` in eventpoll's table.
fn our_objects(init: &Init) -> (Ours, Vec<i32>) {
    let table: FdTable<BasicFile> = FdTable::new();
    let epfd = table.epoll_create1(0).expect("epoll_create1");
    let mut fds = Vec::with_capacity(OBJECTS.len());
    let mut pipes: Vec<[i32; 2]> = Vec::new();
    for (i, (_, kind)) in OBJECTS.iter().enumerate() {
        let fd = match (*kind, DUP_OF[i]) {
            (_, Some(of)) => table.dup(fds[of]).expect("dup"),
            (Kind::EventFd { counter, semaphore }, None) => {
                let mut flags = O_NONBLOCK;
                if semaphore {
                    flags |= eventpoll::EfdFlags::SEMAPHORE.bits();
                }
                table
                    .eventfd(init.counters[counter], flags)
                    .expect("eventfd")
            }
            (Kind::PipeReader { pipe }, None) => {
                assert_eq!(pipes.len(), pipe);
                pipes.push(table.pipe2(O_NONBLOCK).expect("pipe2"));
                pipes[pipe][0]
            }
            (Kind::PipeWriter { pipe }, None) => pipes[pipe][1],
        };
        fds.push(fd);
    }
    (Ours { table, epfd }, fds)
}

// ---------------------------------------------------------------------------
// Running a sequence on both sides
// ---------------------------------------------------------------------------

struct Entry {
    index: usize,
    op: Op,
    /// `None` if the op was skipped (its object is closed).
    results: Option<(Outcome, Outcome)>,
}

struct Run {
    log: Vec<Entry>,
    /// Index into `ops` of the first divergence.
    divergence: Option<usize>,
}

/// The harness's own view of the objects, for generating arguments that
/// depend on state (the eventfd counter for `ToMax`, the pipe byte stream).
struct Shadow {
    counters: [u64; COUNTERS],
    next_byte: u8,
}

/// Applies `op` to one side. `fds` are that side's fd numbers per object.
fn apply(side: &mut dyn Side, fds: &[i32], op: Op, shadow: &Shadow) -> Outcome {
    match op {
        Op::Ctl {
            op,
            obj,
            events,
            tag,
        } => {
            let event = (op != EPOLL_CTL_DEL).then_some((events, data_of(obj, tag)));
            side.ctl(op, fds[obj], event).map(|()| Val::Unit)
        }
        Op::AddSelf => {
            let epfd = side.epfd();
            side.ctl(EPOLL_CTL_ADD, epfd, Some((Events::IN.bits(), 99)))
                .map(|()| Val::Unit)
        }
        Op::AddFdMinusOne => side
            .ctl(EPOLL_CTL_ADD, -1, Some((Events::IN.bits(), 99)))
            .map(|()| Val::Unit),
        Op::InvalidCtl { op, obj } => side
            .ctl(op, fds[obj], Some((Events::IN.bits(), 99)))
            .map(|()| Val::Unit),
        Op::Write { obj, arg } => {
            let buf: Vec<u8> = match arg {
                WriteArg::Value(v) => v.to_ne_bytes().to_vec(),
                WriteArg::ToMax => {
                    let counter = match OBJECTS[obj].1 {
                        Kind::EventFd { counter, .. } => shadow.counters[counter],
                        _ => 0,
                    };
                    (MAX_COUNT - counter).to_ne_bytes().to_vec()
                }
                WriteArg::Short => vec![1, 0, 0, 0],
                WriteArg::Bytes(n) => (0..n)
                    .map(|i| shadow.next_byte.wrapping_add(i as u8))
                    .collect(),
            };
            side.write(fds[obj], &buf).map(Val::Written)
        }
        Op::Read { obj, len } => {
            let bytes = side.read(fds[obj], len)?;
            match OBJECTS[obj].1 {
                Kind::EventFd { .. } if bytes.len() == 8 => Ok(Val::Counter(u64::from_ne_bytes(
                    bytes.try_into().expect("8 bytes"),
                ))),
                _ => Ok(Val::Bytes(bytes)),
            }
        }
        Op::Close { obj } => side.close(fds[obj]).map(|()| Val::Unit),
        Op::Wait { max } => side.wait(max).map(Val::Events),
    }
}

/// Runs `ops` on a fresh kernel epoll and a fresh eventpoll table, stopping
/// at the first operation whose results differ.
fn run(init: &Init, ops: &[Op]) -> Run {
    let mut kernel = Kernel::new();
    let kfds = kernel_objects(&mut kernel, init);
    let (mut ours, ofds) = our_objects(init);
    let mut closed = [false; OBJECTS.len()];
    let mut shadow = Shadow {
        counters: init.counters.map(u64::from),
        next_byte: 0,
    };
    let mut log = Vec::new();
    let mut divergence = None;
    for (index, &op) in ops.iter().enumerate() {
        if op.object().is_some_and(|obj| closed[obj]) {
            log.push(Entry {
                index,
                op,
                results: None,
            });
            continue;
        }
        let k = apply(&mut kernel, &kfds, op, &shadow);
        let o = util::catch_panic(|| apply(&mut ours, &ofds, op, &shadow))
            .unwrap_or_else(|message| Ok(Val::Panicked(message)));
        // The shadow follows the kernel.
        match (op, &k) {
            (Op::Write { obj, arg }, Ok(Val::Written(n))) => match OBJECTS[obj].1 {
                Kind::EventFd { counter, .. } => {
                    let value = match arg {
                        WriteArg::Value(v) => v,
                        WriteArg::ToMax => MAX_COUNT - shadow.counters[counter],
                        _ => 0,
                    };
                    shadow.counters[counter] += value;
                }
                _ => shadow.next_byte = shadow.next_byte.wrapping_add(*n as u8),
            },
            (Op::Read { obj, .. }, Ok(Val::Counter(v))) => {
                if let Kind::EventFd { counter, .. } = OBJECTS[obj].1 {
                    shadow.counters[counter] -= v;
                }
            }
            (Op::Close { obj }, _) => closed[obj] = true,
            _ => {}
        }
        let same = k == o;
        log.push(Entry {
            index,
            op,
            results: Some((k, o)),
        });
        if !same {
            divergence = Some(index);
            break;
        }
    }
    // `kernel` closes its remaining fds here; `ours` drops its table.
    drop(kernel);
    drop(ours);
    Run { log, divergence }
}

fn format_log(out: &mut String, run: &Run) {
    for entry in &run.log {
        match &entry.results {
            None => {
                let _ = writeln!(
                    out,
                    "    #{:<2} {} -> skipped (closed)",
                    entry.index, entry.op
                );
            }
            Some((k, o)) if k == o => {
                let _ = writeln!(
                    out,
                    "    #{:<2} {} -> {}",
                    entry.index,
                    entry.op,
                    outcome_str(k)
                );
            }
            Some((k, o)) => {
                let _ = writeln!(out, "    #{:<2} {}   <-- DIVERGES", entry.index, entry.op);
                let _ = writeln!(out, "          linux:     {}", outcome_str(k));
                let _ = writeln!(out, "          eventpoll: {}", outcome_str(o));
            }
        }
    }
}

/// What the sequences exercised, to show the generator reaches the
/// interesting states.
#[derive(Default)]
struct Stats {
    ops: u64,
    skipped: u64,
    errors: u64,
    waits: u64,
    nonempty_waits: u64,
    full_waits: u64,
    events: u64,
    hup_or_err: u64,
    exclusive_adds: u64,
}

impl Stats {
    fn add(&mut self, run: &Run) {
        for entry in &run.log {
            self.ops += 1;
            let Some((outcome, _)) = &entry.results else {
                self.skipped += 1;
                continue;
            };
            match (entry.op, outcome) {
                (_, Err(_)) => self.errors += 1,
                (Op::Wait { max }, Ok(Val::Events(evs))) => {
                    self.waits += 1;
                    self.events += evs.len() as u64;
                    self.nonempty_waits += u64::from(!evs.is_empty());
                    self.full_waits += u64::from(evs.len() == max as usize);
                    let hup_err = (Events::HUP | Events::ERR).bits();
                    self.hup_or_err +=
                        evs.iter().filter(|(_, ev)| ev & hup_err != 0).count() as u64;
                }
                (
                    Op::Ctl {
                        op: EPOLL_CTL_ADD,
                        events,
                        ..
                    },
                    Ok(_),
                ) => {
                    self.exclusive_adds += u64::from(events & Events::EXCLUSIVE.bits() != 0);
                }
                _ => {}
            }
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ops ({} skipped, {} errors), {} waits ({} non-empty, {} full), \
             {} events ({} with HUP/ERR), {} EXCLUSIVE registrations",
            self.ops,
            self.skipped,
            self.errors,
            self.waits,
            self.nonempty_waits,
            self.full_waits,
            self.events,
            self.hup_or_err,
            self.exclusive_adds
        )
    }
}

#[test]
fn eventpoll_matches_linux_epoll() {
    let base = util::env_u64("EVENTPOLL_DIFF_SEED").unwrap_or(DEFAULT_SEED);
    let sequences = util::env_u64("EVENTPOLL_DIFF_SEQUENCES").unwrap_or(DEFAULT_SEQUENCES);
    println!(
        "differential: EVENTPOLL_DIFF_SEED={base:#x} EVENTPOLL_DIFF_SEQUENCES={sequences} \
         ({OPS_PER_SEQUENCE} ops each)"
    );
    let mut stats = Stats::default();
    for index in 0..sequences {
        let seed = base.wrapping_add(index);
        let mut rng = SmallRng::seed_from_u64(seed);
        let (init, ops) = generate(&mut rng);
        let result = run(&init, &ops);
        let Some(at) = result.divergence else {
            stats.add(&result);
            continue;
        };
        let mut report = String::new();
        let _ = writeln!(
            report,
            "eventpoll diverges from Linux epoll\n  base seed {base:#x}, sequence {index} \
             (rerun alone: EVENTPOLL_DIFF_SEED={seed:#x} EVENTPOLL_DIFF_SEQUENCES=1)\n  \
             initial eventfd counters {:?}; objects (data = index + 16*tag): {}",
            init.counters,
            OBJECTS
                .iter()
                .enumerate()
                .map(|(i, (name, _))| format!("{i}={name}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let _ = writeln!(report, "  operations up to the divergence (op #{at}):");
        format_log(&mut report, &result);
        let shrunk = util::shrink(&ops[..=at], |ops| run(&init, ops).divergence);
        let shrunk_run = run(&init, &shrunk);
        let _ = writeln!(report, "  shrunk to {} operations:", shrunk.len());
        format_log(&mut report, &shrunk_run);
        panic!("{report}");
    }
    println!("differential: {sequences} sequences agree with Linux; {stats}");
}
