//! Shared harness for the integration tests: a fake Buildkite on 127.0.0.1, the real `bkfs`
//! binary mounted through the kernel, and a guard that always unmounts (`fusermount3 -u -z`)
//! and ends the daemon, even when the test fails. Every external command runs under
//! `timeout`, and [`bounded`] puts a deadline on a whole test body.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use bkfs_fake::{Count, FakeBuild, FakeServer};

pub const TOKEN: &str = "test-token";
pub const BIN: &str = env!("CARGO_BIN_EXE_bkfs");

/// A binary of the workspace's other crates (`bkfs-demo`, `bkfs-soak`): cargo builds them
/// next to `bkfs` (`cargo build --workspace`, which scripts/test runs first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = Path::new(BIN).with_file_name(name);
    assert!(
        p.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace`; scripts/test does)",
        p.display()
    );
    p
}

/// A fake server with the usual full-access token registered.
pub fn server() -> FakeServer {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_artifacts", "read_builds", "write_artifacts"]);
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
        let dir = tempfile::Builder::new()
            .prefix("bkfs-it-")
            .tempdir()
            .unwrap();
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
    /// Retries a "busy" refusal for a few seconds: another test thread's child can hold a
    /// copy of an fd under the mount between its fork and exec.
    pub fn unmount(&self) -> bool {
        let t = Instant::now();
        let ok = loop {
            let o = run(Command::new("fusermount3").arg("-u").arg(&self.mnt));
            let busy = String::from_utf8_lossy(&o.stderr).contains("busy");
            if o.status.success() || !busy || t.elapsed() > Duration::from_secs(5) {
                break o.status.success();
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        wait_gone(&self.mnt, Duration::from_secs(10)) && ok
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
    try_mount_at(&server.api_url(), scratch, build, token, extra)
}

/// [`try_mount`] against any API root (e.g. an unreachable one).
pub fn try_mount_at(
    api_url: &str,
    scratch: &Scratch,
    build: &str,
    token: Option<&str>,
    extra: &[&str],
) -> Result<Mount, (i32, String)> {
    try_mount_env(api_url, scratch, build, token, extra, &[])
}

/// [`try_mount_at`] with extra environment for the daemon (e.g. `BKFS_PASSTHROUGH=off`);
/// the caller's bkfs variables never leak in.
pub fn try_mount_env(
    api_url: &str,
    scratch: &Scratch,
    build: &str,
    token: Option<&str>,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Result<Mount, (i32, String)> {
    let mut cmd = Command::new(BIN);
    cmd.arg("mount")
        .arg("--api-url")
        .arg(api_url)
        .arg("--cache-dir")
        .arg(scratch.cache())
        .arg("--log-file")
        .arg(scratch.log())
        .arg("-vv")
        .args(extra)
        .arg(build)
        .arg(scratch.mnt())
        .env_remove("BUILDKITE_API_URL")
        .env_remove("BUILDKITE_GRAPHQL_URL")
        .env_remove("RUST_LOG")
        .env_remove("BKFS_PASSTHROUGH");
    match token {
        Some(t) => cmd.env("BUILDKITE_API_TOKEN", t),
        None => cmd.env_remove("BUILDKITE_API_TOKEN"),
    };
    for (k, v) in env {
        cmd.env(k, v);
    }
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
            assert!(
                is_mounted(&m.mnt),
                "bkfs mount exited 0 but nothing is mounted"
            );
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

pub mod builds;

/// The default bound on a test body.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// (seconds, nanoseconds) since the epoch of a UTC timestamp `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
pub fn epoch_ns(ts: &str) -> (i64, u32) {
    let frac = ts[19..].strip_prefix('.').unwrap_or("");
    let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
    let nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}")[..9].parse().unwrap()
    };
    (epoch(ts), nsec)
}

/// Seconds since the epoch of a UTC timestamp `YYYY-MM-DDTHH:MM:SS[.fff]Z` (whole seconds).
pub fn epoch(ts: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| -> i64 { ts[r].parse().expect("timestamp digits") };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (hh, mm, ss) = (n(11..13), n(14..16), n(17..19));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    days * 86400 + hh * 3600 + mm * 60 + ss
}

/// `len` deterministic pseudo-random bytes (xorshift64*), different for each `seed`.
pub fn det_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// What `stat` shows of one node, reduced to what the tests check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// 'd' or 'f' (anything else is a failure in itself).
    pub kind: char,
    /// Files only; directories show 0 here.
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub uid: u32,
}

/// Every node under `root` (relative paths, `/`-separated), walked with `std::fs` and
/// `symlink_metadata` (so a symlink would show up as kind 'l').
pub fn walk(root: &Path) -> std::collections::BTreeMap<String, NodeInfo> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}")) {
            let e = e.unwrap();
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {p:?}: {e}"));
            let kind = if md.is_dir() {
                'd'
            } else if md.is_file() {
                'f'
            } else {
                'l'
            };
            if md.is_file() {
                assert_eq!(
                    md.blocks(),
                    md.size().div_ceil(512),
                    "st_blocks of {p:?} (size {})",
                    md.size()
                );
            }
            assert_eq!(
                (md.ctime(), md.ctime_nsec(), md.atime(), md.atime_nsec()),
                (md.mtime(), md.mtime_nsec(), md.mtime(), md.mtime_nsec()),
                "ctime and atime of {p:?} must equal its mtime"
            );
            let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            out.insert(
                rel,
                NodeInfo {
                    kind,
                    size: if md.is_dir() { 0 } else { md.size() },
                    mode: md.mode() & 0o7777,
                    mtime: md.mtime(),
                    mtime_nsec: md.mtime_nsec() as u32,
                    uid: md.uid(),
                },
            );
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// The same as [`walk`], from `find -printf` (a different walker: fts, getdents, fstatat).
pub fn find_listing(root: &Path) -> std::collections::BTreeMap<String, NodeInfo> {
    let o = run(Command::new("find")
        .arg(root)
        .arg("-mindepth")
        .arg("1")
        .arg("-printf")
        .arg("%P\\t%y\\t%s\\t%m\\t%T@\\t%U\\n"));
    assert!(
        o.status.success(),
        "find failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).expect("find output is UTF-8");
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 6, "find line {line:?}");
        let kind = match f[1] {
            "d" => 'd',
            "f" => 'f',
            _ => 'l',
        };
        out.insert(
            f[0].to_string(),
            NodeInfo {
                kind,
                size: if kind == 'd' {
                    0
                } else {
                    f[2].parse().unwrap()
                },
                mode: u32::from_str_radix(f[3], 8).unwrap(),
                mtime: f[4].split('.').next().unwrap().parse().unwrap(),
                mtime_nsec: f[4]
                    .split_once('.')
                    .map(|(_, n)| format!("{n:0<9}")[..9].parse().unwrap())
                    .unwrap_or(0),
                uid: f[5].parse().unwrap(),
            },
        );
    }
    out
}

/// One extended attribute through getxattr(2); `None` when absent (ENODATA).
pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid C strings and a buffer of the stated length.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENODATA),
            "getxattr {path:?} {name}: {e}"
        );
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

/// The current user's uid.
pub fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// A fake server with one build, mounted. Fields drop in order: the mount (unmount) first,
/// then the scratch dir, then the server.
pub struct Env {
    pub m: Mount,
    pub scratch: Scratch,
    pub server: std::sync::Arc<FakeServer>,
}

impl Env {
    /// Serves `fb` on a fresh fake (full-access [`TOKEN`]) and mounts it with `extra` options.
    pub fn new(fb: FakeBuild, extra: &[&str]) -> Env {
        let server = std::sync::Arc::new(server());
        let build = build_ref(&fb);
        server.add_build(fb);
        let scratch = Scratch::new();
        let m = mount(&server, &scratch, &build, extra);
        Env { m, scratch, server }
    }
    pub fn mnt(&self) -> PathBuf {
        self.m.mnt.clone()
    }
}

/// `ORG/PIPELINE/NUMBER` of a fake build.
pub fn build_ref(fb: &FakeBuild) -> String {
    format!("{}/{}/{}", fb.org, fb.pipeline, fb.build.number)
}

/// Compares two trees and fails with a readable summary of every difference.
pub fn assert_tree_eq(
    what: &str,
    want: &std::collections::BTreeMap<String, NodeInfo>,
    got: &std::collections::BTreeMap<String, NodeInfo>,
) {
    let mut problems = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => problems.push(format!("missing: {k:?} {v:?}")),
            Some(g) if g != v => {
                problems.push(format!("differs: {k:?}\n   want {v:?}\n   got  {g:?}"))
            }
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            problems.push(format!("unexpected: {k:?} {v:?}"));
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(40);
        panic!(
            "{what}: {n} differences from the expected tree ({} expected, {} found):\n{}",
            want.len(),
            got.len(),
            problems.join("\n")
        );
    }
}

/// The names in a directory, sorted, via `ls -1A` (C locale).
pub fn ls(dir: &Path) -> Vec<String> {
    let o = run(Command::new("ls").arg("-1A").arg(dir).env("LC_ALL", "C"));
    assert!(
        o.status.success(),
        "ls {dir:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A foreground `bkfs` process (e.g. `bkfs demo`), killed and unmounted on drop if still alive.
pub struct Foreground {
    pub child: std::process::Child,
    pub mnt: PathBuf,
    pub output: PathBuf,
}

impl Foreground {
    /// Spawns `bkfs ARGS...` with stdout and stderr going to `output`.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        args: impl IntoIterator<Item = S>,
        mnt: &Path,
        output: &Path,
    ) -> Foreground {
        Foreground::spawn_program(Path::new(BIN), args, mnt, output)
    }
    /// Like [`Foreground::spawn`], for another program (e.g. `bkfs-demo`).
    pub fn spawn_program<S: AsRef<std::ffi::OsStr>>(
        program: &Path,
        args: impl IntoIterator<Item = S>,
        mnt: &Path,
        output: &Path,
    ) -> Foreground {
        let out = std::fs::File::create(output).unwrap();
        let child = Command::new(program)
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn bkfs");
        Foreground {
            child,
            mnt: mnt.to_path_buf(),
            output: output.to_path_buf(),
        }
    }
    pub fn output_text(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
    /// Waits (bounded) for the process to exit; returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.mnt)
            .stderr(Stdio::null())
            .status();
    }
}

/// Drops the artifacts' own blocks from a disk cache, keeping what bkfs derived from them
/// (persisted indexes, access points: keys with a `.`). Returns how many it dropped.
pub fn drop_raw_blocks(cache: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(cache.join("v1")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "tmp" && !name.contains('.') && e.path().is_dir() {
            std::fs::remove_dir_all(e.path()).unwrap();
            n += 1;
        }
    }
    n
}

/// The errno of a failed call (`None` when it succeeded).
pub fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}
