//! Unit tests of the filesystem core over the in-memory doubles of `crate::backend::testing`:
//! a [`MockLister`] holding per-build listings and a builds list (counting its calls), a
//! [`Recorder`] of kernel invalidations, and a [`MockRemote`] serving artifact bytes by id.
//!
//! Tests that wait on the core's own timers (live refresh) run on tokio's paused clock
//! (`start_paused`); the rest run on short real intervals and every wait is bounded
//! ([`wait_until`]).
//!
//! The fixtures are here; the tests, by concern, in the submodules.

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

mod archives;
mod dirs;
mod live;
mod pipeline;
mod pipeline_refresh;
mod reading;
mod single;
mod slots;

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
        self.pipeline_with_logs(limit, refresh, None).await
    }

    /// [`Env::pipeline`] with a job-log store.
    async fn pipeline_with_logs(
        &self,
        limit: usize,
        refresh: Duration,
        logs: Option<Arc<crate::joblog::LogStore>>,
    ) -> Arc<Fs> {
        let (builds, links) = list_pipeline(&*self.lister, limit, None).await.unwrap();
        let fs = Fs::pipeline(
            builds,
            links,
            limit,
            None,
            self.lister.clone(),
            self.reader.clone(),
            logs,
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
