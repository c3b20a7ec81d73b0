//! The README's "Troubleshooting" table is what bkfs really prints: every row's message is
//! read from README.md (`…` stands for details that vary) and compared with the line the
//! failing command prints. A changed message needs only a README edit; a row whose failure
//! has no scenario here, or a scenario without a row, fails the test.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::common::builds::small_build;
use crate::common::*;

/// (failure, message pattern) of each row of the README's Troubleshooting table.
fn table() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("\n## Troubleshooting")
        .nth(1)
        .expect("a Troubleshooting section in README.md");
    let section = section.split("\n## ").next().unwrap();
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line
            .split(" | ")
            .map(|c| c.trim_matches('|').trim())
            .collect();
        if cells[0] == "failure" || cells[0].starts_with("---") {
            continue;
        }
        // One code span: `msg`, or ``msg`` when the message itself has backticks.
        let msg = cells[1]
            .strip_prefix("`` ")
            .and_then(|m| m.strip_suffix(" ``"))
            .or_else(|| cells[1].strip_prefix('`').and_then(|m| m.strip_suffix('`')))
            .unwrap_or_else(|| panic!("the message of {:?} is not one `code` span", cells[0]));
        rows.push((cells[0].to_string(), msg.to_string()));
    }
    rows
}

/// Whether `line` matches `pattern`: its fragments between `…` appear in order, the first at
/// the start and the last at the end.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let mut rest = match line.strip_prefix(parts[0]) {
        Some(r) => r,
        None => return false,
    };
    let n = parts.len();
    for (i, p) in parts.iter().enumerate().skip(1) {
        if i == n - 1 {
            return rest.ends_with(p);
        }
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

fn served() -> FakeServer {
    let s = server();
    s.add_build(small_build(80).0);
    s
}

/// The one stderr line of a failed `bkfs mount`.
fn failed(r: Result<Mount, (i32, String)>) -> String {
    let (code, err) = match r {
        Ok(m) => panic!("mount unexpectedly succeeded ({:?})", m.stderr),
        Err(e) => e,
    };
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err:?}");
    err.trim_end().to_string()
}

fn mount_err(token: Option<&str>, build: &str, extra: &[&str]) -> String {
    let server = served();
    let scratch = Scratch::new();
    failed(try_mount(&server, &scratch, build, token, extra))
}

/// What bkfs prints for the failure a README row names.
fn scenario(failure: &str) -> String {
    match failure {
        "bad token" => mount_err(Some("not-a-valid-token"), "acme/web-app/80", &[]),
        "no token" => mount_err(None, "acme/web-app/80", &[]),
        "missing scope" => {
            let server = served();
            server.add_token("builds-only", &["read_builds"]);
            let scratch = Scratch::new();
            failed(try_mount(
                &server,
                &scratch,
                "acme/web-app/80",
                Some("builds-only"),
                &[],
            ))
        }
        "unknown build" => mount_err(Some(TOKEN), "acme/web-app/999", &[]),
        "unknown pipeline" => mount_err(Some(TOKEN), "acme/nope", &[]),
        "unreachable API" => {
            let scratch = Scratch::new();
            failed(try_mount_at(
                "http://127.0.0.1:1",
                &scratch,
                "acme/web-app/80",
                Some(TOKEN),
                &[],
            ))
        }
        "plain http" => {
            let scratch = Scratch::new();
            failed(try_mount_at(
                "http://api.example.com",
                &scratch,
                "acme/web-app/80",
                Some(TOKEN),
                &[],
            ))
        }
        "rate limited" => {
            let server = served();
            // One request per 10 minutes: the token check passes, the listing would have to
            // wait longer than bkfs waits for a window.
            server.set_rate_limit(1, Duration::from_secs(600), true);
            let scratch = Scratch::new();
            failed(try_mount(
                &server,
                &scratch,
                "acme/web-app/80",
                Some(TOKEN),
                &[],
            ))
        }
        "mountpoint missing" => {
            let server = served();
            let scratch = Scratch::new();
            std::fs::remove_dir(scratch.mnt()).unwrap();
            failed(try_mount(
                &server,
                &scratch,
                "acme/web-app/80",
                Some(TOKEN),
                &[],
            ))
        }
        "mountpoint not a directory" => {
            let server = served();
            let scratch = Scratch::new();
            std::fs::remove_dir(scratch.mnt()).unwrap();
            std::fs::write(scratch.mnt(), b"x").unwrap();
            failed(try_mount(
                &server,
                &scratch,
                "acme/web-app/80",
                Some(TOKEN),
                &[],
            ))
        }
        "mountpoint busy" => {
            let env = Env::new(small_build(81).0, &[]);
            let other = Scratch::new();
            let o = run(Command::new(BIN)
                .arg("mount")
                .arg("--api-url")
                .arg(env.server.api_url())
                .arg("--log-file")
                .arg(other.log())
                .arg("--cache-dir")
                .arg(other.cache())
                .arg("acme/web-app/81")
                .arg(env.mnt())
                .env("BUILDKITE_API_TOKEN", TOKEN));
            assert!(!o.status.success());
            String::from_utf8_lossy(&o.stderr).trim_end().to_string()
        }
        "dead mount" => {
            let server = served();
            let scratch = Scratch::new();
            let m = mount(&server, &scratch, "acme/web-app/80", &[]);
            for pid in m.daemon_pids() {
                // SAFETY: plain kill(2) of the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            assert!(wait_until(Duration::from_secs(10), || m
                .daemon_pids()
                .is_empty()));
            let line = failed(try_mount(
                &server,
                &scratch,
                "acme/web-app/80",
                Some(TOKEN),
                &[],
            ));
            drop(m);
            line
        }
        "/dev/fuse missing" => {
            // A private mount namespace whose /dev is an empty tmpfs.
            let server = served();
            let scratch = Scratch::new();
            let line = format!(
                "mount -t tmpfs none /dev && BUILDKITE_API_TOKEN={TOKEN} exec {BIN} mount --api-url {} --cache-dir {} --log-file {} acme/web-app/80 {}",
                server.api_url(),
                scratch.cache().display(),
                scratch.log().display(),
                scratch.mnt().display()
            );
            let o = run(Command::new("unshare")
                .arg("-m")
                .arg("--propagation")
                .arg("private")
                .arg("sh")
                .arg("-c")
                .arg(line));
            assert!(!o.status.success());
            String::from_utf8_lossy(&o.stderr).trim_end().to_string()
        }
        "user_allow_other missing" => {
            // An unprivileged user (nobody) mounts with --allow-other through fusermount3.
            let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
            assert!(
                !conf.lines().any(|l| l.trim() == "user_allow_other"),
                "this machine's /etc/fuse.conf enables user_allow_other: the failure cannot happen here"
            );
            let server = served();
            let scratch = Scratch::new();
            let nobody = 65534;
            std::fs::set_permissions(scratch.dir.path(), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            std::fs::create_dir(scratch.cache()).unwrap();
            for p in [scratch.mnt(), scratch.cache()] {
                std::os::unix::fs::chown(&p, Some(nobody), Some(nobody)).unwrap();
            }
            let o = run(Command::new("setpriv")
                .arg(format!("--reuid={nobody}"))
                .arg(format!("--regid={nobody}"))
                .arg("--clear-groups")
                .arg(BIN)
                .arg("mount")
                .arg("--allow-other")
                .arg("--api-url")
                .arg(server.api_url())
                .arg("--cache-dir")
                .arg(scratch.cache())
                .arg("--log-file")
                .arg(scratch.cache().join("bkfs.log"))
                .arg("acme/web-app/80")
                .arg(scratch.mnt())
                .env("BUILDKITE_API_TOKEN", TOKEN)
                .env("HOME", scratch.cache()));
            assert!(!o.status.success(), "mounted as nobody with --allow-other");
            String::from_utf8_lossy(&o.stderr).trim_end().to_string()
        }
        "unknown mount option" => {
            let o = run(Command::new(BIN)
                .arg("acme/web-app/80")
                .arg("/mnt")
                .arg("-o")
                .arg("ro,colour=blue"));
            assert!(!o.status.success());
            String::from_utf8_lossy(&o.stderr).trim_end().to_string()
        }
        "storage refusing" => {
            let (fb, _) = small_build(82);
            let env = Env::new(fb, &["--read-timeout", "3"]);
            env.server.fail_storage(1000, 503);
            let e = std::fs::read(env.mnt().join("build/notes.txt")).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            let o = run(Command::new(BIN).arg("status").arg(env.mnt()));
            let report = String::from_utf8_lossy(&o.stdout).into_owned();
            report
                .lines()
                .find(|l| l.starts_with("last error:"))
                .unwrap_or_else(|| panic!("no last error in {report}"))
                .to_string()
        }
        other => panic!(
            "README Troubleshooting row {other:?} has no scenario in tests/troubleshooting.rs"
        ),
    }
}

const SCENARIOS: &[&str] = &[
    "bad token",
    "no token",
    "missing scope",
    "unknown build",
    "unknown pipeline",
    "unreachable API",
    "plain http",
    "rate limited",
    "mountpoint missing",
    "mountpoint not a directory",
    "mountpoint busy",
    "dead mount",
    "/dev/fuse missing",
    "user_allow_other missing",
    "unknown mount option",
    "storage refusing",
];

#[test]
fn pattern_matching() {
    assert!(matches("a … b … c", "a x b y c"));
    assert!(matches("a …", "a anything"));
    assert!(!matches("a … c", "a x c d"));
    assert!(!matches("b …", "a b"));
    assert!(matches("exact", "exact"));
    assert!(!matches("exact", "exactly"));
}

#[test]
fn every_message_in_the_table_is_what_bkfs_prints() {
    let rows = table();
    let names: Vec<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
    for s in SCENARIOS {
        assert!(
            names.contains(s),
            "README Troubleshooting has no row for {s:?}"
        );
    }
    let mut wrong = Vec::new();
    for (failure, pattern) in rows {
        let f = failure.clone();
        let line = bounded(LIMIT, move || scenario(&f));
        if !matches(&pattern, &line) {
            wrong.push(format!("{failure}:\n  README: {pattern}\n  bkfs:   {line}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "README messages differ:\n{}",
        wrong.join("\n")
    );
}
