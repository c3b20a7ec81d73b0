//! The fake's GraphQL endpoint: `POST /graphql` on the API port. Queries are validated against
//! Buildkite's published schema and executed by apollo-compiler ([`super::graphql`]); this
//! module answers the fields the fake serves ([`SERVED`]) from the fake's world, and any other
//! field of the schema with a field error.
//!
//! Request: a JSON object `{"query": "...", "variables": {..}?, "operationName": ".."?}`
//! (`variables` may also be a JSON string holding an object) with `Authorization: Bearer
//! <token>`. Answers, in this order:
//!
//! - 429 like REST when over an enforced rate limit (GraphQL spends from the same window and
//!   carries the same `RateLimit-*` headers on every answer);
//! - [`GraphqlMode::Absent`]: 404 `{"message":"Not Found"}`, like a host without GraphQL;
//! - an armed [`super::FakeServer::fail_graphql`] fault: that status, `{"errors":[{"message"}]}`;
//! - anything but `POST`: 405 (`Allow: POST`);
//! - no or unknown token: 401; a token without GraphQL access
//!   ([`super::FakeServer::set_graphql_access`]): 403; both `{"errors":[{"message"}]}`;
//! - [`GraphqlMode::Errors`]: 200 `{"data":null,"errors":[..]}`;
//! - a body that is not JSON, or without a string `query`: 400 `{"errors":[{"message"}]}`;
//! - else 200: syntax, validation and variable errors give `{"data":null,"errors":[..]}` (with
//!   `locations`; apollo-compiler's wording); otherwise `data`, plus `errors` (with `path`) for
//!   fields that failed.
//!
//! Scopes: `Query.build`, `Query.pipeline`, `Query.job` and `Artifact.job` need `read_builds`;
//! `JobTypeCommand.artifacts` and `Query.artifact` need `read_artifacts`. Without it that field
//! is `null` with an error "Your access token does not have the required scope(s): ..." and
//! the rest of the query still runs.
//!
//! Resolution: `build(slug: "org/pipeline/number")` or `build(uuid:)` (the REST build `id`;
//! both given must agree), `null` when unknown. `pipeline(slug: "org/pipeline")` exists while
//! the fake holds a build of it; `name` is the slug. Connections have opaque cursors
//! (base64 of the item's type and id) accepted by `after`; `count` is every item matching the
//! filters; `first` (and for artifacts `last`) may be 0 to [`MAX_PAGE`] (more, or negative, is
//! a field error), and is [`DEFAULT_PAGE`] when neither is given. `Pipeline.builds` lists
//! newest first (by number) and filters by exact `branch` and by `state`; `Build.jobs` lists
//! `RECENTLY_CREATED` first (the build's jobs in reverse order; `RECENTLY_ASSIGNED` sorts by
//! `startedAt`, newest first, unstarted last) and filters by `type` and `state`.
//! `JobTypeCommand.artifacts` lists in upload order, never deleted ones, filters by `path`
//! (exact, or a glob where `*` matches any run of characters, `/` included) and `state`.
//! Node `id`s are base64 of `Type---uuid`; `uuid`s are the REST ids. Job types map from the
//! REST `type`: `script` → `JobTypeCommand`, `waiter` → `JobTypeWait`, `trigger` →
//! `JobTypeTrigger`, `manual` → `JobTypeBlock`. Job states: REST `passed`, `failed`,
//! `soft_failed` → `FINISHED` (`passed` tells them apart), others uppercased. Build states are
//! the REST state uppercased. `Artifact.state` is the REST state (`"finished"`),
//! `downloadURL` a signed storage URL valid for [`super::FakeServer::set_graphql_url_ttl`]
//! (default 600 s), `sha256sum` and `expiresAt` are `null`.

use crate::Count;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value as Json};

use super::graphql::{self, Args, Out, Resolver};
use super::world::{guess_mime, FakeArtifact, FakeBuild};
use super::{storage, GraphqlMode, Shared, World};
use crate::model::Job;

/// Largest `first`/`last` a connection takes.
pub const MAX_PAGE: i64 = 500;
/// Page size when a connection gets neither `first` nor `last`.
pub const DEFAULT_PAGE: i64 = 100;

const MSG_401: &str = "No valid API Access Token was provided. Please supply one in the Authorization header: https://buildkite.com/docs/apis/graphql-api#authentication";
const MSG_403: &str = "The API Access Token does not have GraphQL API access enabled";

/// Every field the fake answers, by object type (any other field of the published schema is
/// a field error). Tests check each against the schema.
pub const SERVED: &[(&str, &[&str])] = &[
    ("Query", &["build", "pipeline", "job", "artifact"]),
    ("Pipeline", &["id", "uuid", "slug", "name", "url", "builds"]),
    (
        "Build",
        &[
            "id",
            "uuid",
            "number",
            "state",
            "url",
            "branch",
            "commit",
            "message",
            "createdAt",
            "startedAt",
            "finishedAt",
            "pipeline",
            "jobs",
        ],
    ),
    (
        "JobTypeCommand",
        &[
            "id",
            "uuid",
            "label",
            "state",
            "url",
            "createdAt",
            "startedAt",
            "finishedAt",
            "parallelGroupIndex",
            "parallelGroupTotal",
            "passed",
            "retried",
            "retrySource",
            "step",
            "build",
            "artifacts",
        ],
    ),
    (
        "JobTypeWait",
        &[
            "id",
            "uuid",
            "label",
            "state",
            "retried",
            "retrySource",
            "build",
        ],
    ),
    (
        "JobTypeTrigger",
        &[
            "id",
            "uuid",
            "label",
            "state",
            "retried",
            "retrySource",
            "build",
        ],
    ),
    (
        "JobTypeBlock",
        &[
            "id",
            "uuid",
            "label",
            "state",
            "retried",
            "retrySource",
            "build",
        ],
    ),
    ("StepCommand", &["key"]),
    (
        "Artifact",
        &[
            "id",
            "uuid",
            "path",
            "size",
            "sha1sum",
            "sha256sum",
            "mimeType",
            "state",
            "downloadURL",
            "expiresAt",
            "job",
        ],
    ),
    ("BuildConnection", &["count", "edges", "pageInfo"]),
    ("JobConnection", &["count", "edges", "pageInfo"]),
    ("ArtifactConnection", &["count", "edges", "pageInfo"]),
    ("BuildEdge", &["cursor", "node"]),
    ("JobEdge", &["cursor", "node"]),
    ("ArtifactEdge", &["cursor", "node"]),
    (
        "PageInfo",
        &["hasNextPage", "hasPreviousPage", "startCursor", "endCursor"],
    ),
];

type S = State<Arc<Shared>>;

/// `POST /graphql`: counting, latency, the rate window and its headers around [`answer`].
pub(super) async fn handler(
    State(s): S,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.count(Count::Graphql);
    let latency = s.knobs().api_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let rate = s.take_rate();
    let (mut resp, has_errors) = if rate.exceeded {
        (
            errors_only(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded your API rate limit. Please try again later.",
            ),
            false,
        )
    } else {
        answer(&s, &method, &headers, &body)
    };
    match resp.status().as_u16() {
        200 if has_errors => s.count(Count::GraphqlErrors),
        200 => {}
        code => s.count(Count::GraphqlStatus(code)),
    }
    let h = resp.headers_mut();
    h.insert("RateLimit-Limit", HeaderValue::from(rate.limit));
    h.insert("RateLimit-Remaining", HeaderValue::from(rate.remaining));
    h.insert("RateLimit-Reset", HeaderValue::from(rate.reset_secs));
    resp
}

/// `{"errors": [{"message": ..}]}` with a status.
fn errors_only(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errors": [{"message": message}]})),
    )
        .into_response()
}

fn json_body(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The answer and whether it is a 200 carrying `errors`.
fn answer(s: &Shared, method: &Method, headers: &HeaderMap, body: &[u8]) -> (Response, bool) {
    let knobs = s.knobs();
    if knobs.graphql_mode == GraphqlMode::Absent {
        let resp = (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not Found"})),
        );
        return (resp.into_response(), false);
    }
    if let Some(code) = s.take_graphql_fault() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let reason = status.canonical_reason().unwrap_or("Server Error");
        return (errors_only(status, reason), false);
    }
    if method != Method::POST {
        let mut resp = errors_only(
            StatusCode::METHOD_NOT_ALLOWED,
            "GraphQL requests must be POSTs with a JSON body",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return (resp, false);
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_string());
    let scopes = {
        let w = s.world();
        let Some(scopes) = token.as_ref().and_then(|t| w.tokens.get(t)) else {
            return (errors_only(StatusCode::UNAUTHORIZED, MSG_401), false);
        };
        if token.as_ref().is_some_and(|t| w.graphql_denied.contains(t)) {
            return (errors_only(StatusCode::FORBIDDEN, MSG_403), false);
        }
        scopes.clone()
    };
    if knobs.graphql_mode == GraphqlMode::Errors {
        let body = json!({
            "data": null,
            "errors": [{"message": "Internal server error (the fake's GraphqlMode::Errors is on)"}],
        });
        return (json_body(body.to_string()), true);
    }
    let bad = |msg: String| (errors_only(StatusCode::BAD_REQUEST, &msg), false);
    let req: Json = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad(format!("The request body is not valid JSON: {e}")),
    };
    let Some(query) = req.get("query").and_then(Json::as_str) else {
        return bad("No query string was present: send {\"query\": \"...\"}".into());
    };
    let variables: Map<String, Json> = match req.get("variables") {
        None | Some(Json::Null) => Map::new(),
        Some(Json::Object(m)) => m.clone(),
        Some(Json::String(text)) if text.trim().is_empty() => Map::new(),
        Some(Json::String(text)) => match serde_json::from_str(text) {
            Ok(Json::Object(m)) => m,
            _ => return bad("\"variables\" must be a JSON object".into()),
        },
        Some(_) => return bad("\"variables\" must be a JSON object".into()),
    };
    let operation = match req.get("operationName") {
        None | Some(Json::Null) => None,
        Some(Json::String(n)) if n.is_empty() => None,
        Some(Json::String(n)) => Some(n.as_str()),
        Some(_) => return bad("\"operationName\" must be a string".into()),
    };
    let response = {
        let w = s.world();
        let resolver = Bk {
            s,
            w: &w,
            scopes: &scopes,
            ttl: knobs.graphql_url_ttl,
        };
        graphql::run(query, operation, &variables, &resolver, Obj::Query)
    };
    (json_body(response.body), response.has_errors)
}

// ---------------------------------------------------------------------------------------------
// Resolvers

struct Bk<'w> {
    s: &'w Shared,
    w: &'w World,
    scopes: &'w [String],
    ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnKind {
    Build,
    Job,
    Artifact,
}

impl ConnKind {
    fn item(self) -> &'static str {
        match self {
            ConnKind::Build => "Build",
            ConnKind::Job => "Job",
            ConnKind::Artifact => "Artifact",
        }
    }
}

struct Conn<'w> {
    kind: ConnKind,
    count: usize,
    edges: Vec<(String, Obj<'w>)>,
    has_next: bool,
    has_prev: bool,
}

/// A value of one of the schema's object types.
#[derive(Clone)]
enum Obj<'w> {
    Query,
    /// (org, pipeline)
    Pipeline(&'w str, &'w str),
    Build(&'w FakeBuild),
    Job(&'w FakeBuild, &'w Job),
    Step(&'w Job),
    Artifact(&'w FakeBuild, &'w FakeArtifact),
    Connection(Rc<Conn<'w>>),
    Edge(ConnKind, String, Box<Obj<'w>>),
    PageInfo(Rc<Conn<'w>>),
}

fn text<'w>(v: Option<&str>) -> Out<Obj<'w>> {
    match v {
        Some(s) => Out::Leaf(Json::String(s.to_string())),
        None => Out::Null,
    }
}

fn leaf<'w>(v: impl Into<Json>) -> Out<Obj<'w>> {
    Out::Leaf(v.into())
}

/// The GraphQL object type of a REST job `type`.
fn job_type(j: &Job) -> &'static str {
    match j.kind.as_deref() {
        Some("waiter") => "JobTypeWait",
        Some("trigger") => "JobTypeTrigger",
        Some("manual" | "block" | "input") => "JobTypeBlock",
        _ => "JobTypeCommand",
    }
}

/// The `JobTypes` value of a job.
fn job_types_value(j: &Job) -> &'static str {
    match job_type(j) {
        "JobTypeWait" => "WAIT",
        "JobTypeTrigger" => "TRIGGER",
        "JobTypeBlock" => "BLOCK",
        _ => "COMMAND",
    }
}

/// The `JobStates` value of a job.
fn job_state(j: &Job) -> String {
    match j.state.as_deref() {
        Some("passed" | "failed" | "soft_failed" | "finished") => "FINISHED".into(),
        Some(s) => s.to_ascii_uppercase(),
        None if j.finished_at.is_some() => "FINISHED".into(),
        None => "PENDING".into(),
    }
}

fn build_state(b: &FakeBuild) -> String {
    b.build
        .state
        .as_deref()
        .unwrap_or("scheduled")
        .to_ascii_uppercase()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(super) fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub(super) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A GraphQL node id, as Buildkite makes them: base64 of `Type---uuid`.
fn node_id(kind: &str, uuid: &str) -> String {
    b64_encode(format!("{kind}---{uuid}").as_bytes())
}

fn cursor(kind: ConnKind, id: &str) -> String {
    b64_encode(format!("{}:{id}", kind.item()).as_bytes())
}

/// A pipeline's uuid, derived from its slug.
fn pipeline_uuid(org: &str, pipeline: &str) -> String {
    super::world::uuid_from(&format!("pipeline:{org}/{pipeline}"))
}

/// `*` matches any run of characters (`/` included); everything else literally.
pub(super) fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == text;
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// One page of a connection over `all` (the unfiltered list, in order): `after` is a cursor
/// of an item of `all`, `keep` the filters.
fn connection<'w, T: Copy>(
    kind: ConnKind,
    field: &str,
    args: &Args,
    all: &[T],
    keep: impl Fn(&T) -> bool,
    id: impl Fn(&T) -> &str,
    node: impl Fn(T) -> Obj<'w>,
) -> Result<Obj<'w>, String> {
    let limit = |name: &str| -> Result<Option<usize>, String> {
        match args.int(name) {
            None => Ok(None),
            Some(n) if n < 0 => Err(format!(
                "Argument '{name}' on Field '{field}' can't be negative ({n})"
            )),
            Some(n) if n > MAX_PAGE => Err(format!(
                "Argument '{name}' on Field '{field}' is {n}, over the maximum page size of {MAX_PAGE}: ask for at most {MAX_PAGE} and paginate"
            )),
            Some(n) => Ok(Some(n as usize)),
        }
    };
    let mut first = limit("first")?;
    let last = limit("last")?;
    if first.is_none() && last.is_none() {
        first = Some(DEFAULT_PAGE as usize);
    }
    let start = match args.str("after") {
        None => 0,
        Some(c) => {
            let invalid =
                || format!("Argument 'after' on Field '{field}' is not a valid cursor ({c:?})");
            let decoded = b64_decode(c)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(invalid)?;
            let item_id = decoded
                .strip_prefix(kind.item())
                .and_then(|r| r.strip_prefix(':'))
                .ok_or_else(invalid)?;
            all.iter()
                .position(|t| id(t) == item_id)
                .ok_or_else(invalid)?
                + 1
        }
    };
    let count = all.iter().filter(|t| keep(t)).count();
    let mut page: Vec<T> = all[start..].iter().filter(|t| keep(t)).copied().collect();
    let mut has_prev = all[..start].iter().any(&keep);
    let mut has_next = false;
    if let Some(n) = first {
        if page.len() > n {
            page.truncate(n);
            has_next = true;
        }
    }
    if let Some(n) = last {
        if page.len() > n {
            page.drain(..page.len() - n);
            has_prev = true;
        }
    }
    let edges = page
        .into_iter()
        .map(|t| (cursor(kind, id(&t)), node(t)))
        .collect();
    Ok(Obj::Connection(Rc::new(Conn {
        kind,
        count,
        edges,
        has_next,
        has_prev,
    })))
}

impl<'w> Bk<'w> {
    fn need(&self, scope: &str) -> Result<(), String> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(format!(
                "Your access token does not have the required scope(s): {scope}"
            ))
        }
    }

    fn find_build(&self, args: &Args) -> Result<Option<&'w FakeBuild>, String> {
        let uuid = args.str("uuid");
        match args.str("slug") {
            Some(slug) => {
                let found = slug.rsplit_once('/').and_then(|(pipe, number)| {
                    let (org, pipe) = pipe.split_once('/')?;
                    self.w.build(org, pipe, number.parse().ok()?)
                });
                Ok(found.filter(|b| uuid.is_none_or(|u| b.build.id == u)))
            }
            None => match uuid {
                Some(u) => Ok(self.w.builds.values().find(|b| b.build.id == u)),
                None => {
                    Err("Field 'build' needs a 'slug' (\"org/pipeline/number\") or a 'uuid'".into())
                }
            },
        }
    }

    fn jobs(&self, b: &'w FakeBuild, args: &Args) -> Result<Obj<'w>, String> {
        let mut all: Vec<&'w Job> = b.build.jobs.iter().rev().collect();
        if args.str("order") == Some("RECENTLY_ASSIGNED") {
            all.sort_by(|x, y| y.started_at.cmp(&x.started_at));
        }
        let types = args.strs("type");
        let states = args.strs("state");
        connection(
            ConnKind::Job,
            "jobs",
            args,
            &all,
            |j| {
                types
                    .as_ref()
                    .is_none_or(|t| t.iter().any(|t| t == job_types_value(j)))
                    && states.as_ref().is_none_or(|s| s.contains(&job_state(j)))
            },
            |j| j.id.as_str(),
            |j| Obj::Job(b, j),
        )
    }

    fn artifacts(&self, b: &'w FakeBuild, job: &Job, args: &Args) -> Result<Obj<'w>, String> {
        self.need("read_artifacts")?;
        let all: Vec<&'w FakeArtifact> = b
            .artifacts
            .iter()
            .filter(|fa| fa.artifact.job_id.as_deref() == Some(job.id.as_str()))
            .filter(|fa| fa.artifact.state.as_deref() != Some("deleted"))
            .collect();
        let path = args.str("path");
        let state = args.str("state").map(str::to_ascii_lowercase);
        connection(
            ConnKind::Artifact,
            "artifacts",
            args,
            &all,
            |fa| {
                path.is_none_or(|p| glob_match(p, fa.artifact.path.as_deref().unwrap_or("")))
                    && state
                        .as_deref()
                        .is_none_or(|s| fa.artifact.state.as_deref() == Some(s))
            },
            |fa| fa.artifact.id.as_str(),
            |fa| Obj::Artifact(b, fa),
        )
    }

    fn builds(&self, org: &str, pipeline: &str, args: &Args) -> Result<Obj<'w>, String> {
        let all: Vec<&'w FakeBuild> = self
            .w
            .builds
            .iter()
            .filter(|((o, p, _), _)| o == org && p == pipeline)
            .map(|(_, b)| b)
            .rev()
            .collect();
        let branches = args.strs("branch");
        let states = args.strs("state");
        connection(
            ConnKind::Build,
            "builds",
            args,
            &all,
            |b| {
                branches.as_ref().is_none_or(|br| {
                    br.iter()
                        .any(|x| Some(x.as_str()) == b.build.branch.as_deref())
                }) && states.as_ref().is_none_or(|s| s.contains(&build_state(b)))
            },
            |b| b.build.id.as_str(),
            Obj::Build,
        )
    }
}

impl<'w> Resolver for Bk<'w> {
    type Obj = Obj<'w>;

    fn type_of(&self, obj: &Obj<'w>) -> &'static str {
        match obj {
            Obj::Query => "Query",
            Obj::Pipeline(..) => "Pipeline",
            Obj::Build(_) => "Build",
            Obj::Job(_, j) => job_type(j),
            Obj::Step(_) => "StepCommand",
            Obj::Artifact(..) => "Artifact",
            Obj::Connection(c) => match c.kind {
                ConnKind::Build => "BuildConnection",
                ConnKind::Job => "JobConnection",
                ConnKind::Artifact => "ArtifactConnection",
            },
            Obj::Edge(kind, ..) => match kind {
                ConnKind::Build => "BuildEdge",
                ConnKind::Job => "JobEdge",
                ConnKind::Artifact => "ArtifactEdge",
            },
            Obj::PageInfo(_) => "PageInfo",
        }
    }

    fn resolve(&self, obj: &Obj<'w>, field: &str, args: &Args) -> Result<Out<Obj<'w>>, String> {
        let ty = self.type_of(obj);
        let served = SERVED
            .iter()
            .any(|(t, fields)| *t == ty && fields.contains(&field));
        if !served {
            return Err(unresolved(ty, field));
        }
        let opt = |o: Option<Obj<'w>>| o.map_or(Out::Null, Out::Object);
        let out = match (obj.clone(), field) {
            (Obj::Query, "build") => {
                self.need("read_builds")?;
                opt(self.find_build(args)?.map(Obj::Build))
            }
            (Obj::Query, "pipeline") => {
                self.need("read_builds")?;
                let found =
                    args.str("slug")
                        .and_then(|s| s.split_once('/'))
                        .and_then(|(org, pipe)| {
                            self.w
                                .builds
                                .values()
                                .find(|b| b.org == org && b.pipeline == pipe)
                        });
                opt(found.map(|b| Obj::Pipeline(&b.org, &b.pipeline)))
            }
            (Obj::Query, "job") => {
                self.need("read_builds")?;
                let uuid = args.str("uuid").unwrap_or("");
                let found = self.w.builds.values().find_map(|b| {
                    b.build
                        .jobs
                        .iter()
                        .find(|j| j.id == uuid)
                        .map(|j| Obj::Job(b, j))
                });
                opt(found)
            }
            (Obj::Query, "artifact") => {
                self.need("read_artifacts")?;
                let uuid = args.str("uuid").unwrap_or("");
                opt(self.w.artifact(uuid).map(|(b, fa)| Obj::Artifact(b, fa)))
            }

            (Obj::Pipeline(org, pipe), f) => match f {
                "id" => leaf(node_id("Pipeline", &pipeline_uuid(org, pipe))),
                "uuid" => leaf(pipeline_uuid(org, pipe)),
                "slug" | "name" => leaf(pipe),
                "url" => leaf(format!("https://buildkite.com/{org}/{pipe}")),
                "builds" => Out::Object(self.builds(org, pipe, args)?),
                _ => return Err(unresolved("Pipeline", f)),
            },

            (Obj::Build(b), f) => {
                let bb = &b.build;
                match f {
                    "id" => leaf(node_id("Build", &bb.id)),
                    "uuid" => leaf(bb.id.as_str()),
                    "number" => leaf(bb.number),
                    "state" => leaf(build_state(b)),
                    "url" => leaf(bb.web_url.clone().unwrap_or_else(|| {
                        format!(
                            "https://buildkite.com/{}/{}/builds/{}",
                            b.org, b.pipeline, bb.number
                        )
                    })),
                    "branch" => leaf(bb.branch.as_deref().unwrap_or("")),
                    "commit" => leaf(bb.commit.as_deref().unwrap_or("")),
                    "message" => text(bb.message.as_deref()),
                    "createdAt" => text(bb.created_at.as_deref()),
                    "startedAt" => text(bb.started_at.as_deref()),
                    "finishedAt" => text(bb.finished_at.as_deref()),
                    "pipeline" => Out::Object(Obj::Pipeline(&b.org, &b.pipeline)),
                    "jobs" => Out::Object(self.jobs(b, args)?),
                    _ => return Err(unresolved("Build", f)),
                }
            }

            (Obj::Job(b, j), f) => match f {
                "id" => leaf(node_id("Job", &j.id)),
                "uuid" => leaf(j.id.as_str()),
                "label" => text(j.name.as_deref()),
                "state" => leaf(job_state(j)),
                "url" => leaf(j.web_url.clone().unwrap_or_else(|| b.job_web_url(&j.id))),
                "createdAt" => text(j.created_at.as_deref()),
                "startedAt" => text(j.started_at.as_deref()),
                "finishedAt" => text(j.finished_at.as_deref()),
                "parallelGroupIndex" => j.parallel_group_index.map_or(Out::Null, leaf),
                "parallelGroupTotal" => j.parallel_group_total.map_or(Out::Null, leaf),
                "passed" => leaf(j.state.as_deref() == Some("passed")),
                "retried" => leaf(j.retried.unwrap_or(j.retried_in_job_id.is_some())),
                "retrySource" => opt(b
                    .build
                    .jobs
                    .iter()
                    .find(|o| o.retried_in_job_id.as_deref() == Some(j.id.as_str()))
                    .map(|o| Obj::Job(b, o))),
                "step" => Out::Object(Obj::Step(j)),
                "build" => Out::Object(Obj::Build(b)),
                "artifacts" => Out::Object(self.artifacts(b, j, args)?),
                _ => return Err(unresolved(job_type(j), f)),
            },

            (Obj::Step(j), "key") => text(j.step_key.as_deref()),

            (Obj::Artifact(b, fa), f) => {
                let a = &fa.artifact;
                match f {
                    "id" => leaf(node_id("Artifact", &a.id)),
                    "uuid" => leaf(a.id.as_str()),
                    "path" => leaf(a.path.as_deref().unwrap_or("")),
                    "size" => leaf(a.file_size.unwrap_or(fa.content.len() as u64)),
                    "sha1sum" => leaf(a.sha1sum.as_deref().unwrap_or("")),
                    "sha256sum" | "expiresAt" => Out::Null,
                    "mimeType" => leaf(
                        a.mime_type
                            .clone()
                            .unwrap_or_else(|| guess_mime(a.path.as_deref().unwrap_or("")).into()),
                    ),
                    "state" => text(a.state.as_deref()),
                    "downloadURL" => leaf(storage::signed_url_for(self.s, a, self.ttl)),
                    "job" => {
                        self.need("read_builds")?;
                        opt(b
                            .build
                            .jobs
                            .iter()
                            .find(|j| Some(j.id.as_str()) == a.job_id.as_deref())
                            .filter(|j| job_type(j) == "JobTypeCommand")
                            .map(|j| Obj::Job(b, j)))
                    }
                    _ => return Err(unresolved("Artifact", f)),
                }
            }

            (Obj::Connection(c), f) => match f {
                "count" => leaf(c.count),
                "edges" => Out::List(
                    c.edges
                        .iter()
                        .map(|(cur, node)| {
                            Out::Object(Obj::Edge(c.kind, cur.clone(), Box::new(node.clone())))
                        })
                        .collect(),
                ),
                "pageInfo" => Out::Object(Obj::PageInfo(c)),
                _ => return Err(unresolved("Connection", f)),
            },
            (Obj::Edge(_, cur, node), f) => match f {
                "cursor" => leaf(cur),
                "node" => Out::Object(*node),
                _ => return Err(unresolved("Edge", f)),
            },
            (Obj::PageInfo(c), f) => match f {
                "hasNextPage" => leaf(c.has_next),
                "hasPreviousPage" => leaf(c.has_prev),
                "startCursor" => text(c.edges.first().map(|(cur, _)| cur.as_str())),
                "endCursor" => text(c.edges.last().map(|(cur, _)| cur.as_str())),
                _ => return Err(unresolved("PageInfo", f)),
            },
            (o, f) => return Err(unresolved(self.type_of(&o), f)),
        };
        Ok(out)
    }
}

fn unresolved(ty: &str, field: &str) -> String {
    format!("The fake cannot resolve {ty}.{field}")
}
