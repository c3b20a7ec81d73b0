//! Shipping like a filesystem tool: `mount -t` and fstab through the real mount(8) and
//! mount.fuse3, the `mount.fuse.bkfs` helper convention, `bkfs status` through a real
//! mount and its control socket, the progress line on a pseudo-terminal, and the man page
//! and completions generated from the CLI.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::builds::{small_build, Builder};
use crate::common::*;

/// A token file in the scratch dir (mount helpers get no environment worth relying on).
fn token_file(scratch: &Scratch) -> PathBuf {
    let p = scratch.dir.path().join("token");
    std::fs::write(&p, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The `-o` options every helper test needs: token file, the fake's API, scratch cache/log.
fn base_opts(server: &FakeServer, scratch: &Scratch) -> String {
    format!(
        "token_file={},api_url={},cache-dir={},log_file={}",
        token_file(scratch).display(),
        server.api_url(),
        scratch.cache().display(),
        scratch.log().display()
    )
}

/// An unmount guard for a mount made by something other than `bkfs mount`.
fn guard(scratch: &Scratch) -> Mount {
    Mount {
        mnt: scratch.mnt(),
        log: scratch.log(),
        stdout: String::new(),
        stderr: String::new(),
    }
}

fn out(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The fstype and source of the mount at `mnt`, from /proc/self/mountinfo.
fn mount_type_and_source(mnt: &Path) -> Option<(String, String)> {
    let abs = std::fs::canonicalize(mnt).ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (pre.split(' ').nth(4)? == abs.to_str()?).then(|| {
            let mut p = post.split(' ');
            (p.next().unwrap().to_string(), p.next().unwrap().to_string())
        })
    })
}

/// fuser 0.18 mounts as root with type `fuse` (its direct mount(2) drops the subtype);
/// `fuse.bkfs` once the subtype is passed. `bkfs status` recognizes both by the `bkfs:` source.
fn assert_bkfs_type(fstype: &str) {
    assert!(fstype == "fuse.bkfs" || fstype == "fuse", "{fstype}");
}

/// `mount -t fuse BKFS#BUILD MNT -o ...`: the real mount(8) runs mount.fuse3, which runs
/// `bkfs BUILD MNT -o OPTS` (the `fuse.bkfs` type does the same with `bkfs` on PATH, or
/// runs the packaged /sbin/mount.fuse.bkfs: see tests/package.rs). It returns once the mount
/// answers; `umount` unmounts it.
#[test]
fn mount_t_through_mount8_and_mount_fuse3() {
    let server = server();
    let (fb, exp) = small_build(60);
    server.add_build(fb);
    let scratch = Scratch::new();
    let _g = guard(&scratch);
    let opts = format!(
        "ro,{},cache_size=5GiB,allow_delete,noauto,_netdev,nofail,x-systemd.automount,users",
        base_opts(&server, &scratch)
    );
    let mnt = scratch.mnt();
    bounded(LIMIT, move || {
        let o = run(Command::new("mount")
            .arg("-t")
            .arg("fuse")
            .arg(format!("{BIN}#acme/web-app/60"))
            .arg(&mnt)
            .arg("-o")
            .arg(&opts)
            .env_remove("BUILDKITE_API_TOKEN"));
        assert!(o.status.success(), "{}", out(&o));
        // Ready when mount returns: no waiting.
        let f = &exp.files["build/notes.txt"];
        assert_eq!(
            std::fs::read(mnt.join("build/notes.txt")).unwrap(),
            f.content
        );
        let (fstype, source) = mount_type_and_source(&mnt).expect("mounted");
        assert_bkfs_type(&fstype);
        assert_eq!(source, "bkfs:acme/web-app/60");
        // allow_delete came through: rm deletes the artifact.
        let id = exp.files["test-suite/logs/a.log"].artifact_id.clone();
        std::fs::remove_file(mnt.join("test-suite/logs/a.log")).unwrap();
        assert!(!server.artifact_exists(&id));
        let o = run(Command::new("umount").arg(&mnt));
        assert!(o.status.success(), "{}", out(&o));
        assert!(wait_gone(&mnt, std::time::Duration::from_secs(10)));
    });
}

/// An fstab line (`noauto,user,...`) and `mount MOUNTPOINT`, with mount(8) reading a
/// test-owned fstab (`-T`) instead of /etc/fstab.
#[test]
fn fstab_line_and_mount_mountpoint() {
    let server = server();
    server.add_build(small_build(61).0);
    let scratch = Scratch::new();
    let _g = guard(&scratch);
    let fstab = scratch.dir.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# a pipeline mount\n{BIN}#acme/web-app {} fuse noauto,user,{} 0 0\n",
            scratch.mnt().display(),
            base_opts(&server, &scratch)
        ),
    )
    .unwrap();
    let mnt = scratch.mnt();
    bounded(LIMIT, move || {
        let o = run(Command::new("mount")
            .arg("-T")
            .arg(&fstab)
            .arg(&mnt)
            .env_remove("BUILDKITE_API_TOKEN"));
        assert!(o.status.success(), "{}", out(&o));
        let names = ls(&mnt);
        assert!(names.contains(&"61".to_string()), "{names:?}");
        assert!(names.contains(&"latest".to_string()), "{names:?}");
        let (fstype, source) = mount_type_and_source(&mnt).expect("mounted");
        assert_bkfs_type(&fstype);
        assert_eq!(source, "bkfs:acme/web-app");
    });
}

/// Unknown `-o` options are one clear error line, through mount(8), and nothing mounts.
#[test]
fn unknown_mount_option_is_one_line() {
    let server = server();
    server.add_build(small_build(62).0);
    let scratch = Scratch::new();
    let _g = guard(&scratch);
    let opts = format!("ro,{},colour=blue", base_opts(&server, &scratch));
    let mnt = scratch.mnt();
    bounded(LIMIT, move || {
        let o = run(Command::new("mount")
            .arg("-t")
            .arg("fuse")
            .arg(format!("{BIN}#acme/web-app/62"))
            .arg(&mnt)
            .arg("-o")
            .arg(&opts));
        assert!(!o.status.success(), "{}", out(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err:?}");
        assert!(
            lines[0].starts_with("bkfs: error: unknown mount option \"colour\""),
            "{err:?}"
        );
        assert!(!is_mounted(&mnt));
        assert_eq!(
            server.count(Count::Api),
            0,
            "requests before the options were checked"
        );
    });
}

/// The mount(8) helper convention: bkfs called as `mount.fuse.bkfs SOURCE MNT -o OPTS` with
/// exactly what util-linux passes for an fstab line without `ro` (`rw,noexec,...,user`);
/// `-f` (fake) mounts nothing.
#[test]
fn argv0_mount_fuse_bkfs_helper() {
    let server = server();
    let (fb, exp) = small_build(63);
    server.add_build(fb);
    let scratch = Scratch::new();
    let _g = guard(&scratch);
    let helper = scratch.dir.path().join("mount.fuse.bkfs");
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let opts = format!(
        "rw,noexec,nosuid,nodev,{},user",
        base_opts(&server, &scratch)
    );
    let mnt = scratch.mnt();
    bounded(LIMIT, move || {
        let o = run(Command::new(&helper)
            .arg("acme/web-app/63")
            .arg(&mnt)
            .arg("-f")
            .arg("-o")
            .arg(&opts));
        assert!(o.status.success(), "{}", out(&o));
        assert!(!is_mounted(&mnt), "-f must not mount");
        let o = run(Command::new(&helper)
            .arg("acme/web-app/63")
            .arg(&mnt)
            .arg("-n")
            .arg("-o")
            .arg(&opts)
            .arg("-t")
            .arg("fuse.bkfs"));
        assert!(o.status.success(), "{}", out(&o));
        let f = &exp.files["test-suite/junit.xml"];
        assert_eq!(
            std::fs::read(mnt.join("test-suite/junit.xml")).unwrap(),
            f.content
        );
        // rw makes nothing writable, and rm stays refused without allow_delete.
        let e = std::fs::remove_file(mnt.join("build/notes.txt")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    });
}

/// The number after `key` on the status line that starts with it.
fn field<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key:?} in {report}"))
        .trim()
}

/// `bkfs status MNT` through a real mount: request counts match what the fake saw, bytes
/// fetched match what storage sent, bytes served cover what was read; the socket is 0600 in
/// a 0700 directory, carries no token, and goes away with the mount.
#[test]
fn status_of_a_real_mount() {
    let (fb, exp) = small_build(64);
    let env = Env::new(fb, &[]);
    let mnt = env.mnt();
    let server = env.server.clone();
    bounded(LIMIT, move || {
        let mut read = 0u64;
        for rel in [
            "build/log/build.log",
            "build/dist/tool",
            "test-suite/junit.xml",
        ] {
            let got = std::fs::read(mnt.join(rel)).unwrap();
            assert_eq!(got, exp.files[rel].content, "{rel}");
            read += got.len() as u64;
        }
        let status = || {
            let o = run(Command::new(BIN).arg("status").arg(&mnt));
            assert!(o.status.success(), "{}", out(&o));
            String::from_utf8(o.stdout).unwrap()
        };
        let bytes_of = |report: &str| -> (u64, u64) {
            let bytes = field(report, "bytes:");
            let nums = bytes.rsplit_once('(').unwrap().1.trim_end_matches(')');
            let (f, s) = nums.split_once(" / ").unwrap();
            (f.parse().unwrap(), s.parse().unwrap())
        };
        // Storage counts bytes as it sends them, the daemon as they arrive: settle first.
        let mut report = status();
        let settled = wait_until(std::time::Duration::from_secs(10), || {
            report = status();
            bytes_of(&report).0 == server.storage_bytes_served()
        });
        assert!(
            settled,
            "bytes fetched never matched storage's {}: {report}",
            server.storage_bytes_served()
        );
        assert!(
            !report.contains(TOKEN),
            "the token is in the status: {report}"
        );
        assert_eq!(field(&report, "target:"), "acme/web-app/64");
        let api = field(&report, "API:");
        assert!(
            api.starts_with("127.0.0.1:") && api.ends_with("via REST"),
            "{report}"
        );
        let rest = server.count(Count::Api);
        assert_eq!(
            field(&report, "API requests:"),
            format!("{rest} REST, 0 GraphQL"),
            "{report}"
        );
        let (fetched, served) = bytes_of(&report);
        assert!(
            served >= read && served <= fetched.max(read) * 2,
            "{report}"
        );
        assert!(field(&report, "cache:").contains("misses"), "{report}");
        assert_eq!(field(&report, "reads in flight:"), "0");
        assert_eq!(field(&report, "last error:"), "none");
        // The list form shows it too.
        let o = run(Command::new(BIN).arg("status"));
        let list = String::from_utf8_lossy(&o.stdout);
        let abs = std::fs::canonicalize(&mnt).unwrap();
        assert!(
            list.lines()
                .any(|l| l.starts_with(abs.to_str().unwrap()) && l.contains("acme/web-app/64")),
            "{list}"
        );
        // Owner-only socket in an owner-only directory.
        let uid = my_uid();
        let sock = bkfs::control::socket_dirs(uid)
            .into_iter()
            .map(|d| d.join(bkfs::control::socket_name(&abs)))
            .find(|p| p.exists())
            .expect("a control socket");
        let md = std::fs::symlink_metadata(&sock).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600, "{sock:?}");
        let dmd = std::fs::metadata(sock.parent().unwrap()).unwrap();
        assert_eq!((dmd.mode() & 0o777, dmd.uid()), (0o700, uid));
        // Not a bkfs mount: one clear line.
        let o = run(Command::new(BIN).arg("status").arg("/proc"));
        assert!(!o.status.success());
        assert_eq!(
            String::from_utf8_lossy(&o.stderr).trim(),
            "bkfs: error: /proc is not a bkfs mount"
        );
        sock
    });
}

/// After an unmount the daemon removes its socket.
#[test]
fn control_socket_goes_with_the_mount() {
    let (fb, _) = small_build(65);
    let env = Env::new(fb, &[]);
    let abs = std::fs::canonicalize(env.mnt()).unwrap();
    let find = || {
        bkfs::control::socket_dirs(my_uid())
            .into_iter()
            .map(|d| d.join(bkfs::control::socket_name(&abs)))
            .find(|p| p.exists())
    };
    assert!(find().is_some());
    assert!(env.m.unmount());
    assert_eq!(find(), None);
}

/// A build of 350 artifacts: four REST pages (the fake sends `rel="last"`).
fn paged_build(number: u64) -> crate::common::FakeBuild {
    let mut b = Builder::new("acme", "web-app", number);
    let j = b.simple_job(
        "c0000009-0000-4000-8000-000000000109",
        "Many",
        "2024-04-02T08:00:00.000Z",
        "many",
    );
    for i in 0..350 {
        b.file(
            &j,
            "many",
            &format!("f/{i:04}.txt"),
            &format!("f/{i:04}.txt"),
            10,
        );
    }
    b.finish().0
}

/// `bkfs mount` under a pseudo-terminal (`script`): the listing progress is drawn on the
/// terminal, then erased; `--quiet` and a non-tty stderr show none.
#[test]
fn progress_on_a_pseudo_terminal_only() {
    let server = std::sync::Arc::new(server());
    server.add_build(paged_build(66));
    let scratch = Scratch::new();
    let _g = guard(&scratch);
    let s2 = server.clone();
    let sc = scratch.dir.path().to_path_buf();
    bounded(LIMIT, move || {
        let cmd = |quiet: &str| {
            format!(
                "BUILDKITE_API_TOKEN={TOKEN} {BIN} mount {quiet} --api-url {} --cache-dir {} --log-file {} acme/web-app/66 {}",
                s2.api_url(),
                sc.join("cache").display(),
                sc.join("bkfs.log").display(),
                sc.join("mnt").display()
            )
        };
        let under_pty = |line: String| {
            let o = run(Command::new("script")
                .arg("-qefc")
                .arg(line)
                .arg("/dev/null"));
            assert!(o.status.success(), "{}", out(&o));
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let shown = under_pty(cmd(""));
        assert!(
            shown.contains("listing acme/web-app/66: 4 of 4 pages, 350 artifacts"),
            "{shown:?}"
        );
        assert!(
            shown.contains("\r\x1b[K"),
            "the line is not erased: {shown:?}"
        );
        assert!(is_mounted(&sc.join("mnt")));
        assert_eq!(ls(&sc.join("mnt").join("many/f")).len(), 350);
        assert!(
            run(Command::new("fusermount3").arg("-u").arg(sc.join("mnt")))
                .status
                .success()
        );
        assert!(wait_gone(
            &sc.join("mnt"),
            std::time::Duration::from_secs(10)
        ));
        let quiet = under_pty(cmd("--quiet"));
        assert!(!quiet.contains("listing"), "{quiet:?}");
        assert!(
            run(Command::new("fusermount3").arg("-u").arg(sc.join("mnt")))
                .status
                .success()
        );
        assert!(wait_gone(
            &sc.join("mnt"),
            std::time::Duration::from_secs(10)
        ));
    });
    // Not a terminal: nothing on stderr at all.
    let m = try_mount(&server, &scratch, "acme/web-app/66", Some(TOKEN), &[])
        .unwrap_or_else(|(c, e)| panic!("mount failed ({c}): {e}"));
    assert_eq!(m.stderr, "");
}

/// The man page renders with man(1) and documents every `bkfs mount` option; the bash
/// completion script is valid bash and completes the subcommands and options.
#[test]
fn man_page_and_completions() {
    let page = run(Command::new(BIN).arg("man"));
    assert!(page.status.success());
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bkfs.1");
    std::fs::write(&f, &page.stdout).unwrap();
    let (code, text, err) = sh(&format!(
        "MANWIDTH=100 LC_ALL=C man -l {} | col -b",
        f.display()
    ));
    assert_eq!(code, 0, "{err}");
    for (long, _) in bkfs::cli::docs::mount_longs() {
        assert!(
            text.contains(&format!("--{long}")),
            "--{long} not in the rendered page"
        );
    }
    let bash = run(Command::new(BIN).arg("completions").arg("bash"));
    let script = dir.path().join("bkfs.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    // Ask the completion function itself what `bkfs mount --cache-<TAB>` offers.
    let probe = format!(
        "source {}; COMP_WORDS=(bkfs mount --cache-); COMP_CWORD=2; COMP_LINE='bkfs mount --cache-'; COMP_POINT=${{#COMP_LINE}}; _bkfs bkfs --cache- mount; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let (code, stdout, stderr) = sh(&probe);
    assert_eq!(code, 0, "{stderr}");
    let offered: Vec<&str> = stdout.lines().collect();
    assert!(
        offered.contains(&"--cache-dir") && offered.contains(&"--cache-size"),
        "{offered:?}"
    );
    let (code, stdout, _) = sh(&format!(
        "source {}; COMP_WORDS=(bkfs st); COMP_CWORD=1; COMP_LINE='bkfs st'; COMP_POINT=7; _bkfs bkfs st bkfs; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    ));
    assert_eq!(code, 0);
    assert_eq!(stdout.trim(), "status");
}

/// The shipped systemd units pass `systemd-analyze verify` without a complaint: the user
/// service (with /usr/bin/bkfs pointed at the built binary, which verify requires to exist)
/// in a throwaway user runtime dir, and the system .mount unit as shipped.
#[test]
fn systemd_units_verify() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        // Only where systemd truly is absent (Debian installs systemd-analyze with systemd).
        eprintln!("systemd-analyze is not installed: skipping the unit checks");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let service = std::fs::read_to_string(root.join("bkfs-ci.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/bin/bkfs mount "));
    let unit = dir.path().join("bkfs-ci.service");
    std::fs::write(&unit, service.replace("/usr/bin/bkfs", BIN)).unwrap();
    let o = run(Command::new("systemd-analyze")
        .arg("--user")
        .arg("verify")
        .arg("--man=no")
        .arg(&unit)
        .env("XDG_RUNTIME_DIR", &runtime));
    assert!(o.status.success() && o.stderr.is_empty(), "{}", out(&o));
    let o = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(root.join("mnt-ci.mount")));
    assert!(o.status.success() && o.stderr.is_empty(), "{}", out(&o));
    // The .mount's options are ones the helper accepts.
    let m = std::fs::read_to_string(root.join("mnt-ci.mount")).unwrap();
    let opts = m
        .lines()
        .find_map(|l| l.strip_prefix("Options="))
        .unwrap()
        .to_string();
    let o = run(Command::new(BIN)
        .arg("acme/web-app")
        .arg("/mnt/ci")
        .arg("-f")
        .arg("-o")
        .arg(&opts));
    assert!(o.status.success(), "{}", out(&o));
}

/// With GraphQL on, `bkfs status` says so and counts GraphQL requests apart from REST ones,
/// each equal to what the fake received.
#[test]
fn status_counts_graphql_apart() {
    let (fb, exp) = small_build(67);
    let server = std::sync::Arc::new(server());
    server.add_build(fb);
    let scratch = Scratch::new();
    let m = mount(
        &server,
        &scratch,
        "acme/web-app/67",
        &["--graphql-url", &server.graphql_url()],
    );
    let mnt = m.mnt.clone();
    let s2 = server.clone();
    bounded(LIMIT, move || {
        let rel = "test-suite/junit.xml";
        assert_eq!(
            std::fs::read(mnt.join(rel)).unwrap(),
            exp.files[rel].content
        );
        let o = run(Command::new(BIN).arg("status").arg(&mnt));
        assert!(o.status.success(), "{}", out(&o));
        let report = String::from_utf8(o.stdout).unwrap();
        assert!(field(&report, "API:").ends_with("via GraphQL"), "{report}");
        assert!(s2.count(Count::Graphql) >= 1);
        assert_eq!(
            field(&report, "API requests:"),
            format!(
                "{} REST, {} GraphQL",
                s2.count(Count::Api),
                s2.count(Count::Graphql)
            ),
            "{report}"
        );
    });
    drop(m);
}

/// `cargo install --path .` installs bkfs and nothing else: every other binary target needs a
/// feature that install does not turn on.
#[test]
fn cargo_install_ships_only_bkfs() {
    let o = run(Command::new(env!("CARGO"))
        .arg("metadata")
        .arg("--no-deps")
        .arg("--offline")
        .arg("--format-version")
        .arg("1")
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")));
    assert!(o.status.success(), "{}", out(&o));
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut installed = Vec::new();
    for t in meta["packages"][0]["targets"].as_array().unwrap() {
        let is_bin = t["kind"].as_array().unwrap().iter().any(|k| k == "bin");
        let needs = t["required-features"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if is_bin && !needs {
            installed.push(t["name"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(installed, ["bkfs"]);
}
