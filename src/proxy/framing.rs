//! A second look at HTTP/1 request framing, for the two ambiguous shapes that hyper
//! resolves silently before a handler can see them: `Content-Length` together with
//! `Transfer-Encoding`, and a repeated `Content-Length`.
//!
//! hyper handles both the way RFC 9112 allows (it drops the length, or folds equal
//! values), but a gateway in front of backends that may read the same bytes differently
//! should refuse them outright. [`Tracker`] follows the bytes a client sends, finds each
//! request head with `httparse` (the parser hyper itself uses), skips bodies by their
//! framing, and queues one [`Head`] per request. The handler takes them in order and
//! answers 400 to an ambiguous one. If the tracker ever disagrees with hyper about which
//! request is which, the request is refused too: the check fails closed.

use std::collections::VecDeque;
#[allow(clippy::disallowed_types)]
// locked only by the connection's own task, never across an await
use std::sync::Mutex;

/// A request head as the client sent it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Head {
    pub method: Box<str>,
    pub target: Box<str>,
    /// Why the framing is ambiguous, if it is.
    pub ambiguous: Option<&'static str>,
}

/// Heads found but not yet taken by the handler, shared by the reading side and the
/// handler of one connection.
#[derive(Debug, Default)]
pub(super) struct Heads {
    #[allow(clippy::disallowed_types)]
    queue: Mutex<VecDeque<Head>>,
    /// Set when the tracker stopped following the connection. Requests hyper still
    /// dispatches after that cannot be verified and are refused.
    stopped: std::sync::atomic::AtomicBool,
}

/// What the handler should do with a request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Ok,
    Refuse(&'static str),
}

/// Most heads kept waiting. A client pipelining more than this stops the tracking, and
/// the rest of its requests on that connection are refused.
const MAX_QUEUED: usize = 1024;

/// Follows one connection's incoming bytes.
#[derive(Debug)]
pub(super) struct Tracker {
    state: State,
    /// A head that arrived in several reads.
    partial: Vec<u8>,
    max_head: usize,
    max_headers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    Chunk(Chunk),
    /// Not following any more: HTTP/2, tunnel bytes after an upgrade, or input the
    /// tracker cannot frame.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size {
        value: u64,
        digits: u8,
    },
    Extension {
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line; an empty line ends the message.
    TrailerStart,
    Trailer,
    EndLf,
}

// === impl Heads ===

impl Heads {
    fn push(&self, head: Head) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= MAX_QUEUED {
            return false;
        }
        queue.push_back(head);
        true
    }

    /// Takes the head of the request hyper is dispatching now and judges it.
    pub(super) fn judge(&self, method: &http::Method, uri: &http::Uri) -> Verdict {
        let head = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        let Some(head) = head else {
            // The tracker stopped on input hyper went on to accept: fail closed. (When
            // it stops on input hyper refuses too, no request gets here.)
            return if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
                Verdict::Refuse("request framing could not be verified")
            } else {
                Verdict::Ok
            };
        };
        let same_target = match uri.path_and_query() {
            Some(pq) if head.target.starts_with('/') => *head.target == *pq.as_str(),
            _ => true,
        };
        if *head.method != *method.as_str() || !same_target {
            tracing::warn!(
                seen = %head.target, dispatched = %uri, "request framing out of step; refusing"
            );
            return Verdict::Refuse("request framing could not be verified");
        }
        match head.ambiguous {
            Some(why) => Verdict::Refuse(why),
            None => Verdict::Ok,
        }
    }
}

// === impl Tracker ===

impl Tracker {
    pub(super) fn new(max_head: usize, max_headers: usize) -> Self {
        Tracker {
            state: State::Head,
            partial: Vec::new(),
            max_head,
            max_headers,
        }
    }

    /// False once the tracker has stopped following the connection for good.
    pub(super) fn is_following(&self) -> bool {
        self.state != State::Off
    }

    /// Follows `bytes`, the next bytes read from the client.
    pub(super) fn feed(&mut self, bytes: &[u8], heads: &Heads) {
        self.follow(bytes, heads);
        if self.state == State::Off {
            heads
                .stopped
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    fn follow(&mut self, mut bytes: &[u8], heads: &Heads) {
        while !bytes.is_empty() {
            bytes = match self.state {
                State::Off => return,
                State::Head => self.head(bytes, heads),
                State::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Body(left - n)
                    };
                    &bytes[n as usize..]
                }
                State::Chunk(c) => self.chunk(c, bytes),
            };
        }
    }

    /// Collects a head; when it is complete, queues it and moves on to its body.
    fn head<'b>(&mut self, mut bytes: &'b [u8], heads: &Heads) -> &'b [u8] {
        // Empty lines before a request line are allowed (RFC 9112 §2.2) and skipped.
        if self.partial.is_empty() {
            let skip = bytes
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count();
            bytes = &bytes[skip..];
            if bytes.is_empty() {
                return bytes;
            }
        }
        // The common case: the whole head in this read, parsed in place.
        let (end, parsed) = if self.partial.is_empty() {
            match find_head_end(bytes, 0) {
                Some(end) => (end, self.parse(&bytes[..end])),
                None => {
                    self.partial.extend_from_slice(bytes);
                    self.check_size();
                    return &[];
                }
            }
        } else {
            let searched = self.partial.len().saturating_sub(3);
            self.partial.extend_from_slice(bytes);
            match find_head_end(&self.partial, searched) {
                Some(end_in_partial) => {
                    let consumed = end_in_partial - (self.partial.len() - bytes.len());
                    let head = std::mem::take(&mut self.partial);
                    (consumed, self.parse(&head[..end_in_partial]))
                }
                None => {
                    self.check_size();
                    return &[];
                }
            }
        };
        match parsed {
            Some((head, next)) => {
                self.state = if heads.push(head) { next } else { State::Off };
            }
            None => self.state = State::Off,
        }
        &bytes[end..]
    }

    fn check_size(&mut self) {
        if self.partial.len() > self.max_head {
            // hyper answers 431 to this one.
            self.state = State::Off;
            self.partial = Vec::new();
        }
    }

    /// Parses a complete head. `None` for anything hyper will refuse by itself.
    fn parse(&self, raw: &[u8]) -> Option<(Head, State)> {
        let mut storage = vec![httparse::EMPTY_HEADER; self.max_headers];
        let mut req = httparse::Request::new(&mut storage);
        if !matches!(req.parse(raw), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let mut lengths = Vec::new();
        let mut codings = Vec::new();
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths.push(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                codings.push(h.value);
            }
        }
        let ambiguous = if !lengths.is_empty() && !codings.is_empty() {
            Some("both Content-Length and Transfer-Encoding")
        } else if lengths.len() > 1 {
            Some("repeated Content-Length")
        } else {
            None
        };
        // The body as hyper will read it: a transfer coding wins over a length.
        let next = match (codings.last(), lengths.first()) {
            (Some(te), _) => {
                let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
                if !last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return None;
                }
                State::Chunk(Chunk::Size {
                    value: 0,
                    digits: 0,
                })
            }
            (None, Some(len)) => match std::str::from_utf8(len).ok()?.trim().parse::<u64>() {
                Ok(0) => State::Head,
                Ok(n) => State::Body(n),
                Err(_) => return None,
            },
            (None, None) => State::Head,
        };
        let head = Head {
            method: req.method?.into(),
            target: req.path?.into(),
            ambiguous,
        };
        Some((head, next))
    }

    /// Steps through chunked framing byte by byte, skipping chunk data in bulk.
    fn chunk<'b>(&mut self, c: Chunk, bytes: &'b [u8]) -> &'b [u8] {
        if let Chunk::Data(left) = c {
            let n = left.min(bytes.len() as u64);
            self.state = State::Chunk(if n == left {
                Chunk::DataCr
            } else {
                Chunk::Data(left - n)
            });
            return &bytes[n as usize..];
        }
        let b = bytes[0];
        let next = match (c, b) {
            (Chunk::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
                // Leading zeros are allowed; a size past u64 is not (hyper agrees).
                let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                match value.checked_mul(16) {
                    Some(v) => State::Chunk(Chunk::Size {
                        value: v | d,
                        digits: digits.saturating_add(1),
                    }),
                    None => State::Off,
                }
            }
            (Chunk::Size { value, digits: 1.. }, b';' | b' ' | b'\t') => {
                State::Chunk(Chunk::Extension { value })
            }
            (Chunk::Size { value, digits: 1.. } | Chunk::Extension { value }, b'\r') => {
                State::Chunk(Chunk::SizeLf { value })
            }
            (Chunk::Extension { value }, _) => State::Chunk(Chunk::Extension { value }),
            (Chunk::SizeLf { value: 0 }, b'\n') => State::Chunk(Chunk::TrailerStart),
            (Chunk::SizeLf { value }, b'\n') => State::Chunk(Chunk::Data(value)),
            (Chunk::DataCr, b'\r') => State::Chunk(Chunk::DataLf),
            (Chunk::DataLf, b'\n') => State::Chunk(Chunk::Size {
                value: 0,
                digits: 0,
            }),
            (Chunk::TrailerStart, b'\r') => State::Chunk(Chunk::EndLf),
            (Chunk::Trailer, b'\n') => State::Chunk(Chunk::TrailerStart),
            (Chunk::TrailerStart, b'\n') => State::Off,
            (Chunk::TrailerStart | Chunk::Trailer, _) => State::Chunk(Chunk::Trailer),
            (Chunk::EndLf, b'\n') => State::Head,
            _ => State::Off,
        };
        self.state = next;
        &bytes[1..]
    }
}

/// Index just past the first empty line at or after `from`. Like httparse, a line may
/// end in `\r\n` or in a bare `\n`.
fn find_head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let tail = bytes.get(from..)?;
    tail.iter().enumerate().find_map(|(i, &b)| {
        if b != b'\n' {
            return None;
        }
        match (tail.get(i + 1), tail.get(i + 2)) {
            (Some(b'\n'), _) => Some(from + i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(from + i + 3),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads_of(chunks: &[&[u8]]) -> Vec<Head> {
        let heads = Heads::default();
        let mut t = Tracker::new(8192, 100);
        for c in chunks {
            t.feed(c, &heads);
        }
        heads.queue.into_inner().unwrap().into_iter().collect()
    }

    fn summary(chunks: &[&[u8]]) -> Vec<(String, Option<&'static str>)> {
        heads_of(chunks)
            .into_iter()
            .map(|h| (h.target.into(), h.ambiguous))
            .collect()
    }

    #[test]
    fn follows_pipelined_requests_with_bodies() {
        let bytes = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            5;ext=1\r\nGET /\r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n\
            GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        let want = vec![
            ("/a".to_string(), None),
            ("/b".to_string(), None),
            ("/c".to_string(), None),
        ];
        assert_eq!(summary(&[bytes]), want);
        // The same bytes one at a time.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(summary(&singles), want);
    }

    #[test]
    fn flags_the_shapes_hyper_hides() {
        let got = summary(&[
            b"POST /a HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi\
            GET /c HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(
            got,
            vec![
                (
                    "/a".to_string(),
                    Some("both Content-Length and Transfer-Encoding")
                ),
                ("/b".to_string(), Some("repeated Content-Length")),
                ("/c".to_string(), None),
            ]
        );
    }

    #[test]
    fn follows_what_hyper_accepts() {
        let got = summary(&[b"\r\n\r\nPOST /a HTTP/1.1\nHost: x\nContent-Length: 3\nContent-Length: 3\n\nabc\
            POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000003\r\nabc\r\n0\r\n\r\n\
            POST /c HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]);
        assert_eq!(
            got,
            vec![
                ("/a".to_string(), Some("repeated Content-Length")),
                ("/b".to_string(), None),
                (
                    "/c".to_string(),
                    Some("both Content-Length and Transfer-Encoding")
                ),
            ]
        );
    }

    #[test]
    fn a_stopped_tracker_fails_closed() {
        let heads = Heads::default();
        let mut t = Tracker::new(8192, 100);
        t.feed(
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
            &heads,
        );
        assert!(!t.is_following());
        let post = http::Method::POST;
        assert_eq!(heads.judge(&post, &"/a".parse().unwrap()), Verdict::Ok);
        assert!(matches!(
            heads.judge(&post, &"/b".parse().unwrap()),
            Verdict::Refuse(_)
        ));
    }

    #[test]
    fn stops_on_what_hyper_refuses() {
        assert_eq!(summary(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]), vec![]);
        let got = summary(&[
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        ]);
        assert_eq!(got, vec![]);
    }

    #[test]
    fn judging_takes_heads_in_order_and_fails_closed() {
        let heads = Heads::default();
        let mut t = Tracker::new(8192, 100);
        t.feed(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", &heads);
        let get = http::Method::GET;
        assert_eq!(heads.judge(&get, &"/a".parse().unwrap()), Verdict::Ok);
        assert!(matches!(
            heads.judge(&get, &"/x".parse().unwrap()),
            Verdict::Refuse(_)
        ));
        // Nothing left while still following: a request the tracker has not seen yet
        // cannot be dispatched, but judging stays harmless.
        assert_eq!(heads.judge(&get, &"/c".parse().unwrap()), Verdict::Ok);
    }
}
