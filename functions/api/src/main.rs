//! Twin Matcher's `api` Lambda function.
//!
//! The HTTP API and the web page (API Gateway HTTP API, payload 2.0).
//! This release ships the function's cold start (tracing, the embedding engine); its
//! event handling is not part of this release, so every event is refused with a
//! non-retryable error rather than dropped: AWS keeps it (retries, then the dead-letter queue).

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;

/// The error every event gets from this release.
#[derive(Debug)]
struct Unsupported;

impl From<Unsupported> for Diagnostic {
    fn from(_: Unsupported) -> Self {
        Diagnostic {
            error_type: "Unsupported".into(),
            error_message: concat!(
                "twin api ",
                env!("CARGO_PKG_VERSION"),
                " does not process events; deploy a release whose api function does"
            )
            .into(),
        }
    }
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Unsupported> {
    tracing::warn!(request_id = %event.context.request_id, "event refused: this release does not process api events");
    Err(Unsupported)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    // The embedding engine is built once per container, before the first event.
    let model = twin_core::paths::default_backbone();
    let threads = std::env::var("TWIN_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let embedder =
        twin_core::embed::Embedder::open(&model, &twin_core::embed::EmbedderOptions { threads })?;
    tracing::info!(model = %model.display(), dim = embedder.dim(), "embedding engine ready");

    lambda_runtime::run(service_fn(handle)).await
}
