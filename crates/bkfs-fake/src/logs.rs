//! The fake's job-log endpoints, as API-NOTES describes them:
//!
//! - `GET .../builds/{n}/jobs/{job}/log` (scope `read_build_logs`): JSON `{url, content, size,
//!   header_times}`; with `Accept: text/plain`, or as `.../log.txt`, the raw bytes.
//! - `HEAD` of the same: `Content-Length` (the raw size) and `Accept-Ranges: bytes`, no body.
//! - `Range` only with text/plain and only as a suffix range `bytes=-N`: `206` with
//!   `Content-Range: bytes a-b/total` (a suffix longer than the log is the whole log); a
//!   start-end range, a multi-range or `bytes=-0` is `400`; any range of an empty log is
//!   `416`.
//! - `DELETE` (scope `write_build_logs`): `204`, and the log is gone (404 from then on).
//! - A job without a log (wait/block/trigger jobs, jobs that never ran, logs removed for
//!   retention with [`super::FakeServer::remove_log`]) is `404`.
//!
//! Counts: `log` (GET), `log_head`, `log_delete`, `log_range` (GETs with a Range header),
//! `log_bytes` (raw bytes sent in bodies). Faults: [`super::FakeServer::stall_logs`] and
//! [`super::FakeServer::reset_logs`] arm a fault for the next `n` text GETs with content.

use crate::Count;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use super::api::{authorize, find_build, find_build_mut, parse_query, ApiError};
use super::{LogFault, Shared, STALL_MAX};

type S = State<Arc<Shared>>;
type LogPath = Path<(String, String, String, String)>;

fn wants_text(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/plain")))
}

/// The stored log of a job (cloned out of the world lock).
fn the_log(
    s: &Shared,
    org: &str,
    pipeline: &str,
    number: &str,
    job: &str,
) -> Result<Bytes, ApiError> {
    let w = s.world();
    let b = find_build(&w, org, pipeline, number)?;
    b.logs.get(job).cloned().ok_or_else(ApiError::not_found)
}

/// A suffix range `bytes=-N` (N > 0); anything else is `Err`.
fn suffix_range(v: &str) -> Result<u64, ()> {
    let n = v.trim().strip_prefix("bytes=").ok_or(())?.trim();
    let n = n.strip_prefix('-').ok_or(())?;
    if n.contains(',') {
        return Err(());
    }
    match n.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(()),
    }
}

fn bad_request(msg: &str) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// `GET .../log`: JSON, or text with `Accept: text/plain`.
pub(super) async fn get_log(
    s: S,
    headers: HeaderMap,
    q: RawQuery,
    path: LogPath,
) -> Result<Response, ApiError> {
    let text = wants_text(&headers);
    serve_log(s, headers, q, path, text).await
}

/// `GET .../log.txt`: always text.
pub(super) async fn get_log_txt(
    s: S,
    headers: HeaderMap,
    q: RawQuery,
    path: LogPath,
) -> Result<Response, ApiError> {
    serve_log(s, headers, q, path, true).await
}

async fn serve_log(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline, number, job)): LogPath,
    text: bool,
) -> Result<Response, ApiError> {
    s.count(Count::Log);
    authorize(&s, &headers, &parse_query(&q), Some("read_build_logs"))?;
    let log = the_log(&s, &org, &pipeline, &number, &job)?;
    let range = headers.get(header::RANGE).map(|v| v.to_str().unwrap_or(""));
    if range.is_some() {
        s.count(Count::LogRange);
    }
    if !text {
        if range.is_some() {
            return Err(bad_request(
                "Range requests are only supported for text/plain logs",
            ));
        }
        let url = format!(
            "http://{}/v2/organizations/{org}/pipelines/{pipeline}/builds/{number}/jobs/{job}/log",
            s.api_addr
        );
        s.add_log_bytes(log.len() as u64);
        return Ok(Json(serde_json::json!({
            "url": url,
            "content": String::from_utf8_lossy(&log),
            "size": log.len(),
            "header_times": [],
        }))
        .into_response());
    }
    let total = log.len() as u64;
    let (status, start) = match range {
        None => (StatusCode::OK, 0),
        Some(r) => {
            let n = suffix_range(r).map_err(|_| {
                bad_request("Only suffix byte ranges (bytes=-N) are supported for logs")
            })?;
            if total == 0 {
                return Ok((
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, "bytes */0".to_string())],
                )
                    .into_response());
            }
            (StatusCode::PARTIAL_CONTENT, total - n.min(total))
        }
    };
    let part = log.slice(start as usize..);
    let len = part.len();
    s.add_log_bytes(len as u64);
    let body = match (len, s.take_log_fault()) {
        (0, _) | (_, None) => Body::from(part),
        (_, Some(fault)) => faulty_body(&s, part, fault),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = format!("bytes {start}-{}/{total}", total - 1);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).expect("ascii"),
        );
    }
    Ok(resp)
}

/// Part of the body, then a stall (until the client leaves, at most [`STALL_MAX`]) or a
/// connection reset.
fn faulty_body(s: &Arc<Shared>, part: Bytes, fault: LogFault) -> Body {
    let (first, stall) = match fault {
        LogFault::Stall(after) => (part.slice(..(after as usize).min(part.len() - 1)), true),
        LogFault::Reset => (part.slice(..part.len() / 2), false),
    };
    // Lives in the stream: dropped when the client goes away.
    let guard = stall.then(|| s.stall_guard());
    let stream =
        futures_util::stream::unfold((Some(first), guard), move |(first, guard)| async move {
            if let Some(b) = first {
                return Some((Ok::<Bytes, std::io::Error>(b), (None, guard)));
            }
            // Let hyper put what was sent on the wire before the cut.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if guard.is_some() {
                tokio::time::sleep(STALL_MAX).await;
            }
            let err =
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected log fault");
            Some((Err(err), (None, None)))
        });
    Body::from_stream(stream)
}

pub(super) async fn head_log(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline, number, job)): LogPath,
) -> Result<Response, ApiError> {
    s.count(Count::LogHead);
    authorize(&s, &headers, &parse_query(&q), Some("read_build_logs"))?;
    let log = the_log(&s, &org, &pipeline, &number, &job)?;
    let mut resp = Response::new(Body::empty());
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(log.len()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(resp)
}

pub(super) async fn delete_log(
    State(s): S,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    Path((org, pipeline, number, job)): LogPath,
) -> Result<Response, ApiError> {
    s.count(Count::LogDelete);
    authorize(&s, &headers, &parse_query(&q), Some("write_build_logs"))?;
    let mut w = s.world();
    let b = find_build_mut(&mut w, org, pipeline, &number)?;
    b.logs.remove(&job).ok_or_else(ApiError::not_found)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::super::{FakeBuild, FakeServer};
    use super::*;

    const TOKEN: &str = "logs";

    /// Build acme/app/3 with job "Build" logging `raw`, job "Empty" with an empty log, and
    /// job "Wait" (a waiter, no log).
    fn setup(raw: &[u8]) -> (FakeServer, String, String, String) {
        let s = FakeServer::start();
        s.add_token(
            TOKEN,
            &["read_builds", "read_build_logs", "write_build_logs"],
        );
        s.add_token("nologs", &["read_builds"]);
        let mut b = FakeBuild::new("acme", "app", 3);
        let build = b.add_job("Build");
        let empty = b.add_job("Empty");
        let wait = b.add_job_of_type("waiter", "");
        b.logs.insert(build.clone(), Bytes::copy_from_slice(raw));
        b.logs.insert(empty.clone(), Bytes::new());
        s.add_build(b);
        (s, build, empty, wait)
    }

    fn url(s: &FakeServer, job: &str) -> String {
        format!(
            "{}/v2/organizations/acme/pipelines/app/builds/3/jobs/{job}/log",
            s.api_url()
        )
    }

    async fn req(
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let mut r = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(TOKEN);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.unwrap();
        let (status, h) = (r.status().as_u16(), r.headers().clone());
        (status, h, r.bytes().await.unwrap().to_vec())
    }

    #[tokio::test]
    async fn json_text_head_and_suffix_ranges() {
        let raw = b"\x1b_bk;t=1\x07one\n\x1b_bk;t=2\x07two\n";
        let (s, job, empty, wait) = setup(raw);
        let u = url(&s, &job);
        let get = reqwest::Method::GET;
        // JSON by default.
        let (st, _, body) = req(get.clone(), &u, &[]).await;
        assert_eq!(st, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["size"], raw.len());
        assert_eq!(v["content"].as_str().unwrap().as_bytes(), raw);
        assert!(v["url"].as_str().unwrap().ends_with("/log"));
        // Text with Accept or the .txt suffix.
        let text = [("accept", "text/plain")];
        let (st, h, body) = req(get.clone(), &u, &text).await;
        assert_eq!((st, body.as_slice()), (200, &raw[..]));
        assert_eq!(h["accept-ranges"], "bytes");
        let (st, _, body) = req(get.clone(), &format!("{u}.txt"), &[]).await;
        assert_eq!((st, body.as_slice()), (200, &raw[..]));
        // HEAD: the raw size, no body.
        let (st, h, body) = req(reqwest::Method::HEAD, &u, &text).await;
        assert_eq!((st, body.len()), (200, 0));
        assert_eq!(h["content-length"], raw.len().to_string());
        // Suffix ranges only.
        let (st, h, body) = req(get.clone(), &u, &[text[0], ("range", "bytes=-4")]).await;
        assert_eq!((st, body.as_slice()), (206, &b"two\n"[..]));
        let total = raw.len();
        assert_eq!(
            h["content-range"],
            format!("bytes {}-{}/{total}", total - 4, total - 1)
        );
        let (st, _, body) = req(get.clone(), &u, &[text[0], ("range", "bytes=-9999")]).await;
        assert_eq!((st, body.as_slice()), (206, &raw[..]));
        for bad in ["bytes=0-3", "bytes=-0", "bytes=-1,-2", "bytes=3-"] {
            let (st, _, _) = req(get.clone(), &u, &[text[0], ("range", bad)]).await;
            assert_eq!(st, 400, "{bad}");
        }
        // Ranges are for text only; an empty log has none to give.
        let (st, _, _) = req(get.clone(), &u, &[("range", "bytes=-4")]).await;
        assert_eq!(st, 400);
        let (st, _, _) = req(
            get.clone(),
            &url(&s, &empty),
            &[text[0], ("range", "bytes=-4")],
        )
        .await;
        assert_eq!(st, 416);
        let (st, _, body) = req(get.clone(), &url(&s, &empty), &text).await;
        assert_eq!((st, body.len()), (200, 0));
        // No log: 404; no scope: 403.
        let (st, _, _) = req(get.clone(), &url(&s, &wait), &text).await;
        assert_eq!(st, 404);
        let r = reqwest::Client::new()
            .get(&u)
            .bearer_auth("nologs")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert_eq!(s.count(Count::Log), 14);
        assert_eq!(s.count(Count::LogHead), 1);
    }

    #[tokio::test]
    async fn growth_delete_and_faults() {
        let (s, job, _, _) = setup(b"first\n");
        let u = url(&s, &job);
        let text = [("accept", "text/plain")];
        assert!(s.append_log("acme", "app", 3, &job, b"second\n"));
        let (_, _, body) = req(reqwest::Method::GET, &u, &[text[0], ("range", "bytes=-7")]).await;
        assert_eq!(body, b"second\n");
        // A reset body sends about half, then the connection breaks.
        s.reset_logs(1);
        let r = reqwest::Client::new()
            .get(&u)
            .bearer_auth(TOKEN)
            .header("accept", "text/plain")
            .send()
            .await
            .unwrap();
        assert!(r.bytes().await.is_err());
        assert_eq!(s.count(Count::LogFaultsInjected), 1);
        // Delete needs write_build_logs, then the log is gone.
        let (st, _, _) = req(reqwest::Method::DELETE, &u, &[]).await;
        assert_eq!(st, 204);
        let (st, _, _) = req(reqwest::Method::GET, &u, &text).await;
        assert_eq!(st, 404);
        assert_eq!(s.count(Count::LogDelete), 1);
    }

    #[test]
    fn only_suffix_ranges() {
        assert_eq!(suffix_range("bytes=-10"), Ok(10));
        assert_eq!(suffix_range("bytes=-0"), Err(()));
        assert_eq!(suffix_range("bytes=0-10"), Err(()));
        assert_eq!(suffix_range("bytes=-1,-2"), Err(()));
        assert_eq!(suffix_range("bytes=5-"), Err(()));
        assert_eq!(suffix_range("items=-5"), Err(()));
    }
}
