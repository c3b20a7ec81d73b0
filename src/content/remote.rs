//! The small interface between the filesystem and the network: get a signed URL, fetch a
//! byte range through it, delete an artifact. [`HttpRemote`] is the real one (REST API +
//! storage); tests of the reader and the filesystem core drive their own.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use super::storage::{StorageClient, StorageError};
use crate::api::{ApiClient, ApiError};
use crate::build_ref::BuildRef;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Remote: Send + Sync + 'static {
    /// A fresh signed storage URL for the artifact (one API call).
    fn signed_url<'a>(
        &'a self,
        job_id: &'a str,
        artifact_id: &'a str,
    ) -> BoxFuture<'a, Result<String, ApiError>>;

    /// Bytes `[start, end)` of an object of `total` bytes, through a signed URL.
    fn fetch_range<'a>(
        &'a self,
        url: &'a str,
        start: u64,
        end: u64,
        total: u64,
    ) -> BoxFuture<'a, Result<Bytes, StorageError>>;

    fn delete<'a>(
        &'a self,
        job_id: &'a str,
        artifact_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

pub struct HttpRemote {
    pub api: ApiClient,
    pub build: BuildRef,
    pub storage: StorageClient,
}

impl Remote for HttpRemote {
    fn signed_url<'a>(
        &'a self,
        job_id: &'a str,
        artifact_id: &'a str,
    ) -> BoxFuture<'a, Result<String, ApiError>> {
        Box::pin(self.api.download_url(&self.build, job_id, artifact_id))
    }

    fn fetch_range<'a>(
        &'a self,
        url: &'a str,
        start: u64,
        end: u64,
        total: u64,
    ) -> BoxFuture<'a, Result<Bytes, StorageError>> {
        Box::pin(self.storage.fetch_range(url, start, end, total))
    }

    fn delete<'a>(
        &'a self,
        job_id: &'a str,
        artifact_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(self.api.delete_artifact(&self.build, job_id, artifact_id))
    }
}
