//! The `ingest` Lambda function's entry point: configuration, clients and models once, then
//! events.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;
use tracing::Instrument;
use twin_aws::{env_usize, runtime_from_env, Aws, AwsConfig, Function, ENV_THREADS};
use twin_fn_ingest::IngestFn;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let aws = Aws::connect(AwsConfig::from_env(Function::Ingest)?)?;
    let runtime = runtime_from_env();
    twin_model::embed::init_runtime(runtime.ort_library.as_deref())?;
    let threads = env_usize(ENV_THREADS, 1);
    let f = tokio::task::spawn_blocking(move || IngestFn::new(&aws, &runtime.models_dir, threads))
        .await??;
    let f = &f;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let span = tracing::info_span!("ingest", request_id = %event.context.request_id);
        f.handle(event.payload).instrument(span).await
    }))
    .await
}
