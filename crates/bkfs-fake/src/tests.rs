//! Drives the fake over 127.0.0.1 with reqwest, one behaviour per test.
//!
//! Over 1,000 lines, knowingly: one REST behaviour per test, sharing one set of request
//! helpers; splitting it by endpoint family (builds, artifacts, storage, faults) is the next step.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, LINK, LOCATION, RANGE};
use reqwest::StatusCode;

use super::*;
use crate::model::{AccessToken, Artifact, Build, DownloadUrl, ErrorBody};

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
async fn get_download_and_storage_ranges() {
    let (s, b) = setup(1);
    let fa = &b.artifacts[0];
    let a = &fa.artifact;
    let job = a.job_id.as_deref().unwrap();
    let r = get(
        &format!("{}/jobs/{job}/artifacts/{}", build_url(&s), a.id),
        Some(TOKEN),
    )
    .await;
    let got: Artifact = r.json().await.unwrap();
    assert_eq!(got.sha1sum, a.sha1sum);
    assert_eq!(got.mime_type.as_deref(), Some("text/plain"));
    assert_eq!(got.dirname.as_deref(), Some("logs"));
    assert_eq!(got.filename.as_deref(), Some("part-000.log"));

    let r = get(got.download_url.as_deref().unwrap(), Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert_eq!(r.json::<DownloadUrl>().await.unwrap().url, loc);
    assert!(loc.starts_with(&format!("{}/artifacts/", s.storage_url())));
    assert!(loc.contains("Expires=") && loc.contains("Signature="));

    // Full GET without any token.
    let r = get(&loc, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.headers()["content-length"], "7");
    assert_eq!(r.bytes().await.unwrap(), fa.content);

    let range = |spec: &'static str| {
        let loc = loc.clone();
        async move { client().get(&loc).header(RANGE, spec).send().await.unwrap() }
    };
    for (spec, want, cr) in [
        ("bytes=0-3", "line", "bytes 0-3/7"),
        ("bytes=5-", "0\n", "bytes 5-6/7"),
        ("bytes=-2", "0\n", "bytes 5-6/7"),
        ("bytes=2-100", "ne 0\n", "bytes 2-6/7"),
    ] {
        let r = range(spec).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(r.headers()["content-range"], cr);
        assert_eq!(
            r.headers()["content-length"],
            want.len().to_string().as_str()
        );
        assert_eq!(r.bytes().await.unwrap(), want.as_bytes());
    }
    let r = range("bytes=7-").await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */7");

    // HEAD: headers only.
    let r = client().head(&loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "7");
    let r = client()
        .head(&loc)
        .header(RANGE, "bytes=1-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-length"], "2");

    // A token sent to storage is counted (and still served).
    let r = client()
        .get(&loc)
        .header(AUTHORIZATION, "Bearer x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.unwrap();

    assert_eq!(s.count(Count::StorageAuthorization), 1);
    assert_eq!(s.count(Count::StorageHead), 2);
    assert_eq!(s.count(Count::StorageGet), 7);
    assert_eq!(s.count(Count::Storage), 9);
    assert_eq!(s.count(Count::StorageStatus(416)), 1);
    assert_eq!(s.count(Count::Download), 1);
    assert_eq!(s.count(Count::GetArtifact), 1);
    // 7 + 4 + 2 + 2 + 5 + 7 bytes of bodies (the 416 has an XML body, not counted).
    assert_eq!(s.storage_bytes_served(), 27);
}

async fn xml_error(r: reqwest::Response) -> (StatusCode, String) {
    let status = r.status();
    assert_eq!(r.headers()[CONTENT_TYPE], "application/xml");
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn storage_signature_and_expiry() {
    let (s, b) = setup(1);
    let loc = signed_url(&s, &b, 0).await;
    let url = url::Url::parse(&loc).unwrap();
    let param = |n: &str| {
        url.query_pairs()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_string())
            .unwrap()
    };
    let expires: u64 = param("Expires").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 59..=now + 61).contains(&expires),
        "{expires} vs {now}"
    );

    let tampered = loc.replace(&param("Signature"), &"0".repeat(40));
    let (st, body) = xml_error(get(&tampered, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        body.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{body}"
    );
    let later = loc.replace(
        &format!("Expires={expires}"),
        &format!("Expires={}", expires + 3600),
    );
    let (st, body) = xml_error(get(&later, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.contains("SignatureDoesNotMatch"));
    let bare = loc.split('?').next().unwrap();
    let (st, body) = xml_error(get(bare, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.contains("<Code>AccessDenied</Code>"));

    s.set_url_ttl(Duration::ZERO);
    let short = signed_url(&s, &b, 0).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, body) = xml_error(get(&short, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    );
    // The first URL is still good.
    assert_eq!(get(&loc, None).await.status(), StatusCode::OK);

    let unknown = loc.replace(&b.artifacts[0].artifact.id, "nope");
    let (st, _) = xml_error(get(&unknown, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "signature covers the key");
    assert_eq!(s.count(Count::StorageStatus(403)), 5);
}

#[tokio::test]
async fn delete_removes_everywhere() {
    let (s, b) = setup(2);
    s.add_token("ro", &["read_artifacts"]);
    let a = &b.artifacts[0].artifact;
    let job = a.job_id.as_deref().unwrap();
    let url = format!("{}/jobs/{job}/artifacts/{}", build_url(&s), a.id);
    let loc = signed_url(&s, &b, 0).await;

    let r = client()
        .delete(&url)
        .bearer_auth("ro")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        message(r).await,
        "Your access token does not have the required scope(s): write_artifacts"
    );
    assert!(s.artifact_exists(&a.id));

    let r = client()
        .delete(format!("{url}?access_token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.bytes().await.unwrap().is_empty());
    assert!(!s.artifact_exists(&a.id));
    assert!(s.artifact_exists(&b.artifacts[1].artifact.id));

    assert_eq!(get(&url, Some(TOKEN)).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get(&format!("{url}/download"), Some(TOKEN)).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = client()
        .delete(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let list: Vec<Artifact> = get(&format!("{}/artifacts", build_url(&s)), Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert!(list.iter().all(|x| x.id != a.id));
    assert_eq!(list.len(), 2);
    let (st, body) = xml_error(get(&loc, None).await).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(body.contains("<Code>NoSuchKey</Code>"));
    assert_eq!(s.count(Count::Delete), 3);
}

#[tokio::test]
async fn latency_bandwidth_and_bytes() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let j = b.add_job("big");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    b.add_artifact(&j, "big.bin", content.clone());
    s.add_build(b.clone());

    s.set_api_latency(Duration::from_millis(150));
    let t = Instant::now();
    let loc = signed_url(&s, &b, 0).await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    s.set_api_latency(Duration::ZERO);

    s.set_storage_latency(Duration::from_millis(150));
    let t = Instant::now();
    let r = get(&loc, None).await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.bytes().await.unwrap(), content);
    s.set_storage_latency(Duration::ZERO);
    assert_eq!(s.storage_bytes_served(), 200_000);

    s.reset_counts();
    assert!(s.counts().is_empty());
    s.set_storage_bandwidth(400_000);
    let t = Instant::now();
    let r = get(&loc, None).await;
    assert_eq!(r.bytes().await.unwrap(), content);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(s.storage_bytes_served(), 200_000);

    // A client that stops early is not charged for the whole body.
    s.reset_counts();
    s.set_storage_bandwidth(100_000);
    let mut r = get(&loc, None).await;
    let first = r.chunk().await.unwrap().unwrap();
    drop(r);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = s.storage_bytes_served();
    assert!(served >= first.len() as u64 && served < 100_000, "{served}");
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

#[tokio::test]
async fn wrong_sha1_is_served_as_given() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let j = b.add_job("j");
    b.add_artifact_with(&j, "bad.bin", "hello", |a| a.sha1sum = Some("0".repeat(40)));
    s.add_build(b.clone());
    let list: Vec<Artifact> = get(&format!("{}/artifacts", build_url(&s)), Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list[0].sha1sum, Some("0".repeat(40)));
    let loc = signed_url(&s, &b, 0).await;
    assert_eq!(get(&loc, None).await.bytes().await.unwrap(), "hello");
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

/// A server with one job holding `big.bin` (200 000 patterned bytes); returns its signed URL.
async fn fault_setup() -> (FakeServer, FakeBuild, Vec<u8>, String) {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let j = b.add_job("big");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    b.add_artifact(&j, "big.bin", content.clone());
    s.add_build(b.clone());
    let loc = signed_url(&s, &b, 0).await;
    (s, b, content, loc)
}

/// Reads a body chunk by chunk: what arrived, and whether it ended in an error.
async fn drain(mut r: reqwest::Response) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (got, false),
            Err(_) => return (got, true),
        }
    }
}

#[tokio::test]
async fn storage_status_faults_count_down() {
    let (s, _b, content, loc) = fault_setup().await;
    s.fail_storage(2, 503);
    assert_eq!(s.storage_faults_pending(), 2);
    // HEAD and a refused signature do not use a fault up.
    assert_eq!(
        client().head(&loc).send().await.unwrap().status(),
        StatusCode::OK
    );
    let bare = loc.split('?').next().unwrap();
    assert_eq!(get(bare, None).await.status(), StatusCode::FORBIDDEN);
    for _ in 0..2 {
        let (st, body) = xml_error(get(&loc, None).await).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
    }
    let r = get(&loc, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), content);

    s.fail_storage(1, 500);
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=0-9")
        .send()
        .await
        .unwrap();
    let (st, body) = xml_error(r).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("<Code>InternalError</Code>"), "{body}");
    assert_eq!(s.storage_faults_pending(), 0);
    assert_eq!(s.count(Count::StorageStatus(503)), 2);
    assert_eq!(s.count(Count::StorageStatus(500)), 1);
    assert_eq!(s.count(Count::StorageFaultsInjected), 3);
    assert_eq!(s.count(Count::StorageFaultStatus), 3);
    assert_eq!(s.storage_bytes_served(), content.len() as u64);
}

#[tokio::test]
async fn storage_reset_and_truncate_send_half_then_cut() {
    let (s, _b, content, loc) = fault_setup().await;
    s.reset_storage(1);
    let r = get(&loc, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "200000");
    let (got, failed) = drain(r).await;
    assert!(failed, "a reset body must end in an error");
    assert_eq!(got.len(), 100_000);
    assert!(got[..] == content[..100_000]);

    // Ranged: half of the range, from its start.
    s.truncate_storage(1);
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-length"], "1000");
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/200000");
    let (got, failed) = drain(r).await;
    assert!(
        failed,
        "the client sees a body shorter than its Content-Length"
    );
    assert!(got[..] == content[1000..1500]);

    // A one-byte body has nothing to cut: it is sent whole.
    s.truncate_storage(1);
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=7-7")
        .send()
        .await
        .unwrap();
    assert_eq!(drain(r).await.0, &content[7..8]);

    // Armed counts are used up; the next GET is whole.
    let r = get(&loc, None).await;
    assert_eq!(drain(r).await, (content.clone(), false));
    assert_eq!(s.count(Count::StorageFaultReset), 1);
    assert_eq!(s.count(Count::StorageFaultTruncate), 2);
    assert_eq!(s.count(Count::StorageFaultsInjected), 3);
    assert_eq!(s.storage_bytes_served(), 100_000 + 500 + 1 + 200_000);
}

#[tokio::test]
async fn storage_stall_holds_until_the_client_leaves() {
    let (s, _b, content, loc) = fault_setup().await;
    s.stall_storage(1, 70_000);
    let mut r = get(&loc, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut got = Vec::new();
    while got.len() < 70_000 {
        let c = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("the bytes before the stall arrive")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&c);
    }
    assert!(got[..] == content[..70_000]);
    // Nothing more comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), r.chunk())
            .await
            .is_err(),
        "a stalled body must not go on"
    );
    assert_eq!(s.storage_stalls_active(), 1);
    // The next request is not stalled, even while the first one is.
    let r2 = get(&loc, None).await;
    assert_eq!(drain(r2).await, (content.clone(), false));
    // The client gives up: the server's task ends.
    drop(r);
    let t = Instant::now();
    while s.storage_stalls_active() > 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.storage_stalls_active(), 0, "the stalled response leaked");

    // `after_bytes` beyond the body still stalls before the last byte.
    s.stall_storage(1, 10_000_000);
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=0-99")
        .send()
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_millis(500), drain(r)).await;
    assert!(got.is_err(), "the last byte must be held back");
    assert_eq!(s.count(Count::StorageFaultStall), 2);
    assert_eq!(s.storage_bytes_served(), 70_000 + 200_000 + 99);
}

#[tokio::test]
async fn corrupt_storage_inverts_bytes_while_on() {
    let (s, b, content, loc) = fault_setup().await;
    let id = b.artifacts[0].artifact.id.clone();
    s.corrupt_storage(&id, true);
    let r = get(&loc, None).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), content.len());
    assert_eq!(got, super::corrupted(&content));
    assert!(got.iter().zip(&content).all(|(a, b)| a != b));
    assert_eq!(
        etag,
        format!("\"{}-{}\"", id, content.len()),
        "the stored object's ETag"
    );
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), super::corrupted(&content[10..20]));
    assert_eq!(s.count(Count::StorageCorrupt), 2);

    s.corrupt_storage(&id, false);
    assert_eq!(get(&loc, None).await.bytes().await.unwrap(), content);
    assert_eq!(s.count(Count::StorageCorrupt), 2);
}

#[tokio::test]
async fn api_faults_count_down_after_the_rate_limit() {
    let (s, _) = setup(1);
    let token_url = format!("{}/v2/access-token", s.api_url());
    s.fail_api(2, 502);
    assert_eq!(s.api_faults_pending(), 2);
    let r = get(&token_url, Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.headers().contains_key("ratelimit-remaining"));
    assert_eq!(message(r).await, "Bad Gateway");
    let r = get(&build_url(&s), Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        get(&build_url(&s), Some(TOKEN)).await.status(),
        StatusCode::OK
    );
    assert_eq!(s.count(Count::ApiStatus(502)), 2);
    assert_eq!(s.count(Count::ApiFaultsInjected), 2);

    // A 429 comes first and does not use a fault up.
    s.set_rate_limit(1, Duration::from_secs(60), true);
    s.fail_api(2, 500);
    let r = get(&token_url, Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(message(r).await, "Internal Server Error");
    let r = get(&token_url, Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(s.api_faults_pending(), 1);
    s.set_rate_limit(200, Duration::from_secs(60), false);
    s.fail_api(1, 503);
    assert_eq!(
        get(&token_url, Some(TOKEN)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&token_url, Some(TOKEN)).await.status(), StatusCode::OK);
    assert_eq!(s.count(Count::ApiStatus(500)), 1);
    assert_eq!(s.count(Count::ApiStatus(503)), 1);
    assert_eq!(s.count(Count::ApiFaultsInjected), 4);
}

fn builds_url(s: &FakeServer, pipeline: &str) -> String {
    format!(
        "{}/v2/organizations/acme/pipelines/{pipeline}/builds",
        s.api_url()
    )
}

async fn numbers(r: reqwest::Response) -> Vec<u64> {
    assert_eq!(r.status(), StatusCode::OK);
    let builds: Vec<Build> = r.json().await.unwrap();
    builds.iter().map(|b| b.number).collect()
}

#[tokio::test]
async fn list_builds_newest_first_filtered_and_paginated() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds"]);
    s.add_token("artifacts-only", &["read_artifacts"]);
    for n in 1..=45 {
        let mut b = FakeBuild::new("acme", "app", n);
        b.add_job("Tests");
        if n % 5 == 0 {
            b.set_branch("release");
        }
        match n % 3 {
            0 => b.set_state("failed"),
            1 if n > 40 => b.set_state("running"),
            _ => {}
        }
        s.add_build(b);
    }
    s.add_build(FakeBuild::new("acme", "other", 100));
    s.add_build(FakeBuild::new("zzz", "app", 100));
    let list = builds_url(&s, "app");

    // Default 30 per page, newest first, with Link headers.
    let r = get(&list, Some(TOKEN)).await;
    let h = r.headers().clone();
    assert_eq!(numbers(r).await, (16..=45).rev().collect::<Vec<_>>());
    assert!(link(&h, "next").unwrap().contains("page=2"));
    assert!(link(&h, "last").unwrap().contains("page=2"));
    let r = get(&link(&h, "next").unwrap(), Some(TOKEN)).await;
    let h = r.headers().clone();
    assert_eq!(numbers(r).await, (1..=15).rev().collect::<Vec<_>>());
    assert!(link(&h, "next").is_none() && link(&h, "first").is_some());
    let r = get(&format!("{list}?per_page=1000"), Some(TOKEN)).await;
    assert!(r.headers().get(LINK).is_none());
    assert_eq!(numbers(r).await.len(), 45);
    let r = get(&format!("{list}?per_page=10&page=5"), Some(TOKEN)).await;
    assert_eq!(numbers(r).await, [5, 4, 3, 2, 1]);

    // Each build exactly as the get-build endpoint renders it.
    let r = get(&format!("{list}?per_page=1&page=3"), Some(TOKEN)).await;
    let listed: Vec<Build> = r.json().await.unwrap();
    let one: Build = get(&format!("{list}/43"), Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, vec![one.clone()]);
    assert!(one.jobs[0].artifacts_url.is_some());

    // Filters: branch, one state, several states; Link keeps them.
    let r = get(&format!("{list}?branch=release"), Some(TOKEN)).await;
    assert_eq!(numbers(r).await, [45, 40, 35, 30, 25, 20, 15, 10, 5]);
    let r = get(&format!("{list}?state=running"), Some(TOKEN)).await;
    assert_eq!(numbers(r).await, [43]);
    let r = get(
        &format!("{list}?state%5B%5D=running&state[]=failed&branch=release"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(numbers(r).await, [45, 30, 15]);
    let r = get(&format!("{list}?state=failed&per_page=5"), Some(TOKEN)).await;
    let next = link(r.headers(), "next").unwrap();
    assert!(next.contains("state=failed"), "{next}");
    assert_eq!(numbers(r).await, [45, 42, 39, 36, 33]);
    let r = get(&next, Some(TOKEN)).await;
    assert_eq!(numbers(r).await, [30, 27, 24, 21, 18]);
    let r = get(&format!("{list}?branch=nope"), Some(TOKEN)).await;
    assert_eq!(numbers(r).await, Vec::<u64>::new());

    // Unknown pipeline, missing scope, no token.
    for url in [
        builds_url(&s, "nope"),
        format!("{}/v2/organizations/nope/pipelines/app/builds", s.api_url()),
    ] {
        let r = get(&url, Some(TOKEN)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(message(r).await, "Not Found");
    }
    let r = get(&list, Some("artifacts-only")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        message(r).await,
        "Your access token does not have the required scope(s): read_builds"
    );
    assert_eq!(get(&list, None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.count(Count::ListBuilds), 15);
    assert_eq!(s.count(Count::GetBuild), 1);
}

#[tokio::test]
async fn live_build_changes_show_at_once() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::running("acme", "app", 7);
    let job = b.add_job("Tests");
    let first = b.add_artifact(&job, "a.txt", "a");
    s.add_build(b);

    let got: Build = get(&build_url(&s), Some(TOKEN)).await.json().await.unwrap();
    assert_eq!(got.state.as_deref(), Some("running"));
    assert_eq!(got.finished_at, None);
    assert_eq!(got.jobs[0].state.as_deref(), Some("running"));
    assert_eq!(got.jobs[0].finished_at, None);

    // Jobs and artifacts appear, the new artifact is indexed (get, download, storage).
    let mut second = String::new();
    let mut late_job = String::new();
    assert!(s.update_build("acme", "app", 7, |b| {
        late_job = b.add_job("Late");
        second = b.add_artifact_with(&late_job, "b.txt", "bee", |a| a.state = Some("new".into()));
    }));
    let got: Build = get(&build_url(&s), Some(TOKEN)).await.json().await.unwrap();
    assert_eq!(got.jobs.len(), 2);
    assert_eq!(got.jobs[1].state.as_deref(), Some("running"));
    let list: Vec<Artifact> = get(&format!("{}/artifacts", build_url(&s)), Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].state.as_deref(), Some("new"));
    assert!(s.artifact_exists(&second));
    let dl = format!(
        "{}/jobs/{late_job}/artifacts/{second}/download",
        build_url(&s)
    );
    let loc = get(&dl, Some(TOKEN)).await.headers()[LOCATION]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(get(&loc, None).await.status(), StatusCode::NOT_FOUND);
    assert!(s.set_artifact_state(&second, "finished"));
    assert_eq!(get(&loc, None).await.text().await.unwrap(), "bee");

    // An artifact removed from the build leaves the index.
    let first_loc = {
        let b: FakeBuild = {
            let w = s.shared.world();
            w.build("acme", "app", 7).unwrap().clone()
        };
        signed_url(&s, &b, 0).await
    };
    assert!(s.update_build("acme", "app", 7, |b| {
        b.artifacts.retain(|a| a.artifact.id != first)
    }));
    assert!(!s.artifact_exists(&first));
    assert!(!s.set_artifact_state(&first, "finished"));
    assert_eq!(get(&first_loc, None).await.status(), StatusCode::NOT_FOUND);

    // The build finishes: finished_at is now; a non-final state clears it again.
    let before = now_rfc3339();
    assert!(s.set_build_state("acme", "app", 7, "passed"));
    let got: Build = get(&build_url(&s), Some(TOKEN)).await.json().await.unwrap();
    assert_eq!(got.state.as_deref(), Some("passed"));
    let fin = got.finished_at.unwrap();
    assert!(fin >= before && fin <= now_rfc3339(), "{before} {fin}");
    assert_eq!(fin.len(), "2026-01-02T03:04:05.000Z".len());
    let r = get(
        &format!("{}?state=passed", builds_url(&s, "app")),
        Some(TOKEN),
    )
    .await;
    assert_eq!(numbers(r).await, [7]);
    assert!(s.set_build_state("acme", "app", 7, "failing"));
    let got: Build = get(&build_url(&s), Some(TOKEN)).await.json().await.unwrap();
    assert_eq!(got.finished_at, None);

    // Moving a build to another number moves its artifacts' index with it.
    assert!(s.update_build("acme", "app", 7, |b| b.build.number = 8));
    assert_eq!(
        get(&build_url(&s), Some(TOKEN)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert!(s.artifact_exists(&second));
    assert_eq!(get(&loc, None).await.text().await.unwrap(), "bee");

    assert!(!s.update_build("acme", "app", 7, |_| panic!("no such build")));
    assert!(!s.set_build_state("acme", "app", 7, "passed"));
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

/// Storage signs the path exactly as issued: `..` (or `%2E%2E`, decoded) is served, the
/// same URL normalized by reqwest (`..` removed) is refused.
#[tokio::test]
async fn storage_signs_dot_segments_exactly() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let one = b.add_job("One");
    b.add_artifact(&one, "..", "dot dot\n");
    b.add_artifact(&one, "a/./b/../c", "abc\n");
    s.add_build(b.clone());
    for fa in &b.artifacts {
        let a = &fa.artifact;
        let r = get(
            &format!("{}/jobs/{one}/artifacts/{}/download", build_url(&s), a.id),
            Some(TOKEN),
        )
        .await;
        let loc = r.headers()[LOCATION].to_str().unwrap().to_string();
        let (status, body) = raw_get(&loc).await;
        assert_eq!(status, 200, "{loc}: the path as uploaded");
        assert_eq!(body, fa.content, "{loc}");
        let r = get(&loc, None).await;
        assert_eq!(r.status().as_u16() / 100, 4, "normalized {loc} was served");
    }
}

/// A GET of `url` exactly as written (no dot-segment normalization): HTTP/1.1 over a plain
/// TCP stream; the status and the body (the fake answers `Connection: close` requests with
/// a `Content-Length` body).
async fn raw_get(url: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, target) = rest.split_at(rest.find('/').expect("a path"));
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    conn.read_to_end(&mut all).await.unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, all[split + 4..].to_vec())
}
