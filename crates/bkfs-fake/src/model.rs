//! The fake's own wire types for the REST API's JSON bodies, written from the documentation
//! (`buildkite-artifacts-api.txt`, `API-NOTES.md`), not shared with the client: the fake is an
//! independent implementation of the contract bkfs is tested against.

use serde::{Deserialize, Serialize};

/// `GET /v2/access-token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AccessToken {
    pub uuid: Option<String>,
    pub scopes: Vec<String>,
}

/// One artifact, as the artifacts endpoints list it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    pub id: String,
    pub job_id: Option<String>,
    pub url: Option<String>,
    pub download_url: Option<String>,
    /// new, error, finished, deleted, expired.
    pub state: Option<String>,
    pub path: Option<String>,
    pub dirname: Option<String>,
    pub filename: Option<String>,
    pub mime_type: Option<String>,
    pub file_size: Option<u64>,
    pub sha1sum: Option<String>,
    pub glob_path: Option<String>,
    pub original_path: Option<String>,
}

impl Artifact {
    pub fn is_finished(&self) -> bool {
        self.state.as_deref() == Some("finished")
    }
}

/// A job of a build; command jobs have `type: "script"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub step_key: Option<String>,
    pub state: Option<String>,
    pub parallel_group_index: Option<u32>,
    pub parallel_group_total: Option<u32>,
    pub retried: Option<bool>,
    pub retried_in_job_id: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub web_url: Option<String>,
    pub artifacts_url: Option<String>,
}

/// `GET /v2/organizations/{org}/pipelines/{pipeline}/builds/{number}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Build {
    pub id: String,
    pub number: u64,
    pub state: Option<String>,
    pub web_url: Option<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub message: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub jobs: Vec<Job>,
}

/// `{"url": "..."}`: the body of the download endpoint's 302.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DownloadUrl {
    pub url: String,
}

/// `{"message": "..."}`: the body of every API error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub message: Option<String>,
}

/// The job states after which a job no longer changes (the API's documented list).
pub const FINAL_JOB_STATES: [&str; 10] = [
    "passed",
    "failed",
    "canceled",
    "skipped",
    "broken",
    "timed_out",
    "expired",
    "finished",
    "soft_failed",
    "not_run",
];

pub fn is_final_job_state(state: &str) -> bool {
    FINAL_JOB_STATES.contains(&state)
}

/// An artifact path split the way the API reports `dirname` and `filename` (Ruby's
/// `File.dirname`/`File.basename`): `a/b/c.txt` → (`a/b`, `c.txt`); a top-level file's
/// dirname is `.`.
pub fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((dir, file)) => {
            let dir = dir.trim_end_matches('/');
            let dir = if dir.is_empty() { "/" } else { dir };
            (dir.to_string(), file.to_string())
        }
        None => (".".to_string(), trimmed.to_string()),
    }
}
