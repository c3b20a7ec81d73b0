//! Logging setup. `-v` raises bkfs's own level (info → debug → trace); `RUST_LOG` may set
//! anything else. The HTTP stack's own logs are capped at `info` whatever is asked, because at
//! debug/trace they print request headers, and the `Authorization` header holds the token.
//!
//! Logging never crashes or blocks the daemon. In the foreground, lines go through a bounded
//! queue to a thread of their own that writes stderr: a full pipe blocks only that thread
//! (lines beyond the queue are dropped), and a closed one (`EPIPE`, SIGPIPE is ignored) ends
//! stderr logging for the rest of the run. Colour only when stderr is a terminal and
//! `NO_COLOR` is unset. Warnings and errors repeated from one place are bounded
//! ([`Repeats`]): at most [`BURST`] a minute each; how many were dropped is logged at exit.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Lines waiting for stderr; more are dropped rather than waited for.
const QUEUE: usize = 4096;
/// Warnings/errors from one place logged per [`WINDOW`].
pub const BURST: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);

/// Log lines dropped (queue full, stderr closed) or held back as repeats.
static DROPPED: AtomicU64 = AtomicU64::new(0);
static REPEATS: AtomicU64 = AtomicU64::new(0);
/// Lines queued for stderr and not yet written.
static QUEUED: AtomicU64 = AtomicU64::new(0);
/// Set once stderr refused a write: nothing more will be written there.
static CLOSED: AtomicBool = AtomicBool::new(false);

pub fn init(verbose: u8, file: Option<std::fs::File>) {
    // SAFETY: setting a signal disposition; a write to a closed pipe then fails with EPIPE
    // instead of killing the process (Rust's runtime does this too; be explicit).
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let own = match verbose {
        0 => "bkfs=info",
        1 => "bkfs=debug",
        _ => "bkfs=trace",
    };
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("warn,{own}"));
    let mut filter = EnvFilter::try_new(&base).unwrap_or_else(|_| EnvFilter::new(own));
    for d in [
        "hyper=info",
        "hyper_util=info",
        "reqwest=info",
        "h2=info",
        "rustls=info",
    ] {
        filter = filter.add_directive(d.parse().expect("static directive"));
    }
    let repeats = Repeats(Mutex::new(Budget::new(BURST, WINDOW)));
    let fmt = tracing_subscriber::fmt::layer().log_internal_errors(false);
    let _ = match file {
        Some(f) => tracing_subscriber::registry()
            .with(filter)
            .with(repeats)
            .with(fmt.with_ansi(false).with_writer(Mutex::new(f)))
            .try_init(),
        None => {
            let ansi = colour(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            );
            tracing_subscriber::registry()
                .with(filter)
                .with(repeats)
                .with(fmt.with_ansi(ansi).with_writer(StderrQueue::start()))
                .try_init()
        }
    };
}

/// Whether to colour: a terminal, and `NO_COLOR` absent or empty (no-color.org).
pub fn colour(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs how many lines were dropped or held back, if any (call once, at exit).
pub fn report_dropped() {
    let (d, r) = (
        DROPPED.load(Ordering::Relaxed),
        REPEATS.load(Ordering::Relaxed),
    );
    if r > 0 {
        tracing::info!(
            held_back = r,
            "repeated warnings were logged at most {BURST} times a minute each"
        );
    }
    if d > 0 {
        tracing::info!(
            dropped = d,
            "log lines were dropped (stderr full or closed)"
        );
    }
}

/// Waits (at most `limit`) for queued stderr lines to be written, so the last lines of a
/// run are not lost at exit; a stuck or closed stderr just runs out the bound.
pub fn flush(limit: Duration) {
    let t = Instant::now();
    while QUEUED.load(Ordering::Relaxed) > 0
        && !CLOSED.load(Ordering::Relaxed)
        && t.elapsed() < limit
    {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes stderr from its own thread; see the module docs.
#[derive(Clone)]
struct StderrQueue(SyncSender<Vec<u8>>);

impl StderrQueue {
    fn start() -> StderrQueue {
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
        // Without a thread the receiver is gone: every line is dropped, never blocking.
        let _ = std::thread::Builder::new()
            .name("bkfs-log".into())
            .spawn(move || {
                let mut err = std::io::stderr();
                for line in rx.iter() {
                    let ok = err.write_all(&line).is_ok();
                    QUEUED.fetch_sub(1, Ordering::Relaxed);
                    if !ok {
                        // Closed (EPIPE) or broken: stop; senders then see a closed queue.
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                        CLOSED.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            });
        StderrQueue(tx)
    }
}

/// One event's line, queued when the formatter is done with it.
struct QueuedLine {
    buf: Vec<u8>,
    tx: SyncSender<Vec<u8>>,
}

impl Write for QueuedLine {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        QUEUED.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(std::mem::take(&mut self.buf)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                QUEUED.fetch_sub(1, Ordering::Relaxed);
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<'a> MakeWriter<'a> for StderrQueue {
    type Writer = QueuedLine;
    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            buf: Vec::with_capacity(256),
            tx: self.0.clone(),
        }
    }
}

/// A per-key allowance of `burst` events per `window` (pure: time is passed in).
#[derive(Debug)]
pub struct Budget<K> {
    burst: u32,
    window: Duration,
    seen: HashMap<K, (Instant, u32)>,
}

impl<K: std::hash::Hash + Eq> Budget<K> {
    pub fn new(burst: u32, window: Duration) -> Budget<K> {
        Budget {
            burst,
            window,
            seen: HashMap::new(),
        }
    }

    /// Whether an event of `key` at `now` may be logged.
    pub fn admit(&mut self, key: K, now: Instant) -> bool {
        if self.seen.len() > 4096 {
            let window = self.window;
            self.seen
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
        }
        let e = self.seen.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 <= self.burst
    }
}

/// Where an event comes from: its callsite, or for `log` records (fuser logs through `log`)
/// the module and line they carry.
type Origin = (String, u32);

/// Drops warnings and errors beyond the [`Budget`] of their origin.
struct Repeats(Mutex<Budget<Origin>>);

#[derive(Default)]
struct LogOrigin {
    module: Option<String>,
    line: Option<u64>,
}

impl tracing::field::Visit for LogOrigin {
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        if f.name() == "log.module_path" || (f.name() == "log.target" && self.module.is_none()) {
            self.module = Some(v.to_string());
        }
    }
    fn record_u64(&mut self, f: &tracing::field::Field, v: u64) {
        if f.name() == "log.line" {
            self.line = Some(v);
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber> Layer<S> for Repeats {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let m = event.metadata();
        // Levels order by verbosity: anything more verbose than WARN passes.
        if *m.level() > Level::WARN {
            return true;
        }
        let origin = if m.target() == "log" || m.fields().field("log.line").is_some() {
            let mut o = LogOrigin::default();
            event.record(&mut o);
            (o.module.unwrap_or_default(), o.line.unwrap_or(0) as u32)
        } else {
            (
                format!("{}:{}", m.module_path().unwrap_or(""), m.name()),
                m.line().unwrap_or(0),
            )
        };
        let ok = self
            .0
            .lock()
            .map(|mut b| b.admit(origin, Instant::now()))
            .unwrap_or(true);
        if !ok {
            REPEATS.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_bounds_each_key_per_window() {
        let t0 = Instant::now();
        let mut b = Budget::new(3, Duration::from_secs(60));
        let admitted = (0..100).filter(|_| b.admit("a", t0)).count();
        assert_eq!(admitted, 3);
        // Another key has its own allowance.
        assert!(b.admit("b", t0));
        // A new window starts afresh.
        let t1 = t0 + Duration::from_secs(61);
        assert!(b.admit("a", t1));
        assert_eq!((0..10).filter(|_| b.admit("a", t1)).count(), 2);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())));
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    proptest::proptest! {
        #[test]
        fn budget_never_admits_more_than_burst_per_window(
            steps in proptest::collection::vec((0u8..4, 0u64..5_000), 1..300),
            burst in 1u32..6,
        ) {
            let t0 = Instant::now();
            let window = Duration::from_millis(1000);
            let mut b = Budget::new(burst, window);
            let mut now = t0;
            // admitted events per key per window start
            let mut log: HashMap<u8, Vec<Instant>> = HashMap::new();
            for (key, dt) in steps {
                now += Duration::from_millis(dt / 10);
                if b.admit(key, now) {
                    log.entry(key).or_default().push(now);
                }
            }
            for times in log.values() {
                for (i, t) in times.iter().enumerate() {
                    let within = times[i..].iter().filter(|u| **u - *t < window).count();
                    proptest::prop_assert!(within as u32 <= 2 * burst);
                }
            }
        }
    }
}
