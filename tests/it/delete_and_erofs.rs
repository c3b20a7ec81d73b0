//! Mutations through the kernel: `rm` with and without `--allow-delete` and with a token that
//! lacks `write_artifacts`; every other write operation fails with EROFS and makes no request.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::builds::small_build;
use crate::common::*;

/// Without `--allow-delete`: `rm` is EROFS, nothing changes, no DELETE is sent.
#[test]
fn rm_without_allow_delete_is_erofs() {
    let (fb, exp) = small_build(21);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let server = env.server.clone();
    bounded(LIMIT, move || {
        let before = walk(&mnt);
        let f = mnt.join("build/notes.txt");
        let (code, _, err) = sh(&format!("rm -f {}", f.display()));
        assert_ne!(code, 0, "rm -f succeeded on a read-only mount");
        assert!(err.contains("Read-only file system"), "rm: {err}");
        let e = std::fs::remove_file(&f).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        let (code, _, err) = sh(&format!("rm -rf {}", mnt.join("test-suite").display()));
        assert_ne!(code, 0);
        assert!(err.contains("Read-only file system"), "rm -rf: {err}");
        let e = std::fs::remove_dir(mnt.join("test-suite/logs")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "rmdir: {e}");

        assert_tree_eq("after refused rm", &before, &walk(&mnt));
        assert_eq!(
            std::fs::read(&f).unwrap(),
            exp.files["build/notes.txt"].content
        );
        assert_eq!(server.count(Count::Delete), 0, "{:?}", server.counts());
        for f in exp.files.values() {
            assert!(server.artifact_exists(&f.artifact_id));
        }
    });
}

/// With `--allow-delete`: `rm` deletes the artifact through the API and the entry goes;
/// `rm -r` of a whole job dir deletes every artifact in it and the dirs.
#[test]
fn rm_with_allow_delete_deletes() {
    let (fb, exp) = small_build(22);
    let env = Env::new(fb, &["--allow-delete"]);
    let mnt = env.mnt();
    let server = env.server.clone();
    bounded(LIMIT, move || {
        let f = mnt.join("build/notes.txt");
        let id = exp.files["build/notes.txt"].artifact_id.clone();
        let (code, _, err) = sh(&format!("rm {}", f.display()));
        assert_eq!(code, 0, "rm: {err}");
        assert!(!ls(&mnt.join("build")).contains(&"notes.txt".to_string()));
        assert_eq!(
            ls(&mnt.join("build")),
            vec!["dist".to_string(), "log".to_string()]
        );
        assert_eq!(
            std::fs::metadata(&f).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(
            !server.artifact_exists(&id),
            "artifact {id} still exists on the server"
        );
        assert_eq!(server.count(Count::Delete), 1, "{:?}", server.counts());
        // The rest is untouched and readable.
        for (rel, ef) in exp
            .files
            .iter()
            .filter(|(r, _)| r.as_str() != "build/notes.txt")
        {
            assert!(server.artifact_exists(&ef.artifact_id), "{rel}");
            assert_eq!(std::fs::read(mnt.join(rel)).unwrap(), ef.content, "{rel}");
        }
        // rmdir of a non-empty dir is refused.
        let e = std::fs::remove_dir(mnt.join("test-suite/logs")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");
        // rm -r of a job dir: three DELETEs, then the dirs go.
        let (code, _, err) = sh(&format!("rm -r {}", mnt.join("test-suite").display()));
        assert_eq!(code, 0, "rm -r: {err}");
        assert_eq!(ls(&mnt), vec!["build".to_string()]);
        for (rel, ef) in exp
            .files
            .iter()
            .filter(|(r, _)| r.starts_with("test-suite/"))
        {
            assert!(
                !server.artifact_exists(&ef.artifact_id),
                "{rel} still exists"
            );
        }
        assert_eq!(server.count(Count::Delete), 4, "{:?}", server.counts());
    });
}

/// With `--allow-delete` but a token without `write_artifacts`: EACCES and the file stays.
#[test]
fn rm_without_write_scope_is_permission_denied() {
    let (fb, exp) = small_build(23);
    let server = Arc::new(server());
    server.add_token("ro", &["read_artifacts", "read_builds"]);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = try_mount(
        &server,
        &scratch,
        "acme/web-app/23",
        Some("ro"),
        &["--allow-delete"],
    )
    .unwrap_or_else(|(c, e)| panic!("mount failed ({c}): {e}"));
    assert!(is_mounted(&m.mnt));
    let mnt = m.mnt.clone();
    let s = server.clone();
    bounded(LIMIT, move || {
        let f = mnt.join("build/notes.txt");
        let (code, _, err) = sh(&format!("rm -f {}", f.display()));
        assert_ne!(code, 0, "rm succeeded without write_artifacts");
        assert!(err.contains("Permission denied"), "rm: {err}");
        let e = std::fs::remove_file(&f).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
        assert!(ls(&mnt.join("build")).contains(&"notes.txt".to_string()));
        assert_eq!(
            std::fs::read(&f).unwrap(),
            exp.files["build/notes.txt"].content
        );
        assert!(s.artifact_exists(&exp.files["build/notes.txt"].artifact_id));
        assert!(s.count(Count::ApiStatus(403)) >= 1, "{:?}", s.counts());
    });
}

/// Runs every mutation on `mnt` (a mount of [`small_build`]) and checks each fails with EROFS.
fn check_every_write_op_is_erofs(mnt: &Path) {
    let file = mnt.join("build/notes.txt");
    let dir = mnt.join("build");
    let new = dir.join("new.txt");
    let erofs = |what: &str, r: std::io::Result<()>| match r {
        Ok(()) => panic!("{what}: succeeded on a read-only mount"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
    };
    use std::fs::OpenOptions;
    use std::os::unix::fs::PermissionsExt;

    erofs("File::create(new)", std::fs::File::create(&new).map(drop));
    erofs(
        "File::create(existing)",
        std::fs::File::create(&file).map(drop),
    );
    erofs(
        "open write",
        OpenOptions::new().write(true).open(&file).map(drop),
    );
    erofs(
        "open append",
        OpenOptions::new().append(true).open(&file).map(drop),
    );
    erofs(
        "open read+write",
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .map(drop),
    );
    erofs(
        "create_new",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&new)
            .map(drop),
    );
    erofs("mkdir", std::fs::create_dir(dir.join("newdir")));
    erofs("mkdir in root", std::fs::create_dir(mnt.join("newjob")));
    erofs("rename", std::fs::rename(&file, dir.join("renamed.txt")));
    erofs(
        "rename dir",
        std::fs::rename(mnt.join("test-suite"), mnt.join("ts")),
    );
    erofs(
        "symlink",
        std::os::unix::fs::symlink("notes.txt", dir.join("link")),
    );
    erofs("hard link", std::fs::hard_link(&file, dir.join("hard")));
    erofs(
        "chmod",
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)),
    );
    erofs(
        "chmod dir",
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)),
    );
    erofs(
        "chown",
        std::os::unix::fs::chown(&file, Some(my_uid()), None),
    );
    erofs(
        "set_modified",
        std::fs::File::open(&file).and_then(|f| f.set_modified(std::time::SystemTime::now())),
    );
    let c = |p: &PathBuf| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let last = || Err::<(), _>(std::io::Error::last_os_error());
    // SAFETY: plain syscalls with valid C strings.
    erofs(
        "truncate(2)",
        if unsafe { libc::truncate(c(&file).as_ptr(), 0) } == 0 {
            Ok(())
        } else {
            last()
        },
    );
    let name = std::ffi::CString::new("user.x").unwrap();
    // SAFETY: as above; a 1-byte value.
    let r = unsafe { libc::setxattr(c(&file).as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    erofs("setxattr", if r == 0 { Ok(()) } else { last() });
    let name = std::ffi::CString::new("user.buildkite.sha1sum").unwrap();
    // SAFETY: as above.
    let r = unsafe { libc::removexattr(c(&file).as_ptr(), name.as_ptr()) };
    erofs("removexattr", if r == 0 { Ok(()) } else { last() });
    // SAFETY: as above.
    let r = unsafe { libc::mkfifo(c(&dir.join("fifo")).as_ptr(), 0o644) };
    erofs("mkfifo", if r == 0 { Ok(()) } else { last() });

    let f = file.display();
    let d = dir.display();
    for cmd in [
        format!("touch {d}/new.txt"),
        format!("touch -m {f}"),
        format!("touch -d 2020-01-01 {f}"),
        format!("truncate -s 0 {f}"),
        format!("mkdir {d}/newdir"),
        format!("mv {f} {d}/moved.txt"),
        format!("ln -s notes.txt {d}/link"),
        format!("ln {f} {d}/hard"),
        format!("chmod 644 {f}"),
        format!("chown $(id -u) {f}"),
        format!("setfattr -n user.x -v 1 {f}"),
        format!("echo more >> {f}"),
        format!("echo new > {d}/new2.txt"),
        format!("cp {f} {d}/copy.txt"),
    ] {
        let (code, _, err) = sh(&cmd);
        assert_ne!(code, 0, "{cmd}: succeeded on a read-only mount");
        assert!(err.contains("Read-only file system"), "{cmd}: {err}");
    }
}

/// Every write operation is EROFS, makes no request and changes nothing.
#[test]
fn every_write_op_is_erofs() {
    let (fb, exp) = small_build(24);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let server = env.server.clone();
    bounded(LIMIT, move || {
        let before = walk(&mnt);
        server.reset_counts();
        check_every_write_op_is_erofs(&mnt);
        assert_eq!(server.count(Count::Api), 0, "{:?}", server.counts());
        assert_eq!(server.count(Count::Storage), 0, "{:?}", server.counts());
        assert_tree_eq("after refused writes", &before, &walk(&mnt));
        assert_eq!(
            std::fs::read(mnt.join("build/notes.txt")).unwrap(),
            exp.files["build/notes.txt"].content
        );
    });
}

/// `--allow-delete` allows `rm` and nothing else: every other mutation is still EROFS.
#[test]
fn every_write_op_is_erofs_with_allow_delete() {
    let (fb, _) = small_build(25);
    let env = Env::new(fb, &["--allow-delete"]);
    let mnt = env.mnt();
    let server = env.server.clone();
    bounded(LIMIT, move || {
        let before = walk(&mnt);
        server.reset_counts();
        check_every_write_op_is_erofs(&mnt);
        assert_eq!(server.count(Count::Api), 0, "{:?}", server.counts());
        assert_tree_eq("after refused writes", &before, &walk(&mnt));
    });
}
