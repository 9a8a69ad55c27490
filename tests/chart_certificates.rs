//! The certificates the chart generates: they serve TLS for the webhook Service (openssl,
//! rustls as the API server's client) and are kept across `helm upgrade`.
//!
//! The chart's helpers (`helm template`, the rendered objects, matchConditions in CEL) are
//! in tests/common/chart.rs; helm and kubernetes-validate come from `.tools/bin`
//! (`scripts/install-tools.sh`, which `scripts/test.sh` runs), kubectl, openssl and
//! promtool from PATH.

mod common;

use common::chart::*;
use common::tool;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------
// Certificates.

/// notBefore and notAfter (unix seconds) and the DNS names of a PEM certificate.
fn certificate_facts(pem: &str) -> (i64, i64, Vec<String>) {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM certificate");
    let cert = pem.parse_x509().expect("X.509 certificate");
    let names = cert
        .subject_alternative_name()
        .expect("SAN extension parses")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
        names,
    )
}

const DAY: i64 = 86_400;

#[test]
fn generated_certificates_serve_tls_for_the_webhook_service() {
    let objs = objects(&render(""));
    let tls = object(&objs, "Secret", "blastguard-tls");
    let ca = object(&objs, "Secret", "blastguard-ca");
    let bundle = ca_bundle(&objs);
    assert_eq!(
        secret_data(ca, "tls.crt"),
        bundle,
        "the bundle is the CA's certificate"
    );
    assert_eq!(secret_data(tls, "ca.crt"), bundle);
    let (cert, key) = (secret_data(tls, "tls.crt"), secret_data(tls, "tls.key"));

    tls_handshake(&cert, &key, &bundle, SERVICE_DNS_NAME)
        .unwrap_or_else(|e| panic!("TLS to {SERVICE_DNS_NAME} fails: {e}"));
    assert!(
        tls_handshake(&cert, &key, &bundle, "blastguard.other.svc").is_err(),
        "the certificate is for this Service only"
    );
    let stranger_ca = ca_bundle(&objects(&render("")));
    assert!(
        tls_handshake(&cert, &key, &stranger_ca, SERVICE_DNS_NAME).is_err(),
        "another CA is not trusted"
    );

    // A long-lived CA, a shorter serving certificate, its expiry recorded for renewal.
    let now = unix_now();
    let (ca_from, ca_until, _) = certificate_facts(&bundle);
    let (from, until, names) = certificate_facts(&cert);
    assert!((ca_until - ca_from - 3650 * DAY).abs() <= DAY);
    assert!((until - from - 365 * DAY).abs() <= DAY);
    assert!((until - now - 365 * DAY).abs() <= DAY);
    assert_eq!(
        names,
        [
            "blastguard",
            "blastguard.blastguard",
            "blastguard.blastguard.svc",
            "blastguard.blastguard.svc.cluster.local"
        ]
    );
    let recorded: i64 = tls["metadata"]["annotations"]["certs.blastguard.io/not-after"]
        .as_str()
        .expect("not-after annotation")
        .parse()
        .expect("unix seconds");
    assert!((recorded - until).abs() <= 60);
}

mod fake_apiserver {
    //! Stands in for the Kubernetes API server, which cannot run here, for
    //! `helm template --dry-run=server`: the only way helm's `lookup` reaches a cluster.
    //! It answers what helm asks, in the API server's shapes: /version, discovery
    //! (/api, /apis, an APIResourceList per group version), and GET of a named object
    //! (the stored object, or a 404 Status). helm template writes nothing.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{Method, StatusCode, Uri, header};
    use axum::response::{IntoResponse, Response};
    use serde_json::{Value, json};

    type Store = Arc<Mutex<BTreeMap<String, Value>>>;

    /// A resource: plural name, kind, namespaced.
    type Resource = (&'static str, &'static str, bool);

    /// The resources the chart renders by default, per group version.
    const RESOURCES: &[(&str, &[Resource])] = &[
        (
            "v1",
            &[
                ("secrets", "Secret", true),
                ("configmaps", "ConfigMap", true),
                ("services", "Service", true),
                ("serviceaccounts", "ServiceAccount", true),
            ],
        ),
        ("apps/v1", &[("deployments", "Deployment", true)]),
        (
            "policy/v1",
            &[("poddisruptionbudgets", "PodDisruptionBudget", true)],
        ),
        (
            "apiextensions.k8s.io/v1",
            &[(
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
            )],
        ),
        (
            "rbac.authorization.k8s.io/v1",
            &[
                ("clusterroles", "ClusterRole", false),
                ("clusterrolebindings", "ClusterRoleBinding", false),
                ("roles", "Role", true),
                ("rolebindings", "RoleBinding", true),
            ],
        ),
        (
            "admissionregistration.k8s.io/v1",
            &[
                (
                    "validatingwebhookconfigurations",
                    "ValidatingWebhookConfiguration",
                    false,
                ),
                (
                    "validatingadmissionpolicies",
                    "ValidatingAdmissionPolicy",
                    false,
                ),
                (
                    "validatingadmissionpolicybindings",
                    "ValidatingAdmissionPolicyBinding",
                    false,
                ),
            ],
        ),
    ];

    pub struct FakeApiServer {
        pub url: String,
        store: Store,
    }

    impl FakeApiServer {
        pub fn start() -> Self {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
            listener.set_nonblocking(true).expect("nonblocking");
            let url = format!("http://{}", listener.local_addr().expect("address"));
            let store: Store = Arc::default();
            let app = axum::Router::new()
                .fallback(answer)
                .with_state(store.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    axum::serve(listener, app).await.expect("serve");
                });
            });
            Self { url, store }
        }

        fn path(kind: &str, namespace: &str, name: &str) -> String {
            let (gv, plural) = RESOURCES
                .iter()
                .find_map(|(gv, rs)| {
                    rs.iter()
                        .find(|(_, k, _)| *k == kind)
                        .map(|(p, _, _)| (*gv, *p))
                })
                .expect("a known kind");
            let prefix = if gv.contains('/') {
                format!("/apis/{gv}")
            } else {
                format!("/api/{gv}")
            };
            format!("{prefix}/namespaces/{namespace}/{plural}/{name}")
        }

        /// Stores an object as `helm install` left it: with the release's ownership
        /// metadata and the fields the API server adds.
        pub fn put_installed(&self, object: &Value, release: &str, namespace: &str) {
            let mut o = object.clone();
            let name = o["metadata"]["name"].as_str().expect("name").to_string();
            let kind = o["kind"].as_str().expect("kind").to_string();
            o["metadata"]["namespace"] = json!(namespace);
            o["metadata"]["annotations"]["meta.helm.sh/release-name"] = json!(release);
            o["metadata"]["annotations"]["meta.helm.sh/release-namespace"] = json!(namespace);
            o["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("Helm");
            o["metadata"]["uid"] = json!("6b1f3a52-1c1e-4c57-9a0e-0d5c1d1f2a10");
            o["metadata"]["resourceVersion"] = json!("1001");
            o["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            let path = Self::path(&kind, namespace, &name);
            self.store.lock().expect("store").insert(path, o);
        }

        pub fn remove(&self, kind: &str, namespace: &str, name: &str) {
            self.store
                .lock()
                .expect("store")
                .remove(&Self::path(kind, namespace, name));
        }
    }

    /// A JSON answer, as the API server gives it.
    fn reply(status: StatusCode, body: Value) -> Response {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }

    fn not_found(path: &str) -> Response {
        reply(
            StatusCode::NOT_FOUND,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": format!("{path} not found"),
                "reason": "NotFound", "code": 404
            }),
        )
    }

    async fn answer(State(store): State<Store>, method: Method, uri: Uri) -> Response {
        let path = uri.path();
        if method != Method::GET {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "MethodNotAllowed", "code": 405}),
            );
        }
        match path {
            "/version" => reply(
                StatusCode::OK,
                json!({
                    "major": "1", "minor": "31", "gitVersion": "v1.31.0",
                    "platform": "linux/amd64", "goVersion": "go1.22.5", "compiler": "gc"
                }),
            ),
            "/api" => reply(
                StatusCode::OK,
                json!({
                    "kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]
                }),
            ),
            "/apis" => {
                let groups: Vec<Value> = RESOURCES
                    .iter()
                    .filter_map(|(gv, _)| gv.split_once('/'))
                    .map(|(group, version)| {
                        let v = json!({"groupVersion": format!("{group}/{version}"), "version": version});
                        json!({"name": group, "versions": [v], "preferredVersion": v})
                    })
                    .collect();
                reply(
                    StatusCode::OK,
                    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                )
            }
            _ => {
                let list = RESOURCES
                    .iter()
                    .find(|(gv, _)| path == format!("/api/{gv}") || path == format!("/apis/{gv}"));
                if let Some((gv, resources)) = list {
                    let resources: Vec<Value> = resources
                        .iter()
                        .map(|(plural, kind, namespaced)| {
                            json!({
                                "name": plural, "singularName": kind.to_lowercase(),
                                "namespaced": namespaced, "kind": kind,
                                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]
                            })
                        })
                        .collect();
                    return reply(
                        StatusCode::OK,
                        json!({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": gv, "resources": resources}),
                    );
                }
                match store.lock().expect("store").get(path) {
                    Some(object) => reply(StatusCode::OK, object.clone()),
                    None => not_found(path),
                }
            }
        }
    }
}

#[test]
fn generated_certificates_are_kept_across_helm_upgrade() {
    let api = fake_apiserver::FakeApiServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: test, cluster: {{server: \"{}\"}}}}]\nusers: [{{name: test, user: {{token: test}}}}]\ncontexts: [{{name: test, context: {{cluster: test, user: test, namespace: {NAMESPACE}}}}}]\ncurrent-context: test\n",
            api.url
        ),
    )
    .expect("kubeconfig");
    // What `helm upgrade` renders: templates with lookup answered by the cluster.
    let upgrade = || {
        objects(&succeed(
            tool("helm")
                .args(["template", RELEASE])
                .arg(chart_dir())
                .args([
                    "--namespace",
                    NAMESPACE,
                    "--dry-run=server",
                    "--disable-openapi-validation",
                ])
                .env("KUBECONFIG", &kubeconfig),
        ))
    };
    let ca_of = |objs: &[Value]| secret_data(object(objs, "Secret", "blastguard-ca"), "tls.crt");
    let leaf_of = |objs: &[Value]| {
        let s = object(objs, "Secret", "blastguard-tls");
        (secret_data(s, "tls.crt"), secret_data(s, "tls.key"))
    };

    let installed = objects(&render(""));
    let ca_secret = object(&installed, "Secret", "blastguard-ca");
    let tls_secret = object(&installed, "Secret", "blastguard-tls");

    // Nothing in the cluster yet: every rendering makes a new CA.
    assert_ne!(ca_of(&upgrade()), ca_of(&installed));

    // Installed: the upgrade keeps the CA, the bundle and the serving certificate.
    api.put_installed(ca_secret, RELEASE, NAMESPACE);
    api.put_installed(tls_secret, RELEASE, NAMESPACE);
    let kept = upgrade();
    assert_eq!(ca_of(&kept), ca_of(&installed));
    assert_eq!(ca_bundle(&kept), ca_bundle(&installed));
    assert_eq!(leaf_of(&kept), leaf_of(&installed));
    for name in ["blastguard-ca", "blastguard-tls"] {
        assert_eq!(
            object(&kept, "Secret", name)["metadata"]["annotations"],
            object(&installed, "Secret", name)["metadata"]["annotations"],
            "{name}: the recorded expiry is kept"
        );
    }

    // Each reason for a new serving certificate: due for renewal, lost, issued for
    // other names. The new one comes from the same CA, so the bundle stays.
    let mut due = tls_secret.clone();
    due["metadata"]["annotations"]["certs.blastguard.io/not-after"] =
        json!((unix_now() + 10 * DAY).to_string());
    let mut renamed = tls_secret.clone();
    renamed["metadata"]["annotations"]["certs.blastguard.io/dns-names"] =
        json!("blastguard.old.svc");
    for (why, stored) in [
        ("due for renewal", Some(due)),
        ("lost", None),
        ("for other names", Some(renamed)),
    ] {
        match &stored {
            Some(s) => api.put_installed(s, RELEASE, NAMESPACE),
            None => api.remove("Secret", NAMESPACE, "blastguard-tls"),
        }
        let renewed = upgrade();
        assert_eq!(ca_of(&renewed), ca_of(&installed), "{why}: the CA is kept");
        assert_eq!(
            ca_bundle(&renewed),
            ca_bundle(&installed),
            "{why}: the bundle is kept"
        );
        let (cert, key) = leaf_of(&renewed);
        assert_ne!(
            cert,
            leaf_of(&installed).0,
            "{why}: a new serving certificate"
        );
        tls_handshake(&cert, &key, &ca_bundle(&installed), SERVICE_DNS_NAME)
            .unwrap_or_else(|e| panic!("{why}: the new certificate does not serve: {e}"));
        let (_, until, _) = certificate_facts(&cert);
        assert!(
            (until - unix_now() - 365 * DAY).abs() <= DAY,
            "{why}: a full year"
        );
    }

    // The CA due for renewal: a new CA, a serving certificate from it, and a bundle
    // that trusts both, so the pods' current certificate keeps working until kubelet
    // delivers the new one. The next upgrade drops the old CA.
    api.put_installed(tls_secret, RELEASE, NAMESPACE);
    let mut ca_due = ca_secret.clone();
    ca_due["metadata"]["annotations"]["certs.blastguard.io/not-after"] =
        json!((unix_now() + 10 * DAY).to_string());
    api.put_installed(&ca_due, RELEASE, NAMESPACE);
    let rotated = upgrade();
    let new_ca = ca_of(&rotated);
    assert_ne!(new_ca, ca_of(&installed), "a new CA");
    let bundle = ca_bundle(&rotated);
    assert_eq!(bundle, [new_ca.clone(), ca_of(&installed)].concat());
    let (cert, key) = leaf_of(&rotated);
    tls_handshake(&cert, &key, &new_ca, SERVICE_DNS_NAME)
        .unwrap_or_else(|e| panic!("the certificate from the new CA does not serve: {e}"));
    let (old_cert, old_key) = leaf_of(&installed);
    tls_handshake(&old_cert, &old_key, &bundle, SERVICE_DNS_NAME)
        .unwrap_or_else(|e| panic!("the pods' current certificate is no longer trusted: {e}"));
    let (_, ca_until, _) = certificate_facts(&new_ca);
    assert!((ca_until - unix_now() - 3650 * DAY).abs() <= DAY);
    for o in &rotated {
        if o["kind"] == "Secret" {
            api.put_installed(o, RELEASE, NAMESPACE);
        }
    }
    let after = upgrade();
    assert_eq!(ca_of(&after), new_ca);
    assert_eq!(ca_bundle(&after), new_ca, "the old CA leaves the bundle");
    assert_eq!(leaf_of(&after), leaf_of(&rotated));
}
