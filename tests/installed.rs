//! Run by `scripts/package --check` while the Debian package is installed (`test = false`
//! in Cargo.toml: a plain `cargo test` skips it): the issue's own command lines through
//! the packaged /usr/sbin/mount.fuse.bkfs helper and the real mount(8), type `fuse.bkfs`.

#[path = "it/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::builds::small_build;
use common::*;

fn setup(number: u64) -> (FakeServer, Scratch, common::builds::Expect, String) {
    assert_eq!(
        std::fs::read_link("/usr/sbin/mount.fuse.bkfs")
            .ok()
            .as_deref(),
        Some(std::path::Path::new("../bin/bkfs")),
        "the package is not installed"
    );
    let server = server();
    let (fb, exp) = small_build(number);
    server.add_build(fb);
    let scratch = Scratch::new();
    let tf = scratch.dir.path().join("token");
    std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let opts = format!(
        "token_file={},api_url={},cache_dir={},log_file={}",
        tf.display(),
        server.api_url(),
        scratch.cache().display(),
        scratch.log().display()
    );
    (server, scratch, exp, opts)
}

fn guard(scratch: &Scratch) -> Mount {
    Mount {
        mnt: scratch.mnt(),
        log: scratch.log(),
        stdout: String::new(),
        stderr: String::new(),
    }
}

/// `mount -t fuse.bkfs ORG/PIPE/N MNT -o ro,token_file=...,cache_size=5GiB,allow_delete`.
#[test]
fn mount_t_fuse_bkfs() {
    let (_server, scratch, exp, opts) = setup(70);
    let _g = guard(&scratch);
    let mnt = scratch.mnt();
    bounded(LIMIT, move || {
        let o = run(Command::new("mount")
            .arg("-t")
            .arg("fuse.bkfs")
            .arg("acme/web-app/70")
            .arg(&mnt)
            .arg("-o")
            .arg(format!("ro,{opts},cache_size=5GiB,allow_delete")));
        assert!(o.status.success(), "{o:?}");
        assert_eq!(
            std::fs::read(mnt.join("build/notes.txt")).unwrap(),
            exp.files["build/notes.txt"].content
        );
        let pids = daemon_pids(&mnt);
        assert_eq!(pids.len(), 1, "{pids:?}");
        let exe = std::fs::read_link(format!("/proc/{}/exe", pids[0])).unwrap();
        assert_eq!(exe, std::path::Path::new("/usr/bin/bkfs"));
        assert!(run(Command::new("umount").arg(&mnt)).status.success());
        assert!(wait_gone(&mnt, std::time::Duration::from_secs(10)));
    });
}

/// The fstab line `acme/web-app MNT fuse.bkfs noauto,user,token_file=... 0 0` and `mount MNT`.
#[test]
fn fstab_fuse_bkfs() {
    let (_server, scratch, _exp, opts) = setup(71);
    let _g = guard(&scratch);
    let fstab = scratch.dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "acme/web-app {} fuse.bkfs noauto,user,{opts} 0 0\n",
            scratch.mnt().display()
        ),
    )
    .unwrap();
    let mnt = scratch.mnt();
    bounded(LIMIT, move || {
        let o = run(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt));
        assert!(o.status.success(), "{o:?}");
        assert!(ls(&mnt).contains(&"71".to_string()));
        let o = run(Command::new("/usr/bin/bkfs").arg("status").arg(&mnt));
        assert!(o.status.success(), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stdout).contains("acme/web-app"));
    });
}
