//! Batch signed URLs through GraphQL, through the kernel mount: a cold `grep -r` over 1,000
//! logs under a 50-requests-a-minute limit costs a handful of API requests; every way
//! GraphQL can fail falls back to REST; batch URLs that expire or are refused are replaced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use bkfs_fake::GraphqlMode;

const ORG: &str = "acme";
const PIPE: &str = "logs";

/// `jobs` jobs with `per_job` small logs each; every 50th log holds the needle.
fn logs_build(number: u64, jobs: usize, per_job: usize) -> (FakeBuild, Vec<String>) {
    let mut b = FakeBuild::new(ORG, PIPE, number);
    let mut hits = Vec::new();
    for j in 0..jobs {
        let job = b.add_job(&format!("shard {j}"));
        for i in 0..per_job {
            let n = j * per_job + i;
            let mut text = String::new();
            for line in 0..40 {
                text.push_str(&format!("{n:04}:{line:02} INFO step {line} of log {n}\n"));
            }
            if n % 50 == 7 {
                text.push_str("FATAL: the needle is here\n");
                hits.push(format!("shard-{j}/log/{n:04}.log"));
            }
            b.add_artifact(&job, &format!("log/{n:04}.log"), text.into_bytes());
        }
    }
    hits.sort();
    (b, hits)
}

/// `grep -rl` under the mount: the matching paths relative to it, sorted.
fn grep_hits(mnt: &std::path::Path) -> Vec<String> {
    let (code, out, err) = sh(&format!(
        "cd {} && timeout 120 grep -rl 'the needle' .",
        mnt.display()
    ));
    assert!(code == 0, "grep exited {code}: {err}");
    let mut v: Vec<String> = out
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect();
    v.sort();
    v
}

fn api_requests(s: &FakeServer) -> u64 {
    s.count(Count::Api) + s.count(Count::Graphql)
}

/// The acceptance: 1,000 cold logs, a 50-per-minute limit enforced, `grep -r`
/// through GraphQL batches needs at most 10 API requests in all and finishes well within
/// the 30 s bound.
#[test]
fn grep_1000_cold_logs_costs_a_few_requests() {
    let server = Arc::new(server());
    server.set_rate_limit(50, Duration::from_secs(60), true);
    let (fb, hits) = logs_build(1, 10, 100);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        "acme/logs/1",
        &["--graphql-url", &server.graphql_url()],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(30), move || {
        let t = Instant::now();
        assert_eq!(grep_hits(&mnt), hits);
        let secs = t.elapsed().as_secs_f64();
        let counts = s.counts();
        eprintln!("grep -r over 1000 logs via GraphQL: {secs:.2} s, counts {counts:?}");
        assert!(
            api_requests(&s) <= 10,
            "{} API requests (REST {} + GraphQL {}): {counts:?}",
            api_requests(&s),
            s.count(Count::Api),
            s.count(Count::Graphql)
        );
        assert_eq!(
            s.count(Count::Download),
            0,
            "no per-artifact REST download calls"
        );
        assert_eq!(s.count(Count::ApiStatus(429)), 0);
        assert_eq!(s.count(Count::StorageGet), 1000, "every log fetched once");
    });
    assert!(
        m.log_text().contains("via=\"graphql\""),
        "the listing came through GraphQL"
    );
}

/// `--no-graphql`: the REST path reads everything right, one download call per artifact,
/// paced by the rate limit (few requests refused with 429, each waited out).
#[test]
fn rest_only_is_correct_and_paced() {
    let server = Arc::new(server());
    // 30 requests per 2 s window: 120 logs need 120 download calls, i.e. at least 4 windows.
    server.set_rate_limit(30, Duration::from_secs(2), true);
    let (fb, hits) = logs_build(2, 3, 40);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        "acme/logs/2",
        &["--graphql-url", &server.graphql_url(), "--no-graphql"],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(90), move || {
        let t = Instant::now();
        assert_eq!(grep_hits(&mnt), hits);
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "grep -r over 120 logs via REST: {secs:.2} s, {:?}",
            s.counts()
        );
        assert_eq!(
            s.count(Count::Graphql),
            0,
            "--no-graphql sends no GraphQL request"
        );
        assert_eq!(
            s.count(Count::Download),
            120,
            "one download call per artifact"
        );
        // 120 calls at 30 per 2 s window cannot take less than 3 full windows.
        assert!(secs >= 5.5, "not paced: {secs:.2} s");
        // RateLimit-Reset is in whole seconds, coarse against a 2 s window, so a few
        // requests at window edges meet a 429 (and wait it out); most never do.
        assert!(
            s.count(Count::ApiStatus(429)) * 10 <= s.count(Count::Api),
            "{:?}",
            s.counts()
        );
    });
}

/// Every way GraphQL can fail (no access for the token, no endpoint, errors in the answer)
/// leaves a working REST mount, and GraphQL is not asked again.
#[test]
fn graphql_failures_fall_back_to_rest() {
    for (what, setup) in [
        (
            "token without GraphQL access",
            Box::new(|s: &FakeServer| s.set_graphql_access(TOKEN, false))
                as Box<dyn Fn(&FakeServer)>,
        ),
        (
            "no GraphQL endpoint",
            Box::new(|s: &FakeServer| s.set_graphql_mode(GraphqlMode::Absent)),
        ),
        (
            "errors in the response",
            Box::new(|s: &FakeServer| s.set_graphql_mode(GraphqlMode::Errors)),
        ),
    ] {
        let server = Arc::new(server());
        setup(&server);
        let (fb, hits) = logs_build(3, 2, 10);
        server.add_build(fb);
        let scratch = Scratch::new();
        let m = mount(
            &server,
            &scratch,
            "acme/logs/3",
            &["--graphql-url", &server.graphql_url()],
        );
        let mnt = m.mnt.clone();
        let s = server.clone();
        bounded(Duration::from_secs(30), move || {
            assert_eq!(grep_hits(&mnt), hits, "{what}");
            assert_eq!(
                s.count(Count::Graphql),
                1,
                "{what}: GraphQL asked once, then off"
            );
            assert_eq!(
                s.count(Count::Download),
                20,
                "{what}: REST download per artifact"
            );
        });
        assert!(
            m.log_text().contains("using the REST API"),
            "{what}: the fallback is logged"
        );
    }
}

/// A batch that ages out is replaced by one new GraphQL query (not 1 REST call per file); a
/// batch URL that storage refuses is replaced through the REST download endpoint.
#[test]
fn expired_and_refused_batch_urls_are_replaced() {
    let server = Arc::new(server());
    server.set_graphql_url_ttl(Duration::from_secs(4));
    let (fb, _) = logs_build(4, 1, 10);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        "acme/logs/4",
        &["--graphql-url", &server.graphql_url()],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(40), move || {
        let read = |n: u32| {
            std::fs::read(mnt.join(format!("shard-0/log/{n:04}.log")))
                .unwrap_or_else(|e| panic!("read log {n}: {e}"))
        };
        // Files are read out of name order so that no sibling prefetch runs.
        assert!(!read(0).is_empty());
        assert_eq!(s.count(Count::Graphql), 1);
        // Let the whole batch age out (URLs say Expires = issue + 4 s).
        std::thread::sleep(Duration::from_millis(4600));
        assert!(!read(9).is_empty());
        assert_eq!(
            s.count(Count::Graphql),
            2,
            "one new batch for the aged-out URLs"
        );
        assert_eq!(s.count(Count::Download), 0);
        // Storage refuses the next URL as expired: that artifact's URL comes from REST.
        s.fail_storage(1, 403);
        assert!(!read(3).is_empty());
        assert_eq!(s.count(Count::Download), 1, "{:?}", s.counts());
        assert_eq!(s.count(Count::Graphql), 2);
    });
}

/// A job with more artifacts than one GraphQL query returns per job is completed through
/// REST; the artifacts missing from the batch get their URLs from the REST endpoint.
#[test]
fn artifacts_beyond_the_batch_use_rest() {
    let server = Arc::new(server());
    server.set_rate_limit(100_000, Duration::from_secs(60), false);
    let (fb, _) = logs_build(5, 1, 510);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        "acme/logs/5",
        &["--graphql-url", &server.graphql_url()],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(60), move || {
        assert_eq!(ls(&mnt.join("shard-0/log")).len(), 510);
        assert!(s.count(Count::ListJobArtifacts) >= 1, "{:?}", s.counts());
        let (code, _, err) = sh(&format!("cat {}/shard-0/log/* > /dev/null", mnt.display()));
        assert_eq!(code, 0, "{err}");
        assert_eq!(s.count(Count::Download), 10, "{:?}", s.counts());
    });
}

/// A build listed through GraphQL shows exactly the tree the REST listing shows: the same
/// oracle as `mount_tree::tree_matches_expected` (parallel jobs, a retry chain, label edge
/// cases, hostile paths, collisions, unfinished artifacts), so falling back between the two
/// never renames anything.
#[test]
fn graphql_listing_gives_the_rest_tree() {
    use crate::common::builds::{rich_build, BUILD};
    let (fb, exp) = rich_build();
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        BUILD,
        &["--graphql-url", &server.graphql_url()],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(60), move || {
        assert_eq!(s.count(Count::ListBuildArtifacts), 0, "{:?}", s.counts());
        assert_eq!(s.count(Count::Graphql), 1, "{:?}", s.counts());
        let want = exp.tree(my_uid());
        assert_tree_eq("GraphQL listing", &want, &walk(&mnt));
    });
}

/// A GraphQL failure that may pass (5xx after retries) sends bkfs to REST for a while only,
/// not for the rest of the mount.
#[test]
fn transient_graphql_failure_only_pauses_it() {
    let server = Arc::new(server());
    server.fail_graphql(100, 503);
    let (fb, hits) = logs_build(6, 1, 10);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        "acme/logs/6",
        &["--graphql-url", &server.graphql_url()],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(30), move || {
        assert_eq!(grep_hits(&mnt), hits);
        assert_eq!(
            s.count(Count::Download),
            10,
            "REST meanwhile: {:?}",
            s.counts()
        );
    });
    let log = m.log_text();
    assert!(log.contains("using the REST API for a while"), "{log}");
    assert!(!log.contains("from now on"), "{log}");
}
