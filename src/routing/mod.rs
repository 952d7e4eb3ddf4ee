//! The routing table: from a request's host, path, method, headers and query to the rule
//! that serves it.
//!
//! Precedence, first difference wins:
//!
//! 1. host: an exact host, then the longest wildcard suffix, then Routes without hosts;
//!    a request that matches no rule of a more specific host falls through to the next;
//! 2. path: `Exact`, then `RegularExpression` (longer pattern first), then `PathPrefix`
//!    (longer prefix first);
//! 3. a match that names a method;
//! 4. more header conditions;
//! 5. more query parameter conditions;
//! 6. the older Route (creation time), then namespace/name, then rule and match order.
//!
//! The order is computed once when the table is built, so lookups never depend on hash
//! map, file or arrival order.

mod action;
pub mod path;
mod transport;

pub use action::*;
pub use transport::{Protocol, Transport};

use http::{HeaderMap, Method};
use regex::Regex;
use std::{cmp::Ordering, collections::HashMap, sync::Arc};

/// Matches requests to rules. Built by the compile step, then read-only.
#[derive(Debug, Default)]
pub struct Router {
    exact_hosts: HashMap<Box<str>, HostTable>,
    /// Keyed by the suffix after `*`, such as `.example.com`.
    wildcard_hosts: HashMap<Box<str>, HostTable>,
    any_host: HostTable,
}

/// What the router needs to know of a request.
pub struct RequestView<'a> {
    /// Lower-case, without port or trailing dot: see [`normalize_host`].
    pub host: &'a str,
    /// Canonical, see [`path::canonicalize`].
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
}

/// The rule chosen for a request.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    pub action: &'a Arc<RuleAction>,
    /// The prefix that matched, for prefix rewrites; `None` for other path matches.
    pub matched_prefix: Option<&'a str>,
}

/// Rules of one host, grouped by kind of path match.
#[derive(Debug, Default)]
struct HostTable {
    exact: HashMap<Box<str>, Vec<Entry>>,
    /// In precedence order.
    regex: Vec<(Regex, Vec<Entry>)>,
    /// Indices into `regex` (ascending, so in precedence order) of the patterns that can
    /// only match below one literal first segment, keyed by that segment.
    regex_by_segment: HashMap<Box<str>, Vec<usize>>,
    /// Indices of the other patterns, which every path must be tried against.
    regex_unkeyed: Vec<usize>,
    prefix: PrefixNode,
}

/// Prefix matches as a tree of path segments, so that a lookup walks the request's
/// segments once and tries the deepest (longest) prefix first.
#[derive(Debug, Default)]
struct PrefixNode {
    children: HashMap<Box<str>, PrefixNode>,
    /// Entries whose prefix ends at this node, in precedence order.
    entries: Vec<Entry>,
    /// The prefix this node stands for, as written in the rule after normalisation.
    prefix: Box<str>,
}

/// One match alternative of one rule.
#[derive(Debug)]
pub struct Entry {
    method: Option<Method>,
    headers: Vec<(http::HeaderName, ValueCond)>,
    query: Vec<(Box<str>, ValueCond)>,
    action: Arc<RuleAction>,
    order: EntryOrder,
}

#[derive(Debug)]
pub enum ValueCond {
    Exact(Box<str>),
    Regex(Regex),
}

/// The tie-breakers after the path, as one sortable key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryOrder {
    pub has_method: bool,
    pub headers: usize,
    pub query: usize,
    /// Creation time; objects without one sort after those with one.
    pub created: Option<std::time::SystemTime>,
    pub namespace: String,
    pub name: String,
    pub rule: usize,
    pub alternative: usize,
}

/// A path condition, normalised for the table.
#[derive(Clone, Debug)]
pub enum PathCond {
    Exact(String),
    /// Without a trailing slash, except for `/` itself.
    Prefix(String),
    Regex(Regex),
}

/// Everything needed to add one match alternative to the table.
pub struct EntrySpec {
    /// Lower-case host patterns; empty means any host.
    pub hosts: Vec<String>,
    pub path: PathCond,
    pub method: Option<Method>,
    pub headers: Vec<(http::HeaderName, ValueCond)>,
    pub query: Vec<(Box<str>, ValueCond)>,
    pub action: Arc<RuleAction>,
    pub order: EntryOrder,
}

// === impl Router ===

impl Router {
    /// Builds the table. Entries may come in any order; the result is the same.
    pub fn build(specs: Vec<EntrySpec>) -> Router {
        let mut router = Router::default();
        for spec in specs {
            let hosts: Vec<Option<String>> = if spec.hosts.is_empty() {
                vec![None]
            } else {
                spec.hosts.iter().cloned().map(Some).collect()
            };
            for host in hosts {
                let table = router.table_mut(host.as_deref());
                let entry = Entry {
                    method: spec.method.clone(),
                    headers: spec
                        .headers
                        .iter()
                        .map(|(n, c)| (n.clone(), c.clone()))
                        .collect(),
                    query: spec
                        .query
                        .iter()
                        .map(|(n, c)| (n.clone(), c.clone()))
                        .collect(),
                    action: spec.action.clone(),
                    order: spec.order.clone(),
                };
                match &spec.path {
                    PathCond::Exact(p) => table
                        .exact
                        .entry(p.as_str().into())
                        .or_default()
                        .push(entry),
                    PathCond::Prefix(p) => table.prefix.insert(p, entry),
                    PathCond::Regex(re) => table.regex.push((re.clone(), vec![entry])),
                }
            }
        }
        router.for_each_table(HostTable::sort);
        router
    }

    /// Finds the rule for a request, or `None` when no rule matches (404).
    pub fn lookup<'a>(&'a self, req: &RequestView<'_>) -> Option<RouteMatch<'a>> {
        if let Some(found) = self.exact_hosts.get(req.host).and_then(|t| t.lookup(req)) {
            return Some(found);
        }
        if !self.wildcard_hosts.is_empty() {
            // `*.example.com` matches one or more labels in front of `.example.com`;
            // trying suffixes from the left finds the longest wildcard first.
            let host = req.host;
            for (i, _) in host.match_indices('.') {
                if i == 0 {
                    continue;
                }
                if let Some(found) = self
                    .wildcard_hosts
                    .get(&host[i..])
                    .and_then(|t| t.lookup(req))
                {
                    return Some(found);
                }
            }
        }
        self.any_host.lookup(req)
    }

    fn table_mut(&mut self, host: Option<&str>) -> &mut HostTable {
        match host {
            None => &mut self.any_host,
            Some(h) => match h.strip_prefix('*') {
                Some(suffix) => self.wildcard_hosts.entry(suffix.into()).or_default(),
                None => self.exact_hosts.entry(h.into()).or_default(),
            },
        }
    }

    fn for_each_table(&mut self, f: impl Fn(&mut HostTable)) {
        self.exact_hosts.values_mut().for_each(&f);
        self.wildcard_hosts.values_mut().for_each(&f);
        f(&mut self.any_host);
    }
}

/// Lower-cases a Host header value and drops a port and a trailing dot. Returns `None`
/// for anything but a DNS name (letters, digits, `-`, `_`, dots between non-empty
/// labels), an IPv4 address or a bracketed IPv6 address, with an optional port of at
/// most 65535: such a value could be read as another host by a backend or a URL parser.
pub fn normalize_host(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']')?;
        (&raw[..=end], &raw[end + 1..])
    } else {
        match raw.rfind(':') {
            Some(i) => (&raw[..i], &raw[i..]),
            None => (raw, ""),
        }
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        let valid = (1..=5).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.parse::<u32>().is_ok_and(|p| p <= 65535);
        if !valid {
            return None;
        }
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let valid = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        }
    };
    if !valid {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(host.to_ascii_lowercase().into())
    } else {
        Some(host.into())
    }
}

// === impl HostTable ===

impl HostTable {
    fn lookup<'a>(&'a self, req: &RequestView<'_>) -> Option<RouteMatch<'a>> {
        if let Some(entries) = self.exact.get(req.path) {
            if let Some(e) = first_match(entries, req) {
                return Some(RouteMatch {
                    action: &e.action,
                    matched_prefix: None,
                });
            }
        }
        if !self.regex.is_empty() {
            let keyed = first_segment(req.path)
                .and_then(|seg| self.regex_by_segment.get(seg))
                .map_or(&[][..], Vec::as_slice);
            for i in merge_ascending(keyed, &self.regex_unkeyed) {
                let (re, entries) = &self.regex[i];
                if re.is_match(req.path) {
                    if let Some(e) = first_match(entries, req) {
                        return Some(RouteMatch {
                            action: &e.action,
                            matched_prefix: None,
                        });
                    }
                }
            }
        }
        // Skip the leading '/', so the first segment is the first child of the root.
        self.prefix.lookup(req.path[1..].split('/'), req)
    }

    fn sort(&mut self) {
        for entries in self.exact.values_mut() {
            entries.sort_by(|a, b| a.order.cmp(&b.order));
        }
        // One group per distinct pattern, so a path is matched against it only once.
        let mut groups: Vec<(Regex, Vec<Entry>)> = Vec::new();
        for (re, entries) in self.regex.drain(..) {
            match groups.iter_mut().find(|(r, _)| r.as_str() == re.as_str()) {
                Some((_, existing)) => existing.extend(entries),
                None => groups.push((re, entries)),
            }
        }
        for (_, entries) in groups.iter_mut() {
            entries.sort_by(|a, b| a.order.cmp(&b.order));
        }
        self.regex = groups;
        // Longer patterns are taken as more specific; the pattern text breaks ties, and
        // after that the best entry of each group.
        self.regex.sort_by(|(ra, ea), (rb, eb)| {
            rb.as_str()
                .len()
                .cmp(&ra.as_str().len())
                .then_with(|| ea[0].order.cmp(&eb[0].order))
                .then_with(|| ra.as_str().cmp(rb.as_str()))
        });
        for (i, (re, _)) in self.regex.iter().enumerate() {
            match literal_first_segment(re.as_str()) {
                Some(seg) => self.regex_by_segment.entry(seg.into()).or_default().push(i),
                None => self.regex_unkeyed.push(i),
            }
        }
        self.prefix.sort();
    }
}

/// The first segment of a path that has a second one: `/a/b` gives `a`, `/a` nothing.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    rest.find('/').map(|end| &rest[..end])
}

/// For a compiled pattern `^(?:/seg/...)$` whose first segment is plain literal text,
/// that segment: every path it matches starts with `/seg/`. `None` when that cannot be
/// proven by a simple scan (alternation, flags, escapes, a quantified character).
fn literal_first_segment(compiled: &str) -> Option<&str> {
    let pattern = compiled.strip_prefix("^(?:")?.strip_suffix(")$")?;
    if pattern.contains('|') {
        return None;
    }
    let rest = pattern.strip_prefix('/')?;
    let end = rest.find('/')?;
    let seg = &rest[..end];
    let is_meta = |c: char| "\\.+*?()|[]{}^$".contains(c);
    // The segment and the slash after it must be literal, and the slash must not be
    // made optional by a quantifier right behind it.
    let after = rest[end + 1..].chars().next();
    if seg.is_empty() || seg.contains(is_meta) || matches!(after, Some('?' | '*' | '{')) {
        return None;
    }
    Some(seg)
}

/// Merges two ascending index lists.
fn merge_ascending<'a>(a: &'a [usize], b: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x < y => {
                i += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => return None,
        };
        Some(next)
    })
}

fn first_match<'a>(entries: &'a [Entry], req: &RequestView<'_>) -> Option<&'a Entry> {
    entries.iter().find(|e| e.matches(req))
}

// === impl PrefixNode ===

impl PrefixNode {
    fn insert(&mut self, prefix: &str, entry: Entry) {
        let mut node = self;
        for seg in prefix.split('/').filter(|s| !s.is_empty()) {
            node = node.children.entry(seg.into()).or_default();
        }
        node.prefix = prefix.into();
        node.entries.push(entry);
    }

    /// Descends as deep as the path allows, then tries entries on the way back up, so the
    /// longest prefix is tried first without allocating.
    fn lookup<'a, 'p>(
        &'a self,
        mut segments: std::str::Split<'p, char>,
        req: &RequestView<'_>,
    ) -> Option<RouteMatch<'a>> {
        if let Some(child) = segments.next().and_then(|seg| self.children.get(seg)) {
            if let Some(found) = child.lookup(segments, req) {
                return Some(found);
            }
        }
        first_match(&self.entries, req).map(|e| RouteMatch {
            action: &e.action,
            matched_prefix: Some(&self.prefix),
        })
    }

    fn sort(&mut self) {
        self.entries.sort_by(|a, b| a.order.cmp(&b.order));
        self.children.values_mut().for_each(PrefixNode::sort);
    }
}

// === impl Entry ===

impl Entry {
    fn matches(&self, req: &RequestView<'_>) -> bool {
        if let Some(m) = &self.method {
            if m != req.method {
                return false;
            }
        }
        self.headers
            .iter()
            .all(|(name, cond)| header_matches(req.headers, name, cond))
            && self
                .query
                .iter()
                .all(|(name, cond)| query_matches(req.query, name, cond))
    }
}

/// A header with several values is matched on the values joined by `,`, the form an
/// intermediary may legally fold them into.
fn header_matches(headers: &HeaderMap, name: &http::HeaderName, cond: &ValueCond) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let Ok(first) = first.to_str() else {
        return false;
    };
    match values.next() {
        None => cond.matches(first),
        Some(second) => {
            let mut joined = format!("{first},{}", second.to_str().unwrap_or(""));
            for v in values {
                joined.push(',');
                joined.push_str(v.to_str().unwrap_or(""));
            }
            cond.matches(&joined)
        }
    }
}

/// Only the first occurrence of a repeated query parameter counts.
fn query_matches(query: Option<&str>, name: &str, cond: &ValueCond) -> bool {
    let Some(query) = query else {
        return false;
    };
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .is_some_and(|(_, v)| cond.matches(&v))
}

// === impl ValueCond ===

impl ValueCond {
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueCond::Exact(want) => **want == *value,
            ValueCond::Regex(re) => re.is_match(value),
        }
    }
}

impl Clone for ValueCond {
    fn clone(&self) -> Self {
        match self {
            ValueCond::Exact(v) => ValueCond::Exact(v.clone()),
            ValueCond::Regex(r) => ValueCond::Regex(r.clone()),
        }
    }
}

// === impl EntryOrder ===

impl Ord for EntryOrder {
    fn cmp(&self, other: &Self) -> Ordering {
        // More specific first: a method, then more headers, then more query conditions.
        other
            .has_method
            .cmp(&self.has_method)
            .then_with(|| other.headers.cmp(&self.headers))
            .then_with(|| other.query.cmp(&self.query))
            .then_with(|| match (&self.created, &other.created) {
                (Some(a), Some(b)) => a.cmp(b),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .then_with(|| self.namespace.cmp(&other.namespace))
            .then_with(|| self.name.cmp(&other.name))
            .then_with(|| self.rule.cmp(&other.rule))
            .then_with(|| self.alternative.cmp(&other.alternative))
    }
}

impl PartialOrd for EntryOrder {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_first_segments() {
        let seg = |p: &str| literal_first_segment(&format!("^(?:{p})$")).map(str::to_string);
        assert_eq!(seg("/users/[0-9]+").as_deref(), Some("users"));
        assert_eq!(seg("/a/b").as_deref(), Some("a"));
        assert_eq!(seg("/users/?x"), None);
        assert_eq!(seg("/user.s/x"), None);
        assert_eq!(seg("/users?/x"), None);
        assert_eq!(seg("/a/x|/b/y"), None);
        assert_eq!(seg("(?i)/a/x"), None);
        assert_eq!(seg("/[a-z]+/x"), None);
        assert_eq!(seg("/users"), None);
        assert_eq!(seg("//x"), None);
    }

    #[test]
    fn hosts_are_normalized_or_refused() {
        for (raw, want) in [
            ("API.Example.com", "api.example.com"),
            ("api.example.com:8080", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("api.example.com.:80", "api.example.com"),
            ("10.0.0.1:80", "10.0.0.1"),
            ("[::1]:8080", "[::1]"),
            ("my_host.internal", "my_host.internal"),
        ] {
            assert_eq!(normalize_host(raw).as_deref(), Some(want), "{raw}");
        }
        for raw in [
            "",
            ":80",
            "x@admin.example.com",
            "admin.example.com/x",
            "admin.example.com?x",
            "admin.example.com#x",
            "admin.example.com x",
            "admin.example.com,other",
            "[zz]junk",
            "[::1]x",
            "admin.example.com..",
            "a..b",
            "a\"b",
            "admin.example.com:99999999",
            "admin.example.com:70000",
            "admin.example.com:",
            "a:b:c",
        ] {
            assert_eq!(normalize_host(raw), None, "{raw:?} should be refused");
        }
    }

    #[test]
    fn merge_keeps_ascending_order() {
        let merged: Vec<_> = merge_ascending(&[1, 4, 9], &[0, 2, 10]).collect();
        assert_eq!(merged, [0, 1, 2, 4, 9, 10]);
    }
}
