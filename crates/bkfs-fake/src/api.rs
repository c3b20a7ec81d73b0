//! The fake REST API under `/v2`: auth and scopes, builds (one, or a pipeline's list),
//! artifact lists with pagination, get, download (302 to a signed storage URL) and delete.
//! The same port serves `POST /graphql` ([`super::graphql_api`]), outside this layer.
//!
//! Pagination: `page` is 1-based (default 1) and `per_page` defaults to 30, larger values are
//! clamped to 100; a value that is not a positive integer is treated as absent (the default).
//! The `Link` header (absolute URLs on the Host the request came in on, other query
//! parameters kept) has `first`/`prev` after page 1 and `next`/`last` before the last page,
//! and is absent when everything fits on one page. A page past the end is `[]`.
//!
//! The builds list (`GET .../pipelines/{pipeline}/builds`, scope `read_builds`) is newest
//! first (number descending), each build as the get-build endpoint renders it, filtered by
//! `branch` (exact; several with `branch[]=`) and `state` (one, or several with
//! `state[]=`), paginated as above; a pipeline the fake holds no build of is 404.

use crate::Count;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use serde::Serialize;

use super::world::FakeBuild;
use super::{storage, Shared, World};
use crate::model::{AccessToken, Artifact, Build, DownloadUrl, ErrorBody};

const MSG_401: &str = "Authentication required. Please supply a valid API Access Token: https://buildkite.com/docs/apis/rest-api#authentication";
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;

type S = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let builds = "/v2/organizations/:org/pipelines/:pipeline/builds";
    let build = "/v2/organizations/:org/pipelines/:pipeline/builds/:number";
    let rest = Router::new()
        .route("/v2/access-token", get(access_token))
        .route(builds, get(list_builds))
        .route(build, get(get_build))
        .route(&format!("{build}/artifacts"), get(list_build_artifacts))
        .route(
            &format!("{build}/jobs/:job/artifacts"),
            get(list_job_artifacts),
        )
        .route(
            &format!("{build}/jobs/:job/artifacts/:id"),
            get(get_artifact).delete(delete_artifact),
        )
        .route(
            &format!("{build}/jobs/:job/artifacts/:id/download"),
            get(download),
        )
        .route(
            &format!("{build}/jobs/:job/log"),
            get(super::logs::get_log)
                .head(super::logs::head_log)
                .delete(super::logs::delete_log),
        )
        .route(
            &format!("{build}/jobs/:job/log.txt"),
            get(super::logs::get_log_txt).head(super::logs::head_log),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(shared.clone(), api_layer));
    // GraphQL does its own counting, latency and rate limiting: it is not `api`.
    Router::new()
        .route("/graphql", any(super::graphql_api::handler))
        .merge(rest)
        .with_state(shared)
}

/// Counting, latency, rate-limit headers and injected faults around every API request.
async fn api_layer(State(s): S, req: Request, next: Next) -> Response {
    s.count(Count::Api);
    let latency = s.knobs().api_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let rate = s.take_rate();
    let mut resp = if rate.exceeded {
        ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "You have exceeded your API rate limit. Please try again later.".into(),
        )
        .into_response()
    } else if let Some(code) = s.take_api_fault() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let reason = status.canonical_reason().unwrap_or("Server Error");
        ApiError(status, reason.into()).into_response()
    } else {
        next.run(req).await
    };
    if let code @ (401 | 403 | 404 | 429 | 500..=599) = resp.status().as_u16() {
        s.count(Count::ApiStatus(code));
    }
    let h = resp.headers_mut();
    h.insert("RateLimit-Limit", HeaderValue::from(rate.limit));
    h.insert("RateLimit-Remaining", HeaderValue::from(rate.remaining));
    h.insert("RateLimit-Reset", HeaderValue::from(rate.reset_secs));
    resp
}

/// An error answer: status and `{"message": ...}`.
pub(super) struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub(super) fn not_found() -> ApiError {
        ApiError(StatusCode::NOT_FOUND, "Not Found".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: Some(self.1),
        };
        (self.0, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

pub(super) fn parse_query(q: &Option<String>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn query_get<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The token from `Authorization: Bearer` or else `?access_token=`; its scopes must include
/// `scope` (if any).
pub(super) fn authorize(
    s: &Shared,
    headers: &HeaderMap,
    q: &[(String, String)],
    scope: Option<&str>,
) -> Result<(), ApiError> {
    let unauthorized = || ApiError(StatusCode::UNAUTHORIZED, MSG_401.into());
    let token = match headers.get(header::AUTHORIZATION) {
        Some(v) => {
            let v = v.to_str().map_err(|_| unauthorized())?;
            match v.split_once(' ') {
                Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim().to_string(),
                _ => return Err(unauthorized()),
            }
        }
        None => query_get(q, "access_token")
            .ok_or_else(unauthorized)?
            .to_string(),
    };
    let w = s.world();
    let scopes = w.tokens.get(&token).ok_or_else(unauthorized)?;
    match scope {
        Some(need) if !scopes.iter().any(|have| have == need) => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("Your access token does not have the required scope(s): {need}"),
        )),
        _ => Ok(()),
    }
}

/// `http://<Host>` of the request, or the bound address.
fn base_url(s: &Shared, headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| s.api_addr.to_string());
    format!("http://{host}")
}

fn build_path(b: &FakeBuild) -> String {
    format!(
        "/v2/organizations/{}/pipelines/{}/builds/{}",
        b.org, b.pipeline, b.build.number
    )
}

pub(super) fn find_build<'a>(
    w: &'a World,
    org: &str,
    pipeline: &str,
    number: &str,
) -> Result<&'a FakeBuild, ApiError> {
    let number: u64 = number.parse().map_err(|_| ApiError::not_found())?;
    w.build(org, pipeline, number)
        .ok_or_else(ApiError::not_found)
}

/// [`find_build`] for changing it.
pub(super) fn find_build_mut<'a>(
    w: &'a mut World,
    org: String,
    pipeline: String,
    number: &str,
) -> Result<&'a mut FakeBuild, ApiError> {
    let number: u64 = number.parse().map_err(|_| ApiError::not_found())?;
    w.builds
        .get_mut(&(org, pipeline, number))
        .ok_or_else(ApiError::not_found)
}

fn job_exists(b: &FakeBuild, job: &str) -> bool {
    b.build.jobs.iter().any(|j| j.id == job)
        || b.artifacts
            .iter()
            .any(|a| a.artifact.job_id.as_deref() == Some(job))
}

fn is_live(a: &Artifact) -> bool {
    a.state.as_deref() != Some("deleted")
}

/// The artifact as served: `url` and `download_url` point at this server.
fn render(base: &str, b: &FakeBuild, a: &Artifact) -> Artifact {
    let mut a = a.clone();
    let job = a.job_id.clone().unwrap_or_default();
    let url = format!("{base}{}/jobs/{job}/artifacts/{}", build_path(b), a.id);
    a.download_url = Some(format!("{url}/download"));
    a.url = Some(url);
    a
}

/// The live artifact `id` of job `job`.
fn find_artifact<'a>(b: &'a FakeBuild, job: &str, id: &str) -> Result<&'a Artifact, ApiError> {
    b.artifacts
        .iter()
        .map(|fa| &fa.artifact)
        .find(|a| a.id == id && a.job_id.as_deref() == Some(job) && is_live(a))
        .ok_or_else(ApiError::not_found)
}

async fn access_token(State(s): S, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    s.count(Count::AccessToken);
    let q = parse_query(&q);
    authorize(&s, &headers, &q, None)?;
    // authorize() found the token; look it up again for its scopes.
    let token = match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(v) => v
            .split_once(' ')
            .map(|(_, t)| t.trim())
            .unwrap_or("")
            .to_string(),
        None => query_get(&q, "access_token").unwrap_or("").to_string(),
    };
    let scopes = s.world().tokens.get(&token).cloned().unwrap_or_default();
    let uuid = super::world::uuid_from(&format!("token:{token}"));
    Ok(Json(AccessToken {
        uuid: Some(uuid),
        scopes,
    })
    .into_response())
}

async fn get_build(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline, number)): Path<(String, String, String)>,
) -> ApiResult {
    s.count(Count::GetBuild);
    authorize(&s, &headers, &parse_query(&q), Some("read_builds"))?;
    let base = base_url(&s, &headers);
    let w = s.world();
    let b = find_build(&w, &org, &pipeline, &number)?;
    Ok(Json(render_build(&base, b)).into_response())
}

/// The build as served: command jobs get an `artifacts_url` on this server.
fn render_build(base: &str, b: &FakeBuild) -> Build {
    let mut build = b.build.clone();
    for job in &mut build.jobs {
        if job.kind.as_deref() == Some("script") && job.artifacts_url.is_none() {
            job.artifacts_url = Some(format!("{base}{}/jobs/{}/artifacts", build_path(b), job.id));
        }
    }
    build
}

async fn list_builds(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline)): Path<(String, String)>,
) -> ApiResult {
    s.count(Count::ListBuilds);
    let q = parse_query(&q);
    authorize(&s, &headers, &q, Some("read_builds"))?;
    let base = base_url(&s, &headers);
    let w = s.world();
    let all: Vec<&FakeBuild> = w
        .builds
        .iter()
        .filter(|((o, p, _), _)| *o == org && *p == pipeline)
        .map(|(_, b)| b)
        .rev()
        .collect();
    if all.is_empty() {
        return Err(ApiError::not_found());
    }
    let wanted = |name: &str| -> Vec<&str> {
        let list = format!("{name}[]");
        q.iter()
            .filter(|(k, _)| *k == name || *k == list)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let (branches, states) = (wanted("branch"), wanted("state"));
    let items: Vec<&FakeBuild> = all
        .into_iter()
        .filter(|b| {
            branches.is_empty()
                || branches
                    .iter()
                    .any(|x| b.build.branch.as_deref() == Some(x))
        })
        .filter(|b| states.is_empty() || states.iter().any(|x| b.build.state.as_deref() == Some(x)))
        .collect();
    let path = format!("/v2/organizations/{org}/pipelines/{pipeline}/builds");
    Ok(paginate(&items, &q, &base, &path, |b| {
        render_build(&base, b)
    }))
}

async fn list_build_artifacts(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline, number)): Path<(String, String, String)>,
) -> ApiResult {
    s.count(Count::ListBuildArtifacts);
    let q = parse_query(&q);
    authorize(&s, &headers, &q, Some("read_artifacts"))?;
    let base = base_url(&s, &headers);
    let w = s.world();
    let b = find_build(&w, &org, &pipeline, &number)?;
    let items: Vec<&Artifact> = b
        .artifacts
        .iter()
        .map(|fa| &fa.artifact)
        .filter(|a| is_live(a))
        .collect();
    let path = format!("{}/artifacts", build_path(b));
    Ok(paginate(&items, &q, &base, &path, |a| render(&base, b, a)))
}

async fn list_job_artifacts(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline, number, job)): Path<(String, String, String, String)>,
) -> ApiResult {
    s.count(Count::ListJobArtifacts);
    let q = parse_query(&q);
    authorize(&s, &headers, &q, Some("read_artifacts"))?;
    let base = base_url(&s, &headers);
    let w = s.world();
    let b = find_build(&w, &org, &pipeline, &number)?;
    if !job_exists(b, &job) {
        return Err(ApiError::not_found());
    }
    let items: Vec<&Artifact> = b
        .artifacts
        .iter()
        .map(|fa| &fa.artifact)
        .filter(|a| is_live(a) && a.job_id.as_deref() == Some(job.as_str()))
        .collect();
    let path = format!("{}/jobs/{job}/artifacts", build_path(b));
    Ok(paginate(&items, &q, &base, &path, |a| render(&base, b, a)))
}

/// One page of `items`, each rendered, with its `Link` header.
fn paginate<T, R: Serialize>(
    items: &[T],
    q: &[(String, String)],
    base: &str,
    path: &str,
    render: impl Fn(&T) -> R,
) -> Response {
    let positive = |name: &str| {
        query_get(q, name)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&n| n >= 1)
    };
    let page = positive("page").unwrap_or(1);
    let per_page = positive("per_page")
        .unwrap_or(DEFAULT_PER_PAGE)
        .min(MAX_PER_PAGE);
    let total = items.len();
    let pages = total.div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(total);
    let end = start.saturating_add(per_page).min(total);
    let body: Vec<R> = items[start..end].iter().map(render).collect();

    let mut resp = Json(body).into_response();
    if pages > 1 {
        let link_to = |p: usize| {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in q.iter().filter(|(k, _)| k != "page" && k != "per_page") {
                ser.append_pair(k, v);
            }
            ser.append_pair("page", &p.to_string());
            ser.append_pair("per_page", &per_page.to_string());
            format!("{base}{path}?{}", ser.finish())
        };
        let mut links = Vec::new();
        if page > 1 {
            links.push(format!("<{}>; rel=\"first\"", link_to(1)));
            links.push(format!("<{}>; rel=\"prev\"", link_to(page - 1)));
        }
        if page < pages {
            links.push(format!("<{}>; rel=\"next\"", link_to(page + 1)));
            links.push(format!("<{}>; rel=\"last\"", link_to(pages)));
        }
        if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

async fn get_artifact(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline, number, job, id)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    s.count(Count::GetArtifact);
    authorize(&s, &headers, &parse_query(&q), Some("read_artifacts"))?;
    let base = base_url(&s, &headers);
    let w = s.world();
    let b = find_build(&w, &org, &pipeline, &number)?;
    let a = find_artifact(b, &job, &id)?;
    Ok(Json(render(&base, b, a)).into_response())
}

async fn download(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline, number, job, id)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    s.count(Count::Download);
    authorize(&s, &headers, &parse_query(&q), Some("read_artifacts"))?;
    let url = {
        let w = s.world();
        let b = find_build(&w, &org, &pipeline, &number)?;
        let a = find_artifact(b, &job, &id)?;
        storage::signed_url(&s, a)
    };
    let location = HeaderValue::from_str(&url).map_err(|_| ApiError::not_found())?;
    Ok((
        StatusCode::FOUND,
        [(header::LOCATION, location)],
        Json(DownloadUrl { url }),
    )
        .into_response())
}

async fn delete_artifact(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline, number, job, id)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    s.count(Count::Delete);
    authorize(&s, &headers, &parse_query(&q), Some("write_artifacts"))?;
    let mut w = s.world();
    let b = find_build_mut(&mut w, org, pipeline, &number)?;
    let fa = b
        .artifacts
        .iter_mut()
        .find(|fa| {
            fa.artifact.id == id
                && fa.artifact.job_id.as_deref() == Some(job.as_str())
                && is_live(&fa.artifact)
        })
        .ok_or_else(ApiError::not_found)?;
    fa.artifact.state = Some("deleted".into());
    fa.content = bytes::Bytes::new();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Unknown API paths: 401 without a valid token, else 404.
async fn not_found(State(s): S, headers: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    authorize(&s, &headers, &parse_query(&q), None)?;
    Err(ApiError::not_found())
}
