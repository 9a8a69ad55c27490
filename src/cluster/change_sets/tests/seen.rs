//! Admitted changes held until the cluster shows them, and the caps on records
//! (issue 19), against the fake API server of the parent module and a fake of the
//! looks at objects.

use super::*;
use crate::change_sets::{Expect, Sighting};
use crate::cluster::sighting::{Looks, Observed};

/// The objects a replica looks at: by name, as the test puts them there.
#[derive(Default)]
struct Objects(Mutex<HashMap<String, Observed>>);

struct Looking(Arc<Objects>);

impl Looks for Looking {
    fn look(&self, sighting: &Sighting) -> Pending<'_, Option<Observed>> {
        let found = self.0.0.lock().unwrap().get(&sighting.name).cloned();
        Box::pin(async move { Ok(found) })
    }
}

fn created(name: &str, uid: &str) -> Sighting {
    Sighting {
        group: "apps".into(),
        version: "v1".into(),
        resource: "deployments".into(),
        namespace: Some("prod".into()),
        name: name.into(),
        expect: Expect::Created { uid: uid.into() },
    }
}

fn looking_replica(cluster: &Cluster, objects: &Arc<Objects>) -> ClusterChangeSets {
    cluster
        .replica()
        .with_looks(Box::new(Looking(objects.clone())))
}

/// Reserves and admits one change the way the engine does, looking for `sighting`.
fn admit_seen(
    r: &ClusterChangeSets,
    keys: &[String],
    entry: Entry<'_>,
    sighting: Sighting,
) -> Usage {
    let _scope = budget::Scope::begin();
    let reservation = r.reserve(keys, entry, HOUR, Instant::now());
    let usage = reservation.usage();
    reservation.confirm_when_seen(sighting);
    usage
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 19, finding 3 without client authentication: forged CREATEs "by" a victim
/// were admitted and spent its budget for the window. Now they count while held and
/// lapse when the object never appears; a change that does appear counts for good.
#[test]
fn a_change_never_seen_lapses_and_its_record_goes_with_it() {
    let cluster = Cluster::new();
    let objects = Arc::new(Objects::default());
    let a = looking_replica(&cluster, &objects);
    let victim = keys("user:victim");
    for i in 0..5 {
        let usage = admit_seen(
            &a,
            &victim,
            at("prod", 10),
            created(&format!("forged-{i}"), &format!("f{i}")),
        );
        assert_eq!(usage.pods, 10 * (i + 1), "a hold counts while it lives");
    }
    assert_eq!(
        cluster.api.stored("user:victim").map(|r| r.spec.held.len()),
        Some(5)
    );
    wait_until("the forged holds lapse and the record is deleted", || {
        cluster.api.stored("user:victim").is_none() && a.pending() == 0
    });
    let _scope = budget::Scope::begin();
    assert_eq!(
        usage_with(&a, "user:victim", at("prod", 1), HOUR, Instant::now()).pods,
        1
    );

    // A real change: the object is there with the uid the review showed.
    objects.0.lock().unwrap().insert(
        "real".into(),
        Observed {
            uid: "r1".into(),
            resource_version: "5".into(),
            created: Some(SystemTime::now()),
            ..Observed::default()
        },
    );
    admit_seen(&a, &victim, at("prod", 3), created("real", "r1"));
    wait_until("the real change is confirmed", || {
        cluster
            .api
            .stored("user:victim")
            .is_some_and(|r| r.spec.held.is_empty() && r.spec.pod_count == 3)
    });
}

/// Issue 19, finding 4: fresh usernames made a record each, without bound. Records
/// stop at the cap; past it change sets are counted in memory and said to be capped.
#[test]
fn a_flood_of_fresh_usernames_stops_at_the_cap() {
    let cluster = Cluster::new();
    let caps = Caps {
        total: 20,
        per_requester: 3,
    };
    let a = cluster.replica().with_caps(caps);
    let _scope = budget::Scope::begin();
    for i in 0..60 {
        let who = vec![format!("user:system:serviceaccount:ai:fresh-{i}")];
        let r = a.reserve(&who, at("prod", 1), HOUR, Instant::now());
        r.confirm();
    }
    settled(&a);
    let records = cluster.api.objects.lock().unwrap().len();
    assert!(
        records <= caps.total,
        "{records} records past a cap of {}",
        caps.total
    );
    // An agent's own set past the cap: counted by the replica, and said to be capped
    // (the engine holds what rests on that count: tests/capped.rs).
    let agent = keys("user:system:serviceaccount:ai:agent");
    for n in 1..=4 {
        let r = a.reserve(&agent, at("prod", 10), HOUR, Instant::now());
        assert_eq!(r.usage().pods, 10 * n, "counted in memory");
        assert_eq!(r.capped().map(|c| c.cap), Some("total"));
        r.confirm();
    }
    // One requester's change-ids: at most `per_requester` records.
    for i in 0..10 {
        let k = vec!["user:solo".to_string(), format!("change-id:c-{i}")];
        a.reserve(&k, at("prod", 1), HOUR, Instant::now()).confirm();
    }
    settled(&a);
    let solo = requester_hash("solo");
    let made = cluster
        .api
        .objects
        .lock()
        .unwrap()
        .values()
        .filter(|r| {
            r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REQUESTER_LABEL))
                == Some(&solo)
        })
        .count();
    assert!(
        made <= caps.per_requester,
        "{made} records for one requester"
    );
}
