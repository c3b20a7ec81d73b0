//! Surviving the real API: faults injected into the fake (storage 5xx, resets, truncated and
//! stalled bodies, corrupt bytes, API 5xx, expired URLs, artifacts deleted behind our back,
//! rate limits) while the real `bkfs` binary serves reads through the kernel. Every read is
//! checked byte for byte; request counts show the retries; the token never leaks.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::builds::{Builder, ORG, PIPELINE};
use crate::common::*;

const MIB: usize = 1 << 20;

/// One artifact of a fault build: where it shows, its id, path as uploaded and content.
#[derive(Clone)]
struct Art {
    rel: String,
    id: String,
    path: String,
    content: Vec<u8>,
}

/// A build of one job (dir `job`) with one artifact per `(path, len)`, each with distinct
/// deterministic content. Paths are given in separate directories by the callers when the
/// directory-scan prefetch must not touch a neighbour.
fn build_of(number: u64, files: &[(&str, usize)]) -> (FakeBuild, Vec<Art>) {
    let mut b = Builder::new(ORG, PIPELINE, number);
    let job = b.simple_job(
        &format!("f{number:07}-0000-4000-8000-000000000001"),
        "Job",
        "2024-06-01T00:00:00.000Z",
        "job",
    );
    let mut arts = Vec::new();
    for (i, (path, len)) in files.iter().enumerate() {
        let content = det_bytes(*len, number * 1000 + i as u64 + 1);
        let id = b.text_file(&job, "job", path, &content);
        arts.push(Art {
            rel: format!("job/{path}"),
            id,
            path: path.to_string(),
            content,
        });
    }
    (b.finish().0, arts)
}

fn build_name(number: u64) -> String {
    format!("{ORG}/{PIPELINE}/{number}")
}

/// Reads a whole file and checks it byte for byte (sha1 in the message when it differs).
fn read_ok(mnt: &Path, a: &Art) {
    let got = std::fs::read(mnt.join(&a.rel)).unwrap_or_else(|e| panic!("read {}: {e}", a.rel));
    assert!(
        got == a.content,
        "{}: read {} bytes sha1 {}, want {} bytes sha1 {}",
        a.rel,
        got.len(),
        sha1_hex(&got),
        a.content.len(),
        sha1_hex(&a.content)
    );
}

/// The errno of a read that must fail; panics (showing what came back) if it succeeds.
fn read_err(mnt: &Path, a: &Art) -> i32 {
    match std::fs::read(mnt.join(&a.rel)) {
        Ok(got) => panic!(
            "{}: read succeeded with {} bytes (sha1 {}, the artifact's is {})",
            a.rel,
            got.len(),
            sha1_hex(&got),
            sha1_hex(&a.content)
        ),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("{}: error without errno: {e}", a.rel)),
    }
}

/// Lines of the log that mention `needle`.
fn log_lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// 503 and 500 from storage on the next 3 requests: reads still return the right bytes, and
/// the counts show exactly the retries.
#[test]
fn storage_5xx_is_retried() {
    let (fb, arts) = build_of(101, &[("a/small.bin", 300_000), ("b/big.bin", 6 * MIB)]);
    let env = Env::new(fb, &[]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    bounded(LIMIT, move || {
        server.reset_counts();
        server.fail_storage(3, 503);
        read_ok(&mnt, &arts[0]);
        let c = server.counts();
        assert_eq!(server.count(Count::StorageStatus(503)), 3, "{c:?}");
        assert_eq!(
            server.count(Count::StorageGet),
            4,
            "3 failures + 1 success: {c:?}"
        );
        assert_eq!(server.storage_faults_pending(), 0);

        server.reset_counts();
        server.fail_storage(3, 500);
        read_ok(&mnt, &arts[1]);
        let c = server.counts();
        assert_eq!(server.count(Count::StorageStatus(500)), 3, "{c:?}");
        assert_eq!(server.count(Count::StorageFaultsInjected), 3, "{c:?}");
        // Every byte of the big file came back, and nothing was fetched twice: the failed
        // requests carried no body.
        assert_eq!(
            server.storage_bytes_served(),
            6 * MIB as u64,
            "bytes served for a 6 MiB file: {c:?}"
        );
    });
}

/// A connection reset mid-body, then a truncated body, for a multi-MiB file (128 KiB blocks,
/// 4 MiB parts) and a small one (fetched whole): right bytes, and the transfer resumes from
/// the last byte received instead of starting over.
#[test]
fn reset_and_truncated_bodies_resume() {
    let (fb, arts) = build_of(
        102,
        &[
            ("a/big-reset.bin", 6 * MIB),
            ("b/small-reset.bin", 3 * MIB),
            ("c/big-trunc.bin", 6 * MIB + 12_345),
            ("d/small-trunc.bin", 1_000_003),
        ],
    );
    let env = Env::new(fb, &[]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    bounded(LIMIT, move || {
        let plan = [("reset", 3), ("reset", 2), ("truncate", 3), ("truncate", 2)];
        for (a, (kind, n)) in arts.iter().zip(plan) {
            server.reset_counts();
            match kind {
                "reset" => server.reset_storage(n),
                _ => server.truncate_storage(n),
            }
            read_ok(&mnt, a);
            let c = server.counts();
            assert!(
                server.count(Count::StorageFaultsInjected) >= 2,
                "{}: the faults did not hit: {c:?}",
                a.rel
            );
            let size = a.content.len() as u64;
            let served = server.storage_bytes_served();
            assert!(
                served <= size + size * 6 / 10,
                "{}: {served} bytes served for a {size}-byte file (resume, not restart): {c:?}",
                a.rel
            );
            assert!(served >= size, "{}: {served} < {size}: {c:?}", a.rel);
            eprintln!("{}: {served} bytes served for {size}: {c:?}", a.rel);
            // Disarm what the read did not use up before the next file.
            server.reset_storage(0);
            server.truncate_storage(0);
        }
    });
}

/// Reads a whole file with `O_DIRECT`: every read(2) goes to bkfs, and a failed one is not
/// retried by the kernel's page cache (a buffered read of a page that failed is tried again).
fn read_direct(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// One `O_DIRECT` read at `off` (straight to bkfs, bypassing the page cache).
fn read_direct_at(path: &Path, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?
        .read_at(buf, off)
}

/// A body that stalls on its first request, with `--read-timeout 5`: bkfs gives up on the
/// stalled transfer and retries, so the read completes, correct, within ~20 s. The small
/// file is read with `O_DIRECT` (no kernel retry to hide an EIO), the big one through the
/// page cache; either way bkfs must not have logged a failed read.
#[test]
fn stall_once_is_retried() {
    let (fb, arts) = build_of(103, &[("a/small.bin", 1_500_000), ("b/big.bin", 6 * MIB)]);
    let env = Env::new(fb, &["--read-timeout", "5"]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    let log = env.m.log.clone();
    bounded(Duration::from_secs(90), move || {
        for (i, a) in arts.iter().enumerate() {
            server.reset_counts();
            server.stall_storage(1, 100_000);
            let t = Instant::now();
            let got = if i == 0 {
                read_direct(&mnt.join(&a.rel))
            } else {
                std::fs::read(mnt.join(&a.rel))
            };
            let took = t.elapsed();
            let c = server.counts();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let got = got.unwrap_or_else(|e| {
                panic!(
                    "{}: a read stalled once failed after {took:?}: {e}; counts {c:?}\nlog:\n{}",
                    a.rel,
                    log_lines_with(&text, &a.path).join("\n")
                )
            });
            assert!(got == a.content, "{}: bytes differ", a.rel);
            assert!(took < Duration::from_secs(20), "{}: took {took:?}", a.rel);
            assert_eq!(server.count(Count::StorageFaultStall), 1, "{c:?}");
            assert!(server.count(Count::StorageGet) >= 2, "no retry: {c:?}");
            let failed: Vec<String> = log_lines_with(&text, &a.path)
                .into_iter()
                .filter(|l| l.contains("read failed"))
                .collect();
            assert!(
                failed.is_empty(),
                "{}: bkfs failed the read (the kernel's retry of the page hid it):\n{}",
                a.rel,
                failed.join("\n")
            );
        }
        // bkfs gave up on the stalled connection: the server's stalled task ended.
        assert!(
            wait_until(Duration::from_secs(10), || server.storage_stalls_active()
                == 0),
            "a stalled response is still open"
        );
    });
}

/// Storage that stalls every request: the read fails with EIO within ~25 s, `ls` keeps
/// answering meanwhile, and once storage recovers another file reads fine.
#[test]
fn permanent_stall_fails_with_eio_and_daemon_keeps_serving() {
    let (fb, arts) = build_of(104, &[("a/stuck.bin", 500_000), ("b/fine.bin", 200_000)]);
    let env = Env::new(fb, &["--read-timeout", "5"]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    let log = env.m.log.clone();
    bounded(Duration::from_secs(90), move || {
        server.stall_storage(1000, 4096);
        let t = Instant::now();
        let reader = {
            let (mnt, a) = (mnt.clone(), arts[0].clone());
            std::thread::spawn(move || read_err(&mnt, &a))
        };
        // While the read hangs, listings are answered from memory.
        assert!(
            wait_until(Duration::from_secs(10), || server.storage_stalls_active()
                > 0),
            "the read never reached the stalled storage"
        );
        let t_ls = Instant::now();
        assert_eq!(ls(&mnt.join("job")), vec!["a", "b"]);
        assert!(t_ls.elapsed() < Duration::from_secs(2), "ls blocked");
        let errno = reader.join().expect("reader thread");
        let took = t.elapsed();
        eprintln!("permanent stall: errno {errno} after {took:?}");
        assert_eq!(errno, libc::EIO, "errno after a permanent stall");
        assert!(took < Duration::from_secs(25), "EIO took {took:?}");
        assert!(took >= Duration::from_secs(4), "gave up early: {took:?}");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.lines()
                .any(|l| l.contains("ERROR") && l.contains(&arts[0].path)),
            "no error logged with the path:\n{}",
            log_lines_with(&text, &arts[0].path).join("\n")
        );
        // bkfs dropped its stalled connections.
        assert!(
            wait_until(Duration::from_secs(10), || server.storage_stalls_active()
                == 0),
            "{} stalled responses still open",
            server.storage_stalls_active()
        );
        server.stall_storage(0, 0);
        read_ok(&mnt, &arts[1]);
        // And the file that failed reads fine now too.
        read_ok(&mnt, &arts[0]);
    });
}

/// Corrupt bytes for a small file: EIO, never the corrupt content; the log names the path
/// and the sha1; another file still reads fine.
#[test]
fn corrupt_small_file_is_refused() {
    let (fb, arts) = build_of(105, &[("a/report.xml", 50_000), ("b/other.txt", 20_000)]);
    let env = Env::new(fb, &[]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    let log = env.m.log.clone();
    bounded(LIMIT, move || {
        let bad = &arts[0];
        server.reset_counts();
        server.corrupt_storage(&bad.id, true);
        let f = std::fs::File::open(mnt.join(&bad.rel)).unwrap();
        let mut buf = vec![0u8; 4096];
        let e = f
            .read_at(&mut buf, 0)
            .map(|n| {
                panic!(
                    "a corrupt file read {n} bytes (corrupt ones: {})",
                    buf[..n] == bkfs_fake::corrupted(&bad.content)[..n]
                )
            })
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
        assert_eq!(read_err(&mnt, bad), libc::EIO);
        assert!(
            server.count(Count::StorageCorrupt) >= 2,
            "{:?}",
            server.counts()
        );
        let sha = sha1_hex(&bad.content);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.lines()
                .any(|l| l.contains(&bad.path) && l.contains(&sha) && l.contains("ERROR")),
            "no error line with the path and sha1 {sha}:\n{}",
            log_lines_with(&text, &bad.path).join("\n")
        );
        read_ok(&mnt, &arts[1]);
    });
}

/// Block indices of an artifact left in the disk cache (`<cache>/v1/s-<sha1>/<index>`, see
/// `src/content/cache.rs`), each with whether its payload is the corrupted bytes.
fn cached_blocks(cache: &Path, content: &[u8]) -> Vec<(usize, bool)> {
    const BLOCK: usize = 128 << 10;
    let key = cache.join("v1").join(format!("s-{}", sha1_hex(content)));
    let mut out: Vec<(usize, bool)> = std::fs::read_dir(&key)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<usize>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let raw = std::fs::read(key.join(i.to_string())).unwrap_or_default();
            let from = (i * BLOCK).min(content.len());
            let to = ((i + 1) * BLOCK).min(content.len());
            let bad = bkfs_fake::corrupted(&content[from..to]);
            (i, raw.ends_with(&bad))
        })
        .collect();
    out.sort();
    out
}

/// A corrupt large file cannot be refused block by block, but once all of it is cached the
/// whole-file sha1 check throws the cached copy away, and no corrupt block may stay: after
/// a remount on the same cache dir, with storage healthy again, the file reads correctly.
/// (After `cat`, a reader also goes back into the middle of the file with `O_DIRECT`, as a
/// reader may: the block it refetches is as corrupt as before and must not be kept either.)
#[test]
fn corrupt_large_file_does_not_stay_cached() {
    let (fb, arts) = build_of(106, &[("a/big.bin", 6 * MIB + 777)]);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let out = scratch.dir.path().join("cat.out");
    let m1 = mount(&server, &scratch, &build_name(106), &[]);
    let mnt = m1.mnt.clone();
    let log = m1.log.clone();
    let big = arts[0].clone();
    let s = server.clone();
    bounded(LIMIT, move || {
        s.corrupt_storage(&big.id, true);
        let (code, _, err) = sh(&format!(
            "cat {} > {}",
            mnt.join(&big.rel).display(),
            out.display()
        ));
        if code == 0 {
            let got = std::fs::read(&out).unwrap();
            assert_eq!(got.len(), big.content.len(), "cat output length");
            assert!(got != big.content, "corrupt storage, yet the right bytes?");
        } else {
            assert!(err.contains("Input/output error"), "cat: {err}");
        }
        assert!(
            wait_until(Duration::from_secs(10), || {
                let t = std::fs::read_to_string(&log).unwrap_or_default();
                t.lines()
                    .any(|l| l.contains("sha1") && l.contains(&big.path) && l.contains("ERROR"))
            }),
            "the sha1 mismatch of the complete file was not logged:\n{}",
            log_lines_with(
                &std::fs::read_to_string(&log).unwrap_or_default(),
                &big.path
            )
            .join("\n")
        );
        let mut buf = vec![0u8; 4096];
        let off = 3 * MIB + 5;
        let _ = read_direct_at(&mnt.join(&big.rel), &mut buf, off as u64);
    });
    assert!(m1.unmount(), "unmount");
    let left = cached_blocks(&scratch.cache(), &arts[0].content);

    server.corrupt_storage(&arts[0].id, false);
    server.reset_counts();
    let m2 = mount(&server, &scratch, &build_name(106), &[]);
    let mnt = m2.mnt.clone();
    let s = server.clone();
    let a = arts[0].clone();
    let (got, served, counts) = bounded(LIMIT, move || {
        let got = std::fs::read(mnt.join(&a.rel));
        (got, s.storage_bytes_served(), s.counts())
    });
    drop(m2);
    assert!(
        left.is_empty(),
        "blocks (index, corrupt?) of the artifact that failed its sha1 check are still in the \
         cache after the mount ended: {left:?}; the next mount read {} (sha1 {}, want {}), \
         {served} bytes from storage",
        match &got {
            Ok(b) if *b == arts[0].content => "the right bytes".to_string(),
            Ok(b) => format!("wrong bytes ({} long)", b.len()),
            Err(e) => format!("an error: {e}"),
        },
        got.as_ref().map(|b| sha1_hex(b)).unwrap_or_default(),
        sha1_hex(&arts[0].content)
    );
    let got = got.unwrap_or_else(|e| panic!("read after remount: {e}"));
    assert!(got == arts[0].content, "wrong bytes after remount");
    assert!(
        served >= arts[0].content.len() as u64,
        "the second mount did not refetch: {served} bytes served, {counts:?}"
    );
}

/// Two 503s from the API while mounting: the client retries and the mount succeeds.
#[test]
fn api_5xx_during_mount_is_retried() {
    let (fb, arts) = build_of(107, &[("a/x.txt", 1000)]);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    server.fail_api(2, 503);
    let m = mount(&server, &scratch, &build_name(107), &[]);
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(LIMIT, move || {
        assert_eq!(s.count(Count::ApiStatus(503)), 2, "{:?}", s.counts());
        assert_eq!(s.api_faults_pending(), 0);
        read_ok(&mnt, &arts[0]);
    });
    drop(m);
}

/// An API that keeps answering 500: the mount fails with one clear error line naming the
/// status, non-zero, and nothing stays mounted.
#[test]
fn api_5xx_that_persists_fails_the_mount() {
    let (fb, _) = build_of(108, &[("a/x.txt", 1000)]);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    server.fail_api(50, 500);
    let s = server.clone();
    let r = bounded(LIMIT, move || {
        let t = Instant::now();
        let r = try_mount(&s, &scratch, &build_name(108), Some(TOKEN), &[]);
        (r, t.elapsed(), scratch)
    });
    let (r, took, scratch) = r;
    let (code, stderr) = match r {
        Ok(_m) => panic!("the mount succeeded against an API answering 500"),
        Err(e) => e,
    };
    assert_ne!(code, 0);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
    assert!(
        lines[0].starts_with("bkfs: error: ") && lines[0].contains("500"),
        "{stderr:?}"
    );
    assert!(!stderr.contains(TOKEN));
    assert!(!is_mounted(&scratch.mnt()), "something is mounted");
    assert!(
        wait_gone(&scratch.mnt(), Duration::from_secs(5)),
        "a daemon is left"
    );
    assert!(
        server.count(Count::ApiStatus(500)) >= 2,
        "no retry before giving up: {:?}",
        server.counts()
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// Two 502s on the download endpoint while reading an uncached file: right bytes.
#[test]
fn api_5xx_during_reads_is_retried() {
    let (fb, arts) = build_of(109, &[("a/x.bin", 700_000), ("b/big.bin", 5 * MIB)]);
    let env = Env::new(fb, &[]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    bounded(LIMIT, move || {
        for a in &arts {
            server.reset_counts();
            server.fail_api(2, 502);
            read_ok(&mnt, a);
            let c = server.counts();
            assert_eq!(server.count(Count::ApiStatus(502)), 2, "{}: {c:?}", a.rel);
            assert_eq!(server.count(Count::Download), 1, "{}: {c:?}", a.rel);
            assert_eq!(server.api_faults_pending(), 0);
        }
    });
}

/// Signed URLs living 1 s: a read past their expiry uses a new URL (bkfs reads `Expires=`
/// from the URL), a URL that storage refuses early (403) is replaced, and the bytes are right;
/// no EIO anywhere.
#[test]
fn expired_url_is_refreshed() {
    let (fb, arts) = build_of(110, &[("a/big.bin", 12 * MIB), ("b/small.txt", 3000)]);
    let env = Env::new(fb, &[]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    server.set_url_ttl(Duration::from_secs(1));
    bounded(LIMIT, move || {
        let big = &arts[0];
        let f = std::fs::File::open(mnt.join(&big.rel)).unwrap();
        let mut buf = vec![0u8; 4096];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf == big.content[..4096]);
        std::thread::sleep(Duration::from_millis(2500));
        server.reset_counts();
        let off = 10 * MIB + 4321;
        f.read_exact_at(&mut buf, off as u64)
            .unwrap_or_else(|e| panic!("read after expiry: {e}; {:?}", server.counts()));
        assert!(buf == big.content[off..off + 4096], "bytes after expiry");
        let c = server.counts();
        // The URL says when it expires (`Expires=`), so bkfs fetched a new one in time.
        assert!(server.count(Count::Download) >= 1, "{c:?}");
        assert_eq!(server.count(Count::StorageStatus(403)), 0, "{c:?}");
        // Storage refusing a URL before it says it expires: a new URL, transparently. The
        // refusal is for this read's range: kernel readahead after the read above may still be
        // fetching, and a 403 it took would be refreshed on its own time, not this read's.
        server.reset_counts();
        let off = 6 * MIB + 17;
        server.fail_storage_at(off as u64, 1, 403);
        f.read_exact_at(&mut buf, off as u64)
            .unwrap_or_else(|e| panic!("read after a refused URL: {e}; {:?}", server.counts()));
        assert!(
            buf == big.content[off..off + 4096],
            "bytes after a refused URL"
        );
        let c = server.counts();
        assert!(server.count(Count::StorageStatus(403)) >= 1, "{c:?}");
        assert!(
            server.count(Count::Download) >= 1,
            "URL not replaced: {c:?}"
        );
        std::thread::sleep(Duration::from_millis(1500));
        read_ok(&mnt, &arts[1]);
        std::thread::sleep(Duration::from_millis(1500));
        read_ok(&mnt, big);
    });
}

/// DELETE with curl through the API (someone else removing an artifact): reading it gives
/// ENOENT or EIO and is logged; the other files are unaffected.
#[test]
fn artifact_deleted_by_someone_else() {
    let (fb, arts) = build_of(111, &[("a/gone.bin", 80_000), ("b/kept.bin", 90_000)]);
    let job = fb.build.jobs[0].id.clone();
    let env = Env::new(fb, &[]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    let log = env.m.log.clone();
    bounded(LIMIT, move || {
        let gone = &arts[0];
        let url = format!(
            "{}/v2/organizations/{ORG}/pipelines/{PIPELINE}/builds/111/jobs/{job}/artifacts/{}",
            server.api_url(),
            gone.id
        );
        let (code, out, err) = sh(&format!(
            "curl -sS -o /dev/null -w '%{{http_code}}' -X DELETE -H 'Authorization: Bearer {TOKEN}' '{url}'"
        ));
        assert_eq!((code, out.as_str()), (0, "204"), "curl: {err}");
        assert!(!server.artifact_exists(&gone.id));
        let errno = read_err(&mnt, gone);
        eprintln!("deleted artifact: errno {errno}");
        assert!(
            errno == libc::ENOENT || errno == libc::EIO,
            "errno {errno} ({})",
            std::io::Error::from_raw_os_error(errno)
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.lines()
                .any(|l| l.contains(&gone.path) && (l.contains("ERROR") || l.contains("WARN"))),
            "the failed read is not logged with its path:\n{}",
            log_lines_with(&text, &gone.path).join("\n")
        );
        read_ok(&mnt, &arts[1]);
    });
}

/// An enforced rate limit of 6 requests per 3 s from before the mount: 20 uncached files
/// still all read correctly in bounded time, the client either collecting 429s and waiting
/// or pacing itself.
#[test]
fn rate_limit_is_waited_out() {
    let names: Vec<String> = (0..20).map(|i| format!("many/file-{i:02}.bin")).collect();
    let specs: Vec<(&str, usize)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), 10_000 + i * 9_973))
        .collect();
    let (fb, arts) = build_of(112, &specs);
    let server = Arc::new(server());
    server.add_build(fb);
    server.set_rate_limit(6, Duration::from_secs(3), true);
    let scratch = Scratch::new();
    let m = mount(&server, &scratch, &build_name(112), &[]);
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(Duration::from_secs(90), move || {
        let t = Instant::now();
        for a in &arts {
            let got = std::fs::read(mnt.join(&a.rel)).unwrap_or_else(|e| {
                panic!(
                    "{} after {:?}: {e}; counts {:?}",
                    a.rel,
                    t.elapsed(),
                    s.counts()
                )
            });
            assert!(got == a.content, "{}: bytes differ", a.rel);
        }
        let took = t.elapsed();
        let c = s.counts();
        assert!(took < Duration::from_secs(60), "took {took:?}: {c:?}");
        assert!(s.count(Count::Download) >= 20, "{c:?}");
        // 20 downloads at 6 per 3 s cannot all happen in the first window.
        assert!(
            took > Duration::from_secs(3),
            "no waiting at all ({took:?}): {c:?}"
        );
        eprintln!("rate limit: {took:?}, counts {c:?}");
    });
    drop(m);
}

/// Checks that a daemon's command line has no `secret`; and its environment too when
/// `environ_too` (a token from the environment is in it by design).
fn assert_proc_clean(mnt: &Path, secret: &str, environ_too: bool) {
    let pids = daemon_pids(mnt);
    assert_eq!(pids.len(), 1, "daemons: {pids:?}");
    let pid = pids[0];
    let contains = |hay: &[u8]| hay.windows(secret.len()).any(|w| w == secret.as_bytes());
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        !contains(&cmdline),
        "the token is on the daemon's command line"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    if environ_too {
        assert!(
            !contains(&environ),
            "the token is in the daemon's environment"
        );
    }
}

/// Checks a -vv log: no token, and no signed URL query (signature, expiry, access key).
fn assert_log_clean(text: &str, secret: &str) {
    assert!(text.len() > 200, "the -vv log is nearly empty: {text:?}");
    assert!(!text.contains(secret), "the token is in the log");
    for needle in ["Signature=", "AWSAccessKeyId=", "Expires=", "access_token="] {
        assert!(
            !text.contains(needle),
            "{needle} is in the log:\n{}",
            log_lines_with(text, needle).join("\n")
        );
    }
}

/// With the token in the environment and -vv: storage never sees an Authorization header,
/// the log holds neither the token nor a signed URL's query, and the daemon's command line
/// has no token (its environment does, being how the token was given).
#[test]
fn token_never_leaks() {
    const SECRET: &str = "bkua_f4ult5_0f_th3_r34l_4p1_77";
    let (fb, arts) = build_of(113, &[("a/one.bin", 100_000), ("b/big.bin", 5 * MIB)]);
    let server = Arc::new(server());
    server.add_token(SECRET, &["read_artifacts", "read_builds"]);
    server.add_build(fb);
    let scratch = Scratch::new();
    // A few faults on the way, so the retry and refresh paths log too.
    server.fail_api(1, 503);
    let m = try_mount(&server, &scratch, &build_name(113), Some(SECRET), &[])
        .unwrap_or_else(|(c, e)| panic!("mount failed ({c}): {e}"));
    assert!(!m.stdout.contains(SECRET) && !m.stderr.contains(SECRET));
    let (mnt, log) = (m.mnt.clone(), m.log.clone());
    let s = server.clone();
    bounded(LIMIT, move || {
        s.fail_storage(1, 500);
        s.reset_storage(1);
        s.fail_api(1, 502);
        s.set_url_ttl(Duration::from_secs(1));
        for a in &arts {
            read_ok(&mnt, a);
        }
        std::thread::sleep(Duration::from_millis(1500));
        let f = std::fs::File::open(mnt.join(&arts[1].rel)).unwrap();
        let mut buf = vec![0u8; 10];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(s.count(Count::StorageAuthorization), 0, "{:?}", s.counts());
        assert!(s.count(Count::StorageGet) >= 2);
        assert_log_clean(&std::fs::read_to_string(&log).unwrap(), SECRET);
        assert_proc_clean(&mnt, SECRET, false);
    });
    drop(m);
}

/// With `--token-file`, the token is not in the daemon's environment either.
#[test]
fn token_from_file_never_leaks() {
    const SECRET: &str = "bkua_t0k3n_fr0m_4_f1l3_99";
    let (fb, arts) = build_of(114, &[("a/one.bin", 100_000)]);
    let server = Arc::new(server());
    server.add_token(SECRET, &["read_artifacts", "read_builds"]);
    server.add_build(fb);
    let scratch = Scratch::new();
    let token_file = scratch.dir.path().join("token");
    std::fs::write(&token_file, format!("{SECRET}\n")).unwrap();
    let m = try_mount(
        &server,
        &scratch,
        &build_name(114),
        None,
        &["--token-file", token_file.to_str().unwrap()],
    )
    .unwrap_or_else(|(c, e)| panic!("mount failed ({c}): {e}"));
    let (mnt, log) = (m.mnt.clone(), m.log.clone());
    let s = server.clone();
    bounded(LIMIT, move || {
        read_ok(&mnt, &arts[0]);
        assert_eq!(s.count(Count::StorageAuthorization), 0, "{:?}", s.counts());
        assert_log_clean(&std::fs::read_to_string(&log).unwrap(), SECRET);
        assert_proc_clean(&mnt, SECRET, true);
    });
    drop(m);
}
