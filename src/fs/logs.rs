//! Job logs in the filesystem: which nodes are logs, opening (fetch first), reads, `rm`, and
//! what a failure of the log store means for the tree. The store itself is
//! [`crate::joblog::LogStore`].

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{delete_outcome, global, split, Attr, Fs, FsError, OpenFile, Opened, Result, Slot};
use crate::joblog::LogError;
use crate::tree::{Ino, LogMeta, Node};

impl Fs {
    /// The job log at `ino` as the tree has it now; `None` when `ino` is no log.
    fn current_log(&self, ino: Ino) -> Option<LogMeta> {
        if self.is_pipeline_ns(ino) {
            return None;
        }
        let (s, local) = split(ino);
        self.in_tree(s, |t| Ok(t.get(local).and_then(Node::log).cloned()))?
            .ok()
            .flatten()
    }

    /// Whether `ino` is a job log (its `open` needs [`Fs::open_log`]).
    pub fn is_log(&self, ino: Ino) -> bool {
        self.current_log(ino).is_some()
    }

    /// Opens a job log: fetches it first unless it is known (the kernel waits for this, so
    /// that `fstat` after `open` shows its real size). The result's `volatile` says whether
    /// the size may still change.
    pub async fn open_log(&self, ino: Ino, flags: i32) -> Result<(u64, Attr)> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return Err(FsError::ReadOnly("files cannot be opened for writing"));
        }
        let (meta, store) = match (self.current_log(ino), self.logs.as_ref()) {
            (Some(m), Some(s)) => (m, s),
            _ => return Err(FsError::NotFound),
        };
        self.prefetch_siblings(ino);
        match store.open(&meta).await {
            Ok(_) => {}
            Err(e) => return Err(self.log_error(ino, &meta, e)),
        }
        let attr = self.getattr(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(
            fh,
            OpenFile {
                ino,
                what: Opened::Log(meta),
            },
        );
        Ok((fh, attr))
    }

    /// Maps a log failure; a log that is gone leaves the tree (and the kernel's cache).
    fn log_error(&self, ino: Ino, meta: &LogMeta, e: LogError) -> FsError {
        match e {
            LogError::NotFound => {
                let (s, local) = split(ino);
                let removed = self.slot(s).and_then(|slot| {
                    let mut g = slot.tree.write().unwrap();
                    let t = g.as_mut()?;
                    let parent = t.get(local)?.parent;
                    t.remove_file(local).map(|n| (parent, n.name))
                });
                if let (Some((parent, name)), Some(k)) = (removed, self.kernel.get()) {
                    k.inval_entry(global(s, parent), &name);
                }
                FsError::NotFound
            }
            LogError::Access(m) => {
                tracing::warn!(job = %meta.job_id, message = %m, "reading the job's log was refused");
                FsError::Access(m)
            }
            LogError::Io(m) => {
                tracing::error!(job = %meta.job_id, error = %m, "cannot read the job's log");
                FsError::Io(m)
            }
        }
    }

    pub(super) async fn read_log(
        &self,
        ino: Ino,
        opened: LogMeta,
        offset: u64,
        size: u32,
    ) -> Result<Bytes> {
        let store = self.logs.as_ref().ok_or(FsError::NotFound)?;
        let meta = self
            .current_log(ino)
            .filter(|m| m.job_id == opened.job_id)
            .unwrap_or(opened);
        store
            .read(&meta, offset, size)
            .await
            .map_err(|e| self.log_error(ino, &meta, e))
    }

    /// `rm` of a job log: `DELETE .../log`.
    pub(super) async fn unlink_log(&self, slot: &Slot, local: Ino, meta: LogMeta) -> Result<()> {
        let store = self.logs.as_ref().ok_or(FsError::NotFound)?;
        delete_outcome(
            store.delete(&meta).await,
            &format!("log of job {}", meta.job_id),
        )?;
        if let Some(t) = slot.tree.write().unwrap().as_mut() {
            t.remove_file(local);
        }
        tracing::info!(job = %meta.job_id, "deleted the job's log");
        Ok(())
    }
}
