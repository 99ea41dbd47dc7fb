//! The threaded mode (NtyTcp's model): a stack thread owns the [`Stack`],
//! application threads call blocking or non-blocking sockets and
//! `epoll_wait` through a [`Net`] handle from any thread.
//!
//! ## Design
//!
//! - **One lock, taken by both sides.** The `Stack` sits behind a mutex
//!   shared by the stack thread and every [`Net`] clone. An application
//!   call takes the lock and runs the stack's non-blocking call directly,
//!   so a `recv` of data already in the socket's receive buffer, or a
//!   `send` that fits in its send buffer, completes without waiting for
//!   the stack thread (the per-socket buffers of the issue are smoltcp's
//!   own rx/tx rings).
//! - **Work the call leaves is flushed on the spot.** If the call left
//!   connections dirty (data to send, a window to open, a SYN, a FIN), the
//!   calling thread runs [`Stack::poll`] itself before it releases the
//!   lock: the segment is on the device when the call returns, with no
//!   thread hop. If that changed the stack's next deadline to before the
//!   time the stack thread sleeps until, the caller kicks the stack thread
//!   (a [`Request::Kick`] on the crossbeam channel plus a write to its wake
//!   eventfd, so its `ppoll` returns and it recomputes its timeout).
//! - **The stack thread sleeps when idle.** It loops: drain requests, lock,
//!   [`Stack::poll`], ask [`Stack::poll_delay`], arm the device
//!   ([`SleepDevice::prepare_sleep`]), record when it will wake, unlock,
//!   and `ppoll(2)` on the device's descriptor and the wake eventfd with
//!   the delay as timeout, capped at `MAX_SLEEP` (200 ms) so that callers
//!   need not kick it for far deadlines. An idle `NetThread` wakes five
//!   times a second and does a few microseconds of work each time.
//! - **Packets from an in-process peer are received by the sender.** A
//!   link end calls the stack's arrival hook when it queues packets for a
//!   sleeping stack thread; if the stack lock is free the hook runs the
//!   ingress on the sending thread (Linux runs a loopback receive in the
//!   sender's context too), so the receiving application thread is woken
//!   by the sender itself, one thread hop per direction instead of two.
//!   If the lock is held, the packets are left to its holder, which
//!   receives them when it unlocks (as Linux's `release_sock` processes
//!   the backlog that softirq left on an owned socket): the hook sets a
//!   flag and tries the lock once more, the holder looks at the flag after
//!   its unlock, and a `SeqCst` fence on each side makes sure one of the
//!   two sees the other. The stack thread is not woken. (Waking it
//!   instead cost a thread hop for about one arrival in three in the
//!   `threaded` benchmark, and on a machine whose idle cores take ~30 us
//!   to wake, half the request rate.)
//! - **Blocking calls sleep on a per-thread parker registered on the
//!   socket's wait queue** (an [`eventpoll::Waiter`]). The call that got
//!   `EAGAIN` (or `EINPROGRESS`) registers the parker *while still holding
//!   the stack lock*: every readiness change happens under that lock, so
//!   no wake-up can fall between the failed attempt and the registration.
//!   It then releases the lock, keeps only a weak handle on the socket,
//!   yields the CPU a few times (`PARK_YIELDS`) looking for its wake-up, as
//!   adaptive mutexes spin before they park (a request/response peer on
//!   the same cores often answers within those time slices, and the call
//!   then costs no futex sleep and wake-up), and sleeps until the stack wakes the queue with a matching mask, the
//!   timeout (`SO_RCVTIMEO`/`SO_SNDTIMEO`: `EAGAIN`, or `EINPROGRESS` for
//!   `connect`, as Linux), or the socket is gone (its last descriptor
//!   closed, by another thread or by shutdown): the queue is detached,
//!   which wakes the parker, and the call fails with `EBADF`. That is a
//!   deliberate difference from Linux, where a thread blocked in `recv`
//!   keeps the file alive and stays blocked after another thread's
//!   `close`.
//! - **A lingering close** (`SO_LINGER` with a time) parks the same way:
//!   the descriptor goes at once, the closing thread keeps the socket
//!   alive and sleeps on its queue until the FIN's ACK (the stack wakes
//!   the queue with an empty key, which every waiter takes), an error, the
//!   linger time or shutdown.
//! - **`epoll_wait`** fetches the `Arc<EventPoll>` under the lock, releases
//!   it, and blocks in eventpoll's own condvar wait. The stack thread's
//!   wake-ups reach it through the sockets' wait queues.
//! - **Shutdown** ([`Net::shutdown`], or dropping the last `Net` clone):
//!   under the lock, mark the stack shut, close every descriptor
//!   ([`Stack::close_all`]: blocked callers' sockets go away and their
//!   parkers wake with `EBADF`), poll a few rounds so FINs and RSTs leave,
//!   and [interrupt](EventPoll::interrupt) every epoll (callers blocked in
//!   `epoll_wait` get `EBADF`); then send [`Request::Shutdown`], wake and
//!   join the thread. Every later call fails with `EBADF`.
//!
//! ## Lock order
//!
//! The stack lock, then eventpoll's locks (a socket's wait-queue lock, an
//! epoll's ready-list lock), then a parker's mutex (a leaf). No thread ever
//! blocks (in a condvar, `ppoll` or `epoll_wait`) while holding the stack
//! lock. Blocking reads and writes of eventfds and pipes run eventpoll's own
//! blocking code after the stack lock is released; shutdown does not wake
//! those (only sockets and epolls).
//!
//! ## Devices
//!
//! A device the stack thread can sleep on implements [`SleepDevice`]: a
//! descriptor that `ppoll` watches for "packets may have arrived", and a
//! hook called before each sleep. [`netdev::LinkDevice`] implements it
//! with its opt-in readiness descriptor; [`netdev::Tap`] returns its own
//! fd and reports frames it already read into its batch from
//! `prepare_sleep` (the fd no longer shows them); while a frame waits for
//! the kernel to take it (`EAGAIN`), it asks for `POLLOUT` too
//! ([`SleepDevice::wants_writable`]), so the thread sleeps until the TAP
//! has room instead of spinning.

mod io;

use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering, fence};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration as StdDuration;

use crossbeam_channel::{Receiver, Sender};
use eventpoll::{
    BasicFile, EpollEvent, Errno, EventPoll, Events, FileDescription, Pollable, Waiter,
};
use parking_lot::{Condvar, Mutex, MutexGuard};
use smoltcp::phy::Device;
use smoltcp::time::{Duration, Instant};

use crate::socket::{File, Socket};
use crate::stack::{Stack, StackConfig, Stats};
use crate::sys;

pub use io::{Epoll, TcpListener, TcpStream};

/// `SO_RCVTIMEO` (Linux's `SO_RCVTIMEO_OLD`), for [`Net::set_timeout`].
pub const SO_RCVTIMEO: i32 = 20;
/// `SO_SNDTIMEO` (Linux's `SO_SNDTIMEO_OLD`), for [`Net::set_timeout`].
pub const SO_SNDTIMEO: i32 = 21;

/// Times a blocking call yields the CPU, looking for its wake-up, before it
/// sleeps on its condvar: a reply that comes within a few time slices of
/// other threads (a request/response peer on the same cores) then costs no
/// futex sleep and wake-up.
const PARK_YIELDS: usize = 8;
/// Rounds of [`Stack::poll`] a caller runs to flush the work its call left.
const INLINE_FLUSH_ROUNDS: usize = 4;
/// Rounds of shutdown polling, to let FINs and RSTs leave.
const SHUTDOWN_ROUNDS: usize = 16;
/// How long a stack thread whose device has no descriptor sleeps at most
/// (it cannot be woken by packets, so it looks for them this often).
const NO_FD_POLL: Duration = Duration::from_millis(1);
/// The longest sleep of a stack thread, whatever its timers say. A caller
/// whose call sets a deadline before the thread's wake-up time kicks it
/// (a system call and a thread wake-up); with this cap, deadlines further
/// out than it (retransmission timeouts: 1 s and more) never need a kick,
/// because the thread wakes first and sees them. The price: an idle
/// thread wakes 5 times a second (a lock, a poll that finds nothing, one
/// `recv` on the link's socket pair: a few microseconds each).
const MAX_SLEEP: Duration = Duration::from_millis(200);

/// A device that a stack thread can sleep on.
///
/// The contract, for [`NetThread`]: before each sleep the thread calls
/// [`prepare_sleep`](SleepDevice::prepare_sleep) with the stack lock held;
/// if it returns false the thread sleeps in `ppoll(2)` until
/// [`readiness_fd`](SleepDevice::readiness_fd) is readable, the stack's
/// next timer, or a wake-up from an application thread. So the descriptor
/// must become readable when a packet arrives after `prepare_sleep`, and
/// `prepare_sleep` must return true if packets are already waiting (or
/// clear a readable descriptor that would otherwise wake the thread at
/// once forever, as an eventfd-style signal does).
///
/// - [`netdev::LinkDevice`]: its opt-in readiness descriptor
///   ([`LinkDevice::readiness_fd`](netdev::LinkDevice::readiness_fd),
///   armed by `prepare_sleep`).
/// - A TAP device (to come in netdev): its own descriptor, which `poll`
///   reports readable while frames are queued; `prepare_sleep` returns
///   false.
/// - A device with no descriptor returns `Ok(None)`; the thread then wakes
///   every millisecond to look for packets.
pub trait SleepDevice: Device + crate::Lookahead {
    /// The descriptor to sleep on, enabling it if needed. Called once, on
    /// the stack thread before its loop starts.
    fn readiness_fd(&self) -> std::io::Result<Option<RawFd>>;

    /// Called before each sleep, under the stack lock; true means "packets
    /// are waiting, do not sleep".
    fn prepare_sleep(&self) -> bool {
        false
    }

    /// Called when `ppoll` reported the readiness descriptor readable,
    /// before the stack is polled: an edge-style signal (the link's) is
    /// emptied here; a level-triggered descriptor (TAP) needs nothing.
    fn readiness_fired(&self) {}

    /// Called before each sleep, under the stack lock; true means "a packet
    /// waits for the device to take it": the thread then sleeps until the
    /// readiness descriptor is also writable (`POLLOUT`), instead of
    /// polling until the device has room.
    fn wants_writable(&self) -> bool {
        false
    }

    /// Offers a hook for the device to call on the sending thread when
    /// packets arrive for a sleeping stack thread (instead of making the
    /// descriptor readable); the hook returns true if it handled them. An
    /// in-process device (the link) can do this; a real device cannot and
    /// keeps this default, which declines.
    fn set_arrival_hook(&self, hook: Box<dyn Fn() -> bool + Send + Sync>) -> bool {
        let _ = hook;
        false
    }
}

impl SleepDevice for netdev::LinkDevice {
    fn readiness_fd(&self) -> std::io::Result<Option<RawFd>> {
        Ok(Some(netdev::LinkDevice::readiness_fd(self)?.as_raw_fd()))
    }

    fn prepare_sleep(&self) -> bool {
        self.arm_readiness()
    }

    fn readiness_fired(&self) {
        self.drain_readiness();
    }

    fn set_arrival_hook(&self, hook: Box<dyn Fn() -> bool + Send + Sync>) -> bool {
        netdev::LinkDevice::set_arrival_hook(self, hook).is_ok()
    }
}

/// A TAP sleeps on its own descriptor, which `ppoll` reports readable while
/// the kernel holds frames for it. Frames it already read into its batch
/// ([`netdev::Tap::rx_queued`]) are no longer on the descriptor, so they
/// count as "packets waiting". A frame that met `EAGAIN` and waits to be
/// written ([`netdev::Tap::tx_pending`]) makes the thread sleep for
/// `POLLOUT` as well, so it polls again (and retries the write) once the
/// kernel has room, without spinning meanwhile.
impl SleepDevice for netdev::Tap {
    fn readiness_fd(&self) -> std::io::Result<Option<RawFd>> {
        Ok(Some(self.as_raw_fd()))
    }

    fn prepare_sleep(&self) -> bool {
        self.rx_queued() > 0
    }

    fn wants_writable(&self) -> bool {
        self.tx_pending()
    }
}

/// A capture sleeps as the device it wraps.
impl<D: SleepDevice> SleepDevice for netdev::Pcap<D> {
    fn readiness_fd(&self) -> std::io::Result<Option<RawFd>> {
        self.get_ref().readiness_fd()
    }

    fn prepare_sleep(&self) -> bool {
        self.get_ref().prepare_sleep()
    }

    fn wants_writable(&self) -> bool {
        self.get_ref().wants_writable()
    }
}

/// Messages from application threads to the stack thread. The channel
/// carries them; the wake eventfd gets the thread out of `ppoll` to read
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Recompute the sleep: the stack has work or an earlier deadline.
    Kick,
    /// Leave the loop (the stack is already shut).
    Shutdown,
}

/// Starts stack threads: see [`NetThread::spawn`]. Never constructed.
#[derive(Debug)]
pub struct NetThread(());

/// Options of a stack thread beyond the stack's own [`StackConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadOptions {
    /// Let a sending thread run this stack's ingress when its device
    /// offers an arrival hook (module docs). On by default; off, every
    /// packet is received by the stack thread (tests use this to cover
    /// that path alone).
    pub sender_receives: bool,
}

impl Default for ThreadOptions {
    fn default() -> ThreadOptions {
        ThreadOptions {
            sender_receives: true,
        }
    }
}

impl NetThread {
    /// A stack on `device` with `config`, owned by a new thread named
    /// `usertcp-stack`, and the [`Net`] handle to call it from any thread.
    /// The thread runs until [`Net::shutdown`] or the last `Net` clone is
    /// dropped. Fails with the stack's errno or the OS error (eventfd,
    /// thread creation, the device's descriptor).
    pub fn spawn<D>(device: D, config: StackConfig) -> std::io::Result<Net>
    where
        D: SleepDevice + Send + 'static,
    {
        NetThread::spawn_with(device, config, ThreadOptions::default())
    }

    /// [`spawn`](NetThread::spawn) with [`ThreadOptions`].
    pub fn spawn_with<D>(
        device: D,
        config: StackConfig,
        options: ThreadOptions,
    ) -> std::io::Result<Net>
    where
        D: SleepDevice + Send + 'static,
    {
        let epoch = std::time::Instant::now();
        let stack = Stack::new(device, config, Instant::ZERO)?;
        let wake = sys::WakeFd::new()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                stack: Box::new(stack),
                shut: false,
                sleep: Sleep::Awake,
                epolls: Vec::new(),
            }),
            wake,
            requests: tx,
            epoch,
            stack_tid: AtomicI32::new(0),
            counters: Counters::default(),
            arrival_pending: AtomicBool::new(false),
        });
        if options.sender_receives {
            let weak = Arc::downgrade(&shared);
            shared
                .lock()
                .stack
                .set_arrival_hook(Box::new(move || arrival(&weak)));
        }
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let thread_shared = shared.clone();
        let join = std::thread::Builder::new()
            .name("usertcp-stack".into())
            .spawn(move || stack_thread(thread_shared, rx, started_tx))?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = join.join();
                return Err(e);
            }
            Err(_) => {
                let _ = join.join();
                return Err(std::io::Error::other("stack thread died at start"));
            }
        }
        Ok(Net {
            inner: Arc::new(Inner {
                shared,
                join: Mutex::new(Some(join)),
            }),
        })
    }
}

/// A handle on a stack thread: the POSIX-style calls of [`Stack`], with
/// the same descriptors and errno, callable from any thread. Sockets block
/// unless `O_NONBLOCK` (`SOCK_NONBLOCK`, `fcntl`) is set on them.
///
/// `Clone + Send + Sync`; dropping the last clone shuts the stack down (see
/// [`Net::shutdown`]). After shutdown every call fails with `EBADF`.
#[derive(Clone)]
pub struct Net {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    join: Mutex<Option<JoinHandle<()>>>,
}

/// What the stack thread and the handles share.
struct Shared {
    state: Mutex<State>,
    wake: sys::WakeFd,
    requests: Sender<Request>,
    epoch: std::time::Instant,
    /// The stack thread's kernel tid, once it runs.
    stack_tid: AtomicI32,
    counters: Counters,
    /// An arrival found the lock held and left its packets to the holder.
    arrival_pending: AtomicBool,
}

/// What a stack thread and its callers did, for tuning and benchmarks
/// ([`Net::thread_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    /// Times the stack thread woke from `ppoll` (packets, timers, kicks,
    /// the 200 ms cap).
    pub wakeups: u64,
    /// Kicks sent to the stack thread by callers.
    pub kicks: u64,
    /// Arrivals received outside the stack thread: by the sending thread
    /// (the arrival hook), or by the lock holder it left them to.
    pub sender_received: u64,
    /// Arrivals that found the stack lock held: left to the holder, which
    /// received them when it unlocked (or received by the arriving thread
    /// on its second try).
    pub left_to_holder: u64,
    /// Blocking calls that went to sleep.
    pub parks: u64,
}

#[derive(Default)]
struct Counters {
    wakeups: AtomicU64,
    kicks: AtomicU64,
    sender_received: AtomicU64,
    left_to_holder: AtomicU64,
    parks: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct State {
    stack: Box<dyn Ops>,
    shut: bool,
    sleep: Sleep,
    /// Every epoll made through this stack, to interrupt at shutdown.
    epolls: Vec<Weak<EventPoll>>,
}

/// What the stack thread is doing, as far as a caller needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sleep {
    /// Running, or about to look at the stack again: no kick needed.
    Awake,
    /// Asleep (or about to be) until this time at the latest.
    Until(Instant),
}

/// The stack lock's guard. Dropping it unlocks, then notifies the parkers
/// that the holder woke (see [`Parker`]): a woken thread must not run into
/// the still-held lock; then it receives the packets an arrival left to the
/// holder (see [`arrival`]). So every holder of the stack lock takes it
/// through this guard ([`Shared::lock`], or [`receive_locked`] with a guard
/// from `try_lock`), never as a bare `MutexGuard`: one that did could leave
/// those packets waiting for the next holder.
struct Locked<'a> {
    guard: Option<MutexGuard<'a, State>>,
    shared: &'a Shared,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        // Always `Some` until drop.
        self.guard.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        // Always `Some` until drop.
        self.guard.as_deref_mut().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        notify_deferred();
        // An arrival that found the lock held left its packets to the
        // holder (see `arrival`). Ordered after the unlock, against the
        // arriving thread's flag store before its second try: either it
        // took the lock itself, or this load sees its flag.
        fence(Ordering::SeqCst);
        if self.shared.arrival_pending.load(Ordering::Relaxed) && !draining(self.shared) {
            receive_pending(self.shared);
        }
    }
}

impl Shared {
    fn lock(&self) -> Locked<'_> {
        Locked {
            guard: Some(self.state.lock()),
            shared: self,
        }
    }

    fn now(&self) -> Instant {
        let micros = self.epoch.elapsed().as_micros();
        Instant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    fn kick(&self) {
        bump(&self.counters.kicks);
        // The receiver lives as long as the stack thread; after it left,
        // there is nobody to kick.
        let _ = self.requests.send(Request::Kick);
        self.wake.wake();
    }

    /// After a call under the lock: flush the work it left, and wake the
    /// stack thread if it sleeps past the stack's new deadline.
    fn after_call(&self, st: &mut Locked<'_>) {
        let now = self.now();
        for _ in 0..INLINE_FLUSH_ROUNDS {
            if st.stack.poll_delay(now) != Some(Duration::ZERO) {
                break;
            }
            st.stack.poll(now);
        }
        if let Sleep::Until(until) = st.sleep
            && st.stack.poll_delay(now).is_some_and(|d| now + d < until)
        {
            st.sleep = Sleep::Awake;
            self.kick();
        }
    }
}

/// The arrival hook (see [`SleepDevice::set_arrival_hook`]): runs on the
/// thread that queued packets for this stack while its thread sleeps. If
/// the stack lock is free it processes them right here, as Linux runs a
/// loopback receive in the sender's context, so a blocked reader is woken
/// by the sender directly rather than through the stack thread. Never
/// blocks: a held lock declines (the device then wakes the stack thread).
fn arrival(shared: &Weak<Shared>) -> bool {
    let Some(shared) = shared.upgrade() else {
        return false;
    };
    if let Some(guard) = shared.state.try_lock() {
        return receive_locked(&shared, guard);
    }
    // The holder receives them when it unlocks (`Locked::drop`), as Linux
    // processes a socket's backlog at `release_sock`: no stack-thread
    // wake-up. The flag is stored before a second try, which the holder's
    // check after its unlock is ordered against.
    shared.arrival_pending.store(true, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    match shared.state.try_lock() {
        Some(guard) => receive_locked(&shared, guard),
        None => {
            bump(&shared.counters.left_to_holder);
            true
        }
    }
}

/// The packets an arrival left to the lock holder: received by whoever
/// takes the lock next (this thread, if it is free now).
///
/// A loop, not a recursion: each pass ends with an unlock (the guard's
/// drop, whose check this thread skips while it drains this stack) and
/// looks at the flag again, so a stream of arrivals deferred during the
/// passes cannot grow the call stack. Stacks this thread drains are listed
/// in `DRAINING` (a pass may drain the peer stack inside it: the peer's
/// arrival hook runs on this thread when this stack sends).
fn receive_pending(shared: &Shared) {
    let me = std::ptr::from_ref(shared) as usize;
    DRAINING.with(|d| d.borrow_mut().push(me));
    while shared.arrival_pending.load(Ordering::Relaxed) {
        let Some(guard) = shared.state.try_lock() else {
            // The holder checks the flag after its own unlock.
            break;
        };
        // Unlocks, then fences, before the flag is read again.
        receive_locked(shared, guard);
    }
    DRAINING.with(|d| {
        let mut d = d.borrow_mut();
        if let Some(at) = d.iter().rposition(|&s| s == me) {
            d.remove(at);
        }
    });
}

/// True if this thread is in [`receive_pending`]'s loop for `shared`.
fn draining(shared: &Shared) -> bool {
    let me = std::ptr::from_ref(shared) as usize;
    DRAINING.with(|d| d.borrow().contains(&me))
}

/// The arrival's work with the lock taken: receive, flush, arm the device
/// again for the stack thread.
fn receive_locked<'a>(shared: &'a Shared, guard: MutexGuard<'a, State>) -> bool {
    shared.arrival_pending.store(false, Ordering::Relaxed);
    bump(&shared.counters.sender_received);
    let mut st = Locked {
        guard: Some(guard),
        shared,
    };
    if st.shut {
        return false;
    }
    let now = shared.now();
    for _ in 0..INLINE_FLUSH_ROUNDS {
        st.stack.poll(now);
        // The stack thread sleeps on: arm the device for it again. True
        // means packets came meanwhile; take them too.
        if !st.stack.prepare_sleep() {
            shared.after_call(&mut st);
            return true;
        }
    }
    // Still more: hand over to the stack thread.
    st.sleep = Sleep::Awake;
    shared.kick();
    true
}

/// The stack thread.
fn stack_thread(
    shared: Arc<Shared>,
    requests: Receiver<Request>,
    started: Sender<std::io::Result<()>>,
) {
    shared.stack_tid.store(sys::gettid(), Ordering::Relaxed);
    let dev_fd = match shared.lock().stack.readiness_fd() {
        Ok(fd) => fd,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok(()));
    let wake_fd = shared.wake.raw();
    let mut dev_fired = false;
    loop {
        if requests.try_iter().any(|r| r == Request::Shutdown) {
            return;
        }
        let mut st = shared.lock();
        if st.shut {
            return;
        }
        if std::mem::take(&mut dev_fired) {
            st.stack.readiness_fired();
        }
        st.sleep = Sleep::Awake;
        let now = shared.now();
        st.stack.poll(now);
        let delay = st.stack.poll_delay(now);
        if delay == Some(Duration::ZERO) || st.stack.prepare_sleep() {
            drop(st);
            continue;
        }
        let cap = if dev_fd.is_some() {
            MAX_SLEEP
        } else {
            NO_FD_POLL
        };
        let delay = delay.map_or(cap, |d| d.min(cap));
        let write = dev_fd.is_some() && st.stack.wants_writable();
        st.sleep = Sleep::Until(now + delay);
        drop(st);
        let timeout = Some(StdDuration::from_micros(delay.total_micros()));
        let fds: &[(RawFd, bool)] = match dev_fd {
            Some(fd) => &[(fd, write), (wake_fd, false)][..],
            None => &[(wake_fd, false)][..],
        };
        match sys::poll_fds(fds, timeout) {
            // The wake fd is the last one: drain it only when it fired.
            Ok(mask) => {
                if mask & (1 << (fds.len() - 1)) != 0 {
                    shared.wake.drain();
                }
                if dev_fd.is_some() && mask & 1 != 0 {
                    dev_fired = true;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "stack thread: ppoll failed");
                shared.wake.drain();
                std::thread::sleep(StdDuration::from_millis(1));
            }
        }
        bump(&shared.counters.wakeups);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        shutdown(&self.shared, &self.join);
    }
}

fn shutdown(shared: &Shared, join: &Mutex<Option<JoinHandle<()>>>) {
    let epolls = {
        let mut st = shared.lock();
        if !st.shut {
            st.shut = true;
            st.stack.close_all();
            let now = shared.now();
            for _ in 0..SHUTDOWN_ROUNDS {
                if !st.stack.poll(now) {
                    break;
                }
            }
        }
        std::mem::take(&mut st.epolls)
    };
    for ep in epolls.iter().filter_map(Weak::upgrade) {
        ep.interrupt();
    }
    let _ = shared.requests.send(Request::Shutdown);
    shared.wake.wake();
    let handle = join.lock().take();
    if let Some(handle) = handle
        && handle.thread().id() != std::thread::current().id()
    {
        // The stack thread never panics by design; if it did, the stack
        // is shut anyway.
        let _ = handle.join();
    }
}

/// Which timeout a blocking call obeys, and the errno when it expires.
#[derive(Clone, Copy)]
enum Dir {
    /// `SO_RCVTIMEO`, `EAGAIN`.
    Read,
    /// `SO_SNDTIMEO`, `EAGAIN`.
    Write,
    /// `SO_SNDTIMEO`, `EINPROGRESS`.
    Connect,
}

impl Net {
    /// Locks the stack, or `EBADF` once it is shut down.
    fn lock(&self) -> Result<Locked<'_>, Errno> {
        let st = self.inner.shared.lock();
        if st.shut {
            return Err(Errno::EBADF);
        }
        Ok(st)
    }

    /// Runs `op` on the stack and flushes what it left.
    fn call<T>(&self, op: impl FnOnce(&mut dyn Ops) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut st = self.lock()?;
        let r = op(&mut *st.stack);
        self.inner.shared.after_call(&mut st);
        r
    }

    /// The blocking-call loop (module docs): runs `op(stack, nonblocking)`;
    /// while it fails with an errno for which `retry` holds on a blocking
    /// socket, sleeps until the socket's queue is woken with `want`, the
    /// timeout of `dir`, or the socket is gone. With `dontwait`
    /// (`MSG_DONTWAIT`) the call is non-blocking whatever the socket is.
    fn blocking<T>(
        &self,
        fd: i32,
        want: Events,
        dir: Dir,
        dontwait: bool,
        mut op: impl FnMut(&mut dyn Ops, bool) -> Result<T, Errno>,
        retry: impl Fn(Errno) -> bool,
    ) -> Result<T, Errno> {
        let mut deadline: Option<Option<std::time::Instant>> = None;
        let mut watched: Option<Weak<Socket>> = None;
        loop {
            let mut st = self.lock()?;
            let sock = match st.stack.file(fd)? {
                File::Socket(s) => s,
                File::Basic(_) => return Err(Errno::ENOTSOCK),
            };
            if let Some(w) = &watched
                && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(&sock))
            {
                // The descriptor was closed and its number reused.
                return Err(Errno::EBADF);
            }
            let nonblocking = dontwait || sock.is_nonblocking();
            let r = op(&mut *st.stack, nonblocking);
            match r {
                Err(e) if retry(e) && !nonblocking => {}
                r => {
                    self.inner.shared.after_call(&mut st);
                    return r;
                }
            }
            let limit = match dir {
                Dir::Read => sock.read_timeout(),
                Dir::Write | Dir::Connect => sock.write_timeout(),
            };
            let deadline = *deadline.get_or_insert_with(|| {
                limit.and_then(|t| std::time::Instant::now().checked_add(t))
            });
            // Registered before the flush below: the flush polls the stack,
            // and what it receives may be what this call waits for.
            let parker = PARKER.with(Arc::clone);
            parker.arm(want | Events::ERR | Events::HUP);
            let waiter: Arc<dyn Waiter> = parker.clone();
            let registered = sock.wait_queue().add_waiter(waiter.clone(), false);
            self.inner.shared.after_call(&mut st);
            if !registered {
                return Err(Errno::EBADF);
            }
            let weak = Arc::downgrade(&sock);
            watched = Some(weak.clone());
            drop(sock);
            drop(st);
            bump(&self.inner.shared.counters.parks);
            let outcome = parker.park(deadline);
            if let Some(sock) = weak.upgrade() {
                sock.wait_queue().remove_waiter(&waiter);
                if Arc::strong_count(&sock) == 1 {
                    // Its descriptor was closed meanwhile and this is the
                    // last handle: the stack must reap it.
                    drop(sock);
                    self.inner.shared.kick();
                }
            }
            match outcome {
                Park::Woken => {}
                Park::Gone => return Err(Errno::EBADF),
                Park::TimedOut => {
                    return Err(match dir {
                        Dir::Connect => Errno::EINPROGRESS,
                        Dir::Read | Dir::Write => Errno::EAGAIN,
                    });
                }
            }
        }
    }

    // ---- socket calls --------------------------------------------------------

    /// `socket(AF_INET, SOCK_STREAM [| SOCK_NONBLOCK | SOCK_CLOEXEC], 0)`,
    /// as [`Stack::socket`]. Blocking unless `SOCK_NONBLOCK`.
    pub fn socket(&self, domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno> {
        self.call(|s| s.socket(domain, ty, protocol))
    }

    /// `bind(fd, addr)`, as [`Stack::bind`].
    pub fn bind(&self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno> {
        self.call(|s| s.bind(fd, addr))
    }

    /// `listen(fd, backlog)`, as [`Stack::listen`].
    pub fn listen(&self, fd: i32, backlog: i32) -> Result<(), Errno> {
        self.call(|s| s.listen(fd, backlog))
    }

    /// `accept4(fd, flags)`, as [`Stack::accept4`]; on a blocking listener
    /// it waits for a connection (`EAGAIN` after `SO_RCVTIMEO`).
    pub fn accept4(&self, fd: i32, flags: i32) -> Result<(i32, SocketAddrV4), Errno> {
        self.blocking(
            fd,
            Events::IN,
            Dir::Read,
            false,
            |s, _| s.accept4(fd, flags),
            |e| e == Errno::EAGAIN,
        )
    }

    /// `connect(fd, addr)`, as [`Stack::connect`]; on a blocking socket it
    /// waits for the handshake and returns `Ok` or its error
    /// (`ECONNREFUSED`, `ETIMEDOUT`, ...; `EINPROGRESS` after
    /// `SO_SNDTIMEO`, the handshake going on).
    pub fn connect(&self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno> {
        let mut started = false;
        self.blocking(
            fd,
            Events::OUT,
            Dir::Connect,
            false,
            |s, _| {
                if !started {
                    started = true;
                    return s.connect(fd, addr);
                }
                match s.connect(fd, addr) {
                    Err(Errno::EISCONN) => Ok(()),
                    Err(Errno::EALREADY) => Err(Errno::EINPROGRESS),
                    r => r,
                }
            },
            |e| e == Errno::EINPROGRESS,
        )
    }

    /// `recv(fd, buf, 0)`, as [`Stack::recv`]; on a blocking socket it
    /// waits for data, end of stream or an error (`EAGAIN` after
    /// `SO_RCVTIMEO`). Buffered data is returned without waiting for the
    /// stack thread.
    pub fn recv(&self, fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
        self.recv_flags(fd, buf, 0)
    }

    /// `recv(fd, buf, flags)`, as [`Stack::recv_flags`], blocking as
    /// [`recv`](Net::recv) does. [`MSG_DONTWAIT`](crate::MSG_DONTWAIT)
    /// makes this call non-blocking. [`MSG_WAITALL`](crate::MSG_WAITALL) on
    /// a blocking call waits until all of `buf` is filled; end of stream,
    /// an error or the `SO_RCVTIMEO` cut it short, returning the bytes it
    /// got (an error then stays pending for the next call, as on Linux).
    /// With `MSG_PEEK` it does not wait for more than is there (Linux
    /// would).
    pub fn recv_flags(&self, fd: i32, buf: &mut [u8], flags: i32) -> Result<usize, Errno> {
        let wait_all = flags & crate::MSG_WAITALL != 0 && flags & crate::MSG_PEEK == 0;
        let mut got = 0;
        let r = self.blocking(
            fd,
            Events::IN | Events::RDHUP,
            Dir::Read,
            flags & crate::MSG_DONTWAIT != 0,
            |s, nonblocking| {
                loop {
                    // Once bytes are in hand, an error is reported next time.
                    let n = s.recv(fd, &mut buf[got..], flags, got == 0)?;
                    got += n;
                    if n == 0 || got == buf.len() || nonblocking || !wait_all {
                        return Ok(());
                    }
                }
            },
            |e| e == Errno::EAGAIN,
        );
        match r {
            Ok(()) => Ok(got),
            Err(_) if got > 0 => Ok(got),
            Err(e) => Err(e),
        }
    }

    /// `send(fd, buf, 0)`, as [`Stack::send`]. On a blocking socket it
    /// queues all of `buf`, waiting for send space as needed; if the wait
    /// times out (`SO_SNDTIMEO`) or fails after some bytes went, it returns
    /// their count, as Linux does. Data that fits is queued (and handed to
    /// the device) without waiting for the stack thread.
    pub fn send(&self, fd: i32, buf: &[u8]) -> Result<usize, Errno> {
        self.send_flags(fd, buf, 0)
    }

    /// `send(fd, buf, flags)`, as [`Stack::send_flags`], blocking as
    /// [`send`](Net::send) does; [`MSG_DONTWAIT`](crate::MSG_DONTWAIT)
    /// makes this call non-blocking (it queues what fits).
    pub fn send_flags(&self, fd: i32, buf: &[u8], flags: i32) -> Result<usize, Errno> {
        let mut sent = 0;
        let r = self.blocking(
            fd,
            Events::OUT,
            Dir::Write,
            flags & crate::MSG_DONTWAIT != 0,
            |s, nonblocking| {
                loop {
                    let n = s.send(fd, &buf[sent..], flags)?;
                    sent += n;
                    if sent == buf.len() || nonblocking || n == 0 {
                        return Ok(());
                    }
                }
            },
            |e| e == Errno::EAGAIN,
        );
        match r {
            Ok(()) => Ok(sent),
            Err(_) if sent > 0 => Ok(sent),
            Err(e) => Err(e),
        }
    }

    /// `read(fd, buf)`: [`recv`](Net::recv) on a socket; eventfds and pipe
    /// readers as eventpoll defines them (their blocking waits run outside
    /// the stack lock, in eventpoll).
    pub fn read(&self, fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
        let file = self.lock()?.stack.file(fd)?;
        match file {
            File::Socket(_) => self.recv(fd, buf),
            File::Basic(BasicFile::EventFd(efd)) => efd.read_bytes(buf),
            File::Basic(BasicFile::PipeReader(r)) => r.read(buf),
            File::Basic(BasicFile::PipeWriter(_)) => Err(Errno::EBADF),
            File::Basic(_) => Err(Errno::EINVAL),
        }
    }

    /// `write(fd, buf)`: [`send`](Net::send) on a socket; eventfds and pipe
    /// writers as eventpoll defines them.
    pub fn write(&self, fd: i32, buf: &[u8]) -> Result<usize, Errno> {
        let file = self.lock()?.stack.file(fd)?;
        match file {
            File::Socket(_) => self.send(fd, buf),
            File::Basic(BasicFile::EventFd(efd)) => efd.write_bytes(buf),
            File::Basic(BasicFile::PipeWriter(w)) => w.write(buf),
            File::Basic(BasicFile::PipeReader(_)) => Err(Errno::EBADF),
            File::Basic(_) => Err(Errno::EINVAL),
        }
    }

    /// `shutdown(fd, how)`, as [`Stack::shutdown`].
    pub fn shutdown_socket(&self, fd: i32, how: i32) -> Result<(), Errno> {
        self.call(|s| s.shutdown(fd, how))
    }

    /// `close(fd)`, as [`Stack::close`]. A thread blocked on the socket
    /// (in `recv`, `send`, `accept`, `connect`) through this descriptor
    /// wakes with `EBADF` once its last descriptor is closed.
    ///
    /// With `SO_LINGER` on and a non-zero time ([`Net::setsockopt_linger`]),
    /// closing the last descriptor of a connected socket waits, as Linux
    /// does (blocking or not), until the peer acknowledges the FIN, the
    /// connection fails, or the time is up; then it returns `Ok` and the
    /// connection goes on closing in the background. The descriptor's
    /// number is free from the start of the wait.
    pub fn close(&self, fd: i32) -> Result<(), Errno> {
        let Some((sock, wait)) = self.call(|s| s.close_lingering(fd))? else {
            return Ok(());
        };
        let deadline = std::time::Instant::now().checked_add(wait);
        loop {
            // Shut down: every socket is closed, nothing to wait for.
            let Ok(mut st) = self.lock() else { break };
            if st.stack.linger_done(&sock) {
                break;
            }
            // Registered under the lock, as in `blocking`: the FIN's ACK
            // cannot slip between the check and the registration. Its wake
            // has an empty key, which every parker takes.
            let parker = PARKER.with(Arc::clone);
            parker.arm(Events::ERR | Events::HUP);
            let waiter: Arc<dyn Waiter> = parker.clone();
            let registered = sock.wait_queue().add_waiter(waiter.clone(), false);
            self.inner.shared.after_call(&mut st);
            drop(st);
            if !registered {
                break;
            }
            bump(&self.inner.shared.counters.parks);
            let outcome = parker.park(deadline);
            sock.wait_queue().remove_waiter(&waiter);
            if !matches!(outcome, Park::Woken) {
                break;
            }
        }
        trace!(fd, "lingering close returns");
        // The last handle: the stack thread reaps the socket, which
        // orphans its connection as any close does.
        drop(sock);
        self.inner.shared.kick();
        Ok(())
    }

    /// `setsockopt(fd, SOL_SOCKET, SO_LINGER, ..)`, as
    /// [`Stack::setsockopt_linger`]; a non-zero time makes
    /// [`Net::close`] wait for the FIN's ACK.
    pub fn setsockopt_linger(&self, fd: i32, linger: Option<StdDuration>) -> Result<(), Errno> {
        self.call(|s| s.setsockopt_linger(fd, linger))
    }

    /// `getsockopt(fd, SOL_SOCKET, SO_LINGER)`, as
    /// [`Stack::getsockopt_linger`].
    pub fn getsockopt_linger(&self, fd: i32) -> Result<Option<StdDuration>, Errno> {
        self.call(|s| s.getsockopt_linger(fd))
    }

    /// `dup(fd)`, as [`Stack::dup`].
    pub fn dup(&self, fd: i32) -> Result<i32, Errno> {
        self.call(|s| s.dup(fd))
    }

    /// `fcntl(fd, cmd, arg)`, as [`Stack::fcntl`]; `F_SETFL` with
    /// `O_NONBLOCK` makes a socket non-blocking.
    pub fn fcntl(&self, fd: i32, cmd: i32, arg: i32) -> Result<i32, Errno> {
        self.call(|s| s.fcntl(fd, cmd, arg))
    }

    /// `getsockopt(fd, level, name)`, as [`Stack::getsockopt`].
    pub fn getsockopt(&self, fd: i32, level: i32, name: i32) -> Result<i32, Errno> {
        self.call(|s| s.getsockopt(fd, level, name))
    }

    /// `setsockopt(fd, level, name, value)`, as [`Stack::setsockopt`].
    /// Timeouts take a duration: [`Net::set_timeout`].
    pub fn setsockopt(&self, fd: i32, level: i32, name: i32, value: i32) -> Result<(), Errno> {
        self.call(|s| s.setsockopt(fd, level, name, value))
    }

    /// `setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO or SO_SNDTIMEO, timeval)`:
    /// `None` or zero waits forever. `ENOTSOCK`, [`Errno::ENOPROTOOPT`] for
    /// another option.
    pub fn set_timeout(
        &self,
        fd: i32,
        name: i32,
        timeout: Option<StdDuration>,
    ) -> Result<(), Errno> {
        let sock = self.socket_file(fd)?;
        match name {
            SO_RCVTIMEO => sock.set_read_timeout(timeout),
            SO_SNDTIMEO => sock.set_write_timeout(timeout),
            _ => return Err(Errno::ENOPROTOOPT),
        }
        Ok(())
    }

    /// `getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO or SO_SNDTIMEO)`.
    pub fn timeout(&self, fd: i32, name: i32) -> Result<Option<StdDuration>, Errno> {
        let sock = self.socket_file(fd)?;
        match name {
            SO_RCVTIMEO => Ok(sock.read_timeout()),
            SO_SNDTIMEO => Ok(sock.write_timeout()),
            _ => Err(Errno::ENOPROTOOPT),
        }
    }

    fn socket_file(&self, fd: i32) -> Result<Arc<Socket>, Errno> {
        let file = self.lock()?.stack.file(fd)?;
        match file {
            File::Socket(s) => Ok(s),
            File::Basic(_) => Err(Errno::ENOTSOCK),
        }
    }

    /// `getsockname(fd)`, as [`Stack::getsockname`].
    pub fn getsockname(&self, fd: i32) -> Result<SocketAddrV4, Errno> {
        self.call(|s| s.getsockname(fd))
    }

    /// `getpeername(fd)`, as [`Stack::getpeername`].
    pub fn getpeername(&self, fd: i32) -> Result<SocketAddrV4, Errno> {
        self.call(|s| s.getpeername(fd))
    }

    // ---- epoll and other descriptors -----------------------------------------

    /// `epoll_create1(flags)`.
    pub fn epoll_create1(&self, flags: i32) -> Result<i32, Errno> {
        let mut st = self.lock()?;
        let fd = st.stack.epoll_create1(flags)?;
        if let Ok(file) = st.stack.file(fd)
            && let Some(ep) = file.event_poll()
        {
            let ep = Arc::downgrade(ep);
            st.epolls.retain(|w| w.strong_count() > 0);
            st.epolls.push(ep);
        }
        Ok(fd)
    }

    /// `epoll_ctl(epfd, op, fd, event)`, as [`Stack::epoll_ctl`].
    pub fn epoll_ctl(
        &self,
        epfd: i32,
        op: i32,
        fd: i32,
        event: Option<&EpollEvent>,
    ) -> Result<(), Errno> {
        self.call(|s| s.epoll_ctl(epfd, op, fd, event))
    }

    /// `epoll_wait(epfd, events, maxevents, timeout_ms)`: blocks (negative
    /// timeout), polls (zero) or waits up to `timeout_ms`, outside the stack
    /// lock, in eventpoll. `EBADF` if the stack shuts down meanwhile.
    pub fn epoll_wait(
        &self,
        epfd: i32,
        events: &mut [EpollEvent],
        maxevents: i32,
        timeout_ms: i32,
    ) -> Result<usize, Errno> {
        let timeout = u64::try_from(timeout_ms).ok().map(StdDuration::from_millis);
        self.epoll_wait_for(epfd, events, maxevents, timeout)
    }

    /// [`epoll_wait`](Net::epoll_wait) with a [`Duration`](StdDuration)
    /// (`None` blocks).
    pub fn epoll_wait_for(
        &self,
        epfd: i32,
        events: &mut [EpollEvent],
        maxevents: i32,
        timeout: Option<StdDuration>,
    ) -> Result<usize, Errno> {
        let file = self.lock()?.stack.file(epfd)?;
        if maxevents <= 0 || maxevents > eventpoll::EP_MAX_EVENTS {
            return Err(Errno::EINVAL);
        }
        // maxevents > 0 was checked above.
        let maxevents = maxevents as usize;
        if maxevents > events.len() {
            return Err(Errno::EFAULT);
        }
        let ep = file.event_poll().ok_or(Errno::EINVAL)?.clone();
        drop(file);
        ep.wait(&mut events[..maxevents], timeout)
    }

    /// `eventfd(initval, flags)`.
    pub fn eventfd(&self, initval: u32, flags: i32) -> Result<i32, Errno> {
        self.call(|s| s.eventfd(initval, flags))
    }

    /// `pipe2(flags)`.
    pub fn pipe2(&self, flags: i32) -> Result<[i32; 2], Errno> {
        self.call(|s| s.pipe2(flags))
    }

    /// The readiness of `fd` now, as `poll(2)` would report it.
    pub fn poll_fd(&self, fd: i32) -> Result<Events, Errno> {
        self.lock()?.stack.poll_fd(fd)
    }

    // ---- the handle ------------------------------------------------------------

    /// The stack's counters.
    pub fn stats(&self) -> Result<Stats, Errno> {
        Ok(self.lock()?.stack.stats())
    }

    /// The counters of the stack thread and its callers.
    pub fn thread_stats(&self) -> ThreadStats {
        let c = &self.inner.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ThreadStats {
            wakeups: get(&c.wakeups),
            kicks: get(&c.kicks),
            sender_received: get(&c.sender_received),
            left_to_holder: get(&c.left_to_holder),
            parks: get(&c.parks),
        }
    }

    /// The kernel thread id of the stack thread (for
    /// `/proc/self/task/TID/stat`).
    pub fn stack_tid(&self) -> i32 {
        self.inner.shared.stack_tid.load(Ordering::Relaxed)
    }

    /// Shuts the stack down now (module docs, "Shutdown"): every socket is
    /// closed, every blocked caller wakes with `EBADF`, the thread is
    /// joined. Later calls on any clone fail with `EBADF`. Idempotent.
    pub fn shutdown(&self) {
        shutdown(&self.inner.shared, &self.inner.join);
    }

    /// True once the stack is shut down.
    pub fn is_shut_down(&self) -> bool {
        // Through `Locked`, like every holder of the stack lock: its drop
        // receives what an arrival left to it meanwhile.
        self.inner.shared.lock().shut
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("stack_tid", &self.stack_tid())
            .finish_non_exhaustive()
    }
}

// ---- the parker -------------------------------------------------------------

thread_local! {
    /// Each thread blocks on one socket at a time: one parker per thread.
    static PARKER: Arc<Parker> = Arc::new_cyclic(|me| Parker {
        me: me.clone(),
        state: Mutex::new(ParkState::default()),
        cv: Condvar::new(),
        signalled: std::sync::atomic::AtomicBool::new(false),
    });
    /// Parkers this thread woke while holding the stack lock, to notify
    /// once it is released ([`Locked`]'s drop).
    static DEFERRED: std::cell::RefCell<Vec<Arc<Parker>>> =
        const { std::cell::RefCell::new(Vec::new()) };
    /// The stacks whose pending arrivals this thread is receiving, by
    /// address ([`receive_pending`]).
    static DRAINING: std::cell::RefCell<Vec<usize>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Notifies the parkers this thread woke under the stack lock.
fn notify_deferred() {
    let list = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    for parker in &list {
        parker.cv.notify_one();
    }
    // Give the (empty) allocation back for the next time.
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_empty() {
            let mut list = list;
            list.clear();
            *d = list;
        }
    });
}

/// A blocked caller's entry on a socket's wait queue.
///
/// Its wake-up sets `woken` at once but notifies the condvar only when the
/// waking thread releases the stack lock (all socket wake-ups happen under
/// it): the woken thread's first step is to take that lock, and notifying
/// earlier lets it run into the held lock and sleep again. A detach (the
/// socket dropped, maybe outside the lock) notifies at once.
struct Parker {
    me: Weak<Parker>,
    state: Mutex<ParkState>,
    cv: Condvar,
    /// `woken || gone`, readable without the lock (the yield loop).
    signalled: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct ParkState {
    want: Events,
    woken: bool,
    gone: bool,
}

enum Park {
    Woken,
    Gone,
    TimedOut,
}

impl Parker {
    fn arm(&self, want: Events) {
        let mut s = self.state.lock();
        s.want = want;
        s.woken = false;
        s.gone = false;
        self.signalled.store(false, Ordering::Relaxed);
    }

    fn park(&self, deadline: Option<std::time::Instant>) -> Park {
        for _ in 0..PARK_YIELDS {
            if self.signalled.load(Ordering::Acquire) {
                break;
            }
            std::thread::yield_now();
        }
        let mut s = self.state.lock();
        loop {
            if s.gone {
                return Park::Gone;
            }
            if s.woken {
                return Park::Woken;
            }
            match deadline {
                None => self.cv.wait(&mut s),
                Some(d) => {
                    if self.cv.wait_until(&mut s, d).timed_out() {
                        return if s.gone {
                            Park::Gone
                        } else if s.woken {
                            Park::Woken
                        } else {
                            Park::TimedOut
                        };
                    }
                }
            }
        }
    }
}

impl Waiter for Parker {
    fn wake(&self, key: Events) -> bool {
        let mut s = self.state.lock();
        if !key.is_empty() && !key.intersects(s.want) {
            return false;
        }
        s.woken = true;
        self.signalled.store(true, Ordering::Release);
        drop(s);
        match self.me.upgrade() {
            Some(me) => DEFERRED.with(|d| d.borrow_mut().push(me)),
            None => {
                self.cv.notify_one();
            }
        }
        true
    }

    fn detach(&self) {
        self.state.lock().gone = true;
        self.signalled.store(true, Ordering::Release);
        self.cv.notify_one();
    }
}

// ---- the stack behind a trait object ----------------------------------------

/// The calls of [`Stack`] the threaded mode makes, object-safe, so that
/// [`Net`] does not carry the device type.
trait Ops: Send {
    fn socket(&mut self, domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno>;
    fn bind(&mut self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno>;
    fn listen(&mut self, fd: i32, backlog: i32) -> Result<(), Errno>;
    fn accept4(&mut self, fd: i32, flags: i32) -> Result<(i32, SocketAddrV4), Errno>;
    fn connect(&mut self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno>;
    fn recv(
        &mut self,
        fd: i32,
        buf: &mut [u8],
        flags: i32,
        take_error: bool,
    ) -> Result<usize, Errno>;
    fn send(&mut self, fd: i32, buf: &[u8], flags: i32) -> Result<usize, Errno>;
    fn shutdown(&mut self, fd: i32, how: i32) -> Result<(), Errno>;
    fn close_lingering(&mut self, fd: i32) -> Result<Option<(Arc<Socket>, StdDuration)>, Errno>;
    fn linger_done(&self, socket: &Socket) -> bool;
    fn setsockopt_linger(&mut self, fd: i32, linger: Option<StdDuration>) -> Result<(), Errno>;
    fn getsockopt_linger(&mut self, fd: i32) -> Result<Option<StdDuration>, Errno>;
    fn dup(&mut self, fd: i32) -> Result<i32, Errno>;
    fn fcntl(&mut self, fd: i32, cmd: i32, arg: i32) -> Result<i32, Errno>;
    fn getsockopt(&mut self, fd: i32, level: i32, name: i32) -> Result<i32, Errno>;
    fn setsockopt(&mut self, fd: i32, level: i32, name: i32, value: i32) -> Result<(), Errno>;
    fn getsockname(&mut self, fd: i32) -> Result<SocketAddrV4, Errno>;
    fn getpeername(&mut self, fd: i32) -> Result<SocketAddrV4, Errno>;
    fn epoll_create1(&mut self, flags: i32) -> Result<i32, Errno>;
    fn epoll_ctl(
        &mut self,
        epfd: i32,
        op: i32,
        fd: i32,
        event: Option<&EpollEvent>,
    ) -> Result<(), Errno>;
    fn eventfd(&mut self, initval: u32, flags: i32) -> Result<i32, Errno>;
    fn pipe2(&mut self, flags: i32) -> Result<[i32; 2], Errno>;
    fn poll_fd(&self, fd: i32) -> Result<Events, Errno>;
    fn file(&self, fd: i32) -> Result<File, Errno>;
    fn close_all(&mut self);
    fn stats(&self) -> Stats;
    fn poll(&mut self, now: Instant) -> bool;
    fn poll_delay(&self, now: Instant) -> Option<Duration>;
    fn readiness_fd(&self) -> std::io::Result<Option<RawFd>>;
    fn prepare_sleep(&self) -> bool;
    fn readiness_fired(&self);
    fn wants_writable(&self) -> bool;
    fn set_arrival_hook(&self, hook: Box<dyn Fn() -> bool + Send + Sync>) -> bool;
}

impl<D: SleepDevice + Send> Ops for Stack<D> {
    fn socket(&mut self, domain: i32, ty: i32, protocol: i32) -> Result<i32, Errno> {
        Stack::socket(self, domain, ty, protocol)
    }
    fn bind(&mut self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno> {
        Stack::bind(self, fd, addr)
    }
    fn listen(&mut self, fd: i32, backlog: i32) -> Result<(), Errno> {
        Stack::listen(self, fd, backlog)
    }
    fn accept4(&mut self, fd: i32, flags: i32) -> Result<(i32, SocketAddrV4), Errno> {
        Stack::accept4(self, fd, flags)
    }
    fn connect(&mut self, fd: i32, addr: SocketAddrV4) -> Result<(), Errno> {
        Stack::connect(self, fd, addr)
    }
    fn recv(
        &mut self,
        fd: i32,
        buf: &mut [u8],
        flags: i32,
        take_error: bool,
    ) -> Result<usize, Errno> {
        Stack::recv_with(self, fd, buf, flags, take_error)
    }
    fn send(&mut self, fd: i32, buf: &[u8], flags: i32) -> Result<usize, Errno> {
        Stack::send_flags(self, fd, buf, flags)
    }
    fn shutdown(&mut self, fd: i32, how: i32) -> Result<(), Errno> {
        Stack::shutdown(self, fd, how)
    }
    fn close_lingering(&mut self, fd: i32) -> Result<Option<(Arc<Socket>, StdDuration)>, Errno> {
        Stack::close_lingering(self, fd)
    }
    fn linger_done(&self, socket: &Socket) -> bool {
        Stack::linger_done(self, socket)
    }
    fn setsockopt_linger(&mut self, fd: i32, linger: Option<StdDuration>) -> Result<(), Errno> {
        Stack::setsockopt_linger(self, fd, linger)
    }
    fn getsockopt_linger(&mut self, fd: i32) -> Result<Option<StdDuration>, Errno> {
        Stack::getsockopt_linger(self, fd)
    }
    fn dup(&mut self, fd: i32) -> Result<i32, Errno> {
        Stack::dup(self, fd)
    }
    fn fcntl(&mut self, fd: i32, cmd: i32, arg: i32) -> Result<i32, Errno> {
        Stack::fcntl(self, fd, cmd, arg)
    }
    fn getsockopt(&mut self, fd: i32, level: i32, name: i32) -> Result<i32, Errno> {
        Stack::getsockopt(self, fd, level, name)
    }
    fn setsockopt(&mut self, fd: i32, level: i32, name: i32, value: i32) -> Result<(), Errno> {
        Stack::setsockopt(self, fd, level, name, value)
    }
    fn getsockname(&mut self, fd: i32) -> Result<SocketAddrV4, Errno> {
        Stack::getsockname(self, fd)
    }
    fn getpeername(&mut self, fd: i32) -> Result<SocketAddrV4, Errno> {
        Stack::getpeername(self, fd)
    }
    fn epoll_create1(&mut self, flags: i32) -> Result<i32, Errno> {
        Stack::epoll_create1(self, flags)
    }
    fn epoll_ctl(
        &mut self,
        epfd: i32,
        op: i32,
        fd: i32,
        event: Option<&EpollEvent>,
    ) -> Result<(), Errno> {
        Stack::epoll_ctl(self, epfd, op, fd, event)
    }
    fn eventfd(&mut self, initval: u32, flags: i32) -> Result<i32, Errno> {
        Stack::eventfd(self, initval, flags)
    }
    fn pipe2(&mut self, flags: i32) -> Result<[i32; 2], Errno> {
        Stack::pipe2(self, flags)
    }
    fn poll_fd(&self, fd: i32) -> Result<Events, Errno> {
        Stack::poll_fd(self, fd)
    }
    fn file(&self, fd: i32) -> Result<File, Errno> {
        Stack::file(self, fd)
    }
    fn close_all(&mut self) {
        Stack::close_all(self)
    }
    fn stats(&self) -> Stats {
        Stack::stats(self)
    }
    fn poll(&mut self, now: Instant) -> bool {
        Stack::poll(self, now)
    }
    fn poll_delay(&self, now: Instant) -> Option<Duration> {
        Stack::poll_delay(self, now)
    }
    fn readiness_fd(&self) -> std::io::Result<Option<RawFd>> {
        self.device().readiness_fd()
    }
    fn prepare_sleep(&self) -> bool {
        self.device().prepare_sleep()
    }
    fn readiness_fired(&self) {
        self.device().readiness_fired()
    }
    fn wants_writable(&self) -> bool {
        self.device().wants_writable()
    }
    fn set_arrival_hook(&self, hook: Box<dyn Fn() -> bool + Send + Sync>) -> bool {
        self.device().set_arrival_hook(hook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AF_INET, SOCK_NONBLOCK, SOCK_STREAM};
    use std::net::Ipv4Addr;

    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

    /// A packet that arrives while another thread holds the receiving
    /// stack's lock is received by that thread when it unlocks (not by the
    /// stack thread, which is not signalled): the data is in the socket as
    /// soon as the lock is released.
    #[test]
    fn an_arrival_under_a_held_lock_is_received_by_the_holder_at_unlock() {
        let (a, b) = netdev::Link::pair(1500);
        let server = NetThread::spawn(a, StackConfig::new(SERVER, 15)).unwrap();
        let client = NetThread::spawn(b, StackConfig::new(CLIENT, 15)).unwrap();
        let l = server.socket(AF_INET, SOCK_STREAM, 0).unwrap();
        server.bind(l, SocketAddrV4::new(SERVER, 9)).unwrap();
        server.listen(l, 4).unwrap();
        let c = client.socket(AF_INET, SOCK_STREAM, 0).unwrap();
        client.connect(c, SocketAddrV4::new(SERVER, 9)).unwrap();
        let (s, _) = server.accept4(l, SOCK_NONBLOCK).unwrap();
        let shared = &server.inner.shared;
        let mut buf = [0u8; 8];
        // The hook runs only while the server's stack thread sleeps armed;
        // if it happened to be awake (its 200 ms tick), try again.
        for attempt in 0..50 {
            let left = server.thread_stats().left_to_holder;
            let held = shared.lock();
            assert_eq!(client.send(c, b"x"), Ok(1));
            let deferred = server.thread_stats().left_to_holder > left;
            if deferred {
                assert!(shared.arrival_pending.load(Ordering::SeqCst));
            }
            let received = server.thread_stats().sender_received;
            drop(held);
            if !deferred {
                // Received by the stack thread instead: drain it.
                assert_eq!(blocking_recv(&server, s, &mut buf), 1);
                continue;
            }
            // The unlock itself received the packet.
            assert!(!shared.arrival_pending.load(Ordering::SeqCst));
            assert_eq!(server.thread_stats().sender_received, received + 1);
            assert_eq!(server.recv(s, &mut buf), Ok(1), "attempt {attempt}");
            assert_eq!(&buf[..1], b"x");
            return;
        }
        panic!("the server's stack thread was never asleep when the packet came");
    }

    fn blocking_recv(net: &Net, fd: i32, buf: &mut [u8]) -> usize {
        net.fcntl(fd, crate::F_SETFL, 0).unwrap();
        let n = net.recv(fd, buf).unwrap();
        net.fcntl(fd, crate::F_SETFL, SOCK_NONBLOCK).unwrap();
        n
    }
}
