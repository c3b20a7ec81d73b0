//! `bkfs status [MOUNTPOINT]`: the bkfs mounts of this machine (from /proc/self/mountinfo)
//! and, through each daemon's control socket ([`crate::control`]), what it is doing.

use crate::mount::unescape_mountinfo;
use std::path::{Path, PathBuf};

use crate::control::Status;

/// One bkfs mount as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    /// ORG/PIPELINE[/NUMBER] (the `bkfs:` source without its prefix).
    pub target: String,
    /// `user_id=` of the FUSE mount: whose daemon serves it.
    pub uid: Option<u32>,
}

/// The bkfs mounts in a mountinfo text: type `fuse.bkfs`, or `fuse` with a `bkfs:` source.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let mut post = post.split(' ');
        let (Some(fstype), Some(source)) = (post.next(), post.next()) else {
            continue;
        };
        let source = unescape_mountinfo(source);
        let Some(target) = source.strip_prefix("bkfs:") else {
            continue;
        };
        if fstype != "fuse.bkfs" && fstype != "fuse" {
            continue;
        }
        let Some(mp) = pre.split(' ').nth(4) else {
            continue;
        };
        let uid = post
            .next()
            .unwrap_or("")
            .split(',')
            .find_map(|o| o.strip_prefix("user_id="))
            .and_then(|u| u.parse().ok());
        out.push(MountEntry {
            mountpoint: PathBuf::from(unescape_mountinfo(mp)),
            target: target.to_string(),
            uid,
        });
    }
    out
}

/// `3d 4h`, `2h 5m`, `7m 3s`, `12s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `1.5 MiB` style.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The one-mount report.
pub fn render_one(s: &Status, now_unix: u64) -> String {
    let c = &s.counters;
    let budget = |rem: Option<u64>, lim: Option<u64>| match (rem, lim) {
        (Some(r), Some(l)) => format!("{r} of {l} left"),
        (Some(r), None) => format!("{r} left"),
        _ => "not reported yet".to_string(),
    };
    let hits_total = c.cache_hits + c.cache_misses;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<17}{v}\n"));
    line("mountpoint:", s.mountpoint.clone());
    line("target:", s.target.clone());
    line("daemon:", format!("pid {} (bkfs {})", s.pid, s.version));
    line("API:", format!("{} via {}", s.api_host, s.api));
    line(
        "up:",
        human_duration(now_unix.saturating_sub(s.started_unix)),
    );
    line(
        "API requests:",
        format!("{} REST, {} GraphQL", c.rest_requests, c.graphql_requests),
    );
    line(
        "rate limit:",
        format!(
            "REST {}; GraphQL {}",
            budget(c.rest_remaining, c.rest_limit),
            budget(c.graphql_remaining, c.graphql_limit)
        ),
    );
    line(
        "cache:",
        format!(
            "{} hits, {} misses{}",
            c.cache_hits,
            c.cache_misses,
            (c.cache_hits * 100)
                .checked_div(hits_total)
                .map_or(String::new(), |p| format!(" ({p}% hits)"))
        ),
    );
    line(
        "bytes:",
        format!(
            "{} fetched, {} served ({} / {})",
            human_bytes(c.bytes_fetched),
            human_bytes(c.bytes_served),
            c.bytes_fetched,
            c.bytes_served
        ),
    );
    line("reads in flight:", c.reads_in_flight.to_string());
    line(
        "listing:",
        format!("{} pages, {} entries", c.list_pages, c.list_items),
    );
    line(
        "job logs:",
        format!(
            "{} fetches, {} raw, {} running",
            c.log_fetches,
            human_bytes(c.log_bytes),
            c.logs_fetching
        ),
    );
    line(
        "archives:",
        format!(
            "{} indexed, {} indexing",
            c.archives_indexed, c.archives_indexing
        ),
    );
    line(
        "last error:",
        match &c.last_error {
            Some((t, m)) => format!("{} ago: {m}", human_duration(now_unix.saturating_sub(*t))),
            None => "none".to_string(),
        },
    );
    out
}

/// `bkfs status [MOUNTPOINT]`; returns the exit code.
pub fn run(mountpoint: Option<&Path>) -> i32 {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounts = parse_mountinfo(&text);
    let now = crate::stats::unix_now();
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    match mountpoint {
        Some(p) => {
            let abs = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            let Some(m) = mounts.iter().find(|m| m.mountpoint == abs) else {
                eprintln!("bkfs: error: {} is not a bkfs mount", p.display());
                return 1;
            };
            match crate::control::query(&m.mountpoint, m.uid.unwrap_or(me)) {
                Ok(s) => {
                    print!("{}", render_one(&s, now));
                    0
                }
                Err(e) => {
                    eprintln!(
                        "bkfs: error: cannot ask the daemon of {} ({e}); is it running as another user?",
                        p.display()
                    );
                    1
                }
            }
        }
        None => {
            if mounts.is_empty() {
                println!("no bkfs mounts");
                return 0;
            }
            println!("{:<40} {:<32} {:<28} UP", "MOUNTPOINT", "TARGET", "API");
            for m in &mounts {
                let (api, up) = match crate::control::query(&m.mountpoint, m.uid.unwrap_or(me)) {
                    Ok(s) => (
                        format!("{} ({})", s.api_host, s.api),
                        human_duration(now.saturating_sub(s.started_unix)),
                    ),
                    Err(_) => ("?".to_string(), "?".to_string()),
                };
                println!(
                    "{:<40} {:<32} {:<28} {}",
                    m.mountpoint.display(),
                    m.target,
                    api,
                    up
                );
            }
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_bkfs_mounts() {
        let text = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
95 30 0:52 / /tmp/x\\040y rw,nosuid,nodev,noatime - fuse.bkfs bkfs:acme/web-app/12 rw,user_id=1000,group_id=1000
96 30 0:53 / /mnt/p rw - fuse bkfs:acme/web-app rw,user_id=0,group_id=0
97 30 0:54 / /mnt/s rw - fuse.sshfs me@host:/ rw,user_id=0
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/tmp/x y"));
        assert_eq!(m[0].target, "acme/web-app/12");
        assert_eq!(m[0].uid, Some(1000));
        assert_eq!(m[1].target, "acme/web-app");
        assert_eq!(m[1].uid, Some(0));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m 5s");
        assert_eq!(human_duration(3 * 3600 + 60), "3h 1m");
        assert_eq!(human_duration(2 * 86400 + 3600), "2d 1h");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn one_mount_report() {
        let s = Status {
            pid: 7,
            version: "0.1.0".into(),
            target: "acme/web-app/1".into(),
            mountpoint: "/mnt/b".into(),
            api_host: "127.0.0.1:9".into(),
            api: "REST".into(),
            started_unix: 100,
            counters: crate::stats::Snapshot {
                rest_requests: 4,
                rest_remaining: Some(196),
                rest_limit: Some(200),
                cache_hits: 1,
                cache_misses: 3,
                bytes_fetched: 10,
                bytes_served: 20,
                ..Default::default()
            },
        };
        let r = render_one(&s, 160);
        assert!(r.contains("API requests:    4 REST, 0 GraphQL"), "{r}");
        assert!(r.contains("REST 196 of 200 left"), "{r}");
        assert!(r.contains("1 hits, 3 misses (25% hits)"), "{r}");
        assert!(
            r.contains("(10 / 20)") && r.contains("up:              1m 0s"),
            "{r}"
        );
        assert!(r.contains("last error:      none"), "{r}");
    }
}
