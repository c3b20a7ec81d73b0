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
//!   the derived store, then served from it. Encrypted entries: `EACCES`. Other methods:
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

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

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
    /// tar.gz: the access points (set before `index`).
    points: RwLock<Option<Arc<Vec<Point>>>>,
}

/// A tar.gz decompression between reads, and the 1 MiB block it is filling.
struct Cursor {
    x: Extractor,
    h: Handle,
    blk: Vec<u8>,
    blk_at: Option<u64>,
}

impl Cursor {
    /// Collects decompressed bytes at `o` into aligned blocks of a stream of `total` bytes;
    /// each whole block goes to the store under `key`.
    fn absorb(
        blk: &mut Vec<u8>,
        blk_at: &mut Option<u64>,
        store: &Derived,
        key: &str,
        total: u64,
        mut o: u64,
        mut d: &[u8],
    ) {
        while !d.is_empty() && o < total {
            let start = match *blk_at {
                Some(s) => s,
                None if o.is_multiple_of(DBLOCK) => {
                    *blk_at = Some(o);
                    blk.clear();
                    o
                }
                None => {
                    let skip = ((DBLOCK - o % DBLOCK) as usize).min(d.len());
                    o += skip as u64;
                    d = &d[skip..];
                    continue;
                }
            };
            let want = block_len(total, start / DBLOCK) as usize;
            let take = (want - blk.len()).min(d.len());
            blk.extend_from_slice(&d[..take]);
            o += take as u64;
            d = &d[take..];
            if blk.len() == want {
                store.put(key, start / DBLOCK, Bytes::from(std::mem::take(blk)));
                *blk_at = None;
            }
        }
    }
}

/// A deflated zip entry's inflate between reads, and the 1 MiB block it is filling.
struct ZipCursor {
    id: u32,
    ix: u32,
    x: EntryInflater,
    h: Handle,
    /// Compressed bytes fetched and not yet inflated (they start at `x.consumed()`).
    pending: Bytes,
    blk: Vec<u8>,
    blk_at: Option<u64>,
}

pub struct Archives {
    reader: Arc<Reader>,
    store: Arc<Derived>,
    uid: u32,
    gid: u32,
    list: std::sync::atomic::AtomicBool,
    by_file: Mutex<HashMap<Ino, u32>>,
    /// By id; `None` once forgotten (its build left memory).
    all: RwLock<Vec<Option<Arc<Archive>>>>,
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
        all.push(Some(Arc::new(Archive {
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
        })));
        by.insert(file, id);
        Some(ino_of(id, 0))
    }

    fn archive(&self, id: u32) -> Option<Arc<Archive>> {
        self.all.read().unwrap().get(id as usize).cloned().flatten()
    }

    /// Forgets the archives in the directories `gone` says are gone (an evicted build's):
    /// their indexes, access points and suspended decompressions leave memory. A later
    /// lookup registers the archive again, and its index comes back from the disk cache.
    /// Returns how many were forgotten.
    pub fn forget(&self, gone: impl Fn(Ino) -> bool) -> usize {
        let mut by = self.by_file.lock().unwrap();
        let mut all = self.all.write().unwrap();
        let mut ids = Vec::new();
        for (id, slot) in all.iter_mut().enumerate() {
            if slot.as_ref().is_some_and(|a| gone(a.parent)) {
                *slot = None;
                ids.push(id as u32);
            }
        }
        by.retain(|_, id| !ids.contains(id));
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

    /// Archives registered and not forgotten.
    pub fn known(&self) -> usize {
        self.all.read().unwrap().iter().flatten().count()
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

    /// `open` of an entry: only regular files.
    /// Opens an entry: the directory holding its archive (whose build must stay in memory
    /// while the entry is open).
    pub fn open(&self, ino: Ino) -> Result<Ino, FsError> {
        let (id, _) = split_ino(ino).ok_or(FsError::NotFound)?;
        let parent = self.archive(id).ok_or(FsError::NotFound)?.parent;
        match self.getattr(ino)?.kind {
            Kind::File => Ok(parent),
            Kind::Dir => Err(FsError::IsDir),
            Kind::Symlink => Err(FsError::Invalid),
        }
    }

    /// Builds (or loads) the index of the archive `ino` belongs to, once.
    pub async fn prepare(&self, ino: Ino) -> Result<(), FsError> {
        let (id, _) = split_ino(ino).ok_or(FsError::NotFound)?;
        let a = self.archive(id).ok_or(FsError::NotFound)?;
        if let Some(m) = a.failed.read().unwrap().clone() {
            return Err(FsError::Io(m));
        }
        if a.index.read().unwrap().is_some() {
            return Ok(());
        }
        let _g = a.loading.lock().await;
        if let Some(m) = a.failed.read().unwrap().clone() {
            return Err(FsError::Io(m));
        }
        if a.index.read().unwrap().is_some() {
            return Ok(());
        }
        // `.ix3`: a zip index's `stream_len` is its central directory's offset (the bound of
        // entry data; 0 in an `.ix2` index); `.ix2` brought zip symlinks.
        let key = format!("{}.ix3", a.ckey);
        let pkey = format!("{}.gzp1", a.ckey);
        if let Some(b) = self.store.get_blob(&key) {
            // A tar.gz index is only usable with its access points.
            let points = match a.format {
                Format::TarGz => self
                    .store
                    .get_blob(&pkey)
                    .and_then(|b| gzindex::decode_points(&b)),
                _ => Some(Vec::new()),
            };
            match cpu(|| serde_json::from_slice::<Index>(&b)) {
                Ok(idx) if idx.format == a.format && points.is_some() => {
                    *a.points.write().unwrap() = points.map(Arc::new);
                    tracing::debug!(path = %a.meta.original_path, entries = idx.entries.len(), "archive index from the cache");
                    *a.index.write().unwrap() = Some(Arc::new(idx));
                    return Ok(());
                }
                _ => {
                    tracing::warn!(path = %a.meta.original_path, "unreadable cached archive index; building it again")
                }
            }
        }
        let t0 = Instant::now();
        let counted = crate::stats::STATS.archive_index_started();
        let r = match a.format {
            Format::Zip => self.index_zip(&a).await.map(|i| (i, Vec::new())),
            Format::Tar => self.index_tar(&a).await.map(|i| (i, Vec::new())),
            Format::TarGz => self.index_targz(&a).await,
        };
        drop(counted);
        match r {
            Ok((idx, points)) => {
                self.built
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(path = %a.meta.original_path, format = ?idx.format, entries = idx.entries.len() - 1, points = points.len(), ms = t0.elapsed().as_millis() as u64, "indexed the archive");
                let idx = Arc::new(idx);
                let points = Arc::new(points);
                *a.points.write().unwrap() = Some(points.clone());
                *a.index.write().unwrap() = Some(idx.clone());
                // Persisted off the lookup's path (serializing a big index takes a while);
                // the points are written first, so an index is never found without them.
                let store = self.store.clone();
                let targz = a.format == Format::TarGz;
                drop(tokio::task::spawn_blocking(move || {
                    if targz {
                        store.put_blob(&pkey, &gzindex::encode_points(&points));
                    }
                    if let Ok(json) = serde_json::to_vec(&*idx) {
                        store.put_blob(&key, &json);
                    }
                }));
                Ok(())
            }
            Err(Fail::Net(m)) => {
                tracing::error!(path = %a.meta.original_path, error = %m, "cannot read the archive");
                Err(FsError::Io(m))
            }
            Err(Fail::Bad(e)) => {
                tracing::error!(path = %a.meta.original_path, error = %e, "cannot list the archive");
                *a.failed.write().unwrap() = Some(e.to_string());
                Err(FsError::Io(e.to_string()))
            }
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

    async fn index_zip(&self, a: &Archive) -> Result<Index, Fail> {
        let size = a.meta.size;
        // The end records need the last TAIL_LEN bytes at most; reading the last MiB instead
        // (blocks fetched in parallel) also brings the central directory of most archives
        // (about 10,000 entries), so listing is one round trip instead of two.
        let tail_len = size.min(zip::TAIL_LEN.max(SPECULATIVE_TAIL));
        let tail_at = size - tail_len;
        let tail = self.raw(a, tail_at, tail_len, None).await?;
        let slice = |at: u64, len: u64| -> Option<Bytes> {
            (at >= tail_at && at.checked_add(len).is_some_and(|e| e <= size)).then(|| {
                let s = (at - tail_at) as usize;
                tail.slice(s..s + len as usize)
            })
        };
        let loc = match zip::parse_tail(&tail, size)? {
            zip::Tail::Found(l) => l,
            zip::Tail::Zip64At(at) => {
                let rec = match slice(at, zip::ZIP64_EOCD_LEN) {
                    Some(b) => b,
                    None => self.raw(a, at, zip::ZIP64_EOCD_LEN, None).await?,
                };
                zip::parse_zip64_eocd(&rec, at)?
            }
        };
        let cd = match slice(loc.offset, loc.size) {
            Some(b) => b,
            None => self.raw(a, loc.offset, loc.size, None).await?,
        };
        let mut raw = Vec::new();
        for e in zip::parse_cd(&cd, &loc)? {
            if e.is_symlink() {
                let target = self.zip_link_target(a, &e, loc.offset).await?;
                raw.push(e.into_link(target));
            } else {
                raw.push(e.into_raw());
            }
        }
        Ok(cpu(|| Index::build(Format::Zip, raw, loc.offset))?)
    }

    /// A zip symlink's target: its entry's data (local header checked, inflated if need be,
    /// size and CRC checked), read once while indexing.
    async fn zip_link_target(
        &self,
        a: &Archive,
        e: &zip::CdEntry,
        cd_at: u64,
    ) -> Result<Vec<u8>, Fail> {
        let d = e.data();
        let local = self
            .raw(a, e.header, zip::LOCAL_LEN + e.name.len() as u64, None)
            .await?;
        let start = zip::data_offset(&local, &d, cd_at)?;
        if start.saturating_add(e.csize) > a.meta.size {
            return Err(Fail::Bad(crate::archive::corrupt(
                "entry data past the end of the archive",
            )));
        }
        let b = self.raw(a, start, e.csize, None).await?;
        let target = if e.method == zip::STORED {
            b.to_vec()
        } else {
            let mut out = Vec::new();
            let r = flate2::read::DeflateDecoder::new(&b[..])
                .take(e.usize + 1)
                .read_to_end(&mut out);
            r.map_err(|err| Fail::Bad(crate::archive::corrupt(format!("inflate: {err}"))))?;
            out
        };
        if target.len() as u64 != e.usize || crc32fast::hash(&target) != e.crc {
            return Err(Fail::Bad(crate::archive::corrupt(format!(
                "symlink {}: its target does not match its size or CRC",
                String::from_utf8_lossy(&e.name)
            ))));
        }
        Ok(target)
    }

    async fn index_tar(&self, a: &Archive) -> Result<Index, Fail> {
        let size = a.meta.size;
        let h = Handle::default();
        let mut w = crate::archive::tar::TarWalker::new();
        let t0 = Instant::now();
        let mut last_log = t0;
        let mut first = true;
        while !w.is_done() && w.need() < size {
            let at = w.need();
            let b = self.raw(a, at, (64 << 10).min(size - at), Some(&h)).await?;
            if first {
                check_magic(Format::Tar, &b)?;
                first = false;
            }
            w.feed(at, &b)?;
            if last_log.elapsed() > PROGRESS_EVERY {
                last_log = Instant::now();
                tracing::info!(path = %a.meta.original_path, offset = at, of = size, entries = w.entries(), "indexing the archive");
            }
        }
        if first && size > 0 {
            return Err(Fail::Bad(crate::archive::corrupt("empty tar")));
        }
        let raw = w.finish(size)?;
        Ok(cpu(|| Index::build(Format::Tar, raw, size))?)
    }

    /// One pass over a tar.gz: gunzip, walk the tar headers, record access points. Stops
    /// once the walker has seen the end of the tar data.
    async fn index_targz(&self, a: &Archive) -> Result<(Index, Vec<Point>), Fail> {
        let size = a.meta.size;
        let limit = size.saturating_mul(GZ_RATIO).saturating_add(1 << 20);
        let mut sink = Sink::new(&self.store, String::new(), limit);
        sink.keep = false;
        sink.walker = Some(crate::archive::tar::TarWalker::new());
        let mut ix = gzindex::Indexer::new(gzindex::SPAN);
        let h = Handle::default();
        let (t0, mut last_log) = (Instant::now(), Instant::now());
        let mut at = 0u64;
        while at < size {
            let b = self.raw(a, at, CHUNK.min(size - at), Some(&h)).await?;
            if at == 0 {
                check_magic(Format::TarGz, &b)?;
            }
            at += b.len() as u64;
            // Nothing past the end of the tar data is decompressed.
            cpu(|| {
                ix.feed_while(&b, &mut |d| {
                    sink.write_all(d).map_err(|e| {
                        sink.err
                            .take()
                            .unwrap_or_else(|| crate::archive::corrupt(format!("gzip: {e}")))
                    })?;
                    Ok(!sink.walker.as_ref().is_some_and(|w| w.is_done()))
                })
            })?;
            if sink.walker.as_ref().is_some_and(|w| w.is_done()) {
                break;
            }
            if last_log.elapsed() > PROGRESS_EVERY {
                last_log = Instant::now();
                tracing::info!(path = %a.meta.original_path, read = at, of = size, unpacked = sink.total, secs = t0.elapsed().as_secs(), "indexing the archive");
            }
        }
        let total = sink.total;
        let points = ix.finish(at >= size)?;
        let raw = sink.walker.take().unwrap().finish(total)?;
        Ok((cpu(|| Index::build(Format::TarGz, raw, total))?, points))
    }

    fn inflight_lock(&self, a: &Archive, ix: u32) -> Arc<tokio::sync::Mutex<()>> {
        a.inflating.lock().unwrap().entry(ix).or_default().clone()
    }

    /// Reads an entry's bytes.
    pub async fn read(&self, ino: Ino, off: u64, size: u32) -> Result<Bytes, FsError> {
        let (id, ix) = split_ino(ino).ok_or(FsError::NotFound)?;
        let a = self.archive(id).ok_or(FsError::NotFound)?;
        let idx = a.index.read().unwrap().clone().ok_or(FsError::NotFound)?;
        let e = idx.get(ix).ok_or(FsError::NotFound)?;
        if e.kind != EntryKind::File {
            return Err(FsError::IsDir);
        }
        let len = (size as u64).min(e.size.saturating_sub(off));
        if len == 0 {
            return Ok(Bytes::new());
        }
        let path = || format!("{}#/{}", a.meta.original_path, idx.path_of(ix));
        let r = match e.data.as_ref() {
            Some(Data::Tar { offset }) if idx.format == Format::Tar => {
                self.raw(&a, offset + off, len, None).await
            }
            Some(Data::Tar { offset }) => self.read_gz(&a, idx.stream_len, offset + off, len).await,
            Some(
                d @ Data::Zip {
                    method,
                    csize,
                    encrypted,
                    ..
                },
            ) => {
                if *encrypted {
                    tracing::warn!(path = %path(), "encrypted zip entries cannot be read");
                    return Err(FsError::Access("encrypted zip entry".into()));
                }
                match *method {
                    zip::STORED if *csize != e.size => Err(Fail::Bad(crate::archive::corrupt(
                        "stored entry with different compressed and uncompressed sizes",
                    ))),
                    zip::STORED => match self.zip_data(&a, ix, d).await {
                        Ok(start) => self.raw(&a, start + off, len, None).await,
                        Err(f) => Err(f),
                    },
                    zip::DEFLATED => self.read_deflated(&a, ix, e.size, d, off, len).await,
                    m => {
                        tracing::error!(path = %path(), method = %zip::method_name(m), "unsupported zip compression method");
                        return Err(FsError::Io(format!(
                            "unsupported compression method {}",
                            zip::method_name(m)
                        )));
                    }
                }
            }
            None => Ok(Bytes::new()),
        };
        r.map_err(|f| {
            let m = match f {
                Fail::Net(m) => m,
                Fail::Bad(e) => e.to_string(),
            };
            tracing::error!(path = %path(), error = %m, "cannot read the archive entry");
            FsError::Io(m)
        })
    }

    /// Checks an entry's local header (once) and returns where its data starts.
    async fn zip_data(&self, a: &Archive, ix: u32, d: &Data) -> Result<u64, Fail> {
        if let Some(&o) = a.offsets.lock().unwrap().get(&ix) {
            return Ok(o);
        }
        let Data::Zip {
            header, raw_name, ..
        } = d
        else {
            return Err(Fail::Bad(crate::archive::corrupt("not a zip entry")));
        };
        let local = self
            .raw(a, *header, zip::LOCAL_LEN + raw_name.len() as u64, None)
            .await?;
        // Entry data ends by the central directory (a zip index's stream_len).
        let cd_at = a.index.read().unwrap().as_ref().map_or(0, |i| i.stream_len);
        let o = zip::data_offset(&local, d, cd_at)?;
        a.offsets.lock().unwrap().insert(ix, o);
        Ok(o)
    }

    async fn read_deflated(
        &self,
        a: &Archive,
        ix: u32,
        usize: u64,
        d: &Data,
        off: u64,
        len: u64,
    ) -> Result<Bytes, Fail> {
        let Data::Zip { csize, crc, .. } = d else {
            return Err(Fail::Bad(crate::archive::corrupt("not a zip entry")));
        };
        if usize > csize.saturating_mul(zip::MAX_RATIO).saturating_add(1 << 10) {
            return Err(Fail::Bad(crate::archive::corrupt(format!(
                "declares {usize} bytes from {csize} compressed: over the {}:1 deflate bound",
                zip::MAX_RATIO
            ))));
        }
        if !self.store.has_disk() && usize > STREAM_ENTRIES_OVER {
            return self.read_deflated_stream(a, ix, usize, d, off, len).await;
        }
        let key = format!("{}.z{ix}", a.ckey);
        if self.store.complete(&key) == Some(usize) {
            if let Some(b) = self.store.read(&key, usize, off, len) {
                return Ok(b);
            }
        }
        let lock = self.inflight_lock(a, ix);
        let _g = lock.lock().await;
        if self.store.complete(&key) == Some(usize) {
            if let Some(b) = self.store.read(&key, usize, off, len) {
                return Ok(b);
            }
        }
        let start = self.zip_data(a, ix, d).await?;
        if start.checked_add(*csize).is_none_or(|e| e > a.meta.size) {
            return Err(Fail::Bad(crate::archive::corrupt(
                "entry data past the end of the archive",
            )));
        }
        self.store.remove(&key);
        let mut sink = Sink::new(&self.store, key.clone(), usize);
        sink.capture = Some((off, off + len, Vec::new()));
        let mut dec = flate2::write::DeflateDecoder::new(sink);
        let h = Handle::default();
        let mut at = 0u64;
        while at < *csize {
            let b = self
                .raw(a, start + at, CHUNK.min(csize - at), Some(&h))
                .await?;
            at += b.len() as u64;
            if let Err(e) = cpu(|| dec.write_all(&b)) {
                let err = dec.get_mut().err.take();
                self.store.remove(&key);
                return Err(Fail::Bad(err.unwrap_or_else(|| {
                    crate::archive::corrupt(format!("inflate: {e}"))
                })));
            }
        }
        let r = cpu(|| dec.finish());
        let mut sink = match r {
            Ok(s) => s,
            Err(e) => {
                self.store.remove(&key);
                return Err(Fail::Bad(crate::archive::corrupt(format!("inflate: {e}"))));
            }
        };
        sink.finish();
        let got_crc = sink.crc.clone().finalize();
        if sink.total != usize || got_crc != *crc {
            self.store.remove(&key);
            return Err(Fail::Bad(crate::archive::corrupt(format!(
                "inflated {} bytes with CRC {got_crc:08x}; the archive says {usize} bytes, CRC {crc:08x}",
                sink.total
            ))));
        }
        self.store.mark_complete(&key, usize);
        Ok(Bytes::from(
            sink.capture.take().map(|c| c.2).unwrap_or_default(),
        ))
    }

    /// Reads `[off, off+len)` of a deflated entry too large to keep whole (no disk cache):
    /// from the blocks a recent read unpacked (in memory, evicted like any), else from a
    /// suspended inflate of that entry at or before `off`, else from the entry's start.
    /// Reads of one entry take turns, so the kernel's parallel read-ahead requests follow
    /// one another through one inflate instead of each starting its own.
    async fn read_deflated_stream(
        &self,
        a: &Archive,
        ix: u32,
        usize: u64,
        d: &Data,
        off: u64,
        len: u64,
    ) -> Result<Bytes, Fail> {
        let Data::Zip { csize, crc, .. } = d else {
            return Err(Fail::Bad(crate::archive::corrupt("not a zip entry")));
        };
        let key = format!("{}.zs{ix}", a.ckey);
        if let Some(b) = self.store.read(&key, usize, off, len) {
            return Ok(b);
        }
        let lock = self.inflight_lock(a, ix);
        let _g = lock.lock().await;
        if let Some(b) = self.store.read(&key, usize, off, len) {
            return Ok(b);
        }
        let start = self.zip_data(a, ix, d).await?;
        if start.checked_add(*csize).is_none_or(|e| e > a.meta.size) {
            return Err(Fail::Bad(crate::archive::corrupt(
                "entry data past the end of the archive",
            )));
        }
        let end = (off + len).min(usize);
        let found = {
            let mut cs = self.zip_cursors.lock().unwrap();
            // Just behind a cursor, in the block it is filling (read-ahead out of order).
            for c in cs.iter().filter(|c| c.id == a.id && c.ix == ix) {
                if let Some(s) = c.blk_at {
                    if s <= off && end <= s + c.blk.len() as u64 {
                        let (from, to) = ((off - s) as usize, (end - s) as usize);
                        return Ok(Bytes::copy_from_slice(&c.blk[from..to]));
                    }
                }
            }
            let best = cs
                .iter()
                .enumerate()
                .filter(|(_, c)| c.id == a.id && c.ix == ix && c.x.out() <= off)
                .max_by_key(|(_, c)| c.x.out())
                .map(|(i, _)| i);
            best.map(|i| cs.remove(i))
        };
        let mut cur = found.unwrap_or_else(|| ZipCursor {
            id: a.id,
            ix,
            x: EntryInflater::new(usize, *crc),
            h: Handle::default(),
            pending: Bytes::new(),
            blk: Vec::new(),
            blk_at: None,
        });
        let mut cap = Vec::with_capacity(len as usize);
        while cur.x.out() < end && !cur.x.is_done() {
            if cur.pending.is_empty() {
                let at = cur.x.consumed();
                if at >= *csize {
                    return Err(Fail::Bad(crate::archive::corrupt(
                        "the compressed data ends before the declared size",
                    )));
                }
                cur.pending = self
                    .raw(a, start + at, CHUNK.min(csize - at), Some(&cur.h))
                    .await?;
            }
            let ZipCursor {
                x,
                blk,
                blk_at,
                pending,
                ..
            } = &mut cur;
            let before = x.consumed();
            cpu(|| {
                x.feed(pending, end, &mut |o, d| {
                    let (from, to) = (off.max(o), end.min(o + d.len() as u64));
                    if from < to {
                        cap.extend_from_slice(&d[(from - o) as usize..(to - o) as usize]);
                    }
                    Cursor::absorb(blk, blk_at, &self.store, &key, usize, o, d);
                })
            })?;
            let took = (x.consumed() - before) as usize;
            *pending = pending.slice(took.min(pending.len())..);
        }
        if !cur.x.is_done() {
            let mut cs = self.zip_cursors.lock().unwrap();
            if cs.len() >= MAX_ZIP_CURSORS {
                cs.remove(0);
            }
            cs.push(cur);
        }
        Ok(Bytes::from(cap))
    }

    /// Reads `[off, off+len)` of a tar.gz's tar stream (`total` bytes): from the derived
    /// blocks, else by decompressing from the nearest access point (or suspended cursor).
    async fn read_gz(&self, a: &Archive, total: u64, off: u64, len: u64) -> Result<Bytes, Fail> {
        let key = format!("{}.gzb", a.ckey);
        if let Some(b) = self.store.read(&key, total, off, len) {
            return Ok(b);
        }
        let points = a
            .points
            .read()
            .unwrap()
            .clone()
            .ok_or_else(|| Fail::Bad(crate::archive::corrupt("no gzip access points")))?;
        let p = gzindex::point_for(&points, off)
            .ok_or_else(|| Fail::Bad(crate::archive::corrupt("no gzip access point")))?;
        let cur = {
            let mut cs = self.cursors.lock().unwrap();
            let best = cs
                .iter()
                .enumerate()
                .filter(|(_, (id, c))| *id == a.id && c.x.at() <= off && c.x.at() >= p.out)
                .max_by_key(|(_, (_, c))| c.x.at())
                .map(|(i, _)| i);
            best.map(|i| cs.remove(i).1)
        };
        let mut cur = match cur {
            Some(c) => c,
            None => Cursor {
                x: Extractor::new(p)?.until(total),
                h: Handle::default(),
                blk: Vec::new(),
                blk_at: None,
            },
        };
        let end = off + len;
        let mut cap = Vec::with_capacity(len as usize);
        let size = a.meta.size;
        while cur.x.at() < end {
            let at = cur.x.next_in();
            if at >= size {
                return Err(Fail::Bad(crate::archive::corrupt(
                    "the tar stream is shorter than its index says",
                )));
            }
            let b = self.raw(a, at, CHUNK.min(size - at), Some(&cur.h)).await?;
            let Cursor { x, blk, blk_at, .. } = &mut cur;
            cpu(|| {
                x.feed(&b, &mut |o, d| {
                    let (from, to) = (off.max(o), end.min(o + d.len() as u64));
                    if from < to {
                        cap.extend_from_slice(&d[(from - o) as usize..(to - o) as usize]);
                    }
                    Cursor::absorb(blk, blk_at, &self.store, &key, total, o, d);
                    Ok(())
                })
            })?;
        }
        let mut cs = self.cursors.lock().unwrap();
        if cs.len() >= MAX_CURSORS {
            cs.remove(0);
        }
        cs.push((a.id, cur));
        Ok(Bytes::from(cap))
    }
}
