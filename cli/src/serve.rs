//! `twin serve`: the HTTP API and the web page on one machine.
//!
//! The same router the `api` Lambda function serves (`twin_http`), on a tokio listener,
//! over the local host on the data folder with its ingest and dataset workers running.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use twin_http::{Api, HttpConfig, Uploads, API_KEY_ENV};

use crate::host;

#[derive(Args)]
#[command(
    after_help = "Writes (enrolling, erasing) need the API key from the TWIN_API_KEY \
    environment variable, sent as the x-api-key header or Authorization: Bearer. Without \
    TWIN_API_KEY every write is refused, unless --allow-writes-without-key is given: then \
    the server listens on loopback only and takes writes only from this machine's own page \
    and tools. On a loopback address it answers only to localhost, 127.0.0.1 and [::1]."
)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Accept writes without a key when TWIN_API_KEY is not set: from this machine only, on a
    /// loopback address only.
    #[arg(long)]
    allow_writes_without_key: bool,
    /// Threads ONNX Runtime may use.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

pub fn run(data: &Path, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let api_key = host::env(API_KEY_ENV);
    let loopback = args.addr.ip().is_loopback();
    if api_key.is_none() && args.allow_writes_without_key && !loopback {
        anyhow::bail!(
            "refusing to listen on {} without an API key: anyone who can reach it could enroll \
             and erase people. Set {API_KEY_ENV}, or listen on 127.0.0.1",
            args.addr
        );
    }
    if !loopback {
        eprintln!(
            "twin: {} is reachable from other machines; writes need the API key, and it travels \
             in clear text over plain HTTP: put TLS in front of this server",
            args.addr
        );
    }
    let local = host::open_serving(data, args.threads)?;
    let mut config = HttpConfig::new(Uploads::Here(local.clone()));
    config.api_key = api_key;
    config.allow_writes_without_key = args.allow_writes_without_key;
    config.loopback_hosts_only = loopback;
    let writes = match (&config.api_key, config.allow_writes_without_key) {
        (Some(_), _) => format!("writes need the API key from {API_KEY_ENV}"),
        (None, true) => {
            "writes are allowed without a key from this machine only (--allow-writes-without-key)"
                .to_string()
        }
        (None, false) => format!("writes are refused: set {API_KEY_ENV} to allow them"),
    };
    let app = twin_http::router(Api::local(&local), config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let local = listener.local_addr()?;
        let shown = if local.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), local.port())
        } else {
            local
        };
        // The one line on stdout: tools (and the browser test) read the address from it.
        println!("Twin Matcher is at http://{shown}/");
        eprintln!(
            "twin: serving {} on {local}; {writes}; Ctrl-C stops",
            data.display()
        );
        serve_connections(listener, app).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// How long a client has to send a request's headers (a connection that trickles them is
/// closed: it would hold a connection and a task for as long as it likes).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves each connection until Ctrl-C or SIGTERM, then lets the requests in progress finish.
/// Each request carries its peer's address (for the keyless server's checks); a connection
/// whose request headers take longer than [`HEADER_TIMEOUT`] is closed.
async fn serve_connections(listener: tokio::net::TcpListener, app: axum::Router) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use tower::ServiceExt;

    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, as the listener cannot help.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let service = app
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer)))
            .map_request(|r: hyper::Request<hyper::body::Incoming>| r.map(axum::body::Body::new));
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        );
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    graceful.shutdown().await;
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("twin: stopping");
}
