//! The Policy sections that need no outside service: IP access, CORS and API keys, and
//! the client address they judge.

use crate::config::{ApiKeyPolicy, CorsPolicy, IpAccessPolicy};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

/// Problems found building a section: (field under the section, message).
pub type BuildErrors = Vec<(String, String)>;

/// The client's address: the peer, or, when the peer is a trusted proxy, the first
/// address from the right of `X-Forwarded-For` that is not one. Never a value the client
/// alone controls: the rightmost untrusted entry was written by a trusted hop.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    // Entries from the last header line's last item backwards.
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .flat_map(|v| {
            let items: Vec<&str> = v.to_str().unwrap_or("").split(',').collect();
            items.into_iter().rev()
        });
    for entry in entries {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            // A hop wrote something unreadable; the last trusted hop is all we know.
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// Parses CIDRs (or bare addresses) with field paths for errors.
pub fn parse_cidrs(list: &[String], field: &str, errors: &mut BuildErrors) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, text) in list.iter().enumerate() {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => out.push(net.trunc()),
            Err(_) => errors.push((
                format!("{field}[{i}]"),
                format!("{text:?} is not an address or CIDR such as 10.0.0.0/8"),
            )),
        }
    }
    out
}

/// Allow and deny lists of one Policy.
#[derive(Debug)]
pub struct IpAccess {
    pub spec: IpAccessPolicy,
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpAccess {
    pub fn build(spec: &IpAccessPolicy) -> Result<IpAccess, BuildErrors> {
        let mut errors = Vec::new();
        let allow = parse_cidrs(&spec.allow, "allow", &mut errors);
        let deny = parse_cidrs(&spec.deny, "deny", &mut errors);
        if spec.allow.is_empty() && spec.deny.is_empty() {
            errors.push((String::new(), "set allow, deny or both".into()));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(IpAccess {
            spec: spec.clone(),
            allow,
            deny,
        })
    }

    /// Deny wins; with an allow list, only what it lists passes.
    pub fn allows(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket is judged as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }
}

/// CORS for one Policy.
#[derive(Debug)]
pub struct Cors {
    pub spec: CorsPolicy,
    any_origin: bool,
    origins: Vec<String>,
    methods: Vec<Method>,
    methods_value: HeaderValue,
    /// Lower-case.
    headers: Vec<String>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

/// What a preflight request gets.
pub enum Preflight {
    /// Not a preflight: route the request.
    No,
    /// Answer 204 with these headers.
    Allowed(HeaderMap),
    /// Answer 403: the origin, method or a header is not allowed.
    Refused(&'static str),
}

impl Cors {
    pub fn build(spec: &CorsPolicy) -> Result<Cors, BuildErrors> {
        let mut errors = Vec::new();
        let any_origin = spec.allow_origins.iter().any(|o| o == "*");
        let mut origins = Vec::new();
        for (i, o) in spec.allow_origins.iter().enumerate() {
            if o == "*" {
                continue;
            }
            match http::Uri::try_from(o.as_str()) {
                Ok(u)
                    if u.scheme().is_some()
                        && u.host().is_some()
                        && u.path() == "/"
                        && !o.ends_with('/') =>
                {
                    origins.push(o.to_ascii_lowercase())
                }
                _ => errors.push((
                    format!("allowOrigins[{i}]"),
                    format!("{o:?} is not an origin such as https://app.example.com, or *"),
                )),
            }
        }
        if any_origin && spec.allow_credentials {
            errors.push((
                "allowCredentials".into(),
                "cannot be true with the origin *; list the origins".into(),
            ));
        }
        let method_names: Vec<String> = if spec.allow_methods.is_empty() {
            vec!["GET".into(), "HEAD".into(), "POST".into()]
        } else {
            spec.allow_methods.clone()
        };
        let mut methods = Vec::new();
        for (i, m) in method_names.iter().enumerate() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => errors.push((
                    format!("allowMethods[{i}]"),
                    format!("{m:?} is not a method"),
                )),
            }
        }
        let mut headers = Vec::new();
        for (i, h) in spec.allow_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => headers.push(n.as_str().to_string()),
                Err(_) => errors.push((
                    format!("allowHeaders[{i}]"),
                    format!("{h:?} is not a header name"),
                )),
            }
        }
        for (i, h) in spec.expose_headers.iter().enumerate() {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                errors.push((
                    format!("exposeHeaders[{i}]"),
                    format!("{h:?} is not a header name"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let join = |items: Vec<String>| HeaderValue::from_str(&items.join(", ")).ok();
        Ok(Cors {
            spec: spec.clone(),
            any_origin,
            origins,
            methods_value: join(methods.iter().map(|m| m.to_string()).collect())
                .expect("methods are tokens"),
            methods,
            headers,
            expose: (!spec.expose_headers.is_empty())
                .then(|| join(spec.expose_headers.clone()))
                .flatten(),
            max_age: spec.max_age.map(|d| HeaderValue::from(d.0.as_secs())),
        })
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || origin
                .to_str()
                .is_ok_and(|o| self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)))
    }

    /// The value of `Access-Control-Allow-Origin` for an allowed origin.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.spec.allow_credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Answers a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) without asking the backend.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Preflight {
        let (Some(origin), Some(wanted)) = (
            headers.get(header::ORIGIN),
            headers.get(header::ACCESS_CONTROL_REQUEST_METHOD),
        ) else {
            return Preflight::No;
        };
        if method != Method::OPTIONS {
            return Preflight::No;
        }
        if !self.origin_allowed(origin) {
            return Preflight::Refused("origin not allowed");
        }
        let method_ok =
            Method::from_bytes(wanted.as_bytes()).is_ok_and(|m| self.methods.contains(&m));
        if !method_ok {
            return Preflight::Refused("method not allowed");
        }
        let requested: Vec<String> = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if requested.iter().any(|h| !self.headers.contains(h)) {
            return Preflight::Refused("header not allowed");
        }
        let mut out = HeaderMap::new();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.methods_value.clone(),
        );
        if !requested.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&requested.join(", ")) {
                out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
        if self.spec.allow_credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(age) = &self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        out.insert(header::VARY, HeaderValue::from_static("Origin"));
        Preflight::Allowed(out)
    }

    /// Labels a response to a request from an allowed origin. Other origins get no CORS
    /// headers, so the browser keeps the response from the page.
    pub fn label(&self, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
        if !self.any_origin || self.spec.allow_credentials {
            resp.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        let Some(origin) = origin.filter(|o| self.origin_allowed(o)) else {
            return;
        };
        resp.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        if self.spec.allow_credentials {
            resp.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            resp.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// API keys by consumer, compared in constant time.
#[derive(Debug)]
pub struct ApiKeys {
    pub spec: ApiKeyPolicy,
    /// The bytes of `keys.yaml` this was built from, to skip a rebuild when unchanged.
    pub source: Arc<[u8]>,
    header: HeaderName,
    consumer_header: HeaderName,
    /// SHA-256 of each key, with its consumer: comparing digests of equal length hides
    /// the keys' lengths as well as their bytes.
    keys: Vec<([u8; 32], Arc<str>)>,
}

impl ApiKeys {
    pub fn build(
        spec: &ApiKeyPolicy,
        keys_yaml: Option<&Arc<[u8]>>,
    ) -> Result<ApiKeys, BuildErrors> {
        let mut errors = Vec::new();
        let name = |field: &str,
                    value: Option<&String>,
                    default: &'static str,
                    errors: &mut BuildErrors| {
            match value {
                None => HeaderName::from_static(default),
                Some(v) => HeaderName::from_bytes(v.as_bytes()).unwrap_or_else(|_| {
                    errors.push((field.into(), format!("{v:?} is not a header name")));
                    HeaderName::from_static(default)
                }),
            }
        };
        let header = name("header", spec.header.as_ref(), "x-api-key", &mut errors);
        let consumer_header = name(
            "consumerHeader",
            spec.consumer_header.as_ref(),
            "x-consumer",
            &mut errors,
        );
        let Some(source) = keys_yaml else {
            errors.push(("keysRef".into(), "the Secret has no keys.yaml".into()));
            return Err(errors);
        };
        let parsed: Result<BTreeMap<String, KeyList>, _> = serde_norway::from_slice(source);
        let mut keys = Vec::new();
        match parsed {
            Err(e) => errors.push((
                "keysRef".into(),
                format!("keys.yaml is not a map of consumer names to keys: {e}"),
            )),
            Ok(map) if map.is_empty() => {
                errors.push(("keysRef".into(), "keys.yaml lists no key".into()))
            }
            Ok(map) => {
                for (consumer, list) in map {
                    let consumer: Arc<str> = consumer.into();
                    for key in list.into_vec() {
                        if key.len() < 16 {
                            errors.push((
                                "keysRef".into(),
                                format!(
                                    "a key of consumer {consumer} is shorter than 16 characters"
                                ),
                            ));
                            continue;
                        }
                        keys.push((digest(key.as_bytes()), consumer.clone()));
                    }
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ApiKeys {
            spec: spec.clone(),
            source: source.clone(),
            header,
            consumer_header,
            keys,
        })
    }

    /// The consumer whose key the request carries. Removes the key from the request, so
    /// backends never see it, and sets the consumer header in place of any client copy.
    pub fn authenticate(&self, headers: &mut HeaderMap) -> Result<Arc<str>, &'static str> {
        crate::proxy::headers::remove_every_spelling(headers, &self.consumer_header);
        let presented = headers.remove(&self.header).ok_or("missing API key")?;
        let presented = digest(presented.as_bytes());
        let mut found: Option<&Arc<str>> = None;
        // Every key is compared, so the time taken does not tell which one matched.
        for (key, consumer) in &self.keys {
            if bool::from(subtle::ConstantTimeEq::ct_eq(&key[..], &presented[..])) {
                found = Some(consumer);
            }
        }
        let consumer = found.ok_or("invalid API key")?;
        if let Ok(v) = HeaderValue::from_str(consumer) {
            headers.insert(self.consumer_header.clone(), v);
        }
        Ok(consumer.clone())
    }

    pub fn header(&self) -> &HeaderName {
        &self.header
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum KeyList {
    One(String),
    Many(Vec<String>),
}

impl KeyList {
    fn into_vec(self) -> Vec<String> {
        match self {
            KeyList::One(k) => vec![k],
            KeyList::Many(v) => v,
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn client_address_is_the_first_untrusted_hop_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        // The client wrote 1.1.1.1 itself; 203.0.113.7 is what the trusted proxy saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.9")]);
        assert_eq!(
            client_address(peer, &h, &trusted),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // Split over several lines, the last line is the nearest.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        assert_eq!(
            client_address(peer, &h, &trusted),
            "198.51.100.1".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer is the client, whatever it claims.
        let outsider: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(client_address(outsider, &h, &trusted), outsider);
        // Garbage stops the walk at the last trusted hop.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, nonsense, 10.0.0.9")]);
        assert_eq!(
            client_address(peer, &h, &trusted),
            "10.0.0.9".parse::<IpAddr>().unwrap()
        );
        // No trusted proxies: the peer, always.
        assert_eq!(client_address(peer, &h, &[]), peer);
    }

    #[test]
    fn deny_wins_and_an_allow_list_closes_the_rest() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let access = IpAccess::build(&IpAccessPolicy {
            allow: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
            deny: vec!["10.9.0.0/16".into()],
        })
        .unwrap();
        assert!(access.allows(ip("10.1.2.3")));
        assert!(access.allows(ip("::ffff:10.1.2.3")));
        assert!(!access.allows(ip("10.9.1.1")));
        assert!(!access.allows(ip("192.0.2.1")));
        assert!(access.allows(ip("2001:db8::1")));
        let errors = IpAccess::build(&IpAccessPolicy {
            allow: vec!["10.0.0.0/33".into()],
            deny: vec![],
        })
        .unwrap_err();
        assert_eq!(errors[0].0, "allow[0]");
    }

    #[test]
    fn api_keys_name_their_consumer_and_leave_no_trace_upstream() {
        let yaml: Arc<[u8]> = Arc::from(&b"mobile: [k-mobile-0123456789ab, k-mobile-rotated-0123]\npartner: k-partner-0123456789\n"[..]);
        let keys = ApiKeys::build(
            &ApiKeyPolicy {
                keys_ref: crate::config::SecretRef {
                    name: "keys".into(),
                },
                header: None,
                consumer_header: None,
            },
            Some(&yaml),
        )
        .unwrap();
        let mut h = headers(&[
            ("x-api-key", "k-mobile-rotated-0123"),
            ("x-consumer", "admin"),
            ("x_consumer", "admin"),
        ]);
        assert_eq!(&*keys.authenticate(&mut h).unwrap(), "mobile");
        assert_eq!(h.get("x-consumer").unwrap(), "mobile");
        assert!(h.get("x_consumer").is_none());
        assert!(h.get("x-api-key").is_none());
        let mut h = headers(&[("x-api-key", "k-mobile-0123456789a")]);
        assert_eq!(keys.authenticate(&mut h), Err("invalid API key"));
        let mut h = headers(&[("x-consumer", "partner")]);
        assert_eq!(keys.authenticate(&mut h), Err("missing API key"));
        assert!(h.get("x-consumer").is_none());

        let short: Arc<[u8]> = Arc::from(&b"a: short\n"[..]);
        let errors = ApiKeys::build(&keys.spec, Some(&short)).unwrap_err();
        assert!(errors[0].1.contains("shorter than 16"), "{errors:?}");
    }

    #[test]
    fn cors_preflights_and_labels() {
        let cors = Cors::build(&CorsPolicy {
            allow_origins: vec!["https://app.example.com".into()],
            allow_methods: vec!["GET".into(), "PUT".into()],
            allow_headers: vec!["Authorization".into(), "Content-Type".into()],
            expose_headers: vec!["X-Total".into()],
            allow_credentials: true,
            max_age: Some(crate::config::Duration(std::time::Duration::from_secs(600))),
        })
        .unwrap();
        let pre = headers(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            (
                "access-control-request-headers",
                "content-type, authorization",
            ),
        ]);
        let Preflight::Allowed(out) = cors.preflight(&Method::OPTIONS, &pre) else {
            panic!("refused");
        };
        assert_eq!(
            out["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(out["access-control-allow-methods"], "GET, PUT");
        assert_eq!(
            out["access-control-allow-headers"],
            "content-type, authorization"
        );
        assert_eq!(out["access-control-allow-credentials"], "true");
        assert_eq!(out["access-control-max-age"], "600");
        let evil = headers(&[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "PUT"),
        ]);
        assert!(matches!(
            cors.preflight(&Method::OPTIONS, &evil),
            Preflight::Refused("origin not allowed")
        ));
        let delete = headers(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "DELETE"),
        ]);
        assert!(matches!(
            cors.preflight(&Method::OPTIONS, &delete),
            Preflight::Refused(_)
        ));
        assert!(matches!(cors.preflight(&Method::GET, &pre), Preflight::No));

        let mut resp = HeaderMap::new();
        cors.label(
            Some(&HeaderValue::from_static("https://app.example.com")),
            &mut resp,
        );
        assert_eq!(
            resp["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(resp["access-control-expose-headers"], "X-Total");
        assert_eq!(resp["vary"], "Origin");
        let mut resp = HeaderMap::new();
        cors.label(
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut resp,
        );
        assert!(resp.get("access-control-allow-origin").is_none());

        let errors = Cors::build(&CorsPolicy {
            allow_origins: vec!["*".into(), "app.example.com".into()],
            allow_credentials: true,
            ..CorsPolicy::default()
        })
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(fields, ["allowOrigins[1]", "allowCredentials"]);
    }
}
