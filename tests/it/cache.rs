//! The on-disk block cache through the kernel: blocks survive an unmount and serve the next
//! mount (and another build with the same artifact) without a request, `--cache-size` bounds
//! the payload on disk with LRU eviction, a `kill -9` mid-read leaves only whole and correct
//! blocks (which the next mount reuses), a damaged block is refetched, and random reads of a
//! big artifact fetch little.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::builds::{Builder, ORG, PIPELINE};
use crate::common::*;
use bkfs::content::reader::BLOCK;

const MIB: usize = 1 << 20;
/// Block file header: magic, payload length (u64 LE), CRC32 of the payload (u32 LE).
const MAGIC: &[u8; 8] = b"BKFSBLK1";
const HEADER: usize = 8 + 8 + 4;
/// Artifacts up to this size are one block.
const WHOLE_FILE_MAX: usize = 4 * MIB;

/// One artifact: where it shows in the mount, its id and content.
#[derive(Clone)]
struct Art {
    rel: String,
    id: String,
    content: Vec<u8>,
}

impl Art {
    fn sha1(&self) -> String {
        sha1_hex(&self.content)
    }
    /// The directory of its blocks in the cache (keyed by content).
    fn key_dir(&self, cache: &Path) -> PathBuf {
        cache.join("v1").join(format!("s-{}", self.sha1()))
    }
}

/// A build of one job (dir `job`) with the given files (path as uploaded, content).
fn build_with(number: u64, files: &[(&str, Vec<u8>)]) -> (FakeBuild, Vec<Art>) {
    let mut b = Builder::new(ORG, PIPELINE, number);
    let job = b.simple_job(
        &format!("c{number:07}-0000-4000-8000-000000000001"),
        "Job",
        "2024-06-01T00:00:00.000Z",
        "job",
    );
    let mut arts = Vec::new();
    for (path, content) in files {
        let id = b.text_file(&job, "job", path, content);
        arts.push(Art {
            rel: format!("job/{path}"),
            id,
            content: content.clone(),
        });
    }
    (b.finish().0, arts)
}

fn build_name(number: u64) -> String {
    format!("{ORG}/{PIPELINE}/{number}")
}

/// Reads a whole file (fresh open) and checks it byte for byte.
fn read_ok(mnt: &Path, a: &Art) {
    let got = std::fs::read(mnt.join(&a.rel)).unwrap_or_else(|e| panic!("read {}: {e}", a.rel));
    assert!(
        got == a.content,
        "{}: read {} bytes sha1 {}, want {} bytes sha1 {}",
        a.rel,
        got.len(),
        sha1_hex(&got),
        a.content.len(),
        a.sha1()
    );
}

/// Unmounts (`fusermount3 -u`) and waits for the daemon to exit (it first finishes pending
/// cache writes, for up to 5 s); fails the test with the details if that does not work.
/// `EBUSY` right after the last close is retried for a while: another test thread's child
/// can hold copies of our fds between its fork and exec, which is not bkfs's doing.
fn unmount(m: Mount) {
    let t = Instant::now();
    let mut attempts = Vec::new();
    loop {
        let o = run(std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&m.mnt));
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        let ok = o.status.success();
        attempts.push(if ok { "ok".to_string() } else { err.clone() });
        if ok || !err.contains("busy") || t.elapsed() > Duration::from_secs(5) {
            break;
        }
        eprintln!(
            "unmount {:?}: busy; holders {:?}",
            m.mnt,
            holders_of(&m.mnt)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let gone = wait_gone(&m.mnt, Duration::from_secs(15));
    let took = t.elapsed();
    if !gone {
        let log = m.log_text();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "unmount of {:?}: fusermount3 -u attempts {attempts:?}; mounted: {}; daemons {:?} \
             after {took:?}; holders {:?}\nlog tail (newest first):\n{}",
            m.mnt,
            is_mounted(&m.mnt),
            m.daemon_pids(),
            holders_of(&m.mnt),
            tail.join("\n")
        );
    }
    if took > Duration::from_secs(1) || attempts.len() > 1 {
        eprintln!(
            "unmount of {:?} took {took:?}; attempts {attempts:?}",
            m.mnt
        );
    }
    drop(m);
}

/// Waits (bounded) until the cache holds `want` payload bytes of `a` (disk writes happen
/// behind the read path); returns how long that took.
fn wait_cached(cache: &Path, a: &Art, want: u64, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut last = (0, 0);
    let ok = wait_until(limit, || {
        last = check_blocks(cache, a);
        last.1 == want
    });
    assert!(
        ok,
        "{}: {} blocks ({} bytes) cached {limit:?} after the read, want {want} bytes",
        a.rel, last.0, last.1
    );
    if t.elapsed() > Duration::from_secs(1) {
        eprintln!("{}: the cache took {:?} to settle", a.rel, t.elapsed());
    }
    t.elapsed()
}

/// Processes with an fd, cwd or root under `mnt`: "pid comm what".
fn holders_of(mnt: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let mut links = vec![e.path().join("cwd"), e.path().join("root")];
        if let Ok(fds) = std::fs::read_dir(e.path().join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        if let Ok(tasks) = std::fs::read_dir(e.path().join("task")) {
            for t in tasks.flatten() {
                links.push(t.path().join("cwd"));
            }
        }
        for l in links {
            if let Ok(t) = std::fs::read_link(&l) {
                if t.starts_with(mnt) {
                    out.push(format!("{pid} {} {l:?} -> {t:?}", comm.trim()));
                }
            }
        }
    }
    out
}

/// Every regular file under `<cache>/v1` except `tmp/`: (key, name, path, size).
fn cache_files(cache: &Path) -> Vec<(String, String, PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(cache.join("v1")) else {
        return out;
    };
    for k in rd.flatten() {
        let key = k.file_name().to_string_lossy().to_string();
        if key == "tmp" || !k.path().is_dir() {
            continue;
        }
        for b in std::fs::read_dir(k.path()).unwrap().flatten() {
            let md = b.metadata().unwrap();
            if md.is_file() {
                out.push((
                    key.clone(),
                    b.file_name().to_string_lossy().to_string(),
                    b.path(),
                    md.len(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Total size of the block files under `<cache>/v1` (headers included, `tmp/` excluded).
fn cache_bytes(cache: &Path) -> u64 {
    cache_files(cache).iter().map(|f| f.3).sum()
}

/// Names of the files in `<cache>/v1/tmp`.
fn tmp_files(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache.join("v1/tmp"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Parses one block file independently of bkfs: header, length and CRC; returns the payload.
fn parse_block(p: &Path) -> Result<Vec<u8>, String> {
    let raw = std::fs::read(p).map_err(|e| format!("read: {e}"))?;
    if raw.len() < HEADER {
        return Err(format!("{} bytes, shorter than the header", raw.len()));
    }
    if &raw[..8] != MAGIC {
        return Err(format!("bad magic {:?}", &raw[..8]));
    }
    let len = u64::from_le_bytes(raw[8..16].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(raw[16..20].try_into().unwrap());
    let payload = &raw[HEADER..];
    if payload.len() != len {
        return Err(format!(
            "header says {len} payload bytes, file holds {}",
            payload.len()
        ));
    }
    let got = crc32fast::hash(payload);
    if got != crc {
        return Err(format!("crc {got:08x} != header {crc:08x}"));
    }
    Ok(payload.to_vec())
}

/// The bytes block `idx` of an artifact must hold (geometry of the reader).
fn expected_block(content: &[u8], idx: u64) -> &[u8] {
    if content.len() <= WHOLE_FILE_MAX {
        assert_eq!(idx, 0, "a small artifact has one block");
        return content;
    }
    let bs = BLOCK as usize;
    let start = idx as usize * bs;
    assert!(start < content.len(), "block {idx} is past the end");
    &content[start..(start + bs).min(content.len())]
}

/// Map of a large artifact's sparse cache file: header (magic, size, block size, flags), then
/// per block its CRC32 and a presence word.
const MAP_MAGIC: &[u8; 8] = b"BKFSMAP1";
const MAP_HEADER: usize = 32;
const PRESENT: u32 = 0x5345_5250;

/// The blocks a sparse cache file's map says are present: (index, offset, length, crc).
fn sparse_entries(dir: &Path) -> Vec<(u64, u64, usize, u32)> {
    let Ok(raw) = std::fs::read(dir.join("map")) else {
        return Vec::new();
    };
    assert!(
        raw.len() >= MAP_HEADER && &raw[..8] == MAP_MAGIC,
        "{dir:?}: bad map"
    );
    let size = u64::from_le_bytes(raw[8..16].try_into().unwrap());
    let bs = u64::from_le_bytes(raw[16..24].try_into().unwrap());
    let n = size.div_ceil(bs);
    assert_eq!(
        raw.len() as u64,
        MAP_HEADER as u64 + 8 * n,
        "{dir:?}: map length"
    );
    (0..n)
        .filter_map(|i| {
            let e = MAP_HEADER + 8 * i as usize;
            let crc = u32::from_le_bytes(raw[e..e + 4].try_into().unwrap());
            let present = u32::from_le_bytes(raw[e + 4..e + 8].try_into().unwrap());
            let len = (size - i * bs).min(bs) as usize;
            (present == PRESENT).then_some((i, i * bs, len, crc))
        })
        .collect()
}

/// Blocks of a large artifact present in its sparse cache file.
fn sparse_blocks(cache: &Path, a: &Art) -> usize {
    sparse_entries(&a.key_dir(cache)).len()
}

/// Checks every block of `a` in the cache (block files, or the blocks its sparse file's map
/// says are present, CRC and content) against its content; returns (blocks, payload).
fn check_blocks(cache: &Path, a: &Art) -> (u64, u64) {
    let dir = a.key_dir(cache);
    let key = dir.file_name().unwrap().to_string_lossy().to_string();
    let mut n = 0;
    let mut payload = 0;
    if dir.join("map").exists() {
        let data = std::fs::File::open(dir.join("data")).expect("sparse data file");
        for (idx, off, len, crc) in sparse_entries(&dir) {
            let mut got = vec![0u8; len];
            data.read_exact_at(&mut got, off).unwrap();
            assert_eq!(crc32fast::hash(&got), crc, "{}: block {idx}: CRC", a.rel);
            let want = expected_block(&a.content, idx);
            assert!(got == want, "{}: block {idx} holds the wrong bytes", a.rel);
            n += 1;
            payload += len as u64;
        }
        return (n, payload);
    }
    for (k, name, p, _) in cache_files(cache) {
        if k != key {
            continue;
        }
        let idx: u64 = name
            .parse()
            .unwrap_or_else(|_| panic!("{}: block file with a non-numeric name {p:?}", a.rel));
        let got = parse_block(&p).unwrap_or_else(|e| panic!("{}: block {p:?}: {e}", a.rel));
        let want = expected_block(&a.content, idx);
        assert!(
            got == want,
            "{}: block {idx} holds {} bytes (sha1 {}) but the artifact has {} bytes (sha1 {}) there",
            a.rel,
            got.len(),
            sha1_hex(&got),
            want.len(),
            sha1_hex(want)
        );
        n += 1;
        payload += got.len() as u64;
    }
    (n, payload)
}

/// Blocks read in build A's mount serve a second mount of the same cache dir without a single
/// storage or download request: small files (one verified block) and a 10 MiB one.
#[test]
fn cache_reuse_across_mounts() {
    let files = [
        ("a/tiny.txt", det_bytes(1_000, 11)),
        ("b/small.bin", det_bytes(300_000, 12)),
        ("c/three.bin", det_bytes(3 * MIB + 17, 13)),
        ("d/big.bin", det_bytes(10 * MIB + 4321, 14)),
    ];
    let (fb, arts) = build_with(301, &files);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let cache = scratch.cache();

    let m = mount(&server, &scratch, &build_name(301), &[]);
    let (mnt, a2, c2) = (m.mnt.clone(), arts.clone(), cache.clone());
    bounded(LIMIT, move || {
        for a in &a2 {
            read_ok(&mnt, a);
        }
        for a in &a2 {
            wait_cached(&c2, a, a.content.len() as u64, Duration::from_secs(30));
        }
    });
    unmount(m);
    let first = server.counts();
    for a in &arts {
        let (n, payload) = check_blocks(&cache, a);
        assert_eq!(
            payload,
            a.content.len() as u64,
            "{}: {n} blocks cached after a full read",
            a.rel
        );
    }

    server.reset_counts();
    let m = mount(&server, &scratch, &build_name(301), &[]);
    let (mnt, a2, s2) = (m.mnt.clone(), arts.clone(), server.clone());
    bounded(LIMIT, move || {
        for a in &a2 {
            read_ok(&mnt, a);
        }
        let c = s2.counts();
        eprintln!("first mount: {first:?}\nsecond mount: {c:?}");
        assert_eq!(s2.count(Count::StorageGet), 0, "second mount: {c:?}");
        assert_eq!(s2.count(Count::Download), 0, "second mount: {c:?}");
        assert_eq!(s2.storage_bytes_served(), 0, "second mount: {c:?}");
    });
    unmount(m);
}

/// The same content in two builds is one cache entry: read in build A, it serves build B with
/// no request, and the cache holds it once.
#[test]
fn identical_artifacts_share_cache_across_builds() {
    let small = det_bytes(2 * MIB + 5, 21);
    let big = det_bytes(6 * MIB + 99, 22);
    let (fa, arts_a) = build_with(
        311,
        &[
            ("x/shared-small.bin", small.clone()),
            ("y/shared-big.bin", big.clone()),
        ],
    );
    let (fb, arts_b) = build_with(
        312,
        &[
            ("p/same-small.bin", small.clone()),
            ("q/same-big.bin", big.clone()),
        ],
    );
    assert_ne!(arts_a[0].id, arts_b[0].id, "distinct artifact ids");
    let server = Arc::new(server());
    server.add_build(fa);
    server.add_build(fb);
    let scratch = Scratch::new();
    let cache = scratch.cache();

    let m = mount(&server, &scratch, &build_name(311), &[]);
    let (mnt, a2, c2) = (m.mnt.clone(), arts_a.clone(), cache.clone());
    bounded(LIMIT, move || {
        for a in &a2 {
            read_ok(&mnt, a);
        }
        for a in &a2 {
            wait_cached(&c2, a, a.content.len() as u64, Duration::from_secs(30));
        }
    });
    unmount(m);
    let after_a = cache_bytes(&cache);

    server.reset_counts();
    let m = mount(&server, &scratch, &build_name(312), &[]);
    let (mnt, b2, s2) = (m.mnt.clone(), arts_b.clone(), server.clone());
    bounded(LIMIT, move || {
        for a in &b2 {
            read_ok(&mnt, a);
        }
        let c = s2.counts();
        assert_eq!(s2.count(Count::StorageGet), 0, "build B: {c:?}");
        assert_eq!(s2.count(Count::Download), 0, "build B: {c:?}");
    });
    unmount(m);

    let one_copy = (small.len() + big.len()) as u64;
    // The small one is a block file (header + payload); the big one a sparse data file as
    // long as the artifact plus its map (header + 8 bytes per block).
    let big_blocks = big.len().div_ceil(BLOCK as usize) as u64;
    let nblocks = 1 + big_blocks;
    let on_disk = cache_bytes(&cache);
    let keys: std::collections::BTreeSet<String> =
        cache_files(&cache).into_iter().map(|f| f.0).collect();
    eprintln!(
        "cache after A: {after_a} bytes; after B: {on_disk} bytes; one copy: {one_copy} + \
         {nblocks} headers or map entries; keys {keys:?}"
    );
    assert_eq!(keys.len(), 2, "one key per distinct content: {keys:?}");
    assert_eq!(
        on_disk,
        one_copy + HEADER as u64 + MAP_HEADER as u64 + 8 * big_blocks,
        "the cache must hold each content once"
    );
    assert_eq!(on_disk, after_a, "build B added nothing to the cache");
}

/// `--cache-size 2M` with six 1 MiB files read in turn: the payload on disk stays within 2 MiB;
/// after a remount the last file read is served from the cache and the first is fetched again.
#[test]
fn eviction_under_small_cache_size() {
    // One directory per file, so the directory-scan prefetch never fetches a neighbour.
    let files: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("d{i}/f{i}.bin"), det_bytes(MIB, 40 + i as u64)))
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    let (fb, arts) = build_with(321, &refs);
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let cache = scratch.cache();
    let budget = 2 * MIB as u64;
    let slack = 6 * HEADER as u64;

    let m = mount(&server, &scratch, &build_name(321), &["--cache-size", "2M"]);
    let (mnt, a2, c2) = (m.mnt.clone(), arts.clone(), cache.clone());
    let sizes = bounded(LIMIT, move || {
        // The block reaches the disk asynchronously (the read is answered from memory), and a
        // new block is renamed into place before the LRU victim goes: wait (bounded) for each
        // file's block to land and the directory to settle, noting the largest size seen.
        let mut sizes = Vec::new();
        for a in &a2 {
            read_ok(&mnt, a);
            let block = a.key_dir(&c2).join("0");
            let mut peak = 0;
            let settled = wait_until(Duration::from_secs(5), || {
                let b = cache_bytes(&c2);
                peak = peak.max(b);
                block.exists() && b <= budget + slack
            });
            let b = cache_bytes(&c2);
            assert!(
                settled,
                "after reading {}: block on disk: {}, {b} bytes under v1 with --cache-size 2M \
                 (files: {:?})",
                a.rel,
                block.exists(),
                cache_files(&c2)
                    .iter()
                    .map(|f| (f.0.clone(), f.3))
                    .collect::<Vec<_>>()
            );
            sizes.push((b, peak));
        }
        sizes
    });
    unmount(m);
    eprintln!("bytes under v1 after each read (settled, peak seen): {sizes:?}");
    let cached: Vec<bool> = arts
        .iter()
        .map(|a| a.key_dir(&cache).join("0").exists())
        .collect();
    assert_eq!(
        cached,
        [false, false, false, false, true, true],
        "which files have their block on disk after reading all six in order"
    );
    assert!(cache_bytes(&cache) <= budget + slack);

    let m = mount(&server, &scratch, &build_name(321), &["--cache-size", "2M"]);
    let (mnt, a2, s2, c2) = (m.mnt.clone(), arts.clone(), server.clone(), cache.clone());
    bounded(LIMIT, move || {
        s2.reset_counts();
        read_ok(&mnt, &a2[5]);
        let c = s2.counts();
        assert_eq!(
            s2.count(Count::StorageGet),
            0,
            "the last file read must come from the cache: {c:?}"
        );
        s2.reset_counts();
        read_ok(&mnt, &a2[0]);
        let c = s2.counts();
        assert!(
            s2.count(Count::StorageGet) >= 1,
            "the first file read was evicted and must be fetched again: {c:?}"
        );
        let on_disk = |a: &Art| a.key_dir(&c2).join("0").exists();
        let settled = wait_until(Duration::from_secs(5), || {
            on_disk(&a2[0]) && cache_bytes(&c2) <= budget + slack
        });
        let b = cache_bytes(&c2);
        assert!(
            settled,
            "after the remount: first file on disk: {}, {b} bytes under v1",
            on_disk(&a2[0])
        );
        let cached: Vec<bool> = a2.iter().map(on_disk).collect();
        assert_eq!(
            cached,
            [true, false, false, false, false, true],
            "after the remount read the last file, then the first: the 5th is the LRU victim"
        );
    });
    unmount(m);
}

/// `kill -9` of the daemon in the middle of a throttled 64 MiB read: the reader gets an error
/// (no hang), every block left on disk is whole and holds the right bytes, the next mount
/// cleans `tmp/`, and reads the file correctly fetching only what is not cached.
#[test]
fn kill9_mid_read_then_remount_serves_only_good_data() {
    let content = det_bytes(64 * MIB, 51);
    let (fb, arts) = build_with(331, &[("big/big.bin", content)]);
    let a = arts[0].clone();
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let cache = scratch.cache();
    let size = a.content.len() as u64;

    // Per response: a 4 MiB prefetch part takes 2 s.
    server.set_storage_bandwidth(2_000_000);
    let m = mount(&server, &scratch, &build_name(331), &[]);
    let pids = m.daemon_pids();
    assert!(!pids.is_empty(), "no daemon found for {:?}", m.mnt);
    let (mnt, a2, s2, c2) = (m.mnt.clone(), a.clone(), server.clone(), cache.clone());
    let (errno, kill_blocks, kill_served) = bounded(LIMIT, move || {
        let (tx, rx) = std::sync::mpsc::channel();
        let p = mnt.join(&a2.rel);
        std::thread::spawn(move || {
            let r = std::fs::read(&p);
            let _ = tx.send(r);
        });
        // Some blocks on disk, but the read far from over.
        let key_dir = a2.key_dir(&c2);
        let _ = &key_dir;
        let landed = wait_until(Duration::from_secs(20), || sparse_blocks(&c2, &a2) >= 4);
        assert!(landed, "no blocks reached the cache within 20 s");
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            rx.try_recv().is_err(),
            "the read finished before the kill: throttle too weak for this test"
        );
        let served = s2.storage_bytes_served();
        let blocks = sparse_blocks(&c2, &a2);
        for pid in &pids {
            // SAFETY: plain kill(2) of the daemon we started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let t = Instant::now();
        let r = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the reader hung for 10 s after kill -9 of the daemon");
        eprintln!(
            "reader returned {:?} after {:?}",
            r.as_ref().map(|v| v.len()),
            t.elapsed()
        );
        let e = match r {
            Ok(v) => panic!(
                "read succeeded with {} bytes although the daemon was killed",
                v.len()
            ),
            Err(e) => e,
        };
        (e.raw_os_error(), blocks, served)
    });
    assert!(
        matches!(errno, Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)),
        "errno after kill -9: {errno:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || m.daemon_pids().is_empty()),
        "the daemon survived SIGKILL"
    );
    let (code, _, err) = sh(&format!("fusermount3 -u -z '{}'", m.mnt.display()));
    assert!(
        wait_gone(&m.mnt, Duration::from_secs(5)),
        "still mounted after fusermount3 -u -z (exit {code}: {err})"
    );
    drop(m);

    // What the crash left: only whole blocks with the right bytes.
    let tmp_left = tmp_files(&cache);
    let (n, payload) = check_blocks(&cache, &a);
    let other: Vec<_> = cache_files(&cache)
        .into_iter()
        .filter(|f| !a.key_dir(&cache).ends_with(&f.0))
        .collect();
    eprintln!(
        "at kill: {kill_blocks} block files, {kill_served} bytes served; after: {n} blocks \
         ({payload} bytes) intact, tmp leftovers {tmp_left:?}"
    );
    assert!(n >= 4, "only {n} blocks on disk after the kill");
    assert!(payload < size, "the whole file was cached before the kill");
    assert!(other.is_empty(), "unexpected files in the cache: {other:?}");

    // Remount with the same cache: tmp/ cleaned, cached blocks reused.
    server.set_storage_bandwidth(0);
    server.reset_counts();
    let m = mount(&server, &scratch, &build_name(331), &[]);
    assert_eq!(
        tmp_files(&cache),
        Vec::<String>::new(),
        "the new mount must clean v1/tmp"
    );
    let (mnt, a2, s2, c2) = (m.mnt.clone(), a.clone(), server.clone(), cache.clone());
    bounded(LIMIT, move || {
        let got = std::fs::read(mnt.join(&a2.rel)).expect("read after remount");
        assert_eq!(sha1_hex(&got), a2.sha1(), "content after remount");
        assert!(got == a2.content);
        let served = s2.storage_bytes_served();
        let c = s2.counts();
        eprintln!("after remount: {served} bytes served for {size} ({payload} cached): {c:?}");
        assert!(
            served <= size - payload,
            "{served} bytes served, but {payload} of {size} were cached: {c:?}"
        );
        // Every block written behind the read, and the complete artifact verified (a failed
        // whole-file check would delete the key).
        wait_cached(&c2, &a2, size, Duration::from_secs(40));
    });
    unmount(m);
    let (n, payload) = check_blocks(&cache, &a);
    assert_eq!(
        payload, size,
        "the whole file is cached after the full read ({n} blocks)"
    );
}

/// A block file damaged on disk (one payload byte flipped) is a miss: the next mount fetches
/// the file again (one GET), serves the right bytes, and stores a good block.
#[test]
fn corrupt_cache_block_on_disk_is_refetched() {
    let (fb, arts) = build_with(341, &[("s/small.bin", det_bytes(500_000, 61))]);
    let a = arts[0].clone();
    let server = Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let cache = scratch.cache();

    let m = mount(&server, &scratch, &build_name(341), &[]);
    let (mnt, a2) = (m.mnt.clone(), a.clone());
    bounded(LIMIT, move || read_ok(&mnt, &a2));
    unmount(m);
    let block = a.key_dir(&cache).join("0");
    assert_eq!(check_blocks(&cache, &a), (1, a.content.len() as u64));
    let mut raw = std::fs::read(&block).unwrap();
    let i = HEADER + 12_345;
    raw[i] ^= 0x40;
    std::fs::write(&block, &raw).unwrap();
    assert!(
        parse_block(&block).is_err(),
        "the damage must break the CRC"
    );

    server.reset_counts();
    let m = mount(&server, &scratch, &build_name(341), &[]);
    let (mnt, a2, s2) = (m.mnt.clone(), a.clone(), server.clone());
    bounded(LIMIT, move || {
        read_ok(&mnt, &a2);
        let c = s2.counts();
        assert_eq!(s2.count(Count::StorageGet), 1, "one refetch: {c:?}");
    });
    unmount(m);
    assert_eq!(
        check_blocks(&cache, &a),
        (1, a.content.len() as u64),
        "a good block replaces the damaged one"
    );
}

/// 200 random 4 KiB preads of a 256 MiB artifact: every one right, and storage serves at
/// most 256 KiB per read.
#[test]
fn random_read_economy() {
    let content = det_bytes(256 * MIB, 71);
    let (fb, arts) = build_with(351, &[("r/huge.bin", content)]);
    let a = arts[0].clone();
    let env = Env::new(fb, &[]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    bounded(Duration::from_secs(120), move || {
        server.reset_counts();
        let f = std::fs::File::open(mnt.join(&a.rel)).unwrap();
        let size = a.content.len() as u64;
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut buf = vec![0u8; 4096];
        let n = 200u64;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = x % (size - 4096);
            f.read_exact_at(&mut buf, off)
                .unwrap_or_else(|e| panic!("pread #{i} at {off}: {e}"));
            let o = off as usize;
            assert!(
                buf == a.content[o..o + 4096],
                "pread #{i} at {off}: wrong bytes"
            );
        }
        let served = server.storage_bytes_served();
        let budget = n * 256 * 1024;
        let c = server.counts();
        let msg = format!(
            "{served} bytes served for {n} 4 KiB reads: {:.1} KiB per read, {:.2} of the \
             256 KiB/read budget, {:.1}x the bytes asked for: {c:?}",
            served as f64 / n as f64 / 1024.0,
            served as f64 / budget as f64,
            served as f64 / (n * 4096) as f64
        );
        eprintln!("{msg}");
        assert!(served <= budget, "{msg}");
    });
}
