//! Reading an AdmissionReview off the wire and writing the answer back.
//!
//! The request is read as a borrowed view ([`RequestView`]): strings point into the
//! body, and `object`/`oldObject` stay raw JSON ([`RawValue`]) until a decision needs
//! them. A person's change is judged from the view and the two objects' annotations
//! alone ([`Heads`]); only an AI-assisted change parses its objects. DESIGN.md section
//! 9 allows this view on the hot path; `tests/review_view.rs` holds it equal to
//! kube-rs's reading of every fixture and of generated reviews.

use std::borrow::Cow;
use std::collections::BTreeMap;

use kube::core::TypeMeta;
use kube::core::admission::AdmissionResponse;
use kube::core::response::Status;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::change::Operation;

/// The only AdmissionReview version served (the chart registers `[v1]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The AdmissionReview kind.
pub const KIND: &str = "AdmissionReview";

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
    /// Version.
    #[serde(default, borrow)]
    pub version: Cow<'a, str>,
    /// Kind.
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
    /// Username.
    #[serde(default, borrow)]
    pub username: Option<Cow<'a, str>>,
    /// Groups.
    #[serde(default, borrow)]
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
    /// The new object, unparsed.
    #[serde(default, borrow)]
    pub object: Option<&'a RawValue>,
    /// The old object, unparsed.
    #[serde(default, borrow)]
    pub old_object: Option<&'a RawValue>,
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
    let review: ReviewView<'_> = serde_json::from_slice(body).map_err(|e| Rejected {
        uid: salvage_uid(body),
        error: ReviewError::Malformed(e.to_string()),
    })?;
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
}

/// The annotations of both objects of a request.
#[derive(Debug, Default)]
pub struct Heads<'a> {
    /// The new object's.
    pub new: RawAnnotations<'a>,
    /// The old object's.
    pub old: RawAnnotations<'a>,
}

impl<'a> Heads<'a> {
    /// Reads the annotations of the request's objects. A subresource's object (Scale,
    /// Eviction) carries none of the workload's, so they are not read.
    pub fn of(view: &RequestView<'a>) -> Result<Self, ReviewError> {
        if view.subresource().is_some() {
            return Ok(Self::default());
        }
        Ok(Self {
            new: annotations_of(view.object)?,
            old: annotations_of(view.old_object)?,
        })
    }
}

fn annotations_of(raw: Option<&RawValue>) -> Result<RawAnnotations<'_>, ReviewError> {
    #[derive(Deserialize)]
    struct Meta<'a> {
        #[serde(default, borrow)]
        annotations: Option<BTreeMap<Cow<'a, str>, &'a RawValue>>,
    }
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(default, borrow)]
        metadata: Option<Meta<'a>>,
    }
    let Some(raw) = raw.filter(|r| r.get() != "null") else {
        return Ok(RawAnnotations::default());
    };
    let head: Head<'_> = serde_json::from_str(raw.get())
        .map_err(|e| ReviewError::Malformed(format!("object metadata: {e}")))?;
    Ok(RawAnnotations(
        head.metadata
            .and_then(|m| m.annotations)
            .unwrap_or_default(),
    ))
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
    serde_json::to_vec(&response.into_review()).unwrap_or_default()
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
