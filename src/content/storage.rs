//! Ranged GETs against the storage host (S3 or the fake) through signed URLs.
//!
//! This client carries no credentials at all: the signed URL is its own credential, and the
//! Buildkite token must never reach the storage host. Responses are checked strictly: a
//! `Content-Range` or length that disagrees with the request is an error, never data.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::{header, StatusCode};

use crate::http::{error_chain, reqwest_detail};

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StorageError {
    /// 403 from storage: the signed URL expired or was refused; get a fresh one.
    #[error("the signed URL was refused (403{})", if .0.is_empty() { String::new() } else { format!(": {}", .0) })]
    Expired(String),
    #[error("the object is gone from storage (404)")]
    NotFound,
    /// Worth retrying: 5xx, connection errors, timeouts.
    #[error("{0}")]
    Transient(String),
    /// The body stopped early (reset, truncation, stall): `got` is what arrived, in order,
    /// from the requested start; the caller resumes after it.
    #[error("{reason}")]
    Partial { got: Bytes, reason: String },
    /// The server answered something inconsistent with the request.
    #[error("invalid storage response: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug)]
pub struct StorageClient {
    http: reqwest::Client,
}

impl StorageClient {
    pub fn new(read_timeout: Duration) -> Result<StorageClient, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(read_timeout)
            .pool_max_idle_per_host(64)
            .user_agent(concat!("bkfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(StorageClient { http })
    }

    /// Fetches bytes `[start, end)` of an object of `total` bytes.
    pub async fn fetch_range(
        &self,
        url: &str,
        start: u64,
        end: u64,
        total: u64,
    ) -> Result<Bytes, StorageError> {
        assert!(
            start < end && end <= total,
            "bad range {start}..{end} of {total}"
        );
        let want = (end - start) as usize;
        let range = format!("bytes={}-{}", start, end - 1);
        let r = if crate::content::raw_path::has_dot_segments(url) {
            // reqwest would drop the dot segments and ask for another object.
            let ua = concat!("bkfs/", env!("CARGO_PKG_VERSION")).to_string();
            crate::content::raw_path::get(url, &[("range", range), ("user-agent", ua)])
                .await
                .map_err(StorageError::Transient)?
        } else {
            self.http
                .get(url)
                .header(header::RANGE, range)
                .send()
                .await
                .map_err(|e| StorageError::Transient(reqwest_detail(e)))?
        };
        let status = r.status();
        let skip = match status {
            StatusCode::PARTIAL_CONTENT => {
                let cr = r
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| StorageError::Invalid("206 without Content-Range".into()))?;
                let (a, b, t) = crate::http::parse_content_range(cr).ok_or_else(|| {
                    StorageError::Invalid(format!("unparsable Content-Range {cr:?}"))
                })?;
                if a != start || b + 1 != end || t.is_some_and(|t| t != total) {
                    return Err(StorageError::Invalid(format!(
                        "asked for bytes {start}-{} of {total}, got Content-Range {cr:?}",
                        end - 1
                    )));
                }
                0
            }
            // A server that ignores Range sends the whole object: skip to what we want.
            StatusCode::OK => {
                if let Some(len) = r.content_length() {
                    if len != total {
                        return Err(StorageError::Invalid(format!(
                            "object is {len} bytes, the artifact list says {total}"
                        )));
                    }
                }
                start
            }
            StatusCode::FORBIDDEN => {
                let body = r.text().await.unwrap_or_default();
                return Err(StorageError::Expired(s3_message(&body)));
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(StorageError::NotFound),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Err(StorageError::Transient(format!("storage answered {s}")))
            }
            s => return Err(StorageError::Invalid(format!("storage answered {s}"))),
        };
        if status == StatusCode::PARTIAL_CONTENT {
            if let Some(len) = r.content_length() {
                if len != want as u64 {
                    return Err(StorageError::Invalid(format!(
                        "Content-Length {len} for a {want}-byte range"
                    )));
                }
            }
        }
        let mut out = BytesMut::with_capacity(want);
        let mut skipped = 0u64;
        let mut body = r.bytes_stream();
        while out.len() < want {
            let chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    return Err(StorageError::Partial {
                        got: out.freeze(),
                        reason: reqwest_detail(e),
                    })
                }
                None => break,
            };
            let mut c = &chunk[..];
            if skipped < skip {
                let n = ((skip - skipped) as usize).min(c.len());
                skipped += n as u64;
                c = &c[n..];
            }
            let n = c.len().min(want - out.len());
            out.extend_from_slice(&c[..n]);
        }
        if out.len() != want {
            let n = out.len();
            return Err(StorageError::Partial {
                got: out.freeze(),
                reason: format!("truncated body: got {n} of {want} bytes"),
            });
        }
        if status == StatusCode::PARTIAL_CONTENT {
            // Anything beyond the range is a protocol error, not data we may use.
            if let Some(Ok(extra)) = body.next().await {
                if !extra.is_empty() {
                    return Err(StorageError::Invalid("body longer than the range".into()));
                }
            }
        }
        Ok(out.freeze())
    }
}

/// The `<Message>` of an S3 XML error body, if any (short, safe to log).
fn s3_message(body: &str) -> String {
    body.split_once("<Message>")
        .and_then(|(_, r)| r.split_once("</Message>"))
        .map(|(m, _)| m.chars().take(120).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_messages() {
        assert_eq!(
            s3_message(
                "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            ),
            "Request has expired"
        );
        assert_eq!(s3_message("nope"), "");
    }
}
