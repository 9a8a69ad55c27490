//! `blastguard serve`'s admin port (docs/runbook.md): decisions counted and logged,
//! metrics that pass `promtool check metrics`, and the process metrics of the server.
//!
//! The clients stand in for the Kubernetes API server (there is none here): they send
//! AdmissionReview v1 bodies shaped as it sends them (tests/common/mod.rs), over TLS
//! verified against the CA bundle, to `POST /validate?timeout=10s`, using HTTP/2 when
//! ALPN negotiates it.

mod common;

use common::review::without_request;
use common::*;
use serde_json::Value;

/// The standard process metrics are on the real server's /metrics (and pass promtool
/// with the rest, in the test above), with the values /proc gives for that process: what
/// the runbook's memory and descriptor checks read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_the_process_metrics_of_the_server() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = Server::start_with_leaf(dir.path(), &pki.leaf(1, 2030), &[]);
    let client = webhook_client(&pki.ca_pem, Http::Two);
    post_review(&client, &server, ai_deployment_in_prod(&uid(1)))
        .await
        .unwrap();
    let (status, text) = admin_get(&server, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let value = |name: &str| metric(&text, name).unwrap_or_else(|| panic!("{name} in\n{text}"));

    let rss = value("process_resident_memory_bytes");
    assert!(
        rss > 1e6,
        "RSS {rss} bytes: a running server holds more than 1 MB"
    );
    // Within a factor of the kernel's own figure for that pid (VmRSS, in kB).
    let status_file = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let vm_rss_kb: f64 = status_file
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    assert!(
        (rss / (vm_rss_kb * 1024.0) - 1.0).abs() < 0.5,
        "process_resident_memory_bytes {rss} vs VmRSS {vm_rss_kb} kB"
    );

    let fds = value("process_open_fds");
    // At least stdin/out/err and the two listening sockets.
    assert!(fds >= 5.0, "open fds {fds}");
    assert!(value("process_max_fds") >= fds);
    assert!(value("process_threads") >= 1.0);
    let cpu = value("process_cpu_seconds_total");
    assert!((0.0..600.0).contains(&cpu), "cpu seconds {cpu}");
    // The process started after this test began (the clock's tick, 1/100 s, and the
    // whole seconds of the boot time /proc gives are the slack).
    let started = value("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started >= before - 2.0 && started <= now + 1.0,
        "start time {started} outside [{before}, {now}]"
    );
    for typed in [
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_start_time_seconds gauge",
    ] {
        assert!(text.contains(typed), "{typed} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_logged_and_metrics_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    let server = Server::start_with_leaf(dir.path(), &pki.leaf(1, 2030), &["--log-format", "json"]);
    let client = webhook_client(&pki.ca_pem, Http::Two);
    let deny_uid = uid(11);
    for body in [
        ai_deployment_in_prod(&deny_uid),
        ai_deployment_in_prod(&uid(12)),
        plain_deployment_in_prod(&uid(13)),
        b"{not json".to_vec(),
        without_request(),
    ] {
        post_review(&client, &server, body).await.unwrap();
    }

    let (status, text) = admin_get(&server, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let cases = [
        (
            r#"blastguard_admission_requests_total{decision="deny",kind="Deployment",operation="CREATE",reason="over_limits"}"#,
            2.0,
        ),
        (
            r#"blastguard_admission_requests_total{decision="allow",kind="Deployment",operation="CREATE",reason="not_ai_assisted"}"#,
            1.0,
        ),
        (
            r#"blastguard_admission_requests_total{decision="error",kind="unknown",operation="unknown",reason="malformed"}"#,
            1.0,
        ),
        (
            r#"blastguard_admission_requests_total{decision="error",kind="unknown",operation="unknown",reason="missing_request"}"#,
            1.0,
        ),
        (r#"blastguard_approvals_total{result="missing"}"#, 2.0),
        ("blastguard_admission_duration_seconds_count", 5.0),
        ("blastguard_inflight_requests", 0.0),
        ("blastguard_policy_last_reload_success", 1.0),
    ];
    for (series, want) in cases {
        assert_eq!(metric(&text, series), Some(want), "{series}\n{text}");
    }

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/install-tools.sh)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let line: Value = eventually("the decision log line", || async {
        server.stderr().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["uid"] == deny_uid.as_str()).then_some(v)
        })
    })
    .await;
    let expected = [
        ("operation", Value::from("CREATE")),
        ("kind", "Deployment".into()),
        ("namespace", "prod".into()),
        ("name", "api".into()),
        ("user", "alice@example.com".into()),
        ("decision", "deny".into()),
        ("reason", "over_limits".into()),
        ("rule", "protected".into()),
        ("pods_affected", 40.into()),
        ("dry_run", false.into()),
    ];
    for (field, want) in expected {
        assert_eq!(line[field], want, "{field} in {line}");
    }
    assert!(
        line["signal"]
            .as_str()
            .unwrap()
            .contains("blastguard.io/ai-agent"),
        "{line}"
    );
    assert!(line["duration_seconds"].as_f64().unwrap() > 0.0, "{line}");
}
