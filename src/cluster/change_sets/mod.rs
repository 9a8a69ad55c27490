//! Change sets shared by every replica (docs/design.md#radius): [`ChangeSets`] over
//! `ChangeSet` records in the release namespace.
//!
//! Reserving: a decision's change is written into its keys' records as a *held*
//! entry before the decision is made, with a resourceVersion precondition, and the
//! usage it is judged on is read from the record it was written into. The API server
//! orders those writes: whichever replica made it, a reservation counts every one
//! written before it, so concurrent decisions of one set, on one replica or several,
//! never admit more than its budget. Admitted, the held entry is confirmed (it counts
//! for the window); denied or dry run, it is released; a replica that dies while
//! judging leaves one that lapses after [`HOLD_LAPSE`].
//!
//! Group commits: each key has one writer per replica. Reservations that arrive while
//! a write is in flight go out together in the next one, so a burst of decisions
//! costs a few round trips, not one each in turn. Confirms and releases ride along
//! with the next write, or go alone; the decision never waits for them.
//!
//! When the API server does not answer within the decision's budget, the decision is
//! judged on what this replica knows (the watched record and its own changes not yet
//! written, counted under one lock) and notes that it could not read; the writes go
//! on in the background with backoff until they land or no longer matter.
//!
//! Dry runs never write: they read the record (a quorum read) and count this
//! replica's own changes not yet written.
//!
//! Seen before counted (docs/security.md, "Forged reviews on a default install"): an
//! admitted change stays *held* until the cluster shows it happened ([`sighting`]:
//! one GET [`CHECK_AFTER`] the decision); seen, it is confirmed and counts for the
//! window; not seen, it is released at once (`blastguard_change_set_holds_total
//! {result="lapsed"}`). Either way the settling rides on the key's next write, or
//! goes alone after [`SETTLE_FLUSH`]: one write per decision while a set is busy.
//!
//! Bounds: at most [`Caps::total`] records, and [`Caps::per_requester`] made for one
//! requester. A reservation whose key would need a record past a cap is counted by
//! this replica alone, in memory (`blastguard_change_set_records_capped_total`), and
//! says so ([`Reservation::capped`]): that count binds no other replica, so the engine
//! holds a change that rests on it (reason `change_set_capped`), and two replicas never
//! admit twice a budget between them.
//!
//! Expiry: entries past the window no longer count and are dropped by the next write;
//! a write that leaves a record empty (its only entries were holds, now released)
//! deletes it instead; a record whose entries have all expired is deleted (with a
//! precondition, so one that was just written to survives) by a periodic collection.

mod peers;
pub mod record;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use tokio::sync::oneshot;

use super::bridge::Bridge;
use super::cache::{Cache, Event, version_number};
use super::sighting::{self, Looks};
use crate::budget;
use crate::change_sets::{
    Capped, ChangeSets, Entry, Expect, Hold, InMemoryChangeSets, Reservation, Sighting, Usage,
};
use crate::cluster::metrics::ClusterMetrics;
use record::{Admitted, ChangeSet, ChangeSetSpec, Op};

/// The `cache` label of these metrics.
pub const CACHE: &str = "changesets";

/// Most changes waiting to be written at once; past it new ones are counted here but
/// not written (counted as dropped): memory stays bounded through any outage.
pub const MAX_PENDING: usize = 10_000;

/// How long a reservation counts when it is never settled (its replica died while
/// judging or looking, or the settling write never landed). Covers the decision, the
/// look [`CHECK_AFTER`] it, and the settling write [`SETTLE_FLUSH`] after that.
pub const HOLD_LAPSE: Duration = Duration::from_secs(15);

/// How long after admitting a change a replica looks for it in the cluster: the API
/// server writes an admitted change within milliseconds of the last webhook's answer.
pub const CHECK_AFTER: Duration = Duration::from_secs(3);

/// Longest a confirmation or release waits for the key's next write to carry it.
pub const SETTLE_FLUSH: Duration = Duration::from_secs(2);

/// The label on each record naming (by a hash) the requester whose decision made it.
pub const REQUESTER_LABEL: &str = "blastguard.io/requester";

/// How many records may exist: past either cap a new change set has no shared record
/// (counted by one replica in memory, its changes held unless over their limits
/// anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Records in all (the watch cache of every replica holds each).
    pub total: usize,
    /// Records made by one requester's decisions (its own, and its change-ids).
    pub per_requester: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            total: 5_000,
            per_requester: 100,
        }
    }
}

/// A requester's hash as [`REQUESTER_LABEL`] holds it.
pub fn requester_hash(username: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(username.as_bytes())[..8])
}

/// Least time a decision waits for its reservation, even when less of its budget is
/// left: a burst's reservations go out in one write, which on a busy API server can
/// take longer than the default budget, and a decision that stops waiting is denied
/// (onClusterUnavailable: deny).
pub const RESERVE_WAIT: Duration = Duration::from_millis(400);

/// Longest a decision waits for its reservation while the API server keeps answering
/// this replica's other calls and delivering its watch of the records: another
/// identity's flood of (forged) reviews queues writes ahead of it. Two thirds of the chart's webhook timeout (3 s), so the decision still
/// answers in time; a hung API server answers nothing, and costs [`RESERVE_WAIT`].
pub const RESERVE_WAIT_BUSY: Duration = Duration::from_millis(2000);

/// How recent an answer from the API server must be for it to count as alive.
const ALIVE_WITHIN: Duration = Duration::from_millis(500);

/// The record a [`Shared::probe`] asks for (never made: the answer is a 404), and the
/// key of the one [`ClusterChangeSets::warm_up`] writes as a dry run (never stored).
const PROBE: &str = "blastguard-warm-up";

/// Longest a probe waits: past it the API server did not answer. Under
/// [`RESERVE_WAIT`], so the probe a waiting decision starts has its answer (or none)
/// before that decision would stop waiting: a hung API server still costs only that.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// Time allowed to one request of a write.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Backoff between attempts after a failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub use super::pending::Pending;

/// The API calls on records, behind a trait so the logic can be tested against a
/// store fed directly.
pub trait Records: Send + Sync + 'static {
    /// GET by name; `Ok(None)` when absent.
    fn get(&self, name: &str) -> Pending<'_, Option<ChangeSet>>;
    /// POST; a 409 when it exists.
    fn create(&self, record: &ChangeSet) -> Pending<'_, ChangeSet>;
    /// POST with `dryRun=All`: validated and admitted, never stored.
    fn create_dry_run(&self, record: &ChangeSet) -> Pending<'_, ()>;
    /// PUT with the record's resourceVersion as precondition; a 409 on conflict.
    fn replace(&self, record: &ChangeSet) -> Pending<'_, ChangeSet>;
    /// DELETE with a resourceVersion precondition.
    fn delete(&self, name: &str, resource_version: &str) -> Pending<'_, ()>;
}

/// [`Records`] through the API server.
pub struct ApiRecords(pub Api<ChangeSet>);

impl Records for ApiRecords {
    fn get(&self, name: &str) -> Pending<'_, Option<ChangeSet>> {
        let name = name.to_string();
        Box::pin(async move { self.0.get_opt(&name).await })
    }
    fn create(&self, record: &ChangeSet) -> Pending<'_, ChangeSet> {
        let record = record.clone();
        Box::pin(async move { self.0.create(&PostParams::default(), &record).await })
    }
    fn create_dry_run(&self, record: &ChangeSet) -> Pending<'_, ()> {
        let record = record.clone();
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        Box::pin(async move { self.0.create(&params, &record).await.map(|_| ()) })
    }
    fn replace(&self, record: &ChangeSet) -> Pending<'_, ChangeSet> {
        let record = record.clone();
        Box::pin(async move {
            let name = record.metadata.name.clone().unwrap_or_default();
            self.0.replace(&name, &PostParams::default(), &record).await
        })
    }
    fn delete(&self, name: &str, resource_version: &str) -> Pending<'_, ()> {
        let name = name.to_string();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(resource_version.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        Box::pin(async move { self.0.delete(&name, &params).await.map(|_| ()) })
    }
}

/// A monotonic instant as wall-clock time: records are shared between processes,
/// whose `Instant`s mean nothing to each other.
fn wall(now: Instant) -> SystemTime {
    let (instant, system) = (Instant::now(), SystemTime::now());
    match instant.checked_duration_since(now) {
        Some(ago) => system - ago,
        None => system + now.duration_since(instant),
    }
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// One of this replica's changes not yet known to be in its record.
#[derive(Debug, Clone)]
struct Unwritten {
    admitted: Admitted,
    /// `Some` while only reserved: when it stops counting.
    until: Option<SystemTime>,
    /// The sequence number of the newest op queued for it.
    seq: u64,
}

/// What a reservation's writer answers: the usage its decision is judged on, or why
/// it has none.
type Answer = Result<Usage, NotWritten>;

#[derive(Debug, Clone, Copy)]
enum NotWritten {
    /// The record holds [`record::MAX_HELD`] reservations already.
    NoRoom,
}

/// Why a reservation was not queued for its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotQueued {
    /// [`MAX_PENDING`] changes wait already.
    Full,
    /// Its record would pass a cap (`"total"`, `"requester"`).
    Capped(&'static str),
}

struct Queued {
    op: Op,
    seq: u64,
    /// The decision waiting for a reservation's usage.
    reply: Option<oneshot::Sender<Answer>>,
}

/// One key's state on this replica.
#[derive(Default)]
struct KeyState {
    /// Ops not yet written, oldest first.
    queue: Vec<Queued>,
    /// Changes not yet known to be in the record.
    unwritten: Vec<Unwritten>,
    /// A writer task runs for this key.
    writing: bool,
    /// A flush of lazily queued settlements is scheduled.
    flushing: bool,
    /// The requester hash a new record is labelled with.
    requester: Option<String>,
    /// The record's name (empty until the first op is queued).
    name: String,
    /// The addresses of the reviews queued for it (the latest [`MAX_PEERS`]): a
    /// create of the record takes the first turn free among them ([`peers`]).
    peers: Vec<IpAddr>,
    /// Woken when an address joins `peers`, so a create waiting for the turns of
    /// the others takes the newcomer's too.
    asked: Arc<tokio::sync::Notify>,
}

/// Addresses a key remembers: one real review's among a forger's few.
const MAX_PEERS: usize = 8;

/// The shared part of [`ClusterChangeSets`]: what the writers and the collector hold.
struct Shared {
    records: Box<dyn Records>,
    namespace: String,
    cache: Arc<Cache<ChangeSet>>,
    /// Per key: what waits to be written and what is not yet in the record. Its lock
    /// also covers every update of the cache by a writer, so a decision reading the
    /// record and this replica's unwritten changes sees each change in exactly one.
    keys: Mutex<HashMap<String, KeyState>>,
    sequence: AtomicU64,
    /// The longest window seen in a request: the collector's notion of expiry.
    window_secs: AtomicU64,
    metrics: ClusterMetrics,
    handle: tokio::runtime::Handle,
    /// Tripped by writes that get no answer.
    bridge: Arc<Bridge>,
    /// When the API server last answered a write or read of a record, as time since
    /// `started` in milliseconds plus one; 0 while it never has.
    answered_ms: AtomicU64,
    /// A [`Shared::probe`] is in flight.
    probing: AtomicBool,
    /// Whether [`ClusterChangeSets::warm_up`] has run (whatever its answer).
    warm: AtomicBool,
    started: Instant,
    /// How a change is looked for in the cluster; `None`: confirmed at once.
    looks: Option<Box<dyn Looks>>,
    caps: Caps,
    /// Change sets past a cap, counted by this replica alone.
    overflow: InMemoryChangeSets,
    /// Creates of new records in flight, per address reviews came from.
    creates: peers::PeerGate,
}

/// [`ChangeSets`] over `ChangeSet` records.
pub struct ClusterChangeSets {
    shared: Arc<Shared>,
    bridge: Arc<Bridge>,
    replica: String,
    ids: AtomicU64,
}

impl ClusterChangeSets {
    /// Records in `namespace` through `records`; `cache` is fed by the watch.
    pub fn new(
        records: Box<dyn Records>,
        namespace: String,
        cache: Arc<Cache<ChangeSet>>,
        bridge: Arc<Bridge>,
        window: Duration,
        metrics: ClusterMetrics,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                records,
                namespace,
                cache,
                keys: Mutex::new(HashMap::new()),
                sequence: AtomicU64::new(0),
                window_secs: AtomicU64::new(window.as_secs().max(1)),
                metrics,
                handle: bridge.handle().clone(),
                bridge: bridge.clone(),
                answered_ms: AtomicU64::new(0),
                probing: AtomicBool::new(false),
                warm: AtomicBool::new(false),
                started: Instant::now(),
                looks: None,
                caps: Caps::default(),
                overflow: InMemoryChangeSets::default(),
                creates: peers::PeerGate::default(),
            }),
            bridge,
            replica: replica_id(),
            ids: AtomicU64::new(0),
        }
    }

    /// Looks for each admitted change in the cluster through `looks` before it counts
    /// for the window (without: confirmed at once). Call before sharing.
    pub fn with_looks(mut self, looks: Box<dyn Looks>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.looks = Some(looks);
        }
        self
    }

    /// Other caps on records than [`Caps::default`]. Call before sharing.
    pub fn with_caps(mut self, caps: Caps) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.caps = caps;
        }
        self
    }

    /// Applies a watch event (the watch task calls this).
    pub fn apply(&self, event: Event<ChangeSet>) {
        // The watch delivering is the API server answering: while another identity's
        // flood writes records, events arrive many times a second; a hung API server
        // sends none.
        self.shared.answered();
        self.shared.cache.apply(event);
        self.shared
            .metrics
            .set_cache_objects(CACHE, self.shared.cache.len());
        self.shared
            .metrics
            .set_cache_synced(CACHE, self.shared.cache.is_synced());
    }

    /// Whether the watch has delivered its first list.
    pub fn is_synced(&self) -> bool {
        self.shared.cache.is_synced()
    }

    /// This replica's changes (reserved or admitted) not yet known to be written, and
    /// its writes (settlements included) still to make: 0 once everything landed.
    pub fn pending(&self) -> usize {
        self.shared
            .keys()
            .values()
            .map(|k| k.unwritten.len() + k.queue.len() + usize::from(k.writing))
            .sum()
    }

    /// Deletes the records whose every entry has left the window. Returns how many
    /// were deleted.
    pub async fn collect_expired(&self) -> usize {
        self.shared.collect_expired(SystemTime::now()).await
    }

    /// Writes one record as a server-side dry run (validated and admitted, never
    /// stored), so the replica's first write is paid before it reports ready instead
    /// of by the first decision: the client's connection opens, and an API server
    /// whose ChangeSet CRD was just established holds its first write of the type for
    /// about 2 s (measured on the e2e control plane; reads are not held), which is
    /// what a reservation may wait ([`RESERVE_WAIT_BUSY`]). A failure changes nothing:
    /// decisions still wait for their own writes.
    pub async fn warm_up(&self) {
        let probe = record::new_record(&self.shared.namespace, PROBE, ChangeSetSpec::default());
        if let Err(e) = timed(self.shared.records.create_dry_run(&probe)).await {
            tracing::debug!(error = %e, "change-set warm-up write (dry run) failed");
        }
        self.shared.warm.store(true, Ordering::Release);
    }

    /// Whether [`ClusterChangeSets::warm_up`] has run.
    pub fn is_warm(&self) -> bool {
        self.shared.warm.load(Ordering::Acquire)
    }

    /// How often [`ClusterChangeSets::collect_expired`] should run: a quarter of the
    /// window, between 1 s and 1 min (records a dead replica left with holds only go
    /// within a minute of their lapse).
    pub fn collect_interval(&self) -> Duration {
        let window = Duration::from_secs(self.shared.window_secs.load(Ordering::Relaxed));
        (window / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.replica)
    }

    fn note_window(&self, window: Duration) {
        self.shared
            .window_secs
            .fetch_max(window.as_secs().max(1), Ordering::Relaxed);
    }

    /// A dry run's usage of one key: the record read now (the watched copy when the
    /// API server does not answer in time) and this replica's unwritten changes.
    fn read_usage(&self, key: &str, entry: Entry<'_>, window: Duration, now: SystemTime) -> Usage {
        let name = record::record_name(key);
        let shared = self.shared.clone();
        let read_name = name.clone();
        let fetched = self.bridge.call(budget::deadline(), async move {
            shared.records.get(&read_name).await
        });
        match fetched {
            Ok(Ok(Some(record))) => {
                self.shared.metrics.lookup(CACHE, "fetched");
                self.shared.remember(record);
            }
            Ok(Ok(None)) => self.shared.metrics.lookup(CACHE, "absent"),
            Ok(Err(e)) => {
                tracing::warn!(key, error = %e, "cannot read a change-set record");
                if status_code(&e).is_none() {
                    self.bridge.trip();
                }
                self.unavailable(key);
            }
            Err(late) => {
                tracing::warn!(key, error = %late, "cannot read a change-set record");
                self.unavailable(key);
            }
        }
        self.shared.local_usage(key, entry, window, now, u64::MAX)
    }

    fn unavailable(&self, key: &str) {
        self.shared.metrics.lookup(CACHE, "unavailable");
        budget::note_unavailable(format!("change set {key}"));
    }
}

/// Who a queued op is for: the requester hash a new record is labelled with, and the
/// address of the review that asked (whose turn a create takes).
#[derive(Debug, Clone, Copy, Default)]
struct Asker<'a> {
    requester: Option<&'a str>,
    peer: Option<IpAddr>,
}

/// A short id for this process, distinct across replicas and restarts.
fn replica_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:08x}", h.finish() as u32)
}

impl ChangeSets for ClusterChangeSets {
    fn reserve(
        &self,
        keys: &[String],
        entry: Entry<'_>,
        window: Duration,
        now: Instant,
    ) -> Reservation {
        self.note_window(window);
        let at = wall(now);
        let admitted = Admitted {
            namespace: entry.namespace.map(str::to_string),
            pods: entry.pods,
            at,
            id: self.next_id(),
        };
        if entry.dry_run || !admitted.counts() {
            let usage = keys
                .iter()
                .map(|key| self.read_usage(key, entry, window, at))
                .fold(Usage::default(), Usage::max);
            return Reservation::new(usage, None);
        }
        let until = SystemTime::now() + HOLD_LAPSE;
        let requester = keys
            .iter()
            .find_map(|k| k.strip_prefix("user:"))
            .map(requester_hash);
        let asker = Asker {
            requester: requester.as_deref(),
            peer: super::peer::current(),
        };
        let mut waits = Vec::new();
        let mut held = Vec::new();
        let mut overflow = Vec::new();
        let mut capped = None;
        for key in keys {
            let op = Op::Hold(admitted.clone(), until);
            match self.shared.enqueue(key, op, true, window, false, asker) {
                Ok(reply) => {
                    held.push(key.clone());
                    waits.push((key.clone(), reply));
                }
                Err(NotQueued::Capped(cap)) => {
                    // Counted by this replica alone, which binds no other replica: the
                    // engine holds what rests on it (a change within its limits), and
                    // the count still serves warn and audit modes.
                    self.shared.metrics.change_set_capped(cap);
                    tracing::debug!(
                        key,
                        cap,
                        "change-set records at their cap; this change set has no shared record"
                    );
                    let limit = match cap {
                        "requester" => self.shared.caps.per_requester,
                        _ => self.shared.caps.total,
                    };
                    capped.get_or_insert(Capped {
                        key: key.clone(),
                        cap,
                        limit,
                    });
                    overflow.push(self.shared.overflow.reserve(
                        std::slice::from_ref(key),
                        entry,
                        window,
                        now,
                    ));
                }
                Err(NotQueued::Full) => {
                    self.shared.metrics.change_set_write("dropped");
                    tracing::warn!(
                        key,
                        "too many change-set writes waiting for the API server; this change is counted by this replica only"
                    );
                    self.unavailable(key);
                }
            }
        }
        // Every key's writer runs at once; the decision waits for all of them once.
        let replies: Vec<oneshot::Receiver<Answer>> = waits
            .iter_mut()
            .filter_map(|(_, reply)| reply.take())
            .collect();
        let started = self.bridge.start(async move {
            let mut answers = Vec::with_capacity(replies.len());
            for reply in replies {
                answers.push(reply.await.ok());
            }
            answers
        });
        // A late reservation means the writes are busy (a burst queues behind one
        // write), not that the API server is gone: it opens no breaker, or one slow
        // write would make every decision of the next second skip the API server.
        let now_wait = Instant::now();
        let deadline = budget::deadline().max(now_wait + RESERVE_WAIT);
        let longest = deadline.max(now_wait + RESERVE_WAIT_BUSY);
        // Alive: the API server answered this replica lately. An idle replica has
        // heard nothing lately, so it asks (a GET, one at a time): a healthy API server
        // whose write is slow answers that at once; a hung one answers nothing, and
        // the decision stops waiting at `deadline`. (The slow first write after the
        // CRD is established is paid before the replica is ready: `warm_up`.)
        if !self.shared.answered_within(ALIVE_WITHIN / 2) {
            self.shared.probe();
        }
        let alive = || {
            if !self.shared.answered_within(ALIVE_WITHIN / 2) {
                self.shared.probe();
            }
            self.shared.answered_within(ALIVE_WITHIN)
        };
        let answers = match self
            .bridge
            .finish_while_alive(started, deadline, longest, alive)
        {
            Ok(answers) => answers,
            Err(late) => {
                tracing::warn!(error = %late, "change-set reservation not written within the budget; judged on what this replica knows, written in the background");
                self.shared.metrics.change_set_write("deferred");
                vec![None; waits.len()]
            }
        };
        let mut usage = Usage::default();
        for ((key, _), answer) in waits.iter().zip(answers) {
            let counted = match answer {
                Some(Ok(usage)) => usage,
                Some(Err(NotWritten::NoRoom)) | None => {
                    self.unavailable(key);
                    self.shared
                        .local_usage(key, entry_ns(entry), window, at, u64::MAX)
                }
            };
            usage = usage.max(counted);
        }
        for key in keys.iter().filter(|k| !held.contains(k)) {
            // Not even queued: counted from what is known, itself included.
            usage = usage.max(self.shared.local_usage(key, entry, window, at, u64::MAX));
        }
        for reservation in &overflow {
            usage = usage.max(reservation.usage());
        }
        Reservation::new(
            usage,
            Some(Box::new(ClusterHold {
                shared: self.shared.clone(),
                keys: held,
                admitted,
                window,
                overflow,
            })),
        )
        .with_capped(capped)
    }
}

/// The entry of a change already counted as unwritten or held: its namespace, no pods.
fn entry_ns(entry: Entry<'_>) -> Entry<'_> {
    Entry { pods: 0, ..entry }
}

/// A reservation in the records.
struct ClusterHold {
    shared: Arc<Shared>,
    keys: Vec<String>,
    admitted: Admitted,
    window: Duration,
    /// Its share of change sets past a cap, in this replica's memory.
    overflow: Vec<Reservation>,
}

impl ClusterHold {
    /// Confirms or releases in every record; `lazy`: carried by the key's next write.
    fn finish(self, admitted: bool, lazy: bool) {
        for key in &self.keys {
            let op = if admitted {
                Op::Confirm(self.admitted.clone())
            } else {
                Op::Release(self.admitted.id.clone())
            };
            let _ = self
                .shared
                .enqueue(key, op, false, self.window, lazy, Asker::default());
        }
        for reservation in self.overflow {
            if admitted {
                reservation.confirm();
            } else {
                reservation.release();
            }
        }
    }

    /// Looks for the change once, [`CHECK_AFTER`] its admission, and settles it on
    /// what is found (retrying a look the API server did not answer).
    async fn look_and_settle(
        self,
        sighting: Sighting,
        reviewed: SystemTime,
        present: Option<String>,
    ) {
        tokio::time::sleep(CHECK_AFTER).await;
        let Some(looks) = self.shared.looks.as_ref() else {
            return self.finish(true, true);
        };
        let give_up = Instant::now() + (HOLD_LAPSE - CHECK_AFTER - SETTLE_FLUSH * 2);
        let mut wait = Duration::from_millis(250);
        let result = loop {
            match tokio::time::timeout(LOOK_TIMEOUT, looks.look(&sighting)).await {
                Ok(Ok(observed)) => {
                    self.shared.answered();
                    let seen = sighting::seen(
                        &sighting.expect,
                        observed.as_ref(),
                        reviewed,
                        present.as_deref(),
                    );
                    break if seen { "confirmed" } else { "lapsed" };
                }
                // Not allowed to read this kind (the chart grants the workload kinds
                // only): counted, as every change was before it was looked for.
                Ok(Err(e)) if matches!(status_code(&e), Some(401 | 403)) => break "unchecked",
                Ok(Err(e)) if Instant::now() + wait >= give_up => {
                    tracing::warn!(error = %e, "cannot look for an admitted change; counted");
                    break "unchecked";
                }
                Err(_) if Instant::now() + wait >= give_up => break "unchecked",
                _ => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
        };
        self.shared.metrics.change_set_hold(result);
        if result == "lapsed" {
            tracing::info!(
                resource = %sighting.resource,
                namespace = sighting.namespace.as_deref().unwrap_or(""),
                name = %sighting.name,
                "an admitted change never happened in the cluster (a review the API server did not send?): its hold lapses"
            );
        }
        self.finish(result != "lapsed", true);
    }
}

/// Longest one look at an object may take.
const LOOK_TIMEOUT: Duration = Duration::from_secs(2);

impl Hold for ClusterHold {
    fn settle(self: Box<Self>, admitted: bool) {
        (*self).finish(admitted, false);
    }

    fn settle_when_seen(self: Box<Self>, sighting: Sighting) {
        if self.shared.looks.is_none() {
            // Counted at once and written at once, as before changes were looked for
            // (`--count-unseen`): what a test that reads the record next expects.
            return (*self).finish(true, false);
        }
        if sighting.expect == Expect::Unchecked {
            self.shared.metrics.change_set_hold("unchecked");
            return (*self).finish(true, true);
        }
        // When the review arrived, not now: the decision's wait for its reservation
        // (up to [`RESERVE_WAIT_BUSY`] on a busy API server) is no part of how long
        // before the review the change was made.
        let reviewed = self.admitted.at;
        let mut present = None;
        if matches!(sighting.expect, Expect::Deleted { .. }) {
            // The API server deletes only after this answer: the object a real
            // delete names is there now. One that is not was never going to go.
            let shared = self.shared.clone();
            let look = sighting.clone();
            let found = self.shared.bridge.call(budget::deadline(), async move {
                match shared.looks.as_ref() {
                    Some(looks) => tokio::time::timeout(LOOK_TIMEOUT, looks.look(&look))
                        .await
                        .ok()
                        .and_then(Result::ok),
                    None => None,
                }
            });
            match found {
                Ok(Some(None)) => {
                    self.shared.metrics.change_set_hold("lapsed");
                    tracing::info!(resource = %sighting.resource, name = %sighting.name, "an admitted delete of an object that does not exist: its hold lapses");
                    return (*self).finish(false, true);
                }
                Ok(Some(Some(observed))) => present = Some(observed.uid),
                _ => {}
            }
        }
        let handle = self.shared.handle.clone();
        handle.spawn((*self).look_and_settle(sighting, reviewed, present));
    }
}

impl Shared {
    fn keys(&self) -> MutexGuard<'_, HashMap<String, KeyState>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes an answer of the API server (a status code counts: it answered).
    fn answered(&self) {
        // Stored plus one: 0 means never, even for an answer within the first
        // millisecond (a probe of a replica that just started).
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.answered_ms
            .fetch_max(ms.saturating_add(1), Ordering::Relaxed);
    }

    /// Asks the API server for a record that does not exist, unless a probe is in
    /// flight: any answer (404 included) counts as [`Shared::answered`]. Cheap, and
    /// only made while nothing else answers this replica.
    fn probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        self.handle.spawn(async move {
            let answer = tokio::time::timeout(PROBE_TIMEOUT, shared.records.get(PROBE)).await;
            if let Ok(result) = answer
                && (result.is_ok() || result.as_ref().err().and_then(status_code).is_some())
            {
                shared.answered();
            }
            shared.probing.store(false, Ordering::Release);
        });
    }

    /// Whether the API server answered within `within`.
    fn answered_within(&self, within: Duration) -> bool {
        match self.answered_ms.load(Ordering::Relaxed) {
            0 => false,
            stored => {
                let last = Duration::from_millis(stored - 1);
                self.started.elapsed().saturating_sub(last) <= within
            }
        }
    }

    fn remember(&self, record: ChangeSet) {
        if let Some(name) = record.metadata.name.clone() {
            let version = version_number(record.metadata.resource_version.as_deref());
            self.cache.upsert(name, version, record);
        }
    }

    /// What `key` has used as this replica knows it: the watched (or last written)
    /// record and this replica's changes not in it, those queued before `before` only.
    fn local_usage(
        &self,
        key: &str,
        entry: Entry<'_>,
        window: Duration,
        now: SystemTime,
        before: u64,
    ) -> Usage {
        let name = record::record_name(key);
        let keys = self.keys();
        let record = self.cache.get(&name).map(|(_, r)| r);
        let unwritten: Vec<Admitted> = keys
            .get(key)
            .map(|k| {
                k.unwritten
                    .iter()
                    .filter(|u| u.seq < before && u.until.is_none_or(|t| t >= now))
                    .map(|u| u.admitted.clone())
                    .collect()
            })
            .unwrap_or_default();
        drop(keys);
        record::usage(
            record.as_ref().map(|r| &r.spec),
            &unwritten,
            entry,
            window,
            now,
        )
    }

    /// Queues `op` for `key`'s record and makes sure a writer runs. With `reply`, the
    /// receiver of the reservation's usage. `None` when too much waits already.
    /// `lazy`: no writer is started for it; the key's next write carries it, or one
    /// starts after [`SETTLE_FLUSH`]. `asker`: the requester hash a new record is
    /// labelled with (and counted against [`Caps::per_requester`]), and the address
    /// whose turn its create takes.
    fn enqueue(
        self: &Arc<Self>,
        key: &str,
        op: Op,
        reply: bool,
        window: Duration,
        lazy: bool,
        asker: Asker<'_>,
    ) -> Result<Option<oneshot::Receiver<Answer>>, NotQueued> {
        let mut keys = self.keys();
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let total: usize = keys.values().map(|k| k.unwritten.len()).sum();
        if matches!(op, Op::Hold(..)) && !keys.contains_key(key) {
            self.room_for(&keys, key, asker.requester)?;
        }
        let state = keys.entry(key.to_string()).or_default();
        if state.requester.is_none() {
            state.requester = asker.requester.map(str::to_string);
        }
        if let Some(peer) = asker.peer
            && !state.peers.contains(&peer)
        {
            if state.peers.len() == MAX_PEERS {
                state.peers.remove(0);
            }
            state.peers.push(peer);
            state.asked.notify_one();
        }
        if state.name.is_empty() {
            state.name = record::record_name(key);
        }
        match &op {
            Op::Hold(a, until) => {
                if total >= MAX_PENDING {
                    return Err(NotQueued::Full);
                }
                state.unwritten.push(Unwritten {
                    admitted: a.clone(),
                    until: Some(*until),
                    seq,
                });
            }
            Op::Confirm(a) => match state.unwritten.iter_mut().find(|u| u.admitted.id == a.id) {
                Some(u) => {
                    u.until = None;
                    u.seq = seq;
                }
                None => state.unwritten.push(Unwritten {
                    admitted: a.clone(),
                    until: None,
                    seq,
                }),
            },
            Op::Release(id) => state.unwritten.retain(|u| &u.admitted.id != id),
        }
        let (tx, rx) = if reply {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        state.queue.push(Queued { op, seq, reply: tx });
        if state.writing {
            // The running writer takes it with its next write.
        } else if lazy {
            if !state.flushing {
                state.flushing = true;
                let shared = self.clone();
                let key = key.to_string();
                self.handle.spawn(async move {
                    tokio::time::sleep(SETTLE_FLUSH).await;
                    shared.flush(&key, window);
                });
            }
        } else {
            state.writing = true;
            let shared = self.clone();
            let key = key.to_string();
            self.handle
                .spawn(async move { shared.writer(key, window).await });
        }
        Ok(rx)
    }

    /// Starts a writer for what waited lazily, unless one ran meanwhile.
    fn flush(self: &Arc<Self>, key: &str, window: Duration) {
        let mut keys = self.keys();
        let Some(state) = keys.get_mut(key) else {
            return;
        };
        state.flushing = false;
        if !state.writing && !state.queue.is_empty() {
            state.writing = true;
            let shared = self.clone();
            let key = key.to_string();
            self.handle
                .spawn(async move { shared.writer(key, window).await });
        }
    }

    /// Whether a record for `key`, which this replica has no state for, may be made:
    /// one that exists may always be written; a new one only under the caps.
    fn room_for(
        &self,
        keys: &HashMap<String, KeyState>,
        key: &str,
        requester: Option<&str>,
    ) -> Result<(), NotQueued> {
        let name = record::record_name(key);
        if self.cache.read(&name, |_| ()).is_some() {
            return Ok(());
        }
        // Records this replica is making: keys it writes whose record is not known
        // yet. One already in the cache counts once, there: counted twice, a busy
        // replica would find a cap long before it is reached (and that is a denial).
        let unknown = |k: &&KeyState| self.cache.read(&k.name, |_| ()).is_none();
        let records = self.cache.len();
        if records.saturating_add(keys.len()) >= self.caps.total
            && records.saturating_add(keys.values().filter(unknown).count()) >= self.caps.total
        {
            return Err(NotQueued::Capped("total"));
        }
        if let Some(requester) = requester {
            let made = self.cache.count_where(|r| {
                r.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(REQUESTER_LABEL))
                    .is_some_and(|h| h == requester)
            });
            let making = keys
                .values()
                .filter(|k| k.requester.as_deref() == Some(requester))
                .filter(unknown)
                .count();
            if made.saturating_add(making) >= self.caps.per_requester {
                return Err(NotQueued::Capped("requester"));
            }
        }
        Ok(())
    }

    /// Writes `key`'s queued ops, all that waited in one write each round, until none
    /// waits.
    async fn writer(self: Arc<Self>, key: String, window: Duration) {
        let name = record::record_name(&key);
        let mut backoff = BACKOFF_FIRST;
        let mut late = false;
        let mut batch: Vec<Queued> = Vec::new();
        let mut turn = None;
        loop {
            {
                let mut keys = self.keys();
                let state = keys.entry(key.clone()).or_default();
                batch.append(&mut state.queue);
                let now = SystemTime::now();
                // A reservation past its lapse, or an admitted change past the window, no
                // longer matters to anyone; a reservation whose decision gave up waiting
                // is still written (the decision settles it).
                let moot = |op: &Op| match op {
                    Op::Hold(_, until) => *until < now,
                    Op::Confirm(a) => now.duration_since(a.at).unwrap_or_default() > window,
                    Op::Release(_) => false,
                };
                let dropped: Vec<(String, u64)> = batch
                    .iter()
                    .filter(|q| moot(&q.op))
                    .filter_map(|q| match &q.op {
                        Op::Hold(a, _) | Op::Confirm(a) => Some((a.id.clone(), q.seq)),
                        Op::Release(_) => None,
                    })
                    .collect();
                batch.retain(|q| !moot(&q.op));
                state.unwritten.retain(|u| {
                    !dropped
                        .iter()
                        .any(|(id, seq)| *id == u.admitted.id && u.seq <= *seq)
                });
                if batch.is_empty() {
                    state.writing = false;
                    state.unwritten.retain(|u| u.until.is_none_or(|t| t >= now));
                    if state.unwritten.is_empty() && state.queue.is_empty() {
                        keys.remove(&key);
                    }
                    return;
                }
            }
            // A new record waits for a turn ([`peers`]), then takes what was queued
            // meanwhile; a write to one that exists is one per key at a time already.
            if turn.is_none() && self.cache.read(&name, |_| ()).is_none() {
                turn = self.turn_to_create(&key).await;
                if turn.is_some() {
                    continue;
                }
            }
            let result = self.attempt(&key, &name, &batch, window).await;
            drop(turn.take());
            match result {
                Ok((written, no_room)) => {
                    backoff = BACKOFF_FIRST;
                    let result = if late { "written_late" } else { "written" };
                    self.metrics.change_set_write(result);
                    late = false;
                    self.written(&key, written, std::mem::take(&mut batch), &no_room, window);
                }
                Err(Retry::Now) => {}
                Err(Retry::Later(e)) => {
                    if status_code(&e).is_none() {
                        // No answer at all (a connection refused, a timeout): the API
                        // server may be gone, and decisions need not wait for it.
                        self.bridge.trip();
                    }
                    tracing::warn!(key, error = %e, "cannot write a change-set record; retrying");
                    late = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// The first turn free among the addresses of `key`'s reviews, those that join
    /// while it waits included; `None` when no review had an address.
    async fn turn_to_create(&self, key: &str) -> Option<peers::Turn<'_>> {
        loop {
            let (peers, asked) = {
                let keys = self.keys();
                let state = keys.get(key)?;
                (state.peers.clone(), state.asked.clone())
            };
            tokio::select! {
                turn = self.creates.turn_of_any(&peers) => return turn,
                () = asked.notified() => {}
            }
        }
    }

    /// After a write: the record into the cache and the ops out of `unwritten` (under
    /// one lock), then each reservation's usage to its decision: the record as written
    /// less the reservations queued after it.
    fn written(
        &self,
        key: &str,
        record: Option<ChangeSet>,
        batch: Vec<Queued>,
        no_room: &[String],
        window: Duration,
    ) {
        let last = batch.iter().map(|q| q.seq).max().unwrap_or(0);
        let spec = record.as_ref().map(|r| r.spec.clone()).unwrap_or_default();
        {
            let mut keys = self.keys();
            // `None`: the record was left empty and deleted (or never made).
            if let Some(record) = record {
                self.remember(record);
            }
            if let Some(state) = keys.get_mut(key) {
                state.unwritten.retain(|u| {
                    u.seq > last || (u.until.is_some() && no_room.contains(&u.admitted.id))
                });
            }
        }
        let now = SystemTime::now();
        let holds: Vec<&str> = batch
            .iter()
            .filter_map(|q| match &q.op {
                Op::Hold(a, _) => Some(a.id.as_str()),
                _ => None,
            })
            .collect();
        let mut answers = Vec::new();
        for queued in &batch {
            let (Op::Hold(admitted, _), Some(_)) = (&queued.op, &queued.reply) else {
                continue;
            };
            let answer = if no_room.contains(&admitted.id) {
                Err(NotWritten::NoRoom)
            } else {
                // What was written before it, itself included: the reservations
                // after it in this batch are not.
                let position = holds.iter().position(|id| *id == admitted.id);
                let later = position.map_or(&[][..], |p| &holds[p + 1..]);
                let mut seen = spec.clone();
                seen.held.retain(|h| !later.contains(&h.id.as_str()));
                let unwritten = self.unwritten_before(key, queued.seq, now);
                let entry = Entry {
                    namespace: admitted.namespace.as_deref(),
                    pods: 0,
                    dry_run: false,
                };
                Ok(record::usage(Some(&seen), &unwritten, entry, window, now))
            };
            answers.push((queued.seq, answer));
        }
        for mut queued in batch {
            if let Some(reply) = queued.reply.take()
                && let Some((_, answer)) = answers.iter().find(|(seq, _)| *seq == queued.seq)
            {
                // The decision may have stopped waiting.
                let _ = reply.send(*answer);
            }
        }
    }

    /// This replica's unwritten changes queued before `seq`, still counting.
    fn unwritten_before(&self, key: &str, seq: u64, now: SystemTime) -> Vec<Admitted> {
        let keys = self.keys();
        keys.get(key)
            .map(|k| {
                k.unwritten
                    .iter()
                    .filter(|u| u.seq < seq && u.until.is_none_or(|t| t >= now))
                    .map(|u| u.admitted.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One read-modify-write of the record with the batch applied: the record as
    /// written and the reservations that found no room.
    async fn attempt(
        &self,
        key: &str,
        name: &str,
        batch: &[Queued],
        window: Duration,
    ) -> Result<(Option<ChangeSet>, Vec<String>), Retry> {
        let base = self.cache.get(name).map(|(_, r)| r);
        let now = SystemTime::now();
        let ops: Vec<Op> = batch.iter().map(|q| q.op.clone()).collect();
        let (spec, no_room) =
            record::with_ops(base.as_ref().map(|r| &r.spec), key, &ops, window, now);
        let empty = spec.namespaces.is_empty() && spec.pods.is_empty() && spec.held.is_empty();
        let result = match base {
            // Its only entries were holds, now released (a change never seen), or have
            // left the window: the record goes with them.
            Some(record) if empty => {
                let version = record.metadata.resource_version.clone().unwrap_or_default();
                match timed(self.records.delete(name, &version)).await {
                    Ok(()) => {
                        self.cache.remove(name, version_number(Some(&version)));
                        return Ok((None, no_room));
                    }
                    Err(e) if status_code(&e) == Some(404) => {
                        self.cache.remove(name, 0);
                        return Ok((None, no_room));
                    }
                    Err(e) => Err(e),
                }
            }
            None if empty => return Ok((None, no_room)),
            Some(mut record) => {
                record.spec = spec;
                timed(self.records.replace(&record)).await
            }
            None => {
                let mut record = record::new_record(&self.namespace, key, spec);
                let requester = self.keys().get(key).and_then(|k| k.requester.clone());
                if let Some(requester) = requester {
                    record
                        .metadata
                        .labels
                        .get_or_insert_default()
                        .insert(REQUESTER_LABEL.to_string(), requester);
                }
                timed(self.records.create(&record)).await
            }
        };
        if result.is_ok() || result.as_ref().err().and_then(status_code).is_some() {
            self.answered();
        }
        match result {
            Ok(written) => Ok((Some(written), no_room)),
            // Someone wrote it since it was read (a conflict on replace, already there
            // on create): read it again and retry at once.
            Err(e) if status_code(&e) == Some(409) => {
                self.metrics.change_set_write("conflict");
                self.refresh(name).await.map_err(Retry::Later)?;
                Err(Retry::Now)
            }
            // Deleted by the collector since it was read: create it anew.
            Err(e) if status_code(&e) == Some(404) && self.cache.get(name).is_some() => {
                self.cache.remove(name, 0);
                Err(Retry::Now)
            }
            Err(e) => {
                // An unclear failure (a timeout, a reset connection) may still have
                // written: read again. Applying the same ops again is harmless: each
                // carries its id.
                let _ = self.refresh(name).await;
                Err(Retry::Later(e))
            }
        }
    }

    async fn refresh(&self, name: &str) -> Result<(), kube::Error> {
        match timed(self.records.get(name)).await? {
            Some(record) => self.remember(record),
            None => self.cache.remove(name, 0),
        }
        Ok(())
    }

    async fn collect_expired(&self, now: SystemTime) -> usize {
        let window = Duration::from_secs(self.window_secs.load(Ordering::Relaxed));
        let mut deleted = 0;
        for (name, _, record) in self.cache.entries() {
            if !record::expired(&record.spec, window, now) {
                continue;
            }
            let Some(version) = record.metadata.resource_version.clone() else {
                continue;
            };
            match timed(self.records.delete(&name, &version)).await {
                Ok(()) => {
                    self.cache.remove(&name, version_number(Some(&version)));
                    deleted += 1;
                }
                // Written again since (409), or deleted by another replica (404).
                Err(e) if matches!(status_code(&e), Some(404 | 409)) => {}
                Err(e) => {
                    tracing::warn!(record = name, error = %e, "cannot delete an expired change-set record");
                }
            }
        }
        deleted
    }
}

/// What to do after a failed attempt.
enum Retry {
    /// Retry at once (the record was read again).
    Now,
    /// Back off first.
    Later(kube::Error),
}

async fn timed<T>(call: Pending<'_, T>) -> Result<T, kube::Error> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(
            format!(
                "no answer within {}",
                humantime::format_duration(ATTEMPT_TIMEOUT)
            )
            .into(),
        )),
    }
}

#[cfg(test)]
mod tests;
