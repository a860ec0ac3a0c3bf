//! Twin Matcher's `dataset` function: an SQS batch of ingest messages → one new dataset version.
//!
//! Each message is parsed and its crops embedded on its own; the good ones are committed
//! together ([`twin_app::steps::apply_ingest_messages`]: create-if-absent manifest, conditional
//! move of `dataset/CURRENT`), and the answer is an `SqsBatchResponse` naming only the messages
//! that failed, so SQS retries exactly those (and dead-letters them after the queue's
//! `maxReceiveCount`). A redelivered message changes nothing. When enough identities are not
//! yet in the promoted model, a train request goes to the train queue. Built without OpenCV:
//! this function never looks for faces.

use std::path::Path;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::Diagnostic;
use twin_aws::{Aws, S3Store, SqsQueue};
use twin_model::embed::{Embedder, EmbedderOptions};
use twin_core::queue::Queue;
use twin_app::steps;
use twin_core::enrollment::StepError;

/// Identities not in the promoted model before a train request is sent, unless
/// `TWIN_TRAIN_MIN_NEW` says otherwise.
pub const DEFAULT_TRAIN_MIN_NEW: usize = 1;

/// The function's state, built once per container.
pub struct DatasetFn {
    store: S3Store,
    train_queue: Arc<SqsQueue>,
    embedder: Arc<Embedder>,
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
    /// Loads the backbone from `backbone` and connects to the bucket and the train queue.
    pub fn new(aws: &Aws, backbone: &Path, threads: usize, min_new: usize) -> Result<Self, String> {
        let embedder =
            Embedder::open(backbone, &EmbedderOptions { threads }).map_err(|e| e.to_string())?;
        Ok(DatasetFn {
            store: aws.store(),
            train_queue: Arc::new(aws.train_queue()),
            embedder: Arc::new(embedder),
            min_new,
        })
    }

    /// Handles one SQS batch.
    pub async fn handle(&self, event: SqsEvent) -> Result<SqsBatchResponse, DatasetError> {
        let ids: Vec<String> = event
            .records
            .iter()
            .map(|r| r.message_id.clone().unwrap_or_default())
            .collect();
        let bodies: Vec<String> = event
            .records
            .into_iter()
            .map(|r| r.body.unwrap_or_default())
            .collect();
        let store = self.store.clone();
        let embedder = self.embedder.clone();
        let train_queue = self.train_queue.clone();
        let min_new = self.min_new;
        let (results, version) = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
            let (results, version) = steps::apply_ingest_messages(&store, &embedder, &refs, None);
            if version.is_some() {
                match steps::train_due(&store, min_new) {
                    Ok(Some(req)) => {
                        if let Err(e) = train_queue.send(&serde_json::to_string(&req).expect("a request serializes")) {
                            // The schedule trains anyway; the dataset version is committed.
                            tracing::error!(error = %e, "cannot send the train request");
                        } else {
                            tracing::info!(dataset_version = req.dataset_version, reason = %req.reason, "train request sent");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "cannot decide whether to train"),
                }
            }
            (results, version)
        })
        .await
        .map_err(|e| DatasetError(format!("worker panicked: {e}")))?;
        let mut failures = Vec::new();
        for (id, r) in ids.iter().zip(results) {
            match r {
                Ok(()) => {}
                Err(e) => {
                    let kind = match e {
                        StepError::Malformed(_) => "malformed",
                        _ => "failed",
                    };
                    tracing::error!(message_id = %id, kind, error = %e, "message not applied");
                    let mut f = BatchItemFailure::default();
                    f.item_identifier = id.clone();
                    failures.push(f);
                }
            }
        }
        tracing::info!(messages = ids.len(), failed = failures.len(), version = ?version, "batch done");
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures;
        Ok(response)
    }
}
