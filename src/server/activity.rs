//! What a connection's watchdog knows of it (requests in flight, when it last went idle,
//! whether it is being parked); written by its requests and read by its socket.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::body::BodyWatch;

/// What a connection's watchdog knows of it; written by its requests.
#[derive(Debug)]
pub struct Activity {
    /// An HTTP/2 connection that has carried a request: once idle it is shut down gracefully
    /// (GOAWAY). Set by its first request rather than from the sniffed protocol: one that
    /// never carried any (a bare preface) is closed outright, as a graceful shutdown would
    /// wait for the answer to its ping.
    pub http2: AtomicBool,
    /// Requests whose response has not been sent whole yet, and request bodies not read
    /// whole yet: a connection is idle when both are done.
    in_flight: AtomicUsize,
    /// When the connection last became idle (nothing in flight): accepted, or its last
    /// response sent.
    idle_since: Mutex<Instant>,
    /// An HTTP/1.1 connection's parking (`parking`): asked by the watchdog, done by the
    /// socket's next read.
    pub park: ParkState,
}

impl Activity {
    pub fn new(accepted: Instant) -> Self {
        Activity {
            http2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(accepted),
            park: ParkState::default(),
        }
    }

    /// When the connection should be looked at again, to see whether it has been idle for
    /// `wait`.
    pub fn next_check(&self, wait: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + wait;
        }
        *self.idle_since.lock().expect("activity lock") + wait
    }

    /// True when the connection has had nothing in flight for `wait`.
    pub fn is_idle(&self, wait: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.idle_since.lock().expect("activity lock").elapsed() >= wait
    }

    /// Counts a request (or a request body) in flight until [`Activity::finish`].
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub fn finish(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.idle_since.lock().expect("activity lock") = Instant::now();
        }
    }
}

/// A request body still coming keeps its connection busy.
impl BodyWatch for Activity {
    fn body_ended(&self) {
        self.finish();
    }
}

/// One request in flight, counted from its head until its response has been sent whole or
/// dropped (an HTTP/2 stream reset, or the client gone before the answer).
pub struct InFlight(Arc<Activity>);

impl InFlight {
    pub fn start(activity: Arc<Activity>) -> Self {
        activity.start();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Where a connection is in parking; shared by its watchdog and its socket's reads.
#[derive(Debug, Default)]
pub struct ParkState(AtomicU8);

const SERVING: u8 = 0;
const ASKED: u8 = 1;
const PARKED: u8 = 2;

impl ParkState {
    /// The watchdog asks: the next read that would wait ends the hyper connection instead.
    pub fn ask(&self) {
        let _ = self
            .0
            .compare_exchange(SERVING, ASKED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Asked and not yet parked (the watchdog does not ask twice).
    pub fn is_asked(&self) -> bool {
        self.0.load(Ordering::Acquire) == ASKED
    }

    /// The hyper connection was ended by parking (rather than by the client or an error).
    pub fn is_parked(&self) -> bool {
        self.0.load(Ordering::Acquire) == PARKED
    }

    /// A read found nothing while asked: the hyper connection ends, parked.
    pub fn end(&self) {
        self.0.store(PARKED, Ordering::Release);
    }

    /// Serving again: a request came while asked, or a new hyper connection took over.
    pub fn serve(&self) {
        self.0.store(SERVING, Ordering::Release);
    }
}
