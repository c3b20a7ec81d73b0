//! Zip and ZIP64 structures, parsed from bytes (no I/O): the end-of-central-directory record
//! (found in the archive's tail), the ZIP64 locator and end record, the central directory,
//! and local headers (checked against the central directory before any entry is read).
//!
//! Why our own parser rather than a crate: what bkfs needs is exactly "given these bytes from
//! the end, where is the central directory, and what does it say" — a few hundred lines that
//! are easy to test exhaustively (the `zip` crate writes the test archives). `rc-zip` would
//! fit too (sans-I/O), but its state machine wants to drive the reads, while here the reads
//! go through the block reader and its cache; and `zip`/`async_zip` want a `Read + Seek`.

use super::{corrupt, ArchiveError, Data, RawEntry, RawKind, MAX_ENTRIES, MAX_NAME_BYTES};

pub const EOCD_SIG: u32 = 0x0605_4b50;
pub const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
pub const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
pub const CENTRAL_SIG: u32 = 0x0201_4b50;
pub const LOCAL_SIG: u32 = 0x0403_4b50;
/// Fixed part of the end-of-central-directory record.
pub const EOCD_LEN: u64 = 22;
/// Fixed part of a local header.
pub const LOCAL_LEN: u64 = 30;
/// The ZIP64 end record's fixed part.
pub const ZIP64_EOCD_LEN: u64 = 56;
/// How much of the tail holds the end record for sure: the record, the longest comment, and
/// the ZIP64 locator and end record before it.
pub const TAIL_LEN: u64 = EOCD_LEN + 65535 + 20 + ZIP64_EOCD_LEN;
/// Largest central directory read (bounded memory per index).
pub const MAX_CD_LEN: u64 = 256 << 20;
/// No deflate stream expands more than about 1032:1; an entry claiming more is a lie.
pub const MAX_RATIO: u64 = 1032;

pub const STORED: u16 = 0;
pub const DEFLATED: u16 = 8;

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
}

/// Where the central directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdLocation {
    pub offset: u64,
    pub size: u64,
    pub entries: u64,
}

/// What the tail says: the central directory, or that the ZIP64 end record at `at` must be
/// read first (it may already be inside the tail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    Found(CdLocation),
    Zip64At(u64),
}

/// Finds the end record in `tail`, the bytes `[file_len - tail.len(), file_len)`.
pub fn parse_tail(tail: &[u8], file_len: u64) -> Result<Tail, ArchiveError> {
    if (tail.len() as u64) < EOCD_LEN || tail.len() as u64 > file_len {
        return Err(corrupt("too short for a zip"));
    }
    let base = file_len - tail.len() as u64;
    // The last signature whose comment runs exactly to the end; else the last one at all
    // (some writers pad or miscount the comment).
    let mut found = None;
    let mut any = None;
    for i in (0..=tail.len() - EOCD_LEN as usize).rev() {
        if u32_at(tail, i) == EOCD_SIG {
            let clen = u16_at(tail, i + 20) as usize;
            if i + EOCD_LEN as usize + clen == tail.len() {
                found = Some(i);
                break;
            }
            any.get_or_insert(i);
        }
    }
    let i = found
        .or(any)
        .ok_or_else(|| corrupt("no end-of-central-directory record"))?;
    let e = &tail[i..];
    let disk = u16_at(e, 4);
    let cd_disk = u16_at(e, 6);
    let entries = u16_at(e, 10) as u64;
    let size = u32_at(e, 12) as u64;
    let offset = u32_at(e, 16) as u64;
    let eocd_at = base + i as u64;
    // A ZIP64 locator right before the record wins.
    if i >= 20 && u32_at(tail, i - 20) == ZIP64_LOCATOR_SIG {
        let at = u64_at(tail, i - 20 + 8);
        if at.checked_add(ZIP64_EOCD_LEN).is_none_or(|e| e > eocd_at) {
            return Err(corrupt("ZIP64 end record past the end record"));
        }
        return Ok(Tail::Zip64At(at));
    }
    if entries == 0xffff || size == 0xffff_ffff || offset == 0xffff_ffff {
        return Err(corrupt("ZIP64 sizes without a ZIP64 locator"));
    }
    if disk != 0 || cd_disk != 0 {
        return Err(corrupt("multi-disk archives are not supported"));
    }
    check_location(
        CdLocation {
            offset,
            size,
            entries,
        },
        eocd_at,
    )
    .map(Tail::Found)
}

/// Parses the ZIP64 end record (`rec` starts at its signature); `end_at` is where it ends
/// being allowed to reach (the locator's offset).
pub fn parse_zip64_eocd(rec: &[u8], rec_at: u64) -> Result<CdLocation, ArchiveError> {
    if (rec.len() as u64) < ZIP64_EOCD_LEN || u32_at(rec, 0) != ZIP64_EOCD_SIG {
        return Err(corrupt("bad ZIP64 end record"));
    }
    if u32_at(rec, 16) != 0 || u32_at(rec, 20) != 0 {
        return Err(corrupt("multi-disk archives are not supported"));
    }
    let loc = CdLocation {
        entries: u64_at(rec, 32),
        size: u64_at(rec, 40),
        offset: u64_at(rec, 48),
    };
    check_location(loc, rec_at)
}

fn check_location(loc: CdLocation, end: u64) -> Result<CdLocation, ArchiveError> {
    if loc.offset.checked_add(loc.size).is_none_or(|e| e > end) {
        return Err(corrupt("central directory outside the archive"));
    }
    if loc.size > MAX_CD_LEN {
        return Err(ArchiveError::TooLarge(format!(
            "central directory of {} bytes",
            loc.size
        )));
    }
    // Each record takes at least 46 bytes: an absurd count cannot make us allocate.
    if loc.entries > loc.size / 46 + 1 || loc.entries > MAX_ENTRIES as u64 {
        return Err(corrupt(format!(
            "{} entries cannot fit in a {}-byte central directory",
            loc.entries, loc.size
        )));
    }
    Ok(loc)
}

/// One central directory record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdEntry {
    pub name: Vec<u8>,
    pub flags: u16,
    pub method: u16,
    pub crc: u32,
    pub csize: u64,
    pub usize: u64,
    pub header: u64,
    pub mtime: i64,
    /// The unix mode in the external attributes, when the archive was made on unix.
    pub unix_mode: Option<u32>,
}

/// Longest zip symlink target taken as a link (PATH_MAX); a longer one stays a file.
pub const MAX_LINK_TARGET: u64 = 4096;

/// Parses the central directory (`cd` is all of it; `loc` where it is). Entries must lie
/// before it.
pub fn parse_cd(cd: &[u8], loc: &CdLocation) -> Result<Vec<CdEntry>, ArchiveError> {
    let mut out = Vec::with_capacity(loc.entries.min(1 << 16) as usize);
    let mut i = 0usize;
    let mut name_bytes = 0usize;
    while i < cd.len() && (out.len() as u64) < loc.entries {
        if cd.len() - i < 46 || u32_at(cd, i) != CENTRAL_SIG {
            return Err(corrupt(format!(
                "bad central directory record {} at offset {}",
                out.len(),
                loc.offset.saturating_add(i as u64)
            )));
        }
        let r = &cd[i..];
        let made_by = u16_at(r, 4);
        let external = u32_at(r, 38);
        let flags = u16_at(r, 8);
        let method = u16_at(r, 10);
        let time = u16_at(r, 12);
        let date = u16_at(r, 14);
        let crc = u32_at(r, 16);
        let mut csize = u32_at(r, 20) as u64;
        let mut usize = u32_at(r, 24) as u64;
        let nlen = u16_at(r, 28) as usize;
        let xlen = u16_at(r, 30) as usize;
        let clen = u16_at(r, 32) as usize;
        let mut header = u32_at(r, 42) as u64;
        if r.len() < 46 + nlen + xlen + clen {
            return Err(corrupt("central directory record runs past its end"));
        }
        let name = r[46..46 + nlen].to_vec();
        name_bytes += nlen;
        if name_bytes > MAX_NAME_BYTES {
            return Err(ArchiveError::TooLarge("names".into()));
        }
        let mut mtime = dos_time(date, time);
        let mut x = &r[46 + nlen..46 + nlen + xlen];
        while x.len() >= 4 {
            let id = u16_at(x, 0);
            let len = (u16_at(x, 2) as usize).min(x.len() - 4);
            let mut f = &x[4..4 + len];
            match id {
                0x0001 => {
                    // ZIP64: only the fields whose 32-bit value is saturated, in this order.
                    for v in [&mut usize, &mut csize, &mut header] {
                        if *v == 0xffff_ffff && f.len() >= 8 {
                            *v = u64_at(f, 0);
                            f = &f[8..];
                        }
                    }
                }
                0x5455 if !f.is_empty() && f[0] & 1 != 0 && f.len() >= 5 => {
                    mtime = u32_at(f, 1) as i64;
                }
                _ => {}
            }
            x = &x[4 + len..];
        }
        // The local header (at least as long as this record's name) and the data after it
        // lie before the central directory.
        if header
            .checked_add(LOCAL_LEN + nlen as u64)
            .and_then(|e| e.checked_add(csize))
            .is_none_or(|e| e > loc.offset)
        {
            return Err(corrupt(format!(
                "entry {} lies outside the archive's data",
                String::from_utf8_lossy(&name)
            )));
        }
        let e = CdEntry {
            name,
            flags,
            method,
            crc,
            csize,
            usize,
            header,
            mtime,
            unix_mode: (made_by >> 8 == 3).then_some(external >> 16),
        };
        // A symlink's target is read while indexing: it counts like a name, before it is read.
        if e.is_symlink() {
            name_bytes += e.usize as usize;
            if name_bytes > MAX_NAME_BYTES {
                return Err(ArchiveError::TooLarge("names and link targets".into()));
            }
        }
        out.push(e);
        i += 46 + nlen + xlen + clen;
    }
    if (out.len() as u64) < loc.entries {
        return Err(corrupt(format!(
            "the central directory holds {} of {} entries",
            out.len(),
            loc.entries
        )));
    }
    Ok(out)
}

impl CdEntry {
    /// A symlink: unix mode `S_IFLNK`, its target (the entry's data) short enough, and an
    /// entry bkfs can read (not encrypted; stored or deflated).
    pub fn is_symlink(&self) -> bool {
        self.unix_mode.is_some_and(|m| m & 0o170000 == 0o120000)
            && !self.name.ends_with(b"/")
            && self.usize <= MAX_LINK_TARGET
            && self.csize <= MAX_LINK_TARGET * 2 + 64
            && self.flags & 1 == 0
            && matches!(self.method, STORED | DEFLATED)
    }

    /// A symlink's entry, given its target.
    pub fn into_link(self, target: Vec<u8>) -> RawEntry {
        RawEntry {
            kind: RawKind::Symlink(target),
            size: 0,
            mtime: self.mtime,
            data: None,
            path: self.name,
        }
    }

    /// The [`Data`] that locates this entry's bytes.
    pub fn data(&self) -> Data {
        Data::Zip {
            header: self.header,
            method: self.method,
            csize: self.csize,
            crc: self.crc,
            encrypted: self.flags & 1 != 0,
            raw_name: self.name.clone(),
            flags: self.flags,
        }
    }

    pub fn into_raw(self) -> RawEntry {
        let is_dir = self.name.ends_with(b"/");
        RawEntry {
            kind: if is_dir { RawKind::Dir } else { RawKind::File },
            size: self.usize,
            mtime: self.mtime,
            data: (!is_dir).then(|| Data::Zip {
                header: self.header,
                method: self.method,
                csize: self.csize,
                crc: self.crc,
                encrypted: self.flags & 1 != 0,
                raw_name: self.name.clone(),
                flags: self.flags,
            }),
            path: self.name,
        }
    }
}

/// Seconds since the epoch of an MS-DOS date and time (taken as UTC).
pub fn dos_time(date: u16, time: u16) -> i64 {
    let y = 1980 + (date >> 9) as i64;
    let m = ((date >> 5) & 15).clamp(1, 12) as i64;
    let d = (date & 31).max(1) as i64;
    let secs = (time >> 11) as i64 * 3600 + ((time >> 5) & 63) as i64 * 60 + (time & 31) as i64 * 2;
    days_from_civil(y, m, d) * 86400 + secs
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Checks a local header (its fixed 30 bytes, then the name) against the central directory
/// and returns the offset of the entry's data, which must end by `data_end` (the central
/// directory's offset): a local extra field cannot push it into other bytes.
pub fn data_offset(local: &[u8], data: &Data, data_end: u64) -> Result<u64, ArchiveError> {
    let Data::Zip {
        header,
        method,
        csize,
        crc,
        raw_name,
        flags,
        ..
    } = data
    else {
        return Err(corrupt("not a zip entry"));
    };
    if (local.len() as u64) < LOCAL_LEN || u32_at(local, 0) != LOCAL_SIG {
        return Err(corrupt("bad local header signature"));
    }
    let lmethod = u16_at(local, 8);
    let lflags = u16_at(local, 6);
    let nlen = u16_at(local, 26) as usize;
    let xlen = u16_at(local, 28) as u64;
    if lmethod != *method {
        return Err(corrupt(format!(
            "local header says method {lmethod}, the central directory {method}"
        )));
    }
    if nlen != raw_name.len() {
        return Err(corrupt(format!(
            "local header name of {nlen} bytes, the central directory's of {}",
            raw_name.len()
        )));
    }
    if local.len() < 30 + nlen || &local[30..30 + nlen] != raw_name.as_slice() {
        return Err(corrupt("local header names a different file"));
    }
    if lflags & 8 == 0 && flags & 8 == 0 {
        let lcrc = u32_at(local, 14);
        let lcsize = u32_at(local, 18) as u64;
        if lcrc != *crc || (lcsize != 0xffff_ffff && lcsize != *csize) {
            return Err(corrupt(
                "local header and central directory disagree on CRC or size",
            ));
        }
    }
    let start = header
        .checked_add(LOCAL_LEN + nlen as u64 + xlen)
        .ok_or_else(|| corrupt("local header offset overflows"))?;
    if start.checked_add(*csize).is_none_or(|e| e > data_end) {
        return Err(corrupt(format!(
            "entry data at {start} of {csize} bytes runs past {data_end}, the central directory"
        )));
    }
    Ok(start)
}

/// A method's name for log lines.
pub fn method_name(m: u16) -> String {
    match m {
        0 => "stored".into(),
        8 => "deflate".into(),
        9 => "deflate64".into(),
        12 => "bzip2".into(),
        14 => "lzma".into(),
        93 => "zstd".into(),
        95 => "xz".into(),
        99 => "aes".into(),
        m => format!("method {m}"),
    }
}
