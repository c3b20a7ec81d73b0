//! A fake Buildkite, in process, on 127.0.0.1: the REST API (artifacts, builds, access
//! token) and a GraphQL endpoint on one port, and an S3-like storage server on another, for
//! integration tests, `bkfs-demo` and the bench and soak tools.
//!
//! It follows the documented API (`/work/shared/buildkite-artifacts-api.txt` and
//! `API-NOTES.md`): bearer tokens with scopes, JSON errors, `page`/`per_page` pagination with
//! RFC 8288 `Link` headers, a `302` download endpoint handing out short-lived signed storage
//! URLs, `DELETE` with `write_artifacts`, and `RateLimit-*` headers on every API response. The
//! storage server never needs the Buildkite token, checks the URL signature and expiry, and
//! answers ranges like S3, with XML errors.
//!
//! REST routes (see `api.rs`): `GET /v2/access-token`; `GET
//! /v2/organizations/{org}/pipelines/{pipeline}/builds` (newest first; `branch`, `state` or
//! `state[]=`, `page`, `per_page`) and `.../builds/{number}`; a build's and a job's artifact
//! lists; get, download and delete an artifact.
//!
//! GraphQL (see `graphql_api.rs` for every detail): `POST /graphql` on the API port
//! ([`FakeServer::graphql_url`]). Every query is validated against Buildkite's published
//! schema (vendored in `schema/buildkite.graphql`) and executed by `apollo-compiler`
//! ([`graphql`]); the fake answers the fields in `graphql_api::SERVED` (builds, pipelines and
//! their builds, jobs of every type, artifacts with signed `downloadURL`s, connections with
//! cursors, `first`/`last` at most 500 ([`GRAPHQL_MAX_PAGE`]; more is a field error), 100
//! ([`GRAPHQL_DEFAULT_PAGE`]) when neither is given) and any other field of the schema with
//! a field error. Not served: mutations, subscriptions, introspection (`__typename` is).
//!
//! Invalid documents answer 200 `{"data": null, "errors": [..]}` with apollo-compiler's
//! messages (with `locations`); field failures (a missing scope, `first` over
//! 500, a bad cursor) null that field and add an error with its `path`. GraphQL is not `api`:
//! it has its own counts, but shares the REST rate-limit window, headers and 429, and
//! [`FakeServer::set_api_latency`].
//!
//! The server runs on its own tokio runtime in a background thread, so synchronous tests can
//! use it; dropping the [`FakeServer`] stops it. Knobs (latency, bandwidth, URL lifetimes, rate
//! limit, GraphQL mode and access, injected faults) can be changed at any time, and so can the
//! builds ([`FakeServer::update_build`], [`FakeServer::set_build_state`],
//! [`FakeServer::set_artifact_state`]): every endpoint answers from the current state.
//!
//! Counts: one [`Count`] per request to each endpoint (whatever the answer), answers by
//! status (`Count::ApiStatus(503)`, `Count::StorageStatus(416)`, `Count::GraphqlStatus(400)`),
//! injected faults by kind, and storage requests that carried `Authorization`.
//!
//! Fault injection: [`FakeServer::fail_storage`], [`FakeServer::reset_storage`],
//! [`FakeServer::truncate_storage`] and [`FakeServer::stall_storage`] each arm a fault for the
//! next `n` storage `GET`s that would otherwise serve content (a request refused for its
//! signature, expiry or a missing object is answered as usual and does not use one up; `HEAD`
//! is never faulted). One request gets at most one fault, taken in that order: status, reset,
//! truncate, stall. [`FakeServer::corrupt_storage`] serves an artifact with every byte
//! inverted (same length, headers unchanged) while on. [`FakeServer::fail_api`] answers the
//! next `n` REST requests, whatever the endpoint (`/v2/access-token` included), with a status
//! and a JSON message, after the rate limit (a 429 does not use one up);
//! [`FakeServer::fail_graphql`] does the same for the next `n` GraphQL requests.
//! [`FakeServer::set_graphql_mode`] makes GraphQL absent (404) or fail every query
//! ([`GraphqlMode`]); [`FakeServer::set_graphql_access`] refuses a token (403).

mod api;
mod count;
mod demo;
pub mod fakelog;
pub mod graphql;
mod graphql_api;
#[cfg(test)]
mod graphql_tests;
mod logs;
pub mod model;
pub mod scripted;
mod storage;
#[cfg(test)]
mod tests;
mod world;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use count::Count;
pub use demo::{demo_build, DEMO_TOKEN};
pub use graphql_api::{DEFAULT_PAGE as GRAPHQL_DEFAULT_PAGE, MAX_PAGE as GRAPHQL_MAX_PAGE};
pub use world::{guess_mime, now_rfc3339, FakeArtifact, FakeBuild, FakeJob, FINAL_BUILD_STATES};

/// Handle on a running fake. Dropping it shuts both servers down.
pub struct FakeServer {
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// State shared by the handle and the handlers.
pub(crate) struct Shared {
    pub api_addr: SocketAddr,
    pub storage_addr: SocketAddr,
    /// Signs storage URLs; random per server.
    pub secret: String,
    world: Mutex<World>,
    knobs: Mutex<Knobs>,
    counts: Mutex<BTreeMap<Count, u64>>,
    bytes_served: AtomicU64,
    /// Raw log bytes sent in log bodies.
    log_bytes: AtomicU64,
    rate: Mutex<RateWindow>,
    faults: Mutex<Faults>,
    /// Storage responses stalled right now (their task still alive).
    stalls_active: AtomicU64,
}

/// Armed faults: "next n" counters and the corrupted artifacts.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    storage_status: (u32, u16),
    /// (count, status, byte offset): only GETs whose range holds that byte.
    storage_status_at: (u32, u16, u64),
    storage_reset: u32,
    storage_truncate: u32,
    /// (count, bytes sent before the stall)
    storage_stall: (u32, u64),
    corrupt: HashSet<String>,
    api_status: (u32, u16),
    graphql_status: (u32, u16),
    /// (count, fault) for log text GETs.
    log: (u32, Option<LogFault>),
}

/// What one job-log text `GET` with content suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFault {
    /// Send this many bytes (at most all but one), then stall.
    Stall(u64),
    /// Send about half of the body, then reset the connection.
    Reset,
}

/// What one storage `GET` suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StorageFault {
    /// Answer this status with an S3 XML error.
    Status(u16),
    /// Send about half of the body, then abort the connection.
    Reset,
    /// Declare the full `Content-Length`, send about half, then close.
    Truncate,
    /// Send this many bytes (at most all but one), then stall.
    Stall(u64),
}

/// Tokens and builds.
#[derive(Default)]
pub(crate) struct World {
    pub tokens: HashMap<String, Vec<String>>,
    pub builds: BTreeMap<BuildKey, FakeBuild>,
    /// artifact id → the build that holds it.
    pub artifact_index: HashMap<String, BuildKey>,
    /// Tokens refused by the GraphQL endpoint (403).
    pub graphql_denied: HashSet<String>,
}

/// (org, pipeline, number).
pub(crate) type BuildKey = (String, String, u64);

impl World {
    /// Stores a build (replacing one with the same key) and indexes its artifacts.
    pub fn insert_build(&mut self, build: FakeBuild) {
        let key = (
            build.org.clone(),
            build.pipeline.clone(),
            build.build.number,
        );
        self.artifact_index.retain(|_, k| *k != key);
        for a in &build.artifacts {
            self.artifact_index
                .insert(a.artifact.id.clone(), key.clone());
        }
        self.builds.insert(key, build);
    }

    pub fn build(&self, org: &str, pipeline: &str, number: u64) -> Option<&FakeBuild> {
        self.builds
            .get(&(org.to_string(), pipeline.to_string(), number))
    }

    /// The live (not deleted) artifact with this id, and its build.
    pub fn artifact(&self, id: &str) -> Option<(&FakeBuild, &FakeArtifact)> {
        let build = self.builds.get(self.artifact_index.get(id)?)?;
        let a = build.artifacts.iter().find(|a| a.artifact.id == id)?;
        (a.artifact.state.as_deref() != Some("deleted")).then_some((build, a))
    }
}

/// Settings that tests may change while the server runs.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    pub url_ttl: Duration,
    pub api_latency: Duration,
    pub storage_latency: Duration,
    /// Bytes per second per response; 0 = unlimited.
    pub storage_bandwidth: u64,
    pub rate_limit: u64,
    pub rate_window: Duration,
    /// Answer 429 once the window's budget is spent.
    pub enforce_rate_limit: bool,
    pub graphql_mode: GraphqlMode,
    /// Lifetime of GraphQL `downloadURL`s.
    pub graphql_url_ttl: Duration,
}

/// How the GraphQL endpoint (`POST /graphql`) behaves; see [`FakeServer::set_graphql_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphqlMode {
    /// Answers queries.
    #[default]
    Normal,
    /// Answers every request `404 {"message":"Not Found"}`, like an API host without GraphQL
    /// (rate limiting and counting still apply).
    Absent,
    /// Answers every authorised request `200 {"data": null, "errors": [{"message": ..}]}`
    /// (401/403 still come first).
    Errors,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            url_ttl: Duration::from_secs(60),
            api_latency: Duration::ZERO,
            storage_latency: Duration::ZERO,
            storage_bandwidth: 0,
            rate_limit: 200,
            rate_window: Duration::from_secs(60),
            enforce_rate_limit: false,
            graphql_mode: GraphqlMode::Normal,
            graphql_url_ttl: Duration::from_secs(600),
        }
    }
}

/// A fixed rate-limit window.
pub(crate) struct RateWindow {
    start: Instant,
    used: u64,
}

/// What the `RateLimit-*` headers say for one request.
pub(crate) struct RateStatus {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u64,
    pub exceeded: bool,
}

impl Shared {
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    pub fn knobs(&self) -> Knobs {
        self.knobs.lock().unwrap().clone()
    }

    pub fn count(&self, kind: Count) {
        *self.counts.lock().unwrap().entry(kind).or_default() += 1;
    }

    pub fn add_bytes_served(&self, n: u64) {
        self.bytes_served.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_log_bytes(&self, n: u64) {
        self.log_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Uses up the next armed log fault, if any (counted as `log_faults_injected`).
    pub fn take_log_fault(&self) -> Option<LogFault> {
        let fault = {
            let mut f = self.faults.lock().unwrap();
            if f.log.0 == 0 {
                return None;
            }
            f.log.0 -= 1;
            f.log.1
        };
        self.count(Count::LogFaultsInjected);
        fault
    }

    /// Uses up the next armed storage fault for a GET of bytes `[start, end)`, if any (counted).
    pub fn take_storage_fault(&self, start: u64, end: u64) -> Option<StorageFault> {
        let fault = {
            let mut f = self.faults.lock().unwrap();
            let (n, code, at) = f.storage_status_at;
            if n > 0 && (start..end).contains(&at) {
                f.storage_status_at.0 -= 1;
                Some(StorageFault::Status(code))
            } else if f.storage_status.0 > 0 {
                f.storage_status.0 -= 1;
                Some(StorageFault::Status(f.storage_status.1))
            } else if f.storage_reset > 0 {
                f.storage_reset -= 1;
                Some(StorageFault::Reset)
            } else if f.storage_truncate > 0 {
                f.storage_truncate -= 1;
                Some(StorageFault::Truncate)
            } else if f.storage_stall.0 > 0 {
                f.storage_stall.0 -= 1;
                Some(StorageFault::Stall(f.storage_stall.1))
            } else {
                None
            }
        }?;
        self.count(Count::StorageFaultsInjected);
        self.count(match fault {
            StorageFault::Status(_) => Count::StorageFaultStatus,
            StorageFault::Reset => Count::StorageFaultReset,
            StorageFault::Truncate => Count::StorageFaultTruncate,
            StorageFault::Stall(_) => Count::StorageFaultStall,
        });
        Some(fault)
    }

    /// Whether storage serves this artifact corrupted.
    pub fn is_corrupt(&self, artifact_id: &str) -> bool {
        self.faults.lock().unwrap().corrupt.contains(artifact_id)
    }

    /// Uses up the next armed API fault, if any (counted): the status to answer.
    pub fn take_api_fault(&self) -> Option<u16> {
        let status = {
            let mut f = self.faults.lock().unwrap();
            if f.api_status.0 == 0 {
                return None;
            }
            f.api_status.0 -= 1;
            f.api_status.1
        };
        self.count(Count::ApiFaultsInjected);
        Some(status)
    }

    /// Uses up the next armed GraphQL fault, if any (counted): the status to answer.
    pub fn take_graphql_fault(&self) -> Option<u16> {
        let status = {
            let mut f = self.faults.lock().unwrap();
            if f.graphql_status.0 == 0 {
                return None;
            }
            f.graphql_status.0 -= 1;
            f.graphql_status.1
        };
        self.count(Count::GraphqlFaultsInjected);
        Some(status)
    }

    /// Marks one stalled response as alive until the guard drops.
    pub fn stall_guard(self: &Arc<Self>) -> StallGuard {
        self.stalls_active.fetch_add(1, Ordering::SeqCst);
        StallGuard(self.clone())
    }

    /// Spends one request of the current window.
    pub fn take_rate(&self) -> RateStatus {
        let knobs = self.knobs();
        let mut w = self.rate.lock().unwrap();
        let now = Instant::now();
        if now.duration_since(w.start) >= knobs.rate_window {
            w.start = now;
            w.used = 0;
        }
        let exceeded = knobs.enforce_rate_limit && w.used >= knobs.rate_limit;
        if !exceeded {
            w.used += 1;
        }
        let left = knobs
            .rate_window
            .saturating_sub(now.duration_since(w.start));
        RateStatus {
            limit: knobs.rate_limit,
            remaining: knobs.rate_limit.saturating_sub(w.used),
            reset_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
            exceeded,
        }
    }
}

/// Held by a stalled response body; dropping it (client gone, stall over, server down)
/// decrements [`FakeServer::storage_stalls_active`].
pub(crate) struct StallGuard(Arc<Shared>);

impl Drop for StallGuard {
    fn drop(&mut self) {
        self.0.stalls_active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeServer {
    /// Starts API + storage on 127.0.0.1 ephemeral ports, on its own tokio runtime in a
    /// background thread. Returns once both listen.
    pub fn start() -> FakeServer {
        let api = std::net::TcpListener::bind("127.0.0.1:0").expect("bind API port");
        let storage = std::net::TcpListener::bind("127.0.0.1:0").expect("bind storage port");
        for l in [&api, &storage] {
            l.set_nonblocking(true).expect("nonblocking listener");
        }
        let shared = Arc::new(Shared {
            api_addr: api.local_addr().unwrap(),
            storage_addr: storage.local_addr().unwrap(),
            secret: hex::encode(rand::random::<[u8; 16]>()),
            world: Mutex::new(World::default()),
            knobs: Mutex::new(Knobs::default()),
            counts: Mutex::new(BTreeMap::new()),
            bytes_served: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            rate: Mutex::new(RateWindow {
                start: Instant::now(),
                used: 0,
            }),
            faults: Mutex::new(Faults::default()),
            stalls_active: AtomicU64::new(0),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("bkfs-fake".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("fake server runtime");
                rt.block_on(async move {
                    let api = tokio::net::TcpListener::from_std(api).unwrap();
                    let storage = tokio::net::TcpListener::from_std(storage).unwrap();
                    tokio::spawn(serve(api, api::router(s.clone())));
                    tokio::spawn(serve(storage, storage::router(s)));
                    let _ = ready_tx.send(());
                    let _ = rx.await;
                });
                // Dropping the runtime cancels the servers and any open connections.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn fake server thread");
        ready_rx.recv().expect("fake server failed to start");
        FakeServer {
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, without `/v2` or a trailing slash.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.shared.api_addr)
    }

    /// `http://127.0.0.1:PORT/graphql`: the GraphQL endpoint (Buildkite's is
    /// `https://graphql.buildkite.com/v1`; the fake serves it on the API port).
    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.shared.api_addr)
    }

    /// `http://127.0.0.1:PORT` of the storage server.
    pub fn storage_url(&self) -> String {
        format!("http://{}", self.shared.storage_addr)
    }

    /// Registers (or replaces) a token with these scopes.
    pub fn add_token(&self, token: &str, scopes: &[&str]) {
        let scopes = scopes.iter().map(|s| s.to_string()).collect();
        self.shared.world().tokens.insert(token.to_string(), scopes);
    }

    /// Forgets a token: it answers 401 from now on.
    pub fn remove_token(&self, token: &str) {
        self.shared.world().tokens.remove(token);
    }

    /// Whether `token` may use the GraphQL endpoint (default: every token may); without it
    /// GraphQL answers 403. REST is unaffected.
    pub fn set_graphql_access(&self, token: &str, allowed: bool) {
        let mut w = self.shared.world();
        if allowed {
            w.graphql_denied.remove(token);
        } else {
            w.graphql_denied.insert(token.to_string());
        }
    }

    /// Adds a build, replacing one with the same org/pipeline/number.
    pub fn add_build(&self, build: FakeBuild) {
        self.shared.world().insert_build(build);
    }

    /// Changes a stored build in place (jobs, artifacts, state, anything): REST and GraphQL
    /// answer from the result at once, and the artifact index follows added and removed
    /// artifacts (even a changed org/pipeline/number, which moves the build). False, and `f`
    /// not called, when there is no such build.
    pub fn update_build(
        &self,
        org: &str,
        pipeline: &str,
        number: u64,
        f: impl FnOnce(&mut FakeBuild),
    ) -> bool {
        let mut w = self.shared.world();
        let key = (org.to_string(), pipeline.to_string(), number);
        let Some(mut build) = w.builds.remove(&key) else {
            return false;
        };
        w.artifact_index.retain(|_, k| *k != key);
        f(&mut build);
        w.insert_build(build);
        true
    }

    /// Sets a build's state (REST spelling: "running", "passed", ...) with
    /// [`FakeBuild::set_state`]: `finished_at` becomes now for a final state
    /// ([`FINAL_BUILD_STATES`]) and null otherwise. False when there is no such build.
    pub fn set_build_state(&self, org: &str, pipeline: &str, number: u64, state: &str) -> bool {
        self.update_build(org, pipeline, number, |b| b.set_state(state))
    }

    /// Requests of one kind since the start or the last [`FakeServer::reset_counts`].
    pub fn count(&self, kind: Count) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap()
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// All non-zero counts, by name.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let counts = self.shared.counts.lock().unwrap();
        counts.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// Zeroes the counts and the bytes served.
    pub fn reset_counts(&self) {
        self.shared.counts.lock().unwrap().clear();
        self.shared.bytes_served.store(0, Ordering::Relaxed);
        self.shared.log_bytes.store(0, Ordering::Relaxed);
    }

    /// Body bytes the storage server has handed to its connections.
    pub fn storage_bytes_served(&self) -> u64 {
        self.shared.bytes_served.load(Ordering::Relaxed)
    }

    /// Lifetime of the signed URLs the REST download endpoint hands out from now on (default
    /// 60 s).
    pub fn set_url_ttl(&self, ttl: Duration) {
        self.shared.knobs.lock().unwrap().url_ttl = ttl;
    }

    /// Lifetime of the GraphQL `Artifact.downloadURL`s handed out from now on (default 600 s,
    /// Buildkite's "valid for only 10 minutes").
    pub fn set_graphql_url_ttl(&self, ttl: Duration) {
        self.shared.knobs.lock().unwrap().graphql_url_ttl = ttl;
    }

    /// How the GraphQL endpoint behaves from now on (default [`GraphqlMode::Normal`]).
    pub fn set_graphql_mode(&self, mode: GraphqlMode) {
        self.shared.knobs.lock().unwrap().graphql_mode = mode;
    }

    /// Delay before every API response (default 0).
    pub fn set_api_latency(&self, d: Duration) {
        self.shared.knobs.lock().unwrap().api_latency = d;
    }

    /// Delay before the first byte of every storage response (default 0).
    pub fn set_storage_latency(&self, d: Duration) {
        self.shared.knobs.lock().unwrap().storage_latency = d;
    }

    /// Bandwidth cap per storage response in bytes per second; 0 = unlimited (default).
    pub fn set_storage_bandwidth(&self, bytes_per_sec: u64) {
        self.shared.knobs.lock().unwrap().storage_bandwidth = bytes_per_sec;
    }

    /// The API rate limit: `limit` requests per fixed `window` (default 200 per 60 s, not
    /// enforced). With `enforce`, requests over the budget get 429 until the window resets.
    /// Takes effect from a fresh window.
    pub fn set_rate_limit(&self, limit: u64, window: Duration, enforce: bool) {
        {
            let mut k = self.shared.knobs.lock().unwrap();
            k.rate_limit = limit;
            k.rate_window = window;
            k.enforce_rate_limit = enforce;
        }
        let mut r = self.shared.rate.lock().unwrap();
        r.start = Instant::now();
        r.used = 0;
    }

    /// Like [`FakeServer::fail_storage`], for the next `n` `GET`s whose range holds byte
    /// `offset` only: a fault for one read, not for whatever else is in flight (readahead).
    pub fn fail_storage_at(&self, offset: u64, n: u32, status: u16) {
        assert!(axum::http::StatusCode::from_u16(status).is_ok());
        self.shared.faults.lock().unwrap().storage_status_at = (n, status, offset);
    }

    /// The next `n` storage `GET`s that would serve content answer `status` (e.g. 500, 503)
    /// with an S3 XML error body instead. Replaces any count still armed.
    pub fn fail_storage(&self, n: u32, status: u16) {
        assert!(
            axum::http::StatusCode::from_u16(status).is_ok(),
            "not an HTTP status: {status}"
        );
        self.shared.faults.lock().unwrap().storage_status = (n, status);
    }

    /// The next `n` storage `GET`s send their headers and about half of the body (at least one
    /// byte when the body has two or more), then abort the connection.
    pub fn reset_storage(&self, n: u32) {
        self.shared.faults.lock().unwrap().storage_reset = n;
    }

    /// The next `n` storage `GET`s declare the full `Content-Length`, send about half of the
    /// body (at least one byte when it has two or more) and close the connection.
    pub fn truncate_storage(&self, n: u32) {
        self.shared.faults.lock().unwrap().storage_truncate = n;
    }

    /// The next `n` storage `GET`s send `after_bytes` bytes of the body (at most all but the
    /// last byte) and then stall: nothing more is sent until the client disconnects, or for
    /// at most [`STALL_MAX`], after which the connection is aborted.
    pub fn stall_storage(&self, n: u32, after_bytes: u64) {
        self.shared.faults.lock().unwrap().storage_stall = (n, after_bytes);
    }

    /// The next `n` job-log text GETs that carry content send `after_bytes` bytes (at most
    /// all but the last) and then stall until the client disconnects (or [`STALL_MAX`]).
    pub fn stall_logs(&self, n: u32, after_bytes: u64) {
        self.shared.faults.lock().unwrap().log = (n, Some(LogFault::Stall(after_bytes)));
    }

    /// The next `n` job-log text GETs that carry content send about half, then reset.
    pub fn reset_logs(&self, n: u32) {
        self.shared.faults.lock().unwrap().log = (n, Some(LogFault::Reset));
    }

    /// Raw log bytes sent in log bodies so far.
    pub fn log_bytes_served(&self) -> u64 {
        self.shared.log_bytes.load(Ordering::Relaxed)
    }

    /// Sets a job's raw log (the job should exist in that build). False without the build.
    pub fn set_log(&self, org: &str, pipeline: &str, number: u64, job: &str, raw: &[u8]) -> bool {
        let raw = Bytes::copy_from_slice(raw);
        self.update_build(org, pipeline, number, |b| {
            b.logs.insert(job.to_string(), raw);
        })
    }

    /// Appends to a job's raw log, as the agent uploads a chunk of a running job's output.
    pub fn append_log(
        &self,
        org: &str,
        pipeline: &str,
        number: u64,
        job: &str,
        more: &[u8],
    ) -> bool {
        self.update_build(org, pipeline, number, |b| {
            let mut v = b.logs.get(job).map(|l| l.to_vec()).unwrap_or_default();
            v.extend_from_slice(more);
            b.logs.insert(job.to_string(), Bytes::from(v));
        })
    }

    /// Removes a job's log (retention): its endpoints answer 404 from then on.
    pub fn remove_log(&self, org: &str, pipeline: &str, number: u64, job: &str) -> bool {
        self.update_build(org, pipeline, number, |b| {
            b.logs.remove(job);
        })
    }

    /// Sets a job's state, as [`FakeBuild::set_job_state`] does. False without build or job.
    pub fn set_job_state(
        &self,
        org: &str,
        pipeline: &str,
        number: u64,
        job: &str,
        state: &str,
    ) -> bool {
        let mut ok = false;
        self.update_build(org, pipeline, number, |b| ok = b.set_job_state(job, state));
        ok
    }

    /// While `on`, storage serves this artifact with every byte inverted (`b ^ 0xff`, see
    /// [`corrupted`]): same length, same headers, wrong content.
    pub fn corrupt_storage(&self, artifact_id: &str, on: bool) {
        let mut f = self.shared.faults.lock().unwrap();
        if on {
            f.corrupt.insert(artifact_id.to_string());
        } else {
            f.corrupt.remove(artifact_id);
        }
    }

    /// The next `n` REST API requests (any endpoint, `/v2/access-token` included; not
    /// GraphQL, see [`FakeServer::fail_graphql`]) answer `status` (e.g. 500, 502, 503) with
    /// `{"message": <reason phrase>}`. Rate limiting comes first: a request answered 429 does
    /// not use one up.
    pub fn fail_api(&self, n: u32, status: u16) {
        assert!(
            axum::http::StatusCode::from_u16(status).is_ok(),
            "not an HTTP status: {status}"
        );
        self.shared.faults.lock().unwrap().api_status = (n, status);
    }

    /// Storage faults still armed (status, reset, truncate, stall), for checks.
    pub fn storage_faults_pending(&self) -> u32 {
        let f = self.shared.faults.lock().unwrap();
        f.storage_status.0
            + f.storage_status_at.0
            + f.storage_reset
            + f.storage_truncate
            + f.storage_stall.0
    }

    /// The next `n` GraphQL requests answer `status` (e.g. 500, 502, 503) with
    /// `{"errors":[{"message": <reason phrase>}]}`, after the rate limit and before
    /// authentication. Replaces any count still armed.
    pub fn fail_graphql(&self, n: u32, status: u16) {
        assert!(
            axum::http::StatusCode::from_u16(status).is_ok(),
            "not an HTTP status: {status}"
        );
        self.shared.faults.lock().unwrap().graphql_status = (n, status);
    }

    /// GraphQL faults still armed.
    pub fn graphql_faults_pending(&self) -> u32 {
        self.shared.faults.lock().unwrap().graphql_status.0
    }

    /// API faults still armed.
    pub fn api_faults_pending(&self) -> u32 {
        self.shared.faults.lock().unwrap().api_status.0
    }

    /// Stalled storage responses whose task is still alive.
    pub fn storage_stalls_active(&self) -> u64 {
        self.shared.stalls_active.load(Ordering::SeqCst)
    }

    /// Whether the artifact is known and not deleted.
    pub fn artifact_exists(&self, artifact_id: &str) -> bool {
        self.shared.world().artifact(artifact_id).is_some()
    }

    /// Sets an artifact's state (e.g. "expired", "deleted", "finished"); false if unknown.
    pub fn set_artifact_state(&self, artifact_id: &str, state: &str) -> bool {
        let mut w = self.shared.world();
        let Some(key) = w.artifact_index.get(artifact_id).cloned() else {
            return false;
        };
        let Some(build) = w.builds.get_mut(&key) else {
            return false;
        };
        match build
            .artifacts
            .iter_mut()
            .find(|a| a.artifact.id == artifact_id)
        {
            Some(a) => {
                a.artifact.state = Some(state.to_string());
                true
            }
            None => false,
        }
    }
}

/// Longest a stalled storage response stays open before the server aborts it.
pub const STALL_MAX: Duration = Duration::from_secs(300);

/// What storage serves for `content` while [`FakeServer::corrupt_storage`] is on.
pub fn corrupted(content: &[u8]) -> Vec<u8> {
    content.iter().map(|b| b ^ 0xff).collect()
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, router: axum::Router) {
    if let Err(e) = axum::serve(listener, router).await {
        tracing::warn!("fake server stopped: {e}");
    }
}
