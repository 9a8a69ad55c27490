//! Reading an AdmissionReview off the wire and writing the answer back.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde::Deserialize;
use serde_json::json;

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

/// Decodes a review body into its request.
pub fn decode(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Rejected> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(|e| Rejected {
            uid: salvage_uid(body),
            error: ReviewError::Malformed(e.to_string()),
        })?;
    let uid = review.request.as_ref().map(|r| r.uid.clone());
    let fail = |error| Rejected {
        uid: uid.clone(),
        error,
    };
    if review.types.api_version != API_VERSION {
        return Err(fail(ReviewError::ApiVersion(
            review.types.api_version.clone(),
        )));
    }
    if review.types.kind != KIND {
        return Err(fail(ReviewError::Kind(review.types.kind.clone())));
    }
    review
        .try_into()
        .map_err(|_| fail(ReviewError::MissingRequest))
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

/// Serializes an answer as the AdmissionReview the API server expects.
pub fn encode(response: AdmissionResponse) -> Vec<u8> {
    serde_json::to_vec(&response.into_review()).expect("an AdmissionReview always serializes")
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
    serde_json::to_vec(&review).expect("JSON always serializes")
}
