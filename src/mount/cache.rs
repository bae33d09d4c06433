//! Bounded caches of what the mount has read: data blobs (by bytes) and decoded directories (by
//! entries). Both forget the least recently used entries first, and both make concurrent readers
//! of one missing entry wait for a single fetch instead of fetching it once each (the kernel
//! reads a file ahead in several requests at once, usually within one chunk).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

/// A fetch result shared by everyone who waited for it.
type Cell<V> = Arc<OnceLock<Result<Arc<V>, String>>>;

struct Slot<V> {
    cell: Cell<V>,
    /// Cost counted against the limit once the value is there.
    cost: u64,
    used: u64,
}

struct Inner<K, V> {
    slots: HashMap<K, Slot<V>>,
    cost: u64,
    clock: u64,
}

/// A least-recently-used cache of values costing `cost(v)` each, holding at most `limit` in
/// total (one value bigger than the limit is handed out but not kept).
pub struct Lru<K, V> {
    inner: Mutex<Inner<K, V>>,
    limit: u64,
    cost: fn(&V) -> u64,
}

impl<K: Eq + Hash + Clone, V> Lru<K, V> {
    pub fn new(limit: u64, cost: fn(&V) -> u64) -> Self {
        Lru {
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                cost: 0,
                clock: 0,
            }),
            limit,
            cost,
        }
    }

    /// The value of `key`, fetched with `fetch` if it is not cached (once, however many threads
    /// ask at the same time). Errors are handed to every waiter and not kept.
    pub fn get_or_fetch(
        &self,
        key: &K,
        fetch: impl FnOnce() -> Result<V, String>,
    ) -> Result<Arc<V>, String> {
        let cell = {
            let mut g = self.inner.lock().expect("cache lock");
            g.clock += 1;
            let now = g.clock;
            let slot = g.slots.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceLock::new()),
                cost: 0,
                used: now,
            });
            slot.used = now;
            slot.cell.clone()
        };
        let mut fetched_here = false;
        let r = cell
            .get_or_init(|| {
                fetched_here = true;
                fetch().map(Arc::new)
            })
            .clone();
        if fetched_here {
            self.settle(key, &cell, &r);
        }
        r
    }

    /// Accounts for a value just fetched (or drops its slot if the fetch failed), then evicts.
    fn settle(&self, key: &K, cell: &Cell<V>, r: &Result<Arc<V>, String>) {
        let mut g = self.inner.lock().expect("cache lock");
        let same = g.slots.get(key).is_some_and(|s| Arc::ptr_eq(&s.cell, cell));
        if !same {
            return;
        }
        match r {
            Err(_) => {
                g.slots.remove(key);
            }
            Ok(v) => {
                let c = (self.cost)(v);
                g.slots.get_mut(key).expect("checked").cost = c;
                g.cost += c;
                while g.cost > self.limit {
                    // The least recently used slot whose value is there (fetches in progress
                    // cost nothing yet and are never evicted).
                    let victim = g
                        .slots
                        .iter()
                        .filter(|(_, s)| s.cell.get().is_some())
                        .min_by_key(|(_, s)| s.used)
                        .map(|(k, _)| k.clone());
                    let Some(victim) = victim else { break };
                    let s = g.slots.remove(&victim).expect("just found");
                    g.cost -= s.cost;
                }
            }
        }
    }

    /// Total cost of the values kept now.
    pub fn cost(&self) -> u64 {
        self.inner.lock().expect("cache lock").cost
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("cache lock").slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn keeps_at_most_the_limit_and_forgets_the_least_recently_used() {
        let c: Lru<u32, Vec<u8>> = Lru::new(100, |v| v.len() as u64);
        for k in 0..3 {
            c.get_or_fetch(&k, || Ok(vec![0; 40])).unwrap();
        }
        assert!(c.cost() <= 100);
        assert_eq!(c.len(), 2, "the oldest was evicted");
        // 1 and 2 are kept; touching 1 makes 2 the next victim.
        c.get_or_fetch(&1, || panic!("cached")).unwrap();
        c.get_or_fetch(&3, || Ok(vec![0; 40])).unwrap();
        c.get_or_fetch(&1, || panic!("still cached")).unwrap();
        let refetched = AtomicUsize::new(0);
        c.get_or_fetch(&2, || {
            refetched.fetch_add(1, Ordering::SeqCst);
            Ok(vec![0; 40])
        })
        .unwrap();
        assert_eq!(refetched.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_value_bigger_than_the_limit_is_returned_but_not_kept() {
        let c: Lru<u32, Vec<u8>> = Lru::new(10, |v| v.len() as u64);
        assert_eq!(c.get_or_fetch(&1, || Ok(vec![7; 50])).unwrap().len(), 50);
        assert_eq!(c.cost(), 0);
        assert!(c.is_empty());
    }

    #[test]
    fn errors_are_not_kept_and_concurrent_readers_share_one_fetch() {
        let c: Arc<Lru<u32, Vec<u8>>> = Arc::new(Lru::new(1000, |v| v.len() as u64));
        assert!(c.get_or_fetch(&1, || Err("down".into())).is_err());
        assert!(c.is_empty());
        let fetches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, f) = (c.clone(), fetches.clone());
                std::thread::spawn(move || {
                    c.get_or_fetch(&1, || {
                        f.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok(vec![1; 10])
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(*t.join().unwrap(), vec![1; 10]);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}
