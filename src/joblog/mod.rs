//! Job logs as files: fetching a job's raw log, rendering it to plain text, keeping it, and
//! following it while the job runs.
//!
//! - **Fetching.** A log is fetched the first time something opens it (never for `stat`), as
//!   `text/plain`: the whole log once, then only its growth, with one suffix range
//!   (`bytes=-N`, the only range the endpoint takes) that covers what is new: its
//!   `Content-Range` tells where it starts and how big the log is, the overlap is skipped, and
//!   a gap is asked for exactly. A body that
//!   stalls or breaks is resumed where it stopped, within the same attempt and time bounds as
//!   artifact reads; then `EIO`. A 404 means the log is gone (retention): `ENOENT`, no retry.
//! - **Rendering** ([`render`]) is streaming and emits complete lines only, so a growing log
//!   never shows half an escape sequence. `--raw-logs` serves the bytes as stored.
//! - **Where the text lives.** While mounted, in an anonymous temporary file per log (so a
//!   1 GiB log costs disk, not memory). A finished job's log is also stored in the disk cache
//!   under `l1-<job id>-<format>`: 128 KiB blocks with the cache's CRC and temp-file-and-rename
//!   crash safety, plus a meta block (index [`META`]) with the rendered and raw sizes, written
//!   last; from then on reads come from there and the temporary file is closed. A later mount
//!   finds it there with no request at all, even for `stat`.
//! - **Sizes.** Until a log is fetched its size is unknown and `stat` shows 0 with attributes
//!   the kernel must not cache; the adapter opens such logs (and running jobs' logs) with
//!   direct I/O, so reads are never cut at a stale size. Once fetched, `st_size` is exactly
//!   what a full read returns.
//! - **Running jobs.** A log whose job has not finished is checked for growth at most once per
//!   `refresh` interval, when something looks at it (`stat`, a read at its end, an open), so an
//!   idle mount makes no request. The first check after the job finished is the last.

pub mod render;

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::backend::{BackendError, LogSource};
use crate::content::cache::DiskCache;
use crate::tree::LogMeta;

/// How logs are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Plain text: markers, escape sequences and `\r` rewrites resolved.
    Plain,
    /// Plain text, each line prefixed with its UTC time.
    Timestamps,
    /// The bytes as stored.
    Raw,
}

impl LogFormat {
    fn tag(self) -> &'static str {
        match self {
            LogFormat::Plain => "plain",
            LogFormat::Timestamps => "ts",
            LogFormat::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("the log is gone")]
    NotFound,
    #[error("access denied: {0}")]
    Access(String),
    #[error("{0}")]
    Io(String),
}

impl From<BackendError> for LogError {
    fn from(e: BackendError) -> LogError {
        match e {
            BackendError::NotFound { .. } => LogError::NotFound,
            BackendError::Denied { message, .. } => LogError::Access(message),
            e => LogError::Io(e.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// How often a running job's log is checked for growth, at most.
    pub refresh: Duration,
    /// Bound on retrying one fetch without progress.
    pub read_timeout: Duration,
}

/// What `stat` shows of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogAttr {
    pub size: u64,
    /// The size is final (a finished job's log, fetched): the kernel may cache it.
    pub settled: bool,
}

/// Disk-cache block of the rendered text (the size of a typical FUSE read).
const BLOCK: u64 = 128 << 10;
/// Index of the meta block (rendered size, raw size) of a stored log.
pub const META: u64 = u64::MAX;
/// Failed attempts (errors, breaks, stalls) of one fetch before it fails.
const ATTEMPTS: u32 = 6;
/// Bounds of the suffix a growth check asks for (see [`State::suffix_guess`]).
const MIN_SUFFIX: u64 = 64 << 10;
const MAX_SUFFIX: u64 = 8 << 20;
/// Times one fetch asks again for a gap (the log grew by more than the suffix asked).
const MAX_GAPS: u32 = 3;
/// How often a long log fetch says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Logs fetched at once.
const CONCURRENT_FETCHES: usize = 4;

/// Where a log's rendered text is.
enum Data {
    /// Nothing fetched yet.
    None,
    /// In a temporary file of this length.
    Local(std::fs::File),
    /// In the disk cache (a finished log stored by an earlier mount).
    Disk,
}

/// What only the fetching task touches.
struct State {
    data: Data,
    /// `None` for raw logs.
    renderer: Option<render::Renderer>,
    /// Raw bytes consumed so far.
    raw_len: u64,
    /// Rendered bytes written so far.
    text_len: u64,
    /// Raw bytes the last fetch brought.
    last_growth: u64,
}

impl State {
    /// The suffix to ask for in a growth check: at least [`MIN_SUFFIX`], twice the last
    /// growth, at most [`MAX_SUFFIX`].
    fn suffix_guess(&self) -> u64 {
        (self.last_growth.saturating_mul(2)).clamp(MIN_SUFFIX, MAX_SUFFIX)
    }
}

struct Entry {
    state: tokio::sync::Mutex<State>,
    /// Rendered bytes available to reads.
    size: AtomicU64,
    /// Raw size, once known (`u64::MAX` before).
    raw_size: AtomicU64,
    /// Fetched at least once, or found in the disk cache.
    known: AtomicBool,
    /// The job finished and everything after that was fetched: the log no longer changes.
    settled: AtomicBool,
    /// The log answered 404.
    gone: AtomicBool,
    /// When the log was last checked for growth.
    checked: Mutex<Option<Instant>>,
    /// A background growth check is running.
    checking: AtomicBool,
}

pub struct LogStore {
    src: Arc<dyn LogSource>,
    disk: Option<Arc<DiskCache>>,
    cfg: LogConfig,
    rt: tokio::runtime::Handle,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    fetches: tokio::sync::Semaphore,
}

impl LogStore {
    pub fn new(
        src: Arc<dyn LogSource>,
        disk: Option<Arc<DiskCache>>,
        cfg: LogConfig,
        rt: tokio::runtime::Handle,
    ) -> Arc<LogStore> {
        Arc::new(LogStore {
            src,
            disk,
            cfg,
            rt,
            entries: Mutex::new(HashMap::new()),
            fetches: tokio::sync::Semaphore::new(CONCURRENT_FETCHES),
        })
    }

    pub fn format(&self) -> LogFormat {
        self.cfg.format
    }

    /// Forgets what memory holds of these jobs' logs (an evicted build's), so a long-lived
    /// pipeline mount does not grow with every build it opens. A later look starts again
    /// from the disk cache (finished logs are stored there) or the API.
    pub fn forget<'a>(&self, jobs: impl IntoIterator<Item = &'a str>) {
        let mut m = self.entries.lock().unwrap();
        for job in jobs {
            m.remove(job);
        }
    }

    /// How many jobs' logs memory holds.
    #[cfg(test)]
    pub(crate) fn known(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    fn key(&self, job: &str) -> String {
        format!(
            "l1-{}-{}",
            crate::content::cache::key_part(job),
            self.cfg.format.tag()
        )
    }

    fn new_renderer(&self) -> Option<render::Renderer> {
        match self.cfg.format {
            LogFormat::Plain => Some(render::Renderer::new(render::Mode::Plain)),
            LogFormat::Timestamps => Some(render::Renderer::new(render::Mode::Timestamps)),
            LogFormat::Raw => None,
        }
    }

    /// The entry of a job's log; a new one looks in the disk cache first (no network).
    fn entry(&self, job: &str) -> Arc<Entry> {
        if let Some(e) = self.entries.lock().unwrap().get(job) {
            return e.clone();
        }
        let stored = self.disk.as_ref().and_then(|d| {
            let m = d.get(&self.key(job), META, 16)?;
            let text = u64::from_le_bytes(m[..8].try_into().ok()?);
            let raw = u64::from_le_bytes(m[8..].try_into().ok()?);
            Some((text, raw))
        });
        let e = Arc::new(Entry {
            state: tokio::sync::Mutex::new(State {
                data: if stored.is_some() {
                    Data::Disk
                } else {
                    Data::None
                },
                renderer: self.new_renderer(),
                raw_len: stored.map_or(0, |s| s.1),
                text_len: stored.map_or(0, |s| s.0),
                last_growth: 0,
            }),
            size: AtomicU64::new(stored.map_or(0, |s| s.0)),
            raw_size: AtomicU64::new(stored.map_or(u64::MAX, |s| s.1)),
            known: AtomicBool::new(stored.is_some()),
            settled: AtomicBool::new(stored.is_some()),
            gone: AtomicBool::new(false),
            checked: Mutex::new(None),
            checking: AtomicBool::new(false),
        });
        self.entries
            .lock()
            .unwrap()
            .entry(job.to_string())
            .or_insert(e)
            .clone()
    }

    /// What `stat` shows, from memory or the disk cache. For a running job's log that is due
    /// for a growth check, starts one in the background.
    pub fn attr(self: &Arc<Self>, meta: &LogMeta) -> LogAttr {
        let e = self.entry(&meta.job_id);
        let settled = e.settled.load(Ordering::Acquire);
        if !settled && e.known.load(Ordering::Acquire) && self.due(&e) {
            self.check_in_background(meta, &e);
        }
        LogAttr {
            size: e.size.load(Ordering::Acquire),
            settled,
        }
    }

    /// The raw size, once known.
    pub fn raw_size(&self, job: &str) -> Option<u64> {
        let e = self.entries.lock().unwrap().get(job).cloned()?;
        Some(e.raw_size.load(Ordering::Acquire)).filter(|&s| s != u64::MAX)
    }

    /// Whether the log answered 404 (retention) during this mount.
    pub fn is_gone(&self, job: &str) -> bool {
        self.entries
            .lock()
            .unwrap()
            .get(job)
            .is_some_and(|e| e.gone.load(Ordering::Acquire))
    }

    fn due(&self, e: &Entry) -> bool {
        e.checked
            .lock()
            .unwrap()
            .is_none_or(|t| t.elapsed() >= self.cfg.refresh)
    }

    fn check_in_background(self: &Arc<Self>, meta: &LogMeta, e: &Arc<Entry>) {
        if e.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let (me, meta, e) = (self.clone(), meta.clone(), e.clone());
        self.rt.spawn(async move {
            if let Err(err) = me.update(&meta, &e).await {
                tracing::warn!(job = %meta.job_id, error = %err, "cannot check the log for growth");
            }
            e.checking.store(false, Ordering::Release);
        });
    }

    /// Fetches a finished job's log in the background, unless it is known or being fetched
    /// (a directory scan is about to open it: see the filesystem's sibling prefetch).
    pub fn prefetch(self: &Arc<Self>, meta: &LogMeta) {
        let e = self.entry(&meta.job_id);
        if !meta.finished
            || e.known.load(Ordering::Acquire)
            || e.gone.load(Ordering::Acquire)
            || e.checking.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let (me, meta) = (self.clone(), meta.clone());
        self.rt.spawn(async move {
            if let Err(err) = me.update(&meta, &e).await {
                tracing::debug!(job = %meta.job_id, error = %err, "log prefetch failed");
            }
            e.checking.store(false, Ordering::Release);
        });
    }

    /// Makes the log readable: fetched (or found on disk) and, for a running job, checked for
    /// growth if due. What `open` waits for.
    pub async fn open(&self, meta: &LogMeta) -> Result<LogAttr, LogError> {
        let e = self.entry(&meta.job_id);
        if !e.known.load(Ordering::Acquire) || (!e.settled.load(Ordering::Acquire) && self.due(&e))
        {
            self.update(meta, &e).await?;
        }
        if e.gone.load(Ordering::Acquire) {
            return Err(LogError::NotFound);
        }
        Ok(LogAttr {
            size: e.size.load(Ordering::Acquire),
            settled: e.settled.load(Ordering::Acquire),
        })
    }

    /// Up to `size` bytes at `offset`. A read at the end of a running job's log first checks
    /// for growth if due.
    pub async fn read(&self, meta: &LogMeta, offset: u64, size: u32) -> Result<Bytes, LogError> {
        let e = self.entry(&meta.job_id);
        if !e.known.load(Ordering::Acquire)
            || (offset >= e.size.load(Ordering::Acquire)
                && !e.settled.load(Ordering::Acquire)
                && self.due(&e))
        {
            self.update(meta, &e).await?;
        }
        for _ in 0..2 {
            let st = e.state.lock().await;
            let len = e.size.load(Ordering::Acquire);
            if offset >= len {
                return Ok(Bytes::new());
            }
            let n = (size as u64).min(len - offset) as usize;
            match &st.data {
                Data::Local(f) => {
                    let mut buf = vec![0u8; n];
                    f.read_exact_at(&mut buf, offset)
                        .map_err(|err| LogError::Io(format!("log buffer: {err}")))?;
                    return Ok(buf.into());
                }
                Data::Disk => {
                    if let Some(b) = self.read_disk(&meta.job_id, offset, n as u64, len) {
                        return Ok(b);
                    }
                    // Evicted or damaged since: fetch the log again.
                    tracing::info!(job = %meta.job_id, "stored log incomplete; fetching it again");
                    drop(st);
                    self.reset(&e).await;
                    self.update(meta, &e).await?;
                }
                Data::None => return Ok(Bytes::new()),
            }
        }
        Err(LogError::Io("the stored log keeps disappearing".into()))
    }

    fn read_disk(&self, job: &str, offset: u64, n: u64, len: u64) -> Option<Bytes> {
        let disk = self.disk.as_ref()?;
        let key = self.key(job);
        let mut out = Vec::with_capacity(n as usize);
        let end = offset + n;
        let mut pos = offset;
        while pos < end {
            let idx = pos / BLOCK;
            let bstart = idx * BLOCK;
            let blen = BLOCK.min(len - bstart);
            let b = disk.get(&key, idx, blen)?;
            let from = (pos - bstart) as usize;
            let to = ((end - bstart).min(blen)) as usize;
            out.extend_from_slice(&b[from..to]);
            pos = bstart + to as u64;
        }
        Some(out.into())
    }

    async fn reset(&self, e: &Entry) {
        let mut st = e.state.lock().await;
        st.data = Data::None;
        st.renderer = self.new_renderer();
        st.raw_len = 0;
        st.text_len = 0;
        st.last_growth = 0;
        e.size.store(0, Ordering::Release);
        e.known.store(false, Ordering::Release);
        e.settled.store(false, Ordering::Release);
    }

    /// Fetches what is new of the log (all of it the first time), single-flight per log.
    async fn update(&self, meta: &LogMeta, e: &Entry) -> Result<(), LogError> {
        let mut st = e.state.lock().await;
        if e.settled.load(Ordering::Acquire) {
            return Ok(());
        }
        if e.known.load(Ordering::Acquire) && !self.due(e) {
            // Someone else checked while we waited for the lock.
            return Ok(());
        }
        // Read before fetching: if the job finishes meanwhile, the next check fetches the end.
        let finished = meta.finished;
        let _permit = self
            .fetches
            .acquire()
            .await
            .expect("semaphore never closed");
        let counted = crate::stats::STATS.log_fetch_started();
        let r = self.fetch_new(meta, &mut st).await;
        drop(counted);
        if let Err(err) = &r {
            crate::stats::STATS.error(format!("job log {}: {err}", meta.job_id));
        }
        *e.checked.lock().unwrap() = Some(Instant::now());
        e.size.store(st.text_len, Ordering::Release);
        match r {
            Ok(()) => {}
            Err(LogError::NotFound) => {
                e.gone.store(true, Ordering::Release);
                tracing::info!(job = %meta.job_id, "the job's log is gone (404)");
                return Err(LogError::NotFound);
            }
            Err(err) => return Err(err),
        }
        if finished {
            if let Some(r) = st.renderer.as_mut() {
                let mut out = Vec::new();
                r.finish(&mut out);
                let at = st.text_len;
                append(&mut st.data, at, &out)?;
                st.text_len += out.len() as u64;
                e.size.store(st.text_len, Ordering::Release);
            }
            e.settled.store(true, Ordering::Release);
            self.store(meta, &mut st).await;
        }
        e.raw_size.store(st.raw_len, Ordering::Release);
        e.known.store(true, Ordering::Release);
        Ok(())
    }

    /// Fetches the raw bytes after `st.raw_len` and renders them, resuming after stalls and
    /// breaks; fails after [`ATTEMPTS`] failed attempts (progress or not: a server that
    /// drips a few bytes per attempt must not hold a reader forever), or once a failure
    /// comes `read_timeout` after the last progress.
    async fn fetch_new(&self, meta: &LogMeta, st: &mut State) -> Result<(), LogError> {
        let stall =
            (self.cfg.read_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(10));
        let mut failures = 0u32;
        let (mut gaps, mut exact) = (0u32, None::<u64>);
        let mut last_progress = Instant::now();
        let mut reported = Instant::now();
        let mut last_err = String::new();
        loop {
            if failures >= ATTEMPTS
                || (failures > 0 && last_progress.elapsed() >= self.cfg.read_timeout)
            {
                tracing::error!(job = %meta.job_id, attempts = failures, error = %last_err, "cannot fetch the job's log");
                return Err(LogError::Io(last_err));
            }
            if failures > 0 {
                crate::http::backoff(failures).await;
            }
            let (build, job) = (meta.build_number, meta.job_id.as_str());
            // The whole log first. Then one suffix range that most likely covers what is new
            // (its Content-Range says where it starts; the overlap is skipped), so a check
            // costs one request; a gap (the log grew by more) is then asked for exactly.
            let suffix =
                (st.raw_len > 0).then(|| exact.take().unwrap_or_else(|| st.suffix_guess()));
            let stream = self.src.log_fetch(build, job, suffix).await;
            let mut stream = match stream {
                Ok(s) => s,
                Err(err @ (BackendError::NotFound { .. } | BackendError::Denied { .. })) => {
                    return Err(err.into())
                }
                Err(err) => {
                    failures += 1;
                    last_err = err.to_string();
                    continue;
                }
            };
            match stream.total {
                Some(t) if t == st.raw_len => return Ok(()),
                Some(t) if t < st.raw_len => {
                    // The log was replaced by a shorter one: start over.
                    tracing::warn!(
                        job,
                        was = st.raw_len,
                        now = t,
                        "the job's log shrank; fetching it again"
                    );
                    st.data = Data::None;
                    st.renderer = self.new_renderer();
                    st.raw_len = 0;
                    st.text_len = 0;
                    continue;
                }
                _ => {}
            }
            if stream.start > st.raw_len {
                gaps += 1;
                match stream.total {
                    Some(t) if gaps <= MAX_GAPS => exact = Some(t - st.raw_len),
                    _ => {
                        failures += 1;
                        last_err = format!(
                            "the log's suffix starts at {} past the {} bytes we have",
                            stream.start, st.raw_len
                        );
                    }
                }
                continue;
            }
            let before = st.raw_len;
            let mut skip = st.raw_len - stream.start;
            let mut out = Vec::new();
            let mut progressed = false;
            let mut done = false;
            while !done {
                let chunk = match tokio::time::timeout(stall, stream.body.next()).await {
                    Ok(Some(Ok(c))) => c,
                    Ok(None) => {
                        done = true;
                        continue;
                    }
                    Ok(Some(Err(err))) => {
                        last_err = format!("the log's body broke off: {err}");
                        break;
                    }
                    Err(_) => {
                        last_err = format!("the log's body stalled for {}s", stall.as_secs());
                        break;
                    }
                };
                let mut c = &chunk[..];
                if skip > 0 {
                    let k = (skip as usize).min(c.len());
                    c = &c[k..];
                    skip -= k as u64;
                }
                if c.is_empty() {
                    continue;
                }
                self.consume(st, c, &mut out)?;
                progressed = true;
                if reported.elapsed() >= PROGRESS_EVERY {
                    reported = Instant::now();
                    tracing::info!(job = %meta.job_id, raw_bytes = st.raw_len, total = ?stream.total, "fetching a big job log");
                }
            }
            if progressed {
                last_progress = Instant::now();
                st.last_growth = st.raw_len - before;
            }
            if done {
                if let Some(t) = stream.total {
                    if st.raw_len < t {
                        last_err = format!("the log's body ended at {} of {t} bytes", st.raw_len);
                        failures += 1;
                        continue;
                    }
                }
                return Ok(());
            }
            failures += 1;
            tracing::warn!(job = %meta.job_id, attempt = failures, error = %last_err, "log fetch interrupted; resuming");
        }
    }

    /// Renders raw bytes onto the log's text.
    fn consume(&self, st: &mut State, raw: &[u8], out: &mut Vec<u8>) -> Result<(), LogError> {
        st.raw_len += raw.len() as u64;
        crate::stats::STATS
            .log_bytes
            .fetch_add(raw.len() as u64, Ordering::Relaxed);
        let text: &[u8] = match st.renderer.as_mut() {
            Some(r) => {
                out.clear();
                r.feed(raw, out);
                out
            }
            None => raw,
        };
        append(&mut st.data, st.text_len, text)?;
        st.text_len += text.len() as u64;
        Ok(())
    }

    /// Stores a settled log in the disk cache (blocks first, the meta block last, off the
    /// async workers); once stored, reads come from there and the temporary file is closed.
    async fn store(&self, meta: &LogMeta, st: &mut State) {
        let (Some(disk), Data::Local(f)) = (self.disk.clone(), &st.data) else {
            return;
        };
        let Ok(f) = f.try_clone() else {
            return;
        };
        let key = self.key(&meta.job_id);
        let (len, raw_len) = (st.text_len, st.raw_len);
        let stored = tokio::task::spawn_blocking(move || {
            let mut idx = 0;
            let mut buf = vec![0u8; BLOCK as usize];
            while idx * BLOCK < len {
                let n = BLOCK.min(len - idx * BLOCK) as usize;
                f.read_exact_at(&mut buf[..n], idx * BLOCK).ok()?;
                disk.put(&key, idx, &buf[..n]);
                idx += 1;
            }
            let mut m = Vec::with_capacity(16);
            m.extend_from_slice(&len.to_le_bytes());
            m.extend_from_slice(&raw_len.to_le_bytes());
            disk.put(&key, META, &m);
            // A cache too small for the log (or a failed write) keeps the temporary file.
            disk.get(&key, META, 16).map(|_| ())
        })
        .await;
        if let Ok(Some(())) = stored {
            st.data = Data::Disk;
        }
    }

    /// `rm` of a log file.
    pub async fn delete(&self, meta: &LogMeta) -> crate::backend::Result<()> {
        self.src.log_delete(meta.build_number, &meta.job_id).await?;
        if let Some(d) = &self.disk {
            d.remove_key(&self.key(&meta.job_id));
        }
        if let Some(e) = self.entries.lock().unwrap().get(&meta.job_id) {
            e.gone.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Appends `bytes` at `at` (the text's current length) to the log's temporary file, creating
/// it on first use.
fn append(d: &mut Data, at: u64, bytes: &[u8]) -> Result<(), LogError> {
    if bytes.is_empty() {
        return Ok(());
    }
    if !matches!(d, Data::Local(_)) {
        let f = tempfile::tempfile().map_err(|e| LogError::Io(format!("log buffer: {e}")))?;
        *d = Data::Local(f);
    }
    let Data::Local(f) = d else { unreachable!() };
    f.write_all_at(bytes, at)
        .map_err(|e| LogError::Io(format!("log buffer: {e}")))
}

#[cfg(test)]
mod tests;
