//! One function per subcommand; each prints its result and returns the exit code.

mod backup;
mod cluster;
mod data;
mod start;
mod txn;
mod watch;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Command, SnapshotAction, SnapshotArgs};
use crate::client::Client;

pub use data::data_path;
pub use start::{raw_start_args, start};

/// A mistake in how the command was called; exits 2 like clap's own errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Runs a client subcommand (everything but `start`, `version` and `bench`).
pub async fn run(client: &Client, command: Command) -> Result<ExitCode> {
    match command {
        Command::Node => cluster::show(client, "/v1/node").await,
        Command::Cluster => cluster::show(client, "/v1/cluster").await,
        Command::Join(args) => cluster::join(client, args).await,
        Command::Leave(args) => cluster::leave(client, args).await,
        Command::Snapshot(SnapshotArgs { action: None }) => cluster::snapshot(client).await,
        Command::Snapshot(SnapshotArgs {
            action: Some(SnapshotAction::Save(args)),
        }) => backup::save(client, args).await,
        Command::Healthcheck => cluster::healthcheck(client).await,
        Command::Metrics => cluster::metrics(client).await,
        Command::Get(args) => data::get(client, args).await,
        Command::Set(args) => data::set(client, args).await,
        Command::Delete(args) => data::delete(client, args).await,
        Command::List(args) => data::list(client, args).await,
        Command::Watch(args) => watch::watch(client, args).await,
        Command::Txn(args) => txn::txn(client, args).await,
        Command::Start(_)
        | Command::Version
        | Command::Bench(_)
        | Command::Snapshot(SnapshotArgs {
            action: Some(SnapshotAction::Restore(_)),
        }) => {
            unreachable!("dispatched in main")
        }
    }
}

/// Writes bytes to stdout and flushes.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Prints a JSON value on one line.
pub fn print_compact(value: &serde_json::Value) -> std::io::Result<()> {
    let mut line = value.to_string();
    line.push('\n');
    write_stdout(line.as_bytes())
}

/// Prints a JSON value indented, as the original CLI did.
pub fn print_pretty(value: &serde_json::Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(text.as_bytes())?;
    Ok(())
}
