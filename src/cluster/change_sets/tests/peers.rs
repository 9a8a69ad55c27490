//! Creates of new records shared fairly between the addresses reviews come from
//! (issue 19, finding 5, as CI met it): a flood of forged reviews with fresh usernames
//! kept one create in flight at the API server per review it sent, and an agent's real
//! create, queued behind them there, outlasted its decision's wait and was denied
//! `cluster_unavailable`.

use std::net::IpAddr;

use super::*;
use crate::cluster::change_sets::peers::CREATES_PER_PEER;
use crate::cluster::peer;

/// One AI decision of `pods` pods by `user` from `address`, judged as the engine does
/// (in a budget scope); admitted when its usage fits `limit`.
fn decide(r: &ClusterChangeSets, address: IpAddr, user: &str, pods: u64, limit: u64) -> u64 {
    peer::within(Some(address), || {
        let _scope = budget::Scope::begin();
        let reservation = r.reserve(&keys(user), at("team-a", pods), HOUR, Instant::now());
        let used = reservation.usage().pods;
        if used <= limit {
            reservation.confirm();
        } else {
            reservation.release();
        }
        used
    })
}

/// Before: twelve forged reviews at once had twelve creates in flight at the API
/// server. Now one address has at most [`CREATES_PER_PEER`], and a review from
/// another address (the API server's) has its create go out beside them.
#[test]
fn a_flood_from_one_address_keeps_few_creates_in_flight_and_none_ahead_of_another() {
    let cluster = Cluster::new();
    cluster.api.slow_writes.store(true, Ordering::SeqCst);
    let r = Arc::new(cluster.replica());
    let forger: IpAddr = "10.0.0.9".parse().unwrap();
    let api_server: IpAddr = "10.0.0.1".parse().unwrap();
    let flood: Vec<_> = (0..12)
        .map(|i| {
            let r = r.clone();
            std::thread::spawn(move || decide(&r, forger, &format!("user:fresh-{i}"), 1, 50))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(decide(&r, api_server, "user:agent", 2, 50), 2);
    let waited = started.elapsed();
    for forged in flood {
        forged.join().unwrap();
    }
    let most = cluster.api.most_creating.load(Ordering::SeqCst);
    assert!(
        most <= CREATES_PER_PEER as u64 + 1,
        "{most} creates at once: the flood's were not bounded"
    );
    assert!(
        waited < SLOW_WRITE + SLOW_WRITE / 2,
        "the API server's review waited {waited:?}: behind the flood's creates"
    );
    settled(&r);
    let agent = cluster
        .api
        .stored("user:agent")
        .expect("the agent's record");
    assert_eq!(
        record::usage(
            Some(&agent.spec),
            &[],
            at("team-a", 0),
            HOUR,
            SystemTime::now()
        )
        .pods,
        2
    );
}

/// A forger that queues the victim's record first, from its own address, while its
/// turns are busy: the victim's real review (from the API server's address) joins
/// that record, and its create takes the API server's turn, not a place in the
/// forger's queue (before: it waited there past its decision's wait).
#[test]
fn a_record_a_forger_queued_first_is_created_in_the_turn_of_the_real_review() {
    let cluster = Cluster::new();
    cluster.api.slow_writes.store(true, Ordering::SeqCst);
    let r = Arc::new(cluster.replica());
    let forger: IpAddr = "10.0.0.9".parse().unwrap();
    let api_server: IpAddr = "10.0.0.1".parse().unwrap();
    let mut forged: Vec<_> = (0..12)
        .map(|i| {
            let r = r.clone();
            std::thread::spawn(move || decide(&r, forger, &format!("user:fresh-{i}"), 1, 50))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    forged.push({
        let r = r.clone();
        std::thread::spawn(move || decide(&r, forger, "user:victim", 1, 50))
    });
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    // The forged hold counts while it lives; the real change is counted with it.
    assert_eq!(decide(&r, api_server, "user:victim", 2, 50), 3);
    let waited = started.elapsed();
    assert!(
        waited < SLOW_WRITE + SLOW_WRITE / 2,
        "the victim's real review waited {waited:?}: in the forger's queue"
    );
    for f in forged {
        f.join().unwrap();
    }
}
