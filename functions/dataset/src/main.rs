//! The `dataset` Lambda function's entry point: configuration, clients and the backbone once,
//! then SQS batches.

use std::path::PathBuf;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use tracing::Instrument;
use twin_aws::{Aws, AwsConfig};
use twin_fn_dataset::{DatasetFn, DEFAULT_TRAIN_MIN_NEW};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = Aws::connect(AwsConfig::from_env_needing(false, true)?)?;
    let models = std::env::var_os("TWIN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(twin_core::paths::models_dir);
    let backbone = models.join(twin_core::paths::BACKBONE_FILE);
    let threads = env_usize("TWIN_THREADS", 1);
    let min_new = env_usize("TWIN_TRAIN_MIN_NEW", DEFAULT_TRAIN_MIN_NEW);
    let f = tokio::task::spawn_blocking(move || DatasetFn::new(&aws, &backbone, threads, min_new))
        .await??;
    let f = &f;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let span = tracing::info_span!("dataset", request_id = %event.context.request_id);
        f.handle(event.payload).instrument(span).await
    }))
    .await
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
