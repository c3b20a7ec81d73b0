//! Building an archive's index, once: from its persisted copy, else by reading the zip's
//! end records and central directory, walking the tar headers, or one streaming pass over
//! the tar.gz that also records gzip access points.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use super::*;

impl Archives {
    /// Builds (or loads) the index of the archive `ino` belongs to, once.
    pub async fn prepare(&self, ino: Ino) -> Result<(), FsError> {
        let (id, _) = split_ino(ino).ok_or(FsError::NotFound)?;
        let a = self.archive(id).ok_or(FsError::NotFound)?;
        if let Some(m) = a.failed.read().unwrap().clone() {
            return Err(FsError::Io(m));
        }
        if a.index.read().unwrap().is_some() {
            return Ok(());
        }
        let _g = a.loading.lock().await;
        if let Some(m) = a.failed.read().unwrap().clone() {
            return Err(FsError::Io(m));
        }
        if a.index.read().unwrap().is_some() {
            return Ok(());
        }
        // `.ix3`: a zip index's `stream_len` is its central directory's offset (the bound of
        // entry data; 0 in an `.ix2` index); `.ix2` brought zip symlinks.
        let key = format!("{}.ix3", a.ckey);
        let pkey = format!("{}.gzp1", a.ckey);
        if let Some(b) = self.store.get_blob(&key) {
            // A tar.gz index is only usable with its access points.
            let points = match a.format {
                Format::TarGz => self
                    .store
                    .get_blob(&pkey)
                    .and_then(|b| gzindex::decode_points(&b)),
                _ => Some(Vec::new()),
            };
            match cpu(|| serde_json::from_slice::<Index>(&b)) {
                Ok(idx) if idx.format == a.format && points.is_some() => {
                    *a.points.write().unwrap() = points.map(Arc::new);
                    tracing::debug!(path = %a.meta.original_path, entries = idx.entries.len(), "archive index from the cache");
                    *a.index.write().unwrap() = Some(Arc::new(idx));
                    a.dropped.store(false, std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
                _ => {
                    tracing::warn!(path = %a.meta.original_path, "unreadable cached archive index; building it again")
                }
            }
        }
        let t0 = Instant::now();
        let counted = crate::stats::STATS.archive_index_started();
        let r = match a.format {
            Format::Zip => self.index_zip(&a).await.map(|i| (i, Vec::new())),
            Format::Tar => self.index_tar(&a).await.map(|i| (i, Vec::new())),
            Format::TarGz => self.index_targz(&a).await,
        };
        drop(counted);
        match r {
            Ok((idx, points)) => {
                self.built
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(path = %a.meta.original_path, format = ?idx.format, entries = idx.entries.len() - 1, points = points.len(), ms = t0.elapsed().as_millis() as u64, "indexed the archive");
                let idx = Arc::new(idx);
                let points = Arc::new(points);
                *a.points.write().unwrap() = Some(points.clone());
                *a.index.write().unwrap() = Some(idx.clone());
                a.dropped.store(false, std::sync::atomic::Ordering::Relaxed);
                // Persisted off the lookup's path (serializing a big index takes a while);
                // the points are written first, so an index is never found without them.
                let store = self.store.clone();
                let targz = a.format == Format::TarGz;
                drop(tokio::task::spawn_blocking(move || {
                    if targz {
                        store.put_blob(&pkey, &gzindex::encode_points(&points));
                    }
                    if let Ok(json) = serde_json::to_vec(&*idx) {
                        store.put_blob(&key, &json);
                    }
                }));
                Ok(())
            }
            Err(Fail::Net(m)) => {
                tracing::error!(path = %a.meta.original_path, error = %m, "cannot read the archive");
                Err(FsError::Io(m))
            }
            Err(Fail::Bad(e)) => {
                tracing::error!(path = %a.meta.original_path, error = %e, "cannot list the archive");
                *a.failed.write().unwrap() = Some(e.to_string());
                Err(FsError::Io(e.to_string()))
            }
        }
    }

    async fn index_zip(&self, a: &Archive) -> Result<Index, Fail> {
        let size = a.meta.size;
        // The end records need the last TAIL_LEN bytes at most; reading the last MiB instead
        // (blocks fetched in parallel) also brings the central directory of most archives
        // (about 10,000 entries), so listing is one round trip instead of two.
        let tail_len = size.min(zip::TAIL_LEN.max(SPECULATIVE_TAIL));
        let tail_at = size - tail_len;
        let tail = self.raw(a, tail_at, tail_len, None).await?;
        let slice = |at: u64, len: u64| -> Option<Bytes> {
            (at >= tail_at && at.checked_add(len).is_some_and(|e| e <= size)).then(|| {
                let s = (at - tail_at) as usize;
                tail.slice(s..s + len as usize)
            })
        };
        let loc = match zip::parse_tail(&tail, size)? {
            zip::Tail::Found(l) => l,
            zip::Tail::Zip64At(at) => {
                let rec = match slice(at, zip::ZIP64_EOCD_LEN) {
                    Some(b) => b,
                    None => self.raw(a, at, zip::ZIP64_EOCD_LEN, None).await?,
                };
                zip::parse_zip64_eocd(&rec, at)?
            }
        };
        let cd = match slice(loc.offset, loc.size) {
            Some(b) => b,
            None => self.raw(a, loc.offset, loc.size, None).await?,
        };
        let mut raw = Vec::new();
        for e in zip::parse_cd(&cd, &loc)? {
            if e.is_symlink() {
                let target = self.zip_link_target(a, &e, loc.offset).await?;
                raw.push(e.into_link(target));
            } else {
                raw.push(e.into_raw());
            }
        }
        Ok(cpu(|| Index::build(Format::Zip, raw, loc.offset))?)
    }

    /// A zip symlink's target: its entry's data (local header checked, inflated if need be,
    /// size and CRC checked), read once while indexing.
    async fn zip_link_target(
        &self,
        a: &Archive,
        e: &zip::CdEntry,
        cd_at: u64,
    ) -> Result<Vec<u8>, Fail> {
        let d = e.data();
        let local = self
            .raw(a, e.header, zip::LOCAL_LEN + e.name.len() as u64, None)
            .await?;
        let start = zip::data_offset(&local, &d, cd_at)?;
        if start.saturating_add(e.csize) > a.meta.size {
            return Err(Fail::Bad(crate::archive::corrupt(
                "entry data past the end of the archive",
            )));
        }
        let b = self.raw(a, start, e.csize, None).await?;
        let target = if e.method == zip::STORED {
            b.to_vec()
        } else {
            let mut out = Vec::new();
            let r = flate2::read::DeflateDecoder::new(&b[..])
                .take(e.usize + 1)
                .read_to_end(&mut out);
            r.map_err(|err| Fail::Bad(crate::archive::corrupt(format!("inflate: {err}"))))?;
            out
        };
        if target.len() as u64 != e.usize || crc32fast::hash(&target) != e.crc {
            return Err(Fail::Bad(crate::archive::corrupt(format!(
                "symlink {}: its target does not match its size or CRC",
                String::from_utf8_lossy(&e.name)
            ))));
        }
        Ok(target)
    }

    async fn index_tar(&self, a: &Archive) -> Result<Index, Fail> {
        let size = a.meta.size;
        let h = Handle::default();
        let mut w = crate::archive::tar::TarWalker::new();
        let t0 = Instant::now();
        let mut last_log = t0;
        let mut first = true;
        while !w.is_done() && w.need() < size {
            let at = w.need();
            let b = self.raw(a, at, (64 << 10).min(size - at), Some(&h)).await?;
            if first {
                check_magic(Format::Tar, &b)?;
                first = false;
            }
            w.feed(at, &b)?;
            if last_log.elapsed() > PROGRESS_EVERY {
                last_log = Instant::now();
                tracing::info!(path = %a.meta.original_path, offset = at, of = size, entries = w.entries(), "indexing the archive");
            }
        }
        if first && size > 0 {
            return Err(Fail::Bad(crate::archive::corrupt("empty tar")));
        }
        let raw = w.finish(size)?;
        Ok(cpu(|| Index::build(Format::Tar, raw, size))?)
    }

    /// One pass over a tar.gz: gunzip, walk the tar headers, record access points. Stops
    /// once the walker has seen the end of the tar data.
    async fn index_targz(&self, a: &Archive) -> Result<(Index, Vec<Point>), Fail> {
        let size = a.meta.size;
        let limit = size.saturating_mul(GZ_RATIO).saturating_add(1 << 20);
        let mut sink = Sink::new(&self.store, String::new(), limit);
        sink.keep = false;
        sink.walker = Some(crate::archive::tar::TarWalker::new());
        let mut ix = gzindex::Indexer::new(gzindex::SPAN);
        let h = Handle::default();
        let (t0, mut last_log) = (Instant::now(), Instant::now());
        let mut at = 0u64;
        while at < size {
            let b = self.raw(a, at, CHUNK.min(size - at), Some(&h)).await?;
            if at == 0 {
                check_magic(Format::TarGz, &b)?;
            }
            at += b.len() as u64;
            // Nothing past the end of the tar data is decompressed.
            cpu(|| {
                ix.feed_while(&b, &mut |d| {
                    sink.write_all(d).map_err(|e| {
                        sink.err
                            .take()
                            .unwrap_or_else(|| crate::archive::corrupt(format!("gzip: {e}")))
                    })?;
                    Ok(!sink.walker.as_ref().is_some_and(|w| w.is_done()))
                })
            })?;
            if sink.walker.as_ref().is_some_and(|w| w.is_done()) {
                break;
            }
            if last_log.elapsed() > PROGRESS_EVERY {
                last_log = Instant::now();
                tracing::info!(path = %a.meta.original_path, read = at, of = size, unpacked = sink.total, secs = t0.elapsed().as_secs(), "indexing the archive");
            }
        }
        let total = sink.total;
        let points = ix.finish(at >= size)?;
        let raw = sink.walker.take().unwrap().finish(total)?;
        Ok((cpu(|| Index::build(Format::TarGz, raw, total))?, points))
    }
}
