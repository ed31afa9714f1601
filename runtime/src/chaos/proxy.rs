//! The fault proxy: an HTTP/1.1 reverse proxy (hyper server and hyper
//! client, keep-alive on both sides) that forwards to one upstream and injects
//! the faults of a [`Spec`] on the way. It runs on runtimes of its own, so
//! the scheduler's thread never delays it, and everything it holds — listener,
//! connections, held requests — is gone once the [`Proxy`] is dropped.
//!
//! Each client connection gets an upstream connection of its own for its
//! lifetime, driven by the same task: a request crosses no channel, pool or
//! thread on its way, and a request that no fault can select takes no lock.
//! A plain-TCP connection that no fault can ever select skips both HTTP
//! codecs: `relay` copies its bytes, counting requests and responses.
//! Each fault draws from its own ChaCha8 stream seeded from the block's
//! `seed` and the fault's position, once per request it selects: a run whose
//! requests arrive in the same order injects the same faults. See docs/chaos.md.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::spec::{Fault, Spec};

mod relay;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;
/// A response body: the upstream's as it came (no box, no copy), or one the
/// proxy made or reshaped.
enum OutBody {
    Forwarded(Incoming),
    Made(Body),
}

impl hyper::body::Body for OutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            OutBody::Forwarded(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BoxError::from))),
            OutBody::Made(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            OutBody::Forwarded(b) => b.is_end_stream(),
            OutBody::Made(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            OutBody::Forwarded(b) => b.size_hint(),
            OutBody::Made(b) => b.size_hint(),
        }
    }
}

/// A running proxy. Dropping it stops it: the listener closes and every
/// connection is cut.
pub struct Proxy {
    /// The runtimes serving it: the first accepts; connections are spread
    /// over all of them.
    rts: Vec<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The URL steps use: `http://127.0.0.1:PORT`, `https://...` with a `tls`
    /// fault, an unresolvable `*.invalid` host with a `dns` fault.
    pub url: String,
    pub host: String,
}

#[derive(Default)]
struct Count {
    seen: u64,
    injected: u64,
}

struct State {
    rngs: Vec<ChaCha8Rng>,
    counts: Vec<Count>,
}

struct Shared {
    spec: Spec,
    start: Instant,
    /// `host:port` of the upstream, and the path prefix its URL carries.
    authority: String,
    prefix: String,
    authority_value: HeaderValue,
    /// Path filters, compiled.
    matchers: Vec<Option<globset::GlobSet>>,
    /// What each fault does to a request (the kind, parsed once).
    roles: Vec<Role>,
    /// Whether any per-request fault exists (else the fast path).
    any_request_fault: bool,
    state: Mutex<State>,
    requests: AtomicU64,
    connections: AtomicU64,
    forwarded: AtomicU64,
    upstream_errors: AtomicU64,
    refusals: AtomicU64,
    tls_handshakes_failed: AtomicU64,
}

/// The part a fault plays in [`Shared::decide`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Latency,
    /// `timeout`, `http_status`, `reset`, `close`: ends the request.
    Terminal,
    /// `bandwidth`, `slow_body`: paces the response.
    Shape,
    /// Acts on the whole proxy, not per request.
    Proxy,
}

/// What to do to one request.
#[derive(Default)]
struct Decision {
    delay: Duration,
    /// Index of a `timeout`, `http_status`, `reset` or `close` fault.
    terminal: Option<usize>,
    /// Index of a `bandwidth` or `slow_body` fault.
    shape: Option<usize>,
}

impl Proxy {
    /// Binds `spec.listen` and starts serving. Must be called outside any
    /// blocking section; it does not need a runtime.
    pub fn start(spec: Spec) -> Result<Proxy, String> {
        let upstream = spec.upstream.clone().ok_or("a proxy needs `upstream`")?;
        let rest = upstream
            .strip_prefix("http://")
            .ok_or_else(|| format!("`upstream = \"{upstream}\"` must start with http://"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("`upstream = \"{upstream}\"` names no host"));
        }
        let authority_value = HeaderValue::from_str(authority)
            .map_err(|_| format!("`upstream = \"{upstream}\"`: invalid host"))?;
        let mut matchers = Vec::new();
        for f in &spec.faults {
            matchers.push(if f.paths.is_empty() {
                None
            } else {
                let mut b = globset::GlobSetBuilder::new();
                for p in &f.paths {
                    b.add(globset::Glob::new(p).map_err(|e| format!("`path = \"{p}\"`: {e}"))?);
                }
                Some(b.build().map_err(|e| e.to_string())?)
            });
        }
        let rts = workers(&spec.name)?;
        let listener = std::net::TcpListener::bind(&spec.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", spec.listen))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let tls = if spec.has("tls") {
            Some(self_signed_acceptor()?)
        } else {
            None
        };
        let n = spec.faults.len();
        let state = State {
            rngs: (0..n)
                .map(|i| ChaCha8Rng::seed_from_u64(stream_seed(spec.seed, i)))
                .collect(),
            counts: (0..n).map(|_| Count::default()).collect(),
        };
        let host = if spec.has("dns") {
            format!(
                "{}.chaos.invalid",
                crate::docker::sanitize(&spec.name).to_lowercase()
            )
        } else if addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            addr.ip().to_string()
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{host}:{}", addr.port());
        let roles: Vec<Role> = spec
            .faults
            .iter()
            .map(|f| match f.kind.as_str() {
                "latency" => Role::Latency,
                "timeout" | "http_status" | "reset" | "close" => Role::Terminal,
                "bandwidth" | "slow_body" | "slicer" => Role::Shape,
                _ => Role::Proxy,
            })
            .collect();
        let shared = Arc::new(Shared {
            any_request_fault: roles.iter().any(|r| *r != Role::Proxy),
            roles,
            authority: authority.to_string(),
            prefix: prefix.to_string(),
            authority_value,
            matchers,
            spec,
            start: Instant::now(),
            state: Mutex::new(state),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            upstream_errors: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            tls_handshakes_failed: AtomicU64::new(0),
        });
        // Refusing from the start: closed before anyone can connect.
        let listener = if shared.refusing(0).is_some() {
            shared.refusals.fetch_add(1, Ordering::Relaxed);
            None
        } else {
            let _guard = rts[0].enter();
            Some(TcpListener::from_std(listener).map_err(|e| e.to_string())?)
        };
        let handles = rts.iter().map(|r| r.handle().clone()).collect();
        rts[0].spawn(accept_loop(listener, addr, shared.clone(), tls, handles));
        Ok(Proxy {
            rts,
            shared,
            addr,
            url,
            host,
        })
    }

    /// What the proxy did so far, as the chaos report's JSON.
    pub fn report(&self) -> serde_json::Value {
        self.shared.report()
    }

    /// Stops serving (as dropping does) and returns the final report.
    pub fn stop(mut self) -> serde_json::Value {
        let r = self.report();
        for rt in self.rts.drain(..) {
            rt.shutdown_background();
        }
        r
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for rt in self.rts.drain(..) {
            // Not `drop(rt)`: that blocks, which a caller's runtime forbids.
            rt.shutdown_background();
        }
    }
}

/// The proxy's runtimes: two of one thread each, rather than one of two
/// threads. A connection's task never moves to the other thread, so no
/// request pays for a cross-thread wake-up or work stealing (measured:
/// 88 % against 46 % of direct throughput at 4 connections; docs/chaos.md).
fn workers(name: &str) -> Result<Vec<tokio::runtime::Runtime>, String> {
    (0..2)
        .map(|_| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("chaos-{name}"))
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the proxy's runtime: {e}"))
        })
        .collect()
}

/// Fault `i`'s stream: distinct per fault, fixed by the seed.
fn stream_seed(seed: u64, i: usize) -> u64 {
    seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Shared {
    fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn decide(&self, method: &str, path: &str) -> Decision {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut d = Decision::default();
        if !self.any_request_fault {
            return d;
        }
        let t = self.elapsed_ms();
        let selects = |i: usize, f: &Fault| {
            self.roles[i] != Role::Proxy
                && f.active_at(t)
                && (f.methods.is_empty() || f.methods.iter().any(|m| m == method))
                && self.matchers[i].as_ref().is_none_or(|m| m.is_match(path))
        };
        // Outside every window, or filtered out: no draw, no count, no lock.
        let Some(first) = self
            .spec
            .faults
            .iter()
            .enumerate()
            .position(|(i, f)| selects(i, f))
        else {
            return d;
        };
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let State { rngs, counts } = &mut *st;
        for (i, f) in self.spec.faults.iter().enumerate().skip(first) {
            if i > first && !selects(i, f) {
                continue;
            }
            let role = self.roles[i];
            counts[i].seen += 1;
            // One draw per selected request, hit or not, so that each
            // fault's sequence depends only on the seed and the request order.
            let roll: f64 = rngs[i].random();
            if roll >= f.rate {
                continue;
            }
            if role == Role::Latency {
                let jitter = if f.jitter_ms > 0 {
                    rngs[i].random_range(-(f.jitter_ms as i64)..=f.jitter_ms as i64)
                } else {
                    0
                };
                d.delay += Duration::from_millis((f.delay_ms as i64 + jitter).max(0) as u64);
                counts[i].injected += 1;
            } else if role == Role::Terminal && d.terminal.is_none() {
                d.terminal = Some(i);
            } else if role == Role::Shape && d.shape.is_none() {
                d.shape = Some(i);
            }
        }
        if d.terminal.is_some() {
            d.shape = None;
        }
        for i in d.terminal.iter().chain(d.shape.iter()) {
            counts[*i].injected += 1;
        }
        d
    }

    fn report(&self) -> serde_json::Value {
        let st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut by_kind = serde_json::Map::new();
        let mut faults = Vec::new();
        for (i, f) in self.spec.faults.iter().enumerate() {
            let (seen, injected) = match f.kind.as_str() {
                "refuse" => (
                    self.refusals.load(Ordering::Relaxed),
                    self.refusals.load(Ordering::Relaxed),
                ),
                "tls" => (
                    self.connections.load(Ordering::Relaxed),
                    self.connections.load(Ordering::Relaxed),
                ),
                "dns" => (0, 0),
                _ => (st.counts[i].seen, st.counts[i].injected),
            };
            let e = by_kind.entry(f.kind.clone()).or_insert(json!(0));
            *e = json!(e.as_u64().unwrap_or(0) + injected);
            faults.push(json!({
                "kind": f.kind,
                "fault": f.describe(),
                "seen": seen,
                "injected": injected,
            }));
        }
        json!({
            "name": self.spec.name,
            "type": "proxy",
            "upstream": self.spec.upstream,
            "seed": self.spec.seed,
            "elapsed_ms": self.elapsed_ms(),
            "connections": self.connections.load(Ordering::Relaxed),
            "requests": self.requests.load(Ordering::Relaxed),
            "forwarded": self.forwarded.load(Ordering::Relaxed),
            "upstream_errors": self.upstream_errors.load(Ordering::Relaxed),
            "tls_handshakes_failed": self.tls_handshakes_failed.load(Ordering::Relaxed),
            "injected": by_kind,
            "faults": faults,
        })
    }

    /// Whether no per-request fault can select a request from `t` on: there
    /// is none, or every one's window has closed for good (a window that
    /// opens later still counts).
    fn quiet_from(&self, t: u64) -> bool {
        self.spec
            .faults
            .iter()
            .zip(&self.roles)
            .all(|(f, r)| *r == Role::Proxy || f.for_ms.is_some_and(|d| f.after_ms + d <= t))
    }

    /// The end of the `refuse` window covering `t` (`u64::MAX`: until the
    /// proxy stops), or `None` when not refusing.
    fn refusing(&self, t: u64) -> Option<u64> {
        self.spec
            .faults
            .iter()
            .filter(|f| f.kind == "refuse" && f.active_at(t))
            .map(|f| f.for_ms.map_or(u64::MAX, |d| f.after_ms + d))
            .max()
    }

    /// When the next `refuse` window opens after `t`.
    fn next_refusal(&self, t: u64) -> Option<u64> {
        self.spec
            .faults
            .iter()
            .filter(|f| f.kind == "refuse" && f.after_ms > t)
            .map(|f| f.after_ms)
            .min()
    }
}

async fn accept_loop(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handles: Vec<tokio::runtime::Handle>,
) {
    loop {
        let t = shared.elapsed_ms();
        if let Some(end) = shared.refusing(t) {
            // `refuse`: nobody listens, so connecting is refused by the kernel.
            if listener.take().is_some() {
                shared.refusals.fetch_add(1, Ordering::Relaxed);
            }
            if end == u64::MAX {
                return;
            }
            tokio::time::sleep(Duration::from_millis(end.saturating_sub(t))).await;
            continue;
        }
        let listener = match &mut listener {
            Some(l) => l,
            None => {
                let l = loop {
                    match TcpListener::bind(addr).await {
                        Ok(l) => break l,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                listener.insert(l)
            }
        };
        let next = shared.next_refusal(t);
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = sleep_ms(next.map(|n| n - t)) => continue,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors and the like: back off a little.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let n = shared.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let tls = tls.clone();
        let handle = &handles[n as usize % handles.len()];
        // To the next runtime: the socket leaves this one's reactor.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        handle.spawn(async move {
            let Ok(stream) = TcpStream::from_std(stream) else {
                return;
            };
            let stream = match tls {
                None => Stream::Plain(stream),
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => Stream::Tls(Box::new(s)),
                    Err(_) => {
                        shared.tls_handshakes_failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
            };
            serve(stream, shared).await;
        });
    }
}

async fn sleep_ms(ms: Option<u64>) {
    match ms {
        Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        None => std::future::pending().await,
    }
}

/// An upstream connection's future, run by the task of the client
/// connection it serves.
type Driven = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The upstream side of one client connection: its own HTTP/1.1 connection,
/// opened on the first forwarded request and again when the upstream closed
/// it. hyper serves a connection's requests one at a time, so the sender is
/// never contended.
struct Upstream {
    sender: Mutex<Option<SendRequest<Incoming>>>,
    /// Hands a new connection's future to the client connection's task.
    drive: tokio::sync::mpsc::UnboundedSender<Driven>,
}

async fn serve(stream: Stream, shared: Arc<Shared>) {
    let stream = match stream {
        // No fault can select any request of this connection: bytes are
        // relayed, with no HTTP codec (docs/chaos.md, "Overhead").
        Stream::Plain(tcp) if shared.quiet_from(shared.elapsed_ms()) => {
            return relay::relay(tcp, &shared).await;
        }
        s => s,
    };
    let reset = Arc::new(AtomicBool::new(false));
    let conn = Conn {
        stream,
        reset: reset.clone(),
    };
    let (drive, mut driven) = tokio::sync::mpsc::unbounded_channel();
    let upstream = Arc::new(Upstream {
        sender: Mutex::new(None),
        drive,
    });
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let reset = reset.clone();
        let upstream = upstream.clone();
        async move { handle(req, &shared, &reset, &upstream).await }
    });
    let server = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(conn), service);
    let mut server = std::pin::pin!(server);
    // The client connection and its upstream connection in one task: an
    // upstream response wakes the task that writes it back, on the same
    // thread, with no hand-over. The upstream connection closes with it.
    let mut upstreams = FuturesUnordered::<Driven>::new();
    let _ = std::future::poll_fn(|cx| {
        while let Poll::Ready(Some(c)) = driven.poll_recv(cx) {
            upstreams.push(c);
        }
        while let Poll::Ready(Some(())) = upstreams.poll_next_unpin(cx) {}
        server.as_mut().poll(cx)
    })
    .await;
}

async fn handle(
    req: Request<Incoming>,
    sh: &Shared,
    reset: &AtomicBool,
    upstream: &Upstream,
) -> Result<Response<OutBody>, io::Error> {
    let d = sh.decide(req.method().as_str(), req.uri().path());
    if !d.delay.is_zero() {
        tokio::time::sleep(d.delay).await;
    }
    if let Some(i) = d.terminal {
        let f = &sh.spec.faults[i];
        match f.kind.as_str() {
            // Hold the connection: no byte is ever sent.
            "timeout" => std::future::pending::<()>().await,
            "http_status" => return Ok(status_response(f).map(OutBody::Made)),
            "reset" => {
                reset.store(true, Ordering::SeqCst);
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "chaos: reset",
                ));
            }
            // A service error makes hyper close the connection, unanswered.
            _ => return Err(io::Error::other("chaos: close")),
        }
    }
    Ok(match forward(req, sh, upstream).await {
        Ok(resp) => {
            sh.forwarded.fetch_add(1, Ordering::Relaxed);
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = match d.shape {
                Some(i) => OutBody::Made(shaped(body, &sh.spec.faults[i])),
                None => OutBody::Forwarded(body),
            };
            Response::from_parts(parts, body)
        }
        Err(e) => {
            sh.upstream_errors.fetch_add(1, Ordering::Relaxed);
            let mut r = Response::new(OutBody::Made(full(format!(
                "chaos proxy `{}`: upstream {} failed: {e}\n",
                sh.spec.name, sh.authority
            ))));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    })
}

/// Sends `req` to the upstream on the client connection's own upstream
/// connection, opening one when there is none or the upstream closed it (a
/// request it gave back unsent is sent again on the new one, once).
async fn forward(
    req: Request<Incoming>,
    sh: &Shared,
    upstream: &Upstream,
) -> Result<Response<Incoming>, String> {
    let (mut parts, body) = req.into_parts();
    // Origin form, as HTTP/1.1 sends to a server; the client's own URI
    // already is unless the upstream has a path prefix.
    if !sh.prefix.is_empty() || parts.uri.scheme().is_some() {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("{}{pq}", sh.prefix)
            .parse()
            .map_err(|e| format!("{e}"))?;
    }
    parts.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(hyper::header::HOST, sh.authority_value.clone());
    let mut req = Request::from_parts(parts, body);
    let pinned = upstream
        .sender
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let mut fresh = false;
    let mut sender = match pinned {
        Some(s) if !s.is_closed() => s,
        _ => {
            fresh = true;
            connect(sh, upstream).await?
        }
    };
    let resp = loop {
        let sent = match sender.ready().await {
            Ok(()) => sender.try_send_request(req).await,
            // The idle connection was closed by the upstream: a new one.
            Err(_) if !fresh => {
                fresh = true;
                sender = connect(sh, upstream).await?;
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        match sent {
            Ok(resp) => break resp,
            Err(mut e) => match e.take_message() {
                Some(back) if !fresh => {
                    req = back;
                    fresh = true;
                    sender = connect(sh, upstream).await?;
                }
                _ => return Err(e.into_error().to_string()),
            },
        }
    };
    *upstream
        .sender
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender);
    Ok(resp)
}

/// A new upstream connection for `upstream`'s client connection.
async fn connect(sh: &Shared, upstream: &Upstream) -> Result<SendRequest<Incoming>, String> {
    let tcp = TcpStream::connect(sh.authority.as_str())
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    upstream
        .drive
        .send(Box::pin(async move {
            let _ = conn.await;
        }))
        .map_err(|_| "the client connection is gone".to_string())?;
    Ok(sender)
}

fn strip_hop_by_hop(h: &mut hyper::HeaderMap) {
    use hyper::header::{
        CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, UPGRADE,
    };
    // Standard names as constants: not parsed again for every request.
    for name in [
        CONNECTION,
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        UPGRADE,
    ] {
        h.remove(name);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

fn status_response(f: &Fault) -> Response<Body> {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let body = f.body.clone().unwrap_or_else(|| {
        format!(
            "{} {} (injected by pipe chaos)\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    });
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(ra) = f
        .retry_after
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        h.insert(hyper::header::RETRY_AFTER, ra);
    }
    for (k, v) in &f.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v)) {
            h.insert(k, v);
        }
    }
    r
}

/// The response body re-sent slowly: `bandwidth` paces bytes per second in
/// 50 ms slices, `slow_body` sends `chunk` bytes every `delay`.
fn shaped(mut body: Incoming, f: &Fault) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(2);
    let (slice, pause) = if f.kind == "bandwidth" {
        let slice = (f.bytes_per_second / 20).max(1) as usize;
        (
            slice,
            Duration::from_nanos(slice as u64 * 1_000_000_000 / f.bytes_per_second),
        )
    } else {
        (f.chunk.max(1), Duration::from_millis(f.delay_ms))
    };
    tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(mut data) => {
                        while !data.is_empty() {
                            let piece = data.split_to(slice.min(data.len()));
                            tokio::time::sleep(pause).await;
                            if tx.send(Ok(Frame::data(piece))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(other) => {
                        if tx.send(Ok(other)).await.is_err() {
                            return;
                        }
                    }
                },
                Err(e) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    StreamBody::new(stream).boxed_unsync()
}

fn self_signed_acceptor() -> Result<tokio_rustls::TlsAcceptor, String> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .map_err(|e| format!("cannot use the self-signed certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A client connection. When a `reset` fault hit it, it closes with
/// SO_LINGER 0, which makes the kernel send a TCP RST instead of a FIN.
struct Conn {
    stream: Stream,
    reset: Arc<AtomicBool>,
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match &self.stream {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// After a `reset`: no more writing, the connection is to be dropped.
    fn check_reset(&self) -> io::Result<()> {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.tcp().set_zero_linger();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "chaos: reset",
            ));
        }
        Ok(())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.tcp().set_zero_linger();
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        me.check_reset()?;
        match &mut me.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        me.check_reset()?;
        match &mut me.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        me.check_reset()?;
        match &mut me.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
