//! The start-up progress line: while a build (or a pipeline's builds) is listed, pages and
//! entries so far, of the total pages once `Link: rel="last"` tells.
//!
//! Shown only when stderr is a terminal and `--quiet` is not given. In background mode the
//! daemon's stderr is the log file, so the daemon sends `PROGRESS <text>` lines on the
//! readiness pipe and the waiting parent draws them on its terminal, erasing the line when
//! the verdict (`OK` / `ERR ...`) arrives. The counters come from [`crate::stats::STATS`].

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::stats::STATS;

/// How often the counters are looked at.
const TICK: Duration = Duration::from_millis(100);
/// Erase the current terminal line.
const CLEAR: &str = "\r\x1b[K";

pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty on a constant fd.
    unsafe { libc::isatty(2) == 1 }
}

/// The progress text for `pages` pages with `items` entries (`what`: "artifacts", "builds").
pub fn line(target: &str, pages: u64, items: u64, total: Option<u64>, what: &str) -> String {
    let pages = match total {
        Some(t) if t >= pages => format!("{pages} of {t} pages"),
        _ if pages == 1 => "1 page".to_string(),
        _ => format!("{pages} pages"),
    };
    format!("listing {target}: {pages}, {items} {what}")
}

/// Emits a line through `sink` whenever the listing counters change.
pub struct Progress {
    target: String,
    what: &'static str,
    sink: Box<dyn FnMut(&str) + Send>,
    last: Option<(u64, u64, Option<u64>)>,
}

impl Progress {
    pub fn new(target: String, what: &'static str, sink: Box<dyn FnMut(&str) + Send>) -> Self {
        Progress {
            target,
            what,
            sink,
            last: None,
        }
    }

    fn tick(&mut self) {
        let s = STATS.snapshot();
        let cur = (s.list_pages, s.list_items, s.list_total_pages);
        if cur.0 == 0 || self.last == Some(cur) {
            return;
        }
        self.last = Some(cur);
        let l = line(&self.target, cur.0, cur.1, cur.2, self.what);
        (self.sink)(&l);
    }

    /// Ticks on the runtime until [`Running::finish`].
    pub fn start(self, rt: &tokio::runtime::Handle) -> Running {
        let shared = Arc::new(Mutex::new(self));
        let s2 = shared.clone();
        let task = rt.spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                s2.lock().unwrap().tick();
            }
        });
        Running { shared, task }
    }
}

pub struct Running {
    shared: Arc<Mutex<Progress>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops ticking after one last look, so the final figures are always shown.
    pub fn finish(self) {
        self.task.abort();
        self.shared.lock().unwrap().tick();
    }
}

/// A sink writing `PROGRESS <text>` lines to the readiness pipe.
pub fn pipe_sink(mut f: std::fs::File) -> Box<dyn FnMut(&str) + Send> {
    Box::new(move |l| {
        let _ = f.write_all(format!("PROGRESS {l}\n").as_bytes());
    })
}

/// A sink printing lines on this process's stderr (foreground mode, where the log goes too).
pub fn stderr_sink() -> Box<dyn FnMut(&str) + Send> {
    Box::new(|l| eprintln!("{l}"))
}

/// Starts the progress line for a mount when `show`: through `pipe` (background) or on
/// stderr (foreground).
pub fn begin(
    show: bool,
    target: &crate::build_ref::Target,
    pipe: Option<&std::fs::File>,
    rt: &tokio::runtime::Handle,
) -> Option<Running> {
    if !show {
        return None;
    }
    let sink = match pipe {
        Some(f) => pipe_sink(f.try_clone().ok()?),
        None => stderr_sink(),
    };
    let what = match target {
        crate::build_ref::Target::Build(_) => "artifacts",
        crate::build_ref::Target::Pipeline(_) => "builds",
    };
    Some(Progress::new(target.to_string(), what, sink).start(rt))
}

/// The parent's side of the pipe: draws progress lines (when `show`) and returns the first
/// other line, the verdict; `None` if the pipe closed without one.
pub fn read_verdict(r: impl std::io::Read, show: bool, err: &mut dyn Write) -> Option<String> {
    let mut shown = false;
    let mut verdict = None;
    for l in std::io::BufReader::new(r).lines() {
        let Ok(l) = l else { break };
        match l.strip_prefix("PROGRESS ") {
            Some(p) => {
                if show {
                    let _ = write!(err, "{CLEAR}{p}");
                    let _ = err.flush();
                    shown = true;
                }
            }
            None => {
                verdict = Some(l);
                break;
            }
        }
    }
    if shown {
        let _ = write!(err, "{CLEAR}");
        let _ = err.flush();
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_text() {
        assert_eq!(
            line("acme/w/1", 3, 300, Some(40), "artifacts"),
            "listing acme/w/1: 3 of 40 pages, 300 artifacts"
        );
        assert_eq!(
            line("acme/w/1", 1, 5, None, "artifacts"),
            "listing acme/w/1: 1 page, 5 artifacts"
        );
        // A later listing past an earlier total does not claim "5 of 4".
        assert_eq!(
            line("a/b", 5, 9, Some(4), "builds"),
            "listing a/b: 5 pages, 9 builds"
        );
    }

    #[test]
    fn verdict_after_progress_lines() {
        let input = b"PROGRESS listing x: 1 page, 100 artifacts\nPROGRESS listing x: 2 of 2 pages, 150 artifacts\nOK\n";
        let mut err = Vec::new();
        let v = read_verdict(&input[..], true, &mut err);
        assert_eq!(v.as_deref(), Some("OK"));
        let e = String::from_utf8(err).unwrap();
        assert!(e.contains("2 of 2 pages") && e.ends_with(CLEAR), "{e:?}");
        let mut quiet = Vec::new();
        let v = read_verdict(&input[..], false, &mut quiet);
        assert_eq!(v.as_deref(), Some("OK"));
        assert!(quiet.is_empty());
        assert_eq!(read_verdict(&b""[..], true, &mut Vec::new()), None);
        let v = read_verdict(&b"ERR nope\n"[..], true, &mut Vec::new());
        assert_eq!(v.as_deref(), Some("ERR nope"));
    }
}
