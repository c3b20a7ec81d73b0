//! Mounting: checks made before anything is mounted, daemonizing with a readiness pipe,
//! serving, signal handling and unmounting.
//!
//! Background mode: the parent forks before any thread exists; the child starts a new
//! session, validates the token, lists the build, mounts, and only then writes `OK` on the
//! pipe; any failure before that is written as `ERR <message>` and nothing stays mounted.
//! The parent prints the verdict and exits with it, so `bkfs mount ... && ls MOUNT` works.

use crate::joblog::{LogConfig, LogFormat, LogStore};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use crate::api::model::Build;
use crate::api::ApiClient;
use crate::backend::{BackendError, Listing};
use crate::build_ref::Target;
use crate::content::cache::DiskCache;
use crate::content::storage::StorageClient;
use crate::content::{Reader, ReaderConfig};
use crate::fs::{Fs, FsConfig};
use crate::fuse::{FuseFs, KernelNotifier};
use crate::secret::Token;
use crate::source::{Source, SourceConfig};

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

/// Where start-up reports its verdict: nowhere in the foreground, the pipe in the background.
struct Ready(Option<std::fs::File>);

impl Ready {
    fn ok(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"OK\n");
        }
    }
    /// Once: in the log and on the pipe in the background, on stderr in the foreground.
    fn fail(&mut self, msg: &str) {
        match self.0.take() {
            Some(mut f) => {
                tracing::error!("{msg}");
                let _ = f.write_all(format!("ERR {msg}\n").as_bytes());
            }
            None => {
                // After the log lines already queued for stderr, not before or instead.
                crate::logging::flush(Duration::from_millis(500));
                let _ = writeln!(std::io::stderr(), "bkfs: error: {msg}");
            }
        }
    }
}

/// Checks that can be made before forking: the mountpoint is an existing, empty-or-not
/// directory that is not already a mount point.
pub fn check_mountpoint(p: &Path) -> Result<PathBuf, String> {
    let shown = p.display();
    let md = match std::fs::metadata(p) {
        Ok(m) => m,
        // A daemon that died leaves ENOTCONN, or ECONNABORTED while the kernel is still
        // tearing the connection down.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)) => {
            return Err(format!(
                "{shown} is a dead FUSE mount (transport endpoint is not connected): clean it up with `fusermount3 -u -z {shown}`"
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "mountpoint {shown} does not exist: create it with `mkdir -p {shown}`"
            ))
        }
        Err(e) => return Err(format!("cannot use mountpoint {shown}: {e}")),
    };
    if !md.is_dir() {
        return Err(format!("mountpoint {shown} is not a directory"));
    }
    let abs =
        std::fs::canonicalize(p).map_err(|e| format!("cannot use mountpoint {shown}: {e}"))?;
    if is_mount_point(&abs) {
        return Err(format!(
            "{shown} is already a mount point: unmount it first (`bkfs unmount {shown}`)"
        ));
    }
    Ok(abs)
}

/// True when `abs` (canonical) appears as a mount point in /proc/self/mountinfo.
pub fn is_mount_point(abs: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(unescape_mountinfo)
            .is_some_and(|m| Path::new(&m) == abs)
    })
}

/// True when a bkfs filesystem is mounted at `abs` (type `fuse.bkfs`, or a `bkfs:` source
/// from a version without the subtype).
pub fn is_bkfs_mount(abs: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let at = f
            .get(4)
            .is_some_and(|m| Path::new(&unescape_mountinfo(m)) == abs);
        // After the optional fields: "- TYPE SOURCE OPTIONS".
        let tail = f.iter().position(|x| *x == "-").map(|i| &f[i + 1..]);
        let bkfs = tail.is_some_and(|t| {
            t.first() == Some(&"fuse.bkfs") || t.get(1).is_some_and(|s| s.starts_with("bkfs:"))
        });
        at && bkfs
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts per the plan; returns the process exit code.
pub fn run(plan: MountPlan) -> i32 {
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
    let mut fds = [0; 2];
    // SAFETY: plain pipe(2) into a 2-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("bkfs: error: pipe: {}", std::io::Error::last_os_error());
        return 1;
    }
    // SAFETY: both fds were just created and are owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (no runtime, no logging thread), so fork is sound.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("bkfs: error: fork: {}", std::io::Error::last_os_error());
            1
        }
        0 => {
            drop(rd);
            detach(&log);
            crate::logging::init(plan.verbose, Some(log));
            let code = serve(plan, mountpoint, Ready(Some(std::fs::File::from(wr))));
            std::process::exit(code);
        }
        _child => {
            drop(wr);
            let pipe = std::fs::File::from(rd);
            let verdict =
                crate::progress::read_verdict(pipe, plan.progress, &mut std::io::stderr());
            match verdict.as_deref() {
                Some("OK") => 0,
                Some(l) if l.starts_with("ERR ") => {
                    eprintln!("bkfs: error: {}", &l[4..]);
                    1
                }
                _ => {
                    eprintln!(
                        "bkfs: error: the daemon exited during start-up; see {}",
                        plan.log_file.display()
                    );
                    1
                }
            }
        }
    }
}

/// New session, stdin from /dev/null, stdout and stderr to the log file, cwd `/`.
fn detach(log: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: single-threaded child right after fork; plain syscalls on owned fds.
    unsafe {
        libc::setsid();
        let null = CString::new("/dev/null").unwrap();
        let fd = libc::open(null.as_ptr(), libc::O_RDONLY);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::close(fd);
        }
        libc::dup2(log.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
        let root = CString::new("/").unwrap();
        libc::chdir(root.as_ptr());
    }
}

/// A readable start-up error for an API failure at `what`.
fn explain(e: impl Into<BackendError>, plan: &MountPlan, what: &str) -> String {
    let e: BackendError = e.into();
    match &e {
        BackendError::Denied { status: 403, message, .. } => format!(
            "the token may not {what} (403: {}). Create a token with the read_artifacts scope (and read_builds for job names).",
            crate::api::client::sentence(message)
        ),
        BackendError::NotFound { message, .. } => match &plan.target {
            Target::Build(b) => format!(
                "build {b} not found (404: {message}). Check the organization, pipeline and build number, and that the token can access that organization."
            ),
            Target::Pipeline(p) => format!(
                "pipeline {p} not found (404: {message}). Check the organization and pipeline, and that the token can access that organization."
            ),
        },
        BackendError::Unreachable(_) => format!("{e}. Check --api-url / BUILDKITE_API_URL and the network."),
        _ => e.to_string(),
    }
}

/// What start-up fetched.
enum Fetched {
    Build(u64, Box<Listing>),
    Pipeline(Vec<Build>, [Option<u64>; 3]),
}

struct Prepared {
    fetched: Fetched,
    source: Arc<Source>,
    /// The token may read job logs (and the builds' jobs).
    logs: bool,
}

async fn prepare(plan: &MountPlan) -> Result<Prepared, String> {
    let mut api = ApiClient::new(&plan.api_url, plan.token.clone())?;
    if let Some(g) = &plan.graphql_url {
        api = api.with_graphql(g)?;
    }
    let tok = api
        .access_token()
        .await
        .map_err(|e| explain(e, plan, "be validated"))?;
    let has = |s: &str| tok.scopes.iter().any(|x| x == s);
    if !tok.scopes.is_empty() && !has("read_artifacts") {
        return Err(format!(
            "the API token lacks the read_artifacts scope (it has: {}). Create a token with read_artifacts.",
            tok.scopes.join(", ")
        ));
    }
    let can_read_builds = tok.scopes.is_empty() || has("read_builds");
    if !can_read_builds {
        tracing::warn!("the token lacks read_builds; job directories are named by job id");
    }
    let logs = plan.log_format.is_some()
        && match (
            can_read_builds,
            tok.scopes.is_empty() || has("read_build_logs"),
        ) {
            (true, true) => true,
            (false, _) => {
                tracing::info!(
                    "no job logs are shown: the token lacks read_builds (jobs are unknown)"
                );
                false
            }
            (true, false) => {
                tracing::info!("no job logs are shown: the token lacks the read_build_logs scope");
                false
            }
        };
    // A connection that delivers nothing for this long is treated as stalled: the attempt
    // ends with the bytes received so far and the next one resumes after them, all within
    // --read-timeout.
    let stall = (plan.read_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
    let storage = StorageClient::new(stall)?;
    let source = Arc::new(Source::new(
        api,
        plan.target.pipeline_ref(),
        storage,
        SourceConfig {
            graphql: plan.graphql_url.is_some(),
            can_read_builds,
        },
    ));
    let fetched = match &plan.target {
        Target::Build(b) => {
            let listing = source
                .list_build(b.number)
                .await
                .map_err(|e| explain(e, plan, "list artifacts"))?;
            tracing::info!(build = %b, via = listing.via, artifacts = listing.artifacts.len(), "listed the build");
            Fetched::Build(b.number, Box::new(listing))
        }
        Target::Pipeline(p) => {
            if !can_read_builds {
                return Err(format!(
                    "mounting the pipeline {p} needs a token with the read_builds scope (it has: {}); mount one build (ORG/PIPELINE/NUMBER) instead",
                    tok.scopes.join(", ")
                ));
            }
            let (builds, links) =
                crate::fs::list_pipeline(&*source, plan.builds, plan.branch.as_deref())
                    .await
                    .map_err(|e| explain(e, plan, "list builds"))?;
            tracing::info!(pipeline = %p, builds = builds.len(), ?links, "listed the pipeline's builds");
            Fetched::Pipeline(builds, links)
        }
    };
    Ok(Prepared {
        fetched,
        source,
        logs,
    })
}

fn serve(plan: MountPlan, mountpoint: PathBuf, mut ready: Ready) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .max_blocking_threads(8)
        .enable_all()
        .thread_name("bkfs-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ready.fail(&format!("cannot start the runtime: {e}"));
            return 1;
        }
    };
    let progress =
        crate::progress::begin(plan.progress, &plan.target, ready.0.as_ref(), rt.handle());
    let prepared = rt.block_on(prepare(&plan));
    if let Some(p) = progress {
        p.finish();
    }
    let prepared = match prepared {
        Ok(p) => p,
        Err(m) => {
            ready.fail(&m);
            return 1;
        }
    };
    let disk = if plan.cache_size == 0 {
        None
    } else {
        match DiskCache::open(&plan.cache_dir, plan.cache_size) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                ready.fail(&format!(
                    "cannot use the cache directory {}: {e} (choose another with --cache-dir)",
                    plan.cache_dir.display()
                ));
                return 1;
            }
        }
    };
    let logs = match (prepared.logs, plan.log_format) {
        (true, Some(format)) => Some(LogStore::new(
            prepared.source.clone(),
            disk.clone(),
            LogConfig {
                format,
                refresh: plan.refresh,
                read_timeout: plan.read_timeout,
            },
            rt.handle().clone(),
        )),
        _ => None,
    };
    let reader = Reader::new(
        prepared.source.clone(),
        ReaderConfig {
            read_timeout: plan.read_timeout,
            memory_limit: plan.memory_limit.max(1 << 20),
            ..ReaderConfig::default()
        },
        disk,
    );
    let reader_for_exit = reader.clone();
    let source_for_status = prepared.source.clone();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let fs_cfg = FsConfig {
        uid,
        gid,
        allow_delete: plan.allow_delete,
        refresh: plan.refresh,
    };
    let fs = match prepared.fetched {
        Fetched::Build(n, listing) => {
            Fs::single(n, &listing, prepared.source, reader, logs, fs_cfg)
        }
        Fetched::Pipeline(builds, links) => Fs::pipeline(
            builds,
            links,
            plan.builds,
            plan.branch.clone(),
            prepared.source,
            reader,
            logs,
            fs_cfg,
        ),
    };
    fs.set_list_archives(plan.list_archives);
    fs.set_resident_builds(plan.resident_builds);
    fs.set_evict_after(plan.evict_after);
    let mut cfg = Config::default();
    cfg.mount_options = mount_options(&plan);
    cfg.acl = if plan.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    cfg.n_threads = Some(2);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let session = match fuser::Session::new(
        FuseFs::new(fs.clone(), rt.handle().clone()).signal_end(ended_tx),
        &mountpoint,
        &cfg,
    ) {
        Ok(s) => s,
        Err(e) => {
            let hint = if !Path::new("/dev/fuse").exists() {
                " (/dev/fuse is missing: load the module with `modprobe fuse`; in a container, pass the device, e.g. `--device /dev/fuse`)"
            } else if plan.allow_other {
                " (--allow-other needs user_allow_other in /etc/fuse.conf)"
            } else {
                ""
            };
            ready.fail(&format!(
                "cannot mount on {}: {e}{hint}",
                plan.mountpoint.display()
            ));
            return 1;
        }
    };
    let bg = match session.spawn() {
        Ok(bg) => bg,
        Err(e) => {
            ready.fail(&format!("cannot start the FUSE session: {e}"));
            return 1;
        }
    };
    match KernelNotifier::new(bg.notifier()) {
        Ok(k) => fs.set_kernel(Arc::new(k)),
        Err(e) => {
            tracing::warn!(error = %e, "no kernel notifier: running builds update only as the kernel's caches expire")
        }
    }
    {
        let _rt = rt.enter();
        fs.start();
    }
    tracing::info!(mountpoint = %mountpoint.display(), target = %plan.target, "mounted");
    crate::readahead::raise(&mountpoint);
    let graphql_on = move || source_for_status.graphql_enabled();
    let _control = crate::control::start(
        &plan.api_url,
        &plan.target.to_string(),
        &mountpoint,
        graphql_on,
        rt.handle(),
    );
    ready.ok();

    // `bg` is never dropped or joined: its Drop unmounts the path once more with umount(2),
    // after fusermount3 already did (the false "Unmount failed: Invalid argument" warning; fuser
    // takes a dead connection for a live mount), and by then the path could be another mount.
    // The session's end is seen through `ended_rx` instead; exiting ends fuser's thread.
    let done_rx = ended_rx;
    let signalled = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let mut done_rx = done_rx;
        tokio::select! {
            _ = term.recv() => Err(done_rx),
            _ = int.recv() => Err(done_rx),
            _ = hup.recv() => Err(done_rx),
            r = &mut done_rx => Ok(r),
        }
    });
    let code = match signalled {
        Ok(_) => {
            if is_mount_point(&mountpoint) {
                // The session ended by itself (an error): don't leave a dead mount behind.
                tracing::warn!("the FUSE session ended; detaching the mount");
                lazy_unmount(&mountpoint);
            }
            tracing::info!("unmounted; exiting");
            0
        }
        Err(done_rx) => {
            tracing::info!("signal received; unmounting");
            // fuser's own unmounter is detached from the session by `spawn`, so unmount the
            // way a user would: a clean unmount, else a lazy one if something holds it busy.
            let clean = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-q")
                .arg(&mountpoint)
                .status()
                .is_ok_and(|s| s.success());
            if !clean {
                tracing::warn!("clean unmount failed (busy?); detaching lazily");
                lazy_unmount(&mountpoint);
            }
            // Give in-flight reads a moment to be answered; after a lazy unmount the session
            // lives on while files stay open, and exiting closes it (their next request gets
            // an error). Either way the mount is gone: a clean exit.
            let ended = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), done_rx)
                    .await
                    .is_ok()
            });
            if ended {
                tracing::info!("unmounted; exiting");
            } else {
                tracing::info!("unmounted; exiting (the mount was detached while files were open)");
            }
            0
        }
    };
    rt.block_on(reader_for_exit.flush(Duration::from_secs(5)));
    rt.shutdown_timeout(Duration::from_secs(1));
    crate::logging::report_dropped();
    std::mem::forget(bg);
    code
}

/// `ro` unless deletes are allowed (the kernel refuses every write on a `ro` mount itself,
/// unlink included, so `--allow-delete` needs `rw`; bkfs then refuses the other writes with
/// EROFS). `subtype=bkfs` as a plain option: the kernel takes it on a direct mount(2), and
/// fusermount3 turns it into the type `fuse.bkfs` (fuser's `Subtype` is dropped on the
/// direct path).
fn mount_options(plan: &MountPlan) -> Vec<MountOption> {
    vec![
        MountOption::FSName(format!("bkfs:{}", plan.target)),
        MountOption::CUSTOM("subtype=bkfs".into()),
        if plan.allow_delete {
            MountOption::RW
        } else {
            MountOption::RO
        },
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ]
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
