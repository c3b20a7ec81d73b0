//! Where builds, artifact lists and signed URLs come from: Buildkite's GraphQL API when it
//! answers, its REST API otherwise. [`Source`] is the real [`Remote`] of a mount.
//!
//! # Listing a build
//! One GraphQL query returns a build's jobs and every artifact with its `downloadURL`
//! (paginated over jobs): a 1,000-artifact build costs one request instead of ten REST pages,
//! and no per-artifact download call afterwards. The result is converted into the REST
//! model, so the tree and its naming rules do not care where it came from. Jobs whose
//! artifact list GraphQL cut short (it has no cursor for a job's artifacts) are completed
//! through the REST job-artifacts endpoint. If GraphQL is refused (401/403: the token has no
//! GraphQL access), unavailable (404, network, not JSON) or answers with errors, bkfs logs it
//! once, turns GraphQL off for the rest of the mount, and uses REST: build + artifact pages.
//!
//! # Signed URLs
//! URLs from a GraphQL listing (valid about 10 minutes) are kept per build in a *batch*,
//! each until shortly before it expires (its own `X-Amz-Expires`/`Expires` when present).
//! A read takes its URL from the batch; when the batch has aged out, one new GraphQL query
//! refreshes all of them. The REST download endpoint (one call per artifact, URLs valid about
//! 60 s) is the fallback: for an artifact missing from the batch, for a batch URL that
//! storage refused as expired, and whenever GraphQL is off.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

use crate::api::graphql::{url_lifetime, GqlBuild, GraphqlError};
use crate::api::model::Build;
use crate::api::{ApiClient, ApiError};
use crate::backend::{
    self, BackendError, BoxFuture, Lister, Listing, LogSource, LogStream, Remote, SignedUrl,
    UrlCache,
};
use crate::build_ref::PipelineRef;
use crate::content::storage::{StorageClient, StorageError};
use crate::secret::redact_url;
use crate::tree::FileMeta;

/// How long a REST download URL lives when the URL itself does not say (API-NOTES: ~60 s).
const REST_URL_LIFETIME: Duration = Duration::from_secs(60);
/// How long a GraphQL `downloadURL` lives when the URL itself does not say (~10 minutes).
const GRAPHQL_URL_LIFETIME: Duration = Duration::from_secs(600);

/// How long GraphQL is left alone after a failure that may pass.
const GRAPHQL_PAUSE: Duration = Duration::from_secs(60);
/// How long to wait before fetching a new batch when the last one came with URLs that were
/// useless at once (with a skewed clock they may look expired; REST serves meanwhile).
const MIN_BATCH_INTERVAL: Duration = Duration::from_secs(30);

/// The part of a URL's lifetime bkfs uses: 5/6 of it, so a URL is never handed to a read
/// that could outlive it (60 s → 50 s, 10 min → 8 min 20 s).
fn usable(lifetime: Duration) -> Duration {
    lifetime * 5 / 6
}

/// Requests a listing of `n` items took at `per_page` items a page (an empty one took one):
/// `PER_PAGE` for REST lists, `JOBS_PER_PAGE` for GraphQL's jobs.
fn pages(n: usize, per_page: u32) -> usize {
    n.div_ceil(per_page as usize).max(1)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// The API client's and the storage client's errors, as the seam tells them apart.

impl From<ApiError> for BackendError {
    fn from(e: ApiError) -> Self {
        let shown = e.to_string();
        match e {
            ApiError::NotFound { message, .. } => BackendError::NotFound { message, shown },
            ApiError::Unauthorized { message } => BackendError::Denied {
                status: 401,
                message,
                shown,
            },
            ApiError::Forbidden { message } => BackendError::Denied {
                status: 403,
                message,
                shown,
            },
            ApiError::Network { .. } => BackendError::Unreachable(shown),
            _ => BackendError::Failed(shown),
        }
    }
}

impl From<StorageError> for BackendError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Expired(_) => BackendError::Expired(e.to_string()),
            StorageError::NotFound => BackendError::not_found(e.to_string()),
            StorageError::Partial { got, reason } => BackendError::Partial { got, reason },
            StorageError::Transient(_) | StorageError::Invalid(_) => {
                BackendError::Failed(e.to_string())
            }
        }
    }
}

/// When a build's batch of GraphQL URLs should be fetched again (its shortest-lived URL).
/// The URLs themselves live in the mount's one [`UrlCache`].
struct Batch {
    refresh_at: Instant,
}

/// Builds whose batch times are remembered (older ones are forgotten: at worst their next
/// read fetches a new batch).
const MAX_BATCHES: usize = 256;

pub struct SourceConfig {
    /// Use GraphQL (the API client must have a GraphQL endpoint).
    pub graphql: bool,
    /// The token can read builds (REST `read_builds`): job names come from the build.
    pub can_read_builds: bool,
}

pub struct Source {
    api: ApiClient,
    pipeline: PipelineRef,
    storage: StorageClient,
    /// GraphQL is configured and has not failed for good.
    graphql_on: AtomicBool,
    /// After a failure that may pass (network, 5xx, rate limit): no GraphQL before then.
    graphql_pause: Mutex<Option<Instant>>,
    can_read_builds: bool,
    /// Per build number: when its batch of GraphQL URLs ages out (bounded).
    batches: Mutex<HashMap<u64, Batch>>,
    /// The mount's signed URLs (GraphQL batches and REST alike), shared with the reader.
    urls: Arc<UrlCache>,
    /// Per build number: serializes batch refreshes (single-flight).
    refreshing: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Source {
    pub fn new(
        api: ApiClient,
        pipeline: PipelineRef,
        storage: StorageClient,
        cfg: SourceConfig,
    ) -> Source {
        Source {
            api,
            pipeline,
            storage,
            graphql_on: AtomicBool::new(cfg.graphql),
            graphql_pause: Mutex::new(None),
            can_read_builds: cfg.can_read_builds,
            batches: Mutex::new(HashMap::new()),
            urls: Arc::new(UrlCache::default()),
            refreshing: Mutex::new(HashMap::new()),
        }
    }

    pub fn graphql_enabled(&self) -> bool {
        self.graphql_on.load(Ordering::Relaxed)
            && self
                .graphql_pause
                .lock()
                .unwrap()
                .is_none_or(|t| Instant::now() >= t)
    }

    /// Lists build `number`: through GraphQL when possible, else REST.
    pub async fn list_build(&self, number: u64) -> Result<Listing, ApiError> {
        if self.graphql_enabled() {
            match self.api.graphql_build(&self.pipeline.build(number)).await {
                Ok(g) => return self.complete_graphql(number, g).await,
                Err(e) => self.graphql_failed(&e),
            }
        }
        self.list_build_rest(number).await
    }

    /// Logs a GraphQL failure. A refusal (401/403), errors in the answer, an answer that is
    /// not GraphQL, or no endpoint (404/405) turn GraphQL off for the mount; a failure that
    /// may pass (network, 5xx, rate limit) pauses it for [`GRAPHQL_PAUSE`]; a missing build
    /// concerns that request only.
    fn graphql_failed(&self, e: &GraphqlError) {
        let permanent = e.is_lasting();
        if permanent {
            if self.graphql_on.swap(false, Ordering::Relaxed) {
                tracing::warn!(error = %e, "GraphQL is not usable; using the REST API from now on (one API request per artifact read)");
            }
        } else if matches!(e, GraphqlError::BuildNotFound) {
            tracing::info!(error = %e, "GraphQL did not find the build; using the REST API for it");
        } else {
            *self.graphql_pause.lock().unwrap() = Some(Instant::now() + GRAPHQL_PAUSE);
            tracing::warn!(error = %e, pause_s = GRAPHQL_PAUSE.as_secs(), "GraphQL failed; using the REST API for a while");
        }
    }

    /// A GraphQL listing: keeps its URLs as the build's batch, and completes through REST the
    /// jobs whose artifact list GraphQL cut short (it has no cursor over a job's artifacts).
    /// If completing a job through REST fails, the whole build is listed through REST.
    async fn complete_graphql(&self, number: u64, g: GqlBuild) -> Result<Listing, ApiError> {
        self.store_batch(number, &g.urls, g.fetched_at);
        let b = self.pipeline.build(number);
        let mut requests = pages(g.build.jobs.len(), crate::api::graphql::JOBS_PER_PAGE);
        let mut artifacts = g.artifacts;
        for job in &g.truncated_jobs {
            let all = match self.api.list_job_artifacts(&b, job).await {
                Ok(all) => all,
                Err(e) => {
                    tracing::warn!(job = %job, error = %e, "cannot complete a job through REST; listing the whole build through REST");
                    return self.list_build_rest(number).await;
                }
            };
            tracing::info!(job = %job, artifacts = all.len(), "job has more artifacts than one GraphQL query returns; listed it through REST");
            requests += pages(all.len(), crate::api::client::PER_PAGE);
            artifacts.retain(|a| a.job_id.as_deref() != Some(job.as_str()));
            artifacts.extend(all);
        }
        Ok(Listing {
            build: Some(g.build),
            artifacts,
            via: "graphql",
            requests,
        })
    }

    async fn list_build_rest(&self, number: u64) -> Result<Listing, ApiError> {
        let b = self.pipeline.build(number);
        let build = if self.can_read_builds {
            match self.api.get_build(&b).await {
                Ok(b) => Some(b),
                Err(ApiError::Forbidden { message }) => {
                    tracing::warn!(%message, "cannot read the build; job directories are named by job id");
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        let artifacts = self.api.list_build_artifacts(&b).await?;
        Ok(Listing {
            requests: usize::from(build.is_some())
                + pages(artifacts.len(), crate::api::client::PER_PAGE),
            build,
            artifacts,
            via: "rest",
        })
    }

    /// Keeps a listing's signed URLs as the build's batch.
    fn store_batch(&self, number: u64, urls: &[(String, String)], fetched_at: Instant) {
        let now = now_unix();
        let mut refresh_at = fetched_at + usable(GRAPHQL_URL_LIFETIME);
        let mut n = 0;
        for (id, u) in urls {
            let life = url_lifetime(u, now).unwrap_or(GRAPHQL_URL_LIFETIME);
            let until = fetched_at + usable(life);
            refresh_at = refresh_at.min(until);
            self.urls.put(id, u.clone(), until);
            n += 1;
        }
        // URLs that are useless at once (a skewed clock, a tiny lifetime) must not make every
        // read fetch a new batch: then wait MIN_BATCH_INTERVAL (REST serves meanwhile).
        let now = Instant::now();
        let refresh_at = if refresh_at > now + Duration::from_secs(2) {
            refresh_at
        } else {
            now + MIN_BATCH_INTERVAL
        };
        tracing::debug!(build = number, urls = n, "stored a batch of signed URLs");
        let mut b = self.batches.lock().unwrap();
        if b.len() >= MAX_BATCHES && !b.contains_key(&number) {
            // Forget the batch that ages out first.
            if let Some(k) = b.iter().min_by_key(|(_, v)| v.refresh_at).map(|(k, _)| *k) {
                b.remove(&k);
            }
        }
        b.insert(number, Batch { refresh_at });
    }

    /// The cached URL of an artifact, if one is good now.
    fn batch_url(&self, meta: &FileMeta, refused: Option<&str>) -> Option<SignedUrl> {
        self.urls.get(&meta.artifact_id, refused)
    }

    /// Whether the build's batch has aged out (or there is none yet).
    fn batch_stale(&self, number: u64) -> bool {
        self.batches
            .lock()
            .unwrap()
            .get(&number)
            .is_none_or(|b| Instant::now() >= b.refresh_at)
    }

    /// Fetches a new batch of URLs for a build whose batch aged out (single-flight: callers
    /// that wait find the fresh batch). The build's lock leaves the map with its last user,
    /// so the map holds only builds being refreshed right now.
    async fn refresh_batch(&self, number: u64) {
        let lock = self
            .refreshing
            .lock()
            .unwrap()
            .entry(number)
            .or_default()
            .clone();
        {
            let _g = lock.lock().await;
            self.refresh_batch_locked(number).await;
        }
        let mut m = self.refreshing.lock().unwrap();
        // Clones are taken under the map's lock: 2 (the map's and this one) means no waiter.
        if m.get(&number).is_some_and(|l| Arc::strong_count(l) <= 2) {
            m.remove(&number);
        }
    }

    /// How many builds have a refresh in flight or waiting (for tests).
    pub fn refreshing_builds(&self) -> usize {
        self.refreshing.lock().unwrap().len()
    }

    async fn refresh_batch_locked(&self, number: u64) {
        if !self.batch_stale(number) || !self.graphql_enabled() {
            return;
        }
        tracing::debug!(
            build = number,
            "batch of signed URLs aged out; fetching a new one"
        );
        match self.api.graphql_build(&self.pipeline.build(number)).await {
            Ok(g) => self.store_batch(number, &g.urls, g.fetched_at),
            Err(e) => {
                self.graphql_failed(&e);
                // Keep the URLs still good; try GraphQL for this build again later.
                let later = Instant::now() + usable(REST_URL_LIFETIME);
                self.batches
                    .lock()
                    .unwrap()
                    .entry(number)
                    .and_modify(|b| b.refresh_at = later)
                    .or_insert(Batch { refresh_at: later });
            }
        }
    }

    async fn signed_url_inner(
        &self,
        meta: &FileMeta,
        refused: Option<&str>,
    ) -> Result<SignedUrl, ApiError> {
        if let Some(u) = self.batch_url(meta, refused) {
            return Ok(u);
        }
        if refused.is_none() && self.graphql_enabled() && self.batch_stale(meta.build_number) {
            self.refresh_batch(meta.build_number).await;
            if let Some(u) = self.batch_url(meta, refused) {
                return Ok(u);
            }
        }
        let url = self
            .api
            .download_url(
                &self.pipeline.build(meta.build_number),
                &meta.job_id,
                &meta.artifact_id,
            )
            .await?;
        let life = url_lifetime(&url, now_unix()).unwrap_or(REST_URL_LIFETIME);
        tracing::trace!(artifact = %meta.artifact_id, url = %redact_url(&url), "signed URL from the REST download endpoint");
        Ok(SignedUrl {
            url,
            good_for: usable(life),
        })
    }

    /// The pipeline's newest builds (at most `limit`), optionally of one branch or state.
    pub async fn list_builds(
        &self,
        limit: usize,
        branch: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<Build>, ApiError> {
        self.api
            .list_builds(
                &self.pipeline.org,
                &self.pipeline.pipeline,
                limit,
                branch,
                state,
            )
            .await
    }

    /// One build (with its jobs), by number.
    pub async fn get_build(&self, number: u64) -> Result<Build, ApiError> {
        self.api.get_build(&self.pipeline.build(number)).await
    }
}

impl Remote for Source {
    fn signed_url<'a>(
        &'a self,
        meta: &'a FileMeta,
        refused: Option<&'a str>,
    ) -> BoxFuture<'a, backend::Result<SignedUrl>> {
        Box::pin(async move { Ok(self.signed_url_inner(meta, refused).await?) })
    }

    fn fetch_range<'a>(
        &'a self,
        url: &'a str,
        start: u64,
        end: u64,
        total: u64,
    ) -> BoxFuture<'a, backend::Result<Bytes>> {
        Box::pin(async move { Ok(self.storage.fetch_range(url, start, end, total).await?) })
    }

    fn url_cache(&self) -> Option<Arc<UrlCache>> {
        Some(self.urls.clone())
    }

    fn delete<'a>(&'a self, meta: &'a FileMeta) -> BoxFuture<'a, backend::Result<()>> {
        Box::pin(async move {
            self.api
                .delete_artifact(
                    &self.pipeline.build(meta.build_number),
                    &meta.job_id,
                    &meta.artifact_id,
                )
                .await?;
            self.urls.remove(&meta.artifact_id);
            Ok(())
        })
    }
}

impl LogSource for Source {
    fn log_fetch<'a>(
        &'a self,
        build: u64,
        job: &'a str,
        suffix: Option<u64>,
    ) -> BoxFuture<'a, backend::Result<LogStream>> {
        Box::pin(async move {
            let b = self
                .api
                .job_log(&self.pipeline.build(build), job, suffix)
                .await?;
            let body = match b.response {
                Some(r) => r
                    .bytes_stream()
                    .map_err(crate::http::reqwest_detail)
                    .boxed(),
                None => futures_util::stream::empty().boxed(),
            };
            Ok(LogStream {
                start: b.start,
                total: b.total,
                body,
            })
        })
    }

    fn log_delete<'a>(&'a self, build: u64, job: &'a str) -> BoxFuture<'a, backend::Result<()>> {
        Box::pin(async move {
            Ok(self
                .api
                .delete_job_log(&self.pipeline.build(build), job)
                .await?)
        })
    }
}

impl Lister for Source {
    fn list_build(&self, number: u64) -> BoxFuture<'_, backend::Result<Listing>> {
        Box::pin(async move { Ok(Source::list_build(self, number).await?) })
    }

    fn get_build(&self, number: u64) -> BoxFuture<'_, backend::Result<Build>> {
        Box::pin(async move { Ok(Source::get_build(self, number).await?) })
    }

    fn list_builds<'a>(
        &'a self,
        limit: usize,
        branch: Option<&'a str>,
        state: Option<&'a str>,
    ) -> BoxFuture<'a, backend::Result<Vec<Build>>> {
        Box::pin(async move { Ok(Source::list_builds(self, limit, branch, state).await?) })
    }
}
