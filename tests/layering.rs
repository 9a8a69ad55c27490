//! The layering of src/ (docs/architecture.md), read from the code's own paths: the
//! core (every top-level module but the three I/O edges) imports none of `server`,
//! `cluster` or `cli`; `cluster` imports neither `server` nor `cli`; `server` does not
//! import `cli`. The engine is judged without a socket, a client or a terminal, and
//! this keeps it so.
//!
//! Every `crate::`, `$crate::`, `self::` and `super::` path in a source file (comments
//! and literals left out, `use` groups expanded, `super` resolved through the file's
//! module and the inline modules it opens) is resolved to the top-level module it
//! names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The I/O edges, in the order they may import each other: an edge may import the
/// core and the edges before it in this list, never one after it.
const EDGES: [&str; 3] = ["cluster", "server", "cli"];

/// The edges a top-level module must not import.
fn forbidden_for(top: &str) -> &'static [&'static str] {
    match EDGES.iter().position(|e| *e == top) {
        Some(i) => &EDGES[i + 1..],
        None => &EDGES,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Dollar,
    Other,
}

/// The tokens that matter for paths; comments, strings and chars dropped.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            'r' | 'b' if is_raw_string(&chars, i) => {
                // r"..", r#".."#, br"..": up to the quote and as many hashes.
                let mut j = i + 1;
                if chars[j] == 'r' {
                    j += 1;
                }
                let mut hashes = 0;
                while chars[j] == '#' {
                    hashes += 1;
                    j += 1;
                }
                j += 1;
                loop {
                    if j >= chars.len() {
                        break;
                    }
                    if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                i = j;
                out.push(Token::Other);
                continue;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                out.push(Token::Other);
            }
            '\'' => {
                // A char literal ('x', '\n', '{'), else a lifetime or label.
                if next == Some('\\') {
                    // Past the backslash and the escaped character ('\'', '\u{7b}').
                    i += 3;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 2;
                }
                out.push(Token::Other);
            }
            ':' if next == Some(':') => {
                out.push(Token::PathSep);
                i += 1;
            }
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ',' => out.push(Token::Comma),
            '$' => out.push(Token::Dollar),
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
                continue;
            }
            c if c.is_whitespace() => {}
            _ => out.push(Token::Other),
        }
        i += 1;
    }
    out
}

fn is_raw_string(chars: &[char], i: usize) -> bool {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return false;
    }
    let rest: String = chars[i..chars.len().min(i + 3)].iter().collect();
    rest.starts_with("r\"")
        || rest.starts_with("r#")
        || rest.starts_with("br\"")
        || rest.starts_with("br#")
}

/// The top-level modules that the paths of one file name, given the file's module
/// path (`["policy", "validate"]` for src/policy/validate.rs).
fn imported_tops(source: &str, module: &[String]) -> BTreeSet<String> {
    let tokens = tokens(source);
    let mut found = BTreeSet::new();
    // Inline modules opened in the file (`mod tests { .. }`), with the brace depth
    // at which each closes.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            Token::Ident(word)
                if (word == "crate" || word == "super" || word == "self")
                    && tokens.get(i + 1) == Some(&Token::PathSep)
                    && !(i > 0 && tokens[i - 1] == Token::PathSep) =>
            {
                let mut here: Vec<String> = module.to_vec();
                here.extend(inline.iter().map(|(name, _)| name.clone()));
                let mut j = i;
                // The leading crate/self/super segments.
                loop {
                    match &tokens[j] {
                        Token::Ident(w) if w == "crate" => here.clear(),
                        Token::Ident(w) if w == "super" => {
                            here.pop();
                        }
                        Token::Ident(w) if w == "self" => {}
                        _ => break,
                    }
                    if tokens.get(j + 1) != Some(&Token::PathSep) {
                        break;
                    }
                    j += 2;
                }
                match (here.first(), tokens.get(j)) {
                    (Some(top), _) => {
                        found.insert(top.clone());
                    }
                    (None, Some(Token::Ident(name))) => {
                        found.insert(name.clone());
                    }
                    (None, Some(Token::Open)) => found.extend(group_members(&tokens[j..])),
                    (None, _) => {}
                }
                i = j + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The first name of each member of a `use` group starting at `tokens[0]` (`{`):
/// `a` and `b` of `{a, b::c}`.
fn group_members(tokens: &[Token]) -> Vec<String> {
    let mut names = Vec::new();
    let mut level = 0;
    let mut expect_name = true;
    for t in tokens {
        match t {
            Token::Open => {
                level += 1;
                continue;
            }
            Token::Close => {
                level -= 1;
                if level == 0 {
                    break;
                }
            }
            Token::Comma if level == 1 => {
                expect_name = true;
                continue;
            }
            Token::Ident(name) if level == 1 && expect_name => names.push(name.clone()),
            _ => {}
        }
        if level == 1 {
            expect_name = false;
        }
    }
    names
}

/// Every .rs file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The module path of a file under src/: src/policy/mod.rs is `policy`,
/// src/engine/tests/mod.rs is `engine::tests`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

#[test]
fn no_module_imports_an_edge_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut breaches = Vec::new();
    let mut checked = 0;
    for file in sources(&src) {
        let module = module_of(&src, &file);
        let Some(top) = module.first() else {
            continue; // lib.rs and main.rs declare the modules; they import nothing.
        };
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let imported = imported_tops(&text, &module);
        for edge in forbidden_for(top) {
            if imported.contains(*edge) {
                breaches.push(format!(
                    "{} imports crate::{edge}",
                    file.strip_prefix(&src).unwrap().display()
                ));
            }
        }
        checked += 1;
    }
    assert!(
        checked > 40,
        "only {checked} files read: is src/ where it was?"
    );
    assert!(
        breaches.is_empty(),
        "imports against the layering of docs/architecture.md:\n{}",
        breaches.join("\n")
    );
}

fn tops(source: &str, module: &[&str]) -> Vec<String> {
    let module: Vec<String> = module.iter().map(|m| m.to_string()).collect();
    imported_tops(source, &module).into_iter().collect()
}

#[test]
fn the_check_sees_every_way_to_name_an_edge() {
    assert_eq!(
        tops("use crate::server::metrics::Metrics;", &["engine"]),
        ["server"]
    );
    assert_eq!(
        tops(
            "use crate::{cluster::Cluster, policy::Policy};",
            &["engine"]
        ),
        ["cluster", "policy"]
    );
    assert_eq!(tops("fn f() { crate::cli::run(); }", &["engine"]), ["cli"]);
    assert_eq!(
        tops("use super::super::cli::X;", &["approval", "payload"]),
        ["cli"]
    );
    assert_eq!(tops("$crate::cluster::GROUP", &["policy"]), ["cluster"]);
    // Inside `mod tests { .. }` of src/policy/mod.rs, `super` is `policy`.
    assert_eq!(
        tops("mod tests { use super::super::server::X; }", &["policy"]),
        ["server"]
    );
    assert_eq!(
        tops("mod tests { use super::Policy; }", &["policy"]),
        ["policy"]
    );
    // Comments, strings and chars are not paths; braces in them do not count.
    assert!(tops("// use crate::server;\n/* crate::cli */", &["engine"]).is_empty());
    assert!(tops(r#"let s = "crate::server::X"; let c = '{';"#, &["engine"]).is_empty());
    assert_eq!(
        tops(
            r"let q = '\''; mod tests { use super::super::cli::X; }",
            &["engine"]
        ),
        ["cli"]
    );
    assert!(tops("pub(crate) fn f() {}", &["engine"]).is_empty());
}

#[test]
fn the_edges_may_import_only_downwards() {
    assert_eq!(forbidden_for("engine"), EDGES);
    assert_eq!(forbidden_for("cluster"), ["server", "cli"]);
    assert_eq!(forbidden_for("server"), ["cli"]);
    assert!(forbidden_for("cli").is_empty());
}
