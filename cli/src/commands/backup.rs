//! `cete snapshot save FILE`: download a backup (GET /v1/snapshot), check it,
//! keep it. (`cete snapshot restore` hands over to cete-server in main.)

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use cete_types::backup;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::HeaderMap;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::print_compact;
use crate::cli::SaveArgs;
use crate::client::{Call, Client};
use crate::urls;

/// `FILE.part`: where the download goes until it is verified.
fn part_path(file: &Path) -> PathBuf {
    let mut name = OsString::from(file.as_os_str());
    name.push(".part");
    PathBuf::from(name)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Result<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("the server sent no valid {name} header; is it a Cete server?"))
}

/// `X-Cete-Checksum: crc32:<8 hex digits>`.
fn header_crc32(headers: &HeaderMap) -> Result<u32> {
    headers
        .get("x-cete-checksum")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("crc32:"))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| anyhow!("the server sent no valid X-Cete-Checksum header (crc32:HEX)"))
}

fn progress(total: Option<u64>) -> ProgressBar {
    // Drawn on stderr only when it is a terminal.
    match total {
        Some(total) => {
            let bar = ProgressBar::new(total);
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        None => ProgressBar::new_spinner(),
    }
}

pub async fn save(client: &Client, args: SaveArgs) -> Result<ExitCode> {
    let pairs: Vec<_> = args
        .consistency
        .map(|c| ("consistency", c.as_str().to_string()))
        .into_iter()
        .collect();
    let call = Call::get("/v1/snapshot").query(urls::query_string(&pairs));
    let response = client.get_streaming(&call).await?;
    let part = part_path(&args.file);
    let outcome = download(client, response, &part, &args.file).await;
    if outcome.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    let (summary, bytes) = outcome?;
    print_compact(&json!({
        "file": args.file.display().to_string(),
        "revision": summary.revision,
        "keys": summary.keys,
        "bytes": bytes,
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// Streams the body into `part` while summing its CRC-32, checks it against
/// the headers and the file format, then renames it to `file`.
async fn download(
    client: &Client,
    mut response: reqwest::Response,
    part: &Path,
    file: &Path,
) -> Result<(backup::Summary, u64)> {
    let headers = response.headers().clone();
    let revision = header_u64(&headers, "x-cete-revision")?;
    let keys = header_u64(&headers, "x-cete-keys")?;
    let expected_crc = header_crc32(&headers)?;
    let length = response.content_length();

    let mut out = tokio::fs::File::create(part)
        .await
        .with_context(|| format!("cannot create {}", part.display()))?;
    let bar = progress(length);
    let mut crc = crc32fast::Hasher::new();
    let mut received = 0u64;
    loop {
        let chunk = match tokio::time::timeout(client.timeout(), response.chunk()).await {
            Err(_) => bail!(
                "the transfer stalled for {:?} after {received} bytes (see --timeout)",
                client.timeout()
            ),
            Ok(Err(e)) => bail!("the transfer broke off after {received} bytes: {e}"),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => chunk,
        };
        crc.update(&chunk);
        out.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", part.display()))?;
        received += chunk.len() as u64;
        bar.set_position(received);
    }
    bar.finish_and_clear();
    out.sync_all()
        .await
        .with_context(|| format!("cannot write {}", part.display()))?;
    drop(out);
    if let Some(length) = length.filter(|l| *l != received) {
        bail!("the backup is truncated: received {received} of {length} bytes");
    }
    let actual = crc.finalize();
    if actual != expected_crc {
        bail!(
            "the backup is corrupt: checksum crc32:{actual:08x}, the server sent crc32:{expected_crc:08x}"
        );
    }
    let checked = part.to_path_buf();
    let summary = tokio::task::spawn_blocking(move || backup::summary(&checked))
        .await
        .context("the verification task failed")?
        .map_err(|e| anyhow!("the backup is not valid: {e}"))?;
    if (summary.revision, summary.keys) != (revision, keys) {
        bail!(
            "the backup holds revision {} with {} keys, the server announced revision {revision} with {keys} keys",
            summary.revision,
            summary.keys
        );
    }
    tokio::fs::rename(part, file)
        .await
        .with_context(|| format!("cannot rename {} to {}", part.display(), file.display()))?;
    Ok((summary, received))
}
