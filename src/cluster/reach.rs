//! Change sets shared by every replica (DESIGN.md section 5): [`ChangeSetReach`] over
//! `ChangeSet` records in the release namespace.
//!
//! Reading: each decision GETs the records of its keys (a quorum read, so a change
//! another replica admitted a moment ago is counted even before this replica's watch
//! delivers it), within the decision's budget; when the API server does not answer
//! in time, the watched copy answers and the decision notes that it could not read.
//!
//! Writing: only admitted, non-dry-run changes are recorded (the engine calls
//! [`ChangeSetReach::record`] for nothing else). A write replaces the record with a
//! resourceVersion precondition and, on a conflict, reads it again and retries, so
//! concurrent writers never lose each other's changes. The change is counted by this
//! replica at once; the write waits within the decision's budget and, when that runs
//! out or the API server fails, goes on in the background with backoff until it
//! succeeds or the change has left the window.
//!
//! Expiry: entries past the window no longer count and are dropped by the next write;
//! a record whose entries have all expired is deleted (with a precondition, so one
//! that was just written to survives) by a periodic collection.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kube::Api;
use kube::api::{DeleteParams, PostParams, Preconditions};

use super::bridge::Bridge;
use super::cache::{Cache, Event, version_number};
use super::changeset::{self, Admitted, ChangeSet};
use super::scope;
use crate::reach::{ChangeSetReach, Entry, Usage};
use crate::server::metrics::ClusterMetrics;

/// The `cache` label of these metrics.
pub const CACHE: &str = "changesets";

/// Most admitted changes waiting to be written at once; past it new ones are counted
/// here but not written (counted as dropped): memory stays bounded through any outage.
pub const MAX_PENDING: usize = 10_000;

/// Time allowed to one request of a background write.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Backoff between background attempts.
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

/// The shared part of [`ClusterReach`]: what the background writes and the collector
/// hold.
struct Shared {
    records: Box<dyn Records>,
    namespace: String,
    cache: Arc<Cache<ChangeSet>>,
    /// Admitted changes not yet known to be written, per key.
    pending: Mutex<HashMap<String, Vec<Admitted>>>,
    /// One write at a time per key, so this replica never conflicts with itself.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The longest window seen in a request: the collector's notion of expiry.
    window_secs: AtomicU64,
    metrics: ClusterMetrics,
}

/// [`ChangeSetReach`] over `ChangeSet` records.
pub struct ClusterReach {
    shared: Arc<Shared>,
    bridge: Arc<Bridge>,
    replica: String,
    sequence: AtomicU64,
}

impl ClusterReach {
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
                pending: Mutex::new(HashMap::new()),
                locks: Mutex::new(HashMap::new()),
                window_secs: AtomicU64::new(window.as_secs().max(1)),
                metrics,
            }),
            bridge,
            replica: replica_id(),
            sequence: AtomicU64::new(0),
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

    /// Admitted changes not yet known to be written.
    pub fn pending(&self) -> usize {
        let pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.values().map(Vec::len).sum()
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

    /// How often [`ClusterReach::collect_expired`] should run: a quarter of the
    /// window, between 1 s and 5 min.
    pub fn collect_interval(&self) -> Duration {
        let window = Duration::from_secs(self.shared.window_secs.load(Ordering::Relaxed));
        (window / 4).clamp(Duration::from_secs(1), Duration::from_secs(300))
    }

    fn next_id(&self) -> String {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.replica)
    }

    fn note_window(&self, window: Duration) {
        self.shared
            .window_secs
            .fetch_max(window.as_secs().max(1), Ordering::Relaxed);
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

impl ChangeSetReach for ClusterReach {
    fn usage_with(&self, key: &str, entry: Entry<'_>, window: Duration, now: Instant) -> Usage {
        self.note_window(window);
        let name = changeset::record_name(key);
        let shared = self.shared.clone();
        let read_name = name.clone();
        let fetched = self.bridge.call(scope::deadline(), async move {
            shared.records.get(&read_name).await
        });
        let record = match fetched {
            Ok(Ok(Some(record))) => {
                self.shared.metrics.lookup(CACHE, "fetched");
                self.shared.remember(record.clone());
                Some(record)
            }
            Ok(Ok(None)) => {
                self.shared.metrics.lookup(CACHE, "absent");
                None
            }
            failed => {
                match failed {
                    Ok(Err(e)) => {
                        tracing::warn!(key, error = %e, "cannot read a change-set record");
                        if status_code(&e).is_none() {
                            self.bridge.trip();
                        }
                    }
                    Err(late) => {
                        tracing::warn!(key, error = %late, "cannot read a change-set record")
                    }
                    Ok(Ok(_)) => {}
                }
                self.shared.metrics.lookup(CACHE, "unavailable");
                scope::note_unavailable(format!("change set {key}"));
                // What the watch last delivered.
                self.shared.cache.get(&name).map(|(_, record)| record)
            }
        };
        let pending = self.shared.pending_of(key);
        changeset::usage(
            record.as_ref().map(|r| &r.spec),
            &pending,
            entry,
            window,
            wall(now),
        )
    }

    fn record(&self, key: &str, entry: Entry<'_>, window: Duration, now: Instant) {
        self.note_window(window);
        let admitted = Admitted {
            namespace: entry.namespace.map(str::to_string),
            pods: entry.pods,
            at: wall(now),
            id: self.next_id(),
        };
        if !admitted.counts() {
            return;
        }
        if !self.shared.add_pending(key, &admitted) {
            self.shared.metrics.change_set_write("dropped");
            tracing::warn!(
                key,
                "too many change-set writes waiting for the API server; this change is counted by this replica only"
            );
            return;
        }
        let shared = self.shared.clone();
        let key_owned = key.to_string();
        let started = self
            .bridge
            .start(async move { shared.write(key_owned, admitted, window).await });
        // Waited for when the decision ends, so the writes of its keys (requester and
        // change-id) go to the API server together; the answer to the API server then
        // leaves once they are written, so the next request, to any replica, counts
        // them.
        let (bridge, metrics, key) = (
            self.bridge.clone(),
            self.shared.metrics.clone(),
            key.to_string(),
        );
        scope::defer(Box::new(move |deadline| {
            match bridge.finish(started, deadline) {
                Ok(true) => metrics.change_set_write("written"),
                Ok(false) => {}
                Err(late) => {
                    metrics.change_set_write("deferred");
                    tracing::warn!(
                        key,
                        error = %late,
                        "change-set record not written within the budget; counted here, written in the background"
                    );
                }
            }
        }));
    }
}

impl Shared {
    fn remember(&self, record: ChangeSet) {
        if let Some(name) = record.metadata.name.clone() {
            let version = version_number(record.metadata.resource_version.as_deref());
            self.cache.upsert(name, version, record);
        }
    }

    fn pending_of(&self, key: &str) -> Vec<Admitted> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.get(key).cloned().unwrap_or_default()
    }

    fn add_pending(&self, key: &str, admitted: &Admitted) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.values().map(Vec::len).sum::<usize>() >= MAX_PENDING {
            return false;
        }
        pending
            .entry(key.to_string())
            .or_default()
            .push(admitted.clone());
        true
    }

    fn done(&self, key: &str, id: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = pending.get_mut(key) {
            list.retain(|a| a.id != id);
            if list.is_empty() {
                pending.remove(key);
            }
        }
    }

    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Locks nobody holds or waits for go, so the map stays as small as the writes
        // in flight.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(key.to_string()).or_default().clone()
    }

    /// Writes one admitted change into its key's record, retrying until it is written
    /// or has left the window. `true` when written (or found already written).
    async fn write(self: Arc<Self>, key: String, admitted: Admitted, window: Duration) -> bool {
        let lock = self.lock_for(&key);
        let _turn = lock.lock().await;
        let name = changeset::record_name(&key);
        let mut backoff = BACKOFF_FIRST;
        let mut first_try = true;
        loop {
            match self.attempt(&key, &name, &admitted, window).await {
                Ok(()) => {
                    self.done(&key, &admitted.id);
                    if !first_try {
                        self.metrics.change_set_write("written_late");
                    }
                    return first_try;
                }
                Err(Retry::Now) => {}
                Err(Retry::Later(e)) => {
                    let age = SystemTime::now()
                        .duration_since(admitted.at)
                        .unwrap_or_default();
                    if age > window {
                        self.done(&key, &admitted.id);
                        self.metrics.change_set_write("dropped");
                        tracing::warn!(
                            key,
                            error = %e,
                            "change-set record never written: the change left the window first"
                        );
                        return false;
                    }
                    first_try = false;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// One read-modify-write of the record.
    async fn attempt(
        &self,
        key: &str,
        name: &str,
        admitted: &Admitted,
        window: Duration,
    ) -> Result<(), Retry> {
        let base = self.cache.get(name).map(|(_, r)| r);
        let now = SystemTime::now();
        if base
            .as_ref()
            .is_some_and(|r| changeset::holds(&r.spec, admitted))
        {
            return Ok(());
        }
        let spec =
            changeset::with_admitted(base.as_ref().map(|r| &r.spec), key, admitted, window, now);
        let result = match base {
            Some(mut record) => {
                record.spec = spec;
                timed(self.records.replace(&record)).await
            }
            None => {
                let record = changeset::new_record(&self.namespace, key, spec);
                timed(self.records.create(&record)).await
            }
        };
        match result {
            Ok(written) => {
                self.remember(written);
                Ok(())
            }
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
                // written: read again, and the id in the record will tell.
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
            if !changeset::expired(&record.spec, window, now) {
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
