//! Process hygiene through the real kernel mount: a daemon killed with SIGKILL mid-read, a
//! SIGTERM while a read is in flight (background and foreground), and mountpoints that
//! cannot be used (a dead FUSE mount, one already mounted under another spelling of its
//! path). Readers get an error or the right bytes, never a hang; nothing stays mounted.
//!
//! Reads are slowed down with the fake's per-response bandwidth cap so that a 32 MiB file
//! takes several seconds, long enough to hit the daemon in the middle of it.
//!
//! Also, without a mount: bkfs's list of final build states agrees with the published schema
//! and with the fake's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::builds::{Builder, ORG, PIPELINE};
use crate::common::*;

const MIB: usize = 1 << 20;
/// Bytes per second per storage response while a test wants reads to be slow.
const SLOW: u64 = 256 * 1024;

/// A file under the mount: (path relative to the mountpoint, content).
type File = (String, Vec<u8>);

/// A build with one job (dir `job`): `job/big/big.bin` (32 MiB) and `job/small/notes.txt`.
/// Returns the build, its reference and the two files as (rel path, content).
fn build(number: u64) -> (FakeBuild, String, File, File) {
    let mut b = Builder::new(ORG, PIPELINE, number);
    let job = b.simple_job(
        &format!("a{number:07}-0000-4000-8000-000000000001"),
        "Job",
        "2024-06-01T00:00:00.000Z",
        "job",
    );
    let big = det_bytes(32 * MIB, number * 10 + 1);
    let small = det_bytes(3000, number * 10 + 2);
    b.text_file(&job, "job", "big/big.bin", &big);
    b.text_file(&job, "job", "small/notes.txt", &small);
    (
        b.finish().0,
        format!("{ORG}/{PIPELINE}/{number}"),
        ("job/big/big.bin".into(), big),
        ("job/small/notes.txt".into(), small),
    )
}

/// A cleanup guard for a mountpoint that mounts come and go on: unmounts lazily and ends any
/// daemon left when dropped.
fn guard(scratch: &Scratch) -> Mount {
    Mount {
        mnt: scratch.mnt(),
        log: scratch.log(),
        stdout: String::new(),
        stderr: String::new(),
    }
}

/// How many entries /proc/self/mountinfo has for this (canonical) path.
fn mount_count(mnt: &Path) -> usize {
    let abs = std::fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').nth(4) == abs.to_str())
        .count()
}

/// `cat FILE > out` as a child, with its stderr in `out.err`.
fn spawn_cat(file: &Path, out: &Path) -> Child {
    Command::new("cat")
        .arg(file)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out).unwrap())
        .stderr(std::fs::File::create(out.with_extension("err")).unwrap())
        .spawn()
        .expect("spawn cat")
}

/// Waits until `cat` has written something (it is reading) and is still running.
fn wait_mid_read(cat: &mut Child, out: &Path) {
    let started = wait_until(Duration::from_secs(15), || {
        std::fs::metadata(out).map(|m| m.len()).unwrap_or(0) > 0
    });
    assert!(started, "cat wrote nothing within 15 s");
    assert!(
        cat.try_wait().unwrap().is_none(),
        "cat already finished: the read is not slow enough to be interrupted"
    );
}

/// Waits (bounded) for a child; SIGKILLs it and fails when it does not end in time.
fn wait_child(c: &mut Child, limit: Duration, what: &str) -> (std::process::ExitStatus, Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(st) = c.try_wait().unwrap() {
            return (st, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    panic!("{what} still running {limit:?} later: a hang");
}

/// What `cat` wrote must be a prefix of the file (all of it if it succeeded).
fn check_cat_output(out: &Path, want: &[u8], ok: bool) -> usize {
    let got = std::fs::read(out).unwrap();
    let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    assert!(
        got.len() <= want.len() && got[..] == want[..got.len()],
        "cat wrote {} bytes that are not a prefix of the file (sha1 {}); stderr {err:?}",
        got.len(),
        sha1_hex(&got)
    );
    if ok {
        assert_eq!(
            got.len(),
            want.len(),
            "cat exited 0 after a short read; stderr {err:?}"
        );
    } else {
        assert!(!err.is_empty(), "cat failed without a message");
    }
    got.len()
}

fn log_of(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// SIGKILL to the daemon while `cat` of a 32 MiB file is blocked in a read: `cat` gets an
/// error within 10 s (not a hang) and what it wrote is a correct prefix; the dead mount is
/// refused by a new `bkfs mount` with a hint; `fusermount3 -u -z` cleans it up; a remount on
/// the same mountpoint with the same (half-written) cache dir reads the file correctly.
#[test]
fn kill9_mid_read_errors_the_reader_and_remount_works() {
    let (fb, build_name, big, small) = build(301);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Arc::new(Scratch::new());
    let _cleanup = guard(&scratch);
    let m = mount(&server, &scratch, &build_name, &[]);
    let mnt = m.mnt.clone();
    let (s, sc) = (server.clone(), scratch.clone());
    bounded(Duration::from_secs(90), move || {
        let pids = daemon_pids(&mnt);
        assert_eq!(pids.len(), 1, "one daemon expected: {pids:?}");
        s.set_storage_bandwidth(SLOW);
        let out = sc.dir.path().join("cat.out");
        let mut cat = spawn_cat(&mnt.join(&big.0), &out);
        wait_mid_read(&mut cat, &out);

        // SAFETY: plain kill(2) of the daemon this test started.
        assert_eq!(unsafe { libc::kill(pids[0], libc::SIGKILL) }, 0);
        let (st, took) = wait_child(&mut cat, Duration::from_secs(10), "cat after kill -9");
        eprintln!("cat after kill -9: {st:?} after {took:?}");
        assert!(
            !st.success(),
            "cat of a 32 MiB file at {SLOW} B/s succeeded although the daemon was killed"
        );
        let n = check_cat_output(&out, &big.1, false);
        eprintln!(
            "cat wrote {n} correct bytes; stderr {:?}",
            std::fs::read_to_string(out.with_extension("err")).unwrap_or_default()
        );
        assert!(
            wait_until(Duration::from_secs(5), || daemon_pids(&mnt).is_empty()),
            "the killed daemon is still listed: {:?}",
            daemon_pids(&mnt)
        );

        // The mount is dead: stat says ENOTCONN, and bkfs refuses it with a hint.
        let e = std::fs::metadata(&mnt).expect_err("stat of a dead FUSE mount succeeded");
        assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "stat: {e}");
        match try_mount(&s, &sc, &build_name, Some(TOKEN), &[]) {
            Ok(_) => panic!("mounting over a dead FUSE mount succeeded"),
            Err((code, err)) => {
                assert_ne!(code, 0);
                assert!(
                    err.starts_with("bkfs: error: ") && err.lines().count() == 1,
                    "{err:?}"
                );
                assert!(
                    err.contains("dead FUSE mount") && err.contains("fusermount3 -u -z"),
                    "{err:?}"
                );
            }
        }
        assert_eq!(mount_count(&mnt), 1, "the failed mount stacked a mount");

        let (code, _, err) = sh(&format!("fusermount3 -u -z {}", mnt.display()));
        assert_eq!(code, 0, "fusermount3 -u -z of the dead mount: {err}");
        assert!(!is_mounted(&mnt), "still mounted after fusermount3 -u -z");

        s.set_storage_bandwidth(0);
        let m2 = mount(&s, &sc, &build_name, &[]);
        assert_eq!(daemon_pids(&mnt).len(), 1, "{:?}", daemon_pids(&mnt));
        for (rel, want) in [&big, &small] {
            let got = std::fs::read(m2.path(rel)).unwrap_or_else(|e| {
                panic!("read {rel} after remount: {e}\nlog:\n{}", m2.log_text())
            });
            assert_eq!(
                sha1_hex(&got),
                sha1_hex(want),
                "{rel} after remount ({} bytes)",
                got.len()
            );
        }
        assert!(m2.unmount(), "clean unmount of the remount");
    });
    drop(m);
}

/// Starts `cat` of the big file at [`SLOW`] bytes per second, sends SIGTERM to `pid` once
/// `cat` is blocked in the middle of it, and returns `cat` with the moment of the signal.
fn sigterm_mid_read(
    server: &FakeServer,
    mnt: &Path,
    rel: &str,
    out: &Path,
    pid: i32,
) -> (Child, Instant) {
    server.set_storage_bandwidth(SLOW);
    let mut cat = spawn_cat(&mnt.join(rel), out);
    wait_mid_read(&mut cat, out);
    // SAFETY: plain kill(2) of the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    (cat, Instant::now())
}

/// SIGTERM to a background daemon while `cat` is in the middle of a slow 32 MiB read: the
/// daemon is gone within 10 s, logging a clean exit (exit 0, not "exiting anyway"), nothing
/// is mounted, and `cat` either completed with the right bytes or failed with a correct
/// prefix, in bounded time.
#[test]
fn sigterm_mid_read_background_daemon_exits_cleanly() {
    let (fb, build_name, big, _) = build(302);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Arc::new(Scratch::new());
    let m = mount(&server, &scratch, &build_name, &[]);
    let mnt = m.mnt.clone();
    let log = m.log.clone();
    let (s, sc) = (server.clone(), scratch.clone());
    bounded(Duration::from_secs(90), move || {
        let pids = daemon_pids(&mnt);
        assert_eq!(pids.len(), 1, "one daemon expected: {pids:?}");
        let out = sc.dir.path().join("cat.out");
        let (mut cat, t) = sigterm_mid_read(&s, &mnt, &big.0, &out, pids[0]);
        let gone = wait_until(Duration::from_secs(10), || daemon_pids(&mnt).is_empty());
        let daemon_took = t.elapsed();
        let (st, _) = wait_child(&mut cat, Duration::from_secs(30), "cat after SIGTERM");
        let cat_took = t.elapsed();
        s.set_storage_bandwidth(0);
        let n = check_cat_output(&out, &big.1, st.success());
        let text = log_of(&log);
        // The daemon's own lifecycle lines (the harness mounts with -vv: reads are TRACE).
        let tail: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("bkfs::mount") || l.contains(" WARN ") || l.contains("ERROR"))
            .rev()
            .take(15)
            .collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!(
            "SIGTERM mid-read: daemon gone={gone} after {daemon_took:?}; cat {st:?} after \
             {cat_took:?} with {n} bytes\nlog tail:\n{}",
            tail.join("\n")
        );
        assert!(
            gone,
            "the daemon is still running 10 s after SIGTERM: {:?}\nlog tail:\n{}",
            daemon_pids(&mnt),
            tail.join("\n")
        );
        assert!(!is_mounted(&mnt), "still mounted after SIGTERM");
        assert!(
            text.contains("unmounted; exiting") && !text.contains("exiting anyway"),
            "the daemon did not exit cleanly (exit 0) after SIGTERM during a read:\n{}",
            tail.join("\n")
        );
    });
    drop(m);
}

/// The same with `bkfs mount -f`, whose exit status the test sees: SIGTERM while `cat` is in
/// the middle of a slow read → exit 0 within 10 s, unmounted, `cat` ends either way.
#[test]
fn sigterm_mid_read_foreground_exits_zero() {
    let (fb, build_name, big, _) = build(303);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let mnt = scratch.mnt();
    let output = scratch.dir.path().join("fg.out");
    let out_file = std::fs::File::create(&output).unwrap();
    let mut fg = Foreground {
        child: Command::new(BIN)
            .args(["mount", "-f", "--api-url", &server.api_url(), "--cache-dir"])
            .arg(scratch.cache())
            .arg(&build_name)
            .arg(&mnt)
            .env("BUILDKITE_API_TOKEN", TOKEN)
            .env_remove("RUST_LOG")
            .env_remove("BUILDKITE_API_URL")
            .stdin(Stdio::null())
            .stdout(out_file.try_clone().unwrap())
            .stderr(out_file)
            .spawn()
            .expect("spawn bkfs mount -f"),
        mnt: mnt.clone(),
        output: output.clone(),
    };
    let m = mnt.clone();
    assert!(
        wait_until(Duration::from_secs(30), || is_mounted(&m)),
        "not mounted; output:\n{}",
        fg.output_text()
    );
    let out = scratch.dir.path().join("cat.out");
    let pid = fg.child.id() as i32;
    let (mut cat, t) = sigterm_mid_read(&server, &mnt, &big.0, &out, pid);
    let st = fg.wait_exit(Duration::from_secs(20));
    let took = t.elapsed();
    let (cat_st, _) = wait_child(&mut cat, Duration::from_secs(30), "cat after SIGTERM");
    let cat_took = t.elapsed();
    server.set_storage_bandwidth(0);
    let n = check_cat_output(&out, &big.1, cat_st.success());
    let text = fg.output_text();
    eprintln!(
        "SIGTERM mid-read (foreground): exit {st:?} after {took:?}; cat {cat_st:?} after \
         {cat_took:?} with {n} bytes\noutput:\n{text}"
    );
    let st = st.unwrap_or_else(|| panic!("bkfs mount -f still running 20 s after SIGTERM"));
    assert!(!is_mounted(&mnt), "still mounted after the daemon exited");
    assert!(
        st.success() && took < Duration::from_secs(10),
        "bkfs mount -f exited {st:?} after {took:?} (want 0 within 10 s) when SIGTERM came \
         during a read:\n{text}"
    );
}

/// A dead FUSE mount (its daemon was killed) is refused with a clear error naming the fix;
/// nothing new is mounted or started, and after the fix the mount works.
#[test]
fn dead_mount_is_refused_with_the_fix() {
    let (fb, build_name, _, small) = build(304);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Arc::new(Scratch::new());
    let _cleanup = guard(&scratch);
    let m = mount(&server, &scratch, &build_name, &[]);
    let mnt = m.mnt.clone();
    let (s, sc) = (server.clone(), scratch.clone());
    bounded(LIMIT, move || {
        let pids = daemon_pids(&mnt);
        assert_eq!(pids.len(), 1, "{pids:?}");
        // SAFETY: plain kill(2) of the daemon this test started.
        unsafe { libc::kill(pids[0], libc::SIGKILL) };
        assert!(wait_until(Duration::from_secs(5), || daemon_pids(&mnt).is_empty()));
        s.reset_counts();
        let err = match try_mount(&s, &sc, &build_name, Some(TOKEN), &[]) {
            Ok(_) => panic!("mounting over a dead FUSE mount succeeded"),
            Err((code, err)) => {
                assert_ne!(code, 0);
                err
            }
        };
        assert!(
            err.starts_with("bkfs: error: ") && err.lines().count() == 1,
            "{err:?}"
        );
        assert!(
            err.contains(&*mnt.to_string_lossy())
                && err.contains("not connected")
                && err.contains("fusermount3 -u -z"),
            "{err:?}"
        );
        assert_eq!(
            s.count(Count::Api),
            0,
            "requests before the mountpoint check"
        );
        assert_eq!(mount_count(&mnt), 1, "a mount was stacked on the dead one");
        assert!(daemon_pids(&mnt).is_empty(), "{:?}", daemon_pids(&mnt));
        let (code, _, e) = sh(&format!("fusermount3 -u -z {}", mnt.display()));
        assert_eq!(code, 0, "{e}");
        let m2 = mount(&s, &sc, &build_name, &[]);
        assert_eq!(std::fs::read(m2.path(&small.0)).unwrap(), small.1);
    });
    drop(m);
}

/// A mountpoint already mounted, named another way (a symlink to it, `MNT/.`, a relative
/// path): refused with one clear line, nothing stacked on it, the first mount keeps serving.
#[test]
fn already_mounted_under_another_name_is_refused() {
    let (fb, build_name, _, small) = build(305);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let server = env.server.clone();
    let dir = env.scratch.dir.path().to_path_buf();
    bounded(LIMIT, move || {
        let link = dir.join("link-to-mnt");
        std::os::unix::fs::symlink(&mnt, &link).unwrap();
        let names: [(PathBuf, Option<&Path>); 3] = [
            (link, None),
            (mnt.join("."), None),
            (PathBuf::from("mnt"), Some(dir.as_path())),
        ];
        for (name, cwd) in names {
            let mut cmd = Command::new(BIN);
            cmd.arg("mount")
                .arg("--api-url")
                .arg(server.api_url())
                .arg("--log-file")
                .arg(dir.join("second.log"))
                .arg(&build_name)
                .arg(&name)
                .env("BUILDKITE_API_TOKEN", TOKEN);
            if let Some(d) = cwd {
                cmd.current_dir(d);
            }
            let o = run(&mut cmd);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "mount on {name:?} succeeded");
            assert!(
                err.starts_with("bkfs: error: ") && err.lines().count() == 1,
                "{name:?}: {err:?}"
            );
            assert!(err.contains("already a mount point"), "{name:?}: {err:?}");
            assert_eq!(mount_count(&mnt), 1, "{name:?}: a mount was stacked");
            assert_eq!(daemon_pids(&mnt).len(), 1, "{:?}", daemon_pids(&mnt));
        }
        assert_eq!(std::fs::read(mnt.join(&small.0)).unwrap(), small.1);
    });
}

/// The values of `enum BuildStates` in the vendored published schema, lowercased.
fn schema_build_states() -> Vec<String> {
    let schema = bkfs_fake::graphql::BUILDKITE_SCHEMA;
    let start = schema
        .find("enum BuildStates {")
        .expect("the schema has enum BuildStates");
    let body = &schema[start..];
    let body = &body[..body.find('}').expect("enum BuildStates ends")];
    // Values are the lines that are one upper-case word; descriptions are in """ blocks.
    let states: Vec<String> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_ascii_lowercase)
        .collect();
    assert!(
        states.len() >= 10 && states.iter().any(|s| s == "passed"),
        "enum BuildStates read wrongly: {states:?}"
    );
    states
}

#[test]
fn final_build_states_follow_the_schema_and_the_fake() {
    let schema = schema_build_states();
    // Spellings bkfs also takes as final that no schema value has (see FINAL_BUILD_STATES).
    let tolerated = ["finished", "cancelled"];
    for s in bkfs::fs::FINAL_BUILD_STATES {
        assert!(
            schema.iter().any(|x| x == s) || tolerated.contains(&s),
            "bkfs takes {s:?} as final, but it is no BuildStates value ({schema:?}) nor a tolerated spelling"
        );
    }
    for s in bkfs_fake::FINAL_BUILD_STATES {
        assert!(
            schema.iter().any(|x| x == s),
            "the fake takes {s:?} as final, but it is no BuildStates value ({schema:?})"
        );
        assert!(
            bkfs::fs::is_final_state(Some(s)),
            "the fake takes {s:?} as final and bkfs does not: bkfs would refresh such a build forever"
        );
    }
    // The states of a build still under way are final to neither.
    for s in [
        "scheduled",
        "running",
        "failing",
        "canceling",
        "blocked",
        "creating",
    ] {
        assert!(
            schema.iter().any(|x| x == s),
            "{s:?} is a BuildStates value"
        );
        assert!(
            !bkfs::fs::is_final_state(Some(s)),
            "bkfs takes {s:?} as final"
        );
        assert!(
            !bkfs_fake::FINAL_BUILD_STATES.contains(&s),
            "the fake takes {s:?} as final"
        );
    }
}
