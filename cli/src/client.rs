//! The REST client: one reqwest client, leader redirects, NoLeader retries and
//! the decoding of the server's error body.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use cete_types::{ErrorBody, ErrorCode};
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use tokio::time::Instant;

use crate::{tls, urls};

/// Redirect hops followed for one attempt before giving up.
const MAX_HOPS: usize = 5;
/// Attempts after a NoLeader answer or a leader that went away; in practice
/// the timeout ends the retries first.
const MAX_RETRIES: u32 = 100;
/// Wait before retrying when a leader we were sent to went away.
const DEFAULT_RETRY_WAIT: Duration = Duration::from_millis(100);

/// How to reach the cluster.
pub struct Options {
    pub address: Url,
    /// Overall limit for one call, redirects and retries included.
    pub timeout: Duration,
    /// How https addresses are verified.
    pub tls: TlsOptions,
    /// Idle connections kept per host (the bench raises it).
    pub pool_size: usize,
}

/// How the server's certificate is checked on https addresses.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM bundle to trust instead of the system roots.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Name the certificate must be valid for, instead of the URL's host.
    pub common_name: Option<String>,
    /// No verification at all (tests only).
    pub insecure: bool,
}

/// A request, with its body held as bytes so it can be re-sent on a redirect.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    /// Already encoded, starting with `/`.
    pub path: String,
    /// Already encoded.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
}

impl Call {
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Call {
            method,
            path: path.into(),
            query: None,
            headers: HeaderMap::new(),
            body: None,
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Call::new(Method::GET, path)
    }

    pub fn query(mut self, query: Option<String>) -> Self {
        self.query = query;
        self
    }

    pub fn body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }

    fn is_write(&self) -> bool {
        !matches!(self.method, Method::GET | Method::HEAD)
    }
}

/// A complete response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("the server sent a body that is not JSON")
    }
}

/// An error answer from the server: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl ApiError {
    /// Decodes an error body; falls back to the status line and body text
    /// for bodies that are not in the contract's shape.
    pub fn decode(status: StatusCode, body: &[u8]) -> ApiError {
        if let Ok(body) = serde_json::from_slice::<ErrorBody>(body) {
            return ApiError {
                status,
                code: body.error.code,
                message: body.error.message,
            };
        }
        let text = String::from_utf8_lossy(body);
        let first = text.lines().map(str::trim).find(|l| !l.is_empty());
        let message = match first {
            Some(line) if line.chars().count() > 200 => {
                format!("{}...", line.chars().take(200).collect::<String>())
            }
            Some(line) => line.to_string(),
            None => status
                .canonical_reason()
                .unwrap_or("error")
                .to_ascii_lowercase(),
        };
        ApiError {
            status,
            code: format!("HTTP {}", status.as_u16()),
            message,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

/// The request never got a complete answer.
#[derive(Debug)]
pub enum TransportError {
    Connect { address: String, detail: String },
    Timeout { after: Duration, address: String },
    Other { address: String, detail: String },
    TooManyRedirects { last: String },
}

impl TransportError {
    /// A short name for counting errors by kind (bench).
    pub fn kind(&self) -> &'static str {
        match self {
            TransportError::Connect { .. } => "connect",
            TransportError::Timeout { .. } => "timeout",
            TransportError::Other { .. } => "transport",
            TransportError::TooManyRedirects { .. } => "redirects",
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Connect { address, detail } => {
                write!(f, "cannot connect to {address}: {detail}")
            }
            TransportError::Timeout { after, address } => {
                write!(
                    f,
                    "no answer from {address} within {after:?} (see --timeout)"
                )
            }
            TransportError::Other { address, detail } => {
                write!(f, "request to {address} failed: {detail}")
            }
            TransportError::TooManyRedirects { last } => {
                write!(f, "too many redirects (last to {last})")
            }
        }
    }
}

impl std::error::Error for TransportError {}

/// A shared, cheap-to-clone-by-reference REST client.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    timeout: Duration,
    /// Origin of the node that last accepted a redirected write.
    leader: Mutex<Option<Url>>,
}

impl Client {
    pub fn new(opts: Options) -> Result<Client> {
        tls::install_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(opts.pool_size)
            .tcp_nodelay(true)
            .connect_timeout(opts.timeout.min(Duration::from_secs(5)))
            .no_proxy()
            .user_agent(concat!("cete/", env!("CARGO_PKG_VERSION")));
        let tls = &opts.tls;
        if tls.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        } else if opts.address.scheme() == "https"
            || tls.common_name.is_some()
            || tls.ca_cert.is_some()
        {
            builder = builder.tls_backend_preconfigured(tls::client_config(
                tls.ca_cert.as_deref(),
                tls.common_name.as_deref(),
            )?);
        }
        Ok(Client {
            http: builder.build().context("cannot build the HTTP client")?,
            base: opts.address,
            timeout: opts.timeout,
            leader: Mutex::new(None),
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Sends `call`, following 307/308 to the leader and retrying NoLeader
    /// answers within the timeout. Returns any final status.
    pub async fn execute(&self, call: &Call) -> Result<Reply, TransportError> {
        let deadline = Instant::now() + self.timeout;
        let home = urls::join(&self.base, &call.path, call.query.as_deref());
        let mut retries = 0;
        'attempt: loop {
            let hint = if call.is_write() {
                self.leader_hint()
            } else {
                None
            };
            let start = match &hint {
                Some(origin) => urls::rebase(&home, origin),
                None => home.clone(),
            };
            let mut url = start.clone();
            let mut hops = 0;
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Err(self.timeout_error(&url));
                }
                let mut req = self
                    .http
                    .request(call.method.clone(), url.clone())
                    .headers(call.headers.clone())
                    .timeout(remaining);
                if let Some(body) = &call.body {
                    req = req.body(body.clone());
                }
                let sent = async {
                    let resp = req.send().await?;
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await?;
                    Ok::<_, reqwest::Error>(Reply {
                        status,
                        headers,
                        body,
                    })
                }
                .await;
                let reply = match sent {
                    Ok(reply) => reply,
                    Err(e) => {
                        // A leader we were sent to (or remembered) went away:
                        // start again from the address the user gave.
                        let away = url != home && e.is_connect();
                        if away && retries < MAX_RETRIES {
                            retries += 1;
                            self.forget_leader();
                            sleep_within(DEFAULT_RETRY_WAIT, deadline).await;
                            continue 'attempt;
                        }
                        return Err(self.transport_error(&url, e));
                    }
                };
                if matches!(
                    reply.status,
                    StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
                ) {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err(TransportError::TooManyRedirects {
                            last: url.to_string(),
                        });
                    }
                    match redirect_target(&url, &reply) {
                        Some(next) => {
                            url = next;
                            continue;
                        }
                        None => return Ok(reply),
                    }
                }
                if reply.status == StatusCode::SERVICE_UNAVAILABLE
                    && retries < MAX_RETRIES
                    && ApiError::decode(reply.status, &reply.body).code
                        == ErrorCode::NoLeader.as_str()
                {
                    let wait = retry_after(&reply.headers)
                        .unwrap_or(Duration::ZERO)
                        .max(backoff(retries));
                    if Instant::now() + wait < deadline {
                        retries += 1;
                        self.forget_leader();
                        tokio::time::sleep(wait).await;
                        continue 'attempt;
                    }
                }
                if call.is_write() && url != start && reply.status.is_success() {
                    self.remember_leader(&url);
                }
                return Ok(reply);
            }
        }
    }

    /// Like [`Client::execute`], but any non-2xx answer becomes an [`ApiError`].
    pub async fn call(&self, call: &Call) -> Result<Reply> {
        let reply = self.execute(call).await?;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(ApiError::decode(reply.status, &reply.body).into())
        }
    }

    /// Sends a GET whose answer may be large and returns the successful
    /// response with its body unread, retrying NoLeader answers like
    /// [`Client::execute`] (no redirects: the caller asks for something any
    /// node serves). The timeout bounds the wait for the response head; the
    /// caller bounds the body.
    pub async fn get_streaming(&self, call: &Call) -> Result<reqwest::Response> {
        let deadline = Instant::now() + self.timeout;
        let url = urls::join(&self.base, &call.path, call.query.as_deref());
        let mut retries = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timeout_error(&url).into());
            }
            let request = self.http.get(url.clone()).headers(call.headers.clone());
            let resp = match tokio::time::timeout(remaining, request.send()).await {
                Err(_) => return Err(self.timeout_error(&url).into()),
                Ok(Err(e)) => return Err(self.transport_error(&url, e).into()),
                Ok(Ok(resp)) => resp,
            };
            if resp.status().is_success() {
                return Ok(resp);
            }
            let (status, headers) = (resp.status(), resp.headers().clone());
            let body = resp.bytes().await.unwrap_or_default();
            let err = ApiError::decode(status, &body);
            if status == StatusCode::SERVICE_UNAVAILABLE
                && err.code == ErrorCode::NoLeader.as_str()
                && retries < MAX_RETRIES
            {
                let wait = retry_after(&headers)
                    .unwrap_or(Duration::ZERO)
                    .max(backoff(retries));
                if Instant::now() + wait < deadline {
                    retries += 1;
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Err(err.into());
        }
    }

    /// The limit for one call (`--timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// GET `path` and parse the JSON answer.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        self.call(&Call::get(path)).await?.json()
    }

    fn leader_hint(&self) -> Option<Url> {
        self.leader.lock().ok().and_then(|g| g.clone())
    }

    fn remember_leader(&self, url: &Url) {
        if let Ok(mut g) = self.leader.lock() {
            let mut origin = url.clone();
            origin.set_path("/");
            origin.set_query(None);
            *g = Some(origin);
        }
    }

    fn forget_leader(&self) {
        if let Ok(mut g) = self.leader.lock() {
            *g = None;
        }
    }

    fn timeout_error(&self, url: &Url) -> TransportError {
        TransportError::Timeout {
            after: self.timeout,
            address: origin_of(url),
        }
    }

    fn transport_error(&self, url: &Url, e: reqwest::Error) -> TransportError {
        let address = origin_of(url);
        if e.is_timeout() {
            return TransportError::Timeout {
                after: self.timeout,
                address,
            };
        }
        let detail = tls::explain(url, root_cause(&e));
        if e.is_connect() {
            TransportError::Connect { address, detail }
        } else {
            TransportError::Other { address, detail }
        }
    }
}

/// Where a 307/308 points: the Location header (with an empty host read as
/// 127.0.0.1), else the leader's http_addr from the body plus the same path.
fn redirect_target(from: &Url, reply: &Reply) -> Option<Url> {
    if let Some(loc) = reply.headers.get(LOCATION).and_then(|v| v.to_str().ok()) {
        if let Ok(url) = from.join(&urls::fill_empty_host(loc.trim())) {
            return Some(url);
        }
    }
    let body: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    let http_addr = body.pointer("/leader/http_addr")?.as_str()?;
    let origin = urls::normalize_address(http_addr).ok()?;
    Some(urls::rebase(from, &origin))
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(60.0)))
}

/// 100 ms, 200 ms, 400 ms, ... capped at 1 s: an election takes a few of them.
fn backoff(retries: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << retries.min(4))).min(Duration::from_secs(1))
}

async fn sleep_within(wait: Duration, deadline: Instant) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(wait.min(remaining)).await;
}

fn origin_of(url: &Url) -> String {
    let mut s = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        s.push_str(&format!(":{port}"));
    }
    s
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn decodes_contract_errors() {
        let e = ApiError::decode(
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"KeyNotFound","message":"key 'a/b' not found"}}"#,
        );
        assert_eq!(e.to_string(), "key 'a/b' not found (KeyNotFound)");
        assert!(e.is_not_found());
    }

    #[test]
    fn decodes_other_bodies() {
        let e = ApiError::decode(StatusCode::NOT_FOUND, b"");
        assert_eq!(e.to_string(), "not found (HTTP 404)");
        let e = ApiError::decode(StatusCode::BAD_GATEWAY, b"\n upstream down \nmore");
        assert_eq!(e.to_string(), "upstream down (HTTP 502)");
    }

    #[test]
    fn redirect_from_location_or_body() {
        let from = Url::parse("http://127.0.0.1:8001/v1/data/k?x=1").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            LOCATION,
            HeaderValue::from_static("http://:8000/v1/data/k?x=1"),
        );
        let reply = Reply {
            status: StatusCode::TEMPORARY_REDIRECT,
            headers,
            body: Bytes::new(),
        };
        assert_eq!(
            redirect_target(&from, &reply).unwrap().as_str(),
            "http://127.0.0.1:8000/v1/data/k?x=1"
        );
        let reply = Reply {
            status: StatusCode::TEMPORARY_REDIRECT,
            headers: HeaderMap::new(),
            body: Bytes::from_static(
                br#"{"error":{"code":"NotLeader","message":"m"},"leader":{"id":"n1","http_addr":"h:8002"}}"#,
            ),
        };
        assert_eq!(
            redirect_target(&from, &reply).unwrap().as_str(),
            "http://h:8002/v1/data/k?x=1"
        );
    }

    #[test]
    fn retry_after_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn backoff_grows_to_a_second() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(4), Duration::from_secs(1));
        assert_eq!(backoff(50), Duration::from_secs(1));
    }
}
