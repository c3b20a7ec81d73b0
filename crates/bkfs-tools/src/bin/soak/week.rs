//! `bkfs-soak --week`: a week of a pipeline mount in compressed time. The pipeline starts with
//! a few finished builds; every tick a new build appears (running, finishing a few ticks
//! later), until `--week-builds` have appeared over the run. 16 readers (`--threads`) keep
//! opening builds, every 20-80 ms each, nine in ten one of the 8 newest, else an old one (by
//! number, so builds that left the root listing and memory come back), list them and read
//! files, each checked byte for byte. The daemon's RSS is sampled every second from `/proc/<pid>/status`.
//!
//! The verdict: no wrong byte, no error for a file that exists, and a flat RSS: the largest
//! sample of the last third of the run is at most 25% (plus 8 MiB) above the largest of the
//! middle third, and below 128 MiB.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bkfs_fake::{FakeBuild, FakeServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    begin, mib, mount, noise, rss_kib, run_bounded, Opts, Workdir, INTERRUPTED, KIB, TOKEN,
};

const ORG: &str = "soak";
const PIPE: &str = "week";
/// Builds there at the mount.
const INITIAL: u64 = 20;
/// Jobs per build and files per job.
const JOBS: [&str; 3] = ["build", "test", "deploy"];
const FILES: usize = 6;
/// RSS above this fails the run (issue 11's bound at default settings).
const RSS_BOUND_KIB: u64 = 128 * 1024;

pub struct WeekOpts {
    pub builds: u64,
    pub mount_args: Vec<String>,
}

/// One file of build `n`: where it shows under the build's directory and its bytes.
fn files(n: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (j, job) in JOBS.iter().enumerate() {
        for f in 0..FILES {
            let size = 512 + ((n * 7919 + (j * FILES + f) as u64 * 104_729) % (24 * KIB));
            let seed = (n << 16) | ((j * FILES + f) as u64);
            out.push((format!("{job}/out/file-{f}.bin"), noise(size, seed)));
        }
    }
    out
}

fn fake_build(n: u64, running: bool) -> FakeBuild {
    let mut b = if running {
        FakeBuild::running(ORG, PIPE, n)
    } else {
        FakeBuild::new(ORG, PIPE, n)
    };
    let jobs: Vec<String> = JOBS.iter().map(|j| b.add_job(j)).collect();
    for (i, (path, content)) in files(n).into_iter().enumerate() {
        let rel = path.split_once('/').unwrap().1.to_string();
        b.add_artifact(&jobs[i / FILES], &rel, content);
    }
    b
}

#[derive(Default)]
struct Tally {
    builds_opened: u64,
    files_read: u64,
    bytes: u64,
    wrong: u64,
    errors: u64,
    notes: Vec<String>,
}

impl Tally {
    fn note(&mut self, s: String) {
        if self.notes.len() < 20 {
            self.notes.push(s);
        }
    }
}

struct Shared {
    mnt: PathBuf,
    /// The newest build number that exists.
    newest: AtomicU64,
    stop: AtomicBool,
    tally: Mutex<Tally>,
}

/// One reader: open a build (mostly a recent one), list it, read some of its files.
fn reader(sh: &Shared, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    while !sh.stop.load(Ordering::SeqCst) && !INTERRUPTED.load(Ordering::SeqCst) {
        let newest = sh.newest.load(Ordering::SeqCst);
        // A person looks at a build now and then (compressed): mostly one of the newest,
        // one in ten an old one, which by then has gone idle and left memory.
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..80)));
        let n = if rng.gen_range(0..10) < 9 {
            newest.saturating_sub(rng.gen_range(0..8)).max(1)
        } else {
            rng.gen_range(1..=newest)
        };
        let dir = sh.mnt.join(n.to_string());
        let want = files(n);
        let mut t = sh.tally.lock().unwrap();
        t.builds_opened += 1;
        drop(t);
        // The listing must show every file (a running build has all its artifacts from the
        // start here).
        for job in JOBS {
            match std::fs::read_dir(dir.join(job).join("out")) {
                Ok(rd) => {
                    let names = rd.flatten().count();
                    if names != FILES {
                        let mut t = sh.tally.lock().unwrap();
                        t.wrong += 1;
                        t.note(format!(
                            "build {n}/{job}/out lists {names} files, not {FILES}"
                        ));
                    }
                }
                Err(e) => {
                    let mut t = sh.tally.lock().unwrap();
                    t.errors += 1;
                    t.note(format!("ls {n}/{job}/out: {e}"));
                }
            }
        }
        for _ in 0..rng.gen_range(1..4) {
            let (rel, content) = &want[rng.gen_range(0..want.len())];
            let got = std::fs::read(dir.join(rel));
            let mut t = sh.tally.lock().unwrap();
            match got {
                Ok(b) if &b == content => {
                    t.files_read += 1;
                    t.bytes += b.len() as u64;
                }
                Ok(b) => {
                    t.wrong += 1;
                    t.note(format!(
                        "{n}/{rel}: {} bytes, not the artifact's {}",
                        b.len(),
                        content.len()
                    ));
                }
                Err(e) => {
                    t.errors += 1;
                    t.note(format!("read {n}/{rel}: {e}"));
                }
            }
        }
    }
}

pub fn run(o: &Opts) -> i32 {
    let w = o.week.as_ref().expect("--week");
    if let Err(e) = begin(o) {
        eprintln!("{e}");
        return 2;
    }
    let wd = match Workdir::new(o, "bkfs-week-") {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let (mnt, log) = (wd.mnt.clone(), wd.log.clone());
    let server = Arc::new(FakeServer::start());
    server.add_token(TOKEN, &["read_artifacts", "read_builds"]);
    // Memory is what this mode measures, not the API's rate limit: a budget bkfs never
    // needs to pace for.
    server.set_rate_limit(1_000_000, Duration::from_secs(60), false);
    for n in 1..=INITIAL {
        server.add_build(fake_build(n, false));
    }
    let mut extra = vec!["--refresh".to_string(), "0.5".to_string()];
    extra.extend(w.mount_args.iter().cloned());
    let (guard, pid) = match mount(o, &server, &wd, &format!("{ORG}/{PIPE}"), &extra) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let sh = Arc::new(Shared {
        mnt: mnt.clone(),
        newest: AtomicU64::new(INITIAL),
        stop: AtomicBool::new(false),
        tally: Mutex::new(Tally::default()),
    });
    eprintln!(
        "soak --week: {} builds appearing over {:.0} s, {} readers, mount args {:?}",
        w.builds,
        o.duration.as_secs_f64(),
        o.threads,
        w.mount_args
    );
    let readers: Vec<_> = (0..o.threads)
        .map(|i| {
            let sh = sh.clone();
            let seed = o.seed.wrapping_mul(31).wrapping_add(i as u64);
            std::thread::spawn(move || reader(&sh, seed))
        })
        .collect();
    let t0 = Instant::now();
    let tick = o.duration / w.builds as u32;
    let mut running: Vec<(u64, Instant)> = Vec::new();
    let mut samples: Vec<(f64, u64, u64)> = Vec::new();
    let mut next_sample = t0;
    let mut next_build = t0 + tick;
    let mut died = false;
    while t0.elapsed() < o.duration && !INTERRUPTED.load(Ordering::SeqCst) {
        let now = Instant::now();
        if now >= next_build {
            next_build += tick;
            let n = sh.newest.load(Ordering::SeqCst) + 1;
            server.add_build(fake_build(n, true));
            sh.newest.store(n, Ordering::SeqCst);
            running.push((n, now + tick * 3));
        }
        running.retain(|(n, done)| {
            if now >= *done {
                server.set_build_state(ORG, PIPE, *n, "passed");
                false
            } else {
                true
            }
        });
        if now >= next_sample {
            next_sample += Duration::from_secs(1);
            match rss_kib(pid) {
                Some(r) => {
                    let b = sh.newest.load(Ordering::SeqCst);
                    samples.push((t0.elapsed().as_secs_f64(), b, r));
                    if samples.len() % 10 == 1 {
                        eprintln!(
                            "soak --week: t={:.0} s builds={b} rss={}",
                            t0.elapsed().as_secs_f64(),
                            mib(r)
                        );
                    }
                }
                None => {
                    died = true;
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20).min(tick));
    }
    sh.stop.store(true, Ordering::SeqCst);
    for r in readers {
        let _ = r.join();
    }
    let ran = t0.elapsed();
    let unmounted = run_bounded(
        Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .stdout(Stdio::null()),
        Duration::from_secs(30),
    )
    .is_some_and(|s| s.success());
    drop(guard);
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let evictions = log_text
        .lines()
        .filter(|l| l.contains("evicted an idle build"))
        .count();
    let panics = log_text.lines().filter(|l| l.contains("panicked")).count();

    let t = sh.tally.lock().unwrap();
    let third = samples.len() / 3;
    let max_of = |s: &[(f64, u64, u64)]| s.iter().map(|x| x.2).max().unwrap_or(0);
    let (middle, last) = if third > 0 {
        (
            max_of(&samples[third..2 * third]),
            max_of(&samples[2 * third..]),
        )
    } else {
        (0, 0)
    };
    let peak = max_of(&samples);
    println!();
    println!("bkfs soak --week summary");
    println!(
        "duration: {:.1} s, {} readers, {} builds at the end ({} appeared), mount args {:?}",
        ran.as_secs_f64(),
        o.threads,
        sh.newest.load(Ordering::SeqCst),
        sh.newest.load(Ordering::SeqCst) - INITIAL,
        w.mount_args
    );
    println!("builds opened: {}", t.builds_opened);
    println!("files read: {} ({})", t.files_read, mib(t.bytes / KIB));
    println!("wrong: {}", t.wrong);
    println!("errors: {}", t.errors);
    println!("evictions: {evictions}");
    println!("rss over time (t s, builds, MiB):");
    let step = (samples.len() / 12).max(1);
    for s in samples.iter().step_by(step) {
        println!("  {:>6.0} {:>5} {:>7.1}", s.0, s.1, s.2 as f64 / 1024.0);
    }
    println!(
        "daemon RSS: peak {}, middle third max {}, last third max {} (bound {})",
        mib(peak),
        mib(middle),
        mib(last),
        mib(RSS_BOUND_KIB)
    );
    for n in &t.notes {
        println!("  {n}");
    }
    let mut findings = Vec::new();
    if t.wrong > 0 {
        findings.push(format!("{} wrong listings or bytes", t.wrong));
    }
    if t.errors > 0 {
        findings.push(format!("{} errors", t.errors));
    }
    if died {
        findings.push("the daemon died".to_string());
    }
    if panics > 0 {
        findings.push(format!("{panics} panics in the daemon log"));
    }
    if last > middle + middle / 4 + 8 * 1024 {
        findings.push(format!(
            "RSS grew: {} in the middle third, {} in the last",
            mib(middle),
            mib(last)
        ));
    }
    if peak > RSS_BOUND_KIB {
        findings.push(format!(
            "RSS peak {} above {}",
            mib(peak),
            mib(RSS_BOUND_KIB)
        ));
    }
    if !unmounted {
        findings.push("unmount failed".to_string());
    }
    if findings.is_empty() {
        println!("verdict: PASS");
        0
    } else {
        println!("verdict: FAIL: {}", findings.join("; "));
        if o.workdir.is_none() {
            let keep = std::env::temp_dir().join(format!("bkfs-week-{}.log", std::process::id()));
            if std::fs::copy(&log, &keep).is_ok() {
                eprintln!("log kept at {}", keep.display());
            }
        }
        1
    }
}
