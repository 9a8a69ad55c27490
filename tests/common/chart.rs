//! The Helm chart as the chart tests read it (tests/chart_*.rs): `helm template`, the
//! rendered objects, and the webhook's matchConditions evaluated with the `cel` crate
//! as the API server evaluates them.
//!
//! helm and kubernetes-validate are taken from `.tools/bin` (`scripts/install-tools.sh`,
//! which `scripts/test.sh` runs); kubectl, openssl and promtool from PATH.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use blastguard::policy::Policy;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::Value;

use super::review::Request;
use super::{repo, tool};

pub const RELEASE: &str = "blastguard";
pub const NAMESPACE: &str = "blastguard";
/// The name the API server calls the webhook by: `<service>.<namespace>.svc`.
pub const SERVICE_DNS_NAME: &str = "blastguard.blastguard.svc";

/// Kinds from CRDs (Prometheus operator, cert-manager) that kubernetes-validate has no
/// schema for. They are checked by other means: PrometheusRule by promtool, the others
/// field by field in `each_mode_renders_exactly_its_objects`.
pub const SCHEMALESS_KINDS: &[&str] =
    &["ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"];

/// Every optional part of the chart switched on.
pub const OPTIONAL_PARTS: &str = r#"
metrics:
  serviceMonitor: {enabled: true, labels: {release: prometheus}}
  prometheusRule: {enabled: true, labels: {release: prometheus}}
networkPolicy:
  enabled: true
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]
grafanaDashboard: {enabled: true}
priorityClassName: system-cluster-critical
cluster: {enabled: true}
allowedSigners:
  entries:
    - 'alice@example.com namespaces="approval@blastguard.io" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEDRbbeo68CP2MprQEJGYnHK8jjEFT5bvdQ1SfOw64y'
"#;

/// The values every rendering test covers: the defaults, each certificate mode, and
/// the optional parts on.
pub fn renderings() -> Vec<(&'static str, &'static str)> {
    vec![
        ("default values", ""),
        ("cert-manager", "certificates: {mode: cert-manager}\n"),
        (
            "cert-manager with an issuer of one's own",
            "certificates:\n  mode: cert-manager\n  certManager: {issuerRef: {kind: ClusterIssuer, name: corp-ca}}\n",
        ),
        (
            "an existing Secret",
            "certificates:\n  mode: secret\n  secret: {name: corp-tls, caBundle: Y2EtYnVuZGxl}\n",
        ),
        ("optional parts on", OPTIONAL_PARTS),
        ("a webhook outside the cluster", OUTSIDE),
    ]
}

/// webhook.url: the development loop, the webhook served outside the cluster with a
/// certificate from this CA (base64 of a placeholder: only the rendering reads it).
pub const OUTSIDE_URL: &str = "https://192.168.49.1:8443/validate";
pub const OUTSIDE: &str = "webhook:\n  url: https://192.168.49.1:8443/validate\ncertificates:\n  mode: secret\n  secret: {caBundle: Y2EtYnVuZGxl}\n";

// ---------------------------------------------------------------------------------
// Running the tools.

pub fn chart_dir() -> PathBuf {
    repo().join("charts/blastguard")
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run scripts/install-tools.sh)"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the command, fails the test with its output unless it succeeds, returns stdout.
pub fn succeed(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `promtool ARGS` in `dir`; the test fails with its output unless it succeeds.
pub fn promtool(dir: &Path, args: &[&str]) -> String {
    succeed(tool("promtool").args(args).current_dir(dir))
}

pub fn write_values(dir: &Path, values: &str) -> PathBuf {
    let file = dir.join("values.yaml");
    std::fs::write(&file, values).expect("write values file");
    file
}

/// `helm template` of `chart` (a directory, a .tgz or an oci:// reference) as release
/// blastguard in `namespace`, with `values` (YAML; none when empty) and `extra`
/// arguments. The one way the tests render a chart.
pub fn helm_template(
    chart: impl AsRef<OsStr>,
    namespace: &str,
    values: &str,
    extra: &[&str],
) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = tool("helm");
    cmd.args(["template", RELEASE])
        .arg(chart)
        .args(["--namespace", namespace]);
    if !values.is_empty() {
        cmd.arg("-f").arg(write_values(dir.path(), values));
    }
    run(cmd.args(extra))
}

/// The rendered YAML in the release namespace, the CRDs of crds/ included (as helm
/// install applies them); the test fails if rendering does.
pub fn render(values: &str) -> String {
    let out = helm_template(chart_dir(), NAMESPACE, values, &["--include-crds"]);
    assert!(
        out.status.success(),
        "helm template failed for values:\n{values}\n{}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The chart's alerting rules (rendered into `objs`) that `keep` names, checked by
/// `promtool check rules` as rendered and run through the promtool rule tests `tests`
/// (which read `alerts.yaml`). The tests get the rules without annotations: they
/// compare labels, and annotations are templates of the live value. Returns the kept
/// rules as rendered, annotations included, for what else a test asks of them.
pub fn alert_tests(objs: &[Value], keep: impl Fn(&str) -> bool, tests: &str) -> Vec<Value> {
    let rule = object(objs, "PrometheusRule", "blastguard");
    let mut groups = rule["spec"]["groups"].clone();
    for group in groups.as_array_mut().expect("groups") {
        let rules = group["rules"].as_array_mut().expect("rules");
        rules.retain(|r| r["alert"].as_str().is_some_and(&keep));
    }
    let kept: Vec<Value> = groups
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").clone())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, groups: &Value| {
        let yaml = serde_yaml::to_string(&serde_json::json!({"groups": groups})).expect("YAML");
        std::fs::write(dir.path().join(name), yaml).expect("write");
    };
    write("rules.yaml", &groups);
    promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    for group in groups.as_array_mut().expect("groups") {
        for r in group["rules"].as_array_mut().expect("rules") {
            r.as_object_mut().expect("rule").remove("annotations");
        }
    }
    write("alerts.yaml", &groups);
    std::fs::write(dir.path().join("tests.yaml"), tests).expect("write");
    promtool(dir.path(), &["test", "rules", "tests.yaml"]);
    kept
}

/// The documents of a YAML stream, as JSON values, empty documents skipped.
pub fn objects(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).expect("YAML maps to JSON"))
        .collect()
}

pub fn kind_and_name(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or_default().to_string(),
        o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The object of this kind and name, if rendered.
pub fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objs.iter()
        .find(|o| kind_and_name(o) == (kind.to_string(), name.to_string()))
}

/// The object of this kind and name; the test fails naming what was rendered if
/// there is none.
pub fn object<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    find(objs, kind, name).unwrap_or_else(|| {
        let have: Vec<_> = objs.iter().map(kind_and_name).collect();
        panic!("no {kind} {name} among {have:?}")
    })
}

pub fn typed<T: serde::de::DeserializeOwned>(o: &Value) -> T {
    serde_json::from_value(o.clone())
        .unwrap_or_else(|e| panic!("{:?} does not deserialize: {e}", kind_and_name(o)))
}

/// A Secret's value as text (certificates and keys are PEM).
pub fn secret_data(secret: &Value, key: &str) -> String {
    let s: Secret = typed(secret);
    let bytes = s
        .data
        .unwrap_or_default()
        .get(key)
        .unwrap_or_else(|| panic!("Secret {:?} has no {key}", kind_and_name(secret)))
        .0
        .clone();
    String::from_utf8(bytes).expect("PEM is text")
}

pub fn webhook_config(objs: &[Value]) -> ValidatingWebhookConfiguration {
    typed(object(objs, "ValidatingWebhookConfiguration", "blastguard"))
}

/// The webhook's caBundle as PEM text.
pub fn ca_bundle(objs: &[Value]) -> String {
    let vwc = webhook_config(objs);
    let webhooks = vwc.webhooks.unwrap_or_default();
    let bytes = webhooks[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("the webhook configuration has a caBundle")
        .0;
    String::from_utf8(bytes).expect("PEM is text")
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------
// matchConditions, evaluated with CEL as the API server does.

/// The rendered matchConditions of the webhook, compiled.
///
/// The API server evaluates them with the variables `request` (the AdmissionRequest
/// without `object` and `oldObject`, its optional fields absent when unset), `object`
/// and `oldObject` (null where the operation has none: `object` on DELETE, `oldObject`
/// on CREATE). A request is sent only if every condition is true; an error under
/// failurePolicy Fail rejects the request, so any error is a defect.
pub struct MatchConditions {
    env: Arc<cel::Env>,
    programs: Vec<(String, cel::Program)>,
}

impl MatchConditions {
    pub fn of(objs: &[Value]) -> Self {
        let env = Arc::new(cel::Env::stdlib());
        let vwc = webhook_config(objs);
        let conditions = vwc.webhooks.expect("webhooks")[0]
            .match_conditions
            .clone()
            .expect("matchConditions");
        assert!(!conditions.is_empty() && conditions.len() <= 64);
        let programs = conditions
            .into_iter()
            .map(|c| {
                let program = env.compile(&c.expression).unwrap_or_else(|e| {
                    panic!(
                        "matchCondition {} does not compile: {e}\n{}",
                        c.name, c.expression
                    )
                });
                (c.name, program)
            })
            .collect();
        Self { env, programs }
    }

    /// Whether the API server sends the request to the webhook.
    pub fn sends(&self, request: &Request) -> Result<bool, String> {
        let mut req = request.0.clone();
        let fields = req.as_object_mut().expect("request is an object");
        let object = fields.remove("object").unwrap_or(Value::Null);
        let old_object = fields.remove("oldObject").unwrap_or(Value::Null);
        let mut all = true;
        for (name, program) in &self.programs {
            let mut ctx = cel::Context::with_env(self.env.clone());
            ctx.add_variable("request", &req)
                .map_err(|e| format!("{e:?}"))?;
            ctx.add_variable("object", &object)
                .map_err(|e| format!("{e:?}"))?;
            ctx.add_variable("oldObject", &old_object)
                .map_err(|e| format!("{e:?}"))?;
            match program.execute(&ctx) {
                Ok(cel::Value::Bool(b)) => all &= b,
                Ok(other) => return Err(format!("{name} returned {other:?}, not a bool")),
                Err(e) => return Err(format!("{name} raised {e:?}")),
            }
        }
        Ok(all)
    }
}

/// Whether the server's own provenance check (src/provenance.rs) calls the request
/// AI-assisted under this policy.
pub fn server_calls_ai(policy: &Policy, request: &Request) -> bool {
    let body = request.review();
    let req = blastguard::review::decode(&body)
        .unwrap_or_else(|r| panic!("the server cannot read the sample: {}", r.error));
    // The server's own fast path: the request view and the objects' annotations.
    let (new, old) = req.annotations();
    let facts = blastguard::provenance::Facts::of_view(&req, new, old);
    blastguard::provenance::detect(&facts, &policy.provenance).is_some()
}

/// The policy the chart renders into its ConfigMap.
pub fn rendered_policy(objs: &[Value]) -> Policy {
    let cm = object(objs, "ConfigMap", "blastguard-policy");
    let text = cm["data"]["policy.yaml"].as_str().expect("policy.yaml");
    Policy::from_yaml(text, Some("the chart's policy ConfigMap".into()))
        .unwrap_or_else(|e| panic!("the rendered policy does not load: {e}\n{text}"))
}

/// A real object from kubectl (client-side, no cluster).
pub fn kubectl_object(args: &[&str]) -> Value {
    let json = succeed(
        tool("kubectl")
            .args(args)
            .args(["--dry-run=client", "-o", "json"]),
    );
    serde_json::from_str(&json).expect("kubectl prints JSON")
}

/// A copy of `object` with these annotations.
pub fn annotated(object: &Value, annotations: &[(&str, &str)]) -> Value {
    super::objects::annotate(object.clone(), annotations)
}

pub struct Objects {
    /// `kubectl create deployment api` in shop.
    pub deployment: Value,
    /// `kubectl create cronjob nightly` in shop.
    pub cronjob: Value,
    /// `kubectl create namespace team-x`.
    pub namespace: Value,
}

pub fn sample_objects() -> Objects {
    Objects {
        deployment: super::objects::deployment("shop", "api", 3, "nginx:1.27"),
        cronjob: kubectl_object(&[
            "create",
            "cronjob",
            "nightly",
            "--image=busybox",
            "--schedule=0 3 * * *",
            "-n",
            "shop",
        ]),
        namespace: kubectl_object(&["create", "namespace", "team-x"]),
    }
}

/// Evaluates each case, asserting no expression errors, the expected answer, and that
/// the webhook is sent exactly the requests the server itself calls AI-assisted.
pub fn check_cases(values: &str, cases: &[(&str, Request, bool)]) {
    let objs = objects(&render(values));
    let conditions = MatchConditions::of(&objs);
    let policy = rendered_policy(&objs);
    for (name, request, sent) in cases {
        let got = conditions
            .sends(request)
            .unwrap_or_else(|e| panic!("{name}: a matchCondition errors: {e}"));
        assert_eq!(got, *sent, "{name}: sent to the webhook?");
        assert_eq!(
            got,
            server_calls_ai(&policy, request),
            "{name}: the matchConditions and the server's provenance check disagree"
        );
    }
}

/// The newest Kubernetes version kubernetes-validate knows: its default.
pub fn newest_kubernetes_version() -> String {
    let help = succeed(tool("kubernetes-validate").arg("--help"));
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let rest = flat
        .split("Defaults to ")
        .nth(1)
        .expect("kubernetes-validate --help names its default version");
    rest.chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect::<String>()
        .trim_end_matches('.')
        .to_string()
}

/// What `kubernetes-validate` said of a set of files.
pub struct Validation {
    /// How many objects passed.
    pub passed: usize,
    /// The kinds it has no schema for.
    pub schemaless: BTreeSet<String>,
}

/// `kubernetes-validate --strict` over the files for one Kubernetes version.
pub fn kubernetes_validate(files: &[PathBuf], version: &str) -> Result<Validation, String> {
    let out = run(tool("kubernetes-validate")
        .args(["--strict", "-k", version])
        .args(files));
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    if !out.status.success() || report.contains("ERROR") {
        return Err(report);
    }
    let passed = report
        .lines()
        .filter(|l| l.contains(" passed for "))
        .count();
    let schemaless = report
        .lines()
        .filter_map(|l| l.split("Couldn't find schema for kind ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    Ok(Validation { passed, schemaless })
}

/// The (kind, name) of each object.
pub fn names(objs: &[Value]) -> BTreeSet<(String, String)> {
    objs.iter().map(kind_and_name).collect()
}

/// A set of (kind, name).
pub fn set(items: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect()
}

/// A TLS handshake in memory between a rustls server (the webhook's TLS stack) with
/// this certificate and key, and a client that trusts only `ca_pem` and asks for
/// `server_name`, as the API server does with the webhook's caBundle.
pub fn tls_handshake(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    server_name: &str,
) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| format!("key PEM: {e}"))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the server cannot use this certificate and key: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| format!("CA PEM: {e}"))?)
            .map_err(|e| format!("CA: {e}"))?;
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let mut client: rustls::Connection = rustls::ClientConnection::new(Arc::new(client), name)
        .map_err(|e| e.to_string())?
        .into();
    let mut server: rustls::Connection = rustls::ServerConnection::new(Arc::new(server))
        .map_err(|e| e.to_string())?
        .into();
    fn pump(from: &mut rustls::Connection, to: &mut rustls::Connection) -> Result<(), String> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).map_err(|e| e.to_string())?;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).map_err(|e| e.to_string())?;
            to.process_new_packets().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        pump(&mut client, &mut server).map_err(|e| format!("server: {e}"))?;
        pump(&mut server, &mut client).map_err(|e| format!("client: {e}"))?;
    }
    Err("the handshake did not finish".into())
}
