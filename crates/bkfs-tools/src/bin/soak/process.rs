//! The soak's process plumbing: the scratch directory, mounting the real binary, and a guard
//! that always unmounts.

use super::*;

pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

pub fn is_mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_ref()))
}

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

/// Runs a command with a deadline; `None` if it had to be killed.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Option<std::process::ExitStatus> {
    let mut child = cmd.stdin(Stdio::null()).spawn().ok()?;
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Removes the mount however the soak ends (normal end, finding, panic): a lazy unmount, and
/// SIGKILL for a daemon that is still there after 5 s.
pub struct MountGuard {
    pub mnt: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = run_bounded(
            Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            Duration::from_secs(10),
        );
        if !wait_gone(&self.mnt, Duration::from_secs(5)) {
            for pid in daemon_pids(&self.mnt) {
                eprintln!("soak: killing daemon {pid}, still alive after unmount");
                // SAFETY: plain kill(2) of the daemon this soak started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = run_bounded(
                Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&self.mnt)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                Duration::from_secs(10),
            );
        }
    }
}

/// Where a run keeps its mountpoint, cache and daemon log: `--workdir`, else a new temp
/// directory (removed when this is dropped).
pub struct Workdir {
    pub dir: PathBuf,
    pub mnt: PathBuf,
    pub cache: PathBuf,
    pub log: PathBuf,
    pub _tmp: Option<tempfile::TempDir>,
}

impl Workdir {
    pub fn new(o: &Opts, prefix: &str) -> Result<Workdir, String> {
        let (dir, tmp) = match &o.workdir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| format!("bkfs-soak: {}: {e}", d.display()))?;
                let d = std::fs::canonicalize(d)
                    .map_err(|e| format!("bkfs-soak: {}: {e}", d.display()))?;
                (d, None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix(prefix)
                    .tempdir()
                    .map_err(|e| format!("bkfs-soak: a temp dir: {e}"))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mnt = dir.join("mnt");
        let _ = std::fs::create_dir_all(&mnt);
        Ok(Workdir {
            mnt,
            cache: dir.join("cache"),
            log: dir.join("bkfs.log"),
            dir,
            _tmp: tmp,
        })
    }
}

/// `bkfs mount TARGET` from `server` on the work dir's mountpoint, in the background (at most
/// 60 s), with its cache and log there and `extra` options. Returns the guard that unmounts
/// it (made before mounting, so a half-done mount is removed too) and the daemon's pid.
pub fn mount<S: AsRef<std::ffi::OsStr>>(
    o: &Opts,
    server: &FakeServer,
    w: &Workdir,
    target: &str,
    extra: &[S],
) -> Result<(MountGuard, i32), String> {
    let guard = MountGuard { mnt: w.mnt.clone() };
    let err = w.dir.join("mount.err");
    let status = run_bounded(
        Command::new(&o.bkfs)
            .arg("mount")
            .arg("--api-url")
            .arg(server.api_url())
            .arg("--cache-dir")
            .arg(&w.cache)
            .arg("--log-file")
            .arg(&w.log)
            .args(extra)
            .arg(target)
            .arg(&w.mnt)
            .env("BUILDKITE_API_TOKEN", TOKEN)
            .env_remove("BUILDKITE_API_URL")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err).expect("mount.err")),
        Duration::from_secs(60),
    );
    if !status.is_some_and(|s| s.success()) {
        return Err(format!(
            "bkfs-soak: bkfs mount failed ({status:?}): {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        ));
    }
    let pids = daemon_pids(&w.mnt);
    let Some(&pid) = pids.first().filter(|_| pids.len() == 1) else {
        return Err(format!(
            "bkfs-soak: expected one daemon for {}, found {pids:?}",
            w.mnt.display()
        ));
    };
    Ok((guard, pid))
}
