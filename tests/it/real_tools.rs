//! What ordinary tools see of a mount (issue 9): `test -x` and `find -executable`, `findmnt`
//! and `statvfs` (read-only, type `fuse.bkfs`), many opens asking "is this a terminal?"
//! (no ioctl warnings), and a clean unmount that logs no warning.

use std::process::Command;

use crate::common::builds::small_build;
use crate::common::*;

/// `findmnt -n -o FSTYPE,SOURCE,OPTIONS MNT`.
fn findmnt(mnt: &std::path::Path) -> (String, String, String) {
    let o = run(Command::new("findmnt")
        .args(["-n", "-o", "FSTYPE,SOURCE,OPTIONS"])
        .arg(mnt));
    assert!(o.status.success(), "findmnt {mnt:?} found nothing");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let f: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(f.len(), 3, "findmnt: {text:?}");
    (f[0].to_string(), f[1].to_string(), f[2].to_string())
}

fn statvfs_rdonly(p: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string and an out-struct of the right type.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_flag & libc::ST_RDONLY != 0
}

/// `0444` files are not executable for `test -x` or `find -executable`; directories are.
#[test]
fn files_are_not_executable() {
    let env = Env::new(small_build(91).0, &[]);
    let mnt = env.mnt();
    bounded(LIMIT, move || {
        let (_, all, _) = sh(&format!("find {} -type f", mnt.display()));
        assert_eq!(all.lines().count(), 6, "{all}");
        let (code, exe, err) = sh(&format!("find {} -type f -executable", mnt.display()));
        assert_eq!(code, 0, "{err}");
        assert_eq!(exe, "", "files listed as executable");
        for f in all.lines() {
            let (code, _, _) = sh(&format!("test -x '{f}'"));
            assert_ne!(code, 0, "test -x {f} is true");
            let (code, _, _) = sh(&format!("test -r '{f}'"));
            assert_eq!(code, 0, "test -r {f} is false");
            let (code, _, _) = sh(&format!("test -w '{f}'"));
            assert_ne!(code, 0, "test -w {f} is true");
        }
        let (_, dirs, _) = sh(&format!(
            "find {} -mindepth 1 -type d -executable",
            mnt.display()
        ));
        assert_eq!(
            dirs.lines().count(),
            5,
            "directories are searchable: {dirs}"
        );
        let (code, _, _) = sh(&format!("test -x {}/build", mnt.display()));
        assert_eq!(code, 0);
    });
}

/// Without `--allow-delete` the mount is `ro` for `findmnt` and `statvfs`; its type is
/// `fuse.bkfs` (so `findmnt -t fuse.bkfs` and `df -t fuse.bkfs` find it) and its source names
/// the build.
#[test]
fn mount_is_read_only_and_typed() {
    let env = Env::new(small_build(92).0, &[]);
    let mnt = env.mnt();
    bounded(LIMIT, move || {
        let (fstype, source, opts) = findmnt(&mnt);
        assert_eq!(fstype, "fuse.bkfs");
        assert_eq!(source, "bkfs:acme/web-app/92");
        assert!(opts.split(',').any(|o| o == "ro"), "options {opts}");
        assert!(statvfs_rdonly(&mnt), "statvfs has no ST_RDONLY");
        let (code, out, err) = sh(&format!(
            "findmnt -n -t fuse.bkfs -o TARGET | grep -Fx {}",
            mnt.display()
        ));
        assert_eq!(code, 0, "findmnt -t fuse.bkfs: {out} {err}");
        let (code, out, err) = sh(&format!("df -t fuse.bkfs {}", mnt.display()));
        assert_eq!(code, 0, "df -t fuse.bkfs: {out} {err}");
        // The kernel refuses writes itself now.
        let e = std::fs::write(mnt.join("build/new"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    });
}

/// With `--allow-delete` the mount stays `rw` (unlink must reach bkfs), still `fuse.bkfs`.
#[test]
fn allow_delete_mount_is_rw() {
    let env = Env::new(small_build(93).0, &["--allow-delete"]);
    let mnt = env.mnt();
    bounded(LIMIT, move || {
        let (fstype, _, opts) = findmnt(&mnt);
        assert_eq!(fstype, "fuse.bkfs");
        assert!(opts.split(',').any(|o| o == "rw"), "options {opts}");
        assert!(!statvfs_rdonly(&mnt));
        let e = std::fs::write(mnt.join("build/new"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        std::fs::remove_file(mnt.join("build/notes.txt")).expect("rm with --allow-delete");
    });
}

/// Hundreds of opens by python (each asks TCGETS), perl, `lsattr` and a `poll`: no
/// "Not Implemented" warning in the log, and a clean unmount logs no warning at all.
#[test]
fn many_opens_and_a_clean_unmount_log_no_warning() {
    let env = Env::new(small_build(94).0, &[]);
    let mnt = env.mnt();
    let m = mnt.clone();
    bounded(LIMIT, move || {
        let script = format!(
            "import glob, select\n\
             files = [p for p in glob.glob('{}/**', recursive=True) if not p.endswith('/')]\n\
             n = 0\n\
             for _ in range(50):\n\
             \x20   for p in files:\n\
             \x20       try:\n\
             \x20           with open(p, 'rb') as f: f.read(1); n += 1\n\
             \x20       except IsADirectoryError: pass\n\
             f = open(files[-1], 'rb')\n\
             p = select.poll(); p.register(f, select.POLLIN)\n\
             assert p.poll(1000), 'poll: not readable'\n\
             print(n)\n",
            m.display()
        );
        let o = run(Command::new("python3").arg("-c").arg(&script));
        assert!(
            o.status.success(),
            "python: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let n: usize = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        assert!(n >= 300, "{n} opens");
        let (code, _, err) = sh(&format!(
            "perl -e 'open(my $f, \"<\", \"{}/build/notes.txt\") or die; print -t $f ? \"tty\" : \"no\"'",
            m.display()
        ));
        assert_eq!(code, 0, "{err}");
        let _ = sh(&format!("lsattr {}/build/notes.txt", m.display()));
    });
    assert!(env.m.unmount(), "unmount");
    let log = env.m.log_text();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("Not Implemented"))
        .collect();
    assert!(
        warns.is_empty(),
        "warnings in the log:\n{}",
        warns.join("\n")
    );
    assert!(log.contains("unmounted; exiting"), "{log}");
}

/// Artifacts whose uploaded path has dot segments (`..`, `a/../b`, `./c`): the storage URL
/// ends in that path, the fake storage signs it exactly (a client that normalizes it away
/// is refused), and each reads back right through the mount, small (whole) and big (ranged).
#[test]
fn dot_segment_paths_are_read_through_the_mount() {
    use crate::common::builds::{Builder, ORG, PIPELINE};
    let mut b = Builder::new(ORG, PIPELINE, 95);
    let t = b.simple_job(
        "c0000001-0000-4000-8000-000000000195",
        "Dots",
        "2024-04-02T08:00:00.000Z",
        "dots",
    );
    b.file(&t, "dots", "..", "%2E%2E", 5000);
    b.file(&t, "dots", "a/../b.txt", "a/%2E%2E/b.txt", 3000);
    b.file(&t, "dots", "./c/./d.bin", "c/d.bin", 300_000);
    b.file(&t, "dots", "x/../big.bin", "x/%2E%2E/big.bin", 5 << 20);
    let (fb, exp) = b.finish();
    let env = Env::new(fb, &["--read-timeout", "10"]);
    let (mnt, server) = (env.mnt(), env.server.clone());
    bounded(LIMIT, move || {
        for (rel, f) in &exp.files {
            let got = std::fs::read(mnt.join(rel))
                .unwrap_or_else(|e| panic!("read {rel}: {e}; {:?}", server.counts()));
            assert!(got == f.content, "{rel}: wrong bytes");
        }
        assert_eq!(
            server.count(Count::StorageStatus(403)),
            0,
            "{:?}",
            server.counts()
        );
        assert_eq!(
            server.count(Count::StorageStatus(404)),
            0,
            "{:?}",
            server.counts()
        );
    });
}
