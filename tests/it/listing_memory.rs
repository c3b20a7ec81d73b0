//! Issue 11's listing path and long-lived memory, through the kernel: idle builds of a
//! pipeline mount leave memory and come back the same (names, inode numbers, bytes) with no
//! ENOENT/ESTALE on the way, an open file keeps reading; `ls -l`'s security/ACL probes are
//! answered "not supported" while the `user.buildkite.*` attributes stay readable.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const ORG: &str = "acme";
const PIPE: &str = "app";

/// Builds 1..=6 of acme/app, all passed, each with two artifacts of its own.
fn pipeline() -> Arc<FakeServer> {
    let server = Arc::new(server());
    for n in 1..=6u64 {
        let mut b = FakeBuild::new(ORG, PIPE, n);
        let job = b.add_job("test");
        b.add_artifact(&job, "out/a.txt", format!("a of build {n}\n").into_bytes());
        b.add_artifact(&job, "out/b.bin", det_bytes(50_000 + n as usize, n));
        server.add_build(b);
    }
    server
}

/// (name, inode, size) of every entry under `dir`, recursively, sorted.
fn snapshot(dir: &Path) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("readdir {d:?}: {e}")) {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
            out.push((rel, m.ino(), m.len()));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn idle_builds_leave_memory_and_come_back_the_same() {
    let server = pipeline();
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        &format!("{ORG}/{PIPE}"),
        &["--resident-builds", "1", "--evict-after", "0"],
    );
    let mnt = m.mnt.clone();
    let log = m.log.clone();
    let s = server.clone();
    bounded(Duration::from_secs(90), move || {
        let one = snapshot(&mnt.join("1"));
        assert_eq!(one.len(), 4, "{one:?}");
        let a1 = std::fs::read(mnt.join("1/test/out/a.txt")).unwrap();
        assert_eq!(a1, b"a of build 1\n");
        // An open file of build 2, read across the evictions of everything around it.
        let mut open = std::fs::File::open(mnt.join("2/test/out/b.bin")).unwrap();
        let mut head = vec![0u8; 1000];
        open.read_exact(&mut head).unwrap();
        for n in 3..=6u64 {
            let snap = snapshot(&mnt.join(n.to_string()));
            assert_eq!(snap.len(), 4, "build {n}: {snap:?}");
            let b = std::fs::read(mnt.join(format!("{n}/test/out/b.bin"))).unwrap();
            assert_eq!(b, det_bytes(50_000 + n as usize, n), "build {n}");
        }
        assert!(
            wait_until(LIMIT, || std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("evicted an idle build")),
            "no eviction logged"
        );
        let listed_before = s.count(Count::Graphql) + s.count(Count::ListBuildArtifacts);
        // Back to build 1: listed again, the same names, numbers and bytes.
        assert_eq!(snapshot(&mnt.join("1")), one);
        assert_eq!(std::fs::read(mnt.join("1/test/out/a.txt")).unwrap(), a1);
        let listed_after = s.count(Count::Graphql) + s.count(Count::ListBuildArtifacts);
        assert!(listed_after > listed_before, "build 1 was listed again");
        // Paths that exist keep existing, whatever was evicted meanwhile.
        for n in 1..=6u64 {
            let p = mnt.join(format!("{n}/test/out/a.txt"));
            let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
            assert_eq!(got, format!("a of build {n}\n").into_bytes());
        }
        // The open file still reads, to its end.
        let mut rest = Vec::new();
        open.read_to_end(&mut rest).unwrap();
        head.extend(rest);
        assert_eq!(head, det_bytes(50_002, 2));
    });
    assert!(m.unmount(), "unmount");
}

/// getxattr(2) of `name` on `path`: the value, or the errno.
fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the stated length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

#[test]
fn ls_l_probes_are_not_supported_and_user_xattrs_stay() {
    let server = pipeline();
    let scratch = Scratch::new();
    let m = mount(&server, &scratch, &format!("{ORG}/{PIPE}/3"), &[]);
    let mnt = m.mnt.clone();
    bounded(Duration::from_secs(60), move || {
        let file = mnt.join("test/out/a.txt");
        for probe in [
            "security.selinux",
            "system.posix_acl_access",
            "system.posix_acl_default",
        ] {
            for p in [&file, &mnt.join("test")] {
                assert_eq!(
                    getxattr(p, probe),
                    Err(libc::EOPNOTSUPP),
                    "{probe} on {p:?}"
                );
            }
        }
        assert_eq!(getxattr(&file, "user.nope"), Err(libc::ENODATA));
        assert_eq!(
            getxattr(&file, "user.buildkite.path").unwrap(),
            b"out/a.txt".to_vec()
        );
        // ls -l shows no ACL mark and no error; getfattr lists the user attributes.
        let (code, out, err) = sh(&format!(
            "LC_ALL=C ls -l {}",
            mnt.join("test/out").display()
        ));
        assert_eq!(code, 0, "{err}");
        assert!(err.is_empty(), "{err}");
        for l in out.lines().skip(1) {
            assert!(l.starts_with("-r--r--r-- "), "{l}");
        }
        let (code, out, err) = sh(&format!("getfattr -d {}", file.display()));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("user.buildkite.artifact_id="), "{out}");
        assert!(out.contains("user.buildkite.path=\"out/a.txt\""), "{out}");
    });
    assert!(m.unmount(), "unmount");
}
