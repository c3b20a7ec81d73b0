//! The tar header walker (no I/O): fed bytes of the tar stream, it reads each 512-byte
//! header, collects GNU long names (`L`, `K`) and pax records (`x`: `path`, `linkpath`,
//! `size`, `mtime`), and skips entry data. [`TarWalker::need`] says which offset it wants
//! next, so a reader of a plain tar can skip data with ranged reads, while a gunzip stream
//! simply feeds everything (bytes before `need` are ignored).

use super::{corrupt, ArchiveError, Data, RawEntry, RawKind, MAX_ENTRIES, MAX_NAME_BYTES};

const BLOCK: u64 = 512;
/// Largest GNU long name or pax header kept.
const MAX_META: u64 = 1 << 20;

/// Whether a header's checksum (unsigned or signed sum, checksum field as spaces) matches.
pub fn checksum_ok(h: &[u8]) -> bool {
    if h.len() < 512 {
        return false;
    }
    let Some(want) = octal(&h[148..156]) else {
        return false;
    };
    let (mut u, mut s) = (0u64, 0i64);
    for (i, &b) in h[..512].iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        u += b as u64;
        s += b as i8 as i64;
    }
    want == u || want as i64 == s
}

/// An octal field (NUL/space padded), or GNU base-256 when the high bit is set.
fn octal(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = (f[0] & 0x7f) as u64;
        for &b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn cstr(f: &[u8]) -> &[u8] {
    let n = f.iter().position(|b| *b == 0).unwrap_or(f.len());
    &f[..n]
}

fn round_up(n: u64) -> Option<u64> {
    n.checked_add(BLOCK - 1).map(|v| v / BLOCK * BLOCK)
}

#[derive(Debug, Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
    pax_mtime: Option<i64>,
}

#[derive(Debug)]
enum State {
    Header,
    /// Collecting the data of a `L`, `K` or `x` entry of `len` bytes.
    Meta {
        kind: u8,
        len: usize,
    },
}

#[derive(Debug)]
pub struct TarWalker {
    pos: u64,
    state: State,
    buf: Vec<u8>,
    pending: Pending,
    entries: Vec<RawEntry>,
    name_bytes: usize,
    zeros: u32,
    done: bool,
    /// [`MAX_ENTRIES`], smaller in tests.
    max_entries: usize,
}

impl Default for TarWalker {
    fn default() -> Self {
        Self::new()
    }
}

impl TarWalker {
    pub fn new() -> TarWalker {
        TarWalker {
            pos: 0,
            state: State::Header,
            buf: Vec::with_capacity(512),
            pending: Pending::default(),
            entries: Vec::new(),
            name_bytes: 0,
            zeros: 0,
            done: false,
            max_entries: MAX_ENTRIES,
        }
    }

    /// A walker that refuses archives of more than `n` entries (tests of the bound).
    #[cfg(test)]
    pub fn with_max_entries(n: usize) -> TarWalker {
        TarWalker {
            max_entries: n,
            ..TarWalker::new()
        }
    }

    /// The offset of the next byte wanted.
    pub fn need(&self) -> u64 {
        self.pos
    }

    /// The end-of-archive marker was read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    /// Feeds `data`, the stream's bytes from offset `at`. `at` must not be past
    /// [`TarWalker::need`]; bytes before it are skipped.
    pub fn feed(&mut self, at: u64, data: &[u8]) -> Result<(), ArchiveError> {
        if at > self.pos {
            return Err(corrupt("tar walker fed past the offset it needs"));
        }
        let end = at.saturating_add(data.len() as u64);
        while !self.done && self.pos < end {
            let i = (self.pos - at) as usize;
            let want = match self.state {
                State::Header => 512,
                State::Meta { len, .. } => len,
            };
            let take = (want - self.buf.len()).min(data.len() - i);
            self.buf.extend_from_slice(&data[i..i + take]);
            self.pos += take as u64;
            if self.buf.len() == want {
                let buf = std::mem::take(&mut self.buf);
                match self.state {
                    State::Header => self.header(&buf)?,
                    State::Meta { kind, len } => {
                        self.meta(kind, &buf);
                        self.state = State::Header;
                        let pad = (BLOCK - len as u64 % BLOCK) % BLOCK;
                        self.pos = self.pos.saturating_add(pad);
                    }
                }
                self.buf = buf;
                self.buf.clear();
            }
        }
        Ok(())
    }

    fn header(&mut self, h: &[u8]) -> Result<(), ArchiveError> {
        let at = self.pos - BLOCK;
        if h.iter().all(|&b| b == 0) {
            self.zeros += 1;
            if self.zeros >= 2 {
                self.done = true;
            }
            return Ok(());
        }
        self.zeros = 0;
        if !checksum_ok(h) {
            return Err(corrupt(format!("bad tar header checksum at offset {at}")));
        }
        let kind = h[156];
        let size = match self.pending.pax_size.take() {
            Some(s) => s,
            None => octal(&h[124..136]).ok_or_else(|| corrupt(format!("bad size at {at}")))?,
        };
        let data_at = self.pos;
        let next = round_up(size)
            .and_then(|s| data_at.checked_add(s))
            .ok_or_else(|| corrupt("entry size overflows"))?;
        match kind {
            b'L' | b'K' | b'x' => {
                if size > MAX_META {
                    return Err(ArchiveError::TooLarge(format!(
                        "a {size}-byte tar extended header"
                    )));
                }
                if size > 0 {
                    self.state = State::Meta {
                        kind,
                        len: size as usize,
                    };
                }
                return Ok(());
            }
            // Global pax headers, and the rest of GNU's volume/sparse machinery: skipped.
            b'g' | b'V' | b'M' | b'N' | b'S' => {
                self.pos = next;
                self.pending = Pending::default();
                return Ok(());
            }
            _ => {}
        }
        let ustar = &h[257..263] == b"ustar\0";
        let mut path = match (self.pending.pax_path.take(), self.pending.long_name.take()) {
            (Some(p), _) | (None, Some(p)) => p,
            _ => {
                let name = cstr(&h[..100]);
                let prefix = cstr(&h[345..500]);
                if ustar && !prefix.is_empty() {
                    [prefix, b"/", name].concat()
                } else {
                    name.to_vec()
                }
            }
        };
        let link = match (self.pending.pax_link.take(), self.pending.long_link.take()) {
            (Some(p), _) | (None, Some(p)) => p,
            _ => cstr(&h[157..257]).to_vec(),
        };
        let mtime = match self.pending.pax_mtime.take() {
            Some(t) => t,
            None => octal(&h[136..148]).unwrap_or(0).min(i64::MAX as u64) as i64,
        };
        let (kind, size, data) = match kind {
            b'5' => (RawKind::Dir, 0, None),
            b'2' => (RawKind::Symlink(link), 0, None),
            b'1' => (RawKind::HardLink(link), 0, None),
            // Devices and FIFOs are not shown.
            b'3' | b'4' | b'6' => {
                self.pos = next;
                return Ok(());
            }
            _ if path.ends_with(b"/") => (RawKind::Dir, 0, None),
            _ => (RawKind::File, size, Some(Data::Tar { offset: data_at })),
        };
        if kind == RawKind::Dir {
            while path.ends_with(b"/") {
                path.pop();
            }
        }
        // Link targets (pax `linkpath`, GNU `K`: up to MAX_META each) count like paths.
        let link_len = match &kind {
            RawKind::Symlink(t) | RawKind::HardLink(t) => t.len(),
            _ => 0,
        };
        self.name_bytes = self.name_bytes.saturating_add(path.len() + link_len);
        if self.entries.len() >= self.max_entries || self.name_bytes > MAX_NAME_BYTES {
            return Err(ArchiveError::TooLarge(format!(
                "over {} entries or {} bytes of names",
                self.max_entries, MAX_NAME_BYTES
            )));
        }
        self.entries.push(RawEntry {
            path,
            kind,
            size,
            mtime,
            data,
        });
        self.pos = next;
        Ok(())
    }

    fn meta(&mut self, kind: u8, data: &[u8]) {
        match kind {
            b'L' => self.pending.long_name = Some(cstr(data).to_vec()),
            b'K' => self.pending.long_link = Some(cstr(data).to_vec()),
            _ => {
                // pax records: "<len> <key>=<value>\n"
                let mut rest = data;
                while !rest.is_empty() {
                    let Some(sp) = rest.iter().position(|b| *b == b' ') else {
                        break;
                    };
                    let Some(len) = std::str::from_utf8(&rest[..sp])
                        .ok()
                        .and_then(|s| s.parse::<usize>().ok())
                    else {
                        break;
                    };
                    if len <= sp + 1 || len > rest.len() {
                        break;
                    }
                    let rec = &rest[sp + 1..len];
                    let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
                    if let Some(eq) = rec.iter().position(|b| *b == b'=') {
                        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
                        let num = || std::str::from_utf8(v).ok();
                        match k {
                            b"path" => self.pending.pax_path = Some(v.to_vec()),
                            b"linkpath" => self.pending.pax_link = Some(v.to_vec()),
                            b"size" => self.pending.pax_size = num().and_then(|s| s.parse().ok()),
                            b"mtime" => {
                                self.pending.pax_mtime = num()
                                    .and_then(|s| s.split('.').next())
                                    .and_then(|s| s.parse().ok())
                            }
                            _ => {}
                        }
                    }
                    rest = &rest[len..];
                }
            }
        }
    }

    /// Ends the walk at the end of a stream of `len` bytes: the entries, unless the stream
    /// stopped inside a header or an entry's data.
    pub fn finish(self, len: u64) -> Result<Vec<RawEntry>, ArchiveError> {
        if self.done {
            return Ok(self.entries);
        }
        if self.pos > len || !self.buf.is_empty() || !matches!(self.state, State::Header) {
            return Err(corrupt(format!(
                "truncated tar: the stream ends at {len}, an entry needs bytes up to {}",
                self.pos.max(len + 1)
            )));
        }
        Ok(self.entries)
    }
}
