//! The `blastguard.io/` annotation keys of docs/design.md#annotations.

/// The AI tool or agent that produced or applied the change; any value but `false`
/// marks the change AI-assisted.
pub const AI_AGENT: &str = "blastguard.io/ai-agent";
/// `"true"` marks the change AI-assisted.
pub const AI_ASSISTED: &str = "blastguard.io/ai-assisted";
/// Groups the objects of one change set, for namespace reach across requests.
pub const CHANGE_ID: &str = "blastguard.io/change-id";
/// The approval payload: exactly the bytes that were signed.
pub const APPROVAL: &str = "blastguard.io/approval";
/// One or more armored SSH signatures over the approval payload.
pub const APPROVAL_SIGNATURE: &str = "blastguard.io/approval-signature";
