//! The fake's builds listing (newest first, filters, pages) and live builds that change.

use super::*;

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
