//! `cete start`: hands over to the `cete-server` binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const SERVER: &str = "cete-server";

/// Replaces this process with `cete-server ARGS...` (on unix; elsewhere it
/// runs it and passes its exit code on).
pub fn start(args: Vec<OsString>) -> ExitCode {
    let Some(server) = find_server() else {
        eprintln!(
            "error: {SERVER} not found beside this executable or on PATH; install it next to `cete`"
        );
        return ExitCode::from(2);
    };
    let mut cmd = Command::new(&server);
    cmd.args(&args);
    run(cmd, &server)
}

#[cfg(unix)]
fn run(mut cmd: Command, server: &Path) -> ExitCode {
    use std::os::unix::process::CommandExt;
    // exec only returns on failure; on success signals reach the server directly.
    let err = cmd.exec();
    eprintln!("error: cannot run {}: {err}", server.display());
    ExitCode::from(2)
}

#[cfg(not(unix))]
fn run(mut cmd: Command, server: &Path) -> ExitCode {
    match cmd.status() {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        },
        Err(err) => {
            eprintln!("error: cannot run {}: {err}", server.display());
            ExitCode::from(2)
        }
    }
}

fn find_server() -> Option<PathBuf> {
    let name = format!("{SERVER}{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|dir| dir.join(&name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(on_path)
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Global options that take a value and may stand before `start`.
const GLOBAL_WITH_VALUE: [&str; 7] = [
    "--address",
    "--timeout",
    "--ca-cert",
    "--cacert",
    "--certificate-file",
    "--common-name",
    "--cert-hostname",
];

/// The raw arguments after `start` when it is the subcommand (possibly after
/// global options); then clap is bypassed so that every flag, `--help` and
/// `--grpc-address` included, reaches the server untouched.
pub fn raw_start_args(argv: &[OsString]) -> Option<Vec<OsString>> {
    let mut i = 1;
    while let Some(arg) = argv.get(i) {
        let text = arg.to_str()?;
        if text == "start" {
            return Some(argv[i + 1..].to_vec());
        }
        if GLOBAL_WITH_VALUE.contains(&text) {
            i += 2;
        } else if GLOBAL_WITH_VALUE.iter().any(|g| {
            text.strip_prefix(g)
                .is_some_and(|rest| rest.starts_with('='))
        }) {
            i += 1;
        } else {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(args: &[&str]) -> Option<Vec<String>> {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        raw_start_args(&argv).map(|v| v.into_iter().map(|a| a.into_string().unwrap()).collect())
    }

    #[test]
    fn finds_start_after_global_options() {
        assert_eq!(raw(&["cete", "start"]), Some(vec![]));
        assert_eq!(
            raw(&["cete", "start", "--grpc-address", ":9000", "--help"]).unwrap(),
            ["--grpc-address", ":9000", "--help"]
        );
        assert_eq!(
            raw(&[
                "cete",
                "--timeout",
                "1",
                "--address=:8000",
                "start",
                "--id=n1"
            ])
            .unwrap(),
            ["--id=n1"]
        );
    }

    #[test]
    fn leaves_other_commands_to_clap() {
        assert_eq!(raw(&["cete"]), None);
        assert_eq!(raw(&["cete", "get", "start"]), None);
        assert_eq!(raw(&["cete", "--address", "start"]), None);
        assert_eq!(raw(&["cete", "--grpc-addr", ":9000", "start"]), None);
        assert_eq!(raw(&["cete", "--timeout"]), None);
    }
}
