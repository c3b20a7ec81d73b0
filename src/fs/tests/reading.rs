//! Reading: bytes, open files outliving their artifact, sibling prefetch, delete.

use super::*;

#[tokio::test]
async fn read_serves_bytes_and_open_files_outlive_their_artifact() {
    let env = Env::new();
    let jobs = [job("j1", "Build"), job("j2", "Test")];
    let running = build(7, "running", &jobs);
    let fs = env.single(
        7,
        &listing(
            &running,
            vec![
                artifact("a1", "j1", "log.txt"),
                artifact("a2", "j2", "junit.xml"),
                artifact("a3", "j1", "zzz.txt"),
            ],
        ),
        cfg(Duration::from_millis(40), false),
    );
    fs.start();
    let bd = ino(&fs, ROOT_INO, "build");
    let test = ino(&fs, ROOT_INO, "test");
    let log = ino(&fs, bd, "log.txt");
    let junit = ino(&fs, test, "junit.xml");
    let data = content("a1");

    let fh = fs.open(log, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(log, fh, 0, 4096).await.unwrap(), data);
    assert_eq!(fs.read(log, fh, 3, 5).await.unwrap(), data[3..8]);
    assert_eq!(
        fs.read(log, fh, data.len() as u64, 10).await.unwrap().len(),
        0
    );
    assert_eq!(env.remote.fetches_of("a1"), 1, "one fetch, then memory");
    // The other file is opened but never read.
    let fh2 = fs.open(junit, libc::O_RDONLY).unwrap();
    assert_ne!(fh, fh2);

    // Both artifacts disappear from the live build.
    env.lister
        .set_listing(7, listing(&running, vec![artifact("a3", "j1", "zzz.txt")]));
    wait_until("the refresh", || gone(&fs, bd, "log.txt")).await;
    assert!(gone(&fs, ROOT_INO, "test"));
    assert_eq!(fs.getattr(log), Err(FsError::NotFound));
    assert_eq!(fs.open(log, libc::O_RDONLY), Err(FsError::NotFound));

    // The open handle still reads what is cached, without a request.
    assert_eq!(fs.read(log, fh, 0, 4096).await.unwrap(), data);
    assert_eq!(fs.read(log, fh, 5, 3).await.unwrap(), data[5..8]);
    assert_eq!(env.remote.fetches_of("a1"), 1);
    // Bytes never fetched cannot be fetched any more.
    assert_eq!(fs.read(junit, fh2, 0, 4096).await, Err(FsError::NotFound));
    assert_eq!(env.remote.fetches_of("a2"), 0);
    assert_eq!(env.remote.url_calls_of("a2"), 0);
    // Once released, the old inode is just gone.
    fs.release(fh);
    assert_eq!(fs.read(log, fh, 0, 4096).await, Err(FsError::NotFound));
    fs.release(fh2);
    assert_eq!(env.remote.fetches_of("a3"), 0);
}

#[tokio::test]
async fn read_without_open_and_with_a_handle_of_another_file() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let fs = env.single(
        7,
        &listing(
            &b,
            vec![artifact("a1", "j1", "a.txt"), artifact("a2", "j1", "b.txt")],
        ),
        cfg(FAR, false),
    );
    let bd = ino(&fs, ROOT_INO, "build");
    let (a, b2) = (ino(&fs, bd, "a.txt"), ino(&fs, bd, "b.txt"));
    assert_eq!(fs.read(a, 12345, 0, 100).await.unwrap(), content("a1"));
    let fh = fs.open(a, libc::O_RDONLY).unwrap();
    // A handle of another inode is ignored: the inode's current file is read.
    assert_eq!(fs.read(b2, fh, 0, 100).await.unwrap(), content("a2"));
    assert_eq!(fs.read(bd, fh, 0, 100).await, Err(FsError::IsDir));
    assert_eq!(fs.read(9999, fh, 0, 100).await, Err(FsError::NotFound));
}

#[tokio::test]
async fn opening_files_in_name_order_prefetches_the_next_sibling() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let fs = env.single(
        7,
        &listing(
            &b,
            vec![
                artifact("a1", "j1", "1.txt"),
                artifact("a2", "j1", "2.txt"),
                artifact("a3", "j1", "3.txt"),
                artifact("a4", "j1", "4.txt"),
            ],
        ),
        cfg(FAR, false),
    );
    let bd = ino(&fs, ROOT_INO, "build");
    fs.open(ino(&fs, bd, "1.txt"), libc::O_RDONLY).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        env.remote.fetches.lock().unwrap().len(),
        0,
        "first open: none"
    );
    fs.open(ino(&fs, bd, "2.txt"), libc::O_RDONLY).unwrap();
    wait_until("the prefetch", || env.remote.fetches_of("a3") == 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(env.remote.fetches_of("a4"), 0, "a window of one");
    assert_eq!(
        env.remote.fetches_of("a2"),
        0,
        "the opened file itself waits for read"
    );
}

#[tokio::test]
async fn unlink_deletes_through_the_remote() {
    let env = Env::new();
    let b = build(7, "passed", &[job("j1", "Build")]);
    let fs = env.single(
        7,
        &listing(
            &b,
            vec![
                artifact("a1", "j1", "log.txt"),
                artifact("a2", "j1", "out/app.bin"),
            ],
        ),
        cfg(FAR, true),
    );
    let bd = ino(&fs, ROOT_INO, "build");
    let log = ino(&fs, bd, "log.txt");
    let out = ino(&fs, bd, "out");
    let fh = fs.open(log, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(log, fh, 0, 4096).await.unwrap(), content("a1"));

    assert_eq!(fs.unlink(bd, name("out")).await, Err(FsError::IsDir));
    assert_eq!(fs.unlink(bd, name("nope")).await, Err(FsError::NotFound));
    fs.unlink(bd, name("log.txt")).await.unwrap();
    assert_eq!(*env.remote.deletes.lock().unwrap(), ["a1"]);
    assert!(gone(&fs, bd, "log.txt"));
    // Even cached bytes of a deleted artifact are not served.
    assert_eq!(fs.read(log, fh, 0, 4096).await, Err(FsError::NotFound));

    assert_eq!(fs.rmdir(bd, name("out")), Err(FsError::NotEmpty));
    fs.unlink(out, name("app.bin")).await.unwrap();
    fs.rmdir(bd, name("out")).unwrap();
    assert!(gone(&fs, bd, "out"));
    assert_eq!(fs.rmdir(bd, name("out")), Err(FsError::NotFound));
    assert_eq!(fs.statfs().files, 2);
    assert!(env.kernel.events().is_empty());
}
