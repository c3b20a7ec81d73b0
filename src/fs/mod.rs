//! The filesystem core: every operation as plain Rust on the trees and the reader, returning
//! typed errors. No fuser types here; [`crate::fuse`] adapts this to the kernel protocol.
//!
//! # Mounts and inode numbers
//! A mount holds one or more builds, each in a *slot* with its own [`Tree`]. A global inode
//! number is `slot << 40 | local inode`:
//! - a single-build mount has its build in slot 0, so global and local numbers agree and the
//!   build's root is the mount root;
//! - a pipeline mount keeps slot 0 for its own root (inode 1) and the `latest`,
//!   `latest-passed` and `latest-failed` symlinks (2, 3, 4); build *n* of the root listing
//!   lives in a slot of its own, its root directory named by the build number. A build's
//!   tree is listed on first access inside it (lookup or readdir), never for `ls -l` of the
//!   root, so builds never opened cost no request.
//!
//! Live builds are refreshed in `live.rs`, pipeline roots in `pipeline.rs`. Metadata operations
//! on loaded builds touch memory only. `read` goes through the [`Reader`]; `unlink` through
//! the [`crate::content::Remote`]'s DELETE. What each operation answers, and which errno when,
//! is specified in `docs/SEMANTICS.md`, section "Operations".

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use crate::backend::Build;
use crate::backend::{BackendError, KernelCache, Lister, Listing};
use crate::content::Reader;
use crate::joblog::{LogAttr, LogStore};
use crate::tree::{Ino, Node, NodeKind, Tree, TreeError, ROOT_INO};
use archives::{archive_stem, is_archive_ino, Archives};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("read-only filesystem ({0})")]
    ReadOnly(&'static str),
    #[error("permission denied: {0}")]
    Access(String),
    #[error("directory not empty")]
    NotEmpty,
    #[error("no such attribute")]
    NoAttr,
    #[error("attributes of this kind are not supported")]
    NotSupported,
    #[error("invalid argument")]
    Invalid,
    #[error("I/O error: {0}")]
    Io(String),
}

impl FsError {
    /// The one place where errors become errno values.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::ReadOnly(_) => libc::EROFS,
            FsError::Access(_) => libc::EACCES,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NoAttr => libc::ENODATA,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::Invalid => libc::EINVAL,
            FsError::Io(_) => libc::EIO,
        }
    }
}

pub type Result<T> = std::result::Result<T, FsError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// What `stat` shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub blocks: u64,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: SystemTime,
    /// The size may still change (a job log not fetched yet, or a running job's): the kernel
    /// must not cache the attributes, and reads must not stop at a size it remembers.
    pub volatile: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DirEntry {
    pub ino: Ino,
    pub kind: Kind,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct FsConfig {
    pub uid: u32,
    pub gid: u32,
    pub allow_delete: bool,
    /// How often a live build is listed again.
    pub refresh: Duration,
}

/// A directory listing's start: `.` (`ino`) and `..` (`parent`), with room for `more`.
pub fn dot_entries(ino: Ino, parent: Ino, more: usize) -> Vec<DirEntry> {
    let mut out = Vec::with_capacity(more + 2);
    for (ino, name) in [(ino, "."), (parent, "..")] {
        out.push(DirEntry {
            ino,
            kind: Kind::Dir,
            name: name.into(),
        });
    }
    out
}

/// Filesystem-wide numbers for `statfs`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatFs {
    pub blocks: u64,
    pub files: u64,
    pub bsize: u32,
    pub namelen: u32,
}

pub const STATFS_BSIZE: u32 = 4096;

pub mod archives;
mod handles;
mod live;
mod logs;
mod passthrough;
mod pipeline;
mod prefetch;
mod slots;
mod xattrs;

use handles::{OpenFile, Opened};
pub use live::{is_final_state, FINAL_BUILD_STATES};
pub use pipeline::{list_pipeline, Links};
use pipeline::{PipelineRoot, LINKS, MISSING_TTL};
use slots::{global, split, Slot};
pub use slots::{DEFAULT_EVICT_AFTER, DEFAULT_RESIDENT_BUILDS};

pub struct Fs {
    /// `Some` for a pipeline mount.
    pipeline: Option<RwLock<PipelineRoot>>,
    slots: RwLock<Vec<Arc<Slot>>>,
    /// Serializes lookups of unknown build numbers.
    discovering: tokio::sync::Mutex<()>,
    lister: Arc<dyn Lister>,
    kernel: OnceLock<Arc<dyn KernelCache>>,
    reader: Arc<Reader>,
    /// Job logs as files; `None` when the token cannot read them.
    logs: Option<Arc<LogStore>>,
    cfg: FsConfig,
    handles: Mutex<HashMap<u64, OpenFile>>,
    next_fh: AtomicU64,
    /// Artifacts deleted through this mount: their open files read as ENOENT.
    deleted: Mutex<HashSet<String>>,
    /// Per directory: the last file opened in it and the sibling prefetch window (the
    /// [`DIR_SEQ_MAX`] most recently used directories).
    dir_seq: Mutex<lru::LruCache<Ino, (String, usize)>>,
    /// Per open directory handle: the listing being read.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// `NAME#` directories of archive artifacts (their own inode range).
    archives: Archives,
    /// Pipeline mounts: how many listed builds stay in memory ([`slots`]).
    resident: AtomicUsize,
    /// Pipeline mounts: how long a build must be unused before it may be evicted (ms).
    evict_after_ms: AtomicU64,
}

/// Most small sibling files fetched ahead of a directory scan.
const SIBLING_WINDOW_MAX: usize = 16;

/// How many times a request lists an evicted build again before it gives up (each listing
/// may be evicted before the request reads it only under `--evict-after 0` thrash).
const RELOADS: usize = 4;

/// Directories whose sibling prefetch window is remembered.
const DIR_SEQ_MAX: usize = 1024;

/// The tree of a listing, with the build number in every file's metadata, and job logs
/// when `logs` is given (without the ones that turned out to be gone).
pub fn tree_of(listing: &Listing, number: u64, logs: Option<&LogStore>) -> Tree {
    let mut t = Tree::build_with(
        listing.build.as_ref(),
        &listing.artifacts,
        SystemTime::UNIX_EPOCH,
        logs.is_some(),
    );
    t.set_build_number(number);
    if let Some(store) = logs {
        let gone: Vec<Ino> = t
            .nodes()
            .filter(|n| n.log().is_some_and(|l| store.is_gone(&l.job_id)))
            .map(|n| n.ino)
            .collect();
        for ino in gone {
            t.remove_file(ino);
        }
    }
    t
}

/// What `rm` answers for the API's answer to a DELETE of `what`: done (or already gone),
/// `EACCES` when refused, else `EIO`; logged.
fn delete_outcome(r: crate::backend::Result<()>, what: &str) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(BackendError::NotFound { .. }) => {
            tracing::info!(what, "already gone");
            Ok(())
        }
        Err(BackendError::Denied { message, .. }) => {
            tracing::warn!(what, %message, "delete refused");
            Err(FsError::Access(message))
        }
        Err(e) => {
            tracing::error!(what, error = %e, "delete failed");
            Err(FsError::Io(e.to_string()))
        }
    }
}

fn api_error(e: BackendError) -> FsError {
    match e {
        BackendError::NotFound { .. } => FsError::NotFound,
        e => FsError::Io(e.to_string()),
    }
}

impl Fs {
    fn new(
        pipeline: Option<PipelineRoot>,
        slots: Vec<Arc<Slot>>,
        lister: Arc<dyn Lister>,
        reader: Arc<Reader>,
        logs: Option<Arc<LogStore>>,
        cfg: FsConfig,
    ) -> Arc<Fs> {
        let archives = Archives::new(reader.clone(), cfg.uid, cfg.gid);
        Arc::new(Fs {
            pipeline: pipeline.map(RwLock::new),
            slots: RwLock::new(slots),
            discovering: tokio::sync::Mutex::new(()),
            lister,
            kernel: OnceLock::new(),
            reader,
            logs,
            cfg,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            deleted: Mutex::new(HashSet::new()),
            dir_seq: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(DIR_SEQ_MAX).unwrap(),
            )),
            dirs: Mutex::new(HashMap::new()),
            archives,
            resident: AtomicUsize::new(DEFAULT_RESIDENT_BUILDS),
            evict_after_ms: AtomicU64::new(slots::DEFAULT_EVICT_AFTER.as_millis() as u64),
        })
    }

    /// A mount of one build, already listed.
    pub fn single(
        number: u64,
        listing: &Listing,
        lister: Arc<dyn Lister>,
        reader: Arc<Reader>,
        logs: Option<Arc<LogStore>>,
        cfg: FsConfig,
    ) -> Arc<Fs> {
        let slot = Slot::new(
            number,
            listing.build.clone(),
            Some(tree_of(listing, number, logs.as_deref())),
        );
        Fs::new(None, vec![slot], lister, reader, logs, cfg)
    }

    /// A mount of a pipeline: `builds` newest first (their directories at the root), and the
    /// builds the symlinks point to (`latest`, `latest-passed`, `latest-failed`), as
    /// [`list_pipeline`] gave them for `limit` and `branch`.
    #[allow(clippy::too_many_arguments)]
    pub fn pipeline(
        builds: Vec<Build>,
        links: Links,
        limit: usize,
        branch: Option<String>,
        lister: Arc<dyn Lister>,
        reader: Arc<Reader>,
        logs: Option<Arc<LogStore>>,
        cfg: FsConfig,
    ) -> Arc<Fs> {
        // Slot 0 is the root's own namespace.
        let mut slots = vec![Slot::new(0, None, None)];
        let mut root = PipelineRoot {
            links,
            limit,
            branch,
            ..Default::default()
        };
        for b in builds {
            if root.slots.contains_key(&b.number) || b.number == 0 {
                continue;
            }
            root.listed.push(b.number);
            root.slots.insert(b.number, slots.len());
            slots.push(Slot::new(b.number, Some(b), None));
        }
        Fs::new(Some(root), slots, lister, reader, logs, cfg)
    }

    /// Where kernel invalidations go (set once the session exists).
    pub fn set_kernel(&self, k: Arc<dyn KernelCache>) {
        let _ = self.kernel.set(k);
    }

    /// Starts refresh loops for the loaded builds that are still running. Needs a runtime.
    pub fn start(self: &Arc<Self>) {
        let n = self.slots.read().unwrap().len();
        for s in 0..n {
            self.watch_if_live(s);
        }
    }

    /// `--list-archives`: directory listings show `NAME#` next to each archive artifact.
    pub fn set_list_archives(&self, on: bool) {
        self.archives.set_listed(on);
    }

    /// The `NAME#` directory of the archive artifact `name` names in directory `local` of
    /// slot `s`, unless a real entry holds that name.
    fn archive_dir(&self, s: usize, local: Ino, name: &str) -> Option<Ino> {
        let stem = archive_stem(name)?;
        self.in_tree(s, |tree| {
            if tree.lookup(local, name).is_some() {
                return Err(FsError::NotFound);
            }
            let n = tree.lookup(local, stem).ok_or(FsError::NotFound)?;
            let f = n.file().ok_or(FsError::NotFound)?;
            self.archives
                .register(global(s, local), global(s, n.ino), f, n.mtime)
                .ok_or(FsError::NotFound)
        })?
        .ok()
    }

    /// `name` in `parent` is an archive entry or a `NAME#` itself: read-only whatever the
    /// mount options (`EROFS`, not `ENOENT`, for `rm`/`rmdir`).
    fn in_archive(&self, parent: Ino, name: &OsStr) -> bool {
        is_archive_ino(parent)
            || (!self.is_pipeline_ns(parent)
                && name.to_str().is_some_and(|n| {
                    let (s, local) = split(parent);
                    self.archive_dir(s, local, n).is_some()
                }))
    }

    pub fn deletes_allowed(&self) -> bool {
        self.cfg.allow_delete
    }

    fn slot(&self, s: usize) -> Option<Arc<Slot>> {
        let slot = self.slots.read().unwrap().get(s).cloned()?;
        slot.touch();
        Some(slot)
    }

    /// Runs `f` on the tree of slot `s`: `None` when that build is not listed yet.
    fn in_tree<T>(&self, s: usize, f: impl FnOnce(&Tree) -> Result<T>) -> Option<Result<T>> {
        let Some(slot) = self.slot(s) else {
            return Some(Err(FsError::NotFound));
        };
        let g = slot.tree.read().unwrap();
        g.as_ref().map(f)
    }

    fn is_pipeline_ns(&self, ino: Ino) -> bool {
        self.pipeline.is_some() && split(ino).0 == 0
    }

    fn dir_attr(&self, ino: Ino, nlink: u32, mtime: SystemTime) -> Attr {
        Attr {
            ino,
            kind: Kind::Dir,
            size: 0,
            blocks: 0,
            perm: 0o555,
            nlink,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            mtime,
            volatile: false,
        }
    }

    fn attr_of(&self, s: usize, tree: &Tree, n: &Node) -> Attr {
        match &n.kind {
            NodeKind::Dir { children, .. } => {
                let subdirs = children
                    .values()
                    .filter(|i| {
                        matches!(tree.get(**i).map(|c| &c.kind), Some(NodeKind::Dir { .. }))
                    })
                    .count();
                self.dir_attr(global(s, n.ino), 2 + subdirs as u32, n.mtime)
            }
            NodeKind::File(f) => self.file_attr(global(s, n.ino), f.size, n.mtime, false),
            NodeKind::Log(l) => {
                let a = self
                    .logs
                    .as_ref()
                    .map(|store| store.attr(l))
                    .unwrap_or(LogAttr {
                        size: 0,
                        settled: false,
                    });
                self.file_attr(global(s, n.ino), a.size, n.mtime, !a.settled)
            }
        }
    }

    fn file_attr(&self, ino: Ino, size: u64, mtime: SystemTime, volatile: bool) -> Attr {
        Attr {
            ino,
            kind: Kind::File,
            size,
            blocks: size.div_ceil(512),
            perm: 0o444,
            nlink: 1,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            mtime,
            volatile,
        }
    }

    /// The attributes of a pipeline build's directory, loaded or not (no network).
    fn build_dir_attr(&self, s: usize) -> Option<Attr> {
        let slot = self.slot(s)?;
        let tree = slot.tree.read().unwrap();
        Some(
            match tree.as_ref().and_then(|t| t.get(ROOT_INO).map(|n| (t, n))) {
                Some((t, n)) => self.attr_of(s, t, n),
                // Not listed yet: the number of subdirectories is unknown, and 1 is what
                // filesystems answer then (find does not take it as "no subdirectories").
                None => self.dir_attr(global(s, ROOT_INO), 1, slot.mtime()),
            },
        )
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        if is_archive_ino(ino) {
            return self.archives.getattr(ino);
        }
        if self.is_pipeline_ns(ino) {
            return self.pipeline_attr(ino);
        }
        let (s, local) = split(ino);
        if self.pipeline.is_some() && local == ROOT_INO {
            return self.build_dir_attr(s).ok_or(FsError::NotFound);
        }
        let slot = self.slot(s).ok_or(FsError::NotFound)?;
        let tree = slot.tree.read().unwrap();
        let tree = tree.as_ref().ok_or(FsError::NotFound)?;
        let n = tree.get(local).ok_or(FsError::NotFound)?;
        Ok(self.attr_of(s, tree, n))
    }

    /// Lookup from memory: `None` when answering needs the network (a build not listed yet,
    /// or a build number not seen yet).
    pub fn lookup_cached(&self, parent: Ino, name: &OsStr) -> Option<Result<Attr>> {
        let Some(name) = name.to_str() else {
            return Some(Err(FsError::NotFound));
        };
        if is_archive_ino(parent) {
            return self.archives.lookup_cached(parent, name);
        }
        if self.is_pipeline_ns(parent) {
            if split(parent).1 != ROOT_INO {
                return Some(Err(FsError::NotDir));
            }
            if let Some(l) = LINKS.iter().find(|l| l.name == name) {
                // A link with no target may have one once the builds list is fetched again.
                if self.link_target(l.ino).is_none() && self.root_stale() {
                    return None;
                }
                return Some(self.pipeline_attr(l.ino));
            }
            let Some(number) = Self::parse_number(name) else {
                return Some(Err(FsError::NotFound));
            };
            let root = self.pipeline.as_ref().unwrap().read().unwrap();
            if let Some(&s) = root.slots.get(&number) {
                drop(root);
                return Some(self.build_dir_attr(s).ok_or(FsError::NotFound));
            }
            if root
                .missing
                .get(&number)
                .is_some_and(|t| t.elapsed() < MISSING_TTL)
            {
                return Some(Err(FsError::NotFound));
            }
            return None;
        }
        let (s, local) = split(parent);
        if let Some(root) = self.archive_dir(s, local, name) {
            return self.archives.root_cached(root);
        }
        self.in_tree(s, |tree| {
            let p = tree.get(local).ok_or(FsError::NotFound)?;
            if !p.is_dir() {
                return Err(FsError::NotDir);
            }
            let n = tree.lookup(local, name).ok_or(FsError::NotFound)?;
            Ok(self.attr_of(s, tree, n))
        })
    }

    pub async fn lookup(self: &Arc<Self>, parent: Ino, name: &OsStr) -> Result<Attr> {
        if let Some(r) = self.lookup_cached(parent, name) {
            return r;
        }
        if is_archive_ino(parent) {
            let name = name.to_str().ok_or(FsError::NotFound)?;
            return self.archives.lookup(parent, name).await;
        }
        if self.is_pipeline_ns(parent) {
            if let Some(l) = LINKS.iter().find(|l| Some(l.name) == name.to_str()) {
                self.refresh_root().await;
                return self.pipeline_attr(l.ino);
            }
            let number = name
                .to_str()
                .and_then(Self::parse_number)
                .ok_or(FsError::NotFound)?;
            let s = self.discover(number).await?;
            return self.build_dir_attr(s).ok_or(FsError::NotFound);
        }
        let (s, local) = split(parent);
        // Listed, then answered from memory; again if the build was evicted in between.
        for _ in 0..RELOADS {
            self.ensure_loaded(s).await?;
            if let Some(root) = name.to_str().and_then(|n| self.archive_dir(s, local, n)) {
                return self.archives.root(root).await;
            }
            if let Some(r) = self.lookup_cached(parent, name) {
                return r;
            }
        }
        Err(FsError::NotFound)
    }

    /// Lists the build of slot `s` unless it is listed already (single-flight).
    async fn ensure_loaded(self: &Arc<Self>, s: usize) -> Result<()> {
        let slot = self.slot(s).ok_or(FsError::NotFound)?;
        if slot.tree.read().unwrap().is_some() {
            return Ok(());
        }
        let _g = slot.loading.lock().await;
        if slot.tree.read().unwrap().is_some() {
            return Ok(());
        }
        let t0 = Instant::now();
        let listing = self.lister.list_build(slot.number).await.map_err(|e| {
            tracing::error!(build = slot.number, error = %e, "cannot list the build");
            api_error(e)
        })?;
        // Still marked evicted until the tree is back (sync callers reload meanwhile).
        let evicted = *slot.evicted.lock().unwrap();
        let tree = slots::restore(
            evicted,
            tree_of(&listing, slot.number, self.logs.as_deref()),
        );
        tracing::info!(
            build = slot.number,
            via = listing.via,
            artifacts = listing.artifacts.len(),
            nodes = tree.len(),
            ms = t0.elapsed().as_millis() as u64,
            "listed the build"
        );
        if listing.build.is_some() {
            *slot.info.write().unwrap() = listing.build;
        }
        {
            let mut g = slot.tree.write().unwrap();
            *g = Some(tree);
            *slot.evicted.lock().unwrap() = None;
        }
        slot.touch();
        // The directory's attributes (link count, build time) were answered before listing.
        if let Some(k) = self.kernel.get() {
            k.inval_inode(global(s, ROOT_INO));
        }
        self.watch_if_live(s);
        self.evict_idle(s);
        Ok(())
    }

    /// Readdir from memory: `None` when the directory is a build not listed yet.
    fn readdir_cached(&self, ino: Ino) -> Option<Result<Vec<DirEntry>>> {
        if self.is_pipeline_ns(ino) {
            if split(ino).1 != ROOT_INO {
                return Some(Err(FsError::NotDir));
            }
            if self.root_stale() {
                return None;
            }
            Some(Ok(self.root_entries()))
        } else {
            self.build_entries(ino)
        }
    }

    /// A build directory's entries; `None` when the build is not listed yet.
    fn build_entries(&self, ino: Ino) -> Option<Result<Vec<DirEntry>>> {
        if is_archive_ino(ino) {
            return self.archives.entries_cached(ino);
        }
        let (s, local) = split(ino);
        self.in_tree(s, |tree| {
            let n = tree.get(local).ok_or(FsError::NotFound)?;
            let NodeKind::Dir { children, .. } = &n.kind else {
                return Err(FsError::NotDir);
            };
            let parent = if local == ROOT_INO {
                if self.pipeline.is_some() {
                    ROOT_INO
                } else {
                    ino
                }
            } else {
                global(s, n.parent)
            };
            let mut out = dot_entries(ino, parent, children.len());
            for (name, child) in children {
                let kind = match tree.get(*child).map(|c| &c.kind) {
                    Some(NodeKind::Dir { .. }) => Kind::Dir,
                    _ => Kind::File,
                };
                out.push(DirEntry {
                    ino: global(s, *child),
                    kind,
                    name: name.clone(),
                });
                if self.archives.listed() && kind == Kind::File {
                    if let Some(a) = tree.get(*child).and_then(|c| {
                        let f = c.file()?;
                        self.archives.register(ino, global(s, c.ino), f, c.mtime)
                    }) {
                        let name = format!("{name}#");
                        if !children.contains_key(&name) {
                            out.push(DirEntry {
                                ino: a,
                                kind: Kind::Dir,
                                name,
                            });
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    /// Lists what `readdir_cached` could not: a stale pipeline root, an unlisted build.
    async fn prepare_dir(self: &Arc<Self>, ino: Ino) -> Result<()> {
        if is_archive_ino(ino) {
            return self.archives.prepare(ino).await;
        }
        if self.is_pipeline_ns(ino) {
            self.refresh_root().await;
            return Ok(());
        }
        self.ensure_loaded(split(ino).0).await
    }

    /// Opens a directory: a handle that will hold its listing.
    pub fn opendir(&self, ino: Ino) -> Result<u64> {
        match self.getattr(ino)?.kind {
            Kind::Dir => Ok(self.next_fh.fetch_add(1, Ordering::Relaxed)),
            _ => Err(FsError::NotDir),
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().unwrap().remove(&fh);
    }

    fn keep_listing(&self, fh: u64, entries: Vec<DirEntry>) -> Arc<Vec<DirEntry>> {
        let a = Arc::new(entries);
        self.dirs.lock().unwrap().insert(fh, a.clone());
        a
    }

    /// The entries of directory `ino` (`.` and `..` first) for the open handle `fh`, from
    /// memory: `None` when the directory must be listed first. The listing is taken when a
    /// read starts at offset 0 and reused for later offsets, so a listing that changes
    /// meanwhile (a live refresh, new builds) never makes `ls` skip or repeat an entry.
    pub fn listing_cached(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
    ) -> Option<Result<Arc<Vec<DirEntry>>>> {
        if offset > 0 {
            if let Some(l) = self.dirs.lock().unwrap().get(&fh) {
                return Some(Ok(l.clone()));
            }
        }
        Some(self.readdir_cached(ino)?.map(|e| self.keep_listing(fh, e)))
    }

    /// [`Fs::listing_cached`], listing the directory first if needed.
    pub async fn listing(
        self: &Arc<Self>,
        ino: Ino,
        fh: u64,
        offset: u64,
    ) -> Result<Arc<Vec<DirEntry>>> {
        if let Some(r) = self.listing_cached(ino, fh, offset) {
            return r;
        }
        for _ in 0..RELOADS {
            self.prepare_dir(ino).await?;
            let entries = if self.is_pipeline_ns(ino) {
                self.root_entries()
            } else {
                // None: the build was evicted again in between.
                match self.build_entries(ino) {
                    Some(e) => e?,
                    None => continue,
                }
            };
            return Ok(self.keep_listing(fh, entries));
        }
        Err(FsError::NotFound)
    }

    /// `rm`: deletes the artifact through the API, only with `--allow-delete`.
    pub async fn unlink(&self, parent: Ino, name: &OsStr) -> Result<()> {
        if self.in_archive(parent, name) {
            return Err(FsError::ReadOnly("archives are read-only"));
        }
        if !self.cfg.allow_delete {
            return Err(FsError::ReadOnly(
                "mount with --allow-delete to delete artifacts",
            ));
        }
        if self.is_pipeline_ns(parent) {
            return Err(FsError::ReadOnly(
                "builds and their links cannot be removed",
            ));
        }
        let (s, local_parent) = split(parent);
        let slot = self.slot(s).ok_or(FsError::NotFound)?;
        let (local, target) = {
            let tree = slot.tree.read().unwrap();
            let tree = tree.as_ref().ok_or(FsError::NotFound)?;
            let name = name.to_str().ok_or(FsError::NotFound)?;
            let n = tree.lookup(local_parent, name).ok_or(FsError::NotFound)?;
            match &n.kind {
                NodeKind::File(f) => (n.ino, Ok(f.clone())),
                NodeKind::Log(l) => (n.ino, Err(l.clone())),
                NodeKind::Dir { .. } => return Err(FsError::IsDir),
            }
        };
        let meta = match target {
            Ok(f) => f,
            Err(l) => return self.unlink_log(&slot, local, l).await,
        };
        delete_outcome(
            self.reader.remote().delete(&meta).await,
            &meta.original_path,
        )?;
        {
            // Only open files need to know (their reads then fail with ENOENT).
            let handles = self.handles.lock().unwrap();
            if Self::is_open(&handles, &meta.artifact_id) {
                self.deleted
                    .lock()
                    .unwrap()
                    .insert(meta.artifact_id.clone());
            }
        }
        if let Some(t) = slot.tree.write().unwrap().as_mut() {
            t.remove_file(local);
        }
        // Its `NAME#`, if it was opened, goes too (the kernel may hold that name and inodes
        // inside it).
        if let Some(inodes) = self.archives.deleted(global(s, local)) {
            if let (Some(k), Some(n)) = (self.kernel.get(), name.to_str()) {
                k.inval_entry(parent, &format!("{n}#"));
                for i in inodes {
                    k.inval_inode(i);
                }
            }
        }
        self.reader.forget(&meta);
        tracing::info!(path = %meta.original_path, artifact = %meta.artifact_id, "deleted");
        Ok(())
    }

    /// `rmdir` of a directory emptied by deletes.
    pub fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
        if self.in_archive(parent, name) {
            return Err(FsError::ReadOnly("archives are read-only"));
        }
        if !self.cfg.allow_delete {
            return Err(FsError::ReadOnly(
                "mount with --allow-delete to delete artifacts",
            ));
        }
        if self.is_pipeline_ns(parent) {
            return Err(FsError::ReadOnly("builds cannot be removed"));
        }
        let (s, local_parent) = split(parent);
        let slot = self.slot(s).ok_or(FsError::NotFound)?;
        let name = name.to_str().ok_or(FsError::NotFound)?;
        let mut g = slot.tree.write().unwrap();
        let tree = g.as_mut().ok_or(FsError::NotFound)?;
        match tree.remove_dir(local_parent, name) {
            Ok(_) => Ok(()),
            Err(TreeError::NotEmpty) => Err(FsError::NotEmpty),
            Err(TreeError::NotDir) => Err(FsError::NotDir),
            Err(_) => Err(FsError::NotFound),
        }
    }

    pub fn statfs(&self) -> StatFs {
        let (mut bytes, mut files) = (0u64, 0u64);
        for slot in self.slots.read().unwrap().iter() {
            if let Some(t) = slot.tree.read().unwrap().as_ref() {
                bytes = bytes.saturating_add(t.total_size());
                files += t.len() as u64;
            }
        }
        StatFs {
            blocks: bytes.div_ceil(STATFS_BSIZE as u64),
            files: files.max(1),
            bsize: STATFS_BSIZE,
            namelen: 255,
        }
    }
}

#[cfg(test)]
mod tests;
