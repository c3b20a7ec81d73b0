//! The fake's fault knobs: storage status faults, resets, truncation, stalls and corruption,
//! API faults after the rate limit.

use super::*;

/// A server with one job holding `big.bin` (200 000 patterned bytes); returns its signed URL.
async fn fault_setup() -> (FakeServer, FakeBuild, Vec<u8>, String) {
    let s = FakeServer::start();
    s.add_token(TOKEN, &["read_builds", "read_artifacts"]);
    let mut b = FakeBuild::new("acme", "app", 7);
    let j = b.add_job("big");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    b.add_artifact(&j, "big.bin", content.clone());
    s.add_build(b.clone());
    let loc = signed_url(&s, &b, 0).await;
    (s, b, content, loc)
}

/// Reads a body chunk by chunk: what arrived, and whether it ended in an error.
async fn drain(mut r: reqwest::Response) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (got, false),
            Err(_) => return (got, true),
        }
    }
}

#[tokio::test]
async fn storage_status_faults_count_down() {
    let (s, _b, content, loc) = fault_setup().await;
    s.fail_storage(2, 503);
    assert_eq!(s.storage_faults_pending(), 2);
    // HEAD and a refused signature do not use a fault up.
    assert_eq!(
        client().head(&loc).send().await.unwrap().status(),
        StatusCode::OK
    );
    let bare = loc.split('?').next().unwrap();
    assert_eq!(get(bare, None).await.status(), StatusCode::FORBIDDEN);
    for _ in 0..2 {
        let (st, body) = xml_error(get(&loc, None).await).await;
        assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
    }
    let r = get(&loc, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), content);

    s.fail_storage(1, 500);
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=0-9")
        .send()
        .await
        .unwrap();
    let (st, body) = xml_error(r).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("<Code>InternalError</Code>"), "{body}");
    assert_eq!(s.storage_faults_pending(), 0);
    assert_eq!(s.count(Count::StorageStatus(503)), 2);
    assert_eq!(s.count(Count::StorageStatus(500)), 1);
    assert_eq!(s.count(Count::StorageFaultsInjected), 3);
    assert_eq!(s.count(Count::StorageFaultStatus), 3);
    assert_eq!(s.storage_bytes_served(), content.len() as u64);
}

#[tokio::test]
async fn storage_reset_and_truncate_send_half_then_cut() {
    let (s, _b, content, loc) = fault_setup().await;
    s.reset_storage(1);
    let r = get(&loc, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "200000");
    let (got, failed) = drain(r).await;
    assert!(failed, "a reset body must end in an error");
    assert_eq!(got.len(), 100_000);
    assert!(got[..] == content[..100_000]);

    // Ranged: half of the range, from its start.
    s.truncate_storage(1);
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-length"], "1000");
    assert_eq!(r.headers()["content-range"], "bytes 1000-1999/200000");
    let (got, failed) = drain(r).await;
    assert!(
        failed,
        "the client sees a body shorter than its Content-Length"
    );
    assert!(got[..] == content[1000..1500]);

    // A one-byte body has nothing to cut: it is sent whole.
    s.truncate_storage(1);
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=7-7")
        .send()
        .await
        .unwrap();
    assert_eq!(drain(r).await.0, &content[7..8]);

    // Armed counts are used up; the next GET is whole.
    let r = get(&loc, None).await;
    assert_eq!(drain(r).await, (content.clone(), false));
    assert_eq!(s.count(Count::StorageFaultReset), 1);
    assert_eq!(s.count(Count::StorageFaultTruncate), 2);
    assert_eq!(s.count(Count::StorageFaultsInjected), 3);
    assert_eq!(s.storage_bytes_served(), 100_000 + 500 + 1 + 200_000);
}

#[tokio::test]
async fn storage_stall_holds_until_the_client_leaves() {
    let (s, _b, content, loc) = fault_setup().await;
    s.stall_storage(1, 70_000);
    let mut r = get(&loc, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut got = Vec::new();
    while got.len() < 70_000 {
        let c = tokio::time::timeout(Duration::from_secs(5), r.chunk())
            .await
            .expect("the bytes before the stall arrive")
            .unwrap()
            .unwrap();
        got.extend_from_slice(&c);
    }
    assert!(got[..] == content[..70_000]);
    // Nothing more comes.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), r.chunk())
            .await
            .is_err(),
        "a stalled body must not go on"
    );
    assert_eq!(s.storage_stalls_active(), 1);
    // The next request is not stalled, even while the first one is.
    let r2 = get(&loc, None).await;
    assert_eq!(drain(r2).await, (content.clone(), false));
    // The client gives up: the server's task ends.
    drop(r);
    let t = Instant::now();
    while s.storage_stalls_active() > 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(s.storage_stalls_active(), 0, "the stalled response leaked");

    // `after_bytes` beyond the body still stalls before the last byte.
    s.stall_storage(1, 10_000_000);
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=0-99")
        .send()
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_millis(500), drain(r)).await;
    assert!(got.is_err(), "the last byte must be held back");
    assert_eq!(s.count(Count::StorageFaultStall), 2);
    assert_eq!(s.storage_bytes_served(), 70_000 + 200_000 + 99);
}

#[tokio::test]
async fn corrupt_storage_inverts_bytes_while_on() {
    let (s, b, content, loc) = fault_setup().await;
    let id = b.artifacts[0].artifact.id.clone();
    s.corrupt_storage(&id, true);
    let r = get(&loc, None).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), content.len());
    assert_eq!(got, super::corrupted(&content));
    assert!(got.iter().zip(&content).all(|(a, b)| a != b));
    assert_eq!(
        etag,
        format!("\"{}-{}\"", id, content.len()),
        "the stored object's ETag"
    );
    let r = client()
        .get(&loc)
        .header(RANGE, "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), super::corrupted(&content[10..20]));
    assert_eq!(s.count(Count::StorageCorrupt), 2);

    s.corrupt_storage(&id, false);
    assert_eq!(get(&loc, None).await.bytes().await.unwrap(), content);
    assert_eq!(s.count(Count::StorageCorrupt), 2);
}

#[tokio::test]
async fn api_faults_count_down_after_the_rate_limit() {
    let (s, _) = setup(1);
    let token_url = format!("{}/v2/access-token", s.api_url());
    s.fail_api(2, 502);
    assert_eq!(s.api_faults_pending(), 2);
    let r = get(&token_url, Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(r.headers().contains_key("ratelimit-remaining"));
    assert_eq!(message(r).await, "Bad Gateway");
    let r = get(&build_url(&s), Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        get(&build_url(&s), Some(TOKEN)).await.status(),
        StatusCode::OK
    );
    assert_eq!(s.count(Count::ApiStatus(502)), 2);
    assert_eq!(s.count(Count::ApiFaultsInjected), 2);

    // A 429 comes first and does not use a fault up.
    s.set_rate_limit(1, Duration::from_secs(60), true);
    s.fail_api(2, 500);
    let r = get(&token_url, Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(message(r).await, "Internal Server Error");
    let r = get(&token_url, Some(TOKEN)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(s.api_faults_pending(), 1);
    s.set_rate_limit(200, Duration::from_secs(60), false);
    s.fail_api(1, 503);
    assert_eq!(
        get(&token_url, Some(TOKEN)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&token_url, Some(TOKEN)).await.status(), StatusCode::OK);
    assert_eq!(s.count(Count::ApiStatus(500)), 1);
    assert_eq!(s.count(Count::ApiStatus(503)), 1);
    assert_eq!(s.count(Count::ApiFaultsInjected), 4);
}
