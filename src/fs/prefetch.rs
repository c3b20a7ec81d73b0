//! Directory-sequential prefetch of small siblings (artifacts and job logs).

use std::sync::Arc;

use super::{global, split, Fs, SIBLING_WINDOW_MAX};
use crate::content::reader::WHOLE_FILE_MAX;
use crate::tree::{FileMeta, Ino, LogMeta, NodeKind};

impl Fs {
    /// Directory-sequential prefetch: when files of one directory are opened in name order
    /// (as `grep -r`, `cp -r`, `grep PATTERN *.log` and `find -exec` do), fetch the next few
    /// small files (and job logs) ahead, in a window that starts at the second in-order open
    /// and doubles up to [`SIBLING_WINDOW_MAX`]. An open out of order resets it.
    /// Must be called within the tokio runtime (the adapter enters it).
    pub(super) fn prefetch_siblings(&self, ino: Ino) {
        let (s, local) = split(ino);
        let Some(slot) = self.slot(s) else {
            return;
        };
        let guard = slot.tree.read().unwrap();
        let Some(tree) = guard.as_ref() else {
            return;
        };
        let Some(node) = tree.get(local) else {
            return;
        };
        let (parent, name) = (node.parent, node.name.clone());
        let window = {
            let mut seq = self.dir_seq.lock().unwrap();
            // The first open in a directory prefetches nothing (it may be the only one);
            // each following open in name order doubles the window.
            let key = global(s, parent);
            let w = match seq.get(&key) {
                Some((last, w)) if name > *last => (w * 2).clamp(1, SIBLING_WINDOW_MAX),
                _ => 0,
            };
            seq.put(key, (name.clone(), w));
            w
        };
        if window == 0 {
            return;
        }
        let Some(NodeKind::Dir { children, .. }) = tree.get(parent).map(|p| &p.kind) else {
            return;
        };
        use std::ops::Bound::{Excluded, Unbounded};
        enum Next {
            File(Arc<FileMeta>),
            Log(LogMeta),
        }
        let next: Vec<Next> = children
            .range::<String, _>((Excluded(&name), Unbounded))
            .filter_map(|(_, i)| match tree.get(*i).map(|n| &n.kind) {
                Some(NodeKind::File(f)) if f.size > 0 && f.size <= WHOLE_FILE_MAX => {
                    Some(Next::File(Arc::new(f.clone())))
                }
                Some(NodeKind::Log(l)) if self.logs.is_some() => Some(Next::Log(l.clone())),
                _ => None,
            })
            .take(window)
            .collect();
        drop(guard);
        for n in next {
            match n {
                Next::File(m) => self.reader.prefetch_whole(&m),
                Next::Log(m) => {
                    if let Some(store) = &self.logs {
                        store.prefetch(&m);
                    }
                }
            }
        }
    }
}
