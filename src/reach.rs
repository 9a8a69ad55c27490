//! Namespace reach of a change set across requests (DESIGN.md section 5).
//!
//! A change set is keyed by its `change-id` annotation, else by its requester. This
//! module keeps it in process memory; a cluster-backed implementation of
//! [`ChangeSetReach`] can replace it without touching the rules.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a namespace stays counted in a change set after its last change.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Most change sets tracked at once; the oldest is forgotten past this, so memory
/// stays bounded whatever a client sends.
pub const MAX_CHANGE_SETS: usize = 10_000;

/// Most namespaces remembered per change set (far above any sane limit).
const MAX_NAMESPACES_PER_SET: usize = 1_000;

/// Counts the distinct namespaces one change set touches.
pub trait ChangeSetReach: Send + Sync {
    /// Distinct namespaces of change set `key` within the window, counting `namespace`
    /// as if this request were admitted. Records nothing.
    fn namespaces_with(&self, key: &str, namespace: &str, now: Instant) -> u64;
    /// Records that an admitted change of set `key` touched `namespace`.
    fn record(&self, key: &str, namespace: &str, now: Instant);
}

/// The in-process [`ChangeSetReach`].
#[derive(Debug)]
pub struct InMemoryReach {
    window: Duration,
    sets: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl Default for InMemoryReach {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW)
    }
}

impl InMemoryReach {
    /// A tracker with the given window.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            sets: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self, seen: Instant, now: Instant) -> bool {
        now.saturating_duration_since(seen) <= self.window
    }
}

impl ChangeSetReach for InMemoryReach {
    fn namespaces_with(&self, key: &str, namespace: &str, now: Instant) -> u64 {
        let sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        let others = sets.get(key).map_or(0, |set| {
            set.iter()
                .filter(|(ns, seen)| ns.as_str() != namespace && self.live(**seen, now))
                .count()
        });
        others as u64 + 1
    }

    fn record(&self, key: &str, namespace: &str, now: Instant) {
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        if !sets.contains_key(key) && sets.len() >= MAX_CHANGE_SETS {
            sets.retain(|_, set| {
                set.retain(|_, seen| self.live(*seen, now));
                !set.is_empty()
            });
            if sets.len() >= MAX_CHANGE_SETS
                && let Some(oldest) = sets
                    .iter()
                    .min_by_key(|(_, set)| set.values().max().copied())
                    .map(|(k, _)| k.clone())
            {
                sets.remove(&oldest);
            }
        }
        let set = sets.entry(key.to_string()).or_default();
        if set.len() >= MAX_NAMESPACES_PER_SET && !set.contains_key(namespace) {
            set.retain(|_, seen| self.live(*seen, now));
        }
        if set.len() < MAX_NAMESPACES_PER_SET || set.contains_key(namespace) {
            set.insert(namespace.to_string(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_namespaces_within_the_window() {
        let r = InMemoryReach::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(r.namespaces_with("set", "a", t0), 1);
        r.record("set", "a", t0);
        r.record("set", "a", t0);
        assert_eq!(
            r.namespaces_with("set", "a", t0),
            1,
            "same namespace counts once"
        );
        assert_eq!(r.namespaces_with("set", "b", t0), 2);
        r.record("set", "b", t0);
        assert_eq!(r.namespaces_with("set", "c", t0), 3);
        assert_eq!(r.namespaces_with("other", "c", t0), 1, "sets are separate");
        let later = t0 + Duration::from_secs(61);
        assert_eq!(r.namespaces_with("set", "c", later), 1, "window expired");
    }

    #[test]
    fn memory_stays_bounded() {
        let r = InMemoryReach::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..(MAX_CHANGE_SETS + 50) {
            r.record(
                &format!("set-{i}"),
                "ns",
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert!(r.sets.lock().unwrap().len() <= MAX_CHANGE_SETS);
        // The newest set survives eviction.
        let newest = format!("set-{}", MAX_CHANGE_SETS + 49);
        assert_eq!(
            r.namespaces_with(&newest, "other", t0 + Duration::from_secs(1)),
            2
        );
    }
}
