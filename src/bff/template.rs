//! Templates of BFF calls: a path, query or header value with `{...}` placeholders filled
//! from the request being served.
//!
//! `{id}` is a path parameter of the endpoint, `{query.NAME}` the first value of a query
//! parameter, `{header.NAME}` a request header, `{claims.NAME}` a claim of the token a
//! Policy verified, and `{parts.PART.FIELD...}` a member of an earlier part's answer.
//! Values placed in a path or query are percent-encoded, so a value can never add a
//! segment or a parameter; a value that would make a `.` or `..` segment is refused,
//! since the path is canonicalized afterwards and the segment would climb.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use std::collections::HashMap;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Var(Source),
}

/// Where a placeholder's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Param(String),
    Query(String),
    Header(String),
    Claim(String),
    /// A part's name, then the path of the member in its answer.
    Part(String, Vec<String>),
}

/// How filled values are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// Percent-encoded: everything but unreserved characters.
    Component,
    /// As is, for header values.
    Raw,
}

/// The request a template is filled from.
#[derive(Default)]
pub struct Inputs<'a> {
    pub params: &'a [(String, String)],
    pub query: Option<&'a str>,
    pub headers: Option<&'a http::HeaderMap>,
    pub claims: Option<&'a serde_json::Map<String, Value>>,
    pub parts: Option<&'a HashMap<String, Value>>,
}

/// Why a template could not be filled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    #[error("{{{0}}} has no value in this request")]
    Missing(String),
    #[error("a value of this request would make a '.' or '..' path segment")]
    DotSegment,
}

// === impl Template ===

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(format!(
                    "unmatched '}}' at byte {}",
                    text.len() - rest.len() + open
                ));
            }
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| "a '{' is never closed".to_string())?;
            pieces.push(Piece::Var(Source::parse(&after[..close])?));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        Ok(Template { pieces })
    }

    /// Every placeholder, in order.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(s) => Some(s),
            Piece::Literal(_) => None,
        })
    }

    /// The literal text, placeholders left out: what must already be valid on its own.
    pub fn literal_text(&self) -> String {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(l) => l.as_str(),
                Piece::Var(_) => "x",
            })
            .collect()
    }

    pub fn fill(&self, inputs: &Inputs<'_>, escape: Escape) -> Result<String, FillError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::Var(source) => {
                    // An empty path value would leave `//`, which canonicalizing folds:
                    // `/users/{id}/orders` would call `/users/orders`.
                    let in_path = escape == Escape::Component && !out.contains(['?', '#']);
                    let value = source
                        .value(inputs)
                        .filter(|v| !(in_path && v.is_empty()))
                        .ok_or_else(|| FillError::Missing(source.to_string()))?;
                    match escape {
                        Escape::Component => out.extend(utf8_percent_encode(&value, COMPONENT)),
                        Escape::Raw => out.push_str(&value),
                    }
                }
            }
        }
        if escape == Escape::Component && dot_segments(&out) > dot_segments(&self.literal_text()) {
            return Err(FillError::DotSegment);
        }
        Ok(out)
    }
}

/// How many `.` and `..` segments the path part of `target` holds.
fn dot_segments(target: &str) -> usize {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    path.split('/').filter(|s| matches!(*s, "." | "..")).count()
}

// === impl Source ===

impl Source {
    fn parse(inner: &str) -> Result<Source, String> {
        let bad = || {
            format!("{{{inner}}} is not a placeholder; write {{name}}, {{query.NAME}}, {{header.NAME}}, {{claims.NAME}} or {{parts.PART.FIELD}}")
        };
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
        };
        let Some((scope, name)) = inner.split_once('.') else {
            return if valid_name(inner) {
                Ok(Source::Param(inner.to_string()))
            } else {
                Err(bad())
            };
        };
        match scope {
            "parts" => {
                let mut path = name.split('.').map(str::to_string);
                let part = path.next().filter(|p| valid_name(p)).ok_or_else(bad)?;
                let fields: Vec<String> = path.collect();
                if fields.is_empty() || !fields.iter().all(|f| valid_name(f)) {
                    return Err(bad());
                }
                Ok(Source::Part(part, fields))
            }
            _ if !valid_name(name) => Err(bad()),
            "query" => Ok(Source::Query(name.to_string())),
            "header" => Ok(Source::Header(name.to_ascii_lowercase())),
            "claims" => Ok(Source::Claim(name.to_string())),
            _ => Err(bad()),
        }
    }

    fn value(&self, inputs: &Inputs<'_>) -> Option<String> {
        match self {
            Source::Param(name) => inputs
                .params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
            Source::Query(name) => form_urlencoded::parse(inputs.query?.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned()),
            Source::Header(name) => inputs
                .headers?
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            Source::Claim(name) => scalar(inputs.claims?.get(name)?),
            Source::Part(part, fields) => {
                let mut v = inputs.parts?.get(part)?;
                for f in fields {
                    v = v.get(f)?;
                }
                scalar(v)
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Param(n) => write!(f, "{n}"),
            Source::Query(n) => write!(f, "query.{n}"),
            Source::Header(n) => write!(f, "header.{n}"),
            Source::Claim(n) => write!(f, "claims.{n}"),
            Source::Part(p, fields) => write!(f, "parts.{p}.{}", fields.join(".")),
        }
    }
}

/// Strings as they are, numbers and booleans as written; objects, arrays and null have no
/// single value to put in a URL.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Everything but the unreserved characters of RFC 3986 is percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(t: &str, inputs: &Inputs<'_>) -> Result<String, FillError> {
        Template::parse(t).unwrap().fill(inputs, Escape::Component)
    }

    #[test]
    fn fills_every_source() {
        let params = [("id".to_string(), "42".to_string())];
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        let claims: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"sub":"alice","level":3}"#).unwrap();
        let parts = HashMap::from([(
            "user".to_string(),
            serde_json::json!({"profile": {"id": 7}}),
        )]);
        let inputs = Inputs {
            params: &params,
            query: Some("page=2&q=a+b"),
            headers: Some(&headers),
            claims: Some(&claims),
            parts: Some(&parts),
        };
        assert_eq!(
            fill(
                "/u/{id}/{claims.sub}/{claims.level}?t={header.X-Tenant}&p={query.page}&q={query.q}&o={parts.user.profile.id}",
                &inputs
            )
            .unwrap(),
            "/u/42/alice/3?t=acme&p=2&q=a%20b&o=7"
        );
    }

    #[test]
    fn values_cannot_add_segments_or_parameters() {
        let params = [("id".to_string(), "../admin?x=1&y=2#".to_string())];
        let inputs = Inputs {
            params: &params,
            ..Inputs::default()
        };
        assert_eq!(
            fill("/users/{id}", &inputs).unwrap(),
            "/users/..%2Fadmin%3Fx%3D1%26y%3D2%23"
        );
    }

    #[test]
    fn values_cannot_make_dot_segments() {
        for (value, template) in [
            ("..", "/users/{query.id}"),
            (".", "/users/{query.id}/x"),
            (".", "/a/{query.id}{query.id}"),
        ] {
            let query = format!("id={value}");
            let inputs = Inputs {
                query: Some(&query),
                ..Inputs::default()
            };
            assert_eq!(
                fill(template, &inputs),
                Err(FillError::DotSegment),
                "{template} with {value}"
            );
        }
        let inputs = Inputs {
            query: Some("id=..x"),
            ..Inputs::default()
        };
        assert_eq!(fill("/users/{query.id}", &inputs).unwrap(), "/users/..x");
        // Placed in the query string, a dot is only data.
        let inputs = Inputs {
            query: Some("id=.."),
            ..Inputs::default()
        };
        assert_eq!(fill("/u?id={query.id}", &inputs).unwrap(), "/u?id=..");
    }

    #[test]
    fn an_empty_value_is_missing_in_a_path_and_kept_in_a_query() {
        let inputs = Inputs {
            query: Some("uid=&page="),
            ..Inputs::default()
        };
        assert_eq!(
            fill("/users/{query.uid}/orders", &inputs),
            Err(FillError::Missing("query.uid".into()))
        );
        assert_eq!(
            fill("/orders?owner=x&page={query.page}", &inputs).unwrap(),
            "/orders?owner=x&page="
        );
    }

    #[test]
    fn missing_values_name_the_placeholder() {
        let inputs = Inputs::default();
        assert_eq!(
            fill("/x/{query.page}", &inputs).unwrap_err().to_string(),
            "{query.page} has no value in this request"
        );
        let parts = HashMap::from([("user".to_string(), serde_json::json!({"tags": [1]}))]);
        let inputs = Inputs {
            parts: Some(&parts),
            ..Inputs::default()
        };
        assert!(
            fill("/{parts.user.tags}", &inputs).is_err(),
            "a list is no value"
        );
    }

    #[test]
    fn raw_escape_keeps_header_values() {
        let claims: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"sub":"a b/c"}"#).unwrap();
        let inputs = Inputs {
            claims: Some(&claims),
            ..Inputs::default()
        };
        let t = Template::parse("user={claims.sub}").unwrap();
        assert_eq!(t.fill(&inputs, Escape::Raw).unwrap(), "user=a b/c");
    }

    #[test]
    fn bad_templates_are_refused() {
        for t in [
            "/{",
            "/}",
            "/{}",
            "/{a b}",
            "/{nope.x}",
            "/{parts.user}",
            "/{query.}",
        ] {
            assert!(Template::parse(t).is_err(), "{t} should be refused");
        }
        let t = Template::parse("/a/{id}/{parts.u.x.y}").unwrap();
        let sources: Vec<String> = t.sources().map(ToString::to_string).collect();
        assert_eq!(sources, ["id", "parts.u.x.y"]);
    }
}
