//! The HTTP server every Herald service runs its router on: axum's router on hyper's
//! HTTP/1 connections, with a bound on how long a client may take to send a request's head.
//!
//! `axum::serve` sets none: a client that opens a connection and sends part of a request
//! head, or nothing, holds the connection (and a file descriptor) for as long as it likes,
//! so a few thousand such clients (slowloris) exhaust a process's descriptors and every
//! real request, `/health` included, is refused. Here a connection that has not sent a
//! complete request head within [`HEADER_READ_TIMEOUT`] of the server starting to wait
//! for one is closed. hyper starts that wait when a connection is idle too, so the same
//! bound is how long an idle keep-alive connection stays open: 75 s, longer than the
//! idle timeout of common load balancers (AWS's ALB: 60 s), which must close an idle
//! connection before the server does (as nginx's default `keepalive_timeout` 75 s is).

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt as _;

/// How long a connection may take to send a complete request head, counted from when the
/// server waits for one (so also the idle keep-alive timeout): see the module docs.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(75);

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting, lets
/// the requests in progress finish and closes idle connections; see the [module
/// docs](self) for the bound on request heads.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// herald_ops::serve_router(listener, router, herald_ops::shutdown_signal()).await
/// # }
/// ```
pub async fn serve_router(listener: tokio::net::TcpListener, router: Router, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    serve_router_with(listener, router, HEADER_READ_TIMEOUT, shutdown).await
}

/// [`serve_router`] with another bound on request heads (tests use a short one).
pub async fn serve_router_with(listener: tokio::net::TcpListener, router: Router, header_read_timeout: Duration, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                // Out of descriptors, say: wait rather than spin (as axum::serve does).
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone().map_request(|request: Request<Incoming>| request.map(Body::new)));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that went away before it was accepted: nothing to wait for.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn started(timeout: Duration) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
        let router = Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve_router_with(listener, router, timeout, async move {
            let _ = stopped.await;
        }));
        (address, stop, served)
    }

    /// Reads until the server closes the connection; what it sent.
    async fn read_to_close(stream: &mut tokio::net::TcpStream, within: Duration) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut answer)).await.expect("the server closed the connection in time").unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_request_head_is_cut_off() {
        let (address, stop, served) = started(Duration::from_millis(300)).await;
        // Part of a head, then nothing (slowloris).
        let mut partial = tokio::net::TcpStream::connect(address).await.unwrap();
        partial.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        // Nothing at all.
        let mut silent = tokio::net::TcpStream::connect(address).await.unwrap();
        let started = std::time::Instant::now();
        read_to_close(&mut partial, Duration::from_secs(5)).await;
        read_to_close(&mut silent, Duration::from_secs(5)).await;
        assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout: {:?}", started.elapsed());
        // A complete request is answered as always.
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let answer = read_to_close(&mut client, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"), "{answer}");
        stop.send(()).unwrap();
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn shutting_down_lets_a_request_in_progress_finish() {
        let (entered, mut in_handler) = tokio::sync::mpsc::unbounded_channel::<()>();
        let router = Router::new().route(
            "/slow",
            axum::routing::get(move || async move {
                let _ = entered.send(());
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve_router(listener, router, async move {
            let _ = stopped.await;
        }));
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        // The shutdown begins while the request is in its handler.
        tokio::time::timeout(Duration::from_secs(5), in_handler.recv()).await.unwrap().unwrap();
        stop.send(()).unwrap();
        let answer = read_to_close(&mut client, Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap().unwrap();
        assert!(tokio::net::TcpStream::connect(address).await.is_err(), "no longer accepting");
    }
}
