//! Filesystem operations on `NAME#` directories, called by [`crate::fs::Fs`] for inodes in
//! the archive range (bit 63 set: `1<<63 | archive id << 32 | entry + 1`; entry 0 is the
//! archive's root).
//!
//! - An archive gets its id when `NAME#` is first looked up (or listed with
//!   `--list-archives`); its index is built on the first lookup, once even under concurrent
//!   lookups (an async mutex per archive), and never while holding anything the rest of the
//!   mount needs. A persisted index (disk cache, keyed by the artifact's content key) is
//!   used first: a remount lists an archive with no request.
//! - zip: the tail (end record, ZIP64 records) and the central directory by ranged reads;
//!   stored entries are read by range after checking the local header; deflated entries
//!   are inflated whole once (never past their declared size; size and CRC checked) into
//!   the derived store, then served from it; without a disk cache, an entry too large for
//!   the store's memory is inflated as a stream that later reads continue. Encrypted
//!   entries: `EACCES`. Other methods:
//!   `EIO` with a log line naming the method.
//!   Entries with a unix `S_IFLNK` mode are symlinks: their target (the entry's data) is
//!   read once while indexing and confined like a tar link's.
//! - tar: headers walked with ranged reads that skip entry data; entries read by range.
//! - tar.gz: one streaming pass gunzips the artifact, walks the headers and records zran
//!   access points ([`crate::archive::gzindex`]) every few MiB; both are persisted. An entry is read
//!   by resuming decompression at the nearest access point before it (or a suspended
//!   decompression left there by an earlier read: sequential reads go on where they
//!   stopped). Whole 1 MiB blocks decompressed that way are kept in the derived store
//!   (bounded like any cache block), so a repeated read costs nothing.
//! - A corrupt archive fails its `NAME#` lookup with `EIO` (remembered for the mount);
//!   network failures are not remembered.
//! - An evicted build's archives are forgotten (index, points, cursors leave memory).
//!
//! Here: inodes, registration, attributes, lookups and listings from the index. Building
//! the index is [`index`]; reading entries is [`read`].

mod index;
mod read;

use read::{Cursor, ZipCursor};

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{Attr, DirEntry, FsError, Kind};
use crate::archive::gzindex::{self, Extractor, Point};
use crate::archive::inflate::EntryInflater;
use crate::archive::store::{block_len, Derived, Sink, DBLOCK};
use crate::archive::{check_magic, zip, ArchiveError, Data, EntryKind, Format, Index};
use crate::content::cache::content_key;
use crate::content::{Handle, Reader};
use crate::tree::{FileMeta, Ino};

pub const ARCHIVE_BIT: u64 = 1 << 63;
const ID_SHIFT: u32 = 32;
/// Compressed bytes read per step of a streaming pass.
const CHUNK: u64 = 1 << 20;
/// Most bytes a tar.gz may expand to, as a multiple of its size (plus 1 MiB).
const GZ_RATIO: u64 = 1032;
/// What a zip listing reads from the end at first.
const SPECULATIVE_TAIL: u64 = 1 << 20;
/// Suspended tar.gz decompressions kept, for the whole mount.
const MAX_CURSORS: usize = 8;
/// Without a disk cache, deflated zip entries larger than this are not kept whole (the
/// in-memory store holds 64 MiB): reads inflate them as a stream that stops where the read
/// ends and goes on from there at the next read ([`EntryInflater`]).
const STREAM_ENTRIES_OVER: u64 = 16 << 20;
/// Suspended zip entry inflates kept, for the whole mount.
const MAX_ZIP_CURSORS: usize = 4;
/// Most inodes of a deleted archive the kernel is told to forget (the rest keep cached
/// attributes until their TTL).
const MAX_INVALIDATIONS: usize = 100_000;
/// A streaming pass longer than this logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

pub fn is_archive_ino(ino: Ino) -> bool {
    ino & ARCHIVE_BIT != 0
}

fn ino_of(id: u32, ix: u32) -> Ino {
    ARCHIVE_BIT | ((id as u64) << ID_SHIFT) | (ix as u64 + 1)
}

fn split_ino(ino: Ino) -> Option<(u32, u32)> {
    let local = ino & 0xffff_ffff;
    (is_archive_ino(ino) && local > 0).then(|| {
        (
            ((ino & !ARCHIVE_BIT) >> ID_SHIFT) as u32,
            (local - 1) as u32,
        )
    })
}

/// Runs CPU-heavy work (inflating, building or decoding an index) without holding up the
/// other tasks of the runtime's worker: on the multi-threaded runtime the worker hands its
/// queue to another thread first (`block_in_place`). Elsewhere (unit tests on the
/// current-thread runtime) it just runs.
fn cpu<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// `NAME` of a `NAME#` lookup whose name says archive.
pub fn archive_stem(name: &str) -> Option<&str> {
    let stem = name.strip_suffix('#')?;
    crate::archive::format_of_name(stem).map(|_| stem)
}

enum Fail {
    Net(String),
    Bad(ArchiveError),
}

impl From<ArchiveError> for Fail {
    fn from(e: ArchiveError) -> Fail {
        Fail::Bad(e)
    }
}

struct Archive {
    /// Its place in [`Archives::all`].
    id: u32,
    meta: Arc<FileMeta>,
    /// The directory holding `NAME#` (global inode).
    parent: Ino,
    mtime: SystemTime,
    format: Format,
    ckey: String,
    index: RwLock<Option<Arc<Index>>>,
    failed: RwLock<Option<String>>,
    loading: tokio::sync::Mutex<()>,
    /// Data offsets of zip entries whose local header was checked.
    offsets: Mutex<HashMap<u32, u64>>,
    /// Per entry (deflated zip): decompressions in progress.
    inflating: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    /// Its artifact was deleted through this mount: every request answers `ENOENT`.
    gone: std::sync::atomic::AtomicBool,
    /// Entries whose streamed inflate failed its checks (size, CRC, data): read as `EIO`.
    bad: Mutex<HashMap<u32, ArchiveError>>,
    /// Its index was dropped from memory with its evicted build (and not loaded again yet).
    dropped: std::sync::atomic::AtomicBool,
    /// tar.gz: the access points (set before `index`).
    points: RwLock<Option<Arc<Vec<Point>>>>,
}

pub struct Archives {
    reader: Arc<Reader>,
    store: Arc<Derived>,
    uid: u32,
    gid: u32,
    list: std::sync::atomic::AtomicBool,
    by_file: Mutex<HashMap<Ino, u32>>,
    /// By id (an id is never reused).
    all: RwLock<Vec<Arc<Archive>>>,
    /// tar.gz: decompressions suspended where a read stopped (archive id, cursor), most
    /// recent last, at most [`MAX_CURSORS`] for the whole mount (each holds up to a block).
    cursors: Mutex<Vec<(u32, Cursor)>>,
    /// Zip entries inflated as a stream, suspended where a read stopped, most recent last.
    zip_cursors: Mutex<Vec<ZipCursor>>,
    /// Indexes built (not loaded from the cache) by this mount.
    built: std::sync::atomic::AtomicU64,
}

impl Archives {
    pub fn new(reader: Arc<Reader>, uid: u32, gid: u32) -> Archives {
        Archives {
            store: Arc::new(Derived::new(reader.disk().cloned())),
            reader,
            uid,
            gid,
            list: Default::default(),
            by_file: Mutex::new(HashMap::new()),
            all: RwLock::new(Vec::new()),
            built: Default::default(),
            cursors: Mutex::new(Vec::new()),
            zip_cursors: Mutex::new(Vec::new()),
        }
    }

    /// `--list-archives`: `readdir` shows `NAME#` next to each archive.
    pub fn set_listed(&self, on: bool) {
        self.list.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many indexes this mount has built (not counting those loaded from the cache).
    pub fn indexes_built(&self) -> u64 {
        self.built.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn listed(&self) -> bool {
        self.list.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The archive inode for the file `file` (global inode) in directory `parent`; its id is
    /// kept for the mount.
    pub fn register(
        &self,
        parent: Ino,
        file: Ino,
        meta: &FileMeta,
        mtime: SystemTime,
    ) -> Option<Ino> {
        let format = crate::archive::format_of_name(&meta.original_path)?;
        let mut by = self.by_file.lock().unwrap();
        if let Some(&id) = by.get(&file) {
            return Some(ino_of(id, 0));
        }
        let mut all = self.all.write().unwrap();
        let id = all.len() as u32;
        all.push(Arc::new(Archive {
            id,
            ckey: content_key(meta.sha1sum.as_deref(), &meta.artifact_id),
            meta: Arc::new(meta.clone()),
            parent,
            mtime,
            format,
            index: RwLock::new(None),
            failed: RwLock::new(None),
            loading: tokio::sync::Mutex::new(()),
            offsets: Mutex::new(HashMap::new()),
            inflating: Mutex::new(HashMap::new()),
            points: RwLock::new(None),
            dropped: Default::default(),
            bad: Mutex::new(HashMap::new()),
            gone: Default::default(),
        }));
        by.insert(file, id);
        Some(ino_of(id, 0))
    }

    fn archive(&self, id: u32) -> Option<Arc<Archive>> {
        self.all
            .read()
            .unwrap()
            .get(id as usize)
            .filter(|a| !a.gone.load(std::sync::atomic::Ordering::Relaxed))
            .cloned()
    }

    /// The artifact `file` (global inode) was deleted: its archive, if it was opened, is
    /// gone (inodes inside it answer `ENOENT`) and leaves memory. Returns its inodes (for
    /// the kernel to forget: at most [`MAX_INVALIDATIONS`]), or `None` if it had none.
    pub fn deleted(&self, file: Ino) -> Option<Vec<Ino>> {
        let id = self.by_file.lock().unwrap().remove(&file)?;
        let a = self.archive(id)?;
        a.gone.store(true, std::sync::atomic::Ordering::Relaxed);
        let n = a
            .index
            .write()
            .unwrap()
            .take()
            .map_or(1, |i| i.entries.len());
        a.points.write().unwrap().take();
        self.cursors.lock().unwrap().retain(|(i, _)| *i != id);
        self.zip_cursors.lock().unwrap().retain(|c| c.id != id);
        Some(
            (0..n.min(MAX_INVALIDATIONS) as u32)
                .map(|ix| ino_of(id, ix))
                .collect(),
        )
    }

    /// Drops what the archives in the directories `gone` says are gone (an evicted build's)
    /// hold in memory: index, access points, checked offsets, suspended decompressions. An
    /// archive keeps its id, so the inodes the kernel holds stay valid: the next request on
    /// one loads the index again first (from the disk cache when it was persisted; see
    /// [`Archives::is_dropped`]), and reads do so themselves. Returns how many were dropped.
    pub fn forget(&self, gone: impl Fn(Ino) -> bool) -> usize {
        let all = self.all.read().unwrap().clone();
        let mut ids = Vec::new();
        for a in all.iter().filter(|a| gone(a.parent)) {
            // Under the index lock, so a load in progress finishes first or sees the flag.
            let mut index = a.index.write().unwrap();
            if index.take().is_some() {
                a.dropped.store(true, std::sync::atomic::Ordering::Relaxed);
                ids.push(a.id);
            }
            drop(index);
            a.points.write().unwrap().take();
            a.offsets.lock().unwrap().clear();
        }
        self.cursors
            .lock()
            .unwrap()
            .retain(|(id, _)| !ids.contains(id));
        self.zip_cursors
            .lock()
            .unwrap()
            .retain(|c| !ids.contains(&c.id));
        ids.len()
    }

    /// Whether `ino` is in an archive whose index was dropped with its build: answering
    /// from memory needs [`Archives::prepare`] first.
    pub fn is_dropped(&self, ino: Ino) -> bool {
        split_ino(ino)
            .and_then(|(id, _)| self.archive(id))
            .is_some_and(|a| a.dropped.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Archives whose index is in memory.
    pub fn in_memory(&self) -> usize {
        self.all
            .read()
            .unwrap()
            .iter()
            .filter(|a| a.index.read().unwrap().is_some())
            .count()
    }

    fn attr(&self, ino: Ino, kind: Kind, size: u64, mtime: SystemTime, nlink: u32) -> Attr {
        Attr {
            ino,
            kind,
            size,
            blocks: size.div_ceil(512),
            perm: match kind {
                Kind::Dir => 0o555,
                Kind::File => 0o444,
                Kind::Symlink => 0o777,
            },
            nlink,
            uid: self.uid,
            gid: self.gid,
            mtime,
            volatile: false,
        }
    }

    fn entry_attr(&self, a: &Archive, idx: &Index, id: u32, ix: u32) -> Result<Attr, FsError> {
        let e = idx.get(ix).ok_or(FsError::NotFound)?;
        let mtime = if ix == 0 && e.mtime == 0 {
            a.mtime
        } else {
            SystemTime::UNIX_EPOCH + Duration::from_secs(e.mtime.max(0) as u64)
        };
        Ok(match &e.kind {
            EntryKind::Dir { children } => {
                let subdirs = children
                    .values()
                    .filter(|c| idx.children(**c).is_some())
                    .count();
                self.attr(ino_of(id, ix), Kind::Dir, 0, mtime, 2 + subdirs as u32)
            }
            EntryKind::File => self.attr(ino_of(id, ix), Kind::File, e.size, mtime, 1),
            EntryKind::Symlink { target } => {
                self.attr(ino_of(id, ix), Kind::Symlink, target.len() as u64, mtime, 1)
            }
        })
    }

    /// Attributes from memory. A root whose index is not built yet is a plain directory
    /// (so that `--list-archives` listings need no request).
    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        let (id, ix) = split_ino(ino).ok_or(FsError::NotFound)?;
        let a = self.archive(id).ok_or(FsError::NotFound)?;
        let idx = a.index.read().unwrap().clone();
        match idx {
            Some(idx) => self.entry_attr(&a, &idx, id, ix),
            // Not indexed yet: the number of subdirectories is unknown, and 1 is what
            // filesystems answer then (find does not take it as "no subdirectories").
            None if ix == 0 => Ok(self.attr(ino, Kind::Dir, 0, a.mtime, 1)),
            None => Err(FsError::NotFound),
        }
    }

    /// The lookup of `NAME#` itself: `None` until the index is built.
    pub fn root_cached(&self, root: Ino) -> Option<Result<Attr, FsError>> {
        let (id, _) = split_ino(root)?;
        let a = self.archive(id)?;
        if let Some(m) = a.failed.read().unwrap().clone() {
            return Some(Err(FsError::Io(m)));
        }
        a.index.read().unwrap().as_ref()?;
        Some(self.getattr(root))
    }

    pub async fn root(&self, root: Ino) -> Result<Attr, FsError> {
        self.prepare(root).await?;
        self.getattr(root)
    }

    pub fn lookup_cached(&self, parent: Ino, name: &str) -> Option<Result<Attr, FsError>> {
        let Some((id, ix)) = split_ino(parent) else {
            return Some(Err(FsError::NotFound));
        };
        let a = self.archive(id)?;
        let idx = a.index.read().unwrap().clone()?;
        Some((|| {
            let ch = idx.children(ix).ok_or(FsError::NotDir)?;
            let c = *ch.get(name).ok_or(FsError::NotFound)?;
            self.entry_attr(&a, &idx, id, c)
        })())
    }

    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, FsError> {
        self.prepare(parent).await?;
        self.lookup_cached(parent, name)
            .unwrap_or(Err(FsError::NotFound))
    }

    /// A directory's entries (`.` and `..` first); `None` until the index is built.
    pub fn entries_cached(&self, ino: Ino) -> Option<Result<Vec<DirEntry>, FsError>> {
        let Some((id, ix)) = split_ino(ino) else {
            return Some(Err(FsError::NotFound));
        };
        let a = self.archive(id)?;
        if let Some(m) = a.failed.read().unwrap().clone() {
            return Some(Err(FsError::Io(m)));
        }
        let idx = a.index.read().unwrap().clone()?;
        Some((|| {
            let ch = idx.children(ix).ok_or(FsError::NotDir)?;
            let parent = if ix == 0 {
                a.parent
            } else {
                ino_of(id, idx.get(ix).ok_or(FsError::NotFound)?.parent)
            };
            let mut out = super::dot_entries(ino, parent, ch.len());
            for (name, &c) in ch {
                let kind = match idx.get(c).map(|e| &e.kind) {
                    Some(EntryKind::Dir { .. }) => Kind::Dir,
                    Some(EntryKind::Symlink { .. }) => Kind::Symlink,
                    _ => Kind::File,
                };
                out.push(DirEntry {
                    ino: ino_of(id, c),
                    kind,
                    name: name.clone(),
                });
            }
            Ok(out)
        })())
    }

    pub fn readlink(&self, ino: Ino) -> Result<String, FsError> {
        let (id, ix) = split_ino(ino).ok_or(FsError::NotFound)?;
        let a = self.archive(id).ok_or(FsError::NotFound)?;
        let idx = a.index.read().unwrap().clone().ok_or(FsError::NotFound)?;
        match &idx.get(ix).ok_or(FsError::NotFound)?.kind {
            EntryKind::Symlink { target } => Ok(target.clone()),
            _ => Err(FsError::Invalid),
        }
    }

    pub fn xattrs(&self, ino: Ino) -> Result<Vec<(String, Vec<u8>)>, FsError> {
        let (id, ix) = split_ino(ino).ok_or(FsError::NotFound)?;
        let a = self.archive(id).ok_or(FsError::NotFound)?;
        let mut out = Vec::new();
        let mut put = |k: &str, v: String| out.push((format!("user.archive.{k}"), v.into_bytes()));
        let Some(idx) = a.index.read().unwrap().clone() else {
            put("format", format!("{:?}", a.format).to_lowercase());
            return Ok(out);
        };
        let e = idx.get(ix).ok_or(FsError::NotFound)?;
        if ix == 0 {
            put("format", format!("{:?}", idx.format).to_lowercase());
            put("entries", (idx.entries.len() - 1).to_string());
            return Ok(out);
        }
        if !e.stored.is_empty() {
            put("path", e.stored.clone());
        }
        match &e.data {
            Some(Data::Zip {
                method,
                csize,
                crc,
                encrypted,
                ..
            }) => {
                put("compressed_size", csize.to_string());
                put("crc32", format!("{crc:08x}"));
                put("method", zip::method_name(*method));
                if *encrypted {
                    put("encrypted", "1".into());
                }
            }
            Some(Data::Tar { offset }) => put("offset", offset.to_string()),
            None => {}
        }
        Ok(out)
    }

    /// `open` of an entry (regular files only): returns the directory holding its archive,
    /// whose build must stay in memory while the entry is open.
    pub fn open(&self, ino: Ino) -> Result<Ino, FsError> {
        let (id, _) = split_ino(ino).ok_or(FsError::NotFound)?;
        let parent = self.archive(id).ok_or(FsError::NotFound)?.parent;
        match self.getattr(ino)?.kind {
            Kind::File => Ok(parent),
            Kind::Dir => Err(FsError::IsDir),
            Kind::Symlink => Err(FsError::Invalid),
        }
    }

    async fn raw(
        &self,
        a: &Archive,
        off: u64,
        len: u64,
        h: Option<&Handle>,
    ) -> Result<Bytes, Fail> {
        let len = len.min(a.meta.size.saturating_sub(off));
        let mut out = Vec::new();
        let mut at = off;
        // Reader::read takes a u32 size.
        while at < off + len {
            let n = (off + len - at).min(1 << 30);
            let b = self
                .reader
                .read(&a.meta, at, n as u32, h)
                .await
                .map_err(|e| Fail::Net(e.to_string()))?;
            if b.is_empty() {
                break;
            }
            if out.is_empty() && b.len() as u64 == len {
                return Ok(b);
            }
            at += b.len() as u64;
            out.extend_from_slice(&b);
        }
        if (out.len() as u64) < len {
            return Err(Fail::Net("short read".into()));
        }
        Ok(Bytes::from(out))
    }
}
