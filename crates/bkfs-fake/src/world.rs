//! The fake's data model: builds, their jobs and artifacts, with deterministic ids.
//!
//! Ids look like UUIDs but are derived from the build's slug and a per-build counter, so the
//! same calls give the same tree on every run. The first 8 hex digits are a bijection of the
//! counter mixed with the build, so within one build no two generated ids share them.

use bytes::Bytes;
use sha1::{Digest, Sha1};

use crate::model::{Artifact, Build, Job};

/// A job as the fake stores it: the wire type itself.
pub type FakeJob = Job;

/// Fixed timestamps given to builds and jobs made by the builder.
pub const CREATED_AT: &str = "2026-01-02T03:04:05.000Z";
pub const STARTED_AT: &str = "2026-01-02T03:04:10.000Z";
pub const FINISHED_AT: &str = "2026-01-02T03:14:05.000Z";

/// Build states after which a build no longer changes (REST spelling): the final values of
/// `BuildStates` in the published schema (`schema/buildkite.graphql`), lowercased. bkfs's
/// `FINAL_BUILD_STATES` holds these and two tolerated spellings (`tests/it/hygiene.rs`).
pub const FINAL_BUILD_STATES: [&str; 5] = ["passed", "failed", "canceled", "skipped", "not_run"];

/// One build of one pipeline, with everything its artifacts hold.
#[derive(Debug, Clone)]
pub struct FakeBuild {
    pub org: String,
    pub pipeline: String,
    /// Served as is by the build endpoint (jobs included).
    pub build: Build,
    /// In upload order, which is also list order.
    pub artifacts: Vec<FakeArtifact>,
    /// Raw job logs by job id (a job without an entry has no log: 404).
    pub logs: std::collections::HashMap<String, Bytes>,
}

/// An artifact record and its stored content.
#[derive(Debug, Clone)]
pub struct FakeArtifact {
    /// `url` and `download_url` are filled in by the server when it answers.
    pub artifact: Artifact,
    pub content: Bytes,
}

impl FakeBuild {
    /// A build with sensible defaults: deterministic id, state "passed", fixed timestamps,
    /// the usual web URL, no jobs and no artifacts.
    pub fn new(org: &str, pipeline: &str, number: u64) -> FakeBuild {
        let mut b = FakeBuild {
            org: org.to_string(),
            pipeline: pipeline.to_string(),
            build: Build {
                number,
                ..Build::default()
            },
            artifacts: Vec::new(),
            logs: Default::default(),
        };
        b.build = Build {
            id: b.make_id(0),
            number,
            state: Some("passed".into()),
            web_url: Some(format!(
                "https://buildkite.com/{org}/{pipeline}/builds/{number}"
            )),
            created_at: Some(CREATED_AT.into()),
            started_at: Some(STARTED_AT.into()),
            finished_at: Some(FINISHED_AT.into()),
            message: Some(format!("Build {number} of {pipeline}")),
            branch: Some("main".into()),
            commit: Some(sha1_hex(format!("{org}/{pipeline}/{number}").as_bytes())),
            jobs: Vec::new(),
        };
        b
    }

    /// Like [`FakeBuild::new`], but the build is still running: state "running",
    /// `finished_at` null; jobs added while it is not finished are running too.
    pub fn running(org: &str, pipeline: &str, number: u64) -> FakeBuild {
        let mut b = FakeBuild::new(org, pipeline, number);
        b.build.state = Some("running".into());
        b.build.finished_at = None;
        b
    }

    /// Whether the build is in a final state ([`FINAL_BUILD_STATES`]).
    pub fn is_finished(&self) -> bool {
        self.build
            .state
            .as_deref()
            .is_some_and(|s| FINAL_BUILD_STATES.contains(&s))
    }

    /// Sets the state (REST spelling); `finished_at` becomes now (RFC 3339) for a final state
    /// and null otherwise. Jobs are left as they are.
    pub fn set_state(&mut self, state: &str) {
        self.build.state = Some(state.to_string());
        self.build.finished_at = FINAL_BUILD_STATES.contains(&state).then(now_rfc3339);
    }

    /// Sets the branch.
    pub fn set_branch(&mut self, branch: &str) {
        self.build.branch = Some(branch.to_string());
    }

    /// Sets a job's state (REST spelling); `finished_at` becomes now for a final job state
    /// (passed, failed, canceled, ...) and null otherwise. False if there is no such job.
    pub fn set_job_state(&mut self, job_id: &str, state: &str) -> bool {
        let Some(j) = self.build.jobs.iter_mut().find(|j| j.id == job_id) else {
            return false;
        };
        j.state = Some(state.to_string());
        j.finished_at = crate::model::is_final_job_state(state).then(now_rfc3339);
        true
    }

    /// Adds a command job (type "script") with the given label; returns its id. It is
    /// finished ("passed") in a finished build, "running" (no `finished_at`) otherwise.
    pub fn add_job(&mut self, label: &str) -> String {
        self.add_job_of_type("script", label)
    }

    /// Adds a job of a REST `type` ("script", "waiter", "trigger", "manual"), finished or
    /// running like [`FakeBuild::add_job`]; returns its id.
    pub fn add_job_of_type(&mut self, kind: &str, label: &str) -> String {
        let id = self.next_id();
        let done = self.is_finished();
        let job = Job {
            id: id.clone(),
            kind: Some(kind.into()),
            name: Some(label.to_string()),
            step_key: None,
            state: Some(if done { "passed" } else { "running" }.into()),
            parallel_group_index: None,
            parallel_group_total: None,
            retried: Some(false),
            retried_in_job_id: None,
            created_at: Some(CREATED_AT.into()),
            started_at: Some(STARTED_AT.into()),
            finished_at: done.then(|| FINISHED_AT.into()),
            web_url: Some(self.job_web_url(&id)),
            artifacts_url: None,
        };
        self.build.jobs.push(job);
        id
    }

    /// Pushes a job exactly as given.
    pub fn push_job(&mut self, job: Job) {
        self.build.jobs.push(job);
    }

    /// Adds a finished artifact to a job: sha1sum, file_size, mime_type, dirname and filename
    /// are computed. Returns the artifact id.
    pub fn add_artifact(&mut self, job_id: &str, path: &str, content: impl Into<Bytes>) -> String {
        self.add_artifact_with(job_id, path, content, |_| {})
    }

    /// Like [`FakeBuild::add_artifact`], then `edit` may change the record before it is stored
    /// (state, a wrong sha1sum, ...). The content stays what was given. An artifact still
    /// uploading: `add_artifact_with(job, path, content, |a| a.state = Some("new".into()))`.
    pub fn add_artifact_with(
        &mut self,
        job_id: &str,
        path: &str,
        content: impl Into<Bytes>,
        edit: impl FnOnce(&mut Artifact),
    ) -> String {
        let content: Bytes = content.into();
        let (dirname, filename) = split_path(path);
        let mut artifact = Artifact {
            id: self.next_id(),
            job_id: Some(job_id.to_string()),
            url: None,
            download_url: None,
            state: Some("finished".into()),
            path: Some(path.to_string()),
            dirname: Some(dirname),
            filename: Some(filename),
            mime_type: Some(guess_mime(path).to_string()),
            file_size: Some(content.len() as u64),
            sha1sum: Some(sha1_hex(&content)),
            glob_path: None,
            original_path: None,
        };
        edit(&mut artifact);
        let id = artifact.id.clone();
        self.artifacts.push(FakeArtifact { artifact, content });
        id
    }

    /// `https://buildkite.com/{org}/{pipeline}/builds/{number}#{job_id}`.
    pub fn job_web_url(&self, job_id: &str) -> String {
        format!(
            "https://buildkite.com/{}/{}/builds/{}#{job_id}",
            self.org, self.pipeline, self.build.number
        )
    }

    /// A fresh id, unused so far in this build.
    pub fn next_id(&self) -> String {
        let mut n = (self.build.jobs.len() + self.artifacts.len() + 1) as u64;
        loop {
            let id = self.make_id(n);
            let used = self.build.jobs.iter().any(|j| j.id == id)
                || self.artifacts.iter().any(|a| a.artifact.id == id);
            if !used {
                return id;
            }
            n += 1;
        }
    }

    fn make_id(&self, n: u64) -> String {
        let slug = format!("{}/{}/{}", self.org, self.pipeline, self.build.number);
        let salt = sha1_bytes(slug.as_bytes());
        let salt32 = u32::from_be_bytes([salt[0], salt[1], salt[2], salt[3]]);
        // Odd multiplier: a bijection on u32, so distinct counters give distinct prefixes.
        let first = (n as u32).wrapping_mul(0x9E37_79B1) ^ salt32;
        let h = sha1_bytes(format!("{slug}#{n}").as_bytes());
        format!(
            "{first:08x}-{}-4{}-{:x}{}-{}",
            hex::encode(&h[0..2]),
            &hex::encode(&h[2..4])[1..],
            8 + (h[4] & 3),
            &hex::encode(&h[5..7])[1..],
            hex::encode(&h[7..13]),
        )
    }
}

/// Now as RFC 3339 UTC with milliseconds, like the API's timestamps
/// (`2026-01-02T03:04:05.000Z`).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_millis())
}

/// Unix seconds (and milliseconds) as RFC 3339 UTC.
pub fn rfc3339(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub use crate::model::split_path;

/// A mime type from the file extension; `application/octet-stream` when unknown.
pub fn guess_mime(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let ext = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_string(),
        _ => return "application/octet-stream",
    };
    match ext.as_str() {
        "log" | "txt" | "out" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "md" => "text/markdown",
        "js" => "application/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "yml" | "yaml" => "application/x-yaml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "gz" | "tgz" => "application/x-gzip",
        "tar" => "application/x-tar",
        "zip" => "application/zip",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

pub fn sha1_bytes(data: &[u8]) -> [u8; 20] {
    Sha1::digest(data).into()
}

pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(sha1_bytes(data))
}

/// A UUID-shaped id derived from `seed` (stable across runs).
pub fn uuid_from(seed: &str) -> String {
    let h = sha1_hex(seed.as_bytes());
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}
