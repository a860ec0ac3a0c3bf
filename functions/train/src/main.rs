//! Twin Matcher's `train` Lambda function.
//!
//! A train request (SQS or schedule) → an identity head trained on the current dataset, one ONNX model, gated promotion.
//! This release ships the function's cold start (tracing); its
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
                "twin train ",
                env!("CARGO_PKG_VERSION"),
                " does not process events; deploy a release whose train function does"
            )
            .into(),
        }
    }
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Unsupported> {
    tracing::warn!(request_id = %event.context.request_id, "event refused: this release does not process train events");
    Err(Unsupported)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(handle)).await
}
