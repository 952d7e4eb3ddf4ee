//! gRPC through the gateway: the client's `grpc-timeout` as a deadline, and the
//! gateway's own answers to gRPC requests as gRPC statuses.
//!
//! A gRPC client reads the outcome from `grpc-status`, not from the HTTP status, so a
//! bare 503 would reach it as an unhelpful "unknown" or "internal" error. The gateway
//! answers trailers-only instead: HTTP 200, no body, and the status in the head.

use super::{body::empty, error::GatewayError, headers::X_REQUEST_ID, ProxyBody};
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use std::time::Duration;

pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRPC status codes the gateway answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// True for `application/grpc` and its subtypes (`+proto`, `+json`, `-web`, ...).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The time to wait for the backend's response head: the route's, or a gRPC client's
/// `grpc-timeout` when that is shorter. Other requests have no use for the field.
pub fn deadline(headers: &HeaderMap, route: Duration) -> Duration {
    if !is_grpc(headers) {
        return route;
    }
    headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| parse_timeout(v.as_bytes()))
        .map_or(route, |client| client.min(route))
}

/// `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_timeout(v: &[u8]) -> Option<Duration> {
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC code for an answer the gateway made with `status`. Follows gRPC's HTTP
/// mapping, except where the gateway knows more: a timeout is its own deadline, a rate
/// limit or size limit is a resource running out.
pub fn code_for(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 500 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        413 | 414 | 429 | 431 => Code::ResourceExhausted,
        // 421: the same call succeeds on a new connection.
        421 | 502 | 503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Unknown,
    }
}

/// The gateway's answer `err` as a trailers-only gRPC response.
pub fn error_response(err: GatewayError, request_id: &HeaderValue) -> Response<ProxyBody> {
    let code = code_for(err.status());
    let mut resp = Response::new(empty());
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(code as u16));
    let message = format!("{}: {err}", err.code());
    headers.insert(
        GRPC_MESSAGE,
        HeaderValue::from_str(&percent_encode(&message)).expect("encoded to visible ASCII"),
    );
    headers.insert(X_REQUEST_ID, request_id.clone());
    if err.closes_connection() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // `WWW-Authenticate`, `Retry-After` and the like still say how to do better.
    if let GatewayError::Policy(denial) = err {
        for (name, value) in denial.headers {
            headers.append(name, value);
        }
    }
    resp
}

/// `grpc-message` encoding: printable ASCII but `%` as is, every other byte as `%XX`.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit() {
        let t = |s: &str| parse_timeout(s.as_bytes());
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "1s", "-1S", "1.5S", "10"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_shorter_deadline_wins() {
        let mut h = HeaderMap::new();
        let route = Duration::from_secs(30);
        assert_eq!(deadline(&h, route), route);
        h.insert(GRPC_TIMEOUT, "100m".parse().unwrap());
        // Only a gRPC request's deadline counts.
        assert_eq!(deadline(&h, route), route);
        h.insert(header::CONTENT_TYPE, "application/grpc".parse().unwrap());
        assert_eq!(deadline(&h, route), Duration::from_millis(100));
        h.insert(GRPC_TIMEOUT, "5M".parse().unwrap());
        assert_eq!(deadline(&h, route), route);
        h.insert(GRPC_TIMEOUT, "soon".parse().unwrap());
        assert_eq!(deadline(&h, route), route);
    }

    #[test]
    fn gateway_answers_map_to_grpc_codes() {
        let cases = [
            (GatewayError::NoEndpoints, Code::Unavailable),
            (GatewayError::BackendFailed("x".into()), Code::Unavailable),
            (
                GatewayError::Timeout(Duration::from_secs(1)),
                Code::DeadlineExceeded,
            ),
            (GatewayError::NoRoute, Code::Unimplemented),
            (GatewayError::ClientCertRequired, Code::PermissionDenied),
            (GatewayError::BodyTooLarge(1), Code::ResourceExhausted),
            (GatewayError::BadRequest("x"), Code::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(code_for(err.status()), code, "{err:?}");
        }
        assert_eq!(code_for(StatusCode::UNAUTHORIZED), Code::Unauthenticated);
        assert_eq!(
            code_for(StatusCode::TOO_MANY_REQUESTS),
            Code::ResourceExhausted
        );
        assert_eq!(code_for(StatusCode::IM_A_TEAPOT), Code::Unknown);
    }

    #[test]
    fn answers_are_trailers_only() {
        let resp = error_response(GatewayError::NoEndpoints, &"rid".parse().unwrap());
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(h[GRPC_STATUS], "14");
        assert_eq!(
            h[GRPC_MESSAGE],
            "no_endpoints: backend has no endpoint to send to"
        );
        assert_eq!(h[X_REQUEST_ID], "rid");
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("50% done\n"), "50%25 done%0A");
        assert_eq!(percent_encode("caf\u{e9}"), "caf%C3%A9");
    }
}
