//! Serving `read`s: the orchestration of the read path. Geometry, single-flight per block,
//! and which store answers: the in-memory LRU ([`super::blocks`]), the disk cache (a verified
//! block file for a small artifact, a sparse file for a large one: [`super::store`]), a part
//! already in flight, or a new ranged GET ([`super::fetch`]). Sequential readers get
//! prefetch ([`super::prefetch`]); every byte held in memory is charged to the mount's
//! memory budget ([`super::budget`]).
//!
//! Geometry: an artifact of at most [`WHOLE_FILE_MAX`] bytes is one block, fetched whole and
//! verified against its `sha1sum` before any byte of it is served. Larger artifacts are cut
//! into [`BLOCK`]-sized blocks, so a 4 KiB read in the middle of a 1 GiB file fetches one
//! 128 KiB block; their ranges are checked (`Content-Range`, length) but a block alone cannot
//! be checked against the whole-file sha1: that happens once the artifact is complete on disk,
//! after which it is served from the disk with plain `pread`s (or by the kernel: passthrough).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{FutureExt, Shared};
use tokio::sync::Semaphore;

use super::blocks::{BlockKey, MemBlocks};
use super::budget::{Budget, Charge};
use super::cache::{content_key, DiskCache};
use super::fetch::{is_sha1, Fetcher};
use super::store::SparseFile;
use crate::backend::{BackendError, BoxFuture, Remote};
use crate::tree::FileMeta;

pub use super::prefetch::Handle;

/// Artifacts up to this size are fetched in one request and verified before use: most logs
/// and reports are far smaller, and a whole small file costs one round trip either way.
pub const WHOLE_FILE_MAX: u64 = 4 << 20;
/// Block size of larger artifacts: the unit of a random read (the random-read budget is
/// 256 KiB fetched per 4 KiB read, and the kernel may ask for a neighbouring block too).
pub const BLOCK: u64 = 128 << 10;
/// Most blocks prefetched ahead of a sequential reader (32 MiB; less when the memory budget
/// is short: prefetch takes only what is free).
const MAX_WINDOW: u64 = 256;
/// Blocks per prefetch request (4 MiB at 128 KiB blocks): big enough to amortize a request's
/// first-byte latency, small enough that several run in parallel within the window.
const PART_BLOCKS: u64 = 32;
/// Small files prefetched at once for directory scans.
const MAX_SIBLING_PREFETCH: usize = 32;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("the artifact no longer exists")]
    NotFound,
    #[error("download endpoint: {0}")]
    Api(#[from] BackendError),
    /// Storage answered something inconsistent with the request.
    #[error("storage: invalid storage response: {0}")]
    Invalid(String),
    #[error("content does not match sha1sum {expected} (got {got}); not serving it")]
    Corrupt { expected: String, got: String },
    #[error("gave up after {attempts} attempts in {secs}s: {last}")]
    GaveUp {
        attempts: u32,
        secs: u64,
        last: String,
    },
}

#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// Bound on the time spent on one block, retries included.
    pub read_timeout: Duration,
    /// Upper bound on how long a signed URL is reused (the remote says how long each one
    /// stays good; this caps it).
    pub url_max_age: Duration,
    /// The memory budget: in-flight requests, parts waiting for the disk, in-memory blocks.
    pub memory_limit: u64,
    /// Storage requests in flight across all files.
    pub max_inflight: usize,
}

/// Default of `--memory-limit`.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            read_timeout: Duration::from_secs(30),
            url_max_age: Duration::from_secs(3600),
            memory_limit: DEFAULT_MEMORY_LIMIT,
            max_inflight: 16,
        }
    }
}

type BlockFuture = Shared<BoxFuture<'static, Result<Blk, ReadError>>>;

/// A block: bytes `from..to` of the buffer it arrived in (the response of a part of several
/// blocks, or the block itself), so a read across the blocks of one part is served as one
/// slice of that buffer, not copied.
#[derive(Clone, Debug)]
struct Blk {
    buf: Bytes,
    from: usize,
    to: usize,
}

impl Blk {
    fn whole(b: Bytes) -> Blk {
        let to = b.len();
        Blk {
            buf: b,
            from: 0,
            to,
        }
    }

    fn bytes(&self) -> Bytes {
        self.buf.slice(self.from..self.to)
    }

    /// Whether `next` follows this block in the same buffer.
    fn followed_by(&self, next: &Blk) -> bool {
        self.buf.as_ptr() == next.buf.as_ptr()
            && self.buf.len() == next.buf.len()
            && self.to == next.from
    }
}

pub struct Reader {
    fetch: Fetcher,
    disk: Option<Arc<DiskCache>>,
    budget: Budget,
    mem: MemBlocks,
    /// Content keys of large artifacts whose complete cached copy did not match `sha1sum`:
    /// nothing more of them is cached or served during this mount (reads fail with EIO).
    bad: Mutex<HashSet<String>>,
    /// Disk-cache writers running at once.
    writers: Semaphore,
    /// Disk-cache writes not finished yet (see [`Reader::flush`]).
    pending_stores: AtomicUsize,
    /// Sibling prefetches in flight (bounded so a scan cannot queue unbounded work).
    prefetching: AtomicUsize,
    /// Blocks being fetched, or fetched and not yet on disk (bounded by the budget).
    inflight: Mutex<HashMap<BlockKey, BlockFuture>>,
}

fn geometry(size: u64) -> u64 {
    if size <= WHOLE_FILE_MAX {
        size.max(1)
    } else {
        BLOCK
    }
}

/// Length of block `idx` of an artifact of `size` bytes.
fn block_len(size: u64, idx: u64) -> u64 {
    let bs = geometry(size);
    size.saturating_sub(idx * bs).min(bs)
}

impl Reader {
    pub fn new(
        remote: Arc<dyn Remote>,
        cfg: ReaderConfig,
        disk: Option<Arc<DiskCache>>,
    ) -> Arc<Reader> {
        Arc::new(Reader {
            fetch: Fetcher::new(remote, cfg.max_inflight, cfg.read_timeout, cfg.url_max_age),
            disk,
            budget: Budget::new(cfg.memory_limit),
            mem: MemBlocks::default(),
            bad: Mutex::new(Default::default()),
            writers: Semaphore::new(2),
            pending_stores: Default::default(),
            prefetching: Default::default(),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    pub fn remote(&self) -> &Arc<dyn Remote> {
        &self.fetch.remote
    }

    /// The disk cache, when there is one (archive indexes and unpacked entries live there too).
    pub fn disk(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
    }

    /// Bytes of the memory budget in use now, and the budget.
    pub fn memory(&self) -> (u64, u64) {
        (self.budget.in_use(), self.budget.limit())
    }

    /// Signed URLs held (bounded).
    pub fn urls_cached(&self) -> usize {
        self.fetch.urls.len()
    }

    /// The sparse disk store of a large artifact, if one exists (`create`: or make one).
    fn sparse(&self, meta: &FileMeta, ckey: &str, create: bool) -> Option<Arc<SparseFile>> {
        let disk = self.disk.as_ref()?;
        if meta.size <= WHOLE_FILE_MAX || (!create && !disk.has_sparse(ckey)) {
            return None;
        }
        disk.sparse(ckey, meta.size, BLOCK)
    }

    /// The cache file of an artifact that is complete and verified on disk, for FUSE
    /// passthrough (the kernel then reads it without the daemon).
    pub fn backing_path(&self, meta: &FileMeta) -> Option<PathBuf> {
        let ckey = content_key(meta.sha1sum.as_deref(), &meta.artifact_id);
        if self.bad.lock().unwrap().contains(&ckey) {
            return None;
        }
        self.sparse(meta, &ckey, false)?.data_path()
    }

    /// Reads up to `size` bytes at `offset`; short only at end of file.
    pub async fn read(
        self: &Arc<Self>,
        meta: &Arc<FileMeta>,
        offset: u64,
        size: u32,
        handle: Option<&Handle>,
    ) -> Result<Bytes, ReadError> {
        let stats = &crate::stats::STATS;
        let _in_flight = stats.read_started();
        let r = self.read_inner(meta, offset, size, handle).await;
        match &r {
            Ok(b) => {
                stats.bytes_served.fetch_add(b.len() as u64, Relaxed);
            }
            Err(e) => stats.error(format_args!("reading {}: {e}", meta.original_path)),
        }
        r
    }

    async fn read_inner(
        self: &Arc<Self>,
        meta: &Arc<FileMeta>,
        offset: u64,
        size: u32,
        handle: Option<&Handle>,
    ) -> Result<Bytes, ReadError> {
        if offset >= meta.size || size == 0 {
            return Ok(Bytes::new());
        }
        let end = (offset + size as u64).min(meta.size);
        let ckey = content_key(meta.sha1sum.as_deref(), &meta.artifact_id);
        if self.bad.lock().unwrap().contains(&ckey) {
            return Err(ReadError::Corrupt {
                expected: meta.sha1sum.clone().unwrap_or_default(),
                got: "a different hash, seen earlier in this mount".into(),
            });
        }
        let bs = geometry(meta.size);
        let first = offset / bs;
        let last = (end - 1) / bs;
        let nblocks = meta.size.div_ceil(bs);

        // Complete and verified on disk: one pread, nothing else.
        if let Some(sf) = self.sparse(meta, &ckey, false).filter(|s| s.verified()) {
            if let Some(b) = sf.read_verified(offset, (end - offset) as usize) {
                crate::stats::STATS
                    .cache_hits
                    .fetch_add(last - first + 1, Relaxed);
                return Ok(b);
            }
        }

        if let Some(h) = handle {
            // Without a disk cache, prefetched blocks wait for their reader in the memory
            // LRU, which later prefetches (and the kernel's parallel read-ahead) reclaim
            // from: a window of more than a quarter of the budget drops what it fetched
            // before it is read. With a disk cache they are charged until written and then
            // on disk, so the budget alone bounds them.
            let share = if self.disk.is_some() { 1 } else { 4 };
            let window = MAX_WINDOW.min(self.budget.limit() / share / bs).max(1);
            if let Some((from, to)) = h.advance(offset, end, last, nblocks, window) {
                // Whole aligned parts: however small the kernel's reads, each prefetch
                // request is a full part (a request per read would pay a first-byte latency
                // per 128 KiB and cap a stream far below one connection's bandwidth).
                let to = if to - from + 1 >= PART_BLOCKS {
                    ((to / PART_BLOCKS + 1) * PART_BLOCKS - 1).min(nblocks - 1)
                } else {
                    to
                };
                // Parts run as their own tasks; nothing needs to wait for them here.
                drop(self.blocks(meta, from, to, PART_BLOCKS, true));
            }
        }

        let futs: Vec<BlockFuture> = self
            .blocks(meta, first, last, u64::MAX, false)
            .into_iter()
            .map(|f| f.expect("a read gets a future for every block"))
            .collect();
        let got = futures_util::future::join_all(futs)
            .await
            .into_iter()
            .collect::<Result<Vec<Blk>, ReadError>>()?;
        if got.windows(2).all(|w| w[0].followed_by(&w[1])) {
            // One block, or consecutive blocks of one part: a slice of its buffer, no copy.
            let b = &got[0];
            let bstart = first * bs;
            let (from, to) = (
                b.from + (offset - bstart) as usize,
                b.from + (end - bstart) as usize,
            );
            if to > got[got.len() - 1].to {
                return Err(ReadError::Invalid("short block".into()));
            }
            return Ok(b.buf.slice(from..to));
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (i, b) in (first..=last).zip(got) {
            let b = b.bytes();
            let bstart = i * bs;
            let from = offset.max(bstart) - bstart;
            let to = end.min(bstart + b.len() as u64) - bstart;
            if from < to {
                out.extend_from_slice(&b[from as usize..to as usize]);
            }
        }
        if out.len() as u64 != end - offset {
            return Err(ReadError::Invalid("short block".into()));
        }
        Ok(out.freeze())
    }

    /// A block from the disk cache, if there and intact.
    fn disk_block(
        &self,
        meta: &FileMeta,
        ckey: &str,
        sf: Option<&SparseFile>,
        idx: u64,
    ) -> Option<Bytes> {
        let disk = self.disk.as_ref()?;
        match sf {
            Some(sf) => match sf.get(idx) {
                Ok(b) => b,
                Err(lost) => {
                    disk.sparse_changed(sf, ckey, -(lost as i64));
                    None
                }
            },
            None if meta.size <= WHOLE_FILE_MAX => disk.get(ckey, idx, block_len(meta.size, idx)),
            None => None,
        }
    }

    /// Reads from what is already cached (memory, disk, or a fetch already on its way),
    /// never starting a new fetch: `None` if some of the bytes are not there. Serves open
    /// files of artifacts that have disappeared from the build.
    pub async fn read_cached(
        self: &Arc<Self>,
        meta: &Arc<FileMeta>,
        offset: u64,
        size: u32,
    ) -> Option<Bytes> {
        if offset >= meta.size || size == 0 {
            return Some(Bytes::new());
        }
        let end = (offset + size as u64).min(meta.size);
        let ckey: Arc<str> = Arc::from(content_key(meta.sha1sum.as_deref(), &meta.artifact_id));
        if self.bad.lock().unwrap().contains(&*ckey) {
            return None;
        }
        let sf = self.sparse(meta, &ckey, false);
        if let Some(b) = sf
            .as_ref()
            .and_then(|s| s.read_verified(offset, (end - offset) as usize))
        {
            return Some(b);
        }
        let bs = geometry(meta.size);
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for idx in offset / bs..=(end - 1) / bs {
            let key = (ckey.clone(), idx);
            let b = match self.mem.get(&key) {
                Some(b) => b,
                None => {
                    let pending = self.inflight.lock().unwrap().get(&key).cloned();
                    match pending {
                        Some(f) => f.await.ok()?.bytes(),
                        None => self.disk_block(meta, &ckey, sf.as_deref(), idx)?,
                    }
                }
            };
            let bstart = idx * bs;
            let from = offset.max(bstart) - bstart;
            let to = end.min(bstart + b.len() as u64) - bstart;
            if from < to {
                out.extend_from_slice(&b[from as usize..to as usize]);
            }
        }
        (out.len() as u64 == end - offset).then(|| out.freeze())
    }

    /// Waits (at most `limit`) for disk-cache writes still in progress, so that what was read
    /// before an unmount is there for the next mount.
    pub async fn flush(&self, limit: Duration) {
        let t = Instant::now();
        while self.pending_stores.load(SeqCst) > 0 && t.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts fetching a small artifact in the background (bounded by the shared request
    /// limit and the memory budget); a no-op when it is cached or already on its way. Needs
    /// a tokio runtime.
    pub fn prefetch_whole(self: &Arc<Self>, meta: &Arc<FileMeta>) {
        if meta.size == 0 || meta.size > WHOLE_FILE_MAX {
            return;
        }
        if self.prefetching.load(Relaxed) >= MAX_SIBLING_PREFETCH {
            return;
        }
        let futs: Vec<BlockFuture> = self
            .blocks(meta, 0, 0, 1, true)
            .into_iter()
            .flatten()
            .collect();
        self.prefetching.fetch_add(1, Relaxed);
        let this = self.clone();
        tokio::spawn(async move {
            let _ = futures_util::future::join_all(futs).await;
            this.prefetching.fetch_sub(1, Relaxed);
        });
    }

    /// Futures for blocks `first..=last`: ready ones from memory or disk, shared ones for
    /// blocks already in flight, and new ranged GETs for the rest, grouping consecutive
    /// missing blocks into parts of at most `max_part` blocks. A `prefetch` starts only the
    /// parts the memory budget has room for now (its other slots stay `None`); a read waits
    /// for room.
    fn blocks(
        self: &Arc<Self>,
        meta: &Arc<FileMeta>,
        first: u64,
        last: u64,
        max_part: u64,
        prefetch: bool,
    ) -> Vec<Option<BlockFuture>> {
        let ckey: Arc<str> = Arc::from(content_key(meta.sha1sum.as_deref(), &meta.artifact_id));
        let mut out: Vec<Option<BlockFuture>> = vec![None; (last - first + 1) as usize];
        let ready = |b: Bytes| {
            futures_util::future::ready(Ok(Blk::whole(b)))
                .boxed()
                .shared()
        };
        let sf = self.sparse(meta, &ckey, false);
        let stats = &crate::stats::STATS;
        // Hits and misses count the blocks a read asked for, not prefetches.
        let count = |c: &std::sync::atomic::AtomicU64| {
            if !prefetch {
                c.fetch_add(1, Relaxed);
            }
        };
        let mut missing = Vec::new();
        for idx in first..=last {
            let key = (ckey.clone(), idx);
            let pending = self.inflight.lock().unwrap().get(&key).cloned();
            if let Some(b) = self.mem.get(&key) {
                out[(idx - first) as usize] = Some(ready(b));
            } else if let Some(f) = pending {
                out[(idx - first) as usize] = Some(f);
            } else if prefetch && sf.as_ref().is_some_and(|s| s.has(idx)) {
                // On disk: nothing to prefetch.
            } else if let Some(b) = self.disk_block(meta, &ckey, sf.as_deref(), idx) {
                if sf.is_none() {
                    self.mem.put(key, b.clone(), &self.budget);
                }
                out[(idx - first) as usize] = Some(ready(b));
            } else {
                missing.push(idx);
                continue;
            }
            count(&stats.cache_hits);
        }
        let mut inflight = self.inflight.lock().unwrap();
        let mut run: Vec<u64> = Vec::new();
        for idx in missing {
            if let Some(f) = inflight.get(&(ckey.clone(), idx)) {
                // Started meanwhile by another read.
                out[(idx - first) as usize] = Some(f.clone());
                count(&stats.cache_hits);
                continue;
            }
            count(&stats.cache_misses);
            let boundary = prefetch && max_part > 1 && idx % max_part == 0;
            if run.last().is_some_and(|l| l + 1 != idx) || run.len() as u64 >= max_part || boundary
            {
                if !run.is_empty()
                    && !self.start_part(meta, &ckey, &run, &mut inflight, &mut out, first, prefetch)
                {
                    return out;
                }
                run.clear();
            }
            run.push(idx);
        }
        if !run.is_empty() {
            self.start_part(meta, &ckey, &run, &mut inflight, &mut out, first, prefetch);
        }
        out
    }

    /// Starts one ranged GET for the consecutive blocks `run` and registers a shared future
    /// per block in `inflight` and `out`. A prefetch that the budget has no room for starts
    /// nothing (`false`).
    #[allow(clippy::too_many_arguments)]
    fn start_part(
        self: &Arc<Self>,
        meta: &Arc<FileMeta>,
        ckey: &Arc<str>,
        run: &[u64],
        inflight: &mut HashMap<BlockKey, BlockFuture>,
        out: &mut [Option<BlockFuture>],
        first: u64,
        prefetch: bool,
    ) -> bool {
        let (a, b) = (run[0], *run.last().expect("non-empty run"));
        let bs = geometry(meta.size);
        let bytes = ((b + 1) * bs).min(meta.size) - a * bs;
        let pre_charge = if prefetch {
            match self.budget.try_acquire(bytes, || self.mem.pop_lru()) {
                Some(c) => Some(c),
                None => return false,
            }
        } else {
            None
        };
        let this = self.clone();
        let meta2 = meta.clone();
        let ck = ckey.clone();
        let part = async move {
            let charge = match pre_charge {
                Some(c) => c,
                None => this.budget.acquire(bytes, || this.mem.pop_lru()).await,
            };
            let r = this.fetch_part(&meta2, a, b).await;
            let bad = this.bad.lock().unwrap().contains(&*ck);
            match (&r, bad, this.disk.is_some()) {
                (Ok((_, blocks)), false, has_disk) => {
                    // With a disk cache the blocks stay reachable through `inflight` until
                    // written, and on disk after: the LRU would only hold them twice.
                    if !has_disk {
                        for (i, blk) in (a..=b).zip(blocks) {
                            this.mem.put((ck.clone(), i), blk.clone(), &this.budget);
                        }
                    }
                    if has_disk {
                        // Readers have the blocks now; the disk copy is written behind. The
                        // part keeps its charge (and its in-flight entries, so no read
                        // refetches it) until the write is done: a disk slower than the
                        // network slows fetching down through the budget.
                        this.pending_stores.fetch_add(1, SeqCst);
                        let (this2, meta3, ck2, blocks) =
                            (this.clone(), meta2.clone(), ck.clone(), blocks.clone());
                        tokio::spawn(async move {
                            this2.store(&meta3, &ck2, a, blocks, charge).await;
                            this2.done_part(&ck2, a, b);
                            this2.pending_stores.fetch_sub(1, SeqCst);
                        });
                        return r.map(|(part, _)| part);
                    }
                }
                _ => drop(charge),
            }
            this.done_part(&ck, a, b);
            r.map(|(part, _)| part)
        }
        .boxed()
        .shared();
        // The part drives itself: a prefetch needs no one awaiting it.
        tokio::spawn(part.clone().map(|_| ()));
        for (j, idx) in (a..=b).enumerate() {
            let from = j * bs as usize;
            let f: BlockFuture = part
                .clone()
                .map(move |r| {
                    r.map(|part| Blk {
                        from: from.min(part.len()),
                        to: (from + bs as usize).min(part.len()),
                        buf: part,
                    })
                })
                .boxed()
                .shared();
            inflight.insert((ckey.clone(), idx), f.clone());
            out[(idx - first) as usize] = Some(f);
        }
        true
    }

    fn done_part(&self, ck: &Arc<str>, a: u64, b: u64) {
        let mut g = self.inflight.lock().unwrap();
        for i in a..=b {
            g.remove(&(ck.clone(), i));
        }
    }

    /// Writes fetched blocks (starting at block `first`) to the disk cache; when that
    /// completes a large artifact, checks the whole against `sha1sum` (every block's CRC on
    /// the way) and discards it all on a mismatch.
    async fn store(
        &self,
        meta: &FileMeta,
        ckey: &str,
        first: u64,
        blocks: Vec<Bytes>,
        charge: Charge,
    ) {
        let Some(disk) = self.disk.clone() else {
            return;
        };
        // Few writers at a time: each blocking task is a thread.
        let Ok(writer) = self.writers.acquire().await else {
            return;
        };
        if meta.size <= WHOLE_FILE_MAX {
            // One block, verified against its sha1 when fetched.
            let key = ckey.to_string();
            let _ = tokio::task::spawn_blocking(move || {
                for (i, b) in (first..).zip(&blocks) {
                    disk.put(&key, i, b);
                }
            })
            .await;
            return;
        }
        let Some(sf) = self.sparse(meta, ckey, true) else {
            return;
        };
        let sf2 = sf.clone();
        let (d2, k2) = (disk.clone(), ckey.to_string());
        let complete = tokio::task::spawn_blocking(move || {
            let mut added = 0u64;
            for (i, b) in (first..).zip(&blocks) {
                match sf2.put(i, b) {
                    Ok(n) => added += n,
                    Err(e) => {
                        tracing::warn!(key = %k2, idx = i, error = %e, "cannot write to the cache");
                        break;
                    }
                }
            }
            drop(blocks);
            d2.sparse_changed(&sf2, &k2, added as i64);
            sf2.complete() && !sf2.verified() && !sf2.evicted()
        })
        .await
        .unwrap_or(false);
        drop(writer);
        drop(charge);
        if self.bad.lock().unwrap().contains(ckey) {
            // Raced with a failed check: whatever this part wrote must go too.
            disk.remove_key(ckey);
            return;
        }
        if !complete {
            return;
        }
        let expected = meta.sha1sum.clone().filter(|s| is_sha1(s));
        let sf2 = sf.clone();
        let got = tokio::task::spawn_blocking(move || sf2.sha1_hex())
            .await
            .ok()
            .flatten();
        match (got, expected) {
            (None, _) => {} // a block went missing or failed its CRC: refetched later
            (Some(got), Some(expected)) if !got.eq_ignore_ascii_case(&expected) => {
                self.bad.lock().unwrap().insert(ckey.to_string());
                tracing::error!(artifact = %meta.artifact_id, path = %meta.original_path, "the complete artifact does not match its sha1sum; discarding the cached copy");
                disk.remove_key(ckey);
                self.mem.forget_key(ckey);
            }
            (Some(_), _) => {
                if let Err(e) = sf.set_verified() {
                    tracing::warn!(key = ckey, error = %e, "cannot mark the cached artifact verified");
                } else {
                    tracing::debug!(artifact = %meta.artifact_id, "complete artifact cached and verified");
                }
            }
        }
    }

    /// Drops what is known about an artifact (after it was deleted).
    pub fn forget(&self, meta: &FileMeta) {
        self.fetch.urls.remove(meta.artifact_id.as_str());
        self.mem
            .forget_key(&content_key(meta.sha1sum.as_deref(), &meta.artifact_id));
    }

    /// Fetches blocks `a..=b` in one ranged GET, with retries: the response, and it split
    /// into blocks (slices of it).
    async fn fetch_part(
        &self,
        meta: &FileMeta,
        a: u64,
        b: u64,
    ) -> Result<(Bytes, Vec<Bytes>), ReadError> {
        let bs = geometry(meta.size);
        let start = a * bs;
        let end = ((b + 1) * bs).min(meta.size);
        let t0 = Instant::now();
        let bytes = self.fetch.fetch_range(meta, start, end).await?;
        tracing::trace!(artifact = %meta.artifact_id, start, len = end - start, ms = t0.elapsed().as_millis() as u64, "fetched part");
        let blocks = (a..=b)
            .map(|i| {
                let from = (i * bs - start) as usize;
                let to = (((i + 1) * bs).min(end) - start) as usize;
                bytes.slice(from..to)
            })
            .collect();
        Ok((bytes, blocks))
    }
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
