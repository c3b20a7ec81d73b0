//! Live builds: refresh, reconcile, kernel invalidations, a build gone.

use super::*;

/// A running build whose listing changes: the refresh reconciles it, keeps inodes, tells
/// the kernel; the first `passed` listing is the last. In a pipeline mount the build lives
/// in slot 1, so every inode the kernel hears about must carry the slot.
async fn live_refresh(pipeline: bool) {
    let env = Env::new();
    let refresh = Duration::from_millis(40);
    let jobs = [job("j1", "Build"), job("j2", "Test")];
    let running = build(12, "running", &jobs);
    let (a1, a2) = (
        artifact("a1", "j1", "log.txt"),
        artifact("a2", "j1", "out/app.bin"),
    );
    let first = listing(&running, vec![a1.clone(), a2.clone()]);
    let (fs, top) = if pipeline {
        env.lister.set_builds(vec![running.clone()]);
        env.lister.set_listing(12, first);
        let fs = env.pipeline(1, refresh).await;
        let top = ino(&fs, ROOT_INO, "12");
        assert_eq!(top, global(1, ROOT_INO));
        fs.lookup(top, name("build")).await.unwrap();
        (fs, top)
    } else {
        let fs = env.single(12, &first, cfg(refresh, false));
        fs.start();
        (fs, ROOT_INO)
    };
    let bd = ino(&fs, top, "build");
    let log = ino(&fs, bd, "log.txt");
    let out = ino(&fs, bd, "out");
    let app = ino(&fs, out, "app.bin");

    // Listing a pipeline's build tells the kernel to forget its directory's attributes (they
    // were answered before it was listed); refreshes with nothing new tell it nothing.
    let first = env.kernel.take();
    if pipeline {
        assert_eq!(first, [Inval::Inode(global(1, ROOT_INO))]);
    } else {
        assert_eq!(first, []);
    }
    let calls = env.lister.list_build_count(12);
    wait_until("two refreshes", || {
        env.lister.served.lock().unwrap().len() >= calls + 2
    })
    .await;
    assert!(env.kernel.events().is_empty(), "{:?}", env.kernel.events());

    // A new artifact, a removed one (and its directory), a new job directory.
    let second = vec![
        a1.clone(),
        artifact("a3", "j1", "report.html"),
        artifact("a4", "j2", "junit.xml"),
    ];
    env.lister
        .set_listing(12, listing(&running, second.clone()));
    wait_until("the new listing", || {
        matches!(fs.lookup_cached(top, name("test")), Some(Ok(_)))
    })
    .await;
    let test = ino(&fs, top, "test");
    let report = ino(&fs, bd, "report.html");
    let junit = ino(&fs, test, "junit.xml");
    assert_eq!(ino(&fs, top, "build"), bd);
    assert_eq!(ino(&fs, bd, "log.txt"), log);
    assert!(gone(&fs, bd, "out"));
    assert_eq!(fs.getattr(out), Err(FsError::NotFound));
    assert_eq!(fs.getattr(app), Err(FsError::NotFound));
    for new in [test, report, junit] {
        assert_eq!(new >> 40, top >> 40, "same slot");
        assert!(new > app, "new inode {new} reuses no number");
    }
    let fh = fs.opendir(bd).unwrap();
    let l = fs.listing_cached(bd, fh, 0).unwrap().unwrap();
    assert_eq!(names(&l), [".", "..", "log.txt", "report.html"]);
    assert_eq!(fs.getattr(bd).unwrap().nlink, 2);
    assert_eq!(fs.getattr(top).unwrap().nlink, 4);

    let expected: BTreeSet<(Ino, String)> = [
        (bd, "report.html"),
        (top, "test"),
        (test, "junit.xml"),
        (bd, "out"),
        (out, "app.bin"),
    ]
    .into_iter()
    .map(|(p, n)| (p, n.to_string()))
    .collect();
    wait_until("the invalidations", || {
        env.kernel.entries() == expected && env.kernel.inodes().contains(&bd)
    })
    .await;
    assert_eq!(env.kernel.inodes(), BTreeSet::from([top, bd]));

    // The build passes: that listing is the last one.
    env.kernel.clear();
    let mut passed = build(12, "passed", &jobs);
    passed.finished_at = Some(FINISHED.into());
    env.lister.set_listing(12, listing(&passed, second));
    wait_until("the final listing", || env.lister.served(12, "passed") == 1).await;
    wait_until("the final state", || {
        xattr(&fs, top, "build_state").as_deref() == Some("passed")
    })
    .await;
    let calls = env.lister.list_build_count(12);
    tokio::time::sleep(refresh * 8).await;
    assert_eq!(
        env.lister.list_build_count(12),
        calls,
        "refreshed after passed"
    );
    assert_eq!(env.lister.served(12, "passed"), 1);
    // Its new time reached the tree and the kernel.
    assert_eq!(Some(fs.getattr(top).unwrap().mtime), parse_time(FINISHED));
    assert!(
        env.kernel.inodes().contains(&top),
        "{:?}",
        env.kernel.events()
    );
    assert!(env.kernel.entries().is_empty(), "{:?}", env.kernel.events());
}

#[tokio::test(start_paused = true)]
async fn live_single_build_refresh_reconciles_and_invalidates() {
    live_refresh(false).await;
}

#[tokio::test(start_paused = true)]
async fn live_pipeline_build_refresh_reconciles_and_invalidates_with_global_inodes() {
    live_refresh(true).await;
}

#[tokio::test(start_paused = true)]
async fn live_build_gone_404_stops_refreshing() {
    let env = Env::new();
    let refresh = Duration::from_millis(30);
    let b = build(12, "running", &[job("j1", "Build")]);
    let fs = env.single(
        12,
        &listing(&b, vec![artifact("a1", "j1", "log.txt")]),
        cfg(refresh, false),
    );
    fs.start();
    fs.start(); // no second loop: exactly one 404 below
    wait_until("a refresh", || env.lister.list_build_count(12) >= 1).await;
    env.lister.listings.lock().unwrap().remove(&12);
    wait_until("the 404", || {
        env.lister
            .served
            .lock()
            .unwrap()
            .iter()
            .any(|(n, s)| *n == 12 && s.is_none())
    })
    .await;
    let calls = env.lister.list_build_count(12);
    tokio::time::sleep(refresh * 8).await;
    assert_eq!(env.lister.list_build_count(12), calls);
    let not_found = env
        .lister
        .served
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, s)| *n == 12 && s.is_none())
        .count();
    assert_eq!(not_found, 1, "one refresh loop, stopped by its 404");
    // What was listed stays.
    let bd = ino(&fs, ROOT_INO, "build");
    ino(&fs, bd, "log.txt");
}
