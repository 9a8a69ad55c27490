//! The OpenSSH `allowed_signers` file: who may sign approvals, with which key.
//!
//! Parsed as `ssh-keygen -Y verify` parses it (`sshsig.c`): a principals pattern-list
//! (optionally in double quotes), optional comma-separated options, a key type and its
//! base64 blob, an ignored comment; blank lines and lines starting with `#` are
//! skipped. Options: `namespaces="..."`, `valid-after="..."`, `valid-before="..."`
//! (values in double quotes, as ssh-keygen requires). Where ssh-keygen would quietly
//! skip or accept something blastguard cannot honour (`cert-authority`, a key type it
//! cannot verify), loading fails with the line number: a trusted approver silently
//! dropped from the file is a bug found only when a release is blocked.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use ssh_key::public::KeyData;
use ssh_key::{EcdsaCurve, HashAlg, PublicKey};
use wildmatch::WildMatch;

use crate::identity::fold_case;

/// Largest allowed_signers file read; a real one holds a few dozen lines.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Smallest RSA modulus accepted (the `ssh-key` crate refuses smaller).
const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus the `rsa` crate verifies with.
const MAX_RSA_BITS: usize = 4096;

/// Key type names OpenSSH knows. A first token that is one of these is read as the
/// key, anything else as options (as `sshkey_read` then `sshkey_advance_past_options`).
const OPENSSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-xmss@openssh.com",
];

/// Why an allowed_signers file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AllowedSignersError {
    /// One line is not understood or not supported.
    #[error("line {line}: {message}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("the file is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    /// The file is not UTF-8.
    #[error("the file is not UTF-8 text")]
    NotText,
}

/// One trusted key line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedSigner {
    /// 1-based line number in the file.
    pub line: usize,
    /// The principals field: a comma-separated pattern-list (`*`, `?`, `!`).
    pub principals: String,
    /// The key.
    pub key: KeyData,
    /// `namespaces=`: the signature namespaces this key may sign (a pattern-list).
    pub namespaces: Option<String>,
    /// `valid-after=`, in seconds since the epoch.
    pub valid_after: Option<u64>,
    /// `valid-before=`, in seconds since the epoch.
    pub valid_before: Option<u64>,
}

/// A parsed allowed_signers file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedSigners {
    /// The key lines, in file order.
    pub signers: Vec<AllowedSigner>,
}

/// What the file says about one key, for one namespace, at one time.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyTrust<'a> {
    /// The key is trusted on these lines (at least one).
    Trusted(Vec<&'a AllowedSigner>),
    /// The key is listed, but every line that lists it excludes this use.
    Restricted(Vec<String>),
    /// The key is not in the file.
    NotListed,
}

impl AllowedSigners {
    /// Reads and parses a file, reading at most [`MAX_FILE_BYTES`].
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let read_error = |source| LoadError::Read {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        let invalid = |source| LoadError::Invalid {
            path: path.display().to_string(),
            source,
        };
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(invalid(AllowedSignersError::TooLarge));
        }
        let text = String::from_utf8(bytes).map_err(|_| invalid(AllowedSignersError::NotText))?;
        Self::parse(&text).map_err(invalid)
    }

    /// Parses the text of an allowed_signers file.
    pub fn parse(text: &str) -> Result<Self, AllowedSignersError> {
        let mut signers = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let content = raw.trim_start_matches([' ', '\t', '\r']);
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let signer = parse_line(content.trim_end_matches('\r'), line)
                .map_err(|message| AllowedSignersError::Line { line, message })?;
            signers.push(signer);
        }
        Ok(Self { signers })
    }

    /// Whether `key` may sign in `namespace` at `now`, and on which lines. Like
    /// ssh-keygen, a line only counts when its options allow this use.
    pub fn trust(&self, key: &KeyData, namespace: &str, now: SystemTime) -> KeyTrust<'_> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut trusted = Vec::new();
        let mut refusals = Vec::new();
        for signer in self.signers.iter().filter(|s| &s.key == key) {
            if let Some(ns) = &signer.namespaces
                && match_pattern_list(namespace, ns) != PatternMatch::Yes
            {
                refusals.push(format!(
                    "line {} allows it only for signature namespaces \"{ns}\"",
                    signer.line
                ));
            } else if let Some(after) = signer.valid_after.filter(|after| now < *after) {
                refusals.push(format!(
                    "line {} makes it valid only after {}",
                    signer.line,
                    format_epoch(after)
                ));
            } else if let Some(before) = signer.valid_before.filter(|before| now > *before) {
                refusals.push(format!(
                    "line {} made it valid only until {}",
                    signer.line,
                    format_epoch(before)
                ));
            } else {
                trusted.push(signer);
            }
        }
        if !trusted.is_empty() {
            KeyTrust::Trusted(trusted)
        } else if !refusals.is_empty() {
            KeyTrust::Restricted(refusals)
        } else {
            KeyTrust::NotListed
        }
    }
}

/// Why [`AllowedSigners::load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read allowed_signers file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid allowed_signers file.
    #[error("invalid allowed_signers file {path}: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        source: AllowedSignersError,
    },
}

fn parse_line(content: &str, line: usize) -> Result<AllowedSigner, String> {
    let (principals, rest) = principals_field(content)?;
    if principals.is_empty() {
        return Err("the principals field is empty".into());
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let first = rest.split([' ', '\t']).next().unwrap_or("");
    let (options, key_text) = if is_key_type(first) {
        (None, rest)
    } else {
        let end = options_end(rest)?;
        let key_text = rest[end..].trim_start_matches([' ', '\t']);
        if key_text.is_empty() {
            return Err("missing key after the options".into());
        }
        (Some(&rest[..end]), key_text)
    };
    let key = parse_key(key_text)?;
    let mut signer = AllowedSigner {
        line,
        principals,
        key,
        namespaces: None,
        valid_after: None,
        valid_before: None,
    };
    if let Some(options) = options {
        parse_options(options, &mut signer)?;
    }
    Ok(signer)
}

/// The principals token, as OpenSSH's `strdelimw` reads it: up to whitespace, or a
/// double-quoted run (the quotes removed) that may hold spaces.
fn principals_field(content: &str) -> Result<(String, &str), String> {
    let Some(at) = content.find([' ', '\t', '"']) else {
        return Err("missing key: a line is `principals [options] keytype base64-key`".into());
    };
    if content.as_bytes()[at] != b'"' {
        return Ok((content[..at].to_string(), &content[at..]));
    }
    let after = &content[at + 1..];
    let close = after
        .find('"')
        .ok_or("the principals field has no closing double quote")?;
    let token = format!("{}{}", &content[..at], &after[..close]);
    let rest = &after[close + 1..];
    if rest.trim().is_empty() {
        return Err("missing key: a line is `principals [options] keytype base64-key`".into());
    }
    Ok((token, rest))
}

fn is_key_type(token: &str) -> bool {
    OPENSSH_KEY_TYPES.contains(&token) || token.ends_with("-cert-v01@openssh.com")
}

/// Where the options token ends (as `sshkey_advance_past_options`: whitespace outside
/// double quotes, `\"` escaping a quote).
fn options_end(rest: &str) -> Result<usize, String> {
    let bytes = rest.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < bytes.len() && (quoted || (bytes[i] != b' ' && bytes[i] != b'\t')) {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'"') {
            i += 1;
        } else if bytes[i] == b'"' {
            quoted = !quoted;
        }
        i += 1;
    }
    if quoted {
        return Err("an option value has no closing double quote".into());
    }
    Ok(i)
}

fn parse_key(text: &str) -> Result<KeyData, String> {
    let mut fields = text.split([' ', '\t']).filter(|f| !f.is_empty());
    let key_type = fields.next().unwrap_or("");
    let Some(blob) = fields.next() else {
        return Err(format!("missing base64 key after key type {key_type:?}"));
    };
    if !is_key_type(key_type) {
        return Err(format!(
            "{key_type:?} is neither an option nor a key type (options are namespaces=, valid-after=, valid-before=)"
        ));
    }
    if key_type.ends_with("-cert-v01@openssh.com") {
        return Err(format!(
            "certificate keys ({key_type}) are not supported: list the approver's plain public key"
        ));
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {blob}"))
        .map_err(|e| format!("invalid {key_type} key: {e}"))?;
    supported(key.key_data())?;
    Ok(key.key_data().clone())
}

/// Refuses at load the keys whose signatures could never verify.
fn supported(key: &KeyData) -> Result<(), String> {
    match key {
        KeyData::Ed25519(_) | KeyData::SkEd25519(_) | KeyData::SkEcdsaSha2NistP256(_) => Ok(()),
        KeyData::Ecdsa(k) => match k.curve() {
            EcdsaCurve::NistP256 | EcdsaCurve::NistP384 | EcdsaCurve::NistP521 => Ok(()),
        },
        KeyData::Rsa(k) => {
            let bits = k.n.as_positive_bytes().map_or(0, |b| {
                b.len() * 8 - b.first().map_or(0, |x| x.leading_zeros() as usize)
            });
            if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                Ok(())
            } else {
                Err(format!(
                    "RSA key of {bits} bits: only {MIN_RSA_BITS} to {MAX_RSA_BITS} bits are supported"
                ))
            }
        }
        other => Err(format!(
            "key type {} is not supported (use ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa or an sk- key)",
            other.algorithm()
        )),
    }
}

/// `sshsigopt_parse`: comma-separated, case-insensitive names, values in quotes.
fn parse_options(mut opts: &str, signer: &mut AllowedSigner) -> Result<(), String> {
    while !opts.is_empty() {
        if strip_prefix_ci(opts, "cert-authority").is_some() {
            return Err("cert-authority is not supported: list each approver's public key".into());
        } else if let Some(rest) = strip_prefix_ci(opts, "namespaces=") {
            if signer.namespaces.is_some() {
                return Err("multiple \"namespaces\" clauses".into());
            }
            let (value, rest) = dequote(rest, "namespaces")?;
            signer.namespaces = Some(value);
            opts = rest;
        } else if let Some(rest) = strip_prefix_ci(opts, "valid-after=") {
            if signer.valid_after.is_some() {
                return Err("multiple \"valid-after\" clauses".into());
            }
            let (value, rest) = dequote(rest, "valid-after")?;
            signer.valid_after = Some(parse_absolute_time(&value, "valid-after")?);
            opts = rest;
        } else if let Some(rest) = strip_prefix_ci(opts, "valid-before=") {
            if signer.valid_before.is_some() {
                return Err("multiple \"valid-before\" clauses".into());
            }
            let (value, rest) = dequote(rest, "valid-before")?;
            signer.valid_before = Some(parse_absolute_time(&value, "valid-before")?);
            opts = rest;
        } else {
            let name = opts.split([',', '=']).next().unwrap_or(opts);
            return Err(format!(
                "unsupported option {name:?} (supported: namespaces=, valid-after=, valid-before=)"
            ));
        }
        if opts.is_empty() {
            break;
        }
        opts = opts.strip_prefix(',').ok_or_else(|| {
            format!("unexpected {opts:?} after an option (options are separated by commas)")
        })?;
        if opts.is_empty() {
            return Err("unexpected end of options after a comma".into());
        }
    }
    if let (Some(after), Some(before)) = (signer.valid_after, signer.valid_before)
        && before <= after
    {
        return Err("\"valid-before\" time is before \"valid-after\"".into());
    }
    Ok(())
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `opt_dequote`: a double-quoted value, `\"` for a quote inside.
fn dequote<'a>(s: &'a str, option: &str) -> Result<(String, &'a str), String> {
    let Some(inner) = s.strip_prefix('"') else {
        return Err(format!(
            "{option}= needs its value in double quotes, e.g. {option}=\"...\" (as ssh-keygen requires)"
        ));
    };
    let mut value = String::new();
    let mut chars = inner.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &inner[i + 1..])),
            '\\' if chars.peek().map(|(_, n)| *n) == Some('"') => {
                chars.next();
                value.push('"');
            }
            _ => value.push(c),
        }
    }
    Err(format!("{option}= has no closing double quote"))
}

/// `parse_absolute_time`: `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, with an
/// optional `Z` or `UTC` suffix: every form ssh-keygen accepts (tests/approvals_engine.rs
/// holds this to the real ssh-keygen).
///
/// ssh-keygen reads a time without the suffix in the local time zone of the machine
/// that verifies. The webhook's image carries no time-zone data, so its local time is
/// UTC and a time without the suffix is read as UTC. Refusing it instead dropped the
/// whole file over a date that every approver's ssh-keygen accepts (issue 12); the
/// docs recommend the `Z` so the time means the same on every machine.
fn parse_absolute_time(value: &str, option: &str) -> Result<u64, String> {
    let strip_suffix_ci = |suffix: &str| {
        let at = value.len().checked_sub(suffix.len())?;
        let (head, tail) = (value.get(..at)?, value.get(at..)?);
        (tail.eq_ignore_ascii_case(suffix) && !head.is_empty()).then_some(head)
    };
    let digits = strip_suffix_ci("z")
        .or_else(|| strip_suffix_ci("utc"))
        .unwrap_or(value);
    let invalid = || format!("invalid \"{option}\" time {value:?}: expected YYYYMMDD[HHMM[SS]][Z]");
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(invalid());
    }
    let field =
        |range: std::ops::Range<usize>| digits.get(range).map_or(Ok(0), |s| s.parse::<u64>());
    let parts = (|| -> Result<[u64; 6], std::num::ParseIntError> {
        Ok([
            field(0..4)?,
            field(4..6)?,
            field(6..8)?,
            field(8..10)?,
            field(10..12)?,
            field(12..14)?,
        ])
    })()
    .map_err(|_| invalid())?;
    let [year, month, day, hour, minute, second] = parts;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(invalid());
    }
    let days = days_from_civil(year as i64, month, day);
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    // ssh-keygen treats 0 as "not set" and refuses it; so does anything before 1970.
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(invalid)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u64, day: u64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn format_epoch(seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(seconds))
        .to_string()
}

/// The result of matching a name against an OpenSSH pattern-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternMatch {
    /// A positive pattern matched and no negated one did.
    Yes,
    /// No pattern matched.
    No,
    /// A negated (`!`) pattern matched.
    Negated,
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns with `*` and `?`, where a
/// matching `!pattern` excludes the name whatever else matches.
pub fn match_pattern_list(name: &str, list: &str) -> PatternMatch {
    let mut matched = false;
    for pattern in list.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if WildMatch::new(pattern).matches(name) {
            if negated {
                return PatternMatch::Negated;
            }
            matched = true;
        }
    }
    if matched {
        PatternMatch::Yes
    } else {
        PatternMatch::No
    }
}

/// Whether two principals pattern-lists could name the same person: some positive
/// pattern of one matches one of the other, or both are wildcards (which may
/// overlap). Negations are ignored, so the answer errs towards "the same".
pub fn may_overlap(a: &str, b: &str) -> bool {
    // Case-folded: `Alice@corp` and `alice@corp` are one person with two keys.
    let positives = |list: &'_ str| -> Vec<String> {
        fold_case(list)
            .split(',')
            .filter(|p| !p.starts_with('!') && !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    let is_wild = |p: &str| p.contains(['*', '?']);
    let (a, b) = (positives(a), positives(b));
    a.iter().any(|pa| {
        b.iter().any(|pb| {
            pa == pb
                || (is_wild(pa) && is_wild(pb))
                || WildMatch::new(pa).matches(pb)
                || WildMatch::new(pb).matches(pa)
        })
    })
}

/// A key's SHA-256 fingerprint, as ssh-keygen prints it.
pub fn fingerprint(key: &KeyData) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl fmt::Display for AllowedSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} key {}, line {})",
            self.principals,
            self.key.algorithm(),
            fingerprint(&self.key),
            self.line
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Public keys generated once with ssh-keygen; only their parsing matters here.
    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";
    const ECDSA_P256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBB3R311kSmvZL8cy9qM2AIf6prrNgh6RIbGdlibMKElC/bqZcaGrCF1Gk7JwKjLyqaoOlp6SlVnLub0ts+2OThw=";
    const DSA: &str = "ssh-dss AAAAB3NzaC1kc3MAAACBAIM3p2byAgH+tjq3qZ/PMcxkyI1/Ct7CpdAD40hSIroxYrAIOBFj/C7nGwLP7jwdgDm1YjjkcgjOneP1W9wIVmnC6eHRrnrYBSq0Va/dXh1Js6Vnli3Rw3QBARYiV3z1fdmnLZxdy072eMAJdd6QsZjwoW01NM3u3ahQ5YW5fOETAAAAFQCOuEa6tfGbMVGaJC8cMa5nG0nH4QAAAIAafdxFnHU3GKTApb0qz+fakBMG08/AeokhZS+RlwcP+ImhwKXRy7hhdQurbxrr33M8OyXl05haKzvrNs/AHhWTdbFy4vNvGSSM3vjqpfY2snZsqjZeln6qp3J2lbZvmcLa0sst/OQeFilyOzjGDq8JyuvwU5zWILXz3xgtLpwb5wAAAIAYurrLhl6K/Meka5/3L8Ad0PrZ1Hnk4XTdrE2glllAs1YF6vDaPnc+otj9rzxa7jQBWGyHVR0OUxwT+IzV/BlkBsNC8B+NQZ+tBBwqTT2kMALmpKN42DFarId6+3aPts40J4mSJSP7gDWZGqf/PYRxdYTmXrtDgduZFbtMP/dvRw==";
    const RSA_1024: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQCh/YBVsSW9MWfEnYS5mbTAilVxAU1B5djUU5nbZ8yt9c8wBCTfiYMKjkQs+iliBxcsb/IVugazMdhDYTSS0qL/4wpoD+/NNWXMcpkwQmccf4ET2t8566c1JIgxQQ3mOT/WlOaNM2XeAnKL/OaXTRoxB1gPew8lSs8E5Vf9giLPVQ==";

    fn line_error(text: &str) -> (usize, String) {
        match AllowedSigners::parse(text) {
            Err(AllowedSignersError::Line { line, message }) => (line, message),
            other => panic!("expected a line error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn reads_every_form_ssh_keygen_reads() {
        let text = format!(
            "# approvers of prod\n\
             \n\
             \t  # indented comment\n\
             alice@example.com {ED25519} alice laptop\n\
             bob@example.com,robert@example.com NAMESPACES=\"approval@blastguard.io,file\" {ECDSA_P256}\n\
             \"carol@example.com,dave@example.com\" valid-after=\"20240101Z\",valid-before=\"203001021530UTC\" {ED25519}\r\n\
             *@ops.example.com,!intern@ops.example.com namespaces=\"a\\\"b\" {ECDSA_P256}\n"
        );
        let signers = AllowedSigners::parse(&text).unwrap().signers;
        assert_eq!(signers.len(), 4);
        assert_eq!(signers[0].line, 4);
        assert_eq!(signers[0].principals, "alice@example.com");
        assert_eq!(signers[0].namespaces, None);
        assert_eq!(signers[1].principals, "bob@example.com,robert@example.com");
        assert_eq!(
            signers[1].namespaces.as_deref(),
            Some("approval@blastguard.io,file")
        );
        assert!(matches!(signers[1].key, KeyData::Ecdsa(_)));
        assert_eq!(signers[2].principals, "carol@example.com,dave@example.com");
        // 2024-01-01T00:00:00Z and 2030-01-02T15:30:00Z.
        assert_eq!(signers[2].valid_after, Some(1_704_067_200));
        assert_eq!(signers[2].valid_before, Some(1_893_598_200));
        assert_eq!(signers[3].namespaces.as_deref(), Some("a\"b"));
        assert_eq!(signers[3].line, 7);
    }

    #[test]
    fn refuses_what_it_cannot_honour_with_the_line_number() {
        let cases: Vec<(String, usize, &str)> = vec![
            (
                format!("a {ED25519}\nb cert-authority {ED25519}"),
                2,
                "cert-authority is not supported",
            ),
            (
                format!("a no-touch-required {ED25519}"),
                1,
                "unsupported option \"no-touch-required\"",
            ),
            (
                format!("a namespaces=file {ED25519}"),
                1,
                "needs its value in double quotes",
            ),
            (
                format!("a namespaces=\"x\",namespaces=\"y\" {ED25519}"),
                1,
                "multiple \"namespaces\"",
            ),
            (
                format!("a valid-after=\"2024010112\" {ED25519}"),
                1,
                "invalid \"valid-after\" time",
            ),
            (
                format!("a valid-after=\"2024010Z\" {ED25519}"),
                1,
                "invalid \"valid-after\" time",
            ),
            (
                format!("a valid-after=\"20241301Z\" {ED25519}"),
                1,
                "invalid \"valid-after\" time",
            ),
            (
                format!("a valid-after=\"20240230Z\" {ED25519}"),
                1,
                "invalid \"valid-after\" time",
            ),
            (
                format!("a valid-after=\"20250101Z\",valid-before=\"20240101Z\" {ED25519}"),
                1,
                "\"valid-before\" time is before \"valid-after\"",
            ),
            (
                format!("a namespaces=\"x\", {ED25519}"),
                1,
                "unexpected end of options",
            ),
            (
                format!("a namespaces=\"x\"y {ED25519}"),
                1,
                "separated by commas",
            ),
            (
                format!("a namespaces=\"x {ED25519}"),
                1,
                "no closing double quote",
            ),
            ("\n\na\n".to_string(), 3, "missing key"),
            ("a ssh-ed25519".to_string(), 1, "missing base64 key"),
            (
                "a ssh-ed25519 AAAA!!notbase64".to_string(),
                1,
                "invalid ssh-ed25519 key",
            ),
            (format!("a {DSA}"), 1, "key type ssh-dss is not supported"),
            (format!("a {RSA_1024}"), 1, "RSA key of 1024 bits"),
            (
                "\"a b ssh-ed25519 AAAA".to_string(),
                1,
                "no closing double quote",
            ),
            (
                "a ssh-ed25519-cert-v01@openssh.com AAAA".to_string(),
                1,
                "certificate keys",
            ),
            (
                format!("a namespaces=\"x\"\n{ED25519}"),
                1,
                "missing key after the options",
            ),
        ];
        for (text, want_line, want) in cases {
            let (line, message) = line_error(&text);
            assert_eq!(line, want_line, "{text:?}: {message}");
            assert!(
                message.contains(want),
                "{text:?}: {message:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn absolute_times_follow_ssh_keygen_formats() {
        let cases = [
            ("19700101000001Z", Some(1)),
            ("20240229z", Some(1_709_164_800)),
            ("202402291200Z", Some(1_709_208_000)),
            ("20240229120030utc", Some(1_709_208_030)),
            // Without a suffix: read as UTC, the webhook's local time.
            ("20240229", Some(1_709_164_800)),
            ("202402291200", Some(1_709_208_000)),
            ("2024022912", None),
            ("20230229Z", None),
            ("19700101Z", None),
            ("2024-02-29Z", None),
            ("20240229T1200Z", None),
            ("2024022é", None),
            ("é", None),
            ("Z", None),
        ];
        for (value, want) in cases {
            assert_eq!(
                parse_absolute_time(value, "valid-after").ok(),
                want,
                "{value}"
            );
        }
    }

    #[test]
    fn pattern_lists_match_like_openssh() {
        use PatternMatch::*;
        let cases = [
            ("alice@example.com", "alice@example.com", Yes),
            (
                "alice@example.com",
                "bob@example.com,alice@example.com",
                Yes,
            ),
            ("alice@example.com", "*@example.com", Yes),
            ("alice@example.com", "?lice@example.com", Yes),
            (
                "alice@example.com",
                "*@example.com,!alice@example.com",
                Negated,
            ),
            ("Alice@example.com", "alice@example.com", No),
            ("alice@example.org", "*@example.com", No),
            ("approval@blastguard.io", "file,git", No),
            ("approval@blastguard.io", "approval@*", Yes),
        ];
        for (name, list, want) in cases {
            assert_eq!(match_pattern_list(name, list), want, "{name} vs {list}");
        }
    }

    #[test]
    fn overlap_errs_towards_the_same_person() {
        let cases = [
            ("alice@x", "alice@x", true),
            ("alice@x,al@x", "al@x", true),
            ("alice@x", "bob@x", false),
            ("*@x", "alice@x", true),
            ("a*@x", "b*@y", true),
            ("alice@x,!bob@x", "bob@x", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(may_overlap(a, b), want, "{a} vs {b}");
            assert_eq!(may_overlap(b, a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn trust_honours_namespaces_and_validity() {
        let text = format!(
            "ns-only namespaces=\"file\" {ED25519}\n\
             dated valid-after=\"20300101Z\" {ECDSA_P256}\n\
             old valid-before=\"20200101Z\" {ECDSA_P256}\n"
        );
        let signers = AllowedSigners::parse(&text).unwrap();
        let ed = PublicKey::from_openssh(ED25519).unwrap();
        let ec = PublicKey::from_openssh(ECDSA_P256).unwrap();
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000); // 2027
        let ns = "approval@blastguard.io";
        match signers.trust(ed.key_data(), ns, now) {
            KeyTrust::Restricted(r) => {
                assert!(r[0].contains("only for signature namespaces \"file\""))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            signers.trust(ed.key_data(), "file", now),
            KeyTrust::Trusted(_)
        ));
        match signers.trust(ec.key_data(), ns, now) {
            KeyTrust::Restricted(r) => {
                assert!(
                    r[0].contains("line 2 makes it valid only after 2030-01-01T00:00:00Z"),
                    "{r:?}"
                );
                assert!(
                    r[1].contains("line 3 made it valid only until 2020-01-01T00:00:00Z"),
                    "{r:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        let later = UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000); // 2030
        match signers.trust(ec.key_data(), ns, later) {
            KeyTrust::Trusted(lines) => assert_eq!(lines[0].principals, "dated"),
            other => panic!("{other:?}"),
        }
        let empty = AllowedSigners::default();
        assert_eq!(empty.trust(ed.key_data(), ns, now), KeyTrust::NotListed);
    }
}
