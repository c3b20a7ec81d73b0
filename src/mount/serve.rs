//! Serving: the runtime, the wiring of cache, reader, logs and filesystem, the FUSE session,
//! the mount options, and the wait for a signal or the session's end, then the unmount.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};

use super::daemon::Ready;
use super::startup::{prepare, Fetched};
use super::{is_mount_point, lazy_unmount, MountPlan};
use crate::content::cache::DiskCache;
use crate::content::{Reader, ReaderConfig};
use crate::fs::{Fs, FsConfig};
use crate::fuse::{FuseFs, KernelNotifier};
use crate::joblog::{LogConfig, LogStore};

pub(super) fn serve(plan: MountPlan, mountpoint: PathBuf, mut ready: Ready) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .max_blocking_threads(8)
        .enable_all()
        .thread_name("bkfs-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            ready.fail(&format!("cannot start the runtime: {e}"));
            return 1;
        }
    };
    let progress =
        crate::progress::begin(plan.progress, &plan.target, ready.0.as_ref(), rt.handle());
    let prepared = rt.block_on(prepare(&plan));
    if let Some(p) = progress {
        p.finish();
    }
    let prepared = match prepared {
        Ok(p) => p,
        Err(m) => {
            ready.fail(&m);
            return 1;
        }
    };
    let disk = if plan.cache_size == 0 {
        None
    } else {
        match DiskCache::open(&plan.cache_dir, plan.cache_size) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                ready.fail(&format!(
                    "cannot use the cache directory {}: {e} (choose another with --cache-dir)",
                    plan.cache_dir.display()
                ));
                return 1;
            }
        }
    };
    let logs = match (prepared.logs, plan.log_format) {
        (true, Some(format)) => Some(LogStore::new(
            prepared.source.clone(),
            disk.clone(),
            LogConfig {
                format,
                refresh: plan.refresh,
                read_timeout: plan.read_timeout,
            },
            rt.handle().clone(),
        )),
        _ => None,
    };
    let reader = Reader::new(
        prepared.source.clone(),
        ReaderConfig {
            read_timeout: plan.read_timeout,
            memory_limit: plan.memory_limit.max(1 << 20),
            ..ReaderConfig::default()
        },
        disk,
    );
    let reader_for_exit = reader.clone();
    let source_for_status = prepared.source.clone();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let fs_cfg = FsConfig {
        uid,
        gid,
        allow_delete: plan.allow_delete,
        refresh: plan.refresh,
    };
    let fs = match prepared.fetched {
        Fetched::Build(n, listing) => {
            Fs::single(n, &listing, prepared.source, reader, logs, fs_cfg)
        }
        Fetched::Pipeline(builds, links) => Fs::pipeline(
            builds,
            links,
            plan.builds,
            plan.branch.clone(),
            prepared.source,
            reader,
            logs,
            fs_cfg,
        ),
    };
    fs.set_list_archives(plan.list_archives);
    fs.set_resident_builds(plan.resident_builds);
    fs.set_evict_after(plan.evict_after);
    let mut cfg = Config::default();
    cfg.mount_options = mount_options(&plan);
    cfg.acl = if plan.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    cfg.n_threads = Some(2);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let session = match fuser::Session::new(
        FuseFs::new(fs.clone(), rt.handle().clone()).signal_end(ended_tx),
        &mountpoint,
        &cfg,
    ) {
        Ok(s) => s,
        Err(e) => {
            let hint = if !Path::new("/dev/fuse").exists() {
                " (/dev/fuse is missing: load the module with `modprobe fuse`; in a container, pass the device, e.g. `--device /dev/fuse`)"
            } else if plan.allow_other {
                " (--allow-other needs user_allow_other in /etc/fuse.conf)"
            } else {
                ""
            };
            ready.fail(&format!(
                "cannot mount on {}: {e}{hint}",
                plan.mountpoint.display()
            ));
            return 1;
        }
    };
    let bg = match session.spawn() {
        Ok(bg) => bg,
        Err(e) => {
            ready.fail(&format!("cannot start the FUSE session: {e}"));
            return 1;
        }
    };
    match KernelNotifier::new(bg.notifier()) {
        Ok(k) => fs.set_kernel(Arc::new(k)),
        Err(e) => {
            tracing::warn!(error = %e, "no kernel notifier: running builds update only as the kernel's caches expire")
        }
    }
    {
        let _rt = rt.enter();
        fs.start();
    }
    tracing::info!(mountpoint = %mountpoint.display(), target = %plan.target, "mounted");
    super::readahead::raise(&mountpoint);
    let graphql_on = move || source_for_status.graphql_enabled();
    let _control = crate::control::start(
        &plan.api_url,
        &plan.target.to_string(),
        &mountpoint,
        graphql_on,
        rt.handle(),
    );
    ready.ok();

    // `bg` is never dropped or joined: its Drop unmounts the path once more with umount(2),
    // after fusermount3 already did (the false "Unmount failed: Invalid argument" warning; fuser
    // takes a dead connection for a live mount), and by then the path could be another mount.
    // The session's end is seen through `ended_rx` instead; exiting ends fuser's thread.
    let done_rx = ended_rx;
    let signalled = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        let mut done_rx = done_rx;
        tokio::select! {
            _ = term.recv() => Err(done_rx),
            _ = int.recv() => Err(done_rx),
            _ = hup.recv() => Err(done_rx),
            r = &mut done_rx => Ok(r),
        }
    });
    let code = match signalled {
        Ok(_) => {
            if is_mount_point(&mountpoint) {
                // The session ended by itself (an error): don't leave a dead mount behind.
                tracing::warn!("the FUSE session ended; detaching the mount");
                lazy_unmount(&mountpoint);
            }
            tracing::info!("unmounted; exiting");
            0
        }
        Err(done_rx) => {
            tracing::info!("signal received; unmounting");
            // fuser's own unmounter is detached from the session by `spawn`, so unmount the
            // way a user would: a clean unmount, else a lazy one if something holds it busy.
            let clean = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-q")
                .arg(&mountpoint)
                .status()
                .is_ok_and(|s| s.success());
            if !clean {
                tracing::warn!("clean unmount failed (busy?); detaching lazily");
                lazy_unmount(&mountpoint);
            }
            // Give in-flight reads a moment to be answered; after a lazy unmount the session
            // lives on while files stay open, and exiting closes it (their next request gets
            // an error). Either way the mount is gone: a clean exit.
            let ended = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(2), done_rx)
                    .await
                    .is_ok()
            });
            if ended {
                tracing::info!("unmounted; exiting");
            } else {
                tracing::info!("unmounted; exiting (the mount was detached while files were open)");
            }
            0
        }
    };
    rt.block_on(reader_for_exit.flush(Duration::from_secs(5)));
    rt.shutdown_timeout(Duration::from_secs(1));
    crate::logging::report_dropped();
    std::mem::forget(bg);
    code
}

/// `ro` unless deletes are allowed (the kernel refuses every write on a `ro` mount itself,
/// unlink included, so `--allow-delete` needs `rw`; bkfs then refuses the other writes with
/// EROFS). `subtype=bkfs` as a plain option: the kernel takes it on a direct mount(2), and
/// fusermount3 turns it into the type `fuse.bkfs` (fuser's `Subtype` is dropped on the
/// direct path).
fn mount_options(plan: &MountPlan) -> Vec<MountOption> {
    vec![
        MountOption::FSName(format!("bkfs:{}", plan.target)),
        MountOption::CUSTOM("subtype=bkfs".into()),
        if plan.allow_delete {
            MountOption::RW
        } else {
            MountOption::RO
        },
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ]
}
