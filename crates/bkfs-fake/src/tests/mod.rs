//! Drives the fake over 127.0.0.1 with reqwest, one behaviour per test.
//!
//! The request helpers and the API basics are here; the endpoint families are in
//! [`storage`], [`faults`] and [`builds`].

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LINK, LOCATION, RANGE};
use reqwest::StatusCode;

use super::*;
use crate::model::{AccessToken, Artifact, Build, DownloadUrl, ErrorBody};

mod builds;
mod faults;
mod storage;

const TOKEN: &str = "t0ken";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A server with a full token and build acme/app/7: job "one" with `n` artifacts and job
/// "two" with one artifact, plus a deleted artifact.
fn setup(n: usize) -> (FakeServer, FakeBuild) {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts", "write_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let one = b.add_job(":one: One");
    let two = b.add_job("Two");
    for i in 0..n {
        b.add_artifact(
            &one,
            &format!("logs/part-{i:03}.log"),
            format!("line {i}\n"),
        );
    }
    b.add_artifact(&two, "junit.xml", "<testsuite/>");
    b.add_artifact_with(&two, "gone.txt", "x", |a| a.state = Some("deleted".into()));
    s.add_build(b.clone());
    (s, b)
}

fn build_url(s: &FakeServer) -> String {
    format!(
        "{}/v2/organizations/acme/pipelines/app/builds/7",
        s.api_url()
    )
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = client().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn message(r: reqwest::Response) -> String {
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    r.json::<ErrorBody>().await.unwrap().message.unwrap()
}

fn links(h: &HeaderMap) -> Vec<(String, String)> {
    let Some(v) = h.get(LINK) else {
        return Vec::new();
    };
    v.to_str()
        .unwrap()
        .split(", ")
        .map(|part| {
            let (url, rel) = part.split_once(">; rel=\"").unwrap();
            (
                rel.trim_end_matches('"').to_string(),
                url.trim_start_matches('<').to_string(),
            )
        })
        .collect()
}

fn link(h: &HeaderMap, rel: &str) -> Option<String> {
    links(h).into_iter().find(|(r, _)| r == rel).map(|(_, u)| u)
}

async fn signed_url(s: &FakeServer, b: &FakeBuild, idx: usize) -> String {
    let a = &b.artifacts[idx].artifact;
    let url = format!(
        "{}/jobs/{}/artifacts/{}/download",
        build_url(s),
        a.job_id.as_deref().unwrap(),
        a.id
    );
    let r = get(&url, Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    r.headers()[LOCATION].to_str().unwrap().to_string()
}

#[tokio::test]
async fn auth_errors_and_access_token() {
    let (s, _) = setup(1);
    s.add_token("artifacts-only", &["read_artifacts"]);

    let r = get(&build_url(&s), None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        message(r).await,
        "Authentication required. Please supply a valid API Access Token: https://buildkite.com/docs/apis/rest-api#authentication"
    );
    let r = get(&build_url(&s), Some("nope")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = get(&build_url(&s), Some("artifacts-only")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        message(r).await,
        "Your access token does not have the required scope(s): read_builds"
    );

    let r = get(
        &format!("{}/v2/access-token", s.api_url()),
        Some("artifacts-only"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let t: AccessToken = r.json().await.unwrap();
    assert_eq!(t.scopes, vec!["read_artifacts"]);
    assert_eq!(t.uuid.unwrap().len(), 36);

    // ?access_token= works as well.
    let r = get(&format!("{}?access_token={TOKEN}", build_url(&s)), None).await;
    assert_eq!(r.status(), StatusCode::OK);

    assert_eq!(s.count(Count::ApiStatus(401)), 2);
    assert_eq!(s.count(Count::ApiStatus(403)), 1);
    assert_eq!(s.count(Count::AccessToken), 1);
    assert_eq!(s.count(Count::GetBuild), 4);
    assert_eq!(s.count(Count::Api), 5);
}

#[tokio::test]
async fn build_and_not_found() {
    let (s, b) = setup(1);
    let r = get(&build_url(&s), Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    for h in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
        assert!(r.headers().contains_key(h), "{h} missing");
    }
    assert_eq!(r.headers()["ratelimit-limit"], "200");
    let got: Build = r.json().await.unwrap();
    assert_eq!(got.id, b.build.id);
    assert_eq!(got.jobs.len(), 2);
    assert_eq!(got.jobs[0].name.as_deref(), Some(":one: One"));
    assert_eq!(got.jobs[0].kind.as_deref(), Some("script"));
    assert!(got.jobs[0]
        .artifacts_url
        .as_deref()
        .unwrap()
        .starts_with(&s.api_url()));
    assert_eq!(
        got.web_url.as_deref(),
        Some("https://buildkite.com/acme/app/builds/7")
    );

    let base = s.api_url();
    for url in [
        format!("{base}/v2/organizations/nope/pipelines/app/builds/7"),
        format!("{base}/v2/organizations/acme/pipelines/nope/builds/7"),
        format!("{base}/v2/organizations/acme/pipelines/app/builds/8"),
        format!("{base}/v2/organizations/acme/pipelines/app/builds/x"),
        format!("{}/jobs/nope/artifacts", build_url(&s)),
        format!(
            "{}/jobs/{}/artifacts/nope",
            build_url(&s),
            b.build.jobs[0].id
        ),
        format!("{base}/v2/whatever"),
    ] {
        let r = get(&url, Some(TOKEN)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{url}");
        assert_eq!(message(r).await, "Not Found");
    }
    assert_eq!(s.count(Count::ApiStatus(404)), 7);
}

#[tokio::test]
async fn pagination_and_links() {
    let (s, b) = setup(249); // 250 live artifacts in the build, one deleted
    let list = format!("{}/artifacts", build_url(&s));

    // Default 30 per page.
    let r = get(&list, Some(TOKEN)).await;
    let h = r.headers().clone();
    assert_eq!(r.json::<Vec<Artifact>>().await.unwrap().len(), 30);
    assert!(link(&h, "last").unwrap().contains("page=9"));
    assert!(link(&h, "prev").is_none() && link(&h, "first").is_none());

    // per_page over 100 is clamped; follow next links to the end.
    let mut url = format!("{list}?per_page=1000");
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&url, Some(TOKEN)).await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers().clone();
        let page: Vec<Artifact> = r.json().await.unwrap();
        assert!(page.len() <= 100);
        pages += 1;
        if pages == 2 {
            let rels: Vec<String> = links(&h).into_iter().map(|(r, _)| r).collect();
            assert_eq!(rels, ["first", "prev", "next", "last"]);
            assert!(link(&h, "first").unwrap().starts_with(&format!("{list}?")));
        }
        ids.extend(page.into_iter().map(|a| a.id));
        match link(&h, "next") {
            Some(next) => url = next,
            None => {
                assert!(link(&h, "last").is_none());
                assert!(link(&h, "prev").unwrap().contains("page=2"));
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = b
        .artifacts
        .iter()
        .filter(|a| a.artifact.state.as_deref() != Some("deleted"))
        .map(|a| a.artifact.id.clone())
        .collect();
    assert_eq!(ids, want, "upload order, deleted left out");

    // Past the end.
    let r = get(&format!("{list}?page=4&per_page=100"), Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.json::<Vec<Artifact>>().await.unwrap().is_empty());
    // Invalid values count as absent.
    let r = get(&format!("{list}?page=x&per_page=0"), Some(TOKEN)).await;
    assert_eq!(r.json::<Vec<Artifact>>().await.unwrap().len(), 30);

    // A job's list that fits on one page has no Link header.
    let job2 = &b.build.jobs[1].id;
    let r = get(
        &format!("{}/jobs/{job2}/artifacts", build_url(&s)),
        Some(TOKEN),
    )
    .await;
    assert!(r.headers().get(LINK).is_none());
    let page: Vec<Artifact> = r.json().await.unwrap();
    assert_eq!(page.len(), 1);
    let a = &page[0];
    assert_eq!(a.path.as_deref(), Some("junit.xml"));
    assert_eq!(a.dirname.as_deref(), Some("."));
    assert_eq!(a.filename.as_deref(), Some("junit.xml"));
    assert_eq!(a.glob_path, None);
    let url = format!("{}/jobs/{job2}/artifacts/{}", build_url(&s), a.id);
    assert_eq!(a.url.as_deref(), Some(url.as_str()));
    assert_eq!(a.download_url, Some(format!("{url}/download")));
    assert_eq!(s.count(Count::ListJobArtifacts), 1);
    assert_eq!(s.count(Count::ListBuildArtifacts), 6);
}

#[tokio::test]
async fn rate_limit_headers_and_enforcement() {
    let (s, _) = setup(1);
    let url = format!("{}/v2/access-token", s.api_url());
    let r = get(&url, Some(TOKEN)).await;
    assert_eq!(r.headers()["ratelimit-remaining"], "199");
    let reset: u64 = r.headers()["ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&reset));

    s.set_rate_limit(2, Duration::from_secs(60), true);
    assert_eq!(get(&url, Some(TOKEN)).await.status(), StatusCode::OK);
    let r = get(&url, Some(TOKEN)).await;
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    let r = get(&url, Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["ratelimit-remaining"], "0");
    assert_eq!(s.count(Count::ApiStatus(429)), 1);

    // A window long enough that three requests fit in it even on a loaded machine.
    s.set_rate_limit(2, Duration::from_millis(1000), true);
    get(&url, Some(TOKEN)).await;
    get(&url, Some(TOKEN)).await;
    assert_eq!(
        get(&url, Some(TOKEN)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(get(&url, Some(TOKEN)).await.status(), StatusCode::OK);
}

#[test]
fn builder_ids_are_deterministic_and_distinct() {
    let make = |n| {
        let mut b = FakeBuild::new("o", "p", n);
        let ids: Vec<String> = (0..50).map(|i| b.add_job(&format!("job {i}"))).collect();
        let j = ids[0].clone();
        let a = b.add_artifact(&j, "a/b/c.png", vec![1, 2, 3]);
        (b, ids, a)
    };
    let (b1, ids1, a1) = make(1);
    let (b1again, ids1again, _) = make(1);
    let (b2, ids2, a2) = make(2);
    assert_eq!(ids1, ids1again);
    assert_eq!(b1.build.id, b1again.build.id);
    assert_ne!(b1.build.id, b2.build.id);
    assert_ne!(a1, a2);
    let prefixes: HashSet<&str> = ids1.iter().map(|id| &id[..8]).collect();
    assert_eq!(prefixes.len(), ids1.len());
    assert!(ids1.iter().all(|id| !ids2.contains(id)));
    let id = &ids1[0];
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "4");
    let a = &b1.artifacts[0].artifact;
    assert_eq!(a.dirname.as_deref(), Some("a/b"));
    assert_eq!(a.filename.as_deref(), Some("c.png"));
    assert_eq!(a.mime_type.as_deref(), Some("image/png"));
    assert_eq!(a.file_size, Some(3));
    assert_eq!(
        a.sha1sum.as_deref(),
        Some("7037807198c22a7d2b0807371d763779a84fdfcf")
    );
    assert_eq!(
        b1.build.created_at.as_deref(),
        Some("2026-01-02T03:04:05.000Z")
    );
    assert_eq!(
        b1.build.jobs[0].finished_at.as_deref(),
        Some(world::FINISHED_AT)
    );
}

#[test]
fn demo_build_is_realistic_and_deterministic() {
    let d = demo_build();
    let again = demo_build();
    assert_eq!(
        (d.org.as_str(), d.pipeline.as_str(), d.build.number),
        ("demo", "webapp", 42)
    );
    assert_eq!(d.build, again.build);
    assert!(d
        .artifacts
        .iter()
        .zip(&again.artifacts)
        .all(|(a, b)| a.content == b.content));

    let total: usize = d.artifacts.iter().map(|a| a.content.len()).sum();
    assert!((2 << 20..8 << 20).contains(&total), "{total} bytes");
    let prefixes: HashSet<&str> = d.build.jobs.iter().map(|j| &j.id[..8]).collect();
    assert_eq!(prefixes.len(), d.build.jobs.len());

    let jobs = &d.build.jobs;
    assert_eq!(
        jobs.iter()
            .filter(|j| j.parallel_group_total == Some(3))
            .count(),
        3
    );
    let retried = jobs.iter().find(|j| j.retried == Some(true)).unwrap();
    let retry_id = retried.retried_in_job_id.as_deref().unwrap();
    assert!(jobs.iter().any(|j| j.id == retry_id));
    let has_artifacts = |id: &str| {
        d.artifacts
            .iter()
            .any(|a| a.artifact.job_id.as_deref() == Some(id))
    };
    assert!(jobs
        .iter()
        .any(|j| j.kind.as_deref() == Some("script") && !has_artifacts(&j.id)));
    assert!(d
        .artifacts
        .iter()
        .any(|a| a.artifact.state.as_deref() == Some("new")));

    let by_path = |p: &str| {
        d.artifacts
            .iter()
            .find(|a| a.artifact.path.as_deref() == Some(p))
            .unwrap()
    };
    assert!(by_path("dist/webapp.tar.gz")
        .content
        .starts_with(&[0x1f, 0x8b]));
    assert!(by_path("tmp/screenshots/checkout_fails.png")
        .content
        .starts_with(b"\x89PNG\r\n\x1a\n"));
    let logs = d
        .artifacts
        .iter()
        .filter(|a| a.artifact.path.as_deref().unwrap().starts_with("log/"));
    let text: String = logs
        .map(|a| String::from_utf8(a.content.to_vec()).unwrap())
        .collect();
    assert!(text.contains("ERROR") && text.contains("FAILED"));
    assert!(d.artifacts.iter().any(|a| a
        .artifact
        .path
        .as_deref()
        .unwrap()
        .starts_with("coverage/lcov-report/")));
    for a in &d.artifacts {
        assert_eq!(
            a.artifact.sha1sum.as_deref(),
            Some(world::sha1_hex(&a.content).as_str())
        );
    }
}

#[test]
fn sync_use_and_shutdown() {
    let s = FakeServer::start();
    let api = s.api_url();
    assert!(api.starts_with("http://127.0.0.1:") && !api.ends_with('/'));
    assert_ne!(api, s.storage_url());
    let addr = api.trim_start_matches("http://").to_string();
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    drop(s);
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

#[test]
fn rfc3339_dates() {
    assert_eq!(world::rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(world::rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    assert_eq!(world::rfc3339(1_767_323_045, 0), "2026-01-02T03:04:05.000Z");
    assert_eq!(
        world::rfc3339(4_107_542_399, 999),
        "2100-02-28T23:59:59.999Z"
    );
    let mut b = FakeBuild::running("a", "b", 1);
    let j = b.add_job("x");
    assert!(b.set_job_state(&j, "failed"));
    assert!(b.build.jobs[0].finished_at.is_some());
    assert!(b.set_job_state(&j, "running"));
    assert!(b.build.jobs[0].finished_at.is_none());
    assert!(!b.set_job_state("nope", "passed"));
    assert!(!b.is_finished());
    b.set_state("canceled");
    assert!(b.is_finished());
    assert!(b.add_job("after").len() == 36);
    assert_eq!(b.build.jobs[1].state.as_deref(), Some("passed"));
}

async fn xml_error(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    assert_eq!(r.headers()[CONTENT_TYPE], "application/xml");
    (status, r.text().await.unwrap())
}
