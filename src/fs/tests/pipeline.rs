//! Pipeline mounts: the root, lazy builds, lookups by number, links.

use super::*;

#[tokio::test]
async fn pipeline_root_and_lazy_builds() {
    let env = pipeline_env();
    let fs = env.pipeline(3, FAR).await;
    assert_eq!(
        env.lister.list_builds_count(),
        1,
        "every link found in the list"
    );
    let (b12, b11, b10) = (
        global(1, ROOT_INO),
        global(2, ROOT_INO),
        global(3, ROOT_INO),
    );

    // The root: `.`, `..`, the links, the builds newest first; no build listed for it.
    let fh = fs.opendir(ROOT_INO).unwrap();
    let l = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", ROOT_INO, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("latest", 2, Kind::Symlink),
            e("latest-passed", 3, Kind::Symlink),
            e("latest-failed", 4, Kind::Symlink),
            e("12", b12, Kind::Dir),
            e("11", b11, Kind::Dir),
            e("10", b10, Kind::Dir),
        ]
    );
    assert!(!fs.dir_cacheable(ROOT_INO));
    let root = fs.getattr(ROOT_INO).unwrap();
    assert_eq!((root.kind, root.nlink), (Kind::Dir, 5));

    // An unlisted build's directory: attributes and xattrs without a request.
    let a11 = fs.getattr(b11).unwrap();
    assert_eq!((a11.ino, a11.kind, a11.nlink), (b11, Kind::Dir, 1));
    assert_eq!(Some(a11.mtime), parse_time(CREATED));
    assert_eq!(attr(&fs, ROOT_INO, "11"), a11);
    assert_eq!(xattr(&fs, b11, "build_number").as_deref(), Some("11"));
    assert_eq!(xattr(&fs, b11, "build_state").as_deref(), Some("failed"));
    assert_eq!(fs.lookup_cached(b12, name("build")), None);
    assert!(fs.readdir_cached(b12).is_none());
    assert!(fs.listing_cached(b12, fh, 0).is_none());
    assert_eq!(fs.getattr(global(1, 2)), Err(FsError::NotFound));
    assert_eq!(env.lister.list_build_total(), 0);

    // Two lookups at once inside build 12 list it once.
    env.lister.set_delay(Duration::from_millis(50));
    let (x, y) = tokio::join!(fs.lookup(b12, name("build")), fs.lookup(b12, name("build")));
    env.lister.set_delay(Duration::ZERO);
    let x = x.unwrap();
    assert_eq!(x, y.unwrap());
    assert_eq!(x.kind, Kind::Dir);
    assert_eq!(env.lister.list_build_count(12), 1);
    assert_eq!(env.lister.list_build_total(), 1);
    assert_eq!(attr(&fs, b12, "build"), x);
    assert_eq!(fs.getattr(b12).unwrap().nlink, 3);
    let log = ino(&fs, x.ino, "log.txt");
    assert_eq!(log >> 40, 1, "build 12's files live in slot 1");
    assert_eq!(xattr(&fs, log, "artifact_id").as_deref(), Some("a12"));
    // Reads carry the build's number to the remote (a pipeline mount holds several).
    let fh_log = fs.open(log, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(log, fh_log, 0, 4096).await.unwrap(), content("a12"));
    fs.release(fh_log);
    assert_eq!(
        *env.remote.url_calls.lock().unwrap(),
        [("a12".to_string(), 12)]
    );

    // A build root's `..` is the mount root; a job directory's `..` is the build root.
    let l = fs.listing_cached(b12, fh, 0).unwrap().unwrap();
    assert_eq!(
        entries(&l),
        vec![
            e(".", b12, Kind::Dir),
            e("..", ROOT_INO, Kind::Dir),
            e("build", x.ino, Kind::Dir),
        ]
    );
    let l = fs.listing_cached(x.ino, fh, 0).unwrap().unwrap();
    assert_eq!(names(&l), [".", "..", "log.txt"]);
    assert_eq!(l[1].ino, b12);

    // `ls` of an unlisted build lists it (once).
    let l = fs.listing(b11, fh, 0).await.unwrap();
    assert_eq!(names(&l), [".", "..", "build"]);
    assert_eq!(l[1].ino, ROOT_INO);
    assert_eq!(env.lister.list_build_count(11), 1);
    fs.listing(b11, fh, 0).await.unwrap();
    assert_eq!(env.lister.list_build_count(11), 1);

    // Links.
    assert_eq!(fs.readlink_cached(2), Some(Ok("12".to_string())));
    assert_eq!(fs.readlink(3).await.unwrap(), "10");
    assert_eq!(fs.readlink_cached(4), Some(Ok("11".to_string())));
    let latest = attr(&fs, ROOT_INO, "latest");
    assert_eq!(
        (latest.ino, latest.kind, latest.size),
        (2, Kind::Symlink, 2)
    );
    assert_eq!(fs.getattr(3).unwrap(), attr(&fs, ROOT_INO, "latest-passed"));
    assert_eq!(fs.readlink_cached(ROOT_INO), Some(Err(FsError::Invalid)));
    assert_eq!(fs.readlink_cached(b12), Some(Err(FsError::Invalid)));
    assert_eq!(fs.readlink_cached(5), Some(Err(FsError::NotFound)));
    assert_eq!(fs.getattr(5), Err(FsError::NotFound));
    assert_eq!(fs.lookup_cached(2, name("x")), Some(Err(FsError::NotDir)));
    assert_eq!(fs.opendir(2), Err(FsError::NotDir));
    assert_eq!(env.lister.list_builds_count(), 1, "the root is fresh");

    // A number outside the listing: one get_build, then from memory.
    let a5 = fs.lookup(ROOT_INO, name("5")).await.unwrap();
    assert_eq!((a5.ino, a5.kind), (global(4, ROOT_INO), Kind::Dir));
    assert_eq!(env.lister.get_build_calls(), [5]);
    assert_eq!(attr(&fs, ROOT_INO, "5"), a5);
    assert_eq!(fs.lookup(ROOT_INO, name("5")).await.unwrap(), a5);
    assert_eq!(env.lister.get_build_calls(), [5]);
    assert_eq!(env.lister.list_build_count(5), 0);
    assert_eq!(fs.lookup_cached(a5.ino, name("build")), None);
    let job5 = fs.lookup(a5.ino, name("build")).await.unwrap();
    assert_eq!(job5.ino >> 40, 4);
    assert_eq!(env.lister.list_build_count(5), 1);
    let l = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert!(!names(&l).contains(&"5".to_string()), "found by name only");

    // An unknown number: one get_build, and the 404 is remembered.
    assert_eq!(fs.lookup_cached(ROOT_INO, name("99")), None);
    assert_eq!(
        fs.lookup(ROOT_INO, name("99")).await,
        Err(FsError::NotFound)
    );
    assert_eq!(env.lister.get_build_calls(), [5, 99]);
    assert_eq!(
        fs.lookup(ROOT_INO, name("99")).await,
        Err(FsError::NotFound)
    );
    assert_eq!(
        fs.lookup_cached(ROOT_INO, name("99")),
        Some(Err(FsError::NotFound))
    );
    assert_eq!(env.lister.get_build_calls(), [5, 99]);

    // Names that are not canonical build numbers: ENOENT without a request.
    for n in [
        "007",
        "05",
        "0",
        "+5",
        "-1",
        "foo",
        "1e3",
        "",
        " 5",
        "99999999999999999999999",
    ] {
        assert_eq!(
            fs.lookup_cached(ROOT_INO, name(n)),
            Some(Err(FsError::NotFound)),
            "{n:?}"
        );
        assert_eq!(
            fs.lookup(ROOT_INO, name(n)).await,
            Err(FsError::NotFound),
            "{n:?}"
        );
    }
    assert_eq!(env.lister.get_build_calls(), [5, 99]);
    assert_eq!(env.lister.list_build_total(), 3);
    assert_eq!(env.lister.list_builds_count(), 1);
}

#[tokio::test]
async fn pipeline_concurrent_lookups_of_a_new_number_call_get_build_once() {
    let env = pipeline_env();
    let fs = env.pipeline(3, FAR).await;
    env.lister.set_delay(Duration::from_millis(50));
    let (x, y) = tokio::join!(
        fs.lookup(ROOT_INO, name("5")),
        fs.lookup(ROOT_INO, name("5"))
    );
    assert_eq!(x.unwrap(), y.unwrap());
    assert_eq!(env.lister.get_build_calls(), [5]);
}

/// Concurrent lookups of a number the API does not know cost one request: the lookups that
/// waited find the remembered 404.
#[tokio::test]
async fn pipeline_concurrent_lookups_of_a_missing_number_call_get_build_once() {
    let env = pipeline_env();
    let fs = env.pipeline(3, FAR).await;
    env.lister.set_delay(Duration::from_millis(50));
    let (x, y) = tokio::join!(
        fs.lookup(ROOT_INO, name("99")),
        fs.lookup(ROOT_INO, name("99"))
    );
    assert_eq!((x, y), (Err(FsError::NotFound), Err(FsError::NotFound)));
    assert_eq!(env.lister.get_build_calls(), [99]);
}

#[tokio::test]
async fn pipeline_link_without_target_is_not_listed() {
    let env = Env::new();
    let jobs = [job("j1", "Build")];
    // Fewer builds than the limit: no extra request for the missing state.
    env.lister
        .set_builds(vec![build(3, "running", &jobs), build(2, "passed", &jobs)]);
    let fs = env.pipeline(5, FAR).await;
    assert_eq!(env.lister.list_builds_count(), 1);
    let fh = fs.opendir(ROOT_INO).unwrap();
    let l = fs.listing_cached(ROOT_INO, fh, 0).unwrap().unwrap();
    assert_eq!(names(&l), [".", "..", "latest", "latest-passed", "3", "2"]);
    assert_eq!(
        fs.lookup_cached(ROOT_INO, name("latest-failed")),
        Some(Err(FsError::NotFound))
    );
    assert_eq!(fs.readlink_cached(4), Some(Err(FsError::NotFound)));
    assert_eq!(fs.readlink_cached(3), Some(Ok("2".to_string())));
    assert_eq!(env.lister.list_builds_count(), 1);
}
