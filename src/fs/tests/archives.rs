//! `NAME#` over the doubles: lookups racing for an archive's first index.

use super::*;

fn zip_bytes() -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..50 {
        w.start_file(
            format!("d/f{i}.txt"),
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        w.write_all(format!("file {i}\n").as_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Artifact `id` (job j1) at `path` whose bytes are [`zip_bytes`] (for the remote to serve).
fn zip_artifact(id: &str, path: &str) -> Artifact {
    let data = zip_bytes();
    let mut a = artifact(id, "j1", path);
    a.file_size = Some(data.len() as u64);
    a.sha1sum = Some(hex::encode(Sha1::digest(&data)));
    a
}

/// The kernel merges concurrent lookups of one name, so a mount test cannot race them;
/// here eight first lookups of `r.zip#` run at once over a slow remote, and exactly one
/// builds the index while the others wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_first_lookups_build_an_archive_index_once() {
    let env = Env::new();
    let a = zip_artifact("z1", "r.zip");
    let b = build(3, "passed", &[job("j1", "Build")]);
    let fs = env.single(3, &listing(&b, vec![a]), cfg(FAR, false));
    env.remote.put("z1", zip_bytes());
    env.remote.set_delay(Duration::from_millis(150));
    let dir = ino(&fs, ROOT_INO, "build");
    let lookups: Vec<_> = (0..8)
        .map(|_| {
            let fs = fs.clone();
            tokio::spawn(async move { fs.lookup(dir, name("r.zip#")).await })
        })
        .collect();
    let mut roots = BTreeSet::new();
    for l in lookups {
        let a = l.await.unwrap().expect("r.zip#");
        assert_eq!(a.kind, Kind::Dir);
        roots.insert(a.ino);
    }
    assert_eq!(roots.len(), 1, "one inode for r.zip#");
    assert_eq!(fs.archives.indexes_built(), 1, "the index was built once");
    let root = *roots.first().unwrap();
    let d = fs.lookup(root, name("d")).await.unwrap();
    let fh = fs.opendir(d.ino).unwrap();
    assert_eq!(fs.listing(d.ino, fh, 0).await.unwrap().len(), 2 + 50);
    assert_eq!(fs.archives.indexes_built(), 1);
}

/// An evicted build's archives leave memory (index, access points, cursors), but not while
/// one of their entries is open. The inodes the kernel holds stay valid: a request on one
/// loads the index again first (as the FUSE adapter does for every inode of an evicted
/// build), with the same inode numbers.
#[tokio::test]
async fn an_evicted_builds_archives_leave_memory() {
    let env = pipeline_env();
    let z = zip_artifact("z11", "r.zip");
    env.remote.put("z11", zip_bytes());
    let b11 = build(11, "failed", &[job("j1", "Build")]);
    env.lister
        .set_listing(11, listing(&b11, vec![artifact("a11", "j1", "log.txt"), z]));
    let fs = env.pipeline(3, FAR).await;
    fs.set_resident_builds(1);
    fs.set_evict_after(Duration::ZERO);
    let use_build = |number: &'static str| {
        let fs = fs.clone();
        async move {
            let b = fs.lookup(ROOT_INO, name(number)).await.unwrap().ino;
            fs.lookup(b, name("build")).await.unwrap();
        }
    };

    let d11 = fs.lookup(global(2, ROOT_INO), name("build")).await.unwrap();
    let root = fs.lookup(d11.ino, name("r.zip#")).await.unwrap();
    let d = fs.lookup(root.ino, name("d")).await.unwrap();
    let f = fs.lookup(d.ino, name("f7.txt")).await.unwrap();
    assert_eq!(fs.archives.in_memory(), 1);
    // An entry is open: build 11 stays, and so does its archive's index.
    let fh = fs.open(f.ino, libc::O_RDONLY).unwrap();
    use_build("5").await;
    assert_eq!(fs.archives.in_memory(), 1, "an entry is open");
    assert_eq!(&fs.read(f.ino, fh, 0, 100).await.unwrap()[..], b"file 7\n");
    fs.release(fh);
    // Closed: the next eviction (another build is listed) takes the build and the index.
    use_build("12").await;
    assert_eq!(fs.resident_builds(), 1);
    assert_eq!(fs.archives.in_memory(), 0, "the index left with its build");
    // The inodes held from before: evicted, loaded again on the next request, unchanged.
    for ino in [root.ino, d.ino, f.ino] {
        assert!(fs.is_evicted(ino), "{ino:#x}");
    }
    fs.reload(d.ino).await.unwrap();
    assert!(!fs.is_evicted(f.ino));
    assert_eq!(fs.getattr(f.ino).unwrap(), f);
    let fh = fs.opendir(d.ino).unwrap();
    assert_eq!(fs.listing(d.ino, fh, 0).await.unwrap().len(), 2 + 50);
    let fh = fs.open(f.ino, libc::O_RDONLY).unwrap();
    assert_eq!(&fs.read(f.ino, fh, 0, 100).await.unwrap()[..], b"file 7\n");
    fs.release(fh);
    // Dropped again while a file is open elsewhere: a read loads the index itself.
    let fh = fs.open(f.ino, libc::O_RDONLY).unwrap();
    fs.archives.forget(|_| true);
    assert_eq!(&fs.read(f.ino, fh, 2, 100).await.unwrap()[..], b"le 7\n");
    // A new path walk finds the same inodes.
    let d11 = fs.lookup(global(2, ROOT_INO), name("build")).await.unwrap();
    assert_eq!(
        fs.lookup(d11.ino, name("r.zip#")).await.unwrap().ino,
        root.ino
    );
    assert_eq!(fs.archives.in_memory(), 1);
}

/// Deleting an archive artifact (`--allow-delete`) takes its `NAME#` with it: held inodes
/// inside answer `ENOENT`, the kernel is told to forget the name, and a lookup finds nothing.
#[tokio::test]
async fn deleting_an_archive_takes_its_name_hash_along() {
    let env = Env::new();
    let a = zip_artifact("z1", "r.zip");
    let b = build(3, "passed", &[job("j1", "Build")]);
    let fs = env.single(3, &listing(&b, vec![a]), cfg(FAR, true));
    env.remote.put("z1", zip_bytes());
    let dir = ino(&fs, ROOT_INO, "build");
    let root = fs.lookup(dir, name("r.zip#")).await.unwrap();
    let d = fs.lookup(root.ino, name("d")).await.unwrap();
    let f = fs.lookup(d.ino, name("f1.txt")).await.unwrap();
    env.kernel.clear();
    fs.unlink(dir, name("r.zip")).await.unwrap();
    assert_eq!(env.remote.deletes.lock().unwrap().as_slice(), ["z1"]);
    for i in [root.ino, d.ino, f.ino] {
        assert_eq!(fs.getattr(i), Err(FsError::NotFound), "{i:#x}");
    }
    assert!(env.kernel.entries().contains(&(dir, "r.zip#".to_string())));
    let told = env.kernel.inodes();
    assert!([root.ino, d.ino, f.ino].iter().all(|i| told.contains(i)));
    assert_eq!(
        fs.lookup(dir, name("r.zip#")).await.map(|a| a.ino),
        Err(FsError::NotFound)
    );
    assert_eq!(fs.archives.in_memory(), 0);
}
