//! The ONE signed-URL cache of a mount: artifact id → (URL, usable until), least recently
//! used first out past [`MAX_URLS`] entries, so a long-lived mount never grows it without
//! end. The [`crate::source::Source`] fills it in batches (a GraphQL listing signs every
//! artifact of a build at once); the reader fills it one URL at a time (REST) and takes its
//! URLs from it. Single-flight per artifact: one API call at a time for the same artifact.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;

use super::SignedUrl;

/// Most URLs kept (a signed S3 URL is about 0.5 to 1 KiB: at most a few MiB).
pub const MAX_URLS: usize = 4096;

/// Per-artifact locks for single-flight refreshes (only while someone waits on one).
type Flights = std::collections::HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>;

pub struct UrlCache {
    urls: Mutex<LruCache<Arc<str>, (String, Instant)>>,
    flights: Mutex<Flights>,
}

impl Default for UrlCache {
    fn default() -> Self {
        UrlCache::new(MAX_URLS)
    }
}

impl UrlCache {
    pub fn new(max: usize) -> UrlCache {
        UrlCache {
            urls: Mutex::new(LruCache::new(NonZeroUsize::new(max.max(1)).unwrap())),
            flights: Mutex::new(Default::default()),
        }
    }

    /// The artifact's URL if it is good for more than a second and is not `refused` (a URL
    /// storage just refused is dropped so no one gets it again).
    pub fn get(&self, id: &str, refused: Option<&str>) -> Option<SignedUrl> {
        let mut g = self.urls.lock().unwrap();
        let (url, until) = g.get(id)?;
        if Some(url.as_str()) == refused {
            g.pop(id);
            return None;
        }
        let left = until.saturating_duration_since(Instant::now());
        (left > Duration::from_secs(1)).then(|| SignedUrl {
            url: url.clone(),
            good_for: left,
        })
    }

    pub fn put(&self, id: &str, url: String, until: Instant) {
        self.urls.lock().unwrap().put(Arc::from(id), (url, until));
    }

    pub fn remove(&self, id: &str) {
        self.urls.lock().unwrap().pop(id);
    }

    pub fn len(&self) -> usize {
        self.urls.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `fetch` for `id` unless someone else is already fetching it: then waits for them
    /// and returns what they stored (`check` is tried again after the wait).
    pub async fn single_flight<T, E, C, F, Fut>(&self, id: &str, check: C, fetch: F) -> Result<T, E>
    where
        C: Fn() -> Option<T>,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let lock = self
            .flights
            .lock()
            .unwrap()
            .entry(Arc::from(id))
            .or_default()
            .clone();
        let r = {
            let _g = lock.lock().await;
            match check() {
                Some(v) => Ok(v),
                None => fetch().await,
            }
        };
        // The last one out removes the lock: the map holds only artifacts being fetched.
        let mut f = self.flights.lock().unwrap();
        if Arc::strong_count(&lock) == 2 {
            f.remove(id);
        }
        r
    }

    /// Artifacts being fetched right now (for tests of boundedness).
    pub fn flights(&self) -> usize {
        self.flights.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_refused_urls_are_dropped() {
        let c = UrlCache::new(3);
        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..10 {
            c.put(&format!("a{i}"), format!("u{i}"), later);
        }
        assert_eq!(c.len(), 3, "least recently used first out");
        assert!(c.get("a0", None).is_none());
        assert_eq!(c.get("a9", None).unwrap().url, "u9");
        assert!(c.get("a9", Some("u9")).is_none());
        assert!(c.get("a9", None).is_none(), "a refused URL is gone");
        c.put("old", "x".into(), Instant::now());
        assert!(c.get("old", None).is_none(), "expired");
    }

    #[tokio::test]
    async fn single_flight_leaves_no_locks_behind() {
        let c = Arc::new(UrlCache::new(10));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let futs: Vec<_> = (0..8)
            .map(|_| {
                let (c, calls) = (c.clone(), calls.clone());
                tokio::spawn(async move {
                    let c2 = c.clone();
                    c.single_flight(
                        "a",
                        || c2.get("a", None).map(|u| u.url),
                        || async {
                            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            c2.put("a", "u".into(), Instant::now() + Duration::from_secs(60));
                            Ok::<_, ()>("u".to_string())
                        },
                    )
                    .await
                })
            })
            .collect();
        for f in futs {
            assert_eq!(f.await.unwrap().unwrap(), "u");
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(c.flights(), 0);
    }
}
