//! The `dataset` Lambda function's entry point: configuration, clients and the backbone once,
//! then SQS batches.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use tracing::Instrument;
use twin_aws::{env_usize, runtime_from_env, Aws, AwsConfig, Function, ENV_THREADS};
use twin_fn_dataset::{DatasetFn, DEFAULT_TRAIN_MIN_NEW};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = Aws::connect(AwsConfig::from_env(Function::Dataset)?)?;
    let runtime = runtime_from_env();
    twin_model::embed::init_runtime(runtime.ort_library.as_deref())?;
    let backbone = runtime.backbone();
    let threads = env_usize(ENV_THREADS, 1);
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
