//! Reading an AdmissionReview off the wire and writing the answer back.
//!
//! The request is read as a borrowed view ([`RequestView`]) in one pass over the body:
//! strings point into the body, and of `object` and `oldObject` only what a decision
//! can read is kept ([`ObjectParts`]), left raw; managedFields, the last-applied
//! configuration and the status are skipped without being kept. A person's change is
//! judged from the annotations alone. Only an AI-assisted change reads further into
//! the kept raw parts ([`ObjectParts::raw_at`]), and only an approval digest reads a
//! kept object whole ([`KeptObject`]); the body is never read twice. The view is
//! allowed on the hot path only while `tests/review_view.rs` holds it equal to
//! kube-rs's reading of every fixture and of generated reviews.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kube::core::TypeMeta;
use kube::core::admission::AdmissionResponse;
use kube::core::response::Status;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

/// The only AdmissionReview version served (the chart registers `[v1]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The AdmissionReview kind.
pub const KIND: &str = "AdmissionReview";

/// The admission operation, in the API server's spelling on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
    /// CONNECT (never a workload change; always allowed)
    Connect,
}

impl Operation {
    /// The API server's spelling, used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// Why a request body is not an AdmissionReview blastguard can judge.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("the body is not a valid AdmissionReview: {0}")]
    Malformed(String),
    /// `apiVersion` is not `admission.k8s.io/v1`.
    #[error(
        "unsupported AdmissionReview apiVersion {0:?}: blastguard serves admission.k8s.io/v1 only"
    )]
    ApiVersion(String),
    /// `kind` is not `AdmissionReview`.
    #[error("expected kind AdmissionReview, got {0:?}")]
    Kind(String),
    /// No `request` in the review.
    #[error("the AdmissionReview has no request")]
    MissingRequest,
}

impl ReviewError {
    /// A stable snake_case name (the `reason` label of the request metric).
    pub fn label(&self) -> &'static str {
        match self {
            ReviewError::Malformed(_) => "malformed",
            ReviewError::ApiVersion(_) => "unsupported_api_version",
            ReviewError::Kind(_) => "wrong_kind",
            ReviewError::MissingRequest => "missing_request",
        }
    }
}

/// A review that could not be judged, with the uid when it could be read, so the
/// answer still reaches the right request.
#[derive(Debug)]
pub struct Rejected {
    /// `request.uid`, if readable.
    pub uid: Option<String>,
    /// What is wrong.
    pub error: ReviewError,
}

/// The review's envelope.
#[derive(Deserialize)]
struct ReviewView<'a> {
    #[serde(rename = "apiVersion", default, borrow)]
    api_version: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<RequestView<'a>>,
}

/// `request.kind`: the kind of the object (for a subresource, the subresource's kind).
#[derive(Debug, Deserialize, Default)]
pub struct GroupVersionKind<'a> {
    /// API group (`""` for core).
    #[serde(default, borrow)]
    pub group: Cow<'a, str>,
    /// API version within the group, e.g. `v1`.
    #[serde(default, borrow)]
    pub version: Cow<'a, str>,
    /// Kind, e.g. `Deployment`.
    #[serde(default, borrow)]
    pub kind: Cow<'a, str>,
}

/// `request.resource`: the resource addressed.
#[derive(Debug, Deserialize, Default)]
pub struct GroupVersionResource<'a> {
    /// API group.
    #[serde(default, borrow)]
    pub group: Cow<'a, str>,
    /// Version.
    #[serde(default, borrow)]
    pub version: Cow<'a, str>,
    /// Plural resource name.
    #[serde(default, borrow)]
    pub resource: Cow<'a, str>,
}

/// `request.userInfo`.
#[derive(Debug, Deserialize, Default)]
pub struct UserInfo<'a> {
    /// Username, e.g. `system:serviceaccount:ai-agents:claude`.
    #[serde(default, borrow)]
    pub username: Option<Cow<'a, str>>,
    /// The user's groups.
    #[serde(default, borrow, deserialize_with = "borrowed_strings")]
    pub groups: Option<Vec<Cow<'a, str>>>,
}

/// `request.options`: only the field manager is read.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Options<'a> {
    /// `fieldManager` of CREATE and UPDATE.
    #[serde(default, borrow)]
    pub field_manager: Option<Cow<'a, str>>,
}

/// The parts of `request` a decision reads, borrowed from the body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestView<'a> {
    /// The uid the answer must echo.
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    /// The object's kind.
    #[serde(default, borrow)]
    pub kind: GroupVersionKind<'a>,
    /// The resource addressed.
    #[serde(default, borrow)]
    pub resource: GroupVersionResource<'a>,
    /// `scale`, `eviction`, `status`, ... when the request is to a subresource.
    #[serde(default, borrow)]
    pub sub_resource: Option<Cow<'a, str>>,
    /// The object's name (empty on CREATE with generateName).
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    /// The namespace; absent or empty for cluster-scoped objects.
    #[serde(default, borrow)]
    pub namespace: Option<Cow<'a, str>>,
    /// The operation.
    pub operation: Operation,
    /// Who asks.
    #[serde(default, borrow)]
    pub user_info: UserInfo<'a>,
    /// What a decision reads of the new object (`None` when there is no object).
    #[serde(default, borrow)]
    pub object: Option<ObjectParts<'a>>,
    /// What a decision reads of the old object (`None` when there is no old object).
    #[serde(default, borrow)]
    pub old_object: Option<ObjectParts<'a>>,
    /// Whether the request is a dry run.
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Create/update/delete options.
    #[serde(default, borrow)]
    pub options: Option<Options<'a>>,
}

impl RequestView<'_> {
    /// The subresource, `None` when empty.
    pub fn subresource(&self) -> Option<&str> {
        self.sub_resource.as_deref().filter(|s| !s.is_empty())
    }

    /// The namespace, `None` when empty.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|s| !s.is_empty())
    }

    /// The field manager, `None` when empty.
    pub fn field_manager(&self) -> Option<&str> {
        self.options
            .as_ref()
            .and_then(|o| o.field_manager.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// Decodes a review body into its request view.
pub fn decode(body: &[u8]) -> Result<RequestView<'_>, Rejected> {
    let malformed = |error: String| Rejected {
        uid: salvage_uid(body),
        error: ReviewError::Malformed(error),
    };
    // The whole body is checked as UTF-8 once, as JSON text must be, so the reader
    // does not check again each string and raw value it borrows.
    let text = std::str::from_utf8(body)
        .map_err(|e| malformed(format!("the body is not UTF-8 text: {e}")))?;
    let review: ReviewView<'_> =
        serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    let uid = review.request.as_ref().map(|r| r.uid.to_string());
    let fail = |error| Rejected {
        uid: uid.clone(),
        error,
    };
    if review.api_version != API_VERSION {
        return Err(fail(ReviewError::ApiVersion(
            review.api_version.into_owned(),
        )));
    }
    if review.kind != KIND {
        return Err(fail(ReviewError::Kind(review.kind.into_owned())));
    }
    review
        .request
        .ok_or_else(|| fail(ReviewError::MissingRequest))
}

/// The uid of a body that does not parse as a full review but is JSON with one.
fn salvage_uid(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Uid {
        uid: String,
    }
    #[derive(Deserialize)]
    struct Shell {
        request: Option<Uid>,
    }
    serde_json::from_slice::<Shell>(body)
        .ok()
        .and_then(|s| s.request)
        .map(|r| r.uid)
        .filter(|u| !u.is_empty())
}

/// An object's annotations, keys borrowed and values left raw: only the values a
/// decision looks up (the provenance markers) are ever unescaped, never the
/// kilobytes of `kubectl.kubernetes.io/last-applied-configuration`.
#[derive(Debug, Default)]
pub struct RawAnnotations<'a>(BTreeMap<Cow<'a, str>, &'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for RawAnnotations<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // A key that came twice counts as its last value, as in any JSON map.
        Members::deserialize(deserializer).map(|m| RawAnnotations(m.0))
    }
}

impl RawAnnotations<'_> {
    /// The value of `key`, if present and a string.
    pub fn get(&self, key: &str) -> Option<Cow<'_, str>> {
        let raw = self.0.get(key)?;
        serde_json::from_str::<Cow<'_, str>>(raw.get()).ok()
    }

    /// Whether the object has no annotations.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every annotation, values raw.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), *v))
    }
}

static NO_ANNOTATIONS: RawAnnotations<'static> = RawAnnotations(BTreeMap::new());

impl<'a> RequestView<'a> {
    /// The annotations of the new and the old object. A subresource's object (Scale,
    /// Eviction) carries none of the workload's, so it has none here.
    pub fn annotations(&self) -> (&RawAnnotations<'a>, &RawAnnotations<'a>) {
        let foreign = self.subresource().is_some_and(is_foreign_subresource);
        fn of<'s, 'a>(parts: &'s Option<ObjectParts<'a>>, foreign: bool) -> &'s RawAnnotations<'a> {
            match parts {
                Some(parts) if !foreign => &parts.annotations,
                _ => &NO_ANNOTATIONS,
            }
        }
        (of(&self.object, foreign), of(&self.old_object, foreign))
    }

    /// Whether the request is to a subresource whose object is of another kind than
    /// the object's own ([`FOREIGN_SUBRESOURCES`]).
    pub fn is_foreign_subresource(&self) -> bool {
        self.subresource().is_some_and(is_foreign_subresource)
    }
}

/// Subresources whose request object is of another kind than the object they act
/// on: a Scale, an Eviction, a Binding, a TokenRequest. Their annotations are not the
/// object's, so they say nothing of its provenance, and their provenance is the
/// requester's alone. Every other subresource (`status`, `resize`,
/// `ephemeralcontainers`, `finalize`, ...) carries the whole object and is judged
/// like it (docs/policy.md). The chart's matchConditions name the same list
/// (tests/chart_webhook.rs holds them equal).
pub const FOREIGN_SUBRESOURCES: &[&str] = &["scale", "eviction", "binding", "token"];

/// Whether `subresource` is one of [`FOREIGN_SUBRESOURCES`].
pub fn is_foreign_subresource(subresource: &str) -> bool {
    FOREIGN_SUBRESOURCES.contains(&subresource)
}

/// What a decision reads of an object, kept in the one pass over the body: every
/// top-level field but `apiVersion`, `kind`, `status` and `metadata` (the spec, or
/// `rules`, `data`, ...) as raw JSON, and of metadata its name, generateName, labels
/// (raw) and annotations (values raw). The rest of metadata (managedFields, the
/// last-applied configuration) and the status are skipped without being kept.
///
/// A person's change reads only the annotations; an AI-assisted change reads the
/// raw fields along the paths it measures ([`ObjectParts::raw_at`]), so the body is
/// read once.
#[derive(Debug, Default)]
pub struct ObjectParts<'a> {
    /// The top-level fields kept, raw, in the order they came.
    pub fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// `metadata.name`.
    pub name: Option<Cow<'a, str>>,
    /// `metadata.generateName`.
    pub generate_name: Option<Cow<'a, str>>,
    /// `metadata.labels`, raw.
    pub labels: Option<&'a RawValue>,
    /// `metadata.annotations`, values raw.
    pub annotations: RawAnnotations<'a>,
    /// `metadata.ownerReferences`, raw: the garbage collector deletes an object whose
    /// owners are gone, so a change of them can delete the object and its pods.
    pub owner_references: Option<&'a RawValue>,
    /// `metadata.uid`, `metadata.resourceVersion` and `metadata.creationTimestamp`: how
    /// a replica later tells whether the change happened (docs/security.md, "Forged
    /// reviews on a default install").
    pub identity: ObjectIdentity<'a>,
    /// `status`, raw and outside [`Self::fields`] (never digested): whether a rollout
    /// is still pending when a paused one is resumed, and what a PodDisruptionBudget
    /// protects, are read from the old object's status.
    pub status: Option<&'a RawValue>,
    /// The members of `spec`, read on the first pointer into it: a decision reads the
    /// replicas, the template and the other fields of one spec.
    spec: std::cell::OnceCell<RawMap<'a>>,
}

/// What identifies one stored version of an object.
#[derive(Debug, Default, Clone)]
pub struct ObjectIdentity<'a> {
    /// `metadata.uid` (set by the API server before validating admission, on CREATE too).
    pub uid: Option<Cow<'a, str>>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<Cow<'a, str>>,
    /// `metadata.creationTimestamp`.
    pub creation_timestamp: Option<Cow<'a, str>>,
}

impl<'a> ObjectParts<'a> {
    /// The object as a decision reads it, as JSON text: the kept fields, raw as they
    /// came, and `metadata` reduced to name, generateName and labels. Copying the raw
    /// parts costs a fraction of parsing them; [`KeptObject`] parses the text only
    /// when an approval digest needs it.
    pub fn kept_text(&self) -> String {
        let capacity = self
            .fields
            .iter()
            .map(|(k, v)| k.len().saturating_add(v.get().len()))
            .chain(self.labels.map(|l| l.get().len()))
            .fold(64usize, usize::saturating_add);
        let mut text = String::with_capacity(capacity);
        text.push('{');
        for (key, raw) in &self.fields {
            push_string(&mut text, key);
            text.push(':');
            text.push_str(raw.get());
            text.push(',');
        }
        text.push_str("\"metadata\":{");
        let mut first = true;
        let mut field = |text: &mut String, name: &str, value: &str| {
            if !std::mem::take(&mut first) {
                text.push(',');
            }
            push_string(text, name);
            text.push(':');
            text.push_str(value);
        };
        for (name, value) in [("name", &self.name), ("generateName", &self.generate_name)] {
            if let Some(value) = value {
                let mut quoted = String::with_capacity(value.len().saturating_add(2));
                push_string(&mut quoted, value);
                field(&mut text, name, &quoted);
            }
        }
        if let Some(labels) = self.labels {
            field(&mut text, "labels", labels.get());
        }
        text.push_str("}}");
        text
    }

    /// The object as a decision reads it, parsed (the value of [`Self::kept_text`]):
    /// what `tests/review_view.rs` holds equal to kube-rs's reading. A field that came
    /// twice counts as its last value, as in any JSON map.
    pub fn to_value(&self) -> Result<serde_json::Value, ReviewError> {
        serde_json::from_str(&self.kept_text()).map_err(|e| ReviewError::Malformed(e.to_string()))
    }

    /// The raw value at a JSON pointer (`/spec/template`), read through the raw parts
    /// without parsing what lies beside the path. `None` where the path ends early,
    /// as [`serde_json::Value::pointer`].
    pub fn raw_at(&self, pointer: &str) -> Option<&'a RawValue> {
        let mut segments = pointer.strip_prefix('/')?.split('/');
        let first = unescape_pointer(segments.next()?);
        let mut at = self.field(&first)?;
        let mut rest = segments.next();
        if first == "spec"
            && let (Some(spec), Some(second)) = (self.spec(), rest)
        {
            at = spec.get(&unescape_pointer(second))?;
            rest = segments.next();
        }
        while let Some(segment) = rest {
            at = raw_child(at, &unescape_pointer(segment))?;
            rest = segments.next();
        }
        Some(at)
    }

    /// The top-level field `key`, raw (its last, as in any JSON map).
    pub fn field(&self, key: &str) -> Option<&'a RawValue> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, raw)| *raw)
    }

    /// The members of `spec` when it is an object, read once however often asked.
    pub fn spec(&self) -> Option<&RawMap<'a>> {
        let raw = self.field("spec")?;
        raw.get()
            .starts_with('{')
            .then(|| self.spec.get_or_init(|| RawMap::of(raw)))
    }
}

/// An object as a change keeps it: the text of [`ObjectParts::kept_text`]. Only an
/// approval digest reads it again, from the text, so a change admitted within its
/// limits never parses its objects.
#[derive(Debug, Clone)]
pub struct KeptObject {
    text: String,
}

impl KeptObject {
    /// Keeps the decision's parts of `parts`.
    pub fn new(parts: &ObjectParts<'_>) -> Self {
        Self {
            text: parts.kept_text(),
        }
    }

    /// The object as JSON text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// `text` as a JSON string literal.
fn push_string(out: &mut String, text: &str) {
    // serde_json's own escaping; writing to a String cannot fail.
    if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}

/// A JSON pointer segment with `~1` and `~0` decoded (RFC 6901).
fn unescape_pointer(segment: &str) -> Cow<'_, str> {
    if segment.contains('~') {
        Cow::Owned(segment.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(segment)
    }
}

/// The member `key` of a raw object (its last, as in any JSON map), or the element
/// at index `key` of a raw array; `None` for anything else.
fn raw_child<'a>(raw: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    match raw.get().as_bytes().first()? {
        b'{' => RawMap::of(raw).get(key),
        b'[' => {
            // As serde_json's pointer: a plain decimal index, no sign, no leading zero.
            if key.starts_with('+') || (key.len() > 1 && key.starts_with('0')) {
                return None;
            }
            let index: usize = key.parse().ok()?;
            serde_json::from_str::<Vec<&'a RawValue>>(raw.get())
                .ok()?
                .get(index)
                .copied()
        }
        _ => None,
    }
}

/// A list of strings, each borrowed from the body unless it has escapes.
fn borrowed_strings<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<Cow<'a, str>>>, D::Error> {
    let strings: Option<Vec<Key<'a>>> = Deserialize::deserialize(deserializer)?;
    Ok(strings.map(|s| s.into_iter().map(|Key(k)| k).collect()))
}

/// A string, borrowed from the body unless it has escapes. (serde's own `Cow<str>`
/// always copies: it borrows only as a derive's field with `#[serde(borrow)]`, not
/// as a map key or a list item.)
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Key<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// A JSON object's members, values raw, in the order they came.
#[derive(Debug, Default)]
pub struct RawMap<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> RawMap<'a> {
    /// The members of a raw value; empty when it is not an object.
    pub fn of(raw: &'a RawValue) -> Self {
        serde_json::from_str(raw.get()).unwrap_or_default()
    }

    /// The value of `key` (its last, as in any JSON map).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawMap<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Members::deserialize(deserializer).map(|m| RawMap(m.0))
    }
}

/// A JSON object's members gathered into `C`: keys borrowed where they can be
/// ([`Key`]), values raw.
struct Members<C>(C);

impl<'de: 'a, 'a, C> Deserialize<'de> for Members<C>
where
    C: Default + Extend<(Cow<'a, str>, &'a RawValue)>,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a, C>(std::marker::PhantomData<(&'a (), C)>);
        impl<'de: 'a, 'a, C> serde::de::Visitor<'de> for Visitor<'a, C>
        where
            C: Default + Extend<(Cow<'a, str>, &'a RawValue)>,
        {
            type Value = Members<C>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut members = C::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    members.extend(std::iter::once((key, map.next_value()?)));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ObjectParts<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Meta<'a> {
            #[serde(default, borrow)]
            name: Option<Cow<'a, str>>,
            #[serde(default, borrow)]
            generate_name: Option<Cow<'a, str>>,
            #[serde(default, borrow)]
            labels: Option<&'a RawValue>,
            #[serde(default, borrow)]
            annotations: Option<RawAnnotations<'a>>,
            #[serde(default, borrow)]
            owner_references: Option<&'a RawValue>,
            #[serde(default, borrow)]
            uid: Option<Cow<'a, str>>,
            #[serde(default, borrow)]
            resource_version: Option<Cow<'a, str>>,
            #[serde(default, borrow)]
            creation_timestamp: Option<Cow<'a, str>>,
        }
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = ObjectParts<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Kubernetes object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut parts = ObjectParts {
                    // The top-level fields an object keeps: `spec`, or a few like it.
                    fields: Vec::with_capacity(4),
                    ..ObjectParts::default()
                };
                while let Some(key) = map.next_key::<Key<'de>>()?.map(|k| k.0) {
                    match key.as_ref() {
                        "apiVersion" | "kind" => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        "status" => parts.status = map.next_value()?,
                        "metadata" => {
                            let meta: Option<Meta<'a>> = map.next_value()?;
                            let meta = meta.unwrap_or(Meta {
                                name: None,
                                generate_name: None,
                                labels: None,
                                annotations: None,
                                owner_references: None,
                                uid: None,
                                resource_version: None,
                                creation_timestamp: None,
                            });
                            parts.name = meta.name;
                            parts.generate_name = meta.generate_name;
                            parts.labels = meta.labels;
                            parts.annotations = meta.annotations.unwrap_or_default();
                            parts.owner_references = meta.owner_references;
                            parts.identity = ObjectIdentity {
                                uid: meta.uid,
                                resource_version: meta.resource_version,
                                creation_timestamp: meta.creation_timestamp,
                            };
                        }
                        _ => {
                            let value = map.next_value()?;
                            parts.fields.push((key, value));
                        }
                    }
                }
                Ok(parts)
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// The allowed response to the request with `uid`, to be filled in from a verdict.
pub fn response_for(uid: &str) -> AdmissionResponse {
    // kube-rs builds its AdmissionResponse from its own request type only; start from
    // `invalid` and set every field, so nothing of it is left over.
    let mut response = AdmissionResponse::invalid("");
    response.types = TypeMeta {
        api_version: API_VERSION.to_string(),
        kind: KIND.to_string(),
    };
    response.uid = uid.to_string();
    response.allowed = true;
    response.result = Status::default();
    response
}

/// Serializes an answer as the AdmissionReview the API server expects.
pub fn encode(response: AdmissionResponse) -> Vec<u8> {
    // An AdmissionReview of strings, bools and maps of strings cannot fail to
    // serialize; an empty body would be refused by the API server, never admitted.
    // Sized for an allowed answer with its audit annotations, so it rarely grows.
    let mut out = Vec::with_capacity(512);
    match serde_json::to_writer(&mut out, &response.into_review()) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// The answer to a review that could not be judged: a denial with status 400 that
/// echoes the uid. The API server then fails the request with this message.
pub fn encode_rejection(uid: &str, message: &str) -> Vec<u8> {
    let review = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "response": {
            "uid": uid,
            "allowed": false,
            "status": {"code": 400, "reason": "BadRequest", "message": message}
        }
    });
    serde_json::to_vec(&review).unwrap_or_default()
}

/// How many bytes at the start of `bytes` a JSON string holds as they are: the length
/// of the longest prefix without a quote, a backslash or a control character (below
/// 0x20), the bytes JSON escapes. Eight bytes are looked at in one step (a word in
/// which no byte is below 0x20 or equal to `"` or `\\` has no bit of `HIGH` left in
/// the mask below; a word that has one is looked at byte by byte), which makes the
/// writers that escape text into a response or copy a digest's strings cost a
/// fraction of a byte-by-byte search.
pub(crate) fn plain_json_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES.wrapping_mul(b'"' as u64);
    const BACKSLASHES: u64 = ONES.wrapping_mul(b'\\' as u64);
    const SPACES: u64 = ONES.wrapping_mul(0x20);
    let mut at = 0usize;
    for chunk in bytes.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(word);
        // A byte below 0x20, or one that is zero once xor-ed with `"` or `\\`, sets
        // its high bit here; a byte of 0x80 or above never does (`!x`).
        let below = x.wrapping_sub(SPACES);
        let quote = (x ^ QUOTES).wrapping_sub(ONES);
        let backslash = (x ^ BACKSLASHES).wrapping_sub(ONES);
        if (below | quote | backslash) & !x & HIGH != 0 {
            break;
        }
        at = at.saturating_add(8);
    }
    let rest = bytes.get(at..).unwrap_or_default();
    at.saturating_add(
        rest.iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .unwrap_or(rest.len()),
    )
}

/// Whether two raw values differ, by their bytes. The API server writes both objects
/// of a review the same way (struct fields in declaration order, map keys sorted, no
/// spaces), as `check` does through serde_json, so equal values have equal bytes;
/// `tests/review_view.rs` holds this on every fixture. Where two writers did differ,
/// the comparison can only say "changed" of an unchanged value: it never hides a
/// change, it may count one that is not.
pub fn differs(new: Option<&RawValue>, old: Option<&RawValue>) -> bool {
    new.map(RawValue::get) != old.map(RawValue::get)
}


#[cfg(test)]
mod tests {
    use super::plain_json_prefix;

    /// The eight-bytes-at-a-time search finds what a byte-by-byte search finds: each
    /// byte JSON escapes, and bytes beside it that it must not mistake for one (0x20,
    /// 0x7f, bytes of 0x80 and above, the neighbours of `"` and `\`), at every
    /// position of a word and past its end.
    #[test]
    fn the_word_search_finds_what_the_byte_search_finds() {
        let naive = |b: &[u8]| {
            b.iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(b.len())
        };
        let specials: Vec<u8> = (0u8..0x20).chain([b'"', b'\\']).collect();
        let harmless = [b'a', 0x20, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xa2, 0xdc, 0xff];
        let mut checked = 0;
        for len in 0..20 {
            for fill in harmless {
                let plain = vec![fill; len];
                assert_eq!(plain_json_prefix(&plain), len);
                for at in 0..len {
                    for &special in &specials {
                        let mut bytes = plain.clone();
                        bytes[at] = special;
                        assert_eq!(plain_json_prefix(&bytes), naive(&bytes), "{bytes:?}");
                        assert_eq!(plain_json_prefix(&bytes), at);
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 5000);
    }
}
