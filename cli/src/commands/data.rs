//! Key-value commands: get, set, delete, list (`/v1/data`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_TYPE, IF_MATCH, IF_NONE_MATCH};
use reqwest::Method;
use tokio::io::AsyncReadExt;

use super::{print_compact, write_stdout, UsageError};
use crate::cli::{Consistency, DeleteArgs, GetArgs, ListArgs, SetArgs};
use crate::client::{ApiError, Call, Client, Reply};
use crate::urls;

/// Largest page asked for when following pagination (the server's maximum).
const PAGE: u64 = 1000;

/// The server's bounds for a key's time to live; checked here too so that a
/// bad `--ttl` fails before the value is read or sent.
const MIN_TTL: Duration = Duration::from_millis(1);
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Checks a `--ttl` with the server's rules: humantime syntax (`1500ms`,
/// `30s`, `1h30m`, `1d`), a unit required, from 1 ms to 365 days.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration such as 1500ms, 30s or 1h30m ({e})"))?;
    if d < MIN_TTL {
        return Err(format!("'{s}' is shorter than 1ms"));
    }
    if d > MAX_TTL {
        return Err(format!("'{s}' is longer than 365 days"));
    }
    Ok(d)
}

/// `/v1/data/<encoded key>`, or a usage error for keys that cannot be sent.
pub fn data_path(key: &str) -> Result<String> {
    let encoded = urls::encode_key(key).map_err(UsageError)?;
    Ok(format!("/v1/data/{encoded}"))
}

fn consistency_pair(c: Option<Consistency>) -> Option<(&'static str, String)> {
    c.map(|c| ("consistency", c.as_str().to_string()))
}

fn if_match(rev: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{rev}\"")).expect("digits are a valid header value")
}

/// Makes sure a 404 for a key says "not found" whatever the server's wording.
fn explain_missing(err: anyhow::Error, key: &str) -> anyhow::Error {
    match err.downcast::<ApiError>() {
        Ok(mut api) => {
            if api.is_not_found() && !api.message.to_ascii_lowercase().contains("not found") {
                api.message = format!("key '{key}' not found");
            }
            api.into()
        }
        Err(other) => other,
    }
}

/// Prints a write's JSON answer (`{"revision":N}`) on one line.
fn print_reply(reply: &Reply) -> Result<()> {
    match reply.json() {
        Ok(value) => print_compact(&value)?,
        Err(_) if reply.body.is_empty() => {}
        Err(_) => write_stdout(&reply.body)?,
    }
    Ok(())
}

pub async fn get(client: &Client, args: GetArgs) -> Result<ExitCode> {
    let pairs: Vec<_> = consistency_pair(args.consistency).into_iter().collect();
    let call = Call::get(data_path(&args.key)?).query(urls::query_string(&pairs));
    let reply = client
        .call(&call)
        .await
        .map_err(|e| explain_missing(e, &args.key))?;
    write_stdout(&reply.body)?;
    // Binary-safe when piped; on a terminal, keep the prompt on its own line.
    if std::io::stdout().is_terminal() && !reply.body.is_empty() && !reply.body.ends_with(b"\n") {
        write_stdout(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn set(client: &Client, args: SetArgs) -> Result<ExitCode> {
    let path = data_path(&args.key)?;
    let mut pairs = Vec::new();
    if let Some(ttl) = &args.ttl {
        parse_ttl(ttl).map_err(|e| UsageError(format!("--ttl: {e}")))?;
        // Sent as typed: the server parses the same syntax.
        pairs.push(("ttl", ttl.clone()));
    }
    let value = match (&args.value, &args.file) {
        (Some(v), _) => Bytes::from(v.clone().into_bytes()),
        (None, Some(file)) => Bytes::from(
            tokio::fs::read(file)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?,
        ),
        (None, None) => {
            let mut buf = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut buf)
                .await
                .context("cannot read the value from standard input")?;
            Bytes::from(buf)
        }
    };
    let mut call = Call::new(Method::PUT, path)
        .query(urls::query_string(&pairs))
        .body(value);
    if let Some(ct) = &args.content_type {
        let v = HeaderValue::from_str(ct)
            .map_err(|_| UsageError(format!("invalid --content-type '{ct}'")))?;
        call.headers.insert(CONTENT_TYPE, v);
    }
    if let Some(rev) = args.if_match {
        call.headers.insert(IF_MATCH, if_match(rev));
    }
    if args.if_absent {
        call.headers
            .insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
    }
    print_reply(&client.call(&call).await?)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn delete(client: &Client, args: DeleteArgs) -> Result<ExitCode> {
    let mut call = Call::new(Method::DELETE, data_path(&args.key)?);
    if let Some(rev) = args.if_match {
        call.headers.insert(IF_MATCH, if_match(rev));
    }
    let reply = client
        .call(&call)
        .await
        .map_err(|e| explain_missing(e, &args.key))?;
    print_reply(&reply)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn list(client: &Client, args: ListArgs) -> Result<ExitCode> {
    let mut remaining = args.limit;
    let mut start_after = args.start_after.clone();
    loop {
        let page = remaining.map_or(PAGE, |r| r.min(PAGE));
        let mut pairs = Vec::new();
        if !args.prefix.is_empty() {
            pairs.push(("prefix", args.prefix.clone()));
        }
        pairs.push(("limit", page.to_string()));
        if let Some(after) = &start_after {
            pairs.push(("start_after", after.clone()));
        }
        pairs.extend(consistency_pair(args.consistency));
        let call = Call::get("/v1/data").query(urls::query_string(&pairs));
        let answer = client.call(&call).await?.json()?;
        let Some(keys) = answer.get("keys").and_then(|k| k.as_array()) else {
            bail!("the server's list answer has no \"keys\" array");
        };
        let take = remaining.map_or(keys.len(), |r| keys.len().min(r as usize));
        let mut out = String::new();
        for entry in &keys[..take] {
            out.push_str(&entry.to_string());
            out.push('\n');
        }
        write_stdout(out.as_bytes())?;
        if let Some(r) = remaining.as_mut() {
            *r -= take as u64;
            if *r == 0 {
                break;
            }
        }
        let more = answer.get("more").and_then(|m| m.as_bool()) == Some(true);
        let next = answer.get("next_start_after").and_then(|n| n.as_str());
        match next {
            Some(next) if more => {
                if start_after.as_deref() == Some(next) {
                    bail!("the server's pagination did not advance past '{next}'");
                }
                start_after = Some(next.to_string());
            }
            _ => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_humantime_within_bounds() {
        assert_eq!(parse_ttl("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_ttl("90 seconds"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("1ms"), Ok(MIN_TTL));
        assert_eq!(parse_ttl("365d"), Ok(MAX_TTL));
        assert_eq!(parse_ttl("364d 23h 59m 59s 999ms 1000us"), Ok(MAX_TTL));
    }

    #[test]
    fn ttl_refuses_what_the_server_refuses() {
        for bad in [
            "", "30", "0", "0s", "0ms", "999us", "0.5ms", "-1s", "1x", "abc", "s", "1,5s",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad:?} was accepted");
        }
        // Over the bound: 365 days and a millisecond, 366 days, a humantime year (365.25 d).
        for bad in ["365d 1ms", "366d", "1y", "53w"] {
            assert_eq!(
                parse_ttl(bad),
                Err(format!("'{bad}' is longer than 365 days")),
                "{bad:?}"
            );
        }
        assert_eq!(parse_ttl("0s"), Err("'0s' is shorter than 1ms".to_string()));
    }

    #[test]
    fn ttl_errors_are_one_line() {
        for bad in ["", "30", "-1s", "1x", "99999999999999999999999s"] {
            let e = parse_ttl(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e:?}");
            assert!(
                e.starts_with(&format!("'{bad}' is not a duration")),
                "{e:?}"
            );
        }
    }
}
