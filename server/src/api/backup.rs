//! `GET /v1/snapshot`: a backup of the whole store, streamed. (`POST
//! /v1/snapshot`, which builds a Raft snapshot, is in `cluster`.)
//!
//! The backup is written to an unnamed temporary file first, so its size,
//! revision and checksum go in the headers and the store is never held in
//! memory; the file vanishes once the response is done with it.

use std::sync::Arc;

use http::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::data::{parse_query, text_param};
use super::error::node_error;
use super::{parse_consistency, raw_query, with_node};
use crate::node::Node;

/// Read size of the streamed body.
const CHUNK: usize = 256 * 1024;

pub fn routes(node: Arc<Node>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "snapshot")
        .and(warp::get())
        .and(with_node(node))
        .and(raw_query())
        .then(backup)
}

async fn backup(node: Arc<Node>, query: String) -> Response {
    // As strict as the other routes: an unknown or repeated parameter is refused.
    let consistency = match parse_query(&query, &["consistency"])
        .and_then(|q| text_param(&q, "consistency"))
        .and_then(|c| parse_consistency(c.as_deref()))
    {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let backup = match node.backup(consistency).await {
        Ok(backup) => backup,
        Err(e) => return node_error(e, None),
    };
    log::info!(
        "streaming a backup: revision {}, {} keys, {} bytes",
        backup.revision,
        backup.keys,
        backup.bytes
    );
    let file = tokio::fs::File::from_std(backup.file);
    let body = tokio_util::io::ReaderStream::with_capacity(file, CHUNK);
    let mut response = warp::reply::stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, backup.bytes.into());
    headers.insert("x-cete-revision", backup.revision.into());
    headers.insert("x-cete-keys", backup.keys.into());
    let checksum = format!("crc32:{:08x}", backup.crc32);
    let name = format!("attachment; filename=\"cete-{}.snap\"", backup.revision);
    for (header, value) in [
        ("x-cete-checksum", checksum),
        (CONTENT_DISPOSITION.as_str(), name),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header, value);
        }
    }
    response
}
