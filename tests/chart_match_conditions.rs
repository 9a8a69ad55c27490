//! The webhook's matchConditions, evaluated with the `cel` crate as the API server
//! evaluates them (a stand-in for the API server, for a fast table of cases): only
//! AI-assisted requests are sent, the server's own provenance check agrees on every case
//! and on the shared fixtures, and the configured provenance values are followed.
//!
//! The chart's helpers (`helm template`, the rendered objects, matchConditions in CEL) are
//! in tests/common/chart.rs; helm and kubernetes-validate come from `.tools/bin`
//! (`scripts/install-tools.sh`, which `scripts/test.sh` runs), kubectl, openssl and
//! promtool from PATH.

mod common;

use std::collections::BTreeSet;

use common::chart::*;
use common::repo;
use common::review::Request;
use serde_json::{Value, json};

#[test]
fn match_conditions_send_only_ai_assisted_requests() {
    let o = sample_objects();
    let deploy = &o.deployment;
    let mut updated = deploy.clone();
    updated["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    let marked = annotated(deploy, &[("blastguard.io/ai-agent", "claude-code")]);
    let ai = "system:serviceaccount:ai-agents:claude";
    let hpa = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";

    let cases = [
        // People.
        (
            "a person creates a Deployment",
            Request::on("CREATE", Some(deploy), None),
            false,
        ),
        (
            "a person updates it",
            Request::on("UPDATE", Some(&updated), Some(deploy)),
            false,
        ),
        (
            "a person deletes it",
            Request::on("DELETE", None, Some(deploy)),
            false,
        ),
        (
            "a person deletes one an AI made",
            Request::on("DELETE", None, Some(&marked)),
            false,
        ),
        ("a person scales it", Request::scale(deploy, 3, 30), false),
        (
            "the HPA scales it",
            Request::scale(deploy, 3, 30).by(hpa).in_groups(&[
                "system:serviceaccounts",
                "system:serviceaccounts:kube-system",
                "system:authenticated",
            ]),
            false,
        ),
        (
            "a person scales, the Scale carrying an AI marker",
            Request::scale(deploy, 3, 30).objects_annotated(&[("blastguard.io/ai-agent", "x")]),
            false,
        ),
        (
            "a request without username, groups or options",
            Request::on("CREATE", Some(deploy), None).without_identity(),
            false,
        ),
        (
            "a person marks ai-agent false",
            Request::on(
                "CREATE",
                Some(&annotated(deploy, &[("blastguard.io/ai-agent", "false")])),
                None,
            ),
            false,
        ),
        (
            "a person marks ai-assisted ' False '",
            Request::on(
                "CREATE",
                Some(&annotated(
                    deploy,
                    &[("blastguard.io/ai-assisted", " False ")],
                )),
                None,
            ),
            false,
        ),
        (
            "a person updates an object marked false",
            Request::on(
                "UPDATE",
                Some(&updated),
                Some(&annotated(deploy, &[("blastguard.io/ai-agent", "FALSE")])),
            ),
            false,
        ),
        (
            "a person creates a Namespace",
            Request::on("CREATE", Some(&o.namespace), None),
            false,
        ),
        // AI-assisted.
        (
            "an AI-annotated create",
            Request::on("CREATE", Some(&marked), None),
            true,
        ),
        (
            "an ai-assisted: true update",
            Request::on(
                "UPDATE",
                Some(&annotated(
                    &updated,
                    &[("blastguard.io/ai-assisted", "true")],
                )),
                Some(deploy),
            ),
            true,
        ),
        (
            "a marker whose value is 'falsely'",
            Request::on(
                "CREATE",
                Some(&annotated(deploy, &[("blastguard.io/ai-agent", "falsely")])),
                None,
            ),
            true,
        ),
        (
            // Unicode case folding would call it "false"; the server compares ASCII only.
            "a marker 'fal\u{17f}e'",
            Request::on(
                "CREATE",
                Some(&annotated(
                    deploy,
                    &[("blastguard.io/ai-agent", "fal\u{17f}e")],
                )),
                None,
            ),
            true,
        ),
        (
            "a marker value longer than the regex is run on",
            Request::on(
                "CREATE",
                Some(&annotated(
                    deploy,
                    &[("blastguard.io/ai-agent", &"agent ".repeat(50))],
                )),
                None,
            ),
            true,
        ),
        (
            "an UPDATE that strips the marker",
            Request::on("UPDATE", Some(&updated), Some(&marked)),
            true,
        ),
        (
            "an UPDATE that sets the marker to false",
            Request::on(
                "UPDATE",
                Some(&annotated(&updated, &[("blastguard.io/ai-agent", "false")])),
                Some(&marked),
            ),
            true,
        ),
        (
            "an AI identity deletes",
            Request::on("DELETE", None, Some(deploy)).by(ai),
            true,
        ),
        (
            "an AI identity scales",
            Request::scale(deploy, 3, 30).by(ai),
            true,
        ),
        (
            "an AI tool's field manager scales",
            Request::scale(deploy, 3, 30).field_manager("kubectl-ai-scaler"),
            true,
        ),
        (
            "an AI tool applies server-side",
            Request::on("CREATE", Some(deploy), None).field_manager("kubectl-ai"),
            true,
        ),
        (
            "an AI identity whose name holds a newline",
            Request::on("CREATE", Some(deploy), None).by("system:serviceaccount:ai-agents:x\ny"),
            true,
        ),
        (
            "an AI-annotated Namespace",
            Request::on(
                "CREATE",
                Some(&annotated(
                    &o.namespace,
                    &[("blastguard.io/ai-agent", "copilot")],
                )),
                None,
            ),
            true,
        ),
        (
            "an AI-annotated CronJob",
            Request::on(
                "CREATE",
                Some(&annotated(
                    &o.cronjob,
                    &[("blastguard.io/ai-assisted", "true")],
                )),
                None,
            ),
            true,
        ),
    ];
    check_cases("", &cases);
}

#[test]
fn match_conditions_agree_with_the_server_on_the_shared_fixtures() {
    // tests/fixtures: AdmissionReviews built from real kubectl output, shared with the
    // engine's tests.
    let objs = objects(&render(""));
    let conditions = MatchConditions::of(&objs);
    let policy = rendered_policy(&objs);
    let mut answers = BTreeSet::new();
    let dir = repo().join("tests/fixtures");
    for entry in std::fs::read_dir(&dir).expect("tests/fixtures") {
        let path = entry.expect("fixture").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let review: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read fixture")).expect("JSON");
        let request = Request(review["request"].clone());
        let sent = conditions
            .sends(&request)
            .unwrap_or_else(|e| panic!("{}: a matchCondition errors: {e}", path.display()));
        assert_eq!(
            sent,
            server_calls_ai(&policy, &request),
            "{}: the matchConditions and the server's provenance check disagree",
            path.display()
        );
        answers.insert(sent);
    }
    assert_eq!(
        answers,
        BTreeSet::from([false, true]),
        "the fixtures hold both kinds"
    );
}

#[test]
fn match_conditions_follow_the_configured_provenance_values() {
    // Globs with regex metacharacters, groups, another annotation, sticky off: the
    // rendering must escape them and match exactly as the server's globs do.
    let values = r#"
policy:
  provenance:
    annotations: [example.com/made-by-ai]
    users: ["bot-??", "*@ai.example.com"]
    groups: ["ai:agents", "team-(x)+*"]
    fieldManagers: ["agent.*"]
    sticky: false
"#;
    let o = sample_objects();
    let d = &o.deployment;
    let create = || Request::on("CREATE", Some(d), None);
    let marked = annotated(d, &[("example.com/made-by-ai", "yes")]);
    let cases = [
        ("user bot-42", create().by("bot-42"), true),
        ("user bot-4", create().by("bot-4"), false),
        ("user bot-423", create().by("bot-423"), false),
        (
            "user x@ai.example.com",
            create().by("x@ai.example.com"),
            true,
        ),
        (
            "user x@aiXexample.com",
            create().by("x@aiXexample.com"),
            false,
        ),
        (
            "group ai:agents",
            create().in_groups(&["developers", "ai:agents"]),
            true,
        ),
        (
            "group ai:agents-2",
            create().in_groups(&["ai:agents-2"]),
            false,
        ),
        (
            "group team-(x)+1",
            create().in_groups(&["team-(x)+1"]),
            true,
        ),
        ("group team-x1", create().in_groups(&["team-x1"]), false),
        (
            "field manager agent.k",
            create().field_manager("agent.k"),
            true,
        ),
        (
            "field manager agentXk",
            create().field_manager("agentXk"),
            false,
        ),
        (
            "the configured annotation",
            Request::on("CREATE", Some(&marked), None),
            true,
        ),
        (
            "an annotation no longer configured",
            Request::on(
                "CREATE",
                Some(&annotated(d, &[("blastguard.io/ai-agent", "x")])),
                None,
            ),
            false,
        ),
        (
            "stripping the marker with sticky off",
            Request::on("UPDATE", Some(d), Some(&marked)),
            false,
        ),
        (
            "a person deletes a marked object",
            Request::on("DELETE", None, Some(&marked)),
            false,
        ),
        (
            "an AI group deletes",
            Request::on("DELETE", None, Some(d)).in_groups(&["ai:agents"]),
            true,
        ),
        (
            "an AI group scales",
            Request::scale(d, 3, 4).in_groups(&["ai:agents"]),
            true,
        ),
    ];
    check_cases(values, &cases);

    // No signal at all: nothing is AI-assisted, nothing is sent, and nothing errors.
    let none =
        "policy:\n  provenance: {annotations: [], users: [], groups: [], fieldManagers: []}\n";
    let conditions = MatchConditions::of(&objects(&render(none)));
    for request in [
        Request::on("CREATE", Some(&marked), None).by("system:serviceaccount:ai-agents:a"),
        Request::scale(d, 1, 9),
    ] {
        assert_eq!(conditions.sends(&request), Ok(false));
    }
}
