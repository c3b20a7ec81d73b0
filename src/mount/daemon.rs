//! Daemonizing: the background mode's fork, the readiness pipe and its verdict.
//!
//! The parent forks before any thread exists; the child starts a new session, validates the
//! token, lists the build, mounts, and only then writes `OK` on the pipe; any failure before
//! that is written as `ERR <message>` and nothing stays mounted. The parent prints the
//! verdict and exits with it, so `bkfs mount ... && ls MOUNT` works.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use super::serve::serve;
use super::MountPlan;

/// Where start-up reports its verdict: nowhere in the foreground, the pipe in the background.
pub(super) struct Ready(pub(super) Option<std::fs::File>);

impl Ready {
    pub(super) fn ok(&mut self) {
        if let Some(mut f) = self.0.take() {
            let _ = f.write_all(b"OK\n");
        }
    }
    /// Once: in the log and on the pipe in the background, on stderr in the foreground.
    pub(super) fn fail(&mut self, msg: &str) {
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

/// Background mode: forks; the child detaches and serves, writing its verdict on the pipe;
/// the parent waits for that verdict and returns the exit code it implies.
pub(super) fn background(plan: MountPlan, mountpoint: PathBuf, log: std::fs::File) -> i32 {
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
