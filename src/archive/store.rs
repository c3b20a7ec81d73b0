//! Bytes derived from archives: decompressed zip entries and blocks of tar.gz streams, in
//! 1 MiB blocks, and persisted indexes and gzip access points. Kept in the disk cache (its CRC-checked, temp+rename
//! blocks) under keys derived from the artifact's content key, plus a small in-memory LRU
//! (the only copy when the disk cache is off).
//!
//! A derived stream counts as present only once its *marker* block (the stream's length) is
//! written, after the whole stream was produced and checked (CRC, declared size): blocks of
//! an interrupted or failed decompression are never served.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use super::tar::TarWalker;
use super::ArchiveError;
use crate::content::cache::DiskCache;

/// Block size of derived streams.
pub const DBLOCK: u64 = 1 << 20;
/// The marker block's index.
const MARKER: u64 = 1 << 40;
/// In-memory budget for derived blocks.
const MEM_BUDGET: u64 = 64 << 20;

/// Blocks in memory and their total size.
type MemBlocks = (LruCache<(String, u64), Bytes>, u64);

pub struct Derived {
    disk: Option<Arc<DiskCache>>,
    mem: Mutex<MemBlocks>,
}

impl Derived {
    pub fn new(disk: Option<Arc<DiskCache>>) -> Derived {
        Derived {
            disk,
            mem: Mutex::new((LruCache::unbounded(), 0)),
        }
    }

    pub fn has_disk(&self) -> bool {
        self.disk.is_some()
    }

    pub fn get(&self, key: &str, idx: u64, len: u64) -> Option<Bytes> {
        let id = (key.to_string(), idx);
        if let Some(b) = self.mem.lock().unwrap().0.get(&id) {
            return Some(b.clone());
        }
        let b = self.disk.as_ref()?.get(key, idx, len)?;
        self.mem_put(id, b.clone());
        Some(b)
    }

    fn mem_put(&self, id: (String, u64), b: Bytes) {
        let mut g = self.mem.lock().unwrap();
        let n = b.len() as u64;
        if let Some(old) = g.0.put(id, b) {
            g.1 -= old.len() as u64;
        }
        g.1 += n;
        while g.1 > MEM_BUDGET {
            match g.0.pop_lru() {
                Some((_, v)) => g.1 -= v.len() as u64,
                None => break,
            }
        }
    }

    pub fn put(&self, key: &str, idx: u64, b: Bytes) {
        if let Some(d) = &self.disk {
            d.put(key, idx, &b);
        }
        self.mem_put((key.to_string(), idx), b);
    }

    /// The length of a complete derived stream, if its marker is there.
    pub fn complete(&self, key: &str) -> Option<u64> {
        let b = self.get(key, MARKER, 8)?;
        Some(u64::from_le_bytes(b[..8].try_into().ok()?))
    }

    pub fn mark_complete(&self, key: &str, len: u64) {
        self.put(key, MARKER, Bytes::copy_from_slice(&len.to_le_bytes()));
    }

    pub fn remove(&self, key: &str) {
        if let Some(d) = &self.disk {
            d.remove_key(key);
        }
        let mut g = self.mem.lock().unwrap();
        let ids: Vec<(String, u64)> =
            g.0.iter()
                .filter(|(k, _)| k.0 == key)
                .map(|(k, _)| k.clone())
                .collect();
        for id in ids {
            if let Some(v) = g.0.pop(&id) {
                g.1 -= v.len() as u64;
            }
        }
    }

    /// A blob of any length (a persisted index): block 0 holds its length, block 1 the
    /// payload. Disk only.
    pub fn get_blob(&self, key: &str) -> Option<Bytes> {
        let d = self.disk.as_ref()?;
        let len = d.get(key, 0, 8)?;
        let len = u64::from_le_bytes(len[..8].try_into().ok()?);
        d.get(key, 1, len)
    }

    pub fn put_blob(&self, key: &str, data: &[u8]) {
        if let Some(d) = &self.disk {
            d.put(key, 1, data);
            d.put(key, 0, &(data.len() as u64).to_le_bytes());
        }
    }

    /// The bytes `[off, off+size)` of a complete stream of `total` bytes, if all its blocks
    /// are at hand.
    pub fn read(&self, key: &str, total: u64, off: u64, size: u64) -> Option<Bytes> {
        let end = (off + size).min(total);
        if off >= end {
            return Some(Bytes::new());
        }
        let first = off / DBLOCK;
        let last = (end - 1) / DBLOCK;
        if first == last {
            let b = self.get(key, first, block_len(total, first))?;
            let s = (off - first * DBLOCK) as usize;
            return Some(b.slice(s..s + (end - off) as usize));
        }
        let mut out = Vec::with_capacity((end - off) as usize);
        for i in first..=last {
            let b = self.get(key, i, block_len(total, i))?;
            let bs = i * DBLOCK;
            let from = (off.max(bs) - bs) as usize;
            let to = (end.min(bs + b.len() as u64) - bs) as usize;
            out.extend_from_slice(&b[from..to]);
        }
        Some(Bytes::from(out))
    }
}

pub fn block_len(total: u64, idx: u64) -> u64 {
    (total - idx * DBLOCK).min(DBLOCK)
}

/// Where decompressed bytes go: cut into blocks for the store, counted against a limit
/// (never more than the declared size, or the ratio bound), CRC'd, fed to a tar walker, and
/// a requested range copied aside (so a read is answered even when the cache cannot hold
/// the stream).
pub struct Sink<'a> {
    pub store: &'a Derived,
    pub key: String,
    pub limit: u64,
    pub total: u64,
    pub crc: crc32fast::Hasher,
    pub walker: Option<TarWalker>,
    pub capture: Option<(u64, u64, Vec<u8>)>,
    pub err: Option<ArchiveError>,
    /// Store blocks (off when only a capture or the walker is wanted).
    pub keep: bool,
    buf: Vec<u8>,
}

impl<'a> Sink<'a> {
    pub fn new(store: &'a Derived, key: String, limit: u64) -> Sink<'a> {
        Sink {
            store,
            key,
            limit,
            total: 0,
            crc: crc32fast::Hasher::new(),
            walker: None,
            capture: None,
            err: None,
            keep: true,
            buf: Vec::new(),
        }
    }

    /// Stores the last partial block.
    pub fn finish(&mut self) {
        if self.keep && !self.buf.is_empty() {
            let idx = (self.total - self.buf.len() as u64) / DBLOCK;
            let b = Bytes::from(std::mem::take(&mut self.buf));
            self.store.put(&self.key, idx, b);
        }
    }

    fn fail(&mut self, e: ArchiveError) -> io::Error {
        let m = e.to_string();
        self.err = Some(e);
        io::Error::other(m)
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.total + data.len() as u64 > self.limit {
            return Err(self.fail(super::corrupt(format!(
                "decompresses to more than {} bytes",
                self.limit
            ))));
        }
        if let Some(w) = self.walker.as_mut() {
            if let Err(e) = w.feed(self.total, data) {
                return Err(self.fail(e));
            }
        }
        self.crc.update(data);
        if let Some((s, e, v)) = self.capture.as_mut() {
            let (a, b) = (self.total, self.total + data.len() as u64);
            let (from, to) = ((*s).max(a), (*e).min(b));
            if from < to {
                v.extend_from_slice(&data[(from - a) as usize..(to - a) as usize]);
            }
        }
        self.total += data.len() as u64;
        if self.keep {
            let mut rest = data;
            while !rest.is_empty() {
                let room = DBLOCK as usize - self.buf.len();
                let take = room.min(rest.len());
                self.buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.buf.len() == DBLOCK as usize {
                    let b = Bytes::from(std::mem::replace(
                        &mut self.buf,
                        Vec::with_capacity(DBLOCK as usize),
                    ));
                    // The block just filled ends `rest.len()` bytes before `total`.
                    let end = self.total - rest.len() as u64;
                    self.store.put(&self.key, (end - DBLOCK) / DBLOCK, b);
                }
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
