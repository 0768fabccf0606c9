//! The audit webhook receiver: the API server's webhook backend (`--audit-webhook-config-file`)
//! POSTs `EventList` batches here. A batch is answered 200 only once it is in the pipeline's
//! queue; a full queue answers 429 with `Retry-After` (the API server retries), an oversized body
//! 413. Bodies are never parsed here: the decoder does that, so a hostile body is one counted
//! rejection, never a crash.

use crate::settings::Secret;
use crate::source::journal::{AppendError, Journal};
use crate::source::live::{Chunk, LiveQueue, Refused};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counters the receiver keeps (on /metrics and in the end-of-run log).
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub accepted: AtomicU64,
    pub busy: AtomicU64,
    pub too_large: AtomicU64,
    pub unauthorized: AtomicU64,
    /// TLS handshakes that failed (no or an untrusted client certificate, not TLS at all).
    pub tls_failed: AtomicU64,
    /// Connections closed on arrival because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Clients cut off for slowness: a TLS handshake or a body not finished in time.
    pub timed_out: AtomicU64,
}

impl WebhookStats {
    /// The counters in Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# HELP audithound_webhook_requests_total Webhook POSTs by outcome.\n# TYPE audithound_webhook_requests_total counter\n",
        );
        for (name, v) in [
            ("accepted", &self.accepted),
            ("busy", &self.busy),
            ("too_large", &self.too_large),
            ("unauthorized", &self.unauthorized),
            ("timed_out", &self.timed_out),
        ] {
            text.push_str(&format!(
                "audithound_webhook_requests_total{{outcome=\"{name}\"}} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        text.push_str(&format!(
            "# HELP audithound_webhook_tls_handshake_failures_total TLS handshakes the webhook refused or that failed.\n# TYPE audithound_webhook_tls_handshake_failures_total counter\naudithound_webhook_tls_handshake_failures_total {}\n",
            self.tls_failed.load(Ordering::Relaxed)
        ));
        text.push_str(&format!(
            "# HELP audithound_webhook_connections_refused_total Connections closed on arrival because max_connections were open.\n# TYPE audithound_webhook_connections_refused_total counter\naudithound_webhook_connections_refused_total {}\n",
            self.connections_refused.load(Ordering::Relaxed)
        ));
        text
    }
}

/// What the intake needs: where bodies go, which input they are, the size limit and the token.
#[derive(Clone)]
pub struct Intake {
    pub queue: LiveQueue,
    /// With a state directory, bodies go to the journal (synced before the 200) and the
    /// journal's reader feeds the queue.
    pub journal: Option<Journal>,
    pub input: u32,
    pub max_body: usize,
    /// The token POSTs must carry as `Authorization: Bearer …`, when one is configured.
    pub bearer_token: Option<Secret>,
    pub stats: Arc<WebhookStats>,
}

#[derive(Clone)]
struct Shared {
    queue: LiveQueue,
    journal: Option<Journal>,
    input: u32,
    stats: Arc<WebhookStats>,
    /// The expected `Authorization` header value, when a token is configured.
    authorization: Option<Arc<str>>,
    refusals: Arc<RateLimitedLog>,
}

/// The intake: POST anywhere takes a batch. `extra` routes (probes, metrics) are served beside it.
pub fn router(intake: Intake, extra: Router) -> Router {
    let shared = Shared {
        queue: intake.queue,
        journal: intake.journal,
        input: intake.input,
        stats: intake.stats,
        authorization: intake
            .bearer_token
            .map(|t| Arc::from(format!("Bearer {}", t.expose()))),
        refusals: Arc::new(RateLimitedLog::default()),
    };
    Router::new()
        .fallback(post(receive))
        .layer(DefaultBodyLimit::max(intake.max_body))
        .with_state(shared)
        .merge(extra)
}

/// A warning at most every ten seconds, with the count of what happened in between: a client
/// retrying with a wrong token, or failing its TLS handshake, must not flood the log.
#[derive(Default)]
struct RateLimitedLog {
    last: std::sync::Mutex<Option<std::time::Instant>>,
    since: AtomicU64,
}

impl RateLimitedLog {
    /// Counts one occurrence; when a line is due, returns how many occurred since the last one
    /// (this one included).
    fn due(&self) -> Option<u64> {
        let n = self.since.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().ok()?;
        let due = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(10));
        if !due {
            return None;
        }
        *last = Some(std::time::Instant::now());
        self.since.store(0, Ordering::Relaxed);
        Some(n)
    }
}

async fn receive(
    State(s): State<Shared>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>,
    request: axum::extract::Request,
) -> Response {
    // The token is checked before a byte of the body is read: a client without it cannot make
    // the service receive (or wait for) a large body.
    if let Some(want) = &s.authorization {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !constant_time_eq(given.unwrap_or_default(), want.as_bytes()) {
            s.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
            let reason = if given.is_none() {
                "no bearer token"
            } else {
                "wrong bearer token"
            };
            if let Some(n) = s.refusals.due() {
                let peer = display_addr(peer.map(|p| p.0 .0));
                tracing::warn!(%peer, refused = n, "webhook request refused: {reason}");
            }
            return (StatusCode::UNAUTHORIZED, "bearer token required\n").into_response();
        }
    }
    // Within `DefaultBodyLimit` (413 beyond it).
    let body = match Bytes::from_request(request, &()).await {
        Ok(b) => b,
        Err(e) => {
            s.stats.too_large.fetch_add(1, Ordering::Relaxed);
            return (e.status(), e.body_text()).into_response();
        }
    };
    if let Some(journal) = &s.journal {
        return match journal.append(body.to_vec()).await {
            Ok(_) => {
                s.stats.accepted.fetch_add(1, Ordering::Relaxed);
                StatusCode::OK.into_response()
            }
            Err(AppendError::Full(_)) => {
                s.stats.busy.fetch_add(1, Ordering::Relaxed);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    "journal full, retry later\n",
                )
                    .into_response()
            }
            Err(e) => {
                tracing::error!("webhook: {e}");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "5")],
                    "cannot store the batch, retry later\n",
                )
                    .into_response()
            }
        };
    }
    let chunk = Chunk {
        input: s.input,
        body: body.to_vec(),
        received: std::time::Instant::now(),
        position: None,
        cluster: None,
        warmup: false,
        context: false,
    };
    match s.queue.offer(chunk) {
        Ok(()) => {
            s.stats.accepted.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK.into_response()
        }
        Err(Refused::Busy) => {
            s.stats.busy.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                "pipeline busy, retry later\n",
            )
                .into_response()
        }
        Err(Refused::Closed) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "shutting down\n",
        )
            .into_response(),
    }
}

/// TLS settings from PEM files: the server's chain and key, and optionally the CA whose client
/// certificates are required.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    let pem = |p: &std::path::Path| -> anyhow::Result<std::io::BufReader<std::fs::File>> {
        Ok(std::io::BufReader::new(
            std::fs::File::open(p).with_context(|| format!("{}", p.display()))?,
        ))
    };
    let chain: Vec<_> = rustls_pemfile::certs(&mut pem(cert)?)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate found", cert.display());
    }
    let key = rustls_pemfile::private_key(&mut pem(key)?)
        .with_context(|| format!("{}: not a PEM private key", key.display()))?
        .with_context(|| format!("{}: no private key found", key.display()))?;
    let builder = rustls::ServerConfig::builder();
    let mut config = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem(ca)?) {
                roots
                    .add(c.with_context(|| format!("{}: not a PEM certificate", ca.display()))?)
                    .with_context(|| format!("{}: unusable CA certificate", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .with_context(|| format!("{}: no usable CA certificate", ca.display()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(chain, key)?,
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// How slow or greedy clients are cut off.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
    /// For a TLS handshake, and for a request's headers.
    pub header_timeout: Duration,
    /// For a whole request, body included (a 408 after it).
    pub body_timeout: Duration,
    /// For a kept-alive connection between requests.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves HTTP, or HTTPS with `tls`, until `shutdown` resolves (then in-flight requests get up
/// to 10 s to finish). Slow clients are cut off and connections capped (`limits`); failed
/// handshakes are logged with the peer and rustls's reason, and counted in `stats`.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Option<rustls::ServerConfig>,
    app: Router,
    stats: Arc<WebhookStats>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            (limits.body_timeout, stats.clone()),
            deadline,
        ))
        .into_make_service_with_connect_info::<SocketAddr>();
    let timer = |builder: &mut hyper_util::server::conn::auto::Builder<_>| {
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
    };
    match tls {
        Some(tls) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls));
            let mut server = axum_server::from_tcp(listener)
                .acceptor(Guarded::new(
                    LoggedTls {
                        inner: axum_server::tls_rustls::RustlsAcceptor::new(config),
                        failures: Arc::new(RateLimitedLog::default()),
                        stats: stats.clone(),
                    },
                    limits,
                    stats,
                ))
                .handle(handle);
            timer(server.http_builder());
            server.serve(app).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)
                .acceptor(Guarded::new(
                    axum_server::accept::DefaultAcceptor,
                    limits,
                    stats,
                ))
                .handle(handle);
            timer(server.http_builder());
            server.serve(app).await
        }
    }
}

/// A whole request, body included, within its deadline; else 408 and the connection closes.
async fn deadline(
    State((limit, stats)): State<(Duration, Arc<WebhookStats>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
                "request not received in time\n",
            )
                .into_response()
        }
    }
}

/// An acceptor that holds one of `max_connections` slots for each connection's life (a
/// connection beyond them is closed at once, counted and logged at most every ten seconds),
/// gives the inner acceptor (a TLS handshake) `handshake` to finish, and closes connections
/// that stay quiet (`Held`).
#[derive(Clone)]
struct Guarded<A> {
    inner: A,
    slots: Arc<tokio::sync::Semaphore>,
    handshake: Duration,
    idle: Duration,
    stats: Arc<WebhookStats>,
    full: Arc<RateLimitedLog>,
}

impl<A> Guarded<A> {
    fn new(inner: A, limits: Limits, stats: Arc<WebhookStats>) -> Guarded<A> {
        Guarded {
            inner,
            slots: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            handshake: limits.header_timeout,
            idle: limits.idle_timeout,
            stats,
            full: Arc::new(RateLimitedLog::default()),
        }
    }
}

impl<A, S> axum_server::accept::Accept<tokio::net::TcpStream, S> for Guarded<A>
where
    A: axum_server::accept::Accept<tokio::net::TcpStream, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Held<A::Stream>;
    type Service = Counted<A::Service>;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = std::io::Result<(Self::Stream, Self::Service)>> + Send,
        >,
    >;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.stats
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            if let Some(n) = self.full.due() {
                let peer = display_addr(stream.peer_addr().ok());
                tracing::warn!(%peer, refused = n, "webhook connection refused: max_connections are open");
            }
            return Box::pin(std::future::ready(Err(std::io::Error::other(
                "max_connections are open",
            ))));
        };
        let (limit, idle, stats) = (self.handshake, self.idle, self.stats.clone());
        let accepting = self.inner.accept(stream, service);
        Box::pin(async move {
            match tokio::time::timeout(limit, accepting).await {
                Ok(Ok((stream, service))) => {
                    let first = tokio::time::Instant::now() + limit;
                    let requests = Arc::new(Requests::default());
                    let held = Held {
                        stream,
                        _slot: slot,
                        idle,
                        quiet_until: Box::pin(tokio::time::sleep_until(first)),
                        requests: requests.clone(),
                    };
                    Ok((held, Counted { service, requests }))
                }
                Ok(Err(e)) => Err(e),
                Err(_) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "handshake not finished in time",
                    ))
                }
            }
        })
    }
}

/// A connection's stream with the slot it holds until it closes. A connection without a
/// request (its first within `header_timeout`, later ones within `idle_timeout` of the last
/// one's end) reads as closed, so idle connections cannot keep the slots. Requests, not bytes,
/// count: an HTTP/2 client's PINGs alone would otherwise keep a slot forever.
pub struct Held<S> {
    stream: S,
    _slot: tokio::sync::OwnedSemaphorePermit,
    idle: Duration,
    quiet_until: std::pin::Pin<Box<tokio::time::Sleep>>,
    requests: Arc<Requests>,
}

/// A connection's requests as its service sees them (`Counted`).
#[derive(Default)]
pub struct Requests {
    in_flight: std::sync::atomic::AtomicUsize,
    /// When the latest one ended; None before any has.
    last_end: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Requests {
    fn last_end(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        self.last_end.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection counts as idle, if nothing else happens: None when it is already
    /// (no request in flight and none ended within `idle`).
    fn quiet_after(&self, idle: Duration) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Some(now + idle);
        }
        let end = (*self.last_end())? + idle;
        (end > now).then_some(end)
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Held<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        if let Poll::Ready(r) = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf) {
            return Poll::Ready(r);
        }
        loop {
            if std::future::Future::poll(self.quiet_until.as_mut(), cx).is_pending() {
                return Poll::Pending;
            }
            // The wait is over: quiet for too long unless a request ran meanwhile, in which
            // case the wait runs from it. Quiet: end of stream, and hyper closes the connection.
            let idle = self.idle;
            match self.requests.quiet_after(idle) {
                Some(until) => self.quiet_until.as_mut().reset(until),
                None => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// The connection's service, counting its requests for `Held`.
#[derive(Clone)]
pub struct Counted<S> {
    service: S,
    requests: Arc<Requests>,
}

/// A request in flight; its end is noted when dropped (answered, failed or abandoned).
struct InFlight(Arc<Requests>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_end() = Some(tokio::time::Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl<S, R> tower_service::Service<R> for Counted<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.requests.in_flight.fetch_add(1, Ordering::AcqRel);
        let in_flight = InFlight(self.requests.clone());
        let answer = self.service.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(in_flight);
            answer
        })
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Held<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// axum-server's rustls acceptor, which drops a failed handshake without a word, wrapped so
/// that the failure is logged (peer and reason, at most every ten seconds, with a count) and
/// counted: a client certificate the CA did not sign, no certificate, a plain-HTTP client.
/// A connection closed before any handshake (a TCP probe, a port scan) is only a debug line.
#[derive(Clone)]
struct LoggedTls {
    inner: axum_server::tls_rustls::RustlsAcceptor,
    failures: Arc<RateLimitedLog>,
    stats: Arc<WebhookStats>,
}

type Accepted<S> = <axum_server::tls_rustls::RustlsAcceptor as axum_server::accept::Accept<
    tokio::net::TcpStream,
    S,
>>::Stream;

impl<S: Send + 'static> axum_server::accept::Accept<tokio::net::TcpStream, S> for LoggedTls {
    type Stream = Accepted<S>;
    type Service = S;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<(Accepted<S>, S)>> + Send>,
    >;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        let peer = stream.peer_addr().ok();
        let handshake = self.inner.accept(stream, service);
        let (failures, stats) = (self.failures.clone(), self.stats.clone());
        Box::pin(async move {
            let result = handshake.await;
            if let Err(e) = &result {
                let peer = display_addr(peer);
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, "connection closed before a TLS handshake: {e}");
                } else {
                    stats.tls_failed.fetch_add(1, Ordering::Relaxed);
                    if let Some(n) = failures.due() {
                        tracing::warn!(%peer, failed = n, "webhook TLS handshake failed: {e}");
                    }
                }
            }
            result
        })
    }
}

/// Compares without stopping at the first difference, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The address actually bound (useful with port 0), for a log line.
pub fn local_addr(l: &tokio::net::TcpListener) -> String {
    display_addr(l.local_addr().ok())
}

/// An address for a log line; `unknown` when there is none.
pub fn display_addr(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}
