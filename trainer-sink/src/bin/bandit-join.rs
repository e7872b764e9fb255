//! The `bandit-join` binary: file, environment and flags into a
//! [`JoinConfig`], logs, signals, and [`bandit_sink::join::run`].

use std::process::ExitCode;

use bandit_sink::join::{JoinCli, JoinConfig};

fn main() -> ExitCode {
    let cli = JoinCli::parse_with_defaults();
    let config = match JoinConfig::from_cli(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("bandit-join: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        print!("{config}");
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::info!("effective configuration:\n{config}");
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bandit-join: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bandit_sink::join::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("bandit-join: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("bandit-join: cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
