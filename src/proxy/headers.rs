//! Header rules of the proxy: hop-by-hop removal, forwarding headers, request ids and
//! trace context.

use http::{header, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection and never cross the proxy (RFC 9110 §7.6.1,
/// plus the non-standard `Proxy-Connection`).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
/// Returns the `Upgrade` value when the message asked for a protocol upgrade, so the
/// caller can forward that one on purpose.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut upgrade_requested = false;
    // Bytes, not text: a value with one odd byte must not hide the names beside it.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|token| {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"upgrade") {
                upgrade_requested = true;
            }
            HeaderName::from_bytes(token).ok()
        })
        .collect();
    let upgrade = headers
        .get(header::UPGRADE)
        .cloned()
        .filter(|_| upgrade_requested);
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    upgrade
}

/// True when the request says it accepts trailers (`TE: trailers`), which gRPC needs from
/// end to end. `TE` is hop-by-hop: the proxy says it again on its own hop.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
}

/// Headers that claim to describe the client or an earlier hop, which this gateway does
/// not vouch for. Spellings with `_` are included because CGI-style backends read
/// `X_Forwarded_For` as `X-Forwarded-For`.
const SPOOFABLE: [&str; 9] = [
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-client-cert",
    "x-portcullis-client",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// How many of [`SPOOFABLE`], from the start, are removed outright; the gateway replaces
/// the others.
const ALWAYS_REMOVED: usize = 5;

/// The header that carries a verified client certificate upstream.
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Removes `Forwarded`, `X-Real-IP`, `X-Forwarded-Port`, `X-Forwarded-Client-Cert`,
/// `X-Portcullis-Client`, and the `_` spellings of the headers in [`SPOOFABLE`]; the
/// gateway sets its own forwarding headers afterwards.
pub fn strip_spoofable(headers: &mut HeaderMap) {
    let odd: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            if n.contains('_') {
                SPOOFABLE.contains(&n.replace('_', "-").as_str())
            } else {
                SPOOFABLE[..ALWAYS_REMOVED].contains(&n)
            }
        })
        .cloned()
        .collect();
    for name in odd {
        headers.remove(name);
    }
}

/// Removes `name` and every spelling of it with `_` for `-`, for a header the gateway
/// is about to set from what it verified.
pub fn remove_every_spelling(headers: &mut HeaderMap, name: &HeaderName) {
    headers.remove(name);
    let odd: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_') && k.as_str().replace('_', "-") == name.as_str())
        .cloned()
        .collect();
    for k in odd {
        headers.remove(k);
    }
}

/// `x-forwarded-client-cert` for a verified client certificate, in the form service
/// meshes read: the SHA-256 of its DER, then its subject, quoted.
pub fn client_cert_value(leaf: &[u8]) -> HeaderValue {
    use std::fmt::Write;
    let hash = ring::digest::digest(&ring::digest::SHA256, leaf);
    let mut v = String::from("Hash=");
    for b in hash.as_ref() {
        let _ = write!(v, "{b:02x}");
    }
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) {
        let subject = cert.subject().to_string();
        // A subject with bytes a header cannot carry is left out rather than mangled.
        if subject.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            v.push_str(";Subject=\"");
            v.push_str(&subject.replace('\\', "\\\\").replace('"', "\\\""));
            v.push('"');
        }
    }
    HeaderValue::from_str(&v).expect("visible ASCII only")
}

/// Sets the forwarding headers of a request going upstream. The client's
/// `X-Forwarded-For` chain is kept and the peer appended; `Proto` and `Host` describe
/// this hop and replace whatever the client sent.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, proto: &'static str, host: &str) {
    // Joined as bytes, so the client's chain is kept as sent, odd bytes and all.
    let mut chain: Vec<u8> = Vec::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        chain.extend_from_slice(v.as_bytes());
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(peer.to_string().as_bytes());
    if let Ok(xff) = HeaderValue::from_bytes(&chain) {
        headers.insert(X_FORWARDED_FOR, xff);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(host) = HeaderValue::from_str(host) {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// The request id: the client's own when it is a plausible id, else a new one. A valid
/// `traceparent` or B3 trace id lends its trace id, so logs and traces share one key.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
        {
            return v.clone();
        }
    }
    let id = super::trace::incoming_trace_id(headers)
        .unwrap_or_else(|| format!("{:032x}", fastrand::u128(1..)));
    HeaderValue::from_str(&id).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn upgrade_is_reported_only_when_connection_names_it() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert_eq!(strip_hop_by_hop(&mut h), None);

        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        assert_eq!(strip_hop_by_hop(&mut h).unwrap(), "websocket");
        assert!(h.get(header::UPGRADE).is_none());
    }

    #[test]
    fn forwarded_for_appends_and_proto_is_replaced() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, "1.1.1.1".parse().unwrap());
        h.append(X_FORWARDED_FOR, "2.2.2.2".parse().unwrap());
        h.insert(X_FORWARDED_PROTO, "https".parse().unwrap());
        set_forwarded(&mut h, "10.0.0.9".parse().unwrap(), "http", "a.example.com");
        assert_eq!(
            h.get(X_FORWARDED_FOR).unwrap(),
            "1.1.1.1, 2.2.2.2, 10.0.0.9"
        );
        assert_eq!(h.get(X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(h.get(X_FORWARDED_HOST).unwrap(), "a.example.com");
    }

    #[test]
    fn odd_bytes_do_not_hide_connection_names_or_break_the_chain() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-secret, \xff").unwrap(),
        );
        h.insert("x-secret", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());

        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"1.1.1.1, \xff").unwrap(),
        );
        set_forwarded(&mut h, "10.0.0.9".parse().unwrap(), "http", "a");
        assert_eq!(
            h.get(X_FORWARDED_FOR).unwrap().as_bytes(),
            b"1.1.1.1, \xff, 10.0.0.9"
        );
    }

    #[test]
    fn spoofable_spellings_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "forwarded",
            "x-real-ip",
            "x-forwarded-port",
            "x-portcullis-client",
            "x_portcullis_client",
            "x_forwarded_for",
            "x_forwarded_proto",
            "x-forwarded_host",
            "x_request_id",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "evil".parse().unwrap(),
            );
        }
        h.insert("x_custom_thing", "kept".parse().unwrap());
        h.insert(X_FORWARDED_FOR, "1.1.1.1".parse().unwrap());
        strip_spoofable(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, ["x-forwarded-for", "x_custom_thing"]);
    }

    #[test]
    fn every_spelling_of_a_set_header_is_removed() {
        let mut h = HeaderMap::new();
        for name in ["x-consumer", "x_consumer", "X_Consumer", "x_consumer_id"] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                "evil".parse().unwrap(),
            );
        }
        remove_every_spelling(&mut h, &HeaderName::from_static("x-consumer"));
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x_consumer_id"]);
    }

    #[test]
    fn trailers_are_accepted_only_when_te_says_so() {
        let mut h = HeaderMap::new();
        assert!(!accepts_trailers(&h));
        h.insert(header::TE, "gzip, Trailers".parse().unwrap());
        assert!(accepts_trailers(&h));
        h.insert(header::TE, "trailersx".parse().unwrap());
        assert!(!accepts_trailers(&h));
    }

    #[test]
    fn request_ids() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, "abc-123".parse().unwrap());
        assert_eq!(request_id(&h), "abc-123");

        h.insert(X_REQUEST_ID, "bad id with spaces".parse().unwrap());
        let id = request_id(&h);
        assert_eq!(id.len(), 32);

        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, tp.parse().unwrap());
        assert_eq!(request_id(&h), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
