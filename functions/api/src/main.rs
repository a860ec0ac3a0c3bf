//! The `api` Lambda function's entry point: settings, clients, models and the router once,
//! then requests.

use std::time::Duration;

use twin_aws::{env_usize, env_var, runtime_from_env, Aws, AwsConfig, Function, ENV_THREADS};
use twin_fn_api::{app, ApiSettings, DEFAULT_POLL_SECONDS};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let aws = Aws::connect(AwsConfig::from_env(Function::Api)?)?;
    let runtime = runtime_from_env();
    twin_model::embed::init_runtime(runtime.ort_library.as_deref())?;
    let settings = ApiSettings {
        models_dir: runtime.models_dir,
        threads: env_usize(ENV_THREADS, 1),
        poll: Duration::from_secs(env_usize(
            "TWIN_MODEL_POLL_SECONDS",
            DEFAULT_POLL_SECONDS as usize,
        ) as u64),
        api_key: env_var(twin_http::API_KEY_ENV),
    };
    let (_api, router) = tokio::task::spawn_blocking(move || app(&aws, &settings)).await??;
    tracing::info!("api ready");
    lambda_http::run(router).await
}
