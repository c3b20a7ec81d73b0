//! The fake's `POST /graphql` over 127.0.0.1 with reqwest, and the schema it validates against.
//!
//! The schema tests and the request helpers are here; what queries answer is [`queries`],
//! how requests are refused is [`errors`].

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::StatusCode;
use serde_json::{json, Value as Json};

use super::graphql;
use super::graphql_api::{self as testing};
use super::*;
use crate::model::{Build, Job};

const TOKEN: &str = "t0ken";

mod errors;
mod queries;

// ---------------------------------------------------------------------------------------------
// The schema

/// The vendored schema is Buildkite's: it validates, and has its types (fails, never skips,
/// if it cannot be read: it is compiled in).
#[test]
fn published_schema_validates() {
    let s = graphql::schema();
    assert!(s.types.len() > 500, "{} types", s.types.len());
    for t in [
        "Build",
        "JobTypeCommand",
        "Artifact",
        "Pipeline",
        "Job",
        "Node",
    ] {
        assert!(s.types.contains_key(t), "{t} missing");
    }
    assert!(s.schema_definition.mutation.is_some());
}

/// Every field the fake answers exists, on that type, in Buildkite's published schema, and
/// every object type a resolver names is one the schema has.
#[test]
fn every_served_field_is_in_the_published_schema() {
    let s = graphql::schema();
    for (ty, fields) in testing::SERVED {
        let obj = s
            .get_object(ty)
            .unwrap_or_else(|| panic!("{ty} is not an object type of Buildkite's schema"));
        for f in *fields {
            assert!(
                obj.fields.contains_key(*f),
                "{ty}.{f} is not in Buildkite's schema"
            );
        }
    }
}

#[test]
fn base64_and_globs() {
    for s in ["", "f", "fo", "foo", "foob", "Build---0190-ab"] {
        let e = testing::b64_encode(s.as_bytes());
        assert_eq!(testing::b64_decode(&e).unwrap(), s.as_bytes());
    }
    assert_eq!(testing::b64_encode(b"foob"), "Zm9vYg==");
    assert!(testing::b64_decode("!!").is_none());
    assert!(testing::glob_match("logs/*", "logs/a/b.log"));
    assert!(testing::glob_match("*.log", "x.log"));
    assert!(testing::glob_match("a*b*c", "aXXbYYc"));
    assert!(!testing::glob_match("a*b*c", "aXXbYY"));
    assert!(!testing::glob_match("logs/a.log", "logs/a.lo"));
    assert!(testing::glob_match("*", ""));
}

// ---------------------------------------------------------------------------------------------
// Over HTTP

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct World7 {
    s: FakeServer,
    b: FakeBuild,
    one: String,
    two: String,
    two_retry: String,
    wait: String,
    block: String,
    trigger: String,
}

/// acme/app/7: command job "one" (parallel 0 of 2, step key "one") with `n` logs and a new
/// (uploading) artifact; a wait job; command job "two" (retried by "two-retry") with
/// junit.xml and a deleted artifact; a block and a trigger job; "two-retry" with out.txt.
fn setup(n: usize) -> World7 {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let one = b.add_job(":one: One");
    let wait = b.add_job_of_type("waiter", "");
    let two = b.add_job("Two");
    let block = b.add_job_of_type("manual", ":rocket: Release?");
    let trigger = b.add_job_of_type("trigger", "Deploy");
    let two_retry = b.add_job("Two");
    for j in &mut b.build.jobs {
        if j.id == one {
            j.parallel_group_index = Some(0);
            j.parallel_group_total = Some(2);
            j.step_key = Some("one".into());
        }
        if j.id == two {
            j.retried = Some(true);
            j.retried_in_job_id = Some(two_retry.clone());
            j.state = Some("failed".into());
        }
        if j.id == block {
            j.state = Some("blocked".into());
        }
    }
    for i in 0..n {
        b.add_artifact(
            &one,
            &format!("logs/part-{i:03}.log"),
            format!("line {i}\n"),
        );
    }
    b.add_artifact_with(&one, "coverage/index.html", "<html/>", |a| {
        a.state = Some("new".into())
    });
    b.add_artifact(&two, "junit.xml", "<testsuite/>");
    b.add_artifact_with(&two, "gone.txt", "x", |a| a.state = Some("deleted".into()));
    b.add_artifact(&two_retry, "out.txt", "retry output");
    s.add_build(b.clone());
    World7 {
        s,
        b,
        one,
        two,
        two_retry,
        wait,
        block,
        trigger,
    }
}

async fn post(s: &FakeServer, token: Option<&str>, body: Json) -> (StatusCode, HeaderMap, Json) {
    let mut req = client().post(s.graphql_url()).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, headers, v)
}

/// A 200 answer's body.
async fn gql(s: &FakeServer, query: &str, variables: Json) -> Json {
    let (status, headers, v) = post(
        s,
        Some(TOKEN),
        json!({"query": query, "variables": variables}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(headers[CONTENT_TYPE], "application/json");
    v
}

/// A 200 answer without errors: its `data`.
async fn data(s: &FakeServer, query: &str, variables: Json) -> Json {
    let v = gql(s, query, variables).await;
    assert!(v.get("errors").is_none(), "unexpected errors: {v}");
    v["data"].clone()
}

fn messages(v: &Json) -> Vec<String> {
    v["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {v}"))
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

/// The first error of a request that failed before execution.
async fn request_error(s: &FakeServer, query: &str, variables: Json) -> (String, Json) {
    let v = gql(s, query, variables).await;
    assert_eq!(v["data"], Json::Null, "{v}");
    let errors = v["errors"].as_array().unwrap();
    (
        errors[0]["message"].as_str().unwrap().to_string(),
        errors[0].clone(),
    )
}

async fn rest_build(s: &FakeServer) -> Build {
    client()
        .get(format!(
            "{}/v2/organizations/acme/pipelines/app/builds/7",
            s.api_url()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

const BUILD_QUERY: &str = r#"
query Build($slug: ID!, $first: Int = 50) {
  build(slug: $slug) {
    __typename id uuid number state url branch commit message createdAt startedAt finishedAt
    pipeline { slug name }
    jobs(first: $first) {
      count
      edges {
        node {
          __typename
          ... on JobTypeCommand {
            id uuid label state url createdAt startedAt finishedAt passed
            parallelGroupIndex parallelGroupTotal retried
            retrySource { ... on JobTypeCommand { uuid } }
            step { key }
            artifacts(first: 500) {
              count
              edges { node { uuid path size sha1sum sha256sum mimeType state downloadURL expiresAt } }
              pageInfo { hasNextPage }
            }
          }
          ... on JobTypeWait { uuid label state }
          ... on JobTypeBlock { uuid label state }
          ... on JobTypeTrigger { uuid label state }
        }
      }
    }
  }
}"#;
