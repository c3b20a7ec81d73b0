//! The one seam between the filesystem and the outside world: what the filesystem, the
//! content reader and the log store need from Buildkite and from the kernel, as traits, with
//! the types they exchange and one error type.
//!
//! - [`Lister`]: builds and their listings.
//! - [`Remote`]: signed URLs, ranged reads through them, delete of an artifact.
//! - [`LogSource`]: raw job logs (whole or a suffix), delete of a log.
//! - [`KernelCache`]: tell the kernel to forget what it cached.
//!
//! [`crate::source::Source`] implements the first three over the network (GraphQL, REST and
//! storage); [`crate::fuse::KernelNotifier`] the last. Tests drive the doubles in
//! `backend::testing`. Nothing here does I/O; the wire errors of the API client and the
//! storage client become a [`BackendError`] at the implementation, so the consumers match
//! on what they can act on (gone, refused, expired URL, cut body, anything else).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::tree::{FileMeta, Ino};

#[cfg(test)]
pub mod testing;
pub mod urls;

pub use urls::UrlCache;

/// The data the seam carries: builds, jobs and artifacts as the API describes them (plain
/// serde types, no I/O). The filesystem takes them from here.
pub use crate::api::model::{Artifact, Build, Job};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What went wrong outside, as far as the filesystem can act on it. The `String`s are the
/// whole one-line message of the underlying error, for logs and `EIO` explanations.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// 404: the build, artifact, object or log is gone. `message` is the server's own words.
    #[error("{shown}")]
    NotFound { message: String, shown: String },
    /// 401 (token rejected) or 403 (not allowed) from the API. `message` is the server's.
    #[error("{shown}")]
    Denied {
        status: u16,
        message: String,
        shown: String,
    },
    /// The API could not be reached at all (DNS, connection refused, TLS).
    #[error("{0}")]
    Unreachable(String),
    /// Storage refused a signed URL (403, usually expired): get a fresh one.
    #[error("{0}")]
    Expired(String),
    /// A body stopped early (reset, truncation, stall): `got` is what arrived, in order,
    /// from the requested start; the caller resumes after it.
    #[error("{reason}")]
    Partial { got: Bytes, reason: String },
    /// Anything else: 5xx, 429 for too long, timeouts, malformed answers. Retrying
    /// later may help.
    #[error("{0}")]
    Failed(String),
}

impl BackendError {
    /// A 404 without words of the server's own.
    pub fn not_found(shown: impl Into<String>) -> BackendError {
        BackendError::NotFound {
            message: String::new(),
            shown: shown.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, BackendError>;

/// A build's artifacts (and its jobs when known), however they were fetched.
#[derive(Debug, Clone)]
pub struct Listing {
    /// `None` when the token cannot read the build (REST without `read_builds`).
    pub build: Option<Build>,
    pub artifacts: Vec<Artifact>,
    /// "graphql" or "rest", for logs.
    pub via: &'static str,
    /// About how many API requests the listing took (pages), so that refreshes can be
    /// spaced by their cost.
    pub requests: usize,
}

/// Lists builds for the filesystem.
pub trait Lister: Send + Sync + 'static {
    fn list_build(&self, number: u64) -> BoxFuture<'_, Result<Listing>>;
    fn get_build(&self, number: u64) -> BoxFuture<'_, Result<Build>>;
    /// The pipeline's newest builds (at most `limit`), optionally of one branch or state.
    fn list_builds<'a>(
        &'a self,
        limit: usize,
        branch: Option<&'a str>,
        state: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Build>>>;
}

/// A signed storage URL and how long it may still be used (its lifetime minus a margin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    pub url: String,
    pub good_for: std::time::Duration,
}

/// Artifact contents: signed URLs, ranged reads through them, delete.
pub trait Remote: Send + Sync + 'static {
    /// A signed storage URL for the artifact. `refused` is the URL storage just refused as
    /// expired, if any: the remote must not hand it out again.
    fn signed_url<'a>(
        &'a self,
        meta: &'a FileMeta,
        refused: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SignedUrl>>;

    /// Bytes `[start, end)` of an object of `total` bytes, through a signed URL.
    fn fetch_range<'a>(
        &'a self,
        url: &'a str,
        start: u64,
        end: u64,
        total: u64,
    ) -> BoxFuture<'a, Result<Bytes>>;

    /// Deletes the artifact through the API.
    fn delete<'a>(&'a self, meta: &'a FileMeta) -> BoxFuture<'a, Result<()>>;

    /// The mount's signed-URL cache when the remote fills it itself (in batches); the reader
    /// then uses that one, so a mount has exactly one.
    fn url_cache(&self) -> Option<Arc<UrlCache>> {
        None
    }
}

/// A raw log's bytes from `start` on, as they arrive; `total` is the raw size when known.
pub struct LogStream {
    pub start: u64,
    pub total: Option<u64>,
    pub body: BoxStream<'static, std::result::Result<Bytes, String>>,
}

/// Where raw job logs come from.
pub trait LogSource: Send + Sync + 'static {
    /// The whole raw log (`suffix` None), or its last `suffix` bytes.
    fn log_fetch<'a>(
        &'a self,
        build: u64,
        job: &'a str,
        suffix: Option<u64>,
    ) -> BoxFuture<'a, Result<LogStream>>;
    /// Deletes a job's log.
    fn log_delete<'a>(&'a self, build: u64, job: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// Tells the kernel to forget what it cached (fuser's notifier in a real mount).
pub trait KernelCache: Send + Sync + 'static {
    fn inval_entry(&self, parent: Ino, name: &str);
    fn inval_inode(&self, ino: Ino);
}
