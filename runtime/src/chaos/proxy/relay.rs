//! The no-fault path: a client connection that no fault can ever select is
//! relayed at the TCP level, with no HTTP codec on either side. Each request
//! head is read with `httparse` (to count it, rewrite its `Host` and target,
//! and drop its hop-by-hop headers); bodies and responses are copied as they
//! come, and only scanned for their framing (`Content-Length`, chunked, or
//! until close) so that request and response boundaries are known: the
//! report counts every request and every response, the upstream connection
//! can be opened again when the upstream closed it between two responses, and
//! a client that asked for `Connection: close` is closed after its answer.
//!
//! One task drives both sockets with reused buffers: no allocation per
//! request once the buffers have grown, no wake-up of another task.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::Shared;

/// Bytes read per system call.
const READ: usize = 16 * 1024;
/// Bytes waiting to be written to one side before reading from the other
/// pauses (back-pressure).
const HIGH: usize = 64 * 1024;
/// Largest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a head (as hyper's default).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size or trailer line.
const MAX_LINE: usize = 4096;

/// Request headers not forwarded: hop-by-hop ones, and `Host`, which is
/// replaced by the upstream's.
const DROPPED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// How the rest of a message body is delimited.
#[derive(Debug)]
pub(super) enum Framing {
    Length(u64),
    Chunked(Chunked),
    /// Until the sender closes (a response without a length).
    UntilClose,
}

/// Where a chunked body is.
#[derive(Debug, Default)]
pub(super) struct Chunked {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer fields after the last chunk, up to an empty line.
    Trailer,
}

/// A message that does not follow HTTP/1.1's syntax.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed;

impl Framing {
    /// Passes over the body bytes at the start of `data`: how many belong
    /// to the body, and whether the body ends with them.
    pub(super) fn advance(&mut self, data: &[u8]) -> Result<(usize, bool), Malformed> {
        match self {
            Framing::Length(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                Ok((n as usize, *left == 0))
            }
            Framing::UntilClose => Ok((data.len(), false)),
            Framing::Chunked(c) => c.advance(data),
        }
    }
}

impl Chunked {
    fn advance(&mut self, data: &[u8]) -> Result<(usize, bool), Malformed> {
        let mut i = 0;
        while i < data.len() {
            if let ChunkState::Data(left) = &mut self.state {
                let n = (*left).min((data.len() - i) as u64);
                *left -= n;
                i += n as usize;
                if *left == 0 {
                    self.state = ChunkState::DataEnd;
                }
                continue;
            }
            // A line: up to and with its LF.
            let Some(lf) = data[i..].iter().position(|&b| b == b'\n') else {
                self.line.extend_from_slice(&data[i..]);
                if self.line.len() > MAX_LINE {
                    return Err(Malformed);
                }
                return Ok((data.len(), false));
            };
            self.line.extend_from_slice(&data[i..i + lf]);
            i += lf + 1;
            if self.line.len() > MAX_LINE {
                return Err(Malformed);
            }
            let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
            match self.state {
                ChunkState::Size => {
                    // `1a;ext=1`: the size, in hex, before any extension.
                    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
                    let digits = std::str::from_utf8(&line[..end])
                        .map_err(|_| Malformed)?
                        .trim_matches([' ', '\t']);
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(Malformed);
                    }
                    let size = u64::from_str_radix(digits, 16).map_err(|_| Malformed)?;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::DataEnd => {
                    if !line.is_empty() {
                        return Err(Malformed);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    if line.is_empty() {
                        self.line.clear();
                        self.state = ChunkState::Size;
                        return Ok((i, true));
                    }
                }
                ChunkState::Data(_) => unreachable!("handled above"),
            }
            self.line.clear();
        }
        Ok((i, false))
    }
}

/// The framing that `Transfer-Encoding` and `Content-Length` give a
/// message: `None` when they give none (`Length(0)` for an explicit empty
/// body).
fn framing(headers: &[httparse::Header<'_>]) -> Result<Option<Framing>, Malformed> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| Malformed)?;
            for part in v.split(',') {
                let part = part.trim();
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(Malformed);
                }
                let n: u64 = part.parse().map_err(|_| Malformed)?;
                if length.is_some_and(|l| l != n) {
                    return Err(Malformed);
                }
                length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = std::str::from_utf8(h.value).map_err(|_| Malformed)?;
            // Chunked when chunked is the last coding applied.
            let last = v.rsplit(',').next().unwrap_or("").trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        }
    }
    Ok(match (chunked, length) {
        (Some(true), _) => Some(Framing::Chunked(Chunked::default())),
        (Some(false), _) => Some(Framing::UntilClose),
        (None, Some(n)) => Some(Framing::Length(n)),
        (None, None) => None,
    })
}

/// Whether a `Connection` header lists `token`.
fn connection_has(headers: &[httparse::Header<'_>], token: &str) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// A request forwarded and not answered yet.
#[derive(Debug)]
pub(super) struct Pending {
    /// A `HEAD` request: its response has no body.
    head: bool,
    /// The client asked to close after the answer (`Connection: close`, or
    /// HTTP/1.0 without `keep-alive`).
    close: bool,
    /// Where its head starts in the bytes sent upstream (see
    /// `Relay::written`).
    start: u64,
}

/// A complete request head at the start of `buf`, rewritten for the
/// upstream into `out`: `Ok(None)` while the head is incomplete.
pub(super) fn request_head(
    buf: &[u8],
    authority: &str,
    prefix: &str,
    out: &mut Vec<u8>,
) -> Result<Option<(usize, Option<Framing>, Pending)>, Malformed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Malformed),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Malformed),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Malformed);
    };
    let headers = req.headers;
    let body = match framing(headers)? {
        Some(Framing::Length(0)) => None,
        f => f,
    };
    // A request body is delimited by its length or by chunks, never by the
    // close (RFC 9112, 6.3).
    if matches!(body, Some(Framing::UntilClose)) {
        return Err(Malformed);
    }
    let close = if version == 0 {
        !connection_has(headers, "keep-alive")
    } else {
        connection_has(headers, "close")
    };
    // Origin form, under the upstream's path prefix.
    let origin = if target.starts_with('/') {
        target
    } else if let Some(i) = target.find("://") {
        let rest = &target[i + 3..];
        rest.find(['/', '?']).map_or("/", |j| &rest[j..])
    } else {
        target
    };
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if origin.starts_with('/') {
        out.extend_from_slice(prefix.as_bytes());
    } else if origin.starts_with('?') {
        out.extend_from_slice(prefix.as_bytes());
        out.push(b'/');
    }
    out.extend_from_slice(origin.as_bytes());
    out.extend_from_slice(if version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    // Chunked wins over a Content-Length sent with it, which a proxy must
    // not forward (RFC 9112, 6.3): an upstream that read the length would
    // fall out of step with the chunks.
    let chunked = matches!(body, Some(Framing::Chunked(_)));
    for h in headers.iter() {
        if DROPPED.iter().any(|d| h.name.eq_ignore_ascii_case(d))
            || (chunked && h.name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    // An HTTP/1.0 client that asked to keep its connection: the request
    // stays HTTP/1.0, so the upstream must be asked too, or it closes after
    // every answer (and its answer would not say keep-alive).
    if version == 0 && !close {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"host: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    let pending = Pending {
        head: method == "HEAD",
        close,
        start: 0,
    };
    Ok(Some((n, body, pending)))
}

/// What a response head says.
#[derive(Debug)]
pub(super) struct ResponseHead {
    len: usize,
    /// 1xx: an interim response, another follows for the same request.
    interim: bool,
    /// 101: the connection is no longer HTTP.
    switching: bool,
    body: Option<Framing>,
}

/// A complete response head at the start of `buf`, to a request that was
/// a `HEAD` or not: `Ok(None)` while incomplete.
pub(super) fn response_head(buf: &[u8], to_head: bool) -> Result<Option<ResponseHead>, Malformed> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Malformed),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Malformed),
    };
    let status = resp.code.ok_or(Malformed)?;
    let body = match status {
        101 => Some(Framing::UntilClose),
        100..=199 | 204 | 304 => None,
        _ if to_head => None,
        // No length and no chunks: the body ends with the connection.
        _ => match framing(resp.headers)? {
            None => Some(Framing::UntilClose),
            Some(Framing::Length(0)) => None,
            f => f,
        },
    };
    Ok(Some(ResponseHead {
        len,
        interim: (100..200).contains(&status) && status != 101,
        switching: status == 101,
        body,
    }))
}

/// What the relay needs the caller to do.
enum Step {
    /// Open an upstream connection: a request waits for one.
    Connect,
    /// The connection is over.
    Done,
}

/// Where the relay of one client connection is.
struct Relay<'a> {
    sh: &'a Shared,
    client: TcpStream,
    up: Option<TcpStream>,
    /// Read buffer, reused.
    scratch: Vec<u8>,
    /// An incomplete request head.
    req_head: Vec<u8>,
    /// The body of the request being read; `None` between requests.
    req_body: Option<Framing>,
    /// Its body goes nowhere: the upstream could not be reached.
    discard: bool,
    to_up: Vec<u8>,
    up_off: usize,
    /// Bytes written to upstream connections so far.
    written: u64,
    /// The current upstream connection completed an answer.
    up_answered: bool,
    /// An incomplete response head.
    resp_head: Vec<u8>,
    resp_body: Option<Framing>,
    to_client: Vec<u8>,
    client_off: usize,
    pending: VecDeque<Pending>,
    /// Read nothing more from the client.
    client_done: bool,
    /// The client sent something that is not HTTP/1: answer 400 once every
    /// answer before it has gone, then close.
    bad_request: bool,
    /// Close the client connection once `to_client` is written.
    close_client: bool,
    /// 101 Switching Protocols: bytes are copied with no scanning.
    tunnel: bool,
    /// A request body turned out malformed after its head went upstream:
    /// the upstream waits for a body that will never come, so no answer can
    /// follow; both connections close at once.
    broken: bool,
}

/// Serves a plain-TCP client connection that no fault can select.
pub(super) async fn relay(client: TcpStream, sh: &Shared) {
    let mut r = Relay {
        sh,
        client,
        up: None,
        scratch: vec![0; READ],
        req_head: Vec::new(),
        req_body: None,
        discard: false,
        to_up: Vec::with_capacity(READ),
        up_off: 0,
        written: 0,
        up_answered: false,
        resp_head: Vec::new(),
        resp_body: None,
        to_client: Vec::with_capacity(READ),
        client_off: 0,
        pending: VecDeque::new(),
        client_done: false,
        bad_request: false,
        close_client: false,
        tunnel: false,
        broken: false,
    };
    loop {
        match std::future::poll_fn(|cx| r.pump(cx)).await {
            Step::Done => return,
            Step::Connect => match TcpStream::connect(sh.authority.as_str()).await {
                Ok(up) => {
                    let _ = up.set_nodelay(true);
                    r.up = Some(up);
                    r.up_answered = false;
                }
                Err(e) => r.unreachable(&e),
            },
        }
    }
}

impl Relay<'_> {
    /// Moves bytes both ways until the connection is over or needs an
    /// upstream connection.
    fn pump(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        loop {
            let mut again = false;
            // Answers out to the client.
            while self.client_off < self.to_client.len() {
                match Pin::new(&mut self.client).poll_write(cx, &self.to_client[self.client_off..])
                {
                    Poll::Ready(Ok(n)) if n > 0 => self.client_off += n,
                    Poll::Ready(_) => return Poll::Ready(Step::Done),
                    Poll::Pending => break,
                }
            }
            if self.client_off == self.to_client.len() {
                self.to_client.clear();
                self.client_off = 0;
                if self.close_client {
                    return Poll::Ready(Step::Done);
                }
                if self.client_done && self.pending.is_empty() && self.at_response_boundary() {
                    if !self.bad_request {
                        return Poll::Ready(Step::Done);
                    }
                    self.to_client.extend_from_slice(
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                    self.close_client = true;
                    continue;
                }
            }
            // Answers in from the upstream, before anything is written to
            // it: a close already there is seen before a request is lost.
            if self.to_client.len() - self.client_off < HIGH {
                if let Some(up) = &mut self.up {
                    let mut buf = ReadBuf::new(&mut self.scratch);
                    match Pin::new(up).poll_read(cx, &mut buf) {
                        Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                            let n = buf.filled().len();
                            self.upstream_bytes(n);
                            again = true;
                        }
                        Poll::Ready(_) => {
                            self.upstream_gone();
                            again = true;
                        }
                        Poll::Pending => {}
                    }
                }
            }
            // Requests out to the upstream.
            if self.up_off < self.to_up.len() {
                let Some(up) = &mut self.up else {
                    return Poll::Ready(Step::Connect);
                };
                while self.up_off < self.to_up.len() {
                    match Pin::new(&mut *up).poll_write(cx, &self.to_up[self.up_off..]) {
                        Poll::Ready(Ok(n)) if n > 0 => {
                            self.up_off += n;
                            self.written += n as u64;
                        }
                        Poll::Ready(_) => {
                            self.upstream_gone();
                            again = true;
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                if self.up_off == self.to_up.len() {
                    self.to_up.clear();
                    self.up_off = 0;
                }
            }
            // Requests in from the client, while neither direction is backed
            // up (answers the relay makes itself, such as 502s, count too).
            if !self.client_done
                && self.to_up.len() - self.up_off < HIGH
                && self.to_client.len() - self.client_off < HIGH
            {
                let mut buf = ReadBuf::new(&mut self.scratch);
                match Pin::new(&mut self.client).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                        let n = buf.filled().len();
                        self.client_bytes(n);
                        if self.broken {
                            return Poll::Ready(Step::Done);
                        }
                        again = true;
                    }
                    Poll::Ready(_) => {
                        self.client_done = true;
                        // In the middle of a request: nothing more can be done.
                        if self.req_body.is_some() || !self.req_head.is_empty() {
                            return Poll::Ready(Step::Done);
                        }
                        again = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !again {
                return Poll::Pending;
            }
        }
    }

    fn at_response_boundary(&self) -> bool {
        self.resp_body.is_none() && self.resp_head.is_empty()
    }

    /// `n` bytes from the client are in `scratch`.
    fn client_bytes(&mut self, n: usize) {
        let mut i = 0;
        while i < n {
            let data = &self.scratch[i..n];
            if self.tunnel {
                self.to_up.extend_from_slice(data);
                return;
            }
            if let Some(body) = &mut self.req_body {
                let Ok((used, end)) = body.advance(data) else {
                    // Its head (and maybe part of its body) is already on
                    // its way upstream: never a half request left waiting.
                    self.broken = true;
                    return;
                };
                if !self.discard {
                    self.to_up.extend_from_slice(&data[..used]);
                }
                i += used;
                if end {
                    self.req_body = None;
                    if self.pending.back().is_some_and(|p| p.close) {
                        self.client_done = true;
                        return;
                    }
                }
                continue;
            }
            // A head, parsed in place when it came whole.
            let (buf, before) = if self.req_head.is_empty() {
                (data, 0)
            } else {
                let before = self.req_head.len();
                self.req_head.extend_from_slice(data);
                (&self.req_head[..], before)
            };
            let start = self.written + (self.to_up.len() - self.up_off) as u64;
            match request_head(buf, &self.sh.authority, &self.sh.prefix, &mut self.to_up) {
                Ok(Some((len, body, mut pending))) => {
                    pending.start = start;
                    self.sh.requests.fetch_add(1, Ordering::Relaxed);
                    i += len - before;
                    self.req_head.clear();
                    self.req_body = body;
                    self.discard = false;
                    let close = pending.close;
                    self.pending.push_back(pending);
                    if close {
                        // Nothing after it is read: the connection closes
                        // after its answer.
                        if self.req_body.is_none() {
                            self.client_done = true;
                            return;
                        }
                    }
                }
                Ok(None) => {
                    if self.req_head.is_empty() {
                        self.req_head.extend_from_slice(data);
                    }
                    return;
                }
                Err(Malformed) => return self.bad_request(),
            }
        }
    }

    fn bad_request(&mut self) {
        self.bad_request = true;
        self.client_done = true;
        self.req_head.clear();
        self.req_body = None;
    }

    /// `n` bytes from the upstream are in `scratch`: they go to the client
    /// as they are, and are scanned for where each response ends.
    fn upstream_bytes(&mut self, n: usize) {
        self.to_client.extend_from_slice(&self.scratch[..n]);
        let mut i = 0;
        while i < n && !self.tunnel {
            let data = &self.scratch[i..n];
            if let Some(body) = &mut self.resp_body {
                let Ok((used, end)) = body.advance(data) else {
                    return self.upstream_malformed();
                };
                i += used;
                if end {
                    self.resp_body = None;
                    self.answered();
                }
                continue;
            }
            let to_head = self.pending.front().is_some_and(|p| p.head);
            let (buf, before) = if self.resp_head.is_empty() {
                (data, 0)
            } else {
                let before = self.resp_head.len();
                self.resp_head.extend_from_slice(data);
                (&self.resp_head[..], before)
            };
            match response_head(buf, to_head) {
                Ok(Some(h)) => {
                    i += h.len - before;
                    self.resp_head.clear();
                    if h.interim {
                        continue;
                    }
                    self.sh.forwarded.fetch_add(1, Ordering::Relaxed);
                    if h.switching {
                        self.tunnel = true;
                        self.resp_body = h.body;
                        return;
                    }
                    self.resp_body = h.body;
                    if self.resp_body.is_none() {
                        self.answered();
                    }
                }
                Ok(None) => {
                    if self.resp_head.is_empty() {
                        self.resp_head.extend_from_slice(data);
                    }
                    return;
                }
                Err(Malformed) => return self.upstream_malformed(),
            }
        }
    }

    /// A response is complete.
    fn answered(&mut self) {
        self.up_answered = true;
        if self.pending.pop_front().is_some_and(|p| p.close) {
            self.finish();
        }
    }

    /// The client connection closes once what it is owed is written:
    /// nothing more is read from it or sent upstream.
    fn finish(&mut self) {
        self.close_client = true;
        self.client_done = true;
        self.req_head.clear();
        self.req_body = None;
        self.to_up.clear();
        self.up_off = 0;
    }

    /// The upstream sent something that is not HTTP/1: the client gets what
    /// came, then the connection closes.
    fn upstream_malformed(&mut self) {
        self.up = None;
        self.finish();
    }

    /// The upstream closed (or broke) its connection.
    fn upstream_gone(&mut self) {
        self.up = None;
        if self.tunnel {
            return self.finish();
        }
        match &self.resp_body {
            // Its end is the close: the client learns it the same way.
            Some(Framing::UntilClose) => {
                self.resp_body = None;
                self.answered();
                return self.finish();
            }
            Some(_) => return self.finish(),
            None if !self.resp_head.is_empty() => return self.finish(),
            None => {}
        }
        // Between two answers, with nothing sent that waits for one: the
        // next request (maybe already read) goes on another upstream
        // connection, unseen by the client — once per connection that had
        // answered, as the other path retries a request it could not send.
        let unsent = self.pending.front().map_or(
            self.to_up.len() == self.up_off && self.req_body.is_none(),
            |p| p.start == self.written,
        );
        if unsent && self.up_answered {
            return;
        }
        if !self.pending.is_empty() {
            self.sh.upstream_errors.fetch_add(1, Ordering::Relaxed);
            let msg = "the upstream closed the connection without an answer";
            self.bad_gateway(msg, false);
        }
        self.finish();
    }

    /// The upstream could not be reached: each request waiting for it is
    /// answered 502, as the proxy's other path does.
    fn unreachable(&mut self, e: &io::Error) {
        let msg = format!("cannot connect: {e}");
        let waiting = self.pending.len();
        for _ in 0..waiting {
            self.sh.upstream_errors.fetch_add(1, Ordering::Relaxed);
            let close = self.pending.front().is_some_and(|p| p.close);
            self.bad_gateway(&msg, close);
            self.pending.pop_front();
            if close {
                self.finish();
                break;
            }
        }
        self.pending.clear();
        self.to_up.clear();
        self.up_off = 0;
        // The rest of the current request's body has nowhere to go.
        self.discard = self.req_body.is_some();
    }

    fn bad_gateway(&mut self, why: &str, close: bool) {
        let body = format!(
            "chaos proxy `{}`: upstream {} failed: {why}\n",
            self.sh.spec.name, self.sh.authority
        );
        let head = format!(
            "HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}{}\r\n\r\n",
            body.len(),
            if close { "\r\nconnection: close" } else { "" }
        );
        self.to_client.extend_from_slice(head.as_bytes());
        self.to_client.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(f: &mut Framing, parts: &[&[u8]]) -> Result<Option<usize>, Malformed> {
        let mut total = 0;
        for p in parts {
            let (used, end) = f.advance(p)?;
            total += used;
            if end {
                return Ok(Some(total));
            }
            assert_eq!(used, p.len());
        }
        Ok(None)
    }

    #[test]
    fn chunked_bodies_end_after_their_trailers_whatever_the_pieces() {
        let body = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Sum: 1\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        // Whole, and split at every position.
        let mut f = Framing::Chunked(Chunked::default());
        assert_eq!(scan(&mut f, &[body]), Ok(Some(end)));
        for cut in 1..end {
            let mut f = Framing::Chunked(Chunked::default());
            assert_eq!(
                scan(&mut f, &[&body[..cut], &body[cut..]]),
                Ok(Some(end)),
                "cut at {cut}"
            );
        }
        let mut f = Framing::Chunked(Chunked::default());
        assert_eq!(scan(&mut f, &[b"zz\r\n"]), Err(Malformed));
        let mut f = Framing::Chunked(Chunked::default());
        assert_eq!(scan(&mut f, &[b"2\r\nabX\r\n"]), Err(Malformed));
    }

    #[test]
    fn a_request_head_is_rewritten_for_the_upstream() {
        // A complete, valid head: its length, body framing, facts and the
        // head sent upstream.
        let rewrite = |head: &[u8], authority: &str, prefix: &str| {
            let mut out = Vec::new();
            let (len, body, p) = request_head(head, authority, prefix, &mut out)
                .expect("valid")
                .expect("complete");
            (len, body, p, String::from_utf8(out).expect("utf-8"))
        };
        let head = b"POST http://front:1/a?b=1 HTTP/1.1\r\nHost: front\r\nConnection: close\r\nUpgrade: x\r\nContent-Length: 3\r\nX-A: y\r\n\r\nabc";
        let (len, body, p, out) = rewrite(head, "up:9", "/pre");
        assert_eq!(len, head.len() - 3);
        assert!(matches!(body, Some(Framing::Length(3))));
        assert!(p.close && !p.head);
        assert_eq!(
            out,
            "POST /pre/a?b=1 HTTP/1.1\r\nContent-Length: 3\r\nX-A: y\r\nhost: up:9\r\n\r\n"
        );
        // HTTP/1.0 with keep-alive asks the upstream for it too.
        let (_, _, p, out) = rewrite(
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            "up",
            "",
        );
        assert!(!p.close);
        assert_eq!(
            out,
            "GET / HTTP/1.0\r\nconnection: keep-alive\r\nhost: up\r\n\r\n"
        );
        // Chunks and a length: the length goes.
        let (_, body, _, out) = rewrite(
            b"POST / HTTP/1.1\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
            "up",
            "",
        );
        assert!(matches!(body, Some(Framing::Chunked(_))));
        assert_eq!(
            out,
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nhost: up\r\n\r\n"
        );
        let mut out = Vec::new();
        assert!(matches!(
            request_head(b"GET / HTTP/1.1\r\nHost: a\r\n", "up", "", &mut out),
            Ok(None)
        ));
        assert!(request_head(
            b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "up",
            "",
            &mut out
        )
        .is_err());
        assert!(request_head(
            b"GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n",
            "up",
            "",
            &mut out
        )
        .is_err());
        // HTTP/1.0 closes unless it asks for keep-alive.
        let (_, _, p) = request_head(b"GET / HTTP/1.0\r\n\r\n", "up", "", &mut out)
            .expect("valid")
            .expect("complete");
        assert!(p.close);
    }

    #[test]
    fn response_framing_follows_the_status_and_the_request() {
        let h = |b: &[u8], head| response_head(b, head).expect("valid").expect("complete");
        assert!(matches!(
            h(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).body,
            Some(Framing::Length(5))
        ));
        assert!(h(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .body
            .is_none());
        assert!(h(b"HTTP/1.1 204 No Content\r\n\r\n", false).body.is_none());
        assert!(h(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false)
            .body
            .is_none());
        assert!(matches!(
            h(b"HTTP/1.1 200 OK\r\n\r\n", false).body,
            Some(Framing::UntilClose)
        ));
        assert!(matches!(
            h(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .body,
            Some(Framing::Chunked(_))
        ));
        assert!(h(b"HTTP/1.1 100 Continue\r\n\r\n", false).interim);
    }
}
