//! `/v1/watch`: changes to keys as Server-Sent Events.
//!
//! Each event carries `id: <revision>`, so a browser's `EventSource`
//! resumes by itself (it sends `Last-Event-ID`, read here as "start after
//! that revision"). Errors before the stream starts are ordinary JSON error
//! responses; errors during it are one `event: error` with the same JSON
//! body, and the stream ends.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use cete_types::ErrorCode;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use warp::reply::Response;
use warp::sse;
use warp::{Filter, Rejection, Reply};

use super::data::{parse_query, text_param};
use super::error::{error_body, node_error, ApiError};
use super::{raw_query, with_node};
use crate::node::{watch_error, Node};
use cete_store::events::{Event, EventKind, Watcher};

/// A comment line this often keeps proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Encoded events waiting for the connection; the watcher's own queue
/// (which decides who is too slow) sits behind this.
const STREAM_BUFFER: usize = 16;

pub fn routes(node: Arc<Node>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("v1" / "watch")
        .and(warp::get())
        .and(with_node(node))
        .and(raw_query())
        .and(warp::header::optional::<String>("last-event-id"))
        .then(watch)
}

/// The first revision wanted: after `Last-Event-ID` (a reconnecting
/// EventSource repeats the original query, so the header wins), else
/// `start_revision`; `None` (or 0) means from the next change on. Either one given
/// empty is refused: it is not a revision.
fn start_of(
    start_revision: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<Option<u64>, ApiError> {
    // A bad start_revision is refused even when the header wins: never silently ignored.
    let from_query = match start_revision {
        None => None,
        Some(raw) => match revision(raw) {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                return Err(ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "start_revision must be a whole number from 0 to {}, not '{raw}'",
                        i64::MAX
                    ),
                ))
            }
        },
    };
    if let Some(id) = last_event_id.map(str::trim) {
        return revision(id)
            .map(|id| Some(id.saturating_add(1)))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidArgument,
                    format!("Last-Event-ID must be a revision, not '{id}'"),
                )
            });
    }
    Ok(from_query)
}

/// A revision as the API documents it: an int64 that is not negative (clients in most
/// languages hold it in a signed 64-bit integer; Raft will not reach the bound).
fn revision(raw: &str) -> Option<u64> {
    raw.parse::<u64>().ok().filter(|&n| n <= i64::MAX as u64)
}

async fn watch(node: Arc<Node>, query: String, last_event_id: Option<String>) -> Response {
    // As strict as the other routes: an unknown or repeated parameter is refused; the
    // prefix is bytes, as for listings.
    let (start, prefix) = match parse_query(&query, &["prefix", "start_revision"]).and_then(|q| {
        let start = start_of(
            text_param(&q, "start_revision")?.as_deref(),
            last_event_id.as_deref(),
        )?;
        Ok((start, q.get("prefix").cloned().unwrap_or_default()))
    }) {
        Ok(parsed) => parsed,
        Err(e) => return e.into_response(),
    };
    let watcher = match node.watch(prefix, start).await {
        Ok(watcher) => watcher,
        Err(e) => return node_error(e, None),
    };
    let first = watcher.next_revision();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(forward(watcher, tx));
    let stream = sse::keep_alive()
        .interval(KEEP_ALIVE)
        .stream(ReceiverStream::new(rx));
    let mut response = sse::reply(stream).into_response();
    // Lets a client that watches "from now" resume without a gap even if
    // it drops before the first event.
    response
        .headers_mut()
        .insert("x-cete-watch-start", first.into());
    response
}

/// Moves events from the watcher to the connection until either ends.
async fn forward(mut watcher: Watcher, tx: mpsc::Sender<Result<sse::Event, Infallible>>) {
    loop {
        let next = tokio::select! {
            next = watcher.next() => next,
            _ = tx.closed() => return,
        };
        let change = match next {
            Ok(change) => change,
            Err(e) => {
                let body = error_body(&watch_error(e));
                let _ = tx
                    .send(Ok(sse::Event::default()
                        .event("error")
                        .data(body.to_json())))
                    .await;
                return;
            }
        };
        // A revision's events go out together, and only the last carries
        // the id: a client cut off in the middle of a transaction resumes
        // (Last-Event-ID) from the revision before, so it gets the whole
        // transaction again rather than half of it.
        let last = change.len() - 1;
        for (i, event) in change.iter().enumerate() {
            let mut sse_event = sse::Event::default()
                .event(match event.kind {
                    EventKind::Put => "put",
                    EventKind::Delete | EventKind::Expire => "delete",
                })
                .data(event_json(event));
            if i == last {
                sse_event = sse_event.id(event.revision.to_string());
            }
            if tx.send(Ok(sse_event)).await.is_err() {
                return;
            }
        }
    }
}

/// The JSON of one event, fields in a fixed order (type first).
#[derive(Serialize)]
struct EventBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    key: Cow<'a, str>,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    create_revision: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_omitted: Option<bool>,
    /// Deletes only: the key's deadline passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    expired: Option<bool>,
}

/// The JSON of one event. Keys are shown as in listings; a value is a
/// string when it is UTF-8, else base64 in `value_base64`; values over the
/// inline limit are left out (`value_omitted`), their size is still given.
fn event_json(event: &Event) -> String {
    let mut body = EventBody {
        kind: "delete",
        key: String::from_utf8_lossy(&event.key),
        revision: event.revision,
        create_revision: None,
        size: None,
        content_type: None,
        value: None,
        value_base64: None,
        value_omitted: None,
        expired: (event.kind == EventKind::Expire).then_some(true),
    };
    if event.kind == EventKind::Put {
        body.kind = "put";
        body.create_revision = Some(event.create_revision);
        body.size = Some(event.size);
        body.content_type = Some(&event.content_type);
        match &event.value {
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => body.value = Some(text),
                Err(_) => {
                    body.value_base64 =
                        Some(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
            None => body.value_omitted = Some(true),
        }
    }
    serde_json::to_string(&body).expect("event JSON serializes")
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn start_comes_from_last_event_id_then_the_query() {
        assert_eq!(start_of(None, None).unwrap(), None);
        assert_eq!(start_of(Some("0"), None).unwrap(), None);
        assert_eq!(start_of(Some("7"), None).unwrap(), Some(7));
        assert_eq!(start_of(Some("7"), Some("41")).unwrap(), Some(42));
        assert_eq!(start_of(None, Some(" 9 ")).unwrap(), Some(10));
        assert_eq!(
            start_of(Some("x"), None).unwrap_err().code.as_str(),
            "InvalidArgument"
        );
        assert_eq!(
            start_of(None, Some("-1")).unwrap_err().code.as_str(),
            "InvalidArgument"
        );
        assert!(start_of(Some(""), None).is_err());
        assert_eq!(
            start_of(Some("9223372036854775807"), None).unwrap(),
            Some(i64::MAX as u64)
        );
        assert!(start_of(Some("9223372036854775808"), None).is_err());
        assert!(start_of(None, Some("9223372036854775808")).is_err());
        assert!(start_of(Some("9223372036854775808"), Some("0")).is_err());
        assert!(start_of(None, Some("")).is_err());
    }

    fn json_of(event: &Event) -> Value {
        serde_json::from_str(&event_json(event)).unwrap()
    }

    #[test]
    fn values_are_text_base64_or_left_out() {
        let text = event_json(&Event::put(5, b"a/b", 3, "text/plain", b"hi"));
        assert_eq!(
            text,
            r#"{"type":"put","key":"a/b","revision":5,"create_revision":3,"size":2,"content_type":"text/plain","value":"hi"}"#
        );
        let binary = json_of(&Event::put(5, b"k", 5, "", &[0xff, 0]));
        assert_eq!(binary["value_base64"], "/wA=");
        assert!(binary.get("value").is_none());
        let big = vec![b'x'; cete_store::events::MAX_EVENT_VALUE + 1];
        let big = json_of(&Event::put(5, b"k", 5, "", &big));
        assert_eq!(big["value_omitted"], true);
        assert_eq!(
            event_json(&Event::delete(9, b"k")),
            r#"{"type":"delete","key":"k","revision":9}"#
        );
        assert_eq!(
            event_json(&Event::expire(9, b"k")),
            r#"{"type":"delete","key":"k","revision":9,"expired":true}"#
        );
    }
}
