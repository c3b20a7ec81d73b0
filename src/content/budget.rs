//! The memory budget of the read path (`--memory-limit`): ONE pool of bytes shared by
//! in-flight storage requests, parts waiting to be written to the disk cache, and the
//! in-memory block LRU.
//!
//! - A read that needs bytes from storage **waits** for its share (backpressure); a prefetch
//!   only takes what is free right now, so under pressure prefetch shrinks instead of
//!   queueing.
//! - The block LRU is the lowest claim: every acquisition may first reclaim LRU blocks
//!   (the `reclaim` callback evicts one), and the LRU only caches what it can charge without
//!   waiting.
//! - No deadlock: a charge is held only by work that finishes on its own (a request bounded by
//!   the read timeout, a disk write) or by the reclaimable LRU, never while waiting for another
//!   charge; a request larger than the whole budget is clamped to it; and a waiter retries
//!   reclaiming every few milliseconds, so blocks cached after it began waiting cannot strand it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Accounting unit (bytes per permit).
const UNIT: u64 = 4096;

pub struct Budget {
    sem: Arc<Semaphore>,
    units: u32,
}

/// Bytes charged to the budget, given back when dropped.
#[derive(Debug)]
pub struct Charge {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Charge {
    /// A charge of nothing (work that is not counted).
    pub fn none() -> Charge {
        Charge { _permit: None }
    }
}

impl Budget {
    pub fn new(bytes: u64) -> Budget {
        let units = (bytes / UNIT).clamp(1, u32::MAX as u64 >> 4) as u32;
        Budget {
            sem: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    fn units_for(&self, bytes: u64) -> u32 {
        (bytes.div_ceil(UNIT) as u32).clamp(1, self.units)
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.units as u64 * UNIT
    }

    /// Bytes charged right now.
    pub fn in_use(&self) -> u64 {
        (self.units as u64 - self.sem.available_permits() as u64) * UNIT
    }

    /// Charges `bytes` if they are free now, reclaiming LRU blocks as needed.
    pub fn try_acquire(&self, bytes: u64, reclaim: impl Fn() -> bool) -> Option<Charge> {
        let n = self.units_for(bytes);
        loop {
            if let Ok(p) = self.sem.clone().try_acquire_many_owned(n) {
                return Some(Charge { _permit: Some(p) });
            }
            if !reclaim() {
                return None;
            }
        }
    }

    /// Charges `bytes`, waiting until they are free (reclaiming LRU blocks first).
    pub async fn acquire(&self, bytes: u64, reclaim: impl Fn() -> bool) -> Charge {
        let n = self.units_for(bytes);
        loop {
            if let Some(c) = self.try_acquire(bytes, &reclaim) {
                return c;
            }
            let wait = self.sem.clone().acquire_many_owned(n);
            if let Ok(Ok(p)) = tokio::time::timeout(Duration::from_millis(20), wait).await {
                return Charge { _permit: Some(p) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn clamps_and_releases() {
        let b = Budget::new(64 << 10);
        let c = b
            .try_acquire(1 << 30, || false)
            .expect("clamped to the whole budget");
        assert_eq!(b.in_use(), 64 << 10);
        assert!(b.try_acquire(1, || false).is_none());
        drop(c);
        assert_eq!(b.in_use(), 0);
    }

    /// Many readers on a tiny budget, with an LRU that keeps caching what it can: charges
    /// never exceed the budget and every reader finishes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_readers_tiny_budget_never_over_and_all_finish() {
        let b = Arc::new(Budget::new(256 << 10));
        let lru: Arc<Mutex<Vec<Charge>>> = Arc::new(Mutex::new(Vec::new()));
        let peak = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (b, lru, peak, done) = (b.clone(), lru.clone(), peak.clone(), done.clone());
                tokio::spawn(async move {
                    for j in 0..20u64 {
                        let want = (((i as u64 * 7 + j * 13) % 5) + 1) * (32 << 10);
                        let l2 = lru.clone();
                        let reclaim = move || l2.lock().unwrap().pop().is_some();
                        let c = b.acquire(want, &reclaim).await;
                        peak.fetch_max(b.in_use(), Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        // Half the time the "blocks" stay cached in the LRU afterwards.
                        if j % 2 == 0 {
                            if let Some(c2) = b.try_acquire(32 << 10, &reclaim) {
                                lru.lock().unwrap().push(c2);
                            }
                        }
                        drop(c);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let all = async {
            for t in tasks {
                t.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all)
            .await
            .expect("readers deadlocked");
        assert_eq!(done.load(Ordering::SeqCst), 32);
        assert!(peak.load(Ordering::SeqCst) <= b.limit());
    }
}
