//! The one canonical form of a request path.
//!
//! Every decision the gateway makes about a path (routing, later policies, the path sent
//! upstream) reads the canonical form, so two spellings of one path can never be routed
//! or authorised differently.

use std::borrow::Cow;

/// Why a path was refused. Each maps to 400 Bad Request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with '/'")]
    NotAbsolute,
    #[error("malformed percent-encoding in path")]
    BadEncoding,
    #[error("encoded '/' in path")]
    EncodedSlash,
    #[error("backslash in path")]
    Backslash,
    #[error("NUL in path")]
    Nul,
    #[error("dot segment with parameters in path")]
    DotSegmentParameters,
}

/// Returns the canonical form of `path` (no query string):
///
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, and other
///   escapes are kept with upper-case hex digits;
/// - repeated slashes are merged;
/// - `.` and `..` segments are removed (`..` never climbs above `/`);
/// - a trailing slash is kept, because backends may treat `/a` and `/a/` differently.
///
/// An encoded slash, a backslash (raw or encoded), a NUL, or a `.` or `..` segment
/// carrying `;` parameters (`/..;/`, which servlet containers read as `..`) is refused,
/// since backends disagree on what they mean.
pub fn canonicalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    if decoded.split('/').any(is_dot_segment_with_parameters) {
        return Err(PathError::DotSegmentParameters);
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// True when no step of [`canonicalize`] would change `path`. This is the common case,
/// checked without allocating.
fn is_canonical(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'%' | b'\\' | b';' | 0 | 0x80.. => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/' => {
                // "/." starts a dot segment only when followed by '/', end, or ".".
                match bytes.get(i + 1) {
                    None | Some(b'/') => return false,
                    Some(b'.') if matches!(bytes.get(i + 2), None | Some(b'/')) => return false,
                    _ => {}
                }
            }
            _ => {}
        }
        prev = b;
    }
    true
}

fn decode_unreserved(bytes: &[u8]) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|b| hex(*b));
                let lo = bytes.get(i + 2).and_then(|b| hex(*b));
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEncoding);
                };
                let c = (hi << 4) | lo;
                match c {
                    b'/' => return Err(PathError::EncodedSlash),
                    b'\\' => return Err(PathError::Backslash),
                    0 => return Err(PathError::Nul),
                    c if is_unreserved(c) => out.push(c as char),
                    c => push_escape(&mut out, c),
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            // Raw bytes past ASCII (a client sending UTF-8 unencoded) are written as the
            // escapes they should have been, so both spellings are one path.
            b if !b.is_ascii() => {
                push_escape(&mut out, b);
                i += 1;
            }
            b => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Merges repeated slashes and resolves dot segments of an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path.split('/').skip(1) {
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

/// `.;x`, `..;x`, `..%3Bx`: a dot segment once its parameters are stripped.
fn is_dot_segment_with_parameters(segment: &str) -> bool {
    let base = match (segment.find(';'), segment.find("%3B")) {
        (Some(a), Some(b)) => &segment[..a.min(b)],
        (Some(a), None) | (None, Some(a)) => &segment[..a],
        (None, None) => return false,
    };
    base == "." || base == ".."
}

fn push_escape(out: &mut String, c: u8) {
    out.push('%');
    out.push(HEX_UPPER[(c >> 4) as usize] as char);
    out.push(HEX_UPPER[(c & 0xf) as usize] as char);
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_forms() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../a", "/a"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/%61%70%69/x", "/api/x"),
            ("/%2e%2e/admin", "/admin"),
            ("/api/%2E%2E/admin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/%7euser", "/~user"),
            ("/a/.b/..c", "/a/.b/..c"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a%25b", "/a%25b"),
            ("/a;b=1/c", "/a;b=1/c"),
            ("/caf\u{e9}", "/caf%C3%A9"),
            ("/public/caf\u{e9}/../../admin", "/admin"),
            ("/a/..b;x", "/a/..b;x"),
        ];
        for (input, want) in cases {
            assert_eq!(canonicalize(input).unwrap(), want, "input {input:?}");
        }
    }

    #[test]
    fn refusals() {
        let cases = [
            ("a/b", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/a%2fb", PathError::EncodedSlash),
            ("/a%2Fb", PathError::EncodedSlash),
            ("/a%5cb", PathError::Backslash),
            ("/a\\b", PathError::Backslash),
            ("/a%00b", PathError::Nul),
            ("/a%zzb", PathError::BadEncoding),
            ("/a%4", PathError::BadEncoding),
            ("/a%", PathError::BadEncoding),
            ("/public/..;/admin", PathError::DotSegmentParameters),
            ("/public/x/..%3b/admin", PathError::DotSegmentParameters),
            ("/public/.;x/admin", PathError::DotSegmentParameters),
            ("/%2e%2e;/admin", PathError::DotSegmentParameters),
        ];
        for (input, want) in cases {
            assert_eq!(canonicalize(input), Err(want), "input {input:?}");
        }
    }

    #[test]
    fn canonical_input_is_not_copied() {
        assert!(matches!(
            canonicalize("/api/v1/users"),
            Ok(Cow::Borrowed(_))
        ));
    }

    fn path_strategy() -> impl Strategy<Value = String> {
        let seg = prop_oneof![
            Just("".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("%2e".to_string()),
            Just("%2E%2e".to_string()),
            Just("%41".to_string()),
            Just("%20".to_string()),
            "[a-z0-9._~-]{1,6}",
        ];
        proptest::collection::vec(seg, 0..8).prop_map(|segs| format!("/{}", segs.join("/")))
    }

    proptest! {
        #[test]
        fn canonicalize_is_idempotent(path in path_strategy()) {
            let once = canonicalize(&path).unwrap().into_owned();
            let twice = canonicalize(&once).unwrap().into_owned();
            prop_assert_eq!(&once, &twice);
        }

        #[test]
        fn canonical_paths_have_no_dot_segments_or_empty_segments(path in path_strategy()) {
            let c = canonicalize(&path).unwrap().into_owned();
            prop_assert!(c.starts_with('/'));
            prop_assert!(!c.contains("//"));
            let inner = c.trim_end_matches('/');
            for seg in inner.split('/').skip(1) {
                prop_assert!(seg != "." && seg != "..", "{} -> {}", path, c);
            }
        }
    }
}
