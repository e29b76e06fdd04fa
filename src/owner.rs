//! Owners and owner hashes: who a runtime belongs to, and the short name it goes by.
//!
//! An *owner* is the raw id an agent run is isolated by (a user, session or task id). Its
//! *hash* is `sha256(owner)` as lowercase hex, first 16 characters — exactly the seed's
//! `hash_runtime_owner` — and names the container (`browser-use-browser-<hash>`) and the
//! profile volume (`browser-use-profile-<hash>`).

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
/// segment. Anything else is refused before it can name a container.
pub fn decode_owner(segment: &str) -> Result<String, OwnerError> {
    if segment.len() > 3 * MAX_OWNER_LEN {
        return Err(OwnerError::TooLong(segment.len()));
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
    let owner = String::from_utf8(bytes).map_err(|_| OwnerError::InvalidUtf8)?;
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
pub fn resolve_isolation_owner(
    mode: IsolationMode,
    task_id: Option<&str>,
    metadata: Option<&serde_json::Map<String, Value>>,
    thread_id: Option<&str>,
) -> String {
    fn or_default(value: Option<&str>) -> String {
        let trimmed = python_strip(value.unwrap_or(""));
        if trimmed.is_empty() {
            "default".to_owned()
        } else {
            trimmed.to_owned()
        }
    }
    if mode == IsolationMode::DockerPerTask {
        return or_default(task_id);
    }
    if let Some(metadata) = metadata {
        for key in ["user_id", "session_id"] {
            match metadata.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(value) => return or_default(Some(&python_str(value))),
            }
        }
    }
    // Python's `thread_id or task_id`: an empty string falls through.
    let first = [thread_id, task_id]
        .into_iter()
        .flatten()
        .find(|value| !value.is_empty());
    or_default(first)
}

/// Python's `str.strip()`: Rust's whitespace plus the four separators `\x1c`–`\x1f`,
/// which Python counts as whitespace and Unicode does not.
fn python_strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// `str(value)` as Python prints a JSON-decoded value, for the scalar cases ids take.
fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Null => "None".to_owned(),
        Value::Number(n) if n.is_f64() => n.as_f64().map(python_float).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

/// `repr(float)` as Python writes it: the shortest digits that read back the same, in
/// positional notation when the exponent is from -4 to 15 (with at least `.0`), else as
/// `d.ddde+XX` (the exponent signed, at least two digits).
fn python_float(value: f64) -> String {
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
            resolve_isolation_owner(DockerPerTask, Some(" t1 "), meta, Some("th")),
            "t1"
        );
        assert_eq!(resolve_isolation_owner(DockerPerTask, None, meta, None), "default");
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, Some("t"), meta, Some("th")),
            "u1"
        );
        let only_session = json!({"user_id": "", "session_id": 42});
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, None, only_session.as_object(), None),
            "42"
        );
        let flag = json!({"user_id": true});
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, None, flag.as_object(), None),
            "True"
        );
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, Some("t"), None, Some("")),
            "t"
        );
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, Some("t"), None, Some("th")),
            "th"
        );
        assert_eq!(
            resolve_isolation_owner(DockerPerPrincipal, None, None, Some("  ")),
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
            assert_eq!(python_str(&value), python, "{json_text}");
        }
        let metadata = json!({"user_id": "\u{1c} alice \u{1f}"});
        let owner = resolve_isolation_owner(IsolationMode::DockerPerPrincipal, None, metadata.as_object(), None);
        assert_eq!(owner, "alice", "Python strips \\x1c-\\x1f");
    }
}
