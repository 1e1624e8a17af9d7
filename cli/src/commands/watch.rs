//! `cete watch`: follows `/v1/watch` (Server-Sent Events) and prints each
//! event's JSON on one line. A dropped connection (or a "too slow" end) is
//! resumed from the revision of the last event printed, skipping the events
//! of it already printed (a transaction's changes share one revision), so
//! the output has no gap and no duplicate; a compacted start is an error.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use cete_types::ErrorCode;
use futures::StreamExt;
use tokio::time::Instant;

use super::write_stdout;
use crate::cli::WatchArgs;
use crate::client::{ApiError, Call, Client, TransportError};
use crate::urls;

/// Error codes after which the same watch is simply opened again.
const RESUMABLE: [ErrorCode; 2] = [ErrorCode::WatcherTooSlow, ErrorCode::ShuttingDown];

fn resumable(code: &str) -> bool {
    ErrorCode::parse(code).is_some_and(|c| RESUMABLE.contains(&c))
}

/// One event of a Server-Sent Events stream.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// Splits a Server-Sent Events byte stream into events (the fields Cete
/// sends: `event`, `data`, `id`; comments and unknown fields are skipped).
#[derive(Default)]
pub struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    events.push(std::mem::take(&mut self.current));
                }
                self.current = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.current.event = value.to_string(),
                "id" => self.current.id = Some(value.to_string()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        events
    }
}

/// Where the watch is, so that a new connection goes on where the last one
/// stopped. Resuming at the revision after the last event printed would lose
/// the rest of a transaction whose events a drop cut in two: instead the new
/// connection starts at that revision and drops the events of it already
/// printed (the server sends a revision's events in the same order each time).
#[derive(Debug, Default)]
struct Position {
    /// The revision to start at next time, and how many of its events were printed.
    resume: Option<(u64, usize)>,
    /// Events of the resume revision still to drop on this connection.
    skip: usize,
}

impl Position {
    fn new(start_revision: Option<u64>) -> Position {
        Position {
            resume: start_revision.map(|r| (r, 0)),
            skip: 0,
        }
    }

    /// A connection starts: the `start_revision` to ask for.
    fn connect(&mut self) -> Option<u64> {
        self.skip = self.resume.map_or(0, |(_, printed)| printed);
        self.resume.map(|(revision, _)| revision)
    }

    /// The first revision a "from now" stream can deliver (`X-Cete-Watch-Start`).
    fn started_at(&mut self, revision: u64) {
        if self.resume.is_none() {
            self.resume = Some((revision, 0));
        }
    }

    /// An event of `revision` arrived: whether to print it (false for one
    /// printed before the connection dropped).
    fn admit(&mut self, revision: u64) -> bool {
        match self.resume {
            Some((at, _)) if at == revision && self.skip > 0 => {
                self.skip -= 1;
                false
            }
            Some((at, printed)) if at == revision => {
                self.resume = Some((at, printed + 1));
                true
            }
            _ => {
                self.skip = 0;
                self.resume = Some((revision, 1));
                true
            }
        }
    }
}

/// How one connection ended, when it did not end the command.
enum Dropped {
    /// The connection broke or closed: resume after a pause.
    Lost(String),
    /// The server ended the stream with a resumable error: resume at once.
    Ended(String),
}

pub async fn watch(client: &Client, args: WatchArgs) -> Result<ExitCode> {
    let mut position = Position::new(args.start_revision.filter(|r| *r > 0));
    let mut failures: u32 = 0;
    // Reconnecting stops once nothing has worked for this long.
    let mut give_up_at = Instant::now() + client.timeout();
    loop {
        let before = give_up_at;
        let dropped = follow(client, &args.prefix, &mut position, &mut give_up_at).await?;
        if give_up_at != before {
            // It connected: a later drop is a new outage.
            failures = 0;
        }
        match dropped {
            Dropped::Ended(why) => eprintln!("cete: {why}; resuming"),
            Dropped::Lost(why) => {
                if Instant::now() >= give_up_at {
                    anyhow::bail!("{why}; gave up reconnecting after {:?}", client.timeout());
                }
                let wait = Duration::from_millis(100 << failures.min(3));
                if failures == 0 {
                    // Once per outage, not once per attempt.
                    eprintln!("cete: {why}; reconnecting");
                }
                failures += 1;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One connection: prints events until it ends. `position` follows the last
/// event printed; `give_up_at` moves on whenever the server answers.
async fn follow(
    client: &Client,
    prefix: &str,
    position: &mut Position,
    give_up_at: &mut Instant,
) -> Result<Dropped> {
    let mut pairs = Vec::new();
    if !prefix.is_empty() {
        pairs.push(("prefix", prefix.to_string()));
    }
    if let Some(rev) = position.connect() {
        pairs.push(("start_revision", rev.to_string()));
    }
    let query = urls::query_string(&pairs);
    let response = match client
        .get_streaming(&Call::get("/v1/watch").query(query))
        .await
    {
        Ok(response) => response,
        Err(e) => {
            let resumable = e.downcast_ref::<TransportError>().is_some()
                || e.downcast_ref::<ApiError>()
                    .is_some_and(|err| resumable(&err.code));
            return if resumable {
                Ok(Dropped::Lost(e.to_string()))
            } else {
                Err(e)
            };
        }
    };
    *give_up_at = Instant::now() + client.timeout();
    if let Some(start) = response
        .headers()
        .get("x-cete-watch-start")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        position.started_at(start);
    }
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return Ok(Dropped::Lost(format!("the watch connection broke: {e}"))),
        };
        *give_up_at = Instant::now() + client.timeout();
        let mut out = String::new();
        for event in parser.feed(&chunk) {
            if event.event == "error" {
                write_stdout(out.as_bytes())?;
                let err = ApiError::decode(reqwest::StatusCode::OK, event.data.as_bytes());
                if resumable(&err.code) {
                    return Ok(Dropped::Ended(err.to_string()));
                }
                return Err(err.into());
            }
            if let Some(rev) = event.id.as_deref().and_then(|id| id.parse::<u64>().ok()) {
                if !position.admit(rev) {
                    continue;
                }
            }
            out.push_str(&event.data);
            out.push('\n');
        }
        write_stdout(out.as_bytes())?;
    }
    Ok(Dropped::Lost("the server closed the watch".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_inside_a_revision_without_repeats() {
        let mut p = Position::new(None);
        assert_eq!(p.connect(), None);
        p.started_at(5);
        // Revision 5 is a transaction of three changes; the drop comes after two.
        assert!(p.admit(5));
        assert!(p.admit(5));
        assert_eq!(p.connect(), Some(5));
        // The server sends all of 5 again: the two printed are dropped.
        assert!(!p.admit(5));
        assert!(!p.admit(5));
        assert!(p.admit(5));
        assert!(p.admit(6));
        assert_eq!(p.connect(), Some(6));
        assert!(!p.admit(6));
        assert!(p.admit(7));
    }

    #[test]
    fn resume_starts_where_asked_and_skips_nothing_unprinted() {
        let mut p = Position::new(Some(3));
        assert_eq!(p.connect(), Some(3));
        // The header does not move an explicit start.
        p.started_at(10);
        assert_eq!(p.connect(), Some(3));
        // Nothing printed yet at 3: the first event there is new.
        assert!(p.admit(3));
        assert_eq!(p.connect(), Some(3));
        assert!(!p.admit(3));
        // Revision 3 had one event; what follows is printed.
        assert!(p.admit(4));
        // A revision the server skipped over ends the skipping too.
        let mut p = Position::new(Some(8));
        assert!(p.admit(8));
        assert!(p.admit(8));
        assert_eq!(p.connect(), Some(8));
        assert!(p.admit(9));
        assert_eq!(p.connect(), Some(9));
    }

    #[test]
    fn parses_events_split_anywhere() {
        let text = ": keep-alive\n\nid:5\nevent:put\ndata:{\"a\":1}\n\nevent: error\r\ndata: x\ndata: y\n\n";
        for split in 0..text.len() {
            let mut parser = SseParser::default();
            let mut events = parser.feed(&text.as_bytes()[..split]);
            events.extend(parser.feed(&text.as_bytes()[split..]));
            assert_eq!(
                events,
                vec![
                    SseEvent {
                        event: "put".into(),
                        data: "{\"a\":1}".into(),
                        id: Some("5".into())
                    },
                    SseEvent {
                        event: "error".into(),
                        data: "x\ny".into(),
                        id: None
                    },
                ],
                "split at {split}"
            );
        }
    }
}
