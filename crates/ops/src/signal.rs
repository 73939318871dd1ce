//! The signal a long-running Herald process stops on.

/// Completes on ctrl-c (SIGINT) or, on Unix, SIGTERM (what `kill`, systemd and Kubernetes
/// send): the shutdown future every Herald service passes to its `run` or `serve`.
///
/// Call it early (in a tokio runtime): the handlers are installed when it is called, so a
/// signal that arrives before the future is awaited is not lost and does not kill the
/// process. A signal that cannot be listened for never completes rather than stopping the
/// process at once.
///
/// ```no_run
/// # async fn demo() {
/// herald_ops::shutdown_signal().await;
/// tracing::info!("stopping");
/// # }
/// ```
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    // The handlers are installed now, when the future is made, not when it is first
    // polled: a SIGTERM that arrives while the process is still starting (connecting,
    // registering) then stops it in order instead of killing it.
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (signal(SignalKind::interrupt()).ok(), signal(SignalKind::terminate()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |stream: Option<tokio::signal::unix::Signal>| async move {
                match stream {
                    Some(mut stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {}
                _ = wait(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
