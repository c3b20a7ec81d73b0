//! Hostile and odd input, part 2: the REST client against a scripted local server
//! (`bkfs_fake::scripted`): unknown/missing/null fields, odd `Link` headers, malformed pages
//! (errors name the path, never the query), links to another origin (refused, the token
//! never leaves), and the pagination fixes (relative `Link` URLs, every `Link` field, loops).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use bkfs::api::{ApiClient, ApiError};
use bkfs::build_ref::BuildRef;
use bkfs::secret::Token;
use bkfs::tree::Tree;
use bkfs_fake::scripted::{self, Reply, Seen};
use serde_json::json;

use super::check_tree;

const ARTIFACTS_PATH: &str = "/v2/organizations/o/pipelines/p/builds/1/artifacts";
const BUILD_PATH: &str = "/v2/organizations/o/pipelines/p/builds/1";

#[derive(Clone)]
struct Canned {
    status: u16,
    /// One `Link` header field per entry.
    links: Vec<String>,
    body: String,
}

/// Answers `(path, page query parameter)` from a table; anything else is a 404. Every
/// request is recorded by the scripted server underneath.
struct Server {
    routes: Arc<Mutex<HashMap<(String, String), Canned>>>,
    http: scripted::Server,
}

impl Server {
    fn route(&self, path: &str, page: &str, c: Canned) {
        self.routes
            .lock()
            .unwrap()
            .insert((path.to_string(), page.to_string()), c);
    }

    fn log(&self) -> Vec<Seen> {
        self.http.seen()
    }

    /// How many requests each page of the artifacts listing got.
    fn page_hits(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in self.log() {
            *m.entry(format!("{}#{}", s.path, page_of(&s))).or_default() += 1;
        }
        m
    }
}

fn page_of(s: &Seen) -> &str {
    s.param("page").unwrap_or("")
}

/// Starts a server on `ip` (port chosen by the OS) and returns it with its origin.
async fn start(ip: &str) -> (Server, String) {
    let routes: Arc<Mutex<HashMap<(String, String), Canned>>> = Arc::default();
    let table = routes.clone();
    let http = scripted::serve_on(ip, move |_, s, _| {
        let key = (s.path.clone(), page_of(s).to_string());
        let c = table.lock().unwrap().get(&key).cloned();
        let c = c.unwrap_or(Canned {
            status: 404,
            links: vec![],
            body: r#"{"message":"No route"}"#.into(),
        });
        let mut r = Reply::status(c.status, &c.body);
        for l in &c.links {
            r = r.header("link", l);
        }
        r
    })
    .await;
    let origin = http.base.clone();
    (Server { routes, http }, origin)
}

fn client(origin: &str) -> ApiClient {
    ApiClient::new(origin, Token::new("t")).unwrap()
}

fn build_ref() -> BuildRef {
    BuildRef {
        org: "o".into(),
        pipeline: "p".into(),
        number: 1,
    }
}

fn page_body(page: usize) -> String {
    json!([
        {"id": format!("p{page}-a"), "state": "finished", "path": format!("p{page}/a.txt")},
        {"id": format!("p{page}-b"), "state": "finished", "path": format!("p{page}/b.txt")},
    ])
    .to_string()
}

fn ok(links: Vec<String>, body: String) -> Canned {
    Canned {
        status: 200,
        links,
        body,
    }
}

/// `{o}` → origin, `{p}` → artifacts path, `{x}` → `other`.
fn fill(t: &str, origin: &str, other: &str) -> String {
    t.replace("{o}", origin)
        .replace("{p}", ARTIFACTS_PATH)
        .replace("{x}", other)
}

/// Serves an artifacts listing of `links.len()` pages (page `i` answers with the Link header
/// fields `links[i-1]`), lists it, and checks that every page was fetched exactly once and the
/// artifacts came back in page order.
async fn check_listing(name: &str, links: &[&[&str]]) {
    let (srv, origin) = start("127.0.0.1").await;
    for (i, ls) in links.iter().enumerate() {
        let page = i + 1;
        let ls = ls.iter().map(|l| fill(l, &origin, "")).collect();
        srv.route(ARTIFACTS_PATH, &page.to_string(), ok(ls, page_body(page)));
    }
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        client(&origin).list_build_artifacts(&build_ref()),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: listing hung"));
    let arts = r.unwrap_or_else(|e| panic!("{name}: {e}\nrequests: {:#?}", srv.log()));
    let ids: Vec<String> = arts.into_iter().map(|a| a.id).collect();
    let want: Vec<String> = (1..=links.len())
        .flat_map(|p| [format!("p{p}-a"), format!("p{p}-b")])
        .collect();
    assert_eq!(ids, want, "{name}: requests: {:#?}", srv.log());
    let hits = srv.page_hits();
    let want_hits: BTreeMap<String, usize> = (1..=links.len())
        .map(|p| (format!("{ARTIFACTS_PATH}#{p}"), 1))
        .collect();
    assert_eq!(hits, want_hits, "{name}");
    for s in srv.log() {
        assert_eq!(s.header("authorization"), Some("Bearer t"), "{name}");
    }
}

#[tokio::test]
async fn tolerates_unknown_missing_and_null_fields() {
    let (srv, origin) = start("127.0.0.1").await;
    let body = json!([
        {"id": "a", "state": "finished", "path": "x/a.txt", "file_size": 3,
         "brand_new": {"nested": [1, 2, {"deep": null}]}, "job_id": null},
        {"id": "b"},
        {"id": "c", "state": "finished", "job_id": "j1", "url": null, "download_url": null,
         "path": null, "dirname": null, "filename": null, "mime_type": null, "file_size": null,
         "sha1sum": null, "glob_path": null, "original_path": null, "extra": "x"},
    ]);
    srv.route(ARTIFACTS_PATH, "1", ok(vec![], body.to_string()));
    srv.route(
        BUILD_PATH,
        "",
        ok(
            vec![],
            json!({"id": "b", "number": 1, "jobs": null, "pipeline": {"slug": "p"},
                   "state": null, "message": null, "creator": {"name": "x"}})
            .to_string(),
        ),
    );
    let c = client(&origin);
    let arts = c.list_build_artifacts(&build_ref()).await.unwrap();
    assert_eq!(arts.len(), 3);
    assert_eq!(arts[0].file_size, Some(3));
    assert_eq!(arts[0].job_id, None);
    assert_eq!(arts[1].state, None);
    assert_eq!(arts[2].path, None);
    assert_eq!(arts[2].job_id.as_deref(), Some("j1"));
    let b = c.get_build(&build_ref()).await.unwrap();
    assert!(b.jobs.is_empty());
    // And the tree takes it.
    let t = Tree::build(Some(&b), &arts, UNIX_EPOCH);
    check_tree(&t, &arts, None).unwrap();
}

#[tokio::test]
async fn odd_but_valid_link_headers_fetch_every_page_once() {
    const N: &str = "{o}{p}?page=2&per_page=100";
    let cases: Vec<(&str, Vec<Vec<String>>)> = vec![
        (
            "github style, next + last (concurrent fast path)",
            vec![
                vec![format!(r#"<{N}>; rel="next", <{{o}}{{p}}?page=3&per_page=100>; rel="last""#)],
                vec![r#"<{o}{p}?page=3&per_page=100>; rel="next", <{o}{p}?page=3&per_page=100>; rel="last""#.into()],
                vec![r#"<{o}{p}?page=1&per_page=100>; rel="first""#.into()],
            ],
        ),
        (
            "extra params before and after rel",
            vec![
                vec![format!(r#"<{N}>; title="next page"; rel="next"; type="application/json""#)],
                vec![r##"<{o}{p}?page=3&per_page=100>;anchor="#x";rel="next";hreflang=en"##.into()],
                vec![],
            ],
        ),
        (
            "unquoted rel",
            vec![
                vec![format!("<{N}>;rel=next")],
                vec!["<{o}{p}?page=3&per_page=100>; rel=next, <{o}{p}?page=1&per_page=100>; rel=prev".into()],
                vec!["<{o}{p}?page=2&per_page=100>; rel=prev".into()],
            ],
        ),
        (
            "several rels per link",
            vec![
                vec![format!(r#"<{N}>; rel="prefetch next""#)],
                vec![r#"<{o}{p}?page=3&per_page=100>; rel="next last""#.into()],
                vec![r#"<{o}{p}?page=1&per_page=100>; rel="first prev""#.into()],
            ],
        ),
        (
            "rel next last on page one (2 pages, fast path)",
            vec![vec![format!(r#"<{N}>; rel="next last""#)], vec![]],
        ),
        (
            "absolute-path relative URLs",
            vec![
                vec![r#"</v2/organizations/o/pipelines/p/builds/1/artifacts?page=2&per_page=100>; rel="next""#.into()],
                vec![r#"</v2/organizations/o/pipelines/p/builds/1/artifacts?page=3&per_page=100>; rel="next""#.into()],
                vec![],
            ],
        ),
        (
            "absolute-path relative last",
            vec![
                vec![r#"</v2/organizations/o/pipelines/p/builds/1/artifacts?page=3&per_page=100>; rel="last""#.into()],
                vec![],
                vec![],
            ],
        ),
        (
            "uppercase REL and value",
            vec![
                vec![format!(r#"<{N}>; REL="NEXT""#)],
                vec![r#"<{o}{p}?page=3&per_page=100>; Rel=Next"#.into()],
                vec![],
            ],
        ),
        (
            "spaces everywhere",
            vec![
                vec![format!(r#"   <  {N}  >  ;   rel  =  "next"   ,   <{{o}}{{p}}?page=1>  ;  rel = "first"  "#)],
                vec![r#"<{o}{p}?page=1>;rel="prev",<{o}{p}?page=3&per_page=100>;rel="next""#.into()],
                vec![],
            ],
        ),
        (
            "other params in the link URL, page not first",
            vec![
                vec![r#"<{o}{p}?per_page=100&page=2&x=%2F&y>; rel="next""#.into()],
                vec![r#"<{o}{p}?state=finished&page=3>; rel="next""#.into()],
                vec![],
            ],
        ),
        (
            "last with extra params (fast path keeps them)",
            vec![
                vec![r#"<{o}{p}?per_page=100&page=3&token=secret>; rel="last""#.into()],
                vec![],
                vec![],
            ],
        ),
        (
            "last without a page number falls back to next",
            vec![
                vec![format!(r#"<{N}>; rel="next", <{{o}}{{p}}?cursor=zz>; rel="last""#)],
                vec![r#"<{o}{p}?page=3>; rel="next""#.into()],
                vec![],
            ],
        ),
        (
            "last on another origin falls back to next",
            vec![
                vec![format!(r#"<{N}>; rel="next", <http://localhost:1{{p}}?page=3>; rel="last""#)],
                vec![r#"<{o}{p}?page=3>; rel="next""#.into()],
                vec![],
            ],
        ),
    ];
    for (name, pages) in &cases {
        let refs: Vec<Vec<&str>> = pages
            .iter()
            .map(|v| v.iter().map(String::as_str).collect())
            .collect();
        let refs: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
        check_listing(name, &refs).await;
    }
}

/// RFC 8288 §3.2: a relative link is resolved against the URL of the response that carried
/// it (the page), not the API root. bkfs resolves against the API root, so a query-only or
/// path-relative `next` misses the listing.
#[tokio::test]
async fn relative_link_urls_resolve_against_the_page() {
    check_listing(
        "query-only relative next",
        &[
            &[r#"<?page=2&per_page=100>; rel="next""#],
            &[r#"<?page=3&per_page=100>; rel="next""#],
            &[],
        ],
    )
    .await;
    check_listing(
        "path-relative next",
        &[&[r#"<artifacts?page=2&per_page=100>; rel="next""#], &[]],
    )
    .await;
}

/// RFC 9110 §5.3: several `Link` header fields mean the same as one comma-joined field. bkfs
/// reads only the first field, so a `next` in a second field is missed and the listing is
/// silently cut short.
#[tokio::test]
async fn several_link_header_fields() {
    check_listing(
        "next in a second Link field",
        &[
            &[
                r#"<{o}{p}?page=1>; rel="first""#,
                r#"<{o}{p}?page=2>; rel="next""#,
            ],
            &[],
        ],
    )
    .await;
}

/// A `next` link that points back at an earlier page: the listing must end (an error is
/// fine), not loop.
#[tokio::test]
async fn pagination_loop_ends() {
    let (srv, origin) = start("127.0.0.1").await;
    srv.route(
        ARTIFACTS_PATH,
        "1",
        ok(
            vec![fill(r#"<{o}{p}?page=2>; rel="next""#, &origin, "")],
            page_body(1),
        ),
    );
    srv.route(
        ARTIFACTS_PATH,
        "2",
        ok(
            vec![fill(r#"<{o}{p}?page=1>; rel="next""#, &origin, "")],
            page_body(2),
        ),
    );
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        client(&origin).list_build_artifacts(&build_ref()),
    )
    .await;
    let n = srv.log().len();
    assert!(r.is_ok(), "still looping after 10 s and {n} requests");
    assert!(n < 10, "{n} requests for a 2-page loop");
}

/// Checks an error's Display and Debug: names the listing path, redacts the query, and
/// never shows `secret`.
fn assert_redacted(e: &ApiError, what: &str) {
    let shown = e.to_string();
    let debug = format!("{e:?}");
    assert!(shown.contains(ARTIFACTS_PATH), "{what}: {shown}");
    assert!(shown.contains("?<redacted>"), "{what}: {shown}");
    assert!(!shown.contains("secret"), "{what}: {shown}");
    assert!(!debug.contains("secret"), "{what}: {debug}");
}

#[tokio::test]
async fn malformed_pages_are_malformed_errors_without_secrets() {
    let bodies = [
        ("not JSON", "<html>oops</html>".to_string()),
        ("an object", json!({"artifacts": [{"id": "x"}]}).to_string()),
        ("empty body", String::new()),
        ("truncated", r#"[{"id": "x", "state": "fini"#.to_string()),
        (
            "a wrong-typed element",
            json!([{"id": "x"}, {"id": 5}]).to_string(),
        ),
        ("null", "null".to_string()),
    ];
    for (what, body) in &bodies {
        // Page 2 via rel="next", with secrets in the query.
        let (srv, origin) = start("127.0.0.1").await;
        srv.route(
            ARTIFACTS_PATH,
            "1",
            ok(
                vec![fill(
                    r#"<{o}{p}?page=2&token=secret&sig=secret>; rel="next""#,
                    &origin,
                    "",
                )],
                page_body(1),
            ),
        );
        srv.route(ARTIFACTS_PATH, "2", ok(vec![], body.clone()));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(what);
        assert!(matches!(e, ApiError::Malformed { .. }), "{what}: {e:?}");
        assert_redacted(&e, what);
        assert_eq!(srv.page_hits().len(), 2, "{what}");

        // Page 3 via the rel="last" fast path.
        let (srv, origin) = start("127.0.0.1").await;
        srv.route(
            ARTIFACTS_PATH,
            "1",
            ok(
                vec![fill(
                    r#"<{o}{p}?page=3&per_page=100&token=secret>; rel="last""#,
                    &origin,
                    "",
                )],
                page_body(1),
            ),
        );
        srv.route(ARTIFACTS_PATH, "2", ok(vec![], page_body(2)));
        srv.route(ARTIFACTS_PATH, "3", ok(vec![], body.clone()));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(what);
        assert!(
            matches!(e, ApiError::Malformed { .. }),
            "{what} (fast path): {e:?}"
        );
        assert_redacted(&e, what);

        // Page 1 itself.
        let (srv, origin) = start("127.0.0.1").await;
        srv.route(ARTIFACTS_PATH, "1", ok(vec![], body.clone()));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(what);
        assert!(
            matches!(e, ApiError::Malformed { .. }),
            "{what} (page 1): {e:?}"
        );
        assert!(e.to_string().contains(ARTIFACTS_PATH), "{e}");
    }
}

#[tokio::test]
async fn a_missing_page_is_not_found_without_secrets() {
    let (srv, origin) = start("127.0.0.1").await;
    srv.route(
        ARTIFACTS_PATH,
        "1",
        ok(
            vec![fill(
                r#"<{o}{p}?page=2&token=secret>; rel="next""#,
                &origin,
                "",
            )],
            page_body(1),
        ),
    );
    let e = client(&origin)
        .list_build_artifacts(&build_ref())
        .await
        .unwrap_err();
    assert!(matches!(e, bkfs::api::ApiError::NotFound { .. }), "{e:?}");
    assert_redacted(&e, "404 page");
}

#[tokio::test]
async fn links_to_another_origin_are_refused() {
    let (other, other_origin) = start("127.0.0.2").await;
    // Prove the other server is live (so "it saw nothing" means something).
    let probe = reqwest::get(format!("{other_origin}/probe")).await.unwrap();
    assert_eq!(probe.status().as_u16(), 404);
    assert_eq!(other.log().len(), 1);
    assert_eq!(other.log()[0].header("authorization"), None);

    let cases: &[(&str, &str)] = &[
        (
            "next on another IP",
            r#"<{x}{p}?page=2&token=secret>; rel="next""#,
        ),
        (
            "next and last on another IP",
            r#"<{x}{p}?page=2&token=secret>; rel="next", <{x}{p}?page=3&token=secret>; rel="last""#,
        ),
        (
            "next as next+last on another IP",
            r#"<{x}{p}?page=2&token=secret>; rel="next last""#,
        ),
        (
            "protocol-relative next",
            r#"<//{xhost}{p}?page=2&token=secret>; rel="next""#,
        ),
    ];
    let xhost = other_origin.trim_start_matches("http://").to_string();
    for (name, link) in cases {
        let (srv, origin) = start("127.0.0.1").await;
        let link = fill(link, &origin, &other_origin).replace("{xhost}", &xhost);
        srv.route(ARTIFACTS_PATH, "1", ok(vec![link], page_body(1)));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(name);
        assert!(matches!(e, ApiError::Malformed { .. }), "{name}: {e:?}");
        let shown = e.to_string();
        assert!(!shown.contains("secret"), "{name}: {shown}");
        assert!(!format!("{e:?}").contains("secret"), "{name}: {e:?}");
        assert_eq!(srv.log().len(), 1, "{name}");
    }

    // Same host, other port / scheme / host name: also other origins.
    let (srv, origin) = start("127.0.0.1").await;
    let port = origin.rsplit(':').next().unwrap().to_string();
    for link in [
        format!(r#"<http://localhost:{port}{ARTIFACTS_PATH}?page=2>; rel="next""#),
        format!(r#"<https://127.0.0.1:{port}{ARTIFACTS_PATH}?page=2>; rel="next""#),
        format!(r#"<{other_origin}{ARTIFACTS_PATH}?page=2>; rel="next""#),
    ] {
        srv.http.clear();
        srv.route(ARTIFACTS_PATH, "1", ok(vec![link.clone()], page_body(1)));
        let e = client(&origin)
            .list_build_artifacts(&build_ref())
            .await
            .expect_err(&link);
        assert!(matches!(e, ApiError::Malformed { .. }), "{link}: {e:?}");
        assert_eq!(srv.log().len(), 1, "{link}");
    }

    // The other server never saw a request with the token (only the probe).
    let seen = other.log();
    assert!(
        seen.iter().all(|s| s.header("authorization").is_none()),
        "token sent to another origin: {seen:#?}"
    );
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].path, "/probe");
    assert!(seen[0].query.is_empty());
}
