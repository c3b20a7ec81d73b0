//! The process around a mount: `bkfs-demo`, `bkfs unmount`, `fusermount3 -u`, SIGTERM and
//! SIGINT to the daemon, and a foreground mount's exit code.

use std::path::Path;
use std::time::Duration;

use crate::common::builds::small_build;
use crate::common::*;

/// `bkfs-demo MNT ARGS` in the foreground on the scratch mountpoint, once it is mounted.
fn start_demo(scratch: &Scratch, args: &[&str]) -> Foreground {
    let mnt = scratch.mnt();
    let mut argv = vec![mnt.clone().into_os_string()];
    argv.extend(args.iter().map(std::ffi::OsString::from));
    let demo = Foreground::spawn_program(
        &workspace_bin("bkfs-demo"),
        argv,
        &mnt,
        &scratch.dir.path().join("demo.out"),
    );
    assert!(
        wait_until(Duration::from_secs(30), || is_mounted(&mnt)),
        "bkfs demo did not mount within 30 s; output:\n{}",
        demo.output_text()
    );
    demo
}

/// `bkfs-demo MNT` starts the fake and runs `bkfs mount` in the foreground; `ls -lR` lists
/// files, `grep -r ERROR` finds something; SIGINT to the launcher unmounts and it exits 0.
#[test]
fn demo_mounts_lists_and_sigint_unmounts() {
    let scratch = Scratch::new();
    let mnt = scratch.mnt();
    let mut demo = start_demo(&scratch, &[]);
    let m = mnt.clone();
    bounded(LIMIT, move || {
        let (code, out, err) = sh(&format!("ls -lR {}", m.display()));
        assert_eq!(code, 0, "ls -lR: {err}");
        let files = out.lines().filter(|l| l.starts_with("-r--r--r-- ")).count();
        let dirs = out.lines().filter(|l| l.starts_with("dr-xr-xr-x ")).count();
        assert!(
            files >= 5 && dirs >= 2,
            "ls -lR shows {files} files, {dirs} dirs:\n{out}"
        );
        assert!(!out.contains("-rw"), "a writable entry:\n{out}");
        let (code, out, err) = sh(&format!("grep -r ERROR {}", m.display()));
        assert_eq!(code, 0, "grep -r ERROR found nothing: {err}");
        assert!(out.lines().all(|l| l.contains("ERROR")) && !out.is_empty());
        // Every artifact (the files inside job directories) carries its sha1.
        let (code, out, err) = sh(&format!(
            "getfattr -R -d {} | grep -c user.buildkite.sha1sum",
            m.display()
        ));
        assert_eq!(code, 0, "{err}");
        let (_, artifacts, _) = sh(&format!("find {} -mindepth 2 -type f | wc -l", m.display()));
        let artifacts: usize = artifacts.trim().parse().unwrap();
        assert!(artifacts >= 5, "{artifacts} artifacts");
        assert!(out.trim().parse::<usize>().unwrap() >= artifacts, "{out}");
        // Every command job has its log beside the job directories, the job that uploaded
        // no artifact included, as plain text.
        let logs: Vec<String> = ls(&m).into_iter().filter(|n| n.ends_with(".log")).collect();
        assert!(logs.len() >= 8, "{logs:?}");
        assert!(
            logs.contains(&"upload-pipeline.log".to_string()),
            "{logs:?}"
        );
        assert!(!m.join("upload-pipeline").exists());
        let (code, out, _) = sh(&format!("grep -l FAILED {}/*.log", m.display()));
        assert_eq!(code, 0);
        assert!(out.contains("rspec-2.log"), "{out}");
        let (code, _, _) = sh(&format!("cat {}/*.log | grep -q $'\\x1b'", m.display()));
        assert_eq!(code, 1, "escape codes in the demo's logs");
        // The screenshots zip opens as a directory, with what `unzip` lists in the file.
        let (code, zips, err) = sh(&format!("find {} -name screenshots.zip", m.display()));
        assert_eq!(code, 0, "{err}");
        let zip = zips
            .lines()
            .next()
            .expect("the demo has a screenshots.zip")
            .to_string();
        assert_eq!(ls(&Path::new(&format!("{zip}#")).join("checkout")).len(), 3);
        let (code, listed, err) = sh(&format!(
            "unzip -Z1 {zip} | grep -v /$ | sort; echo --; cd {zip}# && find . -type f | sed 's|^./||' | sort"
        ));
        assert_eq!(code, 0, "{err}");
        let (by_unzip, by_bkfs) = listed.split_once("--\n").unwrap();
        assert_eq!(by_unzip, by_bkfs);
        let (code, _, err) = sh(&format!(
            "unzip -p {zip} checkout/step-3.png | cmp - {zip}#/checkout/step-3.png"
        ));
        assert_eq!(code, 0, "{err}");
    });
    demo.signal(libc::SIGINT);
    let st = demo.wait_exit(Duration::from_secs(10));
    let out = demo.output_text();
    let st = st.unwrap_or_else(|| panic!("bkfs demo still running 10 s after SIGINT:\n{out}"));
    assert!(st.success(), "bkfs demo exited with {st:?}:\n{out}");
    assert!(!is_mounted(&mnt), "still mounted after the demo exited");
    assert!(
        out.contains("Ctrl-C"),
        "the demo does not say how to stop it:\n{out}"
    );
}

/// `bkfs-demo MNT -- OPTIONS` passes the options to `bkfs mount`: with `--list-archives`,
/// the screenshots zip's `NAME#` is listed beside it.
#[test]
fn demo_passes_mount_options() {
    let scratch = Scratch::new();
    let mnt = scratch.mnt();
    let mut demo = start_demo(&scratch, &["--", "--list-archives"]);
    let m = mnt.clone();
    bounded(LIMIT, move || {
        let names = ls(&m.join("cucumber-attempt-1/tmp"));
        assert!(names.contains(&"screenshots.zip#".to_string()), "{names:?}");
    });
    demo.signal(libc::SIGINT);
    let st = demo.wait_exit(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{}", demo.output_text());
}

/// `bkfs unmount MNT`: unmounted, and the daemon is gone within 3 s.
#[test]
fn unmount_command_ends_daemon() {
    let env = Env::new(small_build(51).0, &[]);
    let mnt = env.mnt();
    let pids = env.m.daemon_pids();
    assert_eq!(pids.len(), 1, "one daemon expected: {pids:?}");
    bounded(LIMIT, move || {
        assert_eq!(ls(&mnt).len(), 2);
        let o = run(std::process::Command::new(BIN).arg("unmount").arg(&mnt));
        assert!(
            o.status.success(),
            "bkfs unmount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            wait_gone(&mnt, Duration::from_secs(3)),
            "daemon still there: {:?}",
            daemon_pids(&mnt)
        );
        assert!(!is_mounted(&mnt));
        assert_eq!(
            ls(&mnt),
            Vec::<String>::new(),
            "the mountpoint dir is empty again"
        );
        // Unmounting again is a clear error.
        let o = run(std::process::Command::new(BIN).arg("unmount").arg(&mnt));
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("bkfs: error: "), "{err}");
    });
}

/// `fusermount3 -u MNT` directly works the same.
#[test]
fn fusermount_ends_daemon() {
    let env = Env::new(small_build(52).0, &[]);
    let mnt = env.mnt();
    assert_eq!(env.m.daemon_pids().len(), 1);
    bounded(LIMIT, move || {
        let (code, _, err) = sh(&format!("fusermount3 -u {}", mnt.display()));
        assert_eq!(code, 0, "{err}");
        assert!(
            wait_gone(&mnt, Duration::from_secs(3)),
            "daemon still there: {:?}",
            daemon_pids(&mnt)
        );
    });
}

/// SIGTERM (and SIGINT) to the daemon unmount and end it.
#[test]
fn sigterm_and_sigint_to_daemon_unmount() {
    for (n, sig) in [(53, libc::SIGTERM), (54, libc::SIGINT)] {
        let env = Env::new(small_build(n).0, &[]);
        let mnt = env.mnt();
        let pids = env.m.daemon_pids();
        assert_eq!(pids.len(), 1, "one daemon expected: {pids:?}");
        bounded(LIMIT, move || {
            assert_eq!(ls(&mnt).len(), 2);
            // SAFETY: plain kill(2) of the daemon we started.
            assert_eq!(unsafe { libc::kill(pids[0], sig) }, 0);
            assert!(
                wait_gone(&mnt, Duration::from_secs(3)),
                "signal {sig}: still mounted={} daemons={:?}",
                is_mounted(&mnt),
                daemon_pids(&mnt)
            );
        });
    }
}

/// `bkfs mount -f` stays in the foreground, serves, and exits 0 on SIGINT with the mount gone.
#[test]
fn foreground_mount_exits_zero_on_sigint() {
    let server = server();
    server.add_build(small_build(56).0);
    let scratch = Scratch::new();
    let mnt = scratch.mnt();
    let api = server.api_url();
    let mut fg = {
        let out = std::fs::File::create(scratch.dir.path().join("fg.out")).unwrap();
        let child = std::process::Command::new(BIN)
            .args(["mount", "-f", "--api-url", &api, "--cache-dir"])
            .arg(scratch.cache())
            .arg("acme/web-app/56")
            .arg(&mnt)
            .env("BUILDKITE_API_TOKEN", TOKEN)
            .env("HOME", scratch.dir.path())
            .env_remove("XDG_CACHE_HOME")
            .env_remove("RUST_LOG")
            .env_remove("BUILDKITE_API_URL")
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Foreground {
            child,
            mnt: mnt.clone(),
            output: scratch.dir.path().join("fg.out"),
        }
    };
    let m = mnt.clone();
    assert!(
        wait_until(Duration::from_secs(30), || is_mounted(&m)),
        "not mounted; output:\n{}",
        fg.output_text()
    );
    bounded(LIMIT, move || {
        assert_eq!(ls(&m), vec!["build".to_string(), "test-suite".to_string()]);
    });
    fg.signal(libc::SIGINT);
    let st = fg.wait_exit(Duration::from_secs(10));
    let out = fg.output_text();
    let st = st.unwrap_or_else(|| panic!("still running 10 s after SIGINT:\n{out}"));
    assert!(st.success(), "exit {st:?}:\n{out}");
    assert!(!is_mounted(&mnt));
    assert!(!out.contains(TOKEN), "the token is in the output");
    // A file is not a terminal: no colour codes; a clean unmount warns about nothing.
    assert!(
        !out.contains('\x1b'),
        "colour codes in redirected logs:\n{out}"
    );
    assert!(
        !out.contains("WARN"),
        "a warning on a clean unmount:\n{out}"
    );
}

/// A foreground mount whose stderr is a pipe nobody reads (it fills up), then a pipe whose
/// reader has gone (EPIPE): reads keep being served, and SIGINT still unmounts and exits 0.
#[test]
fn closed_or_full_stderr_does_not_stop_the_daemon() {
    use std::process::{Command, Stdio};
    let server = server();
    server.add_build(small_build(57).0);
    let scratch = Scratch::new();
    let mnt = scratch.mnt();
    let mut child = Command::new(BIN)
        .args(["mount", "-f", "--api-url", &server.api_url(), "--cache-dir"])
        .arg(scratch.cache())
        .arg("acme/web-app/57")
        .arg(&mnt)
        .env("BUILDKITE_API_TOKEN", TOKEN)
        .env("HOME", scratch.dir.path())
        // Every FUSE request is logged (fuser at trace): the pipe fills in no time.
        .env("RUST_LOG", "trace")
        .env_remove("BUILDKITE_API_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = child.stderr.take().unwrap();
    let mut fg = Foreground {
        child,
        mnt: mnt.clone(),
        output: scratch.dir.path().join("none"),
    };
    let m = mnt.clone();
    assert!(
        wait_until(Duration::from_secs(30), || is_mounted(&m)),
        "not mounted"
    );
    let busy = |m: &std::path::Path| {
        for _ in 0..20 {
            let (code, out, err) = sh(&format!(
                "ls -lR {0} >/dev/null && cat {0}/build/log/build.log {0}/test-suite/junit.xml | wc -c",
                m.display()
            ));
            assert_eq!(code, 0, "{err}");
            assert!(out.trim().parse::<u64>().unwrap() > 1500, "{out}");
        }
    };
    let m = mnt.clone();
    bounded(LIMIT, move || busy(&m));
    drop(pipe);
    let m = mnt.clone();
    bounded(LIMIT, move || busy(&m));
    fg.signal(libc::SIGINT);
    let st = fg.wait_exit(Duration::from_secs(10));
    let st = st.unwrap_or_else(|| panic!("still running 10 s after SIGINT"));
    assert!(st.success(), "exit {st:?} with stderr closed");
    assert!(!is_mounted(&mnt), "still mounted after exit");
}

/// Logs are coloured on a terminal (a pty from `script`), and not with `NO_COLOR` set.
#[test]
fn colour_only_on_a_terminal_without_no_color() {
    let server = server();
    server.add_build(small_build(58).0);
    // A token without read_builds: one WARN line, then the pipeline mount fails.
    server.add_token("no-builds", &["read_artifacts"]);
    let scratch = Scratch::new();
    let line = format!(
        "{BIN} mount -f --api-url {} --cache-dir {} acme/web-app {}",
        server.api_url(),
        scratch.cache().display(),
        scratch.mnt().display()
    );
    let run_tty = move |no_color: Option<&str>| {
        let mut c = std::process::Command::new("script");
        c.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env("BUILDKITE_API_TOKEN", "no-builds")
            .env("HOME", "/nonexistent")
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let o = run(&mut c);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    bounded(LIMIT, move || {
        let out = run_tty(None);
        assert!(out.contains("lacks read_builds"), "{out}");
        assert!(out.contains('\x1b'), "no colour on a terminal:\n{out}");
        let out = run_tty(Some("1"));
        assert!(out.contains("lacks read_builds"), "{out}");
        assert!(!out.contains('\x1b'), "colour despite NO_COLOR:\n{out:?}");
    });
}
