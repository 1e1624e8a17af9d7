//! The `/v1` REST API on warp: one file per resource, errors mapped in `error`.

mod backup;
mod cluster;
mod cors;
mod data;
pub mod error;
mod health;
mod metrics;
pub mod routes;
mod ttl;
mod txn;
mod ui;
mod watch;

use std::sync::Arc;

use cete_types::ErrorCode;
use warp::filters::path::FullPath;
use warp::{Filter, Rejection, Reply};

use crate::errors::LeaderHint;
use crate::http_server::Scheme;
use crate::metrics::Metrics;
use crate::node::{Consistency, Node};
use error::ApiError;

/// All routes of the HTTP API, with JSON errors for anything unmatched.
pub fn routes(
    node: Arc<Node>,
    metrics: Arc<Metrics>,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let recorder = metrics.clone();
    let api = ui::routes()
        .or(cors::preflight(node.clone()))
        .or(data::routes(node.clone()))
        .or(txn::routes(node.clone()))
        .or(cluster::routes(node.clone()))
        .or(watch::routes(node.clone()))
        .or(backup::routes(node.clone()))
        .or(health::routes(node.clone()))
        .or(metrics::routes(node.clone(), metrics))
        .recover(error::recover);
    warp::path::full()
        .and(cors::member_origin(node))
        .and(api)
        .map(|path, origin, reply| {
            let mut response = with_allow(path, reply);
            cors::allow(&mut response, origin);
            response
        })
        .with(warp::log::custom(move |info| {
            recorder.record_request(
                info.method(),
                routes::template(info.path()),
                info.status(),
                info.elapsed(),
            );
            log::debug!(
                "{} {} {} {:?}",
                info.method(),
                info.path(),
                info.status().as_u16(),
                info.elapsed()
            );
        }))
}

/// A 405 names the methods the path does answer (RFC 9110, section 15.5.6).
fn with_allow(path: FullPath, reply: impl Reply) -> warp::reply::Response {
    let mut response = reply.into_response();
    if response.status() == http::StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = routes::allowed_methods(path.as_str()) {
            response
                .headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
        }
    }
    response
}

pub(crate) fn with_node(
    node: Arc<Node>,
) -> impl Filter<Extract = (Arc<Node>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || node.clone())
}

/// The raw query string, empty when there is none.
pub(crate) fn raw_query(
) -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// The path and raw query of the request, to rebuild it on the leader.
pub(crate) fn request_target() -> impl Filter<Extract = (RequestTarget,), Error = Rejection> + Clone
{
    warp::path::full()
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::optional::<String>("host"))
        .and(warp::ext::optional::<Scheme>())
        .map(
            |path: FullPath, query: String, host: Option<String>, scheme: Option<Scheme>| {
                RequestTarget {
                    path: path.as_str().to_string(),
                    query,
                    host,
                    https: scheme.is_some_and(|s| s.https),
                }
            },
        )
}

#[derive(Debug, Clone)]
pub(crate) struct RequestTarget {
    path: String,
    query: String,
    host: Option<String>,
    /// Came in over TLS: the leader speaks HTTPS too (TLS is cluster-wide).
    https: bool,
}

impl RequestTarget {
    /// The URL of this request on the leader. A leader address with an empty
    /// host (`:8001`) is on the host the client already reached.
    pub fn on_leader(&self, hint: &LeaderHint) -> String {
        let address = if hint.http_address.starts_with(':') {
            let host = self
                .host
                .as_deref()
                .map(strip_port)
                .filter(|h| !h.is_empty())
                .unwrap_or("127.0.0.1");
            format!("{host}{}", hint.http_address)
        } else {
            hint.http_address.clone()
        };
        let query = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{address}{}{query}", self.path)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8000
        return rest
            .split(']')
            .next()
            .map_or(host, |h| &host[..h.len() + 2]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A request body refused for its size.
#[derive(Debug)]
pub(crate) struct BodyTooLarge {
    pub limit: u64,
}

impl warp::reject::Reject for BodyTooLarge {}

/// A body that did not arrive within [`BODY_READ_TIMEOUT`].
#[derive(Debug)]
pub(crate) struct BodyTimeout;

impl warp::reject::Reject for BodyTimeout {}

/// How long a client may take to send a request body, from its first byte
/// to its last (a client that trickles a byte a second holds a connection
/// and a buffer; 4 MiB in this time is about 140 KB/s).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A body unreadable mid-stream (the client went away).
#[derive(Debug)]
pub(crate) struct BodyUnreadable(pub String);

impl warp::reject::Reject for BodyUnreadable {}

/// The whole request body, at most `limit` bytes, with or without a
/// Content-Length (chunked uploads such as `curl -T -` have none). A declared
/// length over the limit is refused before anything is read.
pub(crate) fn limited_body(
    limit: u64,
) -> impl Filter<Extract = (bytes::Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |declared: Option<u64>| async move {
            match declared {
                Some(n) if n > limit => Err(warp::reject::custom(BodyTooLarge { limit })),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(move |stream| async move {
            tokio::time::timeout(BODY_READ_TIMEOUT, collect_limited(stream, limit))
                .await
                .map_err(|_| warp::reject::custom(BodyTimeout))?
        })
}

async fn collect_limited<S, B>(stream: S, limit: u64) -> Result<bytes::Bytes, Rejection>
where
    S: futures::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures::StreamExt;
    let mut stream = Box::pin(stream);
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| warp::reject::custom(BodyUnreadable(e.to_string())))?;
        if (body.len() + chunk.remaining()) as u64 > limit {
            return Err(warp::reject::custom(BodyTooLarge { limit }));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            body.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
}

pub(crate) fn parse_consistency(value: Option<&str>) -> Result<Consistency, ApiError> {
    match value {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!("consistency must be 'linearizable' or 'stale', not '{other}'"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_url_keeps_path_and_query_and_fills_empty_host() {
        let target = RequestTarget {
            path: "/v1/data/a/b".into(),
            query: "consistency=stale".into(),
            host: Some("example.org:8000".into()),
            https: false,
        };
        let hint = LeaderHint {
            id: "node2".into(),
            http_address: ":8001".into(),
            grpc_address: ":9001".into(),
        };
        assert_eq!(
            target.on_leader(&hint),
            "http://example.org:8001/v1/data/a/b?consistency=stale"
        );
        let hint = LeaderHint {
            http_address: "10.0.0.2:8000".into(),
            ..hint
        };
        assert_eq!(
            target.on_leader(&hint),
            "http://10.0.0.2:8000/v1/data/a/b?consistency=stale"
        );
        assert_eq!(strip_port("[::1]:8000"), "[::1]");
        let https = RequestTarget {
            https: true,
            ..target
        };
        assert_eq!(
            https.on_leader(&hint),
            "https://10.0.0.2:8000/v1/data/a/b?consistency=stale"
        );
    }
}
