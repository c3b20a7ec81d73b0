//! Realistic fake Buildkite job logs for tests, the fake Buildkite and demos.
//!
//! Every generated log comes with `plain`, its expected Plain rendering. The
//! oracle is written by the generator from what it emitted (the final text of
//! each progress line, the colour-free text, ...), never by running the
//! renderer, so tests comparing the two check the renderer independently.
//! Lines are written the way the Buildkite agent writes them: an APC timestamp
//! marker first, times strictly increasing from `start_ms`.

/// A raw job log and its expected plain-text rendering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeLog {
    pub raw: Vec<u8>,
    pub plain: String,
}

/// The agent's timestamp marker for `ms` (Unix milliseconds), BEL-terminated.
pub fn marker(ms: u64) -> Vec<u8> {
    format!("\x1b_bk;t={ms}\x07").into_bytes()
}

/// The same marker terminated by ST (`ESC \`), which the agent may also use.
fn marker_st(ms: u64) -> String {
    format!("\x1b_bk;t={ms}\x1b\\")
}

struct Builder {
    log: FakeLog,
    ms: u64,
    lines: u64,
}

impl Builder {
    fn new(start_ms: u64) -> Builder {
        Builder {
            log: FakeLog {
                raw: Vec::new(),
                plain: String::new(),
            },
            ms: start_ms,
            lines: 0,
        }
    }

    /// One line: marker, `raw` (no `\n`), `\n`; `plain` is what it renders to.
    fn line(&mut self, raw: &str, plain: &str) {
        if self.lines % 5 == 3 {
            self.log
                .raw
                .extend_from_slice(marker_st(self.ms).as_bytes());
        } else {
            self.log.raw.extend_from_slice(&marker(self.ms));
        }
        self.log.raw.extend_from_slice(raw.as_bytes());
        self.log.raw.push(b'\n');
        self.log.plain.push_str(plain);
        self.log.plain.push('\n');
        self.ms += 3 + self.lines % 7 * 11;
        self.lines += 1;
    }

    /// A plain line (headers, commands output without colour).
    fn plain(&mut self, text: &str) {
        self.line(text, text);
    }

    /// `text` in the given SGR colour, reset after.
    fn coloured(&mut self, sgr: &str, text: &str) {
        self.line(&format!("\x1b[{sgr}m{text}\x1b[0m"), text);
    }

    /// `label N%` rewritten with `\r` for each (increasing) percentage.
    fn progress(&mut self, label: &str, steps: &[u32]) {
        let raw: Vec<String> = steps.iter().map(|p| format!("{label} {p}%")).collect();
        let last = raw.last().cloned().unwrap_or_default();
        self.line(&raw.join("\r"), &last);
    }

    /// git-style: text, then `\r` + erase-to-end + the final text.
    fn erased(&mut self, first: &str, last: &str, code: &str) {
        self.line(&format!("{first}\r\x1b[{code}{last}"), last);
    }
}

fn check(s: &str) {
    assert!(
        !s.bytes().any(|b| b < 0x20 && b != b'\t'),
        "fakelog text must not contain control characters: {s:?}"
    );
}

/// A realistic Buildkite job log: a marker on every line (times from
/// `start_ms`, increasing), `~~~ Preparing working directory`,
/// `--- :rspec: Running <label>` and `+++ Failures` group headers, SGR
/// colours, `\r` progress bars, erase-line codes, a backspace spinner, an OSC 8
/// hyperlink, and the given body lines (verbatim in `plain`, so a test can
/// grep for them). `label` and `body` must not contain control characters
/// other than `\t`; a body entry containing `\n` gives several lines.
pub fn generate(label: &str, body: &[&str], start_ms: u64) -> FakeLog {
    check(label);
    let mut b = Builder::new(start_ms);
    b.plain("~~~ Preparing working directory");
    b.line(
        &format!("\x1b[90m$\x1b[0m cd /buildkite/builds/agent-1/acme/{label}"),
        &format!("$ cd /buildkite/builds/agent-1/acme/{label}"),
    );
    b.plain("Cloning into '.'...");
    b.erased(
        "remote: Counting objects:  42% (21/50)",
        "remote: Counting objects: 100% (50/50), done.",
        "K",
    );
    b.erased(
        "Resolving deltas:  10% (1/10)",
        "Resolving deltas: 100% (10/10), done.",
        "2K",
    );
    b.progress("Downloading artifact.tar.gz", &[0, 10, 37, 64, 99, 100]);
    b.line(
        "Installing gems |\x08/\x08-\x08\\\x08done",
        "Installing gems done",
    );
    b.plain(&format!("--- :rspec: Running {label}"));
    for (i, entry) in body.iter().enumerate() {
        for text in entry.split('\n') {
            check(text);
            if i % 2 == 0 {
                b.coloured("0;32", text);
            } else {
                b.plain(text);
            }
        }
    }
    b.line(
        "See \x1b]8;;https://buildkite.com/docs\x1b\\the docs\x1b]8;;\x1b\\ for details",
        "See the docs for details",
    );
    b.plain("+++ Failures");
    b.coloured(
        "1;31",
        &format!("{label}: {} body lines checked", body.len()),
    );
    b.plain("^^^ +++");
    b.line(
        "\x1b[32m\u{2714}\x1b[0m \x1b[1mDone\x1b[22m in 0.42s",
        "\u{2714} Done in 0.42s",
    );
    b.log
}

/// Deterministic filler lines of about `bytes` raw bytes (same style as
/// [`generate`], stops at the first line end at or past `bytes`), for big-log
/// tests and benchmarks, with the expected plain text too.
pub fn filler(seed: u64, bytes: usize, start_ms: u64) -> FakeLog {
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut b = Builder::new(start_ms);
    let mut n = 0u64;
    while b.log.raw.len() < bytes {
        let r = next();
        n += 1;
        match r % 10 {
            0..=3 => b.line(
                &format!(
                    "\x1b[1m\x1b[32m   Compiling\x1b[0m crate-{:x} v0.{}.{}",
                    r >> 40,
                    r % 17,
                    n % 23
                ),
                &format!("   Compiling crate-{:x} v0.{}.{}", r >> 40, r % 17, n % 23),
            ),
            4 | 5 => b.plain(&format!(
                "test suite_{}::case_{:016x} ... ok (seed {seed}, line {n})",
                r % 97,
                r
            )),
            6 => b.progress(
                &format!("Pulling layer {:08x}", r >> 32),
                &[3, 25, 50, 75, 100],
            ),
            7 => b.erased(
                &format!("Receiving objects:  {}% ({n}/..)", r % 90 + 10),
                &format!("Receiving objects: 100% ({n}/{n}), done."),
                "0K",
            ),
            8 => b.coloured(
                "33",
                &format!("\u{2713} r\u{e9}sum\u{e9} \u{2014} caf\u{e9} \u{1f680} #{n}"),
            ),
            _ => b.plain(&format!("--- :hammer: Step {n}")),
        }
    }
    b.log
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `t=` of the marker starting each raw line.
    fn line_times(raw: &[u8]) -> Vec<u64> {
        raw.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let rest = l
                    .strip_prefix(b"\x1b_bk;t=")
                    .expect("line starts with a marker");
                let digits: Vec<u8> = rest
                    .iter()
                    .copied()
                    .take_while(u8::is_ascii_digit)
                    .collect();
                String::from_utf8(digits).unwrap().parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn generate_is_realistic_and_deterministic() {
        let log = generate("pipeline", &["needle one", "two\nthree"], 1_000);
        assert_eq!(
            log,
            generate("pipeline", &["needle one", "two\nthree"], 1_000)
        );
        let times = line_times(&log.raw);
        assert_eq!(times.len(), log.plain.lines().count());
        assert_eq!(times[0], 1_000);
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        for wanted in [
            "~~~ Preparing working directory",
            "--- :rspec: Running pipeline",
            "+++ Failures",
            "^^^ +++",
            "needle one",
            "two",
            "three",
            "Downloading artifact.tar.gz 100%",
        ] {
            assert!(log.plain.lines().any(|l| l == wanted), "{wanted}");
        }
        let raw = String::from_utf8_lossy(&log.raw);
        for feature in [
            "\x1b[0;32m",
            "\r",
            "\x1b[K",
            "\x1b[2K",
            "\x08",
            "\x1b]8;;",
            "\x1b\\",
        ] {
            assert!(raw.contains(feature), "{feature:?}");
        }
        assert!(!log.plain.contains('\x1b') && !log.plain.contains('\r'));
    }

    #[test]
    #[should_panic(expected = "control characters")]
    fn generate_rejects_control_characters() {
        generate("x", &["bad\rline"], 0);
    }

    #[test]
    fn filler_is_sized_and_seeded() {
        let a = filler(1, 10_000, 5);
        assert!(a.raw.len() >= 10_000 && a.raw.len() < 10_300);
        assert_eq!(a, filler(1, 10_000, 5));
        assert_ne!(a.raw, filler(2, 10_000, 5).raw);
        let times = line_times(&a.raw);
        assert_eq!(times.len(), a.plain.lines().count());
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(filler(3, 0, 0).raw, b"");
    }
}
