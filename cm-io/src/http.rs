//! A small, bounded HTTP/1.1 server for the health endpoints and metrics (SPEC.md §15).
//!
//! It serves one synchronous handler — a pure function of a request that reads a snapshot the
//! daemon publishes, never the database — with hard bounds: at most `max_connections`
//! connections at once and at most `max_per_address` from one IP address (SPEC §16: per peer
//! and total; a connection over either limit is closed at once and counted), the request
//! head must arrive within `request_timeout`, a connection lives at most `connection_lifetime`,
//! GET and HEAD only (anything else: 405), no request body is read.
//!
//! Built on hyper 1 (with hyper-util's tokio glue) rather than a framework: the handler needs
//! no routing, extractors or middleware, and hyper is the HTTP engine such frameworks sit on,
//! so this keeps one well-kept parser and no hand-written HTTP.
//!
//! Transport security (§16) wraps the byte stream, not this module: [`serve_with`] takes an
//! `accept` step that turns each TCP connection into the stream to speak HTTP on (a TLS
//! handshake, say); [`serve`] is the plain one and [`serve_secure`] picks TLS (the node's
//! reloadable material, client certificate optional) or plain HTTP by the process's
//! [`Security`]. [`request`] is a small blocking client (HTTPS with the cluster CA or plain) for
//! tools and tests, [`KeptAlive`] the same over one kept-alive connection.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::transport::Security;

/// Longest request target (path and query) handed to the handler; longer ones get 414.
pub const MAX_TARGET_LEN: usize = 1024;
/// Most query parameters handed to the handler; more get 400.
pub const MAX_QUERY_PARAMS: usize = 16;

/// The server's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections served at once; one more is closed at once.
    pub max_connections: usize,
    /// Connections served at once from one IP address; one more from it is closed at once,
    /// so one client cannot take every slot from the load balancer's checks (§16).
    pub max_per_address: usize,
    /// Time for a request head to arrive (also between requests on a kept-alive connection).
    pub request_timeout: Duration,
    /// A connection is closed after this long whatever it does.
    pub connection_lifetime: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_per_address: 16,
            request_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(60),
        }
    }
}

/// The method of an accepted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// HEAD: answered like GET, without the body.
    Head,
}

/// A request as the handler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// GET or HEAD.
    pub method: HttpMethod,
    /// The path, e.g. `/primary`.
    pub path: String,
    /// The query's `key=value` pairs in order, percent-decoded (`+` is a space); a key without
    /// `=` has an empty value.
    pub query: Vec<(String, String)>,
}

impl HttpRequest {
    /// The first value of `key`, if any.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The handler's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code (200, 503, ...).
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body (not sent for HEAD).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A JSON answer.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: "application/json",
            body,
        }
    }

    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
}

/// Counters of the server (start at 0 with the process).
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections closed at once because `max_connections` were open, or `max_per_address`
    /// from the same address.
    pub refused: AtomicU64,
    /// Requests answered (any status).
    pub requests: AtomicU64,
    /// Connections closed because their accept step failed: a TLS handshake that failed (a
    /// plain-HTTP request on the TLS port, an untrusted client certificate) or did not end
    /// within `request_timeout`.
    pub handshake_failed: AtomicU64,
}

/// Connections open per IP address (entries removed when they reach 0, so the map holds at
/// most `max_connections` addresses).
#[derive(Debug, Default)]
struct PerAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's share of its address's count, given back when dropped.
struct AddressSlot {
    map: Arc<PerAddress>,
    ip: std::net::IpAddr,
}

impl PerAddress {
    /// A slot for one more connection from `ip`, unless `max` are open from it.
    fn take(map: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<AddressSlot> {
        let mut m = map
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                m.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            map: Arc::clone(map),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut m = self
            .map
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Binds `addr` for [`serve`].
pub async fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `handler` on plain HTTP until `shutdown` completes.
pub async fn serve<H>(
    listener: TcpListener,
    limits: HttpLimits,
    handler: Arc<H>,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
{
    serve_with(listener, limits, handler, stats, shutdown, |tcp| async {
        Ok::<_, io::Error>(tcp)
    })
    .await;
}

/// Serves `handler` on the streams `accept` makes of each TCP connection (plain: the TCP
/// stream itself; TLS: the stream after the handshake), until `shutdown` completes. The accept
/// step runs inside the connection's task and counts against its lifetime.
pub async fn serve_with<H, A, F, S>(
    listener: TcpListener,
    limits: HttpLimits,
    handler: Arc<H>,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()>,
    accept: A,
) where
    H: Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
    A: Fn(TcpStream) -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let accept = Arc::new(accept);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "http connection refused: too many open");
            drop(tcp);
            continue;
        };
        let Some(from_peer) = PerAddress::take(&per_address, peer.ip(), limits.max_per_address)
        else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "http connection refused: too many open from its address");
            drop(tcp);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let handler = Arc::clone(&handler);
        let stats = Arc::clone(&stats);
        let accept = Arc::clone(&accept);
        tokio::spawn(async move {
            let _permit = (permit, from_peer);
            let conn = async {
                match accept(tcp).await {
                    Ok(stream) => serve_connection(stream, limits, handler, stats).await,
                    Err(e) => {
                        stats.handshake_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, error = %e, "http handshake failed");
                    }
                }
            };
            if tokio::time::timeout(limits.connection_lifetime, conn)
                .await
                .is_err()
            {
                tracing::debug!(%peer, "http connection closed at its lifetime");
            }
        });
    }
}

/// Serves `handler` over TLS with `security`'s material (taken per connection, so a SIGHUP
/// reload applies to new connections; a client certificate is optional), or on plain HTTP
/// when `security` is [`Security::Plaintext`]. A handshake is bounded by
/// `limits.request_timeout`; a failed or late one closes the connection and is counted in
/// [`HttpStats::handshake_failed`], never blocking the accept loop.
pub async fn serve_secure<H>(
    listener: TcpListener,
    limits: HttpLimits,
    handler: Arc<H>,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()>,
    security: Security,
) where
    H: Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
{
    let tls = match security {
        Security::Plaintext => return serve(listener, limits, handler, stats, shutdown).await,
        Security::Tls(tls) => tls,
    };
    let budget = limits.request_timeout;
    serve_with(listener, limits, handler, stats, shutdown, move |tcp| {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.http_server_config());
        async move {
            match tokio::time::timeout(budget, acceptor.accept(tcp)).await {
                Ok(r) => r,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake not done within {budget:?}"),
                )),
            }
        }
    })
    .await;
}

/// The TLS side of a [`request`]: roots to verify the server with and the name its
/// certificate must carry (a node's name).
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// Verifies the server against the cluster CA; no client certificate.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry.
    pub server_name: rustls_pki_types::ServerName<'static>,
}

impl ClientTls {
    /// Trusts the CA certificates in the PEM file `ca` and expects `server_name`.
    pub fn from_ca_file(ca: &std::path::Path, server_name: &str) -> Result<Self, String> {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::transport::tls::parse_certs(&pem)
            .map_err(|e| format!("{}: {e}", ca.display()))?
        {
            roots
                .add(c)
                .map_err(|e| format!("{}: bad CA certificate: {e}", ca.display()))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(crate::transport::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| format!("bad server name {server_name:?}: {e}"))?;
        Ok(Self {
            config: Arc::new(config),
            server_name,
        })
    }
}

/// One blocking HTTP/1.1 request on a fresh connection to `addr` (HTTPS when `tls` is given),
/// closed after the answer: (status, body). Reads at most 4 MiB, waits at most `timeout` per read.
pub fn request(
    addr: SocketAddr,
    tls: Option<&ClientTls>,
    method: &str,
    target: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let tcp = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    tcp.set_nodelay(true)?;
    let head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut raw = Vec::new();
    let limit = 4 << 20;
    match tls {
        None => {
            let mut s = tcp;
            s.write_all(head.as_bytes())?;
            s.take(limit).read_to_end(&mut raw)?;
        }
        Some(t) => {
            let conn = rustls::ClientConnection::new(Arc::clone(&t.config), t.server_name.clone())
                .map_err(io::Error::other)?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(head.as_bytes())?;
            match s.take(limit).read_to_end(&mut raw) {
                Ok(_) => {}
                // A server closing without close_notify after a complete answer.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
                Err(e) => return Err(e),
            }
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    Ok((status, body.to_owned()))
}

/// A kept-alive HTTP/1.1 client connection (HTTPS when opened with a [`ClientTls`]) for a
/// sequence of blocking requests — what a load balancer or a scraper that reuses its
/// connection costs the server (benches, tools). Answers must carry `content-length` (this
/// server's do); a head over 16 KiB or a body over 4 MiB is an error.
pub struct KeptAlive {
    stream: KeptStream,
    host: String,
    buf: Vec<u8>,
}

enum KeptStream {
    Plain(std::net::TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>>),
}

impl io::Read for KeptStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl io::Write for KeptStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

impl KeptAlive {
    /// Connects to `addr` (the TLS handshake happens with the first request); every read and
    /// write waits at most `timeout`.
    pub fn open(addr: SocketAddr, tls: Option<&ClientTls>, timeout: Duration) -> io::Result<Self> {
        let tcp = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        tcp.set_nodelay(true)?;
        let stream = match tls {
            None => KeptStream::Plain(tcp),
            Some(t) => {
                let conn =
                    rustls::ClientConnection::new(Arc::clone(&t.config), t.server_name.clone())
                        .map_err(io::Error::other)?;
                KeptStream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
            }
        };
        Ok(Self {
            stream,
            host: addr.to_string(),
            buf: Vec::new(),
        })
    }

    /// One GET on this connection: (status, body length). An error leaves the connection
    /// unusable (open another).
    pub fn get(&mut self, target: &str) -> io::Result<(u16, usize)> {
        use std::io::{Read as _, Write as _};
        const HEAD_MAX: usize = 16 * 1024;
        const BODY_MAX: usize = 4 << 20;
        let head = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.stream.write_all(head.as_bytes())?;
        self.stream.flush()?;
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.buf.len() > HEAD_MAX {
                return Err(io::Error::other("answer head over 16 KiB"));
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {text:?}")))?;
        let len: usize = text
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| io::Error::other("an answer without content-length"))?;
        if len > BODY_MAX {
            return Err(io::Error::other("answer body over 4 MiB"));
        }
        while self.buf.len() < end + len {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.buf.drain(..end + len);
        Ok((status, len))
    }
}

/// Speaks HTTP/1.1 on one stream until the client closes or a bound is hit.
async fn serve_connection<H, S>(
    stream: S,
    limits: HttpLimits,
    handler: Arc<H>,
    stats: Arc<HttpStats>,
) where
    H: Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let resp = answer(&*handler, &req);
        async move { Ok::<_, Infallible>(resp) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// Checks the method and the target, then asks the handler.
fn answer<H>(handler: &H, req: &hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>>
where
    H: Fn(&HttpRequest) -> HttpResponse,
{
    let method = match *req.method() {
        Method::GET => HttpMethod::Get,
        Method::HEAD => HttpMethod::Head,
        _ => {
            let mut r = to_hyper(HttpResponse::text(405, "only GET and HEAD\n"));
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let uri = req.uri();
    let target_len = uri.path().len() + uri.query().map_or(0, str::len);
    if target_len > MAX_TARGET_LEN {
        return to_hyper(HttpResponse::text(414, "request target too long\n"));
    }
    let query = match parse_query(uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return to_hyper(HttpResponse::text(400, format!("{e}\n"))),
    };
    let request = HttpRequest {
        method,
        path: uri.path().to_owned(),
        query,
    };
    to_hyper(handler(&request))
}

fn to_hyper(r: HttpResponse) -> hyper::Response<Full<Bytes>> {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    resp
}

/// Splits a query string into decoded pairs; at most [`MAX_QUERY_PARAMS`].
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_QUERY_PARAMS {
            return Err(format!("more than {MAX_QUERY_PARAMS} query parameters"));
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

/// Percent-decoding (`+` is a space); a bad escape or bytes that are not UTF-8 are an error.
fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in query at {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query part {s:?} is not UTF-8"))
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
