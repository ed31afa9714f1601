//! A small HTTP/1.1 server and client over `std::net`, parsing with
//! `httparse`: one thread per connection, one request per connection
//! (`Connection: close`), bounded header and body sizes, and timeouts on every
//! read and write. Enough for an example service, with no async runtime to
//! build into a static binary.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;
const MAX_CONNECTIONS: usize = 128;

/// A request the server received.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// A response to send, or one the client received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Handles requests.
pub type Handler = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

/// Accepts connections on `listener` forever, a thread each (at most
/// [`MAX_CONNECTIONS`] at once: beyond that a client gets a 503 at once).
pub fn serve(listener: &TcpListener, handler: &Handler) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = write_response(
                &mut stream,
                &Response::new(503, "text/plain", "too many connections\n")
                    .with_header("Retry-After", "1"),
            );
            continue;
        }
        let handler = Arc::clone(handler);
        let open = Arc::clone(&open);
        std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
            let resp = match read_request(&mut stream) {
                Ok(req) => handler(&req),
                Err((status, msg)) => Response::new(status, "text/plain", format!("{msg}\n")),
            };
            let _ = write_response(&mut stream, &resp);
            let _ = stream.shutdown(Shutdown::Both);
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn read_request(stream: &mut TcpStream) -> Result<Request, (u16, String)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_len = loop {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| (400, format!("reading the request: {e}")))?;
        if n == 0 {
            return Err((400, "the connection closed before a full request".into()));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => break len,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err((413, "request head too large".into()));
            }
            Err(e) => return Err((400, format!("malformed request: {e}"))),
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&buf).map_err(|e| (400, e.to_string()))?;
    let target = req.path.unwrap_or("/").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let mut out = Request {
        method: req.method.unwrap_or("GET").to_string(),
        path,
        query,
        headers: req
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    };
    let len: usize = match out.header("content-length") {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| (400, format!("bad Content-Length `{v}`")))?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err((413, format!("body over {MAX_BODY} bytes")));
    }
    let mut body = buf[head_len..].to_vec();
    while body.len() < len {
        let n = stream
            .read(&mut chunk)
            .map_err(|e| (400, format!("reading the body: {e}")))?;
        if n == 0 {
            return Err((400, "the connection closed mid-body".into()));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    out.body = body;
    Ok(out)
}

fn write_response(stream: &mut TcpStream, resp: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        resp.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&resp.body)?;
    stream.flush()
}

/// An `http://host[:port]/path` URL, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("`{s}` is not an absolute URL (http://host/path)"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("`{s}`: only http and https URLs can be audited")),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let authority = authority.rsplit('@').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p.parse().map_err(|_| format!("`{s}`: bad port `{p}`"))?;
                (h.to_string(), port)
            }
            _ => (authority.to_string(), default_port),
        };
        if host.is_empty() {
            return Err(format!("`{s}` names no host"));
        }
        Ok(Url {
            scheme,
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            path,
        })
    }

    /// `scheme://host[:port]`, the port only when it is not the scheme's default.
    pub fn origin(&self) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            format!("{}://{host}", self.scheme)
        } else {
            format!("{}://{host}:{}", self.scheme, self.port)
        }
    }

    /// A URL on the same origin with another path.
    pub fn with_path(&self, path: &str) -> Url {
        Url {
            path: path.to_string(),
            ..self.clone()
        }
    }

    /// Resolves an `href` found on this page; `None` for other schemes.
    pub fn join(&self, href: &str) -> Option<Url> {
        if href.starts_with("http://") || href.starts_with("https://") {
            return Url::parse(href).ok();
        }
        if href.starts_with("//") {
            return Url::parse(&format!("{}:{href}", self.scheme)).ok();
        }
        if href.contains(':') && !href.starts_with('/') {
            return None; // mailto:, javascript:, ...
        }
        let path = if href.starts_with('/') {
            href.to_string()
        } else {
            let base = self.path.split('?').next().unwrap_or("/");
            let dir = &base[..=base.rfind('/').unwrap_or(0)];
            format!("{dir}{href}")
        };
        Some(self.with_path(path.split('#').next().unwrap_or("/")))
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.origin(), self.path)
    }
}

/// Why a fetch failed, one kind per thing a user would fix differently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The host name does not resolve.
    Dns(String),
    /// Nothing listens on the port.
    Refused,
    /// The peer reset the connection.
    Reset,
    /// No connection, or no complete answer, within the timeout.
    Timeout(Duration),
    /// https: this worker speaks plain HTTP only.
    Tls,
    /// The answer is not HTTP.
    Protocol(String),
    Io(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Dns(h) => write!(f, "DNS resolution failed for `{h}`"),
            FetchError::Refused => write!(f, "connection refused"),
            FetchError::Reset => write!(f, "connection reset by peer"),
            FetchError::Timeout(t) => write!(f, "timed out after {} ms", t.as_millis()),
            FetchError::Tls => write!(
                f,
                "TLS is not supported by this example worker: it fetches http:// URLs only"
            ),
            FetchError::Protocol(m) => write!(f, "invalid HTTP response: {m}"),
            FetchError::Io(m) => write!(f, "{m}"),
        }
    }
}

impl FetchError {
    /// A short machine-readable kind, stored with results.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Dns(_) => "dns",
            FetchError::Refused => "connection_refused",
            FetchError::Reset => "connection_reset",
            FetchError::Timeout(_) => "timeout",
            FetchError::Tls => "tls",
            FetchError::Protocol(_) => "protocol",
            FetchError::Io(_) => "io",
        }
    }
}

fn io_error(e: &std::io::Error, timeout: Duration) -> FetchError {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => FetchError::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => FetchError::Reset,
        K::TimedOut | K::WouldBlock => FetchError::Timeout(timeout),
        _ => FetchError::Io(e.to_string()),
    }
}

/// `GET url` with `timeout` for the whole exchange (connect, send, receive).
pub fn get(url: &Url, timeout: Duration, user_agent: &str) -> Result<Response, FetchError> {
    if url.scheme == "https" {
        return Err(FetchError::Tls);
    }
    let start = Instant::now();
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|_| FetchError::Dns(url.host.clone()))?
        .collect();
    if addrs.is_empty() {
        return Err(FetchError::Dns(url.host.clone()));
    }
    let mut last = FetchError::Refused;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = io_error(&e, timeout),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let left = |start: Instant| {
        timeout
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
            .ok_or(FetchError::Timeout(timeout))
    };
    stream
        .set_write_timeout(Some(left(start)?))
        .map_err(|e| io_error(&e, timeout))?;
    let host = if url.port == 80 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path
    );
    stream
        .write_all(req.as_bytes())
        .map_err(|e| io_error(&e, timeout))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(Some(left(start)?))
            .map_err(|e| io_error(&e, timeout))?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > MAX_BODY + MAX_HEAD {
                    break; // enough to audit: the rest is cut
                }
                if complete(&buf) {
                    break;
                }
            }
            Err(e) => return Err(io_error(&e, timeout)),
        }
    }
    parse_response(&buf)
}

/// True when `buf` holds a whole response with a Content-Length.
fn complete(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = resp.parse(buf) else {
        return false;
    };
    resp.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .is_some_and(|len| buf.len() >= head + len)
}

fn parse_response(buf: &[u8]) -> Result<Response, FetchError> {
    if buf.is_empty() {
        return Err(FetchError::Protocol("empty response".into()));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(FetchError::Protocol("the headers were cut off".into()))
        }
        Err(e) => return Err(FetchError::Protocol(e.to_string())),
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let raw = &buf[head..];
    let chunked = header(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(raw)
    } else {
        match header(&headers, "content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
            Some(len) => raw[..len.min(raw.len())].to_vec(),
            None => raw.to_vec(),
        }
    };
    Ok(Response {
        status: resp.code.unwrap_or(0),
        headers,
        body,
    })
}

/// Decodes a chunked body; a truncated one yields what arrived.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else { break };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        let end = (start + size).min(raw.len());
        out.extend_from_slice(&raw[start..end]);
        raw = raw.get(end + 2..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://example.org:8080/a/b?q=1#frag").unwrap();
        assert_eq!(
            u,
            Url {
                scheme: "http".into(),
                host: "example.org".into(),
                port: 8080,
                path: "/a/b?q=1".into()
            }
        );
        assert_eq!(Url::parse("https://x").unwrap().port, 443);
        assert_eq!(Url::parse("http://x").unwrap().path, "/");
        assert!(Url::parse("ftp://x").unwrap_err().contains("only http"));
        assert!(Url::parse("x.org").is_err());
        assert_eq!(u.join("c").unwrap().path, "/a/c");
        assert_eq!(u.join("/d#x").unwrap().path, "/d");
        assert_eq!(u.join("http://o/p").unwrap().host, "o");
        assert!(u.join("mailto:a@b").is_none());
        assert_eq!(u.to_string(), "http://example.org:8080/a/b?q=1");
        assert_eq!(
            Url::parse("http://x:80/p").unwrap().to_string(),
            "http://x/p"
        );
        assert_eq!(
            Url::parse("http://[::1]:81/").unwrap().origin(),
            "http://[::1]:81"
        );
        assert_eq!(
            Url::parse("http://[::1]:81/").unwrap(),
            Url {
                scheme: "http".into(),
                host: "::1".into(),
                port: 81,
                path: "/".into()
            }
        );
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        assert_eq!(dechunk(b"5\r\nhel"), b"hel");
    }

    #[test]
    fn server_and_client_round_trip() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h: Handler = Arc::new(|r: &Request| {
            Response::new(
                200,
                "text/plain",
                format!("{} {} {} {}", r.method, r.path, r.query, r.body.len()),
            )
        });
        std::thread::spawn(move || serve(&l, &h));
        let u = Url::parse(&format!("http://{addr}/x?y=1")).unwrap();
        let r = get(&u, Duration::from_secs(5), "t").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "GET /x y=1 0"));
    }

    #[test]
    fn fetch_errors_are_classified() {
        // A port nothing listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let u = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        assert_eq!(
            get(&u, Duration::from_secs(2), "t"),
            Err(FetchError::Refused)
        );
        let u = Url::parse("http://no-such-host.invalid/").unwrap();
        assert!(matches!(
            get(&u, Duration::from_secs(2), "t"),
            Err(FetchError::Dns(_))
        ));
        let u = Url::parse("https://127.0.0.1/").unwrap();
        assert_eq!(get(&u, Duration::from_secs(2), "t"), Err(FetchError::Tls));
        // A server that accepts and never answers.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let u = Url::parse(&format!("http://{}/", l.local_addr().unwrap())).unwrap();
        let t = Instant::now();
        assert!(matches!(
            get(&u, Duration::from_millis(300), "t"),
            Err(FetchError::Timeout(_))
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(l);
    }
}
