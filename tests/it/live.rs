//! Live builds through the kernel mount: while a build runs, new jobs and artifacts appear
//! in `ls` within two refresh intervals, finished states become visible, vanished artifacts
//! disappear (open files keep what is cached), and polling stops once the build finishes.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const ORG: &str = "acme";
const PIPE: &str = "live";
/// The refresh interval the tests mount with.
const REFRESH: Duration = Duration::from_millis(1500);

/// A running build: job "build" with one finished log and one still uploading.
fn running_build(number: u64) -> (FakeBuild, String, String) {
    let mut b = FakeBuild::running(ORG, PIPE, number);
    let job = b.add_job("build");
    b.add_artifact(&job, "log/first.log", b"first\n".to_vec());
    let uploading = b.add_artifact_with(&job, "log/second.log", b"second\n".to_vec(), |a| {
        a.state = Some("new".into())
    });
    (b, job, uploading)
}

fn listing_requests(s: &FakeServer) -> u64 {
    s.count(Count::ListBuildArtifacts) + s.count(Count::Graphql)
}

fn live_scenario(graphql: bool) {
    let server = Arc::new(server());
    let number = if graphql { 11 } else { 12 };
    let (fb, job, uploading) = running_build(number);
    server.add_build(fb);
    let scratch = Scratch::new();
    let refresh = REFRESH.as_secs_f64().to_string();
    let gql = server.graphql_url();
    let mut extra = vec!["--refresh", refresh.as_str()];
    if graphql {
        extra.extend(["--graphql-url", gql.as_str()]);
    }
    let m = mount(&server, &scratch, &format!("{ORG}/{PIPE}/{number}"), &extra);
    let mnt = m.mnt.clone();
    let log = m.log.clone();
    let s = server.clone();
    bounded(Duration::from_secs(60), move || {
        // The acceptance bound: visible within two refresh intervals.
        let within = REFRESH * 2;
        assert_eq!(ls(&mnt), vec!["build"]);
        assert_eq!(ls(&mnt.join("build/log")), vec!["first.log"]);
        // Keep the directory and an entry cached in the kernel, as a user's shell would.
        assert!(std::fs::metadata(mnt.join("build/log/first.log")).is_ok());
        assert!(std::fs::metadata(mnt.join("build/log/second.log")).is_err());

        // The upload finishes, a new job starts and uploads.
        assert!(s.set_artifact_state(&uploading, "finished"));
        assert!(s.update_build(ORG, PIPE, number, |b| {
            let j = b.add_job("deploy");
            b.add_artifact(&j, "out/report.txt", b"deployed\n".to_vec());
        }));
        assert!(
            wait_until(within, || ls(&mnt) == vec!["build", "deploy"]
                && ls(&mnt.join("build/log")) == vec!["first.log", "second.log"]),
            "changes not visible within {within:?}: {:?} {:?}",
            ls(&mnt),
            ls(&mnt.join("build/log"))
        );
        assert_eq!(
            std::fs::read(mnt.join("build/log/second.log")).unwrap(),
            b"second\n"
        );
        assert_eq!(
            std::fs::read(mnt.join("deploy/out/report.txt")).unwrap(),
            b"deployed\n"
        );
        let st = xattr(&mnt.join("build/log/second.log"), "user.buildkite.state").unwrap();
        assert_eq!(st, b"finished");

        // An artifact is deleted on the server: it disappears.
        let first_id = String::from_utf8(
            xattr(
                &mnt.join("build/log/first.log"),
                "user.buildkite.artifact_id",
            )
            .unwrap(),
        )
        .unwrap();
        assert!(s.set_artifact_state(&first_id, "deleted"));
        assert!(
            wait_until(within, || ls(&mnt.join("build/log")) == vec!["second.log"]),
            "deleted artifact still listed: {:?}",
            ls(&mnt.join("build/log"))
        );
        assert!(std::fs::metadata(mnt.join("build/log/first.log")).is_err());

        // The build finishes (its last artifact and its state in one change): one last
        // listing, then no more.
        assert!(s.update_build(ORG, PIPE, number, |b| {
            b.add_artifact(&job, "log/last.log", b"last\n".to_vec());
            b.set_state("passed");
        }));
        assert!(
            wait_until(within, || ls(&mnt.join("build/log"))
                == vec!["last.log", "second.log"]),
            "final listing missing: {:?}",
            ls(&mnt.join("build/log"))
        );
        assert!(
            wait_until(REFRESH * 2, || log.exists()
                && std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("no more refreshes")),
            "polling did not stop"
        );
        let after_final = listing_requests(&s);
        std::thread::sleep(REFRESH * 4);
        assert_eq!(
            listing_requests(&s),
            after_final,
            "still polling a finished build: {:?}",
            s.counts()
        );
    });
}

#[test]
fn live_build_rest() {
    live_scenario(false);
}

#[test]
fn live_build_graphql() {
    live_scenario(true);
}

/// Open files of artifacts that disappear keep reading what is cached; the rest fail with
/// ENOENT.
#[test]
fn open_files_of_vanished_artifacts() {
    let server = Arc::new(server());
    let mut b = FakeBuild::running(ORG, PIPE, 13);
    let job = b.add_job("build");
    let cached_content = det_bytes(300_000, 1);
    let cold_content = det_bytes(300_000, 2);
    let cached = b.add_artifact(&job, "cached.bin", cached_content.clone());
    let cold = b.add_artifact(&job, "cold.bin", cold_content);
    server.add_build(b);
    let scratch = Scratch::new();
    let m = mount(&server, &scratch, "acme/live/13", &["--refresh", "0.5"]);
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(30), move || {
        let warm = std::fs::File::open(mnt.join("build/cached.bin")).unwrap();
        let mut buf = vec![0u8; cached_content.len()];
        warm.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf == cached_content);
        let cold_f = std::fs::File::open(mnt.join("build/cold.bin")).unwrap();
        for id in [&cached, &cold] {
            assert!(s.set_artifact_state(id, "expired"));
        }
        // The job has no finished artifact left: its directory goes too.
        assert!(wait_until(Duration::from_secs(5), || ls(&mnt).is_empty()));
        // Drop the kernel's page cache of the warm file, so that the read below reaches bkfs,
        // which serves it from its own cache.
        use std::os::fd::AsRawFd;
        // SAFETY: plain posix_fadvise(2) on an open fd.
        let rc = unsafe { libc::posix_fadvise(warm.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        let mut part = vec![0u8; 1000];
        warm.read_exact_at(&mut part, 123_456).unwrap();
        assert!(part == cached_content[123_456..124_456]);
        let mut one = [0u8; 1];
        let e = cold_f.read_exact_at(&mut one, 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    });
}
