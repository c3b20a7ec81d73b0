//! A whole build (jobs, artifacts and their signed download URLs) through Buildkite's GraphQL
//! API, in as few requests as possible: one per [`JOBS_PER_PAGE`] jobs.
//!
//! Why: over REST every artifact read costs one request to the download endpoint for its
//! signed URL (200 requests a minute per organization, URLs valid ~60 s); one GraphQL query
//! returns the `downloadURL` of up to [`ARTIFACTS_PER_JOB`] artifacts per job, valid ~10
//! minutes on Buildkite-managed storage. GraphQL access is optional for a token, so every
//! failure here is a [`GraphqlError`] that callers answer by falling back to REST.
//!
//! The result is converted into the crate's REST model types ([`Build`], [`Job`],
//! [`Artifact`]) so that the rest of bkfs (tree naming) works unchanged. Fields REST has and
//! this query does not fetch stay `None`: `Artifact::url`, `Artifact::download_url` (the REST
//! download *endpoint*, not a signed URL), `Job::artifacts_url`, and for block, trigger and
//! wait jobs everything but id, kind, name and state.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::client::{error_message, ApiClient, ApiError};
use super::model::{Artifact, Build, Job};
use crate::build_ref::BuildRef;
use crate::http::reqwest_detail;

/// Jobs per query. Buildkite refuses a query whose *requested* complexity exceeds 50,000
/// before running it; each job node costs about `ARTIFACTS_PER_JOB` + 6 points (one per
/// artifact node, plus the job, its step, retry source, artifact connection, page info and
/// edges), so 50 jobs ask for ~25,300 and 100 would be over the limit. Half the limit leaves
/// room for Buildkite re-pricing a field. (The *actual* cost, charged against the
/// organization's 20,000 points per 5 minutes, counts only what is returned.)
pub const JOBS_PER_PAGE: u32 = 50;

/// Artifacts per job. The schema gives `JobTypeCommand.artifacts` `first`/`last` but no
/// cursor, so this is the most one query can return for a job; jobs with more are reported
/// in [`GqlBuild::truncated_jobs`] for the caller to list over REST. 500 is also the page
/// size Buildkite documents as the usual maximum.
pub const ARTIFACTS_PER_JOB: u32 = 500;

/// Pages of jobs followed before giving up (10,000 jobs), against a server that never says
/// `hasNextPage: false`.
const MAX_JOB_PAGES: usize = 200;

/// The query, written against `buildkite-schema.graphql`. Jobs come newest first (the
/// schema's default `order: RECENTLY_CREATED`); only command jobs have artifacts.
pub const QUERY: &str = "\
query BkfsBuild($slug: ID!, $jobs: Int!, $after: String, $artifacts: Int!) {
  build(slug: $slug) {
    uuid number state url createdAt startedAt finishedAt branch commit message
    jobs(first: $jobs, after: $after) {
      count pageInfo { hasNextPage endCursor }
      edges { node { __typename
        ... on JobTypeCommand { uuid label state url createdAt startedAt finishedAt
          parallelGroupIndex parallelGroupTotal retried step { key }
          retrySource { ... on JobTypeCommand { uuid } }
          artifacts(first: $artifacts) { count pageInfo { hasNextPage }
            edges { node { uuid path size sha1sum mimeType state downloadURL } } } }
        ... on JobTypeBlock { uuid label state }
        ... on JobTypeTrigger { uuid label state }
        ... on JobTypeWait { uuid label state } } } } } }
";

/// A build as GraphQL returned it, in REST model types.
#[derive(Debug, Clone)]
pub struct GqlBuild {
    /// The build with its jobs in creation order.
    pub build: Build,
    /// Every artifact returned, jobs in build order, each job's as the API listed them.
    pub artifacts: Vec<Artifact>,
    /// `(artifact id, signed download URL)` for the artifacts that had a usable URL. Their
    /// lifetime: [`url_lifetime`], counted from [`GqlBuild::fetched_at`].
    pub urls: Vec<(String, String)>,
    /// Command jobs whose artifact list was cut (more than [`ARTIFACTS_PER_JOB`], or no list
    /// at all): list them with [`ApiClient::list_job_artifacts`] and replace what
    /// `artifacts` has for them.
    pub truncated_jobs: Vec<String>,
    /// When the first request was sent: the earliest moment any of `urls` can have been
    /// signed, so lifetimes counted from it are on the safe side.
    pub fetched_at: Instant,
}

/// Why the GraphQL fetch failed. Every variant means "use REST instead"; the messages are
/// made for one log line and never hold the token or a signed URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphqlError {
    /// 401/403: the token lacks GraphQL access (a per-token setting) or is invalid.
    #[error("the GraphQL API refused the token ({status}): {message}")]
    Refused { status: u16, message: String },
    /// No endpoint configured, another non-success status after retries, a network failure,
    /// or a body that is not JSON. `lasting` when it will not change by asking again (no
    /// endpoint, 404/405, an answer that is not JSON), not for network failures and 5xx.
    #[error("the GraphQL API is unavailable: {detail}")]
    Unavailable { detail: String, lasting: bool },
    /// A 200 whose `errors` array is not empty (e.g. a query over the complexity limit).
    #[error("the GraphQL API answered with errors: {}", .messages.join("; "))]
    Errors { messages: Vec<String> },
    /// `data.build` is null: no such build, or the token cannot see it.
    #[error("the GraphQL API found no such build (or the token cannot see it)")]
    BuildNotFound,
    /// The complexity budget is spent for longer than bkfs waits
    /// ([`super::client::MAX_RATE_LIMIT_WAIT`]).
    #[error(
        "the GraphQL API's rate limit (complexity points) is spent for longer than bkfs waits"
    )]
    RateLimited,
    /// JSON, but not the shape the query asks for.
    #[error("unexpected GraphQL response: {detail}")]
    Malformed { detail: String },
}

impl GraphqlError {
    /// Whether asking again will fail the same way (GraphQL is then best left alone for the
    /// mount): a refusal, errors in the answer, a malformed answer, no endpoint. Network
    /// failures, 5xx, rate limits and a missing build may pass.
    pub fn is_lasting(&self) -> bool {
        match self {
            GraphqlError::Refused { .. }
            | GraphqlError::Errors { .. }
            | GraphqlError::Malformed { .. } => true,
            GraphqlError::Unavailable { lasting, .. } => *lasting,
            GraphqlError::BuildNotFound | GraphqlError::RateLimited => false,
        }
    }
}

impl ApiClient {
    /// The build `b` with its jobs, artifacts and signed download URLs: one request per
    /// [`JOBS_PER_PAGE`] jobs (following `pageInfo.endCursor`), on the GraphQL rate budget
    /// with the same retries and 429 waits as REST. Needs [`ApiClient::with_graphql`].
    pub async fn graphql_build(&self, b: &BuildRef) -> Result<GqlBuild, GraphqlError> {
        let fetched_at = Instant::now();
        let slug = format!("{}/{}/{}", b.org, b.pipeline, b.number);
        let mut build: Option<GBuild> = None;
        let mut nodes: Vec<GJob> = Vec::new();
        let mut cursors = HashSet::new();
        let mut after: Option<String> = None;
        for page in 0.. {
            if page == MAX_JOB_PAGES {
                return Err(malformed(format!(
                    "more than {MAX_JOB_PAGES} pages of jobs"
                )));
            }
            let mut got = self.graphql_page(&slug, after.as_deref()).await?;
            let mut jobs = got
                .jobs
                .take()
                .ok_or_else(|| malformed("the build has no jobs connection"))?;
            build.get_or_insert(got);
            let (count, info) = (jobs.count, jobs.page_info.take());
            let returned = jobs.edges.as_ref().map_or(0, Vec::len) as u64;
            nodes.extend(jobs.nodes());
            let Some(info) = info else {
                if count.is_some_and(|c| c > returned) {
                    return Err(malformed("jobs are cut short but there is no pageInfo"));
                }
                break;
            };
            if info.has_next_page != Some(true) {
                break;
            }
            let cursor = info
                .end_cursor
                .ok_or_else(|| malformed("hasNextPage without an endCursor"))?;
            if !cursors.insert(cursor.clone()) {
                return Err(malformed("the jobs cursor repeats"));
            }
            after = Some(cursor);
        }
        let build = build.expect("at least one page");
        convert(build, nodes, b.number, fetched_at)
    }

    /// One page of jobs: `data.build`, its `jobs` connection holding the page.
    async fn graphql_page(&self, slug: &str, after: Option<&str>) -> Result<GBuild, GraphqlError> {
        let body = json!({
            "query": QUERY,
            "variables": {
                "slug": slug,
                "jobs": JOBS_PER_PAGE,
                "after": after,
                "artifacts": ARTIFACTS_PER_JOB,
            },
        });
        let shown = self.graphql_shown();
        let r = self
            .post_graphql(body.to_string().into())
            .await
            .ok_or_else(|| GraphqlError::Unavailable {
                detail: "no GraphQL endpoint is configured".into(),
                lasting: true,
            })?
            .map_err(|e| match e {
                ApiError::RateLimited { .. } => GraphqlError::RateLimited,
                ApiError::Network { detail, .. } => GraphqlError::Unavailable {
                    detail: format!("cannot reach {shown}: {detail}"),
                    lasting: false,
                },
                e => GraphqlError::Unavailable {
                    detail: e.to_string(),
                    lasting: false,
                },
            })?;
        let status = r.status();
        let bytes = r.bytes().await.map_err(|e| GraphqlError::Unavailable {
            detail: format!("reading the answer of {shown}: {}", reqwest_detail(e)),
            lasting: false,
        })?;
        let text = String::from_utf8_lossy(&bytes);
        match status.as_u16() {
            200..=299 => {}
            401 | 403 => {
                return Err(GraphqlError::Refused {
                    status: status.as_u16(),
                    message: error_message(status, &text),
                })
            }
            s => {
                return Err(GraphqlError::Unavailable {
                    detail: format!("{shown} answered {s}: {}", error_message(status, &text)),
                    // A 4xx other than a timeout or a rate limit will not change by asking again.
                    lasting: (400..500).contains(&s) && s != 408 && s != 429,
                });
            }
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| GraphqlError::Unavailable {
            detail: format!("{shown} answered {status} with a body that is not JSON: {e}"),
            lasting: true,
        })?;
        parse_page(v)
    }
}

/// `data.build` of one response, or the error it reports.
fn parse_page(mut v: Value) -> Result<GBuild, GraphqlError> {
    if let Some(errors) = v.get("errors").and_then(Value::as_array) {
        if !errors.is_empty() {
            let messages = errors
                .iter()
                .take(3)
                .map(|e| {
                    let m = match e.get("message").and_then(Value::as_str) {
                        Some(m) => m.to_string(),
                        None => e.to_string(),
                    };
                    m.chars().take(200).collect()
                })
                .collect();
            return Err(GraphqlError::Errors { messages });
        }
    }
    let data = match v.get_mut("data") {
        Some(d) if d.is_object() => d,
        _ => return Err(malformed("no data in the response")),
    };
    match data.get_mut("build").map(Value::take) {
        None => Err(malformed("no data.build in the response")),
        Some(Value::Null) => Err(GraphqlError::BuildNotFound),
        Some(b) => serde_json::from_value(b).map_err(|e| malformed(format!("data.build: {e}"))),
    }
}

fn malformed(detail: impl Into<String>) -> GraphqlError {
    GraphqlError::Malformed {
        detail: detail.into(),
    }
}

/// Builds the REST-shaped result from the first page's build and every page's job nodes
/// (newest first, as GraphQL lists them).
fn convert(
    g: GBuild,
    nodes: Vec<GJob>,
    number: u64,
    fetched_at: Instant,
) -> Result<GqlBuild, GraphqlError> {
    let id = g
        .uuid
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed("the build has no uuid"))?;
    // Oldest first. Offset-like cursors repeat a job when new ones are created between pages
    // (they go to the front): keep one of each.
    let mut seen = HashSet::new();
    let jobs: Vec<GJob> = nodes
        .into_iter()
        .rev()
        .filter(|j| j.uuid.as_deref().is_some_and(|u| !u.is_empty()))
        .filter(|j| seen.insert(j.uuid.clone()))
        .collect();
    let jobs = sort_by_creation(jobs);

    // Job B with retrySource A means A was retried in B.
    let retried_in: HashMap<String, String> = jobs
        .iter()
        .filter_map(|j| Some((j.retry_source.as_ref()?.uuid.clone()?, j.uuid.clone()?)))
        .collect();

    let mut out = GqlBuild {
        build: Build {
            id,
            number: g.number.unwrap_or(number),
            state: lower(g.state),
            web_url: g.url,
            created_at: g.created_at,
            started_at: g.started_at,
            finished_at: g.finished_at,
            message: g.message,
            branch: g.branch,
            commit: g.commit,
            jobs: Vec::with_capacity(jobs.len()),
        },
        artifacts: Vec::new(),
        urls: Vec::new(),
        truncated_jobs: Vec::new(),
        fetched_at,
    };
    let mut artifact_ids = HashSet::new();
    for j in jobs {
        let job_id = j.uuid.clone().unwrap_or_default();
        let kind = match j.typename.as_deref() {
            Some("JobTypeCommand") => Some("script"),
            Some("JobTypeBlock") => Some("manual"),
            Some("JobTypeTrigger") => Some("trigger"),
            Some("JobTypeWait") => Some("waiter"),
            _ => None,
        };
        if kind == Some("script") {
            match &j.artifacts {
                Some(c) if !c.is_cut() => {}
                _ => out.truncated_jobs.push(job_id.clone()),
            }
        }
        for a in j.artifacts.into_iter().flat_map(GConnection::nodes) {
            let Some(aid) = a.uuid.filter(|s| !s.is_empty()) else {
                continue;
            };
            if !artifact_ids.insert(aid.clone()) {
                continue;
            }
            if let Some(u) = a.download_url.filter(|u| usable_url(u)) {
                out.urls.push((aid.clone(), u));
            }
            let (dirname, filename) = match a.path.as_deref() {
                Some(p) => {
                    let (d, f) = super::model::split_path(p);
                    (Some(d), Some(f))
                }
                None => (None, None),
            };
            out.artifacts.push(Artifact {
                id: aid,
                job_id: Some(job_id.clone()),
                state: lower(a.state),
                path: a.path,
                dirname,
                filename,
                mime_type: a.mime_type,
                file_size: a.size,
                sha1sum: a.sha1sum,
                ..Artifact::default()
            });
        }
        out.build.jobs.push(Job {
            retried_in_job_id: retried_in.get(&job_id).cloned(),
            id: job_id,
            kind: kind.map(str::to_string),
            name: j.label,
            step_key: j.step.and_then(|s| s.key),
            state: lower(j.state),
            parallel_group_index: j.parallel_group_index,
            parallel_group_total: j.parallel_group_total,
            retried: j.retried,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            web_url: j.url,
            artifacts_url: None,
        });
    }
    Ok(out)
}

/// Stable-sorts the jobs that have a `createdAt` among themselves, leaving the others (block,
/// trigger and wait jobs have none in the schema) in their places.
fn sort_by_creation(jobs: Vec<GJob>) -> Vec<GJob> {
    let keys: Vec<_> = jobs
        .iter()
        .map(|j| j.created_at.as_deref().and_then(time_key))
        .collect();
    let slots: Vec<usize> = (0..jobs.len()).filter(|&i| keys[i].is_some()).collect();
    let mut sorted = slots.clone();
    sorted.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    // from[i]: the index of the job that ends up at position i.
    let mut from: Vec<usize> = (0..jobs.len()).collect();
    for (&slot, &src) in slots.iter().zip(&sorted) {
        from[slot] = src;
    }
    let mut jobs: Vec<Option<GJob>> = jobs.into_iter().map(Some).collect();
    from.into_iter()
        .map(|i| jobs[i].take().expect("a permutation"))
        .collect()
}

/// A sort key for a UTC ISO-8601 time (`2024-05-01T12:00:00Z`, optionally with a fraction),
/// comparable across different fraction lengths. None for anything else.
fn time_key(s: &str) -> Option<(String, String)> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix("+00:00"))?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let ok = secs.len() == 19
        && secs.as_bytes()[10] == b'T'
        && frac.len() <= 9
        && frac.bytes().all(|c| c.is_ascii_digit());
    ok.then(|| (secs.to_string(), format!("{frac:0<9}")))
}

fn lower(s: Option<String>) -> Option<String> {
    s.map(|s| s.to_ascii_lowercase())
}

fn usable_url(u: &str) -> bool {
    url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// How long a signed storage URL stays valid, read from its query string:
/// - `X-Amz-Expires=<seconds>` (AWS SigV4) or `X-Goog-Expires=<seconds>` (GCS V4): relative
///   to the signing time, which is never known better than "just now", so returned as is;
/// - `Expires=<unix seconds>` (S3 SigV2, CloudFront, GCS V2): absolute, so `expires - now`,
///   zero when already past (an expired URL is known to be useless, not of unknown life);
/// - anything else: None (unknown: the caller picks its own default).
pub fn url_lifetime(url: &str, now_unix: u64) -> Option<Duration> {
    let u = url::Url::parse(url).ok()?;
    let param = |name: &str| {
        u.query_pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().parse::<u64>().ok())
    };
    if let Some(rel) = param("X-Amz-Expires").or_else(|| param("X-Goog-Expires")) {
        return rel.map(Duration::from_secs);
    }
    let expires = param("Expires")??;
    Some(Duration::from_secs(expires.saturating_sub(now_unix)))
}

// ---- Wire types: tolerant of nulls, missing and unknown fields, and of a scalar of the wrong
// type (read as absent); a connection of the wrong shape is an error.

/// A scalar that is absent, null or of another type reads as `None`.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GBuild {
    #[serde(default, deserialize_with = "lenient")]
    uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    number: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    state: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    url: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    created_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    started_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    finished_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    branch: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    commit: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    message: Option<String>,
    #[serde(default)]
    jobs: Option<GConnection<GJob>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "N: Deserialize<'de>"))]
struct GConnection<N> {
    #[serde(default, deserialize_with = "lenient")]
    count: Option<u64>,
    #[serde(default)]
    page_info: Option<GPageInfo>,
    #[serde(default)]
    edges: Option<Vec<Option<GEdge<N>>>>,
}

impl<N> GConnection<N> {
    /// The nodes, null edges and null nodes skipped.
    fn nodes(self) -> impl Iterator<Item = N> {
        self.edges
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.node)
    }

    /// Whether more exist than were returned.
    fn is_cut(&self) -> bool {
        let returned = self.edges.as_ref().map_or(0, Vec::len) as u64;
        self.count.is_some_and(|c| c > returned)
            || self.page_info.as_ref().and_then(|p| p.has_next_page) == Some(true)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(bound(deserialize = "N: Deserialize<'de>"))]
struct GEdge<N> {
    #[serde(default)]
    node: Option<N>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GPageInfo {
    #[serde(default, deserialize_with = "lenient")]
    has_next_page: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    end_cursor: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GJob {
    #[serde(rename = "__typename", default, deserialize_with = "lenient")]
    typename: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    label: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    state: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    url: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    created_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    started_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    finished_at: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    parallel_group_index: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    parallel_group_total: Option<u32>,
    #[serde(default, deserialize_with = "lenient")]
    retried: Option<bool>,
    #[serde(default, deserialize_with = "lenient")]
    step: Option<GStep>,
    #[serde(default, deserialize_with = "lenient")]
    retry_source: Option<GRef>,
    #[serde(default)]
    artifacts: Option<GConnection<GArtifact>>,
}

#[derive(Debug, Clone, Deserialize)]
struct GStep {
    #[serde(default, deserialize_with = "lenient")]
    key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct GRef {
    #[serde(default, deserialize_with = "lenient")]
    uuid: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GArtifact {
    #[serde(default, deserialize_with = "lenient")]
    uuid: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    path: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    size: Option<u64>,
    #[serde(default, deserialize_with = "lenient")]
    sha1sum: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    mime_type: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    state: Option<String>,
    #[serde(rename = "downloadURL", default, deserialize_with = "lenient")]
    download_url: Option<String>,
}

#[cfg(test)]
#[path = "graphql_tests.rs"]
mod tests;
