//! Builds for the fake server together with what the mount must show for them: the expected
//! job dirs, sanitized paths, sizes, mtimes and contents are written down here by hand from
//! the README's naming rules, so a test compares the real mount against an independent oracle.

use std::collections::BTreeMap;

use bkfs_fake::model::Job;

use super::{epoch_ns, sha1_hex, FakeBuild, NodeInfo};

pub const ORG: &str = "acme";
pub const PIPELINE: &str = "web-app";
pub const NUMBER: u64 = 4242;
pub const BUILD: &str = "acme/web-app/4242";

/// The build's own `finished_at`: the mtime of jobs that have none.
pub const BUILD_FINISHED: &str = "2024-03-01T12:00:00.000Z";

/// One file the mount must show.
#[derive(Debug, Clone)]
pub struct ExpFile {
    pub content: Vec<u8>,
    pub artifact_id: String,
    pub job_id: String,
    /// The path as uploaded.
    pub original_path: String,
    pub mime_type: Option<String>,
    /// (seconds, nanoseconds)
    pub mtime: (i64, u32),
}

/// What the mount must show: files by relative path, and each job dir's mtime.
#[derive(Debug, Default, Clone)]
pub struct Expect {
    pub files: BTreeMap<String, ExpFile>,
    /// job dir name → (job id, mtime as (seconds, nanoseconds))
    pub job_dirs: BTreeMap<String, (String, (i64, u32))>,
}

impl Expect {
    /// The full expected tree (files and every directory), as [`super::walk`] reports it.
    pub fn tree(&self, uid: u32) -> BTreeMap<String, NodeInfo> {
        let mut out = BTreeMap::new();
        for (dir, (_, mtime)) in &self.job_dirs {
            out.insert(dir.clone(), dir_info(*mtime, uid));
        }
        for (rel, f) in &self.files {
            let parts: Vec<&str> = rel.split('/').collect();
            for i in 1..parts.len() {
                out.insert(parts[..i].join("/"), dir_info(f.mtime, uid));
            }
            out.insert(
                rel.clone(),
                NodeInfo {
                    kind: 'f',
                    size: f.content.len() as u64,
                    mode: 0o444,
                    mtime: f.mtime.0,
                    mtime_nsec: f.mtime.1,
                    uid,
                },
            );
        }
        out
    }

    /// Writes the expected files under `root` (a local copy to `diff -r` against).
    pub fn write_to(&self, root: &std::path::Path) {
        for (rel, f) in &self.files {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &f.content).unwrap();
        }
        for dir in self.job_dirs.keys() {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
    }
}

fn dir_info(mtime: (i64, u32), uid: u32) -> NodeInfo {
    NodeInfo {
        kind: 'd',
        size: 0,
        mode: 0o555,
        mtime: mtime.0,
        mtime_nsec: mtime.1,
        uid,
    }
}

/// Builds a [`FakeBuild`] and its [`Expect`] side by side.
pub struct Builder {
    pub fb: FakeBuild,
    pub exp: Expect,
    next_seed: u64,
}

impl Builder {
    pub fn new(org: &str, pipeline: &str, number: u64) -> Builder {
        let mut fb = FakeBuild::new(org, pipeline, number);
        fb.build.finished_at = Some(BUILD_FINISHED.into());
        Builder {
            fb,
            exp: Expect::default(),
            next_seed: 1,
        }
    }

    /// Adds a job; `dir` is the job dir name the mount must give it (if it gets artifacts).
    pub fn job(&mut self, job: Job, dir: &str) -> String {
        let mtime = epoch_ns(job.finished_at.as_deref().unwrap_or(BUILD_FINISHED));
        let id = job.id.clone();
        self.exp
            .job_dirs
            .insert(dir.to_string(), (id.clone(), mtime));
        self.fb.push_job(job);
        id
    }

    /// A script job with a label and a `finished_at`.
    pub fn simple_job(&mut self, id: &str, label: &str, finished: &str, dir: &str) -> String {
        self.job(
            Job {
                id: id.into(),
                kind: Some("script".into()),
                name: Some(label.into()),
                state: Some("passed".into()),
                finished_at: Some(finished.into()),
                web_url: Some(format!(
                    "https://buildkite.com/{}/{}/builds/{}#{id}",
                    self.fb.org, self.fb.pipeline, self.fb.build.number
                )),
                ..Default::default()
            },
            dir,
        )
    }

    /// Deterministic content, distinct for every call.
    pub fn content(&mut self, len: usize) -> Vec<u8> {
        self.next_seed += 1;
        super::det_bytes(len, self.next_seed)
    }

    /// Uploads an artifact (state finished) without saying yet where it must show.
    pub fn upload(&mut self, job_id: &str, path: &str, content: Vec<u8>) -> (String, Vec<u8>) {
        let id = self.fb.add_artifact(job_id, path, content.clone());
        (id, content)
    }

    /// Records that artifact `id` (uploaded at `path` by `job_id`) must show at `rel`.
    pub fn expect(&mut self, rel: &str, id: &str, job_id: &str, path: &str, content: Vec<u8>) {
        let dir = rel.split('/').next().unwrap();
        let (jid, mtime) = self
            .exp
            .job_dirs
            .get(dir)
            .unwrap_or_else(|| panic!("no job dir {dir} declared"))
            .clone();
        assert_eq!(jid, job_id, "{rel} expected in the dir of another job");
        let prev = self.exp.files.insert(
            rel.to_string(),
            ExpFile {
                content,
                artifact_id: id.to_string(),
                job_id: job_id.to_string(),
                original_path: path.to_string(),
                mime_type: None,
                mtime,
            },
        );
        assert!(prev.is_none(), "{rel} expected twice");
    }

    /// Uploads a finished artifact that must show at `<dir>/<shown>`.
    pub fn file(&mut self, job_id: &str, dir: &str, path: &str, shown: &str, len: usize) -> String {
        let content = self.content(len);
        let (id, content) = self.upload(job_id, path, content);
        self.expect(&format!("{dir}/{shown}"), &id, job_id, path, content);
        id
    }

    /// Uploads a finished artifact with the given content, shown at `<dir>/<path>`.
    pub fn text_file(&mut self, job_id: &str, dir: &str, path: &str, content: &[u8]) -> String {
        let (id, content) = self.upload(job_id, path, content.to_vec());
        self.expect(&format!("{dir}/{path}"), &id, job_id, path, content);
        id
    }

    /// Uploads an artifact in a state other than finished: it must not show.
    pub fn hidden(&mut self, job_id: &str, path: &str, state: &str) -> String {
        let content = self.content(100);
        let state = state.to_string();
        self.fb
            .add_artifact_with(job_id, path, content, move |a| a.state = Some(state))
    }

    pub fn finish(self) -> (FakeBuild, Expect) {
        (self.fb, self.exp)
    }
}

/// `name~<first 8 of artifact id>.ext`: the name a colliding file gets.
pub fn collided(name: &str, artifact_id: &str) -> String {
    let id8: String = artifact_id.chars().take(8).collect();
    match name.rfind('.') {
        Some(i) if i > 0 => format!("{}~{id8}{}", &name[..i], &name[i..]),
        _ => format!("{name}~{id8}"),
    }
}

/// A component over 255 bytes: cut, then `~` and 8 hex digits of the sha1 of the original.
pub fn shortened(component: &str) -> String {
    let hash = &sha1_hex(component.as_bytes())[..8];
    let mut cut = 255 - 9;
    while !component.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{hash}", &component[..cut])
}

/// Number of artifacts in the "bulk" job of [`rich_build`]: three pages at per_page=100.
pub const BULK: usize = 260;

/// The big build: pagination, parallel jobs, a retry chain, label edge cases, hostile paths,
/// collisions, unfinished artifacts, a file over the 4 MiB whole-file threshold, an empty file.
pub fn rich_build() -> (FakeBuild, Expect) {
    let mut b = Builder::new(ORG, PIPELINE, NUMBER);

    // Pagination: 260 artifacts in one job.
    let bulk = b.simple_job(
        "b0000001-0000-4000-8000-000000000001",
        ":package: Bulk Upload",
        "2024-03-01T10:00:00.000Z",
        "bulk-upload",
    );
    for i in 0..BULK {
        let p = format!("logs/part-{i:03}.log");
        b.file(&bulk, "bulk-upload", &p, &p, 50 + i);
    }

    // Parallel jobs: -1, -2, -3 from parallel_group_index 0..2.
    for i in 0..3u32 {
        let id = format!("r000000{i}-0000-4000-8000-000000000002");
        let dir = format!("rspec-{}", i + 1);
        let jid = b.job(
            Job {
                id: id.clone(),
                kind: Some("script".into()),
                name: Some(":rspec: RSpec".into()),
                step_key: Some("rspec".into()),
                state: Some("passed".into()),
                parallel_group_index: Some(i),
                parallel_group_total: Some(3),
                finished_at: Some(format!("2024-03-01T10:1{i}:00.000Z")),
                ..Default::default()
            },
            &dir,
        );
        b.file(&jid, &dir, "junit.xml", "junit.xml", 2000 + i as usize);
        b.file(
            &jid,
            &dir,
            "coverage/index.html",
            "coverage/index.html",
            700,
        );
    }

    // A retry chain of three attempts: the last keeps the plain name.
    let ids = [
        "d0000001-0000-4000-8000-000000000003",
        "d0000002-0000-4000-8000-000000000003",
        "d0000003-0000-4000-8000-000000000003",
    ];
    for (n, id) in ids.iter().enumerate() {
        let last = n == ids.len() - 1;
        let dir = if last {
            "deploy".to_string()
        } else {
            format!("deploy-attempt-{}", n + 1)
        };
        let jid = b.job(
            Job {
                id: id.to_string(),
                kind: Some("script".into()),
                name: Some("Deploy :rocket:".into()),
                state: Some(if last { "passed" } else { "failed" }.into()),
                retried: Some(!last),
                retried_in_job_id: (!last).then(|| ids[n + 1].to_string()),
                finished_at: Some(format!("2024-03-01T11:0{n}:00.87{n}Z")),
                ..Default::default()
            },
            &dir,
        );
        b.file(&jid, &dir, "deploy.log", "deploy.log", 300 + n);
    }
    // Over 4 MiB: read in 256 KiB blocks.
    let deploy = ids[2];
    b.file(
        deploy,
        "deploy",
        "dist/app.bin",
        "dist/app.bin",
        (5 << 20) + 123,
    );

    // Hostile paths, collisions and hidden artifacts.
    let h = b.simple_job(
        "h0000001-0000-4000-8000-000000000004",
        "Hostile / Paths!!",
        "2024-03-01T10:30:00.250Z",
        "hostile-paths",
    );
    let d = "hostile-paths";
    b.file(&h, d, "../../etc/passwd", "%2E%2E/%2E%2E/etc/passwd", 40);
    b.file(&h, d, "x/./y.txt", "x/y.txt", 41);
    b.file(&h, d, "p//q.txt", "p/q.txt", 42);
    b.file(&h, d, "/abs.txt", "abs.txt", 43);
    b.file(&h, d, "nul\0byte.txt", "nul%00byte.txt", 44);
    b.file(&h, d, "empty.txt", "empty.txt", 0);
    let long = format!("{}.txt", "L".repeat(296));
    assert_eq!(long.len(), 300);
    let short = shortened(&long);
    b.file(&h, d, &format!("long/{long}"), &format!("long/{short}"), 45);
    // A file and a directory of the same name: the directory keeps it.
    b.file(&h, d, "coll/inner.txt", "coll/inner.txt", 46);
    let c = b.content(47);
    let (cid, c) = b.upload(&h, "coll", c);
    b.expect(
        &format!("{d}/{}", collided("coll", &cid)),
        &cid,
        &h,
        "coll",
        c,
    );
    // The same path twice: the smaller artifact id keeps the plain name.
    let c1 = b.content(48);
    let (id1, c1) = b.upload(&h, "dup.txt", c1);
    let c2 = b.content(49);
    let (id2, c2) = b.upload(&h, "dup.txt", c2);
    let ((small, cs), (big, cb)) = if id1 < id2 {
        ((id1, c1), (id2, c2))
    } else {
        ((id2, c2), (id1, c1))
    };
    b.expect(&format!("{d}/dup.txt"), &small, &h, "dup.txt", cs);
    b.expect(
        &format!("{d}/{}", collided("dup.txt", &big)),
        &big,
        &h,
        "dup.txt",
        cb,
    );
    b.hidden(&h, "pending.txt", "new");
    b.hidden(&h, "broken.txt", "error");
    b.hidden(&h, "gone.txt", "deleted");

    // Label edge cases.
    let e = b.job(
        Job {
            id: "e0000001-0000-4000-8000-000000000005".into(),
            kind: Some("script".into()),
            name: Some("".into()),
            step_key: Some("compile".into()),
            finished_at: Some("2024-03-01T10:40:00.000Z".into()),
            ..Default::default()
        },
        "compile",
    );
    b.file(&e, "compile", "out/main.o", "out/main.o", 500);
    let f = b.job(
        Job {
            id: "f0000001-0000-4000-8000-000000000006".into(),
            kind: Some("script".into()),
            name: Some(":smile: :tada:".into()),
            finished_at: Some("2024-03-01T10:41:00.000Z".into()),
            ..Default::default()
        },
        "job-f0000001",
    );
    // "job" is also the name of the unnamed wait step below (names are computed over all
    // jobs, with or without artifacts), so both get the id suffix.
    b.file(&f, "job-f0000001", "hello.txt", "hello.txt", 12);
    for id in [
        "l0000001-0000-4000-8000-000000000007",
        "l0000002-0000-4000-8000-000000000007",
    ] {
        let dir = format!("lint-{}", &id[..8]);
        let j = b.simple_job(id, "Lint", "2024-03-01T10:42:00.000Z", &dir);
        b.file(&j, &dir, "lint.txt", "lint.txt", 90);
    }
    let u = b.simple_job(
        "u0000001-0000-4000-8000-000000000008",
        "Tests: Ünïcode ✓ Café",
        "2024-03-01T10:43:00.000Z",
        "tests-ünïcode-café",
    );
    b.file(&u, "tests-ünïcode-café", "résumé.txt", "résumé.txt", 33);
    // No finished_at on the job: the build's finished_at.
    let w = b.job(
        Job {
            id: "w0000001-0000-4000-8000-000000000009".into(),
            kind: Some("script".into()),
            name: Some("Upload".into()),
            ..Default::default()
        },
        "upload",
    );
    b.file(&w, "upload", "report.json", "report.json", 64);
    // Jobs that must not show: only unfinished artifacts, and a wait step.
    let n = b.simple_job(
        "n0000001-0000-4000-8000-00000000000a",
        "Nothing Finished",
        "2024-03-01T10:44:00.000Z",
        "nothing-finished",
    );
    b.hidden(&n, "partial.bin", "new");
    b.exp.job_dirs.remove("nothing-finished");
    b.fb.push_job(Job {
        id: "a0000001-0000-4000-8000-00000000000b".into(),
        kind: Some("waiter".into()),
        ..Default::default()
    });

    b.finish()
}

/// A small build: two jobs, a handful of files (for tests that do not need the big one).
pub fn small_build(number: u64) -> (FakeBuild, Expect) {
    let mut b = Builder::new(ORG, PIPELINE, number);
    let t = b.simple_job(
        "c0000001-0000-4000-8000-000000000101",
        ":hammer: Build",
        "2024-04-02T08:00:00.000Z",
        "build",
    );
    let mut log = String::new();
    for i in 0..200 {
        log.push_str(&format!("{i:04} INFO compiling unit {i}\n"));
        if i == 137 {
            log.push_str("0137 ERROR: boom in unit 137\n");
        }
    }
    b.text_file(&t, "build", "log/build.log", log.as_bytes());
    b.file(&t, "build", "dist/tool", "dist/tool", 70_000);
    b.file(&t, "build", "notes.txt", "notes.txt", 10);
    let s = b.simple_job(
        "c0000002-0000-4000-8000-000000000102",
        "Test Suite",
        "2024-04-02T08:05:00.000Z",
        "test-suite",
    );
    b.file(&s, "test-suite", "junit.xml", "junit.xml", 1500);
    b.file(&s, "test-suite", "logs/a.log", "logs/a.log", 200);
    b.file(&s, "test-suite", "logs/b.log", "logs/b.log", 201);
    b.finish()
}

/// A build of one job (dir `job`, id starting with `prefix`) with these artifacts.
pub fn one_job_build(prefix: char, number: u64, files: Vec<(&str, Vec<u8>)>) -> FakeBuild {
    let mut b = Builder::new(ORG, PIPELINE, number);
    let job = b.simple_job(
        &format!("{prefix}{number:07}-0000-4000-8000-000000000001"),
        "Job",
        "2024-06-01T00:00:00.000Z",
        "job",
    );
    for (path, content) in files {
        b.text_file(&job, "job", path, &content);
    }
    b.finish().0
}
