//! The `compression` section: response bodies compressed on the way out, in the
//! encoding the client weighs highest among those the section offers.
//!
//! The encoders come from `async-compression`, reading the body through an
//! `AsyncBufRead`. They flush whenever the body has nothing more to give for the
//! moment, so a streamed response (Server-Sent Events, a long poll) reaches the client
//! as each piece arrives instead of waiting for the encoder's buffer to fill.

use crate::{
    config::{CompressionPolicy, ContentCoding},
    metrics::Metrics,
    policy::access::BuildErrors,
    proxy::ProxyBody,
};
use async_compression::{
    tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder},
    Level,
};
use futures_util::TryStreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use std::{io, pin::Pin};
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

/// Below about a kilobyte the encoder's framing eats most of the gain, and the
/// response fits in one packet either way.
const DEFAULT_MIN_BYTES: u64 = 1024;

const DEFAULT_ENCODINGS: [ContentCoding; 3] = [
    ContentCoding::Zstd,
    ContentCoding::Brotli,
    ContentCoding::Gzip,
];

/// Text-like types that compress well. Images, audio, video, fonts in woff2 and
/// archives are compressed already and only cost CPU to try again.
const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "image/svg+xml",
    "application/wasm",
];

/// Levels for compressing every response as it passes, where speed matters as much as
/// size: zlib's and zstd's own defaults, and brotli at 4, about as fast as gzip at 6
/// with smaller output (its top levels are meant for assets compressed once).
const GZIP_LEVEL: i32 = 6;
const BROTLI_QUALITY: i32 = 4;
const ZSTD_LEVEL: i32 = 3;

/// Bytes read from the encoder at a time: large enough that a big body goes out in
/// few frames, small next to the buffers hyper keeps per connection.
const OUTPUT_CHUNK: usize = 16 * 1024;

/// A `compression` section, built.
#[derive(Debug)]
pub struct Compression {
    pub spec: CompressionPolicy,
    /// Preferred first.
    encodings: Vec<ContentCoding>,
    min_bytes: u64,
    types: Vec<MediaRange>,
}

/// A pattern of `contentTypes`.
#[derive(Debug, PartialEq)]
enum MediaRange {
    /// `application/json`
    Exact(String),
    /// `text/*`
    AnySubtype(String),
    /// `application/*+json`: the type and the subtype's suffix, `+` included.
    Suffix(String, String),
}

/// What one request asked for, decided before forwarding.
pub struct Plan {
    section: std::sync::Arc<Compression>,
    /// The encoding to use, or none when the client accepts none of those offered.
    coding: Option<ContentCoding>,
    head: bool,
}

// === impl Compression ===

impl Compression {
    pub fn build(spec: &CompressionPolicy) -> Result<Compression, BuildErrors> {
        let mut errors = BuildErrors::new();
        let mut encodings = Vec::new();
        for (i, coding) in spec.encodings.iter().enumerate() {
            if encodings.contains(coding) {
                errors.push((
                    format!("encodings[{i}]"),
                    format!("{coding:?} is listed twice"),
                ));
            }
            encodings.push(*coding);
        }
        if encodings.is_empty() {
            encodings = DEFAULT_ENCODINGS.to_vec();
        }
        let mut types = Vec::new();
        if spec.content_types.is_empty() {
            types.extend(
                DEFAULT_CONTENT_TYPES
                    .iter()
                    .filter_map(|t| MediaRange::parse(t)),
            );
        }
        for (i, text) in spec.content_types.iter().enumerate() {
            match MediaRange::parse(text) {
                Some(range) => types.push(range),
                None => errors.push((
                    format!("contentTypes[{i}]"),
                    format!(
                        "{text:?} is not a media type such as text/html, text/* or \
                         application/*+json"
                    ),
                )),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Compression {
            spec: spec.clone(),
            encodings,
            min_bytes: spec.min_bytes.unwrap_or(DEFAULT_MIN_BYTES),
            types,
        })
    }

    /// Reads the request's `Accept-Encoding` before the request moves on.
    pub(super) fn plan(
        section: &std::sync::Arc<Compression>,
        method: &Method,
        headers: &HeaderMap,
    ) -> Plan {
        Plan {
            section: section.clone(),
            coding: section.negotiate(headers),
            head: method == Method::HEAD,
        }
    }

    /// The offered encoding with the highest q-value in `Accept-Encoding`; on a tie,
    /// the one listed first in the section. `q=0` refuses an encoding, `*` stands for
    /// every encoding the client does not name, and no header means none.
    pub fn negotiate(&self, headers: &HeaderMap) -> Option<ContentCoding> {
        let accepted = AcceptEncoding::parse(headers);
        let mut best: Option<(ContentCoding, u16)> = None;
        for coding in &self.encodings {
            let q = accepted.q(*coding);
            if q > 0 && best.is_none_or(|(_, b)| q > b) {
                best = Some((*coding, q));
            }
        }
        best.map(|(c, _)| c)
    }

    /// Whether the response is one this section would compress for a client that
    /// accepts it: the answer may then differ by `Accept-Encoding`.
    fn eligible(&self, status: StatusCode, headers: &HeaderMap, body_length: Option<u64>) -> bool {
        // 206 bodies are ranges of the identity body; 204 and 304 have none.
        if !status.is_success() && !status.is_client_error() && !status.is_server_error()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            return false;
        }
        let encoded = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded || headers.contains_key(header::CONTENT_RANGE) {
            return false;
        }
        let no_transform = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|d| d.trim().eq_ignore_ascii_case("no-transform"));
        if no_transform {
            return false;
        }
        let Some(media) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
        else {
            return false;
        };
        if !self.types.iter().any(|t| t.matches(&media)) {
            return false;
        }
        // An unknown length (a stream) is compressed: it may well be long. A body the
        // gateway built itself knows its length without the field.
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .or(body_length);
        length.is_none_or(|n| n >= self.min_bytes)
    }
}

// === impl Plan ===

impl Plan {
    /// Compresses `resp` when the section, the request and the response all allow it.
    pub(super) fn apply(
        self,
        mut resp: Response<ProxyBody>,
        metrics: &Metrics,
        route: &str,
    ) -> Response<ProxyBody> {
        // HEAD answers have no body to measure; their fields speak for the GET.
        let body_length = (!self.head)
            .then(|| resp.body().size_hint().exact())
            .flatten();
        if !self
            .section
            .eligible(resp.status(), resp.headers(), body_length)
        {
            return resp;
        }
        add_vary_accept_encoding(resp.headers_mut());
        let Some(coding) = self.coding else {
            return resp;
        };
        // HEAD gets the fields its GET would, so that a client or cache probing with
        // it learns the same encoding, length and validator.
        if !self.head && resp.body().is_end_stream() {
            return resp;
        }
        let headers = resp.headers_mut();
        headers.remove(header::CONTENT_LENGTH);
        // Byte ranges would now address the encoded body, which is not stable.
        headers.remove(header::ACCEPT_RANGES);
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(token(coding)),
        );
        weaken_etag(headers);
        if self.head {
            return resp;
        }
        metrics
            .compressed_responses
            .with_label_values(&[route, token(coding)])
            .inc();
        resp.map(|body| encode(body, coding))
    }
}

/// The encoded body: the original's data through the encoder, flushed whenever the
/// original pauses. Trailers are dropped: they would describe the identity body.
fn encode(body: ProxyBody, coding: ContentCoding) -> ProxyBody {
    let data = body
        .into_data_stream()
        .map_err(|e| io::Error::other(e.to_string()));
    let reader = StreamReader::new(data);
    let encoder: Pin<Box<dyn AsyncRead + Send + Sync>> = match coding {
        ContentCoding::Gzip => Box::pin(GzipEncoder::with_quality(
            reader,
            Level::Precise(GZIP_LEVEL),
        )),
        ContentCoding::Brotli => Box::pin(BrotliEncoder::with_quality(
            reader,
            Level::Precise(BROTLI_QUALITY),
        )),
        ContentCoding::Zstd => Box::pin(ZstdEncoder::with_quality(
            reader,
            Level::Precise(ZSTD_LEVEL),
        )),
    };
    let frames = ReaderStream::with_capacity(encoder, OUTPUT_CHUNK)
        .map_ok(Frame::data)
        .map_err(|e| -> super::cache::BoxError { Box::new(e) });
    StreamBody::new(frames).boxed()
}

/// The `Content-Encoding` token.
fn token(coding: ContentCoding) -> &'static str {
    match coding {
        ContentCoding::Gzip => "gzip",
        ContentCoding::Brotli => "br",
        ContentCoding::Zstd => "zstd",
    }
}

/// Adds `Accept-Encoding` to `Vary` unless it is there already (or `*` covers it).
fn add_vary_accept_encoding(headers: &mut HeaderMap) {
    let covered = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|name| name == "*" || name.eq_ignore_ascii_case("accept-encoding"));
    if !covered {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// A strong `ETag` promises the very bytes: the encoded body gets a weak one.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"W/") {
        return;
    }
    let mut weak = b"W/".to_vec();
    weak.extend_from_slice(etag.as_bytes());
    match HeaderValue::from_bytes(&weak) {
        Ok(v) => headers.insert(header::ETAG, v),
        Err(_) => headers.remove(header::ETAG),
    };
}

// === impl MediaRange ===

impl MediaRange {
    fn parse(text: &str) -> Option<MediaRange> {
        let text = text.trim().to_ascii_lowercase();
        let (kind, sub) = text.split_once('/')?;
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
        };
        if !token(kind) {
            return None;
        }
        if sub == "*" {
            return Some(MediaRange::AnySubtype(kind.into()));
        }
        if let Some(suffix) = sub.strip_prefix("*+") {
            return token(suffix).then(|| MediaRange::Suffix(kind.into(), format!("+{suffix}")));
        }
        token(sub).then(|| MediaRange::Exact(text.clone()))
    }

    /// `media` is lower-case, without parameters.
    fn matches(&self, media: &str) -> bool {
        match self {
            MediaRange::Exact(t) => media == t,
            MediaRange::AnySubtype(kind) => media
                .strip_prefix(kind.as_str())
                .is_some_and(|rest| rest.starts_with('/')),
            MediaRange::Suffix(kind, suffix) => media
                .strip_prefix(kind.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|sub| sub.ends_with(suffix.as_str())),
        }
    }
}

/// The q-values of an `Accept-Encoding`, in thousandths.
#[derive(Debug, Default)]
struct AcceptEncoding {
    named: Vec<(String, u16)>,
    any: Option<u16>,
}

// === impl AcceptEncoding ===

impl AcceptEncoding {
    fn parse(headers: &HeaderMap) -> AcceptEncoding {
        let mut out = AcceptEncoding::default();
        let items = headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for item in items {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let mut q = Some(1000);
            for param in parts {
                if let Some((k, v)) = param.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = parse_q(v.trim());
                    }
                }
            }
            // An item with a malformed weight is ignored, as if it were not sent.
            let Some(q) = q else { continue };
            if name == "*" {
                out.any = Some(q);
            } else {
                out.named.push((name, q));
            }
        }
        out
    }

    fn q(&self, coding: ContentCoding) -> u16 {
        let names: &[&str] = match coding {
            ContentCoding::Gzip => &["gzip", "x-gzip"],
            ContentCoding::Brotli => &["br"],
            ContentCoding::Zstd => &["zstd"],
        };
        let named = self
            .named
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .map(|(_, q)| *q)
            .max();
        named.or(self.any).unwrap_or(0)
    }
}

/// A weight as RFC 9110 writes it: `0`, `1`, or either with up to three decimals, in
/// thousandths.
fn parse_q(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_section(encodings: &[ContentCoding]) -> Compression {
        Compression::build(&CompressionPolicy {
            encodings: encodings.to_vec(),
            ..Default::default()
        })
        .unwrap()
    }

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn negotiation_follows_q_values_then_the_section_order() {
        let all = mk_section(&[]);
        assert_eq!(all.negotiate(&HeaderMap::new()), None);
        assert_eq!(all.negotiate(&accept("gzip")), Some(ContentCoding::Gzip));
        assert_eq!(
            all.negotiate(&accept("gzip, br, zstd")),
            Some(ContentCoding::Zstd)
        );
        assert_eq!(
            all.negotiate(&accept("gzip;q=1, br;q=0.9, zstd;q=0.5")),
            Some(ContentCoding::Gzip)
        );
        assert_eq!(
            all.negotiate(&accept("zstd;q=0, br;Q=0.001")),
            Some(ContentCoding::Brotli)
        );
        assert_eq!(all.negotiate(&accept("*;q=0")), None);
        assert_eq!(
            all.negotiate(&accept("*, zstd;q=0")),
            Some(ContentCoding::Brotli)
        );
        assert_eq!(all.negotiate(&accept("identity")), None);
        assert_eq!(
            all.negotiate(&accept("gzip;q=2, br;q=0.5")),
            Some(ContentCoding::Brotli)
        );
        let gzip_first = mk_section(&[ContentCoding::Gzip, ContentCoding::Brotli]);
        assert_eq!(
            gzip_first.negotiate(&accept("br, gzip, zstd")),
            Some(ContentCoding::Gzip)
        );
        assert_eq!(gzip_first.negotiate(&accept("zstd")), None);
    }

    #[test]
    fn q_values_parse_as_rfc_9110_writes_them() {
        assert_eq!(parse_q("0"), Some(0));
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("0.125"), Some(125));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(parse_q("abc"), None);
    }

    #[test]
    fn media_ranges_match_types_subtypes_and_suffixes() {
        let s = mk_section(&[]);
        let ok = |t: &str| s.types.iter().any(|r| r.matches(t));
        assert!(ok("text/html"));
        assert!(ok("text/event-stream"));
        assert!(ok("application/json"));
        assert!(ok("application/problem+json"));
        assert!(ok("image/svg+xml"));
        assert!(!ok("image/png"));
        assert!(!ok("application/zip"));
        assert!(!ok("application/gzip"));
        assert!(!ok("textual/html"));
        assert!(!ok("application/jsonx"));
    }

    #[test]
    fn bad_content_types_and_repeated_encodings_name_their_field() {
        let err = Compression::build(&CompressionPolicy {
            encodings: vec![ContentCoding::Gzip, ContentCoding::Gzip],
            content_types: vec!["text/html".into(), "html".into(), "a/*+".into()],
            ..Default::default()
        })
        .unwrap_err();
        let fields: Vec<&str> = err.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["encodings[1]", "contentTypes[1]", "contentTypes[2]"]
        );
    }

    #[test]
    fn a_strong_etag_becomes_weak() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        weaken_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"v1\"");
        weaken_etag(&mut h);
        assert_eq!(h[header::ETAG], "W/\"v1\"");
    }
}
