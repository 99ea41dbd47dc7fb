//! The trace-level events along the path, as a subscriber sees them: with
//! the `trace` feature (the default) one echo shows every step from the
//! segment to the harvest, netstack's and eventpoll's; without it, none.
//!
//! Run without the feature with
//! `cargo test -p netstack --no-default-features --test trace_events`.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventpoll::Events;
use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use util::{Pair, ready, watch};

/// A subscriber that keeps the message of every event.
#[derive(Clone, Default)]
struct Recorder {
    messages: Arc<Mutex<Vec<String>>>,
    spans: Arc<AtomicU64>,
}

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.spans.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.messages.lock().push(message);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Connects, sends one request and reads it on the server, with the
/// recorder installed; returns the messages seen.
fn one_request_traced() -> Vec<String> {
    let recorder = Recorder::default();
    let messages = recorder.messages.clone();
    tracing::subscriber::with_default(recorder, || {
        let mut p = Pair::new();
        let listener = p.listen(80, 8);
        let (client, server) = p.connected(listener, 80);
        let ep = watch(&mut p.server, server, Events::IN);
        assert_eq!(p.client.send(client, b"ping"), Ok(4));
        p.settle();
        assert_eq!(ready(&mut p.server, ep), vec![(server, Events::IN)]);
        let mut buf = [0u8; 8];
        assert_eq!(p.server.recv(server, &mut buf), Ok(4));
    });
    messages.lock().clone()
}

#[test]
#[cfg(feature = "trace")]
fn every_step_of_an_echo_is_traced() {
    let messages = one_request_traced();
    let seen = |m: &str| messages.iter().any(|x| x == m);
    for step in [
        // netstack: the segment, the state machine, the mask, the send path,
        // the harvest.
        "segment in",
        "SYN to listener: new connection",
        "state change",
        "handshake done: accept queue",
        "mask raised: wake",
        "egress",
        "epoll_wait harvest",
        // eventpoll: the callback that queued the item, and the harvest.
        "callback: enqueue",
        "harvest",
    ] {
        assert!(seen(step), "no {step:?} event among {messages:?}");
    }
}

#[test]
#[cfg(not(feature = "trace"))]
fn without_the_feature_nothing_is_traced() {
    let messages = one_request_traced();
    assert!(messages.is_empty(), "events compiled in: {messages:?}");
}
