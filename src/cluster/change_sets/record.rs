//! The `ChangeSet` record (group `blastguard.io`, the chart's CRD): what one change set
//! (a requester, or a change-id) has had admitted within the window, shared by every
//! replica through the API server (docs/design.md#radius).
//!
//! One object per change-set key, in the release namespace. It keeps the namespaces
//! the set touched (each with when it was last touched) and one entry per admitted
//! change that affected pods, each stamped with its time and a unique id (so a write
//! that is retried after an unclear failure is never counted twice). Entries older
//! than the window no longer count, are dropped by the next write, and a record whose
//! entries have all expired is deleted. The summary fields are what `kubectl get
//! changesets` shows.
//!
//! Everything here is pure: the API calls are in [`super::ClusterChangeSets`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::change_sets::{Entry, Usage};

/// The API group.
pub const GROUP: &str = "blastguard.io";
/// The version.
pub const VERSION: &str = "v1alpha1";
/// The kind.
pub const KIND: &str = "ChangeSet";
/// The resource (plural).
pub const PLURAL: &str = "changesets";

/// The label every record carries, with the key's type (`user` or `change-id`).
pub const KEY_TYPE_LABEL: &str = "blastguard.io/change-set-key";

/// Most namespaces kept per record; far above any sane `maxNamespacesPerChange`, so
/// a set that reaches it is over its limit whatever is not written down.
pub const MAX_NAMESPACES: usize = 256;

/// Most pod entries kept per record; past it the two oldest merge into one stamped
/// with the later time, so a count can only last longer, never vanish. Keeps a record
/// a few kilobytes, far under etcd's object size limit.
pub const MAX_POD_ENTRIES: usize = 64;

/// Longest key a record holds: a change-id is whatever an annotation held.
pub const MAX_KEY_CHARS: usize = 512;

/// Longest `namespaceList` shown by `kubectl get -o wide`.
const MAX_LIST_CHARS: usize = 120;

/// A `ChangeSet` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSet {
    /// `blastguard.io/v1alpha1`.
    pub api_version: String,
    /// `ChangeSet`.
    pub kind: String,
    /// Name (from the key, see [`record_name`]), namespace, resourceVersion.
    pub metadata: ObjectMeta,
    /// The record.
    pub spec: ChangeSetSpec,
}

/// What a change set used within its window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSetSpec {
    /// The change-set key: `user:<username>` or `change-id:<id>`.
    pub key: String,
    /// The policy's window when this record was last written.
    #[serde(default)]
    pub window: String,
    /// Each namespace touched, with the last time it was.
    #[serde(default)]
    pub namespaces: Vec<NamespaceUse>,
    /// Each admitted change that affected pods.
    #[serde(default)]
    pub pods: Vec<PodUse>,
    /// Reservations of decisions still being judged: counted by every replica until
    /// confirmed (moved to `namespaces` and `pods`), released, or past `until`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<HeldUse>,
    /// Distinct namespaces within the window, as of `lastChange`.
    #[serde(default)]
    pub namespace_count: u64,
    /// Those namespaces, comma-separated (shortened when long).
    #[serde(default)]
    pub namespace_list: String,
    /// Pods affected within the window, as of `lastChange`.
    #[serde(default)]
    pub pod_count: u64,
    /// When the last admitted change was recorded (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_change: String,
    /// When every entry will have left the window and the record can go (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expires_at: String,
}

/// A namespace a change set touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceUse {
    /// The namespace.
    pub name: String,
    /// When a change in it was last admitted (RFC 3339).
    pub at: String,
}

/// An admitted change that affected pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUse {
    /// Pods it affected.
    pub count: u64,
    /// When it was admitted (RFC 3339).
    pub at: String,
    /// Unique per admitted change: `<replica>-<sequence>`.
    pub id: String,
}

/// A change reserved while it is judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldUse {
    /// Unique per change: `<replica>-<sequence>`, the id it keeps once admitted.
    pub id: String,
    /// Its namespace; absent for a cluster-scoped object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pods it affects.
    pub count: u64,
    /// When it was reserved (RFC 3339).
    pub at: String,
    /// When it stops counting unless confirmed (RFC 3339): a replica that died while
    /// judging never settles it.
    pub until: String,
}

record_resource!(ChangeSet, KIND, PLURAL);

/// One admitted change as this replica records it: counted here at once, written to
/// the record (maybe later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Its namespace; `None` for a cluster-scoped object.
    pub namespace: Option<String>,
    /// Pods it affected.
    pub pods: u64,
    /// When it was admitted.
    pub at: SystemTime,
    /// Unique per admitted change.
    pub id: String,
}

/// One change to a record, as a replica's writer applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Reserve the change until the given time.
    Hold(Admitted, SystemTime),
    /// The change was admitted: it counts for the window.
    Confirm(Admitted),
    /// The change was denied or was a dry run: its reservation goes.
    Release(String),
}

impl Admitted {
    /// Whether the change adds anything to a record: a cluster-scoped change that
    /// affects no pods touches no namespace and no budget.
    pub fn counts(&self) -> bool {
        self.namespace.is_some() || self.pods > 0
    }
}

/// The object name of a key's record: readable (`user-system-serviceaccount-ai-agents-
/// claude-…`) and unique (a hash of the whole key), a valid DNS subdomain whatever the
/// key holds.
pub fn record_name(key: &str) -> String {
    let (kind, value) = key.split_once(':').unwrap_or(("key", key));
    let mut slug = String::with_capacity(40);
    for c in value.chars().flat_map(char::to_lowercase) {
        if slug.len() >= 40 {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let hash = hex::encode(&Sha256::digest(key.as_bytes())[..6]);
    let kind: String = kind
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .flat_map(char::to_lowercase)
        .take(16)
        .collect();
    let kind = if kind.is_empty() { "key".into() } else { kind };
    if slug.is_empty() {
        format!("{kind}-{hash}")
    } else {
        format!("{kind}-{slug}-{hash}")
    }
}

/// The key as a record shows it: whole up to [`MAX_KEY_CHARS`], shortened past it (the
/// record's name still holds the hash of the whole key).
fn shown_key(key: &str) -> String {
    if key.chars().count() <= MAX_KEY_CHARS {
        return key.to_string();
    }
    let mut shown: String = key.chars().take(MAX_KEY_CHARS - 1).collect();
    shown.push('…');
    shown
}

/// The key's type, for [`KEY_TYPE_LABEL`].
pub fn key_type(key: &str) -> &str {
    match key.split_once(':') {
        Some(("user", _)) => "user",
        Some(("change-id", _)) => "change-id",
        _ => "other",
    }
}

/// A time as records store it: RFC 3339, UTC, milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

fn live(at: &str, window: Duration, now: SystemTime) -> bool {
    // An unreadable time counts: a record can only err toward counting more.
    parse_time(at).is_none_or(|t| match now.duration_since(t) {
        Ok(age) => age <= window,
        // Written by a replica whose clock runs ahead: still within the window.
        Err(_) => true,
    })
}

/// What a change set has used within `window` before `now`, counting `entry` as if it
/// were admitted: the record (when there is one) and the changes this replica admitted
/// that may not be in it yet.
pub fn usage(
    record: Option<&ChangeSetSpec>,
    pending: &[Admitted],
    entry: Entry<'_>,
    window: Duration,
    now: SystemTime,
) -> Usage {
    let mut namespaces: Vec<&str> = Vec::new();
    let mut pods = 0u64;
    if let Some(r) = record {
        for ns in &r.namespaces {
            if live(&ns.at, window, now) && !namespaces.contains(&ns.name.as_str()) {
                namespaces.push(&ns.name);
            }
        }
        for p in &r.pods {
            if live(&p.at, window, now) {
                pods = pods.saturating_add(p.count);
            }
        }
        for h in &r.held {
            if !held_live(h, window, now) {
                continue;
            }
            if let Some(ns) = &h.namespace
                && !namespaces.contains(&ns.as_str())
            {
                namespaces.push(ns);
            }
            pods = pods.saturating_add(h.count);
        }
    }
    for p in pending {
        let in_window = now.duration_since(p.at).map_or(true, |age| age <= window);
        if !in_window {
            continue;
        }
        if let Some(ns) = &p.namespace
            && !namespaces.contains(&ns.as_str())
        {
            namespaces.push(ns);
        }
        let written = record.is_some_and(|r| {
            r.pods.iter().any(|w| w.id == p.id) || r.held.iter().any(|h| h.id == p.id)
        });
        if !written {
            pods = pods.saturating_add(p.pods);
        }
    }
    let others = namespaces
        .iter()
        .filter(|ns| Some(**ns) != entry.namespace)
        .count() as u64;
    Usage {
        namespaces: others + u64::from(entry.namespace.is_some()),
        pods: pods.saturating_add(entry.pods),
    }
}

/// Whether a reservation still counts: within its lapse and the window.
fn held_live(h: &HeldUse, window: Duration, now: SystemTime) -> bool {
    let lapsed = parse_time(&h.until).is_some_and(|until| until < now);
    !lapsed && live(&h.at, window, now)
}

/// Most reservations kept per record: decisions of one set judged at the same time.
/// Past it a reservation is not written, and its decision says it could not be.
pub const MAX_HELD: usize = 128;

/// The record after `ops`, in order: entries past the window and reservations past
/// their lapse dropped, the bounds kept, the summary recomputed. Also returns the ids
/// of the reservations that found no room (see [`MAX_HELD`]).
pub fn with_ops(
    record: Option<&ChangeSetSpec>,
    key: &str,
    ops: &[Op],
    window: Duration,
    now: SystemTime,
) -> (ChangeSetSpec, Vec<String>) {
    let mut spec = record.cloned().unwrap_or_else(|| ChangeSetSpec {
        key: shown_key(key),
        ..ChangeSetSpec::default()
    });
    spec.held.retain(|h| held_live(h, window, now));
    let mut no_room = Vec::new();
    for op in ops {
        match op {
            Op::Hold(a, until) => {
                if spec.held.iter().any(|h| h.id == a.id) || spec.pods.iter().any(|p| p.id == a.id)
                {
                    continue;
                }
                if spec.held.len() >= MAX_HELD {
                    no_room.push(a.id.clone());
                    continue;
                }
                spec.held.push(HeldUse {
                    id: a.id.clone(),
                    namespace: a.namespace.clone(),
                    count: a.pods,
                    at: timestamp(a.at),
                    until: timestamp(*until),
                });
            }
            Op::Confirm(a) => {
                spec.held.retain(|h| h.id != a.id);
                spec = with_admitted(Some(&spec), key, a, window, now);
            }
            Op::Release(id) => spec.held.retain(|h| &h.id != id),
        }
    }
    spec.namespaces.retain(|ns| live(&ns.at, window, now));
    spec.pods.retain(|p| live(&p.at, window, now));
    spec.window = humantime::format_duration(window).to_string();
    summarize(&mut spec, window);
    (spec, no_room)
}

/// Whether the record already holds this admitted change.
pub fn holds(record: &ChangeSetSpec, admitted: &Admitted) -> bool {
    if admitted.pods > 0 {
        return record.pods.iter().any(|p| p.id == admitted.id);
    }
    // A change without pods only touches its namespace: held when that namespace is
    // there with a time at least as late.
    match &admitted.namespace {
        Some(ns) => record
            .namespaces
            .iter()
            .any(|u| &u.name == ns && parse_time(&u.at).is_some_and(|t| t >= admitted.at)),
        None => true,
    }
}

/// The record after adding `admitted`: entries past the window dropped, the bounds
/// kept, the summary recomputed.
pub fn with_admitted(
    record: Option<&ChangeSetSpec>,
    key: &str,
    admitted: &Admitted,
    window: Duration,
    now: SystemTime,
) -> ChangeSetSpec {
    let mut spec = record.cloned().unwrap_or_else(|| ChangeSetSpec {
        key: shown_key(key),
        ..ChangeSetSpec::default()
    });
    spec.namespaces.retain(|ns| live(&ns.at, window, now));
    spec.pods.retain(|p| live(&p.at, window, now));
    let at = timestamp(admitted.at);
    if let Some(ns) = &admitted.namespace {
        let room = spec.namespaces.len() < MAX_NAMESPACES;
        match spec.namespaces.iter_mut().find(|u| &u.name == ns) {
            Some(u) if parse_time(&u.at).is_none_or(|t| t < admitted.at) => u.at = at.clone(),
            Some(_) => {}
            None if room => spec.namespaces.push(NamespaceUse {
                name: ns.clone(),
                at: at.clone(),
            }),
            None => {}
        }
    }
    if admitted.pods > 0 && !spec.pods.iter().any(|p| p.id == admitted.id) {
        spec.pods.push(PodUse {
            count: admitted.pods,
            at: at.clone(),
            id: admitted.id.clone(),
        });
        spec.pods
            .sort_by_key(|p| parse_time(&p.at).unwrap_or(SystemTime::UNIX_EPOCH));
        while spec.pods.len() > MAX_POD_ENTRIES {
            let first = spec.pods.remove(0);
            spec.pods[0].count = spec.pods[0].count.saturating_add(first.count);
        }
    }
    spec.window = humantime::format_duration(window).to_string();
    summarize(&mut spec, window);
    spec
}

fn summarize(spec: &mut ChangeSetSpec, window: Duration) {
    let mut names: Vec<&str> = spec.namespaces.iter().map(|n| n.name.as_str()).collect();
    names.sort_unstable();
    spec.namespace_count = names.len() as u64;
    let mut list = names.join(",");
    if list.len() > MAX_LIST_CHARS {
        let cut = list
            .char_indices()
            .take_while(|(i, _)| *i < MAX_LIST_CHARS - 1)
            .last()
            .map_or(0, |(i, c)| i + c.len_utf8());
        list.truncate(cut);
        list.push('…');
    }
    spec.namespace_list = list;
    spec.pod_count = spec
        .pods
        .iter()
        .fold(0u64, |s, p| s.saturating_add(p.count));
    let last = spec
        .namespaces
        .iter()
        .map(|n| n.at.as_str())
        .chain(spec.pods.iter().map(|p| p.at.as_str()))
        .filter_map(parse_time)
        .max();
    spec.last_change = last.map(timestamp).unwrap_or_default();
    spec.expires_at = last.map(|t| timestamp(t + window)).unwrap_or_default();
}

/// Whether every entry of the record has left the window (judged with the longer of
/// the record's own window and `window`, so a shortened policy window never deletes
/// what a replica with the old one still counts).
pub fn expired(record: &ChangeSetSpec, window: Duration, now: SystemTime) -> bool {
    let own = humantime::parse_duration(&record.window).unwrap_or_default();
    let window = window.max(own);
    !record
        .namespaces
        .iter()
        .map(|n| n.at.as_str())
        .chain(record.pods.iter().map(|p| p.at.as_str()))
        .any(|at| live(at, window, now))
        && !record.held.iter().any(|h| held_live(h, window, now))
}

/// A new record object for `key` in `namespace`.
pub fn new_record(namespace: &str, key: &str, spec: ChangeSetSpec) -> ChangeSet {
    ChangeSet {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.to_string(),
        metadata: ObjectMeta {
            name: Some(record_name(key)),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (KEY_TYPE_LABEL.to_string(), key_type(key).to_string()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    "blastguard".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000 + secs)
    }

    fn admitted(ns: Option<&str>, pods: u64, at: SystemTime, id: &str) -> Admitted {
        Admitted {
            namespace: ns.map(str::to_string),
            pods,
            at,
            id: id.to_string(),
        }
    }

    fn at(ns: &str, pods: u64) -> Entry<'_> {
        Entry {
            namespace: Some(ns),
            pods,
            dry_run: false,
        }
    }

    #[test]
    fn names_are_readable_unique_and_valid() {
        let a = record_name("user:system:serviceaccount:ai-agents:claude");
        assert!(
            a.starts_with("user-system-serviceaccount-ai-agents-claude-"),
            "{a}"
        );
        assert_ne!(
            a,
            record_name("user:system:serviceaccount:ai-agents:claude2")
        );
        assert_ne!(
            record_name("user:Alice"),
            record_name("user:alice"),
            "the hash is of the key as given"
        );
        for key in [
            "change-id:CHG 1234/ü",
            "user:",
            "change-id:---",
            &format!("user:{}", "x".repeat(500)),
            "no colon",
        ] {
            let name = record_name(key);
            assert!(name.len() <= 80, "{name}");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_eq!(key_type("change-id:x"), "change-id");
        assert_eq!(key_type("user:x"), "user");
    }

    #[test]
    fn usage_counts_the_record_and_what_is_not_written_yet() {
        let first = admitted(Some("a"), 5, t(0), "r1-1");
        let spec = with_admitted(None, "user:bot", &first, HOUR, t(0));
        assert_eq!(spec.namespace_count, 1);
        assert_eq!(spec.pod_count, 5);
        assert!(holds(&spec, &first));

        let u = usage(Some(&spec), &[], at("b", 2), HOUR, t(10));
        assert_eq!(
            u,
            Usage {
                namespaces: 2,
                pods: 7
            }
        );
        // Written and still pending (its write's answer not seen yet): counted once.
        let u = usage(
            Some(&spec),
            std::slice::from_ref(&first),
            at("a", 0),
            HOUR,
            t(10),
        );
        assert_eq!(
            u,
            Usage {
                namespaces: 1,
                pods: 5
            }
        );
        // Pending only: counted.
        let second = admitted(Some("c"), 3, t(5), "r2-1");
        let u = usage(Some(&spec), &[second], at("a", 0), HOUR, t(10));
        assert_eq!(
            u,
            Usage {
                namespaces: 2,
                pods: 8
            }
        );
        // No record at all.
        assert_eq!(
            usage(None, &[], at("a", 4), HOUR, t(0)),
            Usage {
                namespaces: 1,
                pods: 4
            }
        );
        let cluster = Entry {
            namespace: None,
            pods: 0,
            dry_run: false,
        };
        assert_eq!(usage(Some(&spec), &[], cluster, HOUR, t(1)).namespaces, 1);
    }

    #[test]
    fn entries_expire_with_the_window() {
        let spec = with_admitted(
            None,
            "user:bot",
            &admitted(Some("a"), 5, t(0), "1"),
            HOUR,
            t(0),
        );
        let spec = with_admitted(
            Some(&spec),
            "user:bot",
            &admitted(Some("b"), 1, t(1800), "2"),
            HOUR,
            t(1800),
        );
        assert_eq!(spec.pod_count, 6);
        assert_eq!(spec.expires_at, timestamp(t(1800) + HOUR));
        // At 1h 10m the first change has left the window.
        let u = usage(Some(&spec), &[], at("c", 0), HOUR, t(4200));
        assert_eq!(
            u,
            Usage {
                namespaces: 2,
                pods: 1
            }
        );
        assert!(!expired(&spec, HOUR, t(4200)));
        assert!(expired(&spec, HOUR, t(1800 + 3601)));
        // A shorter policy window never deletes what the record's own window counts.
        assert!(!expired(&spec, Duration::from_secs(60), t(1800 + 120)));
        // The next write drops what left the window.
        let later = with_admitted(
            Some(&spec),
            "user:bot",
            &admitted(None, 2, t(4200), "3"),
            HOUR,
            t(4200),
        );
        assert_eq!(later.namespaces.len(), 1);
        assert_eq!(later.pods.len(), 2);
        assert_eq!(later.pod_count, 3);
        assert_eq!(later.namespace_list, "b");
    }

    #[test]
    fn records_stay_bounded_and_never_lose_pods() {
        let mut spec: Option<ChangeSetSpec> = None;
        for i in 0..(MAX_POD_ENTRIES as u64 + 30) {
            let a = admitted(Some(&format!("ns-{i}")), 2, t(i), &format!("id-{i}"));
            spec = Some(with_admitted(spec.as_ref(), "user:bot", &a, HOUR, t(i)));
        }
        let spec = spec.unwrap();
        assert_eq!(spec.pods.len(), MAX_POD_ENTRIES);
        assert_eq!(spec.pod_count, 2 * (MAX_POD_ENTRIES as u64 + 30));
        assert_eq!(spec.namespaces.len(), MAX_POD_ENTRIES + 30);
        assert!(spec.namespace_list.chars().count() <= MAX_LIST_CHARS);
        // The namespace bound.
        let mut spec = spec;
        for i in 0..400 {
            let a = admitted(Some(&format!("more-{i}")), 0, t(200), &format!("m-{i}"));
            spec = with_admitted(Some(&spec), "user:bot", &a, HOUR, t(200));
        }
        assert_eq!(spec.namespaces.len(), MAX_NAMESPACES);
        let size = serde_json::to_vec(&spec).unwrap().len();
        assert!(size < 40_000, "a full record is {size} bytes");
    }

    #[test]
    fn a_retried_write_is_not_counted_twice() {
        let a = admitted(Some("a"), 5, t(0), "r-1");
        let once = with_admitted(None, "user:bot", &a, HOUR, t(0));
        let twice = with_admitted(Some(&once), "user:bot", &a, HOUR, t(1));
        assert_eq!(twice.pod_count, 5);
        assert!(holds(&twice, &a));
        let ns_only = admitted(Some("b"), 0, t(2), "r-2");
        assert!(!holds(&twice, &ns_only));
        assert!(holds(
            &with_admitted(Some(&twice), "user:bot", &ns_only, HOUR, t(2)),
            &ns_only
        ));
    }

    #[test]
    fn records_serialize_as_the_crd_describes() {
        let spec = with_admitted(
            None,
            "change-id:CHG-1",
            &admitted(Some("team-a"), 3, t(0), "r-1"),
            HOUR,
            t(0),
        );
        let record = new_record("blastguard", "change-id:CHG-1", spec);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["apiVersion"], "blastguard.io/v1alpha1");
        assert_eq!(json["kind"], "ChangeSet");
        assert_eq!(json["metadata"]["labels"][KEY_TYPE_LABEL], "change-id");
        assert_eq!(json["spec"]["key"], "change-id:CHG-1");
        assert_eq!(json["spec"]["namespaceCount"], 1);
        assert_eq!(json["spec"]["podCount"], 3);
        assert_eq!(json["spec"]["window"], "1h");
        assert_eq!(json["spec"]["pods"][0]["id"], "r-1");
        let back: ChangeSet = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }
}
