use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::api::model::split_path;
use crate::secret::Token;
use bkfs_fake::scripted::{serve, Reply, Server};

const TOKEN: &str = "secret-token-123";

fn bref() -> BuildRef {
    "acme/web/7".parse().unwrap()
}

async fn client(api: &Server, gql: &Server) -> ApiClient {
    ApiClient::new(&api.base, Token::new(TOKEN))
        .unwrap()
        .with_graphql(&format!("{}/v1", gql.base))
        .unwrap()
}

/// A REST server that must not be called.
async fn no_rest() -> Server {
    serve(|_, _, _| Reply::status(500, "REST must not be used")).await
}

fn page(jobs: Vec<Value>, next: Option<&str>) -> Value {
    json!({"data": {"build": {
        "uuid": "b-uuid", "number": 7, "state": "PASSED",
        "url": "https://buildkite.com/acme/web/builds/7",
        "createdAt": "2024-01-01T00:00:00Z", "startedAt": "2024-01-01T00:00:01Z",
        "finishedAt": null, "branch": "main", "commit": "abc", "message": "m",
        "someNewField": {"x": 1},
        "jobs": {
            "count": 6,
            "pageInfo": {"hasNextPage": next.is_some(), "endCursor": next},
            "edges": jobs.into_iter().map(|n| json!({"cursor": "x", "node": n})).collect::<Vec<_>>(),
        }
    }}})
}

fn cmd(uuid: &str, created: &str, extra: Value) -> Value {
    let mut j = json!({
        "__typename": "JobTypeCommand", "uuid": uuid, "label": format!(":rspec: {uuid}"),
        "state": "FINISHED", "url": format!("https://buildkite.com/acme/web/builds/7#{uuid}"),
        "createdAt": created, "startedAt": null, "finishedAt": null,
        "parallelGroupIndex": null, "parallelGroupTotal": null, "retried": false,
        "step": null, "retrySource": null,
        "artifacts": {"count": 0, "pageInfo": {"hasNextPage": false}, "edges": []},
    });
    for (k, v) in extra.as_object().unwrap() {
        j[k] = v.clone();
    }
    j
}

fn artifacts(count: u64, more: bool, nodes: Vec<Value>) -> Value {
    json!({"count": count, "pageInfo": {"hasNextPage": more},
           "edges": nodes.into_iter().map(|n| if n.is_null() { n } else { json!({"node": n}) }).collect::<Vec<_>>()})
}

const URL_A1: &str = "https://s3.example/a1?X-Amz-Expires=600&X-Amz-Signature=sig";

/// Build order C1, W, C2, B, C3, T; GraphQL lists newest first, and the server's order
/// swaps C1 and C2 (C2 was created half a second after C1).
fn two_pages(n: usize) -> Value {
    if n == 0 {
        page(
            vec![
                json!({"__typename": "JobTypeTrigger", "uuid": "T", "label": "deploy", "state": "FINISHED"}),
                cmd(
                    "C3",
                    "2024-01-01T00:00:03Z",
                    json!({"retrySource": {"uuid": "C1"}, "artifacts": null}),
                ),
                Value::Null,
                json!({"__typename": "JobTypeBlock", "uuid": "B", "label": "ok?", "state": "UNBLOCKED"}),
                cmd(
                    "C1",
                    "2024-01-01T00:00:01Z",
                    json!({"retried": true, "state": "FAILED", "artifacts": artifacts(3, false, vec![
                        json!({"uuid": "a1", "path": "logs/a.txt", "size": 10, "sha1sum": "s1",
                               "mimeType": "text/plain", "state": "FINISHED", "downloadURL": URL_A1}),
                        Value::Null,
                        json!({"uuid": "a2", "path": "top.txt", "size": "12", "state": "new",
                               "downloadURL": null, "expiresAt": "later"}),
                    ])}),
                ),
            ],
            Some("cursor-1"),
        )
    } else {
        page(
            vec![
                json!({"__typename": "JobTypeWait", "uuid": "W", "label": null, "state": "FINISHED"}),
                cmd(
                    "C2",
                    "2024-01-01T00:00:01.500Z",
                    json!({"parallelGroupIndex": 0, "parallelGroupTotal": 2, "step": {"key": "unit"},
                    "artifacts": artifacts(501, true, vec![
                        json!({"uuid": "a3", "path": "x/y/z.bin", "size": 3,
                               "downloadURL": "https://s3.example/a3?Expires=99"}),
                    ])}),
                ),
            ],
            None,
        )
    }
}

#[tokio::test]
async fn fetches_and_converts_a_two_page_build() {
    let api = no_rest().await;
    let gql = serve(|n, _, _| Reply::json(two_pages(n))).await;
    let c = client(&api, &gql).await;
    let g = c.graphql_build(&bref()).await.unwrap();

    // The requests.
    let seen = gql.seen();
    assert_eq!(seen.len(), 2);
    for (s, after) in seen.iter().zip([Value::Null, json!("cursor-1")]) {
        assert_eq!(s.method, "POST");
        assert_eq!(s.path, "/v1");
        assert_eq!(s.header("content-type"), Some("application/json"));
        assert_eq!(
            s.header("authorization").unwrap(),
            format!("Bearer {TOKEN}")
        );
        let body = s.json();
        assert_eq!(body["query"], QUERY);
        assert_eq!(
            body["variables"],
            json!({"slug": "acme/web/7", "jobs": JOBS_PER_PAGE, "after": after,
                   "artifacts": ARTIFACTS_PER_JOB})
        );
    }
    assert!(api.seen().is_empty());

    // The build.
    let b = &g.build;
    assert_eq!(b.id, "b-uuid");
    assert_eq!(b.number, 7);
    assert_eq!(b.state.as_deref(), Some("passed"));
    assert_eq!(
        b.web_url.as_deref(),
        Some("https://buildkite.com/acme/web/builds/7")
    );
    assert_eq!(b.created_at.as_deref(), Some("2024-01-01T00:00:00Z"));
    assert_eq!(b.finished_at, None);
    assert_eq!(b.branch.as_deref(), Some("main"));

    // Jobs in creation order, REST-shaped.
    let ids: Vec<&str> = b.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["C1", "W", "C2", "B", "C3", "T"]);
    let kinds: Vec<&str> = b.jobs.iter().map(|j| j.kind.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        ["script", "waiter", "script", "manual", "script", "trigger"]
    );
    let c1 = &b.jobs[0];
    assert_eq!(c1.name.as_deref(), Some(":rspec: C1"));
    assert_eq!(c1.state.as_deref(), Some("failed"));
    assert_eq!(c1.retried, Some(true));
    assert_eq!(c1.retried_in_job_id.as_deref(), Some("C3"));
    assert_eq!(c1.created_at.as_deref(), Some("2024-01-01T00:00:01Z"));
    assert_eq!(
        c1.web_url.as_deref(),
        Some("https://buildkite.com/acme/web/builds/7#C1")
    );
    let c2 = &b.jobs[2];
    assert_eq!(c2.step_key.as_deref(), Some("unit"));
    assert_eq!(
        (c2.parallel_group_index, c2.parallel_group_total),
        (Some(0), Some(2))
    );
    assert_eq!(c2.retried_in_job_id, None);
    assert_eq!(b.jobs[1].name, None);
    assert_eq!(b.jobs[3].state.as_deref(), Some("unblocked"));

    // Artifacts.
    let a: Vec<(&str, &str, &str, &str)> = g
        .artifacts
        .iter()
        .map(|a| {
            (
                a.id.as_str(),
                a.job_id.as_deref().unwrap(),
                a.dirname.as_deref().unwrap(),
                a.filename.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        a,
        [
            ("a1", "C1", "logs", "a.txt"),
            ("a2", "C1", ".", "top.txt"),
            ("a3", "C2", "x/y", "z.bin")
        ]
    );
    let a1 = &g.artifacts[0];
    assert_eq!(a1.path.as_deref(), Some("logs/a.txt"));
    assert_eq!(a1.file_size, Some(10));
    assert_eq!(a1.sha1sum.as_deref(), Some("s1"));
    assert_eq!(a1.mime_type.as_deref(), Some("text/plain"));
    assert!(a1.is_finished());
    assert_eq!(g.artifacts[1].file_size, None, "a size of the wrong type");
    assert_eq!(g.artifacts[1].state.as_deref(), Some("new"));
    assert_eq!(
        g.urls,
        [
            ("a1".to_string(), URL_A1.to_string()),
            (
                "a3".to_string(),
                "https://s3.example/a3?Expires=99".to_string()
            )
        ]
    );
    // C2 has 501 artifacts, C3's list is null.
    assert_eq!(g.truncated_jobs, ["C2", "C3"]);
    assert!(g.fetched_at.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn repeated_jobs_across_pages_are_kept_once() {
    // A job created between two page fetches shifts the offsets: page 2 repeats C2.
    let api = no_rest().await;
    let gql = serve(|n, _, _| {
        let c2 = cmd("C2", "2024-01-01T00:00:02Z", json!({}));
        let c1 = cmd("C1", "2024-01-01T00:00:01Z", json!({}));
        Reply::json(if n == 0 {
            page(vec![c2], Some("c"))
        } else {
            page(vec![c2, c1], None)
        })
    })
    .await;
    let g = client(&api, &gql)
        .await
        .graphql_build(&bref())
        .await
        .unwrap();
    let ids: Vec<&str> = g.build.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, ["C1", "C2"]);
}

/// What `graphql_build` says when the GraphQL server answers every request with `reply`.
async fn outcome(reply: fn() -> Reply) -> (GraphqlError, usize) {
    let api = no_rest().await;
    let gql = serve(move |_, _, _| reply()).await;
    let e = client(&api, &gql)
        .await
        .graphql_build(&bref())
        .await
        .unwrap_err();
    let shown = e.to_string();
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(!shown.contains("Signature"), "{shown}");
    (e, gql.seen().len())
}

#[tokio::test]
async fn statuses_and_bodies_map_to_errors() {
    let (e, _) =
        outcome(|| Reply::status(401, r#"{"errors":[{"message":"Authentication required"}]}"#))
            .await;
    assert_eq!(
        e,
        GraphqlError::Refused {
            status: 401,
            message: "Authentication required".into()
        }
    );
    let (e, _) = outcome(|| Reply::status(403, r#"{"message":"no GraphQL access"}"#)).await;
    assert_eq!(
        e,
        GraphqlError::Refused {
            status: 403,
            message: "no GraphQL access".into()
        }
    );
    let (e, n) = outcome(|| Reply::status(404, "")).await;
    assert!(
        matches!(&e, GraphqlError::Unavailable { detail, .. } if detail.contains("404") && detail.contains("/v1")),
        "{e}"
    );
    assert_eq!(n, 1);
    assert!(e.is_lasting(), "no endpoint: GraphQL is best left alone");
    let (e, _) = outcome(|| Reply::status(405, "nope")).await;
    assert!(matches!(&e, GraphqlError::Unavailable { detail, .. } if detail.contains("405: nope")));
    assert!(e.is_lasting());
    let (e, _) = outcome(|| Reply::status(200, "<html>hello</html>")).await;
    assert!(matches!(&e, GraphqlError::Unavailable { detail, .. } if detail.contains("not JSON")));
    assert!(e.is_lasting());
    let (e, _) = outcome(|| Reply::status(503, "busy")).await;
    assert!(matches!(&e, GraphqlError::Unavailable { detail, .. } if detail.contains("503")));
    assert!(!e.is_lasting(), "a 5xx may pass");
}

#[tokio::test]
async fn graphql_level_errors() {
    let (e, _) = outcome(|| {
        Reply::json(json!({"data": null, "errors": [
            {"message": "Query has complexity of 60000, which exceeds max complexity of 50000"},
            {"locations": []}, {"message": "c"}, {"message": "d"}]}))
    })
    .await;
    let GraphqlError::Errors { messages } = &e else {
        panic!("{e}")
    };
    assert_eq!(messages.len(), 3);
    assert!(messages[0].contains("exceeds max complexity"));
    assert!(e.to_string().contains("exceeds max complexity"));

    let (e, _) = outcome(|| Reply::json(json!({"data": {"build": null}}))).await;
    assert_eq!(e, GraphqlError::BuildNotFound);

    for body in [
        json!({"foo": 1}),
        json!({"data": {}}),
        json!({"data": {"build": {"uuid": "b", "number": 7}}}),
        json!({"data": {"build": {"uuid": "b", "jobs": "many"}}}),
        json!({"data": {"build": {"number": 7, "jobs": {"edges": []}}}}),
    ] {
        let api = no_rest().await;
        let gql = serve(move |_, _, _| Reply::json(body.clone())).await;
        let e = client(&api, &gql)
            .await
            .graphql_build(&bref())
            .await
            .unwrap_err();
        assert!(matches!(e, GraphqlError::Malformed { .. }), "{e}");
    }
}

#[tokio::test]
async fn a_repeated_cursor_is_an_error() {
    let (e, n) = outcome(|| Reply::json(page(vec![], Some("same")))).await;
    assert!(matches!(&e, GraphqlError::Malformed { detail } if detail.contains("cursor")));
    assert_eq!(n, 2);
    let (e, n) = outcome(|| {
        Reply::json(json!({"data": {"build": {"uuid": "b", "jobs": {
            "pageInfo": {"hasNextPage": true, "endCursor": null}, "edges": []}}}}))
    })
    .await;
    assert!(matches!(&e, GraphqlError::Malformed { detail } if detail.contains("endCursor")));
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_long_rate_limit_fails_at_once_and_spares_rest() {
    // 429 with a window longer than bkfs waits: RateLimited without waiting.
    let t = std::time::Instant::now();
    let (e, n) = outcome(|| {
        Reply::status(
            429,
            r#"{"errors":[{"message":"try again in 287 seconds"}]}"#,
        )
        .header("RateLimit-Reset", "287")
    })
    .await;
    assert_eq!(e, GraphqlError::RateLimited);
    assert_eq!(n, 1);
    assert!(t.elapsed() < Duration::from_secs(5));

    // A spent GraphQL budget delays neither REST nor anything but GraphQL.
    let api = serve(|_, _, _| Reply::json(json!({"uuid": "t", "scopes": []}))).await;
    let gql = serve(|_, _, _| {
        Reply::json(page(vec![], None))
            .header("RateLimit-Remaining", "0")
            .header("RateLimit-Limit", "20000")
            .header("RateLimit-Reset", "290")
    })
    .await;
    let c = client(&api, &gql).await;
    c.graphql_build(&bref()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), c.access_token())
        .await
        .expect("REST is not held up by the GraphQL budget")
        .unwrap();
    assert_eq!(
        c.graphql_build(&bref()).await.unwrap_err(),
        GraphqlError::RateLimited
    );
    assert_eq!(gql.seen().len(), 1, "the spent budget is not even tried");
}

#[tokio::test]
async fn retries_and_short_429s_resend_the_same_body() {
    let api = no_rest().await;
    let gql = serve(|n, _, _| match n {
        0 => Reply::status(502, "bad gateway"),
        1 => Reply::status(429, "{}").header("RateLimit-Reset", "1"),
        _ => Reply::json(page(
            vec![cmd("C1", "2024-01-01T00:00:01Z", json!({}))],
            None,
        )),
    })
    .await;
    let g = client(&api, &gql)
        .await
        .graphql_build(&bref())
        .await
        .unwrap();
    assert_eq!(g.build.jobs.len(), 1);
    let seen = gql.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|s| s.body == seen[0].body && s.method == "POST"));
}

#[tokio::test]
async fn unavailable_without_endpoint_or_server() {
    let api = no_rest().await;
    let plain = ApiClient::new(&api.base, Token::new(TOKEN)).unwrap();
    let e = plain.graphql_build(&bref()).await.unwrap_err();
    assert!(
        matches!(&e, GraphqlError::Unavailable { detail, .. } if detail.contains("no GraphQL endpoint"))
    );

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = plain.with_graphql(&format!("http://{dead}/v1")).unwrap();
    let e = c.graphql_build(&bref()).await.unwrap_err();
    assert!(
        matches!(&e, GraphqlError::Unavailable { detail, .. } if detail.contains("cannot reach")),
        "{e}"
    );
    assert!(!e.is_lasting(), "a network failure may pass");
    assert!(api.seen().is_empty());
}

#[test]
fn url_lifetimes() {
    let now = 1_700_000_000;
    let l = |u: &str| url_lifetime(u, now);
    assert_eq!(
        l("https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20240101T000000Z&X-Amz-Expires=600&X-Amz-Signature=s"),
        Some(Duration::from_secs(600))
    );
    assert_eq!(
        l("https://storage.googleapis.com/b/k?X-Goog-Expires=900&X-Goog-Signature=s"),
        Some(Duration::from_secs(900))
    );
    assert_eq!(
        l("https://buildkiteartifacts.com/a?AWSAccessKeyId=K&Expires=1700000060&Signature=s"),
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        l("https://d1.cloudfront.net/a?Expires=1700000005&Signature=s&Key-Pair-Id=K"),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        l("https://x/a?Expires=1700000000&Signature=s"),
        Some(Duration::ZERO),
        "now"
    );
    assert_eq!(
        l("https://x/a?Expires=1600000000&Signature=s"),
        Some(Duration::ZERO),
        "past"
    );
    assert_eq!(l("https://x/a?X-Amz-Expires=soon"), None);
    assert_eq!(l("https://x/a?Expires=tomorrow"), None);
    assert_eq!(l("https://x/public/a.txt"), None);
    assert_eq!(l("not a url"), None);
    // SigV4 wins over a stray absolute parameter.
    assert_eq!(
        l("https://x/a?Expires=1600000000&X-Amz-Expires=30"),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn time_keys_compare_fractions() {
    let k = |s| time_key(s).unwrap();
    assert!(k("2024-01-01T00:00:01Z") < k("2024-01-01T00:00:01.5Z"));
    assert!(k("2024-01-01T00:00:01.5Z") < k("2024-01-01T00:00:01.600Z"));
    assert!(k("2024-01-01T00:00:01.999999Z") < k("2024-01-01T00:00:02Z"));
    assert_eq!(
        k("2024-01-01T00:00:01+00:00"),
        k("2024-01-01T00:00:01.000Z")
    );
    for bad in [
        "",
        "2024-01-01",
        "2024-01-01T00:00:01",
        "2024-01-01T00:00:01+02:00",
        "2024-01-01T00:00:01.x1Z",
        "2024-01-01 00:00:01Z",
    ] {
        assert_eq!(time_key(bad), None, "{bad}");
    }
}

#[test]
fn jobs_without_times_keep_their_places() {
    let job = |id: &str, t: Option<&str>| {
        let mut v = json!({"uuid": id});
        if let Some(t) = t {
            v["createdAt"] = json!(t);
        }
        serde_json::from_value::<GJob>(v).unwrap()
    };
    let jobs = vec![
        job("c", Some("2024-01-01T00:00:03Z")),
        job("w", None),
        job("a", Some("2024-01-01T00:00:01Z")),
        job("x", Some("garbage")),
        job("b", Some("2024-01-01T00:00:01Z")),
    ];
    let ids: Vec<String> = sort_by_creation(jobs)
        .into_iter()
        .map(|j| j.uuid.unwrap())
        .collect();
    assert_eq!(ids, ["a", "w", "b", "x", "c"]);
}

#[test]
fn split_paths() {
    assert_eq!(split_path("a/b/c.txt"), ("a/b".into(), "c.txt".into()));
    assert_eq!(split_path("c.txt"), (".".into(), "c.txt".into()));
    assert_eq!(split_path("/c.txt"), ("/".into(), "c.txt".into()));
}
