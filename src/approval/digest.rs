//! The approval digest: `sha256:` + hex SHA-256 of the RFC 8785 (JCS) canonical JSON
//! of the object's `spec` as the API server presents it (DESIGN.md section 3).

use kube::core::DynamicObject;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why a digest could not be computed.
#[derive(Debug, thiserror::Error)]
#[error("cannot canonicalize the object for its approval digest: {0}")]
pub struct DigestError(String);

/// The digest of an object: of its `spec`, or for a kind without `spec`, of the object
/// without `metadata` and `status`. Annotations are outside it, so adding an approval
/// does not change it.
pub fn object_digest(object: &DynamicObject) -> Result<String, DigestError> {
    match object.data.get("spec") {
        Some(spec) => value_digest(spec),
        None => {
            let mut whole = match &object.data {
                Value::Object(map) => map.clone(),
                _ => serde_json::Map::new(),
            };
            whole.remove("status");
            whole.remove("metadata");
            if let Some(types) = &object.types {
                whole.insert(
                    "apiVersion".into(),
                    Value::String(types.api_version.clone()),
                );
                whole.insert("kind".into(), Value::String(types.kind.clone()));
            }
            value_digest(&Value::Object(whole))
        }
    }
}

/// The digest of a JSON object as a manifest or `kubectl get -o json` shows it.
pub fn json_object_digest(object: &Value) -> Result<String, DigestError> {
    let dynamic: DynamicObject =
        serde_json::from_value(object.clone()).map_err(|e| DigestError(e.to_string()))?;
    object_digest(&dynamic)
}

/// `sha256:` + hex of the SHA-256 of the JCS form of `value`.
pub fn value_digest(value: &Value) -> Result<String, DigestError> {
    let canonical = canonical_json(value)?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(&canonical))
    ))
}

/// The RFC 8785 canonical JSON bytes of `value`.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, DigestError> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| DigestError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digest_is_of_the_canonical_spec_and_ignores_metadata() {
        let a: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "annotations": {"x": "1"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}}}
        }))
        .unwrap();
        let b: DynamicObject = serde_json::from_value(json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "replicas": 3},
            "metadata": {"name": "api", "annotations": {"blastguard.io/approval": "{}"}},
            "status": {"replicas": 1}
        }))
        .unwrap();
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(
                br#"{"replicas":3,"selector":{"matchLabels":{"app":"api"}}}"#
            ))
        );
        assert_eq!(object_digest(&a).unwrap(), expected);
        assert_eq!(object_digest(&b).unwrap(), expected);
    }

    #[test]
    fn kinds_without_spec_digest_the_object_without_metadata_and_status() {
        let cm: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"k": "v"}
        }))
        .unwrap();
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(
                br#"{"apiVersion":"v1","data":{"k":"v"},"kind":"ConfigMap"}"#
            ))
        );
        assert_eq!(object_digest(&cm).unwrap(), expected);
    }
}
