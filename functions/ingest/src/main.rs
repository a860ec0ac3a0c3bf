//! The `ingest` Lambda function's entry point: configuration and clients once, then events.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use tracing::Instrument;
use twin_aws::{env_usize, models_dir_from_env, Aws, AwsConfig, ENV_THREADS};
use twin_fn_ingest::Ingest;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = Aws::connect(AwsConfig::from_env_needing(true, false)?)?;
    let models = models_dir_from_env().unwrap_or_else(twin_model::paths::models_dir);
    let threads = env_usize(ENV_THREADS, 1);
    let ingest = tokio::task::spawn_blocking(move || Ingest::new(&aws, models, threads)).await??;
    let ingest = &ingest;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let span = tracing::info_span!("ingest", request_id = %event.context.request_id);
        ingest.handle(event.payload).instrument(span).await
    }))
    .await
}
