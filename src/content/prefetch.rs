//! Sequential-stream detection per open handle: where the stream is, and the prefetch window
//! (in blocks) that doubles while the reader stays sequential. Pure logic, no I/O.

use std::sync::Mutex;

/// How far out of order a read may land and still count as part of a sequential stream
/// (the kernel's readahead sends several reads at once, and runs well ahead of the reader).
pub const SEQ_SLACK: u64 = 8 << 20;

/// Per open file handle.
#[derive(Debug, Default)]
pub struct Handle {
    seq: Mutex<Stream>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// The furthest end read so far.
    next: u64,
    /// Prefetch window, in blocks.
    window: u64,
    /// Where a read that looked random ended, in case the next read continues it.
    alt: u64,
}

impl Handle {
    /// Records a read of `[offset, end)` whose last block is `last` (of `nblocks`); returns
    /// the blocks to prefetch, if any, with windows of at most `max_window` blocks.
    pub fn advance(
        &self,
        offset: u64,
        end: u64,
        last: u64,
        nblocks: u64,
        max_window: u64,
    ) -> Option<(u64, u64)> {
        self.seq
            .lock()
            .unwrap()
            .advance(offset, end, last, nblocks, max_window)
    }
}

impl Stream {
    pub fn advance(
        &mut self,
        offset: u64,
        end: u64,
        last: u64,
        nblocks: u64,
        max_window: u64,
    ) -> Option<(u64, u64)> {
        let Stream { next, window, alt } = *self;
        // A read within SEQ_SLACK of the stream's position counts as sequential. A read
        // elsewhere prefetches nothing and keeps the stream's position, unless it continues
        // an earlier outlier (`alt`): then that is the new stream (a seek).
        let fresh = next == 0 && window == 0;
        let near = offset + SEQ_SLACK >= next && offset <= next + SEQ_SLACK;
        let (w, new_next, new_alt) = if offset == next || (!fresh && near) {
            ((window * 2).clamp(1, max_window), next.max(end), alt)
        } else if offset == alt {
            (1, end, u64::MAX)
        } else if window > 0 {
            (0, next, end)
        } else {
            (0, end, u64::MAX)
        };
        let from = last + 1;
        let to = (last + w).min(nblocks.saturating_sub(1));
        // An outlier shrinks the window (random access soon has none) without losing the
        // stream, so a sequential reader recovers in one read or two.
        *self = Stream {
            next: new_next,
            window: if w == 0 { window / 4 } else { w },
            alt: new_alt,
        };
        (w > 0 && to >= from).then_some((from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sequential_grows_random_shrinks() {
        let mut s = Stream::default();
        let bs = 128 << 10;
        let mut windows = Vec::new();
        for i in 0..6u64 {
            let r = s.advance(i * bs, (i + 1) * bs, i, 1000, 16);
            windows.push(r.map(|(a, b)| b - a + 1).unwrap_or(0));
        }
        assert_eq!(windows, [1, 2, 4, 8, 16, 16]);
        assert_eq!(
            s.advance(900 * bs, 901 * bs, 900, 1000, 16),
            None,
            "an outlier"
        );
        assert!(
            s.advance(6 * bs, 7 * bs, 6, 1000, 16).is_some(),
            "the stream goes on"
        );
    }

    proptest! {
        #[test]
        fn prefetch_stays_in_the_file(reads in proptest::collection::vec((0u64..1000, 1u64..4), 1..50)) {
            let mut s = Stream::default();
            for (b, n) in reads {
                let last = (b + n - 1).min(999);
                if let Some((from, to)) = s.advance(b * 4096, (last + 1) * 4096, last, 1000, 64) {
                    prop_assert!(from > last && to < 1000 && from <= to && to - from < 64);
                }
            }
        }
    }
}
