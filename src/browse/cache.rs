//! A bounded least-recently-used cache whose concurrent readers of one missing entry wait for a
//! single fetch instead of fetching it once each (the kernel reads a file ahead in several
//! requests at once, usually within one chunk; a page asks for one folder several times).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

/// A fetch result shared by everyone who waited for it (`None`: the fetch failed).
type Cell<V> = Arc<OnceLock<Option<Arc<V>>>>;

struct Slot<V> {
    cell: Cell<V>,
    /// Cost counted against the limit once the value is there.
    cost: u64,
    counted: bool,
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
    /// ask at the same time). Failures are not kept: the thread that fetched gets its error, and
    /// each thread that waited for it fetches once more itself.
    pub fn get_or_fetch<E>(&self, key: &K, fetch: impl Fn() -> Result<V, E>) -> Result<Arc<V>, E> {
        let cell = {
            let mut g = self.inner.lock().expect("cache lock");
            g.clock += 1;
            let now = g.clock;
            let slot = g.slots.entry(key.clone()).or_insert_with(|| Slot {
                cell: Arc::new(OnceLock::new()),
                cost: 0,
                counted: false,
                used: now,
            });
            slot.used = now;
            slot.cell.clone()
        };
        let mut ran = false;
        let mut error = None;
        let got = cell
            .get_or_init(|| {
                ran = true;
                match fetch() {
                    Ok(v) => Some(Arc::new(v)),
                    Err(e) => {
                        error = Some(e);
                        None
                    }
                }
            })
            .clone();
        if ran {
            self.settle(key, &cell, got.as_ref());
        }
        if let Some(e) = error {
            return Err(e);
        }
        match got {
            Some(v) => Ok(v),
            // Another thread's fetch failed: try once ourselves, outside the cache.
            None => fetch().map(Arc::new),
        }
    }

    /// Accounts for a value just fetched (or drops its slot if the fetch failed), then evicts.
    /// Only the first call for a slot counts it.
    fn settle(&self, key: &K, cell: &Cell<V>, value: Option<&Arc<V>>) {
        let mut g = self.inner.lock().expect("cache lock");
        let same = g.slots.get(key).is_some_and(|s| Arc::ptr_eq(&s.cell, cell));
        if !same {
            return;
        }
        match value {
            None => {
                g.slots.remove(key);
            }
            Some(v) => {
                let slot = g.slots.get_mut(key).expect("checked");
                if slot.counted {
                    return;
                }
                slot.counted = true;
                let c = (self.cost)(v);
                slot.cost = c;
                g.cost += c;
                while g.cost > self.limit {
                    // The least recently used slot whose value is there (fetches in progress
                    // cost nothing yet and are never evicted).
                    let victim = g
                        .slots
                        .iter()
                        .filter(|(_, s)| s.counted)
                        .min_by_key(|(_, s)| s.used)
                        .map(|(k, _)| k.clone());
                    let Some(victim) = victim else { break };
                    let s = g.slots.remove(&victim).expect("just found");
                    g.cost -= s.cost;
                }
            }
        }
    }

    /// True if the value is kept or being fetched.
    pub fn contains(&self, key: &K) -> bool {
        self.inner
            .lock()
            .expect("cache lock")
            .slots
            .contains_key(key)
    }

    /// Total cost of the values kept now.
    #[cfg(test)]
    pub fn cost(&self) -> u64 {
        self.inner.lock().expect("cache lock").cost
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.inner.lock().expect("cache lock").slots.len()
    }

    #[cfg(test)]
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
            c.get_or_fetch(&k, || Ok::<_, ()>(vec![0; 40])).unwrap();
        }
        assert!(c.cost() <= 100);
        assert_eq!(c.len(), 2, "the oldest was evicted");
        // 1 and 2 are kept; touching 1 makes 2 the next victim.
        c.get_or_fetch(&1, || Err::<Vec<u8>, _>("cached")).unwrap();
        c.get_or_fetch(&3, || Ok::<_, ()>(vec![0; 40])).unwrap();
        c.get_or_fetch(&1, || Err::<Vec<u8>, _>("still cached"))
            .unwrap();
        let refetched = AtomicUsize::new(0);
        c.get_or_fetch(&2, || {
            refetched.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(vec![0; 40])
        })
        .unwrap();
        assert_eq!(refetched.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_value_bigger_than_the_limit_is_returned_but_not_kept() {
        let c: Lru<u32, Vec<u8>> = Lru::new(10, |v| v.len() as u64);
        let v = c.get_or_fetch(&1, || Ok::<_, ()>(vec![7; 50])).unwrap();
        assert_eq!(v.len(), 50);
        assert_eq!(c.cost(), 0);
        assert!(c.is_empty());
    }

    #[test]
    fn errors_are_not_kept_and_concurrent_readers_share_one_fetch() {
        let c: Arc<Lru<u32, Vec<u8>>> = Arc::new(Lru::new(1000, |v| v.len() as u64));
        assert_eq!(
            c.get_or_fetch(&1, || Err::<Vec<u8>, _>("down")),
            Err("down")
        );
        assert!(c.is_empty());
        let fetches = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (c, f) = (c.clone(), fetches.clone());
                std::thread::spawn(move || {
                    c.get_or_fetch(&1, || {
                        f.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        Ok::<_, ()>(vec![1; 10])
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
