//! Unit tests of the filesystem core over the in-memory doubles of `crate::backend::testing`:
//! a [`MockLister`] holding per-build listings and a builds list (counting its calls), a
//! [`Recorder`] of kernel invalidations, and a [`MockRemote`] serving artifact bytes by id.
//!
//! tokio's `test-util` clock is not used here: live refreshes run on short real intervals
//! and every wait is bounded ([`wait_until`]).
//!
//! Over 1,000 lines, knowingly: one file of fixtures shared by the tests of every fs
//! submodule (slots, handles, pipeline, live refresh, delete, xattrs).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use super::{global, list_pipeline, Attr, DirEntry, Fs, FsConfig, FsError, Kind};
use crate::backend::testing::{Inval, MockLister, MockRemote, Recorder};
use crate::backend::Listing;
use crate::backend::{Artifact, Build, Job};
use crate::content::{Reader, ReaderConfig};
use crate::tree::{parse_time, Ino, ROOT_INO};

// ---------------------------------------------------------------------------------------
// Fixtures

const CREATED: &str = "2024-05-01T10:00:00Z";
const FINISHED: &str = "2024-05-01T10:30:00Z";
const FAR: Duration = Duration::from_secs(3600);

fn job(id: &str, name: &str) -> Job {
    Job {
        id: id.to_string(),
        kind: Some("script".into()),
        name: Some(name.to_string()),
        ..Default::default()
    }
}

fn build(number: u64, state: &str, jobs: &[Job]) -> Build {
    Build {
        id: format!("build-{number}"),
        number,
        state: Some(state.to_string()),
        created_at: Some(CREATED.into()),
        branch: Some("main".into()),
        jobs: jobs.to_vec(),
        ..Default::default()
    }
}

/// The bytes of artifact `id` (different lengths for different ids).
fn content(id: &str) -> Vec<u8> {
    format!("contents of {id}\n{}\n", id.repeat(7)).into_bytes()
}

fn artifact(id: &str, job_id: &str, path: &str) -> Artifact {
    let data = content(id);
    Artifact {
        id: id.to_string(),
        job_id: Some(job_id.to_string()),
        state: Some("finished".into()),
        path: Some(path.to_string()),
        filename: path.rsplit('/').next().map(str::to_string),
        file_size: Some(data.len() as u64),
        sha1sum: Some(hex::encode(Sha1::digest(&data))),
        ..Default::default()
    }
}

fn listing(b: &Build, artifacts: Vec<Artifact>) -> Listing {
    Listing {
        build: Some(b.clone()),
        artifacts,
        via: "mock",
        requests: 1,
    }
}

fn cfg(refresh: Duration, allow_delete: bool) -> FsConfig {
    FsConfig {
        uid: 1000,
        gid: 1000,
        allow_delete,
        refresh,
    }
}

/// The mocks a mount is made of.
struct Env {
    lister: Arc<MockLister>,
    remote: Arc<MockRemote>,
    kernel: Arc<Recorder>,
    reader: Arc<Reader>,
}

impl Env {
    fn new() -> Env {
        let remote = Arc::new(MockRemote::default());
        Env {
            lister: Arc::new(MockLister::default()),
            reader: Reader::new(remote.clone(), ReaderConfig::default(), None),
            remote,
            kernel: Arc::new(Recorder::default()),
        }
    }

    /// A single-build mount of `l` (also given to the lister, its bytes to the remote).
    fn single(&self, number: u64, l: &Listing, fs_cfg: FsConfig) -> Arc<Fs> {
        self.lister.set_listing(number, l.clone());
        for a in &l.artifacts {
            self.remote.put(&a.id, content(&a.id));
        }
        let fs = Fs::single(
            number,
            l,
            self.lister.clone(),
            self.reader.clone(),
            None,
            fs_cfg,
        );
        fs.set_kernel(self.kernel.clone());
        fs
    }

    /// A pipeline mount of the lister's builds list, as the mount command makes it.
    async fn pipeline(&self, limit: usize, refresh: Duration) -> Arc<Fs> {
        let (builds, links) = list_pipeline(&*self.lister, limit, None).await.unwrap();
        let fs = Fs::pipeline(
            builds,
            links,
            limit,
            None,
            self.lister.clone(),
            self.reader.clone(),
            None,
            cfg(refresh, false),
        );
        fs.set_kernel(self.kernel.clone());
        fs
    }
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `parent/n` from memory; panics when it needs the network or does not exist.
fn attr(fs: &Fs, parent: Ino, n: &str) -> Attr {
    fs.lookup_cached(parent, name(n))
        .unwrap_or_else(|| panic!("lookup of {n:?} needs the network"))
        .unwrap_or_else(|e| panic!("lookup of {n:?}: {e}"))
}

fn ino(fs: &Fs, parent: Ino, n: &str) -> Ino {
    attr(fs, parent, n).ino
}

fn gone(fs: &Fs, parent: Ino, n: &str) -> bool {
    matches!(
        fs.lookup_cached(parent, name(n)),
        Some(Err(FsError::NotFound))
    )
}

fn entries(l: &[DirEntry]) -> Vec<(String, Ino, Kind)> {
    l.iter().map(|e| (e.name.clone(), e.ino, e.kind)).collect()
}

fn names(l: &[DirEntry]) -> Vec<String> {
    l.iter().map(|e| e.name.clone()).collect()
}

fn e(n: &str, ino: Ino, kind: Kind) -> (String, Ino, Kind) {
    (n.to_string(), ino, kind)
}

fn xattr(fs: &Fs, ino: Ino, key: &str) -> Option<String> {
    fs.xattrs(ino)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == &format!("user.buildkite.{key}"))
        .map(|(_, v)| String::from_utf8(v).unwrap())
}

/// Waits (at most 10 s) for `cond`, polling.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------
// 1. Single-build mounts

#[tokio::test(start_paused = true)]
async fn single_build_answers_from_memory() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build"), job("j2", "Test")]);
    let l = listing(
        &b,
        vec![
            artifact("a1", "j1", "log.txt"),
            artifact("a2", "j1", "out/app.bin"),
            artifact("a3", "j2", "junit.xml"),
        ],
    );
    let fs = env.single(7, &l, cfg(Duration::from_millis(20), false));
    fs.start();

    let root = fs.getattr(ROOT_INO).unwrap();
    assert_eq!(root.ino, ROOT_INO);
    assert_eq!(root.kind, Kind::Dir);
    assert_eq!(root.nlink, 4, "2 + two job directories");
    assert_eq!(root.perm, 0o555);
    assert_eq!((root.uid, root.gid), (1000, 1000));
    assert_eq!(Some(root.mtime), parse_time(CREATED));

    let bd = attr(&fs, ROOT_INO, "build");
    assert_eq!(bd.kind, Kind::Dir);
    assert_eq!(bd.nlink, 3, "2 + out/");
    assert_eq!(fs.lookup(ROOT_INO, name("build")).await.unwrap(), bd);
    assert_eq!(fs.getattr(bd.ino).unwrap(), bd);
    let test = ino(&fs, ROOT_INO, "test");
    let log = attr(&fs, bd.ino, "log.txt");
    assert_eq!(log.kind, Kind::File);
    assert_eq!(log.size, content("a1").len() as u64);
    assert_eq!(log.perm, 0o444);
    assert_eq!(log.nlink, 1);
    assert_eq!(log.blocks, 1);
    let out = ino(&fs, bd.ino, "out");
    let app = attr(&fs, out, "app.bin");
    assert_eq!(fs.lookup(out, name("app.bin")).await.unwrap(), app);

    // The root's `..` is the root itself.
    let fh = fs.opendir(ROOT_INO).unwrap();
    let l = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", ROOT_INO, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("build", bd.ino, Kind::Dir),
            e("test", test, Kind::Dir),
        ]
    );
    assert_eq!(*fs.listing(ROOT_INO, fh, 0).await.unwrap(), *l);
    assert_eq!(fs.readdir_cached(ROOT_INO).unwrap().unwrap(), *l);
    fs.releasedir(fh);

    let fh = fs.opendir(bd.ino).unwrap();
    let l = fs.listing_cached(bd.ino, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", bd.ino, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("log.txt", log.ino, Kind::File),
            e("out", out, Kind::Dir),
        ]
    );
    let l = fs.listing_cached(out, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", out, Kind::Dir),
            e("..", bd.ino, Kind::Dir),
            e("app.bin", app.ino, Kind::File),
        ]
    );

    // Errors, all from memory.
    assert!(gone(&fs, ROOT_INO, "nope"));
    assert!(matches!(
        fs.lookup(ROOT_INO, name("nope")).await,
        Err(FsError::NotFound)
    ));
    assert_eq!(
        fs.lookup_cached(log.ino, name("x")),
        Some(Err(FsError::NotDir))
    );
    assert_eq!(fs.getattr(9999), Err(FsError::NotFound));
    assert_eq!(fs.getattr(global(3, ROOT_INO)), Err(FsError::NotFound));
    assert_eq!(fs.opendir(log.ino), Err(FsError::NotDir));
    assert_eq!(
        fs.listing_cached(log.ino, 77, 0).map(|r| r.map(|_| ())),
        Some(Err(FsError::NotDir))
    );
    assert_eq!(fs.readlink_cached(log.ino), Some(Err(FsError::Invalid)));
    assert_eq!(fs.readlink_cached(ROOT_INO), Some(Err(FsError::Invalid)));
    assert_eq!(fs.open(bd.ino, libc::O_RDONLY), Err(FsError::IsDir));
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert!(matches!(fs.open(log.ino, flags), Err(FsError::ReadOnly(_))));
    }
    assert!(matches!(
        fs.unlink(bd.ino, name("log.txt")).await,
        Err(FsError::ReadOnly(_))
    ));
    assert!(fs.dir_cacheable(ROOT_INO));
    assert!(!fs.deletes_allowed());

    // Extended attributes.
    assert_eq!(xattr(&fs, ROOT_INO, "build_number").as_deref(), Some("7"));
    assert_eq!(
        xattr(&fs, ROOT_INO, "build_state").as_deref(),
        Some("passed")
    );
    assert_eq!(xattr(&fs, ROOT_INO, "branch").as_deref(), Some("main"));
    assert_eq!(xattr(&fs, bd.ino, "job_id").as_deref(), Some("j1"));
    assert_eq!(xattr(&fs, bd.ino, "job_label").as_deref(), Some("Build"));
    assert_eq!(xattr(&fs, log.ino, "artifact_id").as_deref(), Some("a1"));
    assert_eq!(xattr(&fs, app.ino, "path").as_deref(), Some("out/app.bin"));
    assert_eq!(
        fs.getxattr(log.ino, name("user.buildkite.job_id")).unwrap(),
        b"j1".to_vec()
    );
    assert_eq!(
        fs.getxattr(log.ino, name("user.buildkite.nope")),
        Err(FsError::NoAttr)
    );
    assert_eq!(fs.statfs().files, 7);

    // A passed build is never listed again, whatever the refresh interval.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(env.lister.list_build_total(), 0);
    assert!(env.lister.get_build_calls().is_empty());
    assert_eq!(env.lister.list_builds_count(), 0);
    assert!(env.kernel.events().is_empty());
}

// ---------------------------------------------------------------------------------------
// 2. Pipeline mounts

/// Builds 12 (running), 11 (failed), 10 (passed) at the root; 5 exists but is older.
fn pipeline_env() -> Env {
    let env = Env::new();
    let jobs = [job("j1", "Build")];
    let b12 = build(12, "running", &jobs);
    let b11 = build(11, "failed", &jobs);
    let b10 = build(10, "passed", &jobs);
    let b5 = build(5, "passed", &jobs);
    env.lister
        .set_builds(vec![b12.clone(), b11.clone(), b10.clone()]);
    for (b, a) in [(&b12, "a12"), (&b11, "a11"), (&b5, "a5")] {
        env.lister
            .set_listing(b.number, listing(b, vec![artifact(a, "j1", "log.txt")]));
        env.remote.put(a, content(a));
    }
    env
}

#[tokio::test]
async fn pipeline_root_and_lazy_builds() {
    let env = pipeline_env();
    let fs = env.pipeline(3, FAR).await;
    assert_eq!(
        env.lister.list_builds_count(),
        1,
        "every link found in the list"
    );
    let (b12, b11, b10) = (
        global(1, ROOT_INO),
        global(2, ROOT_INO),
        global(3, ROOT_INO),
    );

    // The root: `.`, `..`, the links, the builds newest first; no build listed for it.
    let fh = fs.opendir(ROOT_INO).unwrap();
    let l = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", ROOT_INO, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("latest", 2, Kind::Symlink),
            e("latest-passed", 3, Kind::Symlink),
            e("latest-failed", 4, Kind::Symlink),
            e("12", b12, Kind::Dir),
            e("11", b11, Kind::Dir),
            e("10", b10, Kind::Dir),
        ]
    );
    assert!(!fs.dir_cacheable(ROOT_INO));
    let root = fs.getattr(ROOT_INO).unwrap();
    assert_eq!((root.kind, root.nlink), (Kind::Dir, 5));

    // An unlisted build's directory: attributes and xattrs without a request.
    let a11 = fs.getattr(b11).unwrap();
    assert_eq!((a11.ino, a11.kind, a11.nlink), (b11, Kind::Dir, 1));
    assert_eq!(Some(a11.mtime), parse_time(CREATED));
    assert_eq!(attr(&fs, ROOT_INO, "11"), a11);
    assert_eq!(xattr(&fs, b11, "build_number").as_deref(), Some("11"));
    assert_eq!(xattr(&fs, b11, "build_state").as_deref(), Some("failed"));
    assert_eq!(fs.lookup_cached(b12, name("build")), None);
    assert!(fs.readdir_cached(b12).is_none());
    assert!(fs.listing_cached(b12, fh, 0).is_none());
    assert_eq!(fs.getattr(global(1, 2)), Err(FsError::NotFound));
    assert_eq!(env.lister.list_build_total(), 0);

    // Two lookups at once inside build 12 list it once.
    env.lister.set_delay(Duration::from_millis(50));
    let (x, y) = tokio::join!(fs.lookup(b12, name("build")), fs.lookup(b12, name("build")));
    env.lister.set_delay(Duration::ZERO);
    let x = x.unwrap();
    assert_eq!(x, y.unwrap());
    assert_eq!(x.kind, Kind::Dir);
    assert_eq!(env.lister.list_build_count(12), 1);
    assert_eq!(env.lister.list_build_total(), 1);
    assert_eq!(attr(&fs, b12, "build"), x);
    assert_eq!(fs.getattr(b12).unwrap().nlink, 3);
    let log = ino(&fs, x.ino, "log.txt");
    assert_eq!(log >> 40, 1, "build 12's files live in slot 1");
    assert_eq!(xattr(&fs, log, "artifact_id").as_deref(), Some("a12"));
    // Reads carry the build's number to the remote (a pipeline mount holds several).
    let fh_log = fs.open(log, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(log, fh_log, 0, 4096).await.unwrap(), content("a12"));
    fs.release(fh_log);
    assert_eq!(
        *env.remote.url_calls.lock().unwrap(),
        [("a12".to_string(), 12)]
    );

    // A build root's `..` is the mount root; a job directory's `..` is the build root.
    let l = fs.listing_cached(b12, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", b12, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("build", x.ino, Kind::Dir),
        ]
    );
    let l = fs.listing_cached(x.ino, fh, 0).unwrap().unwrap();
    assert_eq!(names(&l), [".", "..", "log.txt"]);
    assert_eq!(l[1].ino, b12);

    // `ls` of an unlisted build lists it (once).
    let l = fs.listing(b11, fh, 0).await.unwrap();
    assert_eq!(names(&l), [".", "..", "build"]);
    assert_eq!(l[1].ino, ROOT_INO);
    assert_eq!(env.lister.list_build_count(11), 1);
    fs.listing(b11, fh, 0).await.unwrap();
    assert_eq!(env.lister.list_build_count(11), 1);

    // Links.
    assert_eq!(fs.readlink_cached(2), Some(Ok("12".to_string())));
    assert_eq!(fs.readlink(3).await.unwrap(), "10");
    assert_eq!(fs.readlink_cached(4), Some(Ok("11".to_string())));
    let latest = attr(&fs, ROOT_INO, "latest");
    assert_eq!(
        (latest.ino, latest.kind, latest.size),
        (2, Kind::Symlink, 2)
    );
    assert_eq!(fs.getattr(3).unwrap(), attr(&fs, ROOT_INO, "latest-passed"));
    assert_eq!(fs.readlink_cached(ROOT_INO), Some(Err(FsError::Invalid)));
    assert_eq!(fs.readlink_cached(b12), Some(Err(FsError::Invalid)));
    assert_eq!(fs.readlink_cached(5), Some(Err(FsError::NotFound)));
    assert_eq!(fs.getattr(5), Err(FsError::NotFound));
    assert_eq!(fs.lookup_cached(2, name("x")), Some(Err(FsError::NotDir)));
    assert_eq!(fs.opendir(2), Err(FsError::NotDir));
    assert_eq!(env.lister.list_builds_count(), 1, "the root is fresh");

    // A number outside the listing: one get_build, then from memory.
    let a5 = fs.lookup(ROOT_INO, name("5")).await.unwrap();
    assert_eq!((a5.ino, a5.kind), (global(4, ROOT_INO), Kind::Dir));
    assert_eq!(env.lister.get_build_calls(), [5]);
    assert_eq!(attr(&fs, ROOT_INO, "5"), a5);
    assert_eq!(fs.lookup(ROOT_INO, name("5")).await.unwrap(), a5);
    assert_eq!(env.lister.get_build_calls(), [5]);
    assert_eq!(env.lister.list_build_count(5), 0);
    assert_eq!(fs.lookup_cached(a5.ino, name("build")), None);
    let job5 = fs.lookup(a5.ino, name("build")).await.unwrap();
    assert_eq!(job5.ino >> 40, 4);
    assert_eq!(env.lister.list_build_count(5), 1);
    let l = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert!(!names(&l).contains(&"5".to_string()), "found by name only");

    // An unknown number: one get_build, and the 404 is remembered.
    assert_eq!(fs.lookup_cached(ROOT_INO, name("99")), None);
    assert_eq!(
        fs.lookup(ROOT_INO, name("99")).await,
        Err(FsError::NotFound)
    );
    assert_eq!(env.lister.get_build_calls(), [5, 99]);
    assert_eq!(
        fs.lookup(ROOT_INO, name("99")).await,
        Err(FsError::NotFound)
    );
    assert_eq!(
        fs.lookup_cached(ROOT_INO, name("99")),
        Some(Err(FsError::NotFound))
    );
    assert_eq!(env.lister.get_build_calls(), [5, 99]);

    // Names that are not canonical build numbers: ENOENT without a request.
    for n in [
        "007",
        "05",
        "0",
        "+5",
        "-1",
        "foo",
        "1e3",
        "",
        " 5",
        "99999999999999999999999",
    ] {
        assert_eq!(
            fs.lookup_cached(ROOT_INO, name(n)),
            Some(Err(FsError::NotFound)),
            "{n:?}"
        );
        assert_eq!(
            fs.lookup(ROOT_INO, name(n)).await,
            Err(FsError::NotFound),
            "{n:?}"
        );
    }
    assert_eq!(env.lister.get_build_calls(), [5, 99]);
    assert_eq!(env.lister.list_build_total(), 3);
    assert_eq!(env.lister.list_builds_count(), 1);
}

#[tokio::test]
async fn pipeline_concurrent_lookups_of_a_new_number_call_get_build_once() {
    let env = pipeline_env();
    let fs = env.pipeline(3, FAR).await;
    env.lister.set_delay(Duration::from_millis(50));
    let (x, y) = tokio::join!(
        fs.lookup(ROOT_INO, name("5")),
        fs.lookup(ROOT_INO, name("5"))
    );
    assert_eq!(x.unwrap(), y.unwrap());
    assert_eq!(env.lister.get_build_calls(), [5]);
}

/// Concurrent lookups of a number the API does not know cost one request: the lookups that
/// waited find the remembered 404.
#[tokio::test]
async fn pipeline_concurrent_lookups_of_a_missing_number_call_get_build_once() {
    let env = pipeline_env();
    let fs = env.pipeline(3, FAR).await;
    env.lister.set_delay(Duration::from_millis(50));
    let (x, y) = tokio::join!(
        fs.lookup(ROOT_INO, name("99")),
        fs.lookup(ROOT_INO, name("99"))
    );
    assert_eq!((x, y), (Err(FsError::NotFound), Err(FsError::NotFound)));
    assert_eq!(env.lister.get_build_calls(), [99]);
}

#[tokio::test]
async fn pipeline_link_without_target_is_not_listed() {
    let env = Env::new();
    let jobs = [job("j1", "Build")];
    // Fewer builds than the limit: no extra request for the missing state.
    env.lister
        .set_builds(vec![build(3, "running", &jobs), build(2, "passed", &jobs)]);
    let fs = env.pipeline(5, FAR).await;
    assert_eq!(env.lister.list_builds_count(), 1);
    let fh = fs.opendir(ROOT_INO).unwrap();
    let l = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert_eq!(names(&l), [".", "..", "latest", "latest-passed", "3", "2"]);
    assert_eq!(
        fs.lookup_cached(ROOT_INO, name("latest-failed")),
        Some(Err(FsError::NotFound))
    );
    assert_eq!(fs.readlink_cached(4), Some(Err(FsError::NotFound)));
    assert_eq!(fs.readlink_cached(3), Some(Ok("2".to_string())));
    assert_eq!(env.lister.list_builds_count(), 1);
}

// ---------------------------------------------------------------------------------------
// 3. Live builds

/// A running build whose listing changes: the refresh reconciles it, keeps inodes, tells
/// the kernel; the first `passed` listing is the last. In a pipeline mount the build lives
/// in slot 1, so every inode the kernel hears about must carry the slot.
async fn live_refresh(pipeline: bool) {
    let env = Env::new();
    let refresh = Duration::from_millis(40);
    let jobs = [job("j1", "Build"), job("j2", "Test")];
    let running = build(12, "running", &jobs);
    let (a1, a2) = (
        artifact("a1", "j1", "log.txt"),
        artifact("a2", "j1", "out/app.bin"),
    );
    let first = listing(&running, vec![a1.clone(), a2.clone()]);
    let (fs, top) = if pipeline {
        env.lister.set_builds(vec![running.clone()]);
        env.lister.set_listing(12, first);
        let fs = env.pipeline(1, refresh).await;
        let top = ino(&fs, ROOT_INO, "12");
        assert_eq!(top, global(1, ROOT_INO));
        fs.lookup(top, name("build")).await.unwrap();
        (fs, top)
    } else {
        let fs = env.single(12, &first, cfg(refresh, false));
        fs.start();
        (fs, ROOT_INO)
    };
    let bd = ino(&fs, top, "build");
    let log = ino(&fs, bd, "log.txt");
    let out = ino(&fs, bd, "out");
    let app = ino(&fs, out, "app.bin");

    // Listing a pipeline's build tells the kernel to forget its directory's attributes (they
    // were answered before it was listed); refreshes with nothing new tell it nothing.
    let first = env.kernel.take();
    if pipeline {
        assert_eq!(first, [Inval::Inode(global(1, ROOT_INO))]);
    } else {
        assert_eq!(first, []);
    }
    let calls = env.lister.list_build_count(12);
    wait_until("two refreshes", || {
        env.lister.served.lock().unwrap().len() >= calls + 2
    })
    .await;
    assert!(env.kernel.events().is_empty(), "{:?}", env.kernel.events());

    // A new artifact, a removed one (and its directory), a new job directory.
    let second = vec![
        a1.clone(),
        artifact("a3", "j1", "report.html"),
        artifact("a4", "j2", "junit.xml"),
    ];
    env.lister
        .set_listing(12, listing(&running, second.clone()));
    wait_until("the new listing", || {
        matches!(fs.lookup_cached(top, name("test")), Some(Ok(_)))
    })
    .await;
    let test = ino(&fs, top, "test");
    let report = ino(&fs, bd, "report.html");
    let junit = ino(&fs, test, "junit.xml");
    assert_eq!(ino(&fs, top, "build"), bd);
    assert_eq!(ino(&fs, bd, "log.txt"), log);
    assert!(gone(&fs, bd, "out"));
    assert_eq!(fs.getattr(out), Err(FsError::NotFound));
    assert_eq!(fs.getattr(app), Err(FsError::NotFound));
    for new in [test, report, junit] {
        assert_eq!(new >> 40, top >> 40, "same slot");
        assert!(new > app, "new inode {new} reuses no number");
    }
    let fh = fs.opendir(bd).unwrap();
    let l = fs.listing_cached(bd, fh, 0).unwrap().unwrap();
    assert_eq!(names(&l), [".", "..", "log.txt", "report.html"]);
    assert_eq!(fs.getattr(bd).unwrap().nlink, 2);
    assert_eq!(fs.getattr(top).unwrap().nlink, 4);

    let expected: BTreeSet<(Ino, String)> = [
        (bd, "report.html"),
        (top, "test"),
        (test, "junit.xml"),
        (bd, "out"),
        (out, "app.bin"),
    ]
    .into_iter()
    .map(|(p, n)| (p, n.to_string()))
    .collect();
    wait_until("the invalidations", || {
        env.kernel.entries() == expected && env.kernel.inodes().contains(&bd)
    })
    .await;
    assert_eq!(env.kernel.inodes(), BTreeSet::from([top, bd]));

    // The build passes: that listing is the last one.
    env.kernel.clear();
    let mut passed = build(12, "passed", &jobs);
    passed.finished_at = Some(FINISHED.into());
    env.lister.set_listing(12, listing(&passed, second));
    wait_until("the final listing", || env.lister.served(12, "passed") == 1).await;
    wait_until("the final state", || {
        xattr(&fs, top, "build_state").as_deref() == Some("passed")
    })
    .await;
    let calls = env.lister.list_build_count(12);
    tokio::time::sleep(refresh * 8).await;
    assert_eq!(
        env.lister.list_build_count(12),
        calls,
        "refreshed after passed"
    );
    assert_eq!(env.lister.served(12, "passed"), 1);
    // Its new time reached the tree and the kernel.
    assert_eq!(Some(fs.getattr(top).unwrap().mtime), parse_time(FINISHED));
    assert!(
        env.kernel.inodes().contains(&top),
        "{:?}",
        env.kernel.events()
    );
    assert!(env.kernel.entries().is_empty(), "{:?}", env.kernel.events());
}

#[tokio::test(start_paused = true)]
async fn live_single_build_refresh_reconciles_and_invalidates() {
    live_refresh(false).await;
}

#[tokio::test(start_paused = true)]
async fn live_pipeline_build_refresh_reconciles_and_invalidates_with_global_inodes() {
    live_refresh(true).await;
}

#[tokio::test(start_paused = true)]
async fn live_build_gone_404_stops_refreshing() {
    let env = Env::new();
    let refresh = Duration::from_millis(30);
    let b = build(12, "running", &[job("j1", "Build")]);
    let fs = env.single(
        12,
        &listing(&b, vec![artifact("a1", "j1", "log.txt")]),
        cfg(refresh, false),
    );
    fs.start();
    fs.start(); // no second loop: exactly one 404 below
    wait_until("a refresh", || env.lister.list_build_count(12) >= 1).await;
    env.lister.listings.lock().unwrap().remove(&12);
    wait_until("the 404", || {
        env.lister
            .served
            .lock()
            .unwrap()
            .iter()
            .any(|(n, s)| *n == 12 && s.is_none())
    })
    .await;
    let calls = env.lister.list_build_count(12);
    tokio::time::sleep(refresh * 8).await;
    assert_eq!(env.lister.list_build_count(12), calls);
    let not_found = env
        .lister
        .served
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, s)| *n == 12 && s.is_none())
        .count();
    assert_eq!(not_found, 1, "one refresh loop, stopped by its 404");
    // What was listed stays.
    let bd = ino(&fs, ROOT_INO, "build");
    ino(&fs, bd, "log.txt");
}

// ---------------------------------------------------------------------------------------
// 4. Directory handles

#[tokio::test]
async fn directory_handle_keeps_its_snapshot_across_a_refresh() {
    let env = Env::new();
    let jobs = [job("j1", "Build")];
    let running = build(7, "running", &jobs);
    let a1 = artifact("a1", "j1", "log.txt");
    let a2 = artifact("a2", "j1", "out/app.bin");
    let fs = env.single(
        7,
        &listing(&running, vec![a1.clone(), a2]),
        cfg(Duration::from_millis(40), false),
    );
    fs.start();
    let bd = ino(&fs, ROOT_INO, "build");

    let fh = fs.opendir(bd).unwrap();
    let snap = fs.listing_cached(bd, fh, 0).unwrap().unwrap();
    assert_eq!(names(&snap), [".", "..", "log.txt", "out"]);

    env.lister.set_listing(
        7,
        listing(&running, vec![a1, artifact("a3", "j1", "report.html")]),
    );
    wait_until("the refresh", || {
        matches!(fs.lookup_cached(bd, name("report.html")), Some(Ok(_)))
    })
    .await;

    // Later offsets of the same handle read the snapshot...
    let later = fs.listing_cached(bd, fh, 2).unwrap().unwrap();
    assert!(Arc::ptr_eq(&later, &snap));
    assert_eq!(names(&later), [".", "..", "log.txt", "out"]);
    assert!(Arc::ptr_eq(&fs.listing(bd, fh, 3).await.unwrap(), &snap));
    // ...another handle, or offset 0 (rewinddir), sees the new listing.
    let fresh = [".", "..", "log.txt", "report.html"];
    let other = fs.opendir(bd).unwrap();
    assert_ne!(other, fh);
    assert_eq!(
        names(&fs.listing_cached(bd, other, 2).unwrap().unwrap()),
        fresh
    );
    let again = fs.listing_cached(bd, fh, 0).unwrap().unwrap();
    assert_eq!(names(&again), fresh);
    assert!(Arc::ptr_eq(
        &fs.listing_cached(bd, fh, 2).unwrap().unwrap(),
        &again
    ));
    // A released handle has no snapshot left.
    fs.releasedir(fh);
    assert_eq!(
        names(&fs.listing_cached(bd, fh, 2).unwrap().unwrap()),
        fresh
    );
}

// ---------------------------------------------------------------------------------------
// 5. Reading

#[tokio::test]
async fn read_serves_bytes_and_open_files_outlive_their_artifact() {
    let env = Env::new();
    let jobs = [job("j1", "Build"), job("j2", "Test")];
    let running = build(7, "running", &jobs);
    let fs = env.single(
        7,
        &listing(
            &running,
            vec![
                artifact("a1", "j1", "log.txt"),
                artifact("a2", "j2", "junit.xml"),
                artifact("a3", "j1", "zzz.txt"),
            ],
        ),
        cfg(Duration::from_millis(40), false),
    );
    fs.start();
    let bd = ino(&fs, ROOT_INO, "build");
    let test = ino(&fs, ROOT_INO, "test");
    let log = ino(&fs, bd, "log.txt");
    let junit = ino(&fs, test, "junit.xml");
    let data = content("a1");

    let fh = fs.open(log, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(log, fh, 0, 4096).await.unwrap(), data);
    assert_eq!(fs.read(log, fh, 3, 5).await.unwrap(), data[3..8]);
    assert_eq!(
        fs.read(log, fh, data.len() as u64, 10).await.unwrap().len(),
        0
    );
    assert_eq!(env.remote.fetches_of("a1"), 1, "one fetch, then memory");
    // The other file is opened but never read.
    let fh2 = fs.open(junit, libc::O_RDONLY).unwrap();
    assert_ne!(fh, fh2);

    // Both artifacts disappear from the live build.
    env.lister
        .set_listing(7, listing(&running, vec![artifact("a3", "j1", "zzz.txt")]));
    wait_until("the refresh", || gone(&fs, bd, "log.txt")).await;
    assert!(gone(&fs, ROOT_INO, "test"));
    assert_eq!(fs.getattr(log), Err(FsError::NotFound));
    assert_eq!(fs.open(log, libc::O_RDONLY), Err(FsError::NotFound));

    // The open handle still reads what is cached, without a request.
    assert_eq!(fs.read(log, fh, 0, 4096).await.unwrap(), data);
    assert_eq!(fs.read(log, fh, 5, 3).await.unwrap(), data[5..8]);
    assert_eq!(env.remote.fetches_of("a1"), 1);
    // Bytes never fetched cannot be fetched any more.
    assert_eq!(fs.read(junit, fh2, 0, 4096).await, Err(FsError::NotFound));
    assert_eq!(env.remote.fetches_of("a2"), 0);
    assert_eq!(env.remote.url_calls_of("a2"), 0);
    // Once released, the old inode is just gone.
    fs.release(fh);
    assert_eq!(fs.read(log, fh, 0, 4096).await, Err(FsError::NotFound));
    fs.release(fh2);
    assert_eq!(env.remote.fetches_of("a3"), 0);
}

#[tokio::test]
async fn read_without_open_and_with_a_handle_of_another_file() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let fs = env.single(
        7,
        &listing(
            &b,
            vec![artifact("a1", "j1", "a.txt"), artifact("a2", "j1", "b.txt")],
        ),
        cfg(FAR, false),
    );
    let bd = ino(&fs, ROOT_INO, "build");
    let (a, b2) = (ino(&fs, bd, "a.txt"), ino(&fs, bd, "b.txt"));
    assert_eq!(fs.read(a, 12345, 0, 100).await.unwrap(), content("a1"));
    let fh = fs.open(a, libc::O_RDONLY).unwrap();
    // A handle of another inode is ignored: the inode's current file is read.
    assert_eq!(fs.read(b2, fh, 0, 100).await.unwrap(), content("a2"));
    assert_eq!(fs.read(bd, fh, 0, 100).await, Err(FsError::IsDir));
    assert_eq!(fs.read(9999, fh, 0, 100).await, Err(FsError::NotFound));
}

#[tokio::test]
async fn opening_files_in_name_order_prefetches_the_next_sibling() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let fs = env.single(
        7,
        &listing(
            &b,
            vec![
                artifact("a1", "j1", "1.txt"),
                artifact("a2", "j1", "2.txt"),
                artifact("a3", "j1", "3.txt"),
                artifact("a4", "j1", "4.txt"),
            ],
        ),
        cfg(FAR, false),
    );
    let bd = ino(&fs, ROOT_INO, "build");
    fs.open(ino(&fs, bd, "1.txt"), libc::O_RDONLY).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        env.remote.fetches.lock().unwrap().len(),
        0,
        "first open: none"
    );
    fs.open(ino(&fs, bd, "2.txt"), libc::O_RDONLY).unwrap();
    wait_until("the prefetch", || env.remote.fetches_of("a3") == 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(env.remote.fetches_of("a4"), 0, "a window of one");
    assert_eq!(
        env.remote.fetches_of("a2"),
        0,
        "the opened file itself waits for read"
    );
}

#[tokio::test]
async fn unlink_deletes_through_the_remote() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let fs = env.single(
        7,
        &listing(
            &b,
            vec![
                artifact("a1", "j1", "log.txt"),
                artifact("a2", "j1", "out/app.bin"),
            ],
        ),
        cfg(FAR, true),
    );
    let bd = ino(&fs, ROOT_INO, "build");
    let log = ino(&fs, bd, "log.txt");
    let out = ino(&fs, bd, "out");
    let fh = fs.open(log, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(log, fh, 0, 4096).await.unwrap(), content("a1"));

    assert_eq!(fs.unlink(bd, name("out")).await, Err(FsError::IsDir));
    assert_eq!(fs.unlink(bd, name("nope")).await, Err(FsError::NotFound));
    fs.unlink(bd, name("log.txt")).await.unwrap();
    assert_eq!(*env.remote.deletes.lock().unwrap(), ["a1"]);
    assert!(gone(&fs, bd, "log.txt"));
    // Even cached bytes of a deleted artifact are not served.
    assert_eq!(fs.read(log, fh, 0, 4096).await, Err(FsError::NotFound));

    assert_eq!(fs.rmdir(bd, name("out")), Err(FsError::NotEmpty));
    fs.unlink(out, name("app.bin")).await.unwrap();
    fs.rmdir(bd, name("out")).unwrap();
    assert!(gone(&fs, bd, "out"));
    assert_eq!(fs.rmdir(bd, name("out")), Err(FsError::NotFound));
    assert_eq!(fs.statfs().files, 2);
    assert!(env.kernel.events().is_empty());
}

// ---------------------------------------------------------------------------------------
// 6. Pipeline root refresh

#[tokio::test]
async fn pipeline_root_refresh_adds_builds_and_moves_links() {
    let env = Env::new();
    let refresh = Duration::from_millis(300);
    let jobs = [job("j1", "Build")];
    env.lister.set_builds(vec![
        build(11, "running", &jobs),
        build(10, "passed", &jobs),
        build(9, "passed", &jobs),
    ]);
    let fs = env.pipeline(3, refresh).await;
    // The list is full and has no failed build: one more request for latest-failed.
    assert_eq!(env.lister.list_builds_count(), 2);
    let (b11, b10, b9) = (
        global(1, ROOT_INO),
        global(2, ROOT_INO),
        global(3, ROOT_INO),
    );
    let fh = fs.opendir(ROOT_INO).unwrap();
    let snap = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&snap),
        vec![
            e(".", ROOT_INO, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("latest", 2, Kind::Symlink),
            e("latest-passed", 3, Kind::Symlink),
            e("11", b11, Kind::Dir),
            e("10", b10, Kind::Dir),
            e("9", b9, Kind::Dir),
        ]
    );
    assert_eq!(fs.readlink_cached(2), Some(Ok("11".to_string())));
    assert_eq!(fs.readlink_cached(3), Some(Ok("10".to_string())));
    assert_eq!(
        fs.lookup_cached(ROOT_INO, name("latest-failed")),
        Some(Err(FsError::NotFound))
    );
    assert_eq!(xattr(&fs, b11, "build_state").as_deref(), Some("running"));

    // New build 12 (failed); 11 was canceled meanwhile. Nothing is asked before the
    // interval.
    env.lister.set_builds(vec![
        build(12, "failed", &jobs),
        build(11, "canceled", &jobs),
        build(10, "passed", &jobs),
        build(9, "passed", &jobs),
    ]);
    assert_eq!(fs.readlink_cached(2), Some(Ok("11".to_string())));
    assert_eq!(
        names(&fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap()),
        names(&snap)
    );
    // Build 12 is found by name before the root shows it.
    let a12 = fs.lookup(ROOT_INO, name("12")).await.unwrap();
    assert_eq!(a12.ino, global(4, ROOT_INO));
    assert_eq!(env.lister.get_build_calls(), [12]);
    assert_eq!(env.lister.list_builds_count(), 2);
    let snap = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert!(env.kernel.events().is_empty());

    tokio::time::sleep(refresh + Duration::from_millis(50)).await;
    // Stale now: links and the listing need the network, open handles keep their snapshot.
    assert_eq!(fs.readlink_cached(2), None);
    assert_eq!(fs.lookup_cached(ROOT_INO, name("latest-failed")), None);
    let fh2 = fs.opendir(ROOT_INO).unwrap();
    assert!(fs.listing_cached(ROOT_INO, fh2, 0).is_none());
    assert!(Arc::ptr_eq(
        &fs.listing_cached(ROOT_INO, fh, 2).unwrap().unwrap(),
        &snap
    ));
    // The link with no target is looked up again: that refreshes the root.
    let failed = fs.lookup(ROOT_INO, name("latest-failed")).await.unwrap();
    assert_eq!(
        (failed.ino, failed.kind, failed.size),
        (4, Kind::Symlink, 2)
    );
    assert_eq!(env.lister.list_builds_count(), 3);

    let l = fs.listing_cached(ROOT_INO, fh2, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", ROOT_INO, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("latest", 2, Kind::Symlink),
            e("latest-passed", 3, Kind::Symlink),
            e("latest-failed", 4, Kind::Symlink),
            e("12", a12.ino, Kind::Dir),
            e("11", b11, Kind::Dir),
            e("10", b10, Kind::Dir),
        ]
    );
    assert_eq!(fs.readlink_cached(2), Some(Ok("12".to_string())));
    assert_eq!(fs.readlink_cached(3), Some(Ok("10".to_string())));
    assert_eq!(fs.readlink_cached(4), Some(Ok("12".to_string())));
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 5);
    // The kernel forgets the root and the two links that moved (attributes and names), not
    // the one that stayed, and the unopened build whose state changed.
    assert_eq!(
        env.kernel.events(),
        [
            Inval::Inode(ROOT_INO),
            Inval::Inode(2),
            Inval::Entry(ROOT_INO, "latest".into()),
            Inval::Inode(4),
            Inval::Entry(ROOT_INO, "latest-failed".into()),
            Inval::Inode(b11),
        ]
    );
    // A listed build that was never opened takes its new state.
    assert_eq!(xattr(&fs, b11, "build_state").as_deref(), Some("canceled"));
    // Build 9 fell out of the listing: same inode by name.
    assert_eq!(attr(&fs, ROOT_INO, "9").ino, b9);
    assert_eq!(env.lister.list_builds_count(), 3);
    assert_eq!(env.lister.list_build_total(), 0);
}

#[tokio::test]
async fn pipeline_root_refresh_without_change_tells_the_kernel_nothing() {
    let env = Env::new();
    let refresh = Duration::from_millis(200);
    let jobs = [job("j1", "Build")];
    env.lister
        .set_builds(vec![build(11, "failed", &jobs), build(10, "passed", &jobs)]);
    let fs = env.pipeline(2, refresh).await;
    let calls = env.lister.list_builds_count();
    tokio::time::sleep(refresh + Duration::from_millis(50)).await;
    assert_eq!(fs.readlink(2).await.unwrap(), "11");
    assert_eq!(env.lister.list_builds_count(), calls + 1);
    assert!(env.kernel.events().is_empty(), "{:?}", env.kernel.events());
    // Fresh again: readlink from memory.
    assert_eq!(fs.readlink_cached(3), Some(Ok("10".to_string())));
    fs.listing(ROOT_INO, 1, 0).await.unwrap();
    assert_eq!(env.lister.list_builds_count(), calls + 1);
}

// ---------------------------------------------------------------------------------------
// 7. Idle builds, bounded maps, settled builds (issue 11)

/// Builds 11 (failed) and 5 (passed, outside the root listing) of [`pipeline_env`], with
/// room for one listed build.
async fn one_resident() -> (Env, Arc<Fs>) {
    let env = pipeline_env();
    let fs = env.pipeline(3, FAR).await;
    fs.set_resident_builds(1);
    fs.set_evict_after(Duration::ZERO);
    (env, fs)
}

#[tokio::test]
async fn builds_used_within_the_delay_stay() {
    let (_env, fs) = one_resident().await;
    fs.set_evict_after(FAR);
    fs.lookup(global(2, ROOT_INO), name("build")).await.unwrap();
    let b5 = fs.lookup(ROOT_INO, name("5")).await.unwrap().ino;
    fs.lookup(b5, name("build")).await.unwrap();
    assert_eq!(fs.resident_builds(), 2, "11 was used a moment ago");
}

#[tokio::test]
async fn idle_build_is_evicted_and_reloads_with_the_same_inodes() {
    let (env, fs) = one_resident().await;
    let b11 = global(2, ROOT_INO);
    let d11 = fs.lookup(b11, name("build")).await.unwrap();
    let f11 = fs.lookup(d11.ino, name("log.txt")).await.unwrap();
    let fh = fs.opendir(d11.ino).unwrap();
    let before = fs.listing(d11.ino, fh, 0).await.unwrap();
    fs.releasedir(fh);
    assert_eq!(fs.resident_builds(), 1);

    // Build 5 (by number) is listed: 11 leaves memory, and the kernel forgets its name.
    let b5 = fs.lookup(ROOT_INO, name("5")).await.unwrap().ino;
    fs.lookup(b5, name("build")).await.unwrap();
    assert_eq!(fs.resident_builds(), 1);
    assert!(env.kernel.entries().contains(&(ROOT_INO, "11".to_string())));
    assert_eq!(
        fs.lookup_cached(b11, name("build")),
        None,
        "needs a listing"
    );
    // What needs no tree still answers from memory.
    assert_eq!(xattr(&fs, b11, "build_number").as_deref(), Some("11"));
    assert_eq!(fs.getattr(b11).unwrap().kind, Kind::Dir);

    // Back to 11: listed again, same numbers, same listing, same bytes.
    let again = fs.lookup(b11, name("build")).await.unwrap();
    assert_eq!(again.ino, d11.ino);
    assert_eq!(fs.lookup(d11.ino, name("log.txt")).await.unwrap(), f11);
    let fh = fs.opendir(d11.ino).unwrap();
    assert_eq!(*fs.listing(d11.ino, fh, 0).await.unwrap(), *before);
    let fh = fs.open(f11.ino, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(f11.ino, fh, 0, 4096).await.unwrap(), content("a11"));
    assert_eq!(env.lister.list_build_count(11), 2);
    assert_eq!(fs.resident_builds(), 1, "5 left in turn");
}

#[tokio::test]
async fn builds_with_open_files_or_still_running_stay() {
    let (env, fs) = one_resident().await;
    let (b12, b11) = (global(1, ROOT_INO), global(2, ROOT_INO));
    let d11 = fs.lookup(b11, name("build")).await.unwrap();
    let f11 = fs.lookup(d11.ino, name("log.txt")).await.unwrap();
    let fh = fs.open(f11.ino, libc::O_RDONLY).unwrap();
    // 12 is running: listed, watched, never evicted; 11 has an open file.
    fs.lookup(b12, name("build")).await.unwrap();
    let b5 = fs.lookup(ROOT_INO, name("5")).await.unwrap().ino;
    fs.lookup(b5, name("build")).await.unwrap();
    assert_eq!(fs.resident_builds(), 3, "nothing could go");
    assert_eq!(fs.read(f11.ino, fh, 0, 4096).await.unwrap(), content("a11"));
    fs.release(fh);
    // The next listing (build 10) lets the idle finished ones go: 11 and 5.
    let b10 = build(10, "passed", &[job("j1", "Build")]);
    env.lister
        .set_listing(10, listing(&b10, vec![artifact("a10", "j1", "log.txt")]));
    fs.lookup(global(3, ROOT_INO), name("build")).await.unwrap();
    assert_eq!(
        fs.resident_builds(),
        2,
        "the running build and the last one"
    );
    assert_eq!(fs.lookup_cached(b11, name("build")), None);
    assert_eq!(fs.lookup_cached(b5, name("build")), None);
    assert!(fs.lookup_cached(b12, name("build")).is_some(), "12 stays");
    assert_eq!(env.lister.list_build_count(12), 1);
}

#[tokio::test]
async fn build_changed_while_evicted_gets_numbers_never_used() {
    let (env, fs) = one_resident().await;
    let b11 = global(2, ROOT_INO);
    let d11 = fs.lookup(b11, name("build")).await.unwrap();
    let f11 = fs.lookup(d11.ino, name("log.txt")).await.unwrap();
    let b5 = fs.lookup(ROOT_INO, name("5")).await.unwrap().ino;
    fs.lookup(b5, name("build")).await.unwrap();
    // Meanwhile an artifact was added to 11 (before log.txt in name order).
    let b = build(11, "failed", &[job("j1", "Build")]);
    env.lister.set_listing(
        11,
        listing(
            &b,
            vec![
                artifact("a0", "j1", "a.txt"),
                artifact("a11", "j1", "log.txt"),
            ],
        ),
    );
    env.remote.put("a0", content("a0"));
    let d = fs.lookup(b11, name("build")).await.unwrap();
    let f = fs.lookup(d.ino, name("log.txt")).await.unwrap();
    assert!(
        d.ino > f11.ino && f.ino > f11.ino,
        "numbered above the old ones"
    );
    assert_eq!(
        fs.getattr(f11.ino),
        Err(FsError::NotFound),
        "old number means nothing"
    );
    let fh = fs.open(f.ino, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(f.ino, fh, 0, 4096).await.unwrap(), content("a11"));
    let a = fs.lookup(d.ino, name("a.txt")).await.unwrap();
    assert_eq!(a.size, content("a0").len() as u64);
}

#[tokio::test]
async fn deleted_set_holds_open_artifacts_only() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let fs = env.single(
        7,
        &listing(
            &b,
            vec![
                artifact("a1", "j1", "log.txt"),
                artifact("a2", "j1", "two.txt"),
            ],
        ),
        cfg(FAR, true),
    );
    let bd = ino(&fs, ROOT_INO, "build");
    let log = ino(&fs, bd, "log.txt");
    let fh = fs.open(log, libc::O_RDONLY).unwrap();
    let fh2 = fs.open(log, libc::O_RDONLY).unwrap();
    fs.unlink(bd, name("log.txt")).await.unwrap();
    fs.unlink(bd, name("two.txt")).await.unwrap();
    assert_eq!(fs.deleted_open(), 1, "two.txt was not open");
    assert_eq!(fs.read(log, fh, 0, 4096).await, Err(FsError::NotFound));
    fs.release(fh);
    assert_eq!(fs.deleted_open(), 1, "still open once");
    assert_eq!(fs.read(log, fh2, 0, 4096).await, Err(FsError::NotFound));
    fs.release(fh2);
    assert_eq!(fs.deleted_open(), 0);
}

#[tokio::test]
async fn prefetch_windows_are_bounded() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let arts: Vec<Artifact> = (0..super::DIR_SEQ_MAX + 50)
        .map(|i| artifact(&format!("a{i}"), "j1", &format!("d{i}/f.txt")))
        .collect();
    let fs = env.single(7, &listing(&b, arts), cfg(FAR, false));
    let bd = ino(&fs, ROOT_INO, "build");
    for i in 0..super::DIR_SEQ_MAX + 50 {
        let d = ino(&fs, bd, &format!("d{i}"));
        let f = ino(&fs, d, "f.txt");
        let fh = fs.open(f, libc::O_RDONLY).unwrap();
        fs.release(fh);
    }
    assert_eq!(fs.dir_windows(), super::DIR_SEQ_MAX);
}

#[tokio::test]
async fn finished_builds_are_settled_running_ones_are_not() {
    let env = pipeline_env();
    let fs = env.pipeline(3, Duration::from_millis(50)).await;
    let (b12, b11) = (global(1, ROOT_INO), global(2, ROOT_INO));
    let d12 = fs.lookup(b12, name("build")).await.unwrap();
    let d11 = fs.lookup(b11, name("build")).await.unwrap();
    assert!(!fs.settled(ROOT_INO), "the root's builds list changes");
    assert!(!fs.settled(2), "the links move");
    assert!(!fs.settled(d12.ino), "12 is running");
    assert!(fs.settled(d11.ino));
    // A running build still shows what appears (and is settled once it finishes).
    let b = build(12, "passed", &[job("j1", "Build")]);
    env.lister.set_listing(
        12,
        listing(
            &b,
            vec![
                artifact("a12", "j1", "log.txt"),
                artifact("n", "j1", "new.txt"),
            ],
        ),
    );
    env.remote.put("n", content("n"));
    wait_until("12 shows new.txt", || {
        fs.lookup_cached(d12.ino, name("new.txt"))
            .is_some_and(|r| r.is_ok())
    })
    .await;
    wait_until("12 is settled", || fs.settled(d12.ino)).await;
}
