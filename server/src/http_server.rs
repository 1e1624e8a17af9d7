//! The HTTP API's accept loop, for plain HTTP and HTTPS alike: hyper (HTTP/1.1 and HTTP/2)
//! over TCP or tokio-rustls, graceful shutdown, and limits against slow clients. warp has
//! no TLS of its own, so the warp filter is served as a plain service here.
//!
//! A plain-text request on the HTTPS port gets a `400` saying so and the connection is
//! closed, as Go's net/http does, instead of a TLS alert the client cannot read (or a hang).
//!
//! Every connection closes with a lingering close (see [`Lingering`]), so that a client that
//! writes its whole body before reading (Python's urllib and requests, Go's net/http) reads
//! an early answer such as `413` instead of a connection reset.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use cete_types::{ErrorBody, ErrorCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// First byte of a TLS record carrying a handshake (ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A lingering close reads (and discards) what the client still sends for at most this
/// long in all (nginx: `lingering_time`)...
const LINGER_TIME: Duration = Duration::from_secs(5);
/// ...or until it sends nothing for this long (nginx: `lingering_timeout`)...
const LINGER_IDLE: Duration = Duration::from_secs(1);
/// ...or until it has sent this much.
const LINGER_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Whether the request came over TLS; in every request's extensions, so handlers can build
/// URLs with the right scheme (e.g. the redirect to the leader).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scheme {
    /// `true` on the HTTPS listener.
    pub https: bool,
}

impl Scheme {
    /// `"https"` or `"http"`.
    pub fn as_str(self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }
}

/// Limits of the HTTP server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A client must send a request's headers (and, on HTTPS, finish the TLS handshake)
    /// within this time, or the connection is closed (slowloris).
    pub header_read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `service` (e.g. `warp::service(filter)`) on `listener` until `shutdown` turns
/// true, then lets in-flight requests finish (up to 10 s). With `tls`, the listener speaks
/// HTTPS only.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: S,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<http::Request<Incoming>, Response = warp::reply::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let acceptor = tls.map(TlsAcceptor::from);
    let scheme = Scheme {
        https: acceptor.is_some(),
    };
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                log::warn!("http accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            builder: builder.clone(),
            service: service.clone(),
            scheme,
            watcher: graceful.watcher(),
            limits,
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                None => conn.serve(Lingering::new(stream)).await,
                Some(acceptor) => conn.serve_tls(stream, acceptor).await,
            };
            if let Err(e) = result {
                log::debug!("http connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("http: requests still running after {DRAIN_TIMEOUT:?}; closing them");
    }
}

struct Connection<S> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: S,
    scheme: Scheme,
    watcher: Watcher,
    limits: Limits,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> Connection<S>
where
    S: Service<http::Request<Incoming>, Response = warp::reply::Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    async fn serve_tls(self, stream: TcpStream, acceptor: TlsAcceptor) -> Result<(), BoxError> {
        let mut first = [0u8; 1];
        let peeked =
            tokio::time::timeout(self.limits.header_read_timeout, stream.peek(&mut first)).await;
        match peeked {
            Err(_) => return Err("no data before the header read timeout".into()),
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) if first[0] != TLS_HANDSHAKE => return refuse_plain_text(stream).await,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
        let stream = Lingering::new(stream);
        let tls = tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream))
            .await
            .map_err(|_| "TLS handshake timed out")?
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        self.serve(tls).await
    }

    async fn serve<I>(self, io: I) -> Result<(), BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            service,
            scheme,
            watcher,
            ..
        } = self;
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(scheme);
            // HTTP/2 clients send the host as :authority, not as a Host header; handlers
            // that build URLs from the host (redirects to the leader) read the header.
            if !req.headers().contains_key(http::header::HOST) {
                let authority = req.uri().authority().map(|a| a.as_str().to_string());
                if let Some(value) = authority.and_then(|a| a.parse().ok()) {
                    req.headers_mut().insert(http::header::HOST, value);
                }
            }
            service.clone().call(req)
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        watcher.watch(conn).await
    }
}

/// A connection's socket whose shutdown is a lingering close, as nginx does it: send FIN
/// after the last response, then read and discard what the client still sends until it
/// closes its side, or [`LINGER_IDLE`], [`LINGER_TIME`] or [`LINGER_MAX_BYTES`] is reached,
/// and only then close the socket.
///
/// Closing a socket with unread data in it makes the kernel send a reset, and a client that
/// is still writing a body the server has already refused (a `413` for a declared length,
/// say) gets that reset instead of the answer waiting in its receive buffer. hyper shuts the
/// connection down after its last response (and once it gives up on an unread body); with
/// TLS this sits under the TLS stream, so the TLS close comes first.
struct Lingering<I> {
    io: I,
    linger: Option<Linger>,
}

struct Linger {
    write_closed: bool,
    drained: u64,
    deadline: Pin<Box<Sleep>>,
    idle: Pin<Box<Sleep>>,
    buf: Box<[u8]>,
}

impl<I> Lingering<I> {
    fn new(io: I) -> Lingering<I> {
        Lingering { io, linger: None }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Lingering<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Lingering<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let linger = this.linger.get_or_insert_with(|| Linger {
            write_closed: false,
            drained: 0,
            deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
            idle: Box::pin(tokio::time::sleep(LINGER_IDLE)),
            buf: vec![0; 16 * 1024].into_boxed_slice(),
        });
        if !linger.write_closed {
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            linger.write_closed = true;
        }
        loop {
            if linger.drained >= LINGER_MAX_BYTES
                || linger.deadline.as_mut().poll(cx).is_ready()
                || linger.idle.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut linger.buf);
            match ready!(Pin::new(&mut this.io).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())), // the client closed
                Ok(()) => {
                    linger.drained += buf.filled().len() as u64;
                    linger.idle.as_mut().reset(Instant::now() + LINGER_IDLE);
                }
                // Reset by the client: nothing left to protect.
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Answers a plain-text request on the HTTPS port with a readable 400 and closes.
async fn refuse_plain_text(mut stream: TcpStream) -> Result<(), BoxError> {
    let body = ErrorBody::new(
        ErrorCode::HttpsRequired,
        "this port speaks HTTPS: the client sent a plain HTTP request; use https://",
    )
    .to_json();
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await?;
    // Read what the client already sent before closing: closing with unread data makes the
    // kernel send a reset, which can destroy the answer before the client reads it.
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Err("plain HTTP on the HTTPS port; answered 400".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Instant;
    use warp::Filter;

    /// Serves a trivial route with a short header timeout; returns its address.
    async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        // `/early` answers without reading the request body, as a 413 for a declared
        // length does.
        let early = warp::path("early")
            .map(|| warp::reply::with_status("too large", http::StatusCode::PAYLOAD_TOO_LARGE));
        let routes = warp::path("ok").map(|| "fine").or(early);
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
        };
        tokio::spawn(serve(listener, tls, warp::service(routes), limits, stopped));
        (addr, stop)
    }

    /// Reads until the server closes the connection; panics if that takes over 3 s.
    async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer));
        match read.await {
            Ok(_) => answer, // closed (or reset): not left hanging
            Err(_) => panic!("the server kept a stalled connection open"),
        }
    }

    fn self_signed() -> Arc<rustls::ServerConfig> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn slow_headers_are_cut_off_and_the_loop_keeps_serving() {
        let (addr, _stop) = start(None).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let answer = read_until_closed(&mut slow).await;
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{:?}",
            started.elapsed()
        );
        assert!(!answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");

        let mut fast = TcpStream::connect(addr).await.unwrap();
        fast.write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(read_until_closed(&mut fast).await).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("fine"),
            "{answer}"
        );
    }

    /// A client that writes its whole body before it reads (as Python's urllib does) reads
    /// an answer the server sent without reading that body: the close lingers, so it is
    /// not reset.
    #[tokio::test]
    async fn an_early_answer_survives_a_body_sent_in_full() {
        let (addr, _stop) = start(None).await;
        let body = vec![b'x'; 16 * 1024 * 1024];
        let mut client = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT /early HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        client.write_all(head.as_bytes()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), client.write_all(&body))
            .await
            .expect("the server reads what the client sends")
            .expect("the server does not reset the connection while the client writes");
        let answer = String::from_utf8(read_until_closed(&mut client).await).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{answer}"
        );
        assert!(answer.ends_with("too large"), "{answer}");
    }

    #[tokio::test]
    async fn https_port_answers_plain_http_with_400_and_drops_stalled_handshakes() {
        let (addr, stop) = start(Some(self_signed())).await;
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = String::from_utf8(read_until_closed(&mut plain).await).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(answer.contains(r#""code":"HttpsRequired""#), "{answer}");

        // A client that starts a handshake and stops is dropped after the timeout.
        let mut stalled = TcpStream::connect(addr).await.unwrap();
        stalled.write_all(&[TLS_HANDSHAKE, 3, 1]).await.unwrap();
        read_until_closed(&mut stalled).await;
        // So is one that connects and sends nothing.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        read_until_closed(&mut silent).await;

        // Shutdown stops accepting.
        stop.send(true).unwrap();
        let refused = async {
            loop {
                if TcpStream::connect(addr).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(3), refused)
            .await
            .expect("the listener closes on shutdown");
    }
}
