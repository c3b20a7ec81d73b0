//! `bkfs man` and `bkfs completions SHELL`: the manual page and the shell completions,
//! generated from the clap definitions in [`super`] so they cannot drift from the CLI.
//! The package (`scripts/package`) installs what these print.

use clap::CommandFactory;

use super::Cli;

/// Sections written by hand: how to mount from fstab and systemd, files, exit status.
const EXTRA: &str = r#".SH "MOUNT HELPER AND FSTAB"
bkfs is also a
.BR mount (8)
helper: installed as
.I /sbin/mount.fuse.bkfs
(the Debian package does this), or found as
.B bkfs
by
.BR mount.fuse3 (8).
Every long option of
.B bkfs mount
is accepted as
.BI "-o " key=value
(or
.I key
for a flag), spelled with
.B _
or
.BR - .
.PP
.nf
mount -t fuse.bkfs acme/web-app/1234 /mnt/build -o ro,token_file=/etc/bkfs/token,cache_size=5GiB
.fi
.PP
An
.I /etc/fstab
line for a pipeline, mounted with
.BR "mount /mnt/ci" :
.PP
.nf
acme/web-app  /mnt/ci  fuse.bkfs  noauto,user,token_file=/home/me/.config/bkfs/token  0 0
.fi
.PP
The generic options (ro, rw, auto, noauto, user, users, _netdev, nofail, x-systemd.*, and the
dev/suid/exec/atime families) are accepted and ignored; bkfs always mounts
nodev,nosuid,noatime and read-only for writes (rw makes nothing writable; only allow_delete
lets rm delete artifacts). Any other option is an error.
.SH FILES
.TP
.I $XDG_CACHE_HOME/bkfs
default cache directory and log file (bkfs.log).
.TP
.I /run/user/UID/bkfs/*.sock \fRor\fP /tmp/bkfs-UID/*.sock
control sockets that
.B bkfs status
reads (mode 0600, in a 0700 directory).
.SH ENVIRONMENT
.TP
.B BUILDKITE_API_TOKEN
the API token, unless
.B --token-file
is given.
.TP
.BR BUILDKITE_API_URL ", " BUILDKITE_GRAPHQL_URL
defaults of
.BR --api-url " and " --graphql-url .
.SH "EXIT STATUS"
0 once the mount answers (background mode) or after a clean unmount (foreground); 1 when
mounting fails (one line "bkfs: error: ..." on stderr); 2 for invalid arguments.
.SH "SEE ALSO"
.BR fusermount3 (1),
.BR mount (8),
.BR mount.fuse3 (8),
.BR fstab (5)
"#;

/// The manual page bkfs(1), in roff.
pub fn man_page() -> String {
    let cmd = Cli::command().disable_help_subcommand(true);
    let mut out = Vec::new();
    let top = clap_mangen::Man::new(cmd.clone());
    top.render(&mut out).expect("render to memory");
    // Every subcommand is described in this one page, not in bkfs-NAME(1) pages.
    let mut top_text = String::from_utf8(out).expect("roff is UTF-8");
    for sub in cmd.get_subcommands() {
        let n = sub.get_name();
        top_text = top_text.replace(&format!("bkfs\\-{n}(1)"), &format!(".B \"bkfs {n}\""));
    }
    let mut out = top_text.into_bytes();
    for sub in cmd.get_subcommands() {
        let name = format!("bkfs {}", sub.get_name());
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        let sub_cmd = sub.clone().name(static_name).bin_name(static_name);
        let mut page = Vec::new();
        clap_mangen::Man::new(sub_cmd)
            .render(&mut page)
            .expect("render to memory");
        let page = String::from_utf8_lossy(&page);
        out.extend_from_slice(format!(".SH \"{}\"\n", name.to_uppercase()).as_bytes());
        // The subcommand's own sections become subsections; its NAME and title go.
        let mut skip = false;
        for line in page.lines() {
            if line.starts_with(".TH ") {
                continue;
            }
            if let Some(h) = line.strip_prefix(".SH ") {
                skip = h == "NAME" || h == "VERSION";
                if !skip {
                    out.extend_from_slice(format!(".SS {h}\n").as_bytes());
                }
                continue;
            }
            if !skip {
                out.extend_from_slice(line.as_bytes());
                out.push(b'\n');
            }
        }
    }
    out.extend_from_slice(EXTRA.as_bytes());
    String::from_utf8(out).expect("roff is UTF-8")
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "bkfs", &mut out);
    out
}

/// The long options of `bkfs mount` and whether each takes a value (for `-o key=value`).
pub fn mount_longs() -> Vec<(String, bool)> {
    let cmd = Cli::command();
    let mount = cmd
        .find_subcommand("mount")
        .expect("the mount subcommand exists");
    mount
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            (long != "help").then(|| (long.to_string(), a.get_action().takes_values()))
        })
        .collect()
}

/// Names of the subcommands (and `help`), for telling a helper call from a command.
pub fn subcommand_names() -> Vec<String> {
    let mut v: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    v.push("help".into());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_documents_every_mount_option() {
        let page = man_page();
        assert!(page.contains("\n.TH bkfs 1 "), "{}", &page[..200]);
        for (long, _) in mount_longs() {
            // roff escapes '-' as '\-'.
            let shown = format!("\\-\\-{}", long.replace('-', "\\-"));
            assert!(page.contains(&shown), "--{long} missing from the man page");
        }
        for s in ["BKFS MOUNT", "BKFS STATUS", "fuse.bkfs", "EXIT STATUS"] {
            assert!(page.contains(s), "{s} missing");
        }
    }

    #[test]
    fn mount_longs_know_flags_from_values() {
        let l = mount_longs();
        assert!(l.contains(&("token-file".to_string(), true)));
        assert!(l.contains(&("allow-delete".to_string(), false)));
        assert!(l.contains(&("verbose".to_string(), false)));
        assert!(!l.iter().any(|(n, _)| n == "help"));
    }

    #[test]
    fn completions_cover_subcommands_and_options() {
        for sh in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let s = String::from_utf8(completions(sh)).unwrap();
            for w in ["status", "completions", "--cache-size", "--token-file"] {
                assert!(
                    s.contains(w.trim_start_matches('-')),
                    "{w} missing for {sh:?}"
                );
            }
        }
    }
}
