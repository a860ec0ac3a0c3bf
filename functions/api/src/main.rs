//! Twin Matcher's `api` Lambda function: the HTTP API and the web page behind an API Gateway
//! HTTP API (payload 2.0).
//!
//! It serves the same axum router as `twin serve` (`twin_core::http::router`) through
//! `lambda_http`. The system (models, gallery, enrollment workers) is opened once per
//! container, before the first request. In this release its data lives in the container's
//! `TWIN_DATA` folder (default `/tmp/twin-data`); the S3/SQS adapters and presigned uploads
//! replace that with the AWS issue.

use std::path::PathBuf;

use twin_core::system::{System, SystemConfig};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let data_dir = std::env::var_os("TWIN_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/twin-data"));
    let threads = std::env::var("TWIN_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let config = SystemConfig::new(data_dir, twin_core::paths::models_dir(), threads);
    let system = tokio::task::spawn_blocking(move || System::open(config)).await??;
    tracing::info!("system ready");
    lambda_http::run(twin_core::http::router(system)).await
}
