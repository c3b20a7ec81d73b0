//! The `fuser::Filesystem` adapter: decode a request, call [`crate::fs::Fs`], reply. Thin on
//! purpose: no HTTP, no parsing, no policy.
//!
//! Reads and unlinks run as tokio tasks that reply when done, so a slow download never
//! blocks `ls` or another file's read: the fuser thread only dispatches.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::backend::KernelCache;
use crate::fs::{Attr, DirEntry, Fs, FsError, Kind};

/// Artifacts never change once finished, so the kernel may cache names and attributes for
/// long: deletes made through this mount are reflected by the kernel itself, and a live
/// build's refreshes invalidate what changed (see [`KernelNotifier`]).
const TTL: Duration = Duration::from_secs(3600);

/// A finished build never changes (deletes through this mount tell the kernel themselves):
/// its names and attributes are cached for good.
const TTL_SETTLED: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long the kernel may keep an entry and its attributes: for good in a finished build,
/// [`TTL`] elsewhere, and not at all for a size that may still change (a job log not fetched
/// yet, or a running job's).
fn ttl(fs: &Fs, a: &Attr) -> Duration {
    if a.volatile {
        Duration::ZERO
    } else if fs.settled(a.ino) {
        TTL_SETTLED
    } else {
        TTL
    }
}

pub struct FuseFs {
    fs: Arc<Fs>,
    rt: tokio::runtime::Handle,
    /// Dropped with the adapter, i.e. when the session has ended (fuser drops the filesystem
    /// then): tells the mounter without joining fuser's thread (see `mount::serve`).
    _ended: Option<tokio::sync::oneshot::Sender<()>>,
    /// FUSE passthrough of verified cache files (see [`crate::passthrough`]).
    passthrough: crate::passthrough::Passthrough,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>, rt: tokio::runtime::Handle) -> FuseFs {
        FuseFs {
            fs,
            rt,
            _ended: None,
            passthrough: Default::default(),
        }
    }

    /// `ended` is dropped (its receiver wakes up) when the session ends.
    pub fn signal_end(mut self, ended: tokio::sync::oneshot::Sender<()>) -> FuseFs {
        self._ended = Some(ended);
        self
    }

    /// An inode of an evicted build (`fs::slots`) is listed again before a request that
    /// answers from memory. The usual way back in is a lookup or readdir, which lists in a
    /// task; this covers inodes the kernel resolved before the eviction, and blocks this
    /// fuser thread for that one listing.
    fn resident(&self, ino: INodeNo) {
        if self.fs.is_evicted(ino.0) {
            let fs = self.fs.clone();
            let _ = self.rt.block_on(async move { fs.reload(ino.0).await });
        }
    }

    /// Answers at once when the core could answer from memory (`now`); otherwise (a build
    /// not listed yet, a pipeline root due for a refresh) runs `later` as a tokio task that
    /// answers when done, so the fuser thread never waits on the network.
    fn now_or_later<T, R, Fut>(
        &self,
        now: Option<T>,
        reply: R,
        later: impl FnOnce(Arc<Fs>) -> Fut,
        answer: impl FnOnce(T, R) + Send + 'static,
    ) where
        T: Send + 'static,
        R: Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
    {
        match now {
            Some(r) => answer(r, reply),
            None => {
                let fut = later(self.fs.clone());
                self.rt.spawn(async move { answer(fut.await, reply) });
            }
        }
    }
}

/// Kernel cache invalidations through fuser's notifier, sent from a thread of their own: the
/// kernel may block a notification until a request on the same directory or file is
/// answered, and that must never hold up a tokio worker that answers requests.
pub struct KernelNotifier(std::sync::mpsc::Sender<Inval>);

enum Inval {
    Entry(u64, String),
    Inode(u64),
}

impl KernelNotifier {
    pub fn new(n: fuser::Notifier) -> std::io::Result<KernelNotifier> {
        let (tx, rx) = std::sync::mpsc::channel::<Inval>();
        std::thread::Builder::new()
            .name("bkfs-notify".into())
            .spawn(move || {
                for m in rx {
                    // ENOENT just means the kernel had nothing cached for it.
                    let r = match &m {
                        Inval::Entry(parent, name) => {
                            n.inval_entry(INodeNo(*parent), OsStr::new(name))
                        }
                        Inval::Inode(ino) => n.inval_inode(INodeNo(*ino), 0, 0),
                    };
                    if let Err(e) = r {
                        tracing::trace!(error = %e, "kernel invalidation");
                    }
                }
            })?;
        Ok(KernelNotifier(tx))
    }
}

impl KernelCache for KernelNotifier {
    fn inval_entry(&self, parent: u64, name: &str) {
        let _ = self.0.send(Inval::Entry(parent, name.to_string()));
    }

    fn inval_inode(&self, ino: u64) {
        let _ = self.0.send(Inval::Inode(ino));
    }
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn kind(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

const EROFS: Errno = Errno::EROFS;

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // As much kernel readahead as allowed: sequential readers then ask for big chunks.
        if let Err(max) = config.set_max_readahead(16 << 20) {
            let _ = config.set_max_readahead(max);
        }
        // Requests of up to 1 MiB (FUSE_MAX_PAGES is asked for by fuser; the kernel caps a
        // request at 256 pages), and enough of them in the background for that readahead.
        let _ = config.set_max_write(1 << 20);
        // (16 replies of at most 1 MiB each in flight: bounded memory outside the budget.)
        let _ = config.set_max_background(16);
        let _ = config.set_congestion_threshold(12);
        // Passthrough of verified cache files: backing files may sit on a stacked fs.
        let pt = self.passthrough.wanted()
            && config.set_max_stack_depth(2).is_ok()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok();
        if !pt {
            let _ = config.set_max_stack_depth(0);
        }
        self.passthrough.negotiated(pt);
        // Directory listings carry attributes, so `ls -l`/`ls -lR` need no lookup per entry.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
        // Lookups and listings of one directory may run at once. Without this the kernel
        // serializes them per directory, so a slow lookup (the first `NAME#`, which waits
        // for the archive's index) would hold up every lookup and `ls` beside it.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let fs = self.fs.clone();
        let answer = move |r: Result<Attr, FsError>, reply: ReplyEntry| match r {
            Ok(a) => reply.entry(&ttl(&fs, &a), &file_attr(&a), Generation(0)),
            Err(e) => reply.error(errno(&e)),
        };
        let cached = self.fs.lookup_cached(parent.0, name);
        let later = |fs: Arc<Fs>| {
            let name = name.to_owned();
            async move { fs.lookup(parent.0, &name).await }
        };
        self.now_or_later(cached, reply, later, answer);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let answer = move |r: Result<String, FsError>, reply: ReplyData| match r {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        };
        let cached = self.fs.readlink_cached(ino.0);
        let later = move |fs: Arc<Fs>| async move { fs.readlink(ino.0).await };
        self.now_or_later(cached, reply, later, answer);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.resident(ino);
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&ttl(&self.fs, &a), &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(EROFS);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.resident(parent);
        let fs = self.fs.clone();
        let name = name.to_owned();
        self.rt.spawn(async move {
            match fs.unlink(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.resident(parent);
        match self.fs.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(EROFS);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.resident(ino);
        if self.fs.is_log(ino.0) {
            // A job log is fetched before open answers, so fstat shows its size. One whose
            // size may still change is read with direct I/O: never cut at a size the kernel
            // remembers.
            let fs = self.fs.clone();
            self.rt.spawn(async move {
                match fs.open_log(ino.0, flags.0).await {
                    Ok((fh, a)) if a.volatile => {
                        reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO)
                    }
                    Ok((fh, _)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                    Err(e) => reply.error(errno(&e)),
                }
            });
            return;
        }
        // open may start background prefetches.
        let _rt = self.rt.enter();
        let how = if self.passthrough.wanted() && flags.0 & libc::O_ACCMODE == libc::O_RDONLY {
            let backing = self.fs.backing_path(ino.0);
            let direct = flags.0 & libc::O_DIRECT != 0;
            self.passthrough
                .open(ino.0, backing.as_deref(), direct, &reply)
        } else {
            crate::passthrough::Open::Cached
        };
        match (self.fs.open(ino.0, flags.0), how) {
            (Ok(fh), crate::passthrough::Open::Backing(id)) => {
                self.passthrough.opened(ino.0, fh, true);
                // O_DIRECT: the reads come to the daemon, which takes any alignment (see
                // crate::passthrough).
                let how = if flags.0 & libc::O_DIRECT != 0 {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::empty()
                };
                reply.opened_passthrough(FileHandle(fh), how, &id);
            }
            // Artifacts are immutable: keep the page cache across opens.
            (Ok(fh), crate::passthrough::Open::Cached) => {
                self.passthrough.opened(ino.0, fh, false);
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
            }
            (Err(e), _) => {
                self.passthrough.abandon(ino.0);
                reply.error(errno(&e))
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        self.rt.spawn(async move {
            match fs.read(ino.0, fh.0, offset, size).await {
                Ok(b) => reply.data(&b),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(EROFS);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        self.passthrough.released(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.resident(ino);
        match self.fs.opendir(ino.0) {
            Ok(fh) => {
                let flags = if self.fs.dir_cacheable(ino.0) && self.fs.settled(ino.0) {
                    // A finished build's listing never changes: keep it across opens too.
                    FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
                } else if self.fs.dir_cacheable(ino.0) {
                    FopenFlags::FOPEN_CACHE_DIR
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), flags)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let answer =
            move |r: Result<Arc<Vec<DirEntry>>, FsError>, mut reply: ReplyDirectory| match r {
                Ok(entries) => {
                    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                        if reply.add(INodeNo(e.ino), (i + 1) as u64, kind(e.kind), &e.name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno(&e)),
            };
        let cached = self.fs.listing_cached(ino.0, fh.0, offset);
        let later = move |fs: Arc<Fs>| async move { fs.listing(ino.0, fh.0, offset).await };
        self.now_or_later(cached, reply, later, answer);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let fs = self.fs.clone();
        let answer = move |r: Result<Arc<Vec<DirEntry>>, FsError>,
                           mut reply: ReplyDirectoryPlus| {
            match r {
                Ok(entries) => {
                    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                        // An entry that vanished since the listing was taken is skipped.
                        let Ok(a) = fs.getattr(e.ino) else {
                            continue;
                        };
                        let full = reply.add(
                            INodeNo(e.ino),
                            (i + 1) as u64,
                            &e.name,
                            &ttl(&fs, &a),
                            &file_attr(&a),
                            Generation(0),
                        );
                        if full {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno(&e)),
            }
        };
        let cached = self.fs.listing_cached(ino.0, fh.0, offset);
        let later = move |fs: Arc<Fs>| async move { fs.listing(ino.0, fh.0, offset).await };
        self.now_or_later(cached, reply, later, answer);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(s.blocks, 0, 0, s.files, 0, s.bsize, s.namelen, s.bsize);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(EROFS);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.resident(ino);
        match self.fs.getxattr(ino.0, name) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.resident(ino);
        match self.fs.xattrs(ino.0) {
            Ok(list) => {
                let mut buf = Vec::new();
                for (k, _) in list {
                    buf.extend_from_slice(k.as_bytes());
                    buf.push(0);
                }
                xattr_reply(reply, size, &buf)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(EROFS);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        self.resident(ino);
        match self.fs.getattr(ino.0) {
            Ok(a) => {
                let node = crate::access::Node {
                    perm: a.perm,
                    uid: a.uid,
                    gid: a.gid,
                    dir: a.kind == Kind::Dir,
                };
                let who = crate::access::Caller {
                    uid: req.uid(),
                    gid: req.gid(),
                };
                match crate::access::check(&node, who, mask.bits(), self.fs.deletes_allowed()) {
                    Ok(()) => reply.ok(),
                    Err(e) => reply.error(Errno::from_i32(e)),
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// No ioctls: "not a terminal" (what every `isatty` probe wants to hear), no log line.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    /// Files are always readable, never writable, as for a regular file on a local disk.
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        let ready = fuser::PollEvents::POLLIN | fuser::PollEvents::POLLRDNORM;
        reply.poll(events & ready);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(EROFS);
    }

    /// SEEK_DATA / SEEK_HOLE (the kernel handles the other whences): files have no holes.
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.resident(ino);
        let size = match self.fs.getattr(ino.0) {
            Ok(a) => a.size as i64,
            Err(e) => return reply.error(errno(&e)),
        };
        match whence {
            libc::SEEK_DATA if offset >= 0 && offset < size => reply.offset(offset),
            libc::SEEK_HOLE if offset >= 0 && offset < size => reply.offset(size),
            libc::SEEK_DATA | libc::SEEK_HOLE => reply.error(Errno::ENXIO),
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(EROFS);
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; too small a buffer is ERANGE.
fn xattr_reply(reply: ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if (size as usize) < v.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(v);
    }
}
