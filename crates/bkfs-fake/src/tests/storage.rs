//! The fake's artifact downloads and storage: redirects to signed URLs, ranges, signatures
//! and expiry, delete, latency and bandwidth knobs, bytes served as given.

use super::*;

#[tokio::test]
async fn get_download_and_storage_ranges() {
    let (s, b) = setup(1);
    let fa = &b.artifacts[0];
    let a = &fa.artifact;
    let job = a.job_id.as_deref().unwrap();
    let r = get(
        &format!("{}/jobs/{job}/artifacts/{}", build_url(&s), a.id),
        Some(TOKEN),
    )
    .await;
    let got: Artifact = r.json().await.unwrap();
    assert_eq!(got.sha1sum, a.sha1sum);
    assert_eq!(got.mime_type.as_deref(), Some("text/plain"));
    assert_eq!(got.dirname.as_deref(), Some("logs"));
    assert_eq!(got.filename.as_deref(), Some("part-000.log"));

    let r = get(got.download_url.as_deref().unwrap(), Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let loc = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert_eq!(r.json::<DownloadUrl>().await.unwrap().url, loc);
    assert!(loc.starts_with(&format!("{}/artifacts/", s.storage_url())));
    assert!(loc.contains("Expires=") && loc.contains("Signature="));

    // Full GET without any token.
    let r = get(&loc, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.headers()["content-length"], "7");
    assert_eq!(r.bytes().await.unwrap(), fa.content);

    let range = |spec: &'static str| {
        let loc = loc.clone();
        async move { client().get(&loc).header(RANGE, spec).send().await.unwrap() }
    };
    for (spec, want, cr) in [
        ("bytes=0-3", "line", "bytes 0-3/7"),
        ("bytes=5-", "0\n", "bytes 5-6/7"),
        ("bytes=-2", "0\n", "bytes 5-6/7"),
        ("bytes=2-100", "ne 0\n", "bytes 2-6/7"),
    ] {
        let r = range(spec).await;
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{spec}");
        assert_eq!(r.headers()["content-range"], cr);
        assert_eq!(
            r.headers()["content-length"],
            want.len().to_string().as_str()
        );
        assert_eq!(r.bytes().await.unwrap(), want.as_bytes());
    }
    let r = range("bytes=7-").await;
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */7");

    // HEAD: headers only.
    let r = client().head(&loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "7");
    let r = client()
        .head(&loc)
        .header(RANGE, "bytes=1-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-length"], "2");

    // A token sent to storage is counted (and still served).
    let r = client()
        .get(&loc)
        .header(AUTHORIZATION, "Bearer x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.bytes().await.unwrap();

    assert_eq!(s.count(Count::StorageAuthorization), 1);
    assert_eq!(s.count(Count::StorageHead), 2);
    assert_eq!(s.count(Count::StorageGet), 7);
    assert_eq!(s.count(Count::Storage), 9);
    assert_eq!(s.count(Count::StorageStatus(416)), 1);
    assert_eq!(s.count(Count::Download), 1);
    assert_eq!(s.count(Count::GetArtifact), 1);
    // 7 + 4 + 2 + 2 + 5 + 7 bytes of bodies (the 416 has an XML body, not counted).
    assert_eq!(s.storage_bytes_served(), 27);
}

#[tokio::test]
async fn storage_signature_and_expiry() {
    let (s, b) = setup(1);
    let loc = signed_url(&s, &b, 0).await;
    let url = url::Url::parse(&loc).unwrap();
    let param = |n: &str| {
        url.query_pairs()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_string())
            .unwrap()
    };
    let expires: u64 = param("Expires").parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 59..=now + 61).contains(&expires),
        "{expires} vs {now}"
    );

    let tampered = loc.replace(&param("Signature"), &"0".repeat(40));
    let (st, body) = xml_error(get(&tampered, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        body.contains("<Code>SignatureDoesNotMatch</Code>"),
        "{body}"
    );
    let later = loc.replace(
        &format!("Expires={expires}"),
        &format!("Expires={}", expires + 3600),
    );
    let (st, body) = xml_error(get(&later, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.contains("SignatureDoesNotMatch"));
    let bare = loc.split('?').next().unwrap();
    let (st, body) = xml_error(get(bare, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(body.contains("<Code>AccessDenied</Code>"));

    s.set_url_ttl(Duration::ZERO);
    let short = signed_url(&s, &b, 0).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, body) = xml_error(get(&short, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    );
    // The first URL is still good.
    assert_eq!(get(&loc, None).await.status(), StatusCode::OK);

    let unknown = loc.replace(&b.artifacts[0].artifact.id, "nope");
    let (st, _) = xml_error(get(&unknown, None).await).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "signature covers the key");
    assert_eq!(s.count(Count::StorageStatus(403)), 5);
}

#[tokio::test]
async fn delete_removes_everywhere() {
    let (s, b) = setup(2);
    s.add_token("ro", &["read_artifacts"]);
    let a = &b.artifacts[0].artifact;
    let job = a.job_id.as_deref().unwrap();
    let url = format!("{}/jobs/{job}/artifacts/{}", build_url(&s), a.id);
    let loc = signed_url(&s, &b, 0).await;

    let r = client()
        .delete(&url)
        .bearer_auth("ro")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        message(r).await,
        "Your access token does not have the required scope(s): write_artifacts"
    );
    assert!(s.artifact_exists(&a.id));

    let r = client()
        .delete(format!("{url}?access_token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.bytes().await.unwrap().is_empty());
    assert!(!s.artifact_exists(&a.id));
    assert!(s.artifact_exists(&b.artifacts[1].artifact.id));

    assert_eq!(get(&url, Some(TOKEN)).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        get(&format!("{url}/download"), Some(TOKEN)).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = client()
        .delete(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let list: Vec<Artifact> = get(&format!("{}/artifacts", build_url(&s)), Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert!(list.iter().all(|x| x.id != a.id));
    assert_eq!(list.len(), 2);
    let (st, body) = xml_error(get(&loc, None).await).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(body.contains("<Code>NoSuchKey</Code>"));
    assert_eq!(s.count(Count::Delete), 3);
}

#[tokio::test]
async fn latency_bandwidth_and_bytes() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let j = b.add_job("big");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    b.add_artifact(&j, "big.bin", content.clone());
    s.add_build(b.clone());

    s.set_api_latency(Duration::from_millis(150));
    let t = Instant::now();
    let loc = signed_url(&s, &b, 0).await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    s.set_api_latency(Duration::ZERO);

    s.set_storage_latency(Duration::from_millis(150));
    let t = Instant::now();
    let r = get(&loc, None).await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.bytes().await.unwrap(), content);
    s.set_storage_latency(Duration::ZERO);
    assert_eq!(s.storage_bytes_served(), 200_000);

    s.reset_counts();
    assert!(s.counts().is_empty());
    s.set_storage_bandwidth(400_000);
    let t = Instant::now();
    let r = get(&loc, None).await;
    assert_eq!(r.bytes().await.unwrap(), content);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(s.storage_bytes_served(), 200_000);

    // A client that stops early is not charged for the whole body.
    s.reset_counts();
    s.set_storage_bandwidth(100_000);
    let mut r = get(&loc, None).await;
    let first = r.chunk().await.unwrap().unwrap();
    drop(r);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = s.storage_bytes_served();
    assert!(served >= first.len() as u64 && served < 100_000, "{served}");
}

#[tokio::test]
async fn wrong_sha1_is_served_as_given() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let j = b.add_job("j");
    b.add_artifact_with(&j, "bad.bin", "hello", |a| a.sha1sum = Some("0".repeat(40)));
    s.add_build(b.clone());
    let list: Vec<Artifact> = get(&format!("{}/artifacts", build_url(&s)), Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list[0].sha1sum, Some("0".repeat(40)));
    let loc = signed_url(&s, &b, 0).await;
    assert_eq!(get(&loc, None).await.bytes().await.unwrap(), "hello");
}

/// Storage signs the path exactly as issued: `..` (or `%2E%2E`, decoded) is served, the
/// same URL normalized by reqwest (`..` removed) is refused.
#[tokio::test]
async fn storage_signs_dot_segments_exactly() {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let one = b.add_job("One");
    b.add_artifact(&one, "..", "dot dot\n");
    b.add_artifact(&one, "a/./b/../c", "abc\n");
    s.add_build(b.clone());
    for fa in &b.artifacts {
        let a = &fa.artifact;
        let r = get(
            &format!("{}/jobs/{one}/artifacts/{}/download", build_url(&s), a.id),
            Some(TOKEN),
        )
        .await;
        let loc = r.headers()[LOCATION].to_str().unwrap().to_string();
        let (status, body) = raw_get(&loc).await;
        assert_eq!(status, 200, "{loc}: the path as uploaded");
        assert_eq!(body, fa.content, "{loc}");
        let r = get(&loc, None).await;
        assert_eq!(r.status().as_u16() / 100, 4, "normalized {loc} was served");
    }
}

/// A GET of `url` exactly as written (no dot-segment normalization): HTTP/1.1 over a plain
/// TCP stream; the status and the body (the fake answers `Connection: close` requests with
/// a `Content-Length` body).
async fn raw_get(url: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, target) = rest.split_at(rest.find('/').expect("a path"));
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    conn.read_to_end(&mut all).await.unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, all[split + 4..].to_vec())
}
