//! The `train` Lambda function's entry point: configuration and clients once, then train
//! requests and scheduled events.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use tracing::Instrument;
use twin_aws::{env_usize, runtime_from_env, Aws, AwsConfig, Function, ENV_THREADS};
use twin_fn_train::TrainFn;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = Aws::connect(AwsConfig::from_env(Function::Train)?)?;
    let runtime = runtime_from_env();
    twin_model::embed::init_runtime(runtime.ort_library.as_deref())?;
    let threads = env_usize(ENV_THREADS, 2);
    let f = TrainFn::new(&aws, Some(runtime.backbone()), threads);
    let f = &f;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let span = tracing::info_span!("train", request_id = %event.context.request_id);
        f.handle(event.payload).instrument(span).await
    }))
    .await
}
