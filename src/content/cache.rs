//! The on-disk block cache, shared by every mount and every build that uses the same
//! directory.
//!
//! - **Keys.** A block belongs to a *content key*: `s-<sha1sum>` when the artifact has a valid
//!   sha1 (so identical artifacts of different builds are stored once), else `a-<artifact id>`.
//!   Block `i` of a key covers bytes `[i*B, (i+1)*B)` of the artifact, where `B` is the reader's
//!   block size for that file size (deterministic, so mounts agree).
//! - **Layout.** `<dir>/v1/<key>/<index>`; each block file is a header (magic, payload length,
//!   CRC32 of the payload) and the payload. Large artifacts (more than one block) are not
//!   stored this way: each is one sparse file with a block map, `<dir>/v1/<key>/{data,map}`
//!   ([`super::store`]), one entry of the same LRU (sized by the payload it holds). Files are written under `<dir>/v1/tmp/` and renamed
//!   into place, so a crash (even `kill -9`) leaves either no block or a whole one; a block whose
//!   header, length or CRC disagrees is treated as a miss and deleted.
//! - **Bound.** An in-memory LRU (the `lru` crate) of all blocks with their sizes, rebuilt at
//!   start-up from the directory (oldest modification first); inserting past the budget evicts
//!   least-recently-used blocks.
//! - **Verification.** Whole-file blocks (artifacts ≤ 4 MiB) are verified against `sha1sum`
//!   before they are stored. For a larger artifact, when its last missing block lands the reader
//!   hashes all blocks in order; a mismatch deletes the whole key, so wrong bytes never stay.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use super::store::{present_in_map, SparseFile};

/// The block index of a key's sparse artifact store in the LRU (not a block file).
const SPARSE: u64 = u64::MAX;
/// Sparse stores kept open (file descriptors and maps in memory).
const OPEN_SPARSE: usize = 64;

const MAGIC: &[u8; 8] = b"BKFSBLK1";
const HEADER: usize = 8 + 8 + 4;

type BlockId = (String, u64);

struct Index {
    lru: LruCache<BlockId, u64>,
    bytes: u64,
    per_key: HashMap<String, u64>,
}

pub struct DiskCache {
    root: PathBuf,
    cap: u64,
    index: Mutex<Index>,
    /// Open sparse stores of large artifacts (never locked while `index` is held).
    sparse: Mutex<LruCache<String, Arc<SparseFile>>>,
}

/// The content key of an artifact.
pub fn content_key(sha1sum: Option<&str>, artifact_id: &str) -> String {
    match sha1sum {
        Some(s) if s.len() == 40 && s.bytes().all(|c| c.is_ascii_hexdigit()) => {
            format!("s-{}", s.to_ascii_lowercase())
        }
        _ => format!("a-{}", key_part(artifact_id)),
    }
}

/// An id as part of a cache key (a directory name): ASCII letters, digits and `-` kept,
/// anything else `_`, at most 100 characters.
pub fn key_part(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

impl DiskCache {
    /// Opens (creating if needed) a cache under `dir` holding at most `cap` bytes of payload.
    pub fn open(dir: &Path, cap: u64) -> io::Result<DiskCache> {
        let root = dir.join("v1");
        fs::create_dir_all(root.join("tmp"))?;
        // Leftovers of interrupted writes.
        for e in fs::read_dir(root.join("tmp"))?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let mut found: Vec<(std::time::SystemTime, BlockId, u64)> = Vec::new();
        for k in fs::read_dir(&root)?.flatten() {
            let key = k.file_name().to_string_lossy().to_string();
            if key == "tmp" || !k.path().is_dir() {
                continue;
            }
            for b in fs::read_dir(k.path())?.flatten() {
                if b.file_name() == "map" {
                    if let Some(n) = present_in_map(&b.path()) {
                        let t = b.metadata().and_then(|m| m.modified());
                        found.push((t.unwrap_or(std::time::UNIX_EPOCH), (key.clone(), SPARSE), n));
                    }
                    continue;
                }
                let Ok(idx) = b.file_name().to_string_lossy().parse::<u64>() else {
                    continue;
                };
                if let Ok(md) = b.metadata() {
                    let payload = md.len().saturating_sub(HEADER as u64);
                    let t = md.modified().unwrap_or(std::time::UNIX_EPOCH);
                    found.push((t, (key.clone(), idx), payload));
                }
            }
        }
        found.sort_by_key(|a| a.0);
        let mut index = Index {
            lru: LruCache::unbounded(),
            bytes: 0,
            per_key: HashMap::new(),
        };
        for (_, id, size) in found {
            index.bytes += size;
            *index.per_key.entry(id.0.clone()).or_default() += 1;
            index.lru.put(id, size);
        }
        let c = DiskCache {
            root,
            cap,
            index: Mutex::new(index),
            sparse: Mutex::new(LruCache::new(NonZeroUsize::new(OPEN_SPARSE).unwrap())),
        };
        c.evict();
        Ok(c)
    }

    fn path(&self, key: &str, idx: u64) -> PathBuf {
        self.root.join(key).join(idx.to_string())
    }

    pub fn bytes(&self) -> u64 {
        self.index.lock().unwrap().bytes
    }

    /// Whether a large artifact has a sparse store (some of it cached).
    pub fn has_sparse(&self, key: &str) -> bool {
        self.index
            .lock()
            .unwrap()
            .lru
            .contains(&(key.to_string(), SPARSE))
    }

    /// Number of blocks held for a key (a sparse store counts as one).
    pub fn blocks_of(&self, key: &str) -> u64 {
        self.index
            .lock()
            .unwrap()
            .per_key
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// The block, if present and intact and `len` bytes long. A damaged block is deleted.
    pub fn get(&self, key: &str, idx: u64, len: u64) -> Option<Bytes> {
        let id = (key.to_string(), idx);
        self.index.lock().unwrap().lru.get(&id)?;
        match read_block(&self.path(key, idx)) {
            Ok(b) if b.len() as u64 == len => Some(b),
            // Evicted between the index lookup and the read: an ordinary miss.
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            r => {
                tracing::warn!(key, idx, ok = r.is_ok(), "damaged cache block; discarding");
                self.remove(key, idx);
                None
            }
        }
    }

    /// Stores a block (temp file + rename), then evicts down to the budget.
    pub fn put(&self, key: &str, idx: u64, data: &[u8]) {
        if data.len() as u64 > self.cap {
            return;
        }
        if let Err(e) = self.write(key, idx, data) {
            tracing::warn!(key, idx, error = %e, "cannot write to the cache");
            return;
        }
        {
            let mut g = self.index.lock().unwrap();
            let id = (key.to_string(), idx);
            match g.lru.put(id, data.len() as u64) {
                Some(old) => g.bytes -= old,
                None => *g.per_key.entry(key.to_string()).or_default() += 1,
            }
            g.bytes += data.len() as u64;
        }
        self.evict();
    }

    fn write(&self, key: &str, idx: u64, data: &[u8]) -> io::Result<()> {
        let dir = self.root.join(key);
        fs::create_dir_all(&dir)?;
        let tmp = self.root.join("tmp").join(format!(
            "{}-{}-{:016x}",
            std::process::id(),
            idx,
            rand::random::<u64>()
        ));
        let mut f = fs::File::create(&tmp)?;
        let mut h = Vec::with_capacity(HEADER);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&(data.len() as u64).to_le_bytes());
        h.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        let r = f
            .write_all(&h)
            .and_then(|_| f.write_all(data))
            .and_then(|_| fs::rename(&tmp, self.path(key, idx)));
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r
    }

    fn remove(&self, key: &str, idx: u64) {
        let mut g = self.index.lock().unwrap();
        if let Some(size) = g.lru.pop(&(key.to_string(), idx)) {
            g.bytes -= size;
            if let Some(n) = g.per_key.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    g.per_key.remove(key);
                }
            }
        }
        drop(g);
        self.delete_files(key, idx);
    }

    fn delete_files(&self, key: &str, idx: u64) {
        if idx == SPARSE {
            if let Some(f) = self.sparse.lock().unwrap().pop(key) {
                f.mark_evicted();
            }
            let _ = fs::remove_file(self.root.join(key).join("map"));
            let _ = fs::remove_file(self.root.join(key).join("data"));
        } else {
            let _ = fs::remove_file(self.path(key, idx));
        }
    }

    /// The sparse store of a large artifact (`size` bytes in `bs`-byte blocks), opened or
    /// created; `None` when the cache cannot hold it.
    pub fn sparse(&self, key: &str, size: u64, bs: u64) -> Option<Arc<SparseFile>> {
        let mut open = self.sparse.lock().unwrap();
        if let Some(f) = open.get(key) {
            if !f.evicted() {
                let f = f.clone();
                drop(open);
                self.index
                    .lock()
                    .unwrap()
                    .lru
                    .get(&(key.to_string(), SPARSE));
                return Some(f);
            }
        }
        let f = match SparseFile::open(&self.root.join(key), size, bs) {
            Ok(f) => Arc::new(f),
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot open the cache file");
                return None;
            }
        };
        open.put(key.to_string(), f.clone());
        drop(open);
        let n = f.present_bytes();
        let mut g = self.index.lock().unwrap();
        let id = (key.to_string(), SPARSE);
        match g.lru.put(id, n) {
            Some(old) => g.bytes -= old,
            None => *g.per_key.entry(key.to_string()).or_default() += 1,
        }
        g.bytes += n;
        drop(g);
        self.evict();
        Some(f)
    }

    /// Accounts for payload added to (`added > 0`) or taken from a sparse store, then
    /// evicts down to the budget.
    pub fn sparse_changed(&self, f: &SparseFile, key: &str, added: i64) {
        if f.evicted() {
            return;
        }
        {
            let mut g = self.index.lock().unwrap();
            let id = (key.to_string(), SPARSE);
            let Some(n) = g.lru.get_mut(&id) else {
                return;
            };
            let new = (*n as i64 + added).max(0) as u64;
            let old = std::mem::replace(n, new);
            g.bytes = g.bytes + new - old;
        }
        self.evict();
    }

    /// Drops every block of a key (a failed verification).
    pub fn remove_key(&self, key: &str) {
        let ids: Vec<BlockId> = {
            let g = self.index.lock().unwrap();
            g.lru
                .iter()
                .filter(|(k, _)| k.0 == key)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for (k, i) in ids {
            self.remove(&k, i);
        }
        let _ = fs::remove_dir_all(self.root.join(key));
    }

    /// Evicts least-recently-used blocks until the payload fits the budget. The block just
    /// stored is the most recent, so it goes last (and `put` refuses blocks over the budget).
    fn evict(&self) {
        loop {
            let victim = {
                let mut g = self.index.lock().unwrap();
                if g.bytes <= self.cap {
                    return;
                }
                let Some((id, size)) = g.lru.pop_lru() else {
                    return;
                };
                g.bytes -= size;
                if let Some(n) = g.per_key.get_mut(&id.0) {
                    *n -= 1;
                    if *n == 0 {
                        g.per_key.remove(&id.0);
                    }
                }
                id
            };
            self.delete_files(&victim.0, victim.1);
        }
    }
}

fn read_block(p: &Path) -> io::Result<Bytes> {
    let mut f = fs::File::open(p)?;
    let mut h = [0u8; HEADER];
    f.read_exact(&mut h)?;
    if &h[..8] != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad magic"));
    }
    let len = u64::from_le_bytes(h[8..16].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(h[16..20].try_into().unwrap());
    let mut data = Vec::with_capacity(len);
    f.read_to_end(&mut data)?;
    if data.len() != len || crc32fast::hash(&data) != crc {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad length or crc",
        ));
    }
    Ok(Bytes::from(data))
}

/// Parses a size like `10GiB`, `500M`, `20G`, `1048576` (binary units; `B` optional).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (examples: 500M, 20GiB, 1048576)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("invalid size unit in {s:?} (use K, M, G or T)")),
    };
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("20GiB").unwrap(), 20 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5X").is_err());
    }

    #[test]
    fn keys() {
        let s = "884c4ad3f2545c85c69d0d0ef50c5d4f5266f0b7";
        assert_eq!(content_key(Some(s), "x"), format!("s-{s}"));
        assert_eq!(content_key(Some("nope"), "ab/../c"), "a-ab____c");
        assert_eq!(content_key(None, "id-1"), "a-id-1");
    }

    #[test]
    fn put_get_reopen_and_damage() {
        let d = tempfile::tempdir().unwrap();
        let c = DiskCache::open(d.path(), 1 << 20).unwrap();
        c.put("k", 0, b"hello");
        c.put("k", 1, b"world");
        assert_eq!(&c.get("k", 0, 5).unwrap()[..], b"hello");
        assert!(c.get("k", 0, 6).is_none(), "wrong length is a miss");
        drop(c);
        let c = DiskCache::open(d.path(), 1 << 20).unwrap();
        assert_eq!(&c.get("k", 1, 5).unwrap()[..], b"world");
        assert_eq!(c.blocks_of("k"), 1, "the wrong-length block was discarded");
        // Flip a payload byte on disk: the CRC catches it.
        let p = d.path().join("v1/k/1");
        let mut raw = fs::read(&p).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        fs::write(&p, raw).unwrap();
        assert!(c.get("k", 1, 5).is_none());
        assert!(!p.exists());
        // A leftover temp file (crash mid-write) is cleaned and never served.
        fs::write(d.path().join("v1/tmp/123-0-x"), b"partial").unwrap();
        let c = DiskCache::open(d.path(), 1 << 20).unwrap();
        assert_eq!(fs::read_dir(d.path().join("v1/tmp")).unwrap().count(), 0);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn evicts_lru_to_budget() {
        let d = tempfile::tempdir().unwrap();
        let c = DiskCache::open(d.path(), 10).unwrap();
        c.put("a", 0, b"1234");
        c.put("b", 0, b"1234");
        assert!(c.get("a", 0, 4).is_some()); // a is now most recent
        c.put("c", 0, b"1234");
        assert!(c.bytes() <= 10);
        assert!(c.get("b", 0, 4).is_none(), "b was least recently used");
        assert!(c.get("a", 0, 4).is_some());
        assert!(c.get("c", 0, 4).is_some());
        c.remove_key("a");
        assert!(c.get("a", 0, 4).is_none());
        assert_eq!(c.bytes(), 4);
    }
}
