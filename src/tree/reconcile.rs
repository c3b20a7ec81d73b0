//! [`Tree::reconcile`]: updating a mounted tree in place to a newer listing of a live build,
//! keeping the inode numbers the kernel already knows. Each listing is built into a fresh
//! tree with [`Tree::build`] (numbered from scratch) and the mounted tree brought to its shape:
//!
//! - A node whose path (from the root) exists in both trees with the same kind keeps its
//!   inode number; a file must also have the same artifact id, a log the same job id.
//!   Anything else (another artifact at the same path, a file that became a directory or the
//!   reverse, a path that changed) is a removal plus an addition. Surviving nodes take the new
//!   metadata and mtime.
//! - New nodes get numbers above [`Tree::max_ino`]: a removed node's number is never used
//!   again, since the kernel may still hold it (open files, cached lookups).
//! - [`TreeChanges`] says what to invalidate in the kernel.
//!
//! What users see of this is in `docs/SEMANTICS.md`, section "Consistency".

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::mem;

use super::{Ino, Node, NodeKind, Tree, ROOT_INO};

/// What [`Tree::reconcile`] changed, for invalidating the kernel's caches.
///
/// Every list is in a deterministic order (a walk of both trees in name order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeChanges {
    /// `(parent, name)` of every new entry, subtrees included (a directory before its
    /// children). `parent` is the final inode number of the parent.
    pub added: Vec<(Ino, String)>,
    /// `(parent, name, child)` of every entry gone, subtrees included, with the inode numbers
    /// they had. Within a removed subtree children come before their directory, so the list
    /// can be fed to the kernel's delete notification (which refuses non-empty directories)
    /// in order.
    pub removed: Vec<(Ino, String, Ino)>,
    /// Surviving directories whose set of children (names or their inodes) changed: their
    /// readdir results are stale. Directories that are new or gone are not listed.
    pub changed_dirs: Vec<Ino>,
    /// Surviving nodes whose attributes changed: mtime, file metadata (size, sha1, build
    /// number …), job metadata, or, for a directory, its number of subdirectories (its link
    /// count).
    pub changed_attrs: Vec<Ino>,
}

impl TreeChanges {
    /// True when the reconcile changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed_dirs.is_empty()
            && self.changed_attrs.is_empty()
    }
}

/// A pair of directories to merge: the surviving directory in `self`, the children of its
/// counterpart in the new tree, and whether its own metadata changed.
struct DirPair {
    ino: Ino,
    new_children: BTreeMap<String, Ino>,
    meta_changed: bool,
}

impl Tree {
    /// Updates `self` in place to the shape of `new` (a fresh [`Tree::build`] of a later
    /// listing), keeping the inode numbers of what survived, and reports what changed.
    ///
    /// Afterwards `self` has exactly `new`'s paths, names, kinds, metadata and times. A node
    /// keeps its inode number when its path exists in both trees with the same kind and, for
    /// files, the same artifact id; surviving directories take the new job metadata and
    /// mtime, surviving files the new [`FileMeta`](super::FileMeta) (so `build_number` comes
    /// from `new`: set it there first). Every other node of `new` gets a fresh number above
    /// [`Tree::max_ino`]; numbers of removed nodes are never given out again. The root stays
    /// [`ROOT_INO`].
    ///
    /// Runs in O(n log n) over both trees; `new` is consumed (its nodes are moved, not
    /// copied).
    pub fn reconcile(&mut self, mut new: Tree) -> TreeChanges {
        let mut changes = TreeChanges::default();
        let Some(new_root) = new.take_node(ROOT_INO) else {
            return changes;
        };
        let mut stack = vec![self.update_dir(ROOT_INO, new_root)];
        while let Some(pair) = stack.pop() {
            let mut subdirs = self.merge_dir(pair, &mut new, &mut changes);
            // Visit subdirectories in name order.
            subdirs.reverse();
            stack.extend(subdirs);
        }
        changes
    }

    /// Merges the children of one surviving directory; returns the surviving subdirectories
    /// still to merge, in name order.
    fn merge_dir(
        &mut self,
        pair: DirPair,
        new: &mut Tree,
        changes: &mut TreeChanges,
    ) -> Vec<DirPair> {
        let DirPair {
            ino: dir,
            new_children,
            meta_changed,
        } = pair;
        let old_children = mem::take(self.children_mut(dir));
        let old_subdirs = self.count_dirs(old_children.values());
        let mut merged = BTreeMap::new();
        let mut set_changed = false;
        let mut subdirs = Vec::new();
        for (name, old, new_ino) in merge_join(old_children, new_children) {
            match (old, new_ino) {
                (Some(o), Some(n)) => {
                    let node = new.take_node(n).expect("child of the new tree exists");
                    if self.same_identity(o, &node) {
                        merged.insert(name, o);
                        match node.kind {
                            NodeKind::Dir { .. } => subdirs.push(self.update_dir(o, node)),
                            NodeKind::File(_) | NodeKind::Log(_) => {
                                if self.update_file(o, node) {
                                    changes.changed_attrs.push(o);
                                }
                            }
                        }
                    } else {
                        self.prune(o, changes);
                        let ino = self.graft(dir, name.clone(), node, new, changes);
                        merged.insert(name, ino);
                        set_changed = true;
                    }
                }
                (Some(o), None) => {
                    self.prune(o, changes);
                    set_changed = true;
                }
                (None, Some(n)) => {
                    let node = new.take_node(n).expect("child of the new tree exists");
                    let ino = self.graft(dir, name.clone(), node, new, changes);
                    merged.insert(name, ino);
                    set_changed = true;
                }
                (None, None) => unreachable!("merge_join yields at least one side"),
            }
        }
        let new_subdirs = self.count_dirs(merged.values());
        *self.children_mut(dir) = merged;
        if set_changed {
            changes.changed_dirs.push(dir);
        }
        if meta_changed || old_subdirs != new_subdirs {
            changes.changed_attrs.push(dir);
        }
        subdirs
    }

    fn take_node(&mut self, ino: Ino) -> Option<Node> {
        self.nodes.get_mut(ino as usize)?.take()
    }

    fn count_dirs<'a>(&self, inos: impl Iterator<Item = &'a Ino>) -> usize {
        inos.filter(|&&i| self.get(i).is_some_and(Node::is_dir))
            .count()
    }

    /// Whether the old node `old` and the new `node` at the same path are the same inode.
    fn same_identity(&self, old: Ino, node: &Node) -> bool {
        match (&self.get(old).expect("old child exists").kind, &node.kind) {
            (NodeKind::Dir { .. }, NodeKind::Dir { .. }) => true,
            (NodeKind::File(a), NodeKind::File(b)) => a.artifact_id == b.artifact_id,
            (NodeKind::Log(a), NodeKind::Log(b)) => a.job_id == b.job_id,
            _ => false,
        }
    }

    /// Gives the surviving directory `ino` the metadata of its new counterpart `node`.
    fn update_dir(&mut self, ino: Ino, node: Node) -> DirPair {
        let NodeKind::Dir { children, job } = node.kind else {
            unreachable!("update_dir on a file");
        };
        let old = self.nodes[ino as usize]
            .as_mut()
            .expect("surviving directory exists");
        let NodeKind::Dir { job: old_job, .. } = &mut old.kind else {
            unreachable!("surviving directory is a directory");
        };
        let meta_changed = *old_job != job || old.mtime != node.mtime;
        *old_job = job;
        old.mtime = node.mtime;
        DirPair {
            ino,
            new_children: children,
            meta_changed,
        }
    }

    /// Gives the surviving file or log `ino` the metadata of its new counterpart `node` (of
    /// the same kind); true if anything changed.
    fn update_file(&mut self, ino: Ino, node: Node) -> bool {
        let old = self.nodes[ino as usize]
            .as_mut()
            .expect("surviving file exists");
        match (&mut old.kind, node.kind) {
            (NodeKind::File(old_meta), NodeKind::File(meta)) => {
                if *old_meta == meta && old.mtime == node.mtime {
                    return false;
                }
                self.total_size = self
                    .total_size
                    .saturating_sub(old_meta.size)
                    .saturating_add(meta.size);
                *old_meta = meta;
            }
            (NodeKind::Log(old_meta), NodeKind::Log(meta)) => {
                if *old_meta == meta && old.mtime == node.mtime {
                    return false;
                }
                *old_meta = meta;
            }
            _ => unreachable!("update_file on nodes of different kinds"),
        }
        old.mtime = node.mtime;
        true
    }

    /// Removes the subtree at `top`, whose parent's children map is being rebuilt by the
    /// caller, reporting every node children first.
    fn prune(&mut self, top: Ino, changes: &mut TreeChanges) {
        let mut preorder = Vec::new();
        let mut stack = vec![top];
        while let Some(ino) = stack.pop() {
            preorder.push(ino);
            if let Some(NodeKind::Dir { children, .. }) = self.get(ino).map(|n| &n.kind) {
                stack.extend(children.values().rev());
            }
        }
        // Reversed pre-order: every node after all of its descendants.
        for ino in preorder.into_iter().rev() {
            let node = self.take_node(ino).expect("pruned node exists");
            self.count -= 1;
            if let NodeKind::File(f) = &node.kind {
                self.total_size = self.total_size.saturating_sub(f.size);
            }
            changes.removed.push((node.parent, node.name, ino));
        }
    }

    /// Moves the subtree `node` of `new` under `parent` as `name` with fresh inode numbers,
    /// reporting every node parents first. The caller links the top into `parent`.
    fn graft(
        &mut self,
        parent: Ino,
        name: String,
        node: Node,
        new: &mut Tree,
        changes: &mut TreeChanges,
    ) -> Ino {
        let top = self.nodes.len() as Ino;
        let mut stack = vec![(parent, name, node)];
        while let Some((parent, name, mut node)) = stack.pop() {
            let ino = self.nodes.len() as Ino;
            match &mut node.kind {
                NodeKind::Dir { children, .. } => {
                    for (child_name, child) in mem::take(children).into_iter().rev() {
                        let c = new.take_node(child).expect("child of the new tree exists");
                        stack.push((ino, child_name, c));
                    }
                }
                NodeKind::File(f) => self.total_size = self.total_size.saturating_add(f.size),
                NodeKind::Log(_) => {}
            }
            changes.added.push((parent, name.clone()));
            if ino != top {
                self.children_mut(parent).insert(name.clone(), ino);
            }
            node.ino = ino;
            node.parent = parent;
            node.name = name;
            self.nodes.push(Some(node));
            self.count += 1;
        }
        top
    }
}

/// Walks two name-ordered maps together: `(name, old, new)` for every name in either.
fn merge_join(
    old: BTreeMap<String, Ino>,
    new: BTreeMap<String, Ino>,
) -> impl Iterator<Item = (String, Option<Ino>, Option<Ino>)> {
    struct Join<A: Iterator, B: Iterator> {
        a: Peekable<A>,
        b: Peekable<B>,
    }
    impl<A, B> Iterator for Join<A, B>
    where
        A: Iterator<Item = (String, Ino)>,
        B: Iterator<Item = (String, Ino)>,
    {
        type Item = (String, Option<Ino>, Option<Ino>);
        fn next(&mut self) -> Option<Self::Item> {
            let order = match (self.a.peek(), self.b.peek()) {
                (None, None) => return None,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((x, _)), Some((y, _))) => x.cmp(y),
            };
            Some(match order {
                std::cmp::Ordering::Less => {
                    let (n, i) = self.a.next()?;
                    (n, Some(i), None)
                }
                std::cmp::Ordering::Greater => {
                    let (n, i) = self.b.next()?;
                    (n, None, Some(i))
                }
                std::cmp::Ordering::Equal => {
                    let (n, i) = self.a.next()?;
                    let (_, j) = self.b.next()?;
                    (n, Some(i), Some(j))
                }
            })
        }
    }
    Join {
        a: old.into_iter().peekable(),
        b: new.into_iter().peekable(),
    }
}
