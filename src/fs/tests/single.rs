//! Single-build mounts: the tree, attributes, xattrs, from memory.

use super::*;

#[tokio::test(start_paused = true)]
async fn single_build_answers_from_memory() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build"), job("j2", "Test")]);
    let l = listing(
        &b,
        vec![
            artifact("a1", "j1", "log.txt"),
            artifact("a2", "j1", "out/app.bin"),
            artifact("a3", "j2", "junit.xml"),
        ],
    );
    let fs = env.single(7, &l, cfg(Duration::from_millis(20), false));
    fs.start();

    let root = fs.getattr(ROOT_INO).unwrap();
    assert_eq!(root.ino, ROOT_INO);
    assert_eq!(root.kind, Kind::Dir);
    assert_eq!(root.nlink, 4, "2 + two job directories");
    assert_eq!(root.perm, 0o555);
    assert_eq!((root.uid, root.gid), (1000, 1000));
    assert_eq!(Some(root.mtime), parse_time(CREATED));

    let bd = attr(&fs, ROOT_INO, "build");
    assert_eq!(bd.kind, Kind::Dir);
    assert_eq!(bd.nlink, 3, "2 + out/");
    assert_eq!(fs.lookup(ROOT_INO, name("build")).await.unwrap(), bd);
    assert_eq!(fs.getattr(bd.ino).unwrap(), bd);
    let test = ino(&fs, ROOT_INO, "test");
    let log = attr(&fs, bd.ino, "log.txt");
    assert_eq!(log.kind, Kind::File);
    assert_eq!(log.size, content("a1").len() as u64);
    assert_eq!(log.perm, 0o444);
    assert_eq!(log.nlink, 1);
    assert_eq!(log.blocks, 1);
    let out = ino(&fs, bd.ino, "out");
    let app = attr(&fs, out, "app.bin");
    assert_eq!(fs.lookup(out, name("app.bin")).await.unwrap(), app);

    // The root's `..` is the root itself.
    let fh = fs.opendir(ROOT_INO).unwrap();
    let l = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", ROOT_INO, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("build", bd.ino, Kind::Dir),
            e("test", test, Kind::Dir),
        ]
    );
    assert_eq!(*fs.listing(ROOT_INO, fh, 0).await.unwrap(), *l);
    assert_eq!(fs.readdir_cached(ROOT_INO).unwrap().unwrap(), *l);
    fs.releasedir(fh);

    let fh = fs.opendir(bd.ino).unwrap();
    let l = fs.listing_cached(bd.ino, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", bd.ino, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("log.txt", log.ino, Kind::File),
            e("out", out, Kind::Dir),
        ]
    );
    let l = fs.listing_cached(out, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", out, Kind::Dir),
            e("..", bd.ino, Kind::Dir),
            e("app.bin", app.ino, Kind::File),
        ]
    );

    // Errors, all from memory.
    assert!(gone(&fs, ROOT_INO, "nope"));
    assert!(matches!(
        fs.lookup(ROOT_INO, name("nope")).await,
        Err(FsError::NotFound)
    ));
    assert_eq!(
        fs.lookup_cached(log.ino, name("x")),
        Some(Err(FsError::NotDir))
    );
    assert_eq!(fs.getattr(9999), Err(FsError::NotFound));
    assert_eq!(fs.getattr(global(3, ROOT_INO)), Err(FsError::NotFound));
    assert_eq!(fs.opendir(log.ino), Err(FsError::NotDir));
    assert_eq!(
        fs.listing_cached(log.ino, 77, 0).map(|r| r.map(|_| ())),
        Some(Err(FsError::NotDir))
    );
    assert_eq!(fs.readlink_cached(log.ino), Some(Err(FsError::Invalid)));
    assert_eq!(fs.readlink_cached(ROOT_INO), Some(Err(FsError::Invalid)));
    assert_eq!(fs.open(bd.ino, libc::O_RDONLY), Err(FsError::IsDir));
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert!(matches!(fs.open(log.ino, flags), Err(FsError::ReadOnly(_))));
    }
    assert!(matches!(
        fs.unlink(bd.ino, name("log.txt")).await,
        Err(FsError::ReadOnly(_))
    ));
    assert!(fs.dir_cacheable(ROOT_INO));
    assert!(!fs.deletes_allowed());

    // Extended attributes.
    assert_eq!(xattr(&fs, ROOT_INO, "build_number").as_deref(), Some("7"));
    assert_eq!(
        xattr(&fs, ROOT_INO, "build_state").as_deref(),
        Some("passed")
    );
    assert_eq!(xattr(&fs, ROOT_INO, "branch").as_deref(), Some("main"));
    assert_eq!(xattr(&fs, bd.ino, "job_id").as_deref(), Some("j1"));
    assert_eq!(xattr(&fs, bd.ino, "job_label").as_deref(), Some("Build"));
    assert_eq!(xattr(&fs, log.ino, "artifact_id").as_deref(), Some("a1"));
    assert_eq!(xattr(&fs, app.ino, "path").as_deref(), Some("out/app.bin"));
    assert_eq!(
        fs.getxattr(log.ino, name("user.buildkite.job_id")).unwrap(),
        b"j1".to_vec()
    );
    assert_eq!(
        fs.getxattr(log.ino, name("user.buildkite.nope")),
        Err(FsError::NoAttr)
    );
    assert_eq!(fs.statfs().files, 7);

    // A passed build is never listed again, whatever the refresh interval.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(env.lister.list_build_total(), 0);
    assert!(env.lister.get_build_calls().is_empty());
    assert_eq!(env.lister.list_builds_count(), 0);
    assert!(env.kernel.events().is_empty());
}
