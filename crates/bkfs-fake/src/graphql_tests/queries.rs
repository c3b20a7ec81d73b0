//! What the fake's GraphQL answers: builds against REST, download URLs, jobs and artifacts
//! with cursors and filters, pipeline builds, operations and fragments, live builds.

use super::*;

#[tokio::test]
async fn build_query_matches_rest() {
    let w = setup(3);
    let d = data(&w.s, BUILD_QUERY, json!({"slug": "acme/app/7"})).await;
    let rest = rest_build(&w.s).await;
    let b = &d["build"];
    assert_eq!(b["__typename"], "Build");
    assert_eq!(b["uuid"], rest.id.as_str());
    assert_ne!(b["id"], b["uuid"]);
    assert_eq!(b["number"], 7);
    assert_eq!(b["state"], "PASSED");
    assert_eq!(b["url"], "https://buildkite.com/acme/app/builds/7");
    assert_eq!(b["branch"], "main");
    assert_eq!(b["commit"], rest.commit.as_deref().unwrap());
    assert_eq!(b["message"], rest.message.as_deref().unwrap());
    assert_eq!(b["finishedAt"], rest.finished_at.as_deref().unwrap());
    assert_eq!(b["pipeline"], json!({"slug": "app", "name": "app"}));

    // Jobs: newest first, REST ids as uuids, the union resolved by REST type.
    let jobs = &b["jobs"];
    assert_eq!(jobs["count"], 6);
    let nodes: Vec<&Json> = jobs["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"])
        .collect();
    let uuids: Vec<&str> = nodes.iter().map(|n| n["uuid"].as_str().unwrap()).collect();
    let mut rest_ids: Vec<&str> = rest.jobs.iter().map(|j| j.id.as_str()).collect();
    rest_ids.reverse();
    assert_eq!(uuids, rest_ids);
    let types: Vec<&str> = nodes
        .iter()
        .map(|n| n["__typename"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "JobTypeCommand",
            "JobTypeTrigger",
            "JobTypeBlock",
            "JobTypeCommand",
            "JobTypeWait",
            "JobTypeCommand"
        ]
    );
    let by_uuid = |id: &str| *nodes.iter().find(|n| n["uuid"] == id).unwrap();

    let one = by_uuid(&w.one);
    assert_eq!(one["label"], ":one: One");
    assert_eq!(one["state"], "FINISHED");
    assert_eq!(one["passed"], true);
    assert_eq!(one["parallelGroupIndex"], 0);
    assert_eq!(one["parallelGroupTotal"], 2);
    assert_eq!(one["step"], json!({"key": "one"}));
    assert_eq!(one["retried"], false);
    assert_eq!(one["retrySource"], Json::Null);
    assert_eq!(one["url"], w.b.job_web_url(&w.one));
    assert_eq!(one["finishedAt"], super::world::FINISHED_AT);

    // Artifacts: upload order, REST ids, the uploading one included, deleted ones never.
    let arts = &one["artifacts"];
    assert_eq!(arts["count"], 4);
    assert_eq!(arts["pageInfo"]["hasNextPage"], false);
    let a0 = &arts["edges"][0]["node"];
    let r0 = &w.b.artifacts[0].artifact;
    assert_eq!(a0["uuid"], r0.id.as_str());
    assert_eq!(a0["path"], "logs/part-000.log");
    assert_eq!(a0["size"], 7);
    assert_eq!(a0["sha1sum"], r0.sha1sum.as_deref().unwrap());
    assert_eq!(a0["sha256sum"], Json::Null);
    assert_eq!(a0["expiresAt"], Json::Null);
    assert_eq!(a0["mimeType"], "text/plain");
    assert_eq!(a0["state"], "finished");
    assert_eq!(arts["edges"][3]["node"]["state"], "new");

    let two = by_uuid(&w.two);
    assert_eq!(two["state"], "FINISHED");
    assert_eq!(two["passed"], false);
    assert_eq!(two["retried"], true);
    let paths: Vec<&str> = two["artifacts"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["junit.xml"]);
    let retry = by_uuid(&w.two_retry);
    assert_eq!(retry["retrySource"], json!({"uuid": w.two}));

    assert_eq!(
        by_uuid(&w.block).as_object().unwrap().len(),
        4,
        "only the selected fields"
    );
    assert_eq!(by_uuid(&w.block)["state"], "BLOCKED");
    assert_eq!(by_uuid(&w.block)["label"], ":rocket: Release?");
    assert_eq!(by_uuid(&w.wait)["state"], "FINISHED");
    assert_eq!(by_uuid(&w.trigger)["label"], "Deploy");

    // By uuid as well, and unknown builds are null.
    let q = "query($u: ID) { build(uuid: $u) { number } }";
    let d = data(&w.s, q, json!({"u": rest.id})).await;
    assert_eq!(d, json!({"build": {"number": 7}}));
    for slug in ["acme/app/8", "acme/nope/7", "nope", "acme/app/x", ""] {
        let d = data(
            &w.s,
            "query($s: ID) { build(slug: $s) { number } }",
            json!({"s": slug}),
        )
        .await;
        assert_eq!(d, json!({"build": null}), "{slug}");
    }
    let d = data(&w.s, r#"{ build(uuid: "nope") { number } }"#, json!({})).await;
    assert_eq!(d, json!({"build": null}));
    // Slug and uuid that disagree.
    let d = data(
        &w.s,
        r#"{ build(slug: "acme/app/7", uuid: "nope") { number } }"#,
        json!({}),
    )
    .await;
    assert_eq!(d, json!({"build": null}));

    assert_eq!(w.s.count(Count::Graphql), 9);
    assert_eq!(w.s.count(Count::Api), 1, "GraphQL is not counted as REST");
    assert_eq!(w.s.count(Count::GraphqlErrors), 0);
}

#[tokio::test]
async fn download_urls_work_and_have_their_own_ttl() {
    let w = setup(1);
    let q = r#"{ build(slug: "acme/app/7") { jobs(type: [COMMAND]) { edges { node {
        ... on JobTypeCommand { artifacts(state: FINISHED) { edges { node { uuid path downloadURL } } } } } } } } }"#;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let d = data(&w.s, q, json!({})).await;
    let mut urls = Vec::new();
    for job in d["build"]["jobs"]["edges"].as_array().unwrap() {
        for a in job["node"]["artifacts"]["edges"].as_array().unwrap() {
            urls.push((
                a["node"]["uuid"].as_str().unwrap().to_string(),
                a["node"]["downloadURL"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert_eq!(urls.len(), 3, "{d}");
    let expires = |u: &str| -> u64 {
        let q = url::Url::parse(u).unwrap();
        let e = q.query_pairs().find(|(k, _)| k == "Expires").unwrap().1;
        e.parse().unwrap()
    };
    for (id, u) in &urls {
        assert!(u.starts_with(&format!("{}/artifacts/{id}/", w.s.storage_url())));
        assert!(u.contains("AWSAccessKeyId=") && u.contains("Signature="));
        let e = expires(u);
        assert!((now + 599..=now + 602).contains(&e), "{e} vs {now}");
        let fa = w.b.artifacts.iter().find(|a| &a.artifact.id == id).unwrap();
        let body = client().get(u).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(body, fa.content);
    }

    w.s.set_graphql_url_ttl(Duration::from_secs(30));
    let d = data(&w.s, q, json!({})).await;
    let u = d["build"]["jobs"]["edges"][0]["node"]["artifacts"]["edges"][0]["node"]["downloadURL"]
        .as_str()
        .unwrap()
        .to_string();
    let e = expires(&u);
    assert!((now + 29..=now + 32).contains(&e), "{e} vs {now}");
    // The REST TTL knob is separate.
    w.s.set_url_ttl(Duration::from_secs(1));
    let d = data(&w.s, q, json!({})).await;
    let u = d["build"]["jobs"]["edges"][0]["node"]["artifacts"]["edges"][0]["node"]["downloadURL"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(expires(&u) >= now + 29);

    // Query.artifact and Artifact.job.
    let id = &w.b.artifacts[0].artifact.id;
    let q = "query($u: ID!) { artifact(uuid: $u) { path job { uuid label } } }";
    let d = data(&w.s, q, json!({"u": id})).await;
    assert_eq!(
        d,
        json!({"artifact": {"path": "logs/part-000.log", "job": {"uuid": w.one, "label": ":one: One"}}})
    );
}

#[tokio::test]
async fn jobs_paginate_with_cursors_and_filters() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::new("acme", "big", 1);
    let mut ids = Vec::new();
    for i in 0..230 {
        ids.push(if i % 10 == 9 {
            b.add_job_of_type("waiter", "")
        } else {
            b.add_job(&format!("job {i}"))
        });
    }
    s.add_build(b);
    ids.reverse(); // newest first

    // Default page size is 100.
    let q = r#"query($after: String, $first: Int) { build(slug: "acme/big/1") {
        jobs(first: $first, after: $after) { count edges { cursor node { ... on JobTypeCommand { uuid } ... on JobTypeWait { uuid } } }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }"#;
    let d = data(&s, q, json!({})).await;
    let jobs = &d["build"]["jobs"];
    assert_eq!(jobs["count"], 230);
    assert_eq!(
        jobs["edges"].as_array().unwrap().len(),
        GRAPHQL_DEFAULT_PAGE as usize
    );
    assert_eq!(jobs["pageInfo"]["hasNextPage"], true);

    // Follow endCursor with first: 64.
    let mut got = Vec::new();
    let mut after = Json::Null;
    let mut pages = 0;
    loop {
        let d = data(&s, q, json!({"first": 64, "after": after})).await;
        let jobs = &d["build"]["jobs"];
        let edges = jobs["edges"].as_array().unwrap();
        for e in edges {
            got.push(e["node"]["uuid"].as_str().unwrap().to_string());
        }
        let info = &jobs["pageInfo"];
        assert_eq!(info["hasPreviousPage"], pages > 0);
        assert_eq!(info["startCursor"], edges[0]["cursor"]);
        assert_eq!(info["endCursor"], edges.last().unwrap()["cursor"]);
        pages += 1;
        if info["hasNextPage"] == false {
            break;
        }
        after = info["endCursor"].clone();
    }
    assert_eq!(pages, 4);
    assert_eq!(got, ids);

    // Filters: by type and by state; count follows the filter.
    let q2 = r#"query($t: [JobTypes!], $s: [JobStates!]) { build(slug: "acme/big/1") {
        jobs(type: $t, state: $s, first: 500) { count } } }"#;
    let count = |d: Json| d["build"]["jobs"]["count"].as_i64().unwrap();
    assert_eq!(count(data(&s, q2, json!({"t": ["WAIT"]})).await), 23);
    assert_eq!(count(data(&s, q2, json!({"t": "COMMAND"})).await), 207);
    assert_eq!(count(data(&s, q2, json!({"s": ["RUNNING"]})).await), 0);
    assert_eq!(
        count(data(&s, q2, json!({"s": ["FINISHED"], "t": ["WAIT", "COMMAND"]})).await),
        230
    );

    // first: 0, then the limits.
    let d = data(&s, q, json!({"first": 0})).await;
    assert_eq!(d["build"]["jobs"]["edges"], json!([]));
    assert_eq!(d["build"]["jobs"]["pageInfo"]["hasNextPage"], true);
    assert_eq!(d["build"]["jobs"]["pageInfo"]["endCursor"], Json::Null);
    for (first, needle) in [(501, "maximum page size of 500"), (-1, "negative")] {
        let v = gql(&s, q, json!({"first": first})).await;
        assert_eq!(v["data"]["build"]["jobs"], Json::Null, "{v}");
        assert!(messages(&v)[0].contains(needle), "{v}");
        assert_eq!(v["errors"][0]["path"], json!(["build", "jobs"]));
        assert!(v["errors"][0]["locations"].is_array());
    }
    let v = gql(&s, q, json!({"after": "bm9wZQ=="})).await;
    assert!(messages(&v)[0].contains("not a valid cursor"), "{v}");
    assert!(s.count(Count::GraphqlErrors) >= 3);
}

#[tokio::test]
async fn job_order_recently_assigned() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds"]);
    let mut b = FakeBuild::new("acme", "app", 1);
    let a = b.add_job("a");
    let c = b.add_job("c");
    let n = b.add_job("never started");
    for j in &mut b.build.jobs {
        j.started_at = if j.id == a {
            Some("2026-01-02T03:05:00.000Z".into())
        } else if j.id == c {
            Some("2026-01-02T03:04:00.000Z".into())
        } else {
            None
        };
    }
    s.add_build(b);
    let q = r#"query($o: JobOrder) { build(slug: "acme/app/1") { jobs(order: $o) { edges { node { ... on JobTypeCommand { uuid } } } } } }"#;
    let uuids = |d: Json| -> Vec<String> {
        d["build"]["jobs"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["uuid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        uuids(data(&s, q, json!({})).await),
        [n.clone(), c.clone(), a.clone()]
    );
    assert_eq!(
        uuids(data(&s, q, json!({"o": "RECENTLY_CREATED"})).await),
        [n.clone(), c.clone(), a.clone()]
    );
    assert_eq!(
        uuids(data(&s, q, json!({"o": "RECENTLY_ASSIGNED"})).await),
        [a.clone(), c.clone(), n.clone()]
    );
}

#[tokio::test]
async fn artifacts_first_last_path_state() {
    let w = setup(120);
    let q = r#"query($first: Int, $last: Int, $path: String, $state: ArtifactStates) {
      build(slug: "acme/app/7") { jobs(type: COMMAND, first: 1, after: null) { edges { node { ... on JobTypeCommand {
        label
        artifacts(first: $first, last: $last, path: $path, state: $state) {
          count edges { cursor node { path } } pageInfo { hasNextPage hasPreviousPage } } } } } } } }"#;
    // The newest command job is two-retry; ask for "one" through the older pages instead.
    let one_q = q.replace("first: 1, after: null", "first: 500");
    let arts = |d: &Json| -> Json {
        d["build"]["jobs"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["node"]["label"] == ":one: One")
            .unwrap()["node"]["artifacts"]
            .clone()
    };
    let paths = |a: &Json| -> Vec<String> {
        a["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["path"].as_str().unwrap().to_string())
            .collect()
    };
    let d = data(&w.s, q, json!({})).await;
    assert_eq!(d["build"]["jobs"]["edges"][0]["node"]["label"], "Two");

    // Default 100 of 121.
    let a = arts(&data(&w.s, &one_q, json!({})).await);
    assert_eq!(a["count"], 121);
    assert_eq!(paths(&a).len(), 100);
    assert_eq!(
        a["pageInfo"],
        json!({"hasNextPage": true, "hasPreviousPage": false})
    );

    let a = arts(&data(&w.s, &one_q, json!({"first": 2})).await);
    assert_eq!(paths(&a), ["logs/part-000.log", "logs/part-001.log"]);
    let a = arts(&data(&w.s, &one_q, json!({"last": 2})).await);
    assert_eq!(paths(&a), ["logs/part-119.log", "coverage/index.html"]);
    assert_eq!(
        a["pageInfo"],
        json!({"hasNextPage": false, "hasPreviousPage": true})
    );
    let a = arts(&data(&w.s, &one_q, json!({"first": 10, "last": 3})).await);
    assert_eq!(
        paths(&a),
        [
            "logs/part-007.log",
            "logs/part-008.log",
            "logs/part-009.log"
        ]
    );

    let a = arts(&data(&w.s, &one_q, json!({"path": "logs/part-01*", "first": 500})).await);
    assert_eq!(a["count"], 10);
    let a = arts(&data(&w.s, &one_q, json!({"path": "coverage/index.html"})).await);
    assert_eq!(paths(&a), ["coverage/index.html"]);
    let a = arts(&data(&w.s, &one_q, json!({"path": "*.html", "state": "NEW"})).await);
    assert_eq!(a["count"], 1);
    let a = arts(&data(&w.s, &one_q, json!({"state": "FINISHED", "first": 500})).await);
    assert_eq!(a["count"], 120);
    let a = arts(&data(&w.s, &one_q, json!({"state": "DELETED"})).await);
    assert_eq!(a["count"], 0);

    let v = gql(&w.s, &one_q, json!({"last": 501})).await;
    assert!(messages(&v)[0].contains("'last'"), "{v}");
}

#[tokio::test]
async fn pipeline_builds_newest_first_with_filters() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds"]);
    for n in 1..=12 {
        let mut b = FakeBuild::new("acme", "app", n);
        if n % 3 == 0 {
            b.set_branch("feature/x");
        }
        if n % 4 == 0 {
            b.set_state("failed");
        }
        s.add_build(b);
    }
    s.add_build(FakeBuild::new("acme", "other", 99));
    s.add_build(FakeBuild::new("zzz", "app", 50));
    let q = r#"query($slug: ID, $first: Int, $after: String, $branch: [String!], $state: [BuildStates!]) {
      pipeline(slug: $slug) { slug name url
        builds(first: $first, after: $after, branch: $branch, state: $state) {
          count edges { node { number branch state } } pageInfo { hasNextPage endCursor } } } }"#;
    let numbers = |d: &Json| -> Vec<u64> {
        d["pipeline"]["builds"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["number"].as_u64().unwrap())
            .collect()
    };
    let d = data(&s, q, json!({"slug": "acme/app"})).await;
    assert_eq!(d["pipeline"]["slug"], "app");
    assert_eq!(d["pipeline"]["url"], "https://buildkite.com/acme/app");
    assert_eq!(d["pipeline"]["builds"]["count"], 12);
    assert_eq!(numbers(&d), (1..=12).rev().collect::<Vec<_>>());

    let d = data(&s, q, json!({"slug": "acme/app", "first": 5})).await;
    assert_eq!(numbers(&d), [12, 11, 10, 9, 8]);
    let after = d["pipeline"]["builds"]["pageInfo"]["endCursor"].clone();
    let d = data(
        &s,
        q,
        json!({"slug": "acme/app", "first": 5, "after": after}),
    )
    .await;
    assert_eq!(numbers(&d), [7, 6, 5, 4, 3]);

    let d = data(&s, q, json!({"slug": "acme/app", "branch": ["feature/x"]})).await;
    assert_eq!(numbers(&d), [12, 9, 6, 3]);
    assert_eq!(d["pipeline"]["builds"]["count"], 4);
    let d = data(&s, q, json!({"slug": "acme/app", "state": ["FAILED"]})).await;
    assert_eq!(numbers(&d), [12, 8, 4]);
    let d = data(
        &s,
        q,
        json!({"slug": "acme/app", "state": ["FAILED"], "branch": "feature/x"}),
    )
    .await;
    assert_eq!(numbers(&d), [12]);

    for slug in ["acme/nope", "acme", "nope/app/1"] {
        let d = data(&s, q, json!({"slug": slug})).await;
        assert_eq!(d, json!({"pipeline": null}), "{slug}");
    }
}

#[tokio::test]
async fn operations_fragments_aliases_directives_variables() {
    let w = setup(2);
    let doc = r#"
      fragment B on Build { number ...S }
      fragment S on Build { state }
      query First($slug: ID = "acme/app/7") { build(slug: $slug) { ...B } }
      query Second($slug: ID!, $skip: Boolean!, $with: Boolean = true) {
        a: build(slug: $slug) { n: number, number @skip(if: $skip) }
        b: build(slug: "acme/app/999") { number }
        c: build(slug: $slug) @include(if: $with) { ... @skip(if: true) { number } ... { __typename } }
      }"#;
    let (status, _, v) = post(
        &w.s,
        Some(TOKEN),
        json!({"query": doc, "operationName": "First"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v,
        json!({"data": {"build": {"number": 7, "state": "PASSED"}}})
    );

    let (_, _, v) = post(
        &w.s,
        Some(TOKEN),
        json!({"query": doc, "operationName": "Second", "variables": {"slug": "acme/app/7", "skip": true}}),
    )
    .await;
    assert_eq!(
        v,
        json!({"data": {"a": {"n": 7}, "b": null, "c": {"__typename": "Build"}}})
    );
    // Variables as a JSON string, as some clients send them.
    let (_, _, v) = post(
        &w.s,
        Some(TOKEN),
        json!({"query": doc, "operationName": "Second", "variables": "{\"slug\": \"acme/app/7\", \"skip\": false, \"with\": false}"}),
    )
    .await;
    assert_eq!(v, json!({"data": {"a": {"n": 7, "number": 7}, "b": null}}));

    // Without operationName the document is ambiguous; an unknown one is an error too.
    let (_, _, v) = post(&w.s, Some(TOKEN), json!({"query": doc})).await;
    assert!(messages(&v)[0].contains("operationName"), "{v}");
    let (_, _, v) = post(
        &w.s,
        Some(TOKEN),
        json!({"query": doc, "operationName": "Third"}),
    )
    .await;
    let m = messages(&v);
    assert!(m.len() == 1 && m[0].contains("Third"), "{m:?}");

    // The response keeps the order of the selections.
    let r = client()
        .post(w.s.graphql_url())
        .bearer_auth(TOKEN)
        .json(&json!({"query": "{ build(slug: \"acme/app/7\") { uuid number branch __typename state } }"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = |k: &str| r.find(&format!("\"{k}\"")).unwrap();
    assert!(at("uuid") < at("number") && at("number") < at("branch"));
    assert!(at("branch") < at("__typename") && at("__typename") < at("state"));

    // Interfaces as type conditions, __typename on unions.
    let q = r#"{ build(slug: "acme/app/7") { ... on Node { id } jobs(first: 1) { edges { node {
        __typename ... on JobInterface { uuid retried } ... on Node { id } } } } } }"#;
    let d = data(&w.s, q, json!({})).await;
    let node = &d["build"]["jobs"]["edges"][0]["node"];
    assert_eq!(node["__typename"], "JobTypeCommand");
    assert_eq!(node["uuid"], w.two_retry.as_str());
    assert!(node["id"].as_str().unwrap().len() > 20);
    assert!(d["build"]["id"].is_string());
}

#[tokio::test]
async fn live_builds_show_in_graphql_at_once() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::running("acme", "live", 1);
    let job = b.add_job("Tests");
    s.add_build(b);
    let q = r#"{ build(slug: "acme/live/1") { state finishedAt jobs { edges { node { ... on JobTypeCommand {
        uuid state finishedAt artifacts { count edges { node { uuid path state downloadURL } } } } } } } } }"#;
    let d = data(&s, q, json!({})).await;
    assert_eq!(d["build"]["state"], "RUNNING");
    assert_eq!(d["build"]["finishedAt"], Json::Null);
    let node = &d["build"]["jobs"]["edges"][0]["node"];
    assert_eq!(node["state"], "RUNNING");
    assert_eq!(node["finishedAt"], Json::Null);
    assert_eq!(node["artifacts"]["count"], 0);

    // An artifact starts uploading, then finishes; the job and the build finish.
    let mut id = String::new();
    assert!(s.update_build("acme", "live", 1, |b| {
        id = b.add_artifact_with(&job, "report.txt", "all good", |a| {
            a.state = Some("new".into())
        });
    }));
    let d = data(&s, q, json!({})).await;
    let a = &d["build"]["jobs"]["edges"][0]["node"]["artifacts"]["edges"][0]["node"];
    assert_eq!(a["uuid"], id.as_str());
    assert_eq!(a["state"], "new");
    let url = a["downloadURL"].as_str().unwrap().to_string();
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "not uploaded yet");

    assert!(s.set_artifact_state(&id, "finished"));
    assert!(s.update_build("acme", "live", 1, |b| {
        assert!(b.set_job_state(&job, "passed"));
    }));
    assert!(s.set_build_state("acme", "live", 1, "passed"));
    let d = data(&s, q, json!({})).await;
    assert_eq!(d["build"]["state"], "PASSED");
    assert!(d["build"]["finishedAt"].as_str().unwrap().ends_with('Z'));
    let node = &d["build"]["jobs"]["edges"][0]["node"];
    assert_eq!(node["state"], "FINISHED");
    assert!(node["finishedAt"].is_string());
    assert_eq!(node["artifacts"]["edges"][0]["node"]["state"], "finished");
    let body = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "all good");

    assert!(!s.set_build_state("acme", "live", 2, "passed"));
    assert!(!s.update_build("acme", "nope", 1, |_| panic!("not called")));
}

#[test]
fn job_rest_types_map_to_the_union() {
    // The builder's REST job types, as the REST endpoint shows them.
    let mut b = FakeBuild::new("a", "b", 1);
    for kind in ["script", "waiter", "trigger", "manual"] {
        b.add_job_of_type(kind, kind);
    }
    let kinds: Vec<Option<&str>> = b
        .build
        .jobs
        .iter()
        .map(|j: &Job| j.kind.as_deref())
        .collect();
    assert_eq!(
        kinds,
        [
            Some("script"),
            Some("waiter"),
            Some("trigger"),
            Some("manual")
        ]
    );
}
