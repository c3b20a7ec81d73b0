//! `mount -t fuse.bkfs` and `/etc/fstab`: turning a mount helper's command line into
//! `bkfs mount` arguments.
//!
//! Two conventions reach bkfs (checked with util-linux 2.38 and fuse3 3.14):
//! - `/sbin/mount.fuse.bkfs SOURCE MOUNTPOINT [-sfnv] [-N NS] -o OPTS [-t TYPE]`: mount(8)
//!   runs its own helper for the type; the Debian package installs that name as a symlink to
//!   `bkfs`, which recognizes it from argv[0].
//! - `bkfs SOURCE MOUNTPOINT -o OPTS`: what `mount.fuse3` runs for `-t fuse.bkfs` when there
//!   is no `mount.fuse.bkfs` (it looks `bkfs` up in a fixed PATH), or for
//!   `-t fuse /path/to/bkfs#SOURCE`.
//!
//! Every long option of `bkfs mount` is accepted as `key=value` (or `key` for a flag), with
//! `_` or `-` in the key. The generic options mount(8) and fstab use are handled as other FUSE
//! filesystems do: accepted and ignored (`auto`/`noauto`, `user`, `users`, `_netdev`,
//! `nofail`, `x-*`, the `dev`/`suid`/`exec`/`atime` families; bkfs always mounts
//! nodev,nosuid,noatime). `ro` is the default. `rw` is accepted because mount(8) itself adds
//! it to every helper's options when `ro` is not given (an fstab line without `ro` arrives as
//! `rw,...`); it makes nothing writable: only `allow_delete` lets `rm` through.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// What a helper invocation asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Helper {
    /// Run `bkfs` with these arguments (starting with `bkfs mount`).
    Mount(Vec<OsString>),
    /// `-f` (fake): check the options, mount nothing.
    Fake,
}

/// The long options of `bkfs mount`: (name, takes a value).
pub type Longs = [(String, bool)];

/// Generic mount options that mean nothing to bkfs.
const IGNORED: &[&str] = &[
    "ro",
    "rw",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "sync",
    "async",
    "dirsync",
    "silent",
    "loud",
    "iversion",
    "noiversion",
    "mand",
    "nomand",
];

/// Whether argv looks like a mount-helper call: argv[0] is `mount.fuse.bkfs` (or
/// `mount.bkfs`), or the first argument is neither an option nor one of `subcommands`.
pub fn is_helper_call(argv: &[OsString], subcommands: &[String]) -> bool {
    let name = argv
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("mount.") {
        return true;
    }
    match argv.get(1).map(|a| a.to_string_lossy()) {
        Some(a) => argv.len() >= 3 && !a.starts_with('-') && !subcommands.iter().any(|s| *s == a),
        None => false,
    }
}

/// Parses a helper's arguments (after argv[0]) into `bkfs mount` arguments.
pub fn helper_args(args: &[OsString], longs: &Longs) -> Result<Helper, String> {
    let mut positional: Vec<OsString> = Vec::new();
    let mut opts: Vec<OsString> = Vec::new();
    let (mut fake, mut sloppy, mut verbose) = (false, false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        if b == b"-o" {
            opts.push(it.next().ok_or("-o needs a list of options")?.clone());
        } else if let Some(rest) = b.strip_prefix(b"-o").filter(|r| !r.is_empty()) {
            opts.push(OsStr::from_bytes(rest).to_owned());
        } else if b == b"-t" {
            it.next().ok_or("-t needs a type")?;
        } else if b == b"-N" || b.starts_with(b"--namespace") {
            return Err("mount namespaces (-N) are not supported by bkfs".into());
        } else if b.len() > 1 && b[0] == b'-' && b[1] != b'-' {
            for c in &b[1..] {
                match c {
                    b'f' => fake = true,
                    b's' => sloppy = true,
                    b'n' => {}
                    b'v' => verbose = true,
                    _ => {
                        return Err(format!(
                            "unknown mount helper flag -{} (known: -f -s -n -v -o)",
                            *c as char
                        ))
                    }
                }
            }
        } else if b.starts_with(b"-") {
            return Err(format!("unknown mount helper flag {}", a.to_string_lossy()));
        } else {
            positional.push(a.clone());
        }
    }
    let [source, mountpoint] = <[OsString; 2]>::try_from(positional).map_err(|p| {
        format!(
            "expected SOURCE MOUNTPOINT [-o OPTIONS], got {} operands",
            p.len()
        )
    })?;
    let mut out: Vec<OsString> = vec!["bkfs".into(), "mount".into()];
    if verbose {
        out.push("--verbose".into());
    }
    for o in &opts {
        for item in split_options(o.as_bytes()) {
            match translate(&item, longs) {
                Ok(Some(mut v)) => out.append(&mut v),
                Ok(None) => {}
                Err(_) if sloppy => {}
                Err(e) => return Err(e),
            }
        }
    }
    if fake {
        return Ok(Helper::Fake);
    }
    out.push(source);
    out.push(mountpoint);
    Ok(Helper::Mount(out))
}

/// Splits `a,b="c,d",e` on commas outside double quotes; quotes are removed.
fn split_options(s: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    for &c in s {
        match c {
            b'"' => quoted = !quoted,
            b',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|o| !o.is_empty());
    out
}

/// One `key[=value]` into `--key [value]`; `None` for an option bkfs ignores.
fn translate(item: &[u8], longs: &Longs) -> Result<Option<Vec<OsString>>, String> {
    let (key, value) = match item.iter().position(|&c| c == b'=') {
        Some(i) => (&item[..i], Some(&item[i + 1..])),
        None => (item, None),
    };
    let key_s = String::from_utf8_lossy(key).into_owned();
    if value.is_none() && IGNORED.contains(&key_s.as_str()) {
        return Ok(None);
    }
    if key_s.starts_with("x-") || key_s == "comment" {
        return Ok(None);
    }
    let norm = key_s.replace('_', "-");
    let Some((name, takes_value)) = longs.iter().find(|(n, _)| *n == norm) else {
        return Err(format!(
            "unknown mount option {key_s:?}: bkfs takes its long options as -o key=value ({}); see `man bkfs`",
            longs
                .iter()
                .map(|(n, v)| if *v { format!("{}=…", n.replace('-', "_")) } else { n.replace('-', "_") })
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    match (takes_value, value) {
        (true, Some(v)) => Ok(Some(vec![
            format!("--{name}").into(),
            OsStr::from_bytes(v).to_owned(),
        ])),
        (true, None) => Err(format!(
            "mount option {key_s} needs a value ({key_s}=VALUE)"
        )),
        (false, None) => Ok(Some(vec![format!("--{name}").into()])),
        (false, Some(_)) => Err(format!("mount option {key_s} takes no value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn longs() -> Vec<(String, bool)> {
        [
            ("token-file", true),
            ("cache-size", true),
            ("api-url", true),
            ("allow-delete", false),
            ("allow-other", false),
            ("foreground", false),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), *v))
        .collect()
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn mount(args: &[&str]) -> Result<Vec<String>, String> {
        match helper_args(&os(args), &longs())? {
            Helper::Mount(v) => Ok(v.iter().map(|a| a.to_string_lossy().into()).collect()),
            Helper::Fake => Ok(vec!["FAKE".into()]),
        }
    }

    #[test]
    fn issue_examples() {
        assert_eq!(
            mount(&[
                "acme/web-app/1234",
                "/mnt/build",
                "-o",
                "ro,token_file=/etc/bkfs/token,cache_size=5GiB,allow_delete"
            ])
            .unwrap(),
            [
                "bkfs",
                "mount",
                "--token-file",
                "/etc/bkfs/token",
                "--cache-size",
                "5GiB",
                "--allow-delete",
                "acme/web-app/1234",
                "/mnt/build"
            ]
        );
        // What mount(8) passes for `acme/web-app /mnt/ci fuse.bkfs noauto,user,token_file=...`.
        assert_eq!(
            mount(&[
                "acme/web-app",
                "/mnt/ci",
                "-o",
                "rw,noexec,nosuid,nodev,token_file=/home/me/t,user"
            ])
            .unwrap(),
            [
                "bkfs",
                "mount",
                "--token-file",
                "/home/me/t",
                "acme/web-app",
                "/mnt/ci"
            ]
        );
    }

    #[test]
    fn standard_options_and_flags() {
        let v = mount(&[
            "a/b/1",
            "/m",
            "-n",
            "-v",
            "-o",
            "noauto,_netdev,nofail,users,x-systemd.automount,x-systemd.idle-timeout=60,dev,exec,suid",
            "-t",
            "fuse.bkfs",
        ])
        .unwrap();
        assert_eq!(v, ["bkfs", "mount", "--verbose", "a/b/1", "/m"]);
        assert_eq!(mount(&["a/b/1", "/m", "-f", "-o", "ro"]).unwrap(), ["FAKE"]);
        assert_eq!(
            mount(&["a/b/1", "/m", "-oapi-url=http://127.0.0.1:9"]).unwrap(),
            [
                "bkfs",
                "mount",
                "--api-url",
                "http://127.0.0.1:9",
                "a/b/1",
                "/m"
            ]
        );
        // Quoted values keep their commas.
        assert_eq!(
            mount(&["a/b/1", "/m", "-o", "token_file=\"/x,y\",allow-other"]).unwrap(),
            [
                "bkfs",
                "mount",
                "--token-file",
                "/x,y",
                "--allow-other",
                "a/b/1",
                "/m"
            ]
        );
    }

    #[test]
    fn errors_are_one_clear_line() {
        let e = mount(&["a/b/1", "/m", "-o", "ro,bogus=1"]).unwrap_err();
        assert!(e.starts_with("unknown mount option \"bogus\""), "{e}");
        assert!(e.contains("token_file=…") && !e.contains('\n'), "{e}");
        // -s (sloppy) tolerates it.
        assert!(mount(&["a/b/1", "/m", "-s", "-o", "bogus"]).is_ok());
        let e = mount(&["a/b/1", "/m", "-o", "cache_size"]).unwrap_err();
        assert!(e.contains("needs a value"), "{e}");
        let e = mount(&["a/b/1", "/m", "-o", "allow_delete=yes"]).unwrap_err();
        assert!(e.contains("takes no value"), "{e}");
        assert!(mount(&["a/b/1"]).unwrap_err().contains("SOURCE MOUNTPOINT"));
        assert!(mount(&["a/b/1", "/m", "-N", "x"]).is_err());
        assert!(mount(&["a/b/1", "/m", "-o"]).is_err());
    }

    #[test]
    fn helper_detection() {
        let subs = vec![
            "mount".to_string(),
            "status".to_string(),
            "help".to_string(),
        ];
        assert!(is_helper_call(
            &os(&["/sbin/mount.fuse.bkfs", "a/b", "/m"]),
            &subs
        ));
        assert!(is_helper_call(
            &os(&["bkfs", "a/b/1", "/m", "-o", "ro"]),
            &subs
        ));
        assert!(!is_helper_call(
            &os(&["bkfs", "mount", "a/b/1", "/m"]),
            &subs
        ));
        assert!(!is_helper_call(&os(&["bkfs", "status"]), &subs));
        assert!(!is_helper_call(&os(&["bkfs", "--version"]), &subs));
        assert!(!is_helper_call(&os(&["bkfs", "typo"]), &subs));
    }

    proptest! {
        /// Any key spelled with `_` or `-` maps to the same long option, and its value comes
        /// through byte for byte.
        #[test]
        fn keys_and_values_round_trip(
            idx in 0usize..3,
            underscores in any::<bool>(),
            value in "[a-zA-Z0-9/._:=@+-]{1,40}",
        ) {
            let name = ["token-file", "cache-size", "api-url"][idx];
            let key = if underscores { name.replace('-', "_") } else { name.to_string() };
            let v = mount(&["o/p/1", "/m", "-o", &format!("ro,{key}={value},nofail")]).unwrap();
            prop_assert_eq!(v, vec![
                "bkfs".to_string(), "mount".into(), format!("--{name}"), value.clone(),
                "o/p/1".into(), "/m".into(),
            ]);
        }

        /// Unknown keys are always an error (never silently dropped), whatever they look like.
        #[test]
        fn unknown_keys_are_refused(key in "[a-z][a-z0-9]{2,12}") {
            prop_assume!(!IGNORED.contains(&key.as_str()));
            prop_assume!(!longs().iter().any(|(n, _)| n.replace('-', "") == key));
            let r = mount(&["o/p/1", "/m", "-o", &key]);
            prop_assert!(r.is_err());
        }
    }
}
