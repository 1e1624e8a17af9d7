//! `cete-server`: parse the configuration, start logging, run the node until
//! SIGINT or SIGTERM, then shut it down cleanly.

use cete_server::config::Config;

#[tokio::main]
async fn main() {
    let config = Config::load().unwrap_or_else(|e| e.exit());
    if let Err(e) = cete_server::logging::init(&config.log_settings()) {
        eprintln!("cete-server: {e}");
        std::process::exit(1);
    }
    if let Some(file) = &config.config_file {
        log::info!("configuration file: {}", file.display());
    }
    let node = match cete_server::start_node(config).await {
        Ok(node) => node,
        Err(e) => {
            log::error!("cannot start: {e:#}");
            eprintln!("cete-server: {e:#}");
            std::process::exit(1);
        }
    };
    wait_for_signal().await;
    log::info!("shutting down");
    node.shutdown().await;
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
