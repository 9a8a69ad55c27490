//! Reading an engine's answer as the tests do: the AdmissionReview response, its
//! message, the approval outcome, and the payload a denial asks to sign.

use blastguard::approval::ApprovalOutcome;
use blastguard::engine::Reviewed;
use serde_json::Value;

/// The `response` of the AdmissionReview the engine answered.
pub fn response(reviewed: &Reviewed) -> Value {
    let body: Value = serde_json::from_slice(reviewed.body().expect("an answer")).unwrap();
    body["response"].clone()
}

/// The message a person reads in kubectl.
pub fn message(reviewed: &Reviewed) -> String {
    response(reviewed)["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What the verifier made of the request's approval.
pub fn outcome(reviewed: &Reviewed) -> ApprovalOutcome {
    reviewed
        .judged()
        .unwrap()
        .verdict
        .findings
        .approval
        .clone()
        .unwrap()
}

/// The payload a denial asks to sign, read from the message as a person would.
pub fn payload_from_denial(reviewed: &Reviewed) -> String {
    let message = message(reviewed);
    message
        .lines()
        .find(|l| l.starts_with("{\"apiVersion\":\"blastguard.io/v1\""))
        .unwrap_or_else(|| panic!("no payload in {message}"))
        .to_string()
}
