//! The fake artifact storage: an S3-like server for the signed URLs the download endpoint
//! hands out, `GET`/`HEAD /artifacts/<artifact id>/<path>?AWSAccessKeyId=..&Expires=..&Signature=..`.
//!
//! The signature is the sha1 of a per-server secret, the artifact id (the object key), the
//! path after it and `Expires` (unix seconds). The path is signed exactly as issued, dot
//! segments included (an artifact uploaded as `..` gets `/artifacts/<id>/..`), and checked
//! percent-decoded, as S3 does (it decodes the key and signs it unnormalized): `%2E%2E` is
//! the same path, while a client that normalized `..` away is refused (403
//! `SignatureDoesNotMatch`). `Expires` is rounded up to a whole second, so a URL lives
//! at least the configured TTL and less than a second more. Checks, in order: signature
//! present and matching (403 `AccessDenied` / `SignatureDoesNotMatch`), not expired (403
//! `AccessDenied`, "Request has expired"), object exists, is not deleted and is in state
//! `finished` (else 404 `NoSuchKey`). Errors are S3's XML. Ranges follow RFC 9110 for a
//! single range; a malformed or multi-range header is ignored (full 200), as S3 does.
//! The Buildkite token is never needed; requests that carry `Authorization` anyway are
//! counted (`storage_authorization`) and served.
//!
//! Injected faults (see the [`super`] docs) are applied after those checks, to a `GET` that
//! would serve content: a 5xx XML error, a body aborted or truncated halfway, a body that
//! stalls, or inverted bytes.

use crate::Count;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

use super::world::sha1_hex;
use super::{corrupted, Shared, StorageFault, STALL_MAX};
use crate::model::Artifact;

/// Largest piece handed to the connection at once.
const CHUNK: usize = 64 * 1024;
/// How long a reset or truncated body waits before the cut, so its bytes are flushed first.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

type S = State<Arc<Shared>>;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/artifacts/:key", get(object))
        .route("/artifacts/:key/*rest", get(object))
        .fallback(|| async { no_such_key() })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            storage_layer,
        ))
        .with_state(shared)
}

/// A signed URL for `artifact`, valid for the current REST TTL.
pub(super) fn signed_url(s: &Shared, artifact: &Artifact) -> String {
    signed_url_for(s, artifact, s.knobs().url_ttl)
}

/// A signed URL for `artifact`, valid for `ttl` (GraphQL's `downloadURL` has its own).
pub(super) fn signed_url_for(s: &Shared, artifact: &Artifact, ttl: Duration) -> String {
    let deadline = SystemTime::now() + ttl;
    let expires = deadline
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .unwrap_or(0);
    let path = encode_path(artifact.path.as_deref().unwrap_or("artifact"));
    format!(
        "http://{}/artifacts/{}/{path}?AWSAccessKeyId=FAKEBKFSACCESSKEY&Expires={expires}&Signature={}",
        s.storage_addr,
        encode_segment(&artifact.id),
        signature(s, &artifact.id, &percent_decode(&path), expires)
    )
}

fn signature(s: &Shared, key: &str, path: &str, expires: u64) -> String {
    sha1_hex(format!("{}\n{key}\n{path}\n{expires}", s.secret).as_bytes())
}

/// Percent-encodes a path segment by segment; empty segments become `_`, dot segments stay
/// as they are (signed: see the module docs).
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "" => "_".to_string(),
            "." | ".." => seg.to_string(),
            _ => encode_segment(seg),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `%XX` escapes decoded (bytes; invalid UTF-8 kept lossily); anything else as is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The object key and the path after it, percent-decoded, of a request path as received.
fn key_and_path(raw: &str) -> (String, String) {
    let rest = raw.strip_prefix("/artifacts/").unwrap_or("");
    let (key, path) = rest.split_once('/').unwrap_or((rest, ""));
    (percent_decode(key), percent_decode(path))
}

fn encode_segment(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Counting and first-byte latency around every storage request.
async fn storage_layer(State(s): S, req: Request, next: Next) -> Response {
    s.count(Count::Storage);
    if req.headers().contains_key(header::AUTHORIZATION) {
        s.count(Count::StorageAuthorization);
    }
    let latency = s.knobs().storage_latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = next.run(req).await;
    if let code @ (403 | 404 | 416 | 500..=599) = resp.status().as_u16() {
        s.count(Count::StorageStatus(code));
    }
    resp
}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

fn no_such_key() -> Response {
    s3_error(
        StatusCode::NOT_FOUND,
        "NoSuchKey",
        "The specified key does not exist.",
    )
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

async fn object(
    State(s): S,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    uri: axum::http::Uri,
) -> Response {
    s.count(if method == Method::HEAD {
        Count::StorageHead
    } else {
        Count::StorageGet
    });
    // The path as the client sent it (not normalized, not decoded by a router).
    let (key, path) = key_and_path(uri.path());
    let q: Vec<(String, String)> =
        url::form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());

    // Authentication: the query-string signature, never a token.
    let (Some(expires), Some(sig)) = (param("Expires"), param("Signature")) else {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Access Denied");
    };
    let expires_ok = expires.parse::<u64>().ok();
    if expires_ok.map(|e| signature(&s, &key, &path, e)).as_deref() != Some(sig) {
        return s3_error(
            StatusCode::FORBIDDEN,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        );
    }
    if now_unix() > expires_ok.unwrap_or(0) as f64 {
        return s3_error(StatusCode::FORBIDDEN, "AccessDenied", "Request has expired");
    }

    let found = {
        let w = s.world();
        w.artifact(&key)
            .filter(|(_, fa)| fa.artifact.is_finished())
            .map(|(_, fa)| (fa.content.clone(), fa.artifact.mime_type.clone()))
    };
    let Some((mut content, mime)) = found else {
        return no_such_key();
    };
    // The ETag names the stored object (hashing it per request would cost a full pass over
    // a large object for every ranged GET); corruption happens on the way.
    let etag = format!("\"{}-{}\"", key, content.len());
    if s.is_corrupt(&key) {
        s.count(Count::StorageCorrupt);
        content = Bytes::from(corrupted(&content));
    }

    let total = content.len() as u64;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, total) {
        RangeReq::Full => (StatusCode::OK, 0, total),
        RangeReq::Partial(a, b) => (StatusCode::PARTIAL_CONTENT, a, b + 1),
        RangeReq::Unsatisfiable => {
            let mut r = s3_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range is not satisfiable",
            );
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{total}")).unwrap(),
            );
            return r;
        }
    };
    let part = content.slice(start as usize..end as usize);
    let len = part.len();
    let fault = if method == Method::GET {
        s.take_storage_fault(start, end)
    } else {
        None
    };
    let body = match fault {
        _ if method == Method::HEAD => Body::empty(),
        None => paced_body(s.clone(), part, Tail::End),
        Some(StorageFault::Status(code)) => return injected_error(code),
        Some(StorageFault::Reset) => paced_body(s.clone(), part.slice(..half(len)), Tail::Abort),
        Some(StorageFault::Truncate) => paced_body(s.clone(), part.slice(..half(len)), Tail::Close),
        Some(StorageFault::Stall(after)) => {
            let n = (after.min(u64::MAX >> 1) as usize).min(len.saturating_sub(1));
            paced_body(s.clone(), part.slice(..n), Tail::Stall)
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let mime = mime.unwrap_or_else(|| "application/octet-stream".into());
    if let Ok(v) = HeaderValue::from_str(&mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = format!("bytes {start}-{}/{total}", end - 1);
        h.insert(header::CONTENT_RANGE, HeaderValue::from_str(&cr).unwrap());
    }
    resp
}

/// One `Range` header, resolved against the object size.
#[derive(Debug, PartialEq)]
enum RangeReq {
    Full,
    /// First and last byte, inclusive.
    Partial(u64, u64),
    Unsatisfiable,
}

fn parse_range(header: Option<&str>, total: u64) -> RangeReq {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            None => RangeReq::Full,
            Some(0) => RangeReq::Unsatisfiable,
            Some(_) if total == 0 => RangeReq::Unsatisfiable,
            Some(n) => RangeReq::Partial(total.saturating_sub(n), total - 1),
        },
        // bytes=a-
        (false, true) => match num(a) {
            None => RangeReq::Full,
            Some(a) if a >= total => RangeReq::Unsatisfiable,
            Some(a) => RangeReq::Partial(a, total - 1),
        },
        // bytes=a-b
        (false, false) => match (num(a), num(b)) {
            (Some(a), Some(b)) if b >= a => {
                if a >= total {
                    RangeReq::Unsatisfiable
                } else {
                    RangeReq::Partial(a, b.min(total - 1))
                }
            }
            _ => RangeReq::Full,
        },
        (true, true) => RangeReq::Full,
    }
}

/// How many bytes a reset or truncated body still sends: about half, at least one byte when
/// there are two or more (so the client has something to resume from).
fn half(len: usize) -> usize {
    if len <= 1 {
        len
    } else {
        len / 2
    }
}

/// An injected 5xx, with the XML body S3 sends for it.
fn injected_error(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match code {
        503 => s3_error(status, "SlowDown", "Please reduce your request rate."),
        _ => s3_error(
            status,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
    }
}

/// What happens once a body's bytes are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tail {
    /// The body ends.
    End,
    /// The body ends short of its `Content-Length` once the bytes are on the wire, so hyper
    /// closes the connection.
    Close,
    /// The stream fails once the bytes are on the wire, so hyper aborts the connection.
    Abort,
    /// Nothing more until the client goes away, or [`STALL_MAX`] passes (then abort).
    Stall,
}

/// The body in chunks, counted as they are handed over, paced to the bandwidth knob, then
/// `tail`.
pub(super) fn paced_body(s: Arc<Shared>, data: Bytes, tail: Tail) -> Body {
    let bandwidth = s.knobs().storage_bandwidth;
    let chunk = if bandwidth == 0 {
        CHUNK
    } else {
        ((bandwidth / 10) as usize).clamp(1, CHUNK)
    };
    let start = Instant::now();
    // Lives in the stream state: dropped when the stream ends or is dropped (client gone).
    let guard = (tail == Tail::Stall).then(|| s.stall_guard());
    let stream =
        futures_util::stream::unfold((0usize, false, guard), move |(sent, done, guard)| {
            let s = s.clone();
            let data = data.clone();
            async move {
                if done {
                    return None;
                }
                if sent >= data.len() {
                    if matches!(tail, Tail::Close | Tail::Abort) {
                        // Pending for a moment makes hyper flush what it buffered (headers
                        // and body so far) before the cut; otherwise the client might get
                        // nothing at all.
                        tokio::time::sleep(FLUSH_PAUSE).await;
                    }
                    let err = match tail {
                        Tail::End | Tail::Close => return None,
                        Tail::Abort => std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "injected fault: connection reset mid-body",
                        ),
                        Tail::Stall => {
                            tokio::time::sleep(STALL_MAX).await;
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "injected fault: stalled body given up",
                            )
                        }
                    };
                    return Some((Err(err), (sent, true, None)));
                }
                if bandwidth > 0 {
                    let due = start + Duration::from_secs_f64(sent as f64 / bandwidth as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let end = (sent + chunk).min(data.len());
                let piece = data.slice(sent..end);
                s.add_bytes_served(piece.len() as u64);
                Some((Ok::<Bytes, std::io::Error>(piece), (end, false, guard)))
            }
        });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeReq::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-4"), 10), Partial(0, 4));
        assert_eq!(parse_range(Some("bytes=5-100"), 10), Partial(5, 9));
        assert_eq!(parse_range(Some("bytes=3-"), 10), Partial(3, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Partial(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Partial(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=10-12"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
    }

    /// Dot segments are issued as uploaded (and signed: a normalized request is refused);
    /// the key and path of a request are read percent-decoded, as S3 reads them.
    #[test]
    fn paths_are_issued_as_uploaded_and_read_decoded() {
        assert_eq!(encode_path("../../etc/passwd"), "../../etc/passwd");
        assert_eq!(encode_path("a//b"), "a/_/b");
        assert_eq!(encode_path("a b/ü.txt"), "a%20b/%C3%BC.txt");
        assert_eq!(
            key_and_path("/artifacts/id%2D1/%2E%2E/a%20b"),
            ("id-1".to_string(), "../a b".to_string())
        );
        assert_eq!(
            key_and_path("/artifacts/k"),
            ("k".to_string(), String::new())
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
