//! Kernel readahead of the mount. The kernel offers FUSE at most its default readahead
//! (128 KiB) at init, so a sequential reader's requests stay 128 KiB however large
//! `max_pages` is. Root can raise it afterwards through the mount's backing device
//! (`/sys/class/bdi/<major>:<minor>/read_ahead_kb`): then the kernel reads ahead in 1 MiB
//! requests (`max_pages` 256), several at once. Unprivileged mounts keep 128 KiB (the
//! daemon's own prefetch still runs ahead of them).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Readahead asked for (KiB).
pub const READ_AHEAD_KB: u32 = 8 << 10;

/// Raises the mount's readahead when allowed; says what it did at debug level.
pub fn raise(mountpoint: &Path) {
    let Ok(md) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = md.dev();
    let (maj, min) = (libc::major(dev), libc::minor(dev));
    let p = format!("/sys/class/bdi/{maj}:{min}/read_ahead_kb");
    match std::fs::write(&p, READ_AHEAD_KB.to_string()) {
        Ok(()) => tracing::info!(
            kib = READ_AHEAD_KB,
            "kernel readahead raised (1 MiB read requests)"
        ),
        Err(e) => tracing::debug!(path = %p, error = %e, "kernel readahead stays at the default"),
    }
}
