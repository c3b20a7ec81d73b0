//! The read path of issue 11 through the kernel: large artifacts cached as one sparse file
//! with a block map, served by FUSE passthrough once complete and verified (and through the
//! daemon when passthrough is refused or turned off), and whole-artifact eviction within
//! `--cache-size`. (A `kill -9` mid-read of a sparse file is in tests/cache.rs.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::builds::{Builder, ORG, PIPELINE};
use crate::common::*;

const MIB: usize = 1 << 20;

/// A build of one job with the given files (path, content); returns (build, [(rel, sha1)]).
fn build_with(number: u64, files: &[(&str, Vec<u8>)]) -> (FakeBuild, Vec<(String, String)>) {
    let mut b = Builder::new(ORG, PIPELINE, number);
    let job = b.simple_job(
        &format!("d{number:07}-0000-4000-8000-000000000001"),
        "Job",
        "2024-06-01T00:00:00.000Z",
        "job",
    );
    let mut out = Vec::new();
    for (path, content) in files {
        b.text_file(&job, "job", path, content);
        out.push((format!("job/{path}"), sha1_hex(content)));
    }
    (b.finish().0, out)
}

/// `bkfs mount` (background) with extra environment for the daemon.
fn mount_env(
    server: &FakeServer,
    scratch: &Scratch,
    build: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Mount {
    try_mount_env(&server.api_url(), scratch, build, Some(TOKEN), extra, env).unwrap_or_else(
        |(code, stderr)| {
            panic!(
                "bkfs mount failed ({code}): {stderr}\nlog:\n{}",
                std::fs::read_to_string(scratch.log()).unwrap_or_default()
            )
        },
    )
}

/// The cache directory of an artifact with this sha1.
fn key_dir(cache: &Path, sha1: &str) -> std::path::PathBuf {
    cache.join("v1").join(format!("s-{sha1}"))
}

/// Whether the sparse cache file's map says the artifact is complete and verified.
fn verified(cache: &Path, sha1: &str) -> bool {
    std::fs::read(key_dir(cache, sha1).join("map"))
        .ok()
        .filter(|m| m.len() >= 32 && &m[..8] == b"BKFSMAP1")
        .is_some_and(|m| u64::from_le_bytes(m[24..32].try_into().unwrap()) & 1 == 1)
}

fn read_sha1(p: &Path) -> String {
    sha1_hex(&std::fs::read(p).unwrap_or_else(|e| panic!("read {p:?}: {e}")))
}

/// Reads `rel` once through a mount (cold) and waits until the cache marks it verified; the
/// mount is left for the caller.
fn read_until_verified(m: &Mount, cache: &Path, rel: &str, sha1: &str) {
    let (p, s1, c2) = (m.path(rel), sha1.to_string(), cache.to_path_buf());
    bounded(LIMIT, move || {
        assert_eq!(read_sha1(&p), s1);
        assert!(
            wait_until(Duration::from_secs(30), || verified(&c2, &s1)),
            "the complete artifact was not marked verified in its map"
        );
    });
}

/// The number of `opened` log lines with `passthrough=<on>`.
fn opens(log: &str, on: bool) -> usize {
    let want = format!("passthrough={on}");
    log.lines()
        .filter(|l| l.contains("opened") && l.contains(&want))
        .count()
}

/// Bytes in the log file so far.
fn m_log_len(scratch: &Scratch) -> usize {
    std::fs::read_to_string(scratch.log())
        .map(|s| s.len())
        .unwrap_or(0)
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A large artifact read once is cached as one sparse file, verified, and the next mount
/// serves it with no request: by passthrough when the kernel allows it (root), through the
/// daemon when passthrough is refused or turned off (`BKFS_PASSTHROUGH=off`).
#[test]
fn verified_cache_file_served_by_passthrough_or_daemon() {
    let content = det_bytes(9 * MIB + 12_345, 81);
    let (fb, arts) = build_with(401, &[("big/big.bin", content)]);
    let (rel, sha1) = arts[0].clone();
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let cache = scratch.cache();
    let build = format!("{ORG}/{PIPELINE}/401");

    // Cold: fetched, stored as data + map (no per-block files), verified.
    let m = mount_env(&server, &scratch, &build, &[], &[]);
    read_until_verified(&m, &cache, &rel, &sha1);
    let mut names: Vec<String> = std::fs::read_dir(key_dir(&cache, &sha1))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["data", "map"], "one sparse file and its map");
    assert!(m.unmount(), "unmount");
    drop(m);

    // Warm, passthrough allowed. (The log file is appended to by every mount.)
    let from = m_log_len(&scratch);
    server.reset_counts();
    let m = mount_env(&server, &scratch, &build, &[], &[]);
    let (p, s1, srv) = (m.path(&rel), sha1.clone(), server.clone());
    bounded(LIMIT, move || {
        assert_eq!(read_sha1(&p), s1);
        assert_eq!(read_sha1(&p), s1, "a second open");
        assert_eq!(srv.count(Count::StorageGet), 0, "{:?}", srv.counts());
    });
    assert!(m.unmount(), "unmount");
    let log = m.log_text()[from..].to_string();
    drop(m);
    if is_root() {
        assert!(log.contains("read path: passthrough on"), "log:\n{log}");
        assert_eq!(opens(&log, true), 2, "both opens passed through:\n{log}");
    } else {
        assert!(
            log.contains("read path: passthrough refused"),
            "log:\n{log}"
        );
        assert_eq!(opens(&log, false), 2);
    }

    // Warm, passthrough turned off: the daemon serves the verified file itself.
    let from = m_log_len(&scratch);
    server.reset_counts();
    let m = mount_env(
        &server,
        &scratch,
        &build,
        &[],
        &[("BKFS_PASSTHROUGH", "off")],
    );
    let (p, s1, srv) = (m.path(&rel), sha1.clone(), server.clone());
    bounded(LIMIT, move || {
        assert_eq!(read_sha1(&p), s1);
        assert_eq!(srv.count(Count::StorageGet), 0, "{:?}", srv.counts());
    });
    assert!(m.unmount(), "unmount");
    let log = m.log_text()[from..].to_string();
    assert!(log.contains("read path: passthrough off"), "log:\n{log}");
    assert_eq!(opens(&log, true), 0);
    assert!(opens(&log, false) >= 1);
}

/// `--cache-size` evicts whole large artifacts (data and map together), least recently used
/// first, and the total payload stays within the budget.
#[test]
fn sparse_artifacts_evicted_whole_within_cache_size() {
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("d{i}/f{i}.bin"), det_bytes(6 * MIB, 90 + i as u64)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    let (fb, arts) = build_with(402, &refs);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let cache = scratch.cache();
    let build = format!("{ORG}/{PIPELINE}/402");
    let m = mount_env(&server, &scratch, &build, &["--cache-size", "13M"], &[]);
    let (mnt, a2, c2) = (m.mnt.clone(), arts.clone(), cache.clone());
    bounded(LIMIT, move || {
        for (rel, sha1) in &a2 {
            assert_eq!(read_sha1(&mnt.join(rel)), *sha1);
            assert!(
                wait_until(Duration::from_secs(30), || verified(&c2, sha1)),
                "{rel} not cached and verified"
            );
        }
    });
    assert!(m.unmount(), "unmount");
    drop(m);
    let present: Vec<bool> = arts
        .iter()
        .map(|(_, s)| key_dir(&cache, s).join("map").exists())
        .collect();
    let data: Vec<bool> = arts
        .iter()
        .map(|(_, s)| key_dir(&cache, s).join("data").exists())
        .collect();
    assert_eq!(
        present,
        [false, true, true],
        "the first read is the LRU victim"
    );
    assert_eq!(data, present, "data and map go together");
    // The survivors serve the next mount without a request; the victim is fetched again.
    server.reset_counts();
    let m = mount_env(&server, &scratch, &build, &["--cache-size", "13M"], &[]);
    let (mnt, a2, srv) = (m.mnt.clone(), arts.clone(), server.clone());
    bounded(LIMIT, move || {
        assert_eq!(read_sha1(&mnt.join(&a2[2].0)), a2[2].1);
        assert_eq!(srv.count(Count::StorageGet), 0, "{:?}", srv.counts());
        assert_eq!(read_sha1(&mnt.join(&a2[0].0)), a2[0].1);
        assert!(srv.count(Count::StorageGet) >= 1);
    });
    assert!(m.unmount(), "unmount");
}

/// One `O_DIRECT` `pread` of `len` bytes at `off` into a buffer that starts at an odd
/// address (so neither offset, size nor buffer is block aligned).
fn pread_direct(f: &std::fs::File, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len + 1];
    let n = f.read_at(&mut buf[1..], off)?;
    buf.truncate(n + 1);
    buf.remove(0);
    Ok(buf)
}

/// `O_DIRECT` reads take any offset, size and buffer alignment, as every bkfs file does,
/// also once the artifact is complete in the cache and served by passthrough: an `O_DIRECT`
/// open alone, one while another handle reads by passthrough, and a plain open while an
/// `O_DIRECT` handle is open. (ext4 refuses unaligned direct reads of the cache file with
/// EINVAL, which the kernel would pass on if the direct read went through to it.)
#[test]
fn unaligned_o_direct_reads_of_a_cached_artifact() {
    use std::os::unix::fs::OpenOptionsExt;
    let content = det_bytes(5 * MIB + 777, 82);
    let (fb, arts) = build_with(402, &[("big/direct.bin", content.clone())]);
    let (rel, sha1) = arts[0].clone();
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let cache = scratch.cache();
    let build = format!("{ORG}/{PIPELINE}/402");

    let m = mount_env(&server, &scratch, &build, &[], &[]);
    read_until_verified(&m, &cache, &rel, &sha1);
    assert!(m.unmount(), "unmount");
    drop(m);

    let from = m_log_len(&scratch);
    server.reset_counts();
    let m = mount_env(&server, &scratch, &build, &[], &[]);
    let (p, want, srv) = (m.path(&rel), content, server.clone());
    bounded(LIMIT, move || {
        let direct = || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&p)
                .unwrap()
        };
        let check = |f: &std::fs::File, what: &str| {
            for (off, len) in [(1usize, 100usize), (4097, 70_000), (3 * MIB + 3, 1 << 20)] {
                let got = pread_direct(f, off as u64, len)
                    .unwrap_or_else(|e| panic!("{what}: O_DIRECT pread @{off} +{len}: {e}"));
                assert!(
                    got == want[off..off + len],
                    "{what}: wrong bytes @{off} +{len}"
                );
            }
            let tail = want.len() - 10;
            let got = pread_direct(f, tail as u64, 4096).unwrap();
            assert!(got == want[tail..], "{what}: short read at the end");
        };
        // O_DIRECT while a plain handle (the first open of this mount: passthrough when
        // the kernel allows it) is open.
        let plain = std::fs::File::open(&p).unwrap();
        let d = direct();
        check(&d, "O_DIRECT beside a passed-through handle");
        drop(d);
        drop(plain);
        // Alone.
        let d = direct();
        check(&d, "O_DIRECT alone");
        // A plain open while the O_DIRECT handle is open.
        assert_eq!(read_sha1(&p), sha1_hex(&want), "plain read beside O_DIRECT");
        drop(d);
        assert_eq!(srv.count(Count::StorageGet), 0, "{:?}", srv.counts());
    });
    assert!(m.unmount(), "unmount");
    let log = m.log_text()[from..].to_string();
    if is_root() {
        // The first open was passed through, so the O_DIRECT open beside it met a backing.
        assert!(opens(&log, true) >= 1, "no open was passed through:\n{log}");
    }
}
