//! A cache of one kind of cluster object, fed by a watch: the reflector's store, keeping
//! only what decisions use of each object.
//!
//! Objects arrive as kube-runtime's watcher events. A (re)list (`Init`, `InitApply`...,
//! `InitDone`) is buffered and swapped in whole, so readers never see half a list;
//! single events apply at once. Each entry remembers its object's resourceVersion, so
//! an answer fetched directly (a GET on a miss, a write's response) and a watch event
//! can arrive in either order and the newer one stays.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// One watch event, reduced: the object's key, its resourceVersion and what is kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<V> {
    /// A (re)list starts.
    Init,
    /// An object of the (re)list.
    InitApply(String, u64, V),
    /// The (re)list is complete.
    InitDone,
    /// An object was added or changed.
    Apply(String, u64, V),
    /// An object was deleted.
    Delete(String),
}

#[derive(Debug, Clone)]
struct Entry<V> {
    version: u64,
    value: V,
}

#[derive(Debug)]
struct Inner<V> {
    live: HashMap<String, Entry<V>>,
    relist: Option<HashMap<String, Entry<V>>>,
}

/// Objects of one kind by key, each with its resourceVersion, and whether the first
/// list has arrived.
#[derive(Debug)]
pub struct Cache<V> {
    inner: RwLock<Inner<V>>,
    synced: AtomicBool,
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Self {
            inner: RwLock::new(Inner {
                live: HashMap::new(),
                relist: None,
            }),
            synced: AtomicBool::new(false),
        }
    }
}

/// A resourceVersion as a number: the API server's are etcd revisions. One that is
/// not a number is 0, "older than anything", so whatever the watch says next wins.
pub fn version_number(resource_version: Option<&str>) -> u64 {
    resource_version.and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl<V: Clone> Cache<V> {
    /// Applies one watch event.
    pub fn apply(&self, event: Event<V>) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Init => inner.relist = Some(HashMap::new()),
            Event::InitApply(key, version, value) => {
                inner
                    .relist
                    .get_or_insert_with(HashMap::new)
                    .insert(key, Entry { version, value });
            }
            Event::InitDone => {
                let mut fresh = inner.relist.take().unwrap_or_default();
                // An entry written here after the list was taken (a GET or a write's
                // answer) is newer than anything in the list: keep it until the watch
                // says otherwise.
                let listed_up_to = fresh.values().map(|e| e.version).max().unwrap_or(0);
                for (key, entry) in inner.live.drain() {
                    if entry.version > listed_up_to
                        && fresh.get(&key).is_none_or(|e| e.version < entry.version)
                    {
                        fresh.insert(key, entry);
                    }
                }
                inner.live = fresh;
                self.synced.store(true, Ordering::SeqCst);
            }
            Event::Apply(key, version, value) => {
                upsert(&mut inner.live, key, version, value);
            }
            Event::Delete(key) => {
                inner.live.remove(&key);
            }
        }
    }

    /// Stores an object read or written directly, unless the cache already has a newer
    /// version of it.
    pub fn upsert(&self, key: String, version: u64, value: V) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        upsert(&mut inner.live, key, version, value);
    }

    /// Forgets an object known to be gone, unless the cache has a version newer than
    /// `version` (0: forget whatever version it has).
    pub fn remove(&self, key: &str, version: u64) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner
            .live
            .get(key)
            .is_some_and(|e| version == 0 || e.version <= version)
        {
            inner.live.remove(key);
        }
    }

    /// Reads an entry through `f`, without cloning the rest.
    pub fn read<R>(&self, key: &str, f: impl FnOnce(&V) -> R) -> Option<R> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.live.get(key).map(|e| f(&e.value))
    }

    /// A copy of an entry and its version.
    pub fn get(&self, key: &str) -> Option<(u64, V)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.live.get(key).map(|e| (e.version, e.value.clone()))
    }

    /// A copy of every entry (for garbage collection).
    pub fn entries(&self) -> Vec<(String, u64, V)> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .live
            .iter()
            .map(|(k, e)| (k.clone(), e.version, e.value.clone()))
            .collect()
    }

    /// How many entries `f` holds true of, without cloning any.
    pub fn count_where(&self, f: impl Fn(&V) -> bool) -> usize {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.live.values().filter(|e| f(&e.value)).count()
    }

    /// Objects held.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a first complete list has arrived.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Marks the cache as complete without a list: the kind is not served by this
    /// API server (a custom workload whose CRD is not installed), so there is nothing
    /// to wait for.
    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }
}

fn upsert<V>(live: &mut HashMap<String, Entry<V>>, key: String, version: u64, value: V) {
    match live.get_mut(&key) {
        Some(e) if e.version > version && version != 0 => {}
        Some(e) => {
            e.version = version;
            e.value = value;
        }
        None => {
            live.insert(key, Entry { version, value });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn a_relist_is_swapped_in_whole() {
        let c = Cache::<&str>::default();
        assert!(!c.is_synced());
        c.apply(Event::Init);
        c.apply(Event::InitApply(k("a"), 1, "a1"));
        assert_eq!(c.len(), 0, "half a list is never visible");
        c.apply(Event::InitApply(k("b"), 2, "b2"));
        c.apply(Event::InitDone);
        assert!(c.is_synced());
        assert_eq!(c.get("a"), Some((1, "a1")));
        c.apply(Event::Apply(k("a"), 5, "a5"));
        c.apply(Event::Delete(k("b")));
        assert_eq!(c.get("a"), Some((5, "a5")));
        assert_eq!(c.get("b"), None);
        // A relist replaces everything: what it does not list is gone.
        c.apply(Event::Init);
        c.apply(Event::InitApply(k("c"), 7, "c7"));
        c.apply(Event::InitDone);
        assert_eq!(c.entries().len(), 1);
        assert_eq!(c.read("c", |v| v.len()), Some(2));
    }

    #[test]
    fn the_newer_version_wins_whatever_the_order() {
        let c = Cache::<&str>::default();
        c.upsert(k("x"), 10, "from a GET");
        c.apply(Event::Apply(k("x"), 9, "a late watch event"));
        assert_eq!(c.get("x"), Some((10, "from a GET")));
        c.apply(Event::Apply(k("x"), 11, "the next change"));
        assert_eq!(c.get("x"), Some((11, "the next change")));
        // A removal of an older version keeps the newer one.
        c.remove("x", 10);
        assert!(c.get("x").is_some());
        c.remove("x", 11);
        assert!(c.get("x").is_none());
        // Written during a relist and newer than what it listed: kept.
        c.apply(Event::Init);
        c.apply(Event::InitApply(k("y"), 20, "listed"));
        c.upsert(k("z"), 25, "written meanwhile");
        c.upsert(k("old"), 3, "stale");
        c.apply(Event::InitDone);
        assert_eq!(c.get("z"), Some((25, "written meanwhile")));
        assert_eq!(c.get("old"), None);
    }

    #[test]
    fn versions_are_etcd_revisions() {
        assert_eq!(version_number(Some("12345")), 12345);
        assert_eq!(version_number(Some("opaque")), 0);
        assert_eq!(version_number(None), 0);
    }
}
