//! FUSE passthrough for artifacts complete and verified in the disk cache: the kernel reads
//! the cache file itself (page cache and all), and the daemon sees no `read` at all.
//!
//! - Needs Linux 6.9+ (`FUSE_PASSTHROUGH` at init) and `CAP_SYS_ADMIN` (the kernel refuses
//!   `FUSE_DEV_IOC_BACKING_OPEN` otherwise). The first refusal turns it off for the mount and
//!   says so once; every open then goes through the daemon as before. `BKFS_PASSTHROUGH=off`
//!   turns it off from the start (tests of the refused path use it too).
//! - The kernel allows one backing file per inode and refuses passthrough for an inode that is
//!   open through the page cache (and the reverse): one [`fuser::BackingId`] per inode is
//!   shared by its passthrough handles, and an inode open the cached way is never passed
//!   through until all of those handles are released.
//! - `O_DIRECT`: a read through passthrough would be a direct read of the cache file, which
//!   filesystems such as ext4 refuse (EINVAL) unless offset, size and buffer are aligned to
//!   their block size; bkfs files take any alignment. So an `O_DIRECT` open never starts
//!   passthrough (it is an ordinary daemon open), and one of an inode already passed through
//!   (the kernel then wants the same backing id) is answered with `FOPEN_DIRECT_IO` as well,
//!   which makes the kernel send its reads to the daemon.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{BackingId, ReplyOpen};

#[derive(Default)]
struct State {
    /// Per inode: its backing id and the passthrough handles using it.
    backing: HashMap<u64, (Arc<BackingId>, usize)>,
    /// Per inode: handles open through the daemon (page cache).
    cached: HashMap<u64, usize>,
    /// Handle → (inode, passthrough?).
    handles: HashMap<u64, (u64, bool)>,
}

pub struct Passthrough {
    on: AtomicBool,
    said: AtomicBool,
    st: Mutex<State>,
}

/// What an open should do.
pub enum Open {
    /// Reply `opened_passthrough` with this id (and `FOPEN_DIRECT_IO` for an `O_DIRECT`
    /// open), then [`Passthrough::opened`] with `true`.
    Backing(Arc<BackingId>),
    /// Reply `opened` as usual, then [`Passthrough::opened`] with `false`.
    Cached,
}

impl Passthrough {
    pub fn new() -> Passthrough {
        let off = std::env::var("BKFS_PASSTHROUGH").is_ok_and(|v| v == "off" || v == "0");
        Passthrough {
            on: AtomicBool::new(!off),
            said: AtomicBool::new(false),
            st: Mutex::new(State::default()),
        }
    }

    pub fn wanted(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// At init: whether the kernel agreed to passthrough. Says which read path the mount
    /// uses when that is known now (off); otherwise the first open says it.
    pub fn negotiated(&self, ok: bool) {
        if !self.wanted() {
            self.say("off (BKFS_PASSTHROUGH=off): every read goes through the daemon");
        } else if !ok {
            self.on.store(false, Ordering::Relaxed);
            self.say("off (the kernel does not offer FUSE passthrough): every read goes through the daemon");
        }
    }

    fn say(&self, what: &str) {
        if !self.said.swap(true, Ordering::Relaxed) {
            tracing::info!("read path: passthrough {what}");
        }
    }

    /// Decides how to open inode `ino` whose verified cache file is `backing` (if any);
    /// `direct`: the open asked for `O_DIRECT`.
    pub fn open(&self, ino: u64, backing: Option<&Path>, direct: bool, reply: &ReplyOpen) -> Open {
        let mut st = self.st.lock().unwrap();
        if let Some((id, _)) = st.backing.get(&ino) {
            return Open::Backing(id.clone());
        }
        let Some(path) = backing.filter(|_| self.wanted() && !direct) else {
            return Open::Cached;
        };
        if st.cached.get(&ino).is_some_and(|n| *n > 0) {
            return Open::Cached;
        }
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "cannot open the cache file for passthrough");
                return Open::Cached;
            }
        };
        match reply.open_backing(&file) {
            Ok(id) => {
                self.say(
                    "on: complete cached artifacts are read by the kernel from the cache files",
                );
                let id = Arc::new(id);
                st.backing.insert(ino, (id.clone(), 0));
                Open::Backing(id)
            }
            Err(e) => {
                self.on.store(false, Ordering::Relaxed);
                self.say(&format!(
                    "refused ({e}; it needs CAP_SYS_ADMIN): every read goes through the daemon"
                ));
                Open::Cached
            }
        }
    }

    /// Records an open handle (`passthrough`: opened with a backing id).
    pub fn opened(&self, ino: u64, fh: u64, passthrough: bool) {
        tracing::debug!(ino, fh, passthrough, "opened");
        let mut st = self.st.lock().unwrap();
        if passthrough {
            if let Some((_, n)) = st.backing.get_mut(&ino) {
                *n += 1;
            }
        } else {
            *st.cached.entry(ino).or_default() += 1;
        }
        st.handles.insert(fh, (ino, passthrough));
    }

    /// An open that failed after [`Passthrough::open`] chose a backing id.
    pub fn abandon(&self, ino: u64) {
        let mut st = self.st.lock().unwrap();
        if st.backing.get(&ino).is_some_and(|(_, n)| *n == 0) {
            st.backing.remove(&ino);
        }
    }

    /// A handle released: the inode's backing id goes with its last passthrough handle.
    pub fn released(&self, fh: u64) {
        let mut st = self.st.lock().unwrap();
        let Some((ino, passthrough)) = st.handles.remove(&fh) else {
            return;
        };
        if passthrough {
            if let Some((_, n)) = st.backing.get_mut(&ino) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.backing.remove(&ino);
                }
            }
        } else if let Some(n) = st.cached.get_mut(&ino) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.cached.remove(&ino);
            }
        }
    }

    /// Handles open through passthrough now (for `bkfs status` and tests).
    pub fn passthrough_handles(&self) -> usize {
        self.st
            .lock()
            .unwrap()
            .backing
            .values()
            .map(|(_, n)| n)
            .sum()
    }
}

impl Default for Passthrough {
    fn default() -> Self {
        Passthrough::new()
    }
}
