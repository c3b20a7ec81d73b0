//! Open files: the handles `open` gives out (an artifact's metadata and read state, or a job
//! log's), reads through them, and the artifacts deleted through this mount while open.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{is_archive_ino, split, Fs, FsError, Result};
use crate::content::{Handle, ReadError};
use crate::tree::{FileMeta, Ino, LogMeta, Node, NodeKind};

pub(super) struct OpenFile {
    pub(super) ino: Ino,
    pub(super) what: Opened,
}

pub(super) enum Opened {
    Artifact {
        meta: Arc<FileMeta>,
        handle: Arc<Handle>,
    },
    /// A job log. Reads take its metadata from the tree (it changes as the job finishes),
    /// or this copy once the tree no longer has it (a retry renamed it, the job vanished):
    /// an open file keeps reading its log.
    Log(LogMeta),
    /// An entry of an archive (`NAME#`); `OpenFile::ino` is the directory holding the
    /// archive, so that its build counts as having an open file. Reads go by inode.
    ArchiveEntry,
}

impl Fs {
    /// The file at `ino` as the tree has it now.
    pub(super) fn current_file(&self, ino: Ino) -> Result<Arc<FileMeta>> {
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
    pub(super) fn still_holds(&self, ino: Ino, id: &str) -> bool {
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
            let dir = self.archives.open(ino)?;
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            self.handles.lock().unwrap().insert(
                fh,
                OpenFile {
                    ino: dir,
                    what: Opened::ArchiveEntry,
                },
            );
            return Ok(fh);
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

    /// Closes a file. The last handle of an artifact deleted through this mount takes it out
    /// of the deleted set (which so holds only artifacts still open).
    pub fn release(&self, fh: u64) {
        let mut handles = self.handles.lock().unwrap();
        let Some(OpenFile {
            what: Opened::Artifact { meta, .. },
            ..
        }) = handles.remove(&fh)
        else {
            return;
        };
        let mut deleted = self.deleted.lock().unwrap();
        if deleted.contains(&meta.artifact_id) && !Self::is_open(&handles, &meta.artifact_id) {
            deleted.remove(&meta.artifact_id);
        }
    }

    pub(super) fn is_open(handles: &HashMap<u64, OpenFile>, artifact_id: &str) -> bool {
        handles.values().any(
            |o| matches!(&o.what, Opened::Artifact { meta, .. } if meta.artifact_id == artifact_id),
        )
    }

    /// How many deleted artifacts are remembered (open ones only; for tests).
    pub fn deleted_open(&self) -> usize {
        self.deleted.lock().unwrap().len()
    }

    /// How many directories' prefetch windows are remembered (for tests).
    pub fn dir_windows(&self) -> usize {
        self.dir_seq.lock().unwrap().len()
    }

    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        if is_archive_ino(ino) {
            let r = self.archives.read(ino, offset, size).await;
            if matches!(r, Err(FsError::Io(_))) {
                // Pages of an entry that then failed its checks (a streamed inflate's CRC)
                // may be in the kernel's cache: drop them, so every read fails alike.
                if let Some(k) = self.kernel.get() {
                    k.inval_inode(ino);
                }
            }
            return r;
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
            Some(Opened::ArchiveEntry) | None => None,
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
}
