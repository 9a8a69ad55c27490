//! The change-set logic against a store fed directly: an in-memory API that keeps
//! resourceVersions and answers conflicts as the API server does, shared by several
//! [`ClusterChangeSets`] replicas.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use super::record::{self, ChangeSet};
use super::*;
use crate::cluster::{bridge, cache};

const HOUR: Duration = Duration::from_secs(3600);

/// How long a write takes with [`FakeApi::slow_writes`] (the real control plane's first
/// create of a ChangeSet took 950 ms).
const SLOW_WRITE: Duration = Duration::from_secs(1);

/// The API server's side: objects, resourceVersions, a switch to make it slow.
#[derive(Default)]
struct FakeApi {
    objects: Mutex<HashMap<String, ChangeSet>>,
    version: AtomicU64,
    slow: AtomicBool,
    /// Writes take [`SLOW_WRITE`], reads answer at once: a healthy API server's first
    /// create of a record type after it started.
    slow_writes: AtomicBool,
    writes: AtomicU64,
    conflicts: AtomicU64,
    /// Creates being answered now, and the most there were at once.
    creating: AtomicU64,
    most_creating: AtomicU64,
}

fn api_error(code: u16, reason: &str) -> kube::Error {
    kube::Error::Api(Box::new(
        kube::core::Status::failure(reason, reason).with_code(code),
    ))
}

impl FakeApi {
    async fn pause(&self) {
        if self.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn pause_write(&self) {
        self.pause().await;
        if self.slow_writes.load(Ordering::SeqCst) {
            tokio::time::sleep(SLOW_WRITE).await;
        }
    }

    fn bump(&self, record: &mut ChangeSet) {
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        record.metadata.resource_version = Some(v.to_string());
    }

    fn stored(&self, key: &str) -> Option<ChangeSet> {
        let objects = self.objects.lock().unwrap();
        objects.get(&record::record_name(key)).cloned()
    }
}

struct Shared(Arc<FakeApi>);

impl Records for Shared {
    fn get(&self, name: &str) -> Pending<'_, Option<ChangeSet>> {
        let name = name.to_string();
        Box::pin(async move {
            self.0.pause().await;
            Ok(self.0.objects.lock().unwrap().get(&name).cloned())
        })
    }

    fn create(&self, record: &ChangeSet) -> Pending<'_, ChangeSet> {
        let mut record = record.clone();
        Box::pin(async move {
            let now = self.0.creating.fetch_add(1, Ordering::SeqCst) + 1;
            self.0.most_creating.fetch_max(now, Ordering::SeqCst);
            self.0.pause_write().await;
            self.0.creating.fetch_sub(1, Ordering::SeqCst);
            let name = record.metadata.name.clone().unwrap();
            let mut objects = self.0.objects.lock().unwrap();
            if objects.contains_key(&name) {
                self.0.conflicts.fetch_add(1, Ordering::SeqCst);
                return Err(api_error(409, "AlreadyExists"));
            }
            self.0.bump(&mut record);
            self.0.writes.fetch_add(1, Ordering::SeqCst);
            objects.insert(name, record.clone());
            Ok(record)
        })
    }

    fn create_dry_run(&self, _record: &ChangeSet) -> Pending<'_, ()> {
        Box::pin(async move {
            self.0.pause_write().await;
            Ok(())
        })
    }

    fn replace(&self, record: &ChangeSet) -> Pending<'_, ChangeSet> {
        let mut record = record.clone();
        Box::pin(async move {
            self.0.pause_write().await;
            let name = record.metadata.name.clone().unwrap();
            let mut objects = self.0.objects.lock().unwrap();
            let Some(current) = objects.get(&name) else {
                return Err(api_error(404, "NotFound"));
            };
            if current.metadata.resource_version != record.metadata.resource_version {
                self.0.conflicts.fetch_add(1, Ordering::SeqCst);
                return Err(api_error(409, "Conflict"));
            }
            self.0.bump(&mut record);
            self.0.writes.fetch_add(1, Ordering::SeqCst);
            objects.insert(name, record.clone());
            Ok(record)
        })
    }

    fn delete(&self, name: &str, resource_version: &str) -> Pending<'_, ()> {
        let (name, rv) = (name.to_string(), resource_version.to_string());
        Box::pin(async move {
            self.0.pause_write().await;
            let mut objects = self.0.objects.lock().unwrap();
            match objects.get(&name) {
                None => Err(api_error(404, "NotFound")),
                Some(o) if o.metadata.resource_version.as_deref() != Some(&rv) => {
                    Err(api_error(409, "Conflict"))
                }
                Some(_) => {
                    objects.remove(&name);
                    Ok(())
                }
            }
        })
    }
}

struct Cluster {
    rt: tokio::runtime::Runtime,
    api: Arc<FakeApi>,
}

impl Cluster {
    fn new() -> Self {
        Self {
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap(),
            api: Arc::new(FakeApi::default()),
        }
    }

    /// A replica with an empty cache: a new process.
    fn replica(&self) -> ClusterChangeSets {
        self.replica_with_window(HOUR)
    }

    fn replica_with_window(&self, window: Duration) -> ClusterChangeSets {
        ClusterChangeSets::new(
            Box::new(Shared(self.api.clone())),
            "blastguard".into(),
            Arc::new(Cache::default()),
            Arc::new(Bridge::new(self.rt.handle().clone())),
            window,
            ClusterMetrics::default(),
        )
    }
}

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

/// What a dry run of `entry` would count: read, nothing written.
fn usage_with(
    r: &ClusterChangeSets,
    key: &str,
    entry: Entry<'_>,
    window: Duration,
    now: Instant,
) -> Usage {
    let dry = Entry {
        dry_run: true,
        ..entry
    };
    r.reserve(&keys(key), dry, window, now).usage()
}

/// Waits until the replica's writes (confirms included) have landed.
fn settled(r: &ClusterChangeSets) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.pending() > 0 {
        assert!(Instant::now() < deadline, "writes still pending");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the engine does for one admitted change: reserve, then confirm.
fn admit(r: &ClusterChangeSets, key: &str, entry: Entry<'_>, now: Instant) -> Usage {
    admit_within(r, key, entry, HOUR, now)
}

fn admit_within(
    r: &ClusterChangeSets,
    key: &str,
    entry: Entry<'_>,
    window: Duration,
    now: Instant,
) -> Usage {
    let usage = {
        let _scope = budget::Scope::begin();
        let reservation = r.reserve(&keys(key), entry, window, now);
        let usage = reservation.usage();
        reservation.confirm();
        usage
    };
    settled(r);
    usage
}

/// A short window, and a time before it (monotonic clocks start at boot, so hours
/// ago may not exist).
const SHORT: Duration = Duration::from_secs(2);

fn before_the_window() -> Instant {
    Instant::now()
        .checked_sub(Duration::from_secs(5))
        .expect("the clock has run for five seconds")
}

#[test]
fn two_replicas_alternating_count_the_same_set() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.replica(), cluster.replica());
    let now = Instant::now();
    let namespaces = ["ns-1", "ns-2", "ns-3", "ns-4", "ns-5", "ns-6"];
    let mut seen = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let replica = if i % 2 == 0 { &a } else { &b };
        seen.push(admit(replica, "user:bot", at(ns, 10), now));
    }
    let namespace_counts: Vec<u64> = seen.iter().map(|u| u.namespaces).collect();
    let pod_counts: Vec<u64> = seen.iter().map(|u| u.pods).collect();
    assert_eq!(namespace_counts, [1, 2, 3, 4, 5, 6]);
    assert_eq!(pod_counts, [10, 20, 30, 40, 50, 60]);
    let record = cluster.api.stored("user:bot").unwrap();
    assert_eq!(record.spec.namespace_count, 6);
    assert_eq!(record.spec.pod_count, 60);
    assert_eq!(a.pending() + b.pending(), 0, "every write made it");
}

#[test]
fn a_replica_that_just_started_counts_what_others_recorded() {
    let cluster = Cluster::new();
    let a = cluster.replica();
    let now = Instant::now();
    admit(&a, "change-id:CHG-1", at("x", 4), now);
    admit(&a, "change-id:CHG-1", at("y", 4), now);
    let restarted = cluster.replica();
    let _scope = budget::Scope::begin();
    assert_eq!(
        usage_with(&restarted, "change-id:CHG-1", at("z", 1), HOUR, now),
        Usage {
            namespaces: 3,
            pods: 9
        }
    );
}

#[test]
fn conflicting_writers_lose_nothing() {
    let cluster = Cluster::new();
    let replicas: Vec<_> = (0..4).map(|_| cluster.replica()).collect();
    let now = Instant::now();
    // Every replica reads the record first (so each holds the same resourceVersion),
    // then all write at once: all but one conflict, read again and retry.
    for r in &replicas {
        let _scope = budget::Scope::begin();
        usage_with(r, "user:bot", at("a", 0), HOUR, now);
    }
    std::thread::scope(|s| {
        for (i, r) in replicas.iter().enumerate() {
            s.spawn(move || {
                for j in 0..5 {
                    let _scope = budget::Scope::begin();
                    let ns = format!("ns-{i}-{j}");
                    r.reserve(&keys("user:bot"), at(&ns, 1), HOUR, now)
                        .confirm();
                }
            });
        }
    });
    // Background retries finish.
    let deadline = Instant::now() + Duration::from_secs(10);
    while replicas
        .iter()
        .map(ClusterChangeSets::pending)
        .sum::<usize>()
        > 0
    {
        assert!(Instant::now() < deadline, "writes still pending");
        std::thread::sleep(Duration::from_millis(20));
    }
    let record = cluster.api.stored("user:bot").unwrap();
    assert_eq!(record.spec.pod_count, 20, "{record:?}");
    assert_eq!(record.spec.namespace_count, 20);
    assert!(
        cluster.api.conflicts.load(Ordering::SeqCst) > 0,
        "the test made writers conflict"
    );
}

#[test]
fn expired_entries_stop_counting_and_records_are_collected() {
    let cluster = Cluster::new();
    let a = cluster.replica_with_window(SHORT);
    // Admitted, then left to age past the window (a change already past it when
    // reserved is never written).
    admit_within(&a, "user:old", at("x", 4), SHORT, Instant::now());
    std::thread::sleep(SHORT + Duration::from_millis(500));
    let now = Instant::now();
    admit_within(&a, "user:new", at("y", 2), SHORT, now);
    let _scope = budget::Scope::begin();
    assert_eq!(
        usage_with(&a, "user:old", at("z", 0), SHORT, now),
        Usage {
            namespaces: 1,
            pods: 0
        },
        "a record past its window counts nothing"
    );
    assert_eq!(usage_with(&a, "user:new", at("z", 0), SHORT, now).pods, 2);
    let deleted = cluster.rt.block_on(a.collect_expired());
    assert_eq!(deleted, 1);
    assert!(cluster.api.stored("user:old").is_none());
    assert!(cluster.api.stored("user:new").is_some());
    assert_eq!(cluster.rt.block_on(a.collect_expired()), 0);
}

#[test]
fn a_record_written_since_is_not_collected() {
    let cluster = Cluster::new();
    let (a, b) = (
        cluster.replica_with_window(SHORT),
        cluster.replica_with_window(SHORT),
    );
    admit_within(&a, "user:bot", at("x", 4), SHORT, before_the_window());
    // B writes a fresh change; A's copy is the expired one.
    admit_within(&b, "user:bot", at("y", 1), SHORT, Instant::now());
    assert_eq!(cluster.rt.block_on(a.collect_expired()), 0);
    assert_eq!(cluster.api.stored("user:bot").unwrap().spec.pod_count, 1);
}

#[test]
fn a_slow_api_server_costs_one_budget_and_the_change_is_written_later() {
    let cluster = Cluster::new();
    let a = cluster.replica();
    let now = Instant::now();
    admit(&a, "user:bot", at("x", 5), now);
    cluster.api.slow.store(true, Ordering::SeqCst);

    let scope = budget::Scope::begin();
    let started = Instant::now();
    let reservation = a.reserve(&keys("user:bot"), at("y", 3), HOUR, now);
    let usage = reservation.usage();
    reservation.confirm();
    let waited = started.elapsed();
    assert!(
        waited < budget::per_decision().max(RESERVE_WAIT) + Duration::from_millis(150),
        "waited {waited:?}"
    );
    assert_eq!(
        usage,
        Usage {
            namespaces: 2,
            pods: 8
        },
        "the watched copy (here: the last write's answer) still counts"
    );
    assert_eq!(scope.unavailable().as_deref(), Some("change set user:bot"));
    drop(scope);
    assert!(a.pending() >= 1, "the change waits to be written");
    // Counted by this replica while it waits to be written.
    let _scope = budget::Scope::begin();
    cluster.api.slow.store(false, Ordering::SeqCst);
    std::thread::sleep(bridge::BREAKER_OPEN);
    assert_eq!(usage_with(&a, "user:bot", at("z", 0), HOUR, now).pods, 8);
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.pending() > 0 {
        assert!(
            Instant::now() < deadline,
            "the deferred write never happened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cluster.api.stored("user:bot").unwrap().spec.pod_count, 8);
}

/// The first decisions of an idle replica were denied `cluster_unavailable` while the
/// API server was healthy (the bench's warm-up, issue 19): a fresh API server's first
/// create of a ChangeSet took 950 ms, and a replica that had heard nothing lately
/// waited 400 ms. Now it asks the API server (a GET) and, answered, waits for the write.
#[test]
fn an_idle_replica_waits_for_a_slow_write_of_a_healthy_api_server() {
    let cluster = Cluster::new();
    let a = cluster.replica();
    cluster.api.slow_writes.store(true, Ordering::SeqCst);
    let scope = budget::Scope::begin();
    let started = Instant::now();
    let reservation = a.reserve(&keys("user:bot"), at("x", 3), HOUR, Instant::now());
    let waited = started.elapsed();
    assert_eq!(scope.unavailable(), None, "waited {waited:?}");
    assert_eq!(reservation.usage().pods, 3);
    assert!(
        waited >= SLOW_WRITE && waited < RESERVE_WAIT_BUSY,
        "waited {waited:?}"
    );
    reservation.release();
    drop(scope);

    // A hung API server answers no probe either: one wait, then what is known.
    cluster.api.slow.store(true, Ordering::SeqCst);
    std::thread::sleep(ALIVE_WITHIN);
    let scope = budget::Scope::begin();
    let started = Instant::now();
    let reservation = a.reserve(&keys("user:other"), at("x", 3), HOUR, Instant::now());
    let waited = started.elapsed();
    assert_eq!(
        scope.unavailable().as_deref(),
        Some("change set user:other")
    );
    assert!(
        waited < RESERVE_WAIT + Duration::from_millis(150),
        "waited {waited:?}"
    );
    reservation.release();
}

#[test]
fn a_change_that_touches_nothing_writes_nothing() {
    let cluster = Cluster::new();
    let a = cluster.replica();
    let cluster_scoped = Entry {
        namespace: None,
        pods: 0,
        dry_run: false,
    };
    admit(&a, "user:bot", cluster_scoped, Instant::now());
    assert_eq!(cluster.api.writes.load(Ordering::SeqCst), 0);
}

#[test]
fn the_watch_updates_what_a_replica_knows() {
    let cluster = Cluster::new();
    let (a, b) = (cluster.replica(), cluster.replica());
    admit(&a, "user:bot", at("x", 5), Instant::now());
    let record = cluster.api.stored("user:bot").unwrap();
    let name = record.metadata.name.clone().unwrap();
    let version = cache::version_number(record.metadata.resource_version.as_deref());
    b.apply(Event::Init);
    b.apply(Event::InitApply(name, version, record));
    b.apply(Event::InitDone);
    assert!(b.is_synced());
    // With the API server gone, B answers from the watch.
    cluster.api.slow.store(true, Ordering::SeqCst);
    let _scope = budget::Scope::begin();
    assert_eq!(
        usage_with(&b, "user:bot", at("y", 0), HOUR, Instant::now()),
        Usage {
            namespaces: 2,
            pods: 5
        }
    );
}

/// Issue 19, finding 6: each decision read the record, then wrote, so parallel ones on
/// two replicas each saw room the others were taking. Now each reservation is written
/// before its decision and judged on the record it was written into: 40 decisions of
/// 10 pods each against a 50-pod budget, released together on two replicas, admit
/// five at most, every round; those judged without the record (it could not be
/// written in time) count as denied, as `onClusterUnavailable: deny` makes them.
#[test]
fn parallel_reservations_on_two_replicas_never_pass_the_budget() {
    const LIMIT: u64 = 50;
    for round in 0..10 {
        let cluster = Cluster::new();
        let replicas = [cluster.replica(), cluster.replica()];
        let start = std::sync::Barrier::new(40);
        let admitted: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..40)
                .map(|i| {
                    let (r, start) = (&replicas[i % 2], &start);
                    s.spawn(move || {
                        let keys = vec!["user:agent".to_string(), format!("change-id:c-{i}")];
                        start.wait();
                        let scope = budget::Scope::begin();
                        let reservation = r.reserve(&keys, at("prod", 10), HOUR, Instant::now());
                        let admit =
                            reservation.usage().pods <= LIMIT && scope.unavailable().is_none();
                        if admit {
                            reservation.confirm();
                        } else {
                            reservation.release();
                        }
                        admit
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        replicas.iter().for_each(settled);
        let admitted = admitted.iter().filter(|a| **a).count();
        let record = cluster.api.stored("user:agent").unwrap();
        eprintln!(
            "round {round}: {admitted} admitted, record {} pods",
            record.spec.pod_count
        );
        assert!(admitted <= 5, "round {round}: {admitted} admitted");
        assert_eq!(record.spec.pod_count, admitted as u64 * 10);
        assert!(
            record.spec.held.is_empty(),
            "every reservation settled: {record:?}"
        );
        assert!(admitted >= 1, "round {round}: nothing admitted");
    }
}

/// A burst on one replica goes out in a few writes, not one per decision.
#[test]
fn a_burst_on_one_replica_is_written_in_few_writes() {
    let cluster = Cluster::new();
    let a = cluster.replica();
    let start = std::sync::Barrier::new(20);
    std::thread::scope(|s| {
        for _ in 0..20 {
            let (a, start) = (&a, &start);
            s.spawn(move || {
                start.wait();
                let scope = budget::Scope::begin();
                let reservation =
                    a.reserve(&keys("user:burst"), at("prod", 1), HOUR, Instant::now());
                assert!(scope.unavailable().is_none());
                reservation.confirm();
            });
        }
    });
    settled(&a);
    let writes = cluster.api.writes.load(Ordering::SeqCst);
    let record = cluster.api.stored("user:burst").unwrap();
    assert_eq!(record.spec.pod_count, 20);
    eprintln!("20 reservations and their confirms in {writes} writes");
    assert!(writes < 40, "{writes} writes for 20 decisions");
}

/// A replica that dies while judging leaves a reservation that lapses.
#[test]
fn an_unsettled_reservation_lapses() {
    let cluster = Cluster::new();
    let a = cluster.replica();
    let now = SystemTime::now();
    let held = record::Admitted {
        namespace: Some("x".into()),
        pods: 7,
        at: now,
        id: "dead-1".into(),
    };
    let (spec, _) = record::with_ops(
        None,
        "user:bot",
        &[record::Op::Hold(held, now + Duration::from_millis(300))],
        HOUR,
        now,
    );
    cluster
        .rt
        .block_on(Shared(cluster.api.clone()).create(&record::new_record(
            "blastguard",
            "user:bot",
            spec,
        )))
        .unwrap();
    assert_eq!(
        usage_with(&a, "user:bot", at("x", 0), HOUR, Instant::now()).pods,
        7
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        usage_with(&a, "user:bot", at("x", 0), HOUR, Instant::now()).pods,
        0
    );
}

/// Past a cap on records (issue 19).
mod capped;
/// Creates shared fairly between the addresses reviews come from (issue 19).
mod peers;
/// Held until seen, and the record caps (issue 19).
mod seen;
