//! Directory handles keep their snapshot across a refresh.

use super::*;

#[tokio::test]
async fn directory_handle_keeps_its_snapshot_across_a_refresh() {
    let env = Env::new();
    let jobs = [job("j1", "Build")];
    let running = build(7, "running", &jobs);
    let a1 = artifact("a1", "j1", "log.txt");
    let a2 = artifact("a2", "j1", "out/app.bin");
    let fs = env.single(
        7,
        &listing(&running, vec![a1.clone(), a2]),
        cfg(Duration::from_millis(40), false),
    );
    fs.start();
    let bd = ino(&fs, ROOT_INO, "build");

    let fh = fs.opendir(bd).unwrap();
    let snap = fs.listing_cached(bd, fh, 0).unwrap().unwrap();
    assert_eq!(names(&snap), [".", "..", "log.txt", "out"]);

    env.lister.set_listing(
        7,
        listing(&running, vec![a1, artifact("a3", "j1", "report.html")]),
    );
    wait_until("the refresh", || {
        matches!(fs.lookup_cached(bd, name("report.html")), Some(Ok(_)))
    })
    .await;

    // Later offsets of the same handle read the snapshot...
    let later = fs.listing_cached(bd, fh, 2).unwrap().unwrap();
    assert!(Arc::ptr_eq(&later, &snap));
    assert_eq!(names(&later), [".", "..", "log.txt", "out"]);
    assert!(Arc::ptr_eq(&fs.listing(bd, fh, 3).await.unwrap(), &snap));
    // ...another handle, or offset 0 (rewinddir), sees the new listing.
    let fresh = [".", "..", "log.txt", "report.html"];
    let other = fs.opendir(bd).unwrap();
    assert_ne!(other, fh);
    assert_eq!(
        names(&fs.listing_cached(bd, other, 2).unwrap().unwrap()),
        fresh
    );
    let again = fs.listing_cached(bd, fh, 0).unwrap().unwrap();
    assert_eq!(names(&again), fresh);
    assert!(Arc::ptr_eq(
        &fs.listing_cached(bd, fh, 2).unwrap().unwrap(),
        &again
    ));
    // A released handle has no snapshot left.
    fs.releasedir(fh);
    assert_eq!(
        names(&fs.listing_cached(bd, fh, 2).unwrap().unwrap()),
        fresh
    );
}
