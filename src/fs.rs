//! The filesystem core: every operation as plain Rust on the tree and the reader, returning
//! typed errors. No fuser types here; [`crate::fuse`] adapts this to the kernel protocol.
//!
//! Metadata operations (`lookup`, `getattr`, `readdir`, xattrs, `statfs`) touch memory only.
//! `read` goes through the [`Reader`]; `unlink` through the [`Remote`]'s DELETE.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use bytes::Bytes;

use crate::api::ApiError;
use crate::content::reader::WHOLE_FILE_MAX;
use crate::content::{Handle, ReadError, Reader};
use crate::tree::{FileMeta, Ino, Node, NodeKind, Tree, TreeError, ROOT_INO};

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
            FsError::Io(_) => libc::EIO,
        }
    }
}

pub type Result<T> = std::result::Result<T, FsError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
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

pub struct Fs {
    tree: RwLock<Tree>,
    reader: Arc<Reader>,
    cfg: FsConfig,
    handles: Mutex<HashMap<u64, (Ino, Arc<Handle>)>>,
    next_fh: AtomicU64,
    /// Per directory: the last file opened in it and the sibling prefetch window.
    dir_seq: Mutex<HashMap<Ino, (String, usize)>>,
}

/// Most small sibling files fetched ahead of a directory scan.
const SIBLING_WINDOW_MAX: usize = 16;

impl Fs {
    pub fn new(tree: Tree, reader: Arc<Reader>, cfg: FsConfig) -> Fs {
        Fs {
            tree: RwLock::new(tree),
            reader,
            cfg,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            dir_seq: Mutex::new(HashMap::new()),
        }
    }

    pub fn deletes_allowed(&self) -> bool {
        self.cfg.allow_delete
    }

    fn attr_of(&self, tree: &Tree, n: &Node) -> Attr {
        match &n.kind {
            NodeKind::Dir { children, .. } => {
                let subdirs = children
                    .values()
                    .filter(|i| {
                        matches!(tree.get(**i).map(|c| &c.kind), Some(NodeKind::Dir { .. }))
                    })
                    .count();
                Attr {
                    ino: n.ino,
                    kind: Kind::Dir,
                    size: 0,
                    blocks: 0,
                    perm: 0o555,
                    nlink: 2 + subdirs as u32,
                    uid: self.cfg.uid,
                    gid: self.cfg.gid,
                    mtime: n.mtime,
                }
            }
            NodeKind::File(f) => Attr {
                ino: n.ino,
                kind: Kind::File,
                size: f.size,
                blocks: f.size.div_ceil(512),
                perm: 0o444,
                nlink: 1,
                uid: self.cfg.uid,
                gid: self.cfg.gid,
                mtime: n.mtime,
            },
        }
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        let tree = self.tree.read().unwrap();
        let p = tree.get(parent).ok_or(FsError::NotFound)?;
        if !matches!(p.kind, NodeKind::Dir { .. }) {
            return Err(FsError::NotDir);
        }
        let name = name.to_str().ok_or(FsError::NotFound)?;
        let n = tree.lookup(parent, name).ok_or(FsError::NotFound)?;
        Ok(self.attr_of(&tree, n))
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let tree = self.tree.read().unwrap();
        let n = tree.get(ino).ok_or(FsError::NotFound)?;
        Ok(self.attr_of(&tree, n))
    }

    /// Every entry of a directory, `.` and `..` first.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let tree = self.tree.read().unwrap();
        let n = tree.get(ino).ok_or(FsError::NotFound)?;
        let NodeKind::Dir { children, .. } = &n.kind else {
            return Err(FsError::NotDir);
        };
        let mut out = Vec::with_capacity(children.len() + 2);
        out.push(DirEntry {
            ino,
            kind: Kind::Dir,
            name: ".".into(),
        });
        out.push(DirEntry {
            ino: if ino == ROOT_INO { ROOT_INO } else { n.parent },
            kind: Kind::Dir,
            name: "..".into(),
        });
        for (name, child) in children {
            let kind = match tree.get(*child).map(|c| &c.kind) {
                Some(NodeKind::Dir { .. }) => Kind::Dir,
                _ => Kind::File,
            };
            out.push(DirEntry {
                ino: *child,
                kind,
                name: name.clone(),
            });
        }
        Ok(out)
    }

    /// `readdir` with each entry's attributes (for READDIRPLUS: `ls -l` then needs no
    /// lookups), computed under one lock.
    pub fn readdir_plus(&self, ino: Ino) -> Result<Vec<(DirEntry, Attr)>> {
        let entries = self.readdir(ino)?;
        let tree = self.tree.read().unwrap();
        Ok(entries
            .into_iter()
            .filter_map(|e| {
                let n = tree.get(e.ino)?;
                let a = self.attr_of(&tree, n);
                Some((e, a))
            })
            .collect())
    }

    fn file_meta(&self, ino: Ino) -> Result<Arc<FileMeta>> {
        let tree = self.tree.read().unwrap();
        match &tree.get(ino).ok_or(FsError::NotFound)?.kind {
            NodeKind::File(f) => Ok(Arc::new(f.clone())),
            NodeKind::Dir { .. } => Err(FsError::IsDir),
        }
    }

    /// Opens a file for reading. `flags` are the open(2) flags.
    pub fn open(&self, ino: Ino, flags: i32) -> Result<u64> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly("files cannot be opened for writing"));
        }
        self.file_meta(ino)?;
        self.prefetch_siblings(ino);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .lock()
            .unwrap()
            .insert(fh, (ino, Arc::new(Handle::default())));
        Ok(fh)
    }

    /// Directory-sequential prefetch: when files of one directory are opened in name order
    /// (as `grep -r`, `cp -r` and `find -exec` do), fetch the next few small files ahead, in a
    /// window that starts at the second in-order open and doubles up to
    /// [`SIBLING_WINDOW_MAX`]. An open out of order resets it.
    /// Must be called within the tokio runtime (the adapter enters it).
    fn prefetch_siblings(&self, ino: Ino) {
        let tree = self.tree.read().unwrap();
        let Some(node) = tree.get(ino) else {
            return;
        };
        let (parent, name) = (node.parent, node.name.clone());
        let window = {
            let mut seq = self.dir_seq.lock().unwrap();
            // The first open in a directory prefetches nothing (it may be the only one);
            // each following open in name order doubles the window.
            let w = match seq.get(&parent) {
                Some((last, w)) if name > *last => (w * 2).clamp(1, SIBLING_WINDOW_MAX),
                _ => 0,
            };
            seq.insert(parent, (name.clone(), w));
            w
        };
        if window == 0 {
            return;
        }
        let Some(NodeKind::Dir { children, .. }) = tree.get(parent).map(|p| &p.kind) else {
            return;
        };
        use std::ops::Bound::{Excluded, Unbounded};
        let next: Vec<Arc<FileMeta>> = children
            .range::<String, _>((Excluded(&name), Unbounded))
            .filter_map(|(_, i)| match tree.get(*i).map(|n| &n.kind) {
                Some(NodeKind::File(f)) if f.size > 0 && f.size <= WHOLE_FILE_MAX => {
                    Some(Arc::new(f.clone()))
                }
                _ => None,
            })
            .take(window)
            .collect();
        drop(tree);
        for m in next {
            self.reader.prefetch_whole(&m);
        }
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().unwrap().remove(&fh);
    }

    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let handle = self
            .handles
            .lock()
            .unwrap()
            .get(&fh)
            .filter(|(i, _)| *i == ino)
            .map(|(_, h)| h.clone());
        // A file deleted through this mount while open reads as ENOENT.
        let meta = self.file_meta(ino)?;
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
        let (ino, meta) = {
            let tree = self.tree.read().unwrap();
            let name = name.to_str().ok_or(FsError::NotFound)?;
            let n = tree.lookup(parent, name).ok_or(FsError::NotFound)?;
            match &n.kind {
                NodeKind::File(f) => (n.ino, f.clone()),
                NodeKind::Dir { .. } => return Err(FsError::IsDir),
            }
        };
        match self
            .reader
            .remote()
            .delete(&meta.job_id, &meta.artifact_id)
            .await
        {
            Ok(()) => {}
            Err(ApiError::NotFound { .. }) => {
                tracing::info!(path = %meta.original_path, "artifact was already gone");
            }
            Err(ApiError::Forbidden { message }) | Err(ApiError::Unauthorized { message }) => {
                tracing::warn!(path = %meta.original_path, %message, "delete refused");
                return Err(FsError::Access(message));
            }
            Err(e) => {
                tracing::error!(path = %meta.original_path, error = %e, "delete failed");
                return Err(FsError::Io(e.to_string()));
            }
        }
        self.tree.write().unwrap().remove_file(ino);
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
        let name = name.to_str().ok_or(FsError::NotFound)?;
        match self.tree.write().unwrap().remove_dir(parent, name) {
            Ok(_) => Ok(()),
            Err(TreeError::NotEmpty) => Err(FsError::NotEmpty),
            Err(TreeError::NotDir) => Err(FsError::NotDir),
            Err(_) => Err(FsError::NotFound),
        }
    }

    /// Extended attributes of a node, in a stable order.
    pub fn xattrs(&self, ino: Ino) -> Result<Vec<(String, Vec<u8>)>> {
        let tree = self.tree.read().unwrap();
        let n = tree.get(ino).ok_or(FsError::NotFound)?;
        let mut out = Vec::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                out.push((format!("user.buildkite.{k}"), v.as_bytes().to_vec()));
            }
        };
        match &n.kind {
            NodeKind::File(f) => {
                put("artifact_id", Some(&f.artifact_id));
                put("job_id", Some(&f.job_id));
                put("sha1sum", f.sha1sum.as_deref());
                put("mime_type", f.mime_type.as_deref());
                put("state", f.state.as_deref());
                put("path", Some(&f.original_path));
            }
            NodeKind::Dir { job: Some(j), .. } => {
                put("job_id", Some(&j.job_id));
                put("job_label", j.label.as_deref());
                put("web_url", j.web_url.as_deref());
            }
            NodeKind::Dir { job: None, .. } => {}
        }
        Ok(out)
    }

    pub fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>> {
        let name = name.to_str().ok_or(FsError::NoAttr)?;
        self.xattrs(ino)?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or(FsError::NoAttr)
    }

    pub fn statfs(&self) -> StatFs {
        let tree = self.tree.read().unwrap();
        StatFs {
            blocks: tree.total_size().div_ceil(STATFS_BSIZE as u64),
            files: tree.len() as u64,
            bsize: STATFS_BSIZE,
            namelen: 255,
        }
    }
}
