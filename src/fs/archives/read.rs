//! Reading the bytes of archive entries: stored zip entries and plain tar entries by range,
//! deflated zip entries inflated once into the derived store (or as a stream when that
//! cannot hold them), tar.gz entries from the nearest access point or suspended cursor.

use std::io::Write;
use std::sync::Arc;

use super::*;

/// A tar.gz decompression between reads, and the 1 MiB block it is filling.
pub(super) struct Cursor {
    x: Extractor,
    h: Handle,
    blk: Vec<u8>,
    blk_at: Option<u64>,
}

impl Cursor {
    /// Collects decompressed bytes at `o` into aligned blocks of a stream of `total` bytes;
    /// each whole block goes to the store under `key`.
    fn absorb(
        blk: &mut Vec<u8>,
        blk_at: &mut Option<u64>,
        store: &Derived,
        key: &str,
        total: u64,
        mut o: u64,
        mut d: &[u8],
    ) {
        while !d.is_empty() && o < total {
            let start = match *blk_at {
                Some(s) => s,
                None if o.is_multiple_of(DBLOCK) => {
                    *blk_at = Some(o);
                    blk.clear();
                    o
                }
                None => {
                    let skip = ((DBLOCK - o % DBLOCK) as usize).min(d.len());
                    o += skip as u64;
                    d = &d[skip..];
                    continue;
                }
            };
            let want = block_len(total, start / DBLOCK) as usize;
            let take = (want - blk.len()).min(d.len());
            blk.extend_from_slice(&d[..take]);
            o += take as u64;
            d = &d[take..];
            if blk.len() == want {
                store.put(key, start / DBLOCK, Bytes::from(std::mem::take(blk)));
                *blk_at = None;
            }
        }
    }
}

/// A deflated zip entry's inflate between reads, and the 1 MiB block it is filling.
pub(super) struct ZipCursor {
    pub(super) id: u32,
    ix: u32,
    x: EntryInflater,
    h: Handle,
    /// Compressed bytes fetched and not yet inflated (they start at `x.consumed()`).
    pending: Bytes,
    blk: Vec<u8>,
    blk_at: Option<u64>,
}

impl Archives {
    fn inflight_lock(&self, a: &Archive, ix: u32) -> Arc<tokio::sync::Mutex<()>> {
        a.inflating.lock().unwrap().entry(ix).or_default().clone()
    }

    /// Reads an entry's bytes.
    pub async fn read(&self, ino: Ino, off: u64, size: u32) -> Result<Bytes, FsError> {
        let (id, ix) = split_ino(ino).ok_or(FsError::NotFound)?;
        let a = self.archive(id).ok_or(FsError::NotFound)?;
        let idx = a.index.read().unwrap().clone();
        let idx = match idx {
            Some(idx) => idx,
            // Dropped with its evicted build while this file was open: load it again.
            None => {
                self.prepare(ino).await?;
                a.index.read().unwrap().clone().ok_or(FsError::NotFound)?
            }
        };
        let e = idx.get(ix).ok_or(FsError::NotFound)?;
        if e.kind != EntryKind::File {
            return Err(FsError::IsDir);
        }
        let len = (size as u64).min(e.size.saturating_sub(off));
        if len == 0 {
            return Ok(Bytes::new());
        }
        let path = || format!("{}#/{}", a.meta.original_path, idx.path_of(ix));
        let r = match e.data.as_ref() {
            Some(Data::Tar { offset }) if idx.format == Format::Tar => {
                self.raw(&a, offset + off, len, None).await
            }
            Some(Data::Tar { offset }) => self.read_gz(&a, idx.stream_len, offset + off, len).await,
            Some(
                d @ Data::Zip {
                    method,
                    csize,
                    encrypted,
                    ..
                },
            ) => {
                if *encrypted {
                    tracing::warn!(path = %path(), "encrypted zip entries cannot be read");
                    return Err(FsError::Access("encrypted zip entry".into()));
                }
                match *method {
                    zip::STORED if *csize != e.size => Err(Fail::Bad(crate::archive::corrupt(
                        "stored entry with different compressed and uncompressed sizes",
                    ))),
                    zip::STORED => match self.zip_data(&a, ix, d).await {
                        Ok(start) => self.raw(&a, start + off, len, None).await,
                        Err(f) => Err(f),
                    },
                    zip::DEFLATED => self.read_deflated(&a, ix, e.size, d, off, len).await,
                    m => {
                        tracing::error!(path = %path(), method = %zip::method_name(m), "unsupported zip compression method");
                        return Err(FsError::Io(format!(
                            "unsupported compression method {}",
                            zip::method_name(m)
                        )));
                    }
                }
            }
            None => Ok(Bytes::new()),
        };
        r.map_err(|f| {
            let m = match f {
                Fail::Net(m) => m,
                Fail::Bad(e) => e.to_string(),
            };
            tracing::error!(path = %path(), error = %m, "cannot read the archive entry");
            FsError::Io(m)
        })
    }

    /// Checks an entry's local header (once) and returns where its data starts.
    async fn zip_data(&self, a: &Archive, ix: u32, d: &Data) -> Result<u64, Fail> {
        if let Some(&o) = a.offsets.lock().unwrap().get(&ix) {
            return Ok(o);
        }
        let Data::Zip {
            header, raw_name, ..
        } = d
        else {
            return Err(Fail::Bad(crate::archive::corrupt("not a zip entry")));
        };
        let local = self
            .raw(a, *header, zip::LOCAL_LEN + raw_name.len() as u64, None)
            .await?;
        // Entry data ends by the central directory (a zip index's stream_len).
        let cd_at = a.index.read().unwrap().as_ref().map_or(0, |i| i.stream_len);
        let o = zip::data_offset(&local, d, cd_at)?;
        a.offsets.lock().unwrap().insert(ix, o);
        Ok(o)
    }

    async fn read_deflated(
        &self,
        a: &Archive,
        ix: u32,
        usize: u64,
        d: &Data,
        off: u64,
        len: u64,
    ) -> Result<Bytes, Fail> {
        let Data::Zip { csize, crc, .. } = d else {
            return Err(Fail::Bad(crate::archive::corrupt("not a zip entry")));
        };
        if usize > csize.saturating_mul(zip::MAX_RATIO).saturating_add(1 << 10) {
            return Err(Fail::Bad(crate::archive::corrupt(format!(
                "declares {usize} bytes from {csize} compressed: over the {}:1 deflate bound",
                zip::MAX_RATIO
            ))));
        }
        if !self.store.has_disk() && usize > STREAM_ENTRIES_OVER {
            return self
                .read_deflated_stream(a, ix, (usize, *csize, *crc), d, off, len)
                .await;
        }
        let key = format!("{}.z{ix}", a.ckey);
        if self.store.complete(&key) == Some(usize) {
            if let Some(b) = self.store.read(&key, usize, off, len) {
                return Ok(b);
            }
        }
        let lock = self.inflight_lock(a, ix);
        let _g = lock.lock().await;
        if self.store.complete(&key) == Some(usize) {
            if let Some(b) = self.store.read(&key, usize, off, len) {
                return Ok(b);
            }
        }
        let start = self.zip_data(a, ix, d).await?;
        if start.checked_add(*csize).is_none_or(|e| e > a.meta.size) {
            return Err(Fail::Bad(crate::archive::corrupt(
                "entry data past the end of the archive",
            )));
        }
        self.store.remove(&key);
        let mut sink = Sink::new(&self.store, key.clone(), usize);
        sink.capture = Some((off, off + len, Vec::new()));
        let mut dec = flate2::write::DeflateDecoder::new(sink);
        let h = Handle::default();
        let mut at = 0u64;
        while at < *csize {
            let b = self
                .raw(a, start + at, CHUNK.min(csize - at), Some(&h))
                .await?;
            at += b.len() as u64;
            if let Err(e) = cpu(|| dec.write_all(&b)) {
                let err = dec.get_mut().err.take();
                self.store.remove(&key);
                return Err(Fail::Bad(err.unwrap_or_else(|| {
                    crate::archive::corrupt(format!("inflate: {e}"))
                })));
            }
        }
        let r = cpu(|| dec.finish());
        let mut sink = match r {
            Ok(s) => s,
            Err(e) => {
                self.store.remove(&key);
                return Err(Fail::Bad(crate::archive::corrupt(format!("inflate: {e}"))));
            }
        };
        sink.finish();
        let got_crc = sink.crc.clone().finalize();
        if sink.total != usize || got_crc != *crc {
            self.store.remove(&key);
            return Err(Fail::Bad(crate::archive::corrupt(format!(
                "inflated {} bytes with CRC {got_crc:08x}; the archive says {usize} bytes, CRC {crc:08x}",
                sink.total
            ))));
        }
        self.store.mark_complete(&key, usize);
        Ok(Bytes::from(
            sink.capture.take().map(|c| c.2).unwrap_or_default(),
        ))
    }

    /// Reads `[off, off+len)` of a deflated entry too large to keep whole (no disk cache):
    /// from the blocks a recent read unpacked (in memory, evicted like any), else from a
    /// suspended inflate of that entry at or before `off`, else from the entry's start.
    /// Reads of one entry take turns, so the kernel's parallel read-ahead requests follow
    /// one another through one inflate instead of each starting its own.
    /// The entry's size, compressed size and CRC come checked from `read_deflated`.
    async fn read_deflated_stream(
        &self,
        a: &Archive,
        ix: u32,
        (usize, csize, crc): (u64, u64, u32),
        d: &Data,
        off: u64,
        len: u64,
    ) -> Result<Bytes, Fail> {
        let key = format!("{}.zs{ix}", a.ckey);
        if let Some(m) = a.bad.lock().unwrap().get(&ix) {
            return Err(Fail::Bad(m.clone()));
        }
        if let Some(b) = self.store.read(&key, usize, off, len) {
            return Ok(b);
        }
        let lock = self.inflight_lock(a, ix);
        let _g = lock.lock().await;
        if let Some(b) = self.store.read(&key, usize, off, len) {
            return Ok(b);
        }
        let start = self.zip_data(a, ix, d).await?;
        if start.checked_add(csize).is_none_or(|e| e > a.meta.size) {
            return Err(Fail::Bad(crate::archive::corrupt(
                "entry data past the end of the archive",
            )));
        }
        let end = (off + len).min(usize);
        let found = {
            let mut cs = self.zip_cursors.lock().unwrap();
            // Just behind a cursor, in the block it is filling (read-ahead out of order).
            for c in cs.iter().filter(|c| c.id == a.id && c.ix == ix) {
                if let Some(s) = c.blk_at {
                    if s <= off && end <= s + c.blk.len() as u64 {
                        let (from, to) = ((off - s) as usize, (end - s) as usize);
                        return Ok(Bytes::copy_from_slice(&c.blk[from..to]));
                    }
                }
            }
            let best = cs
                .iter()
                .enumerate()
                .filter(|(_, c)| c.id == a.id && c.ix == ix && c.x.out() <= off)
                .max_by_key(|(_, c)| c.x.out())
                .map(|(i, _)| i);
            best.map(|i| cs.remove(i))
        };
        let mut cur = found.unwrap_or_else(|| ZipCursor {
            id: a.id,
            ix,
            x: EntryInflater::new(usize, crc),
            h: Handle::default(),
            pending: Bytes::new(),
            blk: Vec::new(),
            blk_at: None,
        });
        let mut cap = Vec::with_capacity(len as usize);
        // A read that ends the entry goes on to the end of the deflate stream: its size and
        // CRC are checked before that read is answered.
        while (cur.x.out() < end || end == usize) && !cur.x.is_done() {
            if cur.pending.is_empty() {
                let at = cur.x.consumed();
                if at >= csize {
                    return Err(self.stream_failed(
                        a,
                        ix,
                        &key,
                        crate::archive::corrupt(
                            "the compressed data ends before the deflate stream does",
                        ),
                    ));
                }
                cur.pending = self
                    .raw(a, start + at, CHUNK.min(csize - at), Some(&cur.h))
                    .await?;
            }
            let ZipCursor {
                x,
                blk,
                blk_at,
                pending,
                ..
            } = &mut cur;
            let before = x.consumed();
            let r = cpu(|| {
                x.feed(pending, end, &mut |o, d| {
                    let (from, to) = (off.max(o), end.min(o + d.len() as u64));
                    if from < to {
                        cap.extend_from_slice(&d[(from - o) as usize..(to - o) as usize]);
                    }
                    Cursor::absorb(blk, blk_at, &self.store, &key, usize, o, d);
                })
            });
            if let Err(e) = r {
                return Err(self.stream_failed(a, ix, &key, e));
            }
            let took = (x.consumed() - before) as usize;
            *pending = pending.slice(took.min(pending.len())..);
        }
        if !cur.x.is_done() {
            let mut cs = self.zip_cursors.lock().unwrap();
            if cs.len() >= MAX_ZIP_CURSORS {
                cs.remove(0);
            }
            cs.push(cur);
        }
        Ok(Bytes::from(cap))
    }

    /// A streamed entry failed its checks: the blocks it left are dropped and later reads of
    /// it fail at once.
    fn stream_failed(&self, a: &Archive, ix: u32, key: &str, e: ArchiveError) -> Fail {
        self.store.remove(key);
        a.bad.lock().unwrap().insert(ix, e.clone());
        Fail::Bad(e)
    }

    /// Reads `[off, off+len)` of a tar.gz's tar stream (`total` bytes): from the derived
    /// blocks, else by decompressing from the nearest access point (or suspended cursor).
    async fn read_gz(&self, a: &Archive, total: u64, off: u64, len: u64) -> Result<Bytes, Fail> {
        let key = format!("{}.gzb", a.ckey);
        if let Some(b) = self.store.read(&key, total, off, len) {
            return Ok(b);
        }
        let points = a.points.read().unwrap().clone();
        let points =
            match points {
                Some(p) => p,
                // Dropped with an evicted build during this read: load them again.
                None => {
                    self.prepare(ino_of(a.id, 0))
                        .await
                        .map_err(|e| Fail::Net(e.to_string()))?;
                    a.points.read().unwrap().clone().ok_or_else(|| {
                        Fail::Bad(crate::archive::corrupt("no gzip access points"))
                    })?
                }
            };
        let p = gzindex::point_for(&points, off)
            .ok_or_else(|| Fail::Bad(crate::archive::corrupt("no gzip access point")))?;
        let cur = {
            let mut cs = self.cursors.lock().unwrap();
            let best = cs
                .iter()
                .enumerate()
                .filter(|(_, (id, c))| *id == a.id && c.x.at() <= off && c.x.at() >= p.out)
                .max_by_key(|(_, (_, c))| c.x.at())
                .map(|(i, _)| i);
            best.map(|i| cs.remove(i).1)
        };
        let mut cur = match cur {
            Some(c) => c,
            None => Cursor {
                x: Extractor::new(p)?.until(total),
                h: Handle::default(),
                blk: Vec::new(),
                blk_at: None,
            },
        };
        let end = off + len;
        let mut cap = Vec::with_capacity(len as usize);
        let size = a.meta.size;
        while cur.x.at() < end {
            let at = cur.x.next_in();
            if at >= size {
                return Err(Fail::Bad(crate::archive::corrupt(
                    "the tar stream is shorter than its index says",
                )));
            }
            let b = self.raw(a, at, CHUNK.min(size - at), Some(&cur.h)).await?;
            let Cursor { x, blk, blk_at, .. } = &mut cur;
            cpu(|| {
                x.feed(&b, &mut |o, d| {
                    let (from, to) = (off.max(o), end.min(o + d.len() as u64));
                    if from < to {
                        cap.extend_from_slice(&d[(from - o) as usize..(to - o) as usize]);
                    }
                    Cursor::absorb(blk, blk_at, &self.store, &key, total, o, d);
                    Ok(())
                })
            })?;
        }
        let mut cs = self.cursors.lock().unwrap();
        if cs.len() >= MAX_CURSORS {
            cs.remove(0);
        }
        cs.push((a.id, cur));
        Ok(Bytes::from(cap))
    }
}
