//! How identities compare: a username, a principal of allowed_signers and a member of
//! an approver group name one person when they differ only by case.

/// Unicode default case folding, for comparing identities: a principal that differs
/// from a username only by case is the same person. (Confusable characters, such as
/// Cyrillic `а` for Latin `a`, are not folded: allowed_signers is the operators' file,
/// docs/security.md says so.)
pub fn fold_case(s: &str) -> String {
    caseless::default_case_fold_str(s)
}
