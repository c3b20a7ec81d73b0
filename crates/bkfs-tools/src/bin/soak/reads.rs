//! The soak's reads: one `pread` or whole-file read, checked byte for byte, and what it did.

use super::*;

/// What one read did.
pub enum Outcome {
    /// Right bytes; this many verified.
    Ok(u64),
    /// An error from open or read.
    Err(std::io::Error),
    /// Bytes that differ from the artifact: (first differing offset, bytes that differ).
    Wrong(u64, u64),
    /// End of file before the artifact's end: (offset where it ended, where it should have).
    Short(u64, u64),
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Kind {
    Pread,
    PreadDirect,
    Full,
    FullDirect,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pread => "pread",
            Kind::PreadDirect => "pread O_DIRECT",
            Kind::Full => "full",
            Kind::FullDirect => "full O_DIRECT",
        }
    }
    pub fn direct(self) -> bool {
        matches!(self, Kind::PreadDirect | Kind::FullDirect)
    }
}

pub fn open(path: &Path, direct: bool) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// Compares what came back at `off` with the artifact; `None` when it matches.
pub fn mismatch(got: &[u8], want: &[u8], off: u64) -> Option<Outcome> {
    if got == want {
        return None;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count() as u64;
    Some(Outcome::Wrong(off + first as u64, differ))
}

/// `len` bytes at `off` (possibly past the end), in as many `pread`s as it takes.
pub fn pread_op(path: &Path, content: &[u8], off: u64, len: usize, direct: bool) -> Outcome {
    let f = match open(path, direct) {
        Ok(f) => f,
        Err(e) => return Outcome::Err(e),
    };
    let size = content.len() as u64;
    let want = &content[off.min(size) as usize..(off + len as u64).min(size) as usize];
    let mut buf = vec![0u8; len];
    let mut got = 0usize;
    while got < len {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Outcome::Err(e),
        }
    }
    if got > want.len() {
        // Bytes past the artifact's end are wrong bytes.
        return Outcome::Wrong(off + want.len() as u64, (got - want.len()) as u64);
    }
    if let Some(w) = mismatch(&buf[..got], &want[..got], off) {
        return w;
    }
    if got < want.len() {
        return Outcome::Short(off + got as u64, off + want.len() as u64);
    }
    Outcome::Ok(got as u64)
}

/// The whole file, in reads of `chunk` bytes, checked as it arrives.
pub fn full_op(path: &Path, content: &[u8], chunk: usize, direct: bool) -> Outcome {
    let mut f = match open(path, direct) {
        Ok(f) => f,
        Err(e) => return Outcome::Err(e),
    };
    let mut buf = vec![0u8; chunk];
    let mut pos = 0usize;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Outcome::Err(e),
        };
        if pos + n > content.len() {
            return Outcome::Wrong(content.len() as u64, (pos + n - content.len()) as u64);
        }
        if let Some(w) = mismatch(&buf[..n], &content[pos..pos + n], pos as u64) {
            return w;
        }
        pos += n;
    }
    if pos < content.len() {
        return Outcome::Short(pos as u64, content.len() as u64);
    }
    Outcome::Ok(pos as u64)
}

pub fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EIO) => "EIO".into(),
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::ENOTCONN) => "ENOTCONN".into(),
        Some(libc::ECONNABORTED) => "ECONNABORTED".into(),
        Some(libc::EINTR) => "EINTR".into(),
        Some(libc::EAGAIN) => "EAGAIN".into(),
        Some(libc::ENOMEM) => "ENOMEM".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(n) => format!("errno {n}"),
        None => format!("{:?}", e.kind()),
    }
}
