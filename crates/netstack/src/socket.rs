//! The socket as a file description: what epoll watches.
//!
//! A [`Socket`] is the object behind a socket file descriptor. It implements
//! [`Pollable`] over its [`SocketEvents`]: the socket's [`WaitQueue`] and a
//! cached readiness mask. It holds no TCP state: the
//! [`Stack`](crate::Stack) owns the connection and, after every step that
//! touches it (a segment in, an egress pass, a timer, a user call),
//! recomputes the readiness by Linux's `tcp_poll` rules ([`tcp_poll`]),
//! stores it in the `SocketEvents` and *then* wakes the queue with the events
//! of the table in DESIGN.md. So `poll()` always reports the readiness of
//! the last stack step, and any number of epolls can watch one socket.
//!
//! Ownership: the stack holds the `SocketEvents` strongly, so that storing a
//! readiness and waking the queue, several times per request, touch no
//! reference count (an `Arc` upgrade and drop are two locked instructions,
//! ~10 ns on a machine where they are slow). It holds nothing of the
//! `Socket` itself. When the last descriptor (and every other strong handle)
//! of a socket is gone, `Drop` detaches the wait queue, which removes the
//! socket's epitems (Linux's file-description rule for epoll) and tells
//! blocked callers the socket is gone, then posts the socket's id to the
//! stack's reaper list, and the stack closes the connection at its next step
//! (graceful FIN, or RST if unread data was left, as Linux does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use eventpoll::{
    BasicFile, EventPoll, Events, FileDescription, Pollable, ReadinessCell, WaitQueue,
};

/// Identity of a socket in its stack: slot index and generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SockId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// Ids of sockets whose last handle dropped, for the stack to close.
///
/// The stack looks at it on every step, so an empty list must cost no
/// lock: `pending` is set (under the lock) when an id is posted and
/// cleared when the stack takes the list.
#[derive(Default)]
pub(crate) struct ReaperList {
    pending: AtomicBool,
    list: std::sync::Mutex<Vec<SockId>>,
}

impl ReaperList {
    /// Posts a socket whose last handle dropped.
    pub(crate) fn post(&self, id: SockId) {
        // A poisoned lock only means a panic elsewhere; the list is still valid.
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.push(id);
        self.pending.store(true, Ordering::Release);
    }

    /// Takes every posted id (empty, without locking, if none is pending).
    pub(crate) fn take(&self) -> Vec<SockId> {
        if !self.pending.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        self.pending.store(false, Ordering::Relaxed);
        std::mem::take(&mut *list)
    }

    /// Removes `id` if it was posted (a socket the stack closes itself).
    pub(crate) fn forget(&self, id: SockId) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|&x| x != id);
        if list.is_empty() {
            self.pending.store(false, Ordering::Relaxed);
        }
    }
}

/// The stack's reaper list, shared with its sockets.
pub(crate) type Reaper = Arc<ReaperList>;

/// What a socket's stack and its file description share: the readiness
/// the stack stores and the queue it wakes (see the module docs).
pub(crate) struct SocketEvents {
    readiness: AtomicU32,
    wait_queue: WaitQueue,
}

impl SocketEvents {
    /// Stores the readiness computed by the stack (before any wake).
    pub(crate) fn set_readiness(&self, readiness: Events) {
        self.readiness.store(readiness.bits(), Ordering::Release);
    }

    pub(crate) fn wait_queue(&self) -> &WaitQueue {
        &self.wait_queue
    }
}

/// A socket file description (an `AF_INET`, `SOCK_STREAM` socket).
pub struct Socket {
    id: SockId,
    events: Arc<SocketEvents>,
    nonblocking: AtomicBool,
    /// `SO_RCVTIMEO` in nanoseconds, 0 for none (used by the threaded mode).
    rcv_timeout: AtomicU64,
    /// `SO_SNDTIMEO` in nanoseconds, 0 for none.
    snd_timeout: AtomicU64,
    reaper: Reaper,
}

impl Socket {
    /// A socket and the events its stack keeps (the module docs say who
    /// holds what).
    pub(crate) fn new(
        id: SockId,
        nonblocking: bool,
        readiness: Events,
        reaper: Reaper,
    ) -> (Socket, Arc<SocketEvents>) {
        let events = Arc::new(SocketEvents {
            readiness: AtomicU32::new(readiness.bits()),
            wait_queue: WaitQueue::new(),
        });
        let socket = Socket {
            id,
            events: Arc::clone(&events),
            nonblocking: AtomicBool::new(nonblocking),
            rcv_timeout: AtomicU64::new(0),
            snd_timeout: AtomicU64::new(0),
            reaper,
        };
        (socket, events)
    }

    pub(crate) fn id(&self) -> SockId {
        self.id
    }

    /// True if `O_NONBLOCK` is set on this description.
    pub fn is_nonblocking(&self) -> bool {
        self.nonblocking.load(Ordering::Relaxed)
    }

    pub(crate) fn set_nonblocking(&self, nonblocking: bool) {
        self.nonblocking.store(nonblocking, Ordering::Relaxed);
    }

    /// `SO_RCVTIMEO`: how long a blocking receive (or accept) waits; `None`
    /// waits forever. Only the threaded mode blocks.
    pub fn read_timeout(&self) -> Option<Duration> {
        nanos_to_timeout(self.rcv_timeout.load(Ordering::Relaxed))
    }

    /// Sets `SO_RCVTIMEO`; `None` or zero waits forever (as Linux's zero
    /// `timeval`).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) {
        self.rcv_timeout
            .store(timeout_to_nanos(timeout), Ordering::Relaxed);
    }

    /// `SO_SNDTIMEO`: how long a blocking send (or connect) waits.
    pub fn write_timeout(&self) -> Option<Duration> {
        nanos_to_timeout(self.snd_timeout.load(Ordering::Relaxed))
    }

    /// Sets `SO_SNDTIMEO`; `None` or zero waits forever.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) {
        self.snd_timeout
            .store(timeout_to_nanos(timeout), Ordering::Relaxed);
    }
}

fn nanos_to_timeout(nanos: u64) -> Option<Duration> {
    (nanos != 0).then(|| Duration::from_nanos(nanos))
}

/// Zero means none; a timeout past ~584 years is saturated.
fn timeout_to_nanos(timeout: Option<Duration>) -> u64 {
    timeout.map_or(0, |t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX))
}

impl ReadinessCell for SocketEvents {
    fn poll(&self) -> Events {
        Events::from_bits_truncate(self.readiness.load(Ordering::Acquire))
    }
}

impl Pollable for Socket {
    fn poll(&self) -> Events {
        self.events.poll()
    }

    fn wait_queue(&self) -> &WaitQueue {
        &self.events.wait_queue
    }

    /// The events the stack keeps: epoll reads the readiness there without
    /// a reference count on the socket. (The cell owns the wait queue that
    /// the registrations are on; `Drop` detaches it, which breaks that
    /// cycle.)
    fn readiness_cell(&self) -> Option<Arc<dyn ReadinessCell>> {
        Some(self.events.clone())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // The queue lives on with the stack's `SocketEvents`, so it is
        // detached here, as a dropped queue would detach itself.
        self.events.wait_queue.detach_all();
        self.reaper.post(self.id);
    }
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.id)
            .field("readiness", &self.poll())
            .finish()
    }
}

/// An open file description in a stack's descriptor table: a socket, or one
/// of eventpoll's own files (epoll, eventfd, pipe end).
#[derive(Clone)]
pub enum File {
    /// A TCP socket.
    Socket(Arc<Socket>),
    /// An epoll, an eventfd or a pipe end.
    Basic(BasicFile),
}

impl FileDescription for File {
    fn pollable(&self) -> Option<Arc<dyn Pollable>> {
        match self {
            File::Socket(s) => Some(s.clone()),
            File::Basic(b) => b.pollable(),
        }
    }

    fn event_poll(&self) -> Option<&Arc<EventPoll>> {
        match self {
            File::Socket(_) => None,
            File::Basic(b) => b.event_poll(),
        }
    }

    fn from_event_poll(ep: Arc<EventPoll>) -> Self {
        File::Basic(BasicFile::Epoll(ep))
    }
}

/// What `tcp_poll` needs to know about a socket, gathered by the stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PollState {
    /// A listening socket; `accept_ready` says whether its queue is non-empty.
    pub(crate) listening: bool,
    pub(crate) accept_ready: bool,
    /// The handshake is under way (`SYN_SENT`, `SYN_RECV`).
    pub(crate) connecting: bool,
    /// `TCP_CLOSE`: never connected, or the connection is over.
    pub(crate) closed: bool,
    /// `RCV_SHUTDOWN`: FIN received, reset, or `shutdown(SHUT_RD)`.
    pub(crate) rcv_shutdown: bool,
    /// `SEND_SHUTDOWN`: our FIN queued, reset, or `shutdown(SHUT_WR)`.
    pub(crate) send_shutdown: bool,
    /// Bytes waiting to be read.
    pub(crate) readable: bool,
    /// Send space by `sk_stream_is_writeable`: free space at least half
    /// of what is queued, and not zero.
    pub(crate) writable: bool,
    /// `sk_err` is set (a pending `SO_ERROR`).
    pub(crate) error: bool,
}

/// Linux's `tcp_poll` (EPOLL_SPEC §1.11) over a [`PollState`].
pub(crate) fn tcp_poll(s: &PollState) -> Events {
    if s.listening {
        return if s.accept_ready {
            Events::IN | Events::RDNORM
        } else {
            Events::empty()
        };
    }
    let mut mask = Events::empty();
    if (s.rcv_shutdown && s.send_shutdown) || s.closed {
        mask |= Events::HUP;
    }
    if s.rcv_shutdown {
        mask |= Events::IN | Events::RDNORM | Events::RDHUP;
    }
    if !s.connecting {
        if s.readable {
            mask |= Events::IN | Events::RDNORM;
        }
        if s.send_shutdown || s.writable {
            mask |= Events::OUT | Events::WRNORM;
        }
    }
    if s.error {
        mask |= Events::ERR;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_socket_polls_out_hup() {
        let s = PollState {
            closed: true,
            writable: true,
            ..PollState::default()
        };
        assert_eq!(tcp_poll(&s), Events::OUT | Events::WRNORM | Events::HUP);
    }

    #[test]
    fn listener_empty_queue_polls_nothing() {
        let mut s = PollState {
            listening: true,
            ..PollState::default()
        };
        assert_eq!(tcp_poll(&s), Events::empty());
        s.accept_ready = true;
        assert_eq!(tcp_poll(&s), Events::IN | Events::RDNORM);
    }

    #[test]
    fn connecting_socket_polls_nothing() {
        let s = PollState {
            connecting: true,
            writable: true,
            ..PollState::default()
        };
        assert_eq!(tcp_poll(&s), Events::empty());
    }

    #[test]
    fn reset_socket_polls_everything() {
        let s = PollState {
            closed: true,
            rcv_shutdown: true,
            send_shutdown: true,
            error: true,
            ..PollState::default()
        };
        assert_eq!(
            tcp_poll(&s),
            Events::IN
                | Events::RDNORM
                | Events::OUT
                | Events::WRNORM
                | Events::ERR
                | Events::HUP
                | Events::RDHUP
        );
    }

    #[test]
    fn fin_received_polls_in_rdhup_out() {
        let s = PollState {
            rcv_shutdown: true,
            writable: true,
            ..PollState::default()
        };
        assert_eq!(
            tcp_poll(&s),
            Events::IN | Events::RDNORM | Events::RDHUP | Events::OUT | Events::WRNORM
        );
    }
}
