//! Job logs as files, through the kernel mount: `<job>.log` beside the job directories, plain
//! text that grep can use, sizes that agree with what reads return, zero requests for stat and
//! for a remount, `tail -f` on a running job, and the failure rules (missing scope, 404, 5xx,
//! stalls, rm).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use bkfs_fake::fakelog;

const ORG: &str = "acme";
const PIPE: &str = "logs";
/// A token that may read (and delete) logs.
const LOG_TOKEN: &str = "log-token";

fn log_server() -> Arc<FakeServer> {
    let s = server();
    s.add_token(
        LOG_TOKEN,
        &[
            "read_artifacts",
            "read_builds",
            "read_build_logs",
            "write_artifacts",
            "write_build_logs",
        ],
    );
    Arc::new(s)
}

fn log_mount(server: &FakeServer, scratch: &Scratch, build: &str, extra: &[&str]) -> Mount {
    match try_mount(server, scratch, build, Some(LOG_TOKEN), extra) {
        Ok(m) => m,
        Err((code, err)) => panic!(
            "bkfs mount failed ({code}): {err}\nlog:\n{}",
            std::fs::read_to_string(scratch.log()).unwrap_or_default()
        ),
    }
}

/// A finished build: "Build" (an artifact), "Lint" (no artifact), "Deploy" (no artifact,
/// failed), a wait step, and a command job that never ran. Returns the build and the
/// expected plain text per log file name.
fn finished_build(number: u64) -> (FakeBuild, Vec<(String, String)>) {
    let mut b = FakeBuild::new(ORG, PIPE, number);
    let build = b.add_job(":hammer: Build");
    b.add_artifact(&build, "dist/app.txt", b"app\n".to_vec());
    let lint = b.add_job(":eslint: Lint");
    let deploy = b.add_job(":rocket: Deploy");
    b.add_job_of_type("waiter", "");
    let never = b.add_job("Never ran");
    b.build
        .jobs
        .iter_mut()
        .find(|j| j.id == never)
        .unwrap()
        .started_at = None;
    let mut want = Vec::new();
    for (id, name, body) in [
        (&build, "build.log", vec!["compiling 12 crates", "build OK"]),
        (&lint, "lint.log", vec!["checked 40 files", "lint OK"]),
        (
            &deploy,
            "deploy.log",
            vec![
                "ERROR: deploy to staging FAILED",
                "Gem::RemoteFetcher::FetchError: bad response 503",
            ],
        ),
    ] {
        let log = fakelog::generate(name.trim_end_matches(".log"), &body, 1_767_323_060_000);
        b.logs.insert(id.clone(), log.raw.into());
        want.push((name.to_string(), log.plain));
    }
    (b, want)
}

fn log_requests(s: &FakeServer) -> u64 {
    s.count(Count::Log) + s.count(Count::LogHead)
}

#[test]
fn grep_finds_exactly_the_expected_lines_and_no_escape_bytes() {
    let server = log_server();
    let (fb, want) = finished_build(1);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = log_mount(&server, &scratch, &format!("{ORG}/{PIPE}/1"), &[]);
    let mnt = m.mnt.clone();
    bounded(LIMIT, move || {
        // Logs sit beside the job directories; wait jobs and jobs that never ran have none.
        assert_eq!(
            ls(&mnt),
            vec!["build", "build.log", "deploy.log", "lint.log"]
        );
        // Every ERROR line of every log, with its file, exactly.
        let (code, out, err) = sh(&format!("cd {} && grep -H ERROR *.log", mnt.display()));
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "deploy.log:ERROR: deploy to staging FAILED\n");
        let (_, out, _) = sh(&format!("grep -l FetchError {}/*.log", mnt.display()));
        assert_eq!(out.trim(), format!("{}/deploy.log", mnt.display()));
        // No ESC or BEL byte anywhere, and each log is exactly the expected plain text.
        let (code, out, _) = sh(&format!(
            "cat {}/*.log | LC_ALL=C grep -c $'[\\x1b\\x07]'",
            mnt.display()
        ));
        assert_eq!((code, out.trim()), (1, "0"), "escape bytes in the logs");
        for (name, plain) in &want {
            assert_eq!(&std::fs::read_to_string(mnt.join(name)).unwrap(), plain);
        }
    });
}

#[test]
fn stat_is_free_then_size_and_content_agree() {
    let server = log_server();
    let (fb, want) = finished_build(2);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = log_mount(&server, &scratch, &format!("{ORG}/{PIPE}/2"), &[]);
    let mnt = m.mnt.clone();
    let s = server.clone();
    let out_dir = scratch.dir.path().join("copy");
    bounded(LIMIT, move || {
        let api_before = s.count(Count::Api);
        for cmd in ["ls -lR", "find", "du -a", "stat"] {
            let target = if cmd == "stat" {
                format!("{}/lint.log {}/deploy.log", mnt.display(), mnt.display())
            } else {
                mnt.display().to_string()
            };
            let (code, _, err) = sh(&format!("{cmd} {target} > /dev/null"));
            assert_eq!(code, 0, "{cmd}: {err}");
        }
        assert_eq!(s.count(Count::Api), api_before, "listing made API requests");
        assert_eq!(log_requests(&s), 0);

        // cp reads the whole log on the first read; then stat agrees with it exactly.
        std::fs::create_dir(&out_dir).unwrap();
        for (name, plain) in &want {
            let (code, _, err) = sh(&format!(
                "cp {}/{name} {}/{name}",
                mnt.display(),
                out_dir.display()
            ));
            assert_eq!(code, 0, "{err}");
            std::fs::write(out_dir.join(format!("{name}.want")), plain).unwrap();
            let (code, _, err) = sh(&format!(
                "cmp {0}/{name} {0}/{name}.want",
                out_dir.display()
            ));
            assert_eq!(code, 0, "{name}: {err}");
            let len = std::fs::metadata(mnt.join(name)).unwrap().len();
            assert_eq!(len, plain.len() as u64, "{name}: st_size after a read");
        }
        // tar, which trusts st_size, archives the same bytes.
        let (code, _, err) = sh(&format!(
            "tar cf {0}/t.tar -C {1} lint.log && mkdir {0}/x && tar xf {0}/t.tar -C {0}/x && cmp {0}/x/lint.log {0}/lint.log.want",
            out_dir.display(),
            mnt.display()
        ));
        assert_eq!(code, 0, "{err}");
        // Each log was fetched once, and `bkfs status` says so.
        assert_eq!(s.count(Count::Log), want.len() as u64);
        let o = run(std::process::Command::new(BIN).arg("status").arg(&mnt));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("job logs:"))
            .unwrap_or("");
        assert!(
            line.contains(&format!("{} fetches", want.len())) && line.ends_with("0 running"),
            "{text}"
        );
        // The raw size is an attribute once known.
        let raw = xattr(&mnt.join("lint.log"), "user.buildkite.log_raw_size").unwrap();
        let raw: u64 = String::from_utf8(raw).unwrap().parse().unwrap();
        assert!(raw > want[1].1.len() as u64);
        assert!(xattr(&mnt.join("lint.log"), "user.buildkite.job_id").is_some());
        assert_eq!(
            xattr(&mnt.join("lint.log"), "user.buildkite.job_label").as_deref(),
            Some(&b":eslint: Lint"[..])
        );
    });
}

#[test]
fn rsync_and_python_read_whole_logs_first_time() {
    let server = log_server();
    let (fb, want) = finished_build(3);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = log_mount(&server, &scratch, &format!("{ORG}/{PIPE}/3"), &[]);
    let mnt = m.mnt.clone();
    let dst = scratch.dir.path().join("rs");
    bounded(LIMIT, move || {
        let (code, _, err) = sh(&format!("rsync -a {}/ {}/", mnt.display(), dst.display()));
        assert_eq!(code, 0, "{err}");
        for (name, plain) in &want {
            assert_eq!(&std::fs::read_to_string(dst.join(name)).unwrap(), plain);
        }
        let (code, out, err) = sh(&format!(
            "python3 -c 'import sys; print(len(open(sys.argv[1], \"rb\").read()))' {}/deploy.log",
            mnt.display()
        ));
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), want[2].1.len().to_string());
    });
}

#[test]
fn a_remount_reads_every_log_with_no_log_request() {
    let server = log_server();
    let (fb, want) = finished_build(4);
    server.add_build(fb);
    let scratch = Scratch::new();
    let build = format!("{ORG}/{PIPE}/4");
    {
        let m = log_mount(&server, &scratch, &build, &[]);
        let mnt = m.mnt.clone();
        bounded(LIMIT, move || {
            let (code, _, err) = sh(&format!("cat {}/*.log > /dev/null", mnt.display()));
            assert_eq!(code, 0, "{err}");
        });
        assert!(m.unmount());
    }
    assert_eq!(server.count(Count::Log), want.len() as u64);
    server.reset_counts();
    let m = log_mount(&server, &scratch, &build, &[]);
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(LIMIT, move || {
        // Sizes are known before any read: they come from the disk cache.
        for (name, plain) in &want {
            assert_eq!(
                std::fs::metadata(mnt.join(name)).unwrap().len(),
                plain.len() as u64
            );
        }
        let (code, _, err) = sh(&format!("grep -c . {}/*.log", mnt.display()));
        assert_eq!(code, 0, "{err}");
        for (name, plain) in &want {
            assert_eq!(&std::fs::read_to_string(mnt.join(name)).unwrap(), plain);
        }
        assert_eq!(log_requests(&s), 0, "the remount fetched logs");
    });
}

#[test]
fn tail_follows_a_running_job_and_stops_when_it_finishes() {
    let server = log_server();
    let mut fb = FakeBuild::running(ORG, PIPE, 5);
    let job = fb.add_job("Deploy");
    let first = fakelog::generate("deploy", &["starting deploy"], 1_767_323_060_000);
    fb.logs.insert(job.clone(), first.raw.clone().into());
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = log_mount(
        &server,
        &scratch,
        &format!("{ORG}/{PIPE}/5"),
        &["--refresh", "0.5"],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    let out = scratch.dir.path().join("tail.out");
    bounded(LIMIT, move || {
        let path = mnt.join("deploy.log");
        let tail = std::process::Command::new("timeout")
            .args(["30", "tail", "-n", "+1", "-F", "-s", "0.2"])
            .arg(&path)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut tail = scopeguard(tail);
        let seen = |needle: &str| {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains(needle)
        };
        assert!(
            wait_until(Duration::from_secs(10), || seen("starting deploy")),
            "tail printed nothing"
        );
        // The agent uploads more; an escape sequence is cut at the current end.
        let mut more = fakelog::marker(1_767_323_070_000);
        more.extend_from_slice(b"\x1b[32mstep 1 of 2 done\x1b[0m\n");
        more.extend_from_slice(&fakelog::marker(1_767_323_071_000));
        more.extend_from_slice(b"\x1b[1;3");
        assert!(s.append_log(ORG, PIPE, 5, &job, &more));
        assert!(
            wait_until(Duration::from_secs(10), || seen("step 1 of 2 done")),
            "tail missed the growth"
        );
        assert!(!std::fs::read_to_string(&out).unwrap().contains('\x1b'));
        // The rest of the sequence and the last line, then the job and the build finish.
        assert!(s.append_log(ORG, PIPE, 5, &job, b"1mstep 2 of 2 done\x1b[0m\nall done"));
        assert!(s.set_job_state(ORG, PIPE, 5, &job, "passed"));
        assert!(s.set_build_state(ORG, PIPE, 5, "passed"));
        assert!(
            wait_until(Duration::from_secs(10), || seen("all done")),
            "tail missed the end"
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("step 2 of 2 done\n"), "{text}");
        assert!(!text.contains('\x1b'));
        // Growth was fetched by suffix ranges, never the whole log again.
        assert_eq!(
            s.count(Count::Log) - s.count(Count::LogRange),
            1,
            "{:?}",
            s.counts()
        );
        // Finished: the size stops changing and the log is no longer polled.
        let size = std::fs::metadata(&path).unwrap().len();
        let polls = log_requests(&s);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        assert_eq!(
            log_requests(&s),
            polls,
            "a finished job's log is still polled"
        );
        tail.stop();
        let whole = std::fs::read_to_string(&path).unwrap();
        assert!(whole.ends_with("step 2 of 2 done\nall done"), "{whole:?}");
        assert_eq!(whole.len() as u64, size);
    });
}

/// Stops the child (`timeout CMD`) when dropped. SIGTERM, not SIGKILL: `timeout` passes
/// SIGTERM on to its command, while a killed `timeout` leaves the command running, orphaned.
struct Guarded(std::process::Child, bool);
impl Guarded {
    fn stop(&mut self) {
        if !std::mem::replace(&mut self.1, true) {
            // SAFETY: plain kill(2) of our own child, not yet waited for.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
}
impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop();
    }
}
fn scopeguard(c: std::process::Child) -> Guarded {
    Guarded(c, false)
}

#[test]
fn a_token_without_read_build_logs_mounts_without_logs() {
    let server = log_server();
    let (fb, _) = finished_build(6);
    server.add_build(fb);
    let scratch = Scratch::new();
    // The harness token has read_artifacts and read_builds but not read_build_logs.
    let m = mount(&server, &scratch, &format!("{ORG}/{PIPE}/6"), &[]);
    let mnt = m.mnt.clone();
    assert_eq!(ls(&mnt), vec!["build"]);
    assert_eq!(
        std::fs::read(mnt.join("build/dist/app.txt")).unwrap(),
        b"app\n"
    );
    let log = m.log_text();
    assert_eq!(
        log.matches("no job logs are shown: the token lacks the read_build_logs scope")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(log_requests(&server), 0);
}

#[test]
fn a_missing_log_reads_as_enoent_without_retries() {
    let server = log_server();
    let (fb, _) = finished_build(7);
    let lint = fb.build.jobs[1].id.clone();
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = log_mount(&server, &scratch, &format!("{ORG}/{PIPE}/7"), &[]);
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(LIMIT, move || {
        assert!(s.remove_log(ORG, PIPE, 7, &lint));
        let t0 = Instant::now();
        let e = std::fs::read(mnt.join("lint.log")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(s.count(Count::Log), 1, "a 404 was retried");
        // It is gone from the listing too; the others still read.
        assert!(!ls(&mnt).contains(&"lint.log".to_string()));
        assert!(std::fs::read(mnt.join("build.log")).is_ok());
    });
}

#[test]
fn server_errors_and_stalls_end_in_the_right_bytes_or_eio() {
    let server = log_server();
    let (fb, want) = finished_build(8);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = log_mount(
        &server,
        &scratch,
        &format!("{ORG}/{PIPE}/8"),
        &["--read-timeout", "4"],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(LIMIT, move || {
        // A 503 is retried; a stalled body and a reset one are resumed by suffix range.
        s.fail_api(1, 503);
        assert_eq!(
            std::fs::read_to_string(mnt.join("build.log")).unwrap(),
            want[0].1
        );
        s.stall_logs(1, 100);
        let t0 = Instant::now();
        assert_eq!(
            std::fs::read_to_string(mnt.join("lint.log")).unwrap(),
            want[1].1
        );
        assert!(t0.elapsed() < Duration::from_secs(15));
        s.reset_logs(1);
        assert_eq!(
            std::fs::read_to_string(mnt.join("deploy.log")).unwrap(),
            want[2].1
        );
        assert!(s.count(Count::LogRange) >= 2, "{:?}", s.counts());
    });
    // Endless stalls: EIO within the bound, and the mount keeps serving.
    let server = log_server();
    let (fb, _) = finished_build(9);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = log_mount(
        &server,
        &scratch,
        &format!("{ORG}/{PIPE}/9"),
        &["--read-timeout", "2"],
    );
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(LIMIT, move || {
        s.stall_logs(100, 10);
        let t0 = Instant::now();
        let e = std::fs::read(mnt.join("lint.log")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        s.stall_logs(0, 0);
        assert_eq!(
            std::fs::read(mnt.join("build/dist/app.txt")).unwrap(),
            b"app\n"
        );
    });
    assert!(m.log_text().contains("cannot fetch the job's log"));
}

#[test]
fn rm_deletes_a_log_only_with_allow_delete() {
    let server = log_server();
    let (fb, _) = finished_build(10);
    server.add_build(fb);
    let scratch = Scratch::new();
    let build = format!("{ORG}/{PIPE}/10");
    {
        let m = log_mount(&server, &scratch, &build, &[]);
        let e = std::fs::remove_file(m.path("lint.log")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        assert_eq!(server.count(Count::LogDelete), 0);
        assert!(m.unmount());
    }
    let m = log_mount(&server, &scratch, &build, &["--allow-delete"]);
    std::fs::remove_file(m.path("lint.log")).unwrap();
    assert_eq!(server.count(Count::LogDelete), 1);
    assert!(!ls(&m.mnt).contains(&"lint.log".to_string()));
    let mut left = 0;
    server.update_build(ORG, PIPE, 10, |b| left = b.logs.len());
    assert_eq!(left, 2, "the fake still holds the log");
}

#[test]
fn formats_and_names() {
    let server = log_server();
    let mut fb = FakeBuild::new(ORG, PIPE, 11);
    // A job whose directory is literally named like another job's log.
    let tricky = fb.add_job("tests.log");
    fb.add_artifact(&tricky, "a.txt", b"a\n".to_vec());
    let tests = fb.add_job("tests");
    let raw = b"\x1b_bk;t=1767323060000\x07\x1b[31mred\x1b[0m line\n".to_vec();
    fb.logs.insert(tests.clone(), raw.clone().into());
    fb.logs.insert(tricky.clone(), raw.clone().into());
    server.add_build(fb);
    let build = format!("{ORG}/{PIPE}/11");
    let short = &tests[..8];
    let renamed = format!("tests~{short}.log");
    let scratch = Scratch::new();
    {
        let m = log_mount(&server, &scratch, &build, &[]);
        let mut want = vec![
            "tests.log".to_string(),
            "tests.log.log".into(),
            renamed.clone(),
        ];
        want.sort();
        assert_eq!(ls(&m.mnt), want);
        assert_eq!(
            std::fs::read_to_string(m.path(&renamed)).unwrap(),
            "red line\n"
        );
        assert!(m.unmount());
    }
    let scratch = Scratch::new();
    {
        let m = log_mount(&server, &scratch, &build, &["--raw-logs"]);
        assert_eq!(std::fs::read(m.path(&renamed)).unwrap(), raw);
        assert!(m.unmount());
    }
    let scratch = Scratch::new();
    let m = log_mount(&server, &scratch, &build, &["--log-timestamps"]);
    assert_eq!(
        std::fs::read_to_string(m.path(&renamed)).unwrap(),
        "[2026-01-02T03:04:20.000Z] red line\n"
    );
}

#[test]
fn pipeline_mounts_show_logs_inside_each_build() {
    let server = log_server();
    let (a, want) = finished_build(20);
    let (b, _) = finished_build(21);
    server.add_build(a);
    server.add_build(b);
    let scratch = Scratch::new();
    let m = log_mount(&server, &scratch, &format!("{ORG}/{PIPE}"), &[]);
    let mnt = m.mnt.clone();
    bounded(LIMIT, move || {
        assert!(ls(&mnt.join("20")).contains(&"lint.log".to_string()));
        assert_eq!(
            std::fs::read_to_string(mnt.join("21/deploy.log")).unwrap(),
            want[2].1
        );
        let (_, out, _) = sh(&format!("grep -l FAILED {}/[0-9]*/*.log", mnt.display()));
        assert_eq!(out.lines().count(), 2, "{out}");
    });
}
