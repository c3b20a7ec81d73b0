//! Pipeline mounts: the root's builds list and its `latest*` links, fetched at mount and again
//! lazily (on `ls` or a link read) once older than the refresh interval; build numbers
//! outside the listing found by one lookup.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{global, split, Attr, DirEntry, Fs, FsError, Kind, Result, Slot};
use crate::backend::{BackendError, Build, Lister};
use crate::tree::{Ino, ROOT_INO};

/// A pipeline's root: its newest builds (at most `limit`, of `branch` if given) and the
/// targets of `latest`, `latest-passed` and `latest-failed`. A link whose state is not among
/// the newest builds costs one more request (the newest build in that state), unless the list
/// holds every build there is.
pub async fn list_pipeline(
    lister: &dyn Lister,
    limit: usize,
    branch: Option<&str>,
) -> std::result::Result<(Vec<Build>, Links), BackendError> {
    let builds = lister.list_builds(limit.max(1), branch, None).await?;
    let mut targets = [None; 3];
    for (target, link) in targets.iter_mut().zip(&LINKS) {
        *target = match link.state {
            None => builds.first().map(|b| b.number),
            Some(st) => match builds.iter().find(|b| b.state.as_deref() == Some(st)) {
                Some(b) => Some(b.number),
                None if builds.len() >= limit => lister
                    .list_builds(1, branch, Some(st))
                    .await?
                    .first()
                    .map(|b| b.number),
                None => None,
            },
        };
    }
    let [latest, passed, failed] = targets;
    Ok((
        builds,
        Links {
            latest,
            passed,
            failed,
        },
    ))
}

/// One symlink at a pipeline mount's root.
pub(super) struct Link {
    pub(super) name: &'static str,
    pub(super) ino: Ino,
    /// The build state it follows; `None`: the newest build, whatever its state.
    pub(super) state: Option<&'static str>,
}

/// The symlinks at a pipeline mount's root, in the order of [`Links::iter`].
pub(super) static LINKS: [Link; 3] = [
    Link {
        name: "latest",
        ino: 2,
        state: None,
    },
    Link {
        name: "latest-passed",
        ino: 3,
        state: Some("passed"),
    },
    Link {
        name: "latest-failed",
        ino: 4,
        state: Some("failed"),
    },
];

/// Where a pipeline mount's symlinks point: build numbers, `None` for a link that has no
/// target (and is not shown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Links {
    /// `latest`: the newest build listed.
    pub latest: Option<u64>,
    /// `latest-passed`: the newest passed build.
    pub passed: Option<u64>,
    /// `latest-failed`: the newest failed build.
    pub failed: Option<u64>,
}

impl Links {
    /// Each link with its target.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&'static Link, Option<u64>)> {
        LINKS.iter().zip([self.latest, self.passed, self.failed])
    }

    /// The target of the link with inode `ino`; `None` also when `ino` is no link.
    pub(super) fn target(&self, ino: Ino) -> Option<u64> {
        self.iter().find(|(l, _)| l.ino == ino)?.1
    }
}

/// How long a build number that the API does not know is remembered as missing.
pub(super) const MISSING_TTL: Duration = Duration::from_secs(10);

/// A pipeline mount's root: which builds it lists and where the symlinks point.
pub(super) struct PipelineRoot {
    /// Build numbers shown at the root, newest first.
    pub(super) listed: Vec<u64>,
    /// Build number → slot.
    pub(super) slots: HashMap<u64, usize>,
    /// Where `latest`, `latest-passed`, `latest-failed` point.
    pub(super) links: Links,
    /// Numbers the API said do not exist, and when.
    pub(super) missing: HashMap<u64, Instant>,
    /// How many builds and which branch the root lists.
    pub(super) limit: usize,
    pub(super) branch: Option<String>,
    /// When the builds list was last fetched (the root is listed again once older than the
    /// refresh interval, when someone lists it or reads a link).
    pub(super) listed_at: Instant,
}

impl Default for PipelineRoot {
    fn default() -> Self {
        PipelineRoot {
            listed: Vec::new(),
            slots: HashMap::new(),
            links: Links::default(),
            missing: HashMap::new(),
            limit: 1,
            branch: None,
            listed_at: Instant::now(),
        }
    }
}

impl Fs {
    pub(super) fn link_target(&self, local: Ino) -> Option<u64> {
        let root = self.pipeline.as_ref()?.read().unwrap();
        root.links.target(local)
    }

    /// Attributes of the pipeline namespace (root and symlinks).
    pub(super) fn pipeline_attr(&self, local: Ino) -> Result<Attr> {
        if local == ROOT_INO {
            let newest = {
                let root = self.pipeline.as_ref().expect("pipeline").read().unwrap();
                root.listed.first().and_then(|n| root.slots.get(n).copied())
            };
            let mtime = newest
                .and_then(|s| self.slot(s))
                .map(|s| s.mtime())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let dirs = self.pipeline.as_ref().unwrap().read().unwrap().listed.len();
            return Ok(self.dir_attr(ROOT_INO, 2 + dirs as u32, mtime));
        }
        let target = self.link_target(local).ok_or(FsError::NotFound)?;
        let len = target.to_string().len() as u64;
        Ok(Attr {
            ino: local,
            kind: Kind::Symlink,
            size: len,
            blocks: 0,
            perm: 0o777,
            nlink: 1,
            uid: self.cfg.uid,
            gid: self.cfg.gid,
            mtime: self.pipeline_attr(ROOT_INO)?.mtime,
            volatile: false,
        })
    }

    /// A build number as written in a directory name (canonical decimal only).
    pub(super) fn parse_number(name: &str) -> Option<u64> {
        let n: u64 = name.parse().ok()?;
        (n > 0 && n.to_string() == name).then_some(n)
    }

    /// Finds a build that is not in the root listing (one API request), and gives it a slot.
    pub(super) async fn discover(self: &Arc<Self>, number: u64) -> Result<usize> {
        let _g = self.discovering.lock().await;
        let root = self.pipeline.as_ref().expect("pipeline");
        {
            // Another lookup may have settled it while this one waited.
            let r = root.read().unwrap();
            if let Some(&s) = r.slots.get(&number) {
                return Ok(s);
            }
            if r.missing
                .get(&number)
                .is_some_and(|t| t.elapsed() < MISSING_TTL)
            {
                return Err(FsError::NotFound);
            }
        }
        match self.lister.get_build(number).await {
            Ok(b) => {
                let s = {
                    let mut slots = self.slots.write().unwrap();
                    slots.push(Slot::new(number, Some(b), None));
                    slots.len() - 1
                };
                // It works by name; the root keeps listing the recent builds only.
                root.write().unwrap().slots.insert(number, s);
                tracing::info!(build = number, "found a build outside the root listing");
                Ok(s)
            }
            Err(BackendError::NotFound { .. }) => {
                let mut r = root.write().unwrap();
                r.missing.retain(|_, t| t.elapsed() < MISSING_TTL);
                r.missing.insert(number, Instant::now());
                Err(FsError::NotFound)
            }
            Err(e) => {
                tracing::error!(build = number, error = %e, "cannot look up the build");
                Err(FsError::Io(e.to_string()))
            }
        }
    }

    /// The pipeline root's entries: `.`, `..`, the links that point somewhere, the builds.
    pub(super) fn root_entries(&self) -> Vec<DirEntry> {
        let root = self.pipeline.as_ref().unwrap().read().unwrap();
        {
            let mut out = vec![
                DirEntry {
                    ino: ROOT_INO,
                    kind: Kind::Dir,
                    name: ".".into(),
                },
                DirEntry {
                    ino: ROOT_INO,
                    kind: Kind::Dir,
                    name: "..".into(),
                },
            ];
            for (link, target) in root.links.iter() {
                if target.is_some() {
                    out.push(DirEntry {
                        ino: link.ino,
                        kind: Kind::Symlink,
                        name: link.name.to_string(),
                    });
                }
            }
            for n in &root.listed {
                out.push(DirEntry {
                    ino: global(root.slots[n], ROOT_INO),
                    kind: Kind::Dir,
                    name: n.to_string(),
                });
            }
            out
        }
    }

    /// Readlink from memory: `None` when the pipeline's builds list is due for a refresh.
    pub fn readlink_cached(&self, ino: Ino) -> Option<Result<String>> {
        if super::archives::is_archive_ino(ino) {
            return Some(self.archives.readlink(ino));
        }
        if !self.is_pipeline_ns(ino) || split(ino).1 == ROOT_INO {
            return Some(Err(FsError::Invalid));
        }
        if self.root_stale() {
            return None;
        }
        Some(
            self.link_target(ino)
                .map(|n| n.to_string())
                .ok_or(FsError::NotFound),
        )
    }

    pub async fn readlink(self: &Arc<Self>, ino: Ino) -> Result<String> {
        if let Some(r) = self.readlink_cached(ino) {
            return r;
        }
        self.refresh_root().await;
        self.link_target(ino)
            .map(|n| n.to_string())
            .ok_or(FsError::NotFound)
    }

    /// Whether the kernel may cache a directory's listing: not a pipeline's root, which is
    /// listed again (new builds, moved links) when it is older than the refresh interval.
    pub fn dir_cacheable(&self, ino: Ino) -> bool {
        !(self.pipeline.is_some() && ino == ROOT_INO)
    }

    pub(super) fn root_stale(&self) -> bool {
        self.pipeline
            .as_ref()
            .is_some_and(|r| r.read().unwrap().listed_at.elapsed() >= self.cfg.refresh)
    }

    /// Fetches the pipeline's builds list again if it is stale: new builds get a directory,
    /// the links follow, known builds get their new state. A failure keeps the old listing
    /// (and is retried after another interval).
    pub(super) async fn refresh_root(self: &Arc<Self>) {
        let Some(root) = self.pipeline.as_ref() else {
            return;
        };
        let _g = self.discovering.lock().await;
        if !self.root_stale() {
            return;
        }
        let (limit, branch) = {
            let r = root.read().unwrap();
            (r.limit, r.branch.clone())
        };
        let res = list_pipeline(&*self.lister, limit, branch.as_deref()).await;
        let mut r = root.write().unwrap();
        r.listed_at = Instant::now();
        let (builds, links) = match res {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the pipeline's builds again; showing the last listing");
                return;
            }
        };
        let mut listed = Vec::with_capacity(builds.len());
        let mut added = 0;
        // Unopened builds whose directory attributes (mtime from the build) may have changed.
        let mut touched = Vec::new();
        for b in builds {
            if b.number == 0 || listed.contains(&b.number) {
                continue;
            }
            listed.push(b.number);
            match r.slots.get(&b.number) {
                Some(&s) => {
                    if let Some(slot) = self.slot(s) {
                        if slot.tree.read().unwrap().is_none() {
                            let mut info = slot.info.write().unwrap();
                            if info.as_ref() != Some(&b) {
                                *info = Some(b);
                                touched.push(s);
                            }
                        }
                    }
                }
                None => {
                    let s = {
                        let mut slots = self.slots.write().unwrap();
                        slots.push(Slot::new(b.number, Some(b.clone()), None));
                        slots.len() - 1
                    };
                    r.slots.insert(b.number, s);
                    added += 1;
                }
            }
        }
        // Builds that fell out of the recent ones keep their slot (and inode): they still
        // work by name.
        let relisted = r.listed != listed;
        r.listed = listed;
        let moved: Vec<&Link> = r
            .links
            .iter()
            .zip(links.iter())
            .filter(|((_, old), (_, new))| old != new)
            .map(|((l, _), _)| l)
            .collect();
        if !moved.is_empty() {
            tracing::info!(?links, "pipeline links moved");
            r.links = links;
        }
        if added > 0 {
            tracing::info!(added, "new builds in the pipeline");
        }
        drop(r);
        // The kernel caches the root's attributes and the links' sizes: drop what changed.
        if let Some(k) = self.kernel.get() {
            if relisted || !moved.is_empty() {
                k.inval_inode(ROOT_INO);
            }
            for l in moved {
                k.inval_inode(l.ino);
                // A link that lost its target must lose its name too.
                k.inval_entry(ROOT_INO, l.name);
            }
            for s in touched {
                k.inval_inode(global(s, ROOT_INO));
            }
        }
    }
}
