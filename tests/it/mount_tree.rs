//! What a mount shows, through the kernel: the full tree (names, sizes, modes, mtimes, owner)
//! of a big, awkward build; that listing it costs no HTTP request; xattrs; `df`/statfs;
//! mounting by pasted URL; and a token without `read_builds`.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::common::builds::{self, rich_build, small_build};
use crate::common::*;

/// The tree equals the oracle: >250 artifacts (3 pages), parallel jobs, a retry chain,
/// hostile paths, collisions, label edge cases, hidden (unfinished) artifacts.
#[test]
fn tree_matches_expected() {
    let (fb, exp) = rich_build();
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let server = env.server.clone();
    bounded(LIMIT, move || {
        // The listing really was paginated (per_page=100, 290-odd artifacts).
        assert!(
            server.count(Count::ListBuildArtifacts) >= 3,
            "expected >= 3 list pages, counts: {:?}",
            server.counts()
        );
        let want = exp.tree(my_uid());
        assert_tree_eq("std::fs walk", &want, &walk(&mnt));
        assert_tree_eq("find -printf", &want, &find_listing(&mnt));

        // The root holds exactly the job dirs, nothing for jobs without finished artifacts.
        let roots: BTreeSet<String> = ls(&mnt).into_iter().collect();
        let want_roots: BTreeSet<String> = exp.job_dirs.keys().cloned().collect();
        assert_eq!(roots, want_roots);
        assert!(!roots.contains("nothing-finished"));

        // Hidden artifacts are not reachable by name either.
        for p in ["pending.txt", "broken.txt", "gone.txt"] {
            let e = std::fs::metadata(mnt.join("hostile-paths").join(p)).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{p}");
        }
        // Nothing escapes the job dir: `..` is a plain directory name.
        let md = std::fs::metadata(mnt.join("hostile-paths/%2E%2E/%2E%2E/etc/passwd")).unwrap();
        assert!(md.is_file());
        assert_eq!(md.len(), 40);
        let bulk = std::fs::read_dir(mnt.join("bulk-upload/logs"))
            .unwrap()
            .count();
        assert_eq!(bulk, builds::BULK);
        // A job without finished_at gets the build's.
        let md = std::fs::metadata(mnt.join("upload/report.json")).unwrap();
        assert_eq!(md.mtime(), epoch(builds::BUILD_FINISHED));
        assert_eq!(md.mtime_nsec(), 0);
        // The root has the build's time; fractional seconds are kept.
        let md = std::fs::metadata(&mnt).unwrap();
        assert_eq!(
            (md.mtime(), md.mode() & 0o7777),
            (epoch(builds::BUILD_FINISHED), 0o555)
        );
        let md = std::fs::metadata(mnt.join("hostile-paths/abs.txt")).unwrap();
        assert_eq!(md.mtime_nsec(), 250_000_000);
    });
}

/// Two mounts of the same build show identical trees (stable names, inodes aside).
#[test]
fn tree_is_identical_on_every_mount() {
    let (fb, _) = small_build(7);
    let (fb2, _) = small_build(7);
    let a = Env::new(fb, &[]);
    let b = Env::new(fb2, &[]);
    let (ma, mb) = (a.mnt(), b.mnt());
    bounded(LIMIT, move || {
        let ta = walk(&ma);
        assert!(ta.len() > 5, "{ta:?}");
        assert_tree_eq("second mount", &ta, &walk(&mb));
    });
}

/// After the mount is up, ls -lR, find, stat, du and getfattr are answered from memory.
#[test]
fn listing_makes_zero_requests() {
    let (fb, exp) = rich_build();
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let server = env.server.clone();
    bounded(LIMIT, move || {
        server.reset_counts();
        let m = mnt.display();
        for cmd in [
            format!("ls -lR {m} > /dev/null"),
            format!("ls -laRi --full-time {m} > /dev/null"),
            format!("find {m} -printf '%p %s %m %T@\\n' > /dev/null"),
            format!("find {m} -type f -exec stat {{}} + > /dev/null"),
            format!("stat {m} {m}/bulk-upload > /dev/null"),
            format!("du -s {m} > /dev/null"),
            format!("du -ab {m} > /dev/null"),
            format!("getfattr -R -d --absolute-names {m} > /dev/null"),
        ] {
            let (code, _, err) = sh(&cmd);
            assert_eq!(code, 0, "{cmd}: {err}");
        }
        // du sees st_blocks: the apparent total is the sum of the artifact sizes.
        let (code, out, err) = sh(&format!("du -s --apparent-size -B1 {m}"));
        assert_eq!(code, 0, "{err}");
        let total: u64 = exp.files.values().map(|f| f.content.len() as u64).sum();
        let du: u64 = out.split_whitespace().next().unwrap().parse().unwrap();
        assert!(du >= total, "du {du} < total {total}");
        let counts = server.counts();
        assert_eq!(
            server.count(Count::Api),
            0,
            "API requests while listing: {counts:?}"
        );
        assert_eq!(
            server.count(Count::Storage),
            0,
            "storage requests while listing: {counts:?}"
        );
    });
}

/// `getfattr -d` shows exactly the documented keys and values on a file, a job dir and the
/// build's root.
#[test]
fn xattrs_on_file_and_job_dir() {
    let mut b = builds::Builder::new(builds::ORG, builds::PIPELINE, 55);
    let jid = "x0000001-0000-4000-8000-000000000055";
    b.simple_job(
        jid,
        ":docker: Image \"build\"",
        "2024-05-01T00:00:00.000Z",
        "image-build",
    );
    let content = b"x-attr content\n".to_vec();
    let aid =
        b.fb.add_artifact_with(jid, "out/report.txt", content.clone(), |a| {
            a.mime_type = Some("text/x-report".into())
        });
    let (fb, _) = b.finish();
    let commit = fb.build.commit.clone().unwrap();
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    bounded(LIMIT, move || {
        let file = mnt.join("image-build/out/report.txt");
        let got = getfattr_d(&file);
        let want: Vec<(String, String)> = vec![
            ("user.buildkite.artifact_id".into(), aid.clone()),
            ("user.buildkite.job_id".into(), jid.into()),
            ("user.buildkite.mime_type".into(), "text/x-report".into()),
            ("user.buildkite.path".into(), "out/report.txt".into()),
            ("user.buildkite.sha1sum".into(), sha1_hex(&content)),
            ("user.buildkite.state".into(), "finished".into()),
        ];
        assert_eq!(got, want, "getfattr -d {file:?}");

        let dir = mnt.join("image-build");
        let got = getfattr_d(&dir);
        let want: Vec<(String, String)> = vec![
            ("user.buildkite.job_id".into(), jid.into()),
            (
                "user.buildkite.job_label".into(),
                ":docker: Image \"build\"".into(),
            ),
            (
                "user.buildkite.web_url".into(),
                format!("https://buildkite.com/acme/web-app/builds/55#{jid}"),
            ),
        ];
        assert_eq!(got, want, "getfattr -d {dir:?}");

        // One attribute by name; a missing one is ENODATA ("No such attribute").
        let (code, out, err) = sh(&format!(
            "getfattr --only-values -n user.buildkite.artifact_id {}",
            file.display()
        ));
        assert_eq!((code, out.as_str()), (0, aid.as_str()), "{err}");
        let (code, _, err) = sh(&format!("getfattr -n user.nope {}", file.display()));
        assert_ne!(code, 0);
        assert!(err.contains("No such attribute"), "{err}");
        assert_eq!(xattr(&file, "user.nope"), None);
        // An intermediate directory carries none; the root (the build) carries the build's.
        assert_eq!(getfattr_d(&mnt.join("image-build/out")), vec![]);
        let kv = |k: &str, v: &str| (format!("user.buildkite.{k}"), v.to_string());
        assert_eq!(
            getfattr_d(&mnt),
            vec![
                kv("branch", "main"),
                kv("build_number", "55"),
                kv("build_state", "passed"),
                kv("commit", &commit),
                kv("web_url", "https://buildkite.com/acme/web-app/builds/55"),
            ]
        );
    });
}

/// `getfattr -d --absolute-names -e text`, parsed into sorted (key, value) pairs.
fn getfattr_d(p: &std::path::Path) -> Vec<(String, String)> {
    let o = run(Command::new("getfattr")
        .arg("-d")
        .arg("--absolute-names")
        .arg("-e")
        .arg("text")
        .arg(p));
    assert!(
        o.status.success(),
        "getfattr {p:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut out: Vec<(String, String)> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("getfattr line {l:?}"));
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("unquoted value in {l:?}"));
            (k.to_string(), unescape(v))
        })
        .collect();
    out.sort();
    out
}

/// Undoes getfattr's text escapes: `\"`, `\\` and octal `\NNN`.
fn unescape(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
                let s = std::str::from_utf8(&b[i + 1..i + 4]).unwrap();
                out.push(u8::from_str_radix(s, 8).unwrap());
                i += 4;
            } else {
                out.push(b[i + 1]);
                i += 2;
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// `df` works and statfs numbers are consistent with the build.
#[test]
fn df_and_statfs() {
    let (fb, exp) = small_build(9);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    bounded(LIMIT, move || {
        let (code, out, err) = sh(&format!("df {}", mnt.display()));
        assert_eq!(code, 0, "df: {err}");
        let last = out.lines().last().unwrap();
        assert!(last.starts_with("bkfs:acme/web-app/9 "), "df: {out}");
        assert!(last.ends_with(mnt.to_str().unwrap()), "df: {out}");
        let (code, _, err) = sh(&format!("df -i {}", mnt.display()));
        assert_eq!(code, 0, "df -i: {err}");

        let c = std::ffi::CString::new(mnt.to_str().unwrap()).unwrap();
        // SAFETY: a zeroed statvfs is a valid out-parameter.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and out-pointer.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        let total: u64 = exp.files.values().map(|f| f.content.len() as u64).sum();
        let bsize = st.f_frsize as u64;
        assert!(bsize > 0);
        assert_eq!(st.f_blocks as u64, total.div_ceil(bsize), "f_blocks");
        assert_eq!(st.f_bfree, 0, "a read-only build has no free space");
        assert_eq!(st.f_namemax, 255);
        let nodes = exp.tree(my_uid()).len() as u64;
        assert!(
            st.f_files as u64 >= nodes,
            "f_files {} < {nodes}",
            st.f_files
        );
    });
}

/// A pasted web URL with a `#job-id` fragment mounts the build.
#[test]
fn mount_by_url() {
    let (fb, exp) = small_build(31);
    let server = std::sync::Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let url = "https://buildkite.com/acme/web-app/builds/31#c0000002-0000-4000-8000-000000000102";
    let m = mount(&server, &scratch, url, &[]);
    let mnt = m.mnt.clone();
    bounded(LIMIT, move || {
        assert_eq!(
            ls(&mnt),
            vec!["build".to_string(), "test-suite".to_string()]
        );
        assert_tree_eq("mounted by URL", &exp.tree(my_uid()), &walk(&mnt));
        let f = &exp.files["test-suite/junit.xml"];
        assert_eq!(
            std::fs::read(mnt.join("test-suite/junit.xml")).unwrap(),
            f.content
        );
    });
}

/// Without `read_builds` the mount still works and job dirs are the job ids.
#[test]
fn token_without_read_builds_names_dirs_by_job_id() {
    let (fb, exp) = small_build(32);
    let server = std::sync::Arc::new(server());
    server.add_token("artifacts-only", &["read_artifacts"]);
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = match try_mount(
        &server,
        &scratch,
        "acme/web-app/32",
        Some("artifacts-only"),
        &[],
    ) {
        Ok(m) => m,
        Err((code, err)) => panic!(
            "mount failed ({code}): {err}\n{}",
            std::fs::read_to_string(scratch.log()).unwrap_or_default()
        ),
    };
    assert!(is_mounted(&m.mnt));
    let mnt = m.mnt.clone();
    bounded(LIMIT, move || {
        let mut ids: Vec<String> = exp.job_dirs.values().map(|(id, _)| id.clone()).collect();
        ids.sort();
        assert_eq!(ls(&mnt), ids);
        for (rel, f) in &exp.files {
            let (dir, rest) = rel.split_once('/').unwrap();
            let jid = &exp.job_dirs[dir].0;
            let p = mnt.join(jid).join(rest);
            assert_eq!(std::fs::read(&p).unwrap(), f.content, "{p:?}");
        }
    });
}
