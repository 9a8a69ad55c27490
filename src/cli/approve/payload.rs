//! The payload to sign for each object of FILE: the one given with `--payload`, else
//! the approval already on the object, else a new one; never one that approves
//! another change than FILE's (issue 22: an approver shown one manifest must not sign
//! the digest of another).

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::args::ChangeArgs;
use super::error::ApproveError;
use super::error::{FileProblem, Mismatch, SubjectProblem, Unusable};
use super::input::{self, Input, Source, describe, object_annotations};
use super::subject;
use crate::annotations::{APPROVAL, APPROVAL_SIGNATURE};
use crate::approval::payload::rfc3339;
use crate::approval::verifier::binds_to;
use crate::approval::{ApprovalOperation, ApprovalPayload, ApprovalSubject, summary};
use crate::defaults;
use crate::policy::Policy;

/// The payload to sign for one object, and where it came from.
#[derive(Debug)]
pub struct Prepared {
    /// What was read.
    pub input: Input,
    /// The exact payload text.
    pub payload_text: String,
    /// Signatures already on the object for this payload.
    pub existing_signatures: Option<String>,
    /// Things the approver should know.
    pub notes: Vec<String>,
}

impl Prepared {
    /// `Kind namespace/name` when the object is one of several.
    pub fn who(&self, several: bool) -> Option<String> {
        self.input.object().filter(|_| several).map(describe)
    }
}

/// What to do with an approval already on the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Sign it again (a next approver); refuse when it no longer fits the object, so
    /// nobody's signature is dropped unnoticed.
    Extend,
    /// Show it when it still fits, else build a new payload (`digest` only reads).
    ReplaceIfStale,
}

/// What every object's payload is built with.
#[derive(Debug)]
pub struct Settings<'a> {
    /// The flags.
    pub args: &'a ChangeArgs,
    /// The policy (maxTTL, provenance for reading reviews).
    pub policy: &'a Policy,
    /// Now.
    pub now: SystemTime,
    /// The TTL of a new payload.
    pub ttl: Duration,
    /// What to do with an approval on the object.
    pub existing: Existing,
}

/// The TTL of a new payload: `--ttl`, within the policy's maxTTL, else the policy's
/// offer.
pub fn ttl(args: &ChangeArgs, policy: &Policy, now: SystemTime) -> Result<Duration, ApproveError> {
    let max_ttl = policy.approvals.max_ttl;
    let show = |d: Duration| humantime::format_duration(d).to_string();
    match args.ttl {
        Some(ttl) if ttl > max_ttl => Err(Unusable::TtlOverMax {
            ttl: show(ttl),
            max: show(max_ttl),
        }
        .into()),
        Some(ttl) if ttl.is_zero() => Err(ApproveError::Usage("--ttl must be longer than 0s")),
        // RFC 3339 ends at year 9999.
        Some(ttl) if now.checked_add(ttl).is_none_or(|end| end > latest_time()) => {
            Err(Unusable::TtlPastYear9999(show(ttl)).into())
        }
        Some(ttl) => Ok(ttl),
        None => Ok(policy.approvals.offered_ttl()),
    }
}

fn latest_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// A payload given with `--payload`: its exact text and what it says.
pub type Given = (String, ApprovalPayload);

/// Reads the `--payload` file.
pub fn given(path: &Path) -> Result<Given, ApproveError> {
    let text = input::read_text(path)?;
    let exact = input::strip_one_newline(&text).to_string();
    let payload = ApprovalPayload::parse(&exact).map_err(|source| ApproveError::Payload {
        what: path.display().to_string(),
        source,
    })?;
    Ok((exact, payload))
}

/// The payload of every object of `source`; a given payload belongs to the object
/// it names.
pub fn prepare_all(
    settings: &Settings<'_>,
    source: Source,
    given: Option<Given>,
) -> Result<Vec<Prepared>, ApproveError> {
    let args = settings.args;
    if source.inputs.len() == 1 {
        let input = source.inputs.into_iter().next().expect("one input");
        return Ok(vec![prepare(settings, input, given.as_ref())?]);
    }
    let mut given = given;
    let mut all = Vec::with_capacity(source.inputs.len());
    for input in source.inputs {
        let object = input.object().expect("several documents are objects");
        let who = describe(object);
        let mine = given.take_if(|(_, p)| {
            subject::of_object(object, p.operation, args, p.replicas, settings.policy)
                .is_ok_and(|s| s.subject.target == p.target)
        });
        let prepared = prepare(settings, input, mine.as_ref()).map_err(|e| e.of(Some(&who)))?;
        all.push(prepared);
    }
    if let Some((_, p)) = given {
        return Err(ApproveError::file(
            args.file().display().to_string(),
            FileProblem::PayloadNotHere(p.target.to_string()),
        ));
    }
    Ok(all)
}

/// The payload to sign for one object of FILE.
pub fn prepare(
    settings: &Settings<'_>,
    input: Input,
    given: Option<&Given>,
) -> Result<Prepared, ApproveError> {
    let args = settings.args;
    let (now, max_ttl) = (settings.now, settings.policy.approvals.max_ttl);
    let mut notes = Vec::new();
    let (subject, annotations) = match &input {
        Input::Payload(_) if given.is_some() => {
            return Err(ApproveError::Usage(
                "--payload needs FILE to be the object the payload approves",
            ));
        }
        Input::Payload(payload_text) => {
            if args.operation.is_some()
                || args.replicas.is_some()
                || args.ttl.is_some()
                || args.reason.is_some()
            {
                return Err(ApproveError::Usage(
                    "--operation, --replicas, --ttl and --reason do not apply to a payload file: it is signed as it is",
                ));
            }
            let payload =
                ApprovalPayload::parse(payload_text).map_err(|source| ApproveError::Payload {
                    what: args.file().display().to_string(),
                    source,
                })?;
            still_usable(&payload, now, max_ttl)?;
            return Ok(Prepared {
                payload_text: payload_text.clone(),
                input,
                existing_signatures: None,
                notes,
            });
        }
        Input::Review(change) => {
            if args.operation.is_some() || args.namespace.is_some() || args.cluster_scoped {
                return Err(ApproveError::Usage(
                    "--operation, --namespace and --cluster-scoped come from the AdmissionReview itself",
                ));
            }
            let mut subject =
                ApprovalSubject::of_without(change, &settings.policy.approvals.unsigned_labels)?;
            if let Some(replicas) = args.replicas {
                raise_replicas(&mut subject, replicas)?;
            }
            let annotations = change.approval_annotations().cloned();
            (subject, annotations.unwrap_or_default())
        }
        Input::Object { object, .. } => {
            let annotations = object_annotations(object);
            let existing_operation = annotations
                .get(APPROVAL)
                .and_then(|p| ApprovalPayload::parse(p).ok())
                .map(|p| p.operation);
            let operation = args
                .operation
                .map(ApprovalOperation::from)
                .or(given.map(|(_, p)| p.operation))
                .or(existing_operation)
                .unwrap_or(ApprovalOperation::Apply);
            // The replica count a given scale payload names is the one to check.
            let given_replicas = given.and_then(|(_, p)| p.replicas);
            let subject =
                subject::of_object(object, operation, args, given_replicas, settings.policy)?
                    .subject;
            if operation == ApprovalOperation::Apply
                && subject::defaulted_here(object)
                && given.is_none()
                && !annotations.contains_key(APPROVAL)
            {
                notes.push(format!(
                    "this digest is of the manifest with the API server's defaults applied; {}",
                    defaults::MUTATING_WEBHOOKS_NOTE
                ));
                notes.extend(
                    defaults::defaulted(object)
                        .1
                        .into_iter()
                        .map(|u| format!("the cluster's digest will differ: {u}")),
                );
            }
            (subject, annotations)
        }
    };
    let existing = annotations.get(APPROVAL).filter(|text| {
        // An approval for another operation than the one asked for is replaced, not
        // extended: one object carries one approval.
        match (args.operation, ApprovalPayload::parse(text)) {
            (Some(asked), Ok(p)) if ApprovalOperation::from(asked) != p.operation => {
                notes.push(format!(
                    "the object's approval is for operation {:?}; this new {:?} approval replaces it",
                    p.operation.as_str(),
                    ApprovalOperation::from(asked).as_str()
                ));
                false
            }
            _ => true,
        }
    });
    let file = args.file().display().to_string();
    let chosen = match (given, existing) {
        (Some((text, _)), Some(existing)) if text != existing => {
            return Err(ApproveError::file(file, FileProblem::DifferentApproval));
        }
        (Some((text, _)), _) => Some((text.clone(), "the payload given with --payload")),
        (None, Some(existing)) => Some((existing.clone(), "the approval already on the object")),
        (None, None) => None,
    };
    let new_payload = |subject: &ApprovalSubject, input: &Input| {
        subject
            .payload(
                now,
                settings.ttl,
                args.reason.as_deref().unwrap_or_default(),
            )
            .with_summary(summary_of(input, subject))
            .to_json()
    };
    if let Some((payload_text, what)) = chosen {
        let payload =
            ApprovalPayload::parse(&payload_text).map_err(|source| ApproveError::Payload {
                what: what.to_string(),
                source,
            })?;
        // The digest is always the one of FILE (after the API server's defaults):
        // a payload is never taken at its word, or an approver shown one manifest
        // signs the digest of another (issue 22).
        let fits = binds_to(&subject, &payload)
            .map_err(|r| {
                ApproveError::Mismatch(Box::new(Mismatch {
                    what: what.to_string(),
                    file: file.clone(),
                    approved: ApprovalSubject {
                        target: payload.target.clone(),
                        operation: payload.operation,
                        digest: payload.digest.clone(),
                        replicas: payload.replicas,
                    },
                    actual: subject.clone(),
                    detail: r.detail,
                    defaulted_here: input.object().filter(|o| subject::defaulted_here(o)).map(
                        |o| {
                            defaults::defaulted(o)
                                .1
                                .into_iter()
                                .map(|u| u.to_string())
                                .collect()
                        },
                    ),
                }))
            })
            .and_then(|()| still_usable(&payload, now, max_ttl));
        match fits {
            Err(e) if settings.existing == Existing::ReplaceIfStale && given.is_none() => {
                notes.push(format!("a new payload for {file}, because {e}"));
                return Ok(Prepared {
                    payload_text: new_payload(&subject, &input),
                    input,
                    existing_signatures: None,
                    notes,
                });
            }
            fits => fits?,
        }
        if args.ttl.is_some() || args.reason.is_some() {
            notes.push(format!(
                "{what} is signed as it is: --ttl and --reason are ignored"
            ));
        }
        return Ok(Prepared {
            payload_text,
            existing_signatures: annotations.get(APPROVAL_SIGNATURE).cloned(),
            input,
            notes,
        });
    }
    Ok(Prepared {
        payload_text: new_payload(&subject, &input),
        input,
        existing_signatures: None,
        notes,
    })
}

/// The summary line of a new payload: from the request for an AdmissionReview
/// (old and new object), from the object alone for a manifest (its state, not a diff:
/// the live object is not read here; `blastguard diff` shows the diff).
fn summary_of(input: &Input, subject: &ApprovalSubject) -> String {
    match input {
        Input::Review(change) => summary::of_change(change, None),
        Input::Object { object, .. } => {
            let object = defaults::defaulted(object).0;
            summary::describe(&summary::Facts {
                operation: subject.operation,
                old: (subject.operation == ApprovalOperation::Delete).then_some(&object),
                new: (subject.operation == ApprovalOperation::Apply).then_some(&object),
                replicas: (None, subject.replicas),
                pods: None,
                creating: false,
            })
        }
        Input::Payload(_) => String::new(),
    }
}

/// A payload worth signing: not expired, and within the policy's maxTTL.
pub fn still_usable(
    payload: &ApprovalPayload,
    now: SystemTime,
    max_ttl: Duration,
) -> Result<(), ApproveError> {
    let (not_before, not_after) = payload.window().map_err(|source| ApproveError::Payload {
        what: "the payload".into(),
        source,
    })?;
    if not_after <= now {
        return Err(Unusable::Expired {
            not_after: payload.not_after.clone(),
            now: rfc3339(now),
        }
        .into());
    }
    let ttl = not_after.duration_since(not_before).unwrap_or_default();
    if ttl > max_ttl {
        return Err(Unusable::WindowOverMax {
            valid: humantime::format_duration(ttl).to_string(),
            max: humantime::format_duration(max_ttl).to_string(),
        }
        .into());
    }
    Ok(())
}

fn raise_replicas(subject: &mut ApprovalSubject, replicas: u64) -> Result<(), ApproveError> {
    if subject.operation != ApprovalOperation::Scale {
        return Err(ApproveError::Usage(
            "--replicas only applies to a scale approval",
        ));
    }
    if let Some(requested) = subject.replicas
        && replicas < requested
    {
        return Err(SubjectProblem::ReplicasBelow {
            replicas,
            requested,
        }
        .into());
    }
    subject.replicas = Some(replicas);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> ChangeArgs {
        ChangeArgs::for_file(Path::new("deploy.yaml"))
    }

    fn object(image: &str) -> Input {
        Input::Object {
            object: json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api", "namespace": "prod"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}},
                    "template": {"metadata": {"labels": {"app": "api"}},
                        "spec": {"containers": [{"name": "api", "image": image}]}}}
            }),
            document: 1,
        }
    }

    fn settings<'a>(args: &'a ChangeArgs, policy: &'a Policy) -> Settings<'a> {
        Settings {
            args,
            policy,
            now: SystemTime::now(),
            ttl: Duration::from_secs(3600),
            existing: Existing::Extend,
        }
    }

    #[test]
    fn a_payload_of_another_manifest_is_refused_naming_both_digests() {
        let (args, policy) = (args(), Policy::embedded());
        let s = settings(&args, &policy);
        let evil = prepare(&s, object("evil:latest"), None).unwrap();
        let given = (
            evil.payload_text.clone(),
            ApprovalPayload::parse(&evil.payload_text).unwrap(),
        );
        let e = prepare(&s, object("nginx:1.27"), Some(&given)).unwrap_err();
        let ApproveError::Mismatch(m) = &e else {
            panic!("a mismatch: {e}")
        };
        assert_ne!(m.approved.digest, m.actual.digest);
        let text = e.to_string();
        assert!(text.contains(given.1.digest.as_deref().unwrap()), "{text}");
        assert!(text.contains(m.actual.digest.as_deref().unwrap()), "{text}");
        // The same manifest takes it.
        let ok = prepare(&s, object("evil:latest"), Some(&given)).unwrap();
        assert_eq!(ok.payload_text, given.0);
    }

    #[test]
    fn an_expired_or_too_long_payload_is_not_signed() {
        let (args, policy) = (args(), Policy::embedded());
        let s = settings(&args, &policy);
        let fresh = prepare(&s, object("nginx:1.27"), None).unwrap();
        let payload = ApprovalPayload::parse(&fresh.payload_text).unwrap();
        let later = s.now + Duration::from_secs(7200);
        assert!(
            still_usable(&payload, later, policy.approvals.max_ttl)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
        assert!(
            still_usable(&payload, s.now, Duration::from_secs(60))
                .unwrap_err()
                .to_string()
                .contains("longer than the policy's maxTTL")
        );
    }

    #[test]
    fn ttl_is_bounded_by_the_policy() {
        let policy = Policy::embedded();
        let mut a = args();
        a.ttl = Some(policy.approvals.max_ttl + Duration::from_secs(1));
        assert!(ttl(&a, &policy, SystemTime::now()).is_err());
        a.ttl = Some(Duration::ZERO);
        assert!(matches!(
            ttl(&a, &policy, SystemTime::now()),
            Err(ApproveError::Usage(_))
        ));
        a.ttl = None;
        assert_eq!(
            ttl(&a, &policy, SystemTime::now()).unwrap(),
            policy.approvals.offered_ttl()
        );
    }
}
