//! `scripts/bench`: measures bkfs against baselines taken in the same run, on this machine,
//! against the project's fake Buildkite on 127.0.0.1. Not a test: run it by hand.
//!
//! Every figure is a ratio to a baseline measured side by side (medians of `--runs` runs):
//! `curl` of the same signed URL, `cat`/`find`/`ls` of a local copy of the same files, or a
//! script that downloads every log with curl and then greps.
//!
//! One function per bench row family; the listing rows are `bench/listing.rs`, the archive
//! rows `bench/archives.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bkfs_fake::{Count, FakeBuild, FakeServer};

#[path = "bench/archives.rs"]
mod archives;
#[path = "bench/listing.rs"]
mod listing;

const TOKEN: &str = "bench-token";

struct Opts {
    runs: usize,
    big: u64,
    many: usize,
    logs: usize,
    huge: usize,
    /// Logs of the GraphQL-vs-REST comparison (0: skip it).
    gql_logs: usize,
    /// Its rate-limit window in seconds (50 requests per window; Buildkite's is 60 s).
    gql_window: u64,
    /// Job logs (2 MiB each) of the grep-across-job-logs row (0: skip it).
    job_logs: usize,
    /// Archive rows: entries of the zip (0: skip them).
    archive_entries: usize,
}

/// `scripts/bench [--quick] [--runs N] [--window S] [ONE ROW GROUP]`: every row by default;
/// one of --archives, --graphql, --job-logs N or --big-mib N measures only that group.
#[derive(clap::Parser, Debug)]
#[command(
    name = "bkfs-bench",
    about = "Benchmarks bkfs against same-run baselines"
)]
struct Args {
    /// Smaller sizes, for a quick look.
    #[arg(long)]
    quick: bool,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: u64,
    /// Rate-limit window of the GraphQL-vs-REST comparison, in seconds.
    #[arg(long, default_value_t = 6)]
    window: u64,
    /// Only the archive rows (10,000 entries, 200 MiB; --entries N to change).
    #[arg(long)]
    archives: bool,
    /// Entries of the zip of the archive rows.
    #[arg(long)]
    entries: Option<u64>,
    /// Only the GraphQL-vs-REST comparison (1,000 logs; --logs N to change).
    #[arg(long)]
    graphql: bool,
    /// Logs of the GraphQL-vs-REST comparison.
    #[arg(long)]
    logs: Option<u64>,
    /// Only the grep across N cold 2 MiB job logs.
    #[arg(long)]
    job_logs: Option<u64>,
    /// Only the big-file (read path) rows, with an N MiB artifact.
    #[arg(long)]
    big_mib: Option<u64>,
}

fn parse_opts() -> Opts {
    let a = <Args as clap::Parser>::parse();
    let runs = a.runs.max(1) as usize;
    let gql_window = a.window.max(1);
    let only = Opts {
        runs,
        big: 0,
        many: 0,
        logs: 0,
        huge: 0,
        gql_logs: 0,
        gql_window,
        job_logs: 0,
        archive_entries: 0,
    };
    if a.archives {
        return Opts {
            archive_entries: a.entries.unwrap_or(10_000) as usize,
            ..only
        };
    }
    if a.graphql {
        return Opts {
            gql_logs: a.logs.unwrap_or(1000) as usize,
            ..only
        };
    }
    if let Some(n) = a.job_logs {
        return Opts {
            job_logs: n as usize,
            ..only
        };
    }
    if let Some(m) = a.big_mib {
        return Opts {
            big: m << 20,
            ..only
        };
    }
    if a.quick {
        Opts {
            runs,
            big: 256 << 20,
            many: 5_000,
            logs: 200,
            huge: 0,
            gql_logs: 200,
            gql_window,
            job_logs: 20,
            archive_entries: 2_000,
        }
    } else {
        Opts {
            runs,
            big: 1 << 30,
            many: 20_000,
            logs: 1_000,
            huge: 100_000,
            gql_logs: 1_000,
            gql_window,
            job_logs: 50,
            archive_entries: 10_000,
        }
    }
}

fn bin() -> PathBuf {
    let me = std::env::current_exe().expect("current exe");
    me.parent().unwrap().join("bkfs")
}

/// Deterministic incompressible bytes (xorshift64*).
fn noise(n: u64, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n as usize);
    while (v.len() as u64) < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes());
    }
    v.truncate(n as usize);
    v
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time<F: FnMut()>(mut f: F) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn sh(line: &str) -> String {
    let o = Command::new("bash")
        .arg("-c")
        .arg(line)
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    if !o.status.success() {
        panic!(
            "command failed: {line}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn drop_caches() {
    let _ = Command::new("bash")
        .arg("-c")
        .arg("sync; echo 3 > /proc/sys/vm/drop_caches")
        .stderr(Stdio::null())
        .status();
}

struct Mounted {
    mnt: PathBuf,
}

impl Mounted {
    /// VmRSS of the mount's daemon in KiB (0 if none).
    fn daemon_rss_kib(&self) -> u64 {
        bkfs_tools::daemon_pids(&self.mnt)
            .first()
            .and_then(|&pid| bkfs_tools::rss_kib(pid))
            .unwrap_or(0)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg(&self.mnt)
            .status();
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn mount(server: &FakeServer, build: &str, mnt: &Path, cache: &Path, extra: &[&str]) -> Mounted {
    mount_env(server, build, mnt, cache, extra, &[])
}

/// [`mount`] with extra environment for the daemon (e.g. `BKFS_PASSTHROUGH=off`).
fn mount_env(
    server: &FakeServer,
    build: &str,
    mnt: &Path,
    cache: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Mounted {
    std::fs::create_dir_all(mnt).unwrap();
    let extra_env = std::env::var("BKFS_BENCH_MOUNT_ARGS").unwrap_or_default();
    let o = Command::new(bin())
        .arg("mount")
        .args(extra_env.split_whitespace())
        .arg("--api-url")
        .arg(server.api_url())
        .arg("--cache-dir")
        .arg(cache)
        .arg("--log-file")
        .arg(cache.with_extension("log"))
        .args(extra)
        .arg(build)
        .arg(mnt)
        .env("BUILDKITE_API_TOKEN", TOKEN)
        .envs(env.iter().copied())
        .output()
        .expect("bkfs mount");
    if !o.status.success() {
        panic!("bkfs mount failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    Mounted {
        mnt: mnt.to_path_buf(),
    }
}

fn signed_url(server: &FakeServer, org: &str, pipe: &str, n: u64, job: &str, art: &str) -> String {
    sh(&format!(
        "curl -s -o /dev/null -w '%{{redirect_url}}' -H 'Authorization: Bearer {TOKEN}' '{}/v2/organizations/{org}/pipelines/{pipe}/builds/{n}/jobs/{job}/artifacts/{art}/download'",
        server.api_url()
    ))
}

struct Row {
    name: String,
    bkfs: String,
    baseline: String,
    ratio: f64,
    target: String,
    ok: bool,
}

fn main() {
    if listing::only() {
        return;
    }
    let o = parse_opts();
    let work = tempfile::Builder::new()
        .prefix("bkfs-bench-")
        .tempdir()
        .unwrap();
    let w = work.path().to_path_buf();
    let server = FakeServer::start();
    server.add_token(TOKEN, &["read_artifacts", "read_builds", "read_build_logs"]);
    // The API's rate limit is not what is measured here (the curl baseline ignores it too):
    // advertise a budget large enough that bkfs's pacing never waits.
    server.set_rate_limit(1_000_000, Duration::from_secs(60), false);
    let cores = sh("nproc").trim().to_string();
    let mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo");
    println!(
        "bkfs benchmark — {cores} cores, {mem}, {} runs each (median)",
        o.runs
    );

    if o.big == 0 && o.archive_entries > 0 {
        let mut rows = Vec::new();
        archives::archive_rows(&server, &w, o.archive_entries, o.runs, &mut rows);
        print_rows(&rows, &cores, &mem);
        return;
    }
    if o.big == 0 && (o.gql_logs > 0 || o.job_logs > 0) {
        let mut rows = Vec::new();
        if o.gql_logs > 0 {
            graphql_compare(&w, o.gql_logs, o.gql_window, &mut rows);
        }
        if o.job_logs > 0 {
            job_logs_grep(&server, &w, o.job_logs, o.runs, &mut rows);
        }
        print_rows(&rows, &cores, &mem);
        return;
    }

    // The big artifact.
    eprintln!("preparing a {} MiB artifact ...", o.big >> 20);
    let big = noise(o.big, 42);
    let mut b = FakeBuild::new("bench", "big", 1);
    let job = b.add_job("Big");
    let art = b.add_artifact(&job, "big.bin", big.clone());
    server.add_build(b);
    let local = w.join("local-big.bin");
    std::fs::write(&local, &big).unwrap();
    drop(big);

    let mut rows: Vec<Row> = Vec::new();
    let mb = o.big as f64 / 1e6;

    for (label, throttled) in [
        (
            "throttled (30 ms first byte, 80 MB/s per connection, 20 ms API)",
            true,
        ),
        ("unthrottled loopback", false),
    ] {
        if throttled {
            server.set_storage_latency(Duration::from_millis(30));
            server.set_storage_bandwidth(80_000_000);
            server.set_api_latency(Duration::from_millis(20));
        } else {
            server.set_storage_latency(Duration::ZERO);
            server.set_storage_bandwidth(0);
            server.set_api_latency(Duration::ZERO);
        }
        let mut curl = Vec::new();
        let mut ours = Vec::new();
        for r in 0..o.runs {
            let url = signed_url(&server, "bench", "big", 1, &job, &art);
            drop_caches();
            curl.push(time(|| {
                sh(&format!("curl -s -o /dev/null '{url}'"));
            }));
            let cache = w.join(format!("cache-cold-{throttled}-{r}"));
            let m = mount(&server, "bench/big/1", &w.join("mnt"), &cache, &[]);
            drop_caches();
            ours.push(time(|| {
                sh(&format!("cat {}/big/big.bin > /dev/null", m.mnt.display()));
            }));
            drop(m);
            let _ = std::fs::remove_dir_all(&cache);
        }
        let (c, b) = (median(curl), median(ours));
        let ratio = c / b;
        let target = if throttled { 4.0 } else { 0.8 };
        rows.push(Row {
            name: format!("1 GiB cold sequential read, {label}")
                .replace("1 GiB", &format!("{} MiB", o.big >> 20)),
            bkfs: format!("{:.0} MB/s", mb / b),
            baseline: format!("curl {:.0} MB/s", mb / c),
            ratio,
            target: format!(">= {target}x"),
            ok: ratio >= target,
        });
    }
    server.set_storage_latency(Duration::ZERO);
    server.set_storage_bandwidth(0);
    server.set_api_latency(Duration::ZERO);

    // The same cold read through `rclone mount` (:http: backend, VFS cache off) over an index
    // of the same file (a redirect to the same signed URL, so the bytes come from the same
    // storage), when rclone is installed.
    if which("rclone") {
        let cold_bkfs = rows
            .iter()
            .find(|r| r.name.contains("unthrottled"))
            .map(|r| r.bkfs.clone())
            .unwrap_or_default();
        let bkfs_mbs: f64 = cold_bkfs.trim_end_matches(" MB/s").parse().unwrap_or(0.0);
        let index = IndexServer::start();
        let mut secs = Vec::new();
        for _ in 0..o.runs {
            index.set_target(&signed_url(&server, "bench", "big", 1, &job, &art));
            let mnt = w.join("rclone-mnt");
            std::fs::create_dir_all(&mnt).unwrap();
            let st = Command::new("rclone")
                .args(["mount", ":http:"])
                .arg(&mnt)
                .args(["--http-url", &index.url()])
                .args(["--vfs-cache-mode", "off", "--read-only", "--daemon"])
                .stderr(Stdio::null())
                .status()
                .expect("rclone");
            assert!(st.success(), "rclone mount failed");
            let file = mnt.join("big.bin");
            let t = Instant::now();
            while !file.exists() && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(50));
            }
            drop_caches();
            secs.push(time(|| {
                sh(&format!("cat {} > /dev/null", file.display()));
            }));
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&mnt)
                .status();
            std::thread::sleep(Duration::from_millis(300));
        }
        let r = mb / median(secs);
        rows.push(Row {
            name: format!(
                "{} MiB cold sequential read, unthrottled: vs rclone mount (:http:, vfs cache off)",
                o.big >> 20
            ),
            bkfs: cold_bkfs,
            baseline: format!("rclone {r:.0} MB/s"),
            ratio: bkfs_mbs / r,
            target: ">= 1.5x".into(),
            ok: bkfs_mbs / r >= 1.5,
        });
    } else {
        eprintln!("rclone is not installed: skipping the rclone row (apt-get install rclone)");
    }

    // Re-read after a remount, from the disk cache: through passthrough (the kernel reads the
    // cache file; needs root) and through the daemon (what an unprivileged user gets), against
    // `cat` of a local copy. Both files are in the page cache, as after any earlier read.
    {
        let cache = w.join("cache-remount");
        let m = mount(&server, "bench/big/1", &w.join("mnt"), &cache, &[]);
        sh(&format!("cat {}/big/big.bin > /dev/null", m.mnt.display()));
        let t = Instant::now();
        // (A build without sparse cache files has no map to wait for: give its block files
        // a few seconds to land.)
        while !map_verified(&cache)
            && t.elapsed() < Duration::from_secs(120)
            && (has_map(&cache) || t.elapsed() < Duration::from_secs(5))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(m);
        for (label, env) in [
            ("passthrough", vec![]),
            (
                "through the daemon, BKFS_PASSTHROUGH=off",
                vec![("BKFS_PASSTHROUGH", "off")],
            ),
        ] {
            let mut ours = Vec::new();
            let mut loc = Vec::new();
            for _ in 0..o.runs {
                let m = mount_env(&server, "bench/big/1", &w.join("mnt"), &cache, &[], &env);
                ours.push(time(|| {
                    sh(&format!("cat {}/big/big.bin > /dev/null", m.mnt.display()));
                }));
                drop(m);
                loc.push(time(|| {
                    sh(&format!("cat {} > /dev/null", local.display()));
                }));
            }
            let (b, l) = (median(ours), median(loc));
            rows.push(Row {
                name: format!("re-read after remount (disk cache), {label}"),
                bkfs: format!("{:.0} MB/s", mb / b),
                baseline: format!("local cat {:.0} MB/s", mb / l),
                ratio: l / b,
                target: ">= 0.8x".into(),
                ok: l / b >= 0.8,
            });
        }
        let _ = std::fs::remove_dir_all(&cache);
    }

    // Warm re-read.
    {
        let cache = w.join("cache-warm");
        let m = mount(&server, "bench/big/1", &w.join("mnt"), &cache, &[]);
        let f = format!("{}/big/big.bin", m.mnt.display());
        sh(&format!(
            "cat {f} > /dev/null; cat {} > /dev/null",
            local.display()
        ));
        // Once the cache has settled (the artifact complete and verified on disk).
        let t = Instant::now();
        while !map_verified(&cache)
            && t.elapsed() < Duration::from_secs(120)
            && (has_map(&cache) || t.elapsed() < Duration::from_secs(5))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let ours: Vec<f64> = (0..o.runs)
            .map(|_| {
                time(|| {
                    sh(&format!("cat {f} > /dev/null"));
                })
            })
            .collect();
        let loc: Vec<f64> = (0..o.runs)
            .map(|_| {
                time(|| {
                    sh(&format!("cat {} > /dev/null", local.display()));
                })
            })
            .collect();
        let (b, l) = (median(ours), median(loc));
        rows.push(Row {
            name: "warm re-read, same mount (page cache)".into(),
            bkfs: format!("{:.0} MB/s", mb / b),
            baseline: format!("local cat {:.0} MB/s", mb / l),
            ratio: l / b,
            target: ">= 0.9x".into(),
            ok: l / b >= 0.9,
        });
        drop(m);
        let _ = std::fs::remove_dir_all(&cache);
    }

    // Random 4 KiB reads.
    if std::env::var("BKFS_BENCH_LOGDIR").is_ok() {
        let d = std::env::var("BKFS_BENCH_LOGDIR").unwrap();
        let _ = sh(&format!(
            "cp {}/*.log {d}/ 2>/dev/null || true",
            w.display()
        ));
    }
    {
        let mut ratios = Vec::new();
        for r in 0..o.runs {
            let cache = w.join(format!("cache-rand-{r}"));
            let m = mount(&server, "bench/big/1", &w.join("mnt"), &cache, &[]);
            drop_caches();
            let before = server.storage_bytes_served();
            let f = std::fs::File::open(m.mnt.join("big/big.bin")).unwrap();
            let mut x: u64 = 0x9E3779B97F4A7C15 ^ r as u64;
            let mut buf = vec![0u8; 4096];
            for _ in 0..1000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let off = (x % (o.big - 4096)) & !4095;
                std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, off).unwrap();
            }
            drop(f);
            ratios.push((server.storage_bytes_served() - before) as f64 / (1000.0 * 4096.0));
            drop(m);
            let _ = std::fs::remove_dir_all(&cache);
        }
        let r = median(ratios);
        rows.push(Row {
            name: "1,000 random 4 KiB reads (cold): bytes fetched / bytes read".into(),
            bkfs: format!("{:.0} KiB per read", r * 4.0),
            baseline: "4 KiB per read".into(),
            ratio: r,
            target: "<= 64x".into(),
            ok: r <= 64.0,
        });
    }

    // Many artifacts.
    for (count, jobs) in [(o.many, 50usize), (o.huge, 100usize)] {
        if count == 0 {
            continue;
        }
        let number = count as u64;
        let mut b = FakeBuild::new("bench", "many", number);
        let ids: Vec<String> = (0..jobs)
            .map(|j| b.add_job(&format!("Shard {j}")))
            .collect();
        for i in 0..count {
            let j = &ids[i % jobs];
            b.add_artifact(
                j,
                &format!("logs/d{}/file-{i}.log", (i / jobs) % 20),
                format!("line {i}\n"),
            );
        }
        server.add_build(b);
        // A local tree of the same shape.
        let localdir = w.join(format!("local-many-{count}"));
        // The mount also shows one `<job>.log` per started job beside the job directories.
        for j in 0..jobs {
            for d in 0..20 {
                std::fs::create_dir_all(localdir.join(format!("shard-{j}/logs/d{d}"))).unwrap();
            }
            std::fs::write(localdir.join(format!("shard-{j}.log")), "log\n").unwrap();
        }
        for i in 0..count {
            let p = localdir.join(format!(
                "shard-{}/logs/d{}/file-{i}.log",
                i % jobs,
                (i / jobs) % 20
            ));
            std::fs::write(p, format!("line {i}\n")).unwrap();
        }
        server.set_api_latency(Duration::from_millis(20));
        let mut mounts = Vec::new();
        let mut finds = Vec::new();
        let mut lsr = Vec::new();
        let mut lfinds = Vec::new();
        let mut llsr = Vec::new();
        let mut rss = 0;
        for r in 0..o.runs {
            let cache = w.join(format!("cache-many-{count}-{r}"));
            let mnt = w.join("mnt");
            let mut m = None;
            mounts.push(time(|| {
                m = Some(mount(
                    &server,
                    &format!("bench/many/{number}"),
                    &mnt,
                    &cache,
                    &[],
                ));
            }));
            let m = m.unwrap();
            let n = sh(&format!("find {} -type f | wc -l", m.mnt.display()));
            assert_eq!(
                n.trim(),
                (count + jobs).to_string(),
                "find saw every artifact and job log"
            );
            finds.push(time(|| {
                sh(&format!("find {} -type f | wc -l", m.mnt.display()));
            }));
            lsr.push(time(|| {
                sh(&format!("ls -lR {} > /dev/null", m.mnt.display()));
            }));
            lfinds.push(time(|| {
                sh(&format!("find {} -type f | wc -l", localdir.display()));
            }));
            llsr.push(time(|| {
                sh(&format!("ls -lR {} > /dev/null", localdir.display()));
            }));
            rss = rss.max(m.daemon_rss_kib());
            drop(m);
            let _ = std::fs::remove_dir_all(&cache);
        }
        server.set_api_latency(Duration::ZERO);
        let mt = median(mounts);
        if count == o.many {
            rows.push(Row {
                name: format!("mount a {count}-artifact build ({jobs} jobs, 20 ms API latency)"),
                bkfs: format!("{:.2} s to ready", mt),
                baseline: "-".into(),
                ratio: mt,
                target: "< 2 s".into(),
                ok: mt < 2.0,
            });
            let (f, lf) = (median(finds), median(lfinds));
            rows.push(Row {
                name: format!("find -type f | wc -l over {count} artifacts"),
                bkfs: format!("{:.3} s", f),
                baseline: format!("local {:.3} s", lf),
                ratio: f / lf,
                target: "<= 2x".into(),
                ok: f / lf <= 2.0,
            });
            let (l, ll) = (median(lsr), median(llsr));
            rows.push(Row {
                name: format!("ls -lR over {count} artifacts"),
                bkfs: format!("{:.3} s", l),
                baseline: format!("local {:.3} s", ll),
                ratio: l / ll,
                target: "<= 2x".into(),
                ok: l / ll <= 2.0,
            });
        }
        let limit = if count >= 100_000 { 300 } else { 100 };
        rows.push(Row {
            name: format!("daemon RSS with {count} artifacts"),
            bkfs: format!("{} MiB", rss / 1024),
            baseline: "-".into(),
            ratio: rss as f64 / 1024.0,
            target: format!("< {limit} MiB"),
            ok: rss / 1024 < limit,
        });
        let _ = std::fs::remove_dir_all(&localdir);
    }

    // grep -r over many small cold logs, realistic latencies.
    if o.logs > 0 {
        let mut b = FakeBuild::new("bench", "logs", 3);
        let jobs: Vec<String> = (0..10).map(|j| b.add_job(&format!("Test {j}"))).collect();
        let mut dl = Vec::new();
        for i in 0..o.logs {
            let mut text = String::new();
            for l in 0..100 {
                text.push_str(&format!(
                    "{i:05} {l:03} INFO everything is fine with request {}\n",
                    i * 131 + l
                ));
            }
            if i == o.logs / 2 {
                text.push_str("ERROR needle-7f3a found here\n");
            }
            let j = &jobs[i % jobs.len()];
            let id = b.add_artifact(j, &format!("log/test-{i:05}.log"), text);
            dl.push(format!(
                "{}/v2/organizations/bench/pipelines/logs/builds/3/jobs/{j}/artifacts/{id}/download",
                server.api_url()
            ));
        }
        server.add_build(b);
        let list = w.join("downloads.txt");
        std::fs::write(&list, dl.join("\n") + "\n").unwrap();
        server.set_storage_latency(Duration::from_millis(30));
        server.set_storage_bandwidth(80_000_000);
        server.set_api_latency(Duration::from_millis(20));
        let script = format!(
            "set -e; d=$(mktemp -d); n=0; while read -r u; do n=$((n+1)); s=$(curl -s -o /dev/null -w '%{{redirect_url}}' -H 'Authorization: Bearer {TOKEN}' \"$u\"); curl -s -o \"$d/$n.log\" \"$s\"; done < {}; grep -rl needle-7f3a \"$d\" | wc -l; rm -rf \"$d\"",
            list.display()
        );
        let mut base = Vec::new();
        let mut ours = Vec::new();
        let runs = o.runs.min(3);
        for r in 0..runs {
            base.push(time(|| {
                let n = sh(&script);
                assert_eq!(n.trim(), "1");
            }));
            let cache = w.join(format!("cache-grep-{r}"));
            let mnt = w.join("mnt");
            ours.push(time(|| {
                let m = mount(&server, "bench/logs/3", &mnt, &cache, &[]);
                let n = sh(&format!("grep -rl needle-7f3a {} | wc -l", m.mnt.display()));
                assert_eq!(n.trim(), "1");
            }));
            let _ = std::fs::remove_dir_all(&cache);
        }
        server.set_storage_latency(Duration::ZERO);
        server.set_storage_bandwidth(0);
        server.set_api_latency(Duration::ZERO);
        let (bb, oo) = (median(base), median(ours));
        rows.push(Row {
            name: format!(
                "mount + grep -r over {} cold logs (throttled) vs curl-each-then-grep script",
                o.logs
            ),
            bkfs: format!("{:.1} s", oo),
            baseline: format!("script {:.1} s", bb),
            ratio: bb / oo,
            target: "> 1x (faster)".into(),
            ok: bb / oo > 1.0,
        });
    }

    if o.gql_logs > 0 {
        graphql_compare(&w, o.gql_logs, o.gql_window, &mut rows);
    }
    if o.job_logs > 0 {
        job_logs_grep(&server, &w, o.job_logs, o.runs, &mut rows);
    }
    if o.archive_entries > 0 {
        archives::archive_rows(&server, &w, o.archive_entries, o.runs, &mut rows);
    }
    print_rows(&rows, &cores, &mem);
}

/// `grep -l` across `n` cold job logs of 2 MiB each (raw: markers, colours, progress bars;
/// one holds the needle), API latency 20 ms: bkfs (mount + grep over `*.log`) against a
/// script that fetches each log with curl as text/plain and greps the downloads. The
/// script greps raw logs, where escape codes could split a word; the needle has none.
fn job_logs_grep(server: &FakeServer, w: &Path, n: usize, runs: usize, rows: &mut Vec<Row>) {
    use bkfs_fake::fakelog;
    eprintln!("preparing {n} job logs of 2 MiB ...");
    let mut b = FakeBuild::new("bench", "joblogs", 5);
    let mut urls = Vec::new();
    for i in 0..n {
        let id = b.add_job(&format!("Shard {i}"));
        let mut log = fakelog::filler(i as u64 + 1, 2 << 20, 1_767_323_060_000);
        if i == n / 2 {
            log.raw
                .extend_from_slice(&fakelog::marker(1_767_323_999_000));
            log.raw
                .extend_from_slice(b"\x1b[31mERROR needle-9e2b found\x1b[0m\n");
        }
        b.logs.insert(id.clone(), log.raw.into());
        urls.push(format!(
            "{}/v2/organizations/bench/pipelines/joblogs/builds/5/jobs/{id}/log",
            server.api_url()
        ));
    }
    server.add_build(b);
    let list = w.join("job-logs.txt");
    std::fs::write(&list, urls.join("\n") + "\n").unwrap();
    server.set_api_latency(Duration::from_millis(20));
    let script = format!(
        "set -e; d=$(mktemp -d); n=0; while read -r u; do n=$((n+1)); curl -sf -H 'Authorization: Bearer {TOKEN}' -H 'Accept: text/plain' -o \"$d/$n.log\" \"$u\"; done < {}; grep -l needle-9e2b \"$d\"/*.log | wc -l; rm -rf \"$d\"",
        list.display()
    );
    let (mut base, mut ours) = (Vec::new(), Vec::new());
    for r in 0..runs.min(3) {
        base.push(time(|| assert_eq!(sh(&script).trim(), "1")));
        let cache = w.join(format!("cache-joblogs-{r}"));
        let mnt = w.join("mnt-joblogs");
        ours.push(time(|| {
            let m = mount(server, "bench/joblogs/5", &mnt, &cache, &[]);
            let out = sh(&format!(
                "grep -l needle-9e2b {}/*.log | wc -l",
                m.mnt.display()
            ));
            assert_eq!(out.trim(), "1");
        }));
        let _ = std::fs::remove_dir_all(&cache);
    }
    server.set_api_latency(Duration::ZERO);
    let (bb, oo) = (median(base), median(ours));
    rows.push(Row {
        name: format!("mount + grep -l over {n} cold 2 MiB job logs vs curl-each (text/plain)-then-grep script"),
        bkfs: format!("{oo:.2} s"),
        baseline: format!("script {bb:.2} s"),
        ratio: bb / oo,
        target: "> 1x (faster)".into(),
        ok: bb / oo > 1.0,
    });
}

/// `grep -r` over `logs` cold logs under an enforced limit of 50 API requests per
/// `window` seconds (Buildkite's is 50 or 200 per 60 s): bkfs with GraphQL batches against
/// bkfs with `--no-graphql` (one REST download call per log). Each runs on its own fake so
/// neither spends the other's budget. Reports requests and time; the REST time is also
/// scaled to a 60 s window.
fn graphql_compare(w: &Path, logs: usize, window: u64, rows: &mut Vec<Row>) {
    let mut results = Vec::new();
    for graphql in [true, false] {
        let server = FakeServer::start();
        server.add_token(TOKEN, &["read_artifacts", "read_builds"]);
        server.set_rate_limit(50, Duration::from_secs(window), true);
        let mut b = FakeBuild::new("bench", "gql", 4);
        let jobs: Vec<String> = (0..10).map(|j| b.add_job(&format!("Shard {j}"))).collect();
        for i in 0..logs {
            let mut text = String::new();
            for l in 0..40 {
                text.push_str(&format!("{i:05} {l:03} INFO all good {}\n", i * 7 + l));
            }
            if i == logs / 3 {
                text.push_str("ERROR needle-5c1d\n");
            }
            b.add_artifact(&jobs[i % jobs.len()], &format!("log/{i:05}.log"), text);
        }
        server.add_build(b);
        let cache = w.join(format!("cache-gql-{graphql}"));
        let mnt = w.join("mnt-gql");
        let gql = server.graphql_url();
        let extra: Vec<&str> = if graphql {
            vec!["--graphql-url", &gql]
        } else {
            vec!["--no-graphql"]
        };
        eprintln!(
            "grep -r over {logs} cold logs, 50 requests per {window} s, {} ...",
            if graphql { "GraphQL" } else { "REST only" }
        );
        let secs = time(|| {
            let m = mount(&server, "bench/gql/4", &mnt, &cache, &extra);
            let n = sh(&format!("grep -rl needle-5c1d {} | wc -l", m.mnt.display()));
            assert_eq!(n.trim(), "1");
        });
        let (rest, gq) = (server.count(Count::Api), server.count(Count::Graphql));
        eprintln!(
            "  {secs:.1} s, {rest} REST + {gq} GraphQL requests, {} answered 429",
            server.count(Count::ApiStatus(429))
        );
        results.push((secs, rest + gq));
        let _ = std::fs::remove_dir_all(&cache);
    }
    let ((g_secs, g_req), (r_secs, r_req)) = (results[0], results[1]);
    let scale = 60.0 / window as f64;
    rows.push(Row {
        name: format!("mount + grep -r over {logs} cold logs, limit 50 req per {window} s: GraphQL vs --no-graphql"),
        bkfs: format!("GraphQL {g_secs:.1} s, {g_req} requests"),
        baseline: format!(
            "REST {r_secs:.1} s, {r_req} requests (~{:.0} s at 50/min)",
            r_secs * scale
        ),
        ratio: r_secs / g_secs,
        target: "<= 10 requests, < 30 s".into(),
        ok: g_req <= 10 && g_secs < 30.0,
    });
}

fn print_rows(rows: &[Row], cores: &str, mem: &str) {
    println!();
    println!("| # | measurement | bkfs | baseline | ratio | target | met |");
    println!("|---|---|---|---|---|---|---|");
    for (i, r) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {:.2} | {} | {} |",
            i + 1,
            r.name,
            r.bkfs,
            r.baseline,
            r.ratio,
            r.target,
            if r.ok { "yes" } else { "NO" }
        );
    }
    let met = rows.iter().filter(|r| r.ok).count();
    println!();
    println!(
        "summary: {met}/{} targets met on {cores} cores, {mem}",
        rows.len()
    );
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn has_map(cache: &Path) -> bool {
    std::fs::read_dir(cache.join("v1"))
        .map(|rd| rd.flatten().any(|k| k.path().join("map").exists()))
        .unwrap_or(false)
}

/// Whether the one sparse cache file under `cache` is complete and verified (its map's flag).
fn map_verified(cache: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(cache.join("v1")) else {
        return false;
    };
    rd.flatten().any(|k| {
        std::fs::read(k.path().join("map"))
            .ok()
            .filter(|m| m.len() >= 32 && &m[..8] == b"BKFSMAP1")
            .is_some_and(|m| m[24] & 1 == 1)
    })
}

/// An HTML index with one file, `big.bin`, redirecting to a signed URL: what rclone's
/// `:http:` backend reads.
struct IndexServer {
    rt: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    target: std::sync::Arc<std::sync::Mutex<String>>,
}

impl IndexServer {
    fn start() -> IndexServer {
        use axum::response::{Html, IntoResponse, Redirect};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let target = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let t2 = target.clone();
        let app = axum::Router::new()
            .route(
                "/",
                axum::routing::get(|| async {
                    Html("<html><body><a href=\"big.bin\">big.bin</a></body></html>")
                }),
            )
            .route(
                "/big.bin",
                axum::routing::get(move || {
                    let t = t2.lock().unwrap().clone();
                    async move { Redirect::temporary(&t).into_response() }
                }),
            );
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        IndexServer { rt, addr, target }
    }

    fn set_target(&self, url: &str) {
        *self.target.lock().unwrap() = url.to_string();
    }

    fn url(&self) -> String {
        let _ = &self.rt;
        format!("http://{}/", self.addr)
    }
}
