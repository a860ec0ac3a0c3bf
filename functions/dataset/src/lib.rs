//! Twin Matcher's `dataset` function: an SQS batch of ingest messages → one new dataset version.
//!
//! The dataset step ([`DatasetStep::apply`]) parses each message and embeds its crops on its
//! own, commits the good ones together (create-if-absent manifest, conditional move of
//! `dataset/CURRENT`), and the answer names only the messages that failed, so SQS retries
//! exactly those (and dead-letters them after the queue's `maxReceiveCount`). A redelivered
//! message changes nothing. When enough identities are not yet in the promoted model, a train
//! request goes to the train queue. Built without OpenCV: this function never looks for faces.

use std::path::Path;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::Diagnostic;
use twin_app::dataset_step::DatasetStep;
use twin_app::gallery::DatasetWriter;
use twin_app::training::train_due;
use twin_aws::{sqs_batch_response, Aws, S3Store, SqsQueue};
use twin_core::queue::Queue;
use twin_model::embed::{Embedder, EmbedderOptions};

pub use twin_app::training::DEFAULT_TRAIN_MIN_NEW;

/// The function's state, built once per container.
pub struct DatasetFn {
    store: S3Store,
    step: Arc<DatasetStep>,
    train_queue: Arc<SqsQueue>,
    min_new: usize,
}

/// A failure of the whole batch (per-message failures are in the response instead).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DatasetError(String);

impl From<DatasetError> for Diagnostic {
    fn from(e: DatasetError) -> Self {
        Diagnostic {
            error_type: "DatasetFailed".into(),
            error_message: e.0,
        }
    }
}

impl DatasetFn {
    /// Loads the backbone from `backbone` and wires the dataset step over the bucket, sending
    /// train requests to the train queue.
    pub fn new(aws: &Aws, backbone: &Path, threads: usize, min_new: usize) -> Result<Self, String> {
        let embedder =
            Embedder::open(backbone, &EmbedderOptions { threads }).map_err(|e| e.to_string())?;
        let store = aws.store();
        let shared: Arc<dyn twin_core::store::ObjectStore> = Arc::new(store.clone());
        let writer = Arc::new(DatasetWriter::new(shared.clone()));
        Ok(DatasetFn {
            step: Arc::new(DatasetStep::new(shared, Arc::new(embedder), writer, None)),
            store,
            train_queue: Arc::new(aws.train_queue()),
            min_new,
        })
    }

    /// Handles one SQS batch.
    pub async fn handle(&self, event: SqsEvent) -> Result<SqsBatchResponse, DatasetError> {
        let step = self.step.clone();
        let store = self.store.clone();
        let train_queue = self.train_queue.clone();
        let min_new = self.min_new;
        let records = event.records;
        let bodies: Vec<String> = records
            .iter()
            .map(|r| r.body.clone().unwrap_or_default())
            .collect();
        let outcome = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
            let outcome = step.apply(&refs);
            if outcome.committed.is_some() {
                request_training(&store, &*train_queue, min_new);
            }
            outcome
        })
        .await
        .map_err(|e| DatasetError(format!("worker panicked: {e}")))?;
        let response = sqs_batch_response(&records, outcome.results);
        tracing::info!(
            messages = records.len(),
            failed = response.batch_item_failures.len(),
            version = ?outcome.committed,
            "batch done"
        );
        Ok(response)
    }
}

/// Sends a train request when training is due; a failure is logged (the schedule trains anyway,
/// and the dataset version is committed).
fn request_training(store: &S3Store, train_queue: &dyn Queue, min_new: usize) {
    match train_due(store, min_new) {
        Ok(Some(req)) => {
            let body = serde_json::to_string(&req).expect("a request serializes");
            match train_queue.send(&body) {
                Ok(()) => {
                    tracing::info!(dataset_version = req.dataset_version, reason = %req.reason, "train request sent")
                }
                Err(e) => tracing::error!(error = %e, "cannot send the train request"),
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot decide whether to train"),
    }
}
