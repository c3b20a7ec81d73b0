//! `scripts/bench --archives`: the `NAME#` rows of issue 12, each against a baseline timed in
//! the same run (`unzip` through bkfs's plain file, curl plus `unzip`/`tar` of a local copy).

use std::path::Path;
use std::time::Duration;

use bkfs_fake::{FakeBuild, FakeServer};

use super::{drop_caches, median, mount, noise, sh, signed_url, time, Row};

/// Archive artifacts (`NAME#`), throttled storage (30 ms first byte, 80 MB/s): a stored zip
/// and a tar.gz of `entries` incompressible files (200 MiB in all), made with the system's
/// `zip` and `tar`. Each bkfs figure is a fresh mount with a cold cache.
pub fn archive_rows(
    server: &FakeServer,
    w: &Path,
    entries: usize,
    runs: usize,
    rows: &mut Vec<Row>,
) {
    let total: u64 = 200 << 20;
    let each = total / entries as u64;
    eprintln!(
        "preparing a {entries}-entry, {} MiB zip and tar.gz ...",
        total >> 20
    );
    let src = w.join("arch-src");
    for i in 0..entries {
        let d = src.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i:05}.bin")), noise(each, i as u64 + 1)).unwrap();
    }
    let zip = w.join("a.zip");
    let tgz = w.join("a.tar.gz");
    sh(&format!(
        "cd {} && zip -0 -q -r {} .",
        src.display(),
        zip.display()
    ));
    sh(&format!("tar czf {} -C {} .", tgz.display(), src.display()));
    let _ = std::fs::remove_dir_all(&src);
    let mut b = FakeBuild::new("bench", "arch", 1);
    let job = b.add_job("Arch");
    let zart = b.add_artifact(&job, "a.zip", std::fs::read(&zip).unwrap());
    let tart = b.add_artifact(&job, "a.tar.gz", std::fs::read(&tgz).unwrap());
    server.add_build(b);
    server.set_storage_latency(Duration::from_millis(30));
    server.set_storage_bandwidth(80_000_000);
    server.set_api_latency(Duration::from_millis(20));
    let local = w.join("arch-local.zip");
    let entry = format!("d042/f{:05}.bin", 42 + 100 * (entries / 200));
    let cold = |f: &dyn Fn(&Path)| -> f64 {
        let cache = w.join("arch-cache");
        let m = mount(server, "bench/arch/1", &w.join("mnt"), &cache, &[]);
        drop_caches();
        let t = time(|| f(&m.mnt.join("arch")));
        drop(m);
        let _ = std::fs::remove_dir_all(&cache);
        t
    };
    let med = |f: &dyn Fn() -> f64| median((0..runs).map(|_| f()).collect());
    let ls_r = med(&|| {
        cold(&|j: &Path| {
            sh(&format!("ls -R {}/a.zip# > /dev/null", j.display()));
        })
    });
    let unzip_plain = med(&|| {
        cold(&|j: &Path| {
            sh(&format!("unzip -l {}/a.zip > /dev/null", j.display()));
        })
    });
    let curl_unzip = med(&|| {
        let url = signed_url(server, "bench", "arch", 1, &job, &zart);
        time(|| {
            sh(&format!(
                "curl -s -o {} '{url}' && unzip -l {} > /dev/null",
                local.display(),
                local.display()
            ));
        })
    });
    rows.push(Row {
        name: format!(
            "list a {entries}-entry 200 MiB zip: `ls -R NAME#` vs `unzip -l` of NAME through bkfs"
        ),
        bkfs: format!("{:.2} s", ls_r),
        baseline: format!("{:.2} s", unzip_plain),
        ratio: unzip_plain / ls_r,
        target: ">= 1x".into(),
        ok: unzip_plain / ls_r >= 1.0,
    });
    rows.push(Row {
        name: format!("list a {entries}-entry 200 MiB zip: `ls -R NAME#` vs curl + `unzip -l`"),
        bkfs: format!("{:.2} s", ls_r),
        baseline: format!("{:.2} s", curl_unzip),
        ratio: curl_unzip / ls_r,
        target: ">= 5x".into(),
        ok: curl_unzip / ls_r >= 5.0,
    });
    let cat = med(&|| {
        cold(&|j: &Path| {
            sh(&format!("cat {}/a.zip#/{entry} > /dev/null", j.display()));
        })
    });
    let curl_p = med(&|| {
        let url = signed_url(server, "bench", "arch", 1, &job, &zart);
        time(|| {
            sh(&format!(
                "curl -s -o {} '{url}' && unzip -p {} {entry} > /dev/null",
                local.display(),
                local.display()
            ));
        })
    });
    rows.push(Row {
        name: "read one small zip entry cold vs curl of the archive + `unzip -p`".into(),
        bkfs: format!("{:.2} s", cat),
        baseline: format!("{:.2} s", curl_p),
        ratio: curl_p / cat,
        target: ">= 5x".into(),
        ok: curl_p / cat >= 5.0,
    });
    let index = med(&|| {
        cold(&|j: &Path| {
            sh(&format!("ls {}/a.tar.gz# > /dev/null", j.display()));
        })
    });
    let curl_tar = med(&|| {
        let url = signed_url(server, "bench", "arch", 1, &job, &tart);
        time(|| {
            sh(&format!("curl -s '{url}' | tar tz > /dev/null"));
        })
    });
    rows.push(Row {
        name: "index a 200 MiB tar.gz (`ls NAME#`, cold) vs `curl | tar tz`".into(),
        bkfs: format!("{:.2} s", index),
        baseline: format!("{:.2} s", curl_tar),
        ratio: curl_tar / index,
        target: ">= 0.5x".into(),
        ok: curl_tar / index >= 0.5,
    });
    // One entry near the end of the tar.gz, its index persisted by an earlier mount but none
    // of its bytes cached: read from the nearest gzip access point.
    let last = sh(&format!(
        "tar tzf {} | grep -v '/$' | tail -1",
        tgz.display()
    ));
    let last = last.trim().trim_start_matches("./").to_string();
    let from_point = med(&|| {
        let cache = w.join("arch-cache");
        let mnt = w.join("mnt");
        {
            let m = mount(server, "bench/arch/1", &mnt, &cache, &[]);
            sh(&format!(
                "ls {}/arch/a.tar.gz# > /dev/null",
                m.mnt.display()
            ));
        }
        // Keep only what bkfs derived (index, access points: keys with a '.').
        for e in std::fs::read_dir(cache.join("v1"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            if n != "tmp" && !n.contains('.') {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let m = mount(server, "bench/arch/1", &mnt, &cache, &[]);
        drop_caches();
        let t = time(|| {
            sh(&format!(
                "cat '{}/arch/a.tar.gz#/{last}' > /dev/null",
                m.mnt.display()
            ));
        });
        drop(m);
        let _ = std::fs::remove_dir_all(&cache);
        t
    });
    let curl_xz = med(&|| {
        let url = signed_url(server, "bench", "arch", 1, &job, &tart);
        time(|| {
            sh(&format!("curl -s '{url}' | tar xzO './{last}' > /dev/null"));
        })
    });
    rows.push(Row {
        name: "read the last entry of a 200 MiB tar.gz (index persisted, data cold) vs `curl | tar xzO`".into(),
        bkfs: format!("{:.2} s", from_point),
        baseline: format!("{:.2} s", curl_xz),
        ratio: curl_xz / from_point,
        target: ">= 5x".into(),
        ok: curl_xz / from_point >= 5.0,
    });
    let _ = std::fs::remove_file(&local);
    server.set_storage_latency(Duration::ZERO);
    server.set_storage_bandwidth(0);
    server.set_api_latency(Duration::ZERO);
}
