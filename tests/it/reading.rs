//! Reading through the kernel: every byte and sha1 right (std::fs, `cat`, `cp -r` + `diff -r`,
//! `grep -r`), ranged reads of a big file fetch little, signed-URL expiry is survived,
//! 16 concurrent readers, and the token never reaches storage or the log.

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::common::builds::{rich_build, small_build, Builder, ORG, PIPELINE};
use crate::common::*;

const MIB: usize = 1 << 20;

/// How long to wait for a signed URL with a 1 s TTL to be refused: the fake puts a
/// whole-second `Expires` (rounded up) in the URL, so it can live almost 2 s.
const URL_EXPIRED: Duration = Duration::from_millis(2100);

/// Every file of the big build reads back exactly, by std::fs, by `cat`, and by `cp -r`.
#[test]
fn contents_and_sha1_match() {
    let (fb, exp) = rich_build();
    // ~300 downloads: lift the API budget the fake advertises (200/min by default), which
    // bkfs paces itself by; pacing has its own test below.
    let server = Arc::new(server());
    server.set_rate_limit(100_000, Duration::from_secs(60), false);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = mount(&server, &scratch, crate::common::builds::BUILD, &[]);
    let mnt = m.mnt.clone();
    let work = tempfile::Builder::new()
        .prefix("bkfs-it-copy-")
        .tempdir()
        .unwrap();
    let work_path = work.path().to_path_buf();
    bounded(Duration::from_secs(120), move || {
        for (rel, f) in &exp.files {
            let p = mnt.join(rel);
            let got = std::fs::read(&p).unwrap_or_else(|e| panic!("read {rel:?}: {e}"));
            assert!(
                got == f.content,
                "{rel}: {} bytes read, {} expected, contents differ",
                got.len(),
                f.content.len()
            );
            let sha = sha1_hex(&got);
            assert_eq!(sha, sha1_hex(&f.content), "{rel}");
            let x = xattr(&p, "user.buildkite.sha1sum")
                .unwrap_or_else(|| panic!("{rel}: no sha1sum xattr"));
            assert_eq!(String::from_utf8(x).unwrap(), sha, "{rel}: sha1sum xattr");
            let id = xattr(&p, "user.buildkite.artifact_id").unwrap();
            assert_eq!(
                String::from_utf8(id).unwrap(),
                f.artifact_id,
                "{rel}: artifact_id xattr"
            );
        }

        // `cat` of every file in one go equals the concatenation.
        let mut want = Vec::new();
        let mut cat = Command::new("cat");
        cat.arg("--");
        for (rel, f) in &exp.files {
            want.extend_from_slice(&f.content);
            cat.arg(mnt.join(rel));
        }
        let o = run(&mut cat);
        assert!(
            o.status.success(),
            "cat: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stdout == want,
            "cat output differs ({} vs {} bytes)",
            o.stdout.len(),
            want.len()
        );

        // cp -r the whole mount and diff -r against a local copy of the expected tree.
        let copy = work_path.join("copy");
        let local = work_path.join("want");
        exp.write_to(&local);
        let (code, _, err) = sh(&format!("cp -r {} {}", mnt.display(), copy.display()));
        assert_eq!(code, 0, "cp -r: {err}");
        let (code, out, err) = sh(&format!("diff -r {} {}", local.display(), copy.display()));
        let _ = sh(&format!("chmod -R u+w {}", copy.display()));
        assert_eq!(code, 0, "diff -r: {out}{err}");
    });
    drop(work);
}

/// `grep -r` finds the line, and only in the file that has it.
#[test]
fn grep_r_finds_text() {
    let (fb, _) = small_build(3);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    bounded(LIMIT, move || {
        let (code, out, err) = sh(&format!("grep -r 'ERROR: boom' {}", mnt.display()));
        assert_eq!(code, 0, "grep: {err}");
        assert_eq!(
            out,
            format!(
                "{}/build/log/build.log:0137 ERROR: boom in unit 137\n",
                mnt.display()
            )
        );
        let (code, out, _) = sh(&format!(
            "grep -rl 'no such text anywhere' {}",
            mnt.display()
        ));
        assert_eq!((code, out.as_str()), (1, ""));
    });
}

/// One big artifact, for the ranged-read tests.
fn big_file_build(number: u64, len: usize, seed: u64) -> (crate::common::FakeBuild, Vec<u8>) {
    let mut b = Builder::new(ORG, PIPELINE, number);
    let j = b.simple_job(
        "g0000001-0000-4000-8000-000000000201",
        "Big",
        "2024-06-01T00:00:00.000Z",
        "big",
    );
    let content = det_bytes(len, seed);
    b.text_file(&j, "big", "big.bin", &content);
    b.text_file(&j, "big", "small.txt", b"small file\n");
    (b.finish().0, content)
}

/// 4 KiB at 32 MiB of a 64 MiB artifact: right bytes, at most 1 MiB from storage.
#[test]
fn ranged_read_fetches_little() {
    let (fb, content) = big_file_build(11, 64 * MIB, 64);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let server = env.server.clone();
    bounded(LIMIT, move || {
        server.reset_counts();
        let f = std::fs::File::open(mnt.join("big/big.bin")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 64 * MIB as u64);
        let mut buf = vec![0u8; 4096];
        let off = 32 * MIB;
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == content[off..off + 4096], "bytes at 32 MiB differ");
        let served = server.storage_bytes_served();
        eprintln!("served after one 4 KiB read: {served}");
        assert!(
            served <= MIB as u64,
            "{served} bytes served for a 4 KiB read; counts {:?}",
            server.counts()
        );
        // A second random read elsewhere also costs about one block.
        let off2 = 50 * MIB + 1000;
        f.read_exact_at(&mut buf, off2 as u64).unwrap();
        assert!(buf == content[off2..off2 + 4096], "bytes at 50 MiB differ");
        let served = server.storage_bytes_served();
        assert!(
            served <= 2 * MIB as u64,
            "{served} bytes served for two 4 KiB reads; counts {:?}",
            server.counts()
        );
        // The last bytes of the file, across the final partial block.
        let mut tail = vec![0u8; 100];
        f.read_exact_at(&mut tail, (64 * MIB - 100) as u64).unwrap();
        assert!(tail == content[64 * MIB - 100..]);
        // Reading past the end gives 0 bytes.
        assert_eq!(f.read_at(&mut buf, 64 * MIB as u64 + 10).unwrap(), 0);
    });
}

/// Signed URLs that expire after 1 s: a later read of another block and another file still
/// gets the right bytes through a fresh URL.
#[test]
fn url_expiry_mid_session() {
    let (fb, content) = big_file_build(12, 64 * MIB, 12);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let server = env.server.clone();
    server.set_url_ttl(Duration::from_secs(1));
    bounded(LIMIT, move || {
        let f = std::fs::File::open(mnt.join("big/big.bin")).unwrap();
        let mut buf = vec![0u8; 4096];
        // A random read (not at 0, so no sequential prefetch): one URL, one block.
        let off = MIB + 5;
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == content[off..off + 4096]);
        assert_eq!(server.count(Count::Download), 1, "{:?}", server.counts());
        // Past the TTL (a sleep is the point here): the cached URL is now refused.
        std::thread::sleep(URL_EXPIRED);
        let off = 40 * MIB + 123;
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert!(buf == content[off..off + 4096], "bytes after expiry differ");
        assert!(
            server.count(Count::Download) >= 2,
            "no fresh URL was fetched: {:?}",
            server.counts()
        );
        std::thread::sleep(URL_EXPIRED);
        assert_eq!(
            std::fs::read(mnt.join("big/small.txt")).unwrap(),
            b"small file\n"
        );
    });
}

/// A long sequential read with a pause longer than the URL lifetime (TTL 1 s) after the
/// first 4 MiB: the rest of the 64 MiB file, beyond anything prefetched before the pause,
/// comes through refreshed URLs; right bytes and no read logged as failed.
#[test]
fn url_expiry_during_long_sequential_read() {
    use std::io::Read;
    let (fb, content) = big_file_build(16, 64 * MIB, 16);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let log = env.m.log.clone();
    let server = env.server.clone();
    server.set_url_ttl(Duration::from_secs(1));
    bounded(LIMIT, move || {
        let mut f = std::fs::File::open(mnt.join("big/big.bin")).unwrap();
        let mut got = vec![0u8; 4 * MIB];
        f.read_exact(&mut got).unwrap();
        std::thread::sleep(URL_EXPIRED);
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), content.len());
        assert!(got == content, "bytes differ");
        let text = std::fs::read_to_string(&log).unwrap();
        let failed: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(
            failed.is_empty(),
            "{} reads failed; counts {:?}; first: {}",
            failed.len(),
            server.counts(),
            failed[0]
        );
        assert!(server.count(Count::Download) >= 2, "{:?}", server.counts());
    });
}

/// 16 threads reading the same and different files at once (storage made slow so that the
/// reads overlap): every byte right.
#[test]
fn sixteen_concurrent_readers() {
    let mut b = Builder::new(ORG, PIPELINE, 13);
    let jid = b.simple_job(
        "c0000001-0000-4000-8000-000000000301",
        "Build",
        "2024-06-01T00:00:00.000Z",
        "build",
    );
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..8 {
        let c = det_bytes(1000 + i * 37_000, 100 + i as u64);
        let p = format!("f/{i}.bin");
        b.fb.add_artifact(&jid, &p, c.clone());
        files.push((format!("build/{p}"), c));
    }
    let big = det_bytes(6 * MIB + 17, 999);
    b.fb.add_artifact(&jid, "big.bin", big.clone());
    files.push(("build/big.bin".into(), big));
    let env = Env::new(b.fb, &[]);
    env.server.set_storage_latency(Duration::from_millis(30));
    let mnt = env.mnt();
    let files = Arc::new(files);
    bounded(LIMIT, move || {
        let barrier = Arc::new(Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (files, mnt, barrier) = (files.clone(), mnt.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let n = files.len();
                    for k in 0..n {
                        // Half the threads go in one order, half in another; all share files.
                        let i = if t % 2 == 0 {
                            (t + k) % n
                        } else {
                            (n - 1 + n * 4 - t - k) % n
                        };
                        let (rel, want) = &files[i];
                        let p = mnt.join(rel);
                        if t % 3 == 0 {
                            // Random-access chunks.
                            let f = std::fs::File::open(&p).unwrap();
                            for c in 0..4 {
                                let off = (want.len() / 5) * c + t * 7;
                                let len = 5000.min(want.len() - off);
                                let mut buf = vec![0u8; len];
                                f.read_exact_at(&mut buf, off as u64).unwrap();
                                assert!(buf == want[off..off + len], "thread {t}: {rel} @ {off}");
                            }
                        } else {
                            let got = std::fs::read(&p).unwrap();
                            assert!(got == *want, "thread {t}: {rel} differs");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("reader thread failed");
        }
    });
}

/// After reads, no storage request carried an Authorization header, and the log (written
/// at -vv) holds neither the token nor a signed URL's query.
#[test]
fn token_never_reaches_storage_or_log() {
    const SECRET: &str = "bkua_s3cr3t_5d1c0e9f8a7b";
    let (fb, exp) = small_build(14);
    let server = Arc::new(server());
    server.add_token(
        SECRET,
        &["read_artifacts", "read_builds", "write_artifacts"],
    );
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = try_mount(&server, &scratch, "acme/web-app/14", Some(SECRET), &[])
        .unwrap_or_else(|(c, e)| panic!("mount failed ({c}): {e}"));
    assert!(m.stderr.is_empty() && !m.stderr.contains(SECRET));
    let mnt = m.mnt.clone();
    let log = m.log.clone();
    let s = server.clone();
    bounded(LIMIT, move || {
        for (rel, f) in &exp.files {
            assert_eq!(std::fs::read(mnt.join(rel)).unwrap(), f.content, "{rel}");
        }
        assert!(
            s.count(Count::StorageGet) >= exp.files.len() as u64,
            "{:?}",
            s.counts()
        );
        assert_eq!(s.count(Count::StorageAuthorization), 0, "{:?}", s.counts());
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() > 200, "the -vv log is nearly empty: {text:?}");
        assert!(!text.contains(SECRET), "the token is in the log");
        // Any storage URL in the log is shown without its query string.
        let storage = s.storage_url();
        let storage = storage.trim_end_matches('/');
        for (i, _) in text.match_indices(storage) {
            let url: String = text[i..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',' && *c != ')')
                .collect();
            if let Some((_, q)) = url.split_once('?') {
                assert!(
                    q.starts_with("<redacted>"),
                    "a signed URL's query is in the log: {url}"
                );
            }
        }
    });
}

/// More downloads than the API budget the server advertises: bkfs waits for the next
/// rate-limit window, and that wait must not turn into a failed read (EIO) even when it is
/// longer than `--read-timeout`. Every byte right, no read logged as failed.
#[test]
fn rate_limit_pacing_does_not_fail_reads() {
    let mut b = Builder::new(ORG, PIPELINE, 15);
    let j = b.simple_job(
        "c0000001-0000-4000-8000-000000000401",
        "Many",
        "2024-06-01T00:00:00.000Z",
        "many",
    );
    for i in 0..12 {
        b.file(
            &j,
            "many",
            &format!("f{i:02}.txt"),
            &format!("f{i:02}.txt"),
            100 + i,
        );
    }
    let (fb, exp) = b.finish();
    let server = Arc::new(server());
    // 8 requests per 3 s window: access-token, build and one list page leave 5 downloads.
    server.set_rate_limit(8, Duration::from_secs(3), false);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        "acme/web-app/15",
        &["--read-timeout", "2"],
    );
    let mnt = m.mnt.clone();
    let log = m.log.clone();
    bounded(LIMIT, move || {
        for (rel, f) in &exp.files {
            let got = std::fs::read(mnt.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
            assert!(got == f.content, "{rel} differs");
        }
        let text = std::fs::read_to_string(&log).unwrap();
        let failed: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(
            failed.is_empty(),
            "reads failed while waiting for the API budget:\n{}",
            failed.join("\n")
        );
    });
}

/// A 48 MiB artifact read start to end with default settings: right bytes, well within the
/// bound, and no read logged as failed (a storage request that takes 30 s is a failure).
#[test]
fn sequential_read_of_a_large_file() {
    let (fb, content) = big_file_build(17, 48 * MIB, 17);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let log = env.m.log.clone();
    let server = env.server.clone();
    bounded(LIMIT, move || {
        let t = std::time::Instant::now();
        let got = std::fs::read(mnt.join("big/big.bin")).unwrap();
        let took = t.elapsed();
        assert!(got == content, "bytes differ");
        let text = std::fs::read_to_string(&log).unwrap();
        let failed: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
        assert!(
            failed.is_empty(),
            "{} reads failed during a {took:?} sequential read; counts {:?}; first: {}",
            failed.len(),
            server.counts(),
            failed[0]
        );
        assert!(took < Duration::from_secs(30), "48 MiB took {took:?}");
        // Nothing fetched twice (a little slack for readahead at the end).
        let served = server.storage_bytes_served();
        assert!(
            served <= 49 * MIB as u64,
            "{served} bytes served for a 48 MiB file"
        );
    });
}
