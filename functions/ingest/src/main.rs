//! The `ingest` Lambda function's entry point: configuration and clients once, then events.

use std::path::PathBuf;

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use tracing::Instrument;
use twin_aws::{Aws, AwsConfig};
use twin_fn_ingest::Ingest;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = Aws::connect(AwsConfig::from_env_needing(true, false)?)?;
    let models = std::env::var_os("TWIN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(twin_core::paths::models_dir);
    let threads = env_usize("TWIN_THREADS", 1);
    let ingest = tokio::task::spawn_blocking(move || Ingest::new(&aws, models, threads)).await??;
    let ingest = &ingest;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let span = tracing::info_span!("ingest", request_id = %event.context.request_id);
        ingest.handle(event.payload).instrument(span).await
    }))
    .await
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
