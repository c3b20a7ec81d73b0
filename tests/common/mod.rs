//! Shared harness for the integration tests: a fake Buildkite on 127.0.0.1, the real `bkfs`
//! binary mounted through the kernel, and a guard that always unmounts (`fusermount3 -u -z`)
//! and ends the daemon, even when the test fails. Every external command runs under
//! `timeout`, and [`bounded`] puts a deadline on a whole test body.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use bkfs::fake::{FakeBuild, FakeServer};

pub const TOKEN: &str = "test-token";
pub const BIN: &str = env!("CARGO_BIN_EXE_bkfs");

/// A fake server with the usual full-access token registered.
pub fn server() -> FakeServer {
    let s = FakeServer::start();
    s.add_token(
        TOKEN,
        &["read_artifacts", "read_builds", "write_artifacts"],
    );
    s
}

/// Runs `f` on a thread and fails the test if it takes longer than `limit`. Guards created
/// inside `f` are dropped on that thread when it ends; a guard created outside (preferred)
/// is dropped by the test thread after the panic, which unblocks a hung `f`.
pub fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!("test body exceeded {limit:?}"),
    }
}

/// A scratch directory with a mountpoint, a cache dir and a log file inside.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new().prefix("bkfs-it-").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        Scratch { dir }
    }
    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("bkfs.log")
    }
}

/// A live mount. Dropping it unmounts lazily and makes sure the daemon is gone.
pub struct Mount {
    pub mnt: PathBuf,
    pub log: PathBuf,
    pub stdout: String,
    pub stderr: String,
}

impl Mount {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// PIDs of bkfs daemons serving this mountpoint.
    pub fn daemon_pids(&self) -> Vec<i32> {
        daemon_pids(&self.mnt)
    }
    /// Unmounts with `fusermount3 -u` and waits (bounded) for the daemon to exit.
    pub fn unmount(&self) -> bool {
        let ok = run(Command::new("fusermount3").arg("-u").arg(&self.mnt))
            .status
            .success();
        wait_gone(&self.mnt, Duration::from_secs(5)) && ok
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
        if !wait_gone(&self.mnt, Duration::from_secs(5)) {
            for pid in daemon_pids(&self.mnt) {
                // SAFETY: plain kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Processes whose command line names this mountpoint (the daemon of a background mount).
pub fn daemon_pids(mnt: &Path) -> Vec<i32> {
    let needle = mnt.to_string_lossy().to_string();
    let mut out = Vec::new();
    let me = std::process::id() as i32;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                let args: Vec<String> = cmd
                    .split(|b| *b == 0)
                    .map(|a| String::from_utf8_lossy(a).to_string())
                    .collect();
                let is_bkfs = args.first().is_some_and(|a| a.ends_with("bkfs"));
                if is_bkfs && args.iter().any(|a| a == &needle) {
                    // Skip zombies.
                    let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                    if !stat.contains(") Z ") {
                        out.push(pid);
                    }
                }
            }
        }
    }
    out
}

pub fn is_mounted(mnt: &Path) -> bool {
    let abs = std::fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(abs.to_str().unwrap()))
}

/// Waits until the mountpoint is no longer mounted and no daemon serves it.
pub fn wait_gone(mnt: &Path, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if !is_mounted(mnt) && daemon_pids(mnt).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Runs a command with a 60 s bound, capturing output.
pub fn run(cmd: &mut Command) -> Output {
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut c = Command::new("timeout");
    c.arg("-k").arg("5").arg("60").arg(prog).args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        c.current_dir(d);
    }
    c.stdin(Stdio::null()).output().expect("run command")
}

/// Runs a shell command line; returns (exit code, stdout, stderr).
pub fn sh(line: &str) -> (i32, String, String) {
    let o = run(Command::new("bash").arg("-c").arg(line));
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `bkfs mount` in background mode against the fake. Extra args go before BUILD.
pub fn try_mount(
    server: &FakeServer,
    scratch: &Scratch,
    build: &str,
    token: Option<&str>,
    extra: &[&str],
) -> Result<Mount, (i32, String)> {
    let mut cmd = Command::new(BIN);
    cmd.arg("mount")
        .arg("--api-url")
        .arg(server.api_url())
        .arg("--cache-dir")
        .arg(scratch.cache())
        .arg("--log-file")
        .arg(scratch.log())
        .arg("-vv")
        .args(extra)
        .arg(build)
        .arg(scratch.mnt())
        .env_remove("BUILDKITE_API_URL")
        .env_remove("RUST_LOG");
    match token {
        Some(t) => cmd.env("BUILDKITE_API_TOKEN", t),
        None => cmd.env_remove("BUILDKITE_API_TOKEN"),
    };
    let o = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        return Err((o.status.code().unwrap_or(-1), stderr));
    }
    Ok(Mount {
        mnt: scratch.mnt(),
        log: scratch.log(),
        stdout,
        stderr,
    })
}

pub fn mount(server: &FakeServer, scratch: &Scratch, build: &str, extra: &[&str]) -> Mount {
    match try_mount(server, scratch, build, Some(TOKEN), extra) {
        Ok(m) => {
            assert!(is_mounted(&m.mnt), "bkfs mount exited 0 but nothing is mounted");
            m
        }
        Err((code, err)) => panic!(
            "bkfs mount failed ({code}): {err}\nlog:\n{}",
            std::fs::read_to_string(scratch.log()).unwrap_or_default()
        ),
    }
}

pub fn sha1_hex(b: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    hex::encode(Sha1::digest(b))
}
