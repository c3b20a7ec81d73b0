//! Serving `read`s: signed URLs reused while valid and refreshed on expiry, block-aligned
//! ranged GETs with bounded retries, single-flight per block, sequential prefetch per open
//! handle, and an in-memory LRU of recent blocks.
//!
//! Geometry: an artifact of at most [`WHOLE_FILE_MAX`] bytes is one block, fetched whole and
//! verified against its `sha1sum` before any byte of it is served. Larger artifacts are cut
//! into [`BLOCK`]-sized blocks, so a 4 KiB read in the middle of a 1 GiB file fetches one
//! 128 KiB block; their ranges are checked (`Content-Range`, length) but a block alone cannot
//! be checked against the whole-file sha1.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::future::{FutureExt, Shared};
use lru::LruCache;
use sha1::{Digest, Sha1};
use tokio::sync::Semaphore;

use super::cache::{content_key, DiskCache};
use super::remote::{BoxFuture, Remote};
use super::storage::StorageError;
use crate::api::ApiError;
use crate::secret::redact_url;
use crate::tree::FileMeta;

/// Artifacts up to this size are fetched in one request and verified before use: most logs
/// and reports are far smaller, and a whole small file costs one round trip either way.
pub const WHOLE_FILE_MAX: u64 = 4 << 20;
/// Block size of larger artifacts: the unit of a random read (the random-read budget is
/// 256 KiB fetched per 4 KiB read, and the kernel may ask for a neighbouring block too).
pub const BLOCK: u64 = 128 << 10;
/// Most blocks prefetched ahead of a sequential reader (32 MiB).
const MAX_WINDOW: u64 = 256;
/// Blocks per prefetch request (4 MiB at 128 KiB blocks): big enough to amortize a request's first-byte
/// latency, small enough that several run in parallel within the window.
const PART_BLOCKS: u64 = 32;
/// Parts waiting to be written to the disk cache (at most 4 MiB each) before fetching waits
/// for the disk.
const MAX_PENDING_STORES: usize = 32;
/// Small files prefetched at once for directory scans.
const MAX_SIBLING_PREFETCH: usize = 32;
/// How far out of order a read may land and still count as part of a sequential stream
/// (the kernel's readahead sends several reads at once, and runs well ahead of the reader).
const SEQ_SLACK: u64 = 8 << 20;
/// Signed URL refreshes allowed within one block fetch before giving up.
const MAX_REFRESHES: u32 = 4;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("the artifact no longer exists")]
    NotFound,
    #[error("download endpoint: {0}")]
    Api(#[from] ApiError),
    #[error("storage: {0}")]
    Storage(StorageError),
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
    /// Budget of the in-memory block LRU.
    pub mem_cache_bytes: u64,
    /// Storage requests in flight across all files.
    pub max_inflight: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            read_timeout: Duration::from_secs(30),
            url_max_age: Duration::from_secs(3600),
            mem_cache_bytes: 64 << 20,
            max_inflight: 16,
        }
    }
}

type BlockKey = (Arc<str>, u64);
/// One signed URL per artifact and until when it may be used; the async lock makes refreshes
/// single-flight.
type UrlSlot = Arc<tokio::sync::Mutex<Option<(String, Instant)>>>;
type BlockFuture = Shared<BoxFuture<'static, Result<Bytes, ReadError>>>;

#[derive(Default)]
struct Blocks {
    lru: Option<LruCache<BlockKey, Bytes>>,
    bytes: u64,
}

/// Per open file handle: where the next sequential read would start, and the prefetch
/// window (in blocks) that grows while the reader stays sequential.
#[derive(Debug, Default)]
pub struct Handle {
    /// (where the stream is: the furthest end read so far; prefetch window in blocks; where a
    /// read that looked random ended, in case the next read continues it).
    seq: Mutex<(u64, u64, u64)>,
}

pub struct Reader {
    remote: Arc<dyn Remote>,
    cfg: ReaderConfig,
    disk: Option<Arc<DiskCache>>,
    /// Content keys of large artifacts whose complete cached blocks matched `sha1sum`.
    verified: Mutex<std::collections::HashSet<String>>,
    /// Content keys of large artifacts whose complete cached copy did not match `sha1sum`:
    /// nothing more of them is cached or served during this mount (reads fail with EIO).
    bad: Mutex<std::collections::HashSet<String>>,
    /// Disk-cache writers running at once.
    writers: Semaphore,
    /// Disk-cache writes not finished yet (see [`Reader::flush`]).
    pending_stores: std::sync::atomic::AtomicUsize,
    /// Sibling prefetches in flight (bounded so a scan cannot queue unbounded work).
    prefetching: std::sync::atomic::AtomicUsize,
    urls: Mutex<HashMap<Arc<str>, UrlSlot>>,
    blocks: Mutex<Blocks>,
    inflight: Mutex<HashMap<BlockKey, BlockFuture>>,
    permits: Arc<Semaphore>,
}

fn geometry(size: u64) -> u64 {
    if size <= WHOLE_FILE_MAX {
        size.max(1)
    } else {
        BLOCK
    }
}

impl Reader {
    pub fn new(
        remote: Arc<dyn Remote>,
        cfg: ReaderConfig,
        disk: Option<Arc<DiskCache>>,
    ) -> Arc<Reader> {
        Arc::new(Reader {
            remote,
            disk,
            verified: Mutex::new(Default::default()),
            prefetching: Default::default(),
            bad: Mutex::new(Default::default()),
            pending_stores: Default::default(),
            writers: Semaphore::new(2),
            permits: Arc::new(Semaphore::new(cfg.max_inflight.max(1))),
            cfg,
            urls: Mutex::new(HashMap::new()),
            blocks: Mutex::new(Blocks {
                lru: Some(LruCache::unbounded()),
                bytes: 0,
            }),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    pub fn remote(&self) -> &Arc<dyn Remote> {
        &self.remote
    }

    /// The disk cache, when there is one (archive indexes and unpacked entries live there too).
    pub fn disk(&self) -> Option<&Arc<DiskCache>> {
        self.disk.as_ref()
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

        if let Some(h) = handle {
            let ahead = {
                let mut s = h.seq.lock().unwrap();
                let (next, window, alt) = *s;
                // The kernel's readahead sends several reads at once, out of order and at
                // times well ahead of the reader: a read within SEQ_SLACK of the stream's
                // position counts as sequential. A read elsewhere prefetches nothing and
                // keeps the stream's position, unless it continues an earlier outlier
                // (`alt`): then that is the new stream (a seek).
                let fresh = next == 0 && window == 0;
                let near = offset + SEQ_SLACK >= next && offset <= next + SEQ_SLACK;
                let (w, new_next, new_alt) = if offset == next || (!fresh && near) {
                    ((window * 2).clamp(1, MAX_WINDOW), next.max(end), alt)
                } else if offset == alt {
                    (1, end, u64::MAX)
                } else if window > 0 {
                    (0, next, end)
                } else {
                    (0, end, u64::MAX)
                };
                let from = last + 1;
                let to = (last + w).min(nblocks - 1);
                // An outlier shrinks the window (random access soon has none) without
                // losing the stream, so a sequential reader recovers in one read or two.
                *s = (new_next, if w == 0 { window / 4 } else { w }, new_alt);
                (w > 0 && to >= from).then_some((from, to))
            };
            if let Some((from, to)) = ahead {
                // Parts run as their own tasks; nothing needs to wait for them here.
                drop(self.blocks(meta, from, to, PART_BLOCKS));
            }
        }

        let futs = self.blocks(meta, first, last, u64::MAX);
        let got = futures_util::future::join_all(futs).await;
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for (i, r) in (first..=last).zip(got) {
            let b = r?;
            let bstart = i * bs;
            let from = offset.max(bstart) - bstart;
            let to = end.min(bstart + b.len() as u64) - bstart;
            if from < to {
                out.extend_from_slice(&b[from as usize..to as usize]);
            }
        }
        if out.len() as u64 != end - offset {
            return Err(ReadError::Storage(StorageError::Invalid(
                "short block".into(),
            )));
        }
        Ok(out.freeze())
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
        let bs = geometry(meta.size);
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for idx in offset / bs..=(end - 1) / bs {
            let key = (ckey.clone(), idx);
            let b = match self.mem_get(&key) {
                Some(b) => b,
                None => {
                    let pending = self.inflight.lock().unwrap().get(&key).cloned();
                    match pending {
                        Some(f) => f.await.ok()?,
                        None => self
                            .disk
                            .as_ref()?
                            .get(&ckey, idx, block_len(meta.size, idx))?,
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
        while self
            .pending_stores
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
            && t.elapsed() < limit
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts fetching a small artifact in the background (bounded by the shared request
    /// limit); a no-op when it is cached or already on its way. Needs a tokio runtime.
    pub fn prefetch_whole(self: &Arc<Self>, meta: &Arc<FileMeta>) {
        if meta.size == 0 || meta.size > WHOLE_FILE_MAX {
            return;
        }
        if self.prefetching.load(std::sync::atomic::Ordering::Relaxed) >= MAX_SIBLING_PREFETCH {
            return;
        }
        let futs = self.blocks(meta, 0, 0, 1);
        self.prefetching
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let this = self.clone();
        tokio::spawn(async move {
            let _ = futures_util::future::join_all(futs).await;
            this.prefetching
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }

    /// Futures for blocks `first..=last`: ready ones from memory or disk, shared ones for
    /// blocks already in flight, and new ranged GETs for the rest, grouping consecutive
    /// missing blocks into parts of at most `max_part` blocks.
    fn blocks(
        self: &Arc<Self>,
        meta: &Arc<FileMeta>,
        first: u64,
        last: u64,
        max_part: u64,
    ) -> Vec<BlockFuture> {
        let ckey: Arc<str> = Arc::from(content_key(meta.sha1sum.as_deref(), &meta.artifact_id));
        let mut out: Vec<Option<BlockFuture>> = vec![None; (last - first + 1) as usize];
        let ready = |b: Bytes| futures_util::future::ready(Ok(b)).boxed().shared();
        for idx in first..=last {
            if let Some(disk) = &self.disk {
                let key = (ckey.clone(), idx);
                if self.mem_get(&key).is_none() {
                    if let Some(b) = disk.get(&ckey, idx, block_len(meta.size, idx)) {
                        self.remember(key, b);
                    }
                }
            }
        }
        let mut inflight = self.inflight.lock().unwrap();
        let mut run: Vec<u64> = Vec::new();
        // Hits and misses count the blocks a read asked for (`u64::MAX`), not prefetches.
        let count = |c: &std::sync::atomic::AtomicU64| {
            if max_part == u64::MAX {
                c.fetch_add(1, Relaxed);
            }
        };
        let stats = &crate::stats::STATS;
        for idx in first..=last {
            let key = (ckey.clone(), idx);
            let slot = &mut out[(idx - first) as usize];
            if let Some(b) = self.mem_get(&key) {
                count(&stats.cache_hits);
                *slot = Some(ready(b));
            } else if let Some(f) = inflight.get(&key) {
                count(&stats.cache_hits);
                *slot = Some(f.clone());
            } else {
                count(&stats.cache_misses);
                if run.last().is_some_and(|l| l + 1 != idx) || run.len() as u64 >= max_part {
                    self.start_part(meta, &ckey, &run, &mut inflight, &mut out, first);
                    run.clear();
                }
                run.push(idx);
                continue;
            }
            if !run.is_empty() {
                self.start_part(meta, &ckey, &run, &mut inflight, &mut out, first);
                run.clear();
            }
        }
        if !run.is_empty() {
            self.start_part(meta, &ckey, &run, &mut inflight, &mut out, first);
        }
        out.into_iter()
            .map(|f| f.expect("every block has a future"))
            .collect()
    }

    fn mem_get(&self, key: &BlockKey) -> Option<Bytes> {
        self.blocks
            .lock()
            .unwrap()
            .lru
            .as_mut()
            .and_then(|l| l.get(key).cloned())
    }

    /// Starts one ranged GET for the consecutive blocks `run` and registers a shared future
    /// per block in `inflight` and `out`.
    fn start_part(
        self: &Arc<Self>,
        meta: &Arc<FileMeta>,
        ckey: &Arc<str>,
        run: &[u64],
        inflight: &mut HashMap<BlockKey, BlockFuture>,
        out: &mut [Option<BlockFuture>],
        first: u64,
    ) {
        let (a, b) = (run[0], *run.last().expect("non-empty run"));
        let this = self.clone();
        let meta2 = meta.clone();
        let ck = ckey.clone();
        let part = async move {
            let r = this.fetch_part(&meta2, a, b).await;
            let bad = this.bad.lock().unwrap().contains(&*ck);
            if let (Ok(blocks), false) = (&r, bad) {
                for (i, blk) in (a..=b).zip(blocks) {
                    this.remember((ck.clone(), i), blk.clone());
                }
                // Readers have the blocks from memory now; the disk copy is written behind,
                // unless the disk has fallen far behind: then this part waits for its own
                // write, which slows fetching down to what the disk absorbs (backpressure,
                // bounded memory, nothing dropped).
                let queued = this
                    .pending_stores
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (this2, meta3, ck2, blocks) =
                    (this.clone(), meta2.clone(), ck.clone(), blocks.clone());
                let write = async move {
                    this2.store(&meta3, &ck2, a, blocks).await;
                    this2
                        .pending_stores
                        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                };
                if queued >= MAX_PENDING_STORES {
                    write.await;
                } else {
                    tokio::spawn(write);
                }
            }
            let mut g = this.inflight.lock().unwrap();
            for i in a..=b {
                g.remove(&(ck.clone(), i));
            }
            r
        }
        .boxed()
        .shared();
        // The part drives itself: a prefetch needs no one awaiting it.
        tokio::spawn(part.clone().map(|_| ()));
        for (j, idx) in (a..=b).enumerate() {
            let f: BlockFuture = part
                .clone()
                .map(move |r| r.map(|v| v[j].clone()))
                .boxed()
                .shared();
            inflight.insert((ckey.clone(), idx), f.clone());
            out[(idx - first) as usize] = Some(f);
        }
    }

    fn remember(&self, key: BlockKey, b: Bytes) {
        let mut g = self.blocks.lock().unwrap();
        let Blocks { lru, bytes } = &mut *g;
        let lru = lru.as_mut().expect("lru");
        *bytes += b.len() as u64;
        if let Some(old) = lru.put(key, b) {
            *bytes -= old.len() as u64;
        }
        while *bytes > self.cfg.mem_cache_bytes {
            match lru.pop_lru() {
                Some((_, v)) => *bytes -= v.len() as u64,
                None => break,
            }
        }
    }

    /// Writes fetched blocks (starting at block `first`) to the disk cache; when that
    /// completes a large artifact, checks the whole against `sha1sum` and discards it all on a
    /// mismatch.
    async fn store(&self, meta: &FileMeta, ckey: &str, first: u64, blocks: Vec<Bytes>) {
        let Some(disk) = self.disk.clone() else {
            return;
        };
        let nblocks = meta.size.div_ceil(geometry(meta.size));
        let key = ckey.to_string();
        // Few writers at a time: each blocking task is a thread, and an unbounded number of
        // them (one per fetched part) costs far more memory than the blocks themselves.
        let Ok(writer) = self.writers.acquire().await else {
            return;
        };
        let complete = tokio::task::spawn_blocking({
            let (disk, key) = (disk.clone(), key.clone());
            move || {
                for (i, b) in (first..).zip(&blocks) {
                    disk.put(&key, i, b);
                }
                disk.blocks_of(&key) == nblocks
            }
        })
        .await
        .unwrap_or(false);
        // The whole-file check below reads, it does not write: free the writer slot.
        drop(writer);
        if self.bad.lock().unwrap().contains(&key) {
            // Raced with a failed check: whatever this part wrote must go too.
            disk.remove_key(&key);
            return;
        }
        let Some(expected) = meta.sha1sum.clone().filter(|s| is_sha1(s)) else {
            return;
        };
        if nblocks == 1 || !complete || self.verified.lock().unwrap().contains(&key) {
            return;
        }
        let size = meta.size;
        let (d2, k2) = (disk.clone(), key.clone());
        let ok = tokio::task::spawn_blocking(move || {
            let disk = d2;
            let mut h = Sha1::new();
            for i in 0..nblocks {
                match disk.get(&k2, i, block_len(size, i)) {
                    Some(b) => h.update(&b),
                    None => return None, // evicted meanwhile: cannot tell yet
                }
            }
            Some(hex::encode(h.finalize()).eq_ignore_ascii_case(&expected))
        })
        .await
        .ok()
        .flatten();
        match ok {
            Some(true) => {
                self.verified.lock().unwrap().insert(key);
            }
            Some(false) => {
                self.bad.lock().unwrap().insert(key.clone());
                tracing::error!(artifact = %meta.artifact_id, path = %meta.original_path, "the complete artifact does not match its sha1sum; discarding the cached copy");
                disk.remove_key(&key);
                self.forget_key(&key);
            }
            None => {}
        }
    }

    /// Drops what is known about an artifact (after it was deleted).
    pub fn forget(&self, meta: &FileMeta) {
        self.urls.lock().unwrap().remove(meta.artifact_id.as_str());
        self.forget_key(&content_key(meta.sha1sum.as_deref(), &meta.artifact_id));
    }

    fn forget_key(&self, ckey: &str) {
        let mut g = self.blocks.lock().unwrap();
        let Blocks { lru, bytes } = &mut *g;
        let lru = lru.as_mut().expect("lru");
        let keys: Vec<BlockKey> = lru
            .iter()
            .filter(|(k, _)| &*k.0 == ckey)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(v) = lru.pop(&k) {
                *bytes -= v.len() as u64;
            }
        }
    }

    /// A signed URL for the artifact: the cached one while young enough and not the one that
    /// just failed (`stale`), else a fresh one. One API call per artifact at a time.
    async fn url_for(&self, meta: &FileMeta, stale: Option<&str>) -> Result<String, ReadError> {
        let slot = self
            .urls
            .lock()
            .unwrap()
            .entry(Arc::from(meta.artifact_id.as_str()))
            .or_default()
            .clone();
        let mut g = slot.lock().await;
        if let Some((u, until)) = &*g {
            if Instant::now() < *until && Some(u.as_str()) != stale {
                return Ok(u.clone());
            }
        }
        let s = self
            .remote
            .signed_url(meta, stale)
            .await
            .map_err(|e| match e {
                ApiError::NotFound { .. } => ReadError::NotFound,
                e => ReadError::Api(e),
            })?;
        tracing::debug!(artifact = %meta.artifact_id, url = %redact_url(&s.url), good_for_s = s.good_for.as_secs(), "signed URL");
        *g = Some((
            s.url.clone(),
            Instant::now() + s.good_for.min(self.cfg.url_max_age),
        ));
        Ok(s.url)
    }

    /// Fetches blocks `a..=b` in one ranged GET, with retries, and splits them.
    async fn fetch_part(&self, meta: &FileMeta, a: u64, b: u64) -> Result<Vec<Bytes>, ReadError> {
        let bs = geometry(meta.size);
        let start = a * bs;
        let end = ((b + 1) * bs).min(meta.size);
        let t0 = Instant::now();
        let bytes = self.fetch_range(meta, start, end).await?;
        tracing::trace!(artifact = %meta.artifact_id, start, len = end - start, ms = t0.elapsed().as_millis() as u64, "fetched part");
        Ok((a..=b)
            .map(|i| {
                let from = (i * bs - start) as usize;
                let to = (((i + 1) * bs).min(end) - start) as usize;
                bytes.slice(from..to)
            })
            .collect())
    }

    /// Fetches `[start, end)` with bounded retries. A transfer cut short keeps what arrived
    /// and resumes from the next byte; an expired URL is refreshed without counting as a
    /// failure; a whole-file fetch is checked against `sha1sum` (refetched once, then refused).
    async fn fetch_range(&self, meta: &FileMeta, start: u64, end: u64) -> Result<Bytes, ReadError> {
        let whole = start == 0 && end == meta.size;
        let mut began = Instant::now();
        // The deadline counts storage time only: it starts once the first signed URL is in
        // hand, so waiting for the API's rate-limit window does not use up the read budget.
        let mut deadline: Option<Instant> = None;
        let mut failures = 0u32;
        let mut refreshes = 0u32;
        let mut corrupt = 0u32;
        let mut stale: Option<String> = None;
        let mut buf = BytesMut::new();
        loop {
            let permit = self.permits.acquire().await.expect("semaphore");
            let url = self.url_for(meta, stale.as_deref()).await?;
            let deadline = *deadline.get_or_insert_with(|| {
                began = Instant::now();
                began + self.cfg.read_timeout
            });
            let pos = start + buf.len() as u64;
            let res = {
                tokio::time::timeout_at(
                    deadline.into(),
                    self.remote.fetch_range(&url, pos, end, meta.size),
                )
                .await
                .unwrap_or_else(|_| Err(StorageError::Transient("read timed out".into())))
            };
            drop(permit);
            let err = match res {
                Ok(b) => {
                    crate::stats::STATS
                        .bytes_fetched
                        .fetch_add(b.len() as u64, Relaxed);
                    buf.extend_from_slice(&b);
                    let b = std::mem::take(&mut buf).freeze();
                    if whole {
                        if let Some(expected) = meta.sha1sum.as_deref().filter(|s| is_sha1(s)) {
                            let got = hex::encode(Sha1::digest(&b));
                            if !got.eq_ignore_ascii_case(expected) {
                                corrupt += 1;
                                tracing::warn!(artifact = %meta.artifact_id, path = %meta.original_path, %expected, %got, "content does not match sha1sum");
                                if corrupt >= 2 {
                                    return Err(ReadError::Corrupt {
                                        expected: expected.to_string(),
                                        got,
                                    });
                                }
                                continue;
                            }
                        }
                    }
                    return Ok(b);
                }
                Err(StorageError::NotFound) => return Err(ReadError::NotFound),
                Err(StorageError::Expired(m)) if refreshes < MAX_REFRESHES => {
                    refreshes += 1;
                    tracing::debug!(artifact = %meta.artifact_id, reason = %m, "signed URL refused; refreshing");
                    stale = Some(url);
                    continue;
                }
                Err(StorageError::Partial { got, reason }) => {
                    crate::stats::STATS
                        .bytes_fetched
                        .fetch_add(got.len() as u64, Relaxed);
                    buf.extend_from_slice(&got);
                    StorageError::Transient(format!("{reason} after {} bytes", got.len()))
                }
                Err(e) => e,
            };
            failures += 1;
            if failures >= 6 || Instant::now() >= deadline {
                return Err(ReadError::GaveUp {
                    attempts: failures,
                    secs: began.elapsed().as_secs(),
                    last: err.to_string(),
                });
            }
            tracing::warn!(artifact = %meta.artifact_id, path = %meta.original_path, attempt = failures, error = %err, "storage request failed; retrying");
            crate::http::backoff(failures).await;
        }
    }
}

/// Length of block `idx` of an artifact of `size` bytes.
fn block_len(size: u64, idx: u64) -> u64 {
    let bs = geometry(size);
    size.saturating_sub(idx * bs).min(bs)
}

fn is_sha1(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
