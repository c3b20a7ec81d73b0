//! The small interface between the filesystem and the network: get a signed URL, fetch a
//! byte range through it, delete an artifact. [`crate::source::Source`] is the real one
//! (GraphQL batches, the REST API and storage); tests of the reader drive their own.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::storage::StorageError;
use crate::api::ApiError;
use crate::tree::FileMeta;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A signed storage URL and how long it may still be used (its lifetime minus a margin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    pub url: String,
    pub good_for: std::time::Duration,
}

pub trait Remote: Send + Sync + 'static {
    /// A signed storage URL for the artifact. `refused` is the URL storage just refused as
    /// expired, if any: the remote must not hand it out again.
    fn signed_url<'a>(
        &'a self,
        meta: &'a FileMeta,
        refused: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SignedUrl, ApiError>>;

    /// Bytes `[start, end)` of an object of `total` bytes, through a signed URL.
    fn fetch_range<'a>(
        &'a self,
        url: &'a str,
        start: u64,
        end: u64,
        total: u64,
    ) -> BoxFuture<'a, Result<Bytes, StorageError>>;

    /// Deletes the artifact through the API.
    fn delete<'a>(&'a self, meta: &'a FileMeta) -> BoxFuture<'a, Result<(), ApiError>>;

    /// The mount's signed-URL cache when the remote fills it itself (in batches); the reader
    /// then uses that one, so a mount has exactly one.
    fn url_cache(&self) -> Option<std::sync::Arc<super::urls::UrlCache>> {
        None
    }
}
