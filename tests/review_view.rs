//! The borrowed request view the hot path reads (src/review.rs) against kube-rs's own
//! reading of the same bytes (`AdmissionReview<DynamicObject>`), on every fixture made
//! by the real tools and on generated reviews: the same uid, kind, resource,
//! subresource, name, namespace, operation, user, groups, dry run, field manager,
//! objects and annotations. docs/architecture.md allows the view only on this condition.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use blastguard::change::Operation;
use blastguard::review::{ObjectParts, RequestView, decode};
use common::review::admission_review;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation as KubeOperation};
use serde_json::{Value, json};

fn kube_reading(body: &[u8]) -> AdmissionRequest<DynamicObject> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).expect("kube-rs reads the review");
    review.try_into().expect("a request")
}

fn operation(op: &KubeOperation) -> Operation {
    match op {
        KubeOperation::Create => Operation::Create,
        KubeOperation::Update => Operation::Update,
        KubeOperation::Delete => Operation::Delete,
        KubeOperation::Connect => Operation::Connect,
    }
}

/// An object as kube-rs holds it, back as JSON, for comparison with the raw view.
fn kube_object(o: &Option<DynamicObject>) -> Option<Value> {
    o.as_ref()
        .map(|o| serde_json::to_value(o).expect("serializes"))
}

/// An object as the decision reads it ([`ObjectParts::to_value`]): its fields, and of
/// metadata the name, generateName and labels.
fn parts_object(parts: &Option<ObjectParts<'_>>, what: &str) -> Option<Value> {
    parts
        .as_ref()
        .map(|p| p.to_value().unwrap_or_else(|e| panic!("{what}: {e}")))
}

/// kube-rs's reading reduced the same way: without apiVersion, kind and status, and
/// with metadata reduced to name, generateName and labels.
fn kube_reduced(o: &Option<DynamicObject>) -> Option<Value> {
    kube_object(o).map(|mut v| {
        let map = v.as_object_mut().expect("an object");
        for key in ["apiVersion", "kind", "status"] {
            map.remove(key);
        }
        let meta = map.get("metadata").cloned().unwrap_or(json!({}));
        let mut reduced = serde_json::Map::new();
        for key in ["name", "generateName", "labels"] {
            if let Some(v) = meta.get(key) {
                reduced.insert(key.into(), v.clone());
            }
        }
        map.insert("metadata".into(), Value::Object(reduced));
        v
    })
}

fn annotations(o: &Option<DynamicObject>) -> BTreeMap<String, String> {
    o.as_ref()
        .and_then(|o| o.metadata.annotations.clone())
        .unwrap_or_default()
}

/// Asserts the view reads `body` as kube-rs does; `what` names the review.
fn assert_same_reading(body: &[u8], what: &str) {
    let kube = kube_reading(body);
    let view: RequestView<'_> = decode(body).unwrap_or_else(|r| panic!("{what}: {}", r.error));
    assert_eq!(view.uid, kube.uid, "{what}: uid");
    assert_eq!(
        view.operation,
        operation(&kube.operation),
        "{what}: operation"
    );
    assert_eq!(
        (&*view.kind.group, &*view.kind.version, &*view.kind.kind),
        (&*kube.kind.group, &*kube.kind.version, &*kube.kind.kind),
        "{what}: kind"
    );
    assert_eq!(
        (
            &*view.resource.group,
            &*view.resource.version,
            &*view.resource.resource
        ),
        (
            &*kube.resource.group,
            &*kube.resource.version,
            &*kube.resource.resource
        ),
        "{what}: resource"
    );
    assert_eq!(
        view.subresource(),
        kube.sub_resource.as_deref().filter(|s| !s.is_empty()),
        "{what}: subresource"
    );
    assert_eq!(view.name, kube.name, "{what}: name");
    assert_eq!(
        view.namespace(),
        kube.namespace.as_deref().filter(|s| !s.is_empty()),
        "{what}: namespace"
    );
    assert_eq!(
        view.user_info.username.as_deref(),
        kube.user_info.username.as_deref(),
        "{what}: username"
    );
    let groups: Option<Vec<&str>> = view
        .user_info
        .groups
        .as_ref()
        .map(|g| g.iter().map(|g| g.as_ref()).collect());
    let kube_groups: Option<Vec<&str>> = kube
        .user_info
        .groups
        .as_ref()
        .map(|g| g.iter().map(String::as_str).collect());
    assert_eq!(groups, kube_groups, "{what}: groups");
    assert_eq!(
        view.dry_run.unwrap_or(false),
        kube.dry_run,
        "{what}: dryRun"
    );
    assert_eq!(
        view.field_manager(),
        kube.options
            .as_ref()
            .and_then(|o| o.0.get("fieldManager"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty()),
        "{what}: fieldManager"
    );
    assert_eq!(
        parts_object(&view.object, what),
        kube_reduced(&kube.object),
        "{what}: object"
    );
    assert_eq!(
        parts_object(&view.old_object, what),
        kube_reduced(&kube.old_object),
        "{what}: oldObject"
    );
    for (parts, kube_object, which) in [
        (&view.object, &kube.object, "object"),
        (&view.old_object, &kube.old_object, "oldObject"),
    ] {
        let theirs = annotations(kube_object);
        let ours: BTreeMap<String, String> = parts
            .iter()
            .flat_map(|p| p.annotations.iter())
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::from_str(v.get()).expect("a string"),
                )
            })
            .collect();
        assert_eq!(ours, theirs, "{what}: {which} annotations (all of them)");
    }
    let (new, old) = view.annotations();
    if view.subresource().is_none() {
        for (raw, kube_object, which) in [
            (new, &kube.object, "object"),
            (old, &kube.old_object, "oldObject"),
        ] {
            for (key, value) in annotations(kube_object) {
                assert_eq!(
                    raw.get(&key).as_deref(),
                    Some(value.as_str()),
                    "{what}: {which} annotation {key}"
                );
            }
            assert_eq!(
                raw.is_empty(),
                annotations(kube_object).is_empty(),
                "{what}: {which} has annotations"
            );
        }
    }
}

#[test]
fn every_fixture_reads_as_kube_rs_reads_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let body = std::fs::read(&path).expect("read");
            assert_same_reading(&body, &path.display().to_string());
            seen += 1;
        }
    }
    assert!(seen >= 8, "only {seen} fixtures found");
}

/// xorshift64*: a fixed, seeded stream, so a failure is reproducible from its index.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Strings that exercise JSON escapes, non-ASCII text and emptiness, where the view
/// borrows or must unescape.
const TEXTS: &[&str] = &[
    "",
    "api",
    "claude-code",
    "false",
    " FALSE ",
    "line\nbreak",
    "quote\"and\\backslash",
    "tab\there",
    "ünïcødé ✓",
    "emoji 😀",
    "{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\"}",
    "\u{0}nul",
];

fn generated_review(rng: &mut Rng) -> Value {
    let op = rng.pick(&["CREATE", "UPDATE", "DELETE", "CONNECT"]);
    let sub = rng.pick(&["", "", "", "scale", "status", "eviction"]);
    let mut annotations = serde_json::Map::new();
    for _ in 0..(rng.next() % 5) {
        let key = rng.pick(&[
            "blastguard.io/ai-agent",
            "blastguard.io/ai-assisted",
            "blastguard.io/change-id",
            "kubectl.kubernetes.io/last-applied-configuration",
            "team",
        ]);
        annotations.insert(key.to_string(), json!(rng.pick(TEXTS)));
    }
    let object = |rng: &mut Rng, annotations: &serde_json::Map<String, Value>| {
        let mut metadata = json!({"name": rng.pick(TEXTS), "namespace": "prod",
            "managedFields": [{"manager": rng.pick(TEXTS), "operation": "Update",
                               "fieldsV1": {"f:spec": {"f:replicas": {}}}}]});
        if !annotations.is_empty() || rng.chance(30) {
            metadata["annotations"] = Value::Object(annotations.clone());
        }
        if rng.chance(50) {
            metadata["labels"] = json!({"app": rng.pick(TEXTS)});
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
               "spec": {"replicas": rng.next() % 100, "template": {"spec": {"containers": [
                   {"name": "a", "image": rng.pick(TEXTS)}]}}},
               "status": {"replicas": 3}})
    };
    let mut request = json!({
        "uid": format!("uid-{}", rng.next()),
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "requestKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "name": rng.pick(TEXTS),
        "operation": op,
        "userInfo": {"username": rng.pick(TEXTS), "uid": "u",
                     "groups": [rng.pick(TEXTS), "system:authenticated"],
                     "extra": {"k": [rng.pick(TEXTS)]}},
    });
    if !sub.is_empty() {
        request["subResource"] = json!(sub);
    }
    if rng.chance(80) {
        request["namespace"] = json!(rng.pick(&["prod", "", "staging"]));
    }
    if rng.chance(50) {
        request["dryRun"] = json!(rng.chance(50));
    }
    if rng.chance(70) {
        let mut options = json!({"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"});
        if rng.chance(60) {
            options["fieldManager"] =
                json!(rng.pick(&["kubectl-ai", "kubectl-client-side-apply", ""]));
        }
        request["options"] = options;
    }
    if op != "DELETE" && rng.chance(90) {
        request["object"] = object(rng, &annotations);
    }
    if op != "CREATE" && rng.chance(90) {
        let old_annotations = if rng.chance(50) {
            annotations.clone()
        } else {
            serde_json::Map::new()
        };
        request["oldObject"] = object(rng, &old_annotations);
    }
    if rng.chance(10) {
        request["object"] = Value::Null;
    }
    admission_review(request)
}

#[test]
fn generated_reviews_read_as_kube_rs_reads_them() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..2_000 {
        let review = generated_review(&mut rng);
        // Pretty-printed half the time: whitespace must not matter either.
        let body = if i % 2 == 0 {
            serde_json::to_vec(&review)
        } else {
            serde_json::to_vec_pretty(&review)
        }
        .expect("JSON");
        assert_same_reading(&body, &format!("generated review {i}"));
    }
}

/// Pointers whose raw bytes a decision compares between the old and the new object.
const COMPARED: &[&str] = &[
    "/spec",
    "/spec/template",
    "/spec/jobTemplate",
    "/spec/selector",
    "/spec/strategy",
    "/spec/updateStrategy",
    "/spec/volumeClaimTemplates",
];

/// Every raw value at [`COMPARED`] in `body`'s objects, with its parsed value.
fn compared_values(body: &[u8], what: &str, into: &mut Vec<(String, String, Value)>) {
    let view = decode(body).unwrap_or_else(|r| panic!("{what}: {}", r.error));
    for parts in [&view.object, &view.old_object].into_iter().flatten() {
        for pointer in COMPARED {
            if let Some(raw) = parts.raw_at(pointer) {
                let value = serde_json::from_str(raw.get()).expect("raw JSON");
                let parsed: Value = parts.to_value().expect("parses");
                assert_eq!(parsed.pointer(pointer), Some(&value), "{what}: {pointer}");
                into.push((format!("{what} {pointer}"), raw.get().to_string(), value));
            }
        }
    }
}

/// A decision compares templates and spec fields by their bytes (src/change.rs); that
/// is sound where the writer is canonical. Across every fixture (written by the API
/// server) and every generated review (written by serde_json, as `check` writes),
/// any two values at the compared pointers have equal bytes exactly when they are
/// equal values.
#[test]
fn equal_values_have_equal_bytes_in_what_the_api_server_writes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut values = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let body = std::fs::read(&path).expect("read");
            compared_values(&body, &path.display().to_string(), &mut values);
        }
    }
    let from_fixtures = values.len();
    let mut rng = Rng(0x05ee_d0fb_17e5);
    for i in 0..300 {
        let body = serde_json::to_vec(&generated_review(&mut rng)).expect("serializes");
        compared_values(&body, &format!("generated review {i}"), &mut values);
    }
    assert!(
        from_fixtures >= 20,
        "only {from_fixtures} values in the fixtures"
    );
    let mut equal_pairs = 0;
    for (i, (a_what, a_raw, a)) in values.iter().enumerate() {
        for (b_what, b_raw, b) in values.iter().skip(i + 1) {
            assert_eq!(
                a_raw == b_raw,
                a == b,
                "{a_what} and {b_what}: bytes and values disagree"
            );
            equal_pairs += usize::from(a == b);
        }
    }
    // Equal pairs exist (an update that keeps its template): the test compares both ways.
    assert!(
        equal_pairs > 0,
        "no equal pair among {} values",
        values.len()
    );
}

/// A byte that is not UTF-8, inside a part of the body the view skips unread (the
/// old object's managedFields): kube-rs refuses the body, and so does the view, as
/// malformed and with the uid, instead of judging a body no API server sends.
#[test]
fn a_body_that_is_not_utf8_anywhere_is_malformed_as_kube_rs_finds_it() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/deployment-update-image-person.json");
    let mut review: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
    review["request"]["oldObject"]["metadata"]["managedFields"] = json!([{"manager": "MARK"}]);
    let text = serde_json::to_vec(&review).expect("serializes");
    let at = text
        .windows(4)
        .position(|w| w == b"MARK")
        .expect("the marker");
    let mut body = text.clone();
    body[at] = 0xff;

    assert!(
        serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body).is_err(),
        "kube-rs refuses it"
    );
    let rejected = decode(&body).expect_err("the view refuses it");
    assert_eq!(rejected.error.label(), "malformed");
    assert!(
        rejected.error.to_string().contains("UTF-8"),
        "{}",
        rejected.error
    );
    assert_eq!(
        rejected.uid.as_deref(),
        review["request"]["uid"].as_str(),
        "the answer still reaches its request"
    );
    decode(&text).expect("the same body in UTF-8 reads");
}
