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
//! # Live builds
//! A build whose state is not final (running, scheduled, failing, ...) is listed again every
//! `refresh` interval; the new tree is reconciled into the old one (surviving entries keep
//! their inode numbers) and the kernel is told which entries and directories changed. The
//! first listing that shows a final state is the last. Open files of artifacts that
//! disappeared keep reading what is cached, else fail with `ENOENT`.
//!
//! Metadata operations on loaded builds touch memory only. `read` goes through the
//! [`Reader`]; `unlink` through the [`crate::content::Remote`]'s DELETE.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use crate::api::model::Build;
use crate::api::ApiError;
use crate::archive::fsys::{archive_stem, is_archive_ino, Archives};
use crate::content::remote::BoxFuture;
use crate::content::{Handle, ReadError, Reader};
use crate::joblog::{LogAttr, LogStore};
use crate::source::Listing;
use crate::tree::{parse_time, FileMeta, Ino, LogMeta, Node, NodeKind, Tree, TreeError, ROOT_INO};

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
    #[error("bad file handle")]
    BadHandle,
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
            FsError::BadHandle => libc::EBADF,
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

/// Lists builds for the filesystem ([`crate::source::Source`] over the network).
pub trait Lister: Send + Sync + 'static {
    fn list_build(&self, number: u64) -> BoxFuture<'_, std::result::Result<Listing, ApiError>>;
    fn get_build(&self, number: u64) -> BoxFuture<'_, std::result::Result<Build, ApiError>>;
    /// The pipeline's newest builds (at most `limit`), optionally of one branch or state.
    fn list_builds<'a>(
        &'a self,
        limit: usize,
        branch: Option<&'a str>,
        state: Option<&'a str>,
    ) -> BoxFuture<'a, std::result::Result<Vec<Build>, ApiError>>;
}

/// Tells the kernel to forget what it cached (fuser's notifier in a real mount).
pub trait KernelCache: Send + Sync + 'static {
    fn inval_entry(&self, parent: Ino, name: &str);
    fn inval_inode(&self, ino: Ino);
}

mod live;
mod logs;
mod passthrough;
mod pipeline;
mod prefetch;
mod xattrs;

pub use live::is_final_state;
pub use pipeline::list_pipeline;
use pipeline::{PipelineRoot, LINKS, MISSING_TTL};

const SLOT_SHIFT: u32 = 40;
const LOCAL_MASK: u64 = (1 << SLOT_SHIFT) - 1;

fn global(slot: usize, local: Ino) -> Ino {
    ((slot as u64) << SLOT_SHIFT) | local
}

fn split(ino: Ino) -> (usize, Ino) {
    ((ino >> SLOT_SHIFT) as usize, ino & LOCAL_MASK)
}

/// One build of the mount.
struct Slot {
    number: u64,
    /// What is known of the build (from the builds list or its latest listing).
    info: RwLock<Option<Build>>,
    /// `None` until first listed.
    tree: RwLock<Option<Tree>>,
    /// Serializes the first listing.
    loading: tokio::sync::Mutex<()>,
    /// A refresh loop is running for it.
    watched: AtomicBool,
}

impl Slot {
    fn new(number: u64, info: Option<Build>, tree: Option<Tree>) -> Arc<Slot> {
        Arc::new(Slot {
            number,
            info: RwLock::new(info),
            tree: RwLock::new(tree),
            loading: tokio::sync::Mutex::new(()),
            watched: AtomicBool::new(false),
        })
    }

    fn mtime(&self) -> SystemTime {
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
}

struct OpenFile {
    ino: Ino,
    what: Opened,
}

enum Opened {
    Artifact {
        meta: Arc<FileMeta>,
        handle: Arc<Handle>,
    },
    /// A job log. Reads take its metadata from the tree (it changes as the job finishes),
    /// or this copy once the tree no longer has it (a retry renamed it, the job vanished):
    /// an open file keeps reading its log.
    Log(LogMeta),
}

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
    /// Per directory: the last file opened in it and the sibling prefetch window.
    dir_seq: Mutex<HashMap<Ino, (String, usize)>>,
    /// Per open directory handle: the listing being read.
    dirs: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
    /// `NAME#` directories of archive artifacts (their own inode range).
    archives: Archives,
}

/// Most small sibling files fetched ahead of a directory scan.
const SIBLING_WINDOW_MAX: usize = 16;

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
fn delete_outcome(r: std::result::Result<(), ApiError>, what: &str) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(ApiError::NotFound { .. }) => {
            tracing::info!(what, "already gone");
            Ok(())
        }
        Err(ApiError::Forbidden { message }) | Err(ApiError::Unauthorized { message }) => {
            tracing::warn!(what, %message, "delete refused");
            Err(FsError::Access(message))
        }
        Err(e) => {
            tracing::error!(what, error = %e, "delete failed");
            Err(FsError::Io(e.to_string()))
        }
    }
}

fn api_error(e: ApiError) -> FsError {
    match e {
        ApiError::NotFound { .. } => FsError::NotFound,
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
            dir_seq: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            archives,
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
        links: [Option<u64>; 3],
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

    pub fn deletes_allowed(&self) -> bool {
        self.cfg.allow_delete
    }

    fn slot(&self, s: usize) -> Option<Arc<Slot>> {
        self.slots.read().unwrap().get(s).cloned()
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
            if let Some(l) = LINKS.iter().find(|l| l.0 == name) {
                // A link with no target may have one once the builds list is fetched again.
                if self.link_target(l.1).is_none() && self.root_stale() {
                    return None;
                }
                return Some(self.pipeline_attr(l.1));
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
            if let Some(l) = LINKS.iter().find(|l| Some(l.0) == name.to_str()) {
                self.refresh_root().await;
                return self.pipeline_attr(l.1);
            }
            let number = name
                .to_str()
                .and_then(Self::parse_number)
                .ok_or(FsError::NotFound)?;
            let s = self.discover(number).await?;
            return self.build_dir_attr(s).ok_or(FsError::NotFound);
        }
        self.ensure_loaded(split(parent).0).await?;
        let (s, local) = split(parent);
        if let Some(root) = name.to_str().and_then(|n| self.archive_dir(s, local, n)) {
            return self.archives.root(root).await;
        }
        self.lookup_cached(parent, name)
            .unwrap_or(Err(FsError::NotFound))
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
        let tree = tree_of(&listing, slot.number, self.logs.as_deref());
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
        *slot.tree.write().unwrap() = Some(tree);
        // The directory's attributes (link count, build time) were answered before listing.
        if let Some(k) = self.kernel.get() {
            k.inval_inode(global(s, ROOT_INO));
        }
        self.watch_if_live(s);
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
        self.prepare_dir(ino).await?;
        let entries = if self.is_pipeline_ns(ino) {
            self.root_entries()
        } else {
            self.build_entries(ino).unwrap_or(Err(FsError::NotFound))?
        };
        Ok(self.keep_listing(fh, entries))
    }

    /// The file at `ino` as the tree has it now.
    fn current_file(&self, ino: Ino) -> Result<Arc<FileMeta>> {
        if self.is_pipeline_ns(ino) {
            return Err(FsError::Invalid);
        }
        let (s, local) = split(ino);
        let slot = self.slot(s).ok_or(FsError::NotFound)?;
        let tree = slot.tree.read().unwrap();
        let tree = tree.as_ref().ok_or(FsError::NotFound)?;
        match &tree.get(local).ok_or(FsError::NotFound)?.kind {
            NodeKind::File(f) => Ok(Arc::new(f.clone())),
            NodeKind::Log(_) => Err(FsError::Invalid),
            NodeKind::Dir { .. } => Err(FsError::IsDir),
        }
    }

    /// Whether `ino` is still the file of artifact `id` (no copy of its metadata: this runs
    /// on every read).
    fn still_holds(&self, ino: Ino, id: &str) -> bool {
        if self.is_pipeline_ns(ino) {
            return false;
        }
        let (s, local) = split(ino);
        self.in_tree(s, |t| {
            Ok(t.get(local)
                .and_then(Node::file)
                .map(|f| f.artifact_id == id))
        })
        .and_then(|r| r.ok())
        .flatten()
        .unwrap_or(false)
    }

    /// Opens a file for reading. `flags` are the open(2) flags.
    pub fn open(&self, ino: Ino, flags: i32) -> Result<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly("files cannot be opened for writing"));
        }
        if is_archive_ino(ino) {
            self.archives.open(ino)?;
            return Ok(self.next_fh.fetch_add(1, Ordering::Relaxed));
        }
        let meta = self.current_file(ino)?;
        self.prefetch_siblings(ino);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(
            fh,
            OpenFile {
                ino,
                what: Opened::Artifact {
                    meta,
                    handle: Arc::new(Handle::default()),
                },
            },
        );
        Ok(fh)
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().unwrap().remove(&fh);
    }

    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        if is_archive_ino(ino) {
            return self.archives.read(ino, offset, size).await;
        }
        let open = match self
            .handles
            .lock()
            .unwrap()
            .get(&fh)
            .filter(|o| o.ino == ino)
            .map(|o| &o.what)
        {
            Some(Opened::Artifact { meta, handle }) => Some(Ok((meta.clone(), handle.clone()))),
            Some(Opened::Log(meta)) => Some(Err(meta.clone())),
            None => None,
        };
        let open = match open {
            Some(Err(meta)) => return self.read_log(ino, meta, offset, size).await,
            Some(Ok(o)) => Some(o),
            None => None,
        };
        let (meta, handle) = match open {
            Some((m, h)) if self.still_holds(ino, &m.artifact_id) => (m, Some(h)),
            Some((m, _)) => {
                // The artifact disappeared (a live build's refresh) while open: what is
                // cached can still be read.
                if self.deleted.lock().unwrap().contains(&m.artifact_id) {
                    return Err(FsError::NotFound);
                }
                return match self.reader.read_cached(&m, offset, size).await {
                    Some(b) => Ok(b),
                    None => {
                        tracing::info!(path = %m.original_path, "artifact is gone from the build and not cached");
                        Err(FsError::NotFound)
                    }
                };
            }
            None => (self.current_file(ino)?, None),
        };
        let t0 = std::time::Instant::now();
        match self
            .reader
            .read(&meta, offset, size, handle.as_deref())
            .await
        {
            Ok(b) => {
                tracing::trace!(path = %meta.original_path, offset, size, got = b.len(), us = t0.elapsed().as_micros() as u64, "read");
                Ok(b)
            }
            Err(e) => {
                tracing::error!(path = %meta.original_path, artifact = %meta.artifact_id, error = %e, "read failed");
                Err(match e {
                    ReadError::NotFound => FsError::NotFound,
                    e => FsError::Io(e.to_string()),
                })
            }
        }
    }

    /// `rm`: deletes the artifact through the API, only with `--allow-delete`.
    pub async fn unlink(&self, parent: Ino, name: &OsStr) -> Result<()> {
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
        if is_archive_ino(parent) {
            return Err(FsError::ReadOnly("archive entries cannot be removed"));
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
        self.deleted
            .lock()
            .unwrap()
            .insert(meta.artifact_id.clone());
        if let Some(t) = slot.tree.write().unwrap().as_mut() {
            t.remove_file(local);
        }
        self.reader.forget(&meta);
        tracing::info!(path = %meta.original_path, artifact = %meta.artifact_id, "deleted");
        Ok(())
    }

    /// `rmdir` of a directory emptied by deletes.
    pub fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
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
