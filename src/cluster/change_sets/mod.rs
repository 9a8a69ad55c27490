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
//! Expiry: entries past the window no longer count and are dropped by the next write;
//! a record whose entries have all expired is deleted (with a precondition, so one
//! that was just written to survives) by a periodic collection.

pub mod record;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};
use tokio::sync::oneshot;

use super::bridge::Bridge;
use super::cache::{Cache, Event, version_number};
use crate::budget;
use crate::change_sets::{ChangeSets, Entry, Hold, Reservation, Usage};
use crate::cluster::metrics::ClusterMetrics;
use record::{Admitted, ChangeSet, Op};

/// The `cache` label of these metrics.
pub const CACHE: &str = "changesets";

/// Most changes waiting to be written at once; past it new ones are counted here but
/// not written (counted as dropped): memory stays bounded through any outage.
pub const MAX_PENDING: usize = 10_000;

/// How long a reservation counts when it is never settled (its replica died while
/// judging, or the settling write never landed).
pub const HOLD_LAPSE: Duration = Duration::from_secs(30);

/// Least time a decision waits for its reservation, even when less of its budget is
/// left: a burst's reservations go out in one write, which on a busy API server can
/// take longer than the default budget, and a decision that stops waiting is denied
/// (onClusterUnavailable: deny). Well within the webhook's timeout (the chart's 3 s).
pub const RESERVE_WAIT: Duration = Duration::from_millis(400);

/// Time allowed to one request of a write.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Backoff between attempts after a failure.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The boxed futures of [`Records`].
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, kube::Error>> + Send + 'a>>;

/// The API calls on records, behind a trait so the logic can be tested against a
/// store fed directly.
pub trait Records: Send + Sync + 'static {
    /// GET by name; `Ok(None)` when absent.
    fn get(&self, name: &str) -> Pending<'_, Option<ChangeSet>>;
    /// POST; a 409 when it exists.
    fn create(&self, record: &ChangeSet) -> Pending<'_, ChangeSet>;
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
}

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
            }),
            bridge,
            replica: replica_id(),
            ids: AtomicU64::new(0),
        }
    }

    /// Applies a watch event (the watch task calls this).
    pub fn apply(&self, event: Event<ChangeSet>) {
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

    /// Makes one request for a record that does not exist, so the client's first
    /// connection is open before the first decision needs it.
    pub async fn warm_up(&self) {
        let _ = timed(self.shared.records.get("blastguard-warm-up")).await;
    }

    /// How often [`ClusterChangeSets::collect_expired`] should run: a quarter of the
    /// window, between 1 s and 5 min.
    pub fn collect_interval(&self) -> Duration {
        let window = Duration::from_secs(self.shared.window_secs.load(Ordering::Relaxed));
        (window / 4).clamp(Duration::from_secs(1), Duration::from_secs(300))
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
        let mut waits = Vec::new();
        let mut held = Vec::new();
        for key in keys {
            match self
                .shared
                .enqueue(key, Op::Hold(admitted.clone(), until), true, window)
            {
                Some(reply) => {
                    held.push(key.clone());
                    waits.push((key.clone(), reply));
                }
                None => {
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
        let deadline = budget::deadline().max(Instant::now() + RESERVE_WAIT);
        let answers = match self.bridge.finish_without_breaker(started, deadline) {
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
        Reservation::new(
            usage,
            Some(Box::new(ClusterHold {
                shared: self.shared.clone(),
                keys: held,
                admitted,
                window,
            })),
        )
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
}

impl Hold for ClusterHold {
    fn settle(self: Box<Self>, admitted: bool) {
        for key in &self.keys {
            let op = if admitted {
                Op::Confirm(self.admitted.clone())
            } else {
                Op::Release(self.admitted.id.clone())
            };
            let _ = self.shared.enqueue(key, op, false, self.window);
        }
    }
}

impl Shared {
    fn keys(&self) -> MutexGuard<'_, HashMap<String, KeyState>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
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
    fn enqueue(
        self: &Arc<Self>,
        key: &str,
        op: Op,
        reply: bool,
        window: Duration,
    ) -> Option<Option<oneshot::Receiver<Answer>>> {
        let mut keys = self.keys();
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let total: usize = keys.values().map(|k| k.unwritten.len()).sum();
        let state = keys.entry(key.to_string()).or_default();
        match &op {
            Op::Hold(a, until) => {
                if total >= MAX_PENDING {
                    return None;
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
        if !state.writing {
            state.writing = true;
            let shared = self.clone();
            let key = key.to_string();
            self.handle
                .spawn(async move { shared.writer(key, window).await });
        }
        Some(rx)
    }

    /// Writes `key`'s queued ops, all that waited in one write each round, until none
    /// waits.
    async fn writer(self: Arc<Self>, key: String, window: Duration) {
        let name = record::record_name(&key);
        let mut backoff = BACKOFF_FIRST;
        let mut late = false;
        let mut batch: Vec<Queued> = Vec::new();
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
            match self.attempt(&key, &name, &batch, window).await {
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

    /// After a write: the record into the cache and the ops out of `unwritten` (under
    /// one lock), then each reservation's usage to its decision: the record as written
    /// less the reservations queued after it.
    fn written(
        &self,
        key: &str,
        record: ChangeSet,
        batch: Vec<Queued>,
        no_room: &[String],
        window: Duration,
    ) {
        let last = batch.iter().map(|q| q.seq).max().unwrap_or(0);
        let spec = record.spec.clone();
        {
            let mut keys = self.keys();
            self.remember(record);
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
    ) -> Result<(ChangeSet, Vec<String>), Retry> {
        let base = self.cache.get(name).map(|(_, r)| r);
        let now = SystemTime::now();
        let ops: Vec<Op> = batch.iter().map(|q| q.op.clone()).collect();
        let (spec, no_room) =
            record::with_ops(base.as_ref().map(|r| &r.spec), key, &ops, window, now);
        let result = match base {
            Some(mut record) => {
                record.spec = spec;
                timed(self.records.replace(&record)).await
            }
            None => {
                let record = record::new_record(&self.namespace, key, spec);
                timed(self.records.create(&record)).await
            }
        };
        match result {
            Ok(written) => Ok((written, no_room)),
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
