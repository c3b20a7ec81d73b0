use serde_json::json;

use super::*;
use bkfs_fake::scripted::{serve, Reply, Server};

fn bref() -> BuildRef {
    "acme/web/7".parse().unwrap()
}

fn client(api: &Server) -> ApiClient {
    ApiClient::new(&api.base, Token::new("tok")).unwrap()
}

fn artifacts(ids: std::ops::Range<u32>) -> serde_json::Value {
    json!(ids
        .map(|i| json!({"id": format!("a{i}"), "job_id": "j 1"}))
        .collect::<Vec<_>>())
}

#[tokio::test]
async fn job_artifacts_follow_next_links() {
    let api = serve(|_, s, base| {
        let path = "/v2/organizations/acme/pipelines/web/builds/7/jobs/j%201/artifacts";
        match s.param("page") {
            Some("1") => Reply::json(artifacts(0..2)).header(
                "Link",
                &format!(r#"<{base}{path}?page=2&per_page=100>; rel="next""#),
            ),
            // Relative links resolve against the page that carried them.
            Some("2") => {
                Reply::json(artifacts(2..3)).header("Link", r#"<?page=3&per_page=100>; rel="next""#)
            }
            _ => Reply::json(artifacts(3..4)),
        }
    })
    .await;
    let got = client(&api)
        .list_job_artifacts(&bref(), "j 1")
        .await
        .unwrap();
    let ids: Vec<&str> = got.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a0", "a1", "a2", "a3"]);
    let seen = api.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(
            s.path,
            "/v2/organizations/acme/pipelines/web/builds/7/jobs/j%201/artifacts"
        );
        assert_eq!(s.param("per_page"), Some("100"));
        assert_eq!(s.header("authorization"), Some("Bearer tok"));
    }
}

#[tokio::test]
async fn job_artifacts_fetch_known_pages_at_once() {
    let api = serve(|_, s, base| {
        let page: u32 = s.param("page").unwrap().parse().unwrap();
        let mut r = Reply::json(artifacts(page * 10..page * 10 + 2));
        if page == 1 {
            let u = format!("{base}{}", s.path);
            r = r.header(
                "Link",
                &format!(
                    r#"<{u}?page=2&per_page=100>; rel="next", <{u}?page=4&per_page=100>; rel="last""#
                ),
            );
        }
        r
    })
    .await;
    let got = client(&api).list_job_artifacts(&bref(), "j").await.unwrap();
    let ids: Vec<&str> = got.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(
        ids,
        ["a10", "a11", "a20", "a21", "a30", "a31", "a40", "a41"]
    );
    assert_eq!(api.seen().len(), 4);
}

fn builds(from: u64, n: u64) -> serde_json::Value {
    json!((from..from + n)
        .rev()
        .map(|i| json!({"id": format!("b{i}"), "number": i, "jobs": null}))
        .collect::<Vec<_>>())
}

/// Pages of `per_page` builds, newest first, always with a next page.
async fn build_pages() -> Server {
    serve(|_, s, base| {
        let per: u64 = s.param("per_page").unwrap().parse().unwrap();
        let page: u64 = s.param("page").map_or(1, |p| p.parse().unwrap());
        let top = 1000 - (page - 1) * per;
        Reply::json(builds(top - per + 1, per)).header(
            "Link",
            &format!(
                r#"<{base}{}?page={}&per_page={per}>; rel="next", <{base}{}?page=9&per_page={per}>; rel="last""#,
                s.path,
                page + 1,
                s.path
            ),
        )
    })
    .await
}

#[tokio::test]
async fn list_builds_stops_at_the_limit() {
    let api = build_pages().await;
    let c = client(&api);
    let got = c
        .list_builds("acme", "web", 150, Some("main"), Some("passed"))
        .await
        .unwrap();
    assert_eq!(got.len(), 150);
    assert_eq!(got[0].number, 1000);
    assert_eq!(got[149].number, 851);
    let seen = api.seen();
    assert_eq!(seen.len(), 2, "a third page is not needed");
    let first = &seen[0];
    assert_eq!(first.path, "/v2/organizations/acme/pipelines/web/builds");
    assert_eq!(
        first.query,
        [
            ("per_page".to_string(), "100".to_string()),
            ("branch".to_string(), "main".to_string()),
            ("state".to_string(), "passed".to_string()),
        ]
    );

    let api = build_pages().await;
    let got = client(&api)
        .list_builds("acme", "web", 3, None, Some(""))
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|b| b.number).collect::<Vec<_>>(),
        [1000, 999, 998]
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].query, [("per_page".to_string(), "3".to_string())]);

    assert!(client(&api)
        .list_builds("acme", "web", 0, None, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(api.seen().len(), 1, "a limit of 0 asks nothing");
}

#[tokio::test]
async fn token_goes_only_to_api_and_graphql_origins() {
    let gql = serve(|_, _, _| Reply::status(500, "must not be called")).await;
    let gql_url = format!("{}/v1", gql.base);
    // A REST listing whose next link points at the GraphQL host.
    let api = serve(move |_, _, _| {
        Reply::json(artifacts(0..1)).header("Link", &format!(r#"<{gql_url}/x>; rel="next""#))
    })
    .await;
    let c = client(&api)
        .with_graphql(&format!("{}/v1", gql.base))
        .unwrap();
    let u = |s: &str| Url::parse(s).unwrap();
    assert!(c.may_carry_token(&u(&format!("{}/v2/x", api.base))));
    assert!(c.may_carry_token(&u(&format!("{}/v1", gql.base))));
    assert!(c.may_carry_token(&u(&format!("{}/elsewhere", gql.base))));
    assert!(!c.may_carry_token(&u("https://s3.example/a")));
    assert!(!client(&api).may_carry_token(&u(&format!("{}/v1", gql.base))));

    let e = c.list_build_artifacts(&bref()).await.unwrap_err();
    assert!(
        matches!(&e, ApiError::Malformed { detail, .. } if detail.contains("away from the API host")),
        "{e}"
    );
    assert!(gql.seen().is_empty());

    for bad in [
        "not a url",
        "ftp://graphql.example/v1",
        "https://user:pw@graphql.example/v1",
    ] {
        let e = client(&api).with_graphql(bad).unwrap_err();
        assert!(!e.contains("pw"), "{e}");
    }
}

#[test]
fn error_messages() {
    let m = |s: u16, b: &str| error_message(StatusCode::from_u16(s).unwrap(), b);
    assert_eq!(m(404, r#"{"message":"Not Found"}"#), "Not Found");
    assert_eq!(
        m(401, r#"{"errors":[{"message":"bad token"}]}"#),
        "bad token"
    );
    assert_eq!(m(502, "  upstream down \n"), "upstream down");
    assert_eq!(m(503, ""), "Service Unavailable");
    assert_eq!(m(500, &"x".repeat(500)).len(), 200);
}
