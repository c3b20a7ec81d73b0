//! Whole-pipeline mounts through the kernel: the root lists recent builds by number plus the
//! `latest*` symlinks, builds are listed only when opened (no request for the others), any
//! other number works on lookup, `diff` across builds works, `--branch` filters, and a
//! running build inside behaves as a live build.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const ORG: &str = "acme";
const PIPE: &str = "app";

/// Builds 1..=6 of acme/app: odd numbers on main, even on feature; states by number.
fn pipeline_server() -> Arc<FakeServer> {
    let server = Arc::new(server());
    for n in 1..=6u64 {
        let mut b = if n == 6 {
            FakeBuild::running(ORG, PIPE, n)
        } else {
            FakeBuild::new(ORG, PIPE, n)
        };
        b.build.branch = Some(if n % 2 == 1 { "main" } else { "feature" }.into());
        if n == 6 {
            // A running build: no state change below.
        } else if n == 2 || n == 4 {
            b.build.state = Some("failed".into());
        } else {
            b.build.state = Some("passed".into());
        }
        let job = b.add_job("test");
        let log = format!(
            "test log of build {n}\nresult: {}\n",
            if n == 4 { "FAIL" } else { "ok" }
        );
        b.add_artifact(&job, "log/test.log", log.into_bytes());
        b.add_artifact(&job, "common.txt", b"same in every build\n".to_vec());
        server.add_build(b);
    }
    server
}

fn readlink(p: &std::path::Path) -> String {
    std::fs::read_link(p)
        .unwrap_or_else(|e| panic!("readlink {p:?}: {e}"))
        .to_string_lossy()
        .into_owned()
}

fn build_requests(s: &FakeServer) -> u64 {
    s.count(Count::GetBuild) + s.count(Count::ListBuildArtifacts) + s.count(Count::Graphql)
}

#[test]
fn pipeline_root_symlinks_and_lazy_builds() {
    let server = pipeline_server();
    let scratch = Scratch::new();
    let m = mount(&server, &scratch, "acme/app", &["--builds", "4"]);
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(60), move || {
        // Mount: token check + one builds page (latest-passed is among the 4 newest,
        // latest-failed too), nothing per build.
        assert_eq!(s.count(Count::ListBuilds), 1, "{:?}", s.counts());
        assert_eq!(build_requests(&s), 0, "{:?}", s.counts());
        assert_eq!(
            ls(&mnt),
            vec![
                "3",
                "4",
                "5",
                "6",
                "latest",
                "latest-failed",
                "latest-passed"
            ]
        );
        assert_eq!(readlink(&mnt.join("latest")), "6");
        assert_eq!(readlink(&mnt.join("latest-passed")), "5");
        assert_eq!(readlink(&mnt.join("latest-failed")), "4");
        // ls -l, stat and find -maxdepth 1 of the root open no build.
        let (code, out, err) = sh(&format!("ls -l {}", mnt.display()));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("latest -> 6"), "{out}");
        let (code, _, err) = sh(&format!("find {} -maxdepth 1 -type d", mnt.display()));
        assert_eq!(code, 0, "{err}");
        assert_eq!(build_requests(&s), 0, "{:?}", s.counts());

        // Opening build 5 (through the symlink) lists it, and only it.
        assert_eq!(
            std::fs::read_to_string(mnt.join("latest-passed/test/log/test.log")).unwrap(),
            "test log of build 5\nresult: ok\n"
        );
        assert_eq!(s.count(Count::ListBuildArtifacts), 1, "{:?}", s.counts());

        // diff across builds.
        let (code, out, _) = sh(&format!(
            "diff {0}/4/test/log/test.log {0}/5/test/log/test.log",
            mnt.display()
        ));
        assert_eq!(code, 1, "the logs differ");
        assert!(
            out.contains("< result: FAIL") && out.contains("> result: ok"),
            "{out}"
        );
        let (code, _, err) = sh(&format!(
            "diff {0}/4/test/common.txt {0}/5/test/common.txt",
            mnt.display()
        ));
        assert_eq!(code, 0, "{err}");
        assert_eq!(s.count(Count::ListBuildArtifacts), 2, "builds 4 and 5 only");

        // An old build not in the root listing works by number: one build lookup, then its
        // listing (REST: the build again and its artifacts).
        let before = s.count(Count::GetBuild);
        assert!(std::fs::metadata(mnt.join("1")).unwrap().is_dir());
        assert_eq!(s.count(Count::GetBuild), before + 1, "{:?}", s.counts());
        assert_eq!(ls(&mnt.join("1")), vec!["test"]);
        assert_eq!(
            std::fs::read_to_string(mnt.join("1/test/log/test.log")).unwrap(),
            "test log of build 1\nresult: ok\n"
        );
        assert_eq!(s.count(Count::GetBuild), before + 2, "{:?}", s.counts());
        // The root keeps listing the recent builds only.
        assert!(!ls(&mnt).contains(&"1".to_string()));
        // ...and unknown numbers or names are ENOENT, numbers asked once.
        for bad in ["999", "foo", "0", "007"] {
            let e = std::fs::metadata(mnt.join(bad)).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{bad}");
        }
        let gets = s.count(Count::GetBuild);
        let _ = std::fs::metadata(mnt.join("999"));
        assert_eq!(
            s.count(Count::GetBuild),
            gets,
            "a missing number is remembered"
        );
        // Builds 2 and 3 were never opened: still never listed.
        assert_eq!(s.count(Count::ListBuildArtifacts), 3, "{:?}", s.counts());

        // Read-only root.
        let e = std::fs::create_dir(mnt.join("7")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        let x = xattr(&mnt.join("5"), "user.buildkite.build_state").unwrap();
        assert_eq!(x, b"passed");
    });
}

/// `latest-passed` and `latest-failed` are found even when not among the listed builds, and
/// `--branch` filters both the listing and the links.
#[test]
fn branch_filter_and_older_links() {
    let server = pipeline_server();
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        "https://buildkite.com/acme/app",
        &["--builds", "1", "--branch", "feature"],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(30), move || {
        assert_eq!(ls(&mnt), vec!["6", "latest", "latest-failed"]);
        assert_eq!(readlink(&mnt.join("latest")), "6");
        assert_eq!(readlink(&mnt.join("latest-failed")), "4");
        assert_eq!(build_requests(&s), 0, "{:?}", s.counts());
    });
}

/// A running build inside a pipeline mount is live: new artifacts appear.
#[test]
fn running_build_in_pipeline_is_live() {
    let server = pipeline_server();
    let scratch = Scratch::new();
    let m = mount(&server, &scratch, "acme/app", &["--refresh", "0.5"]);
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(30), move || {
        assert_eq!(ls(&mnt.join("6/test")), vec!["common.txt", "log"]);
        assert!(s.update_build(ORG, PIPE, 6, |b| {
            let job = b.build.jobs[0].id.clone();
            b.add_artifact(&job, "late.txt", b"late\n".to_vec());
        }));
        assert!(
            wait_until(Duration::from_secs(2), || ls(&mnt.join("6/test"))
                == vec!["common.txt", "late.txt", "log"]),
            "{:?}",
            ls(&mnt.join("6/test"))
        );
        assert_eq!(
            std::fs::read_to_string(mnt.join("6/test/late.txt")).unwrap(),
            "late\n"
        );
    });
}

/// The root follows the pipeline: listing it (or reading a link) after the refresh interval
/// fetches the builds list again, so new builds appear and the links move; an idle mount
/// makes no request.
#[test]
fn root_follows_new_builds() {
    let server = pipeline_server();
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        "acme/app",
        &["--refresh", "0.5", "--builds", "4"],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(30), move || {
        assert_eq!(readlink(&mnt.join("latest")), "6");
        let idle = s.count(Count::ListBuilds);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            s.count(Count::ListBuilds),
            idle,
            "an idle mount polls nothing"
        );

        let mut b = FakeBuild::new(ORG, PIPE, 7);
        let job = b.add_job("test");
        b.add_artifact(&job, "log/test.log", b"test log of build 7\n".to_vec());
        s.add_build(b);
        assert!(
            wait_until(Duration::from_secs(3), || ls(&mnt)
                .contains(&"7".to_string())),
            "{:?}",
            ls(&mnt)
        );
        assert_eq!(readlink(&mnt.join("latest")), "7");
        assert_eq!(readlink(&mnt.join("latest-passed")), "7");
        assert_eq!(
            std::fs::read_to_string(mnt.join("latest/test/log/test.log")).unwrap(),
            "test log of build 7\n"
        );
    });
}
