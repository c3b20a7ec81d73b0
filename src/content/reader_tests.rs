//! Unit tests of the reader against an in-memory remote.

use super::*;
use crate::backend::testing::OneObject;
use sha1::{Digest, Sha1};
use std::sync::atomic::{AtomicU64, Ordering};

fn meta(data: &[u8]) -> Arc<FileMeta> {
    Arc::new(FileMeta {
        artifact_id: "a1".into(),
        job_id: "j1".into(),
        size: data.len() as u64,
        sha1sum: Some(hex::encode(Sha1::digest(data))),
        mime_type: None,
        state: Some("finished".into()),
        original_path: "x.bin".into(),
        build_number: 0,
    })
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn quick() -> ReaderConfig {
    ReaderConfig {
        read_timeout: Duration::from_secs(5),
        ..ReaderConfig::default()
    }
}

#[tokio::test]
async fn small_file_fetched_once_and_served_from_memory() {
    let data = pattern(10_000);
    let m = OneObject::new(data.clone());
    let r = Reader::new(m.clone(), quick(), None);
    let meta = meta(&data);
    assert_eq!(
        &r.read(&meta, 0, 4096, None).await.unwrap()[..],
        &data[..4096]
    );
    assert_eq!(
        &r.read(&meta, 9000, 4096, None).await.unwrap()[..],
        &data[9000..]
    );
    assert!(r.read(&meta, 10_000, 10, None).await.unwrap().is_empty());
    assert_eq!(m.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(m.url_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn random_read_of_large_file_fetches_one_block() {
    let data = pattern(64 << 20);
    let m = OneObject::new(data.clone());
    let r = Reader::new(m.clone(), quick(), None);
    let meta = meta(&data);
    let off = (32 << 20) + 12345;
    let got = r
        .read(&meta, off, 4096, Some(&Handle::default()))
        .await
        .unwrap();
    assert_eq!(&got[..], &data[off as usize..off as usize + 4096]);
    assert_eq!(m.bytes.load(Ordering::SeqCst), BLOCK);
}

#[tokio::test]
async fn expired_url_is_refreshed_transparently() {
    let data = pattern(1000);
    let m = OneObject::new(data.clone());
    let r = Reader::new(m.clone(), quick(), None);
    m.expire_before.store(1, Ordering::SeqCst); // the first URL is already expired
    let got = r.read(&meta(&data), 0, 1000, None).await.unwrap();
    assert_eq!(&got[..], &data[..]);
    assert_eq!(m.url_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried() {
    let data = pattern(1000);
    let m = OneObject::new(data.clone());
    m.fail_next.store(2, Ordering::SeqCst);
    let r = Reader::new(m.clone(), quick(), None);
    assert_eq!(
        &r.read(&meta(&data), 0, 1000, None).await.unwrap()[..],
        &data[..]
    );
    assert_eq!(m.fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn corrupt_content_is_never_served() {
    let data = pattern(1000);
    let m = Arc::new(OneObject {
        corrupt: true,
        ..Arc::try_unwrap(OneObject::new(data.clone())).ok().unwrap()
    });
    let r = Reader::new(m.clone(), quick(), None);
    let e = r.read(&meta(&data), 0, 1000, None).await.unwrap_err();
    assert!(matches!(e, ReadError::Corrupt { .. }), "{e:?}");
    assert_eq!(m.fetches.load(Ordering::SeqCst), 2, "refetched once");
}

#[tokio::test]
async fn concurrent_reads_share_one_fetch() {
    let data = pattern(100_000);
    let m = OneObject::new(data.clone());
    let r = Reader::new(m.clone(), quick(), None);
    let meta = meta(&data);
    let futs: Vec<_> = (0..16)
        .map(|i| {
            let r = r.clone();
            let meta = meta.clone();
            async move { r.read(&meta, i * 1000, 1000, None).await }
        })
        .collect();
    for (i, got) in futures_util::future::join_all(futs)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(&got.unwrap()[..], &data[i * 1000..(i + 1) * 1000]);
    }
    assert_eq!(m.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn sequential_reader_prefetches() {
    let data = pattern(16 << 20);
    let m = OneObject::new(data.clone());
    let r = Reader::new(m.clone(), quick(), None);
    let meta = meta(&data);
    let h = Handle::default();
    let mut off = 0u64;
    while off < meta.size {
        let got = r.read(&meta, off, 128 << 10, Some(&h)).await.unwrap();
        assert_eq!(&got[..], &data[off as usize..off as usize + got.len()]);
        off += got.len() as u64;
    }
    // Every block fetched exactly once despite prefetch racing the reads.
    assert_eq!(m.bytes.load(Ordering::SeqCst), meta.size);
}

#[tokio::test]
async fn disk_cache_serves_a_second_reader_without_network() {
    let d = tempfile::tempdir().unwrap();
    let data = pattern(6 << 20);
    let meta = meta(&data);
    let m1 = OneObject::new(data.clone());
    let disk = Arc::new(DiskCache::open(d.path(), 1 << 30).unwrap());
    let r1 = Reader::new(m1.clone(), quick(), Some(disk));
    let h = Handle::default();
    let mut off = 0;
    while off < meta.size {
        off += r1.read(&meta, off, 1 << 20, Some(&h)).await.unwrap().len() as u64;
    }
    r1.flush(Duration::from_secs(30)).await;
    // Another "mount": same directory, fresh process state.
    let m2 = OneObject::new(data.clone());
    let disk = Arc::new(DiskCache::open(d.path(), 1 << 30).unwrap());
    let r2 = Reader::new(m2.clone(), quick(), Some(disk));
    let got = r2.read(&meta, 0, 6 << 20, None).await.unwrap();
    assert_eq!(&got[..], &data[..]);
    assert_eq!(m2.fetches.load(Ordering::SeqCst), 0);
    assert_eq!(m2.url_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn complete_large_artifact_with_wrong_sha1_is_discarded_from_disk() {
    let d = tempfile::tempdir().unwrap();
    let data = pattern(5 << 20);
    let mut bad = (*meta(&data)).clone();
    bad.sha1sum = Some("0".repeat(40));
    let bad = Arc::new(bad);
    let m = OneObject::new(data.clone());
    let disk = Arc::new(DiskCache::open(d.path(), 1 << 30).unwrap());
    let r = Reader::new(m.clone(), quick(), Some(disk.clone()));
    // Two reads, so no single request covers the whole file (that one would be checked
    // and refused outright).
    r.read(&bad, 0, 3 << 20, None).await.unwrap();
    r.read(&bad, 3 << 20, 2 << 20, None).await.unwrap();
    r.flush(Duration::from_secs(30)).await;
    let key = content_key(bad.sha1sum.as_deref(), &bad.artifact_id);
    assert_eq!(
        disk.blocks_of(&key),
        0,
        "unverifiable content must not stay cached"
    );
    // And nothing more of it is served or cached during this mount.
    let e = r.read(&bad, 1 << 20, 4096, None).await.unwrap_err();
    assert!(matches!(e, ReadError::Corrupt { .. }), "{e:?}");
    assert_eq!(disk.blocks_of(&key), 0);
}

#[tokio::test(start_paused = true)]
async fn cut_transfers_resume_from_the_last_byte() {
    let data = pattern(3 << 20);
    let m = OneObject::new(data.clone());
    m.cut_next.store(3, Ordering::SeqCst);
    let r = Reader::new(m.clone(), quick(), None);
    let got = r.read(&meta(&data), 0, 3 << 20, None).await.unwrap();
    assert_eq!(&got[..], &data[..]);
    assert_eq!(m.fetches.load(Ordering::SeqCst), 4);
    assert_eq!(
        m.bytes.load(Ordering::SeqCst),
        3 << 20,
        "no byte fetched twice"
    );
}

/// A tiny memory budget and many sequential readers with prefetch, on disk and off: the
/// budget is never exceeded, nothing deadlocks, every byte is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_memory_budget_many_readers_all_finish_within_it() {
    for with_disk in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let data = pattern(12 << 20);
        let meta = meta(&data);
        let m = OneObject::new(data.clone());
        let disk = with_disk.then(|| Arc::new(DiskCache::open(d.path(), 1 << 30).unwrap()));
        let cfg = ReaderConfig {
            memory_limit: 1 << 20,
            ..quick()
        };
        let r = Reader::new(m.clone(), cfg, disk);
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watch = {
            let (r, peak, stop) = (r.clone(), peak.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    peak.fetch_max(r.memory().0, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let readers: Vec<_> = (0..16u64)
            .map(|i| {
                let (r, meta, data) = (r.clone(), meta.clone(), data.clone());
                tokio::spawn(async move {
                    let h = Handle::default();
                    // Each reader starts somewhere else and reads 3 MiB in 256 KiB reads.
                    let mut off = (i * (640 << 10)) % (9 << 20);
                    let end = off + (3 << 20);
                    while off < end {
                        let got = r.read(&meta, off, 256 << 10, Some(&h)).await.unwrap();
                        assert_eq!(&got[..], &data[off as usize..off as usize + got.len()]);
                        off += got.len() as u64;
                    }
                })
            })
            .collect();
        let all = async {
            for t in readers {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("readers deadlocked under a tiny budget");
        r.flush(Duration::from_secs(30)).await;
        stop.store(true, Ordering::SeqCst);
        watch.await.unwrap();
        let (_, limit) = r.memory();
        assert!(peak.load(Ordering::SeqCst) <= limit, "over budget");
        assert!(limit <= 1 << 20);
    }
}

/// The URL map stays bounded however many artifacts are read.
#[tokio::test]
async fn url_cache_is_bounded() {
    let data = pattern(100);
    let m = OneObject::new(data.clone());
    let r = Reader::new(m.clone(), quick(), None);
    for i in 0..(crate::backend::urls::MAX_URLS + 500) {
        let mut mt = (*meta(&data)).clone();
        mt.artifact_id = format!("art-{i}");
        mt.sha1sum = None;
        r.read(&Arc::new(mt), 0, 100, None).await.unwrap();
    }
    assert_eq!(r.urls_cached(), crate::backend::urls::MAX_URLS);
}

/// A read across blocks of one part is one slice of the part's buffer; reads across parts
/// (and from the disk) are assembled; all are right.
#[tokio::test]
async fn reads_across_blocks_and_parts_are_right() {
    let d = tempfile::tempdir().unwrap();
    let data = pattern(9 << 20);
    let meta = meta(&data);
    let m = OneObject::new(data.clone());
    let disk = Arc::new(DiskCache::open(d.path(), 1 << 30).unwrap());
    let r = Reader::new(m.clone(), quick(), Some(disk));
    // One part of three blocks, read whole and from inside it.
    let b = r.read(&meta, 0, 3 * BLOCK as u32, None).await.unwrap();
    assert!(b[..] == data[..3 * BLOCK as usize]);
    let b = r.read(&meta, 100, 2 * BLOCK as u32, None).await.unwrap();
    assert!(b[..] == data[100..100 + 2 * BLOCK as usize]);
    // Across that part and a new one (and the end of the file).
    let b = r
        .read(&meta, 2 * BLOCK + 5, 3 * BLOCK as u32, None)
        .await
        .unwrap();
    assert!(b[..] == data[(2 * BLOCK + 5) as usize..(5 * BLOCK + 5) as usize]);
    let b = r
        .read(&meta, (9 << 20) - 1000, 1 << 20, None)
        .await
        .unwrap();
    assert!(b[..] == data[(9 << 20) - 1000..]);
    r.flush(Duration::from_secs(30)).await;
    // From the disk now.
    let b = r
        .read(&meta, BLOCK - 1, 4 * BLOCK as u32, None)
        .await
        .unwrap();
    assert!(b[..] == data[(BLOCK - 1) as usize..(5 * BLOCK - 1) as usize]);
}
