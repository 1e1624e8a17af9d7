//! Cross-origin requests from the other members' dashboards, and only theirs.
//!
//! The dashboard served by a follower sends its writes there; the follower
//! answers `307` to the leader, another origin, and the browser follows only
//! if the leader allows it (CORS, with a preflight for `PUT`/`DELETE`). It
//! also reads each member's `/v1/node` and the leader's `/v1/cluster`. So a
//! request whose `Origin` is the HTTP address of a member of this cluster
//! (same scheme; an address without a host, such as `:8001`, is on the host
//! the request came to, as in the redirect's `Location`) gets CORS headers.
//! Any other origin gets none, and browsers keep such pages from calling the
//! API: the API has no authentication, so any web page could otherwise
//! change the store through an operator's browser.

use std::sync::Arc;

use http::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, HOST,
    ORIGIN, VARY,
};
use http::uri::Authority;
use http::StatusCode;
use warp::filters::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::http_server::Scheme;
use crate::node::Node;

/// Request headers a cross-origin call may send (the ones the API reads).
const ALLOW_HEADERS: &str = "content-type, if-match, if-none-match, last-event-id";
/// Response headers a cross-origin caller may read.
const EXPOSE_HEADERS: &str =
    "etag, location, x-cete-leader, x-cete-revision, x-cete-create-revision, x-cete-size";

/// The request's `Origin` when it is another member's dashboard, else `None`.
/// Never rejects, so it can run before every route.
pub(crate) fn member_origin(
    node: Arc<Node>,
) -> impl Filter<Extract = (Option<HeaderValue>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned()
        .and(warp::ext::optional::<Scheme>())
        .map(move |headers: HeaderMap, scheme: Option<Scheme>| {
            let origin = headers.get(ORIGIN)?;
            let host = headers.get(HOST).and_then(|h| h.to_str().ok());
            let https = scheme.is_some_and(|s| s.https);
            let (members, _) = node.cluster_status();
            let addresses = members.values().map(|m| m.info.http_address.as_str());
            is_member_origin(origin.to_str().ok()?, https, host, addresses).then(|| origin.clone())
        })
}

/// Matches OPTIONS only. Other methods are rejected as not found, not as
/// `warp::options()` does (405): that rejection would outrank every other
/// route's 404 and turn unknown paths into 405s.
fn options_only() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::method()
        .and_then(|method: http::Method| async move {
            if method == http::Method::OPTIONS {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

/// Answers a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`)
/// from a member's origin for a method the path serves; anything else passes
/// on (to the `405` that `OPTIONS` gets elsewhere).
pub(crate) fn preflight(
    node: Arc<Node>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    options_only()
        .and(warp::path::full())
        .and(warp::header::<String>("access-control-request-method"))
        .and(member_origin(node))
        .and_then(
            |path: FullPath, method: String, origin: Option<HeaderValue>| async move {
                let allowed = super::routes::allowed_methods(path.as_str());
                let serves = allowed.is_some_and(|methods| {
                    methods
                        .split(", ")
                        .any(|m| m.eq_ignore_ascii_case(method.trim()))
                });
                match (origin, allowed) {
                    (Some(origin), Some(methods)) if serves => {
                        let mut response = Response::new(Default::default());
                        *response.status_mut() = StatusCode::NO_CONTENT;
                        let headers = response.headers_mut();
                        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                        headers.insert(
                            ACCESS_CONTROL_ALLOW_METHODS,
                            HeaderValue::from_static(methods),
                        );
                        headers.insert(
                            ACCESS_CONTROL_ALLOW_HEADERS,
                            HeaderValue::from_static(ALLOW_HEADERS),
                        );
                        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
                        headers.insert(VARY, HeaderValue::from_static("origin"));
                        Ok(response)
                    }
                    _ => Err(warp::reject::not_found()),
                }
            },
        )
}

/// Adds the CORS headers of an actual (not preflight) request.
pub(crate) fn allow(response: &mut Response, origin: Option<HeaderValue>) {
    let Some(origin) = origin else {
        return;
    };
    let headers = response.headers_mut();
    if headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN) {
        return; // a preflight answer
    }
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    headers.append(VARY, HeaderValue::from_static("origin"));
}

/// Whether `origin` (`scheme://host[:port]`) is the HTTP address of one of
/// `members`, as reached from a request to `request_host` over `https` or not.
fn is_member_origin<'a>(
    origin: &str,
    https: bool,
    request_host: Option<&str>,
    mut members: impl Iterator<Item = &'a str>,
) -> bool {
    let (scheme, default_port) = if https {
        ("https://", 443)
    } else {
        ("http://", 80)
    };
    let Some(origin) = origin
        .strip_prefix(scheme)
        .and_then(|a| a.parse::<Authority>().ok())
    else {
        return false;
    };
    let here = request_host
        .map(super::strip_port)
        .filter(|h| !h.is_empty())
        .unwrap_or("127.0.0.1");
    let port = |a: &Authority| a.port_u16().unwrap_or(default_port);
    members.any(|address| {
        let full = if address.starts_with(':') {
            format!("{here}{address}")
        } else {
            address.to_string()
        };
        full.parse::<Authority>().is_ok_and(|member| {
            member.host().eq_ignore_ascii_case(origin.host()) && port(&member) == port(&origin)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_member_addresses_are_allowed_origins() {
        let members = ["127.0.0.1:8000", ":8001", "cete-2.cete:80"];
        let check = |origin: &str, https: bool, host: Option<&str>| {
            is_member_origin(origin, https, host, members.iter().copied())
        };
        assert!(check(
            "http://127.0.0.1:8000",
            false,
            Some("127.0.0.1:8001")
        ));
        // An address without a host is on the host the request reached.
        assert!(check(
            "http://example.org:8001",
            false,
            Some("example.org:8000")
        ));
        assert!(!check(
            "http://other.org:8001",
            false,
            Some("example.org:8000")
        ));
        assert!(check("http://CETE-2.cete", false, None));
        // Scheme, port and host must all match.
        assert!(!check("https://127.0.0.1:8000", false, None));
        assert!(check("https://127.0.0.1:8000", true, None));
        assert!(!check("http://127.0.0.1:8009", false, None));
        assert!(!check("http://evil.example", false, None));
        assert!(!check("null", false, None));
    }
}
