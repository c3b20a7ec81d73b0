//! `bkfs-demo MOUNTPOINT`: starts the project's fake Buildkite on 127.0.0.1 with the sample
//! build, then runs the real `bkfs mount` against it in the foreground, so the demo takes the
//! product's own path (token, REST, GraphQL, storage, cache). No token of yours, no network.
//! Ctrl-C (or SIGINT/SIGTERM to this process) is passed on to `bkfs`, which unmounts and exits.
//!
//! The `bkfs` binary is `$BKFS_BIN` if set, else the `bkfs` next to this executable (cargo
//! builds both into the same `target/<profile>/`), else `bkfs` on `PATH`.

use std::path::PathBuf;
use std::process::ExitCode;

use bkfs_fake::{demo_build, FakeServer, DEMO_TOKEN};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// Mount a built-in sample build served by a local fake Buildkite (no token, no network).
#[derive(Parser)]
#[command(name = "bkfs-demo", version)]
struct Args {
    /// An existing directory to mount on (foreground; Ctrl-C unmounts).
    mountpoint: PathBuf,
    /// More logging (-v debug, -vv trace), passed on to `bkfs mount`.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// More `bkfs mount` options, after `--` (e.g. `-- --list-archives`).
    #[arg(last = true)]
    mount_args: Vec<String>,
}

fn bkfs_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BKFS_BIN") {
        return PathBuf::from(p);
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("bkfs")));
    match sibling {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("bkfs"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mnt = &args.mountpoint;
    let m = mnt.display();
    // A bad mountpoint is reported before the banner that tells what to do with the mount
    // (`bkfs mount` checks it fully again).
    match std::fs::metadata(mnt) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => return fail(&format!("mountpoint {m} is not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(&format!(
                "mountpoint {m} does not exist: create it with `mkdir -p {m}`"
            ))
        }
        Err(e) => return fail(&format!("cannot use mountpoint {m}: {e}")),
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
    let build = format!("{}/{}/{}", b.org, b.pipeline, b.build.number);
    server.add_build(b);
    let cache_dir = std::env::temp_dir().join(format!("bkfs-demo-cache-{}", std::process::id()));
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

    let mut cmd = tokio::process::Command::new(bkfs_binary());
    cmd.arg("mount")
        .arg(&build)
        .arg(mnt)
        .arg("--foreground")
        .arg("--api-url")
        .arg(server.api_url())
        .arg("--graphql-url")
        .arg(server.graphql_url())
        .arg("--cache-dir")
        .arg(&cache_dir)
        .arg("--cache-size")
        .arg("256M")
        .env("BUILDKITE_API_TOKEN", DEMO_TOKEN)
        .env_remove("BUILDKITE_API_URL")
        .env_remove("BUILDKITE_GRAPHQL_URL");
    if args.verbose > 0 {
        cmd.arg(format!("-{}", "v".repeat(args.verbose.min(2) as usize)));
    }
    cmd.args(&args.mount_args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(supervise(cmd));
    let _ = std::fs::remove_dir_all(&cache_dir);
    drop(server);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// Runs `bkfs mount` and passes SIGINT/SIGTERM on to it until it exits; its exit code.
async fn supervise(mut cmd: tokio::process::Command) -> i32 {
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "bkfs-demo: error: cannot run bkfs ({e}): build it with `cargo build`, or set BKFS_BIN"
            );
            return 1;
        }
    };
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("bkfs-demo: error: cannot install signal handlers");
        let _ = child.kill().await;
        return 1;
    };
    loop {
        let sig = tokio::select! {
            st = child.wait() => return st.ok().and_then(|s| s.code()).unwrap_or(1),
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) of our own child, not reaped yet (`id()` is None once it is).
            unsafe { libc::kill(pid as libc::pid_t, sig) };
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("bkfs-demo: error: {message}");
    ExitCode::from(1)
}
