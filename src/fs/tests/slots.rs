//! Idle builds, bounded maps, settled builds (issue 11).

use super::*;

/// Builds 11 (failed) and 5 (passed, outside the root listing) of [`pipeline_env`], with
/// room for one listed build.
async fn one_resident() -> (Env, Arc<Fs>) {
    let env = pipeline_env();
    let fs = env.pipeline(3, FAR).await;
    fs.set_resident_builds(1);
    fs.set_evict_after(Duration::ZERO);
    (env, fs)
}

#[tokio::test]
async fn builds_used_within_the_delay_stay() {
    let (_env, fs) = one_resident().await;
    fs.set_evict_after(FAR);
    fs.lookup(global(2, ROOT_INO), name("build")).await.unwrap();
    let b5 = fs.lookup(ROOT_INO, name("5")).await.unwrap().ino;
    fs.lookup(b5, name("build")).await.unwrap();
    assert_eq!(fs.resident_builds(), 2, "11 was used a moment ago");
}

#[tokio::test]
async fn idle_build_is_evicted_and_reloads_with_the_same_inodes() {
    let (env, fs) = one_resident().await;
    let b11 = global(2, ROOT_INO);
    let d11 = fs.lookup(b11, name("build")).await.unwrap();
    let f11 = fs.lookup(d11.ino, name("log.txt")).await.unwrap();
    let fh = fs.opendir(d11.ino).unwrap();
    let before = fs.listing(d11.ino, fh, 0).await.unwrap();
    fs.releasedir(fh);
    assert_eq!(fs.resident_builds(), 1);

    // Build 5 (by number) is listed: 11 leaves memory, and the kernel forgets its name.
    let b5 = fs.lookup(ROOT_INO, name("5")).await.unwrap().ino;
    fs.lookup(b5, name("build")).await.unwrap();
    assert_eq!(fs.resident_builds(), 1);
    assert!(env.kernel.entries().contains(&(ROOT_INO, "11".to_string())));
    assert_eq!(
        fs.lookup_cached(b11, name("build")),
        None,
        "needs a listing"
    );
    // What needs no tree still answers from memory.
    assert_eq!(xattr(&fs, b11, "build_number").as_deref(), Some("11"));
    assert_eq!(fs.getattr(b11).unwrap().kind, Kind::Dir);

    // Back to 11: listed again, same numbers, same listing, same bytes.
    let again = fs.lookup(b11, name("build")).await.unwrap();
    assert_eq!(again.ino, d11.ino);
    assert_eq!(fs.lookup(d11.ino, name("log.txt")).await.unwrap(), f11);
    let fh = fs.opendir(d11.ino).unwrap();
    assert_eq!(*fs.listing(d11.ino, fh, 0).await.unwrap(), *before);
    let fh = fs.open(f11.ino, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(f11.ino, fh, 0, 4096).await.unwrap(), content("a11"));
    assert_eq!(env.lister.list_build_count(11), 2);
    assert_eq!(fs.resident_builds(), 1, "5 left in turn");
}

#[tokio::test]
async fn builds_with_open_files_or_still_running_stay() {
    let (env, fs) = one_resident().await;
    let (b12, b11) = (global(1, ROOT_INO), global(2, ROOT_INO));
    let d11 = fs.lookup(b11, name("build")).await.unwrap();
    let f11 = fs.lookup(d11.ino, name("log.txt")).await.unwrap();
    let fh = fs.open(f11.ino, libc::O_RDONLY).unwrap();
    // 12 is running: listed, watched, never evicted; 11 has an open file.
    fs.lookup(b12, name("build")).await.unwrap();
    let b5 = fs.lookup(ROOT_INO, name("5")).await.unwrap().ino;
    fs.lookup(b5, name("build")).await.unwrap();
    assert_eq!(fs.resident_builds(), 3, "nothing could go");
    assert_eq!(fs.read(f11.ino, fh, 0, 4096).await.unwrap(), content("a11"));
    fs.release(fh);
    // The next listing (build 10) lets the idle finished ones go: 11 and 5.
    let b10 = build(10, "passed", &[job("j1", "Build")]);
    env.lister
        .set_listing(10, listing(&b10, vec![artifact("a10", "j1", "log.txt")]));
    fs.lookup(global(3, ROOT_INO), name("build")).await.unwrap();
    assert_eq!(
        fs.resident_builds(),
        2,
        "the running build and the last one"
    );
    assert_eq!(fs.lookup_cached(b11, name("build")), None);
    assert_eq!(fs.lookup_cached(b5, name("build")), None);
    assert!(fs.lookup_cached(b12, name("build")).is_some(), "12 stays");
    assert_eq!(env.lister.list_build_count(12), 1);
}

#[tokio::test]
async fn build_changed_while_evicted_gets_numbers_never_used() {
    let (env, fs) = one_resident().await;
    let b11 = global(2, ROOT_INO);
    let d11 = fs.lookup(b11, name("build")).await.unwrap();
    let f11 = fs.lookup(d11.ino, name("log.txt")).await.unwrap();
    let b5 = fs.lookup(ROOT_INO, name("5")).await.unwrap().ino;
    fs.lookup(b5, name("build")).await.unwrap();
    // Meanwhile an artifact was added to 11 (before log.txt in name order).
    let b = build(11, "failed", &[job("j1", "Build")]);
    env.lister.set_listing(
        11,
        listing(
            &b,
            vec![
                artifact("a0", "j1", "a.txt"),
                artifact("a11", "j1", "log.txt"),
            ],
        ),
    );
    env.remote.put("a0", content("a0"));
    let d = fs.lookup(b11, name("build")).await.unwrap();
    let f = fs.lookup(d.ino, name("log.txt")).await.unwrap();
    assert!(
        d.ino > f11.ino && f.ino > f11.ino,
        "numbered above the old ones"
    );
    assert_eq!(
        fs.getattr(f11.ino),
        Err(FsError::NotFound),
        "old number means nothing"
    );
    let fh = fs.open(f.ino, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(f.ino, fh, 0, 4096).await.unwrap(), content("a11"));
    let a = fs.lookup(d.ino, name("a.txt")).await.unwrap();
    assert_eq!(a.size, content("a0").len() as u64);
}

#[tokio::test]
async fn deleted_set_holds_open_artifacts_only() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let fs = env.single(
        7,
        &listing(
            &b,
            vec![
                artifact("a1", "j1", "log.txt"),
                artifact("a2", "j1", "two.txt"),
            ],
        ),
        cfg(FAR, true),
    );
    let bd = ino(&fs, ROOT_INO, "build");
    let log = ino(&fs, bd, "log.txt");
    let fh = fs.open(log, libc::O_RDONLY).unwrap();
    let fh2 = fs.open(log, libc::O_RDONLY).unwrap();
    fs.unlink(bd, name("log.txt")).await.unwrap();
    fs.unlink(bd, name("two.txt")).await.unwrap();
    assert_eq!(fs.deleted_open(), 1, "two.txt was not open");
    assert_eq!(fs.read(log, fh, 0, 4096).await, Err(FsError::NotFound));
    fs.release(fh);
    assert_eq!(fs.deleted_open(), 1, "still open once");
    assert_eq!(fs.read(log, fh2, 0, 4096).await, Err(FsError::NotFound));
    fs.release(fh2);
    assert_eq!(fs.deleted_open(), 0);
}

#[tokio::test]
async fn prefetch_windows_are_bounded() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let arts: Vec<Artifact> = (0..crate::fs::DIR_SEQ_MAX + 50)
        .map(|i| artifact(&format!("a{i}"), "j1", &format!("d{i}/f.txt")))
        .collect();
    let fs = env.single(7, &listing(&b, arts), cfg(FAR, false));
    let bd = ino(&fs, ROOT_INO, "build");
    for i in 0..crate::fs::DIR_SEQ_MAX + 50 {
        let d = ino(&fs, bd, &format!("d{i}"));
        let f = ino(&fs, d, "f.txt");
        let fh = fs.open(f, libc::O_RDONLY).unwrap();
        fs.release(fh);
    }
    assert_eq!(fs.dir_windows(), crate::fs::DIR_SEQ_MAX);
}

#[tokio::test]
async fn finished_builds_are_settled_running_ones_are_not() {
    let env = pipeline_env();
    let fs = env.pipeline(3, Duration::from_millis(50)).await;
    let (b12, b11) = (global(1, ROOT_INO), global(2, ROOT_INO));
    let d12 = fs.lookup(b12, name("build")).await.unwrap();
    let d11 = fs.lookup(b11, name("build")).await.unwrap();
    assert!(!fs.settled(ROOT_INO), "the root's builds list changes");
    assert!(!fs.settled(2), "the links move");
    assert!(!fs.settled(d12.ino), "12 is running");
    assert!(fs.settled(d11.ino));
    // A running build still shows what appears (and is settled once it finishes).
    let b = build(12, "passed", &[job("j1", "Build")]);
    env.lister.set_listing(
        12,
        listing(
            &b,
            vec![
                artifact("a12", "j1", "log.txt"),
                artifact("n", "j1", "new.txt"),
            ],
        ),
    );
    env.remote.put("n", content("n"));
    wait_until("12 shows new.txt", || {
        fs.lookup_cached(d12.ino, name("new.txt"))
            .is_some_and(|r| r.is_ok())
    })
    .await;
    wait_until("12 is settled", || fs.settled(d12.ino)).await;
}

/// An evicted build's job logs leave the log store's memory too: a long-lived pipeline mount
/// must not grow with every build it opens. The log comes back when the build does.
#[tokio::test]
async fn an_evicted_builds_logs_leave_memory() {
    use crate::backend::testing::MockLogs;
    use crate::joblog::{LogConfig, LogFormat, LogStore};
    let env = Env::new();
    let started = |id: &str| Job {
        started_at: Some(CREATED.into()),
        ..job(id, "Build")
    };
    let (b12, b11) = (
        build(12, "passed", &[started("j12")]),
        build(11, "failed", &[started("j11")]),
    );
    env.lister.set_builds(vec![b12.clone(), b11.clone()]);
    let src = Arc::new(MockLogs::default());
    for (b, j) in [(&b12, "j12"), (&b11, "j11")] {
        env.lister.set_listing(b.number, listing(b, vec![]));
        src.set(j, format!("log of {j}\n").as_bytes());
    }
    let logs = LogStore::new(
        src.clone(),
        None,
        LogConfig {
            format: LogFormat::Plain,
            refresh: FAR,
            read_timeout: Duration::from_secs(5),
        },
        tokio::runtime::Handle::current(),
    );
    let fs = env.pipeline_with_logs(2, FAR, Some(logs.clone())).await;
    fs.set_resident_builds(1);
    fs.set_evict_after(Duration::ZERO);

    let read_log = |number: u64| {
        let fs = fs.clone();
        async move {
            let dir = fs
                .lookup(ROOT_INO, name(&number.to_string()))
                .await
                .unwrap();
            let log = fs.lookup(dir.ino, name("build.log")).await.unwrap();
            let (fh, _) = fs.open_log(log.ino, libc::O_RDONLY).await.unwrap();
            let text = fs.read(log.ino, fh, 0, 4096).await.unwrap();
            fs.release(fh);
            text
        }
    };
    assert_eq!(&read_log(12).await[..], b"log of j12\n");
    assert_eq!(logs.known(), 1);
    // Build 11 is opened: 12 leaves memory, and so does its log.
    assert_eq!(&read_log(11).await[..], b"log of j11\n");
    assert_eq!(fs.resident_builds(), 1);
    assert_eq!(logs.known(), 1, "only build 11's log is held");
    assert_eq!(logs.raw_size("j12"), None, "build 12's log was forgotten");
    // Back to 12: listed again, its log fetched again, the same text.
    assert_eq!(&read_log(12).await[..], b"log of j12\n");
    assert_eq!(src.calls().iter().filter(|c| *c == "get").count(), 3);
}
