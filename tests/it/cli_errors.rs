//! `bkfs mount` failures before anything is mounted: each is one `bkfs: error: ...` line on
//! stderr, a non-zero exit, no mount and no daemon left behind. Plus the token-file path.

use std::time::Duration;

use crate::common::builds::small_build;
use crate::common::*;

/// Asserts a failed mount: non-zero, one clear line, nothing mounted, no daemon.
fn assert_failed(
    r: Result<Mount, (i32, String)>,
    scratch: &Scratch,
    must_contain: &[&str],
) -> String {
    let (code, err) = match r {
        Ok(m) => panic!("mount unexpectedly succeeded (stderr {:?})", m.stderr),
        Err(e) => e,
    };
    assert_ne!(code, 0);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {err:?}");
    assert!(lines[0].starts_with("bkfs: error: "), "{err:?}");
    for s in must_contain {
        assert!(lines[0].contains(s), "{s:?} not in {err:?}");
    }
    assert!(
        !is_mounted(&scratch.mnt()),
        "something is mounted after a failed mount"
    );
    assert!(
        wait_gone(&scratch.mnt(), Duration::from_secs(3)),
        "a daemon is left after a failed mount: {:?}",
        daemon_pids(&scratch.mnt())
    );
    err
}

fn served() -> FakeServer {
    let s = server();
    s.add_build(small_build(40).0);
    s
}

#[test]
fn bad_token() {
    let server = served();
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let r = try_mount(
            &server,
            &scratch,
            "acme/web-app/40",
            Some("not-a-valid-token"),
            &[],
        );
        let err = assert_failed(r, &scratch, &["401"]);
        assert!(err.to_lowercase().contains("token"), "{err}");
        assert!(
            !err.contains("not-a-valid-token"),
            "the token is echoed: {err}"
        );
        assert_eq!(
            server.count(Count::ApiStatus(401)),
            1,
            "{:?}",
            server.counts()
        );
    });
}

#[test]
fn unknown_build() {
    let server = served();
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let r = try_mount(&server, &scratch, "acme/web-app/999", Some(TOKEN), &[]);
        let err = assert_failed(r, &scratch, &["404", "acme/web-app/999"]);
        assert!(err.to_lowercase().contains("not found"), "{err}");
    });
}

#[test]
fn unknown_pipeline() {
    let server = served();
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let r = try_mount(&server, &scratch, "acme/nope/40", Some(TOKEN), &[]);
        assert_failed(r, &scratch, &["404", "acme/nope/40"]);
    });
}

#[test]
fn unreachable_api() {
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let r = try_mount_at(
            "http://127.0.0.1:1",
            &scratch,
            "acme/web-app/1",
            Some(TOKEN),
            &[],
        );
        assert_failed(r, &scratch, &["127.0.0.1:1"]);
    });
}

#[test]
fn missing_mountpoint() {
    let server = served();
    let scratch = Scratch::new();
    std::fs::remove_dir(scratch.mnt()).unwrap();
    bounded(LIMIT, move || {
        let r = try_mount(&server, &scratch, "acme/web-app/40", Some(TOKEN), &[]);
        assert_failed(
            r,
            &scratch,
            &["does not exist", scratch.mnt().to_str().unwrap()],
        );
        assert_eq!(
            server.count(Count::Api),
            0,
            "requests before the mountpoint check"
        );
    });
}

#[test]
fn mountpoint_is_a_file() {
    let server = served();
    let scratch = Scratch::new();
    std::fs::remove_dir(scratch.mnt()).unwrap();
    std::fs::write(scratch.mnt(), b"x").unwrap();
    bounded(LIMIT, move || {
        let r = try_mount(&server, &scratch, "acme/web-app/40", Some(TOKEN), &[]);
        assert_failed(r, &scratch, &["not a directory"]);
    });
}

#[test]
fn no_token_at_all() {
    let server = served();
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let r = try_mount(&server, &scratch, "acme/web-app/40", None, &[]);
        assert_failed(r, &scratch, &["BUILDKITE_API_TOKEN", "--token-file"]);
        assert_eq!(server.count(Count::Api), 0);
    });
}

#[test]
fn token_without_read_artifacts() {
    let server = served();
    server.add_token("builds-only", &["read_builds"]);
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let r = try_mount(
            &server,
            &scratch,
            "acme/web-app/40",
            Some("builds-only"),
            &[],
        );
        assert_failed(r, &scratch, &["read_artifacts"]);
    });
}

#[test]
fn malformed_build_reference() {
    let server = served();
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        for bad in [
            "acme",
            "acme/web app",
            "acme/web-app/1/x",
            "acme/web-app/x",
            "https://example.com/acme/web-app/builds/40",
        ] {
            let r = try_mount(&server, &scratch, bad, Some(TOKEN), &[]);
            assert_failed(r, &scratch, &["ORG/PIPELINE/NUMBER"]);
        }
        assert_eq!(server.count(Count::Api), 0);
    });
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let r = try_mount_at(
            "http://api.example.com",
            &scratch,
            "acme/web-app/1",
            Some(TOKEN),
            &[],
        );
        assert_failed(r, &scratch, &["http"]);
    });
}

/// A second mount on a busy mountpoint fails; the first keeps serving.
#[test]
fn mountpoint_already_mounted() {
    let (fb, exp) = small_build(41);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let server = env.server.clone();
    let other_scratch = Scratch::new();
    let other_log = other_scratch.log();
    bounded(LIMIT, move || {
        let o = run(std::process::Command::new(BIN)
            .arg("mount")
            .arg("--api-url")
            .arg(server.api_url())
            .arg("--log-file")
            .arg(&other_log)
            .arg("--cache-dir")
            .arg(other_scratch.cache())
            .arg("acme/web-app/41")
            .arg(&mnt)
            .env("BUILDKITE_API_TOKEN", TOKEN));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.starts_with("bkfs: error: ") && err.lines().count() == 1,
            "{err}"
        );
        assert!(err.contains("already"), "{err}");
        assert_eq!(daemon_pids(&mnt).len(), 1, "{:?}", daemon_pids(&mnt));
        let f = &exp.files["build/notes.txt"];
        assert_eq!(
            std::fs::read(mnt.join("build/notes.txt")).unwrap(),
            f.content
        );
    });
}

/// `--token-file` (with a trailing newline, as editors write it) works without the env var.
#[test]
fn token_file() {
    let server = server();
    server.add_build(small_build(42).0);
    let scratch = Scratch::new();
    let tf = scratch.dir.path().join("token");
    std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
    let m = try_mount(
        &server,
        &scratch,
        "acme/web-app/42",
        None,
        &["--token-file", tf.to_str().unwrap()],
    )
    .unwrap_or_else(|(c, e)| panic!("mount with --token-file failed ({c}): {e}"));
    assert!(is_mounted(&m.mnt));
    let mnt = m.mnt.clone();
    bounded(LIMIT, move || {
        assert_eq!(
            ls(&mnt),
            vec!["build".to_string(), "test-suite".to_string()]
        );
    });
    drop(m);
    // A missing token file is a clear error.
    let r = try_mount(
        &server,
        &scratch,
        "acme/web-app/42",
        None,
        &["--token-file", "/nonexistent/bkfs-token"],
    );
    assert_failed(r, &scratch, &["--token-file", "/nonexistent/bkfs-token"]);
}

/// Pipeline mounts fail clearly: an unknown pipeline, a token without `read_builds`, and a
/// `--graphql-url` that would carry the token in clear to another host.
#[test]
fn pipeline_mount_errors() {
    let server = served();
    server.add_token("no-builds", &["read_artifacts"]);
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let r = try_mount(&server, &scratch, "acme/nope", Some(TOKEN), &[]);
        assert_failed(r, &scratch, &["pipeline acme/nope not found"]);
        let r = try_mount(&server, &scratch, "acme/web-app", Some("no-builds"), &[]);
        assert_failed(r, &scratch, &["read_builds"]);
        let r = try_mount(
            &server,
            &scratch,
            "acme/web-app",
            Some(TOKEN),
            &["--graphql-url", "http://graphql.example.com/v1"],
        );
        assert_failed(r, &scratch, &["--graphql-url", "plain http"]);
    });
}

/// One line for `cmd`'s stderr, exit non-zero; returns the line.
fn one_error_line(o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "succeeded: {err}");
    assert_eq!(err.lines().count(), 1, "expected one line: {err:?}");
    assert!(err.starts_with("bkfs: error: "), "{err:?}");
    err
}

/// `bkfs unmount DIR` on a directory with nothing mounted says so, in one line.
#[test]
fn unmount_of_a_plain_directory() {
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let o = run(std::process::Command::new(BIN)
            .arg("unmount")
            .arg(scratch.mnt()));
        let err = one_error_line(&o);
        assert!(err.contains("is not a bkfs mount"), "{err}");
        assert!(err.contains(scratch.mnt().to_str().unwrap()), "{err}");
        assert!(!err.contains("Invalid argument"), "{err}");
    });
}

/// The server's 401 text and bkfs's advice are separated.
#[test]
fn bad_token_message_is_separated_from_the_advice() {
    let server = served();
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let r = try_mount(&server, &scratch, "acme/web-app/40", Some("nope"), &[]);
        let err = assert_failed(r, &scratch, &["401", "Check BUILDKITE_API_TOKEN"]);
        let at = err.find("Check BUILDKITE_API_TOKEN").unwrap();
        assert!(
            err[..at].ends_with("). "),
            "no separator before the advice: {err}"
        );
    });
}

/// With `-f`, a start-up error is printed once (not also as a log line).
#[test]
fn foreground_startup_error_is_printed_once() {
    let server = served();
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let o = run(std::process::Command::new(BIN)
            .args(["mount", "-f", "--api-url", &server.api_url(), "--cache-dir"])
            .arg(scratch.cache())
            .arg("acme/web-app/40")
            .arg(scratch.mnt())
            .env("BUILDKITE_API_TOKEN", "nope")
            .env("HOME", scratch.dir.path())
            .env_remove("RUST_LOG"));
        let err = one_error_line(&o);
        assert!(err.contains("401"), "{err}");
        assert!(!is_mounted(&scratch.mnt()));
    });
}

/// Local problems come before a missing token: a missing mountpoint, a file, a busy one.
#[test]
fn local_problems_are_reported_before_the_token() {
    let env = Env::new(small_build(42).0, &[]);
    let busy = env.mnt();
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let missing = scratch.dir.path().join("missing");
        let file = scratch.dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        for (mnt, want) in [
            (&missing, "does not exist"),
            (&file, "not a directory"),
            (&busy, "already a mount point"),
        ] {
            let o = run(std::process::Command::new(BIN)
                .args(["mount", "--api-url", "http://127.0.0.1:1", "--cache-dir"])
                .arg(scratch.cache())
                .arg("acme/web-app/42")
                .arg(mnt)
                .env_remove("BUILDKITE_API_TOKEN")
                .env("HOME", scratch.dir.path()));
            let err = one_error_line(&o);
            assert!(err.contains(want), "{mnt:?}: {err}");
            assert!(!err.contains("BUILDKITE_API_TOKEN"), "{mnt:?}: {err}");
        }
    });
}

/// `bkfs-demo /nonexistent` fails, in one line, before printing its "try this" banner.
#[test]
fn demo_on_a_missing_directory_fails_before_its_banner() {
    let scratch = Scratch::new();
    bounded(LIMIT, move || {
        let o = run(std::process::Command::new(workspace_bin("bkfs-demo"))
            .arg(scratch.dir.path().join("nonexistent")));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "succeeded: {err}");
        assert_eq!(err.lines().count(), 1, "expected one line: {err:?}");
        assert!(err.starts_with("bkfs-demo: error: "), "{err:?}");
        assert!(err.contains("does not exist"), "{err}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.is_empty(), "banner printed before the error: {out}");
    });
}
