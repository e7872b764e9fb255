//! What the two services (`bandit-sink`, `bandit-join`) share around their
//! Kafka loops: `/metrics` and `/health` on `metrics_addr`, the loop on a
//! blocking thread told to stop when `shutdown` completes, and the binary's
//! `main` (settings, exit codes, logs, the runtime, signals).

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Result, SinkError};
use crate::health::Health;
use crate::metrics::Render;

/// How long the loop gets, after the shutdown signal, for its final flush
/// and commit (each bounded by its own, shorter deadline) and for closing
/// its Kafka clients, before the process exits without them.
const SHUTDOWN_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves `/metrics` (`metrics`) and `/health` on `metrics_addr` while
/// `work` runs on a blocking thread, until it returns or `shutdown`
/// completes; then sets its stop flag and waits for it (its final flush and
/// commit). `what` names the thread in errors.
///
/// # Errors
/// `metrics_addr` that cannot be bound, `work`'s error, or its thread failing.
pub async fn run<F>(
    what: &str,
    metrics_addr: Option<&str>,
    metrics: Arc<dyn Render>,
    health: Arc<Health>,
    work: F,
    shutdown: impl Future<Output = ()>,
) -> Result<()>
where
    F: FnOnce(Arc<AtomicBool>) -> Result<()> + Send + 'static,
{
    let server = match metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| SinkError::Config(format!("metrics_addr {addr}: {e}")))?;
            tracing::info!(addr = %listener.local_addr()?, "serving /metrics and /health");
            Some(tokio::spawn(crate::http::serve(listener, metrics, health)))
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut worker = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || work(stop))
    };
    let joined = tokio::select! {
        joined = &mut worker => joined,
        () = shutdown => {
            tracing::info!("shutting down: final flush and commit (a second SIGINT or SIGTERM stops at once)");
            stop.store(true, Ordering::Relaxed);
            // The final flush and commit retry within their own deadlines,
            // but dropping a Kafka client waits on the broker: bounded here,
            // so that a broker gone silent never keeps the process alive.
            // Stopping without them is safe: the offsets in the model fence
            // whatever is consumed again.
            tokio::select! {
                joined = &mut worker => joined,
                () = tokio::time::sleep(SHUTDOWN_LIMIT) => {
                    return Err(SinkError::Io(std::io::Error::other(format!(
                        "{what} did not stop within {} s of the shutdown signal; exiting without its final commit",
                        SHUTDOWN_LIMIT.as_secs()
                    ))));
                }
                () = shutdown_signal() => {
                    return Err(SinkError::Io(std::io::Error::other(format!(
                        "second shutdown signal: exiting without waiting for the {what}'s final commit"
                    ))));
                }
            }
        }
    };
    if let Some(server) = server {
        server.abort();
    }
    joined.map_err(|e| SinkError::Io(std::io::Error::other(format!("{what} thread failed: {e}"))))?
}

/// A service binary's `main`: a bad setting exits 2 naming it (as clap's
/// usage errors do); `print_config` prints the effective settings and
/// exits; otherwise logs to stderr (`RUST_LOG`, default info), runs
/// `service` on a two-thread runtime until SIGINT or SIGTERM, and exits 1
/// on its error.
pub fn main<C, F, Fut>(name: &str, config: std::result::Result<C, impl Display>, print_config: bool, service: F) -> ExitCode
where
    C: Display,
    F: FnOnce(C, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    if print_config {
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
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(service(config, Box::pin(shutdown_signal())));
    // A worker abandoned by `run` (shutdown limit, second signal) must not
    // be waited for, as dropping the runtime would.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
