//! Owners and owner hashes: who a runtime belongs to, and the short name it goes by.
//!
//! An *owner* is the raw id an agent run is isolated by (a user, session or task id). Its
//! *hash* is `sha256(owner)` as lowercase hex, first 16 characters — exactly the seed's
//! `hash_runtime_owner` — and names the container (`browser-use-browser-<hash>`) and the
//! profile volume (`browser-use-profile-<hash>`).
//!
//! An owner taken from a run's `metadata.user_id` or `session_id` is what the seed's Python
//! prints of that JSON value (`str(json.loads(...))`), whatever its shape, so that the gateway
//! and the seed give the same runtime to the same run; a value whose print would depend on the
//! Python build, or that Python refuses, is refused ([`UnresolvableOwner`]).

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::IsolationMode;

/// Longest owner id accepted in a URL path, in bytes after percent-decoding.
pub const MAX_OWNER_LEN: usize = 256;

/// Length of an owner hash in hex characters.
pub const HASH_LEN: usize = 16;

/// A validated owner hash: exactly 16 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerHash([u8; HASH_LEN]);

/// Why an owner id or an owner hash was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("owner id is empty")]
    Empty,
    #[error("owner id is {0} bytes long; at most {MAX_OWNER_LEN} are accepted")]
    TooLong(usize),
    #[error("owner id is not valid UTF-8 once percent-decoded")]
    InvalidUtf8,
    #[error("owner id contains a control character")]
    ControlChar,
    #[error("owner id contains a slash or backslash")]
    Slash,
    #[error("owner id may not be `.` or `..`")]
    DotSegment,
    #[error("owner hash must be exactly {HASH_LEN} lowercase hex characters")]
    BadHash,
}

impl serde::Serialize for OwnerHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl OwnerHash {
    /// The hash of an owner id, as the seed computes it.
    pub fn of(owner: &str) -> Self {
        let digest = Sha256::digest(owner.as_bytes());
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; HASH_LEN];
        for (i, byte) in digest.iter().take(HASH_LEN / 2).enumerate() {
            out[2 * i] = HEX[(byte >> 4) as usize];
            out[2 * i + 1] = HEX[(byte & 0x0f) as usize];
        }
        OwnerHash(out)
    }

    /// Parses a hash as it appears in `/view/<hash>/`: 16 lowercase hex characters.
    pub fn parse(text: &str) -> Result<Self, OwnerError> {
        let bytes = text.as_bytes();
        if bytes.len() != HASH_LEN || !bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(OwnerError::BadHash);
        }
        let mut out = [0u8; HASH_LEN];
        out.copy_from_slice(bytes);
        Ok(OwnerHash(out))
    }

    /// The hash as a header value, for the runtime (which owner a request comes for).
    pub fn header_value(&self) -> http::HeaderValue {
        http::HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(self.0)).expect("hex digits are a header value")
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).expect("owner hash is ASCII")
    }
}

impl fmt::Display for OwnerHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for OwnerHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OwnerHash({})", self.as_str())
    }
}

/// Characters escaped when an owner id is put into a URL path segment.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'\\')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// An owner id as a URL path segment (what [`decode_owner`] reads back).
pub fn encode_owner(owner: &str) -> String {
    percent_encoding::utf8_percent_encode(owner, SEGMENT).to_string()
}

/// Decodes and validates an owner id taken from a URL path segment.
///
/// The id is percent-decoded once; the result must be non-empty UTF-8 of at most
/// [`MAX_OWNER_LEN`] bytes, without control characters or path separators, and not a dot
/// segment. Anything else is refused before it can name a container. Borrowed from
/// `segment` when there is nothing to decode (most owners).
pub fn decode_owner(segment: &str) -> Result<Cow<'_, str>, OwnerError> {
    if segment.len() > 3 * MAX_OWNER_LEN {
        return Err(OwnerError::TooLong(segment.len()));
    }
    // Most owners have no escape to decode.
    let owner = if segment.contains('%') {
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        Cow::Owned(String::from_utf8(bytes).map_err(|_| OwnerError::InvalidUtf8)?)
    } else {
        Cow::Borrowed(segment)
    };
    if owner.is_empty() {
        return Err(OwnerError::Empty);
    }
    if owner.len() > MAX_OWNER_LEN {
        return Err(OwnerError::TooLong(owner.len()));
    }
    if owner.chars().any(char::is_control) {
        return Err(OwnerError::ControlChar);
    }
    if owner.contains(['/', '\\']) {
        return Err(OwnerError::Slash);
    }
    if owner == "." || owner == ".." {
        return Err(OwnerError::DotSegment);
    }
    Ok(owner)
}

/// Resolves the owner of a run exactly like the seed's `resolve_isolation_owner`.
///
/// Per-task isolation keys by task id; otherwise `metadata.user_id`, then
/// `metadata.session_id`, then the thread id, then the task id, then `"default"`.
///
/// A metadata id is refused ([`UnresolvableOwner`]) when Python would not resolve it (an
/// integer Python refuses to read) or when the owner Python gives it depends on the Python
/// build (see [`NotPythonStr`]): a refusal, never a runtime under another owner's name.
pub fn resolve_isolation_owner(
    mode: IsolationMode,
    task_id: Option<&str>,
    metadata: Option<&serde_json::Map<String, Value>>,
    thread_id: Option<&str>,
) -> Result<String, UnresolvableOwner> {
    fn or_default(value: Option<&str>) -> String {
        let trimmed = python_strip(value.unwrap_or(""));
        if trimmed.is_empty() {
            "default".to_owned()
        } else {
            trimmed.to_owned()
        }
    }
    if mode == IsolationMode::DockerPerTask {
        return Ok(or_default(task_id));
    }
    if let Some(metadata) = metadata {
        for field in ["user_id", "session_id"] {
            match metadata.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(value) => {
                    let text = python_str(value).map_err(|reason| UnresolvableOwner { field, reason })?;
                    return Ok(or_default(Some(&text)));
                }
            }
        }
    }
    // Python's `thread_id or task_id`: an empty string falls through.
    let first = [thread_id, task_id]
        .into_iter()
        .flatten()
        .find(|value| !value.is_empty());
    Ok(or_default(first))
}

/// A metadata id the gateway cannot resolve to the owner the seed would: the request is
/// refused (400) with this message, which names the field and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata.{field} cannot be resolved to an owner as the seed resolves it: {reason}")]
pub struct UnresolvableOwner {
    pub field: &'static str,
    pub reason: NotPythonStr,
}

/// Why a JSON value has no `str()` the gateway can vouch for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPythonStr {
    /// Python 3.11+ refuses to read (or print) an integer of more than
    /// [`PYTHON_INT_MAX_DIGITS`] digits: the seed's `json.loads` raises `ValueError`.
    #[error(
        "it holds an integer of {0} digits, and Python refuses integers of more than {PYTHON_INT_MAX_DIGITS} digits (json.loads raises ValueError)"
    )]
    IntTooLong(usize),
    /// Python's `repr` keeps a printable character and escapes the others, and which are
    /// printable depends on the Unicode version of the Python build (U+1FAE8 is escaped by
    /// Python 3.11, Unicode 14, and kept by 3.12+): past Latin-1 no answer fits every seed.
    #[error(
        "a string inside it has the character U+{:04X}, beyond Latin-1 (U+0000-U+00FF): how Python's repr writes it depends on the Unicode version of the Python build; send the id as a plain string, or keep the strings inside objects and lists to Latin-1",
        u32::from(*.0)
    )]
    BeyondLatin1(char),
}

/// Python's `sys.get_int_max_str_digits()` default (3.11+, and the security releases of
/// 3.7-3.10 that brought the limit): the most digits an integer may have to be read.
pub const PYTHON_INT_MAX_DIGITS: usize = 4300;

/// Python's `str.strip()`: Rust's whitespace plus the four separators `\x1c`–`\x1f`,
/// which Python counts as whitespace and Unicode does not.
fn python_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// `str(value)` as Python prints the value its `json.loads` made of the same JSON text.
///
/// A string is itself; anything else prints as its `repr` ([`python_repr`]). Numbers are
/// read from their literal text (serde_json's `arbitrary_precision`), so integers of any
/// size and `-0` print as Python's ints do, and objects keep the order of the text
/// (`preserve_order`), as Python's dicts do.
fn python_str(value: &Value) -> Result<String, NotPythonStr> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => {
            let mut out = String::new();
            python_repr(other, &mut out)?;
            Ok(out)
        }
    }
}

/// Appends `repr(value)` as Python writes it for a JSON-decoded value: `True`, `False`,
/// `None`, ints and floats as [`python_number`], strings as [`python_repr_str`], lists as
/// `[a, b]` and dicts as `{'k': v}` in the order of the text — the order Python's dict
/// keeps, a repeated key holding its last value at its first place, as serde_json's
/// ordered map does too.
fn python_repr(value: &Value, out: &mut String) -> Result<(), NotPythonStr> {
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Number(n) => out.push_str(&python_number(n.as_str())?),
        Value::String(s) => python_repr_str(s, out)?,
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                python_repr_str(key, out)?;
                out.push_str(": ");
                python_repr(item, out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A JSON number literal as Python prints what `json.loads` made of it: without a fraction
/// or exponent it is an int (any size, `-0` is `0`, more than [`PYTHON_INT_MAX_DIGITS`]
/// digits refused as Python refuses them); otherwise a float ([`python_float`]), which
/// overflows to `inf` as Python's does.
fn python_number(literal: &str) -> Result<String, NotPythonStr> {
    if literal.contains(['.', 'e', 'E']) {
        // Rust's parse rounds correctly, like Python's float(); a JSON literal always parses.
        return Ok(literal.parse::<f64>().map_or_else(|_| literal.to_owned(), python_float));
    }
    let digits = literal.strip_prefix('-').unwrap_or(literal);
    if digits.len() > PYTHON_INT_MAX_DIGITS {
        return Err(NotPythonStr::IntTooLong(digits.len()));
    }
    // JSON has no leading zeros, so only `-0` prints otherwise than it is written.
    Ok(if digits == "0" { digits } else { literal }.to_owned())
}

/// Appends Python's `repr(str)`: single quotes, or double quotes when the text has a `'`
/// and no `"`; the chosen quote and `\` escaped with a backslash, `\t`, `\n`, `\r` by name,
/// other non-printable characters as `\xNN`.
///
/// Only Latin-1 is written: its printable characters have been the same in every Unicode
/// version Python 3 ever used (U+0000-U+001F, U+007F-U+00A0 and U+00AD are not), while past
/// it printability moves with the Unicode version of the Python build, so a character
/// there is refused ([`NotPythonStr::BeyondLatin1`]) rather than guessed.
fn python_repr_str(text: &str, out: &mut String) -> Result<(), NotPythonStr> {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' | '\u{a1}'..='\u{ac}' | '\u{ae}'..='\u{ff}' => out.push(c),
            '\0'..='\u{ff}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            other => return Err(NotPythonStr::BeyondLatin1(other)),
        }
    }
    out.push(quote);
    Ok(())
}

/// `repr(float)` as Python writes it: the shortest digits that read back the same, in
/// positional notation when the exponent is from -4 to 15 (with at least `.0`), else as
/// `d.ddde+XX` (the exponent signed, at least two digits); `inf`, `-inf` and `nan` as such
/// (a JSON literal too large for a float, `1e400`, is `inf` in Python).
fn python_float(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: `1.5e-5`, `1e16`.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').expect("`{:e}` has an exponent");
    let exponent: i32 = exponent.parse().expect("a decimal exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let (whole, fraction) = if point <= 0 {
            (
                "0".to_owned(),
                format!("{}{digits}", "0".repeat(point.unsigned_abs() as usize)),
            )
        } else if point as usize >= digits.len() {
            (
                format!("{digits}{}", "0".repeat(point as usize - digits.len())),
                String::new(),
            )
        } else {
            (digits[..point as usize].to_owned(), digits[point as usize..].to_owned())
        };
        let fraction = if fraction.is_empty() { "0".to_owned() } else { fraction };
        format!("{sign}{whole}.{fraction}")
    } else {
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exponent_sign}{:02}", exponent.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hash_matches_the_seed() {
        // hashlib.sha256(b"alice").hexdigest()[:16]
        assert_eq!(OwnerHash::of("alice").as_str(), "2bd806c97f0e00af");
        assert_eq!(OwnerHash::of("default").as_str(), "37a8eec1ce19687d");
    }

    #[test]
    fn parse_hash_accepts_only_lowercase_hex_of_16() {
        assert!(OwnerHash::parse("2bd806c97f0e00af").is_ok());
        for bad in [
            "2BD806C97F0E00AF",
            "2bd806c97f0e00a",
            "2bd806c97f0e00afa",
            "2bd806c97f0e00ag",
            "",
        ] {
            assert_eq!(OwnerHash::parse(bad), Err(OwnerError::BadHash), "{bad}");
        }
    }

    #[test]
    fn decode_owner_table() {
        let long = "a".repeat(MAX_OWNER_LEN + 1);
        let huge = "a".repeat(10_000);
        let cases: Vec<(&str, Result<&str, OwnerError>)> = vec![
            ("alice", Ok("alice")),
            ("user%40example.com", Ok("user@example.com")),
            ("%C3%A9t%C3%A9", Ok("été")),
            ("", Err(OwnerError::Empty)),
            ("..", Err(OwnerError::DotSegment)),
            ("%2e%2e", Err(OwnerError::DotSegment)),
            ("a%2Fb", Err(OwnerError::Slash)),
            ("a%5Cb", Err(OwnerError::Slash)),
            ("a%00b", Err(OwnerError::ControlChar)),
            ("a%0Ab", Err(OwnerError::ControlChar)),
            ("%FF", Err(OwnerError::InvalidUtf8)),
            (&long, Err(OwnerError::TooLong(MAX_OWNER_LEN + 1))),
            (&huge, Err(OwnerError::TooLong(10_000))),
        ];
        for (input, want) in cases {
            assert_eq!(decode_owner(input).as_deref(), want.as_deref(), "{input:.40}");
        }
    }

    #[test]
    fn resolve_owner_like_the_seed() {
        use IsolationMode::*;
        let meta = json!({"user_id": "u1", "session_id": "s1"});
        let meta = meta.as_object();
        assert_eq!(
            resolve_isolation_owner(DockerPerTask, Some(" t1 "), meta, Some("th")).unwrap(),
            "t1"
        );
        assert_eq!(
            resolve_isolation_owner(DockerPerTask, None, meta, None).unwrap(),
            "default"
        );
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, Some("t"), meta, Some("th")).unwrap(),
            "u1"
        );
        let only_session = json!({"user_id": "", "session_id": 42});
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, None, only_session.as_object(), None).unwrap(),
            "42"
        );
        let flag = json!({"user_id": true});
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, None, flag.as_object(), None).unwrap(),
            "True"
        );
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, Some("t"), None, Some("")).unwrap(),
            "t"
        );
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, Some("t"), None, Some("th")).unwrap(),
            "th"
        );
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, None, None, Some("  ")).unwrap(),
            "default"
        );
    }

    #[test]
    fn floats_and_whitespace_resolve_as_python_prints_and_strips_them() {
        // python3 -c 'import json; print(str(json.loads(v)))' for each v
        for (json_text, python) in [
            ("1e16", "1e+16"),
            ("1.5e-5", "1.5e-05"),
            ("123.0", "123.0"),
            ("1e15", "1000000000000000.0"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("-2.5", "-2.5"),
            ("-0.0", "-0.0"),
            ("3.14159", "3.14159"),
            ("1.2345678901234567e300", "1.2345678901234567e+300"),
            ("42", "42"),
        ] {
            let value: Value = serde_json::from_str(json_text).unwrap();
            assert_eq!(python_str(&value).as_deref(), Ok(python), "{json_text}");
        }
        let metadata = json!({"user_id": "\u{1c} alice \u{1f}"});
        let owner =
            resolve_isolation_owner(IsolationMode::DockerPerPrincipal, None, metadata.as_object(), None).unwrap();
        assert_eq!(owner, "alice", "Python strips \\x1c-\\x1f");
    }

    /// The owner of a run whose `metadata.user_id` is `value`, in per-principal isolation.
    fn principal_owner(value: Value) -> Result<String, UnresolvableOwner> {
        let metadata = json!({ "user_id": value });
        resolve_isolation_owner(IsolationMode::DockerPerPrincipal, None, metadata.as_object(), None)
    }

    #[test]
    fn python_str_and_owner_hash_match_python() {
        // (JSON text, str(json.loads(text)), the seed's owner hash with it as user_id):
        // the output of `python3 bench/seed/owner_cases.py` (Python 3.11.7), which runs
        // json.loads, str() and the seed's own resolve_isolation_owner and
        // hash_runtime_owner on each text.
        for (json_text, python, hash) in [
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890",
                "f54e5c8f810648e7",
            ),
            (
                "-123456789012345678901234567890",
                "-123456789012345678901234567890",
                "41ed20b82acfa7e8",
            ),
            ("18446744073709551616", "18446744073709551616", "8b292fc2d32f1fd4"),
            ("-9223372036854775809", "-9223372036854775809", "a11b7b6918ba4e84"),
            ("-0", "0", "5feceb66ffc86f38"),
            ("0", "0", "5feceb66ffc86f38"),
            ("1e400", "inf", "e99270c4fa9f6ea7"),
            ("-1e400", "-inf", "a079ce0bee235137"),
            ("1E400", "inf", "e99270c4fa9f6ea7"),
            ("1e-400", "0.0", "8aed642bf5118b9d"),
            ("-1e-400", "-0.0", "c26617c7ccbcaa66"),
            ("1E5", "100000.0", "e910c00f2d31b04b"),
            (
                r#"{"a": 1, "b": [1, 2.5, null, true, "x"]}"#,
                "{'a': 1, 'b': [1, 2.5, None, True, 'x']}",
                "f563f4b6ea6f5f02",
            ),
            (
                r#"{"b": 1, "a": [], "b": {"z": false, "y": -0}, "c": {}}"#,
                "{'b': {'z': False, 'y': 0}, 'a': [], 'c': {}}",
                "4204fdd7e10830ed",
            ),
            (
                r#"{"outer": {"inner": {"deep": [[], [{}], -1e400]}}}"#,
                "{'outer': {'inner': {'deep': [[], [{}], -inf]}}}",
                "4e522dea2a34982c",
            ),
            ("{}", "{}", "44136fa355b3678a"),
            ("[]", "[]", "4f53cda18c2baa0c"),
            (
                "[true, false, null, 0, -0, 18446744073709551616]",
                "[True, False, None, 0, 0, 18446744073709551616]",
                "1987acf5234cf7d8",
            ),
            (
                "[1e16, 1.5e-5, 0.0001, -0.0, 1e400, 123.0, 1.2345678901234567e300]",
                "[1e+16, 1.5e-05, 0.0001, -0.0, inf, 123.0, 1.2345678901234567e+300]",
                "d616cf3c0275877d",
            ),
            (r#"["it's"]"#, r#"["it's"]"#, "15522db5ef1251f5"),
            (r#"["say \"hi\""]"#, r#"['say "hi"']"#, "07e182e1da62b406"),
            (r#"["both ' and \""]"#, r#"['both \' and "']"#, "1f8dc636828aae69"),
            (
                r#"{"k\n": "a\tb\\c\rd"}"#,
                r#"{'k\n': 'a\tb\\c\rd'}"#,
                "39ba73c2edebfd5f",
            ),
            (
                r#"["\u007f\u0000\u001b\u001f"]"#,
                r#"['\x7f\x00\x1b\x1f']"#,
                "88f16fda1b93eae9",
            ),
            (
                r#"["\u0080\u009f\u00a0\u00ad\u0085"]"#,
                r#"['\x80\x9f\xa0\xad\x85']"#,
                "629416de706af716",
            ),
            (
                r#"["\u00e9t\u00e9", "\u00a1\u00ff", "caf\u00e9"]"#,
                "['été', '¡ÿ', 'café']",
                "80df7b515647e5ed",
            ),
            (r#"{"\u00e9": "\u00a0"}"#, r#"{'é': '\xa0'}"#, "2a915397d2f0c650"),
            (r#""\ud83d\ude00""#, "😀", "f0443a342c5ef547"),
            (r#""\u00e9t\u00e9""#, "été", "bd010c64132bf5ca"),
            (r#"" \u200b ""#, " \u{200b} ", "f4e48e664a603543"),
            (r#"" \u00a0x\u3000 ""#, " \u{a0}x\u{3000} ", "2d711642b726b044"),
            (r#""\u001c alice \u001f""#, "\u{1c} alice \u{1f}", "2bd806c97f0e00af"),
        ] {
            let value: Value = serde_json::from_str(json_text).unwrap();
            assert_eq!(python_str(&value).as_deref(), Ok(python), "str({json_text})");
            let owner = principal_owner(value).unwrap();
            assert_eq!(OwnerHash::of(&owner).as_str(), hash, "owner hash of {json_text}");
        }
    }

    #[test]
    fn integers_python_would_refuse_are_refused() {
        // Same script: "9" * 4300 -> 26bcd4540dcc08a0, "-9" * 4300 -> 08b06abad4d88e5e;
        // one digit more and json.loads raises ValueError (Exceeds the limit (4300 digits)).
        for (literal, hash) in [
            ("9".repeat(PYTHON_INT_MAX_DIGITS), "26bcd4540dcc08a0"),
            (format!("-{}", "9".repeat(PYTHON_INT_MAX_DIGITS)), "08b06abad4d88e5e"),
        ] {
            let owner = principal_owner(serde_json::from_str(&literal).unwrap()).unwrap();
            assert_eq!(owner, literal);
            assert_eq!(OwnerHash::of(&owner).as_str(), hash);
        }
        for literal in [
            "9".repeat(PYTHON_INT_MAX_DIGITS + 1),
            format!("-{}", "9".repeat(PYTHON_INT_MAX_DIGITS + 1)),
            format!("{{\"n\": [{}]}}", "1".repeat(PYTHON_INT_MAX_DIGITS + 1)),
        ] {
            let refused = principal_owner(serde_json::from_str(&literal).unwrap());
            assert_eq!(
                refused,
                Err(UnresolvableOwner {
                    field: "user_id",
                    reason: NotPythonStr::IntTooLong(PYTHON_INT_MAX_DIGITS + 1)
                })
            );
        }
    }

    #[test]
    fn nested_strings_past_latin_1_are_refused_and_say_why() {
        // Python 3.11.7 (Unicode 14) prints these ['😀'], ['\u200b'], {'Ā': 1} and
        // ['\U0001fae8']; 3.12+ (Unicode 15+) keeps U+1FAE8 as it is: no one answer.
        for (json_text, refused) in [
            (r#"["\ud83d\ude00"]"#, '\u{1f600}'),
            (r#"["\u200b"]"#, '\u{200b}'),
            (r#"{"\u0100": 1}"#, '\u{100}'),
            (r#"{"ok": ["x", {"k": "\ud83e\udee8"}]}"#, '\u{1fae8}'),
        ] {
            let value: Value = serde_json::from_str(json_text).unwrap();
            assert_eq!(
                python_str(&value),
                Err(NotPythonStr::BeyondLatin1(refused)),
                "{json_text}"
            );
        }
        let metadata = json!({"user_id": null, "session_id": ["\u{200b}"]});
        let error =
            resolve_isolation_owner(IsolationMode::DockerPerPrincipal, None, metadata.as_object(), None).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("metadata.session_id cannot be resolved"),
            "{message}"
        );
        assert!(message.contains("U+200B, beyond Latin-1"), "{message}");
        // Per-task isolation never looks at the metadata, so nothing there is refused.
        assert_eq!(
            resolve_isolation_owner(IsolationMode::DockerPerTask, Some("t"), metadata.as_object(), None),
            Ok("t".to_owned())
        );
    }
}
