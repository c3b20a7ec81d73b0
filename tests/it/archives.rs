//! Archive artifacts as directories (`NAME#`) through the kernel: listings and contents of
//! zip (stored, deflate, ZIP64), tar and tar.gz; what a listing and a random read cost in
//! storage requests; a remount served from the persisted index; concurrent first lookups;
//! `--list-archives`; and hostile archives (bombs, corrupt and truncated files, encrypted
//! and unsupported entries, disagreeing headers, absurd counts, hostile names).

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use crate::common::*;

const MIB: usize = 1 << 20;
const T: Duration = Duration::from_secs(60);

fn zip_of(files: &[(&str, &[u8], bool)], large: bool) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data, deflate) in files {
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(if *deflate {
                zip::CompressionMethod::Deflated
            } else {
                zip::CompressionMethod::Stored
            })
            .large_file(large);
        if name.ends_with('/') {
            w.add_directory(*name, opts).unwrap();
        } else {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

/// Rewrites a small zip's end so that its central directory is found only through a ZIP64
/// end record and locator (the classic end record's fields saturated).
fn to_zip64(b: &[u8]) -> Vec<u8> {
    let e = b.len() - 22;
    assert_eq!(&b[e..e + 4], b"PK\x05\x06");
    let entries = u16::from_le_bytes([b[e + 10], b[e + 11]]) as u64;
    let cd_size = u32::from_le_bytes(b[e + 12..e + 16].try_into().unwrap()) as u64;
    let cd_off = u32::from_le_bytes(b[e + 16..e + 20].try_into().unwrap()) as u64;
    let mut out = b[..e].to_vec();
    let at = out.len() as u64;
    out.extend_from_slice(b"PK\x06\x06");
    out.extend_from_slice(&44u64.to_le_bytes());
    out.extend_from_slice(&[45, 0, 45, 0]);
    out.extend_from_slice(&[0; 8]);
    for v in [entries, entries, cd_size, cd_off] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(b"PK\x06\x07");
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    // entries on this disk, entries, CD size, CD offset: all "see the ZIP64 record".
    out.extend_from_slice(&[0xff; 12]);
    out.extend_from_slice(&[0; 2]);
    out
}

fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn tar_file(t: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    t.append_data(&mut h, path, data).unwrap();
}

fn tar_link(t: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    t.append_link(&mut h, path, target).unwrap();
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Overwrites a field of every local header (at `local` from its start) and central
/// directory record (at `central`) of a small test zip.
fn patch(b: &mut [u8], local: usize, central: usize, v: &[u8]) {
    let at = |sig: &[u8; 4]| -> Vec<usize> {
        b.windows(4)
            .enumerate()
            .filter(|(_, w)| w == sig)
            .map(|(i, _)| i)
            .collect()
    };
    let (ls, cs) = (at(b"PK\x03\x04"), at(b"PK\x01\x02"));
    assert!(!ls.is_empty() && !cs.is_empty());
    for i in ls {
        b[i + local..i + local + v.len()].copy_from_slice(v);
    }
    for i in cs {
        b[i + central..i + central + v.len()].copy_from_slice(v);
    }
}

/// Overwrites a field of the first local header only (at `local` from its start).
fn patch_local(b: &mut [u8], local: usize, v: &[u8]) {
    let i = b.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
    b[i + local..i + local + v.len()].copy_from_slice(v);
}

/// A little-endian u16 or u32 field of the first local header.
fn local_field(b: &[u8], local: usize, len: usize) -> u32 {
    let i = b.windows(4).position(|w| w == b"PK\x03\x04").unwrap();
    let mut v = [0u8; 4];
    v[..len].copy_from_slice(&b[i + local..i + local + len]);
    u32::from_le_bytes(v)
}

fn replace_all(b: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= b.len() {
        if &b[i..i + from.len()] == from {
            b[i..i + to.len()].copy_from_slice(to);
        }
        i += 1;
    }
}

/// A build of one job (dir `job`) with these artifacts.
fn build(number: u64, files: Vec<(&str, Vec<u8>)>) -> FakeBuild {
    crate::common::builds::one_job_build('a', number, files)
}

/// Every entry under `root`: path → ('f', content) / ('d', empty) / ('l', target).
fn tree(root: &Path) -> BTreeMap<String, (char, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {dir:?}: {e}")) {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.insert(rel, ('d', Vec::new()));
                stack.push(p);
            } else if md.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(rel, ('l', t.to_string_lossy().as_bytes().to_vec()));
            } else {
                let data = std::fs::read(&p).unwrap_or_else(|e| panic!("read {p:?}: {e}"));
                assert_eq!(md.len(), data.len() as u64, "{rel}: size");
                out.insert(rel, ('f', data));
            }
        }
    }
    out
}

fn f(data: &[u8]) -> (char, Vec<u8>) {
    ('f', data.to_vec())
}
fn d() -> (char, Vec<u8>) {
    ('d', Vec::new())
}
#[test]
fn zip_tar_and_targz_list_and_read_like_the_archive() {
    bounded(T, || {
        let text = det_bytes(300_000, 1);
        let zip = zip_of(
            &[
                ("index.html", b"<html>", true),
                ("login/", b"", false),
                ("login/step-1.png", &text, false),
                ("checkout/step-3.png", &text[..5000], true),
                ("checkout/deep/er/x.txt", b"x", true),
            ],
            false,
        );
        // ZIP64 extra fields, and a central directory found through the ZIP64 end record.
        let zip64 = to_zip64(&zip_of(
            &[("a.bin", &text[..1000], false), ("b/c", b"cc", true)],
            true,
        ));
        let tar = tar_of(|t| {
            tar_file(t, "junit/a.xml", b"<AssertionError/>");
            tar_file(t, "junit/b.xml", b"<ok/>");
            tar_file(t, &format!("{}/long.txt", "n".repeat(140)), &text[..70_000]);
            tar_link(t, "junit/link", "a.xml");
            tar_link(t, "junit/out", "../../../../etc/passwd");
        });
        let fb = build(
            1,
            vec![
                ("e2e/screenshots.zip", zip.clone()),
                ("z64.jar", zip64),
                ("reports.tar", tar.clone()),
                ("reports.tar.gz", gz(&tar)),
                ("plain.txt", b"plain".to_vec()),
            ],
        );
        let env = Env::new(fb, &[]);
        let job = env.mnt().join("job");
        // NAME# is not listed, NAME stays the plain file.
        let names = ls(&job);
        assert!(!names.iter().any(|n| n.ends_with('#')), "{names:?}");
        assert_eq!(std::fs::read(job.join("e2e/screenshots.zip")).unwrap(), zip);
        let z = tree(&job.join("e2e/screenshots.zip#"));
        let want: BTreeMap<String, (char, Vec<u8>)> = [
            ("index.html", f(b"<html>")),
            ("login", d()),
            ("login/step-1.png", f(&text)),
            ("checkout", d()),
            ("checkout/step-3.png", f(&text[..5000])),
            ("checkout/deep", d()),
            ("checkout/deep/er", d()),
            ("checkout/deep/er/x.txt", f(b"x")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert!(z == want, "zip tree: {:?}", z.keys().collect::<Vec<_>>());
        let z64 = tree(&job.join("z64.jar#"));
        assert_eq!(z64["a.bin"], f(&text[..1000]));
        assert_eq!(z64["b/c"], f(b"cc"));
        for name in ["reports.tar#", "reports.tar.gz#"] {
            let t = tree(&job.join(name));
            assert_eq!(t["junit/a.xml"], f(b"<AssertionError/>"), "{name}");
            assert_eq!(t["junit/b.xml"], f(b"<ok/>"));
            assert_eq!(
                t[&format!("{}/long.txt", "n".repeat(140))],
                f(&text[..70_000])
            );
            assert_eq!(t["junit/link"], ('l', b"a.xml".to_vec()));
            // The escaping link points at a name that does not exist inside NAME#.
            let out = &t["junit/out"];
            assert_eq!(out.0, 'l');
            assert!(!String::from_utf8_lossy(&out.1).starts_with('/'));
            assert_eq!(
                errno_of(std::fs::metadata(job.join(name).join("junit/out"))),
                Some(libc::ENOENT)
            );
            assert_eq!(
                std::fs::read(job.join(name).join("junit/link")).unwrap(),
                b"<AssertionError/>"
            );
            let (code, out, _) = sh(&format!(
                "grep -l AssertionError {}/junit/*.xml",
                job.join(name).display()
            ));
            assert_eq!(code, 0);
            assert!(out.trim_end().ends_with("junit/a.xml"), "{out}");
        }
        // Extended attributes of an entry.
        let p = job.join("e2e/screenshots.zip#/checkout/step-3.png");
        assert_eq!(
            xattr(&p, "user.archive.path").unwrap(),
            b"checkout/step-3.png"
        );
        let crc = format!("{:08x}", crc32fast::hash(&text[..5000]));
        assert_eq!(xattr(&p, "user.archive.crc32").unwrap(), crc.as_bytes());
        assert!(xattr(&p, "user.archive.compressed_size").is_some());
        // Read-only, and a plain file has no NAME#.
        assert_eq!(errno_of(std::fs::write(&p, b"x")), Some(libc::EROFS),);
        assert_eq!(
            errno_of(std::fs::read_dir(job.join("plain.txt#"))),
            Some(libc::ENOENT)
        );
        // Random reads inside a deflated entry.
        let fh = std::fs::File::open(&p).unwrap();
        let mut buf = vec![0u8; 100];
        fh.read_exact_at(&mut buf, 4000).unwrap();
        assert_eq!(buf, text[4000..4100]);
    });
}

/// 200 MiB, stored, ZIP64 extra fields: listing costs at most 3 storage requests and a 4 KiB
/// read in the middle fetches at most 1 MiB.
#[test]
fn big_zip_lists_and_reads_with_ranges() {
    bounded(T, || {
        let chunk = det_bytes(MIB, 7);
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(201 * MIB)));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(true);
        for i in 0..10 {
            w.start_file(format!("part-{i}.bin"), opts).unwrap();
            for _ in 0..20 {
                w.write_all(&chunk).unwrap();
            }
        }
        for i in 0..2000 {
            w.start_file(format!("small/{i:05}.txt"), opts).unwrap();
            w.write_all(format!("file {i}\n").as_bytes()).unwrap();
        }
        let zip = w.finish().unwrap().into_inner();
        assert!(zip.len() > 200 * MIB);
        let env = Env::new(build(2, vec![("big.zip", zip)]), &[]);
        env.server.reset_counts();
        let root = env.mnt().join("job/big.zip#");
        let names = ls(&root);
        assert_eq!(names.len(), 11, "{names:?}");
        assert_eq!(ls(&root.join("small")).len(), 2000);
        let gets = env.server.count(Count::StorageGet);
        eprintln!("listing a 10-part + 2000-file 200 MiB zip: {gets} storage GETs");
        assert!(gets <= 3, "listing cost {gets} storage requests");
        let before = env.server.storage_bytes_served();
        let fh = std::fs::File::open(root.join("part-5.bin")).unwrap();
        let mut buf = vec![0u8; 4096];
        let at = 10 * MIB as u64 + 12345;
        fh.read_exact_at(&mut buf, at).unwrap();
        let o = (at % MIB as u64) as usize;
        let want: Vec<u8> = chunk
            .iter()
            .chain(chunk.iter())
            .skip(o)
            .take(4096)
            .copied()
            .collect();
        assert!(buf == want, "wrong bytes");
        let served = env.server.storage_bytes_served() - before;
        eprintln!("a 4 KiB read in the middle fetched {served} bytes");
        assert!(served <= MIB as u64, "a 4 KiB read fetched {served} bytes");
        assert_eq!(
            std::fs::read(root.join("small/01234.txt")).unwrap(),
            b"file 1234\n"
        );
    });
}

/// The index and unpacked entries are persisted: a remount lists and reads with no request
/// to storage, with the artifacts' own blocks gone from the cache, and builds no index.
#[test]
fn remount_lists_and_reads_from_the_cache() {
    bounded(T, || {
        let text = det_bytes(200_000, 3);
        let zip = zip_of(
            &[("a/deflated.txt", &text, true), ("s.txt", b"s", false)],
            false,
        );
        let tgz = gz(&tar_of(|t| {
            tar_file(t, "x/y.txt", &text[..9000]);
        }));
        let fb = build(3, vec![("a.zip", zip), ("b.tgz", tgz)]);
        let server = std::sync::Arc::new(server());
        let bref = build_ref(&fb);
        server.add_build(fb);
        let scratch = Scratch::new();
        let check = |m: &Mount| {
            let job = m.path("job");
            assert_eq!(
                std::fs::read(job.join("a.zip#/a/deflated.txt")).unwrap(),
                text
            );
            assert_eq!(ls(&job.join("a.zip#")), ["a", "s.txt"]);
            assert_eq!(
                std::fs::read(job.join("b.tgz#/x/y.txt")).unwrap(),
                &text[..9000]
            );
        };
        {
            let m = mount(&server, &scratch, &bref, &[]);
            check(&m);
            assert_eq!(m.log_text().matches("indexed the archive").count(), 2);
            assert!(m.unmount());
        }
        // Without the artifacts' blocks, only a persisted index can answer with no request.
        assert!(
            drop_raw_blocks(&scratch.cache()) >= 2,
            "no raw blocks cached?"
        );
        let logged = scratch_log_len(&scratch);
        server.reset_counts();
        let m = mount(&server, &scratch, &bref, &[]);
        let job = m.path("job");
        assert_eq!(ls(&job.join("a.zip#")), ["a", "s.txt"]);
        assert_eq!(ls(&job.join("b.tgz#/x")), ["y.txt"]);
        assert_eq!(server.count(Count::Storage), 0, "{:?}", server.counts());
        check(&m);
        assert_eq!(server.count(Count::Storage), 0, "{:?}", server.counts());
        let log = m.log_text();
        let second = log.get(logged..).unwrap_or(&log);
        assert!(!second.contains("indexed the archive"), "{second}");
    });
}

/// Bytes in the mount log so far (mounts of one scratch append to it).
fn scratch_log_len(scratch: &Scratch) -> usize {
    std::fs::metadata(scratch.log()).map_or(0, |m| m.len() as usize)
}

/// Many first listings at once: every caller answered, one index build (the kernel merges
/// racing lookups of one name; the daemon's own single flight, which a mount cannot race, is
/// `fs::tests::archives::racing_first_lookups_build_an_archive_index_once`).
#[test]
fn concurrent_first_lookups_build_the_index_once() {
    bounded(T, || {
        let files: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| (format!("d{}/f{i}.txt", i % 7), det_bytes(5000, i)))
            .collect();
        let tgz = gz(&tar_of(|t| {
            for (p, c) in &files {
                tar_file(t, p, c);
            }
        }));
        let env = Env::new(build(4, vec![("many.tar.gz", tgz)]), &[]);
        let root = env.mnt().join("job/many.tar.gz#");
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let r = root.clone();
                std::thread::spawn(move || ls(&r.join("d3")).len())
            })
            .collect();
        for h in hs {
            assert_eq!(
                h.join().unwrap(),
                files.iter().filter(|(p, _)| p.starts_with("d3/")).count()
            );
        }
        let got = tree(&root);
        for (p, c) in &files {
            assert_eq!(&got[p].1, c, "{p}");
        }
        let log = env.m.log_text();
        assert_eq!(log.matches("indexed the archive").count(), 1, "{log}");
        // `bkfs status` counts it too.
        let o = run(std::process::Command::new(BIN).arg("status").arg(env.mnt()));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{text}");
        assert!(
            text.contains("archives:        1 indexed, 0 indexing"),
            "{text}"
        );
    });
}

#[test]
fn list_archives_shows_name_hash_to_find_and_grep() {
    bounded(T, || {
        let zip = zip_of(&[("in/needle.txt", b"needle here", true)], false);
        let env = Env::new(
            build(5, vec![("r.zip", zip), ("other.txt", b"x".to_vec())]),
            &["--list-archives"],
        );
        let job = env.mnt().join("job");
        assert_eq!(ls(&job), ["other.txt", "r.zip", "r.zip#"]);
        let (code, out, err) = sh(&format!("grep -rl needle {}", job.display()));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("r.zip#/in/needle.txt"), "{out}");
        let (_, out, _) = sh(&format!("find {} -name needle.txt", job.display()));
        assert!(out.contains("r.zip#/in/needle.txt"), "{out}");
    });
}

#[test]
fn hostile_archives_fail_cleanly_and_the_mount_keeps_serving() {
    bounded(T, || {
        // A bomb: 20 MiB of zeros that claims to unpack to 1000 bytes.
        let mut bomb = zip_of(&[("zeros.bin", &vec![0u8; 20 * MIB], true)], false);
        patch(&mut bomb, 22, 24, &1000u32.to_le_bytes());
        // Claims far more than deflate can produce from its size.
        let mut ratio = zip_of(&[("r.bin", &vec![0u8; 100_000], true)], false);
        patch(&mut ratio, 22, 24, &4_000_000_000u32.to_le_bytes());
        // Encrypted (flag bit 0, in the central directory and the local header).
        let mut enc = zip_of(&[("secret.txt", b"secret", false)], false);
        patch(&mut enc, 6, 8, &1u16.to_le_bytes());
        // bzip2, which bkfs does not unpack.
        let mut bz = zip_of(
            &[("b.txt", b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", true)],
            false,
        );
        patch(&mut bz, 8, 10, &12u16.to_le_bytes());
        // The local header names another file than the central directory.
        let mut liar = zip_of(&[("good.txt", b"good", false)], false);
        let at = liar.windows(8).position(|w| w == b"good.txt").unwrap();
        liar[at..at + 4].copy_from_slice(b"evil");
        // The local header disagrees with the central directory on the CRC, on the size.
        let good = zip_of(&[("good.txt", b"good", false)], false);
        let mut crc = good.clone();
        patch_local(&mut crc, 14, &(local_field(&good, 14, 4) ^ 1).to_le_bytes());
        let mut size = good.clone();
        patch_local(
            &mut size,
            18,
            &(local_field(&good, 18, 4) + 1).to_le_bytes(),
        );
        // A local name one byte longer than the central one (the data start moves with it).
        let mut longname = good.clone();
        patch_local(&mut longname, 26, &9u16.to_le_bytes());
        // A local extra field that pushes the stored data into the central directory.
        let mut extra = good.clone();
        let x = local_field(&good, 28, 2) as u16;
        patch_local(&mut extra, 28, &(x + 2).to_le_bytes());
        // A ZIP64 locator whose end record offset is near the top of the u64 range.
        let mut z64loc = to_zip64(&zip_of(&[("a", b"a", false)], true));
        let loc = z64loc.windows(4).rposition(|w| w == b"PK\x06\x07").unwrap();
        z64loc[loc + 8..loc + 16].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
        // An absurd entry count in the end record.
        let mut count = zip_of(&[("a", b"a", false)], false);
        let n = count.len();
        count[n - 14..n - 10].copy_from_slice(&[0xfe, 0xff, 0xfe, 0xff]);
        // Hostile names and duplicates.
        let mut names = zip_of(
            &[
                ("zz/evil.txt", b"1", false),
                ("/abs.txt", b"2", false),
                ("dup.txt", b"3", false),
                ("dvp.txt", b"4", false),
                ("nulXname", b"5", false),
                (&format!("{}/f", "L".repeat(300)), b"6", false),
            ],
            false,
        );
        replace_all(&mut names, b"zz/evil.txt", b"../evil.txt");
        replace_all(&mut names, b"dvp.txt", b"dup.txt");
        replace_all(&mut names, b"nulXname", b"nul\0name");
        let tgz = gz(&tar_of(|t| tar_file(t, "big.bin", &det_bytes(300_000, 5))));
        let truncated_tgz = tgz[..tgz.len() / 2].to_vec();
        let truncated_zip = {
            let z = zip_of(&[("a.txt", b"aaaa", false)], false);
            z[..z.len() - 30].to_vec()
        };
        let fb = build(
            6,
            vec![
                ("bomb.zip", bomb),
                ("ratio.zip", ratio),
                ("enc.zip", enc),
                ("bz.zip", bz),
                ("liar.zip", liar),
                ("crc.zip", crc),
                ("size.zip", size),
                ("longname.zip", longname),
                ("extra.zip", extra),
                ("z64loc.zip", z64loc),
                ("count.zip", count),
                ("names.zip", names),
                ("noise.zip", det_bytes(70_000, 9)),
                ("noise.tar", det_bytes(5000, 10)),
                ("gzip-but-not.tar.gz", b"not gzip at all".to_vec()),
                ("trunc.tar.gz", truncated_tgz),
                ("trunc.zip", truncated_zip),
                ("ok.txt", b"still here".to_vec()),
            ],
        );
        let env = Env::new(fb, &[]);
        let job = env.mnt().join("job");
        let read = |p: &str| errno_of(std::fs::read(job.join(p)));
        assert_eq!(read("bomb.zip#/zeros.bin"), Some(libc::EIO));
        assert_eq!(read("ratio.zip#/r.bin"), Some(libc::EIO));
        assert_eq!(read("enc.zip#/secret.txt"), Some(libc::EACCES));
        assert_eq!(read("bz.zip#/b.txt"), Some(libc::EIO));
        assert!(
            env.m.log_text().contains("bzip2"),
            "the log names the method"
        );
        assert_eq!(read("liar.zip#/good.txt"), Some(libc::EIO));
        for liar in ["crc.zip", "size.zip", "longname.zip", "extra.zip"] {
            assert_eq!(
                read(&format!("{liar}#/good.txt")),
                Some(libc::EIO),
                "{liar}"
            );
        }
        for bad in [
            "count.zip#",
            "noise.zip#",
            "noise.tar#",
            "gzip-but-not.tar.gz#",
            "trunc.tar.gz#",
            "trunc.zip#",
            "z64loc.zip#",
        ] {
            assert_eq!(
                errno_of(std::fs::read_dir(job.join(bad))),
                Some(libc::EIO),
                "{bad}"
            );
        }
        let t = tree(&job.join("names.zip#"));
        let keys: Vec<&str> = t.keys().map(|s| s.as_str()).collect();
        assert!(keys.contains(&"%2E%2E/evil.txt"), "{keys:?}");
        assert!(keys.contains(&"abs.txt"));
        assert_eq!(t["dup.txt"], f(b"3"));
        assert_eq!(t["dup~3.txt"], f(b"4"));
        assert_eq!(t["nul%00name"], f(b"5"));
        assert!(keys.iter().all(|k| k.split('/').all(|c| c.len() <= 255)));
        // The 300-byte component is there, shortened like an artifact path's, and its file
        // is found and reads.
        let long = format!("{}/f", crate::common::builds::shortened(&"L".repeat(300)));
        assert_eq!(t.get(&long), Some(&f(b"6")), "{keys:?}");
        let (_, found, _) = sh(&format!(
            "find '{}' -type f -name f",
            job.join("names.zip#").display()
        ));
        assert_eq!(
            found.lines().collect::<Vec<_>>(),
            [job.join("names.zip#").join(&long).display().to_string()]
        );
        assert_eq!(
            std::fs::read(job.join("names.zip#").join(&long)).unwrap(),
            b"6"
        );
        // A failed listing is logged with the artifact and the error, and nothing panicked
        // (a panic's request answers EIO too).
        let log = env.m.log_text();
        for name in ["trunc.zip", "z64loc.zip"] {
            assert!(
                log.lines().any(|l| l.contains("cannot list the archive")
                    && l.contains(name)
                    && l.contains("corrupt archive")),
                "{name}: {log}"
            );
        }
        assert!(!log.contains("panicked"), "{log}");
        assert_eq!(std::fs::read(job.join("ok.txt")).unwrap(), b"still here");
        assert!(env.m.daemon_pids().len() == 1);
    });
}

/// A regular file whose header name is `name` as is (the tar crate refuses `..` and absolute
/// paths).
fn tar_raw_name(t: &mut tar::Builder<Vec<u8>>, name: &[u8], data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    t.append(&h, data).unwrap();
}

#[test]
fn hostile_tar_and_targz_names_are_sanitized() {
    bounded(T, || {
        let long = "L".repeat(300);
        let tar = tar_of(|t| {
            tar_raw_name(t, b"../x", b"up");
            tar_raw_name(t, b"/abs", b"abs");
            // A GNU long name (`L` entry) with a 300-byte component.
            tar_file(t, &format!("{long}/f"), b"long");
            tar_file(t, "dup.txt", b"first");
            tar_file(t, "dup.txt", b"second");
        });
        let fb = build(8, vec![("h.tar", tar.clone()), ("h.tar.gz", gz(&tar))]);
        let env = Env::new(fb, &[]);
        let job = env.mnt().join("job");
        let short = crate::common::builds::shortened(&long);
        let want: BTreeMap<String, (char, Vec<u8>)> = [
            ("%2E%2E", d()),
            ("%2E%2E/x", f(b"up")),
            ("abs", f(b"abs")),
            (short.as_str(), d()),
            (&format!("{short}/f"), f(b"long")),
            ("dup.txt", f(b"first")),
            // The fifth entry (number 4) takes the name of an earlier one.
            ("dup~4.txt", f(b"second")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for name in ["h.tar#", "h.tar.gz#"] {
            let got = tree(&job.join(name));
            assert!(got == want, "{name}: {:?}", got.keys().collect::<Vec<_>>());
            assert_eq!(
                xattr(&job.join(name).join("%2E%2E/x"), "user.archive.path").unwrap(),
                b"../x"
            );
        }
    });
}

/// Archives inside an archive are plain files: no `NAME#` inside `NAME#`, with or without
/// `--list-archives`.
#[test]
fn nested_archives_are_not_expanded() {
    bounded(T, || {
        let inner_zip = zip_of(&[("deep.txt", b"deep", false)], false);
        let inner_tgz = gz(&tar_of(|t| tar_file(t, "deep.txt", b"deep")));
        let outer = zip_of(
            &[
                ("inner.zip", &inner_zip, false),
                ("inner.tar.gz", &inner_tgz, true),
            ],
            false,
        );
        for (n, opts) in [(9u64, &[][..]), (10, &["--list-archives"][..])] {
            let env = Env::new(build(n, vec![("outer.zip", outer.clone())]), opts);
            let root = env.mnt().join("job/outer.zip#");
            assert_eq!(ls(&root), ["inner.tar.gz", "inner.zip"], "{opts:?}");
            for (name, bytes) in [("inner.zip", &inner_zip), ("inner.tar.gz", &inner_tgz)] {
                let md = std::fs::symlink_metadata(root.join(name)).unwrap();
                assert!(md.is_file(), "{name}");
                assert_eq!(&std::fs::read(root.join(name)).unwrap(), bytes, "{name}");
                let nested = root.join(format!("{name}#"));
                assert_eq!(
                    errno_of(std::fs::symlink_metadata(&nested)),
                    Some(libc::ENOENT),
                    "{nested:?} {opts:?}"
                );
                assert_eq!(
                    errno_of(std::fs::read_dir(&nested)),
                    Some(libc::ENOENT),
                    "{nested:?} {opts:?}"
                );
            }
            if !opts.is_empty() {
                // The outer one is listed there, the inner ones are not.
                assert_eq!(ls(&env.mnt().join("job")), ["outer.zip", "outer.zip#"]);
                let (_, out, _) = sh(&format!("find '{}'", root.display()));
                assert!(
                    !out.contains("inner.zip#") && !out.contains("inner.tar.gz#"),
                    "{out}"
                );
            }
        }
    });
}

/// Bytes after the gzip data (a tape block of zeros, which gzip and `tar tz` accept; or
/// junk after the end of the tar data) do not make a tar.gz unreadable.
#[test]
fn targz_with_bytes_after_the_gzip_data_lists_and_reads() {
    bounded(T, || {
        let text = det_bytes(200_000, 12);
        let tar = tar_of(|t| {
            tar_file(t, "a.txt", b"alpha");
            tar_file(t, "d/big.bin", &text);
        });
        let zeros = [gz(&tar), vec![0; 512]].concat();
        let junk = [gz(&tar), b"trailing junk\n".to_vec()].concat();
        // A gzip magic, then no valid member: never decompressed, the tar data ended before.
        let magic = [gz(&tar), vec![0x1f, 0x8b, 8, 0xe0, 0, 0, 0, 0, 0, 3, 1, 2]].concat();
        let fb = build(
            11,
            vec![
                ("zeros.tar.gz", zeros),
                ("junk.tgz", junk),
                ("magic.tar.gz", magic),
            ],
        );
        let env = Env::new(fb, &[]);
        let job = env.mnt().join("job");
        for name in ["zeros.tar.gz#", "junk.tgz#", "magic.tar.gz#"] {
            let t = tree(&job.join(name));
            let keys: Vec<&String> = t.keys().collect();
            assert_eq!(keys, ["a.txt", "d", "d/big.bin"], "{name}");
            assert_eq!(t["a.txt"], f(b"alpha"), "{name}");
            assert!(t["d/big.bin"] == f(&text), "{name}");
        }
        let log = env.m.log_text();
        assert!(!log.contains("cannot list the archive"), "{log}");
        assert!(!log.contains("cannot read the archive entry"), "{log}");
    });
}

/// A plain tar is indexed by reading headers and skipping entry data with ranges.
#[test]
fn big_tar_is_indexed_by_skipping_data() {
    bounded(T, || {
        let chunk = det_bytes(MIB, 11);
        let tar = tar_of(|t| {
            for i in 0..4 {
                let data: Vec<u8> = chunk.iter().cycle().take(30 * MIB).copied().collect();
                tar_file(t, &format!("part-{i}.bin"), &data);
                tar_file(t, &format!("note-{i}.txt"), format!("note {i}").as_bytes());
            }
        });
        let env = Env::new(build(7, vec![("big.tar", tar)]), &[]);
        env.server.reset_counts();
        let before = env.server.storage_bytes_served();
        let root = env.mnt().join("job/big.tar#");
        assert_eq!(ls(&root).len(), 8);
        let served = env.server.storage_bytes_served() - before;
        eprintln!("indexing a 120 MiB tar of 8 entries fetched {served} bytes");
        assert!(served <= 2 * MIB as u64, "indexing fetched {served} bytes");
        assert_eq!(std::fs::read(root.join("note-2.txt")).unwrap(), b"note 2");
        let fh = std::fs::File::open(root.join("part-3.bin")).unwrap();
        let mut buf = vec![0u8; 4096];
        fh.read_exact_at(&mut buf, 7 * MIB as u64 + 5).unwrap();
        assert_eq!(buf[..], chunk[5..4101]);
    });
}

/// A zip with a launcher script in front (a self-extracting archive, an executable jar;
/// offsets adjusted as `zip -A` does) does not start with `PK`: it is still a zip, found
/// from its end, as `unzip` finds it.
#[test]
fn a_zip_with_a_launcher_in_front_opens() {
    bounded(T, || {
        let z = zip_of(
            &[
                ("app/Main.class", b"main", true),
                ("README", b"read me", false),
            ],
            false,
        );
        let prefix = b"#!/bin/sh\nexec java -jar \"$0\" \"$@\"\n";
        let shift = prefix.len() as u32;
        let mut out = prefix.to_vec();
        out.extend_from_slice(&z);
        let base = prefix.len();
        let mut i = base;
        while i + 46 <= out.len() {
            if out[i..i + 4] == *b"PK\x01\x02" {
                let at = i + 42;
                let v = u32::from_le_bytes(out[at..at + 4].try_into().unwrap()) + shift;
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            i += 1;
        }
        let e = out.len() - 22;
        assert_eq!(&out[e..e + 4], b"PK\x05\x06");
        let v = u32::from_le_bytes(out[e + 16..e + 20].try_into().unwrap()) + shift;
        out[e + 16..e + 20].copy_from_slice(&v.to_le_bytes());
        let env = Env::new(build(40, vec![("app.jar", out)]), &[]);
        let root = env.mnt().join("job/app.jar#");
        assert_eq!(ls(&root), ["README", "app"]);
        assert_eq!(std::fs::read(root.join("app/Main.class")).unwrap(), b"main");
        assert_eq!(std::fs::read(root.join("README")).unwrap(), b"read me");
    });
}
