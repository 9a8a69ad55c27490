//! Past a cap on records (issue 19): a new change set has no shared record, so its
//! count binds one replica alone; the reservation says so, and the engine holds what
//! rests on it (`verdict::tests::a_change_set_past_the_record_cap_holds_only_what_would_be_admitted`).

use super::*;

/// Feeds `replica` every record the fake API server holds, as its watch's first list.
fn watch_everything(cluster: &Cluster, replica: &ClusterChangeSets) {
    replica.apply(Event::Init);
    for (name, record) in cluster.api.objects.lock().unwrap().iter() {
        let version = cache::version_number(record.metadata.resource_version.as_deref());
        replica.apply(Event::InitApply(name.clone(), version, record.clone()));
    }
    replica.apply(Event::InitDone);
}

/// What the engine admits of a 10-pod change within a 50-pod budget: the usage it is
/// judged on fits, and the count binds every replica.
fn admitted_by_engine(r: &ClusterChangeSets, key: &[String]) -> (bool, Option<Capped>) {
    let _scope = budget::Scope::begin();
    let reservation = r.reserve(key, at("team-a", 10), HOUR, Instant::now());
    let capped = reservation.capped().cloned();
    let admit = reservation.usage().pods <= 50 && capped.is_none();
    if admit {
        reservation.confirm();
    } else {
        reservation.release();
    }
    (admit, capped)
}

/// Before: past the total cap, each replica counted a new set in its own memory, so
/// ten 10-pod changes of one agent over two replicas admitted 100 pods at a 50-pod
/// budget. Now both replicas say the set is capped, and nothing rests on that count;
/// a set whose record exists, and a set with room once the flood's records go, are
/// counted exactly as before.
#[test]
fn past_the_total_cap_a_new_set_is_counted_by_no_replica_alone() {
    let cluster = Cluster::new();
    let caps = Caps {
        total: 4,
        per_requester: 100,
    };
    let (a, b) = (
        cluster.replica().with_caps(caps),
        cluster.replica().with_caps(caps),
    );
    // An agent with a record before the flood, then a flood of fresh usernames.
    let known = keys("user:system:serviceaccount:ai:known");
    assert_eq!(admitted_by_engine(&a, &known), (true, None));
    for i in 0..10 {
        let who = keys(&format!("user:system:serviceaccount:ai:fresh-{i}"));
        let _ = admitted_by_engine(&a, &who);
    }
    settled(&a);
    assert_eq!(cluster.api.objects.lock().unwrap().len(), caps.total);
    watch_everything(&cluster, &a);
    watch_everything(&cluster, &b);

    let agent = keys("user:system:serviceaccount:ai:agent");
    let mut admitted = 0;
    for i in 0..10 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let (admit, capped) = admitted_by_engine(replica, &agent);
        admitted += usize::from(admit);
        assert_eq!(
            capped,
            Some(Capped {
                key: agent[0].clone(),
                cap: "total",
                limit: 4
            }),
            "decision {i}"
        );
    }
    assert_eq!(admitted, 0, "a count of one replica admitted changes");
    assert!(
        cluster.api.stored(&agent[0]).is_none(),
        "no record past the cap"
    );

    // A set whose record exists is never capped: counted exactly, on either replica.
    let mut known_admitted = 1;
    for i in 0..6 {
        let replica = if i % 2 == 0 { &b } else { &a };
        let (admit, capped) = admitted_by_engine(replica, &known);
        assert_eq!(capped, None, "decision {i}");
        known_admitted += usize::from(admit);
        settled(replica);
    }
    assert_eq!(known_admitted, 5, "the known agent's budget, exactly");
}

/// One requester's change-ids fill its own cap: a new change-id of that requester is
/// capped (`requester`), its own user set and other requesters are not.
#[test]
fn past_the_requester_cap_only_that_requesters_new_sets_are_capped() {
    let cluster = Cluster::new();
    let caps = Caps {
        total: 100,
        per_requester: 3,
    };
    let a = cluster.replica().with_caps(caps);
    for i in 0..2 {
        let k = vec!["user:victim".to_string(), format!("change-id:forged-{i}")];
        let (admit, capped) = admitted_by_engine(&a, &k);
        assert!(admit && capped.is_none(), "change-id {i}");
    }
    settled(&a);
    let fresh = vec!["user:victim".to_string(), "change-id:real".to_string()];
    let (admit, capped) = admitted_by_engine(&a, &fresh);
    assert!(!admit);
    assert_eq!(
        capped,
        Some(Capped {
            key: "change-id:real".into(),
            cap: "requester",
            limit: 3
        })
    );
    assert_eq!(admitted_by_engine(&a, &keys("user:victim")), (true, None));
    let other = vec!["user:other".to_string(), "change-id:theirs".to_string()];
    assert_eq!(admitted_by_engine(&a, &other), (true, None));
}
