//! Turning manifests into the AdmissionReview v1 requests the API server would send,
//! so `check` runs them through the webhook's own engine.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

pub use crate::change::Operation;

use super::apply;
use super::input::{Manifest, Origin};
use super::resources::{ResourceInfo, Resources};

/// The namespace a namespaced object without one lands in, as with kubectl.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The group every authenticated user is in; the API server adds it to every request.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// `object` as the API server would present it to the webhook: a manifest with the
/// server's defaults, an object read from a server as it is.
fn served(mut object: Value) -> Value {
    if !apply::is_live(&object) {
        crate::defaults::apply(&mut object);
    }
    object
}

/// Who `check` speaks as: the user and field manager the API server would report
/// (not [`crate::change::Requester`], the engine's reading of them).
#[derive(Debug, Clone)]
pub struct Caller {
    /// `userInfo.username`.
    pub username: String,
    /// `userInfo.groups`, without `system:authenticated` (added here).
    pub groups: Vec<String>,
    /// `options.fieldManager` of CREATE and UPDATE (DELETE has none).
    pub field_manager: Option<String>,
}

/// The options kind the API server sends with an operation.
fn options_kind(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        // `check` plans no CONNECT; DeleteOptions is what the API server sends for
        // the only other operation a manifest can lead to.
        Operation::Delete | Operation::Connect => "DeleteOptions",
    }
}

/// An object's identity: what `--old` objects are matched to new ones by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// API group, `""` for core.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace: the object's, else the default; `None` when cluster-scoped (for an
    /// unknown kind, the namespace as written).
    pub namespace: Option<String>,
    /// `metadata.name`, else `metadata.generateName`.
    pub name: String,
}

/// What `--old` objects are matched by: group, kind, namespace and name (not the
/// version: the same object read through another version is the same object).
type MatchKey = (String, String, Option<String>, String);

impl ObjectKey {
    fn matching(&self) -> MatchKey {
        (
            self.group.clone(),
            self.kind.clone(),
            self.namespace.clone(),
            self.name.clone(),
        )
    }
}

/// Why an object cannot become a request.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// No `metadata.name` nor `metadata.generateName`.
    #[error("{origin}: {kind} has no metadata.name")]
    NoName {
        /// Where.
        origin: Origin,
        /// The kind.
        kind: String,
    },
    /// `generateName` only works for CREATE.
    #[error(
        "{origin}: {kind} has only metadata.generateName; an update or delete needs metadata.name"
    )]
    GeneratedName {
        /// Where.
        origin: Origin,
        /// The kind.
        kind: String,
    },
}

/// One object ready for the engine, or skipped.
#[derive(Debug)]
pub struct Planned {
    /// Where the object was read from.
    pub origin: Origin,
    /// The object's identity.
    pub key: ObjectKey,
    /// What is done to it.
    pub operation: Operation,
    /// The AdmissionReview to judge, or `None` when the kind is unknown.
    pub review: Option<Value>,
}

/// Builds the requests for a set of manifests.
#[derive(Debug)]
pub struct Planner {
    /// The API resources of the kinds it can plan requests for.
    pub resources: Resources,
    /// Default namespace for namespaced objects without one.
    pub namespace: String,
    /// Who the reviews say sent them.
    pub caller: Caller,
}

impl Planner {
    /// Learns the custom kinds defined by CustomResourceDefinitions among `manifests`.
    pub fn learn_definitions<'a>(&mut self, manifests: impl IntoIterator<Item = &'a Manifest>) {
        for m in manifests {
            self.resources
                .learn_definition(&Value::Object(m.object.clone()));
        }
    }

    /// The identity of a manifest, with its namespace resolved as the API server would.
    pub fn key(&self, m: &Manifest) -> ObjectKey {
        let api_version = text(&m.object, "apiVersion").unwrap_or_default();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        let kind = text(&m.object, "kind").unwrap_or_default().to_string();
        let metadata = m.object.get("metadata").and_then(Value::as_object);
        let field = |f: &str| {
            metadata
                .and_then(|md| md.get(f))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let namespace = match self.resources.lookup(&group, &kind) {
            Some(info) if info.namespaced => {
                Some(field("namespace").unwrap_or(&self.namespace).to_string())
            }
            Some(_) => None,
            // Scope unknown: the namespace as written, to name the object.
            None => field("namespace").map(str::to_string),
        };
        let name = field("name")
            .or_else(|| field("generateName"))
            .unwrap_or_default()
            .to_string();
        ObjectKey {
            group,
            version,
            kind,
            namespace,
            name,
        }
    }

    /// Plans every manifest: DELETE when `delete`, else UPDATE when `old` holds an
    /// object with the same group, kind, namespace and name, else CREATE.
    pub fn plan(
        &self,
        manifests: Vec<Manifest>,
        old: Vec<Manifest>,
        delete: bool,
    ) -> Result<Vec<Planned>, SynthError> {
        self.plan_each(manifests, old, delete).into_iter().collect()
    }

    /// [`Planner::plan`], with an answer for each manifest: one that cannot become a
    /// request does not stop the others from being planned.
    pub fn plan_each(
        &self,
        manifests: Vec<Manifest>,
        old: Vec<Manifest>,
        delete: bool,
    ) -> Vec<Result<Planned, SynthError>> {
        let mut current: HashMap<MatchKey, Value> = HashMap::new();
        for m in old {
            current
                .entry(self.key(&m).matching())
                .or_insert(Value::Object(m.object));
        }
        let mut planned = Vec::with_capacity(manifests.len());
        for (index, m) in manifests.into_iter().enumerate() {
            let key = self.key(&m);
            let old = current.get(&key.matching()).cloned();
            planned.push(self.plan_one(index, m, key, old, delete));
        }
        planned
    }

    fn plan_one(
        &self,
        index: usize,
        m: Manifest,
        key: ObjectKey,
        old: Option<Value>,
        delete: bool,
    ) -> Result<Planned, SynthError> {
        let operation = match (delete, &old) {
            (true, _) => Operation::Delete,
            (false, Some(_)) => Operation::Update,
            (false, None) => Operation::Create,
        };
        let has_name = m
            .object
            .get("metadata")
            .and_then(|md| md.get("name"))
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if key.name.is_empty() {
            return Err(SynthError::NoName {
                origin: m.origin,
                kind: key.kind,
            });
        }
        if !has_name && operation != Operation::Create {
            return Err(SynthError::GeneratedName {
                origin: m.origin,
                kind: key.kind,
            });
        }
        let Some(info) = self.resources.lookup(&key.group, &key.kind) else {
            return Ok(Planned {
                origin: m.origin,
                key,
                operation,
                review: None,
            });
        };
        let manifest = self.placed(Value::Object(m.object), &key);
        let old = old.map(|o| self.placed(o, &key));
        // Every object is presented as the API server would present it: a manifest
        // with the server's defaults (crate::defaults), an object read from the
        // cluster (or its server-side dry run) as it is.
        let (object, old_object) = match operation {
            Operation::Create => (Some(served(manifest)), None),
            // A server's dry-run answer (`check --server`) is the new object itself.
            Operation::Update if apply::is_live(&manifest) => (Some(manifest), old.map(served)),
            Operation::Update => {
                let (old, mut new) = apply::update_pair(old.unwrap_or(Value::Null), manifest);
                // Merged over a live object, the manifest's parts (a new container)
                // still lack their defaults; defaulting leaves set fields alone, so
                // the live parts stay as they are.
                crate::defaults::apply(&mut new);
                (Some(new), Some(served(old)))
            }
            // The object being deleted is the cluster's when known, else the file's.
            // (A manifest never plans a CONNECT.)
            Operation::Delete | Operation::Connect => (None, Some(served(old.unwrap_or(manifest)))),
        };
        let review = self.review(index, info, &key, operation, object, old_object, has_name);
        Ok(Planned {
            origin: m.origin,
            key,
            operation,
            review: Some(review),
        })
    }

    /// The object as the API server presents it: in its resolved namespace, and
    /// without one when the kind is cluster-scoped.
    fn placed(&self, mut object: Value, key: &ObjectKey) -> Value {
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            match &key.namespace {
                Some(ns) => {
                    metadata.insert("namespace".into(), Value::String(ns.clone()));
                }
                None => {
                    metadata.remove("namespace");
                }
            }
        }
        object
    }

    #[allow(clippy::too_many_arguments)]
    fn review(
        &self,
        index: usize,
        info: &ResourceInfo,
        key: &ObjectKey,
        operation: Operation,
        object: Option<Value>,
        old_object: Option<Value>,
        has_name: bool,
    ) -> Value {
        let kind = json!({"group": key.group, "version": key.version, "kind": key.kind});
        let resource = json!({"group": key.group, "version": key.version, "resource": info.plural});
        let mut groups = self.caller.groups.clone();
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.to_string());
        }
        let mut options = json!({"kind": options_kind(operation), "apiVersion": "meta.k8s.io/v1"});
        match (operation, &self.caller.field_manager) {
            // DeleteOptions has no fieldManager: the API server never reports one for
            // DELETE. kubectl delete asks for background propagation.
            (Operation::Delete, _) => options["propagationPolicy"] = json!("Background"),
            (_, Some(manager)) => options["fieldManager"] = Value::String(manager.clone()),
            (_, None) => {}
        }
        let mut request = json!({
            // The API server sends a UUID; a stable one keeps check's output reproducible.
            "uid": format!("00000000-0000-4000-8000-{:012x}", index + 1),
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            // On CREATE with generateName, the name is not known yet.
            "name": if has_name { key.name.as_str() } else { "" },
            "operation": operation.as_str(),
            "userInfo": {"username": self.caller.username, "groups": groups},
            "object": object,
            "oldObject": old_object,
            "dryRun": false,
            "options": options,
        });
        if let Some(ns) = &key.namespace {
            request["namespace"] = Value::String(ns.clone());
        }
        json!({
            "apiVersion": crate::review::API_VERSION,
            "kind": crate::review::KIND,
            "request": request,
        })
    }
}

fn text<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(yaml: &str) -> Manifest {
        let Ok(Value::Object(object)) =
            serde_saphyr::from_str_with_options::<Value>(yaml, crate::yaml::options())
        else {
            panic!("test manifest must be a mapping: {yaml}");
        };
        Manifest {
            origin: Origin {
                file: "t.yaml".into(),
                document: 1,
                item: None,
                ..Origin::default()
            },
            object,
        }
    }

    fn planner() -> Planner {
        Planner {
            resources: Resources::builtin(),
            namespace: "team".into(),
            caller: Caller {
                username: "alice".into(),
                groups: vec!["devs".into()],
                field_manager: Some("kubectl-ai".into()),
            },
        }
    }

    const DEPLOY: &str =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec: {replicas: 3}\n";

    #[test]
    fn create_request_has_the_api_servers_fields() {
        let planned = planner()
            .plan(vec![manifest(DEPLOY)], vec![], false)
            .expect("plans");
        let review = planned[0].review.as_ref().expect("known kind");
        let r = &review["request"];
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(r["operation"], "CREATE");
        assert_eq!(
            r["kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert_eq!(r["resource"]["resource"], "deployments");
        assert_eq!(r["namespace"], "team");
        assert_eq!(r["object"]["metadata"]["namespace"], "team");
        assert_eq!(r["oldObject"], Value::Null);
        assert_eq!(r["userInfo"]["username"], "alice");
        assert_eq!(
            r["userInfo"]["groups"],
            json!(["devs", "system:authenticated"])
        );
        assert_eq!(
            r["options"],
            json!({"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-ai"})
        );
    }

    #[test]
    fn operation_follows_old_state_and_delete_flag() {
        let old_same = manifest(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: team}\nspec: {replicas: 1}\n",
        );
        let old_other_ns = manifest(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: prod}\nspec: {replicas: 1}\n",
        );
        let cases = [
            (vec![], false, "CREATE"),
            (vec![old_other_ns.clone()], false, "CREATE"),
            (vec![old_same.clone()], false, "UPDATE"),
            (vec![], true, "DELETE"),
            (vec![old_same.clone()], true, "DELETE"),
        ];
        for (old, delete, expected) in cases {
            let n_old = old.len();
            let planned = planner()
                .plan(vec![manifest(DEPLOY)], old, delete)
                .expect("plans");
            let r = &planned[0].review.as_ref().expect("known")["request"];
            assert_eq!(r["operation"], expected, "old={n_old} delete={delete}");
            match expected {
                "DELETE" => {
                    assert_eq!(r["object"], Value::Null);
                    assert_eq!(r["options"]["kind"], "DeleteOptions");
                    assert!(r["options"].get("fieldManager").is_none());
                    let replicas = if n_old == 1 { 1 } else { 3 };
                    assert_eq!(r["oldObject"]["spec"]["replicas"], replicas);
                }
                "UPDATE" => assert_eq!(r["oldObject"]["spec"]["replicas"], 1),
                _ => assert_eq!(r["oldObject"], Value::Null),
            }
        }
    }

    #[test]
    fn cluster_scoped_and_unknown_kinds() {
        let planned = planner()
            .plan(
                vec![
                    manifest(
                        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x, namespace: stray}\n",
                    ),
                    manifest("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"),
                ],
                vec![],
                false,
            )
            .expect("plans");
        let ns = &planned[0].review.as_ref().expect("known")["request"];
        assert!(ns.get("namespace").is_none());
        assert!(ns["object"]["metadata"].get("namespace").is_none());
        assert!(planned[1].review.is_none());
        assert_eq!(planned[1].key.kind, "Widget");
    }

    #[test]
    fn names_are_required_except_generated_creates() {
        let generated = "apiVersion: batch/v1\nkind: Job\nmetadata: {generateName: run-}\n";
        let planned = planner()
            .plan(vec![manifest(generated)], vec![], false)
            .expect("plans");
        assert_eq!(
            planned[0].review.as_ref().expect("known")["request"]["name"],
            ""
        );
        let err = planner()
            .plan(vec![manifest(generated)], vec![], true)
            .expect_err("delete needs a name");
        assert!(err.to_string().contains("needs metadata.name"), "{err}");
        let err = planner()
            .plan(
                vec![manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")],
                vec![],
                false,
            )
            .expect_err("no name");
        assert_eq!(
            err.to_string(),
            "t.yaml (document 1): ConfigMap has no metadata.name"
        );
    }
}
