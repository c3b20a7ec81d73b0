//! Pure, I/O-free rendering of raw Buildkite job logs into plain text.
//!
//! A Buildkite job log is raw terminal output: every line starts with an APC
//! timestamp marker `ESC _ bk;t=<unix ms> BEL` (or terminated by ST, `ESC \`),
//! and lines carry SGR colours, erase codes, cursor moves and `\r` progress
//! rewrites. [`Renderer`] is a streaming state machine that turns such bytes,
//! fed in arbitrary chunks, into the text a terminal would show, one line at a
//! time. [`render`] does a whole log at once.
//!
//! Semantics:
//! - The output never contains ESC (0x1b), BEL (0x07) or any C0 control other
//!   than `\t` and `\n`, whatever the input (invalid UTF-8, truncated or
//!   hostile sequences included). Bytes >= 0x80 are text (8-bit C1 controls
//!   are not recognised; logs are UTF-8).
//! - Stripped: APC/OSC/DCS/PM/SOS strings (`ESC _`, `ESC ]`, `ESC P`, `ESC ^`,
//!   `ESC X` up to BEL or ST; CAN/SUB abort them, and ESC + any other byte
//!   aborts the string and starts a new sequence); CSI sequences
//!   (`ESC [` params, intermediates, final byte 0x40..=0x7e); other two-byte
//!   `ESC x` and `ESC <intermediates> final` sequences. A sequence broken by an
//!   unexpected control byte is dropped and that byte is processed normally.
//!   Nothing of a string or sequence is stored beyond a few fixed-size fields
//!   (the first 128 bytes of an APC payload, enough for a marker; the first
//!   CSI parameter), so memory stays bounded: a longer APC is not a marker
//!   and a CSI longer than [`MAX_CSI`] bytes is abandoned — their bytes are
//!   still dropped up to the terminator, but they have no effect. An
//!   unterminated string therefore hides the rest of the log, as it would on
//!   a terminal.
//! - Each line is rendered as on a terminal with an unbounded width: `\r`
//!   returns to column 0 and later text overwrites (`abcdef\rXY` shows
//!   `XYcdef`); `\r\n` is a plain line end; backspace and `CSI n D` move left,
//!   `CSI n C` right, `CSI n G` to column n; `CSI K`/`CSI 0K` erase to end of
//!   line, `CSI 1K` blanks (spaces) from the start through the cursor,
//!   `CSI 2K` blanks the whole line (the cursor keeps its column, so text
//!   written next is indented by spaces, as on a terminal). Columns are
//!   chars: a complete valid UTF-8 sequence is one column, every other byte
//!   (invalid UTF-8) is one column and is kept as-is. Moving right past the
//!   end of the line is capped at [`MAX_PAD`] columns; the gap becomes spaces
//!   only if text is written there. Cursor up/down, cursor position (`CSI H`),
//!   screen clears (`CSI J`), SGR and every other CSI are ignored: each line
//!   is rendered on its own, nothing is ever rewritten once its `\n` is seen.
//! - Output is produced only when a line completes (`\n`), so a marker or an
//!   escape sequence cut at the current end of a growing log never leaks;
//!   [`Renderer::finish`] appends the pending partial line (no `\n` added).
//!   A line whose rendered content reaches [`MAX_LINE`] bytes is emitted in
//!   pieces of exactly that many bytes (no separator inserted; the emitted
//!   part can no longer be overwritten), so memory stays bounded while the
//!   output is still a function of the content alone. Feeding a log in any
//!   chunking yields the same output as feeding it whole.
//! - Plain text (no ESC, BEL, `\r`, backspace, nor C0 other than `\t`/`\n`)
//!   passes through byte-for-byte, non-UTF-8 bytes included. Group headers
//!   (`--- `, `+++ `, `~~~ `, `^^^ +++`) are ordinary lines.
//! - Cost: runs of text are scanned eight bytes at a time and copied as
//!   slices; a simple line (text then `\n`) goes straight to the output.
//!   Cursor moves cost O(1) on all-ASCII lines and O(distance) otherwise;
//!   `CSI 1K` costs O(cursor column); both are bounded by [`MAX_LINE`].
//! - [`Mode::Timestamps`] prefixes each output line with
//!   `[YYYY-MM-DDTHH:MM:SS.mmmZ] ` (UTC) from the last marker seen
//!   before the line's first visible byte (for a line with no text: before
//!   its end); a line with no marker of its own thus inherits the previous
//!   time; before any marker there is no prefix. Continuation pieces of an
//!   over-long line get no prefix. A marker is an APC `bk;t=<ms>` (absolute)
//!   or `bk;dt=<ms>` (delta from the previous marker), with other `;key=value`
//!   fields ignored, as in buildkite/terminal-to-html.

/// How output lines are decorated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Rendered text only.
    Plain,
    /// Each line prefixed `[YYYY-MM-DDTHH:MM:SS.mmmZ] ` from its marker.
    Timestamps,
}

/// Rendered bytes of one line after which they are emitted as a piece.
pub const MAX_LINE: usize = 1 << 20;
/// Pending overwrite text (after `\r` or a cursor move) applied at this size.
const MAX_RUN: usize = 64 << 10;
/// Most columns the cursor may move right past the end of the line.
pub const MAX_PAD: usize = 1024;
/// Longer CSI sequences are abandoned.
pub const MAX_CSI: usize = 256;
/// Bytes of an APC payload kept to recognise a `bk;t=` marker.
const MARKER_BUF: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Ground,
    /// After ESC.
    Esc,
    /// `ESC` followed by intermediate bytes (0x20..=0x2f).
    EscInter,
    Csi,
    /// Inside an APC/OSC/DCS/PM/SOS string.
    Str,
    /// ESC seen inside a string (ST if followed by `\`).
    StrEsc,
}

/// Streaming renderer; see the module documentation for the semantics.
/// Cloning one and finishing the clone shows a growing log's partial last
/// line without disturbing the stream.
#[derive(Clone, Debug)]
pub struct Renderer {
    mode: Mode,
    state: State,
    max_line: usize,
    /// Time of the last marker seen.
    ts: Option<u64>,
    // Current line.
    line: Vec<u8>,
    /// Cursor as a byte offset into `line`.
    cur: usize,
    /// Extra columns of the cursor beyond the end (only when `cur == line.len()`).
    pad: usize,
    /// Text waiting to overwrite at the cursor (applied at the next control).
    run: Vec<u8>,
    /// `line` is known to be all ASCII: columns are bytes (cursor ops O(1)).
    ascii: bool,
    /// The line has received text; `line_ts` is its time.
    touched: bool,
    line_ts: Option<u64>,
    /// A piece of this line has been emitted already (prefix written).
    started: bool,
    // CSI fields.
    csi_p0: u32,
    csi_sep: bool,
    csi_private: bool,
    csi_inter: bool,
    csi_len: usize,
    // String fields.
    str_apc: bool,
    str_len: usize,
    str_buf: [u8; MARKER_BUF],
    /// `[YYYY-MM-DDTHH:MM:SS.` for the second `stamp_sec` (formatting cache).
    stamp_sec: Option<u64>,
    stamp: Vec<u8>,
}

impl Renderer {
    /// A renderer at the start of a log.
    pub fn new(mode: Mode) -> Renderer {
        Renderer::with_max_line(mode, MAX_LINE)
    }

    fn with_max_line(mode: Mode, max_line: usize) -> Renderer {
        Renderer {
            mode,
            state: State::Ground,
            max_line,
            ts: None,
            line: Vec::new(),
            cur: 0,
            pad: 0,
            run: Vec::new(),
            ascii: true,
            touched: false,
            line_ts: None,
            started: false,
            csi_p0: 0,
            csi_sep: false,
            csi_private: false,
            csi_inter: false,
            csi_len: 0,
            str_apc: false,
            str_len: 0,
            str_buf: [0; MARKER_BUF],
            stamp_sec: None,
            stamp: Vec::new(),
        }
    }

    /// Feed the next raw bytes; appends every line completed by them (with
    /// its `\n`) to `out`.
    pub fn feed(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < raw.len() {
            if self.state == State::Ground {
                let rest = &raw[i..];
                let n = find_control(rest);
                if n < rest.len() && rest[n] == b'\n' && self.at_line_start() {
                    // Fast path: a whole simple line, copied straight out
                    // (exactly what the general path below would emit).
                    if !self.touched && n > 0 {
                        self.touched = true;
                        self.line_ts = self.ts;
                    }
                    self.prefix(out);
                    out.extend_from_slice(&rest[..=n]);
                    self.touched = false;
                    self.started = false;
                    i += n + 1;
                } else if n > 0 {
                    self.text(&rest[..n], out);
                    i += n;
                } else {
                    self.control(rest[0], out);
                    i += 1;
                }
            } else if self.state == State::Str {
                // Fast path: skip the string body up to a byte that matters.
                let rest = &raw[i..];
                let n = rest
                    .iter()
                    .position(|&b| matches!(b, 0x07 | 0x1b | 0x18 | 0x1a))
                    .unwrap_or(rest.len());
                if self.str_apc && self.str_len < MARKER_BUF {
                    let k = n.min(MARKER_BUF - self.str_len);
                    self.str_buf[self.str_len..self.str_len + k].copy_from_slice(&rest[..k]);
                }
                self.str_len = self.str_len.saturating_add(n);
                i += n;
                if i < raw.len() && self.escape_byte(raw[i], out) {
                    i += 1;
                }
            } else if self.state == State::Csi {
                // Fast path: parameter bytes, then the rest byte by byte.
                let rest = &raw[i..];
                let n = rest
                    .iter()
                    .position(|b| !(0x30..=0x3f).contains(b))
                    .unwrap_or(rest.len());
                for &b in &rest[..n] {
                    self.csi_param(b);
                }
                self.csi_len = self.csi_len.saturating_add(n);
                i += n;
                if i < raw.len() && self.escape_byte(raw[i], out) {
                    i += 1;
                }
            } else if self.escape_byte(raw[i], out) {
                i += 1;
            }
        }
    }

    /// The raw stream is complete: append the pending partial line, if any
    /// (no `\n` added). The renderer is then reset for a new stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.apply_run(out);
        if !self.line.is_empty() {
            self.emit(out, false);
        }
        *self = Renderer::with_max_line(self.mode, self.max_line);
    }

    fn at_line_start(&self) -> bool {
        self.line.is_empty() && self.run.is_empty() && self.pad == 0 && !self.started
    }

    fn text(&mut self, mut s: &[u8], out: &mut Vec<u8>) {
        if !self.touched {
            self.touched = true;
            self.line_ts = self.ts;
        }
        while !s.is_empty() {
            if self.run.is_empty() && self.pad == 0 && self.cur == self.line.len() {
                // Cursor at the end: plain append.
                self.line.extend_from_slice(s);
                self.ascii = self.ascii && s.is_ascii();
                self.cur = self.line.len();
                self.cut(out);
                return;
            }
            // Overwriting: collect the text, applied at the next control
            // (or every MAX_RUN bytes, a content-determined point).
            let take = (MAX_RUN - self.run.len()).min(s.len());
            self.run.extend_from_slice(&s[..take]);
            s = &s[take..];
            if self.run.len() == MAX_RUN {
                self.apply_run(out);
            }
        }
    }

    fn control(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'\n' => {
                self.apply_run(out);
                self.emit(out, true);
                self.line.clear();
                self.ascii = true;
                self.cur = 0;
                self.pad = 0;
                self.touched = false;
                self.started = false;
            }
            b'\r' => {
                self.apply_run(out);
                self.cur = 0;
                self.pad = 0;
            }
            0x08 => {
                self.apply_run(out);
                self.back(1);
            }
            0x1b => self.state = State::Esc,
            _ => {}
        }
    }

    /// One byte in a non-ground state; false if it must be processed again
    /// (in the state it left us in).
    fn escape_byte(&mut self, b: u8, out: &mut Vec<u8>) -> bool {
        match self.state {
            // Not reached (feed handles ground bytes); reprocess if it were.
            State::Ground => return false,
            State::Esc => match b {
                b'[' => {
                    self.state = State::Csi;
                    self.csi_p0 = 0;
                    self.csi_sep = false;
                    self.csi_private = false;
                    self.csi_inter = false;
                    self.csi_len = 0;
                }
                b']' | b'P' | b'_' | b'^' | b'X' => {
                    self.state = State::Str;
                    self.str_apc = b == b'_';
                    self.str_len = 0;
                }
                0x20..=0x2f => self.state = State::EscInter,
                0x30..=0x7e | 0x18 | 0x1a => self.state = State::Ground,
                0x1b => {}
                _ => {
                    self.state = State::Ground;
                    return false;
                }
            },
            State::EscInter => match b {
                0x20..=0x2f => {}
                0x30..=0x7e | 0x18 | 0x1a => self.state = State::Ground,
                0x1b => self.state = State::Esc,
                _ => {
                    self.state = State::Ground;
                    return false;
                }
            },
            State::Csi => {
                self.csi_len = self.csi_len.saturating_add(1);
                match b {
                    0x30..=0x3f => self.csi_param(b),
                    0x20..=0x2f => self.csi_inter = true,
                    0x40..=0x7e => {
                        self.state = State::Ground;
                        if self.csi_len <= MAX_CSI && !self.csi_private && !self.csi_inter {
                            self.csi(b, out);
                        }
                    }
                    0x1b => self.state = State::Esc,
                    0x18 | 0x1a => self.state = State::Ground,
                    _ => {
                        self.state = State::Ground;
                        return false;
                    }
                }
            }
            State::Str => match b {
                0x07 => {
                    self.end_string();
                    self.state = State::Ground;
                }
                0x1b => self.state = State::StrEsc,
                0x18 | 0x1a => self.state = State::Ground,
                _ => {
                    if self.str_apc && self.str_len < MARKER_BUF {
                        self.str_buf[self.str_len] = b;
                    }
                    self.str_len = self.str_len.saturating_add(1);
                }
            },
            State::StrEsc => {
                if b == b'\\' {
                    self.end_string();
                    self.state = State::Ground;
                } else {
                    self.state = State::Esc;
                    return false;
                }
            }
        }
        true
    }

    /// A CSI parameter byte (0x30..=0x3f); only the first parameter is kept.
    fn csi_param(&mut self, b: u8) {
        match b {
            b'0'..=b'9' => {
                if !self.csi_sep && !self.csi_inter {
                    self.csi_p0 = self
                        .csi_p0
                        .saturating_mul(10)
                        .saturating_add(u32::from(b - b'0'));
                }
            }
            b';' | b':' => self.csi_sep = true,
            _ => self.csi_private = true,
        }
    }

    fn end_string(&mut self) {
        if !self.str_apc || self.str_len > MARKER_BUF {
            return;
        }
        if let Some(ms) = parse_marker(&self.str_buf[..self.str_len], self.ts) {
            self.ts = Some(ms);
        }
    }

    fn csi(&mut self, fin: u8, out: &mut Vec<u8>) {
        let n = (self.csi_p0 as usize).max(1);
        match fin {
            b'C' => {
                self.apply_run(out);
                self.forward(n);
            }
            b'D' => {
                self.apply_run(out);
                self.back(n);
            }
            b'G' => {
                self.apply_run(out);
                self.cur = 0;
                self.pad = 0;
                self.forward(n - 1);
            }
            b'K' => {
                self.apply_run(out);
                match self.csi_p0 {
                    0 => self.line.truncate(self.cur),
                    1 => self.erase_to_cursor(),
                    2 => {
                        let col = self.cols(..self.cur) + self.pad;
                        self.line.clear();
                        self.ascii = true;
                        self.cur = 0;
                        self.pad = col;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn erase_to_cursor(&mut self) {
        let at_char = self.cur < self.line.len();
        let end = if at_char {
            self.cur + self.char_len(self.cur)
        } else {
            self.line.len()
        };
        let cols = self.cols(..end);
        if cols == end {
            self.line[..end].fill(b' ');
        } else {
            self.line.splice(..end, std::iter::repeat_n(b' ', cols));
        }
        self.cur = if at_char { cols - 1 } else { cols };
    }

    fn char_len(&self, i: usize) -> usize {
        if self.ascii {
            1
        } else {
            char_len(&self.line, i)
        }
    }

    /// Columns (chars) in `line[range]`.
    fn cols(&self, range: std::ops::RangeTo<usize>) -> usize {
        if self.ascii {
            range.end
        } else {
            count_chars(&self.line[range])
        }
    }

    fn back(&mut self, n: usize) {
        if self.pad >= n {
            self.pad -= n;
            return;
        }
        let mut n = n - self.pad;
        self.pad = 0;
        if self.ascii {
            self.cur = self.cur.saturating_sub(n);
            return;
        }
        while n > 0 && self.cur > 0 {
            self.cur = prev_boundary(&self.line, self.cur);
            n -= 1;
        }
    }

    fn forward(&mut self, n: usize) {
        let mut n = n;
        if self.ascii {
            let k = n.min(self.line.len() - self.cur);
            self.cur += k;
            n -= k;
        }
        while n > 0 && self.cur < self.line.len() {
            self.cur += self.char_len(self.cur);
            n -= 1;
        }
        self.pad += n.min(MAX_PAD.saturating_sub(self.pad));
    }

    /// Write the pending overwrite text at the cursor.
    fn apply_run(&mut self, out: &mut Vec<u8>) {
        if self.run.is_empty() {
            return;
        }
        if self.pad > 0 {
            self.line.resize(self.line.len() + self.pad, b' ');
            self.pad = 0;
            self.cur = self.line.len();
        }
        let run_ascii = self.run.is_ascii();
        if self.cur >= self.line.len() {
            self.line.extend_from_slice(&self.run);
        } else {
            let mut end = self.cur;
            if self.ascii && run_ascii {
                end = (end + self.run.len()).min(self.line.len());
            } else {
                let chars = count_chars(&self.run);
                let mut k = 0;
                while k < chars && end < self.line.len() {
                    end += self.char_len(end);
                    k += 1;
                }
            }
            if end - self.cur == self.run.len() {
                self.line[self.cur..end].copy_from_slice(&self.run);
            } else {
                self.line.splice(self.cur..end, self.run.iter().copied());
            }
        }
        self.ascii = self.ascii && run_ascii;
        self.cur += self.run.len();
        self.run.clear();
        self.cut(out);
    }

    /// Emit whole `max_line` pieces of an over-long line.
    fn cut(&mut self, out: &mut Vec<u8>) {
        if self.line.len() < self.max_line {
            return;
        }
        let k = self.line.len() / self.max_line * self.max_line;
        self.prefix(out);
        out.extend_from_slice(&self.line[..k]);
        self.line.drain(..k);
        self.cur = self.cur.saturating_sub(k);
    }

    fn emit(&mut self, out: &mut Vec<u8>, newline: bool) {
        self.prefix(out);
        out.extend_from_slice(&self.line);
        if newline {
            out.push(b'\n');
        }
    }

    fn prefix(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if self.mode == Mode::Timestamps {
            let ts = if self.touched { self.line_ts } else { self.ts };
            if let Some(ms) = ts {
                if self.stamp_sec != Some(ms / 1000) {
                    self.stamp_sec = Some(ms / 1000);
                    self.stamp.clear();
                    self.stamp.push(b'[');
                    write_utc(ms / 1000 * 1000, &mut self.stamp);
                    self.stamp.truncate(self.stamp.len() - 4);
                }
                out.extend_from_slice(&self.stamp);
                let milli = (ms % 1000) as u16;
                out.extend_from_slice(&[
                    b'0' + (milli / 100) as u8,
                    b'0' + (milli / 10 % 10) as u8,
                    b'0' + (milli % 10) as u8,
                ]);
                out.extend_from_slice(b"Z] ");
            }
        }
    }
}

/// Convenience: render a whole log at once.
pub fn render(raw: &[u8], mode: Mode) -> Vec<u8> {
    let mut r = Renderer::new(mode);
    let mut out = Vec::with_capacity(raw.len());
    r.feed(raw, &mut out);
    r.finish(&mut out);
    out
}

/// Index of the first C0 control other than `\t` (or `s.len()`), scanning
/// eight bytes at a time over runs of text.
fn find_control(s: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while i + 8 <= s.len() {
        let mut word = [0; 8];
        word.copy_from_slice(&s[i..i + 8]);
        let x = u64::from_le_bytes(word);
        // Some byte < 0x20 (perhaps only a tab): look at this word closely.
        if x.wrapping_sub(0x20 * ONES) & !x & HIGH != 0 {
            if let Some(k) = word.iter().position(|&b| b < 0x20 && b != b'\t') {
                return i + k;
            }
        }
        i += 8;
    }
    s[i..]
        .iter()
        .position(|&b| b < 0x20 && b != b'\t')
        .map_or(s.len(), |k| i + k)
}

/// The time of a Buildkite APC payload `bk;key=value;...`: `t=<ms>` is
/// absolute, `dt=<ms>` is relative to the previous time (0 if none). Other
/// keys are ignored; a malformed `t`/`dt` value makes it no marker.
fn parse_marker(payload: &[u8], last: Option<u64>) -> Option<u64> {
    // Fast path: the agent's usual `bk;t=<digits>`.
    if let Some(v) = payload.strip_prefix(b"bk;t=").and_then(parse_u64) {
        return Some(v);
    }
    let rest = payload.strip_prefix(b"bk;")?;
    let mut ts = None;
    for token in rest.split(|&b| b == b';') {
        if let Some(v) = token.strip_prefix(b"t=") {
            ts = Some(parse_u64(v)?);
        } else if let Some(v) = token.strip_prefix(b"dt=") {
            ts = Some(ts.or(last).unwrap_or(0).checked_add(parse_u64(v)?)?);
        }
    }
    ts
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Length of the char at `i`: a complete valid UTF-8 sequence, else 1 byte.
fn char_len(s: &[u8], i: usize) -> usize {
    let n = match s[i] {
        0x00..=0x7f => return 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return 1,
    };
    if i + n <= s.len() && std::str::from_utf8(&s[i..i + n]).is_ok() {
        n
    } else {
        1
    }
}

/// Start of the char that ends at `p` (`p > 0`).
fn prev_boundary(s: &[u8], p: usize) -> usize {
    (2..=4)
        .find(|&k| p >= k && char_len(s, p - k) == k)
        .map_or(p - 1, |k| p - k)
}

fn count_chars(s: &[u8]) -> usize {
    let mut i = 0;
    let mut n = 0;
    while i < s.len() {
        i += char_len(s, i);
        n += 1;
    }
    n
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` for Unix milliseconds (no allocation).
fn write_utc(ms: u64, out: &mut Vec<u8>) {
    fn digits(out: &mut Vec<u8>, v: u64, width: usize) {
        let mut buf = [b'0'; 20];
        let mut v = v;
        let mut k = 0;
        while v > 0 || k < width {
            buf[19 - k] = b'0' + (v % 10) as u8;
            v /= 10;
            k += 1;
        }
        out.extend_from_slice(&buf[20 - k..]);
    }
    let rem = ms % 86_400_000;
    let (y, m, d) = civil_from_days((ms / 86_400_000) as i64);
    digits(out, y as u64, 4);
    out.push(b'-');
    digits(out, u64::from(m), 2);
    out.push(b'-');
    digits(out, u64::from(d), 2);
    out.push(b'T');
    digits(out, rem / 3_600_000, 2);
    out.push(b':');
    digits(out, rem / 60_000 % 60, 2);
    out.push(b':');
    digits(out, rem / 1000 % 60, 2);
    out.push(b'.');
    digits(out, rem % 1000, 3);
    out.push(b'Z');
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (y, m, d).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
