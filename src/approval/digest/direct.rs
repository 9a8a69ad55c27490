//! The digest's canonical JSON written straight from an object's text, without a tree.
//!
//! The request's objects come as compact JSON from the API server: no whitespace,
//! integers, ASCII keys, strings mostly without escapes. For such text the JCS form is
//! the text itself with each object's members put in key order, so it is copied
//! token by token, and only an object whose members came out of order is rearranged
//! (its members' bytes moved, nothing parsed again). Anything this writer does not
//! know to be canonical once copied (whitespace, a fraction or an exponent, an
//! integer beyond ±2^53, `-0`, an escaped or repeated key, a key beyond U+FFFF,
//! malformed text) makes it give up with `None`, and the caller takes the general
//! path (a tree and, where needed, the canonicalizer). A string with escapes is
//! unescaped and written as serde_json writes strings, which is JCS's spelling
//! (`is_plain` in the parent module says why). Tests hold it equal to the
//! canonicalizer on every fixture's objects and on the edge cases.

use std::borrow::Cow;

/// Largest integer magnitude a double holds exactly (JCS numbers are doubles).
const EXACT: u64 = 1 << 53;
/// Nesting deeper than this is left to the general path (serde_json stops at 128).
const MAX_DEPTH: usize = 128;

/// The JCS bytes of the object in `text` as the digest binds it: every top-level
/// member but `apiVersion`, `kind`, `status` and `metadata`, and `metadata` reduced to
/// `{"labels": ...}` (`{}` without labels, or with labels that are not a non-empty
/// object). `None` where the text is not plain enough to be copied (module comment).
pub(super) fn bound_object(text: &str) -> Option<Vec<u8>> {
    let mut reader = Reader {
        source: text,
        text: text.as_bytes(),
        at: 0,
        depth: 0,
        stack: Vec::with_capacity(32),
        moved: Vec::new(),
    };
    let mut out = Vec::with_capacity(text.len());
    reader.expect(b'{')?;
    out.push(b'{');
    let mut members: Vec<Member<'_>> = Vec::with_capacity(8);
    let mut skipped = Vec::new();
    let mut metadata = false;
    if !reader.eat(b'}') {
        loop {
            let key = reader.key()?;
            reader.expect(b':')?;
            match key {
                "apiVersion" | "kind" | "status" => {
                    skipped.clear();
                    reader.value(&mut skipped)?;
                }
                "metadata" => {
                    if std::mem::replace(&mut metadata, true) {
                        return None;
                    }
                    skipped.clear();
                    let labels = reader.labels(&mut skipped)?;
                    members.push(member(&mut out, key, |out| {
                        match labels {
                            Some(labels) => {
                                out.extend_from_slice(b"{\"labels\":");
                                out.extend_from_slice(skipped.get(labels.0..labels.1)?);
                                out.push(b'}');
                            }
                            None => out.extend_from_slice(b"{}"),
                        }
                        Some(())
                    })?);
                }
                _ => members.push(member(&mut out, key, |out| reader.value(out))?),
            }
            if reader.eat(b'}') {
                break;
            }
            reader.expect(b',')?;
        }
    }
    if !metadata {
        members.push(member(&mut out, "metadata", |out| {
            out.extend_from_slice(b"{}");
            Some(())
        })?);
    }
    if reader.peek().is_some() {
        return None;
    }
    order(&mut out, 1, &mut members, &mut reader.moved)?;
    out.push(b'}');
    Some(out)
}

/// One member written into the output: its key and where `"key":value` lies.
struct Member<'a> {
    key: &'a str,
    start: usize,
    end: usize,
}

/// Writes `"key":value` (with a comma before it unless it is the first) and notes it.
fn member<'a>(
    out: &mut Vec<u8>,
    key: &'a str,
    value: impl FnOnce(&mut Vec<u8>) -> Option<()>,
) -> Option<Member<'a>> {
    if !matches!(out.last(), Some(b'{')) {
        out.push(b',');
    }
    let start = out.len();
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    value(out)?;
    Some(Member {
        key,
        start,
        end: out.len(),
    })
}

/// Puts the members written from `from` on in key order (byte order of keys without
/// escapes or characters beyond U+FFFF, which is JCS's UTF-16 order); `None` for a
/// repeated key, whose last value would count. `moved` is a buffer reused for every
/// object of the text: the members' bytes are moved through it, not through a fresh
/// allocation per object.
fn order(
    out: &mut Vec<u8>,
    from: usize,
    members: &mut [Member<'_>],
    moved: &mut Vec<u8>,
) -> Option<()> {
    if members.windows(2).all(|w| w[0].key < w[1].key) {
        return Some(());
    }
    members.sort_unstable_by(|a, b| a.key.cmp(b.key));
    if members.windows(2).any(|w| w[0].key == w[1].key) {
        return None;
    }
    moved.clear();
    moved.extend_from_slice(out.get(from..)?);
    out.truncate(from);
    for (i, m) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(moved.get(m.start - from..m.end - from)?);
    }
    Some(())
}

struct Reader<'a> {
    /// The text, and its bytes in `text`: keys are borrowed from it as `str` without
    /// checking their UTF-8 again.
    source: &'a str,
    text: &'a [u8],
    at: usize,
    depth: usize,
    /// The members of the objects being read, innermost last: one stack for the
    /// whole text instead of a `Vec` per object.
    stack: Vec<Member<'a>>,
    /// Where [`order`] moves an object's members through.
    moved: Vec<u8>,
}

impl<'a> Reader<'a> {
    /// The next byte after any whitespace (which JCS drops).
    fn peek(&mut self) -> Option<u8> {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.text.get(self.at) {
            self.at += 1;
        }
        self.text.get(self.at).copied()
    }

    /// The next byte as it is, inside a token.
    fn raw(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    /// A key: a string without escapes and without characters beyond U+FFFF (lead
    /// bytes 0xF0 and above), borrowed.
    fn key(&mut self) -> Option<&'a str> {
        let (start, end, escaped) = self.string()?;
        // Quotes are ASCII, so a string's contents start and end on characters.
        let source: &'a str = self.source;
        let key = source.get(start..end)?;
        if escaped || key.bytes().any(|b| b >= 0xF0) {
            return None;
        }
        Some(key)
    }

    /// A string token: where its contents lie, and whether it has escapes. Raw
    /// control characters (invalid JSON) give up.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            let rest = self.text.get(self.at..)?;
            let n = crate::review::plain_json_prefix(rest);
            self.at += n;
            match *self.text.get(self.at)? {
                b'"' => {
                    let end = self.at;
                    self.at += 1;
                    return Some((start, end, escaped));
                }
                b'\\' => {
                    escaped = true;
                    // The escaped character is skipped; serde_json checks the escape
                    // when the string is unescaped below.
                    self.at += 2;
                }
                _ => return None,
            }
        }
    }

    /// Copies one value in canonical form into `out`.
    fn value(&mut self, out: &mut Vec<u8>) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(out),
            b'[' => self.array(out),
            b'"' => {
                let token_start = self.at;
                let (start, end, escaped) = self.string()?;
                if escaped {
                    let token = std::str::from_utf8(&self.text[token_start..self.at]).ok()?;
                    let text: Cow<'_, str> = serde_json::from_str(token).ok()?;
                    serde_json::to_writer(&mut *out, &*text).ok()?;
                } else {
                    out.push(b'"');
                    out.extend_from_slice(&self.text[start..end]);
                    out.push(b'"');
                }
                Some(())
            }
            b't' => self.literal(b"true", out),
            b'f' => self.literal(b"false", out),
            b'n' => self.literal(b"null", out),
            _ => self.integer(out),
        }
    }

    fn literal(&mut self, word: &[u8], out: &mut Vec<u8>) -> Option<()> {
        let end = self.at.checked_add(word.len())?;
        (self.text.get(self.at..end)? == word).then_some(())?;
        self.at = end;
        out.extend_from_slice(word);
        Some(())
    }

    /// An integer within ±2^53 with no fraction or exponent, copied: its text is then
    /// what ECMAScript prints for it. `-0` and anything else give up.
    fn integer(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let start = self.at;
        let negative = self.eat(b'-');
        let digits_start = self.at;
        while matches!(self.raw(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        let digits = &self.text[digits_start..self.at];
        if digits.is_empty()
            || digits.len() > 16
            || (digits[0] == b'0' && (digits.len() > 1 || negative))
            || matches!(self.raw(), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        // At most 16 digits: no overflow.
        let magnitude = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if magnitude > EXACT {
            return None;
        }
        out.extend_from_slice(&self.text[start..self.at]);
        Some(())
    }

    fn array(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.enter()?;
        self.expect(b'[')?;
        out.push(b'[');
        if !self.eat(b']') {
            loop {
                self.value(out)?;
                if self.eat(b']') {
                    break;
                }
                self.expect(b',')?;
                out.push(b',');
            }
        }
        out.push(b']');
        self.depth -= 1;
        Some(())
    }

    fn object(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.enter()?;
        self.expect(b'{')?;
        let from = out.len() + 1;
        out.push(b'{');
        let base = self.stack.len();
        if !self.eat(b'}') {
            loop {
                let key = self.key()?;
                self.expect(b':')?;
                let written = member(out, key, |out| self.value(out))?;
                self.stack.push(written);
                if self.eat(b'}') {
                    break;
                }
                self.expect(b',')?;
            }
        }
        let members = self.stack.get_mut(base..)?;
        order(out, from, members, &mut self.moved)?;
        self.stack.truncate(base);
        out.push(b'}');
        self.depth -= 1;
        Some(())
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// `metadata`: its labels written canonically into `out` when they are a
    /// non-empty object (where they lie in `out`), every other member skipped.
    fn labels(&mut self, out: &mut Vec<u8>) -> Option<Option<(usize, usize)>> {
        if self.peek()? != b'{' {
            self.value(out)?;
            return Some(None);
        }
        self.enter()?;
        self.expect(b'{')?;
        let mut labels = None;
        let mut skipped = Vec::new();
        if !self.eat(b'}') {
            loop {
                let key = self.key()?;
                self.expect(b':')?;
                if key == "labels" {
                    if labels.is_some() {
                        return None;
                    }
                    let start = out.len();
                    self.value(out)?;
                    labels = Some((start, out.len()));
                } else {
                    skipped.clear();
                    self.value(&mut skipped)?;
                }
                if self.eat(b'}') {
                    break;
                }
                self.expect(b',')?;
            }
        }
        self.depth -= 1;
        // As the tree path: labels count only as a non-empty object.
        Some(labels.filter(|&(start, end)| out[start] == b'{' && end - start > 2))
    }
}
