//! The in-memory block LRU: recently fetched blocks, each charged to the memory
//! [`Budget`]. It is the lowest claim on the budget: it caches only what it can charge
//! without waiting and gives blocks up whenever a request needs the room.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

use super::budget::{Budget, Charge};

/// A block: (content key, block index).
pub type BlockKey = (Arc<str>, u64);

pub struct MemBlocks {
    lru: Mutex<LruCache<BlockKey, (Bytes, Charge)>>,
}

impl Default for MemBlocks {
    fn default() -> Self {
        MemBlocks {
            lru: Mutex::new(LruCache::unbounded()),
        }
    }
}

impl MemBlocks {
    pub fn get(&self, key: &BlockKey) -> Option<Bytes> {
        self.lru.lock().unwrap().get(key).map(|(b, _)| b.clone())
    }

    /// Caches a block if the budget has room for it now (after evicting older blocks).
    pub fn put(&self, key: BlockKey, b: Bytes, budget: &Budget) {
        if self.lru.lock().unwrap().contains(&key) {
            return;
        }
        if let Some(c) = budget.try_acquire(b.len() as u64, || self.pop_lru()) {
            self.lru.lock().unwrap().put(key, (b, c));
        }
    }

    /// Evicts the least recently used block; `false` when there is none.
    pub fn pop_lru(&self) -> bool {
        self.lru.lock().unwrap().pop_lru().is_some()
    }

    /// Drops every block of a content key.
    pub fn forget_key(&self, ckey: &str) {
        let mut g = self.lru.lock().unwrap();
        let keys: Vec<BlockKey> = g
            .iter()
            .filter(|(k, _)| &*k.0 == ckey)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            g.pop(&k);
        }
    }

    pub fn len(&self) -> usize {
        self.lru.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_within_the_budget() {
        let budget = Budget::new(64 << 10);
        let m = MemBlocks::default();
        let k = |i| (Arc::<str>::from("k"), i);
        for i in 0..10 {
            m.put(k(i), Bytes::from(vec![0u8; 16 << 10]), &budget);
        }
        assert_eq!(m.len(), 4, "16 KiB blocks in 64 KiB");
        assert!(m.get(&k(9)).is_some() && m.get(&k(0)).is_none());
        assert!(budget.in_use() <= budget.limit());
        // A request takes the room: the LRU gives it up.
        let c = budget.try_acquire(64 << 10, || m.pop_lru());
        assert!(c.is_some() && m.is_empty());
        drop(c);
        m.put(k(1), Bytes::from_static(b"x"), &budget);
        m.forget_key("k");
        assert!(m.is_empty());
        assert_eq!(budget.in_use(), 0);
    }
}
