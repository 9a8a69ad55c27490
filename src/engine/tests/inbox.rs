//! The approval inbox through the engine (docs/approvals.md, "The inbox"), with its
//! records in memory: a real denial records one request per change, a dry run none;
//! a fully signed record admits the retry once; a record that was tampered with, or
//! rejected, admits nothing. tests/e2e_inbox.rs does the same through a real API
//! server, with the records in the cluster.

use std::sync::Arc;

use ssh_key::HashAlg;
use ssh_key::private::{Ed25519Keypair, KeypairData, PrivateKey};

use super::*;
use crate::approval::allowed_signers::AllowedSigners;
use crate::approval::payload::SIGNATURE_NAMESPACE;
use crate::approval::request::{InMemoryRequests, RequestState};
use crate::approval::sshsig::armor;
use crate::approval::verifier::SignedApprovals;

fn key(seed: u8) -> PrivateKey {
    PrivateKey::new(
        KeypairData::Ed25519(Ed25519Keypair::from_seed(&[seed; 32])),
        "",
    )
    .unwrap()
}

fn sign(seed: u8, payload: &str) -> String {
    armor(
        &key(seed)
            .sign(SIGNATURE_NAMESPACE, HashAlg::Sha512, payload.as_bytes())
            .unwrap(),
    )
    .unwrap()
}

/// The default policy (prod: 2 approvers), alice (1), bob (2) and the agent itself
/// (3) trusted, and an inbox in memory.
fn setup() -> (Engine, Arc<InMemoryRequests>) {
    let signers = AllowedSigners::parse(&format!(
        "alice@corp {}\nbob@corp {}\n{AI_SA} {}\n",
        key(1).public_key().to_openssh().unwrap(),
        key(2).public_key().to_openssh().unwrap(),
        key(3).public_key().to_openssh().unwrap(),
    ))
    .unwrap();
    let engine = Engine::new(
        Policy::embedded(),
        Arc::new(SignedApprovals::new(signers)),
    );
    let requests = Arc::new(InMemoryRequests::default());
    engine.set_requests(requests.clone());
    (engine, requests)
}

/// The agent scales prod/api from 2 to 5 replicas with a new image.
fn change(replicas: u64) -> Req {
    Req::update(
        "Deployment",
        "prod",
        deploy(2, "nginx:1.27", human()),
        deploy(replicas, "nginx:1.28", human()),
    )
    .user(AI_SA)
}

fn only(requests: &InMemoryRequests) -> String {
    let names = requests.names();
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}

fn sign_record(requests: &InMemoryRequests, name: &str, seeds: &[u8]) {
    requests.edit(name, |spec, status| {
        for seed in seeds {
            status.signatures.push(sign(*seed, &spec.payload));
        }
    });
}

fn reason(r: &Reviewed) -> String {
    r.judged()
        .and_then(|j| j.verdict.findings.approval.clone())
        .map(|a| a.metric_label().to_string())
        .unwrap_or_default()
}

#[test]
fn a_denial_is_recorded_once_per_change_and_never_on_a_dry_run() {
    let (engine, requests) = setup();
    let dry = engine.review(&change(5).dry_run().body());
    assert!(!dry.allowed());
    assert!(requests.names().is_empty(), "a dry run records nothing");
    assert!(!engine.review(&change(5).body()).allowed());
    let name = only(&requests);
    let (spec, status) = requests.get(&name).unwrap();
    assert_eq!(spec.requester, AI_SA);
    assert_eq!(spec.rule, "protected");
    assert_eq!(spec.required_approvals, 2);
    assert_eq!(status.state, RequestState::Pending);
    assert!(!spec.exceeded.is_empty());
    // The recorded object is the one the payload approves.
    crate::approval::request::check_record(&spec).unwrap();
    // A retry counts on the same record; another change is another record.
    engine.review(&change(5).body());
    assert_eq!(requests.get(&name).unwrap().0.attempts, 2);
    engine.review(&change(6).body());
    assert_eq!(requests.names().len(), 2);
}

#[test]
fn a_fully_signed_record_admits_the_retry_once() {
    let (engine, requests) = setup();
    engine.review(&change(5).body());
    let name = only(&requests);
    // One approver: not enough; the denial offers the record's payload to sign.
    sign_record(&requests, &name, &[1]);
    let one = engine.review(&change(5).body());
    assert!(!one.allowed());
    assert_eq!(reason(&one), "not_enough_approvers");
    let offered = one.judged().unwrap().verdict.payload.clone().unwrap();
    assert_eq!(offered.to_json(), requests.get(&name).unwrap().0.payload);
    sign_record(&requests, &name, &[2]);
    // A dry run asks without spending.
    assert!(engine.review(&change(5).dry_run().body()).allowed());
    let admitted = engine.review(&change(5).body());
    assert!(admitted.allowed(), "{:?}", response(&admitted));
    assert_eq!(requests.get(&name).unwrap().1.state, RequestState::Spent);
    let again = engine.review(&change(5).body());
    assert!(!again.allowed());
    assert_eq!(reason(&again), "spent");
}

#[test]
fn a_tampered_or_rejected_record_admits_nothing() {
    let (engine, requests) = setup();
    engine.review(&change(5).body());
    engine.review(&change(9).body());
    let names = requests.names();
    let of = |replicas: u64| {
        names
            .iter()
            .find(|n| {
                requests.get(n).unwrap().0.object.unwrap()["spec"]["replicas"] == replicas
            })
            .unwrap()
            .clone()
    };
    let (five, nine) = (of(5), of(9));
    let five_payload = requests.get(&five).unwrap().0.payload;
    // Valid signatures of another payload, on this record.
    requests.edit(&nine, |_, status| {
        status.signatures = vec![sign(1, &five_payload), sign(2, &five_payload)];
        status.state = RequestState::Approved;
    });
    let r = engine.review(&change(9).body());
    assert!(!r.allowed());
    assert_eq!(reason(&r), "bad_signature");
    // Another change's payload, validly signed, at this change's record.
    requests.edit(&nine, |spec, _| spec.payload = five_payload.clone());
    let r = engine.review(&change(9).body());
    assert!(!r.allowed());
    assert_eq!(reason(&r), "digest_mismatch");
    // The requester's own signature does not count.
    sign_record(&requests, &five, &[1, 3]);
    let r = engine.review(&change(5).body());
    assert!(!r.allowed());
    assert_eq!(reason(&r), "self_approval");
    // Rejected: denied whoever signed, with the reason.
    sign_record(&requests, &five, &[2]);
    requests.edit(&five, |_, status| {
        status.state = RequestState::Rejected;
        status.rejection = Some(crate::approval::request::Rejection {
            by: "carol@corp".into(),
            reason: "not during the freeze".into(),
            at: String::new(),
        });
    });
    let r = engine.review(&change(5).body());
    assert!(!r.allowed());
    assert_eq!(reason(&r), "request_rejected");
    let message = response(&r)["status"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("not during the freeze"), "{message}");
    // Without the rejection the same signatures admit it: the tests above fail for
    // the reason they name, not for want of signatures.
    requests.edit(&five, |_, status| status.state = RequestState::Pending);
    assert!(engine.review(&change(5).body()).allowed());
}
