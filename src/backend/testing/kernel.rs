//! A [`KernelCache`] that records every invalidation, in order.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::backend::KernelCache;
use crate::tree::Ino;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Inval {
    Entry(Ino, String),
    Inode(Ino),
}

/// A [`KernelCache`] that records every invalidation, in order.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Inval>>);

impl Recorder {
    pub fn events(&self) -> Vec<Inval> {
        self.0.lock().unwrap().clone()
    }

    /// The events so far, forgetting them.
    pub fn take(&self) -> Vec<Inval> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    pub fn entries(&self) -> BTreeSet<(Ino, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Inval::Entry(p, n) => Some((p, n)),
                Inval::Inode(_) => None,
            })
            .collect()
    }

    pub fn inodes(&self) -> BTreeSet<Ino> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Inval::Inode(i) => Some(i),
                Inval::Entry(..) => None,
            })
            .collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

impl KernelCache for Recorder {
    fn inval_entry(&self, parent: Ino, name: &str) {
        self.0
            .lock()
            .unwrap()
            .push(Inval::Entry(parent, name.to_string()));
    }

    fn inval_inode(&self, ino: Ino) {
        self.0.lock().unwrap().push(Inval::Inode(ino));
    }
}
