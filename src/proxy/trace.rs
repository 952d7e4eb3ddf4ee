//! Trace context: W3C `traceparent`/`tracestate` and B3, accepted and passed on.
//!
//! The backend always gets a valid `traceparent`. A valid one from the client is kept with
//! its `tracestate`; when only B3 arrives, a `traceparent` is derived from it carrying the
//! same trace id (a 64-bit B3 id padded to 128 bits) and B3 goes on as sent; otherwise a
//! new trace starts. Values that do not parse, and a repeated `traceparent`, are removed,
//! never forwarded; so is B3 naming another trace than the `traceparent` that goes on,
//! so that every backend joins the same trace whichever format it reads.

use super::headers::{TRACEPARENT, TRACESTATE};
use http::{HeaderMap, HeaderName, HeaderValue};

pub const B3: HeaderName = HeaderName::from_static("b3");
pub const X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

const B3_MULTI: [HeaderName; 5] = [
    X_B3_TRACE_ID,
    X_B3_SPAN_ID,
    X_B3_PARENT_SPAN_ID,
    X_B3_SAMPLED,
    X_B3_FLAGS,
];

/// What one B3 encoding (single or multi-header) says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct B3Context {
    /// The trace id, 32 hex digits, and the span id; absent when only a sampling
    /// decision was sent.
    ids: Option<(String, String)>,
    /// `None` when the decision is deferred.
    sampled: Option<bool>,
}

/// Makes the request's trace headers safe to forward (see the module documentation)
/// and returns the trace id they carry. `request_id` becomes the trace id of a new trace
/// when it is one.
pub fn propagate(headers: &mut HeaderMap, request_id: &HeaderValue) -> String {
    let single = read_b3(headers, &[B3], single_b3);
    let multi = read_b3(headers, &B3_MULTI, multi_b3);

    let trace_id = match valid_traceparent(headers) {
        Some(id) => id.to_string(),
        None => {
            // A tracestate without its traceparent is meaningless.
            headers.remove(&TRACESTATE);
            let b3 = single.as_ref().or(multi.as_ref());
            let sampled = b3.and_then(|b| b.sampled).unwrap_or(true);
            let (trace_id, span_id) = match b3.and_then(|b| b.ids.clone()) {
                Some(ids) => ids,
                None => {
                    let trace_id = match request_id.to_str() {
                        Ok(id) if is_trace_id(id.as_bytes()) => id.to_string(),
                        _ => format!("{:032x}", fastrand::u128(1..)),
                    };
                    (trace_id, format!("{:016x}", fastrand::u64(1..)))
                }
            };
            let value = format!("00-{trace_id}-{span_id}-{:02x}", u8::from(sampled));
            // Replaces every copy the client sent.
            headers.insert(
                TRACEPARENT,
                HeaderValue::from_str(&value).expect("hex is a valid value"),
            );
            trace_id
        }
    };
    // A backend reading B3 must join the trace that `traceparent` names, not another.
    for (context, names) in [(single, &[B3][..]), (multi, &B3_MULTI[..])] {
        let other = context
            .and_then(|c| c.ids)
            .is_some_and(|(id, _)| id != trace_id);
        if other {
            for n in names {
                headers.remove(n);
            }
        }
    }
    trace_id
}

/// The trace id of the request's `traceparent`, unless it is malformed or repeated
/// (two are ambiguous, so invalid).
fn valid_traceparent(headers: &HeaderMap) -> Option<&str> {
    if repeated(headers, &[TRACEPARENT]) {
        return None;
    }
    headers
        .get(&TRACEPARENT)
        .and_then(|v| parse_traceparent(v.as_bytes()))
}

/// The trace id a request arrives with, if any: from a valid `traceparent`, else from
/// valid B3 ids.
pub fn incoming_trace_id(headers: &HeaderMap) -> Option<String> {
    if let Some(id) = valid_traceparent(headers) {
        return Some(id.to_string());
    }
    let valid = |names: &[HeaderName], parse: B3Parser| {
        (!repeated(headers, names))
            .then(|| parse(headers))
            .flatten()
    };
    valid(&[B3], single_b3)
        .or_else(|| valid(&B3_MULTI, multi_b3))
        .and_then(|b| b.ids)
        .map(|(trace, _)| trace)
}

type B3Parser = fn(&HeaderMap) -> Option<B3Context>;

/// Reads one B3 encoding from `names` with `parse`. When present but invalid, its
/// headers are removed and `None` returned.
fn read_b3(headers: &mut HeaderMap, names: &[HeaderName], parse: B3Parser) -> Option<B3Context> {
    if !names.iter().any(|n| headers.contains_key(n)) {
        return None;
    }
    let parsed = if repeated(headers, names) {
        None
    } else {
        parse(headers)
    };
    if parsed.is_none() {
        for n in names {
            headers.remove(n);
        }
    }
    parsed
}

/// A trace header sent twice is ambiguous, so invalid.
fn repeated(headers: &HeaderMap, names: &[HeaderName]) -> bool {
    names
        .iter()
        .any(|n| headers.get_all(n).iter().nth(1).is_some())
}

/// `b3: {trace}-{span}[-{sampling}[-{parent}]]`, or a sampling decision alone.
fn single_b3(headers: &HeaderMap) -> Option<B3Context> {
    let v = headers.get(&B3)?.to_str().ok()?;
    let parts: Vec<&str> = v.split('-').collect();
    if let [decision] = parts.as_slice() {
        return Some(B3Context {
            ids: None,
            sampled: Some(sampling(decision)?),
        });
    }
    if parts.len() > 4 {
        return None;
    }
    let trace = b3_trace_id(parts[0])?;
    let span = is_span_id(parts[1]).then(|| parts[1].to_string())?;
    let sampled = match parts.get(2) {
        Some(d) => Some(sampling(d)?),
        None => None,
    };
    if let Some(parent) = parts.get(3) {
        if !is_span_id(parent) {
            return None;
        }
    }
    Some(B3Context {
        ids: Some((trace, span)),
        sampled,
    })
}

/// `X-B3-TraceId` and `X-B3-SpanId` (both or neither), with the optional
/// `X-B3-ParentSpanId`, `X-B3-Sampled` and `X-B3-Flags`.
fn multi_b3(headers: &HeaderMap) -> Option<B3Context> {
    let text = |name: &HeaderName| headers.get(name).map(|v| v.to_str().ok());
    let ids = match (text(&X_B3_TRACE_ID), text(&X_B3_SPAN_ID)) {
        (None, None) => None,
        (Some(Some(trace)), Some(Some(span))) if is_span_id(span) => {
            Some((b3_trace_id(trace)?, span.to_string()))
        }
        _ => return None,
    };
    if let Some(parent) = text(&X_B3_PARENT_SPAN_ID) {
        if ids.is_none() || !parent.is_some_and(is_span_id) {
            return None;
        }
    }
    let debug = match text(&X_B3_FLAGS) {
        None => false,
        Some(Some("1")) => true,
        Some(_) => return None,
    };
    let sampled = match text(&X_B3_SAMPLED) {
        None => None,
        // Early B3 clients wrote the words.
        Some(Some("1" | "true")) => Some(true),
        Some(Some("0" | "false")) => Some(false),
        Some(_) => return None,
    };
    let sampled = if debug { Some(true) } else { sampled };
    if ids.is_none() && sampled.is_none() {
        return None;
    }
    Some(B3Context { ids, sampled })
}

/// `1` (sampled), `d` (debug, which implies sampled) or `0`.
fn sampling(s: &str) -> Option<bool> {
    match s {
        "1" | "d" => Some(true),
        "0" => Some(false),
        _ => None,
    }
}

/// A B3 trace id (16 or 32 lower-case hex digits, not all zero), as 32 digits.
fn b3_trace_id(s: &str) -> Option<String> {
    match s.len() {
        16 if is_span_id(s) => Some(format!("{:0>32}", s)),
        32 if is_trace_id(s.as_bytes()) => Some(s.to_string()),
        _ => None,
    }
}

fn is_span_id(s: &str) -> bool {
    s.len() == 16 && lower_hex(s.as_bytes()) && s.bytes().any(|c| c != b'0')
}

/// Returns the trace id of a well-formed version-00 `traceparent`.
fn parse_traceparent(v: &[u8]) -> Option<&str> {
    // 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>
    if v.len() != 55 || &v[..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&v[3..35], &v[36..52], &v[53..55]);
    let nonzero = |s: &[u8]| s.iter().any(|&c| c != b'0');
    (is_trace_id(trace) && lower_hex(parent) && nonzero(parent) && lower_hex(flags))
        .then(|| std::str::from_utf8(trace).expect("checked hex"))
}

fn is_trace_id(s: &[u8]) -> bool {
    s.len() == 32 && lower_hex(s) && s.iter().any(|&c| c != b'0')
}

fn lower_hex(s: &[u8]) -> bool {
    s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn mk_headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn rid() -> HeaderValue {
        "not-a-trace-id".parse().unwrap()
    }

    #[test]
    fn valid_traceparent_passes_through_with_tracestate() {
        let mut h = mk_headers(&[("traceparent", TP), ("tracestate", "v=1")]);
        assert_eq!(
            propagate(&mut h, &rid()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(h["traceparent"], TP);
        assert_eq!(h["tracestate"], "v=1");
    }

    #[test]
    fn invalid_traceparent_is_replaced_and_tracestate_dropped() {
        let mut h = mk_headers(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("tracestate", "v=1"),
        ]);
        let id: HeaderValue = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        assert_eq!(propagate(&mut h, &id), "4bf92f3577b34da6a3ce929d0e0e4736");
        let new = h["traceparent"].to_str().unwrap();
        assert!(
            new.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{new}"
        );
        assert!(new.ends_with("-01"), "{new}");
        assert!(parse_traceparent(new.as_bytes()).is_some());
        assert!(h.get("tracestate").is_none());
    }

    #[test]
    fn multi_header_b3_derives_traceparent_and_stays() {
        let mut h = mk_headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "1"),
        ]);
        assert_eq!(
            propagate(&mut h, &rid()),
            "463ac35c9f6413ad48485a3953bb6124"
        );
        assert_eq!(
            h["traceparent"],
            "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01"
        );
        assert_eq!(h["x-b3-traceid"], "463ac35c9f6413ad48485a3953bb6124");
        assert_eq!(h["x-b3-spanid"], "a2fb4a1d1a96d312");
        assert_eq!(h["x-b3-parentspanid"], "0020000000000001");
        assert_eq!(h["x-b3-sampled"], "1");
    }

    #[test]
    fn sixty_four_bit_ids_are_padded_and_not_sampled_is_kept() {
        let mut h = mk_headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]);
        assert_eq!(
            propagate(&mut h, &rid()),
            "0000000000000000a3ce929d0e0e4736"
        );
        assert_eq!(
            h["traceparent"],
            "00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
        assert_eq!(h["x-b3-traceid"], "a3ce929d0e0e4736");
    }

    #[test]
    fn debug_flag_means_sampled() {
        let mut h = mk_headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-flags", "1"),
        ]);
        propagate(&mut h, &rid());
        assert_eq!(
            h["traceparent"],
            "00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn single_b3_derives_traceparent_and_stays() {
        let single = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90";
        let mut h = mk_headers(&[("b3", single)]);
        assert_eq!(
            propagate(&mut h, &rid()),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(
            h["traceparent"],
            "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-00"
        );
        assert_eq!(h["b3"], single);

        let mut h = mk_headers(&[("b3", "64fe8b2a57d3eff7-e457b5a2e4d86bd1-d")]);
        propagate(&mut h, &rid());
        assert_eq!(
            h["traceparent"],
            "00-000000000000000064fe8b2a57d3eff7-e457b5a2e4d86bd1-01"
        );
    }

    #[test]
    fn single_b3_wins_over_multi_of_another_trace() {
        let mut h = mk_headers(&[
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
        ]);
        assert_eq!(
            propagate(&mut h, &rid()),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(
            h["b3"],
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
        );
        for name in B3_MULTI {
            assert!(h.get(&name).is_none(), "{name} kept");
        }
    }

    #[test]
    fn b3_of_the_same_trace_stays_beside_traceparent() {
        // A 64-bit B3 id names the trace whose 128-bit id is padded with zeros.
        let tp = "00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = mk_headers(&[
            ("traceparent", tp),
            ("b3", "a3ce929d0e0e4736-00f067aa0ba902b7"),
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
        ]);
        propagate(&mut h, &rid());
        assert_eq!(h["traceparent"], tp);
        assert_eq!(h["b3"], "a3ce929d0e0e4736-00f067aa0ba902b7");
        assert_eq!(h["x-b3-traceid"], "a3ce929d0e0e4736");
    }

    #[test]
    fn traceparent_wins_and_b3_of_another_trace_is_dropped() {
        let mut h = mk_headers(&[
            ("traceparent", TP),
            ("b3", "a3ce929d0e0e4736-00f067aa0ba902b7"),
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]);
        assert_eq!(
            propagate(&mut h, &rid()),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(h["traceparent"], TP);
        assert!(h.get("b3").is_none());
        assert!(h.get("x-b3-traceid").is_none());
        assert!(h.get("x-b3-spanid").is_none());
    }

    #[test]
    fn two_traceparents_are_replaced_by_one() {
        let other = "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01";
        let mut h = mk_headers(&[
            ("traceparent", TP),
            ("traceparent", other),
            ("tracestate", "v=1"),
        ]);
        let id = propagate(&mut h, &rid());
        assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(id, "463ac35c9f6413ad48485a3953bb6124");
        assert_eq!(h.get_all("traceparent").iter().count(), 1);
        assert_eq!(&h["traceparent"].to_str().unwrap()[3..35], id);
        assert!(h.get("tracestate").is_none());
        assert_eq!(
            incoming_trace_id(&mk_headers(&[("traceparent", TP), ("traceparent", TP)])),
            None
        );
    }

    #[test]
    fn sampling_only_b3_starts_a_trace_with_that_decision() {
        let mut h = mk_headers(&[("b3", "0")]);
        let id = propagate(&mut h, &rid());
        let tp = h["traceparent"].to_str().unwrap();
        assert_eq!(&tp[3..35], id);
        assert!(tp.ends_with("-00"), "{tp}");
        assert_eq!(h["b3"], "0");
    }

    #[test]
    fn invalid_b3_is_removed() {
        for bad in [
            vec![("b3", "80F198EE56343BA864FE8B2A57D3EFF7-E457B5A2E4D86BD1")],
            vec![("b3", "00000000000000000000000000000000-e457b5a2e4d86bd1")],
            vec![("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1-x")],
            vec![("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1-1-zz")],
            vec![("b3", "a3ce929d0e0e4736")],
            vec![
                ("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1"),
                ("b3", "a3ce929d0e0e4736-e457b5a2e4d86bd1"),
            ],
        ] {
            let mut h = mk_headers(&bad);
            propagate(&mut h, &rid());
            assert!(h.get("b3").is_none(), "{bad:?} kept");
            assert!(parse_traceparent(h["traceparent"].as_bytes()).is_some());
        }
        let mut h = mk_headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-sampled", "1"),
            ("x-b3-flags", "1"),
        ]);
        propagate(&mut h, &rid());
        for name in B3_MULTI {
            assert!(h.get(&name).is_none(), "{name} kept");
        }
        let mut h = mk_headers(&[
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "yes"),
        ]);
        propagate(&mut h, &rid());
        assert!(h.get("x-b3-traceid").is_none());
    }

    #[test]
    fn incoming_trace_ids() {
        let h = mk_headers(&[("traceparent", TP)]);
        assert_eq!(
            incoming_trace_id(&h).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let h = mk_headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7")]);
        assert_eq!(
            incoming_trace_id(&h).as_deref(),
            Some("0000000000000000a3ce929d0e0e4736")
        );
        let h = mk_headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ]);
        assert_eq!(
            incoming_trace_id(&h).as_deref(),
            Some("463ac35c9f6413ad48485a3953bb6124")
        );
        assert_eq!(incoming_trace_id(&mk_headers(&[("b3", "1")])), None);
    }
}
