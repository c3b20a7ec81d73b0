//! Archive artifacts as directories: `NAME#` shows the entries of a `.zip`/`.jar`, `.tar`,
//! `.tar.gz`/`.tgz` artifact `NAME` (the AVFS convention).
//!
//! - [`zip`] and [`tar`] are pure parsers (no I/O): the zip end-of-central-directory records
//!   and central directory, the tar header walker. They produce [`RawEntry`]s.
//! - This module turns raw entries into an [`Index`]: a small directory tree whose names go
//!   through the artifact sanitizing rules ([`crate::tree::naming`]), with implied
//!   directories, deterministic collision tags, and symlinks confined to the archive.
//! - [`store`] does the I/O of derived blocks (unpacked entries, persisted indexes) in the
//!   disk cache. The filesystem operations on `NAME#` (ranged reads through the
//!   [`crate::content::Reader`], decompression) are [`crate::fs::archives`].
//!
//! Limits (bounded memory per index): at most [`MAX_ENTRIES`] entries and [`MAX_NAME_BYTES`]
//! bytes of stored paths; a larger archive is refused with `EIO`.

pub mod gzindex;
pub mod inflate;
pub mod store;
pub mod tar;
pub mod zip;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::tree::naming::{escape_name, sanitize_component, with_tag};

/// Most entries in one archive's index.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Most bytes of entry paths (and link targets) in one archive's index.
pub const MAX_NAME_BYTES: usize = 64 << 20;
/// Deepest entry path (in components): deeper ones cannot be used anyway (PATH_MAX).
pub const MAX_DEPTH: usize = 1024;
/// The name of the target a symlink gets when its own target would leave the archive: it
/// never exists (a real root entry of that name is tagged like a duplicate), so the link
/// dangles.
pub const OUTSIDE: &str = ".bkfs-link-outside-archive";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// Not an archive of the format its name says, or damaged: the listing fails with EIO.
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    /// Over [`MAX_ENTRIES`] or [`MAX_NAME_BYTES`].
    #[error("archive too large to index: {0}")]
    TooLarge(String),
}

pub fn corrupt(m: impl Into<String>) -> ArchiveError {
    ArchiveError::Corrupt(m.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Zip,
    Tar,
    TarGz,
}

/// The format an artifact name suggests (`.zip`, `.jar`, `.tar`, `.tar.gz`, `.tgz`,
/// case-insensitive).
pub fn format_of_name(name: &str) -> Option<Format> {
    let l = name.to_ascii_lowercase();
    if l.ends_with(".zip") || l.ends_with(".jar") {
        Some(Format::Zip)
    } else if l.ends_with(".tar.gz") || l.ends_with(".tgz") {
        Some(Format::TarGz)
    } else if l.ends_with(".tar") {
        Some(Format::Tar)
    } else {
        None
    }
}

/// Whether the first bytes look like the format the name says: a `.tar.gz` starts with the
/// gzip magic; a `.tar` has a valid first header (or is all zeros: an empty tar).
///
/// A zip's magic is at its end, not its start: the zip parser requires the end record's
/// signature (and, before reading an entry, its local header's), so that self-extracting
/// archives and jars with a launcher script in front, which do not start with `PK`, still
/// open when their offsets count the launcher (`zip -A`). So `Zip` passes here.
pub fn check_magic(by_name: Format, head: &[u8]) -> Result<(), ArchiveError> {
    let ok = match by_name {
        Format::Zip => true,
        Format::TarGz => head.starts_with(&[0x1f, 0x8b]),
        Format::Tar => {
            head.len() >= 512
                && (head[..512].iter().all(|&b| b == 0) || tar::checksum_ok(&head[..512]))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(corrupt(format!(
            "the first bytes are not those of a {by_name:?} archive"
        )))
    }
}

/// Where an entry's bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Data {
    /// A zip entry: its local header's offset and what the central directory says.
    Zip {
        header: u64,
        method: u16,
        csize: u64,
        crc: u32,
        encrypted: bool,
        /// The stored name, to check against the local header.
        raw_name: Vec<u8>,
        /// General purpose flags (bit 3: sizes in a data descriptor).
        flags: u16,
    },
    /// A tar entry: the offset of its data in the tar stream (after gunzip for tar.gz).
    Tar { offset: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawKind {
    File,
    Dir,
    /// A symlink and its stored target.
    Symlink(Vec<u8>),
    /// A tar hard link to an earlier entry's stored path.
    HardLink(Vec<u8>),
}

/// An entry as the archive stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub path: Vec<u8>,
    pub kind: RawKind,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    pub data: Option<Data>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Dir {
        children: BTreeMap<String, u32>,
    },
    File,
    /// A target that stays inside the archive (relative), or leads to [`OUTSIDE`].
    Symlink {
        target: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    /// Index of the parent directory (the root is its own parent).
    pub parent: u32,
    pub kind: EntryKind,
    pub size: u64,
    pub mtime: i64,
    /// The path as stored (lossy UTF-8), for `user.archive.path`.
    pub stored: String,
    pub data: Option<Data>,
}

/// An archive's directory tree: entry 0 is the root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub format: Format,
    pub entries: Vec<Entry>,
    /// Length of the tar stream (the decompressed length for tar.gz); for zip, the central
    /// directory's offset, where every entry's data must end.
    pub stream_len: u64,
}

/// Sanitized components of a stored path: split on `/`, empty and `.` dropped (so absolute
/// paths become relative), `..`, NUL and long names neutralized like artifact paths.
fn components(raw: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(raw)
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(sanitize_component)
        .collect()
}

/// A symlink's target rewritten relative to its own directory `dir` (sanitized components
/// from the root), resolved lexically; a target that is absolute or climbs above the root
/// leads to [`OUTSIDE`] at the root instead.
pub fn confine_link(dir: &[String], target: &[u8]) -> String {
    let t = String::from_utf8_lossy(target);
    let mut path: Vec<String> = dir.to_vec();
    let mut escaped = t.starts_with('/') || t.is_empty();
    if !escaped {
        for c in t.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if path.pop().is_none() {
                        escaped = true;
                        break;
                    }
                }
                c => path.push(sanitize_component(c)),
            }
        }
    }
    if escaped {
        path = vec![OUTSIDE.to_string()];
    }
    let common = dir.iter().zip(&path).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; dir.len() - common];
    parts.extend(path[common..].iter().map(|s| s.as_str()));
    if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    }
}

impl Index {
    /// Builds the tree. Directories (explicit or implied by a path) keep their names; a file
    /// or link whose name is taken (a directory, or an earlier entry: duplicates) gets the tag
    /// `~<entry number>` before its extension. Explicit directory entries only lend their
    /// mtime. Hard links share the data of the entry they name (or are dropped).
    pub fn build(
        format: Format,
        raw: Vec<RawEntry>,
        stream_len: u64,
    ) -> Result<Index, ArchiveError> {
        if raw.len() > MAX_ENTRIES {
            return Err(ArchiveError::TooLarge(format!("{} entries", raw.len())));
        }
        let bytes: usize = raw
            .iter()
            .map(|r| {
                r.path.len()
                    + match &r.kind {
                        RawKind::Symlink(t) | RawKind::HardLink(t) => t.len(),
                        _ => 0,
                    }
            })
            .sum();
        if bytes > MAX_NAME_BYTES {
            return Err(ArchiveError::TooLarge(format!("{bytes} bytes of names")));
        }
        let comps: Vec<Vec<String>> = raw.iter().map(|r| components(&r.path)).collect();
        if comps.iter().any(|c| c.len() > MAX_DEPTH) {
            return Err(ArchiveError::TooLarge(format!(
                "a path deeper than {MAX_DEPTH} components"
            )));
        }
        let mut idx = Index {
            format,
            entries: vec![Entry {
                name: String::new(),
                parent: 0,
                kind: EntryKind::dir(),
                size: 0,
                mtime: 0,
                stored: String::new(),
                data: None,
            }],
            stream_len,
        };
        // Pass 1: every directory, explicit or implied, so that directories keep their names
        // (but for [`OUTSIDE`] at the root: a directory of that name is shown as
        // `OUTSIDE~<number of the first entry naming it>`, so escaping links always dangle).
        let mut parents = Vec::with_capacity(raw.len());
        let mut outside_dir: Option<String> = None;
        for (i, (r, c)) in raw.iter().zip(&comps).enumerate() {
            let is_dir = r.kind == RawKind::Dir;
            let n = if is_dir {
                c.len()
            } else {
                c.len().saturating_sub(1)
            };
            let mut at = 0u32;
            for name in &c[..n] {
                let name = if at == 0 && name == OUTSIDE {
                    &*outside_dir.get_or_insert_with(|| with_tag(OUTSIDE, &format!("~{i}")))
                } else {
                    name
                };
                at = match idx.children(at).and_then(|ch| ch.get(name)) {
                    Some(&d) => d,
                    None => idx.push(at, name.clone(), EntryKind::dir(), r, None),
                };
            }
            if idx.entries.len() > 2 * MAX_ENTRIES {
                return Err(ArchiveError::TooLarge("too many directories".into()));
            }
            if is_dir && at != 0 {
                let e = &mut idx.entries[at as usize];
                e.mtime = r.mtime;
                e.stored = String::from_utf8_lossy(&r.path).into_owned();
            }
            parents.push(at);
        }
        // Stored path (normalized) → entry, for hard links.
        let mut by_stored: HashMap<Vec<String>, u32> = HashMap::new();
        // Pass 2: files and links, in archive order.
        for (i, ((r, c), parent)) in raw.into_iter().zip(comps).zip(parents).enumerate() {
            if r.kind == RawKind::Dir {
                continue;
            }
            let stored = String::from_utf8_lossy(&r.path).into_owned();
            let leaf = match c.last() {
                Some(l) => l.clone(),
                None => escape_name(""),
            };
            let (kind, size, data) = match &r.kind {
                RawKind::Symlink(t) => {
                    let target = confine_link(&c[..c.len().saturating_sub(1)], t);
                    let size = target.len() as u64;
                    (EntryKind::Symlink { target }, size, None)
                }
                RawKind::HardLink(t) => {
                    let Some(&j) = by_stored.get(&components(t)) else {
                        continue;
                    };
                    let e = &idx.entries[j as usize];
                    if e.kind != EntryKind::File {
                        continue;
                    }
                    (EntryKind::File, e.size, e.data.clone())
                }
                _ => (EntryKind::File, r.size, r.data.clone()),
            };
            // [`OUTSIDE`] is reserved at the root: a real entry of that name is tagged.
            let taken = |name: &str, idx: &Index| {
                (parent == 0 && name == OUTSIDE)
                    || idx.children(parent).is_some_and(|ch| ch.contains_key(name))
            };
            let mut name = leaf.clone();
            let mut k = 1u32;
            while taken(&name, &idx) {
                let tag = if k == 1 {
                    format!("~{i}")
                } else {
                    format!("~{i}~{k}")
                };
                name = with_tag(&leaf, &tag);
                k += 1;
            }
            let mut e = r;
            e.size = size;
            let n = idx.push(parent, name, kind, &e, data);
            idx.entries[n as usize].stored = stored;
            by_stored.entry(c).or_insert(n);
        }
        Ok(idx)
    }

    fn push(
        &mut self,
        parent: u32,
        name: String,
        kind: EntryKind,
        r: &RawEntry,
        data: Option<Data>,
    ) -> u32 {
        let n = self.entries.len() as u32;
        let is_dir = matches!(kind, EntryKind::Dir { .. });
        self.entries.push(Entry {
            name: name.clone(),
            parent,
            kind,
            size: if is_dir { 0 } else { r.size },
            mtime: r.mtime,
            stored: String::new(),
            data,
        });
        if let EntryKind::Dir { children } = &mut self.entries[parent as usize].kind {
            children.insert(name, n);
        }
        n
    }

    pub fn children(&self, ix: u32) -> Option<&BTreeMap<String, u32>> {
        match &self.entries.get(ix as usize)?.kind {
            EntryKind::Dir { children } => Some(children),
            _ => None,
        }
    }

    pub fn get(&self, ix: u32) -> Option<&Entry> {
        self.entries.get(ix as usize)
    }

    /// The entry at a `/`-separated path of names from the root.
    pub fn resolve(&self, path: &str) -> Option<u32> {
        let mut at = 0u32;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            at = *self.children(at)?.get(c)?;
        }
        Some(at)
    }

    /// The path of names from the root to entry `ix`.
    pub fn path_of(&self, ix: u32) -> String {
        let mut parts = Vec::new();
        let mut at = ix;
        while at != 0 {
            let e = &self.entries[at as usize];
            parts.push(e.name.as_str());
            at = e.parent;
        }
        parts.reverse();
        parts.join("/")
    }
}

impl EntryKind {
    fn dir() -> EntryKind {
        EntryKind::Dir {
            children: BTreeMap::new(),
        }
    }
}
