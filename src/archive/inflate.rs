//! A deflated zip entry inflated piece by piece, sans I/O: [`EntryInflater`] is fed the
//! entry's compressed bytes in any pieces, stops at any output offset asked for and goes on
//! from there on the next call. Used when the derived store cannot keep a whole entry (no
//! disk cache and a large entry), so sequential reads continue where the last one stopped
//! instead of inflating from the start each time.
//!
//! The entry's bounds hold as in a whole-entry inflate: never more output than the declared
//! size, and at the end of the deflate stream the size and CRC must match.

use flate2::{Decompress, FlushDecompress, Status};

use super::{corrupt, ArchiveError};

/// Output produced per `decompress` call at most.
const OUT_PIECE: usize = 64 << 10;

pub struct EntryInflater {
    dec: Decompress,
    /// Declared (uncompressed) size and CRC of the entry.
    size: u64,
    crc: u32,
    hasher: crc32fast::Hasher,
    done: bool,
}

impl EntryInflater {
    pub fn new(size: u64, crc: u32) -> EntryInflater {
        EntryInflater {
            dec: Decompress::new(false),
            size,
            crc,
            hasher: crc32fast::Hasher::new(),
            done: false,
        }
    }

    /// Bytes produced so far (the offset of the next output byte).
    pub fn out(&self) -> u64 {
        self.dec.total_out()
    }

    /// Compressed bytes taken so far (the offset, in the entry's data, of the next input).
    pub fn consumed(&self) -> u64 {
        self.dec.total_in()
    }

    /// The deflate stream ended, with the declared size and CRC.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Inflates from `input` (the compressed bytes at [`EntryInflater::consumed`]) until the
    /// output reaches `stop_at` (at the declared size: until the stream ends and size and CRC
    /// are checked), the input runs out, or the stream ends; `emit(offset,
    /// bytes)` gets every piece of output. What is left of `input` was not taken: the next
    /// call starts at [`EntryInflater::consumed`].
    pub fn feed(
        &mut self,
        input: &[u8],
        stop_at: u64,
        emit: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<(), ArchiveError> {
        // Asked for the last bytes: go on to the end of the stream, so that its size and
        // CRC are checked before the read that ends the entry is answered.
        let stop_at = if stop_at >= self.size {
            u64::MAX
        } else {
            stop_at
        };
        let mut buf = vec![0u8; OUT_PIECE];
        let mut pos = 0usize;
        while !self.done && self.out() < stop_at {
            // Never past `stop_at`, so that the next read can start exactly there; one byte
            // past the declared size at most, to see a stream that would go beyond it.
            let room = (stop_at.min(self.size + 1) - self.out()).min(OUT_PIECE as u64) as usize;
            let (in0, out0) = (self.consumed(), self.out());
            let status = self
                .dec
                .decompress(&input[pos..], &mut buf[..room], FlushDecompress::None)
                .map_err(|e| corrupt(format!("inflate: {e}")))?;
            let took = (self.consumed() - in0) as usize;
            let made = (self.out() - out0) as usize;
            pos += took;
            if self.out() > self.size {
                return Err(corrupt(format!(
                    "inflates past its declared size of {} bytes",
                    self.size
                )));
            }
            self.hasher.update(&buf[..made]);
            if made > 0 {
                emit(out0, &buf[..made]);
            }
            if status == Status::StreamEnd {
                let crc = self.hasher.clone().finalize();
                if self.out() != self.size || crc != self.crc {
                    return Err(corrupt(format!(
                        "inflated {} bytes with CRC {crc:08x}; the archive says {} bytes, CRC {:08x}",
                        self.out(),
                        self.size,
                        self.crc
                    )));
                }
                self.done = true;
            } else if took == 0 && made == 0 {
                if pos < input.len() {
                    return Err(corrupt("inflate made no progress"));
                }
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    fn deflate(data: &[u8], level: u32) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn data(len: usize, seed: u64) -> Vec<u8> {
        // Half compressible text, half noise.
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (i / 4096) % 2 == 0 {
                    b"abcdefgh"[(x % 8) as usize]
                } else {
                    x as u8
                }
            })
            .collect()
    }

    /// Drives an inflater over `z` with input pieces of `piece` bytes and stops every
    /// `step` output bytes, as reads do; returns what it emitted, checked to be contiguous.
    fn run(inf: &mut EntryInflater, z: &[u8], piece: usize, step: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stop = step;
        let mut guard = 0;
        while !inf.is_done() {
            guard += 1;
            assert!(guard < 1_000_000, "no progress");
            let at = inf.consumed() as usize;
            let end = (at + piece).min(z.len());
            let before = inf.out();
            inf.feed(&z[at..end], stop, &mut |o, d| {
                assert_eq!(o, out.len() as u64);
                out.extend_from_slice(d);
            })
            .unwrap();
            assert!(inf.out() <= stop.max(before), "went past the stop");
            if inf.out() >= stop {
                stop += step;
            } else if end == z.len() && !inf.is_done() && inf.out() == before {
                break;
            }
        }
        out
    }

    #[test]
    fn pieces_and_stops_give_the_entry() {
        let d = data(300_000, 7);
        let z = deflate(&d, 6);
        let mut inf = EntryInflater::new(d.len() as u64, crc32fast::hash(&d));
        assert!(run(&mut inf, &z, 777, 4096) == d);
        assert!(inf.is_done());
        assert_eq!(inf.consumed(), z.len() as u64);
    }

    #[test]
    fn a_stream_longer_than_declared_is_refused_without_inflating_it_all() {
        let d = vec![0u8; 10 << 20];
        let z = deflate(&d, 9);
        let mut inf = EntryInflater::new(1000, crc32fast::hash(&d[..1000]));
        let mut seen = 0u64;
        let r = inf.feed(&z, u64::MAX, &mut |_, b| seen += b.len() as u64);
        assert!(matches!(r, Err(ArchiveError::Corrupt(_))), "{r:?}");
        assert!(seen <= 1001, "emitted {seen} bytes");
    }

    #[test]
    fn a_wrong_crc_or_a_short_stream_is_corrupt() {
        let d = data(50_000, 3);
        let z = deflate(&d, 6);
        let mut inf = EntryInflater::new(d.len() as u64, crc32fast::hash(&d) ^ 1);
        let r = inf.feed(&z, u64::MAX, &mut |_, _| {});
        assert!(matches!(r, Err(ArchiveError::Corrupt(_))), "{r:?}");
        let mut inf = EntryInflater::new(d.len() as u64 + 5, crc32fast::hash(&d));
        let r = inf.feed(&z, u64::MAX, &mut |_, _| {});
        assert!(matches!(r, Err(ArchiveError::Corrupt(_))), "{r:?}");
        // Cut short: not an error by itself, just never done (the caller knows the size).
        let mut inf = EntryInflater::new(d.len() as u64, crc32fast::hash(&d));
        inf.feed(&z[..z.len() / 2], u64::MAX, &mut |_, _| {})
            .unwrap();
        assert!(!inf.is_done());
        assert!(inf.out() < d.len() as u64);
    }

    #[test]
    fn garbage_is_corrupt_not_a_hang() {
        let mut inf = EntryInflater::new(100, 0);
        let r = inf.feed(&[0xff; 64], u64::MAX, &mut |_, _| {});
        assert!(matches!(r, Err(ArchiveError::Corrupt(_))), "{r:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn any_pieces_any_stops(
            len in 0usize..200_000,
            seed in any::<u64>(),
            level in 0u32..10,
            piece in 1usize..70_000,
            step in 1u64..150_000,
        ) {
            let d = data(len, seed);
            let z = deflate(&d, level);
            let mut inf = EntryInflater::new(d.len() as u64, crc32fast::hash(&d));
            let got = run(&mut inf, &z, piece, step);
            prop_assert!(got == d);
            prop_assert!(inf.is_done());
        }
    }
}
