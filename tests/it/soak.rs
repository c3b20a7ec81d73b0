//! A 30-second run of the soak (`src/bin/bkfs-soak.rs`, `scripts/soak` for the long one):
//! 16 threads of random and whole-file reads through the real mount while faults are
//! injected and the API rate limit is enforced. No wrong byte, no hang, and real work done.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The number after `key: ` on the summary line that starts with it.
fn figure(summary: &str, key: &str) -> Option<u64> {
    summary
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn soak_30_seconds_no_wrong_bytes_no_hangs() {
    let scratch = Scratch::new();
    // Unmounts and ends the daemon whatever happens below (the soak mounts on scratch/mnt).
    let _cleanup = Mount {
        mnt: scratch.mnt(),
        log: scratch.log(),
        stdout: String::new(),
        stderr: String::new(),
    };
    let out_path = scratch.dir.path().join("soak.out");
    let err_path = scratch.dir.path().join("soak.err");
    let mut child = Command::new(workspace_bin("bkfs-soak"))
        .arg("--seconds")
        .arg("30")
        .arg("--workdir")
        .arg(scratch.dir.path())
        .arg("--bkfs")
        .arg(BIN)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn bkfs-soak");
    let limit = Duration::from_secs(120);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() >= limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = match status {
        Some(st) => st,
        None => {
            // SIGINT lets the soak report and unmount; then make sure it is gone.
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "bkfs-soak --seconds 30 still running after {limit:?}\nstdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    eprintln!("{out}");
    let ctx = format!("stdout:\n{out}\nstderr:\n{err}");
    assert!(status.success(), "bkfs-soak exited with {status:?}\n{ctx}");
    assert_eq!(figure(&out, "wrong bytes"), Some(0), "{ctx}");
    assert_eq!(figure(&out, "short reads"), Some(0), "{ctx}");
    assert_eq!(figure(&out, "hangs"), Some(0), "{ctx}");
    let reads = figure(&out, "reads").unwrap_or(0);
    assert!(reads > 100, "only {reads} reads in 30 s\n{ctx}");
    assert!(out.contains("verdict: PASS"), "{ctx}");
    assert!(
        !is_mounted(&scratch.mnt()) && daemon_pids(&scratch.mnt()).is_empty(),
        "the soak left a mount or a daemon behind"
    );
}
