//! Mounting: the plan, foreground or background start, and unmounting.
//!
//! - `checks`: the mountpoint checks made before anything is mounted, mountinfo readers;
//! - `daemon`: background mode (fork, new session, the readiness pipe);
//! - `startup`: token scopes and the first listing, with readable errors;
//! - `serve`: wiring, the FUSE session, signals and the unmount at exit.

mod checks;
mod daemon;
mod readahead;
mod serve;
mod startup;

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::build_ref::Target;
use crate::joblog::LogFormat;
use crate::secret::Token;

pub(crate) use checks::unescape_mountinfo;
pub use checks::{check_mountpoint, is_bkfs_mount, is_mount_point};
use daemon::Ready;
use serve::serve;

/// Everything needed to mount a build or a pipeline.
#[derive(Debug, Clone)]
pub struct MountPlan {
    pub target: Target,
    pub api_url: String,
    /// GraphQL endpoint; `None` = REST only.
    pub graphql_url: Option<String>,
    /// How often live builds are listed again.
    pub refresh: Duration,
    /// Pipeline mounts: how many recent builds the root lists.
    pub builds: usize,
    /// Pipeline mounts: only builds of this branch.
    pub branch: Option<String>,
    /// Pipeline mounts: how many listed builds stay in memory.
    pub resident_builds: usize,
    /// Pipeline mounts: how long a build must go unused before it may leave memory.
    pub evict_after: Duration,
    pub token: Token,
    pub mountpoint: PathBuf,
    pub foreground: bool,
    pub allow_delete: bool,
    /// `--list-archives`: readdir shows `NAME#` for archive artifacts.
    pub list_archives: bool,
    pub allow_other: bool,
    pub cache_dir: PathBuf,
    /// Budget of the on-disk cache, in bytes (0 disables it).
    pub cache_size: u64,
    /// Memory budget of the read path, in bytes (`--memory-limit`).
    pub memory_limit: u64,
    pub log_file: PathBuf,
    pub verbose: u8,
    pub read_timeout: Duration,
    /// How job logs are shown; `None`: not at all.
    pub log_format: Option<LogFormat>,
    /// Show listing progress on stderr (a terminal) until the mount is ready.
    pub progress: bool,
}

/// Mounts per the plan; returns the process exit code.
pub fn run(plan: MountPlan) -> i32 {
    limit_malloc_arenas();
    let mountpoint = match check_mountpoint(&plan.mountpoint) {
        Ok(p) => p,
        Err(m) => {
            eprintln!("bkfs: error: {m}");
            return 1;
        }
    };
    if plan.foreground {
        crate::logging::init(plan.verbose, None);
        let code = serve(plan, mountpoint, Ready(None));
        crate::logging::flush(Duration::from_millis(500));
        return code;
    }
    if let Some(dir) = plan.log_file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&plan.log_file)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "bkfs: error: cannot open the log file {}: {e} (choose another with --log-file)",
                plan.log_file.display()
            );
            return 1;
        }
    };
    daemon::background(plan, mountpoint, log)
}

/// `umount2(MNT_DETACH)`, then `fusermount3 -u -z`.
pub fn lazy_unmount(p: &Path) {
    if let Ok(c) = CString::new(p.as_os_str().as_bytes()) {
        // SAFETY: valid C string.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    let _ = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(p)
        .status();
}

/// `bkfs unmount`: `fusermount3 -u` (falling back to umount(2) as root).
pub fn unmount(p: &Path) -> i32 {
    let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if !is_bkfs_mount(&abs) {
        let _ = writeln!(
            std::io::stderr(),
            "bkfs: error: {} is not a bkfs mount (nothing to unmount; `findmnt -t fuse.bkfs` lists them)",
            p.display()
        );
        return 1;
    }
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(&abs)
        .output();
    match out {
        Ok(o) if o.status.success() => 0,
        Ok(o) => {
            let msg = String::from_utf8_lossy(&o.stderr).trim().to_string();
            eprintln!(
                "bkfs: error: cannot unmount {}: {}{}",
                p.display(),
                msg,
                if msg.contains("busy") {
                    " (a process is using it; close it, or use `fusermount3 -u -z`)"
                } else {
                    ""
                }
            );
            1
        }
        Err(e) => {
            eprintln!("bkfs: error: cannot run fusermount3: {e} (install the fuse3 package)");
            1
        }
    }
}

/// glibc gives threads that allocate their own malloc arenas (up to 8 per core) and keeps
/// what each one frees. With tokio's blocking pool and the FUSE threads, the daemon's RSS
/// under `bkfs-soak --seconds 45` reached 150–181 MiB against a 64 MiB memory budget; with
/// two arenas it stays at 104–124 MiB, with no loss of throughput. `MALLOC_ARENA_MAX`, when
/// set, wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only tunes the allocator; it takes the allocator's own locks.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
