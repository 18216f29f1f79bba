//! Client connections on the API listener: how many one address may hold, and how long a
//! client may take to send a request's headers or stay idle.
//!
//! Owns: [`Guarded`], the Pingora `ServerApp` the API listener runs (it wraps the proxy),
//! which refuses a connection beyond `routing.max_connections_per_address` from one address
//! with a 429 in TS3AudioBot's error shape and hands every other connection to the proxy
//! inside [`TimedStream`], a stream that drops the connection when a request's headers are not
//! complete `routing.header_timeout_ms` after their first byte (Pingora's own limit is 60 s
//! per read, so a client sending a byte a minute holds a connection for ever) or when it sends
//! nothing for `routing.idle_timeout_ms` between requests. A new HTTP/1.1 connection reaches
//! the proxy only once its first request's headers are in (so a stop or an upgrade that begins
//! meanwhile does not drop it unanswered; see [`TimedStream::read_first_request`]).
//! Also [`NodeGate`]: how many requests the router sends one node at once on clients' behalf
//! (`routing.max_node_connections`), so no number of clients makes it open unbounded
//! connections to a node: a request beyond it waits for a place up to the connect timeout,
//! then gets 503 with `Retry-After`.
//! Does not own: the requests themselves (`router`).
//!
//! The stream tells a request's headers from the rest by the bytes it passes: the headers run
//! from the first byte read after a response was written (or the connection opened) to the
//! first empty line. HTTP/1.1 only: an h2 connection (ALPN) gets the connection bound and
//! Pingora's own timeouts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::apps::ServerApp;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::Stream;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
    ALPN,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::cluster::NodeId;
use crate::protocol::api_json::{ApiError, Reason};

/// The limits, from `routing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections one client address may hold at once (0: no bound).
    pub per_address: u32,
    /// From a request's first byte to the end of its headers.
    pub header_timeout: Duration,
    /// Without a byte between two requests (and before the first).
    pub idle_timeout: Duration,
}

/// Open connections per client address.
#[derive(Default)]
pub struct AddressCounts {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// One counted connection; uncounted when dropped.
pub struct Held {
    counts: Arc<AddressCounts>,
    ip: IpAddr,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl AddressCounts {
    /// Counts a connection from `ip` unless it already holds `limit` (0: no limit).
    pub fn take(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<Held> {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if limit > 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(Held {
            counts: self.clone(),
            ip,
        })
    }

    /// How many connections `ip` holds.
    pub fn open(&self, ip: IpAddr) -> u32 {
        self.open.lock().get(&ip).copied().unwrap_or(0)
    }
}

/// The API listener's app: the proxy behind the connection limits.
pub struct Guarded<A> {
    inner: Arc<A>,
    limits: ConnectionLimits,
    counts: Arc<AddressCounts>,
}

impl<A> Guarded<A> {
    /// `inner` behind `limits`.
    pub fn new(inner: A, limits: ConnectionLimits) -> Guarded<A> {
        Guarded {
            inner: Arc::new(inner),
            limits,
            counts: Arc::default(),
        }
    }
}

/// The answer to a connection over the per-address bound (then the connection is closed).
fn too_many(limit: u32) -> Vec<u8> {
    let body = ApiError::with_status(
        429,
        Reason::CommandError,
        format!("This address holds {limit} connections to the router already; close one or wait."),
    )
    .body();
    let mut out = format!(
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json; charset=utf-8\r\n\
         Retry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().map(|i| i.ip())));
        let _held = match ip {
            Some(ip) => match self.counts.take(ip, self.limits.per_address) {
                Some(h) => Some(h),
                None => {
                    if !matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
                        // Read what the client sent first (briefly): closing with unread
                        // bytes resets the connection, and the client might never see the
                        // answer. An h2 client gets no HTTP/1.1 bytes, only the close.
                        let mut buf = [0u8; 8192];
                        let _ = tokio::time::timeout(
                            Duration::from_millis(200),
                            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
                        )
                        .await;
                        let _ = stream.write_all(&too_many(self.limits.per_address)).await;
                        let _ = stream.flush().await;
                    }
                    Shutdown::shutdown(&mut *stream).await;
                    return None;
                }
            },
            None => None,
        };
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        let stream: Stream = if h2 {
            stream
        } else {
            let mut timed = TimedStream::new(stream, self.limits);
            if !timed.read_first_request().await {
                return None;
            }
            Box::new(timed)
        };
        // The proxy's app keeps a keep-alive connection inside one call and returns it only
        // when it is done with it; anything it returns is served here again, still counted.
        let mut next = Some(stream);
        while let Some(s) = next.take() {
            next = self.inner.process_new(s, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

/// Places for requests to each node (see the module doc).
pub struct NodeGate {
    limit: u32,
    gates: Mutex<HashMap<NodeId, Arc<Semaphore>>>,
}

impl NodeGate {
    /// `limit` requests per node at once (0: no bound).
    pub fn new(limit: u32) -> NodeGate {
        NodeGate {
            limit,
            gates: Mutex::default(),
        }
    }

    /// A place for one request to `node` (None: no bound), waiting up to `wait`; a 503 in
    /// TS3AudioBot's shape when none came free.
    pub async fn enter(
        &self,
        node: NodeId,
        name: &str,
        wait: Duration,
    ) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        if self.limit == 0 {
            return Ok(None);
        }
        let gate = self
            .gates
            .lock()
            .entry(node)
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit as usize)))
            .clone();
        if let Ok(p) = gate.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        match tokio::time::timeout(wait, gate.acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(ApiError::unavailable(format!(
                "node {name} has {} requests from the router in flight; try again",
                self.limit
            ))
            .with_retry_after(1)),
        }
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's first byte.
    Idle,
    /// Reading a request's headers; `matched`: how far into the empty line that ends them (see `saw`).
    Headers { matched: u8 },
    /// Headers read: the body, the node's work, the answer (Pingora's own timeouts apply).
    Busy,
}

/// The most of a first request [`TimedStream::read_first_request`] holds before it hands the
/// connection on anyway (Pingora reads the rest itself).
const EARLY_MAX: usize = 64 * 1024;

/// Whether `bytes` are the beginning of a request head that is not complete yet (false: a
/// whole head, or bytes Pingora's parser refuses).
fn request_head_partial(bytes: &[u8]) -> bool {
    // Pingora's own bound (`MAX_HEADERS`); more is an error here, handed on as it is.
    let mut headers = [httparse::EMPTY_HEADER; 256];
    matches!(
        httparse::Request::new(&mut headers).parse(bytes),
        Ok(httparse::Status::Partial)
    )
}

/// A client stream that ends slow headers and idle connections (see the module doc).
pub struct TimedStream {
    inner: Stream,
    limits: ConnectionLimits,
    phase: Phase,
    deadline: Pin<Box<Sleep>>,
    /// The first request's bytes, read before the proxy asked; served to it first.
    early: Vec<u8>,
    /// How many of `early` the proxy has read.
    early_read: usize,
}

impl std::fmt::Debug for TimedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedStream")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .finish()
    }
}

impl TimedStream {
    fn new(inner: Stream, limits: ConnectionLimits) -> TimedStream {
        TimedStream {
            inner,
            limits,
            phase: Phase::Idle,
            deadline: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            early: Vec::new(),
            early_read: 0,
        }
    }

    /// Reads the connection's first request up to the end of its headers (at most
    /// [`EARLY_MAX`] bytes), under the idle and header timeouts; the proxy then reads them from
    /// here. Bytes that are no request (a TLS hello on the plain port, a bad request line) are
    /// handed on at once, so Pingora answers them with its 400 as before. `false`: the client
    /// closed or failed first, or was too slow.
    ///
    /// Why: Pingora drops every connection still waiting in its own read of a request the
    /// moment the process stops accepting (a graceful upgrade, a stop), to let the process
    /// exit sooner. A connection it accepted just before that, whose request was still on the
    /// way, was dropped unanswered, and a client that had sent its request saw a reset.
    /// Read here, the request is already complete when Pingora looks, and it is answered.
    async fn read_first_request(&mut self) -> bool {
        while self.early.len() < EARLY_MAX {
            if !matches!(self.read_early().await, Ok(n) if n > 0) {
                return false;
            }
            if !request_head_partial(&self.early) {
                break;
            }
            if self.phase == Phase::Busy {
                // Our scan saw an end the parser does not: keep timing the headers (the
                // deadline set when they began, not a new one), or nothing bounds this wait.
                self.phase = Phase::Headers { matched: 0 };
            }
        }
        true
    }

    /// Reads once from the socket itself (`poll_read` would serve `early` back) onto the end
    /// of `early`; how many bytes came (0: the client closed, or was idle too long).
    async fn read_early(&mut self) -> std::io::Result<usize> {
        let mut buf = [0u8; 4096];
        let mut read = ReadBuf::new(&mut buf);
        std::future::poll_fn(|cx| self.poll_read_socket(cx, &mut read)).await?;
        self.early.extend_from_slice(read.filled());
        Ok(read.filled().len())
    }

    /// Reads from the client's stream, following the headers and ending a slow or idle client
    /// (see the module doc).
    fn poll_read_socket(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                self.saw(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.phase != Phase::Busy
                    && std::future::Future::poll(self.deadline.as_mut(), cx).is_ready()
                {
                    if self.phase == Phase::Idle {
                        // An idle client is simply gone, as Pingora's own keep-alive timeout
                        // ends it: end of stream, nothing logged.
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the client did not finish its request headers in time",
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn enter(&mut self, phase: Phase) {
        let after = match phase {
            Phase::Idle => self.limits.idle_timeout,
            Phase::Headers { .. } => self.limits.header_timeout,
            Phase::Busy => return self.phase = phase,
        };
        if !matches!(
            (self.phase, phase),
            (Phase::Headers { .. }, Phase::Headers { .. })
        ) {
            self.deadline.as_mut().reset(Instant::now() + after);
        }
        self.phase = phase;
    }

    /// Follows the bytes just read through the request's headers.
    fn saw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let at = match self.phase {
                Phase::Busy => return,
                Phase::Idle => 3,
                Phase::Headers { matched } => matched,
            };
            // The empty line that ends the headers: a line end (LF, the CR before it optional,
            // as httparse reads it) right after a line end. `at`: 0 inside a line, 1 right
            // after a line end, 2 after a line end and a CR, 3 before the request line (empty
            // lines there are skipped, as httparse does, and timed as headers).
            let next = match (at, b) {
                (3, b'\r' | b'\n') => 3,
                (1 | 2, b'\n') => {
                    self.enter(Phase::Busy);
                    continue;
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
            self.enter(Phase::Headers { matched: next });
        }
    }
}

impl AsyncRead for TimedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.early_read < this.early.len() {
            // Seen (timed) when they were read.
            let n = buf.remaining().min(this.early.len() - this.early_read);
            buf.put_slice(&this.early[this.early_read..this.early_read + n]);
            this.early_read += n;
            if this.early_read == this.early.len() {
                this.early = Vec::new();
                this.early_read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        this.poll_read_socket(cx, buf)
    }
}

impl AsyncWrite for TimedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            // An answer is going out: the next byte read starts the next request.
            this.enter(Phase::Idle);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.enter(Phase::Idle);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for TimedStream {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for TimedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for TimedStream {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for TimedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for TimedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for TimedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, d: SocketDigest) {
        self.inner.set_socket_digest(d)
    }
}

#[async_trait]
impl Peek for TimedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        if self.early_read == self.early.len() {
            return self.inner.try_peek(buf).await;
        }
        // Bytes already read come first: read on behind them until the peek is covered.
        while self.early.len() - self.early_read < buf.len() {
            if self.read_early().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        buf.copy_from_slice(&self.early[self.early_read..self.early_read + buf.len()]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_beyond_the_bound_is_refused_and_a_closed_one_frees_its_place() {
        let counts = Arc::new(AddressCounts::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let h1 = counts.take(a, 2).unwrap();
        let _h2 = counts.take(a, 2).unwrap();
        assert!(counts.take(a, 2).is_none());
        assert!(
            counts.take(b, 2).is_some(),
            "other addresses are not affected"
        );
        drop(h1);
        assert_eq!(counts.open(a), 1);
        assert!(counts.take(a, 2).is_some());
        assert!(counts.take(a, 0).is_some(), "0: no bound");
    }

    #[tokio::test]
    async fn a_node_takes_at_most_its_bound_and_a_freed_place_goes_to_a_waiter() {
        let gate = NodeGate::new(2);
        let wait = Duration::from_millis(50);
        let a = gate.enter(NodeId(1), "n1", wait).await.unwrap();
        let _b = gate.enter(NodeId(1), "n1", wait).await.unwrap();
        let e = gate.enter(NodeId(1), "n1", wait).await.unwrap_err();
        assert_eq!(e.status, 503);
        assert!(
            e.message.contains("node n1 has 2 requests"),
            "{}",
            e.message
        );
        assert!(gate.enter(NodeId(2), "n2", wait).await.unwrap().is_some());
        let waiter = gate.enter(NodeId(1), "n1", Duration::from_secs(5));
        drop(a);
        assert!(waiter.await.unwrap().is_some());
        assert!(NodeGate::new(0)
            .enter(NodeId(1), "n1", wait)
            .await
            .unwrap()
            .is_none());
    }

    /// A loopback pair: the server side as the proxy gets it, inside a `TimedStream`.
    async fn timed_pair(limits: ConnectionLimits) -> (TimedStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = l.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        (TimedStream::new(stream, limits), client)
    }

    const LIMITS: ConnectionLimits = ConnectionLimits {
        per_address: 0,
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn a_first_request_sent_in_pieces_is_read_whole_and_then_served_byte_for_byte() {
        use tokio::io::AsyncReadExt;
        let (mut timed, mut client) = timed_pair(LIMITS).await;
        let head = b"GET /api/bot/list HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        let writer = tokio::spawn(async move {
            for piece in head.chunks(7) {
                client.write_all(piece).await.unwrap();
                client.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
        });
        assert!(timed.read_first_request().await);
        assert_eq!(timed.phase, Phase::Busy, "all of the headers were read");
        let mut client = writer.await.unwrap();
        client.write_all(b" MORE").await.unwrap();
        let mut got = vec![0u8; head.len() + 5];
        timed.read_exact(&mut got).await.unwrap();
        assert_eq!(
            &got[..head.len()],
            head,
            "the early bytes come first, unchanged"
        );
        assert_eq!(&got[head.len()..], b" MORE", "then the socket's own");
        assert!(
            timed.early.is_empty(),
            "the early buffer is freed once read"
        );
    }

    #[tokio::test]
    async fn a_client_that_closes_or_stays_silent_is_not_handed_on() {
        let (mut timed, client) = timed_pair(LIMITS).await;
        drop(client);
        assert!(!timed.read_first_request().await, "closed before a byte");
        let quick = ConnectionLimits {
            idle_timeout: Duration::from_millis(50),
            ..LIMITS
        };
        let (mut timed, _client) = timed_pair(quick).await;
        assert!(
            !timed.read_first_request().await,
            "silent past the idle timeout"
        );
        let slow = ConnectionLimits {
            header_timeout: Duration::from_millis(50),
            ..LIMITS
        };
        let (mut timed, mut client) = timed_pair(slow).await;
        client.write_all(b"GET / HT").await.unwrap();
        assert!(
            !timed.read_first_request().await,
            "headers not done in time"
        );
        // Empty lines before the request line are headers too, for the timer.
        let (mut timed, mut client) = timed_pair(slow).await;
        client.write_all(b"\r\n\r\n\r\n").await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(2), timed.read_first_request());
        assert!(
            !read.await.expect("bounded by the header timeout"),
            "blank lines only"
        );
    }

    #[tokio::test]
    async fn the_end_of_the_headers_is_seen_with_any_line_ends_httparse_reads() {
        for (head, ends) in [
            (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], true),
            (b"GET / HTTP/1.1\nHost: x\n\n", true),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\n", true),
            (b"GET / HTTP/1.1\nHost: x\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: x\r\n", false),
            (b"GET / HTTP/1.1\r\nHost: x\r\n\r", false),
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", true),
            (b"\r\n\r\n\n", false),
        ] {
            let (mut timed, _client) = timed_pair(LIMITS).await;
            timed.saw(head);
            assert_eq!(
                timed.phase == Phase::Busy,
                ends,
                "{:?}",
                String::from_utf8_lossy(head)
            );
            let parsed = !request_head_partial(head);
            assert_eq!(
                parsed,
                ends,
                "httparse agrees: {:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[tokio::test]
    async fn bytes_that_are_no_request_are_handed_on_at_once() {
        let (mut timed, mut client) = timed_pair(LIMITS).await;
        // A TLS ClientHello's first bytes, on the plain port: Pingora answers it with 400.
        client
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        let read = tokio::time::timeout(Duration::from_secs(2), timed.read_first_request());
        assert!(read.await.expect("handed on without waiting for headers"));
        assert_eq!(timed.early, [0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    }

    #[tokio::test]
    async fn a_peek_past_the_early_bytes_reads_on_behind_them() {
        let (mut timed, mut client) = timed_pair(LIMITS).await;
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(timed.read_first_request().await);
        client.write_all(b"NEXT").await.unwrap();
        let mut peek = [0u8; 22];
        assert!(timed.try_peek(&mut peek).await.unwrap());
        assert_eq!(&peek, b"GET / HTTP/1.1\r\n\r\nNEXT");
        let mut all = [0u8; 22];
        tokio::io::AsyncReadExt::read_exact(&mut timed, &mut all)
            .await
            .unwrap();
        assert_eq!(all, peek, "a peek consumes nothing");
    }

    #[test]
    fn the_refusal_is_a_429_in_ts3audiobots_shape() {
        let r = String::from_utf8(too_many(64)).unwrap();
        assert!(r.starts_with("HTTP/1.1 429 "));
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["ErrorMessage"]
            .as_str()
            .unwrap()
            .contains("64 connections"));
        assert!(r.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
