//! Whether an admitted change happened in the cluster (docs/security.md, "Forged
//! reviews on a default install"): the API server makes the change it sent a review
//! for; a review posted by anyone else leaves nothing behind. A replica looks at the
//! object once, a few seconds after admitting it, and compares what it finds with what
//! the review said ([`seen`]). Pure but for [`ApiLooks`], the GET.

use std::time::{Duration, SystemTime};

use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;

use super::pending::Pending;
use crate::change_sets::{Expect, Sighting};

/// How far the API server's clock (creationTimestamp, managedFields times, whole
/// seconds) may be behind this replica's and a write still count as the review's.
pub const CLOCK_SLACK: Duration = Duration::from_secs(5);

/// What a replica sees of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `metadata.creationTimestamp`.
    pub created: Option<SystemTime>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// When each field manager last wrote, with the subresource it wrote through.
    pub writes: Vec<(Option<String>, SystemTime)>,
}

/// How a replica looks at an object: `Ok(None)` when it does not exist.
pub trait Looks: Send + Sync + 'static {
    /// The object `sighting` names, as it is now.
    fn look(&self, sighting: &Sighting) -> Pending<'_, Option<Observed>>;
}

/// [`Looks`] through the API server: a metadata-only GET.
pub struct ApiLooks(pub kube::Client);

impl Looks for ApiLooks {
    fn look(&self, sighting: &Sighting) -> Pending<'_, Option<Observed>> {
        let api_version = if sighting.group.is_empty() {
            sighting.version.clone()
        } else {
            format!("{}/{}", sighting.group, sighting.version)
        };
        let resource = ApiResource {
            group: sighting.group.clone(),
            version: sighting.version.clone(),
            api_version,
            kind: String::new(),
            plural: sighting.resource.clone(),
        };
        let api: Api<DynamicObject> = match &sighting.namespace {
            Some(ns) => Api::namespaced_with(self.0.clone(), ns, &resource),
            None => Api::all_with(self.0.clone(), &resource),
        };
        let name = sighting.name.clone();
        Box::pin(async move {
            let meta = api.get_metadata_opt(&name).await?;
            Ok(meta.map(|m| observed(&m.metadata)))
        })
    }
}

fn time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> SystemTime {
    SystemTime::from(t.0)
}

/// [`Looks`] that take a create the workload watch has already shown from its cache,
/// and GET everything else.
pub struct WatchedThenApi {
    /// The workload watches.
    pub workloads: std::sync::Arc<super::workloads::ClusterWorkloads>,
    /// The GET.
    pub api: ApiLooks,
}

impl Looks for WatchedThenApi {
    fn look(&self, sighting: &Sighting) -> Pending<'_, Option<Observed>> {
        if let (Expect::Created { uid }, Some(ns)) = (&sighting.expect, &sighting.namespace)
            && let Some((seen_uid, created)) =
                self.workloads
                    .created(&sighting.group, &sighting.resource, ns, &sighting.name)
            && seen_uid == *uid
        {
            let observed = Observed {
                uid: seen_uid,
                created: Some(created),
                ..Observed::default()
            };
            return Box::pin(async move { Ok(Some(observed)) });
        }
        self.api.look(sighting)
    }
}

/// What is kept of an object's metadata.
pub fn observed(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Observed {
    Observed {
        uid: meta.uid.clone().unwrap_or_default(),
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        created: meta.creation_timestamp.as_ref().map(time),
        deleting: meta.deletion_timestamp.is_some(),
        writes: meta
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| {
                let at = m.time.as_ref().map(time)?;
                Some((m.subresource.clone().filter(|s| !s.is_empty()), at))
            })
            .collect(),
    }
}

/// Whether `observed` (now) shows the change `expect` describes, reviewed at
/// `reviewed`. `present` is the object's uid when the change was admitted, for a
/// delete (`None`: not known).
pub fn seen(
    expect: &Expect,
    observed: Option<&Observed>,
    reviewed: SystemTime,
    present: Option<&str>,
) -> bool {
    let since = reviewed
        .checked_sub(CLOCK_SLACK)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    match (expect, observed) {
        (Expect::Unchecked, _) => true,
        // Created with the uid the API server gave it in the review, and not long
        // before: a copied uid names an object made earlier.
        (Expect::Created { uid }, Some(o)) => {
            (uid.is_empty() || *uid == o.uid) && o.created.is_some_and(|t| t >= since)
        }
        (Expect::Created { .. }, None) => false,
        // Changed since the version the review showed, by a write of the same
        // subresource made since the review: a review made against an old version
        // of an object nobody writes now never sees one.
        (
            Expect::Updated {
                uid,
                version,
                subresource,
            },
            Some(o),
        ) => {
            let same = uid.is_empty() || *uid == o.uid;
            let moved = *version != o.resource_version;
            let through: Vec<SystemTime> = o
                .writes
                .iter()
                .filter(|(sub, _)| sub == subresource)
                .map(|(_, t)| *t)
                .collect();
            let writes = if through.is_empty() {
                o.writes.iter().map(|(_, t)| *t).collect()
            } else {
                through
            };
            // An object without managedFields tells no time: the version decides.
            let recent = writes.is_empty() || writes.iter().any(|t| *t >= since);
            same && moved && recent
        }
        (Expect::Updated { .. }, None) => false,
        // Gone, replaced, or being deleted, having been there when admitted.
        (Expect::Deleted { uid }, observed) => {
            let uid = if uid.is_empty() {
                present.unwrap_or_default()
            } else {
                uid.as_str()
            };
            if present.is_some_and(|p| !uid.is_empty() && p != uid) {
                // Another object had the name when the change was admitted.
                return false;
            }
            match observed {
                None => true,
                Some(o) => (!uid.is_empty() && o.uid != uid) || o.deleting,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000 + secs)
    }

    fn object(uid: &str, version: &str, created: u64) -> Observed {
        Observed {
            uid: uid.into(),
            resource_version: version.into(),
            created: Some(t(created)),
            deleting: false,
            writes: vec![(None, t(created))],
        }
    }

    #[test]
    fn a_create_is_seen_only_as_the_object_the_review_showed() {
        let expect = Expect::Created { uid: "u1".into() };
        let made = object("u1", "10", 100);
        assert!(seen(&expect, Some(&made), t(100), None));
        assert!(!seen(&expect, None, t(100), None), "never made");
        assert!(
            !seen(&expect, Some(&object("u2", "10", 100)), t(100), None),
            "another object of that name"
        );
        assert!(
            !seen(&expect, Some(&object("u1", "10", 10)), t(100), None),
            "a copied uid of an object made long before"
        );
    }

    #[test]
    fn an_update_is_seen_once_the_object_was_written_since_the_review() {
        let expect = Expect::Updated {
            uid: "u1".into(),
            version: "10".into(),
            subresource: None,
        };
        let mut written = object("u1", "11", 0);
        written.writes = vec![(None, t(99)), (Some("status".into()), t(50))];
        assert!(seen(&expect, Some(&written), t(100), None));
        assert!(
            !seen(&expect, Some(&object("u1", "10", 0)), t(100), None),
            "still the version the review showed"
        );
        let mut old = object("u1", "11", 0);
        old.writes = vec![(None, t(20)), (Some("status".into()), t(100))];
        assert!(
            !seen(&expect, Some(&old), t(100), None),
            "a stale review: only a controller's status write since"
        );
        let scale = Expect::Updated {
            uid: "u1".into(),
            version: "10".into(),
            subresource: Some("scale".into()),
        };
        let mut scaled = object("u1", "12", 0);
        scaled.writes = vec![(None, t(20)), (Some("scale".into()), t(100))];
        assert!(seen(&scale, Some(&scaled), t(100), None));
        assert!(!seen(&expect, None, t(100), None), "gone");
    }

    #[test]
    fn a_delete_is_seen_when_the_object_that_was_there_is_gone() {
        let expect = Expect::Deleted { uid: "u1".into() };
        assert!(seen(&expect, None, t(100), Some("u1")));
        assert!(
            seen(&expect, None, t(100), None),
            "not looked at when admitted"
        );
        assert!(
            seen(&expect, Some(&object("u2", "1", 100)), t(100), Some("u1")),
            "recreated"
        );
        let mut deleting = object("u1", "11", 0);
        deleting.deleting = true;
        assert!(seen(&expect, Some(&deleting), t(100), Some("u1")));
        assert!(
            !seen(&expect, Some(&object("u1", "10", 0)), t(100), Some("u1")),
            "still there"
        );
        assert!(
            !seen(&expect, None, t(100), Some("u9")),
            "another object was there: the review was not about it"
        );
        let eviction = Expect::Deleted { uid: String::new() };
        assert!(seen(&eviction, None, t(100), Some("pod-uid")));
        assert!(!seen(
            &eviction,
            Some(&object("pod-uid", "3", 0)),
            t(100),
            Some("pod-uid")
        ));
    }
}
