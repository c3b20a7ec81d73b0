//! Kernel readahead of the mount. The kernel offers FUSE at most its default readahead
//! (128 KiB) at init, so a sequential reader's requests stay 128 KiB however large
//! `max_pages` is. Root can raise it afterwards through the mount's backing device
//! (`/sys/class/bdi/<major>:<minor>/read_ahead_kb`): then the kernel reads ahead in 1 MiB
//! requests (`max_pages` 256), several at once. Unprivileged mounts keep 128 KiB (the
//! daemon's own prefetch still runs ahead of them).
//!
//! The device number comes from /proc/self/mountinfo, not from a `stat` of the mountpoint:
//! that would put the root's attributes in the kernel's cache, where a `stat` after the
//! daemon died would find them instead of `ENOTCONN`.

use std::path::Path;

use super::checks::unescape_mountinfo;

/// Readahead asked for (KiB).
pub const READ_AHEAD_KB: u32 = 8 << 10;

/// `major:minor` of the mount at `mountpoint` (the last one listed there).
fn device_of(mountinfo: &str, mountpoint: &Path) -> Option<String> {
    mountinfo.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let dev = f.nth(2)?;
        let mp = f.nth(1)?;
        (Path::new(&unescape_mountinfo(mp)) == mountpoint).then(|| dev.to_string())
    })
}

/// Raises the mount's readahead when allowed; says what it did.
pub fn raise(mountpoint: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let Some(dev) = device_of(&info, mountpoint) else {
        return;
    };
    let p = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&p, READ_AHEAD_KB.to_string()) {
        Ok(()) => tracing::info!(
            kib = READ_AHEAD_KB,
            "kernel readahead raised (1 MiB read requests)"
        ),
        Err(e) => {
            tracing::debug!(path = %p, error = %e, "kernel readahead stays at the default")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_from_mountinfo() {
        let info = "22 1 254:1 / / rw - ext4 /dev/vda rw\n\
                    90 22 0:40 / /tmp/a\\040b rw,nosuid - fuse.bkfs bkfs:x rw\n";
        assert_eq!(
            device_of(info, Path::new("/tmp/a b")).as_deref(),
            Some("0:40")
        );
        assert_eq!(device_of(info, Path::new("/tmp/c")), None);
    }
}
