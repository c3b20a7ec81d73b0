//! `scripts/bench --listing`: the listing rows of issue 11 on their own: `find` and `ls -lR`
//! over a build of `count` artifacts against a local tree of the same files built in the same
//! run, each the median of `runs` fresh mounts, and the daemon's RSS after them.
//!
//! Each run mounts anew (cold kernel caches, the build listed at mount) and times, in order:
//! `find -type f` (the first after the mount), `find -type f` again, `ls -lR` (the first), and
//! `ls -lR` again. The local tree is timed warm (after one untimed pass), as a user's would be.
//!
//! `--soak-seconds N` (default 120, 0 skips it) adds the daemon's RSS through a week-long
//! pipeline soak (`bkfs-soak --week`).
//!
//! `BKFS_BENCH_PROFILE='strace -c -f find $MNT -type f'` runs a command on the first fresh
//! mount (`$MNT`, the daemon's `$DAEMON_PID`) before the timed runs: for profiles.

use std::path::Path;
use std::time::Duration;

use bkfs_fake::{FakeBuild, FakeServer};

use super::{median, mount, print_rows, sh, time, Row, TOKEN};

/// The build and the local tree: `count` small files over `jobs` jobs of 20 directories each
/// (the shape of the many-artifacts rows).
fn build_and_local(
    server: &FakeServer,
    w: &Path,
    number: u64,
    count: usize,
    jobs: usize,
) -> std::path::PathBuf {
    let mut b = FakeBuild::new("bench", "listing", number);
    let ids: Vec<String> = (0..jobs)
        .map(|j| b.add_job(&format!("Shard {j}")))
        .collect();
    let local = w.join(format!("local-listing-{count}"));
    for j in 0..jobs {
        for d in 0..20 {
            std::fs::create_dir_all(local.join(format!("shard-{j}/logs/d{d}"))).unwrap();
        }
    }
    for i in 0..count {
        let (j, d) = (i % jobs, (i / jobs) % 20);
        let body = format!("line {i}\n");
        b.add_artifact(&ids[j], &format!("logs/d{d}/file-{i}.log"), body.clone());
        std::fs::write(
            local.join(format!("shard-{j}/logs/d{d}/file-{i}.log")),
            body,
        )
        .unwrap();
    }
    server.add_build(b);
    local
}

/// The pid of the daemon serving this mount (0 if none).
fn daemon_pid(mnt: &Path) -> i32 {
    bkfs_tools::daemon_pids(mnt).first().copied().unwrap_or(0)
}

/// The listing rows for a build of `count` artifacts (`runs` runs each, medians).
pub fn rows(server: &FakeServer, w: &Path, count: usize, runs: usize) -> Vec<Row> {
    let jobs = 50;
    let number = 900_000 + count as u64;
    eprintln!("listing: a build of {count} artifacts and its local tree ...");
    let local = build_and_local(server, w, number, count, jobs);
    let find = |d: &Path| sh(&format!("find {} -type f | wc -l", d.display()));
    let lsr = |d: &Path| sh(&format!("ls -lR {} > /dev/null", d.display()));
    let (mut f1, mut f2, mut l1, mut l2) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut lf, mut ll) = (Vec::new(), Vec::new());
    let mut rss = 0;
    find(&local);
    lsr(&local);
    for r in 0..runs {
        let cache = w.join(format!("cache-listing-{r}"));
        let m = mount(
            server,
            &format!("bench/listing/{number}"),
            &w.join("mnt"),
            &cache,
            &["--no-logs"],
        );
        if let (0, Ok(cmd)) = (r, std::env::var("BKFS_BENCH_PROFILE")) {
            // A profiling hook: the command runs on the fresh mount ($MNT, the daemon's
            // $DAEMON_PID) before the timed runs, e.g. `strace -c find $MNT`.
            let st = std::process::Command::new("bash")
                .arg("-c")
                .arg(&cmd)
                .env("MNT", &m.mnt)
                .env("DAEMON_PID", daemon_pid(&m.mnt).to_string())
                .status();
            eprintln!("listing: profile command: {st:?}");
        }
        let mut n = String::new();
        f1.push(time(|| n = find(&m.mnt)));
        assert_eq!(n.trim(), count.to_string(), "find saw every artifact");
        f2.push(time(|| {
            find(&m.mnt);
        }));
        l1.push(time(|| {
            lsr(&m.mnt);
        }));
        l2.push(time(|| {
            lsr(&m.mnt);
        }));
        lf.push(time(|| {
            find(&local);
        }));
        ll.push(time(|| {
            lsr(&local);
        }));
        rss = rss.max(m.daemon_rss_kib());
        drop(m);
        let _ = std::fs::remove_dir_all(&cache);
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&local);
    let (lf, ll) = (median(lf), median(ll));
    let row = |name: String, t: f64, base: f64, what: &str| {
        let ratio = t / base;
        Row {
            name,
            bkfs: format!("{t:.3} s"),
            baseline: format!("local {what} {base:.3} s"),
            ratio,
            target: "<= 2x".into(),
            ok: ratio <= 2.0,
        }
    };
    vec![
        row(
            format!("find -type f over {count} artifacts, first after mount"),
            median(f1),
            lf,
            "find",
        ),
        row(
            format!("find -type f over {count} artifacts, again"),
            median(f2),
            lf,
            "find",
        ),
        row(
            format!("ls -lR over {count} artifacts, first"),
            median(l1),
            ll,
            "ls -lR",
        ),
        row(
            format!("ls -lR over {count} artifacts, again"),
            median(l2),
            ll,
            "ls -lR",
        ),
        Row {
            name: format!("daemon RSS after the listing runs ({count} artifacts)"),
            bkfs: format!("{} MiB", rss / 1024),
            baseline: "-".into(),
            ratio: rss as f64 / 1024.0,
            target: "<= 128 MiB".into(),
            ok: rss / 1024 <= 128,
        },
    ]
}

/// `--listing [--count N] [--runs N]`: only the listing rows (this module); true when it ran.
pub fn only() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--listing") {
        return false;
    }
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let work = tempfile::Builder::new()
        .prefix("bkfs-bench-")
        .tempdir()
        .unwrap();
    let server = FakeServer::start();
    server.add_token(TOKEN, &["read_artifacts", "read_builds"]);
    server.set_rate_limit(1_000_000, Duration::from_secs(60), false);
    let cores = sh("nproc").trim().to_string();
    let mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo");
    let rows = rows(
        &server,
        work.path(),
        value("--count", 20_000),
        value("--runs", 3),
    );
    let mut rows = rows;
    let soak = value("--soak-seconds", 120);
    if soak > 0 {
        rows.push(week_rss(soak));
    }
    print_rows(&rows, &cores, &mem);
    true
}

/// The daemon's RSS through `bkfs-soak --week` (the soak binary beside this one) for
/// `seconds`, at default mount settings: its peak, and whether it stayed flat.
fn week_rss(seconds: usize) -> Row {
    let soak = std::env::current_exe()
        .expect("current exe")
        .with_file_name("bkfs-soak");
    let builds = (seconds * 4).max(50);
    eprintln!("listing: bkfs-soak --week for {seconds} s ({builds} builds) ...");
    let out = std::process::Command::new(&soak)
        .args(["--week", "--seconds", &seconds.to_string()])
        .args(["--week-builds", &builds.to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("bkfs-soak");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("daemon RSS: "))
        .unwrap_or("")
        .to_string();
    let peak = line
        .strip_prefix("daemon RSS: peak ")
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    let pass = text.contains("verdict: PASS");
    Row {
        name: format!(
            "daemon RSS, week-long pipeline soak ({builds} builds over {seconds} s, 16 readers)"
        ),
        bkfs: format!(
            "peak {peak:.1} MiB, {}",
            if pass { "flat" } else { "NOT flat" }
        ),
        baseline: "-".into(),
        ratio: peak,
        target: "<= 128 MiB, flat".into(),
        ok: pass && peak <= 128.0,
    }
}
