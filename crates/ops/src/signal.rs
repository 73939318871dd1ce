//! The signal a long-running Herald process stops on.

/// Completes on ctrl-c (SIGINT) or, on Unix, SIGTERM (what `kill`, systemd and Kubernetes
/// send): the shutdown future every Herald service passes to its `run` or `serve`.
///
/// A signal that cannot be listened for (no signal driver) never completes rather than
/// stopping the process at once.
///
/// ```no_run
/// # async fn demo() {
/// herald_ops::shutdown_signal().await;
/// tracing::info!("stopping");
/// # }
/// ```
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
