//! Ranged GETs with bounded retries through the mount's [`UrlCache`]: a transfer cut short
//! keeps what arrived and resumes from the next byte; an expired URL is refreshed without
//! counting as a failure; a whole-file fetch is checked against `sha1sum` (refetched once,
//! then refused).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sha1::{Digest, Sha1};
use tokio::sync::Semaphore;

use super::ReadError;
use crate::backend::{BackendError, Remote, UrlCache};
use crate::secret::redact_url;
use crate::tree::FileMeta;

/// Signed URL refreshes allowed within one fetch before giving up.
const MAX_REFRESHES: u32 = 4;

pub struct Fetcher {
    pub remote: Arc<dyn Remote>,
    pub urls: Arc<UrlCache>,
    /// Storage requests in flight across all files.
    permits: Semaphore,
    read_timeout: Duration,
    url_max_age: Duration,
}

pub fn is_sha1(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

impl Fetcher {
    pub fn new(
        remote: Arc<dyn Remote>,
        max_inflight: usize,
        read_timeout: Duration,
        url_max_age: Duration,
    ) -> Fetcher {
        // One URL cache per mount: the remote's (which fills it in batches) when it has one.
        let urls = remote.url_cache().unwrap_or_default();
        Fetcher {
            remote,
            urls,
            permits: Semaphore::new(max_inflight.max(1)),
            read_timeout,
            url_max_age,
        }
    }

    /// A signed URL for the artifact: the cached one while good and not the one that just
    /// failed (`stale`), else a fresh one. One API call per artifact at a time.
    pub async fn url_for(&self, meta: &FileMeta, stale: Option<&str>) -> Result<String, ReadError> {
        let id = meta.artifact_id.as_str();
        if let Some(u) = self.urls.get(id, stale) {
            return Ok(u.url);
        }
        let check = || self.urls.get(id, stale).map(|u| u.url);
        self.urls
            .single_flight(id, check, || async {
                let s = self
                    .remote
                    .signed_url(meta, stale)
                    .await
                    .map_err(|e| match e {
                        BackendError::NotFound { .. } => ReadError::NotFound,
                        e => ReadError::Api(e),
                    })?;
                tracing::debug!(artifact = %meta.artifact_id, url = %redact_url(&s.url), good_for_s = s.good_for.as_secs(), "signed URL");
                let until = Instant::now() + s.good_for.min(self.url_max_age);
                self.urls.put(id, s.url.clone(), until);
                Ok(s.url)
            })
            .await
    }

    /// Fetches `[start, end)` with bounded retries.
    pub async fn fetch_range(
        &self,
        meta: &FileMeta,
        start: u64,
        end: u64,
    ) -> Result<Bytes, ReadError> {
        let whole = start == 0 && end == meta.size;
        let mut began = Instant::now();
        // The deadline counts storage time only: it starts once the first signed URL is in
        // hand, so waiting for the API's rate-limit window does not use up the read budget.
        let mut deadline: Option<Instant> = None;
        let mut failures = 0u32;
        let mut refreshes = 0u32;
        let mut corrupt = 0u32;
        let mut stale: Option<String> = None;
        let mut buf = BytesMut::new();
        loop {
            let permit = self.permits.acquire().await.expect("semaphore");
            let url = self.url_for(meta, stale.as_deref()).await?;
            let deadline = *deadline.get_or_insert_with(|| {
                began = Instant::now();
                began + self.read_timeout
            });
            let pos = start + buf.len() as u64;
            let res = tokio::time::timeout_at(
                deadline.into(),
                self.remote.fetch_range(&url, pos, end, meta.size),
            )
            .await
            .unwrap_or_else(|_| Err(BackendError::Failed("read timed out".into())));
            drop(permit);
            let err = match res {
                Ok(b) => {
                    crate::stats::STATS
                        .bytes_fetched
                        .fetch_add(b.len() as u64, Relaxed);
                    // The common case (nothing resumed) keeps the response's own buffer.
                    let b = if buf.is_empty() {
                        b
                    } else {
                        buf.extend_from_slice(&b);
                        std::mem::take(&mut buf).freeze()
                    };
                    if whole {
                        if let Some(expected) = meta.sha1sum.as_deref().filter(|s| is_sha1(s)) {
                            let got = hex::encode(Sha1::digest(&b));
                            if !got.eq_ignore_ascii_case(expected) {
                                corrupt += 1;
                                tracing::warn!(artifact = %meta.artifact_id, path = %meta.original_path, %expected, %got, "content does not match sha1sum");
                                if corrupt >= 2 {
                                    return Err(ReadError::Corrupt {
                                        expected: expected.to_string(),
                                        got,
                                    });
                                }
                                continue;
                            }
                        }
                    }
                    return Ok(b);
                }
                Err(BackendError::NotFound { .. }) => return Err(ReadError::NotFound),
                Err(BackendError::Expired(m)) if refreshes < MAX_REFRESHES => {
                    refreshes += 1;
                    tracing::debug!(artifact = %meta.artifact_id, reason = %m, "signed URL refused; refreshing");
                    stale = Some(url);
                    continue;
                }
                Err(BackendError::Partial { got, reason }) => {
                    crate::stats::STATS
                        .bytes_fetched
                        .fetch_add(got.len() as u64, Relaxed);
                    buf.extend_from_slice(&got);
                    BackendError::Failed(format!("{reason} after {} bytes", got.len()))
                }
                Err(e) => e,
            };
            failures += 1;
            if failures >= 6 || Instant::now() >= deadline {
                return Err(ReadError::GaveUp {
                    attempts: failures,
                    secs: began.elapsed().as_secs(),
                    last: err.to_string(),
                });
            }
            tracing::warn!(artifact = %meta.artifact_id, path = %meta.original_path, attempt = failures, error = %err, "storage request failed; retrying");
            crate::http::backoff(failures).await;
        }
    }
}
