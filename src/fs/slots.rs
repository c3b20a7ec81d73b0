//! Build slots and the bound on resident builds.
//!
//! A mount holds its builds in *slots* (see the module header of [`super`] for how global
//! inode numbers name a slot). A pipeline mount lists a build on first access inside it, and
//! keeps at most [`Fs::set_resident_builds`] listed builds in memory: when one more is listed,
//! the least recently used finished build with no open file leaves memory (*eviction*). Its
//! slot, number, inode range and build info stay; only the tree goes.
//!
//! # Reloading an evicted build
//! On the next access inside it (lookup or readdir; the kernel was told to forget the build's
//! directory entry at eviction, so every path walk into it comes back as a lookup), the build
//! is listed again. A finished build lists the same tree, numbered the same way: a
//! fingerprint of the inode assignment taken at eviction checks it, and then every inode
//! number the kernel may still hold means what it meant. When the fingerprint differs (an
//! artifact was deleted meanwhile, a job log vanished), the new tree is numbered above every
//! number the slot ever gave out, so no old number is reused for another file.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::Fs;
use crate::backend::Build;
use crate::tree::{parse_time, Ino, NodeKind, Tree, ROOT_INO};

pub(super) const SLOT_SHIFT: u32 = 40;
pub(super) const LOCAL_MASK: u64 = (1 << SLOT_SHIFT) - 1;

/// Listed builds a pipeline mount keeps in memory by default.
pub const DEFAULT_RESIDENT_BUILDS: usize = 8;

/// How long a build must go unused before it may leave memory, by default: builds in use
/// (a `grep -r` over several of them, readers switching between builds) are never listed
/// again and again; the bound is exceeded meanwhile.
pub const DEFAULT_EVICT_AFTER: Duration = Duration::from_secs(10);

pub(super) fn global(slot: usize, local: Ino) -> Ino {
    ((slot as u64) << SLOT_SHIFT) | local
}

pub(super) fn split(ino: Ino) -> (usize, Ino) {
    ((ino >> SLOT_SHIFT) as usize, ino & LOCAL_MASK)
}

/// Milliseconds since the first use of a slot in this process (the use clock).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// What an evicted build's tree was: enough to check that a reload numbers it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Evicted {
    pub(super) fingerprint: u64,
    /// The highest local inode number the slot ever gave out.
    pub(super) max_ino: Ino,
}

/// One build of the mount.
pub(super) struct Slot {
    pub(super) number: u64,
    /// What is known of the build (from the builds list or its latest listing).
    pub(super) info: RwLock<Option<Build>>,
    /// `None` until first listed, and again once evicted.
    pub(super) tree: RwLock<Option<Tree>>,
    /// Serializes the first listing.
    pub(super) loading: tokio::sync::Mutex<()>,
    /// A refresh loop is running for it.
    pub(super) watched: AtomicBool,
    /// When it was last used ([`now_ms`]).
    pub(super) used: AtomicU64,
    /// Set while evicted (until listed again).
    pub(super) evicted: Mutex<Option<Evicted>>,
}

impl Slot {
    pub(super) fn new(number: u64, info: Option<Build>, tree: Option<Tree>) -> Arc<Slot> {
        Arc::new(Slot {
            number,
            info: RwLock::new(info),
            tree: RwLock::new(tree),
            loading: tokio::sync::Mutex::new(()),
            watched: AtomicBool::new(false),
            used: AtomicU64::new(now_ms()),
            evicted: Mutex::new(None),
        })
    }

    pub(super) fn touch(&self) {
        self.used.store(now_ms(), Ordering::Relaxed);
    }

    pub(super) fn mtime(&self) -> SystemTime {
        let info = self.info.read().unwrap();
        info.as_ref()
            .and_then(|b| {
                b.finished_at
                    .as_deref()
                    .and_then(parse_time)
                    .or_else(|| b.created_at.as_deref().and_then(parse_time))
            })
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Whether the build is known to be finished (it never changes again).
    /// (A build whose state is unknown is taken as final, as [`Fs::watch_if_live`] does.)
    pub(super) fn finished(&self) -> bool {
        !self.watched.load(Ordering::Relaxed)
            && self
                .info
                .read()
                .unwrap()
                .as_ref()
                .is_none_or(|b| b.state.is_none() || super::is_final_state(b.state.as_deref()))
    }
}

/// A fingerprint of a tree's inode assignment: which number names which node (its parent,
/// name and artifact or job). Two trees with the same fingerprint mean the same thing by
/// every inode number.
pub(super) fn fingerprint(tree: &Tree) -> u64 {
    let mut h = DefaultHasher::new();
    for n in tree.nodes() {
        (n.ino, n.parent, &n.name).hash(&mut h);
        match &n.kind {
            NodeKind::Dir { job, .. } => (0u8, job.as_ref().map(|j| &j.job_id)).hash(&mut h),
            NodeKind::File(f) => (1u8, &f.artifact_id, f.size).hash(&mut h),
            NodeKind::Log(l) => (2u8, &l.job_id).hash(&mut h),
        }
    }
    tree.len().hash(&mut h);
    h.finish()
}

/// The tree to put in place of an evicted one: `new` as listed when it numbers its nodes as
/// the evicted tree did, else `new` renumbered above every number the slot gave out.
pub(super) fn restore(evicted: Option<Evicted>, new: Tree) -> Tree {
    let Some(e) = evicted else {
        return new;
    };
    if fingerprint(&new) == e.fingerprint {
        return new;
    }
    let mut fresh = new.root_only_above(e.max_ino.max(new.max_ino()));
    fresh.reconcile(new);
    fresh
}

impl Fs {
    /// Whether `ino` belongs to a finished build, whose names and attributes never change
    /// (the kernel may cache them for good). Not the pipeline root's namespace.
    pub fn settled(&self, ino: Ino) -> bool {
        if self.is_pipeline_ns(ino) || super::is_archive_ino(ino) {
            return false;
        }
        self.slots
            .read()
            .unwrap()
            .get(split(ino).0)
            .is_some_and(|s| s.finished())
    }

    /// Whether `ino` is in a build that was evicted (and not listed again yet), or in an
    /// archive whose index left memory with its build: answering anything about it needs
    /// [`Fs::reload`] first.
    pub fn is_evicted(&self, ino: Ino) -> bool {
        if super::is_archive_ino(ino) {
            return self.archives.is_dropped(ino);
        }
        if self.is_pipeline_ns(ino) {
            return false;
        }
        self.slots
            .read()
            .unwrap()
            .get(split(ino).0)
            .is_some_and(|s| s.evicted.lock().unwrap().is_some())
    }

    /// Lists the build of `ino` again if it was evicted. The kernel may use an inode it
    /// resolved before the eviction (an open directory, a walk in progress) without a new
    /// lookup: the adapter calls this before answering from memory.
    pub async fn reload(self: &Arc<Self>, ino: Ino) -> super::Result<()> {
        if !self.is_evicted(ino) {
            return Ok(());
        }
        if super::is_archive_ino(ino) {
            return self.archives.prepare(ino).await;
        }
        self.ensure_loaded(split(ino).0).await
    }

    /// Pipeline mounts: how many listed builds stay in memory (at least 1).
    pub fn set_resident_builds(&self, n: usize) {
        self.resident.store(n.max(1), Ordering::Relaxed);
    }

    /// Pipeline mounts: how long a build must be unused before it may leave memory.
    pub fn set_evict_after(&self, d: Duration) {
        self.evict_after_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// How many builds are listed and in memory now.
    pub fn resident_builds(&self) -> usize {
        self.slots
            .read()
            .unwrap()
            .iter()
            .filter(|s| s.tree.read().unwrap().is_some())
            .count()
    }

    /// Whether slot `s` has a file open.
    fn has_open_files(&self, s: usize) -> bool {
        self.handles
            .lock()
            .unwrap()
            .values()
            .any(|o| split(o.ino).0 == s)
    }

    /// Evicts least recently used builds until at most the resident bound are listed; never
    /// `keep`, a build used within the eviction delay, a live build, or one with an open
    /// file. Pipeline mounts only.
    pub(super) fn evict_idle(&self, keep: usize) {
        if self.pipeline.is_none() {
            return;
        }
        let bound = self.resident.load(Ordering::Relaxed);
        let slots: Vec<(usize, Arc<Slot>)> = {
            let all = self.slots.read().unwrap();
            all.iter()
                .enumerate()
                .skip(1)
                .filter(|(_, s)| s.tree.read().unwrap().is_some())
                .map(|(i, s)| (i, s.clone()))
                .collect()
        };
        if slots.len() <= bound {
            return;
        }
        // Idle: unused for the whole delay. (Not `used <= now - delay`: early in the process
        // `now - delay` saturates to 0, and a build used at time 0 would count as idle.)
        let now = now_ms();
        let delay = self.evict_after_ms.load(Ordering::Relaxed);
        let mut idle: Vec<(u64, usize, Arc<Slot>)> = slots
            .iter()
            .filter(|(i, s)| {
                *i != keep
                    && s.used.load(Ordering::Relaxed).saturating_add(delay) <= now
                    && s.finished()
                    && !self.has_open_files(*i)
            })
            .map(|(i, s)| (s.used.load(Ordering::Relaxed), *i, s.clone()))
            .collect();
        idle.sort_by_key(|(used, _, _)| *used);
        for (_, i, slot) in idle.into_iter().take(slots.len() - bound) {
            self.evict(i, &slot);
        }
    }

    /// Takes the tree of slot `s` out of memory (see the module header).
    fn evict(&self, s: usize, slot: &Slot) {
        let mut g = slot.tree.write().unwrap();
        let Some(tree) = g.take() else {
            return;
        };
        let e = Evicted {
            fingerprint: fingerprint(&tree),
            max_ino: tree.max_ino(),
        };
        let nodes = tree.len();
        let jobs: Vec<String> = tree
            .nodes()
            .filter_map(|n| match &n.kind {
                NodeKind::Log(l) => Some(l.job_id.clone()),
                _ => None,
            })
            .collect();
        // Marked under the tree's lock: a build without a tree is evicted or never listed.
        *slot.evicted.lock().unwrap() = Some(e);
        drop(g);
        drop(tree);
        // Its logs are finished (only finished builds are evicted) and none is open.
        if let Some(logs) = &self.logs {
            logs.forget(jobs.iter().map(String::as_str));
        }
        // So are its archives' indexes (persisted; a later lookup loads them again).
        self.archives.forget(|parent| split(parent).0 == s);
        // The listing brings the jobs back; the builds list's summary is what an unopened
        // build shows.
        if let Some(b) = slot.info.write().unwrap().as_mut() {
            b.jobs = Vec::new();
        }
        {
            let mut seq = self.dir_seq.lock().unwrap();
            let gone: Vec<Ino> = seq
                .iter()
                .map(|(ino, _)| *ino)
                .filter(|ino| split(*ino).0 == s)
                .collect();
            for ino in gone {
                seq.pop(&ino);
            }
        }
        // Every later path walk into the build starts with a lookup of its directory, which
        // lists it again.
        if let Some(k) = self.kernel.get() {
            k.inval_entry(ROOT_INO, &slot.number.to_string());
        }
        tracing::info!(
            build = slot.number,
            nodes,
            "evicted an idle build from memory"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Artifact;

    fn artifact(id: &str, path: &str) -> Artifact {
        serde_json::from_value(serde_json::json!({
            "id": id, "job_id": "j1", "path": path, "file_size": 3, "state": "finished"
        }))
        .unwrap()
    }

    fn tree(arts: &[Artifact]) -> Tree {
        Tree::build_with(None, arts, SystemTime::UNIX_EPOCH, false)
    }

    #[test]
    fn same_listing_same_fingerprint_and_numbers() {
        let arts = [artifact("a", "x/a.txt"), artifact("b", "x/b.txt")];
        let (t1, t2) = (tree(&arts), tree(&arts));
        assert_eq!(fingerprint(&t1), fingerprint(&t2));
        let e = Evicted {
            fingerprint: fingerprint(&t1),
            max_ino: t1.max_ino(),
        };
        let back = restore(Some(e), t2);
        for n in t1.nodes() {
            let m = back.get(n.ino).expect("same number");
            assert_eq!((m.parent, &m.name), (n.parent, &n.name));
        }
    }

    #[test]
    fn changed_listing_is_numbered_above_every_old_number() {
        let before = tree(&[artifact("a", "x/a.txt"), artifact("b", "x/b.txt")]);
        let after = tree(&[artifact("b", "x/b.txt")]);
        assert_ne!(fingerprint(&before), fingerprint(&after));
        let e = Evicted {
            fingerprint: fingerprint(&before),
            max_ino: before.max_ino(),
        };
        let paths = |t: &Tree| {
            let mut v: Vec<String> = t.nodes().map(|n| t.path_of(n.ino)).collect();
            v.sort();
            v
        };
        let want = paths(&after);
        let back = restore(Some(e), after);
        assert_eq!(paths(&back), want, "the same tree, numbered anew");
        for n in back.nodes().filter(|n| n.ino != ROOT_INO) {
            assert!(n.ino > before.max_ino(), "{} reuses an old number", n.name);
        }
        let b = back
            .nodes()
            .find(|n| n.name == "b.txt")
            .expect("b.txt is there");
        assert_eq!(b.file().unwrap().artifact_id, "b");
        assert_eq!(back.len(), want.len());
    }
}
