//! Mountpoint checks made before anything is mounted: the path exists, is a directory and
//! is not a mount point already (a dead FUSE mount is named as such), and the readers of
//! `/proc/self/mountinfo` that `status`, `readahead` and `unmount` share.

use std::path::{Path, PathBuf};

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
