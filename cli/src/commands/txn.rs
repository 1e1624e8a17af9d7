//! `cete txn`: one transaction (`POST /v1/txn`) read from a file or standard input.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::Method;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::print_compact;
use crate::cli::TxnArgs;
use crate::client::{Call, Client};

/// Where the transaction's JSON comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input<'a> {
    File(&'a Path),
    Stdin,
}

impl<'a> Input<'a> {
    /// `FILE`, or standard input for `-` and for no argument.
    fn from_arg(file: Option<&'a Path>) -> Input<'a> {
        match file {
            Some(path) if path != Path::new("-") => Input::File(path),
            _ => Input::Stdin,
        }
    }

    fn name(&self) -> String {
        match self {
            Input::File(path) => path.display().to_string(),
            Input::Stdin => "standard input".to_string(),
        }
    }
}

/// Reads the whole input and checks that it is one JSON document. The bytes
/// are sent as read: the server owns the shape and reports what is wrong with it.
async fn read_txn(input: Input<'_>, stdin: impl AsyncRead + Unpin) -> Result<Bytes> {
    let bytes = match input {
        Input::File(path) => tokio::fs::read(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?,
        Input::Stdin => {
            let mut buf = Vec::new();
            let mut stdin = stdin;
            stdin
                .read_to_end(&mut buf)
                .await
                .context("cannot read the transaction from standard input")?;
            buf
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(anyhow!(
            "{} is empty; expected the transaction's JSON",
            input.name()
        ));
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
        .map_err(|e| anyhow!("{} is not JSON: {e}", input.name()))?;
    Ok(Bytes::from(bytes))
}

/// Exits 0 whenever the server ran the transaction, `succeeded` true or
/// false: a false compare is an answer, not an error.
pub async fn txn(client: &Client, args: TxnArgs) -> Result<ExitCode> {
    let input = Input::from_arg(args.file.as_deref());
    let body = read_txn(input, tokio::io::stdin()).await?;
    let mut call = Call::new(Method::POST, "/v1/txn").body(body);
    call.headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    print_compact(&client.call(&call).await?.json()?)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const TXN: &str = r#"{"compare":[{"key":"a","absent":true}],"success":[{"put":{"key":"a","value":"1","ttl":"30s"}}]}"#;

    fn temp_file(name: &str, contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    #[test]
    fn dash_and_no_argument_mean_stdin() {
        assert_eq!(Input::from_arg(None), Input::Stdin);
        assert_eq!(Input::from_arg(Some(Path::new("-"))), Input::Stdin);
        let file = Path::new("t.json");
        assert_eq!(Input::from_arg(Some(file)), Input::File(file));
        // `./-` names a file called `-`.
        let dash_file = Path::new("./-");
        assert_eq!(Input::from_arg(Some(dash_file)), Input::File(dash_file));
    }

    #[tokio::test]
    async fn reads_a_file_as_is() {
        let text = format!("  {TXN}\n");
        let (_dir, path) = temp_file("t.json", text.as_bytes());
        // Standard input is not read for a file.
        let body = read_txn(Input::File(&path), &b"not read"[..])
            .await
            .unwrap();
        assert_eq!(body, text.as_bytes());
    }

    #[tokio::test]
    async fn reads_stdin() {
        let body = read_txn(Input::Stdin, TXN.as_bytes()).await.unwrap();
        assert_eq!(body, TXN.as_bytes());
        let body = read_txn(Input::Stdin, &b"{}"[..]).await.unwrap();
        assert_eq!(body, &b"{}"[..]);
    }

    #[tokio::test]
    async fn refuses_input_that_is_not_json() {
        let (_dir, path) = temp_file("bad.json", b"{\"success\": [\n  {\"put\": }\n]}");
        let e = read_txn(Input::File(&path), &b""[..]).await.unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with(&format!("{} is not JSON: ", path.display())),
            "{msg}"
        );
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");

        for bad in [&b"{\"a\":1} trailing"[..], b"{\"a\":", b"put a 1", b"\xff"] {
            let e = read_txn(Input::Stdin, bad).await.unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.starts_with("standard input is not JSON: "), "{msg}");
        }
        for empty in [&b""[..], b" \n\t"] {
            let e = read_txn(Input::Stdin, empty).await.unwrap_err();
            assert_eq!(
                format!("{e:#}"),
                "standard input is empty; expected the transaction's JSON"
            );
        }
    }

    #[tokio::test]
    async fn names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.json");
        let e = read_txn(Input::File(&path), &b""[..]).await.unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.starts_with(&format!("cannot read {}: ", path.display())),
            "{msg}"
        );
    }
}
