//! docs/design.md held to the code, so the contract stated in the repository cannot
//! drift from what ships: its approval payload is one blastguard reads, its annotation
//! table is the keys `blastguard::annotations` defines, and every command and flag its
//! Commands section names is one the binary has, and the inbox columns it lists are the
//! CRD's. (Its policy goes through `blastguard policy check` in tests/doc_examples.rs,
//! like every policy in the docs.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use blastguard::annotations;
use blastguard::approval::ApprovalPayload;
use blastguard::approval::payload::SIGNATURE_NAMESPACE;

fn design() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/design.md");
    std::fs::read_to_string(path).expect("docs/design.md exists")
}

/// The text of the `## title` section, up to the next `## `.
fn section(text: &str, title: &str) -> String {
    let start = text
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("docs/design.md has a section `## {title}`"));
    let body = &text[start + title.len() + 5..];
    body[..body.find("\n## ").unwrap_or(body.len())].to_string()
}

/// The words in backticks of `text` that start with `prefix`.
fn quoted(text: &str, prefix: &str) -> BTreeSet<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_blastguard"))
        .args(args)
        .arg("--help")
        .output()
        .expect("the binary runs");
    assert!(out.status.success(), "{args:?} --help");
    String::from_utf8(out.stdout).expect("help is UTF-8")
}

#[test]
fn the_payload_it_shows_is_one_blastguard_reads() {
    let approvals = section(&design(), "Approvals");
    let json = approvals
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```json block in the Approvals section");
    let text = json.replace("<64 hex digits>", &"ab".repeat(32));
    let payload = ApprovalPayload::parse(text.trim()).expect("the documented payload parses");
    assert_eq!(payload.target.kind, "Deployment");
    assert!(
        approvals.contains(&format!("`{SIGNATURE_NAMESPACE}`")),
        "the SSHSIG namespace the docs name is the one signatures are verified under"
    );
}

#[test]
fn its_annotation_table_is_the_keys_blastguard_reads() {
    let table = section(&design(), "Annotations");
    let rows: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let keys: BTreeSet<String> = [
        annotations::AI_AGENT,
        annotations::AI_ASSISTED,
        annotations::CHANGE_ID,
        annotations::APPROVAL,
        annotations::APPROVAL_SIGNATURE,
    ]
    .map(str::to_string)
    .into();
    assert_eq!(rows, keys);
}

#[test]
fn every_command_and_flag_it_names_exists() {
    let commands = section(&design(), "Commands");
    let top = help(&[]);
    let is_command = |name: &str| {
        top.lines()
            .any(|l| l.trim_start().starts_with(&format!("{name} ")))
    };
    let named: BTreeSet<&str> = commands
        .split("`blastguard ")
        .skip(1)
        .filter_map(|rest| rest.split([' ', '`']).next())
        .collect();
    for command in &named {
        assert!(
            is_command(command),
            "`blastguard {command}` is not a command"
        );
    }
    assert!(
        named.len() >= 6,
        "only {named:?} read from the Commands section"
    );
    // The flags of a bullet belong to the command it starts with.
    for bullet in commands.split("\n- ") {
        let Some(command) = bullet
            .strip_prefix("`blastguard ")
            .and_then(|b| b.split([' ', '`']).next())
        else {
            continue;
        };
        let own = help(&[command]);
        for flag in quoted(bullet, "--") {
            let flag = flag.split([' ', '=']).next().unwrap_or_default();
            assert!(
                own.contains(&format!("{flag} ")) || own.contains(&format!("{flag},")),
                "`blastguard {command}` has no flag {flag}"
            );
        }
    }
}

#[test]
fn its_inbox_columns_are_the_crds_printer_columns() {
    let inbox = section(&design(), "Inbox");
    let line = inbox
        .lines()
        .skip_while(|l| !l.contains("kubectl get approvalrequests"))
        .take_while(|l| !l.starts_with("- `notify"))
        .collect::<Vec<_>>()
        .join(" ");
    let named: Vec<String> = line
        .split('`')
        .skip(3)
        .step_by(2)
        .map(str::to_string)
        .collect();
    let crd = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("charts/blastguard/crds/approvalrequests.blastguard.io.yaml"),
    )
    .unwrap();
    let columns: Vec<String> = crd
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- {name: "))
        .filter_map(|l| l.split(',').next())
        .map(str::to_string)
        .collect();
    assert!(columns.len() >= 5, "{columns:?}");
    assert_eq!(named, columns);
}
