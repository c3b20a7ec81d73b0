//! Pipeline root refresh: new builds, moved links, nothing said when nothing changed.

use super::*;

#[tokio::test]
async fn pipeline_root_refresh_adds_builds_and_moves_links() {
    let env = Env::new();
    let refresh = Duration::from_millis(300);
    let jobs = [job("j1", "Build")];
    env.lister.set_builds(vec![
        build(11, "running", &jobs),
        build(10, "passed", &jobs),
        build(9, "passed", &jobs),
    ]);
    let fs = env.pipeline(3, refresh).await;
    // The list is full and has no failed build: one more request for latest-failed.
    assert_eq!(env.lister.list_builds_count(), 2);
    let (b11, b10, b9) = (
        global(1, ROOT_INO),
        global(2, ROOT_INO),
        global(3, ROOT_INO),
    );
    let fh = fs.opendir(ROOT_INO).unwrap();
    let snap = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&snap),
        vec![
            e(".", ROOT_INO, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("latest", 2, Kind::Symlink),
            e("latest-passed", 3, Kind::Symlink),
            e("11", b11, Kind::Dir),
            e("10", b10, Kind::Dir),
            e("9", b9, Kind::Dir),
        ]
    );
    assert_eq!(fs.readlink_cached(2), Some(Ok("11".to_string())));
    assert_eq!(fs.readlink_cached(3), Some(Ok("10".to_string())));
    assert_eq!(
        fs.lookup_cached(ROOT_INO, name("latest-failed")),
        Some(Err(FsError::NotFound))
    );
    assert_eq!(xattr(&fs, b11, "build_state").as_deref(), Some("running"));

    // New build 12 (failed); 11 was canceled meanwhile. Nothing is asked before the
    // interval.
    env.lister.set_builds(vec![
        build(12, "failed", &jobs),
        build(11, "canceled", &jobs),
        build(10, "passed", &jobs),
        build(9, "passed", &jobs),
    ]);
    assert_eq!(fs.readlink_cached(2), Some(Ok("11".to_string())));
    assert_eq!(
        names(&fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap()),
        names(&snap)
    );
    // Build 12 is found by name before the root shows it.
    let a12 = fs.lookup(ROOT_INO, name("12")).await.unwrap();
    assert_eq!(a12.ino, global(4, ROOT_INO));
    assert_eq!(env.lister.get_build_calls(), [12]);
    assert_eq!(env.lister.list_builds_count(), 2);
    let snap = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert!(env.kernel.events().is_empty());

    tokio::time::sleep(refresh + Duration::from_millis(50)).await;
    // Stale now: links and the listing need the network, open handles keep their snapshot.
    assert_eq!(fs.readlink_cached(2), None);
    assert_eq!(fs.lookup_cached(ROOT_INO, name("latest-failed")), None);
    let fh2 = fs.opendir(ROOT_INO).unwrap();
    assert!(fs.listing_cached(ROOT_INO, fh2, 0).is_none());
    assert!(Arc::ptr_eq(
        &fs.listing_cached(ROOT_INO, fh, 2).unwrap().unwrap(),
        &snap
    ));
    // The link with no target is looked up again: that refreshes the root.
    let failed = fs.lookup(ROOT_INO, name("latest-failed")).await.unwrap();
    assert_eq!(
        (failed.ino, failed.kind, failed.size),
        (4, Kind::Symlink, 2)
    );
    assert_eq!(env.lister.list_builds_count(), 3);

    let l = fs.listing_cached(ROOT_INO, fh2, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", ROOT_INO, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("latest", 2, Kind::Symlink),
            e("latest-passed", 3, Kind::Symlink),
            e("latest-failed", 4, Kind::Symlink),
            e("12", a12.ino, Kind::Dir),
            e("11", b11, Kind::Dir),
            e("10", b10, Kind::Dir),
        ]
    );
    assert_eq!(fs.readlink_cached(2), Some(Ok("12".to_string())));
    assert_eq!(fs.readlink_cached(3), Some(Ok("10".to_string())));
    assert_eq!(fs.readlink_cached(4), Some(Ok("12".to_string())));
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 5);
    // The kernel forgets the root and the two links that moved (attributes and names), not
    // the one that stayed, and the unopened build whose state changed.
    assert_eq!(
        env.kernel.events(),
        [
            Inval::Inode(ROOT_INO),
            Inval::Inode(2),
            Inval::Entry(ROOT_INO, "latest".into()),
            Inval::Inode(4),
            Inval::Entry(ROOT_INO, "latest-failed".into()),
            Inval::Inode(b11),
        ]
    );
    // A listed build that was never opened takes its new state.
    assert_eq!(xattr(&fs, b11, "build_state").as_deref(), Some("canceled"));
    // Build 9 fell out of the listing: same inode by name.
    assert_eq!(attr(&fs, ROOT_INO, "9").ino, b9);
    assert_eq!(env.lister.list_builds_count(), 3);
    assert_eq!(env.lister.list_build_total(), 0);
}

#[tokio::test]
async fn pipeline_root_refresh_without_change_tells_the_kernel_nothing() {
    let env = Env::new();
    let refresh = Duration::from_millis(200);
    let jobs = [job("j1", "Build")];
    env.lister
        .set_builds(vec![build(11, "failed", &jobs), build(10, "passed", &jobs)]);
    let fs = env.pipeline(2, refresh).await;
    let calls = env.lister.list_builds_count();
    tokio::time::sleep(refresh + Duration::from_millis(50)).await;
    assert_eq!(fs.readlink(2).await.unwrap(), "11");
    assert_eq!(env.lister.list_builds_count(), calls + 1);
    assert!(env.kernel.events().is_empty(), "{:?}", env.kernel.events());
    // Fresh again: readlink from memory.
    assert_eq!(fs.readlink_cached(3), Some(Ok("10".to_string())));
    fs.listing(ROOT_INO, 1, 0).await.unwrap();
    assert_eq!(env.lister.list_builds_count(), calls + 1);
}
