//! Twin Matcher's `ingest` Lambda function.
//!
//! S3 `ObjectCreated` events on `uploads/` → decoded frames, aligned face crops, a status record and one SQS message per upload.
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
                "twin ingest ",
                env!("CARGO_PKG_VERSION"),
                " does not process events; deploy a release whose ingest function does"
            )
            .into(),
        }
    }
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Unsupported> {
    tracing::warn!(request_id = %event.context.request_id, "event refused: this release does not process ingest events");
    Err(Unsupported)
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    lambda_runtime::run(service_fn(handle)).await
}
