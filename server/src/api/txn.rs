//! `POST /v1/txn`: several reads and writes applied all-or-nothing, in one
//! Raft entry, in the spirit of etcd's Txn and Consul's `/v1/txn`.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use cete_types::ErrorCode;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::data::{check_key, json_response, DEFAULT_CONTENT_TYPE};
use super::error::{node_error, ApiError};
use super::{limited_body, raw_query, request_target, ttl, with_node, RequestTarget};
use crate::errors::Error;
use crate::node::Node;
use crate::raft::{Command, CommandResult, Compare, GotValue, Txn, TxnOp, TxnOpResult};
use cete_store::state_machine::now_ms;

/// Operations in one transaction at most, compares and both branches together
/// (etcd's default `--max-txn-ops` is 128 too).
pub const MAX_TXN_OPS: usize = 128;

pub fn routes(node: Arc<Node>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let max_body = node.max_value_size;
    warp::path!("v1" / "txn")
        .and(warp::post())
        .and(with_node(node))
        .and(request_target())
        .and(raw_query())
        .and(limited_body(max_body))
        .then(txn)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TxnRequest {
    #[serde(default)]
    compare: Vec<CompareJson>,
    #[serde(default)]
    success: Vec<OpJson>,
    #[serde(default)]
    failure: Vec<OpJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompareJson {
    key: String,
    revision: Option<u64>,
    absent: Option<bool>,
    present: Option<bool>,
    value: Option<String>,
    value_base64: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum OpJson {
    Put(PutJson),
    Delete(KeyJson),
    Get(KeyJson),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutJson {
    key: String,
    value: Option<String>,
    value_base64: Option<String>,
    content_type: Option<String>,
    ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyJson {
    key: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidTxn, message)
}

fn key_of(key: String) -> Result<Vec<u8>, ApiError> {
    let key = key.into_bytes();
    check_key(&key)?;
    Ok(key)
}

/// Exactly one of `value` (text) and `value_base64` (any bytes).
fn value_of(
    what: &str,
    text: Option<String>,
    base64: Option<String>,
) -> Result<Option<Vec<u8>>, ApiError> {
    match (text, base64) {
        (Some(text), None) => Ok(Some(text.into_bytes())),
        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map(Some)
            .map_err(|e| invalid(format!("{what}: value_base64 is not base64 ({e})"))),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(invalid(format!(
            "{what}: give value or value_base64, not both"
        ))),
    }
}

fn compare_of(i: usize, c: CompareJson) -> Result<(Vec<u8>, Compare), ApiError> {
    let what = format!("compare[{i}]");
    let value = value_of(&what, c.value, c.value_base64)?;
    let mut given = Vec::new();
    if let Some(rev) = c.revision {
        if rev == 0 {
            return Err(invalid(format!(
                "{what}: revision must be 1 or more (use \"absent\": true for a missing key)"
            )));
        }
        given.push(Compare::Revision(rev));
    }
    for (flag, compare, name) in [
        (c.absent, Compare::Absent, "absent"),
        (c.present, Compare::Present, "present"),
    ] {
        match flag {
            Some(true) => given.push(compare),
            Some(false) => return Err(invalid(format!("{what}: {name} can only be true"))),
            None => {}
        }
    }
    if let Some(value) = value {
        given.push(Compare::Value(value));
    }
    if given.len() != 1 {
        return Err(invalid(format!(
            "{what}: give exactly one of revision, absent, present, value, value_base64"
        )));
    }
    Ok((key_of(c.key)?, given.remove(0)))
}

/// A content type as a `PUT` header could carry it: visible ASCII, as it is
/// handed back in the `Content-Type` header of a `GET`.
fn content_type_of(what: &str, given: Option<String>) -> Result<String, ApiError> {
    match given.filter(|c| !c.trim().is_empty()) {
        None => Ok(DEFAULT_CONTENT_TYPE.to_string()),
        Some(c) if http::HeaderValue::from_str(&c).is_ok_and(|v| v.to_str().is_ok()) => Ok(c),
        Some(c) => Err(invalid(format!(
            "{what}: content_type {c:?} is not a valid header value (visible ASCII only)"
        ))),
    }
}

fn ops_of(branch: &str, ops: Vec<OpJson>) -> Result<Vec<TxnOp>, ApiError> {
    let mut written = HashSet::new();
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        let what = format!("{branch}[{i}]");
        let op = match op {
            OpJson::Put(put) => TxnOp::Put {
                key: key_of(put.key)?,
                value: value_of(&what, put.value, put.value_base64)?
                    .ok_or_else(|| invalid(format!("{what}: a put needs value or value_base64")))?,
                content_type: content_type_of(&what, put.content_type)?,
                ttl_ms: put.ttl.as_deref().map(ttl::parse).transpose()?,
            },
            OpJson::Delete(k) => TxnOp::Delete {
                key: key_of(k.key)?,
            },
            OpJson::Get(k) => TxnOp::Get {
                key: key_of(k.key)?,
            },
        };
        // One revision holds one change per key, as in etcd.
        if !matches!(op, TxnOp::Get { .. }) && !written.insert(op.key().to_vec()) {
            return Err(ApiError::new(
                ErrorCode::DuplicateKey,
                format!(
                    "{what}: key '{}' is written twice in {branch}",
                    String::from_utf8_lossy(op.key())
                ),
            ));
        }
        out.push(op);
    }
    Ok(out)
}

/// The request as a transaction stamped with this node's clock.
fn parse(body: &[u8]) -> Result<Txn, ApiError> {
    let request: TxnRequest = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("the body is not a transaction: {e}")))?;
    let ops = request.compare.len() + request.success.len() + request.failure.len();
    if ops > MAX_TXN_OPS {
        return Err(ApiError::new(
            ErrorCode::TooManyOperations,
            format!("the transaction has {ops} operations; the limit is {MAX_TXN_OPS}"),
        ));
    }
    let compare = request
        .compare
        .into_iter()
        .enumerate()
        .map(|(i, c)| compare_of(i, c))
        .collect::<Result<_, _>>()?;
    Ok(Txn {
        compare,
        success: ops_of("success", request.success)?,
        failure: ops_of("failure", request.failure)?,
        at_ms: now_ms(),
    })
}

fn result_json(key: &[u8], result: TxnOpResult) -> Value {
    match result {
        TxnOpResult::Put {
            revision,
            expires_at_ms,
        } => match expires_at_ms {
            Some(deadline) => {
                json!({"revision": revision, "expires_at": ttl::format_deadline(deadline)})
            }
            None => json!({"revision": revision}),
        },
        TxnOpResult::Delete {
            revision: Some(revision),
        } => json!({"deleted": true, "revision": revision}),
        TxnOpResult::Delete { revision: None } => json!({"deleted": false}),
        TxnOpResult::Get(None) => json!({"key": String::from_utf8_lossy(key), "found": false}),
        TxnOpResult::Get(Some(GotValue {
            value,
            content_type,
            create_revision,
            mod_revision,
            expires_at_ms,
        })) => {
            let mut got = json!({
                "key": String::from_utf8_lossy(key),
                "found": true,
                "value_base64": base64::engine::general_purpose::STANDARD.encode(value),
                "content_type": content_type,
                "revision": mod_revision,
                "create_revision": create_revision,
            });
            if let Some(deadline) = expires_at_ms {
                got["expires_at"] = ttl::format_deadline(deadline).into();
            }
            got
        }
    }
}

async fn txn(node: Arc<Node>, target: RequestTarget, query: String, body: Bytes) -> Response {
    if let Err(e) = super::data::parse_query(&query, &[]) {
        return e.into_response();
    }
    let txn = match parse(&body) {
        Ok(txn) => txn,
        Err(e) => return e.into_response(),
    };
    let success_keys: Vec<Vec<u8>> = txn.success.iter().map(|op| op.key().to_vec()).collect();
    let failure_keys: Vec<Vec<u8>> = txn.failure.iter().map(|op| op.key().to_vec()).collect();
    match node.write(Command::Txn(txn)).await {
        Ok(CommandResult::Txn {
            succeeded,
            revision,
            results,
        }) => {
            let keys = if succeeded {
                success_keys
            } else {
                failure_keys
            };
            let results: Vec<Value> = keys
                .iter()
                .zip(results)
                .map(|(key, result)| result_json(key, result))
                .collect();
            json_response(
                StatusCode::OK,
                json!({"succeeded": succeeded, "revision": revision, "results": results}),
            )
        }
        Ok(other) => node_error(
            Error::Internal(format!("unexpected apply result {other:?}")),
            None,
        ),
        Err(e) => node_error(e, Some(&target)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> &'static str {
        parse(body.as_bytes()).unwrap_err().code.as_str()
    }

    #[test]
    fn the_documented_shape_parses() {
        let txn = parse(
            br#"{"compare": [{"key": "a", "revision": 3}, {"key": "b", "absent": true},
                             {"key": "c", "present": true}, {"key": "d", "value": "x"},
                             {"key": "e", "value_base64": "AP8="}],
                 "success": [{"put": {"key": "a", "value": "1", "content_type": "text/plain", "ttl": "30s"}},
                             {"delete": {"key": "b"}}, {"get": {"key": "c"}}],
                 "failure": [{"get": {"key": "a"}}]}"#,
        )
        .unwrap();
        assert_eq!(
            txn.compare,
            vec![
                (b"a".to_vec(), Compare::Revision(3)),
                (b"b".to_vec(), Compare::Absent),
                (b"c".to_vec(), Compare::Present),
                (b"d".to_vec(), Compare::Value(b"x".to_vec())),
                (b"e".to_vec(), Compare::Value(vec![0, 255])),
            ]
        );
        assert_eq!(
            txn.success[0],
            TxnOp::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                content_type: "text/plain".into(),
                ttl_ms: Some(30_000)
            }
        );
        assert_eq!(txn.failure, vec![TxnOp::Get { key: b"a".to_vec() }]);
        assert!(parse(b"{}").unwrap().success.is_empty());
    }

    #[test]
    fn bad_transactions_get_stable_codes() {
        assert_eq!(code("not json"), "InvalidTxn");
        assert_eq!(code(r#"{"compares": []}"#), "InvalidTxn");
        assert_eq!(code(r#"{"compare": [{"key": "a"}]}"#), "InvalidTxn");
        assert_eq!(
            code(r#"{"compare": [{"key": "a", "absent": true, "present": true}]}"#),
            "InvalidTxn"
        );
        assert_eq!(
            code(r#"{"compare": [{"key": "a", "absent": false}]}"#),
            "InvalidTxn"
        );
        assert_eq!(
            code(r#"{"compare": [{"key": "a", "revision": 0}]}"#),
            "InvalidTxn"
        );
        assert_eq!(
            code(r#"{"success": [{"put": {"key": "a"}}]}"#),
            "InvalidTxn"
        );
        assert_eq!(
            code(r#"{"success": [{"put": {"key": "a", "value": "x", "value_base64": "eA=="}}]}"#),
            "InvalidTxn"
        );
        assert_eq!(
            code(r#"{"success": [{"put": {"key": "a", "value_base64": "%%"}}]}"#),
            "InvalidTxn"
        );
        assert_eq!(
            code(r#"{"success": [{"lock": {"key": "a"}}]}"#),
            "InvalidTxn"
        );
        assert_eq!(code(r#"{"success": [{"get": {"key": ""}}]}"#), "InvalidKey");
        assert_eq!(
            code(r#"{"success": [{"put": {"key": "a", "value": "x", "ttl": "0s"}}]}"#),
            "InvalidTtl"
        );
        assert_eq!(
            code(r#"{"success": [{"put": {"key": "a", "value": "x"}}, {"delete": {"key": "a"}}]}"#),
            "DuplicateKey"
        );
        // A key read and written, or written in each branch, is fine.
        assert!(parse(
            br#"{"success": [{"get": {"key": "a"}}, {"delete": {"key": "a"}}],
                 "failure": [{"delete": {"key": "a"}}]}"#
        )
        .is_ok());
        let many: Vec<String> = (0..=MAX_TXN_OPS)
            .map(|i| format!(r#"{{"get": {{"key": "k{i}"}}}}"#))
            .collect();
        assert_eq!(
            code(&format!(r#"{{"success": [{}]}}"#, many.join(","))),
            "TooManyOperations"
        );
    }
}
