//! `scripts/soak`: a long-running soak of the real `bkfs` binary against the project's fake
//! Buildkite on 127.0.0.1, with faults injected at a few percent and a small, enforced API
//! rate limit. Not a test by itself (`tests/it/soak.rs` runs a 30-second version).
//!
//! 16 threads read for `--minutes N` (default 10) or `--seconds N`: random 4 KiB–1 MiB
//! `pread`s and whole-file reads, half of them `O_DIRECT` (so they reach bkfs rather than the
//! page cache), each checked byte for byte against the artifact. A read either returns the
//! right bytes or an error (counted by kind); a wrong byte, a short read or a read that takes
//! longer than 60 s is a finding. After the run, with faults off, every file is read once
//! more and must come back right. The daemon's RSS is sampled throughout.
//!
//! Exit status: 0 when nothing was found, 1 on a finding, 2 when the soak could not start,
//! 130 when interrupted (SIGINT/SIGTERM stop the run early; the mount is always removed).
//!
//! `--week` runs the week-long pipeline mount of `soak/week.rs` instead (builds appearing and
//! being opened, the daemon's RSS over time).
//!
//! The reads are `soak/reads.rs`, the fault schedule `soak/faults.rs`, mounting and the
//! scratch directory `soak/process.rs`, the week-long soak `soak/week.rs`.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bkfs_fake::{FakeBuild, FakeServer};
use bkfs_tools::{daemon_pids, rss_kib};
use bytes::Bytes;

#[path = "soak/faults.rs"]
mod faults;
#[path = "soak/process.rs"]
mod process;
#[path = "soak/reads.rs"]
mod reads;
#[path = "soak/week.rs"]
mod week;

use faults::{disarm, inject_faults};
use process::{alive, mount, run_bounded, wait_gone, Workdir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reads::{errno_name, full_op, pread_op, Kind, Outcome};

const TOKEN: &str = "soak-token";
const BUILD: &str = "soak/pipeline/1";
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// A read slower than this is a hang.
const HANG: Duration = Duration::from_secs(60);
/// How long the workers get to finish their last read once the time is up.
const GRACE: Duration = Duration::from_secs(75);
/// Latency samples kept for percentiles.
const MAX_SAMPLES: usize = 4_000_000;
/// Upper bound on reads per worker, whatever the duration.
const MAX_OPS_PER_WORKER: u64 = 50_000_000;

/// Set by SIGINT/SIGTERM: stop early, report, unmount.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

struct Opts {
    duration: Duration,
    threads: usize,
    seed: u64,
    workdir: Option<PathBuf>,
    bkfs: PathBuf,
    faults: bool,
    /// API requests allowed per 10 s window (429 beyond).
    rate_limit: u64,
    /// Lifetime of the signed storage URLs.
    url_ttl: Duration,
    /// `--week`: the week-long pipeline mount instead (see [`week`]).
    week: Option<week::WeekOpts>,
}

/// A positive, finite number (of minutes, seconds, threads, requests).
fn positive(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
        .ok_or_else(|| format!("not a positive number: {v}"))
}

/// The soak's command line (the flag names are the ones scripts use: keep them).
#[derive(Debug, clap::Parser)]
#[command(
    name = "bkfs-soak",
    about = "Soak the real bkfs binary against the fake Buildkite on 127.0.0.1"
)]
struct Args {
    /// Run for this many minutes [default: 10].
    #[arg(long, value_parser = positive)]
    minutes: Option<f64>,
    /// Run for this many seconds.
    #[arg(long, value_parser = positive)]
    seconds: Option<f64>,
    /// Reader threads (1-256).
    #[arg(long, default_value = "16", value_parser = positive)]
    threads: f64,
    #[arg(long, default_value_t = 0x50a6)]
    seed: u64,
    /// Work directory (mount, cache, log) [default: a temporary one, removed at the end].
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// The bkfs binary [default: `bkfs` beside this one].
    #[arg(long)]
    bkfs: Option<PathBuf>,
    /// No injected faults.
    #[arg(long)]
    no_faults: bool,
    /// API requests allowed per 10 s (429 beyond).
    #[arg(long, default_value = "100", value_parser = positive)]
    rate_limit: f64,
    /// Lifetime of the signed storage URLs, in seconds.
    #[arg(long, default_value = "20", value_parser = positive)]
    url_ttl: f64,
    /// Simulate a week-long pipeline mount instead: builds keep appearing and being opened
    /// by the readers, in compressed time; reports the daemon's RSS over time.
    #[arg(long)]
    week: bool,
    /// `--week`: how many builds appear during the run.
    #[arg(long, default_value_t = 400)]
    week_builds: u64,
    /// `--week`: extra `bkfs mount` arguments (e.g. "--resident-builds 4").
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    mount_args: String,
}

fn parse_opts() -> Result<Opts, String> {
    use clap::Parser;
    let a = Args::parse();
    let duration = match (a.minutes, a.seconds) {
        (_, Some(s)) => Duration::from_secs_f64(s),
        (Some(m), None) => Duration::from_secs_f64(m * 60.0),
        (None, None) => Duration::from_secs(600),
    };
    let bkfs = match a.bkfs {
        Some(b) => b,
        None => std::env::current_exe()
            .map_err(|e| format!("current exe: {e}"))?
            .with_file_name("bkfs"),
    };
    Ok(Opts {
        duration,
        threads: (a.threads as usize).clamp(1, 256),
        seed: a.seed,
        workdir: a.workdir,
        bkfs,
        faults: !a.no_faults,
        rate_limit: a.rate_limit as u64,
        url_ttl: Duration::from_secs_f64(a.url_ttl),
        week: a.week.then(|| week::WeekOpts {
            builds: a.week_builds.max(1),
            mount_args: a.mount_args.split_whitespace().map(String::from).collect(),
        }),
    })
}

/// Deterministic incompressible bytes (xorshift64*), different for each seed.
fn noise(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len as usize + 8);
    while (v.len() as u64) < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len as usize);
    v
}

/// One file of the soak build: where it shows under the mount and what it must contain.
struct Spec {
    rel: String,
    content: Bytes,
}

/// ~40 artifacts over four jobs: 32 small ones (1 KiB–2 MiB, log-uniform), the two sizes
/// around the whole-file threshold (4 MiB and 4 MiB + 1), and six large ones (8–32 MiB, most
/// not a multiple of the 128 KiB block).
fn soak_build(seed: u64) -> (FakeBuild, Vec<Spec>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut b = FakeBuild::new("soak", "pipeline", 1);
    let jobs: Vec<(String, &str)> = [
        ("Unit tests", "unit-tests"),
        ("Integration", "integration"),
        ("Docker build", "docker-build"),
        ("Lint", "lint"),
    ]
    .iter()
    .map(|(label, dir)| (b.add_job(label), *dir))
    .collect();
    let mut sizes: Vec<(String, u64)> = Vec::new();
    let (lo, hi) = ((KIB as f64).ln(), ((2 * MIB) as f64).ln());
    for i in 0..32 {
        let s = (lo + rng.gen::<f64>() * (hi - lo)).exp() as u64;
        sizes.push((format!("logs/small-{i:02}.bin"), s.clamp(KIB, 2 * MIB)));
    }
    sizes.push(("edge/four-mib.bin".into(), 4 * MIB));
    sizes.push(("edge/four-mib-plus-one.bin".into(), 4 * MIB + 1));
    for (i, s) in [
        8 * MIB + 12_345,
        12 * MIB - 1,
        16 * MIB,
        20 * MIB + 777,
        24 * MIB + 1,
        32 * MIB,
    ]
    .into_iter()
    .enumerate()
    {
        sizes.push((format!("big/big-{i}.bin"), s));
    }
    let mut specs = Vec::new();
    for (i, (path, size)) in sizes.into_iter().enumerate() {
        let (job, dir) = &jobs[i % jobs.len()];
        let content = Bytes::from(noise(size, seed ^ ((i as u64 + 1) << 8)));
        b.add_artifact(job, &path, content.clone());
        specs.push(Spec {
            rel: format!("{dir}/{path}"),
            content,
        });
    }
    (b, specs)
}

#[derive(Default)]
struct Stats {
    reads: BTreeMap<Kind, u64>,
    ok: u64,
    bytes_verified: u64,
    eio: u64,
    enoent: u64,
    other: u64,
    /// errno → count, for the "other" errors.
    other_kinds: BTreeMap<String, u64>,
    wrong_reads: u64,
    wrong_bytes: u64,
    short_reads: u64,
    hangs: u64,
    max_latency: Duration,
    max_latency_what: String,
    /// Microseconds, capped at MAX_SAMPLES.
    samples: Vec<u32>,
    /// The first findings and errors, for the report.
    notes: Vec<String>,
    worker_panics: u64,
}

impl Stats {
    fn note(&mut self, s: String) {
        if self.notes.len() < 30 {
            self.notes.push(s);
        }
    }
}

/// One worker's read in progress, for the hang watchdog.
struct Slot {
    /// Milliseconds since the soak's start + 1 when the read began; 0 when idle.
    started: AtomicU64,
    /// Sequence number of the current read.
    seq: AtomicU64,
    /// Sequence number of the read the watchdog already counted as a hang.
    flagged: AtomicU64,
    what: Mutex<String>,
}

struct Shared {
    specs: Vec<Spec>,
    mnt: PathBuf,
    t0: Instant,
    deadline: Instant,
    stop: AtomicBool,
    stats: Mutex<Stats>,
    slots: Vec<Slot>,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
            || INTERRUPTED.load(Ordering::SeqCst)
            || Instant::now() >= self.deadline
    }
    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64 + 1
    }

    /// Counts reads in flight for longer than [`HANG`] (once each).
    fn watchdog(&self) {
        let now = self.ms();
        for (i, s) in self.slots.iter().enumerate() {
            let started = s.started.load(Ordering::SeqCst);
            let seq = s.seq.load(Ordering::SeqCst);
            if started != 0
                && now.saturating_sub(started) > HANG.as_millis() as u64
                && s.flagged.swap(seq, Ordering::SeqCst) != seq
            {
                let what = s.what.lock().unwrap().clone();
                let mut st = self.stats.lock().unwrap();
                st.hangs += 1;
                st.note(format!(
                    "HANG: worker {i}: {what} still blocked after {:.0} s",
                    (now - started) as f64 / 1000.0
                ));
            }
        }
    }
}

fn worker(sh: Arc<Shared>, idx: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let slot = &sh.slots[idx];
    let mut n = 0u64;
    while !sh.stopping() && n < MAX_OPS_PER_WORKER {
        n += 1;
        let fi = rng.gen_range(0..sh.specs.len());
        let spec = &sh.specs[fi];
        let path = sh.mnt.join(&spec.rel);
        let size = spec.content.len() as u64;
        let kind = match rng.gen_range(0..100) {
            0..=37 => Kind::Pread,
            38..=75 => Kind::PreadDirect,
            76..=87 => Kind::Full,
            _ => Kind::FullDirect,
        };
        let (what, op): (String, Box<dyn Fn() -> Outcome>) = match kind {
            Kind::Pread | Kind::PreadDirect => {
                // 4 KiB–1 MiB, log-uniform; now and then straddling or past the end.
                let len = (((4 * KIB) as f64).ln()
                    + rng.gen::<f64>() * ((MIB as f64).ln() - ((4 * KIB) as f64).ln()))
                .exp() as usize;
                let off = match rng.gen_range(0..20) {
                    0 => size.saturating_sub(len as u64 / 2),
                    1 => size + rng.gen_range(0..4096),
                    _ => rng.gen_range(0..size.max(1)),
                };
                let content = spec.content.clone();
                let p = path.clone();
                let direct = kind.direct();
                (
                    format!("{} {} @{off} +{len}", kind.name(), spec.rel),
                    Box::new(move || pread_op(&p, &content, off, len, direct)),
                )
            }
            Kind::Full | Kind::FullDirect => {
                let chunk = [4 * KIB, 128 * KIB, MIB][rng.gen_range(0..3)] as usize;
                let content = spec.content.clone();
                let p = path.clone();
                let direct = kind.direct();
                (
                    format!("{} {} in {chunk}-byte reads", kind.name(), spec.rel),
                    Box::new(move || full_op(&p, &content, chunk, direct)),
                )
            }
        };
        *slot.what.lock().unwrap() = what.clone();
        let seq = slot.seq.fetch_add(1, Ordering::SeqCst) + 1;
        slot.started.store(sh.ms(), Ordering::SeqCst);
        let t = Instant::now();
        let out = op();
        let took = t.elapsed();
        slot.started.store(0, Ordering::SeqCst);
        let flagged = slot.flagged.load(Ordering::SeqCst) == seq;

        let mut st = sh.stats.lock().unwrap();
        *st.reads.entry(kind).or_default() += 1;
        if st.samples.len() < MAX_SAMPLES {
            st.samples
                .push(took.as_micros().min(u32::MAX as u128) as u32);
        }
        if took > st.max_latency {
            st.max_latency = took;
            st.max_latency_what = what.clone();
        }
        if took > HANG && !flagged {
            st.hangs += 1;
            st.note(format!("HANG: {what} took {took:.1?}"));
        }
        match out {
            Outcome::Ok(b) => {
                st.ok += 1;
                st.bytes_verified += b;
            }
            Outcome::Err(e) => {
                let name = errno_name(&e);
                match e.raw_os_error() {
                    Some(libc::EIO) => st.eio += 1,
                    Some(libc::ENOENT) => st.enoent += 1,
                    _ => {
                        st.other += 1;
                        *st.other_kinds.entry(name.clone()).or_default() += 1;
                    }
                }
                let t_rel = sh.t0.elapsed().as_secs_f64();
                st.note(format!(
                    "error {name} at t={t_rel:.1} s after {took:.1?}: {what}"
                ));
            }
            Outcome::Wrong(at, n) => {
                st.wrong_reads += 1;
                st.wrong_bytes += n;
                st.note(format!(
                    "WRONG BYTES: {what}: {n} bytes differ, the first at offset {at}"
                ));
            }
            Outcome::Short(at, want) => {
                st.short_reads += 1;
                st.note(format!(
                    "SHORT READ: {what}: end of file at {at}, the artifact goes on to {want}"
                ));
            }
        }
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Duration::from_micros(sorted[i] as u64)
}

fn main() {
    let o = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bkfs-soak: {e}");
            std::process::exit(2);
        }
    };
    if o.week.is_some() {
        std::process::exit(week::run(&o));
    }
    std::process::exit(soak(o));
}

/// What every mode does first: SIGINT/SIGTERM handlers, and a check that bkfs is there.
fn begin(o: &Opts) -> Result<(), String> {
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    if !o.bkfs.is_file() {
        return Err(format!(
            "bkfs-soak: no bkfs binary at {} (build it, or pass --bkfs)",
            o.bkfs.display()
        ));
    }
    Ok(())
}

fn soak(o: Opts) -> i32 {
    if let Err(e) = begin(&o) {
        eprintln!("{e}");
        return 2;
    }
    let w = match Workdir::new(&o, "bkfs-soak-") {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let (work, mnt, log) = (w.dir.clone(), w.mnt.clone(), w.log.clone());

    eprintln!("soak: generating the build ...");
    let (fb, specs) = soak_build(o.seed);
    let total: u64 = specs.iter().map(|s| s.content.len() as u64).sum();
    let server = Arc::new(FakeServer::start());
    server.add_token(TOKEN, &["read_artifacts", "read_builds"]);
    server.add_build(fb);

    eprintln!("soak: mounting {} on {} ...", BUILD, mnt.display());
    // Declared after the server so that it is dropped (unmounted) first.
    let (guard, pid) = match mount(
        &o,
        &server,
        &w,
        BUILD,
        &["--cache-size", "64M", "--read-timeout", "10"],
    ) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    for s in &specs {
        match std::fs::metadata(mnt.join(&s.rel)) {
            Ok(m) if m.len() == s.content.len() as u64 => {}
            other => {
                eprintln!("bkfs-soak: {} under the mount: {other:?}", s.rel);
                return 2;
            }
        }
    }
    let rss_start = rss_kib(pid).unwrap_or(0);

    // The API allows 100 requests per 10 s and answers 429 beyond that; signed URLs expire
    // after 20 s (bkfs reuses them for up to 50 s, so it meets expired ones and refreshes).
    server.set_rate_limit(o.rate_limit, Duration::from_secs(10), true);
    server.set_url_ttl(o.url_ttl);
    server.reset_counts();

    let t0 = Instant::now();
    let sh = Arc::new(Shared {
        specs,
        mnt: mnt.clone(),
        t0,
        deadline: t0 + o.duration,
        stop: AtomicBool::new(false),
        stats: Mutex::new(Stats::default()),
        slots: (0..o.threads)
            .map(|_| Slot {
                started: AtomicU64::new(0),
                seq: AtomicU64::new(0),
                flagged: AtomicU64::new(u64::MAX),
                what: Mutex::new(String::new()),
            })
            .collect(),
    });
    eprintln!(
        "soak: {} files ({}), {} threads for {:.0} s, faults {} ...",
        sh.specs.len(),
        mib(total / KIB),
        o.threads,
        o.duration.as_secs_f64(),
        if o.faults { "on" } else { "off" }
    );

    let (done_tx, done_rx) = mpsc::channel::<usize>();
    for i in 0..o.threads {
        let sh = sh.clone();
        let tx = done_tx.clone();
        let seed = o.seed.wrapping_mul(1000).wrapping_add(i as u64);
        std::thread::Builder::new()
            .name(format!("soak-{i}"))
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker(sh.clone(), i, seed)
                }));
                if r.is_err() {
                    let mut st = sh.stats.lock().unwrap();
                    st.worker_panics += 1;
                    st.note(format!("worker {i} panicked"));
                }
                let _ = tx.send(i);
            })
            .expect("spawn worker");
    }
    drop(done_tx);

    let faults = o.faults.then(|| {
        let (server, sh) = (server.clone(), sh.clone());
        let seed = o.seed ^ 0xfa17;
        std::thread::spawn(move || inject_faults(&server, &sh, seed))
    });

    // Monitor: hangs, RSS, the daemon staying alive, progress.
    let warmup = (o.duration / 5).min(Duration::from_secs(60));
    let mut rss_base: Option<u64> = None;
    let mut rss_peak = rss_start;
    let mut daemon_died = false;
    let mut last_progress = Instant::now();
    let mut finished = 0usize;
    let mut grace_end: Option<Instant> = None;
    while finished < o.threads {
        match done_rx.recv_timeout(Duration::from_millis(250)) {
            Ok(_) => finished += 1,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        sh.watchdog();
        match rss_kib(pid) {
            Some(r) if alive(pid) => {
                rss_peak = rss_peak.max(r);
                if rss_base.is_none() && t0.elapsed() >= warmup {
                    rss_base = Some(r);
                }
            }
            _ => {
                if !daemon_died {
                    daemon_died = true;
                    sh.stop.store(true, Ordering::SeqCst);
                    sh.stats
                        .lock()
                        .unwrap()
                        .note(format!("the daemon (pid {pid}) died during the soak"));
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            let st = sh.stats.lock().unwrap();
            let reads: u64 = st.reads.values().sum();
            eprintln!(
                "soak: t={:.0} s reads={reads} verified={} EIO={} ENOENT={} other={} wrong={} hangs={} rss={}",
                t0.elapsed().as_secs_f64(),
                mib(st.bytes_verified / KIB),
                st.eio,
                st.enoent,
                st.other,
                st.wrong_bytes,
                st.hangs,
                mib(rss_kib(pid).unwrap_or(0))
            );
        }
        if sh.stopping() && grace_end.is_none() {
            grace_end = Some(Instant::now() + GRACE);
        }
        if grace_end.is_some_and(|g| Instant::now() >= g) {
            sh.watchdog();
            let mut st = sh.stats.lock().unwrap();
            let stuck = o.threads - finished;
            st.note(format!(
                "{stuck} workers still blocked {GRACE:?} after the end"
            ));
            break;
        }
    }
    let ran = t0.elapsed();
    sh.stop.store(true, Ordering::SeqCst);
    let armed = faults
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    disarm(&server);
    let interrupted = INTERRUPTED.load(Ordering::SeqCst);

    // With the faults off, every file reads back right, once more, straight from bkfs.
    let mut final_bad = Vec::new();
    if finished == o.threads && !daemon_died && !interrupted {
        let (tx, rx) = mpsc::channel();
        let sh2 = sh.clone();
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            for s in &sh2.specs {
                let t = Instant::now();
                match full_op(&sh2.mnt.join(&s.rel), &s.content, MIB as usize, true) {
                    Outcome::Ok(_) => {}
                    Outcome::Err(e) => bad.push(format!(
                        "{}: {} after {:.1?}",
                        s.rel,
                        errno_name(&e),
                        t.elapsed()
                    )),
                    Outcome::Wrong(at, n) => {
                        bad.push(format!("{}: WRONG BYTES ({n}, first at {at})", s.rel))
                    }
                    Outcome::Short(at, want) => {
                        bad.push(format!("{}: SHORT READ (ends at {at} of {want})", s.rel))
                    }
                }
            }
            let _ = tx.send(bad);
        });
        match rx.recv_timeout(Duration::from_secs(180)) {
            Ok(b) => final_bad = b,
            Err(_) => final_bad.push("the final pass did not finish within 180 s".into()),
        }
    }
    let rss_end = rss_kib(pid).unwrap_or(0);
    rss_peak = rss_peak.max(rss_end);
    let rss_base = rss_base.unwrap_or(rss_start);
    let counts = server.counts();
    let served = server.storage_bytes_served();

    // A clean unmount ends the daemon.
    let unmounted = finished == o.threads
        && run_bounded(
            Command::new("fusermount3")
                .arg("-u")
                .arg(&mnt)
                .stdout(Stdio::null()),
            Duration::from_secs(30),
        )
        .is_some_and(|s| s.success());
    let daemon_exited = unmounted && wait_gone(&mnt, Duration::from_secs(10));
    drop(guard);
    let stalls_left = {
        let t = Instant::now();
        while server.storage_stalls_active() > 0 && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        server.storage_stalls_active()
    };
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let panics = log_text.lines().filter(|l| l.contains("panicked")).count();
    let log_errors = log_text.lines().filter(|l| l.contains(" ERROR ")).count();
    let log_warns = log_text.lines().filter(|l| l.contains(" WARN ")).count();

    let mut st = sh.stats.lock().unwrap();
    let mut samples = std::mem::take(&mut st.samples);
    samples.sort_unstable();
    let reads: u64 = st.reads.values().sum();
    let rss_limit = rss_base + rss_base / 2 + 64 * 1024;
    let rss_grew = rss_end > rss_limit;

    let mut findings = Vec::new();
    if st.wrong_bytes > 0 || st.wrong_reads > 0 {
        findings.push(format!(
            "{} wrong bytes in {} reads",
            st.wrong_bytes, st.wrong_reads
        ));
    }
    if st.short_reads > 0 {
        findings.push(format!("{} short reads", st.short_reads));
    }
    if st.hangs > 0 {
        findings.push(format!("{} hangs", st.hangs));
    }
    if daemon_died {
        findings.push("the daemon died".into());
    }
    if rss_grew {
        findings.push(format!(
            "RSS grew from {} to {} (limit {})",
            mib(rss_base),
            mib(rss_end),
            mib(rss_limit)
        ));
    }
    if !final_bad.is_empty() {
        findings.push(format!("final pass: {}", final_bad.join("; ")));
    }
    if !daemon_exited && !interrupted {
        findings.push("the daemon did not exit within 10 s of a clean unmount".into());
    }
    if panics > 0 {
        findings.push(format!("{panics} panics in the daemon log"));
    }
    if st.worker_panics > 0 {
        findings.push(format!("{} soak workers panicked", st.worker_panics));
    }

    let kinds: Vec<String> = st
        .reads
        .iter()
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    let others: Vec<String> = st
        .other_kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let armed_s: Vec<String> = armed.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let c = |k: &str| counts.get(k).copied().unwrap_or(0);
    let storage_5xx: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("storage_5"))
        .map(|(_, n)| n)
        .sum();
    let api_5xx: u64 = counts
        .iter()
        .filter(|(k, _)| k.starts_with("api_5"))
        .map(|(_, n)| n)
        .sum();

    println!();
    println!("bkfs soak summary");
    println!(
        "duration: {:.1} s with {} threads{}",
        ran.as_secs_f64(),
        o.threads,
        if interrupted { " (interrupted)" } else { "" }
    );
    println!(
        "build: {} files, {} (cache-size 64M, read-timeout 10 s, rate limit {} per 10 s, URL TTL {:.0} s)",
        sh.specs.len(),
        mib(total / KIB),
        o.rate_limit,
        o.url_ttl.as_secs_f64()
    );
    println!("reads: {reads}");
    println!("reads by kind: {}", kinds.join(", "));
    println!("reads ok: {}", st.ok);
    println!(
        "bytes verified: {} ({})",
        st.bytes_verified,
        mib(st.bytes_verified / KIB)
    );
    println!(
        "errors: EIO {}, ENOENT {}, other {}{}",
        st.eio,
        st.enoent,
        st.other,
        if others.is_empty() {
            String::new()
        } else {
            format!(" ({})", others.join(", "))
        }
    );
    println!("wrong bytes: {}", st.wrong_bytes);
    println!("short reads: {}", st.short_reads);
    println!("hangs: {}", st.hangs);
    println!(
        "read latency: p50 {:.1?}, p99 {:.1?}, max {:.1?} ({})",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        st.max_latency,
        st.max_latency_what
    );
    println!(
        "daemon RSS: start {}, after warm-up {}, end {}, peak {} (limit {})",
        mib(rss_start),
        mib(rss_base),
        mib(rss_end),
        mib(rss_peak),
        mib(rss_limit)
    );
    println!("faults armed: {}", armed_s.join(", "));
    println!(
        "faults injected: storage status {}, reset {}, truncate {}, stall {}; api {}",
        c("storage_fault_status"),
        c("storage_fault_reset"),
        c("storage_fault_truncate"),
        c("storage_fault_stall"),
        c("api_faults_injected")
    );
    println!(
        "fake: api {} (download {}, 429 {}, 5xx {}), storage GET {} (5xx {}, 403 {}), {} served",
        c("api"),
        c("download"),
        c("api_429"),
        api_5xx,
        c("storage_get"),
        storage_5xx,
        c("storage_403"),
        mib(served / KIB)
    );
    println!(
        "final pass (faults off, O_DIRECT): {}",
        if final_bad.is_empty() {
            "all files correct".to_string()
        } else {
            final_bad.join("; ")
        }
    );
    println!(
        "unmount: {}; stalled responses left open: {stalls_left}",
        if daemon_exited {
            "clean, daemon exited"
        } else {
            "NOT clean"
        }
    );
    println!("daemon log: {log_errors} ERROR lines, {log_warns} WARN lines, {panics} panics");
    if !st.notes.is_empty() {
        println!("first events:");
        for n in &st.notes {
            println!("  {n}");
        }
    }
    let code = if !findings.is_empty() {
        println!("verdict: FAIL: {}", findings.join("; "));
        1
    } else if interrupted {
        println!("verdict: INTERRUPTED");
        130
    } else {
        println!("verdict: PASS");
        0
    };
    if code != 0 {
        let tail: Vec<&str> = log_text.lines().rev().take(40).collect();
        eprintln!("--- last lines of {} ---", log.display());
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
        if o.workdir.is_none() {
            // Keep the log for a look.
            let keep = std::env::temp_dir().join(format!("bkfs-soak-{}.log", std::process::id()));
            if std::fs::copy(&log, &keep).is_ok() {
                eprintln!("log kept at {}", keep.display());
            }
        }
    }
    if o.workdir.is_none() {
        // The daemon is gone, but its last cache writes may land just after: retry a little.
        for _ in 0..10 {
            if std::fs::remove_dir_all(&work).is_ok() || !work.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    code
}
