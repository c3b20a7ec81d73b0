//! The inode table: a build's jobs, artifacts and job logs as a directory tree.
//!
//! Pure data: no I/O, no async, no FUSE types. [`Tree::build`] turns the build (with its jobs)
//! and the artifact list into nodes; the filesystem layer reads it, removes entries after a
//! successful delete, and, for a live build, updates it with [`Tree::reconcile`]. The same
//! input always gives the same tree, with the same inode numbers, whatever the order of the
//! artifact list: the root is [`ROOT_INO`], the rest are numbered in depth-first pre-order,
//! children visited in name (byte) order.
//!
//! The rules this module implements (layout, times, job directory names, artifact path
//! sanitizing and collisions, job log names) are in `docs/SEMANTICS.md`, section "Contents of
//! the tree"; what a live build's refresh keeps is in its section "Consistency", and the
//! reconcile rules in `reconcile.rs`. [`naming`] holds the string functions.
//!
//! Times and names must be computed the same way for every listing: pass the same fallback
//! time, and set [`Tree::set_build_number`] on the new tree before reconciling (the number is
//! taken from it), or every node is reported as changed. The node table only grows: removed
//! nodes leave empty slots, and their numbers are never given out again ([`Tree::max_ino`]).

pub mod naming;
mod reconcile;
mod time;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use crate::api::model::{Artifact, Build, Job};

pub use naming::{
    escape_name, job_base_name, name_jobs, path_components, sanitize_component, slugify, NAME_MAX,
    UNKNOWN_JOB_DIR,
};
pub use reconcile::TreeChanges;
pub use time::parse_time;

/// Inode number of the mount root.
pub const ROOT_INO: u64 = 1;

/// An inode number.
pub type Ino = u64;

/// What the filesystem needs to know about one artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub artifact_id: String,
    /// Empty when the artifact has no job id (it lives under `unknown-job`).
    pub job_id: String,
    pub size: u64,
    pub sha1sum: Option<String>,
    pub mime_type: Option<String>,
    pub state: Option<String>,
    /// The artifact's path as uploaded (its `path`, else its `filename`, else empty).
    pub original_path: String,
    /// The number of the build the artifact belongs to: 0 from [`Tree::build`], set with
    /// [`Tree::set_build_number`] (a pipeline mount holds several builds).
    pub build_number: u64,
}

/// What a job directory knows about its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMeta {
    /// Empty for `unknown-job`.
    pub job_id: String,
    pub label: Option<String>,
    pub web_url: Option<String>,
}

/// What a job log file (`<job-dir>.log` at the build root) knows about its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMeta {
    pub job_id: String,
    pub label: Option<String>,
    pub web_url: Option<String>,
    /// The job has finished, so its log no longer changes.
    pub finished: bool,
    /// As in [`FileMeta::build_number`].
    pub build_number: u64,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Dir {
        children: BTreeMap<String, Ino>,
        /// Some on job directories (the direct children of the root).
        job: Option<JobMeta>,
    },
    File(FileMeta),
    /// A job's log, beside the job directories.
    Log(LogMeta),
}

#[derive(Debug, Clone)]
pub struct Node {
    pub ino: Ino,
    /// The root is its own parent.
    pub parent: Ino,
    /// Empty for the root.
    pub name: String,
    pub kind: NodeKind,
    pub mtime: SystemTime,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir { .. })
    }

    pub fn file(&self) -> Option<&FileMeta> {
        match &self.kind {
            NodeKind::File(f) => Some(f),
            _ => None,
        }
    }

    pub fn log(&self) -> Option<&LogMeta> {
        match &self.kind {
            NodeKind::Log(l) => Some(l),
            _ => None,
        }
    }
}

/// Why [`Tree::remove_dir`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDir,
    #[error("directory not empty")]
    NotEmpty,
}

/// The inode table.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Indexed by inode number; slot 0 is unused, removed nodes leave `None`.
    nodes: Vec<Option<Node>>,
    count: usize,
    total_size: u64,
}

/// The time of a job: its `finished_at`, else the build's `finished_at`, else the build's
/// `created_at`, else `fallback`.
fn job_time(job: Option<&Job>, build: Option<&Build>, fallback: SystemTime) -> SystemTime {
    job.and_then(|j| j.finished_at.as_deref())
        .and_then(parse_time)
        .unwrap_or_else(|| build_time(build, fallback))
}

fn build_time(build: Option<&Build>, fallback: SystemTime) -> SystemTime {
    build
        .and_then(|b| {
            b.finished_at
                .as_deref()
                .and_then(parse_time)
                .or_else(|| b.created_at.as_deref().and_then(parse_time))
        })
        .unwrap_or(fallback)
}

/// A total order over artifacts (every field), so that sorting makes the input order
/// irrelevant even for duplicates.
#[allow(clippy::type_complexity)]
fn artifact_key(
    a: &Artifact,
) -> (
    (&str, &Option<String>, &Option<String>, &Option<String>),
    (
        &Option<String>,
        &Option<String>,
        &Option<String>,
        &Option<String>,
    ),
    (
        &Option<String>,
        &Option<u64>,
        &Option<String>,
        &Option<String>,
    ),
    &Option<String>,
) {
    (
        (&a.id, &a.path, &a.filename, &a.job_id),
        (&a.url, &a.download_url, &a.state, &a.dirname),
        (&a.mime_type, &a.file_size, &a.sha1sum, &a.glob_path),
        &a.original_path,
    )
}

/// The job key of an artifact: its job id, `None` when missing or empty.
fn job_key(a: &Artifact) -> Option<&str> {
    a.job_id.as_deref().filter(|s| !s.is_empty())
}

impl Tree {
    fn empty(root_mtime: SystemTime) -> Tree {
        let root = Node {
            ino: ROOT_INO,
            parent: ROOT_INO,
            name: String::new(),
            kind: NodeKind::Dir {
                children: BTreeMap::new(),
                job: None,
            },
            mtime: root_mtime,
        };
        Tree {
            nodes: vec![None, Some(root)],
            count: 1,
            total_size: 0,
        }
    }

    fn children_mut(&mut self, ino: Ino) -> &mut BTreeMap<String, Ino> {
        match self.nodes[ino as usize].as_mut().map(|n| &mut n.kind) {
            Some(NodeKind::Dir { children, .. }) => children,
            _ => unreachable!("inode {ino} is not a directory"),
        }
    }

    /// Adds a node under `parent`, whose `children` must not hold `name` yet.
    fn add(&mut self, parent: Ino, name: String, kind: NodeKind, mtime: SystemTime) -> Ino {
        let ino = self.nodes.len() as Ino;
        let prev = self.children_mut(parent).insert(name.clone(), ino);
        debug_assert!(prev.is_none(), "duplicate name {name:?}");
        if let NodeKind::File(f) = &kind {
            self.total_size = self.total_size.saturating_add(f.size);
        }
        self.nodes.push(Some(Node {
            ino,
            parent,
            name,
            kind,
            mtime,
        }));
        self.count += 1;
        ino
    }

    /// The directory `name` under `parent`, created if missing. Only called while the tree
    /// holds directories only (below the root).
    fn ensure_dir(&mut self, parent: Ino, name: &str, mtime: SystemTime) -> Ino {
        if let Some(&ino) = self.children_mut(parent).get(name) {
            return ino;
        }
        let kind = NodeKind::Dir {
            children: BTreeMap::new(),
            job: None,
        };
        self.add(parent, name.to_string(), kind, mtime)
    }

    /// Builds the tree. `build` is `None` when the token cannot read the build (403 on
    /// `read_builds`): then job directories are named by job id and times fall back to
    /// `fallback_mtime`. The rules are in `docs/SEMANTICS.md`, "Contents of the tree".
    pub fn build(
        build: Option<&Build>,
        artifacts: &[Artifact],
        fallback_mtime: SystemTime,
    ) -> Tree {
        Tree::build_with(build, artifacts, fallback_mtime, false)
    }

    /// [`Tree::build`], with a `<job-dir>.log` file for every job that has a log when `logs`
    /// is set (see "Job logs" in `docs/SEMANTICS.md`).
    pub fn build_with(
        build: Option<&Build>,
        artifacts: &[Artifact],
        fallback_mtime: SystemTime,
        logs: bool,
    ) -> Tree {
        let mut finished: Vec<&Artifact> = artifacts.iter().filter(|a| a.is_finished()).collect();
        finished.sort_by(|a, b| {
            (job_key(a), a.path.as_deref(), artifact_key(a)).cmp(&(
                job_key(b),
                b.path.as_deref(),
                artifact_key(b),
            ))
        });

        // Job directory names.
        let mut jobs_by_id: HashMap<&str, &Job> = HashMap::new();
        let mut build_names: HashMap<String, String> = HashMap::new();
        if let Some(b) = build {
            for j in &b.jobs {
                jobs_by_id.entry(j.id.as_str()).or_insert(j);
            }
            build_names.extend(name_jobs(&b.jobs));
        }
        let reserved: BTreeSet<String> = build_names.values().cloned().collect();
        let mut keys: Vec<Option<&str>> = finished.iter().map(|a| job_key(a)).collect();
        keys.dedup();
        // `None` sorts first; extras are named in id order with `unknown-job` last.
        let (named, mut extras): (Vec<Option<&str>>, Vec<Option<&str>>) = keys
            .into_iter()
            .partition(|k| k.is_some_and(|id| build_names.contains_key(id)));
        let unknown_first = usize::from(extras.first() == Some(&None));
        extras.rotate_left(unknown_first);
        let extra_names = naming::make_unique(
            extras
                .iter()
                .map(|k| k.map_or_else(|| UNKNOWN_JOB_DIR.to_string(), escape_name))
                .collect(),
            &reserved,
        );
        let mut dir_names: HashMap<Option<&str>, String> =
            extras.into_iter().zip(extra_names).collect();
        for k in named {
            let id = k.expect("named keys are ids");
            dir_names.insert(k, build_names[id].clone());
        }

        let mut tree = Tree::empty(build_time(build, fallback_mtime));

        // Job directories and, for each artifact, its directory and wanted leaf name.
        let mut job_dirs: HashMap<Option<&str>, (Ino, SystemTime)> = HashMap::new();
        let mut sorted_keys: Vec<(&String, Option<&str>)> =
            dir_names.iter().map(|(k, n)| (n, *k)).collect();
        sorted_keys.sort();
        for (name, key) in sorted_keys {
            let job = key.and_then(|id| jobs_by_id.get(id).copied());
            let mtime = job_time(job, build, fallback_mtime);
            let meta = JobMeta {
                job_id: key.unwrap_or_default().to_string(),
                label: job.and_then(|j| j.name.clone()),
                web_url: job.and_then(|j| j.web_url.clone()),
            };
            let kind = NodeKind::Dir {
                children: BTreeMap::new(),
                job: Some(meta),
            };
            let ino = tree.add(ROOT_INO, name.clone(), kind, mtime);
            job_dirs.insert(key, (ino, mtime));
        }

        let mut placements: Vec<(Ino, String, &Artifact, SystemTime)> = Vec::new();
        for a in &finished {
            let (mut dir, mtime) = job_dirs[&job_key(a)];
            let mut comps = path_components(a.path.as_deref().unwrap_or(""));
            let leaf = match comps.pop() {
                Some(leaf) => leaf,
                None => naming::fallback_file_name(a.filename.as_deref(), &a.id),
            };
            for c in &comps {
                dir = tree.ensure_dir(dir, c, mtime);
            }
            placements.push((dir, leaf, a, mtime));
        }

        // Files: wanted names first (smallest artifact id wins), then renamed ones.
        placements
            .sort_by(|x, y| (x.0, &x.1, artifact_key(x.2)).cmp(&(y.0, &y.1, artifact_key(y.2))));
        let mut pending = Vec::new();
        for (i, (dir, leaf, a, mtime)) in placements.iter().enumerate() {
            let first_of_group = i == 0 || {
                let prev = &placements[i - 1];
                prev.0 != *dir || prev.1 != *leaf
            };
            if first_of_group && !tree.children_mut(*dir).contains_key(leaf) {
                tree.add(*dir, leaf.clone(), NodeKind::File(file_meta(a)), *mtime);
            } else {
                pending.push(i);
            }
        }
        for i in pending {
            let (dir, leaf, a, mtime) = &placements[i];
            let mut k = 0;
            let name = loop {
                let cand = naming::with_tag(leaf, &naming::rename_tag(&a.id, k));
                if !tree.children_mut(*dir).contains_key(&cand) {
                    break cand;
                }
                k += 1;
            };
            tree.add(*dir, name, NodeKind::File(file_meta(a)), *mtime);
        }

        if let (true, Some(b)) = (logs, build) {
            tree.add_logs(b, &build_names, fallback_mtime);
        }

        tree.renumber()
    }

    /// Adds the log files of `build`'s jobs at the root, named after their jobs
    /// (`job_names`: job id → name). A name taken by a job directory gets the file collision
    /// tag (`~<first 8 chars of the job id>`, then the full id) before `.log`.
    fn add_logs(
        &mut self,
        build: &Build,
        job_names: &HashMap<String, String>,
        fallback_mtime: SystemTime,
    ) {
        let mut seen = BTreeSet::new();
        let mut logs: Vec<(String, &Job)> = build
            .jobs
            .iter()
            .filter(|j| has_log(j) && seen.insert(j.id.as_str()))
            .filter_map(|j| Some((naming::fit(job_names.get(&j.id)?, ".log"), j)))
            .collect();
        logs.sort_by(|x, y| (&x.0, &x.1.id).cmp(&(&y.0, &y.1.id)));
        for (wanted, job) in logs {
            let mut name = wanted.clone();
            let mut k = 0;
            while self.children_mut(ROOT_INO).contains_key(&name) {
                name = naming::with_tag(&wanted, &naming::rename_tag(&job.id, k));
                k += 1;
            }
            let meta = LogMeta {
                job_id: job.id.clone(),
                label: job.name.clone(),
                web_url: job.web_url.clone(),
                finished: job.finished_at.is_some() || is_final_job_state(job.state.as_deref()),
                build_number: 0,
            };
            let mtime = job_time(Some(job), Some(build), fallback_mtime);
            self.add(ROOT_INO, name, NodeKind::Log(meta), mtime);
        }
    }

    /// Renumbers inodes in depth-first pre-order with children in name order.
    fn renumber(self) -> Tree {
        let mut map = vec![0 as Ino; self.nodes.len()];
        let mut order = Vec::with_capacity(self.count);
        let mut stack = vec![ROOT_INO];
        while let Some(old) = stack.pop() {
            order.push(old);
            map[old as usize] = order.len() as Ino;
            if let Some(NodeKind::Dir { children, .. }) =
                self.nodes[old as usize].as_ref().map(|n| &n.kind)
            {
                stack.extend(children.values().rev());
            }
        }
        let mut old_nodes = self.nodes;
        let mut nodes = Vec::with_capacity(order.len() + 1);
        nodes.push(None);
        for old in order {
            let mut n = old_nodes[old as usize]
                .take()
                .expect("reachable node exists");
            n.ino = map[old as usize];
            n.parent = map[n.parent as usize];
            if let NodeKind::Dir { children, .. } = &mut n.kind {
                for ino in children.values_mut() {
                    *ino = map[*ino as usize];
                }
            }
            nodes.push(Some(n));
        }
        Tree {
            count: nodes.len() - 1,
            nodes,
            total_size: self.total_size,
        }
    }

    /// The node with inode number `ino`.
    pub fn get(&self, ino: Ino) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino).ok()?)?.as_ref()
    }

    /// The child `name` of directory `parent`.
    pub fn lookup(&self, parent: Ino, name: &str) -> Option<&Node> {
        match &self.get(parent)?.kind {
            NodeKind::Dir { children, .. } => self.get(*children.get(name)?),
            _ => None,
        }
    }

    /// The node at `path` relative to the root (`/`-separated; empty components ignored).
    pub fn resolve(&self, path: &str) -> Option<&Node> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .try_fold(self.get(ROOT_INO)?, |n, c| self.lookup(n.ino, c))
    }

    /// Children of a directory in name order (for readdir); `None` if `ino` is not a directory.
    pub fn children(&self, ino: Ino) -> Option<impl Iterator<Item = (&str, Ino)> + '_> {
        match &self.get(ino)?.kind {
            NodeKind::Dir { children, .. } => Some(children.iter().map(|(n, i)| (n.as_str(), *i))),
            _ => None,
        }
    }

    /// Removes a file or log node (after a successful DELETE) and returns it; `None` if `ino`
    /// is a directory. Directories left empty stay.
    pub fn remove_file(&mut self, ino: Ino) -> Option<Node> {
        let slot = self.nodes.get_mut(usize::try_from(ino).ok()?)?;
        if slot.as_ref()?.is_dir() {
            return None;
        }
        let node = slot.take()?;
        self.children_mut(node.parent).remove(&node.name);
        self.count -= 1;
        if let NodeKind::File(f) = &node.kind {
            self.total_size = self.total_size.saturating_sub(f.size);
        }
        Some(node)
    }

    /// Removes the empty directory `name` under `parent` (rmdir).
    pub fn remove_dir(&mut self, parent: Ino, name: &str) -> Result<Node, TreeError> {
        let child = match &self.get(parent).ok_or(TreeError::NotFound)?.kind {
            NodeKind::Dir { children, .. } => *children.get(name).ok_or(TreeError::NotFound)?,
            _ => return Err(TreeError::NotDir),
        };
        match &self.get(child).ok_or(TreeError::NotFound)?.kind {
            NodeKind::File(_) | NodeKind::Log(_) => return Err(TreeError::NotDir),
            NodeKind::Dir { children, .. } if !children.is_empty() => {
                return Err(TreeError::NotEmpty)
            }
            NodeKind::Dir { .. } => {}
        }
        if child == ROOT_INO {
            return Err(TreeError::NotEmpty);
        }
        self.children_mut(parent).remove(name);
        self.count -= 1;
        Ok(self.nodes[child as usize].take().expect("child exists"))
    }

    /// Number of nodes, the root included.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Never true in practice: the root is always there.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Total bytes of all files (for statfs).
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// Path of a node relative to the mount root, for log messages (`rspec-1/log/test.log`);
    /// empty for the root, `<inode N>` for an unknown inode.
    pub fn path_of(&self, ino: Ino) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            match self.get(cur) {
                Some(n) if parts.len() < self.nodes.len() => {
                    parts.push(n.name.as_str());
                    cur = n.parent;
                }
                _ => return format!("<inode {ino}>"),
            }
        }
        parts.reverse();
        parts.join("/")
    }

    /// `(directory name, job id)` of every job directory, in name order (job id empty for
    /// `unknown-job`).
    pub fn job_dir_names(&self) -> Vec<(String, String)> {
        self.children(ROOT_INO)
            .into_iter()
            .flatten()
            .filter_map(|(name, ino)| match &self.get(ino)?.kind {
                NodeKind::Dir { job: Some(j), .. } => Some((name.to_string(), j.job_id.clone())),
                _ => None,
            })
            .collect()
    }

    /// All nodes, in inode order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.nodes.iter().flatten()
    }

    /// The highest inode number this tree has ever given out, removed nodes included (the
    /// node vector never shrinks). New nodes from [`Tree::reconcile`] are numbered above it.
    pub fn max_ino(&self) -> Ino {
        self.nodes.len() as Ino - 1
    }

    /// A tree with only this tree's root (no children) that gives out inode numbers above
    /// `max` from now on: [`Tree::reconcile`] of a tree into it numbers every node but the
    /// root above `max` (a build listed again whose numbering changed, `fs::slots`).
    pub fn root_only_above(&self, max: Ino) -> Tree {
        let mut nodes: Vec<Option<Node>> = (0..=max.max(ROOT_INO)).map(|_| None).collect();
        let mut root = self.get(ROOT_INO).cloned();
        if let Some(NodeKind::Dir { children, .. }) = root.as_mut().map(|r| &mut r.kind) {
            children.clear();
        }
        nodes[ROOT_INO as usize] = root;
        Tree {
            nodes,
            count: 1,
            total_size: 0,
        }
    }

    /// Sets [`FileMeta::build_number`] on every file (and log).
    pub fn set_build_number(&mut self, n: u64) {
        for node in self.nodes.iter_mut().flatten() {
            match &mut node.kind {
                NodeKind::File(f) => f.build_number = n,
                NodeKind::Log(l) => l.build_number = n,
                NodeKind::Dir { .. } => {}
            }
        }
    }
}

/// Whether a job has a log: a command job (REST type `script`) that has started. Wait, block
/// and trigger jobs have none, and neither has a job that never ran.
pub fn has_log(j: &Job) -> bool {
    j.kind.as_deref() == Some("script") && j.started_at.is_some()
}

/// Job states after which a job (and its log) no longer changes.
pub const FINAL_JOB_STATES: [&str; 10] = [
    "passed",
    "failed",
    "canceled",
    "skipped",
    "broken",
    "timed_out",
    "expired",
    "finished",
    "soft_failed",
    "not_run",
];

pub fn is_final_job_state(state: Option<&str>) -> bool {
    state.is_some_and(|s| FINAL_JOB_STATES.contains(&s))
}

fn file_meta(a: &Artifact) -> FileMeta {
    let original_path = [a.path.as_deref(), a.filename.as_deref()]
        .into_iter()
        .flatten()
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .to_string();
    FileMeta {
        artifact_id: a.id.clone(),
        job_id: job_key(a).unwrap_or_default().to_string(),
        size: a.file_size.unwrap_or(0),
        sha1sum: a.sha1sum.clone(),
        mime_type: a.mime_type.clone(),
        state: a.state.clone(),
        original_path,
        build_number: 0,
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod reconcile_tests;
#[cfg(test)]
mod tests;
