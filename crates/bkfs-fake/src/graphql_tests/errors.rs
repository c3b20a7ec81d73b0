//! How the fake's GraphQL refuses: invalid requests, non-null propagation, auth and scopes,
//! modes and faults, the rate limit it shares with REST.

use super::*;

#[tokio::test]
async fn invalid_requests_get_helpful_errors() {
    let w = setup(1);
    let s = &w.s;
    let cases: Vec<(&str, Json, &str)> = vec![
        ("{ build(slug: \"acme/app/7\") { foo } }", json!({}), "`foo`"),
        ("{ nope }", json!({}), "`nope`"),
        ("{ build(slug: \"a\") { jobs { edges { node { label } } } } }", json!({}), "`label`"),
        ("{ build(slug: \"a\") { ... on Pipeline { slug } } }", json!({}), "cannot be applied to `Build`"),
        ("{ build(slug: \"a\") { ... on Nope { id } } }", json!({}), "`Nope`"),
        ("{ build(slug: \"a\") { ... on BuildStates { id } } }", json!({}), "composite type"),
        ("{ build(slug: \"a\", number: 7) { id } }", json!({}), "argument `number`"),
        ("{ build(slug: 7.5) { id } }", json!({}), "found a float"),
        ("{ build(slug: \"a\") { jobs(first: \"ten\") { count } } }", json!({}), "found a string"),
        ("{ build(slug: \"a\") { jobs(type: [SCRIPT]) { count } } }", json!({}), "`SCRIPT`"),
        ("{ build(slug: \"a\") { jobs(first: 3000000000) { count } } }", json!({}), "32-bit"),
        ("{ artifact { path } }", json!({}), "required argument `Query.artifact(uuid:)`"),
        ("{ artifact(uuid: null) { path } }", json!({}), "uuid"),
        ("{ build(slug: \"a\") }", json!({}), "subselection set"),
        ("{ build(slug: \"a\") { state { id } } }", json!({}), "enum type `BuildStates`"),
        ("{ build(slug: \"a\") { number { id } } }", json!({}), "scalar type `Int`"),
        ("query($s: ID!) { build(slug: $s) { id } }", json!({}), "non-null variable 's'"),
        ("query($s: ID!) { build(slug: $s) { id } }", json!({"s": null}), "null value for variable s"),
        ("query($f: Int) { build(slug: \"a\") { jobs(first: $f) { count } } }", json!({"f": "x"}), "could not coerce variable f"),
        ("query($t: [JobTypes!]) { build(slug: \"a\") { jobs(type: $t) { count } } }", json!({"t": ["SCRIPT"]}), "could not coerce variable t"),
        ("query($s: ID) { build { id } }", json!({}), "unused variable: `$s`"),
        ("query Q { build(slug: $s) { id } }", json!({}), "$s"),
        ("query($s: String) { build(slug: $s) { id } }", json!({}), "$s"),
        ("query($f: Int) { artifact(uuid: $f) { id } }", json!({}), "`$f` of type `Int`"),
        ("query($u: ID) { artifact(uuid: $u) { id } }", json!({}), "`$u` of type `ID`"),
        ("query($s: Build) { build(slug: \"a\") { id } }", json!({}), "input type"),
        ("query($s: Nope) { build(slug: \"a\") { id } }", json!({}), "cannot find type `Nope`"),
        ("{ build(slug: \"a\") { ...F } }", json!({}), "cannot find fragment `F`"),
        ("fragment F on Build { id } { build(slug: \"a\") { id } }", json!({}), "F"),
        ("fragment F on Pipeline { slug } { build(slug: \"a\") { ...F } }", json!({}), "F"),
        ("{ build(slug: \"a\") { id @deprecated } }", json!({}), "deprecated"),
        ("query @skip(if: true) { build(slug: \"a\") { id } }", json!({}), "QUERY location"),
        ("{ build(slug: \"a\") { id @skip } }", json!({}), "if"),
        ("{ build(slug: \"a\") { x: id x: uuid } }", json!({}), "x"),
        ("{ build(slug: \"a\") { jobs(first: 1) { count } jobs(first: 2) { count } } }", json!({}), "conflicting field arguments"),
        ("{ a: build(slug: \"a\") { id } a: build(slug: \"a\") { x: id } a: build(slug: \"a\") { x: uuid } }", json!({}), "same alias `x`"),
        ("mutation { buildCancel(input: {id: \"x\"}) { clientMutationId } }", json!({}), "queries only"),
        ("subscription { build { id } }", json!({}), "`Subscription`"),
        ("{ __schema { types { name } } }", json!({}), "introspection is disabled"),
        ("query A { build(slug: \"a\") { id } } query A { build(slug: \"a\") { id } }", json!({}), "defined multiple times"),
        ("{ build(slug: \"a\") { id } } query B { build(slug: \"a\") { id } }", json!({}), "anonymous operation cannot be selected"),
        ("{ build(slug: \"a\") { id }", json!({}), "syntax error"),
        ("{ build(slug: \"a\") { id } } }", json!({}), "syntax error"),
    ];
    // apollo-compiler's wording: each answer is `data: null` with an error that names the
    // offending part.
    let mut wrong = Vec::new();
    for (q, vars, names) in cases {
        let v = gql(s, q, vars).await;
        let m = messages(&v);
        if !(v["data"].is_null() && !m.is_empty() && m.iter().any(|m| m.contains(names))) {
            wrong.push(format!("{q}: {m:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Locations point at the offending token.
    let (_, err) = request_error(
        s,
        "{\n  build(slug: \"a\") {\n    id\n    foo\n  }\n}",
        json!({}),
    )
    .await;
    assert_eq!(err["locations"], json!([{"line": 4, "column": 5}]));

    // Fragment cycles are reported, and do not hang the server.
    let v = gql(
        s,
        "fragment A on Build { ...B } fragment B on Build { ...A } { build(slug: \"a\") { ...A } }",
        json!({}),
    )
    .await;
    let m = messages(&v);
    assert!(
        m.iter().any(|m| m.contains("cannot reference itself")),
        "{m:?}"
    );
    // Several problems are reported together.
    let v = gql(s, "{ build(slug: \"a\") { foo bar } }", json!({})).await;
    let m = messages(&v);
    assert!(
        m.iter().any(|m| m.contains("`foo`")) && m.iter().any(|m| m.contains("`bar`")),
        "{m:?}"
    );

    // Requests that are not GraphQL at all: 400.
    for body in [
        "not json",
        "{\"nope\": 1}",
        "{\"query\": 5}",
        "{\"query\": \"{ build { id } }\", \"variables\": [1]}",
    ] {
        let r = client()
            .post(s.graphql_url())
            .bearer_auth(TOKEN)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Json = r.json().await.unwrap();
        assert!(!messages(&v)[0].is_empty());
    }
    let r = client()
        .get(s.graphql_url())
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(s.count(Count::GraphqlStatus(400)), 4);
    assert_eq!(s.count(Count::GraphqlStatus(405)), 1);
    assert_eq!(s.count(Count::Api), 0);
}

#[tokio::test]
async fn non_null_errors_propagate_to_the_nearest_nullable_field() {
    let w = setup(1);
    // A state GraphQL cannot express: Build.state is BuildStates!, so `build` becomes null.
    w.s.update_build("acme", "app", 7, |b| {
        b.build.state = Some("exploded".into())
    });
    let v = gql(
        &w.s,
        "{ build(slug: \"acme/app/7\") { number state } }",
        json!({}),
    )
    .await;
    assert_eq!(v["data"], json!({"build": null}));
    let m = messages(&v);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].contains("EXPLODED") && m[0].contains("BuildStates"),
        "{m:?}"
    );
    assert_eq!(v["errors"][0]["path"], json!(["build", "state"]));
    assert_eq!(w.s.count(Count::GraphqlErrors), 1);
}

#[tokio::test]
async fn auth_access_and_scopes() {
    let w = setup(1);
    let s = &w.s;
    s.add_token("builds-only", &["read_builds"]);
    s.add_token("artifacts-only", &["read_artifacts"]);
    let q = json!({"query": "{ build(slug: \"acme/app/7\") { number } }"});

    let (status, h, v) = post(s, None, q.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(h.contains_key("ratelimit-remaining"));
    assert!(messages(&v)[0].contains("API Access Token"));
    let (status, _, _) = post(s, Some("nope"), q.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    s.set_graphql_access(TOKEN, false);
    let (status, _, v) = post(s, Some(TOKEN), q.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        messages(&v),
        ["The API Access Token does not have GraphQL API access enabled"]
    );
    // REST is unaffected.
    let rest = client()
        .get(format!("{}/v2/access-token", s.api_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), StatusCode::OK);
    s.set_graphql_access(TOKEN, true);
    let (status, _, _) = post(s, Some(TOKEN), q.clone()).await;
    assert_eq!(status, StatusCode::OK);

    // Missing scopes: that field is null with an error, the rest still runs.
    let (status, _, v) = post(s, Some("artifacts-only"), q.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"], json!({"build": null}));
    assert_eq!(
        messages(&v),
        ["Your access token does not have the required scope(s): read_builds"]
    );
    let id = &w.b.artifacts[0].artifact.id;
    let (_, _, v) = post(
        s,
        Some("artifacts-only"),
        json!({"query": "query($u: ID!) { artifact(uuid: $u) { path job { uuid } } }", "variables": {"u": id}}),
    )
    .await;
    assert_eq!(
        v["data"],
        json!({"artifact": {"path": "logs/part-000.log", "job": null}})
    );
    assert_eq!(v["errors"][0]["path"], json!(["artifact", "job"]));
    let (_, _, v) = post(
        s,
        Some("builds-only"),
        json!({"query": "{ build(slug: \"acme/app/7\") { number jobs(type: COMMAND, first: 1) { edges { node { ... on JobTypeCommand { label artifacts { count } } } } } } }"}),
    )
    .await;
    assert_eq!(
        v["data"]["build"]["jobs"]["edges"][0]["node"],
        json!({"label": "Two", "artifacts": null})
    );
    assert_eq!(
        v["errors"][0]["path"],
        json!(["build", "jobs", "edges", 0, "node", "artifacts"])
    );

    assert_eq!(s.count(Count::GraphqlStatus(401)), 2);
    assert_eq!(s.count(Count::GraphqlStatus(403)), 1);
    assert_eq!(s.count(Count::GraphqlErrors), 3);
    assert_eq!(s.count(Count::Graphql), 7);
    assert_eq!(s.count(Count::Api), 1);
}

#[tokio::test]
async fn modes_and_faults() {
    let w = setup(1);
    let s = &w.s;
    let q = json!({"query": "{ build(slug: \"acme/app/7\") { number } }"});

    s.set_graphql_mode(GraphqlMode::Absent);
    let (status, h, v) = post(s, Some(TOKEN), q.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, json!({"message": "Not Found"}));
    assert!(h.contains_key("ratelimit-limit"));

    s.set_graphql_mode(GraphqlMode::Errors);
    let (status, _, v) = post(s, Some(TOKEN), q.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"], Json::Null);
    assert!(!messages(&v).is_empty());
    let (status, _, _) = post(s, None, q.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    s.set_graphql_mode(GraphqlMode::Normal);
    s.fail_graphql(2, 502);
    s.fail_api(5, 500); // REST faults leave GraphQL alone
    for _ in 0..2 {
        let (status, _, v) = post(s, Some(TOKEN), q.clone()).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(messages(&v), ["Bad Gateway"]);
    }
    assert_eq!(s.graphql_faults_pending(), 0);
    assert_eq!(s.api_faults_pending(), 5);
    let (status, _, v) = post(s, Some(TOKEN), q.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"data": {"build": {"number": 7}}}));

    assert_eq!(s.count(Count::GraphqlStatus(404)), 1);
    assert_eq!(s.count(Count::GraphqlStatus(502)), 2);
    assert_eq!(s.count(Count::GraphqlFaultsInjected), 2);
    assert_eq!(s.count(Count::GraphqlErrors), 1);
    assert_eq!(s.count(Count::Graphql), 6);
    assert_eq!(s.count(Count::Api), 0);
}

#[tokio::test]
async fn rate_limit_is_shared_with_rest_and_latency_applies() {
    let w = setup(1);
    let s = &w.s;
    s.set_rate_limit(3, Duration::from_secs(60), true);
    let q = json!({"query": "{ build(slug: \"acme/app/7\") { number } }"});
    let (status, h, _) = post(s, Some(TOKEN), q.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["ratelimit-limit"], "3");
    assert_eq!(h["ratelimit-remaining"], "2");
    let rest = rest_build(s).await;
    assert_eq!(rest.number, 7);
    let (_, h, _) = post(s, Some(TOKEN), q.clone()).await;
    assert_eq!(h["ratelimit-remaining"], "0");
    let (status, h, v) = post(s, Some(TOKEN), q.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["ratelimit-remaining"], "0");
    assert!(
        h["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            <= 60
    );
    assert!(messages(&v)[0].contains("rate limit"));
    let r = client()
        .get(format!("{}/v2/access-token", s.api_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(s.count(Count::GraphqlStatus(429)), 1);
    assert_eq!(s.count(Count::ApiStatus(429)), 1);

    s.set_rate_limit(200, Duration::from_secs(60), false);
    s.set_api_latency(Duration::from_millis(150));
    let t = Instant::now();
    let (status, _, _) = post(s, Some(TOKEN), q.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(150));
}
