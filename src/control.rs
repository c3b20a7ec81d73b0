//! The control socket: how `bkfs status` asks a running daemon what it is doing.
//!
//! Each daemon listens on a Unix socket `<dir>/<key>.sock`, where `<key>` is derived from
//! the canonical mountpoint and `<dir>` is `/run/user/<uid>/bkfs` when `/run/user/<uid>`
//! exists, else `/tmp/bkfs-<uid>`. The directory is created `0700` and refused unless it is
//! a real directory owned by the daemon's user with no group/other access; the socket is
//! `0600`. So only that user (and root) can connect. A client connects and reads one JSON
//! [`Status`] document; nothing is read from the client. The document is built from named
//! fields only (counters, the API host, the target): it never contains the token or a URL
//! with a query string. See docs/DESIGN.md for why a socket and not a virtual file.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::stats::Snapshot;

/// What a daemon reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    /// ORG/PIPELINE[/NUMBER].
    pub target: String,
    pub mountpoint: String,
    /// Host (and port) of the REST API.
    pub api_host: String,
    /// "GraphQL" while GraphQL answers, else "REST".
    pub api: String,
    pub started_unix: u64,
    pub counters: Snapshot,
}

/// Candidate socket directories for `uid`, the daemon's choice first.
pub fn socket_dirs(uid: u32) -> Vec<PathBuf> {
    let run = PathBuf::from(format!("/run/user/{uid}"));
    let tmp = PathBuf::from(format!("/tmp/bkfs-{uid}"));
    if run.is_dir() {
        vec![run.join("bkfs"), tmp]
    } else {
        vec![tmp, run.join("bkfs")]
    }
}

/// The socket file name for a (canonical) mountpoint.
pub fn socket_name(mountpoint: &Path) -> String {
    use sha1::{Digest, Sha1};
    use std::os::unix::ffi::OsStrExt;
    let h = Sha1::digest(mountpoint.as_os_str().as_bytes());
    format!("{}.sock", &hex::encode(h)[..24])
}

/// Creates (or checks) an owner-only directory for sockets.
pub fn private_dir(dir: &Path, uid: u32) -> Result<(), String> {
    let shown = dir.display();
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {shown}: {e}")),
    }
    let md = std::fs::symlink_metadata(dir).map_err(|e| format!("cannot stat {shown}: {e}"))?;
    if !md.is_dir() || md.uid() != uid || md.mode() & 0o077 != 0 {
        return Err(format!(
            "{shown} is not a directory owned by uid {uid} with mode 0700; not using it"
        ));
    }
    Ok(())
}

/// A bound control socket.
pub struct Listener {
    pub path: PathBuf,
    listener: tokio::net::UnixListener,
}

/// A control socket being served; dropping it stops serving and removes the file.
pub struct Running {
    pub path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket for the mount of `target` (`ORG/PIPELINE[/N]`) through `api_url` and
/// serves it on `rt`. `graphql_on` says whether GraphQL is still in use. A failure only costs
/// `bkfs status`: it is logged and the mount goes on.
pub fn start(
    api_url: &str,
    target: &str,
    mountpoint: &Path,
    graphql_on: impl Fn() -> bool + Send + 'static,
    rt: &tokio::runtime::Handle,
) -> Option<Running> {
    let _guard = rt.enter();
    let l = match bind(mountpoint) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "no control socket: `bkfs status` cannot show this mount");
            return None;
        }
    };
    let api_host = url::Url::parse(api_url)
        .ok()
        .and_then(|u| {
            let h = u.host_str()?.to_string();
            Some(match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h,
            })
        })
        .unwrap_or_else(|| "?".into());
    let target = target.to_string();
    let mp = mountpoint.display().to_string();
    let started_unix = crate::stats::unix_now();
    let path = l.path.clone();
    tracing::info!(socket = %path.display(), "control socket for `bkfs status`");
    let task = rt.spawn(serve(l, move || Status {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        target: target.clone(),
        mountpoint: mp.clone(),
        api_host: api_host.clone(),
        api: if graphql_on() { "GraphQL" } else { "REST" }.to_string(),
        started_unix,
        counters: crate::stats::STATS.snapshot(),
    }));
    Some(Running { path, task })
}

/// Binds the socket for `mountpoint` (in the runtime's context). A stale socket left by a
/// daemon that died is replaced; one that still answers is not.
pub fn bind(mountpoint: &Path) -> Result<Listener, String> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let dir = socket_dirs(uid).remove(0);
    private_dir(&dir, uid)?;
    sweep(&dir);
    let path = dir.join(socket_name(mountpoint));
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(format!("{} is in use by another daemon", path.display()));
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    Ok(Listener { path, listener })
}

/// Removes sockets nobody listens on any more (daemons that were killed cannot remove
/// their own). Only `*.sock` files in our own 0700 directory; a live socket is left alone.
pub fn sweep(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        // A socket bound a moment ago may not be listening yet: leave young ones alone.
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(30));
        if old && p.extension().is_some_and(|x| x == "sock") {
            if let Err(err) = std::os::unix::net::UnixStream::connect(&p) {
                if err.kind() == std::io::ErrorKind::ConnectionRefused {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }
}

/// Answers every connection with `status()` as JSON until the task is dropped.
pub async fn serve(l: Listener, status: impl Fn() -> Status + Send + 'static) {
    use tokio::io::AsyncWriteExt;
    loop {
        let Ok((mut conn, _)) = l.listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let body = serde_json::to_vec(&status()).unwrap_or_default();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = conn.write_all(&body).await;
                let _ = conn.shutdown().await;
            })
            .await;
        });
    }
}

/// Asks the daemon of `mountpoint` (canonical), whose mount is owned by `uid`.
pub fn query(mountpoint: &Path, uid: u32) -> Result<Status, String> {
    let name = socket_name(mountpoint);
    let mut last = String::from("no control socket found");
    for dir in socket_dirs(uid) {
        let path = dir.join(&name);
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                s.read_to_end(&mut buf)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                return serde_json::from_slice(&buf)
                    .map_err(|e| format!("unexpected answer from {}: {e}", path.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => last = format!("cannot connect to {}: {e}", path.display()),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_distinct() {
        let a = socket_name(Path::new("/mnt/a"));
        assert_eq!(a, socket_name(Path::new("/mnt/a")));
        assert_ne!(a, socket_name(Path::new("/mnt/b")));
        assert!(a.ends_with(".sock") && a.len() == 29);
    }

    #[test]
    fn sweep_removes_only_dead_sockets() {
        let t = tempfile::tempdir().unwrap();
        let dead = t.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let young = t.path().join("young.sock");
        drop(std::os::unix::net::UnixListener::bind(&young).unwrap());
        // An hour ago (a socket cannot be opened for set_modified).
        let c = std::ffi::CString::new(dead.to_str().unwrap()).unwrap();
        let then = crate::stats::unix_now() as libc::time_t - 3600;
        let ts = [libc::timespec {
            tv_sec: then,
            tv_nsec: 0,
        }; 2];
        // SAFETY: a valid C string and two timespecs.
        assert_eq!(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), 0) },
            0
        );
        let live = t.path().join("live.sock");
        let _l = std::os::unix::net::UnixListener::bind(&live).unwrap();
        let other = t.path().join("notes.txt");
        std::fs::write(&other, b"x").unwrap();
        assert!(dead.exists());
        sweep(t.path());
        assert!(!dead.exists() && live.exists() && other.exists() && young.exists());
    }

    #[test]
    fn private_dir_refuses_open_modes() {
        let t = tempfile::tempdir().unwrap();
        let uid = unsafe { libc::getuid() };
        let d = t.path().join("s");
        private_dir(&d, uid).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(private_dir(&d, uid).is_err());
        // A symlink to a good directory is refused too.
        let good = t.path().join("g");
        private_dir(&good, uid).unwrap();
        let link = t.path().join("l");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        assert!(private_dir(&link, uid).is_err());
        assert!(private_dir(&good, uid + 1).is_err());
    }
}
