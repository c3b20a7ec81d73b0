//! In-memory [`Remote`]s: [`MockRemote`] serves artifact bytes by artifact id and records its
//! calls; [`OneObject`] serves one object and can expire URLs, fail, cut bodies or corrupt
//! bytes on demand.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::backend::{BackendError, BoxFuture, Remote, Result, SignedUrl};
use crate::tree::FileMeta;

/// A [`Remote`] serving artifact bytes by artifact id (URLs are `mock://<artifact id>`).
#[derive(Default)]
pub struct MockRemote {
    pub objects: Mutex<HashMap<String, Bytes>>,
    /// (artifact id, build number), one per call.
    pub url_calls: Mutex<Vec<(String, u64)>>,
    pub fetches: Mutex<Vec<String>>,
    pub deletes: Mutex<Vec<String>>,
    /// How long each ranged read takes (default 0).
    pub delay: Mutex<Duration>,
}

impl MockRemote {
    pub fn put(&self, id: &str, data: Vec<u8>) {
        self.objects
            .lock()
            .unwrap()
            .insert(id.to_string(), Bytes::from(data));
    }

    pub fn set_delay(&self, d: Duration) {
        *self.delay.lock().unwrap() = d;
    }

    pub fn fetches_of(&self, id: &str) -> usize {
        self.fetches
            .lock()
            .unwrap()
            .iter()
            .filter(|i| *i == id)
            .count()
    }

    pub fn url_calls_of(&self, id: &str) -> usize {
        self.url_calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| i == id)
            .count()
    }
}

impl Remote for MockRemote {
    fn signed_url<'a>(
        &'a self,
        meta: &'a FileMeta,
        _refused: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SignedUrl>> {
        self.url_calls
            .lock()
            .unwrap()
            .push((meta.artifact_id.clone(), meta.build_number));
        let url = format!("mock://{}", meta.artifact_id);
        Box::pin(async move {
            Ok(SignedUrl {
                url,
                good_for: Duration::from_secs(600),
            })
        })
    }

    fn fetch_range<'a>(
        &'a self,
        url: &'a str,
        start: u64,
        end: u64,
        _total: u64,
    ) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            let id = url.strip_prefix("mock://").unwrap_or(url).to_string();
            self.fetches.lock().unwrap().push(id.clone());
            let delay = *self.delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let data = self.objects.lock().unwrap().get(&id).cloned();
            match data {
                Some(d) if start <= end && end as usize <= d.len() => {
                    Ok(d.slice(start as usize..end as usize))
                }
                Some(_) => Err(BackendError::Failed(
                    "invalid storage response: range past the end".into(),
                )),
                None => Err(BackendError::not_found(
                    "the object is gone from storage (404)",
                )),
            }
        })
    }

    fn delete<'a>(&'a self, meta: &'a FileMeta) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.deletes.lock().unwrap().push(meta.artifact_id.clone());
            self.objects.lock().unwrap().remove(&meta.artifact_id);
            Ok(())
        })
    }
}

/// A remote over one in-memory object. URLs carry a generation; `expire_before` makes
/// storage refuse older generations (like an expired signature).
pub struct OneObject {
    pub data: Bytes,
    pub url_calls: AtomicUsize,
    pub fetches: AtomicUsize,
    pub bytes: AtomicU64,
    pub expire_before: AtomicUsize,
    pub fail_next: AtomicUsize,
    pub cut_next: AtomicUsize,
    pub corrupt: bool,
}

impl OneObject {
    pub fn new(data: Vec<u8>) -> Arc<OneObject> {
        Arc::new(OneObject {
            data: Bytes::from(data),
            url_calls: AtomicUsize::new(0),
            fetches: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            expire_before: AtomicUsize::new(0),
            fail_next: AtomicUsize::new(0),
            cut_next: AtomicUsize::new(0),
            corrupt: false,
        })
    }
}

impl Remote for OneObject {
    fn signed_url<'a>(
        &'a self,
        _m: &'a FileMeta,
        _refused: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SignedUrl>> {
        let n = self.url_calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            Ok(SignedUrl {
                url: format!("http://storage/obj?gen={n}"),
                good_for: Duration::from_secs(50),
            })
        })
    }
    fn fetch_range<'a>(
        &'a self,
        url: &'a str,
        start: u64,
        end: u64,
        _t: u64,
    ) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            let generation: usize = url.rsplit('=').next().unwrap().parse().unwrap();
            if generation <= self.expire_before.load(Ordering::SeqCst) {
                return Err(BackendError::Expired(
                    "the signed URL was refused (403: Request has expired)".into(),
                ));
            }
            if self.fail_next.load(Ordering::SeqCst) > 0 {
                self.fail_next.fetch_sub(1, Ordering::SeqCst);
                return Err(BackendError::Failed("503".into()));
            }
            if self.cut_next.load(Ordering::SeqCst) > 0 {
                self.cut_next.fetch_sub(1, Ordering::SeqCst);
                let half = start + (end - start) / 2;
                self.bytes.fetch_add(half - start, Ordering::SeqCst);
                return Err(BackendError::Partial {
                    got: self.data.slice(start as usize..half as usize),
                    reason: "connection reset".into(),
                });
            }
            self.bytes.fetch_add(end - start, Ordering::SeqCst);
            let mut b = self.data.slice(start as usize..end as usize).to_vec();
            if self.corrupt && !b.is_empty() {
                b[0] ^= 0xff;
            }
            Ok(Bytes::from(b))
        })
    }
    fn delete<'a>(&'a self, _m: &'a FileMeta) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}
