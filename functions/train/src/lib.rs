//! Twin Matcher's `train` function: a train request (SQS) or the schedule → the core's training
//! job and promotion gate ([`twin_model::models::train_and_gate`]).
//!
//! A request for a dataset version some model was already trained on (or a later one) changes
//! nothing, so a repeated message or a schedule with nothing new does not make a new version.
//! The backbone comes from the models folder shipped with the function (`TWIN_MODELS_DIR`), or
//! from `models/base/backbone.onnx` in the bucket (`twin model publish`). Built without OpenCV.

use std::path::PathBuf;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::Diagnostic;
use serde_json::{json, Value};
use twin_aws::{Aws, S3Store};
use twin_core::messages::TrainRequest;
use twin_model::models::{self, BASE_BACKBONE};
use twin_app::steps;
use twin_core::store::ObjectStore;
use twin_model::train::TrainOptions;

/// The function's state, built once per container.
pub struct TrainFn {
    store: S3Store,
    backbone: Option<PathBuf>,
    threads: usize,
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

impl TrainFn {
    /// `backbone`: the shipped backbone file, if any (else the bucket's base model is used).
    pub fn new(aws: &Aws, backbone: Option<PathBuf>, threads: usize) -> Self {
        TrainFn {
            store: aws.store(),
            backbone: backbone.filter(|p| p.is_file()),
            threads,
        }
    }

    /// Handles an SQS batch of train requests, or a scheduled event (anything else with no
    /// `Records`): trains at most once per dataset version.
    pub async fn handle(&self, event: Value) -> Result<Value, TrainError> {
        if event.get("Records").is_some() {
            let batch: SqsEvent = serde_json::from_value(event)
                .map_err(|e| TrainError(format!("not an SQS event: {e}")))?;
            let mut failures = Vec::new();
            let mut outcomes = Vec::new();
            for r in batch.records {
                let id = r.message_id.clone().unwrap_or_default();
                let request = match TrainRequest::parse(r.body.as_deref().unwrap_or("")) {
                    Ok(req) => req,
                    Err(e) => {
                        tracing::error!(message_id = %id, error = %e, "not a train request");
                        let mut f = BatchItemFailure::default();
                        f.item_identifier = id;
                        failures.push(f);
                        continue;
                    }
                };
                match self.train_if_new(Some(request.dataset_version)).await {
                    Ok(v) => outcomes.push(v),
                    Err(e) => {
                        tracing::error!(message_id = %id, error = %e, "training failed");
                        let mut f = BatchItemFailure::default();
                        f.item_identifier = id;
                        failures.push(f);
                    }
                }
            }
            let mut response = SqsBatchResponse::default();
            response.batch_item_failures = failures;
            let mut v = serde_json::to_value(response).map_err(|e| TrainError(e.to_string()))?;
            v["outcomes"] = Value::Array(outcomes);
            Ok(v)
        } else {
            // The schedule: train when the current dataset has no model yet.
            self.train_if_new(None).await
        }
    }

    /// Trains on the current dataset unless a model already covers `at_least` (or, with `None`,
    /// the current version) — a repeated request or a quiet schedule is a no-op.
    pub async fn train_if_new(&self, at_least: Option<u64>) -> Result<Value, TrainError> {
        let store = self.store.clone();
        let backbone = self.backbone.clone();
        let threads = self.threads;
        tokio::task::spawn_blocking(move || {
            let current = twin_core::dataset::load_current_manifest(&store)
                .map_err(|e| TrainError(e.to_string()))?
                .map(|m| m.version);
            let Some(current) = current else {
                return Ok(json!({"trained": false, "reason": "there is no dataset yet"}));
            };
            let wanted = at_least.unwrap_or(current).min(current);
            if steps::trained_on(&store, wanted).map_err(|e| TrainError(e.to_string()))? {
                return Ok(json!({
                    "trained": false,
                    "reason": format!("a model was already trained on dataset version {wanted} or later"),
                }));
            }
            let bytes = match &backbone {
                Some(p) => std::fs::read(p)
                    .map_err(|e| TrainError(format!("cannot read {}: {e}", p.display())))?,
                None => store
                    .get(BASE_BACKBONE)
                    .map_err(|e| TrainError(e.to_string()))?
                    .ok_or_else(|| {
                        TrainError(format!(
                            "no backbone: ship one in TWIN_MODELS_DIR or run twin model publish ({BASE_BACKBONE})"
                        ))
                    })?
                    .data,
            };
            let options = TrainOptions {
                threads,
                ..Default::default()
            };
            match models::train_and_gate(&store, &bytes, &options, &|_, _| {}) {
                Ok(o) => {
                    let m = o.metrics;
                    tracing::info!(
                        version = m.version,
                        dataset_version = m.dataset_version,
                        top1 = m.model.top1,
                        baseline_top1 = m.baseline.top1,
                        promoted = m.promoted,
                        reason = %m.reason,
                        "model trained"
                    );
                    Ok(json!({
                        "trained": true,
                        "version": m.version,
                        "dataset_version": m.dataset_version,
                        "promoted": m.promoted,
                        "reason": m.reason,
                    }))
                }
                Err(models::ModelError::NothingToTrain(reason)) => {
                    tracing::info!(%reason, "nothing to train");
                    Ok(json!({"trained": false, "reason": reason}))
                }
                Err(e) => Err(TrainError(e.to_string())),
            }
        })
        .await
        .map_err(|e| TrainError(format!("worker panicked: {e}")))?
    }
}
