//! Archives through the kernel, continued: a tar.gz entry is read from the nearest gzip
//! access point (not from the start of the archive), zip symlinks, and every mutating
//! operation inside `NAME#` answers `EROFS` (with and without `--allow-delete`).

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use crate::common::*;

const MIB: usize = 1 << 20;
const T: Duration = Duration::from_secs(120);

/// A build of one job (dir `job`) with these artifacts.
fn build(number: u64, files: Vec<(&str, Vec<u8>)>) -> FakeBuild {
    crate::common::builds::one_job_build('b', number, files)
}

fn tar_file(t: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    t.append_data(&mut h, path, data).unwrap();
}

/// A zip of one entry `name`, deflated at level 1 (fast, near 1:1 on these bytes).
fn deflated_zip(name: &str, data: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1));
    w.start_file(name, o).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap().into_inner()
}

/// A 64 MiB tar.gz (incompressible parts, gzip's default level, so deflate blocks of the
/// usual size): after a remount, listing costs nothing and reading the last entry fetches
/// at most a span (4 MiB) and a chunk from an access point, not the archive.
#[test]
fn targz_entry_near_the_end_is_read_from_an_access_point() {
    bounded(T, || {
        let parts: Vec<Vec<u8>> = (0..16).map(|i| det_bytes(4 * MIB, 100 + i)).collect();
        let last = det_bytes(300_000, 99);
        let mut t = tar::Builder::new(Vec::with_capacity(66 * MIB));
        for (i, p) in parts.iter().enumerate() {
            tar_file(&mut t, &format!("parts/p{i:02}.bin"), p);
        }
        tar_file(&mut t, "z/last.bin", &last);
        let tarb = t.into_inner().unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&tarb).unwrap();
        let tgz = e.finish().unwrap();
        let size = tgz.len() as u64;
        let fb = build(21, vec![("big.tar.gz", tgz)]);
        let server = std::sync::Arc::new(server());
        let bref = build_ref(&fb);
        server.add_build(fb);
        let scratch = Scratch::new();
        {
            let m = mount(&server, &scratch, &bref, &[]);
            let root = m.path("job/big.tar.gz#");
            assert_eq!(ls(&root), ["parts", "z"]);
            let log = m.log_text();
            assert!(log.contains("indexed the archive"), "{log}");
            assert!(m.unmount());
        }
        assert!(
            drop_raw_blocks(&scratch.cache()) >= 1,
            "no raw blocks cached?"
        );
        server.reset_counts();
        let m = mount(&server, &scratch, &bref, &[]);
        let root = m.path("job/big.tar.gz#");
        assert_eq!(ls(&root.join("parts")).len(), 16);
        assert_eq!(server.count(Count::Storage), 0, "{:?}", server.counts());
        let got = std::fs::read(root.join("z/last.bin")).unwrap();
        assert!(got == last, "wrong bytes");
        let served = server.storage_bytes_served();
        eprintln!("reading the last entry of a {size}-byte tar.gz fetched {served} bytes");
        assert!(
            served > 0 && served <= 8 * MIB as u64,
            "fetched {served} of {size} bytes: {:?}\n{}",
            server.counts(),
            m.log_text()
        );
        // A random read in the middle of an entry, then the whole entry (sequential reads
        // go on from where the last one stopped).
        let before = server.storage_bytes_served();
        let mut fh = std::fs::File::open(root.join("parts/p09.bin")).unwrap();
        fh.seek(SeekFrom::Start(3 * MIB as u64 + 77)).unwrap();
        let mut buf = vec![0u8; 4096];
        fh.read_exact(&mut buf).unwrap();
        assert!(buf[..] == parts[9][3 * MIB + 77..3 * MIB + 77 + 4096]);
        let served = server.storage_bytes_served() - before;
        eprintln!("a 4 KiB read in the middle fetched {served} bytes");
        assert!(served <= 8 * MIB as u64, "fetched {served} of {size} bytes");
        for i in [3usize, 10] {
            let got = std::fs::read(root.join(format!("parts/p{i:02}.bin"))).unwrap();
            assert!(got == parts[i], "p{i:02}");
        }
        let total = server.storage_bytes_served();
        eprintln!("all reads of the remount fetched {total} bytes");
        assert!(total < size, "fetched {total} of {size} bytes");
    });
}

#[test]
fn zip_symlinks_are_links_confined_to_the_archive() {
    bounded(T, || {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let deflated = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file("d/f.txt", deflated).unwrap();
        w.write_all(b"the file").unwrap();
        w.add_directory("e/", stored).unwrap();
        w.add_symlink("d/same", "f.txt", stored).unwrap();
        w.add_symlink("up", "d/f.txt", deflated).unwrap();
        w.add_symlink("d/todir", "../e", stored).unwrap();
        w.add_symlink("d/escape", "../../../etc/passwd", stored)
            .unwrap();
        w.add_symlink("abs", "/etc/passwd", stored).unwrap();
        let z = w.finish().unwrap().into_inner();
        let env = Env::new(build(22, vec![("l.zip", z)]), &[]);
        let root = env.mnt().join("job/l.zip#");
        assert_eq!(ls(&root), ["abs", "d", "e", "up"]);
        let link = |p: &str| {
            let md = std::fs::symlink_metadata(root.join(p)).unwrap();
            assert!(md.file_type().is_symlink(), "{p} is not a symlink");
            std::fs::read_link(root.join(p)).unwrap()
        };
        assert_eq!(link("d/same"), Path::new("f.txt"));
        assert_eq!(link("up"), Path::new("d/f.txt"));
        assert_eq!(std::fs::read(root.join("d/same")).unwrap(), b"the file");
        assert_eq!(std::fs::read(root.join("up")).unwrap(), b"the file");
        assert_eq!(link("d/todir"), Path::new("../e"));
        assert!(std::fs::metadata(root.join("d/todir")).unwrap().is_dir());
        for p in ["d/escape", "abs"] {
            let t = link(p);
            assert!(
                t.to_string_lossy().ends_with(".bkfs-link-outside-archive"),
                "{p} -> {t:?}"
            );
            let e = std::fs::metadata(root.join(p)).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{p} must dangle");
        }
        // `find -L` follows the links and stays inside.
        let (_, out, _) = sh(&format!("find -L {} -type f", root.display()));
        let mut files: Vec<&str> = out.lines().collect();
        files.sort();
        let inside = |p: &str| root.join(p).display().to_string();
        assert_eq!(files, [inside("d/f.txt"), inside("d/same"), inside("up")]);
    });
}

#[test]
fn mutating_operations_inside_archives_answer_erofs() {
    bounded(T, || {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let o = zip::write::SimpleFileOptions::default();
        w.start_file("dir/f.txt", o).unwrap();
        w.write_all(b"f").unwrap();
        w.add_directory("empty/", o).unwrap();
        w.start_file("g.txt", o).unwrap();
        w.write_all(b"g").unwrap();
        let z = w.finish().unwrap().into_inner();
        for (n, opts) in [(23u64, &[][..]), (24, &["--allow-delete"][..])] {
            let env = Env::new(build(n, vec![("a.zip", z.clone())]), opts);
            let job = env.mnt().join("job");
            let r = job.join("a.zip#");
            let before = ls(&r);
            assert_eq!(before, ["dir", "empty", "g.txt"]);
            let q = |p: &str| format!("'{}'", r.join(p).display());
            let cmds = [
                format!("rmdir {}", q("empty")),
                format!("rmdir {}", q("dir")),
                format!("rmdir '{}'", r.display()),
                format!("mkdir {}", q("new")),
                format!("mkdir {}", q("dir/new")),
                format!("rm -f {}", q("g.txt")),
                format!("rm -f {}", q("dir/f.txt")),
                format!("rm -rf {}", q("dir")),
                format!("mv {} {}", q("g.txt"), q("h.txt")),
                format!("mv {} {}", q("g.txt"), q("dir/g.txt")),
                format!("touch {}", q("g.txt")),
                format!("touch {}", q("new.txt")),
                format!("echo x >> {}", q("g.txt")),
                format!("truncate -s 0 {}", q("g.txt")),
                format!("chmod 600 {}", q("g.txt")),
                format!("ln -s g.txt {}", q("l")),
                format!("ln {} {}", q("g.txt"), q("hard")),
                format!("setfattr -n user.x -v 1 {}", q("g.txt")),
            ];
            for c in &cmds {
                let (code, out, err) = sh(&format!("LC_ALL=C {c}"));
                assert_ne!(code, 0, "{c} succeeded: {out}");
                assert!(
                    err.contains("Read-only file system"),
                    "{c} (opts {opts:?}): {err}"
                );
            }
            assert_eq!(ls(&r), before);
            assert_eq!(std::fs::read(r.join("g.txt")).unwrap(), b"g");
            assert!(job.join("a.zip").is_file());
            if opts.contains(&"--allow-delete") {
                // `rm NAME` deletes the artifact and its `NAME#` goes with it, also for a
                // shell that is inside it.
                let inside = std::fs::File::open(r.join("dir")).unwrap();
                let (code, _, err) = sh(&format!("rm {}", job.join("a.zip").display()));
                assert_eq!(code, 0, "{err}");
                assert_eq!(errno_of(std::fs::metadata(&r)), Some(libc::ENOENT));
                // A held inode (the kernel is told to forget its attributes).
                assert!(
                    wait_until(Duration::from_secs(5), || errno_of(inside.metadata())
                        == Some(libc::ENOENT)),
                    "an open directory inside a deleted archive still answers"
                );
                assert_eq!(ls(&job), Vec::<String>::new());
            }
        }
    });
}

/// Indexing a tar.gz over slow storage holds up nothing else: while the first `ls NAME#`
/// waits for its index, the job directory lists, another artifact reads and another
/// archive indexes and reads. The slow index logs its progress and is built once.
#[test]
fn a_slow_index_does_not_hold_up_the_rest_of_the_mount() {
    bounded(T, || {
        let mut t = tar::Builder::new(Vec::new());
        for i in 0..4 {
            tar_file(&mut t, &format!("p{i}.bin"), &det_bytes(4 * MIB, 40 + i));
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&t.into_inner().unwrap()).unwrap();
        let tgz = e.finish().unwrap();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("z.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"zipped").unwrap();
        let z = w.finish().unwrap().into_inner();
        let env = Env::new(
            build(
                25,
                vec![
                    ("slow.tar.gz", tgz),
                    ("small.zip", z),
                    ("ok.txt", b"ok".to_vec()),
                ],
            ),
            &[],
        );
        // 16 MiB at 1 MiB/s per storage response: several seconds, whatever the read-ahead.
        env.server.set_storage_bandwidth(1 << 20);
        let job = env.mnt().join("job");
        let status = {
            let mnt = env.mnt();
            move || {
                let o = run(std::process::Command::new(BIN).arg("status").arg(&mnt));
                String::from_utf8_lossy(&o.stdout).into_owned()
            }
        };
        let slow = {
            let root = job.join("slow.tar.gz#");
            std::thread::spawn(move || ls(&root))
        };
        assert!(
            wait_until(Duration::from_secs(30), || status().contains("1 indexing")),
            "the index build never started: {}",
            status()
        );
        assert_eq!(
            ls(&job),
            ["ok.txt", "slow.tar.gz", "small.zip"],
            "the job directory"
        );
        assert_eq!(std::fs::read(job.join("ok.txt")).unwrap(), b"ok");
        assert_eq!(ls(&job.join("small.zip#")), ["z.txt"]);
        assert_eq!(
            std::fs::read(job.join("small.zip#/z.txt")).unwrap(),
            b"zipped"
        );
        // All of that was answered while the slow index was still being built.
        let during = status();
        assert!(
            !slow.is_finished() && during.contains("1 indexed, 1 indexing"),
            "the slow index finished first: {during}"
        );
        assert_eq!(
            slow.join().unwrap(),
            ["p0.bin", "p1.bin", "p2.bin", "p3.bin"]
        );
        let log = env.m.log_text();
        let progress = log
            .lines()
            .filter(|l| l.contains("indexing the archive") && l.contains("slow.tar.gz"))
            .count();
        assert!(progress >= 1, "no progress line while indexing:\n{log}");
        assert_eq!(log.matches("indexed the archive").count(), 2, "{log}");
        env.server.set_storage_bandwidth(0);
        assert!(std::fs::read(job.join("slow.tar.gz#/p3.bin")).unwrap() == det_bytes(4 * MIB, 43));
    });
}

/// Without a disk cache a large deflated entry cannot be kept whole (the derived blocks
/// have 64 MiB of memory): `cat` reads it as one
/// stream (each read goes on where the last stopped), fetching the archive about once, not
/// once per read; a random read after it still answers the right bytes.
#[test]
fn a_large_deflated_entry_without_a_disk_cache_streams() {
    bounded(T, || {
        // Larger than the 64 MiB the derived blocks may take in memory.
        let big = det_bytes(96 * MIB, 77);
        let z = deflated_zip("big.bin", &big);
        let size = z.len() as u64;
        let env = Env::new(build(26, vec![("z.zip", z)]), &["--cache-size", "0"]);
        let path = env.mnt().join("job/z.zip#/big.bin");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), big.len() as u64);
        env.server.reset_counts();
        let before = env.server.storage_bytes_served();
        let (code, out, err) = sh(&format!("cat {} | sha1sum", path.display()));
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with(&sha1_hex(&big)), "wrong bytes: {out}");
        let served = env.server.storage_bytes_served() - before;
        eprintln!("cat of a 96 MiB deflated entry of a {size}-byte zip fetched {served} bytes");
        assert!(
            served < 2 * size,
            "fetched {served} bytes for a {size}-byte zip\n{}",
            env.m.log_text()
        );
        let fh = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 4096];
        use std::os::unix::fs::FileExt;
        fh.read_exact_at(&mut buf, 17 * MIB as u64 + 5).unwrap();
        assert!(buf[..] == big[17 * MIB + 5..17 * MIB + 5 + 4096]);
    });
}

/// A streamed entry whose CRC is wrong: reading it to its end fails with `EIO` (the check
/// runs before the last read is answered), and so does every read after that, including
/// of the bytes that had been served.
#[test]
fn a_streamed_entry_with_a_bad_crc_fails_and_stays_failed() {
    bounded(T, || {
        let big = det_bytes(24 * MIB, 78);
        let mut z = deflated_zip("bad.bin", &big);
        // The CRC, in the local header (offset 14) and the central record (offset 16).
        assert_eq!(&z[..4], b"PK\x03\x04");
        let c = z.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        for at in [14, c + 16] {
            z[at] ^= 0x55;
        }
        let env = Env::new(build(28, vec![("z.zip", z)]), &["--cache-size", "0"]);
        let path = env.mnt().join("job/z.zip#/bad.bin");
        let (code, _, err) = sh(&format!("cat {} > /dev/null", path.display()));
        assert_ne!(code, 0, "a bad CRC read through");
        assert!(err.contains("Input/output error"), "{err}");
        let fh = std::fs::File::open(&path).unwrap();
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; 4096];
        let r = fh.read_exact_at(&mut buf, 0);
        assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::EIO));
        let log = env.m.log_text();
        assert!(log.contains("CRC"), "{log}");
    });
}

/// With a small memory budget and no disk cache, prefetch stays within what memory can hold
/// until it is read: a streamed entry and a plain file are each fetched about once (the
/// streamed entry was fetched 5.6 times over when the window could outgrow the budget).
#[test]
fn a_small_memory_budget_fetches_about_once() {
    bounded(T, || {
        let big = det_bytes(40 * MIB, 77);
        let z = deflated_zip("big.bin", &big);
        let zsize = z.len() as u64;
        let env = Env::new(
            build(29, vec![("z.zip", z), ("p.bin", big.clone())]),
            &["--cache-size", "0", "--memory-limit", "16MiB"],
        );
        for (p, size) in [
            ("job/p.bin", big.len() as u64),
            ("job/z.zip#/big.bin", zsize),
        ] {
            let path = env.mnt().join(p);
            std::fs::metadata(&path).unwrap();
            let before = env.server.storage_bytes_served();
            let (code, out, err) = sh(&format!("cat {} | sha1sum", path.display()));
            assert_eq!(code, 0, "{err}");
            assert!(out.starts_with(&sha1_hex(&big)), "{p}: wrong bytes");
            let served = env.server.storage_bytes_served() - before;
            eprintln!("cat {p}: fetched {served} bytes of a {size}-byte object");
            assert!(
                served < size * 13 / 10,
                "{p}: fetched {served} of {size} bytes"
            );
        }
    });
}
