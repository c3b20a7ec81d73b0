//! `bkfs demo MOUNTPOINT`: the project's fake Buildkite, in this process on 127.0.0.1, serving
//! a sample build, mounted in the foreground. No token, no network.

use std::path::PathBuf;
use std::time::Duration;

use crate::fake::{demo_build, FakeServer, DEMO_TOKEN};
use crate::mount::MountPlan;
use crate::secret::Token;

pub fn run(mountpoint: PathBuf, verbose: u8) -> i32 {
    // A bad mountpoint is reported before the banner that tells what to do with the mount.
    if let Err(m) = crate::mount::check_mountpoint(&mountpoint) {
        eprintln!("bkfs: error: {m}");
        return 1;
    }
    let server = FakeServer::start();
    server.add_token(
        DEMO_TOKEN,
        &[
            "read_artifacts",
            "read_builds",
            "read_build_logs",
            "write_artifacts",
        ],
    );
    let b = demo_build();
    let build = crate::build_ref::BuildRef {
        org: b.org.clone(),
        pipeline: b.pipeline.clone(),
        number: b.build.number,
    };
    server.add_build(b);
    let cache_dir = std::env::temp_dir().join(format!("bkfs-demo-cache-{}", std::process::id()));
    let m = mountpoint.display();
    println!(
        "bkfs demo: serving the sample build {build} from a local fake Buildkite at {}",
        server.api_url()
    );
    println!("mounting on {m} (foreground; Ctrl-C unmounts). Try, in another shell:");
    println!("  ls -lR {m}");
    println!("  cat {m}/*/log/*.log | head");
    println!("  grep -r ERROR {m}");
    println!("  grep -l FAILED {m}/*.log      # each job's console output");
    println!("  getfattr -d {m}/*/junit.xml 2>/dev/null || getfattr -d -R {m} | head -20");
    println!("  bkfs unmount {m}    # or fusermount3 -u {m}, or Ctrl-C here");
    let plan = MountPlan {
        target: crate::build_ref::Target::Build(build),
        api_url: server.api_url(),
        graphql_url: Some(server.graphql_url()),
        refresh: Duration::from_secs(10),
        builds: 50,
        branch: None,
        token: Token::new(DEMO_TOKEN),
        mountpoint,
        foreground: true,
        allow_delete: false,
        list_archives: false,
        allow_other: false,
        cache_dir: cache_dir.clone(),
        cache_size: 256 << 20,
        memory_limit: crate::content::reader::DEFAULT_MEMORY_LIMIT,
        log_file: cache_dir.join("bkfs.log"),
        verbose,
        read_timeout: Duration::from_secs(30),
        log_format: Some(crate::joblog::LogFormat::Plain),
        progress: false,
    };
    let code = crate::mount::run(plan);
    let _ = std::fs::remove_dir_all(&cache_dir);
    drop(server);
    code
}
