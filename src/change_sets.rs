//! Change sets across requests (docs/design.md#radius): the namespaces one change set
//! touches and the pods its admitted changes affected within the policy's window.
//!
//! A change set is keyed by its `change-id` annotation and by its requester; the engine
//! asks for both and the larger count decides. A decision *reserves* its change in
//! every set it belongs to before it is judged: the usage it is judged on counts every
//! reservation made before it, and its own reservation is counted by every decision
//! after it until it is confirmed (admitted) or released (denied, dry run). So
//! concurrent decisions of one set never admit more than its budget: reading the count
//! and adding to it are one step. This module keeps the sets in process memory
//! (`--dev`, `check`), where that step is one lock; the cluster's [`ChangeSets`]
//! (`cluster::change_sets`) makes it one write with a resourceVersion precondition.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
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

impl Usage {
    /// The larger of each count: a change is judged by the fuller of its sets.
    pub fn max(self, other: Usage) -> Usage {
        Usage {
            namespaces: self.namespaces.max(other.namespaces),
            pods: self.pods.max(other.pods),
        }
    }
}

/// One change, as a change set counts it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// Its namespace; `None` for cluster-scoped objects.
    pub namespace: Option<&'a str>,
    /// Pods it affects.
    pub pods: u64,
    /// A dry run: judged like a real change, never confirmed, so a store may skip
    /// writing its reservation anywhere others would see it.
    pub dry_run: bool,
}

/// Counts what change sets have used, and reserves a change's share in them.
pub trait ChangeSets: Send + Sync {
    /// Reserves `entry` in every set of `keys` (within `window` before `now`) and
    /// returns what the fullest of them has used, `entry` included. The reservation
    /// counts for every later decision until it is confirmed or released.
    fn reserve(&self, keys: &[String], entry: Entry<'_>, window: Duration, now: Instant)
    -> Reservation;
}

/// What an admitted change leaves in the cluster, when the API server sent its review
/// (and so goes on to make the change): the object created with the uid the review
/// showed, changed past the version it showed, or gone. A review posted by anyone
/// else leaves nothing of the kind, so a store that can look at the cluster keeps
/// such a change held (counted, short-lived) until it sees it (docs/security.md,
/// "Forged reviews on a default install").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    /// The resource's API group (`""` for the core group).
    pub group: String,
    /// Its version.
    pub version: String,
    /// Its plural name (the parent's for a subresource: `deployments` for a scale,
    /// `pods` for an eviction).
    pub resource: String,
    /// The object's namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
    /// What should be seen.
    pub expect: Expect,
}

/// What an admitted change should have done to its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Created: an object with this uid (the API server sets it before validating
    /// admission), created at about the time of the review.
    Created {
        /// The new object's uid.
        uid: String,
    },
    /// Changed: the object with this uid, written since the version the review was
    /// made against (by a write of this subresource, when the object says).
    Updated {
        /// The object's uid.
        uid: String,
        /// The old object's resourceVersion.
        version: String,
        /// The subresource written (`scale`, `status`), `None` for the object.
        subresource: Option<String>,
    },
    /// Deleted (or evicted): the object gone, replaced by another uid, or being
    /// deleted; and there when the change was admitted.
    Deleted {
        /// The old object's uid; empty when the review does not carry it (an
        /// eviction names only the pod).
        uid: String,
    },
    /// Nothing a replica can look for (a subresource that creates no object of its
    /// own name): counted at once, as before.
    Unchecked,
}

/// What settles a reservation in its store.
pub trait Hold: Send {
    /// Confirms the change (`admitted`) so it counts for the window, or withdraws it.
    fn settle(self: Box<Self>, admitted: bool);

    /// The change was admitted: a store that can look at the cluster keeps it held
    /// until `sighting` is seen there (then it counts for the window) or lapses it
    /// when it is not; one that cannot confirms it at once.
    fn settle_when_seen(self: Box<Self>, sighting: Sighting) {
        let _ = sighting;
        self.settle(true);
    }
}

/// A change set whose count could not be shared: the store keeps its sets in records
/// every replica reads, and a cap on how many records may exist bit, so this set
/// (which has none yet) is counted by one replica alone. Two replicas could then
/// admit up to twice its budget, so the engine does not admit a change that rests on
/// it (docs/security.md, "Records without bound").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped {
    /// The change set's key (`user:<name>` or `change-id:<id>`).
    pub key: String,
    /// Which cap bit: `total` (records in all) or `requester` (records made for one
    /// requester's decisions).
    pub cap: &'static str,
    /// That cap's number of records.
    pub limit: usize,
}

impl std::fmt::Display for Capped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cap {
            "requester" => write!(
                f,
                "change set {} needs a new record, and its requester's decisions already made {} (the cap per requester)",
                self.key, self.limit
            ),
            _ => write!(
                f,
                "change set {} needs a new record, and the cluster holds {} (the cap on records in all)",
                self.key, self.limit
            ),
        }
    }
}

/// A change's share of its change sets, reserved while it is judged. Dropped without
/// [`Reservation::confirm`], it is released.
#[must_use = "a reservation is confirmed when its change is admitted, else released"]
pub struct Reservation {
    usage: Usage,
    hold: Option<Box<dyn Hold>>,
    capped: Option<Capped>,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("usage", &self.usage)
            .field("held", &self.hold.is_some())
            .field("capped", &self.capped)
            .finish()
    }
}

impl Reservation {
    /// A reservation of `usage` that `hold` settles (`None`: nothing to settle).
    pub fn new(usage: Usage, hold: Option<Box<dyn Hold>>) -> Self {
        Self {
            usage,
            hold,
            capped: None,
        }
    }

    /// The same reservation, with one of its sets counted by this replica alone
    /// because a cap on shared records bit ([`Capped`]).
    pub fn with_capped(mut self, capped: Option<Capped>) -> Self {
        self.capped = capped;
        self
    }

    /// What the fullest set has used, this change included.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// A set of this change that could not be counted by every replica, if any: the
    /// usage does not bind the other replicas for it.
    pub fn capped(&self) -> Option<&Capped> {
        self.capped.as_ref()
    }

    /// The change was admitted (and is not a dry run): it counts for the window.
    pub fn confirm(mut self) {
        if let Some(hold) = self.hold.take() {
            hold.settle(true);
        }
    }

    /// The change was admitted (and is not a dry run), and its review may not have come
    /// from the API server: it counts while held, and for the window once the cluster
    /// shows `sighting` ([`Hold::settle_when_seen`]).
    pub fn confirm_when_seen(mut self, sighting: Sighting) {
        if let Some(hold) = self.hold.take() {
            hold.settle_when_seen(sighting);
        }
    }

    /// The change was denied, or was a dry run: its share is given back.
    pub fn release(mut self) {
        if let Some(hold) = self.hold.take() {
            hold.settle(false);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(hold) = self.hold.take() {
            hold.settle(false);
        }
    }
}

#[derive(Debug, Default)]
struct Set {
    namespaces: HashMap<String, Instant>,
    /// Pod counts by when they were admitted, oldest first (admissions arrive in time
    /// order but for concurrent ones, which can only keep an entry a moment longer).
    pods: VecDeque<(Instant, u64)>,
    /// The sum of `pods`, kept as entries come and go so a decision never re-adds them.
    pods_total: u64,
    /// Reservations of decisions still being judged: counted, not yet admitted.
    held: Vec<Held>,
}

#[derive(Debug, Clone)]
struct Held {
    id: u64,
    namespace: Option<String>,
    pods: u64,
    at: Instant,
}

impl Set {
    fn last_seen(&self) -> Option<Instant> {
        let ns = self.namespaces.values().max().copied();
        let pods = self.pods.iter().map(|(t, _)| *t).max();
        let held = self.held.iter().map(|h| h.at).max();
        ns.max(pods).max(held)
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

    /// What the set has used, `entry` counted as if admitted.
    fn usage_with(&self, entry: Entry<'_>, window: Duration, now: Instant) -> Usage {
        let mut others: Vec<&str> = self
            .namespaces
            .iter()
            .filter(|(ns, seen)| Some(ns.as_str()) != entry.namespace && live(**seen, window, now))
            .map(|(ns, _)| ns.as_str())
            .collect();
        for h in &self.held {
            if let Some(ns) = h.namespace.as_deref()
                && Some(ns) != entry.namespace
                && !others.contains(&ns)
            {
                others.push(ns);
            }
        }
        // Read-only: a shorter window asked now must not forget what a longer one
        // (after a policy reload) still counts. The expired entries are the oldest,
        // and `admit` drops them, so few are walked here.
        let expired = self
            .pods
            .iter()
            .take_while(|(seen, _)| !live(*seen, window, now))
            .fold(0u64, |sum, (_, pods)| sum.saturating_add(*pods));
        let held = self
            .held
            .iter()
            .fold(0u64, |sum, h| sum.saturating_add(h.pods));
        Usage {
            namespaces: (others.len() as u64).saturating_add(u64::from(entry.namespace.is_some())),
            pods: self
                .pods_total
                .saturating_sub(expired)
                .saturating_add(held)
                .saturating_add(entry.pods),
        }
    }

    /// Counts an admitted change for the window.
    fn admit(&mut self, namespace: Option<&str>, pods: u64, window: Duration, now: Instant) {
        if let Some(ns) = namespace {
            if self.namespaces.len() >= MAX_NAMESPACES_PER_SET && !self.namespaces.contains_key(ns)
            {
                self.forget_before(window, now);
            }
            if self.namespaces.len() < MAX_NAMESPACES_PER_SET || self.namespaces.contains_key(ns) {
                let seen = self.namespaces.entry(ns.to_string()).or_insert(now);
                *seen = (*seen).max(now);
            }
        }
        if pods > 0 {
            if self.pods.len() >= MAX_POD_ENTRIES_PER_SET {
                self.forget_before(window, now);
            }
            if self.pods.len() >= MAX_POD_ENTRIES_PER_SET
                && let Some((_, first)) = self.pods.pop_front()
            {
                // Folded into the next entry: counted a little longer, never less.
                match self.pods.front_mut() {
                    Some((_, next)) => *next = next.saturating_add(first),
                    None => self.pods_total = self.pods_total.saturating_sub(first),
                }
            }
            self.pods.push_back((now, pods));
            self.pods_total = self.pods_total.saturating_add(pods);
        }
    }
}

fn live(seen: Instant, window: Duration, now: Instant) -> bool {
    now.saturating_duration_since(seen) <= window
}

#[derive(Debug, Default)]
struct Sets {
    sets: HashMap<String, Set>,
    next_hold: u64,
}

impl Sets {
    /// The set of `key`, made room for at the cap.
    fn set_mut(&mut self, key: &str, window: Duration, now: Instant) -> &mut Set {
        if !self.sets.contains_key(key) && self.sets.len() >= MAX_CHANGE_SETS {
            self.sets.retain(|_, set| {
                set.forget_before(window, now);
                set.last_seen().is_some()
            });
            if self.sets.len() >= MAX_CHANGE_SETS
                && let Some(oldest) = self
                    .sets
                    .iter()
                    .filter(|(_, set)| set.held.is_empty())
                    .min_by_key(|(_, set)| set.last_seen())
                    .map(|(k, _)| k.clone())
            {
                self.sets.remove(&oldest);
            }
        }
        self.sets.entry(key.to_string()).or_default()
    }
}

/// The in-process [`ChangeSets`]: reserving is one lock over every set.
#[derive(Debug, Default)]
pub struct InMemoryChangeSets {
    sets: Arc<Mutex<Sets>>,
}

fn lock(sets: &Mutex<Sets>) -> std::sync::MutexGuard<'_, Sets> {
    sets.lock().unwrap_or_else(|p| p.into_inner())
}

impl ChangeSets for InMemoryChangeSets {
    fn reserve(
        &self,
        keys: &[String],
        entry: Entry<'_>,
        window: Duration,
        now: Instant,
    ) -> Reservation {
        let mut sets = lock(&self.sets);
        let usage = keys
            .iter()
            .map(|key| {
                sets.sets
                    .get(key)
                    .map_or_else(|| Set::default().usage_with(entry, window, now), |s| {
                        s.usage_with(entry, window, now)
                    })
            })
            .fold(Usage::default(), Usage::max);
        if entry.namespace.is_none() && entry.pods == 0 {
            // Touches no namespace and no budget: nothing to hold.
            return Reservation::new(usage, None);
        }
        let id = sets.next_hold;
        sets.next_hold = sets.next_hold.wrapping_add(1);
        let held = Held {
            id,
            namespace: entry.namespace.map(str::to_string),
            pods: entry.pods,
            at: now,
        };
        for key in keys {
            sets.set_mut(key, window, now).held.push(held.clone());
        }
        drop(sets);
        Reservation::new(
            usage,
            Some(Box::new(InMemoryHold {
                sets: self.sets.clone(),
                keys: keys.to_vec(),
                held,
                window,
            })),
        )
    }
}

/// A reservation in [`InMemoryChangeSets`].
struct InMemoryHold {
    sets: Arc<Mutex<Sets>>,
    keys: Vec<String>,
    held: Held,
    window: Duration,
}

impl Hold for InMemoryHold {
    fn settle(self: Box<Self>, admitted: bool) {
        let mut sets = lock(&self.sets);
        for key in &self.keys {
            if let Some(set) = sets.sets.get_mut(key) {
                set.held.retain(|h| h.id != self.held.id);
            }
            if admitted {
                let h = &self.held;
                sets.set_mut(key, self.window, h.at)
                    .admit(h.namespace.as_deref(), h.pods, self.window, h.at);
            } else if sets.sets.get(key).is_some_and(|s| s.last_seen().is_none()) {
                sets.sets.remove(key);
            }
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
            dry_run: false,
        }
    }

    fn keys(key: &str) -> Vec<String> {
        vec![key.to_string()]
    }

    /// What `key` has used with `entry`, leaving nothing behind.
    fn usage_with(r: &InMemoryChangeSets, key: &str, entry: Entry<'_>, w: Duration, t: Instant) -> Usage {
        let reservation = r.reserve(&keys(key), entry, w, t);
        let usage = reservation.usage();
        reservation.release();
        usage
    }

    fn record(r: &InMemoryChangeSets, key: &str, entry: Entry<'_>, w: Duration, t: Instant) {
        r.reserve(&keys(key), entry, w, t).confirm();
    }

    #[test]
    fn counts_distinct_namespaces_and_pods_within_the_window() {
        let r = InMemoryChangeSets::default();
        let w = Duration::from_secs(60);
        let t0 = Instant::now();
        assert_eq!(
            usage_with(&r, "set", at("a", 5), w, t0),
            Usage {
                namespaces: 1,
                pods: 5
            }
        );
        record(&r, "set", at("a", 5), w, t0);
        record(&r, "set", at("a", 5), w, t0);
        let u = usage_with(&r, "set", at("a", 0), w, t0);
        assert_eq!(
            u,
            Usage {
                namespaces: 1,
                pods: 10
            },
            "same namespace counts once, pods add up"
        );
        assert_eq!(usage_with(&r, "set", at("b", 1), w, t0).namespaces, 2);
        record(&r, "set", at("b", 1), w, t0);
        assert_eq!(
            usage_with(&r, "set", at("c", 0), w, t0),
            Usage {
                namespaces: 3,
                pods: 11
            }
        );
        assert_eq!(
            usage_with(&r, "other", at("c", 0), w, t0).namespaces,
            1,
            "sets are separate"
        );
        let cluster = Entry {
            namespace: None,
            pods: 0,
            dry_run: false,
        };
        assert_eq!(
            usage_with(&r, "set", cluster, w, t0).namespaces,
            2,
            "cluster-scoped adds none"
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            usage_with(&r, "set", at("c", 2), w, later),
            Usage {
                namespaces: 1,
                pods: 2
            },
            "window expired"
        );
        assert_eq!(
            usage_with(&r, "set", at("c", 0), HOUR, later).pods,
            11,
            "a longer window still counts them"
        );
    }

    #[test]
    fn a_reservation_counts_until_released_and_a_released_one_leaves_nothing() {
        let r = InMemoryChangeSets::default();
        let t0 = Instant::now();
        let both = vec!["user:a".to_string(), "change-id:x".to_string()];
        let first = r.reserve(&both, at("a", 30), HOUR, t0);
        assert_eq!(first.usage().pods, 30);
        // Judged while the first is: it counts the first.
        let second = r.reserve(&keys("change-id:x"), at("b", 30), HOUR, t0);
        assert_eq!(
            second.usage(),
            Usage {
                namespaces: 2,
                pods: 60
            }
        );
        second.release();
        first.confirm();
        assert_eq!(usage_with(&r, "user:a", at("a", 0), HOUR, t0).pods, 30);
        assert_eq!(usage_with(&r, "change-id:x", at("a", 0), HOUR, t0).pods, 30);
        // Dropped unsettled (a panic while judging): released.
        drop(r.reserve(&keys("user:a"), at("c", 5), HOUR, t0));
        assert_eq!(
            usage_with(&r, "user:a", at("a", 0), HOUR, t0),
            Usage {
                namespaces: 1,
                pods: 30
            }
        );
        assert!(!lock(&r.sets).sets.contains_key("user:nobody"));
        drop(r.reserve(&keys("user:nobody"), at("c", 5), HOUR, t0));
        assert!(
            !lock(&r.sets).sets.contains_key("user:nobody"),
            "a released reservation leaves no empty set"
        );
    }

    /// Issue 19, finding 6: decisions read the count, then recorded, so parallel ones
    /// each saw room the others were taking. 40 threads released at once each want 10
    /// pods of a 50-pod budget: exactly five are admitted, every time.
    #[test]
    fn parallel_decisions_never_admit_past_the_budget() {
        const LIMIT: u64 = 50;
        for round in 0..20 {
            let r = Arc::new(InMemoryChangeSets::default());
            let start = Arc::new(std::sync::Barrier::new(40));
            let threads: Vec<_> = (0..40)
                .map(|i| {
                    let (r, start) = (r.clone(), start.clone());
                    std::thread::spawn(move || {
                        let key = vec!["user:agent".to_string(), format!("change-id:{i}")];
                        start.wait();
                        let reservation = r.reserve(&key, at("prod", 10), HOUR, Instant::now());
                        // A decision takes a moment: others arrive meanwhile.
                        std::thread::yield_now();
                        if reservation.usage().pods <= LIMIT {
                            reservation.confirm();
                            true
                        } else {
                            reservation.release();
                            false
                        }
                    })
                })
                .collect();
            let admitted = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|a| *a)
                .count();
            let used = usage_with(&r, "user:agent", at("prod", 0), HOUR, Instant::now()).pods;
            assert!(used <= LIMIT, "round {round}: {used} pods admitted");
            assert_eq!(admitted, 5, "round {round}: {admitted} admitted");
        }
    }

    #[test]
    fn merged_pod_entries_keep_their_sum() {
        let r = InMemoryChangeSets::default();
        let t0 = Instant::now();
        for i in 0..(MAX_POD_ENTRIES_PER_SET as u64 + 40) {
            record(&r, "set", at("a", 1), HOUR, t0 + Duration::from_millis(i));
        }
        let u = usage_with(&r, "set", at("a", 0), HOUR, t0 + Duration::from_secs(1));
        assert_eq!(u.pods, MAX_POD_ENTRIES_PER_SET as u64 + 40);
        assert!(lock(&r.sets).sets["set"].pods.len() <= MAX_POD_ENTRIES_PER_SET);
    }

    #[test]
    fn memory_stays_bounded() {
        let r = InMemoryChangeSets::default();
        let t0 = Instant::now();
        for i in 0..(MAX_CHANGE_SETS + 50) {
            record(
                &r,
                &format!("set-{i}"),
                at("ns", 1),
                HOUR,
                t0 + Duration::from_millis(i as u64),
            );
        }
        assert!(lock(&r.sets).sets.len() <= MAX_CHANGE_SETS);
        // The newest set survives eviction.
        let newest = format!("set-{}", MAX_CHANGE_SETS + 49);
        let u = usage_with(&r, &newest, at("other", 0), HOUR, t0 + Duration::from_secs(1));
        assert_eq!(
            u,
            Usage {
                namespaces: 2,
                pods: 1
            }
        );
    }
}
