//! zran-style gzip access points (after zlib's `examples/zran.c`), sans I/O: an [`Indexer`]
//! is fed the compressed bytes of a `.tar.gz` once, hands on the decompressed bytes and
//! records an access point every `span` decompressed bytes; an [`Extractor`] resumes
//! decompression at one of those points, given the compressed bytes from its start.
//!
//! An access point sits at a deflate block boundary: the decompressed offset, the *bit*
//! offset in the compressed file where the next block starts (blocks are not byte-aligned),
//! and the 32 KiB of decompressed data before it (deflate's back-references reach that far).
//! Resuming means a raw inflate primed with the bits of the partial first byte
//! (`inflatePrime`) and given the window as its dictionary (`inflateSetDictionary`). Block
//! boundaries are found by inflating with `Z_BLOCK` and reading `data_type`.
//!
//! The zlib API comes from `libz-rs-sys` (zlib-rs: zlib's algorithms in Rust, no C, no
//! system library; its symbols are not exported, so it never clashes with a C zlib). It is a
//! C-style API, so [`Stream`] is the one place with `unsafe`: a boxed `z_stream` whose
//! pointers are set just before each `inflate` call and cleared after it.
//!
//! Multi-member gzip (concatenated `.gz` files) is handled: each member's header starts a
//! fresh gzip-mode stream; an extractor that reaches the end of a member skips its 8-byte
//! trailer and goes on with the next member. Bytes after a complete member that do not start
//! with the gzip magic (zeros padding a tape block, say: `gzip -d` and `tar tz` accept them)
//! end the data and are ignored.

use std::ffi::c_int;

use libz_rs_sys as z;

use super::{corrupt, ArchiveError};

/// Bytes of history deflate may refer to.
pub const WINSIZE: usize = 32 << 10;
/// Default distance between access points, in decompressed bytes.
pub const SPAN: u64 = 4 << 20;
/// Most access points per archive: past this, every other one is dropped and the span
/// doubles (so memory stays under `MAX_POINTS` × 32 KiB).
pub const MAX_POINTS: usize = 1024;

/// Where decompression can resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Offset in the decompressed stream.
    pub out: u64,
    /// Bit offset in the compressed file of the deflate block that starts at `out`.
    pub bit: u64,
    /// The (up to) 32 KiB of decompressed data before `out`.
    pub window: Vec<u8>,
}

impl Point {
    /// The first compressed byte an [`Extractor`] starting here needs.
    pub fn start(&self) -> u64 {
        self.bit / 8
    }
}

/// A zlib inflate stream (`libz-rs-sys`), freed on drop.
struct Stream(Box<z::z_stream>);

// The stream owns its state; the raw pointers in it are only set during a call.
unsafe impl Send for Stream {}

const RAW: c_int = -15;
const GZIP: c_int = 31;
const GZIP_M0: u8 = 0x1f;
const GZIP_M1: u8 = 0x8b;

/// What the bytes after a complete member are.
enum After {
    /// Another member: `held` (a first magic byte kept from the previous input) comes first.
    Member,
    /// One byte, the first of the magic: keep it and wait for the next input.
    Hold,
    /// Not a gzip member: the end of the data.
    Padding,
}

fn after_member(held: Option<u8>, input: &[u8]) -> After {
    match (held, input) {
        (_, []) | (None, [GZIP_M0]) => After::Hold,
        (Some(GZIP_M0), [GZIP_M1, ..]) | (None, [GZIP_M0, GZIP_M1, ..]) => After::Member,
        _ => After::Padding,
    }
}

impl Stream {
    fn new(window_bits: c_int) -> Result<Stream, ArchiveError> {
        let mut s = Box::new(z::z_stream::default());
        // SAFETY: `s` is a default (zeroed, allocator set) stream; version and size are the
        // library's own.
        let rc = unsafe {
            z::inflateInit2_(
                &mut *s,
                window_bits,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if rc != z::Z_OK {
            return Err(corrupt(format!("inflateInit2: {rc}")));
        }
        Ok(Stream(s))
    }

    /// One `inflate` call: returns (bytes consumed, bytes produced, return code).
    fn inflate(&mut self, input: &[u8], output: &mut [u8], flush: c_int) -> (usize, usize, c_int) {
        let inl = input.len().min(u32::MAX as usize);
        let outl = output.len().min(u32::MAX as usize);
        let s = &mut *self.0;
        s.next_in = input.as_ptr();
        s.avail_in = inl as u32;
        s.next_out = output.as_mut_ptr();
        s.avail_out = outl as u32;
        // SAFETY: the stream was initialized by `new`; next_in/next_out point to `inl` and
        // `outl` valid bytes for the duration of the call.
        let rc = unsafe { z::inflate(s, flush) };
        let used = inl - s.avail_in as usize;
        let made = outl - s.avail_out as usize;
        s.next_in = std::ptr::null();
        s.avail_in = 0;
        s.next_out = std::ptr::null_mut();
        s.avail_out = 0;
        (used, made, rc)
    }

    fn data_type(&self) -> c_int {
        self.0.data_type
    }

    fn message(&self, rc: c_int) -> String {
        if self.0.msg.is_null() {
            format!("inflate error {rc}")
        } else {
            // SAFETY: zlib-rs sets `msg` to a static NUL-terminated string.
            let m = unsafe { std::ffi::CStr::from_ptr(self.0.msg) };
            format!("gzip: {}", m.to_string_lossy())
        }
    }

    fn prime(&mut self, bits: c_int, value: c_int) -> Result<(), ArchiveError> {
        // SAFETY: initialized stream.
        match unsafe { z::inflatePrime(&mut *self.0, bits, value) } {
            z::Z_OK => Ok(()),
            rc => Err(corrupt(format!("inflatePrime: {rc}"))),
        }
    }

    fn set_dictionary(&mut self, d: &[u8]) -> Result<(), ArchiveError> {
        if d.is_empty() {
            return Ok(());
        }
        // SAFETY: initialized stream; `d` is valid for `d.len()` bytes during the call.
        match unsafe { z::inflateSetDictionary(&mut *self.0, d.as_ptr(), d.len() as u32) } {
            z::Z_OK => Ok(()),
            rc => Err(corrupt(format!("inflateSetDictionary: {rc}"))),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: initialized by `new`, ended once.
        unsafe {
            z::inflateEnd(&mut *self.0);
        }
    }
}

/// One streaming pass over a gzip file: decompresses, records access points.
pub struct Indexer {
    strm: Option<Stream>,
    /// Circular output buffer: the last 32 KiB of decompressed data.
    win: Vec<u8>,
    wpos: usize,
    /// Compressed bytes consumed, decompressed bytes produced.
    totin: u64,
    totout: u64,
    last: Option<u64>,
    span: u64,
    points: Vec<Point>,
    /// A member ended; the next byte starts another one (or the file ends).
    between: bool,
    /// The first byte of a gzip magic that ended the last input, after a member.
    held: Option<u8>,
    /// Padding after the last member was seen, or the sink wanted no more: input is ignored.
    ended: bool,
    stopped: bool,
}

impl Indexer {
    pub fn new(span: u64) -> Indexer {
        Indexer {
            strm: None,
            win: vec![0; WINSIZE],
            wpos: 0,
            totin: 0,
            totout: 0,
            last: None,
            span: span.max(1),
            points: Vec::new(),
            between: true,
            held: None,
            ended: false,
            stopped: false,
        }
    }

    /// Decompressed bytes so far.
    pub fn total_out(&self) -> u64 {
        self.totout
    }

    /// Feeds the next compressed bytes; every decompressed byte goes to `sink`, in order.
    /// An error from `sink` stops the pass and is returned as is.
    pub fn feed(
        &mut self,
        input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<(), ArchiveError>,
    ) -> Result<(), ArchiveError> {
        self.feed_while(input, &mut |d| sink(d).map(|()| true))
    }

    /// [`Indexer::feed`], with a sink that says whether it wants more: once it answers
    /// `false` the pass ends there (the rest of the input, and any later input, is not
    /// decompressed), and [`Indexer::finish`] accepts the unfinished member.
    pub fn feed_while(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<bool, ArchiveError>,
    ) -> Result<(), ArchiveError> {
        while !input.is_empty() && !self.ended && !self.stopped {
            if self.between {
                // The first member must be gzip (zlib says why not); after one, other bytes
                // are padding.
                let first = self.totin == 0 && self.held.is_none();
                match after_member(self.held, input) {
                    After::Hold if !first => {
                        self.held = Some(input[0]);
                        self.totin += 1;
                        return Ok(());
                    }
                    After::Padding if !first => {
                        self.ended = true;
                        return Ok(());
                    }
                    _ => {}
                }
                let mut strm = Stream::new(GZIP)?;
                if let Some(b) = self.held.take() {
                    // Counted in totin when it was held.
                    let mut none = [0u8; 1];
                    let (_, _, rc) = strm.inflate(&[b], &mut none, z::Z_BLOCK);
                    if rc != z::Z_OK {
                        return Err(corrupt(strm.message(rc)));
                    }
                }
                self.strm = Some(strm);
                self.between = false;
            }
            if self.wpos == WINSIZE {
                self.wpos = 0;
            }
            let strm = self.strm.as_mut().expect("a stream");
            let (used, made, rc) = strm.inflate(input, &mut self.win[self.wpos..], z::Z_BLOCK);
            input = &input[used..];
            self.totin += used as u64;
            let more = made == 0 || sink(&self.win[self.wpos..self.wpos + made])?;
            self.wpos += made;
            self.totout += made as u64;
            if !more {
                self.stopped = true;
                return Ok(());
            }
            match rc {
                z::Z_OK => {
                    let dt = strm.data_type();
                    if dt & 0xc0 == 0x80 && self.last.is_none_or(|l| self.totout - l >= self.span) {
                        let bits = (dt & 63) as u64;
                        self.add_point(self.totin.saturating_mul(8).saturating_sub(bits));
                    }
                }
                z::Z_STREAM_END => self.between = true,
                z::Z_BUF_ERROR if used == 0 && made == 0 => {
                    return Err(corrupt("gzip: no progress"));
                }
                z::Z_BUF_ERROR => {}
                rc => return Err(corrupt(strm.message(rc))),
            }
        }
        Ok(())
    }

    fn add_point(&mut self, bit: u64) {
        let n = (self.totout as usize).min(WINSIZE);
        let mut window = Vec::with_capacity(n);
        if n == WINSIZE {
            window.extend_from_slice(&self.win[self.wpos..]);
            window.extend_from_slice(&self.win[..self.wpos]);
        } else {
            window.extend_from_slice(&self.win[self.wpos - n..self.wpos]);
        }
        self.points.push(Point {
            out: self.totout,
            bit,
            window,
        });
        self.last = Some(self.totout);
        if self.points.len() > MAX_POINTS {
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.span *= 2;
        }
    }

    /// The access points, once the input is complete (`complete`: the whole file was fed;
    /// otherwise the caller stopped early, at the end of the tar data, and the points so
    /// far are kept; so too when the sink of [`Indexer::feed_while`] wanted no more).
    pub fn finish(self, complete: bool) -> Result<Vec<Point>, ArchiveError> {
        if complete && !self.between && !self.stopped {
            return Err(corrupt("truncated gzip data"));
        }
        if self.totin == 0 {
            return Err(corrupt("empty gzip file"));
        }
        Ok(self.points)
    }
}

enum Phase {
    /// Raw deflate from an access point (or gzip mode, inside a later member).
    Inflate,
    /// Skipping the rest of a member's 8-byte trailer (after raw inflate ended).
    Trailer(u8),
    /// Between members: the next bytes start another gzip member, or are padding.
    Next,
    /// Padding after the last member, or past the end asked for: input is ignored.
    End,
}

/// Where an [`Extractor`] puts decompressed bytes: `(offset, bytes)`.
pub type OutSink<'a> = dyn FnMut(u64, &[u8]) -> Result<(), ArchiveError> + 'a;

/// Decompression resumed at an access point. Feed it the compressed bytes from
/// [`Point::start`] on, in order.
pub struct Extractor {
    strm: Option<Stream>,
    phase: Phase,
    /// Decompressed offset of the next byte produced.
    at: u64,
    /// Compressed offset of the next byte to feed.
    next_in: u64,
    /// Bits to prime from the first byte (0: none), and the window to set after it.
    prime: u8,
    window: Option<Vec<u8>>,
    /// Raw deflate (the member the access point is in) rather than a gzip member.
    raw_mode: bool,
    out: Vec<u8>,
    /// The first magic byte of a next member, held until the byte after it is fed.
    held: Option<u8>,
    /// Decompressed offset past which nothing is wanted ([`Extractor::until`]).
    end: u64,
}

impl Extractor {
    pub fn new(p: &Point) -> Result<Extractor, ArchiveError> {
        Ok(Extractor {
            strm: Some(Stream::new(RAW)?),
            phase: Phase::Inflate,
            at: p.out,
            next_in: p.start(),
            prime: (p.bit % 8) as u8,
            window: Some(p.window.clone()),
            raw_mode: true,
            out: vec![0; 64 << 10],
            held: None,
            end: u64::MAX,
        })
    }

    /// Stops decompressing once `end` decompressed bytes are reached (the end of the tar
    /// data): whatever the file holds after it is never inflated.
    pub fn until(mut self, end: u64) -> Extractor {
        self.end = end;
        self
    }

    /// Decompressed offset of the next byte this extractor produces.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// Compressed offset of the next byte it wants.
    pub fn next_in(&self) -> u64 {
        self.next_in
    }

    /// Feeds the compressed bytes at [`Extractor::next_in`]; decompressed bytes go to
    /// `sink(offset, bytes)`.
    pub fn feed(&mut self, mut input: &[u8], sink: &mut OutSink<'_>) -> Result<(), ArchiveError> {
        if let Some(w) = self.window.take() {
            let s = self.strm.as_mut().expect("a stream");
            if self.prime > 0 {
                let Some((&b, rest)) = input.split_first() else {
                    self.window = Some(w);
                    return Ok(());
                };
                let bits = 8 - self.prime as c_int;
                s.prime(bits, (b >> self.prime) as c_int)?;
                input = rest;
                self.next_in += 1;
            }
            s.set_dictionary(&w)?;
        }
        while !input.is_empty() {
            if self.at >= self.end {
                self.phase = Phase::End;
            }
            match self.phase {
                Phase::End => {
                    self.next_in += input.len() as u64;
                    return Ok(());
                }
                Phase::Trailer(n) => {
                    let k = (n as usize).min(input.len());
                    input = &input[k..];
                    self.next_in += k as u64;
                    let left = n - k as u8;
                    self.phase = if left == 0 {
                        Phase::Next
                    } else {
                        Phase::Trailer(left)
                    };
                    continue;
                }
                Phase::Next => {
                    match after_member(self.held, input) {
                        After::Member => {}
                        After::Hold => {
                            self.held = Some(input[0]);
                            self.next_in += 1;
                            return Ok(());
                        }
                        After::Padding => {
                            self.phase = Phase::End;
                            continue;
                        }
                    }
                    let mut s = Stream::new(GZIP)?;
                    if let Some(b) = self.held.take() {
                        // Counted in next_in when it was held.
                        let (_, _, rc) = s.inflate(&[b], &mut self.out, z::Z_NO_FLUSH);
                        if rc != z::Z_OK {
                            return Err(corrupt(s.message(rc)));
                        }
                    }
                    self.strm = Some(s);
                    self.phase = Phase::Inflate;
                    self.raw_mode = false;
                }
                Phase::Inflate => {}
            }
            let s = self.strm.as_mut().expect("a stream");
            let (used, made, rc) = s.inflate(input, &mut self.out, z::Z_NO_FLUSH);
            input = &input[used..];
            self.next_in += used as u64;
            if made > 0 {
                sink(self.at, &self.out[..made])?;
                self.at += made as u64;
            }
            match rc {
                z::Z_OK => {}
                z::Z_STREAM_END if self.raw_mode => self.phase = Phase::Trailer(8),
                z::Z_STREAM_END => self.phase = Phase::Next,
                z::Z_BUF_ERROR if used == 0 && made == 0 => {
                    return Err(corrupt("gzip: no progress"));
                }
                z::Z_BUF_ERROR => {}
                rc => return Err(corrupt(s.message(rc))),
            }
        }
        Ok(())
    }
}

const MAGIC: &[u8; 8] = b"bkfsgzp1";

/// The persisted form of access points: a magic, the count, then per point its offsets,
/// window length and window (little-endian).
pub fn encode_points(points: &[Point]) -> Vec<u8> {
    let n: usize = points.iter().map(|p| 20 + p.window.len()).sum();
    let mut out = Vec::with_capacity(12 + n);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(points.len() as u32).to_le_bytes());
    for p in points {
        out.extend_from_slice(&p.out.to_le_bytes());
        out.extend_from_slice(&p.bit.to_le_bytes());
        out.extend_from_slice(&(p.window.len() as u32).to_le_bytes());
        out.extend_from_slice(&p.window);
    }
    out
}

/// Access points from [`encode_points`]; `None` if the bytes are not that.
pub fn decode_points(b: &[u8]) -> Option<Vec<Point>> {
    let rest = b.strip_prefix(MAGIC)?;
    let (n, mut rest) = rest.split_at_checked(4)?;
    let n = u32::from_le_bytes(n.try_into().ok()?) as usize;
    if n > MAX_POINTS {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (h, r) = rest.split_at_checked(20)?;
        let wl = u32::from_le_bytes(h[16..20].try_into().ok()?) as usize;
        if wl > WINSIZE {
            return None;
        }
        let (w, r) = r.split_at_checked(wl)?;
        out.push(Point {
            out: u64::from_le_bytes(h[..8].try_into().ok()?),
            bit: u64::from_le_bytes(h[8..16].try_into().ok()?),
            window: w.to_vec(),
        });
        rest = r;
    }
    (rest.is_empty() && out.windows(2).all(|w| w[0].out < w[1].out)).then_some(out)
}

/// The access point to start from for decompressed offset `off`: the last one at or
/// before it.
pub fn point_for(points: &[Point], off: u64) -> Option<&Point> {
    let i = points.partition_point(|p| p.out <= off);
    i.checked_sub(1).map(|i| &points[i])
}

#[cfg(test)]
#[path = "gztests.rs"]
mod tests;
