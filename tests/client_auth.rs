//! Only the API server's reviews count (issue 19, finding 3): with `--client-ca`,
//! `serve` completes a TLS handshake only with a client whose certificate chains to
//! that CA, and the CA reloads with the serving certificate.
//!
//! Before: `serve` accepted any client (`with_no_client_auth()`), so anything that
//! reached the port could post reviews "by" any identity and spend its budget.
//!
//! The first test runs the real binary against clients made here (rustls, as the API
//! server's Go TLS client would present a certificate); the second, on a real control
//! plane (scripts/control-plane.sh), gives kube-apiserver a client certificate through
//! its AdmissionConfiguration's WebhookAdmissionConfiguration `kubeConfigFile` and
//! shows its reviews judged while a client without the certificate is refused.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{ControlPlane, wait_for};
use common::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A TLS client trusting `server_ca`, presenting `identity` (certificate, key) if any.
fn client_config(server_ca: &str, identity: Option<&Leaf>) -> rustls::ClientConfig {
    install_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Posts one review over a fresh TLS connection: the HTTP status line, or the error
/// that ended the connection first.
async fn post(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    body: &[u8],
) -> Result<String, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let head = format!(
        "POST /validate?timeout=10s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // In TLS 1.3 the server checks the client's certificate after the client's side
    // of the handshake is done: a refusal shows on the first read or write.
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    tls.write_all(body)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut answer)).await {
        Ok(Ok(_)) if !answer.is_empty() => Ok(String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()),
        Ok(Ok(_)) => Err("closed without an answer".into()),
        Ok(Err(e)) => Err(format!("read: {e}")),
        Err(_) => Err("no answer within 10 s".into()),
    }
}

fn write_ca(dir: &Path, name: &str, pem: &str) {
    // Written aside and renamed, so the reloader never reads half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, pem).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clients_with_a_certificate_of_the_client_ca_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let serving = Pki::new();
    let api_server_ca = Pki::new();
    let other_ca = Pki::new();
    let api_server = api_server_ca.leaf(11, 2030);
    let stranger = other_ca.leaf(12, 2030);
    write_ca(dir.path(), "client-ca.crt", &api_server_ca.ca_pem);
    let ca_path = dir.path().join("client-ca.crt");
    let server = Server::start_with_leaf(
        dir.path(),
        &serving.leaf(1, 2030),
        &[
            "--client-ca",
            ca_path.to_str().unwrap(),
            "--reload-interval",
            "100ms",
        ],
    );
    let body = ai_deployment_in_prod(&uid(1));
    let with = |leaf: Option<&Leaf>| client_config(&serving.ca_pem, leaf);

    let answered = post(server.webhook, with(Some(&api_server)), &body).await;
    assert_eq!(
        answered.as_deref(),
        Ok("HTTP/1.1 200 OK"),
        "the API server's certificate"
    );
    for (who, config) in [
        ("no certificate", with(None)),
        ("a certificate of another CA", with(Some(&stranger))),
    ] {
        let refused = post(server.webhook, config, &body).await;
        assert!(refused.is_err(), "{who}: {refused:?}");
        eprintln!("{who}: refused ({})", refused.unwrap_err());
    }

    // The CA reloads: the other CA's certificate is now the one served.
    write_ca(dir.path(), "client-ca.crt", &other_ca.ca_pem);
    let swapped = tokio::time::timeout(PATIENCE, async {
        loop {
            if post(server.webhook, with(Some(&stranger)), &body)
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        swapped.is_ok(),
        "the new client CA was never loaded:\n{}",
        server.stderr()
    );
    assert!(
        post(server.webhook, with(Some(&api_server)), &body)
            .await
            .is_err()
    );

    // A broken CA file keeps the last good one.
    write_ca(dir.path(), "client-ca.crt", "not a certificate");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        post(server.webhook, with(Some(&stranger)), &body)
            .await
            .is_ok()
    );
    assert!(server.stderr().contains("client CA"), "{}", server.stderr());
}

// ---------------------------------------------------------------------------------
// The API server with a client certificate, on a real control plane

fn kubectl(cp: &ControlPlane, args: &[&str]) -> (bool, String) {
    let out = Command::new(repo().join(".tools/bin/kubectl"))
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(args)
        .output()
        .expect("kubectl (run scripts/install-tools.sh)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn ok(cp: &ControlPlane, args: &[&str]) -> String {
    let (success, out) = kubectl(cp, args);
    assert!(success, "kubectl {args:?}: {out}");
    out
}

#[test]
fn the_api_server_with_its_client_certificate_is_judged_and_others_are_refused() {
    install_crypto();
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    let serving = Pki::new();
    let api_server_ca = Pki::new();
    let api_server = api_server_ca.leaf(21, 2030);
    std::fs::write(dir.join("apiserver-client.crt"), &api_server.cert_pem).unwrap();
    std::fs::write(dir.join("apiserver-client.key"), &api_server.key_pem).unwrap();
    std::fs::write(dir.join("client-ca.crt"), &api_server_ca.ca_pem).unwrap();
    // Below the kernel's ephemeral range, so the control plane (which takes ports the
    // kernel hands out) cannot take it before the webhook binds it.
    let listen = (0..10_000u32)
        .map(|i| 20_000 + ((i + std::process::id()) % 10_000) as u16)
        .find_map(|port| TcpListener::bind(("127.0.0.1", port)).ok())
        .unwrap()
        .local_addr()
        .unwrap();

    // The credentials kube-apiserver presents to the webhook at this address
    // (kubernetes.io/docs: "Authenticate API servers").
    let webhook_kubeconfig = dir.join("webhook-kubeconfig.yaml");
    std::fs::write(
        &webhook_kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nusers:\n- name: \"{listen}\"\n  user:\n    client-certificate: {}\n    client-key: {}\n",
            dir.join("apiserver-client.crt").display(),
            dir.join("apiserver-client.key").display()
        ),
    )
    .unwrap();
    let admission = dir.join("admission.yaml");
    std::fs::write(
        &admission,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n- name: ValidatingAdmissionWebhook\n  configuration:\n    apiVersion: apiserver.config.k8s.io/v1\n    kind: WebhookAdmissionConfiguration\n    kubeConfigFile: {}\n",
            webhook_kubeconfig.display()
        ),
    )
    .unwrap();
    let cp = ControlPlane::up_with_apiserver_args(&format!(
        "--admission-control-config-file={}",
        admission.display()
    ));

    // The chart, registered by URL at the server started below.
    let values = dir.join("values.json");
    std::fs::write(
        &values,
        serde_json::json!({
            "webhook": {"url": format!("https://{listen}/validate")},
            "certificates": {"mode": "secret", "secret": {"caBundle": common::cluster::base64(serving.ca_pem.as_bytes())}},
        })
        .to_string(),
    )
    .unwrap();
    let helm = Command::new(repo().join(".tools/bin/helm"))
        .args(["install", "blastguard"])
        .arg(common::cluster::chart())
        .args(["--namespace", "blastguard", "--create-namespace", "-f"])
        .arg(&values)
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .expect("helm (run scripts/install-tools.sh)");
    assert!(
        helm.status.success(),
        "{}",
        String::from_utf8_lossy(&helm.stderr)
    );

    let leaf = serving.leaf(1, 2030);
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &leaf.key_pem).unwrap();
    let server = Server::start_at(
        listen,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &[
            "--tls-cert",
            dir.join("tls.crt").to_str().unwrap(),
            "--tls-key",
            dir.join("tls.key").to_str().unwrap(),
            "--client-ca",
            dir.join("client-ca.crt").to_str().unwrap(),
        ],
    );
    std::fs::write(cp.dir.path().join("serve.pid"), server.pid().to_string()).unwrap();

    let bot = "system:serviceaccount:ai-agents:bot";
    ok(&cp, &["create", "namespace", "prod"]);
    ok(&cp, &["create", "namespace", "ai-agents"]);
    ok(
        &cp,
        &[
            "create",
            "clusterrolebinding",
            "ai-edit",
            "--clusterrole=edit",
            "--serviceaccount=ai-agents:bot",
        ],
    );
    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: prod}\nspec:\n  replicas: 40\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec: {containers: [{name: c, image: nginx}]}\n";
    let manifest = dir.join("deployment.yaml");
    std::fs::write(&manifest, deployment).unwrap();
    // The webhook configuration may take a moment to be seen by the API server's
    // admission; the first answer from blastguard is what counts.
    let denial = wait_for(
        "the API server to call the webhook",
        Duration::from_secs(60),
        || {
            let (created, out) = kubectl(
                &cp,
                &["--as", bot, "create", "-f", manifest.to_str().unwrap()],
            );
            assert!(!created, "a 40-pod AI create in prod was admitted: {out}");
            out.contains("blastguard").then_some(out)
        },
    );
    eprintln!("the API server's review, judged: {denial}");
    assert!(denial.contains("denied the request"), "{denial}");
    assert!(
        !server.stderr().contains("TLS handshake failed") || denial.contains("denied"),
        "{}",
        server.stderr()
    );

    // Anyone else who reaches the port is refused at the handshake.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body = ai_deployment_in_prod(&uid(2));
    let refused = rt.block_on(post(listen, client_config(&serving.ca_pem, None), &body));
    assert!(
        refused.is_err(),
        "a client without a certificate: {refused:?}"
    );
    let intruder = Pki::new().leaf(3, 2030);
    let refused = rt.block_on(post(
        listen,
        client_config(&serving.ca_pem, Some(&intruder)),
        &body,
    ));
    assert!(
        refused.is_err(),
        "a client with another CA's certificate: {refused:?}"
    );
}
