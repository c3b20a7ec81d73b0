//! The log store against an in-memory [`LogSource`] that follows the endpoint's rules (whole
//! log, or suffix ranges only; HEAD for the size) and can break bodies.

use super::*;
use crate::backend::testing::{Fault, MockLogs};

fn meta(job: &str, finished: bool) -> LogMeta {
    LogMeta {
        job_id: job.into(),
        label: Some("test".into()),
        web_url: None,
        finished,
        build_number: 1,
    }
}

fn store(src: &Arc<MockLogs>, disk: Option<Arc<DiskCache>>, format: LogFormat) -> Arc<LogStore> {
    LogStore::new(
        src.clone(),
        disk,
        LogConfig {
            format,
            refresh: Duration::from_millis(50),
            read_timeout: Duration::from_secs(2),
        },
        tokio::runtime::Handle::current(),
    )
}

async fn read_all(s: &LogStore, m: &LogMeta) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = s.read(m, out.len() as u64, 1000).await.unwrap();
        if b.is_empty() {
            return out;
        }
        out.extend_from_slice(&b);
    }
}

#[tokio::test]
async fn stat_is_free_and_open_fetches_once() {
    let src = Arc::new(MockLogs::default());
    src.set("j1", b"line one\nline two\n");
    let s = store(&src, None, LogFormat::Plain);
    let m = meta("j1", true);
    assert_eq!(
        s.attr(&m),
        LogAttr {
            size: 0,
            settled: false
        }
    );
    assert!(src.calls().is_empty(), "stat made a request");
    let a = s.open(&m).await.unwrap();
    assert_eq!(
        a,
        LogAttr {
            size: 18,
            settled: true
        }
    );
    assert_eq!(read_all(&s, &m).await, b"line one\nline two\n");
    s.open(&m).await.unwrap();
    assert_eq!(src.calls(), ["get"], "a finished log is fetched once");
    assert_eq!(s.raw_size("j1"), Some(18));
}

#[tokio::test]
async fn a_running_log_fetches_only_its_growth() {
    let src = Arc::new(MockLogs::default());
    src.set("j", b"first\n");
    let s = store(&src, None, LogFormat::Raw);
    let running = meta("j", false);
    s.open(&running).await.unwrap();
    assert_eq!(read_all(&s, &running).await, b"first\n");
    src.append("j", b"second\n");
    tokio::time::sleep(Duration::from_millis(60)).await;
    // A read at the end checks for growth once the refresh interval has passed.
    assert_eq!(read_all(&s, &running).await, b"first\nsecond\n");
    // One request per check: a suffix range that covers the growth (the overlap is skipped).
    assert_eq!(src.calls(), ["get", "get -65536"]);
    // Nothing new: one request, nothing added.
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(read_all(&s, &running).await, b"first\nsecond\n");
    assert_eq!(src.calls().len(), 3);
    // The job finishes: one last check, then the log is settled.
    src.append("j", b"third\n");
    tokio::time::sleep(Duration::from_millis(60)).await;
    let done = meta("j", true);
    assert_eq!(read_all(&s, &done).await, b"first\nsecond\nthird\n");
    assert!(s.attr(&done).settled);
    let n = src.calls().len();
    tokio::time::sleep(Duration::from_millis(60)).await;
    read_all(&s, &done).await;
    s.attr(&done);
    assert_eq!(src.calls().len(), n, "a settled log makes no request");
}

#[tokio::test(start_paused = true)]
async fn a_broken_body_resumes_where_it_stopped() {
    let src = Arc::new(MockLogs::default());
    let raw: Vec<u8> = (0..200)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    src.set("j", &raw);
    src.faults.lock().unwrap().push_back(Fault::Break(500));
    src.faults.lock().unwrap().push_back(Fault::Stall(100));
    let s = store(&src, None, LogFormat::Raw);
    let m = meta("j", true);
    s.open(&m).await.unwrap();
    assert_eq!(read_all(&s, &m).await, raw);
    // The first GET broke, the second (a suffix) stalled before anything new, the third
    // brought the rest.
    assert_eq!(src.calls(), ["get", "get -65536", "get -65536"]);
}

#[tokio::test]
async fn growth_beyond_the_guess_is_asked_for_exactly() {
    let src = Arc::new(MockLogs::default());
    src.set("j", b"a\n");
    let s = store(&src, None, LogFormat::Raw);
    let m = meta("j", false);
    s.open(&m).await.unwrap();
    let more: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    src.append("j", &more);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let mut want = b"a\n".to_vec();
    want.extend_from_slice(&more);
    assert_eq!(read_all(&s, &m).await, want);
    assert_eq!(
        src.calls(),
        [
            "get".to_string(),
            "get -65536".into(),
            format!("get -{}", more.len())
        ]
    );
    // The next guess is twice that growth.
    src.append("j", b"b\n");
    tokio::time::sleep(Duration::from_millis(60)).await;
    read_all(&s, &m).await;
    assert_eq!(
        src.calls()[3],
        format!("get -{}", (2 * more.len() as u64).min(MAX_SUFFIX))
    );
}

#[tokio::test(start_paused = true)]
async fn endless_failures_end_in_eio_within_bounds() {
    let src = Arc::new(MockLogs::default());
    src.set("j", b"some text that never arrives\n");
    for _ in 0..20 {
        src.faults.lock().unwrap().push_back(Fault::Stall(0));
    }
    let s = store(&src, None, LogFormat::Raw);
    let m = meta("j", true);
    let t0 = tokio::time::Instant::now();
    let r = s.open(&m).await;
    assert!(matches!(r, Err(LogError::Io(_))), "{r:?}");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(src.calls().len() <= 2 * ATTEMPTS as usize);

    let src = Arc::new(MockLogs::default());
    src.set("j", b"x\n");
    for _ in 0..20 {
        src.faults.lock().unwrap().push_back(Fault::Unavailable);
    }
    let s = store(&src, None, LogFormat::Raw);
    assert!(matches!(s.open(&m).await, Err(LogError::Io(_))));
    assert_eq!(src.calls().len(), ATTEMPTS as usize);
}

#[tokio::test]
async fn a_missing_log_is_gone_without_retries() {
    let src = Arc::new(MockLogs::default());
    let s = store(&src, None, LogFormat::Plain);
    let m = meta("nope", true);
    assert_eq!(s.open(&m).await, Err(LogError::NotFound));
    assert!(s.is_gone("nope"));
    assert_eq!(src.calls(), ["get"]);
}

#[tokio::test]
async fn a_finished_log_is_kept_on_disk_for_the_next_mount() {
    let dir = tempfile::tempdir().unwrap();
    let disk = || Some(Arc::new(DiskCache::open(dir.path(), 64 << 20).unwrap()));
    let src = Arc::new(MockLogs::default());
    let raw: Vec<u8> = (0..500_000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    assert!(raw.len() as u64 > 2 * BLOCK);
    src.set("j", &raw);
    let m = meta("j", true);
    {
        let s = store(&src, disk(), LogFormat::Raw);
        s.open(&m).await.unwrap();
        assert_eq!(read_all(&s, &m).await, raw);
    }
    let before = src.calls().len();
    let s = store(&src, disk(), LogFormat::Raw);
    assert_eq!(
        s.attr(&m),
        LogAttr {
            size: raw.len() as u64,
            settled: true
        },
        "stat knows the size from the disk cache"
    );
    s.open(&m).await.unwrap();
    let got = {
        let mut out = Vec::new();
        loop {
            let b = s.read(&m, out.len() as u64, 300_000).await.unwrap();
            if b.is_empty() {
                break out;
            }
            out.extend_from_slice(&b);
        }
    };
    assert_eq!(got, raw);
    assert_eq!(src.calls().len(), before, "the second mount made a request");
    // Another format is another entry.
    let plain = store(&src, disk(), LogFormat::Plain);
    assert_eq!(plain.attr(&m).size, 0);
}

#[tokio::test]
async fn a_damaged_stored_log_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let disk = || Some(Arc::new(DiskCache::open(dir.path(), 64 << 20).unwrap()));
    let src = Arc::new(MockLogs::default());
    let raw = b"alpha\nbeta\n".repeat(200_000);
    src.set("j", &raw);
    let m = meta("j", true);
    {
        let s = store(&src, disk(), LogFormat::Raw);
        s.open(&m).await.unwrap();
    }
    // Lose one block (as eviction or a damaged file would).
    let key_dir = std::fs::read_dir(dir.path().join("v1"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("l1-"))
        .unwrap()
        .path();
    std::fs::remove_file(key_dir.join("1")).unwrap();
    let s = store(&src, disk(), LogFormat::Raw);
    s.open(&m).await.unwrap();
    assert_eq!(read_all(&s, &m).await, raw);
    assert_eq!(src.calls(), ["get", "get"]);
}

#[tokio::test]
async fn delete_forgets_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(DiskCache::open(dir.path(), 64 << 20).unwrap());
    let src = Arc::new(MockLogs::default());
    src.set("j", b"bye\n");
    let s = store(&src, Some(disk.clone()), LogFormat::Plain);
    let m = meta("j", true);
    s.open(&m).await.unwrap();
    s.delete(&m).await.unwrap();
    assert!(s.is_gone("j"));
    assert_eq!(disk.bytes(), 0);
}

/// An evicted build's logs leave memory; a later open fetches (or reads from disk) again and
/// serves the same text.
#[tokio::test]
async fn forgotten_logs_leave_memory_and_come_back() {
    let src = Arc::new(MockLogs::default());
    src.set("j1", b"one\n");
    src.set("j2", b"two\n");
    let s = store(&src, None, LogFormat::Plain);
    let (m1, m2) = (meta("j1", true), meta("j2", true));
    s.open(&m1).await.unwrap();
    s.open(&m2).await.unwrap();
    assert_eq!(s.known(), 2);
    s.forget(["j1"]);
    assert_eq!(s.known(), 1);
    assert_eq!(s.raw_size("j1"), None, "forgotten");
    assert_eq!(read_all(&s, &m2).await, b"two\n");
    s.open(&m1).await.unwrap();
    assert_eq!(read_all(&s, &m1).await, b"one\n");
    assert_eq!(src.calls(), ["get", "get", "get"], "j1 was fetched again");
}
