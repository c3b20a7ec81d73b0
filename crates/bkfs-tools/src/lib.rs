//! What bkfs-bench and bkfs-soak share: finding the daemon of a mount and its memory in
//! `/proc`.

use std::path::Path;

/// Processes whose command line is `.../bkfs ... MNT ...` (the daemon of a background mount),
/// zombies left out.
pub fn daemon_pids(mnt: &Path) -> Vec<i32> {
    let needle = mnt.to_string_lossy().to_string();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("bkfs")) && args.contains(&needle) {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            if !stat.contains(") Z ") {
                out.push(pid);
            }
        }
    }
    out
}

/// VmRSS of a process in KiB, if it is still there.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    st.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
