//! Signed URLs whose path has dot segments (`.`/`..`, e.g. an artifact uploaded as `..`).
//!
//! reqwest parses every URL with the `url` crate, which removes dot segments as WHATWG says,
//! escaped ones (`%2E%2E`) included: `/artifacts/KEY/..` would become `/artifacts/`, another
//! object, and the read would fail. S3 does not normalize an object key: it percent-decodes
//! the path and SigV4 signs the decoded key as it is (S3 is the documented exception to path
//! normalization), so `%2E%2E` names the same object as `..` under the same signature. Such
//! URLs are therefore sent with their dot segments escaped, through a plain hyper client
//! that takes the request target as given (`http::Uri` does not normalize). Every other URL
//! goes through reqwest as before.

use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The `[start, end)` byte range of the path in `url` (after the authority, before `?`/`#`).
fn path_span(url: &str) -> Option<(usize, usize)> {
    let after_scheme = url.find("://")? + 3;
    let start = after_scheme + url[after_scheme..].find('/')?;
    let end = url[start..]
        .find(['?', '#'])
        .map(|i| start + i)
        .unwrap_or(url.len());
    Some((start, end))
}

/// Whether the segment is one the `url` crate treats as `.` or `..`.
fn is_dot_segment(seg: &str) -> bool {
    let s = seg.to_ascii_lowercase().replace("%2e", ".");
    s == "." || s == ".."
}

/// Whether `url`'s path has a dot segment (which reqwest would remove).
pub fn has_dot_segments(url: &str) -> bool {
    path_span(url).is_some_and(|(a, b)| url[a..b].split('/').any(is_dot_segment))
}

/// `url` with every dot segment of its path escaped as `%2E`s; nothing else changes.
pub fn escape_dot_segments(url: &str) -> String {
    let Some((a, b)) = path_span(url) else {
        return url.to_string();
    };
    let path = url[a..b]
        .split('/')
        .map(|seg| {
            if is_dot_segment(seg) {
                let n = if seg.len() == 1 || seg.eq_ignore_ascii_case("%2e") {
                    1
                } else {
                    2
                };
                "%2E".repeat(n)
            } else {
                seg.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    format!("{}{path}{}", &url[..a], &url[b..])
}

type Raw = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The shared hyper client (native roots, http and https), built on first use.
fn client() -> Result<&'static Raw, String> {
    static CLIENT: OnceLock<Result<Raw, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| format!("no TLS root certificates: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            Ok(Client::builder(TokioExecutor::new()).build(https))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// `GET url` with `headers`, the dot segments escaped and the path otherwise exactly as given;
/// the answer as a reqwest response, so callers handle both kinds alike.
pub async fn get(url: &str, headers: &[(&str, String)]) -> Result<reqwest::Response, String> {
    let target = escape_dot_segments(url);
    let uri: http::Uri = target.parse().map_err(|e| format!("bad URL: {e}"))?;
    let mut req = http::Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = client()?
        .request(req)
        .await
        .map_err(|e| crate::http::error_chain(&e))?;
    Ok(resp.map(reqwest::Body::wrap).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_and_escaped() {
        let u = "http://h:1/artifacts/K/..?Expires=1&Signature=x";
        assert!(has_dot_segments(u));
        assert_eq!(
            escape_dot_segments(u),
            "http://h:1/artifacts/K/%2E%2E?Expires=1&Signature=x"
        );
        let u = "https://s3.example/b/a/./x/%2e./y/.%2E";
        assert!(has_dot_segments(u));
        assert_eq!(
            escape_dot_segments(u),
            "https://s3.example/b/a/%2E/x/%2E%2E/y/%2E%2E"
        );
        for u in [
            "http://h/artifacts/K/a.b/..c/...?x=/../",
            "http://h/artifacts/K/x#/..",
            "http://h",
        ] {
            assert!(!has_dot_segments(u), "{u}");
            assert_eq!(escape_dot_segments(u), u);
        }
    }

    proptest::proptest! {
        /// Escaping is idempotent, keeps every segment's meaning (decoded, `%2E` is `.`),
        /// and `http::Uri` (what the raw client sends) keeps the escaped path exactly.
        #[test]
        fn escaping_keeps_the_path(segs in proptest::collection::vec(
            proptest::sample::select(vec!["a", ".", "..", "%2E", "%2e.", "", "b%20c", "..."]), 1..8)) {
            let u = format!("http://h/k/{}?q=1", segs.join("/"));
            let e = escape_dot_segments(&u);
            proptest::prop_assert_eq!(escape_dot_segments(&e), e.clone());
            let decode = |s: &str| s.to_ascii_lowercase().replace("%2e", ".");
            proptest::prop_assert_eq!(decode(&e), decode(&u));
            let uri: http::Uri = e.parse().unwrap();
            proptest::prop_assert_eq!(uri.path(), &e["http://h".len()..e.len() - "?q=1".len()]);
        }
    }
}
