//! `cete`: the command-line client for Cete. Parses the command line, runs
//! the subcommand and turns its outcome into one line on stderr and an exit
//! code (0 ok, 1 failure, 2 usage).

mod bench;
mod cli;
mod client;
mod commands;
mod grpc_flag;
mod tls;
mod urls;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, SnapshotAction, SnapshotArgs};
use crate::client::{ApiError, Client, Options, TlsOptions, TransportError};
use crate::commands::UsageError;

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    if let Some(server_args) = commands::raw_start_args(&argv) {
        return commands::start(server_args);
    }
    let cli = Cli::parse_from(argv);
    match cli.command {
        _ if cli.grpc_address.is_some() => {} // refused below, with the --address to use
        Command::Start(args) => {
            return commands::start(args.args.into_iter().map(Into::into).collect())
        }
        Command::Version => {
            println!("cete version: {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Snapshot(SnapshotArgs {
            action: Some(SnapshotAction::Restore(args)),
        }) => {
            // The server restores (it owns the data directory format); this
            // is `cete start --restore FILE ...`.
            let mut server_args = vec!["--restore".into(), args.file.into_os_string()];
            server_args.extend(args.server_args.into_iter().map(Into::into));
            return commands::start(server_args);
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    let outcome = runtime.block_on(async {
        let address = urls::normalize_address(&cli.address)
            .map_err(|e| UsageError(format!("--address: {e}")))?;
        if cli.insecure {
            eprintln!(
                "warning: --insecure: the server's certificate is not verified; \
                 use it for tests only"
            );
        }
        let options = Options {
            address,
            timeout: cli.timeout,
            tls: TlsOptions {
                ca_cert: cli.ca_cert,
                common_name: cli.common_name,
                insecure: cli.insecure,
            },
            pool_size: 1,
        };
        if let Some(grpc) = &cli.grpc_address {
            return Err(UsageError(grpc_flag::refusal(grpc, options).await).into());
        }
        match cli.command {
            Command::Bench(args) => bench::run(args, options).await,
            other => commands::run(&Client::new(options)?, other).await,
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Prints one `error: ...` line and picks the exit code.
fn fail(err: &anyhow::Error) -> ExitCode {
    if let Some(io) = err.downcast_ref::<std::io::Error>() {
        if io.kind() == std::io::ErrorKind::BrokenPipe {
            // The reader went away (`cete list | head`): not our failure.
            return ExitCode::SUCCESS;
        }
    }
    let line = if err.is::<ApiError>() || err.is::<TransportError>() || err.is::<UsageError>() {
        err.to_string()
    } else {
        format!("{err:#}")
    };
    eprintln!("error: {}", line.replace('\n', " "));
    if err.is::<UsageError>() {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}
