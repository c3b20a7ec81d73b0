//! The disk-cache store of a large artifact: ONE sparse file per artifact plus a small
//! block-presence map, in place of one file (and one rename) per 128 KiB block.
//!
//! - **Layout.** `<cache>/v1/<key>/data` is a sparse file as long as the artifact; block `i`
//!   sits at `i * B`. `<cache>/v1/<key>/map` is a 32-byte header (magic, artifact size, block
//!   size, flags) followed by one 8-byte entry per block: CRC32 of the block and a presence
//!   word ([`PRESENT`]).
//! - **Crash safety (`kill -9`).** A block is written data first, then its map entry. A crash
//!   between the two leaves a block whose entry still says absent (never served). An entry
//!   that says present is only trusted with its CRC: every block read from a file that is not
//!   yet verified is checked against its entry, so a torn block (data half-written, or the map
//!   page persisted before the data after a power cut) is a miss and is refetched, never served.
//! - **Verified.** When the last block lands the reader hashes the whole file in order (CRCs
//!   checked on the way) against `sha1sum`; a match sets the header's verified flag. A
//!   verified file is complete and is never written again: it is served with plain `pread`s
//!   (no CRC) and may be handed to the kernel for FUSE passthrough. A mismatch deletes the key.
//! - **Budget.** The store is one entry of [`super::cache::DiskCache`]'s LRU (its size: the
//!   payload present), so `--cache-size` evicts whole artifacts.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};

const MAGIC: &[u8; 8] = b"BKFSMAP1";
pub const MAP_HEADER: u64 = 32;
/// The presence word of a map entry ("PRES"): anything else is absent.
pub const PRESENT: u32 = 0x5345_5250;
const FLAG_VERIFIED: u64 = 1;

struct MapState {
    /// Per block: its CRC32 when present.
    crc: Vec<Option<u32>>,
    present: u64,
    verified: bool,
}

pub struct SparseFile {
    dir: PathBuf,
    size: u64,
    bs: u64,
    data: File,
    map: File,
    st: Mutex<MapState>,
    /// Evicted from the cache (files unlinked): serves what it holds, stores nothing more.
    evicted: AtomicBool,
}

/// Length of block `idx` of `size` bytes cut into `bs`-byte blocks.
fn blen(size: u64, bs: u64, idx: u64) -> u64 {
    size.saturating_sub(idx * bs).min(bs)
}

impl SparseFile {
    /// Opens the store of an artifact in `dir` (created if needed); a map that does not
    /// describe an artifact of `size` bytes in `bs`-byte blocks starts over empty.
    pub fn open(dir: &Path, size: u64, bs: u64) -> io::Result<SparseFile> {
        fs::create_dir_all(dir)?;
        let nblocks = size.div_ceil(bs) as usize;
        let open = |p: PathBuf| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
        };
        let map = open(dir.join("map"))?;
        let data = open(dir.join("data"))?;
        let mut st = MapState {
            crc: vec![None; nblocks],
            present: 0,
            verified: false,
        };
        let raw = read_all(&map)?;
        let valid = raw.len() as u64 == MAP_HEADER + 8 * nblocks as u64
            && &raw[..8] == MAGIC
            && u64_at(&raw, 8) == size
            && u64_at(&raw, 16) == bs
            && data.metadata()?.len() == size;
        if valid {
            for (i, c) in st.crc.iter_mut().enumerate() {
                let e = MAP_HEADER as usize + 8 * i;
                if u32_at(&raw, e + 4) == PRESENT {
                    *c = Some(u32_at(&raw, e));
                    st.present += blen(size, bs, i as u64);
                }
            }
            st.verified = u64_at(&raw, 24) & FLAG_VERIFIED != 0 && st.present == size;
        } else {
            // Start over: an empty map first, then the data file (a crash in between leaves
            // a map that says nothing is present).
            map.set_len(0)?;
            let mut h = Vec::with_capacity(MAP_HEADER as usize);
            h.extend_from_slice(MAGIC);
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&bs.to_le_bytes());
            h.extend_from_slice(&0u64.to_le_bytes());
            map.write_all_at(&h, 0)?;
            map.set_len(MAP_HEADER + 8 * nblocks as u64)?;
            data.set_len(0)?;
            data.set_len(size)?;
        }
        Ok(SparseFile {
            dir: dir.to_path_buf(),
            size,
            bs,
            data,
            map,
            st: Mutex::new(st),
            evicted: AtomicBool::new(false),
        })
    }

    /// Payload bytes present.
    pub fn present_bytes(&self) -> u64 {
        self.st.lock().unwrap().present
    }

    pub fn has(&self, idx: u64) -> bool {
        self.st
            .lock()
            .unwrap()
            .crc
            .get(idx as usize)
            .is_some_and(|c| c.is_some())
    }

    pub fn complete(&self) -> bool {
        self.present_bytes() == self.size
    }

    pub fn verified(&self) -> bool {
        self.st.lock().unwrap().verified
    }

    pub fn evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_evicted(&self) {
        self.evicted.store(true, Ordering::Relaxed);
    }

    /// The data file, for passthrough (complete and verified files only).
    pub fn data_path(&self) -> Option<PathBuf> {
        (self.verified() && !self.evicted()).then(|| self.dir.join("data"))
    }

    /// Stores block `idx` (data first, then its map entry). Returns the payload bytes added
    /// (0 when it was there already or the store was evicted).
    pub fn put(&self, idx: u64, b: &[u8]) -> io::Result<u64> {
        if idx >= self.size.div_ceil(self.bs)
            || b.len() as u64 != blen(self.size, self.bs, idx)
            || self.has(idx)
            || self.evicted()
        {
            return Ok(0);
        }
        self.data.write_all_at(b, idx * self.bs)?;
        let crc = crc32fast::hash(b);
        let mut e = [0u8; 8];
        e[..4].copy_from_slice(&crc.to_le_bytes());
        e[4..].copy_from_slice(&PRESENT.to_le_bytes());
        self.map.write_all_at(&e, MAP_HEADER + 8 * idx)?;
        let mut st = self.st.lock().unwrap();
        if st.crc[idx as usize].is_some() {
            return Ok(0);
        }
        st.crc[idx as usize] = Some(crc);
        st.present += b.len() as u64;
        Ok(b.len() as u64)
    }

    /// Block `idx` if present and (unless the file is verified) matching its CRC. A block
    /// that fails its CRC is marked absent; `Err(len)` says how many bytes that took away.
    pub fn get(&self, idx: u64) -> Result<Option<Bytes>, u64> {
        let (crc, verified) = {
            let st = self.st.lock().unwrap();
            match st.crc.get(idx as usize).copied().flatten() {
                Some(c) => (c, st.verified),
                None => return Ok(None),
            }
        };
        let len = blen(self.size, self.bs, idx) as usize;
        let mut buf = BytesMut::zeroed(len);
        if self.data.read_exact_at(&mut buf, idx * self.bs).is_err() {
            return Ok(None);
        }
        if !verified && crc32fast::hash(&buf) != crc {
            tracing::warn!(dir = %self.dir.display(), idx, "damaged cache block; discarding");
            return Err(self.drop_block(idx));
        }
        Ok(Some(buf.freeze()))
    }

    fn drop_block(&self, idx: u64) -> u64 {
        let _ = self.map.write_all_at(&[0u8; 8], MAP_HEADER + 8 * idx);
        let mut st = self.st.lock().unwrap();
        st.verified = false;
        if st.crc[idx as usize].take().is_some() {
            let n = blen(self.size, self.bs, idx);
            st.present -= n;
            n
        } else {
            0
        }
    }

    /// `[offset, offset+len)` straight from a verified file (one `pread`, no CRC).
    pub fn read_verified(&self, offset: u64, len: usize) -> Option<Bytes> {
        if !self.verified() || offset + len as u64 > self.size {
            return None;
        }
        let mut buf = BytesMut::zeroed(len);
        self.data.read_exact_at(&mut buf, offset).ok()?;
        Some(buf.freeze())
    }

    /// Hashes the complete file in order, checking every block's CRC: `Some(sha1 hex)`, or
    /// `None` when a block is missing or damaged.
    pub fn sha1_hex(&self) -> Option<String> {
        use sha1::{Digest, Sha1};
        let mut h = Sha1::new();
        let mut buf = vec![0u8; self.bs as usize];
        let st_crc: Vec<Option<u32>> = self.st.lock().unwrap().crc.clone();
        for (i, c) in st_crc.iter().enumerate() {
            let c = (*c)?;
            let len = blen(self.size, self.bs, i as u64) as usize;
            let b = &mut buf[..len];
            self.data.read_exact_at(b, i as u64 * self.bs).ok()?;
            if crc32fast::hash(b) != c {
                self.drop_block(i as u64);
                return None;
            }
            h.update(&*b);
        }
        Some(hex::encode(h.finalize()))
    }

    /// Marks the complete file verified (after its sha1 matched, or every CRC did for an
    /// artifact without a sha1).
    pub fn set_verified(&self) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if st.present != self.size {
            return Ok(());
        }
        // The data must be on disk before the flag says it needs no CRC.
        self.data.sync_data()?;
        self.map.write_all_at(&FLAG_VERIFIED.to_le_bytes(), 24)?;
        st.verified = true;
        Ok(())
    }
}

/// Payload bytes a map file says are present (at cache start-up), if it is a map.
pub fn present_in_map(p: &Path) -> Option<u64> {
    let raw = fs::read(p).ok()?;
    if raw.len() < MAP_HEADER as usize || &raw[..8] != MAGIC {
        return None;
    }
    let (size, bs) = (u64_at(&raw, 8), u64_at(&raw, 16));
    if bs == 0 {
        return None;
    }
    let n = size.div_ceil(bs);
    if raw.len() as u64 != MAP_HEADER + 8 * n {
        return None;
    }
    Some(
        (0..n)
            .filter(|i| u32_at(&raw, (MAP_HEADER + 8 * i) as usize + 4) == PRESENT)
            .map(|i| blen(size, bs, i))
            .sum(),
    )
}

fn read_all(f: &File) -> io::Result<Vec<u8>> {
    let len = f.metadata()?.len() as usize;
    let mut v = vec![0u8; len];
    f.read_exact_at(&mut v, 0)?;
    Ok(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 253) as u8).collect()
    }

    #[test]
    fn blocks_survive_reopen_and_torn_blocks_are_misses() {
        let d = tempfile::tempdir().unwrap();
        let data = pattern(10_000);
        let f = SparseFile::open(d.path(), 10_000, 4096).unwrap();
        assert_eq!(f.put(0, &data[..4096]).unwrap(), 4096);
        assert_eq!(f.put(2, &data[8192..]).unwrap(), 10_000 - 8192);
        assert_eq!(f.put(2, &data[8192..]).unwrap(), 0, "already there");
        assert_eq!(f.put(1, &data[..10]).unwrap(), 0, "wrong length refused");
        drop(f);
        let f = SparseFile::open(d.path(), 10_000, 4096).unwrap();
        assert!(f.has(0) && !f.has(1) && f.has(2));
        assert_eq!(&f.get(0).unwrap().unwrap()[..], &data[..4096]);
        assert_eq!(f.get(1).unwrap(), None);
        assert_eq!(
            present_in_map(&d.path().join("map")),
            Some(f.present_bytes())
        );
        // A torn block: data overwritten after its entry was written (or a map page that
        // reached the disk before the data): the CRC catches it, it is never served.
        f.data.write_all_at(b"torn", 100).unwrap();
        assert_eq!(f.get(0), Err(4096));
        assert!(!f.has(0));
        drop(f);
        let f = SparseFile::open(d.path(), 10_000, 4096).unwrap();
        assert!(!f.has(0), "the discarded entry stays discarded");
        // A different geometry starts over.
        drop(f);
        let f = SparseFile::open(d.path(), 20_000, 4096).unwrap();
        assert_eq!(f.present_bytes(), 0);
    }

    #[test]
    fn verified_files_read_straight_and_survive_reopen() {
        let d = tempfile::tempdir().unwrap();
        let data = pattern(9000);
        let f = SparseFile::open(d.path(), 9000, 4096).unwrap();
        for i in 0..3u64 {
            let (a, b) = ((i * 4096) as usize, ((i + 1) * 4096).min(9000) as usize);
            f.put(i, &data[a..b]).unwrap();
        }
        assert!(f.complete() && !f.verified());
        assert!(f.read_verified(0, 10).is_none());
        use sha1::{Digest, Sha1};
        assert_eq!(f.sha1_hex().unwrap(), hex::encode(Sha1::digest(&data)));
        f.set_verified().unwrap();
        assert_eq!(&f.read_verified(4000, 200).unwrap()[..], &data[4000..4200]);
        drop(f);
        let f = SparseFile::open(d.path(), 9000, 4096).unwrap();
        assert!(f.verified());
        assert!(f.data_path().is_some());
    }
}
