//! Serde types for the parts of the Buildkite REST API that bkfs uses.
//!
//! Every field except the identifiers is optional and tolerant of `null`, and unknown fields
//! are ignored: the API grows fields over time and older artifacts have nulls in places. The
//! same types are serialized by the project's fake server, so they follow the documented
//! field names exactly.

use serde::{Deserialize, Deserializer, Serialize};

/// `null` or a missing list both read as an empty list.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// `GET /v2/access-token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AccessToken {
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub scopes: Vec<String>,
}

/// One artifact, as listed by the artifacts endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Artifact {
    pub id: String,
    #[serde(default)]
    pub job_id: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub download_url: Option<String>,
    /// new, error, finished, deleted, expired (others may appear).
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub dirname: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub sha1sum: Option<String>,
    #[serde(default)]
    pub glob_path: Option<String>,
    #[serde(default)]
    pub original_path: Option<String>,
}

impl Artifact {
    pub fn is_finished(&self) -> bool {
        self.state.as_deref() == Some("finished")
    }
}

/// A job of a build (only the fields bkfs reads; command jobs have `type: "script"`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub step_key: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub parallel_group_index: Option<u32>,
    #[serde(default)]
    pub parallel_group_total: Option<u32>,
    #[serde(default)]
    pub retried: Option<bool>,
    #[serde(default)]
    pub retried_in_job_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
    #[serde(default)]
    pub artifacts_url: Option<String>,
}

/// `GET /v2/organizations/{org}/pipelines/{pipeline}/builds/{number}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Build {
    pub id: String,
    pub number: u64,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub web_url: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
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
    #[serde(default)]
    pub message: Option<String>,
}

/// An artifact path split like the API reports `dirname` and `filename` (Ruby's
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_tolerates_nulls_and_unknown_fields() {
        let a: Artifact = serde_json::from_str(
            r#"{"id":"a","job_id":null,"state":"finished","path":null,"file_size":null,
                "sha1sum":null,"brand_new_field":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(a.id, "a");
        assert!(a.is_finished());
        assert_eq!(a.file_size, None);
    }

    #[test]
    fn build_with_null_jobs() {
        let b: Build = serde_json::from_str(r#"{"id":"b","number":3,"jobs":null}"#).unwrap();
        assert!(b.jobs.is_empty());
    }
}
