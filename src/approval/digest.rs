//! The approval digest: what an approval binds (docs/design.md#approvals).
//!
//! `sha256:` + hex SHA-256 of the RFC 8785 (JCS) canonical JSON of the object as the
//! API server presents it, without `apiVersion`, `kind` and `status`, and with
//! `metadata` reduced to its labels.
//!
//! The digest binds the spec (or `rules`, `data`, ... for kinds without one) and the
//! labels, which select pods, aggregate ClusterRoles and set a Namespace's Pod Security
//! level: an approval for one set of labels is no approval for another. Annotations
//! are outside it, so adding the approval does not change it.

use std::borrow::Cow;
use std::collections::BTreeMap;

mod direct;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

/// Why a digest could not be computed.
#[derive(Debug, thiserror::Error)]
#[error("cannot canonicalize the object for its approval digest: {0}")]
pub struct DigestError(String);

impl From<String> for DigestError {
    fn from(why: String) -> Self {
        Self(why)
    }
}

/// A JSON value as the digest reads it, with its strings and keys borrowed from the
/// text or the [`Value`] it was read from (copied only where they had escapes to
/// undo). Read from the review's text, an object's strings are not copied and no
/// owned tree is built: serde_json's `Value` cost as much as the rest of the digest.
/// It reads, orders and writes exactly as [`Value`] does: the last of a repeated key,
/// keys in byte order, numbers as serde_json's [`Number`].
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(Cow<'a, str>),
    /// An array.
    Array(Vec<Json<'a>>),
    /// An object, its members in key order.
    Object(BTreeMap<Cow<'a, str>, Json<'a>>),
}

impl<'a> From<&'a Value> for Json<'a> {
    fn from(value: &'a Value) -> Self {
        match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => Json::Number(n.clone()),
            Value::String(s) => Json::String(Cow::Borrowed(s)),
            Value::Array(items) => Json::Array(items.iter().map(Json::from).collect()),
            Value::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Json::from(v)))
                    .collect(),
            ),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Json<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json<'a>, E> {
                Ok(Json::Null)
            }
            fn visit_none<E>(self) -> Result<Json<'a>, E> {
                Ok(Json::Null)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json<'a>, D::Error> {
                Json::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json<'a>, E> {
                Ok(Json::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json<'a>, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json<'a>, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json<'a>, E> {
                // As serde_json's `Value` reads it (JSON text has no NaN or infinity).
                Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'a>, E> {
                Ok(Json::String(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json<'a>, E> {
                Ok(Json::String(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Json<'a>, E> {
                Ok(Json::String(Cow::Owned(v)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Json<'a>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Json<'a>, A::Error> {
                let mut members = BTreeMap::new();
                // A JSON key reads as a string, borrowed where it has no escapes.
                while let Some(key) = map.next_key::<Json<'de>>()? {
                    let Json::String(key) = key else {
                        return Err(serde::de::Error::custom("an object key is not a string"));
                    };
                    members.insert(key, map.next_value()?);
                }
                Ok(Json::Object(members))
            }
        }
        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

impl Serialize for Json<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => items.serialize(serializer),
            Json::Object(members) => members.serialize(serializer),
        }
    }
}

pub use crate::policy::UnsignedLabels;

/// The digest of an object as the API server presents it (or as a manifest or
/// `kubectl get -o json` shows it). `metadata` becomes `{"labels": {...}}`, or `{}`
/// when the object has no labels.
pub fn object_digest(object: &Value) -> Result<String, DigestError> {
    digest_of(&Json::from(object), &UnsignedLabels::default())
}

/// [`object_digest`] without the labels of `unsigned`.
pub fn object_digest_without(
    object: &Value,
    unsigned: &UnsignedLabels,
) -> Result<String, DigestError> {
    digest_of(&Json::from(object), unsigned)
}

/// [`object_digest`] of an object given as JSON text (the request's objects as the
/// change keeps them). Compact text of integers and plain keys, as the API server
/// writes objects, is copied into its canonical form without a tree ([`direct`]);
/// anything else is read into a tree that borrows its strings.
pub fn object_text_digest(text: &str) -> Result<String, DigestError> {
    object_text_digest_without(text, &UnsignedLabels::default())
}

/// [`object_text_digest`] without the labels of `unsigned`.
pub fn object_text_digest_without(
    text: &str,
    unsigned: &UnsignedLabels,
) -> Result<String, DigestError> {
    // The direct writer binds every label; with some left out, the tree picks them.
    if unsigned.is_empty()
        && let Some(canonical) = direct::bound_object(text)
    {
        return Ok(hash(&canonical));
    }
    let object: Json<'_> = serde_json::from_str(text).map_err(|e| DigestError(e.to_string()))?;
    digest_of(&object, unsigned)
}

fn digest_of(object: &Json<'_>, unsigned: &UnsignedLabels) -> Result<String, DigestError> {
    let Json::Object(fields) = object else {
        return Err(DigestError("the object is not a JSON object".into()));
    };
    let mut metadata = BTreeMap::new();
    if let Some(Json::Object(meta)) = fields.get("metadata")
        && let Some(Json::Object(l)) = meta.get("labels")
    {
        let kept: BTreeMap<_, _> = l
            .iter()
            .filter(|(key, _)| !unsigned.contains(key))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            metadata.insert(Cow::Borrowed("labels"), Json::Object(kept));
        }
    }
    let metadata = Json::Object(metadata);
    // Borrowed from the object: the spec is never copied to be digested.
    let mut bound: BTreeMap<&str, &Json<'_>> = fields
        .iter()
        .filter(|(key, _)| !matches!(key.as_ref(), "apiVersion" | "kind" | "status" | "metadata"))
        .map(|(key, value)| (key.as_ref(), value))
        .collect();
    bound.insert("metadata", &metadata);
    let plain = bound.iter().all(|(k, v)| plain_key(k) && is_plain(v));
    Ok(hash(&canonical_bytes(&bound, plain)?))
}

/// `sha256:` + hex of the SHA-256 of the JCS form of `value`.
pub fn value_digest(value: &Value) -> Result<String, DigestError> {
    Ok(hash(&canonical_json(value)?))
}

/// The RFC 8785 canonical JSON bytes of `value`.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, DigestError> {
    let value = Json::from(value);
    canonical_bytes(&value, is_plain(&value))
}

fn hash(canonical: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical);
    format!("sha256:{}", hex::encode(digest.as_ref()))
}

/// The canonical bytes of `value`; `plain` when [`is_plain`] holds for all of it.
///
/// For a plain value serde_json's compact form already is the JCS form: its maps are
/// sorted by UTF-8 bytes, which is UTF-16 order for keys without characters beyond
/// U+FFFF; integers up to 2^53 print as ECMAScript prints them; strings escape
/// exactly what JCS escapes, in the same spelling. That is the common case (a spec
/// has no floats and ASCII keys) and skips the canonicalizer's buffering and sorting,
/// which cost three quarters of a digest. Anything else goes through the
/// canonicalizer; a test holds the two equal.
fn canonical_bytes<T: Serialize>(value: &T, plain: bool) -> Result<Vec<u8>, DigestError> {
    if plain {
        serde_json::to_vec(value).map_err(|e| DigestError(e.to_string()))
    } else {
        serde_json_canonicalizer::to_vec(value).map_err(|e| DigestError(e.to_string()))
    }
}

/// Whether serde_json writes `value` in JCS form: integers within ±2^53, and keys
/// without characters beyond U+FFFF (whose UTF-16 order differs from UTF-8's).
fn is_plain(value: &Json<'_>) -> bool {
    const EXACT: u64 = 1 << 53;
    match value {
        Json::Null | Json::Bool(_) | Json::String(_) => true,
        Json::Number(n) => n
            .as_u64()
            .map(|n| n <= EXACT)
            .or_else(|| n.as_i64().map(|n| n.unsigned_abs() <= EXACT))
            .unwrap_or(false),
        Json::Array(items) => items.iter().all(is_plain),
        Json::Object(map) => map.iter().all(|(k, v)| plain_key(k) && is_plain(v)),
    }
}

/// No character beyond U+FFFF: no four-byte UTF-8 sequence, whose lead byte is 0xF0
/// or above.
fn plain_key(key: &str) -> bool {
    key.bytes().all(|b| b < 0xF0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    fn sha(text: &str) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
    }

    /// The objects and old objects of every review in tests/fixtures (made by the real
    /// tools), with the file each came from.
    fn fixture_objects() -> Vec<(String, Value)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut objects = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let review: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                for which in ["object", "oldObject"] {
                    if let Some(o) = review
                        .pointer(&format!("/request/{which}"))
                        .filter(|o| o.is_object())
                    {
                        objects.push((path.display().to_string(), o.clone()));
                    }
                }
            }
        }
        objects
    }

    fn object(v: Value) -> Value {
        v
    }

    #[test]
    fn unsigned_labels_are_left_out_and_nothing_else() {
        let object = |labels: Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": labels}, "spec": {"replicas": 20}})
        };
        let unsigned = UnsignedLabels::new([
            "kustomize.toolkit.fluxcd.io/*".to_string(),
            "team".to_string(),
        ]);
        let approved = object(json!({"app": "web"}));
        let synced = object(json!({"app": "web", "team": "a",
            "kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}));
        assert_eq!(
            object_digest_without(&approved, &unsigned).unwrap(),
            object_digest_without(&synced, &unsigned).unwrap()
        );
        // Without the list every label is bound; with it, the others still are.
        assert_ne!(
            object_digest(&approved).unwrap(),
            object_digest(&synced).unwrap()
        );
        let relabelled = object(json!({"app": "evil"}));
        assert_ne!(
            object_digest_without(&approved, &unsigned).unwrap(),
            object_digest_without(&relabelled, &unsigned).unwrap()
        );
        // Only labels: an empty label map and none digest alike, as before.
        assert_eq!(
            object_digest(&object(json!({}))).unwrap(),
            object_digest_without(&object(json!({"team": "a"})), &unsigned).unwrap()
        );
        assert!(!unsigned.contains("kustomize.toolkit.fluxcd.io"));
        assert_eq!(
            object_text_digest_without(&synced.to_string(), &unsigned).unwrap(),
            object_digest_without(&approved, &unsigned).unwrap()
        );
    }

    #[test]
    fn digest_binds_spec_and_labels_and_ignores_the_rest_of_metadata() {
        let a = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "labels": {"app": "api"}, "annotations": {"x": "1"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}}}
        }));
        let b = object(json!({
            "kind": "Deployment", "apiVersion": "apps/v1",
            "spec": {"selector": {"matchLabels": {"app": "api"}}, "replicas": 3},
            "metadata": {"name": "api", "uid": "u", "resourceVersion": "7", "labels": {"app": "api"},
                         "annotations": {"blastguard.io/approval": "{}"}},
            "status": {"replicas": 1}
        }));
        let expected = sha(
            r#"{"metadata":{"labels":{"app":"api"}},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"api"}}}}"#,
        );
        assert_eq!(object_digest(&a).unwrap(), expected);
        assert_eq!(object_digest(&b).unwrap(), expected);
    }

    /// The approval-scope bypass: one approval for a Namespace reused after its labels
    /// changed (Pod Security level, a tier label a rule selects on) or for a ClusterRole
    /// after it was made to aggregate into admin.
    #[test]
    fn a_label_change_changes_the_digest() {
        let ns = |labels: Value| {
            object(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "payments", "labels": labels},
                "spec": {"finalizers": ["kubernetes"]}}))
        };
        let base = object_digest(&ns(json!({"blastguard.io/tier": "critical"}))).unwrap();
        for labels in [
            json!({}),
            json!({"blastguard.io/tier": "critical", "pod-security.kubernetes.io/enforce": "privileged"}),
            json!({"blastguard.io/tier": "standard"}),
        ] {
            assert_ne!(
                object_digest(&ns(labels.clone())).unwrap(),
                base,
                "{labels}"
            );
        }
        let role = |labels: Value| {
            object(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "r", "labels": labels},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
            )
        };
        assert_ne!(
            object_digest(&role(json!({}))).unwrap(),
            object_digest(&role(
                json!({"rbac.authorization.k8s.io/aggregate-to-admin": "true"})
            ))
            .unwrap()
        );
    }

    #[test]
    fn kinds_without_spec_digest_their_other_fields_and_empty_metadata() {
        let cm = object(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "annotations": {"a": "b"}}, "data": {"k": "v"}
        }));
        assert_eq!(
            object_digest(&cm).unwrap(),
            sha(r#"{"data":{"k":"v"},"metadata":{}}"#)
        );
    }

    /// RFC 8785 section 3.2.2: the example input, and its canonical UTF-8 bytes as the
    /// RFC prints them in hex (numbers, escapes, a non-ASCII character).
    #[test]
    fn rfc8785_example_serializes_to_the_published_bytes() {
        let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
        let expected_hex = "\
            7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 \
            75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a \
            5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31 \
            65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 \
            5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30 \
            30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d";
        let expected: Vec<u8> = expected_hex
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        let value: Value = serde_json::from_str(input).unwrap();
        let canonical = canonical_json(&value).unwrap();
        assert_eq!(
            String::from_utf8(canonical.clone()).unwrap(),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
        assert_eq!(canonical, expected);
    }

    /// RFC 8785 section 3.2.3: properties sorted by UTF-16 code units, so the emoji
    /// (a surrogate pair, 0xD83D) sorts before U+FB33.
    #[test]
    fn rfc8785_sorts_properties_by_utf16_code_units() {
        let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
        let value: Value = serde_json::from_str(input).unwrap();
        let canonical = String::from_utf8(canonical_json(&value).unwrap()).unwrap();
        assert_eq!(
            canonical,
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
             \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
             \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    /// RFC 8785 appendix B: IEEE 754 values and their canonical text. (NaN and
    /// Infinity, which JCS refuses, cannot occur in parsed JSON.)
    #[test]
    fn rfc8785_number_serialization_table() {
        let cases: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, want) in cases {
            let number = f64::from_bits(*bits);
            let from_value = canonical_json(&Value::from(number)).unwrap();
            assert_eq!(
                String::from_utf8(from_value).unwrap(),
                *want,
                "{bits:#018x}"
            );
            // The same number written as JSON text by someone else reads back the same.
            let reparsed: Value = serde_json::from_str(&format!("{number:e}")).unwrap();
            let from_text = canonical_json(&reparsed).unwrap();
            assert_eq!(String::from_utf8(from_text).unwrap(), *want, "{number:e}");
        }
    }

    /// Integers are I-JSON numbers (IEEE 754 doubles) in JCS, whatever type serde
    /// parsed them as, so an API server's `1` and `1.0` digest alike.
    #[test]
    fn integers_canonicalize_as_doubles() {
        let a = value_digest(&serde_json::from_str("{\"n\":1,\"m\":-20}").unwrap()).unwrap();
        let b = value_digest(&serde_json::from_str("{\"m\":-2.0e1,\"n\":1.0}").unwrap()).unwrap();
        assert_eq!(a, b);
    }

    /// The two ways in, an object's text (a request's kept object) and its parsed
    /// value (a manifest the approver's commands read), digest alike: on every
    /// fixture's objects, with escapes, non-ASCII text, floats, big integers, repeated
    /// keys and keys beyond U+FFFF beside them.
    #[test]
    fn an_objects_text_and_its_value_digest_alike() {
        let mut objects: Vec<String> = vec![
            r#"{"kind":"ConfigMap","metadata":{"name":"c","labels":{"a\"b":"\u00e9\ud83d\ude00"}},"data":{"k":"line\nbreak","\ud83d\ude00":"x","\ufb33":"y"}}"#.into(),
            r#"{"spec":{"n":1.5,"m":-0.0,"big":18446744073709551615,"neg":-9007199254740993,"e":1e21,"x":1,"x":2},"metadata":{"labels":{}}}"#.into(),
            r#"{"spec":{"a":[null,true,false,[],{}],"s":"\u0000\u001f\u007f/\/"},"status":{"r":1}}"#.into(),
        ];
        objects.extend(fixture_objects().iter().map(|(_, o)| o.to_string()));
        assert!(objects.len() > 10, "only {} objects", objects.len());
        for text in &objects {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                object_text_digest(text).unwrap(),
                object_digest(&value).unwrap(),
                "{text}"
            );
            let json: Json<'_> = serde_json::from_str(text).unwrap();
            assert_eq!(json, Json::from(&value), "{text}");
        }
        assert!(object_text_digest("[1]").is_err());
        assert!(object_text_digest("{").is_err());
    }

    /// The object the digest binds, built from its parsed value without the code
    /// under test: every member but apiVersion, kind, status and metadata, and
    /// metadata reduced to its labels when they are a non-empty object.
    fn bound(object: &Value) -> Value {
        let mut out = serde_json::Map::new();
        for (k, v) in object.as_object().unwrap() {
            if !matches!(k.as_str(), "apiVersion" | "kind" | "status" | "metadata") {
                out.insert(k.clone(), v.clone());
            }
        }
        let labels = object
            .pointer("/metadata/labels")
            .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()));
        let metadata = labels.map_or_else(|| json!({}), |l| json!({ "labels": l }));
        out.insert("metadata".into(), metadata);
        Value::Object(out)
    }

    /// The text written without a tree is the canonicalizer's, byte for byte, where
    /// it is taken; where it is not (floats, big integers, `-0`, escaped, repeated or
    /// astral keys, bad text) the digest is still the canonicalizer's, or an error.
    #[test]
    fn the_direct_path_writes_what_the_canonicalizer_writes() {
        let cases: &[(&str, bool)] = &[
            (
                r#"{"spec":{"b":1,"a":{"d":[3,{"z":null,"y":true}],"c":"x"}},"kind":"K","metadata":{"name":"n","labels":{"b":"2","a":"1"}},"apiVersion":"v1","status":{"q":1}}"#,
                true,
            ),
            (r#"{"data":{"k":"v"},"metadata":{"labels":{}}}"#, true),
            (r#"{"data":{"k":"v"},"metadata":{"labels":null}}"#, true),
            (r#"{"data":{"k":"v"},"metadata":"x"}"#, true),
            (
                r#"{"rules":[],"metadata":{"labels":{"a":{"c":1,"b":2}}}}"#,
                true,
            ),
            (r#"{}"#, true),
            (
                r#"{"spec":{"cmd":"a \u003c b \u0026\u0026 c\n\"q\"\/","é":"ü\u2028 ","n":[9007199254740992,-9007199254740992,0,-7]}}"#,
                true,
            ),
            (
                " {\n \"spec\" : { \"b\" : [ 1 , 2 ] , \"a\" : \"x\" } ,\n \"metadata\" : { } } \n",
                true,
            ),
            (r#"{"spec":{"z":{},"y":[],"x":[{}],"w":false}}"#, true),
            (r#"{"spec":{"n":1.5}}"#, false),
            (r#"{"spec":{"n":-0}}"#, false),
            (r#"{"spec":{"n":1e3}}"#, false),
            (r#"{"spec":{"n":9007199254740993}}"#, false),
            (r#"{"spec":{"n":-9007199254740993}}"#, false),
            (r#"{"spec":{"a":1,"a":2}}"#, false),
            (r#"{"spec":1,"spec":2}"#, false),
            (r#"{"spec":{"a\u0062":1}}"#, false),
            (r#"{"spec":{"😀":1,"דּ":2}}"#, false),
            (
                r#"{"metadata":{"labels":{"a":"1"},"labels":{"b":"2"}}}"#,
                false,
            ),
        ];
        for (text, direct) in cases {
            let value: Value = serde_json::from_str(text).unwrap();
            let jcs = serde_json_canonicalizer::to_vec(&bound(&value)).unwrap();
            let written = direct::bound_object(text);
            assert_eq!(written.is_some(), *direct, "{text}");
            if let Some(written) = written {
                assert_eq!(
                    String::from_utf8(written).unwrap(),
                    String::from_utf8(jcs.clone()).unwrap(),
                    "{text}"
                );
            }
            assert_eq!(
                object_text_digest(text).unwrap(),
                format!("sha256:{}", hex::encode(Sha256::digest(&jcs))),
                "{text}"
            );
        }
        for bad in [
            "",
            "{",
            "[1]",
            r#"{"a":1}x"#,
            r#"{"a":01}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"\x"}"#,
        ] {
            assert!(direct::bound_object(bad).is_none(), "{bad}");
            assert!(object_text_digest(bad).is_err(), "{bad}");
        }
        // Every fixture's objects as a request keeps them (the API server's text).
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut taken = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            let view = crate::review::decode(&body).unwrap();
            for parts in [&view.object, &view.old_object].into_iter().flatten() {
                let text = parts.kept_text();
                let value: Value = serde_json::from_str(&text).unwrap();
                let jcs = serde_json_canonicalizer::to_vec(&bound(&value)).unwrap();
                if let Some(written) = direct::bound_object(&text) {
                    assert_eq!(written, jcs, "{}", path.display());
                    taken += 1;
                }
            }
        }
        assert!(
            taken >= 8,
            "the direct path took only {taken} fixture objects"
        );
    }

    /// The plain path (serde_json's compact form) against the canonicalizer, on values
    /// at the edges of what makes a value plain: big and negative integers, floats,
    /// escapes, keys beyond U+FFFF and U+E000..U+FFFF, nesting.
    #[test]
    fn the_plain_path_writes_what_the_canonicalizer_writes() {
        let pieces = [
            json!(0),
            json!(9007199254740992u64),
            json!(9007199254740993u64),
            json!(-9007199254740992i64),
            json!(-9007199254740993i64),
            json!(u64::MAX),
            json!(1.5),
            json!(-0.0),
            json!(1e21),
            json!("quote\" backslash\\ nul\u{0} del\u{7f} tab\t \u{2028} é 😀 \u{1f}"),
            json!({"\u{1f600}": 1, "\u{fb33}": 2, "a": 3}),
            json!({"\u{e000}": 1, "\u{ffff}": 2, "z": 3, "Z": 4, "": 5}),
            json!([null, true, false, [], {}]),
        ];
        let mut checked = 0;
        for (i, a) in pieces.iter().enumerate() {
            for b in &pieces {
                let value = json!({"spec": {"x": a, "y": [b, a]}, "k": i});
                let fast = serde_json::to_vec(&value).unwrap();
                let jcs = serde_json_canonicalizer::to_vec(&value).unwrap();
                if is_plain(&Json::from(&value)) {
                    assert_eq!(
                        String::from_utf8(fast).unwrap(),
                        String::from_utf8(jcs.clone()).unwrap()
                    );
                    checked += 1;
                }
                assert_eq!(canonical_json(&value).unwrap(), jcs, "{value}");
            }
        }
        assert!(checked > 20, "only {checked} plain values");
        // Every fixture's objects, as the API server wrote them.
        for (path, o) in fixture_objects() {
            let jcs = serde_json_canonicalizer::to_vec(&o).unwrap();
            assert_eq!(canonical_json(&o).unwrap(), jcs, "{path}");
        }
    }
}
