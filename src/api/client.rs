//! The Buildkite REST client: bearer auth, JSON decoding with the server's own error messages,
//! pagination (concurrent once `rel="last"` is known), retries with backoff for 5xx and
//! network errors, and waiting out 429s for a bounded time.
//!
//! The token is only ever attached to requests whose origin is the configured API origin or,
//! when one is configured ([`ApiClient::with_graphql`]), the GraphQL endpoint's origin:
//! pagination links pointing anywhere but the API origin are refused, redirects are never
//! followed, and the storage client (`content::storage`) is a separate
//! `reqwest::Client` with no credentials.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use reqwest::{header, Method, StatusCode};
use serde::de::DeserializeOwned;
use url::Url;

use super::link::find_rel;
use super::model::{AccessToken, Artifact, Build, DownloadUrl};
use crate::build_ref::BuildRef;
use crate::http::{backoff, error_chain, reqwest_detail};
use crate::secret::{redact_url, Token};

/// Page size for every list call: the API's maximum.
pub const PER_PAGE: u32 = 100;
/// Pages of a listing fetched at once once the last page is known.
const LIST_CONCURRENCY: usize = 8;
/// Attempts for a request that fails with 5xx or a network error.
const ATTEMPTS: u32 = 4;
/// Longest total wait for a rate limit window before the call fails.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(120);

/// A server's message inside ours, in parentheses: trimmed, without its final period.
pub fn sentence(m: &str) -> &str {
    m.trim().trim_end_matches('.')
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the API token was rejected (401: {}). Check BUILDKITE_API_TOKEN or --token-file.",
        sentence(.message)
    )]
    Unauthorized { message: String },
    #[error("the API refused access (403): {message}")]
    Forbidden { message: String },
    #[error("not found (404): {url}: {message}")]
    NotFound { url: String, message: String },
    #[error("the API kept answering 429 (rate limited) for over {}s: {url}", .waited.as_secs())]
    RateLimited { url: String, waited: Duration },
    #[error("the API answered {status} for {url}: {message}")]
    Status {
        status: u16,
        url: String,
        message: String,
    },
    #[error("cannot reach the API at {url}: {detail}")]
    Network { url: String, detail: String },
    #[error("unexpected response from {url}: {detail}")]
    Malformed { url: String, detail: String },
}

/// A rate-limit budget as the server last described it (`RateLimit-Remaining`,
/// `RateLimit-Limit`, `RateLimit-Reset`), shared by every call of this daemon that draws on
/// it. Each request spends one before it is sent; at zero, callers wait for the window to
/// reset instead of collecting 429s.
///
/// REST and GraphQL each have their own: REST counts requests (200 a minute per
/// organization), GraphQL counts complexity points (20,000 per 5 minutes), so one's headers
/// say nothing about the other. Spending one per GraphQL request is only a floor (a query
/// costs hundreds of points); the 429 path in `ApiClient::send` covers the rest.
#[derive(Debug, Clone)]
pub(super) struct RateBudget {
    /// For logs: "REST" or "GraphQL".
    what: &'static str,
    state: std::sync::Arc<std::sync::Mutex<Budget>>,
}

#[derive(Debug)]
struct Budget {
    remaining: Option<u64>,
    /// `RateLimit-Limit`: what a new window is assumed to hold until a response says.
    limit: Option<u64>,
    reset_at: std::time::Instant,
}

impl RateBudget {
    fn new(what: &'static str) -> RateBudget {
        RateBudget {
            what,
            state: std::sync::Arc::new(std::sync::Mutex::new(Budget {
                remaining: None,
                limit: None,
                reset_at: std::time::Instant::now(),
            })),
        }
    }

    /// Takes one request from the budget, or says how long to wait for the next window.
    fn spend(&self) -> Option<Duration> {
        let mut b = self.state.lock().unwrap();
        let now = std::time::Instant::now();
        if now >= b.reset_at && b.remaining == Some(0) {
            // A new window: assume the last known limit (not "unknown", which would let every
            // waiting caller through at once), minus one in flight to learn the real figure.
            b.remaining = b.limit.map(|l| l.saturating_sub(1).max(1));
            b.reset_at = now + Duration::from_secs(1);
        }
        match b.remaining {
            Some(0) => Some(
                b.reset_at
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(50)),
            ),
            Some(n) => {
                b.remaining = Some(n - 1);
                None
            }
            None => None,
        }
    }

    /// Updates the budget from a response's RateLimit headers.
    fn observe(&self, h: &reqwest::header::HeaderMap, limited: bool) {
        let num = |k: &str| {
            h.get(k)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let remaining = num("ratelimit-remaining");
        let reset = num("ratelimit-reset");
        let mut b = self.state.lock().unwrap();
        if let Some(l) = num("ratelimit-limit") {
            b.limit = Some(l);
        }
        if remaining.is_none() && reset.is_none() && !limited {
            return;
        }
        if let Some(r) = reset {
            b.reset_at = std::time::Instant::now() + Duration::from_secs(r);
        }
        b.remaining = if limited {
            Some(0)
        } else {
            remaining.or(b.remaining)
        };
        crate::stats::STATS.budget(self.what, b.remaining, b.limit);
    }
}

#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Url,
    token: Token,
    /// The GraphQL endpoint, when configured: the only other URL the token may go to.
    graphql: Option<Url>,
    rest_budget: RateBudget,
    graphql_budget: RateBudget,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field(
                "graphql",
                &self.graphql.as_ref().map(|u| redact_url(u.as_str())),
            )
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// `api_url` is the API root without `/v2` (e.g. `https://api.buildkite.com`).
    pub fn new(api_url: &str, token: Token) -> Result<ApiClient, String> {
        let mut base =
            Url::parse(api_url).map_err(|e| format!("invalid API URL {api_url:?}: {e}"))?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("bkfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(ApiClient {
            http,
            base,
            token,
            graphql: None,
            rest_budget: RateBudget::new("REST"),
            graphql_budget: RateBudget::new("GraphQL"),
        })
    }

    /// Adds the GraphQL endpoint (`https://graphql.buildkite.com/v1`) used by
    /// [`ApiClient::graphql_build`]. From then on the token may also be sent to that URL's
    /// origin (only for the GraphQL POST itself: REST pagination links must still stay on the
    /// API origin). GraphQL calls get their own rate budget.
    pub fn with_graphql(mut self, graphql_url: &str) -> Result<ApiClient, String> {
        let shown = redact_url(graphql_url);
        let u =
            Url::parse(graphql_url).map_err(|e| format!("invalid GraphQL URL {shown:?}: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
            return Err(format!("invalid GraphQL URL {shown:?}: not an http(s) URL"));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!(
                "invalid GraphQL URL {shown:?}: must not carry credentials"
            ));
        }
        self.graphql = Some(u);
        Ok(self)
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path.trim_start_matches('/'))
            .expect("relative API path")
    }

    fn build_path(b: &BuildRef) -> String {
        format!(
            "v2/organizations/{}/pipelines/{}/builds/{}",
            b.org, b.pipeline, b.number
        )
    }

    /// Whether `u` is on the REST API's origin (where pagination links must stay).
    fn api_origin(&self, u: &Url) -> bool {
        u.origin() == self.base.origin()
    }

    /// Whether the token may be sent to `u`: the API origin or the GraphQL endpoint's origin.
    fn may_carry_token(&self, u: &Url) -> bool {
        self.api_origin(u)
            || self
                .graphql
                .as_ref()
                .is_some_and(|g| g.origin() == u.origin())
    }

    /// Sends one request with auth (and `body` as JSON, if any), drawing on `budget`,
    /// retrying 5xx/network errors with backoff and waiting out 429s. Returns the response
    /// for any other status (the caller maps it).
    async fn send(
        &self,
        budget: &RateBudget,
        method: Method,
        url: &Url,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, ApiError> {
        self.send_with(budget, method, url, body, &ReqOpts::JSON)
            .await
    }

    /// [`ApiClient::send`] with another `Accept`, a `Range` and a longer time bound.
    async fn send_with(
        &self,
        budget: &RateBudget,
        method: Method,
        url: &Url,
        body: Option<Bytes>,
        opts: &ReqOpts,
    ) -> Result<reqwest::Response, ApiError> {
        assert!(
            self.may_carry_token(url),
            "token would leave the API and GraphQL origins"
        );
        let shown = redact_url(url.as_str());
        let mut attempt = 0;
        let mut waited = Duration::ZERO;
        loop {
            attempt += 1;
            if let Some(wait) = budget.spend() {
                if waited + wait > MAX_RATE_LIMIT_WAIT {
                    return Err(ApiError::RateLimited { url: shown, waited });
                }
                tracing::info!(url = %shown, api = budget.what, wait_ms = wait.as_millis() as u64, "API request budget spent; waiting for the rate-limit window");
                tokio::time::sleep(wait).await;
                waited += wait;
                attempt -= 1;
                continue;
            }
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(self.token.expose())
                .header(header::ACCEPT, opts.accept);
            if let Some(r) = &opts.range {
                req = req.header(header::RANGE, r);
            }
            if let Some(t) = opts.timeout {
                req = req.timeout(t);
            }
            if let Some(b) = &body {
                req = req
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(b.clone());
            }
            crate::stats::STATS.request(budget.what);
            let res = req.send().await;
            if let Ok(r) = &res {
                budget.observe(r.headers(), r.status() == StatusCode::TOO_MANY_REQUESTS);
            }
            match res {
                Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => {
                    let reset = r
                        .headers()
                        .get("ratelimit-reset")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(1)
                        .max(1);
                    let wait = Duration::from_secs(reset);
                    if waited + wait > MAX_RATE_LIMIT_WAIT {
                        return Err(ApiError::RateLimited { url: shown, waited });
                    }
                    tracing::warn!(url = %shown, wait_s = reset, "rate limited by the API; waiting");
                    tokio::time::sleep(wait).await;
                    waited += wait;
                    attempt -= 1; // a rate limit is not a failure
                }
                Ok(r) if r.status().is_server_error() && attempt < ATTEMPTS => {
                    tracing::warn!(url = %shown, status = r.status().as_u16(), attempt, "API server error; retrying");
                    backoff(attempt).await;
                }
                Ok(r) => return Ok(r),
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(url = %shown, attempt, error = %reqwest_detail(e), "API request failed; retrying");
                    backoff(attempt).await;
                }
                Err(e) => {
                    return Err(ApiError::Network {
                        url: shown,
                        detail: reqwest_detail(e),
                    })
                }
            }
        }
    }

    /// A REST request (no body) on the REST budget.
    async fn send_rest(&self, method: Method, url: &Url) -> Result<reqwest::Response, ApiError> {
        let r = self.send(&self.rest_budget, method, url, None).await;
        r.inspect_err(|e| crate::stats::STATS.error(e))
    }

    /// POSTs a JSON body to the GraphQL endpoint on the GraphQL budget, with the same retries
    /// and 429 waits as REST; the response is returned whatever its status. `None` when no
    /// endpoint is configured.
    pub(super) async fn post_graphql(
        &self,
        body: Bytes,
    ) -> Option<Result<reqwest::Response, ApiError>> {
        let url = self.graphql.as_ref()?;
        Some(
            self.send(&self.graphql_budget, Method::POST, url, Some(body))
                .await,
        )
    }

    /// The GraphQL endpoint for logs (no query string).
    pub(super) fn graphql_shown(&self) -> String {
        self.graphql
            .as_ref()
            .map(|u| redact_url(u.as_str()))
            .unwrap_or_default()
    }

    /// Maps a non-success status to an error carrying the API's own message.
    async fn check(r: reqwest::Response) -> Result<reqwest::Response, ApiError> {
        let status = r.status();
        if status.is_success() || status.is_redirection() {
            return Ok(r);
        }
        let url = redact_url(r.url().as_str());
        let body = r.text().await.unwrap_or_default();
        let message = error_message(status, &body);
        Err(match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized { message },
            StatusCode::FORBIDDEN => ApiError::Forbidden { message },
            StatusCode::NOT_FOUND => ApiError::NotFound { url, message },
            _ => ApiError::Status {
                status: status.as_u16(),
                url,
                message,
            },
        })
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        url: &Url,
    ) -> Result<(T, reqwest::header::HeaderMap), ApiError> {
        let r = Self::check(self.send_rest(Method::GET, url).await?).await?;
        let headers = r.headers().clone();
        let shown = redact_url(url.as_str());
        let bytes = r.bytes().await.map_err(|e| ApiError::Network {
            url: shown.clone(),
            detail: reqwest_detail(e),
        })?;
        let v = serde_json::from_slice(&bytes).map_err(|e| ApiError::Malformed {
            url: shown,
            detail: format!("not the expected JSON: {e}"),
        })?;
        Ok((v, headers))
    }

    /// `GET /v2/access-token`: validates the token and returns its scopes.
    pub async fn access_token(&self) -> Result<AccessToken, ApiError> {
        Ok(self.get_json(&self.url("v2/access-token")).await?.0)
    }

    /// The build with its jobs (scope `read_builds`).
    pub async fn get_build(&self, b: &BuildRef) -> Result<Build, ApiError> {
        Ok(self.get_json(&self.url(&Self::build_path(b))).await?.0)
    }

    /// Every artifact of the build, all pages.
    pub async fn list_build_artifacts(&self, b: &BuildRef) -> Result<Vec<Artifact>, ApiError> {
        self.list_artifacts_at(&format!("{}/artifacts", Self::build_path(b)))
            .await
    }

    /// Every artifact of one job, all pages: what to fetch for a job whose GraphQL artifact
    /// list was cut short ([`crate::api::GqlBuild::truncated_jobs`]).
    pub async fn list_job_artifacts(
        &self,
        b: &BuildRef,
        job_id: &str,
    ) -> Result<Vec<Artifact>, ApiError> {
        self.list_artifacts_at(&format!(
            "{}/jobs/{}/artifacts",
            Self::build_path(b),
            enc(job_id)
        ))
        .await
    }

    async fn list_artifacts_at(&self, path: &str) -> Result<Vec<Artifact>, ApiError> {
        let mut first = self.url(path);
        first
            .query_pairs_mut()
            .append_pair("page", "1")
            .append_pair("per_page", &PER_PAGE.to_string());
        self.list_all(first, None).await
    }

    /// `GET /v2/organizations/{org}/pipelines/{pipeline}/builds`: up to `limit` builds, newest
    /// first as the API returns them, optionally only those of one branch or state (the API's
    /// own filter values, e.g. `passed`). Pages are fetched one after another and only until
    /// `limit` builds are in hand. Each build comes with its jobs, as the API sends them.
    pub async fn list_builds(
        &self,
        org: &str,
        pipeline: &str,
        limit: usize,
        branch: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<Build>, ApiError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut first = self.url(&format!(
            "v2/organizations/{}/pipelines/{}/builds",
            enc(org),
            enc(pipeline)
        ));
        {
            let mut q = first.query_pairs_mut();
            q.append_pair("per_page", &limit.min(PER_PAGE as usize).to_string());
            let filters = [("branch", branch), ("state", state)];
            for (k, v) in filters {
                if let Some(v) = v.filter(|v| !v.is_empty()) {
                    q.append_pair(k, v);
                }
            }
        }
        self.list_all(first, Some(limit)).await
    }

    /// Every item of a paginated listing starting at `first`, or only the first `limit`.
    ///
    /// Without a limit, once `rel="last"` names a page number the remaining pages are fetched
    /// concurrently. With one, `rel="next"` is followed page by page and no page is fetched
    /// once `limit` items are in hand.
    async fn list_all<T: DeserializeOwned>(
        &self,
        first: Url,
        limit: Option<usize>,
    ) -> Result<Vec<T>, ApiError> {
        let enough = |n: usize| limit.is_some_and(|l| n >= l);
        let (mut all, headers): (Vec<T>, _) = self.get_json(&first).await?;
        let link = link_header(&headers);
        let stats = &crate::stats::STATS;
        // Fast path: the last page is known and numbered, so fetch the rest at once.
        if limit.is_none() {
            if let Some(pages) = self.remaining_pages(&first, &link) {
                stats.listed_page(all.len(), Some(pages.len() + 1));
                let rest: Vec<Vec<T>> = stream::iter(pages)
                    .map(|u| async move { self.get_json::<Vec<T>>(&u).await.map(|r| r.0) })
                    .buffered(LIST_CONCURRENCY)
                    .inspect(|p| stats.listed_page(p.as_ref().map_or(0, Vec::len), None))
                    .try_collect()
                    .await?;
                all.extend(rest.into_iter().flatten());
                return Ok(all);
            }
        }
        // Otherwise follow rel="next" as opaque URLs (relative ones against the page that
        // carried them), refusing to visit a page twice.
        stats.listed_page(all.len(), None);
        let mut seen = std::collections::HashSet::from([first.clone()]);
        let mut cur = first;
        let mut next = find_rel(&link, "next");
        while let Some(n) = next.filter(|_| !enough(all.len())) {
            let u = self.link_url(&cur, &n)?;
            if !seen.insert(u.clone()) {
                return Err(ApiError::Malformed {
                    url: redact_url(u.as_str()),
                    detail: "pagination loops back to an earlier page".into(),
                });
            }
            let (page, headers): (Vec<T>, _) = self.get_json(&u).await?;
            stats.listed_page(page.len(), None);
            all.extend(page);
            next = find_rel(&link_header(&headers), "next");
            cur = u;
        }
        if let Some(l) = limit {
            all.truncate(l);
        }
        Ok(all)
    }

    /// A pagination link resolved against the page that carried it; it must stay on the API
    /// origin (the token goes with it).
    fn link_url(&self, page: &Url, s: &str) -> Result<Url, ApiError> {
        let u = page.join(s).map_err(|e| ApiError::Malformed {
            url: redact_url(s),
            detail: format!("bad Link URL: {e}"),
        })?;
        if !self.api_origin(&u) {
            return Err(ApiError::Malformed {
                url: redact_url(s),
                detail: "a pagination link points away from the API host; not following it".into(),
            });
        }
        Ok(u)
    }

    /// When `rel="last"` names a page number, the URLs of pages 2..=last (built from the
    /// last link by changing its `page` parameter). None when that cannot be done safely.
    fn remaining_pages(&self, first: &Url, link: &str) -> Option<Vec<Url>> {
        let last = self.link_url(first, &find_rel(link, "last")?).ok()?;
        let n: u64 = last
            .query_pairs()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())?;
        if !(2..=100_000).contains(&n) {
            return None;
        }
        Some(
            (2..=n)
                .map(|p| {
                    let mut u = last.clone();
                    let pairs: Vec<(String, String)> = last
                        .query_pairs()
                        .map(|(k, v)| {
                            if k == "page" {
                                (k.into_owned(), p.to_string())
                            } else {
                                (k.into_owned(), v.into_owned())
                            }
                        })
                        .collect();
                    u.query_pairs_mut().clear().extend_pairs(pairs);
                    u
                })
                .collect(),
        )
    }

    /// The download endpoint: returns the short-lived signed storage URL (`302` + `Location`,
    /// or the `{"url": ...}` body).
    pub async fn download_url(
        &self,
        b: &BuildRef,
        job_id: &str,
        artifact_id: &str,
    ) -> Result<String, ApiError> {
        let u = self.url(&format!(
            "{}/jobs/{}/artifacts/{}/download",
            Self::build_path(b),
            enc(job_id),
            enc(artifact_id)
        ));
        let shown = redact_url(u.as_str());
        let r = Self::check(self.send_rest(Method::GET, &u).await?).await?;
        if let Some(loc) = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
        {
            let abs = u.join(loc).map_err(|e| ApiError::Malformed {
                url: shown.clone(),
                detail: format!("bad Location header: {e}"),
            })?;
            // An absolute Location is kept exactly: `Url` would remove dot segments from its
            // path (an artifact uploaded as `..`), naming another object.
            if Url::parse(loc).is_ok() {
                return Ok(loc.to_string());
            }
            return Ok(abs.to_string());
        }
        let body = r.bytes().await.map_err(|e| ApiError::Network {
            url: shown.clone(),
            detail: reqwest_detail(e),
        })?;
        let d: DownloadUrl = serde_json::from_slice(&body).map_err(|e| ApiError::Malformed {
            url: shown.clone(),
            detail: format!("no Location header and no {{\"url\"}} body: {e}"),
        })?;
        Url::parse(&d.url).map_err(|e| ApiError::Malformed {
            url: shown,
            detail: format!("bad download URL: {e}"),
        })?;
        Ok(d.url)
    }

    fn log_url(b: &BuildRef, job_id: &str) -> String {
        format!("{}/jobs/{}/log", Self::build_path(b), enc(job_id))
    }

    /// `GET .../jobs/{job}/log` as `text/plain`: the whole raw log, or with `suffix` its last
    /// that many bytes (the only kind of range the endpoint takes). An empty log answers its
    /// suffix with 416: that is an empty body here.
    pub async fn job_log(
        &self,
        b: &BuildRef,
        job_id: &str,
        suffix: Option<u64>,
    ) -> Result<LogBody, ApiError> {
        let u = self.url(&Self::log_url(b, job_id));
        let shown = redact_url(u.as_str());
        let opts = ReqOpts {
            accept: "text/plain",
            range: suffix.map(|n| format!("bytes=-{n}")),
            timeout: Some(LOG_BODY_TIMEOUT),
        };
        let r = self
            .send_with(&self.rest_budget, Method::GET, &u, None, &opts)
            .await?;
        if r.status() == StatusCode::RANGE_NOT_SATISFIABLE && suffix.is_some() {
            return Ok(LogBody {
                start: 0,
                total: Some(0),
                response: None,
            });
        }
        let r = Self::check(r).await?;
        let malformed = |detail: String| ApiError::Malformed {
            url: shown.clone(),
            detail,
        };
        let (start, total) = match r.status() {
            StatusCode::OK => (0, r.content_length()),
            StatusCode::PARTIAL_CONTENT => {
                let cr = r
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::http::parse_content_range)
                    .ok_or_else(|| malformed("206 without a valid Content-Range".into()))?;
                (cr.0, cr.2)
            }
            s => return Err(malformed(format!("unexpected status {s} for a log"))),
        };
        Ok(LogBody {
            start,
            total,
            response: Some(r),
        })
    }

    /// `DELETE .../jobs/{job}/log` (scope `write_build_logs`).
    pub async fn delete_job_log(&self, b: &BuildRef, job_id: &str) -> Result<(), ApiError> {
        let u = self.url(&Self::log_url(b, job_id));
        Self::check(self.send_rest(Method::DELETE, &u).await?).await?;
        Ok(())
    }

    /// `DELETE .../jobs/{job}/artifacts/{id}` (scope `write_artifacts`).
    pub async fn delete_artifact(
        &self,
        b: &BuildRef,
        job_id: &str,
        artifact_id: &str,
    ) -> Result<(), ApiError> {
        let u = self.url(&format!(
            "{}/jobs/{}/artifacts/{}",
            Self::build_path(b),
            enc(job_id),
            enc(artifact_id)
        ));
        Self::check(self.send_rest(Method::DELETE, &u).await?).await?;
        Ok(())
    }
}

/// Per-request options of [`ApiClient::send_with`].
struct ReqOpts {
    accept: &'static str,
    range: Option<String>,
    /// Replaces the client's whole-request timeout (a log body can be large; its reader
    /// bounds stalls itself).
    timeout: Option<Duration>,
}

impl ReqOpts {
    const JSON: ReqOpts = ReqOpts {
        accept: "application/json",
        range: None,
        timeout: None,
    };
}

/// How long a job-log body may take as a whole (its reader also bounds each stall).
const LOG_BODY_TIMEOUT: Duration = Duration::from_secs(3600);

/// A job log's raw bytes from `start` to the end (`total` bytes in all, when the answer
/// says) as they arrive; no `response` for an empty log.
pub struct LogBody {
    pub start: u64,
    pub total: Option<u64>,
    pub response: Option<reqwest::Response>,
}

/// The message of an error response: the API's `{"message": ...}`, else GraphQL's
/// `{"errors": [{"message": ...}]}`, else the start of the body, else the status's reason.
pub(super) fn error_message(status: StatusCode, body: &str) -> String {
    let json = serde_json::from_str::<serde_json::Value>(body).unwrap_or_default();
    let text = json["message"]
        .as_str()
        .or_else(|| json["errors"][0]["message"].as_str())
        .unwrap_or(body)
        .trim();
    if text.is_empty() {
        return status.canonical_reason().unwrap_or("").to_string();
    }
    text.chars().take(200).collect()
}

/// Every `Link` header line joined into one value (several lines mean the same as one line
/// with commas, RFC 9110).
fn link_header(h: &reqwest::header::HeaderMap) -> String {
    h.get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Percent-encodes an id for use as one path segment (ids come from the network).
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
