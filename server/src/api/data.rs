//! `/v1/data`: keys and values.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use cete_types::ErrorCode;
use http::header::{HeaderValue, CONTENT_TYPE, ETAG};
use http::StatusCode;
use serde_json::json;
use warp::filters::path::{FullPath, Tail};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::error::{node_error, ApiError};
use super::ttl;
use super::{limited_body, parse_consistency, raw_query, request_target, with_node, RequestTarget};
use crate::errors::Error;
use crate::node::Node;
use crate::raft::{Command, CommandResult, Precondition};
use cete_store::state_machine::now_ms;

pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
const DEFAULT_LIST_LIMIT: usize = 100;
const MAX_LIST_LIMIT: usize = 1000;

pub fn routes(node: Arc<Node>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let max_body = node.max_value_size;
    let list = warp::path!("v1" / "data")
        .and(warp::get())
        .and(with_node(node.clone()))
        .and(raw_query())
        .then(list);
    // `/v1/data/<key>`, but not `/v1/data` itself: that is the list, and a
    // wrong method there is a 405, not an empty key.
    let key = warp::path("v1")
        .and(warp::path("data"))
        .and(warp::path::full())
        .and_then(|full: FullPath| async move {
            if full.as_str() == "/v1/data" {
                Err(warp::reject::not_found())
            } else {
                Ok(())
            }
        })
        .untuple_one()
        .and(warp::path::tail());
    let get = key
        .and(
            warp::get()
                .map(|| false)
                .or(warp::head().map(|| true))
                .unify(),
        )
        .and(with_node(node.clone()))
        .and(raw_query())
        .then(get);
    let put = key
        .and(warp::put())
        .and(with_node(node.clone()))
        .and(request_target())
        .and(raw_query())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("if-match"))
        .and(warp::header::optional::<String>("if-none-match"))
        .and(limited_body(max_body))
        .then(put);
    let delete = key
        .and(warp::delete())
        .and(with_node(node))
        .and(request_target())
        .and(raw_query())
        .and(warp::header::optional::<String>("if-match"))
        .then(delete);
    list.or(get).unify().or(put).unify().or(delete).unify()
}

/// The byte offset of the first `%` that does not start a valid escape.
fn bad_escape(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let valid = bytes.len() >= i + 3
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !valid {
                return Some(i);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    None
}

/// Parses a query string strictly: only the `allowed` parameters, each at
/// most once, with valid percent-encoding (`+` is a space, as in forms).
/// Values are bytes, so binary prefixes work like binary keys. Anything
/// else is refused rather than ignored.
pub(super) fn parse_query(
    raw: &str,
    allowed: &[&'static str],
) -> Result<BTreeMap<&'static str, Vec<u8>>, ApiError> {
    let mut params = BTreeMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(name) = allowed.iter().copied().find(|a| *a == name) else {
            let known = if allowed.is_empty() {
                "this request takes no query parameters".to_string()
            } else {
                format!("known parameters: {}", allowed.join(", "))
            };
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("unknown query parameter '{name}'; {known}"),
            ));
        };
        let value = value.replace('+', " ");
        if let Some(at) = bad_escape(value.as_bytes()) {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("invalid percent-encoding in query parameter '{name}' at byte {at}"),
            ));
        }
        let decoded = percent_encoding::percent_decode(value.as_bytes()).collect();
        if params.insert(name, decoded).is_some() {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("query parameter '{name}' is given more than once"),
            ));
        }
    }
    Ok(params)
}

/// A query parameter that must be text.
pub(super) fn text_param(
    params: &BTreeMap<&'static str, Vec<u8>>,
    name: &str,
) -> Result<Option<String>, ApiError> {
    params
        .get(name)
        .map(|v| {
            String::from_utf8(v.clone()).map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("query parameter '{name}' is not UTF-8"),
                )
            })
        })
        .transpose()
}

/// Decodes a key from the URL path, strictly: a `%` must start a valid escape.
pub fn decode_key(raw: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = raw.as_bytes();
    if let Some(i) = bad_escape(bytes) {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            format!("invalid percent-encoding in key at byte {i}"),
        ));
    }
    let key: Vec<u8> = percent_encoding::percent_decode(bytes).collect();
    check_key(&key)?;
    Ok(key)
}

pub(super) fn check_key(key: &[u8]) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidKey, "the key is empty"));
    }
    if key.len() > cete_types::MAX_KEY_LEN {
        return Err(ApiError::new(
            ErrorCode::KeyTooLarge,
            format!(
                "the key is {} bytes; the limit is {}",
                key.len(),
                cete_types::MAX_KEY_LEN
            ),
        ));
    }
    Ok(())
}

/// What the conditional headers of a write ask for.
#[derive(Debug, PartialEq, Eq)]
enum Condition {
    /// Apply if this holds (`None`: unconditionally).
    Apply(Option<Precondition>),
    /// `If-Match` and `If-None-Match: *` together: the key must exist at a revision and
    /// not exist, so the condition is false whatever the key's state (RFC 9110, section
    /// 13.2.2, evaluates both): `412`, nothing written.
    Never,
}

/// `If-Match: "7"` (or `7`, or `W/"7"`) and `If-None-Match: *`; each is checked for its
/// syntax first (`400` when malformed).
fn precondition(
    if_match: Option<&str>,
    if_none_match: Option<&str>,
) -> Result<Condition, ApiError> {
    let revision = if_match
        .map(|tag| {
            let rev = tag.trim().trim_start_matches("W/").trim_matches('"');
            rev.parse::<u64>().map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("If-Match must be a revision such as \"7\", not {tag}"),
                )
            })
        })
        .transpose()?;
    let absent = match if_none_match {
        None => false,
        Some(tag) if tag.trim() == "*" => true,
        Some(tag) => {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!("only If-None-Match: * is supported, not {tag}"),
            ))
        }
    };
    Ok(match (revision, absent) {
        (Some(_), true) => Condition::Never,
        (Some(rev), false) => Condition::Apply(Some(Precondition::RevisionIs(rev))),
        (None, true) => Condition::Apply(Some(Precondition::Absent)),
        (None, false) => Condition::Apply(None),
    })
}

fn contradictory_precondition() -> Response {
    ApiError::new(
        ErrorCode::PreconditionFailed,
        "precondition failed: If-Match needs the key to exist and If-None-Match: * needs it not to",
    )
    .into_response()
}

pub(super) fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn precondition_failed(current: Option<u64>) -> Response {
    let message = match current {
        Some(rev) => format!("precondition failed: the key's revision is {rev}"),
        None => "precondition failed: the key does not exist".to_string(),
    };
    ApiError::new(ErrorCode::PreconditionFailed, message).into_response()
}

fn key_not_found(key: &[u8]) -> Response {
    ApiError::new(
        ErrorCode::KeyNotFound,
        format!("key '{}' not found", String::from_utf8_lossy(key)),
    )
    .into_response()
}

async fn get(tail: Tail, head: bool, node: Arc<Node>, query: String) -> Response {
    let key = match decode_key(tail.as_str()) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let consistency = match parse_query(&query, &["consistency"])
        .and_then(|q| text_param(&q, "consistency"))
        .and_then(|c| parse_consistency(c.as_deref()))
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    match node.get(key.clone(), consistency).await {
        Ok(Some(stored)) => {
            let body = if head { Vec::new() } else { stored.value };
            let mut response = Response::new(body.into());
            let headers = response.headers_mut();
            // Only visible ASCII goes back as a header (a restored backup
            // could hold anything).
            let content_type = HeaderValue::from_str(&stored.meta.content_type)
                .ok()
                .filter(|v| v.to_str().is_ok())
                .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
            headers.insert(CONTENT_TYPE, content_type);
            let etag = format!("\"{}\"", stored.meta.mod_revision);
            headers.insert(
                ETAG,
                HeaderValue::from_str(&etag).expect("digits are a valid header"),
            );
            headers.insert("x-cete-revision", stored.meta.mod_revision.into());
            headers.insert("x-cete-create-revision", stored.meta.create_revision.into());
            if let Some(deadline) = stored.meta.expires_at_ms {
                let at = ttl::format_deadline(deadline);
                headers.insert(
                    "x-cete-expires-at",
                    HeaderValue::from_str(&at).expect("RFC 3339 is a valid header"),
                );
                // By this node's clock; the key is not returned once it is 0.
                headers.insert(
                    "x-cete-expires-in",
                    deadline.saturating_sub(now_ms()).into(),
                );
            }
            if head {
                headers.insert("x-cete-size", stored.meta.size.into());
            }
            response
        }
        Ok(None) => key_not_found(&key),
        Err(e) => node_error(e, None),
    }
}

#[allow(clippy::too_many_arguments)]
async fn put(
    tail: Tail,
    node: Arc<Node>,
    target: RequestTarget,
    query: String,
    content_type: Option<String>,
    if_match: Option<String>,
    if_none_match: Option<String>,
    body: Bytes,
) -> Response {
    let key = match decode_key(tail.as_str()) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let ttl_ms = match parse_query(&query, &["ttl"]).and_then(|q| {
        text_param(&q, "ttl")?
            .map(|raw| ttl::parse(&raw))
            .transpose()
    }) {
        Ok(ttl_ms) => ttl_ms,
        Err(e) => return e.into_response(),
    };
    let precondition = match precondition(if_match.as_deref(), if_none_match.as_deref()) {
        Ok(Condition::Apply(p)) => p,
        Ok(Condition::Never) => return contradictory_precondition(),
        Err(e) => return e.into_response(),
    };
    // The deadline is fixed at apply time from this clock (see `Command::PutAt`).
    let at_ms = now_ms();
    let command = Command::PutAt {
        key,
        value: body.to_vec(),
        content_type: content_type
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string()),
        precondition,
        at_ms,
        ttl_ms,
    };
    match node.write(command).await {
        Ok(CommandResult::Written { revision, created }) => {
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = match ttl_ms {
                Some(ttl_ms) => json!({
                    "revision": revision,
                    "expires_at": ttl::format_deadline(at_ms.saturating_add(ttl_ms)),
                }),
                None => json!({"revision": revision}),
            };
            json_response(status, body)
        }
        Ok(CommandResult::PreconditionFailed { current }) => precondition_failed(current),
        Ok(other) => node_error(
            Error::Internal(format!("unexpected apply result {other:?}")),
            None,
        ),
        Err(e) => node_error(e, Some(&target)),
    }
}

async fn delete(
    tail: Tail,
    node: Arc<Node>,
    target: RequestTarget,
    query: String,
    if_match: Option<String>,
) -> Response {
    let key = match decode_key(tail.as_str()) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = parse_query(&query, &[]) {
        return e.into_response();
    }
    let precondition = match precondition(if_match.as_deref(), None) {
        Ok(Condition::Apply(p)) => p,
        Ok(Condition::Never) => unreachable!("no If-None-Match on a delete"),
        Err(e) => return e.into_response(),
    };
    match node
        .write(Command::DeleteAt {
            key: key.clone(),
            precondition,
            at_ms: now_ms(),
        })
        .await
    {
        Ok(CommandResult::Deleted { revision }) => {
            json_response(StatusCode::OK, json!({"revision": revision}))
        }
        Ok(CommandResult::NotFound) => key_not_found(&key),
        Ok(CommandResult::PreconditionFailed { current }) => precondition_failed(current),
        Ok(other) => node_error(
            Error::Internal(format!("unexpected apply result {other:?}")),
            None,
        ),
        Err(e) => node_error(e, Some(&target)),
    }
}

async fn list(node: Arc<Node>, query: String) -> Response {
    let query = match parse_query(&query, &["prefix", "limit", "start_after", "consistency"]) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let (limit, consistency) = match (
        text_param(&query, "limit"),
        text_param(&query, "consistency"),
    ) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let limit = match limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_LIST_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
        Some(_) => {
            return ApiError::new(
                ErrorCode::InvalidArgument,
                format!("limit must be a whole number from 1 to {MAX_LIST_LIMIT}"),
            )
            .into_response()
        }
    };
    let consistency = match parse_consistency(consistency.as_deref()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    let start_after = query.get("start_after").cloned();
    match node.list(prefix, start_after, limit, consistency).await {
        Ok((entries, more)) => {
            let next = if more {
                entries
                    .last()
                    .map(|e| String::from_utf8_lossy(&e.key).into_owned())
            } else {
                None
            };
            let keys: Vec<_> = entries
                .iter()
                .map(|e| {
                    let mut entry = json!({
                        "key": String::from_utf8_lossy(&e.key),
                        "revision": e.meta.mod_revision,
                        "create_revision": e.meta.create_revision,
                        "size": e.meta.size,
                        "content_type": e.meta.content_type,
                    });
                    if let Some(deadline) = e.meta.expires_at_ms {
                        entry["expires_at"] = ttl::format_deadline(deadline).into();
                    }
                    entry
                })
                .collect();
            json_response(
                StatusCode::OK,
                json!({"keys": keys, "more": more, "next_start_after": next}),
            )
        }
        Err(e) => node_error(e, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_strictly() {
        assert_eq!(decode_key("a/b/c").unwrap(), b"a/b/c");
        assert_eq!(decode_key("a%20b%2Fc").unwrap(), b"a b/c");
        assert_eq!(decode_key("%00%ff").unwrap(), vec![0, 255]);
        assert_eq!(decode_key("%zz").unwrap_err().code.as_str(), "InvalidKey");
        assert_eq!(decode_key("abc%4").unwrap_err().code.as_str(), "InvalidKey");
        assert_eq!(decode_key("").unwrap_err().code.as_str(), "InvalidKey");
        let long = "k".repeat(cete_types::MAX_KEY_LEN + 1);
        assert_eq!(decode_key(&long).unwrap_err().code.as_str(), "KeyTooLarge");
        assert!(decode_key(&"k".repeat(cete_types::MAX_KEY_LEN)).is_ok());
    }

    #[test]
    fn queries_parse_strictly() {
        let q = parse_query("prefix=a%2Fb+c&limit=5", &["prefix", "limit"]).unwrap();
        assert_eq!(q["prefix"], b"a/b c");
        assert_eq!(q["limit"], b"5");
        assert_eq!(
            parse_query("prefix=%ff", &["prefix"]).unwrap()["prefix"],
            [255]
        );
        assert!(parse_query("", &[]).unwrap().is_empty());
        for bad in ["prefix=%zz", "prefix=a%4", "prefx=a", "prefix=a&prefix=b"] {
            let err = parse_query(bad, &["prefix"]).unwrap_err();
            assert_eq!(err.code.as_str(), "InvalidArgument", "{bad}");
        }
        assert!(parse_query("x=1", &[]).is_err());
    }

    #[test]
    fn preconditions_parse() {
        assert_eq!(
            precondition(Some("\"7\""), None).unwrap(),
            Condition::Apply(Some(Precondition::RevisionIs(7)))
        );
        assert_eq!(
            precondition(Some("W/\"7\""), None).unwrap(),
            Condition::Apply(Some(Precondition::RevisionIs(7)))
        );
        assert_eq!(
            precondition(None, Some("*")).unwrap(),
            Condition::Apply(Some(Precondition::Absent))
        );
        assert!(precondition(Some("x"), None).is_err());
        assert!(precondition(None, Some("\"1\"")).is_err());
        assert_eq!(
            precondition(Some("1"), Some("*")).unwrap(),
            Condition::Never
        );
        // Malformed is malformed, also next to the other header.
        assert!(precondition(Some("x"), Some("*")).is_err());
        assert!(precondition(Some("1"), Some("x")).is_err());
        assert_eq!(precondition(None, None).unwrap(), Condition::Apply(None));
    }
}
