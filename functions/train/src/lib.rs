//! Twin Matcher's `train` function: a train request (SQS) or the schedule → the training job
//! ([`TrainJob::run`]), whose gate decides promotion.
//!
//! A request for a dataset version some model was already trained on (or a later one) changes
//! nothing, so a repeated message or a schedule with nothing new does not make a new version.
//! The backbone comes from the models folder shipped with the function (`TWIN_MODELS_DIR`), or
//! from `models/base/backbone.onnx` in the bucket (`twin model publish`). Built without OpenCV.

use std::path::PathBuf;
use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::Diagnostic;
use serde_json::Value;
use twin_app::training::{TrainJob, TrainReport};
use twin_aws::{sqs_batch_response, Aws};
use twin_core::messages::TrainRequest;

/// The function's state, built once per container.
pub struct TrainFn {
    job: Arc<TrainJob>,
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TrainError(String);

impl From<TrainError> for Diagnostic {
    fn from(e: TrainError) -> Self {
        Diagnostic {
            error_type: "TrainFailed".into(),
            error_message: e.0,
        }
    }
}

/// What starts the function.
#[derive(Debug)]
pub enum TrainEvent {
    /// An SQS batch of train requests.
    Requests(SqsEvent),
    /// The schedule (any event without `Records`).
    Schedule,
}

impl TrainEvent {
    /// Reads an invocation's payload.
    pub fn parse(event: Value) -> Result<Self, TrainError> {
        if event.get("Records").is_some() {
            serde_json::from_value(event)
                .map(TrainEvent::Requests)
                .map_err(|e| TrainError(format!("not an SQS event: {e}")))
        } else {
            Ok(TrainEvent::Schedule)
        }
    }
}

impl TrainFn {
    /// `backbone`: the shipped backbone file, if any (else the bucket's published one is used).
    pub fn new(aws: &Aws, backbone: Option<PathBuf>, threads: usize) -> Self {
        TrainFn {
            job: Arc::new(TrainJob::new(Arc::new(aws.store()), backbone, threads)),
        }
    }

    /// Handles an SQS batch of train requests, or a scheduled event: trains at most once per
    /// dataset version.
    pub async fn handle(&self, event: Value) -> Result<Value, TrainError> {
        match TrainEvent::parse(event)? {
            TrainEvent::Requests(batch) => {
                let mut results = Vec::new();
                let mut outcomes = Vec::new();
                for r in &batch.records {
                    let result = match TrainRequest::parse(r.body.as_deref().unwrap_or("")) {
                        Ok(req) => self.train_if_new(Some(req.dataset_version)).await,
                        Err(e) => Err(TrainError(format!("not a train request: {e}"))),
                    };
                    results.push(result.map(|report| outcomes.push(report)));
                }
                let response = sqs_batch_response(&batch.records, results);
                let mut v =
                    serde_json::to_value(response).map_err(|e| TrainError(e.to_string()))?;
                v["outcomes"] =
                    serde_json::to_value(outcomes).map_err(|e| TrainError(e.to_string()))?;
                Ok(v)
            }
            // The schedule: train when the current dataset has no model yet.
            TrainEvent::Schedule => {
                let report = self.train_if_new(None).await?;
                serde_json::to_value(report).map_err(|e| TrainError(e.to_string()))
            }
        }
    }

    /// Trains on the current dataset unless a model already covers `at_least` (or, with `None`,
    /// the current version).
    pub async fn train_if_new(&self, at_least: Option<u64>) -> Result<TrainReport, TrainError> {
        let job = self.job.clone();
        tokio::task::spawn_blocking(move || job.run(at_least))
            .await
            .map_err(|e| TrainError(format!("worker panicked: {e}")))?
            .map_err(|e| TrainError(e.to_string()))
    }
}
