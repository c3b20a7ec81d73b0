//! Counters of what a mount is doing, read by `bkfs status` through the control socket
//! ([`crate::control`]) and by the start-up progress line.
//!
//! One process serves one mount, so the counters are one process-wide [`STATS`] of atomics:
//! the hooks in the API client, the reader and the listing code are one line each and need no
//! plumbing through constructors. Nothing here holds a URL with credentials or the token.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// The daemon's counters (see the module docs).
pub static STATS: Stats = Stats::new();

/// `-1` in a budget field: no response has said yet.
const UNKNOWN: i64 = -1;

#[derive(Debug)]
pub struct Stats {
    pub rest_requests: AtomicU64,
    pub graphql_requests: AtomicU64,
    /// `RateLimit-Remaining` / `RateLimit-Limit` as last seen (REST, then GraphQL).
    rest_remaining: AtomicI64,
    rest_limit: AtomicI64,
    graphql_remaining: AtomicI64,
    graphql_limit: AtomicI64,
    /// Blocks a read found in memory, on disk or already on its way.
    pub cache_hits: AtomicU64,
    /// Blocks a read (or its prefetch) had to fetch from storage.
    pub cache_misses: AtomicU64,
    /// Bytes received from storage.
    pub bytes_fetched: AtomicU64,
    /// Bytes returned to `read` calls.
    pub bytes_served: AtomicU64,
    pub reads_in_flight: AtomicI64,
    /// Listing pages fetched, items on them, and the page count once `rel="last"` says.
    pub list_pages: AtomicU64,
    pub list_items: AtomicU64,
    pub list_total_pages: AtomicU64,
    /// Job-log fetches done (whole logs and growth checks), raw bytes they brought, and
    /// fetches running now.
    pub log_fetches: AtomicU64,
    pub log_bytes: AtomicU64,
    pub logs_fetching: AtomicI64,
    /// Archive indexes built (not read back from the cache), and builds running now.
    pub archives_indexed: AtomicU64,
    pub archives_indexing: AtomicI64,
    last_error: Mutex<Option<(u64, String)>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    pub const fn new() -> Stats {
        Stats {
            rest_requests: AtomicU64::new(0),
            graphql_requests: AtomicU64::new(0),
            rest_remaining: AtomicI64::new(UNKNOWN),
            rest_limit: AtomicI64::new(UNKNOWN),
            graphql_remaining: AtomicI64::new(UNKNOWN),
            graphql_limit: AtomicI64::new(UNKNOWN),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
            reads_in_flight: AtomicI64::new(0),
            list_pages: AtomicU64::new(0),
            list_items: AtomicU64::new(0),
            list_total_pages: AtomicU64::new(0),
            log_fetches: AtomicU64::new(0),
            log_bytes: AtomicU64::new(0),
            logs_fetching: AtomicI64::new(0),
            archives_indexed: AtomicU64::new(0),
            archives_indexing: AtomicI64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// One API request sent (`api` is "REST" or "GraphQL").
    pub fn request(&self, api: &str) {
        match api {
            "GraphQL" => &self.graphql_requests,
            _ => &self.rest_requests,
        }
        .fetch_add(1, Relaxed);
    }

    /// The rate-limit budget as the API last described it.
    pub fn budget(&self, api: &str, remaining: Option<u64>, limit: Option<u64>) {
        let (r, l) = match api {
            "GraphQL" => (&self.graphql_remaining, &self.graphql_limit),
            _ => (&self.rest_remaining, &self.rest_limit),
        };
        let v = |x: Option<u64>| x.map_or(UNKNOWN, |n| n.min(i64::MAX as u64) as i64);
        r.store(v(remaining), Relaxed);
        l.store(v(limit), Relaxed);
    }

    /// One listing page with `items` entries; `total_pages` when `rel="last"` told.
    pub fn listed_page(&self, items: usize, total_pages: Option<usize>) {
        if let Some(t) = total_pages {
            self.list_total_pages.store(t as u64, Relaxed);
        }
        self.list_pages.fetch_add(1, Relaxed);
        self.list_items.fetch_add(items as u64, Relaxed);
    }

    pub fn error(&self, msg: impl std::fmt::Display) {
        let now = crate::stats::unix_now();
        *self.last_error.lock().unwrap() = Some((now, msg.to_string()));
    }

    /// Counts a job-log fetch in flight until the guard drops (then as done).
    pub fn log_fetch_started(&'static self) -> LogFetch {
        self.logs_fetching.fetch_add(1, Relaxed);
        LogFetch(self)
    }

    /// Counts an archive index being built until the guard drops (then as built).
    pub fn archive_index_started(&'static self) -> ArchiveIndexing {
        self.archives_indexing.fetch_add(1, Relaxed);
        ArchiveIndexing(self)
    }

    /// Counts a read in flight until the guard drops.
    pub fn read_started(&'static self) -> InFlight {
        self.reads_in_flight.fetch_add(1, Relaxed);
        InFlight(self)
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> Snapshot {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let b = |a: &AtomicI64| u64::try_from(a.load(Relaxed)).ok();
        Snapshot {
            rest_requests: g(&self.rest_requests),
            graphql_requests: g(&self.graphql_requests),
            rest_remaining: b(&self.rest_remaining),
            rest_limit: b(&self.rest_limit),
            graphql_remaining: b(&self.graphql_remaining),
            graphql_limit: b(&self.graphql_limit),
            cache_hits: g(&self.cache_hits),
            cache_misses: g(&self.cache_misses),
            bytes_fetched: g(&self.bytes_fetched),
            bytes_served: g(&self.bytes_served),
            reads_in_flight: self.reads_in_flight.load(Relaxed).max(0) as u64,
            list_pages: g(&self.list_pages),
            list_items: g(&self.list_items),
            list_total_pages: Some(g(&self.list_total_pages)).filter(|&n| n > 0),
            log_fetches: g(&self.log_fetches),
            log_bytes: g(&self.log_bytes),
            logs_fetching: self.logs_fetching.load(Relaxed).max(0) as u64,
            archives_indexed: g(&self.archives_indexed),
            archives_indexing: self.archives_indexing.load(Relaxed).max(0) as u64,
            last_error: self.last_error.lock().unwrap().clone(),
        }
    }
}

/// See [`Stats::log_fetch_started`].
pub struct LogFetch(&'static Stats);

impl Drop for LogFetch {
    fn drop(&mut self) {
        self.0.logs_fetching.fetch_sub(1, Relaxed);
        self.0.log_fetches.fetch_add(1, Relaxed);
    }
}

/// See [`Stats::archive_index_started`].
pub struct ArchiveIndexing(&'static Stats);

impl Drop for ArchiveIndexing {
    fn drop(&mut self) {
        self.0.archives_indexing.fetch_sub(1, Relaxed);
        self.0.archives_indexed.fetch_add(1, Relaxed);
    }
}

/// See [`Stats::read_started`].
pub struct InFlight(&'static Stats);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.reads_in_flight.fetch_sub(1, Relaxed);
    }
}

/// The counters at one moment (what the control socket sends, inside
/// [`crate::control::Status`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub rest_requests: u64,
    pub graphql_requests: u64,
    pub rest_remaining: Option<u64>,
    pub rest_limit: Option<u64>,
    pub graphql_remaining: Option<u64>,
    pub graphql_limit: Option<u64>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub bytes_fetched: u64,
    pub bytes_served: u64,
    pub reads_in_flight: u64,
    pub list_pages: u64,
    pub list_items: u64,
    pub list_total_pages: Option<u64>,
    #[serde(default)]
    pub log_fetches: u64,
    #[serde(default)]
    pub log_bytes: u64,
    #[serde(default)]
    pub logs_fetching: u64,
    #[serde(default)]
    pub archives_indexed: u64,
    #[serde(default)]
    pub archives_indexing: u64,
    /// (unix seconds, message) of the last failure.
    pub last_error: Option<(u64, String)>,
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_budgets() {
        let s = Stats::new();
        s.request("REST");
        s.request("REST");
        s.request("GraphQL");
        s.budget("REST", Some(198), Some(200));
        s.listed_page(100, Some(3));
        s.listed_page(100, None);
        s.error("boom");
        let n = s.snapshot();
        assert_eq!((n.rest_requests, n.graphql_requests), (2, 1));
        assert_eq!((n.rest_remaining, n.rest_limit), (Some(198), Some(200)));
        assert_eq!((n.graphql_remaining, n.graphql_limit), (None, None));
        assert_eq!(
            (n.list_pages, n.list_items, n.list_total_pages),
            (2, 200, Some(3))
        );
        assert_eq!(n.last_error.unwrap().1, "boom");
    }

    #[test]
    fn in_flight_guard() {
        static S: Stats = Stats::new();
        let a = S.read_started();
        let b = S.read_started();
        assert_eq!(S.snapshot().reads_in_flight, 2);
        drop(a);
        drop(b);
        assert_eq!(S.snapshot().reads_in_flight, 0);
    }
}
