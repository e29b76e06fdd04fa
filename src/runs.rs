//! Asynchronous runs: an agent's run that takes longer than the tunnel in front of the
//! gateway lets a response take (about 100 s for common tunnels).
//!
//! A `POST` to `/rpc/<owner>[/<path>]` with `Prefer: respond-async` is answered at once with
//! `202 Accepted` and `Location: /rpc/<owner>/runs/<id>`; the gateway keeps the request to
//! the runtime going in the background (a hold, like any run), and keeps the runtime's
//! answer here. `GET` on the location answers `202` with `Retry-After` while the run is
//! going and the runtime's own answer once it is done, for [`RunStore`]'s lifetime.
//!
//! Bounded: at most `limits.max_async_runs` runs are kept at once (running or done; 429
//! past it), each answer at most `limits.max_async_run_bytes` (a larger one is kept as a
//! 413), each done run for `limits.async_run_seconds`. Kept in memory: a gateway restart
//! forgets them (the runs themselves go on in their runtimes).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use crate::owner::OwnerHash;

/// Unguessable run ids (128 random bits, hex).
pub type RunId = String;

/// What became of a run.
#[derive(Debug, Clone)]
pub enum RunState {
    Running,
    /// The runtime's answer (or the gateway's error), whole.
    Done {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

/// One run: whose it is, and its state.
#[derive(Debug)]
struct Run {
    owner_hash: OwnerHash,
    state: Mutex<RunState>,
    /// When it finished: kept until this plus the lifetime.
    finished: Mutex<Option<Instant>>,
}

/// Why a run was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{max} asynchronous runs are kept already; fetch their results or wait for them to expire")]
pub struct TooManyRuns {
    pub max: usize,
}

/// The runs of all owners, by id.
pub struct RunStore {
    runs: DashMap<RunId, Arc<Run>>,
    max_runs: usize,
    max_bytes: usize,
    lifetime: Duration,
}

/// The handle of a run in the background: it delivers the run's result.
pub struct RunTicket {
    run: Arc<Run>,
    max_bytes: usize,
}

impl RunStore {
    pub fn new(max_runs: usize, max_bytes: usize, lifetime: Duration) -> Self {
        RunStore {
            runs: DashMap::new(),
            max_runs,
            max_bytes,
            lifetime,
        }
    }

    /// Starts keeping a run for `owner_hash`: its id and the ticket that delivers its result.
    pub fn begin(&self, owner_hash: OwnerHash) -> Result<(RunId, RunTicket), TooManyRuns> {
        self.purge();
        if self.runs.len() >= self.max_runs {
            return Err(TooManyRuns { max: self.max_runs });
        }
        let id = crate::auth::random_secret()
            .map(|s| {
                s.chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(32)
                    .collect::<String>()
            })
            .expect("the operating system's random generator");
        let run = Arc::new(Run {
            owner_hash,
            state: Mutex::new(RunState::Running),
            finished: Mutex::new(None),
        });
        self.runs.insert(id.clone(), run.clone());
        Ok((
            id,
            RunTicket {
                run,
                max_bytes: self.max_bytes,
            },
        ))
    }

    /// The state of `owner_hash`'s run `id`; `None` when there is none, it expired, or it is
    /// another owner's (which must look exactly like none).
    pub fn get(&self, owner_hash: OwnerHash, id: &str) -> Option<RunState> {
        self.purge();
        let run = self.runs.get(id)?.clone();
        if run.owner_hash != owner_hash {
            return None;
        }
        let state = run.state.lock().expect("run lock").clone();
        Some(state)
    }

    /// Forgets done runs past their lifetime.
    fn purge(&self) {
        let now = Instant::now();
        self.runs.retain(|_, run| {
            run.finished
                .lock()
                .expect("run lock")
                .is_none_or(|at| now < at + self.lifetime)
        });
    }

    /// Runs kept now (running or done).
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

impl RunTicket {
    /// The largest answer kept whole.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Delivers the run's result.
    pub fn finish(self, status: StatusCode, headers: HeaderMap, body: Bytes) {
        *self.run.state.lock().expect("run lock") = RunState::Done { status, headers, body };
        *self.run.finished.lock().expect("run lock") = Some(Instant::now());
    }
}

impl Drop for RunTicket {
    /// A run whose task ended without a result (it panicked, or the gateway is going away)
    /// is not left running forever.
    fn drop(&mut self) {
        let mut finished = self.run.finished.lock().expect("run lock");
        if finished.is_none() {
            *self.run.state.lock().expect("run lock") = RunState::Done {
                status: StatusCode::BAD_GATEWAY,
                headers: json_headers(),
                body: Bytes::from_static(
                    br#"{"error":{"code":"run_interrupted","message":"the asynchronous run ended without an answer"}}"#,
                ),
            };
            *finished = Some(Instant::now());
        }
    }
}

/// `content-type: application/json`.
pub fn json_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers
}

/// True when a request asks to be answered asynchronously (`Prefer: respond-async`,
/// RFC 7240, among other preferences).
pub fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|pref| {
            pref.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("respond-async")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefer_header_is_read_among_other_preferences() {
        let mut h = HeaderMap::new();
        assert!(!prefers_async(&h));
        h.insert("prefer", "wait=10, Respond-Async".parse().unwrap());
        assert!(prefers_async(&h));
        h.insert("prefer", "return=minimal".parse().unwrap());
        assert!(!prefers_async(&h));
        h.insert("prefer", "respond-async; foo=bar".parse().unwrap());
        assert!(prefers_async(&h));
    }

    #[tokio::test(start_paused = true)]
    async fn runs_are_bounded_private_to_their_owner_and_expire() {
        let store = RunStore::new(2, 1024, Duration::from_secs(60));
        let (alice, bob) = (OwnerHash::of("alice"), OwnerHash::of("bob"));
        let (first, ticket) = store.begin(alice).unwrap();
        assert!(matches!(store.get(alice, &first), Some(RunState::Running)));
        assert!(store.get(bob, &first).is_none(), "another owner's run looks like none");
        assert!(store.get(alice, "nonsense").is_none());
        let (_second, other) = store.begin(bob).unwrap();
        assert_eq!(store.begin(alice).err(), Some(TooManyRuns { max: 2 }));
        ticket.finish(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"done"));
        match store.get(alice, &first) {
            Some(RunState::Done { status, body, .. }) => {
                assert_eq!((status, body.as_ref()), (StatusCode::OK, b"done".as_slice()))
            }
            other => panic!("{other:?}"),
        }
        // A ticket dropped without a result is an interrupted run, not one running forever.
        drop(other);
        assert_eq!(store.len(), 2);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(store.get(alice, &first).is_none(), "expired");
        assert!(store.is_empty());
        assert!(store.begin(alice).is_ok(), "room again");
    }
}
