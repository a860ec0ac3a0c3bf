//! The `api` Lambda function's entry point: clients, models and the router once, then requests.

use twin_aws::{Aws, AwsConfig};
use twin_fn_api::{app, ApiSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let aws = Aws::connect(AwsConfig::from_env_needing(false, false)?)?;
    let settings = ApiSettings::from_env();
    let (_system, router) = tokio::task::spawn_blocking(move || app(&aws, &settings)).await??;
    tracing::info!("api ready");
    lambda_http::run(router).await
}
