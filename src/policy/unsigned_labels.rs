//! `spec.approvals.unsignedLabels`: the label keys the approval digest leaves out
//! (docs/gitops.md). A policy term, read by the digest (crate::approval::digest).

/// Label keys left out of the digest (`spec.approvals.unsignedLabels`): labels a
/// GitOps tool adds at sync time (`kustomize.toolkit.fluxcd.io/name`), which no
/// approver can know when they sign. An entry is a key, or a prefix ending in `*`.
/// Empty (the default): every label is bound, as docs/approvals.md says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnsignedLabels(Vec<String>);

impl UnsignedLabels {
    /// The list as the policy file gives it (validated by `validate`).
    pub fn new(entries: impl IntoIterator<Item = String>) -> Self {
        Self(entries.into_iter().collect())
    }

    /// Whether `key` is left out of the digest.
    pub fn contains(&self, key: &str) -> bool {
        self.0.iter().any(|entry| match entry.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == entry,
        })
    }

    /// Whether nothing is left out.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
