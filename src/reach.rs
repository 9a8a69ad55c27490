//! Change sets across requests (DESIGN.md section 5): the namespaces one change set
//! touches and the pods its admitted changes affected within the policy's window.
//!
//! A change set is keyed by its `change-id` annotation and by its requester; the engine
//! asks for both and the larger count decides. This module keeps the sets in process
//! memory (`--dev`, `check`); a cluster-backed [`ChangeSetReach`] can replace it
//! without touching the rules.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most change sets tracked at once; the oldest is forgotten past this, so memory
/// stays bounded whatever a client sends.
pub const MAX_CHANGE_SETS: usize = 10_000;

/// Most namespaces remembered per change set (far above any sane limit).
const MAX_NAMESPACES_PER_SET: usize = 1_000;

/// Most pod entries remembered per change set; past this the two oldest merge into
/// one, stamped with the later time, so a count can only last longer, never vanish.
const MAX_POD_ENTRIES_PER_SET: usize = 256;

/// What a change set has used within the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Distinct namespaces.
    pub namespaces: u64,
    /// Pods affected by its admitted changes.
    pub pods: u64,
}

/// One change, as a change set counts it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Its namespace; `None` for cluster-scoped objects.
    pub namespace: Option<&'a str>,
    /// Pods it affects.
    pub pods: u64,
}

/// Counts what one change set has used.
pub trait ChangeSetReach: Send + Sync {
    /// What set `key` has used within `window` before `now`, counting `entry` as if
    /// it were admitted. Records nothing.
    fn usage_with(&self, key: &str, entry: Entry<'_>, window: Duration, now: Instant) -> Usage;
    /// Records that an admitted change of set `key` used `entry`.
    fn record(&self, key: &str, entry: Entry<'_>, window: Duration, now: Instant);
}

#[derive(Debug, Default)]
struct Set {
    namespaces: HashMap<String, Instant>,
    /// Pod counts by when they were admitted, oldest first (admissions arrive in time
    /// order but for concurrent ones, which can only keep an entry a moment longer).
    pods: VecDeque<(Instant, u64)>,
    /// The sum of `pods`, kept as entries come and go so a decision never re-adds them.
    pods_total: u64,
}

impl Set {
    fn last_seen(&self) -> Option<Instant> {
        let ns = self.namespaces.values().max().copied();
        let pods = self.pods.iter().map(|(t, _)| *t).max();
        ns.max(pods)
    }

    fn forget_before(&mut self, window: Duration, now: Instant) {
        self.namespaces.retain(|_, seen| live(*seen, window, now));
        while let Some(&(seen, pods)) = self.pods.front() {
            if live(seen, window, now) {
                break;
            }
            self.pods.pop_front();
            self.pods_total = self.pods_total.saturating_sub(pods);
        }
    }
}

fn live(seen: Instant, window: Duration, now: Instant) -> bool {
    now.saturating_duration_since(seen) <= window
}

/// The in-process [`ChangeSetReach`].
#[derive(Debug, Default)]
pub struct InMemoryReach {
    sets: Mutex<HashMap<String, Set>>,
}

impl ChangeSetReach for InMemoryReach {
    fn usage_with(&self, key: &str, entry: Entry<'_>, window: Duration, now: Instant) -> Usage {
        let sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        let set = sets.get(key);
        let others = set.map_or(0, |set| {
            set.namespaces
                .iter()
                .filter(|(ns, seen)| {
                    Some(ns.as_str()) != entry.namespace && live(**seen, window, now)
                })
                .count() as u64
        });
        // Read-only: a shorter window asked now must not forget what a longer one
        // (after a policy reload) still counts. The expired entries are the oldest,
        // and `record` drops them, so few are walked here.
        let pods = set.map_or(0, |set| {
            let expired = set
                .pods
                .iter()
                .take_while(|(seen, _)| !live(*seen, window, now))
                .fold(0u64, |sum, (_, pods)| sum.saturating_add(*pods));
            set.pods_total.saturating_sub(expired)
        });
        Usage {
            namespaces: others.saturating_add(u64::from(entry.namespace.is_some())),
            pods: pods.saturating_add(entry.pods),
        }
    }

    fn record(&self, key: &str, entry: Entry<'_>, window: Duration, now: Instant) {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        if !sets.contains_key(key) && sets.len() >= MAX_CHANGE_SETS {
            sets.retain(|_, set| {
                set.forget_before(window, now);
                set.last_seen().is_some()
            });
            if sets.len() >= MAX_CHANGE_SETS
                && let Some(oldest) = sets
                    .iter()
                    .min_by_key(|(_, set)| set.last_seen())
                    .map(|(k, _)| k.clone())
            {
                sets.remove(&oldest);
            }
        }
        let set = sets.entry(key.to_string()).or_default();
        if let Some(ns) = entry.namespace {
            if set.namespaces.len() >= MAX_NAMESPACES_PER_SET && !set.namespaces.contains_key(ns) {
                set.forget_before(window, now);
            }
            if set.namespaces.len() < MAX_NAMESPACES_PER_SET || set.namespaces.contains_key(ns) {
                set.namespaces.insert(ns.to_string(), now);
            }
        }
        if entry.pods > 0 {
            if set.pods.len() >= MAX_POD_ENTRIES_PER_SET {
                set.forget_before(window, now);
            }
            if set.pods.len() >= MAX_POD_ENTRIES_PER_SET
                && let Some((_, first)) = set.pods.pop_front()
            {
                // Folded into the next entry: counted a little longer, never less.
                match set.pods.front_mut() {
                    Some((_, next)) => *next = next.saturating_add(first),
                    None => set.pods_total = set.pods_total.saturating_sub(first),
                }
            }
            set.pods.push_back((now, entry.pods));
            set.pods_total = set.pods_total.saturating_add(entry.pods);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(ns: &str, pods: u64) -> Entry<'_> {
        Entry {
            namespace: Some(ns),
            pods,
        }
    }

    #[test]
    fn counts_distinct_namespaces_and_pods_within_the_window() {
        let r = InMemoryReach::default();
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        assert_eq!(
            r.usage_with("set", at("a", 5), w, t0),
            Usage {
                namespaces: 1,
                pods: 5
            }
        );
        r.record("set", at("a", 5), w, t0);
        r.record("set", at("a", 5), w, t0);
        let u = r.usage_with("set", at("a", 0), w, t0);
        assert_eq!(
            u,
            Usage {
                namespaces: 1,
                pods: 10
            },
            "same namespace counts once, pods add up"
        );
        assert_eq!(r.usage_with("set", at("b", 1), w, t0).namespaces, 2);
        r.record("set", at("b", 1), w, t0);
        assert_eq!(
            r.usage_with("set", at("c", 0), w, t0),
            Usage {
                namespaces: 3,
                pods: 11
            }
        );
        assert_eq!(
            r.usage_with("other", at("c", 0), w, t0).namespaces,
            1,
            "sets are separate"
        );
        let cluster = Entry {
            namespace: None,
            pods: 0,
        };
        assert_eq!(
            r.usage_with("set", cluster, w, t0).namespaces,
            2,
            "cluster-scoped adds none"
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            r.usage_with("set", at("c", 2), w, later),
            Usage {
                namespaces: 1,
                pods: 2
            },
            "window expired"
        );
        assert_eq!(
            r.usage_with("set", at("c", 0), HOUR, later).pods,
            11,
            "a longer window still counts them"
        );
    }

    #[test]
    fn merged_pod_entries_keep_their_sum() {
        let r = InMemoryReach::default();
        let t0 = Instant::now();
        for i in 0..(MAX_POD_ENTRIES_PER_SET as u64 + 40) {
            r.record("set", at("a", 1), HOUR, t0 + Duration::from_millis(i));
        }
        let u = r.usage_with("set", at("a", 0), HOUR, t0 + Duration::from_secs(1));
        assert_eq!(u.pods, MAX_POD_ENTRIES_PER_SET as u64 + 40);
        assert!(r.sets.lock().unwrap()["set"].pods.len() <= MAX_POD_ENTRIES_PER_SET);
    }

    #[test]
    fn memory_stays_bounded() {
        let r = InMemoryReach::default();
        let t0 = Instant::now();
        for i in 0..(MAX_CHANGE_SETS + 50) {
            r.record(
                &format!("set-{i}"),
                at("ns", 1),
                HOUR,
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert!(r.sets.lock().unwrap().len() <= MAX_CHANGE_SETS);
        // The newest set survives eviction.
        let newest = format!("set-{}", MAX_CHANGE_SETS + 49);
        let u = r.usage_with(&newest, at("other", 0), HOUR, t0 + Duration::from_secs(1));
        assert_eq!(
            u,
            Usage {
                namespaces: 2,
                pods: 1
            }
        );
    }
}
