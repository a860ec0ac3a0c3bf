//! Twin Matcher's `ingest` function: S3 `ObjectCreated` on `uploads/` → aligned face crops, a
//! status record and one SQS message per upload.
//!
//! Every record of the notification is taken through the ingest use case
//! ([`Ingest::uploaded_object`]): an enrollment's presigned upload, or any file dropped in a
//! person's folder (`uploads/<name>/<file>`). A key S3 allows but the storage layout does not
//! (spaces, other characters) is first copied to the checked key the layout gives it and the
//! original removed. An object that cannot be used ends `failed` with the reason, or is
//! listed as `skipped` when it has no person to record it under (retrying cannot help); any
//! other failure fails the invocation, so AWS retries it and then sends it to
//! the failure destination, and the records that did succeed are no-ops on the retry.

use std::path::Path;
use std::sync::Arc;

use lambda_runtime::Diagnostic;
use serde_json::{json, Value};
use twin_app::ingest::Ingest;
use twin_app::{Engines, Error};
use twin_aws::{s3_event, Aws, S3Store};
use twin_core::keys;
use twin_core::media::MAX_VIDEO_BYTES;

/// The function's state, built once per container.
pub struct IngestFn {
    ingest: Arc<Ingest>,
    store: S3Store,
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The event is not an S3 notification the function can read.
    #[error("bad event: {0}")]
    BadEvent(String),
    /// Some records failed (each is named); retrying may help.
    #[error("{0}")]
    Records(String),
}

impl From<IngestError> for Diagnostic {
    fn from(e: IngestError) -> Self {
        Diagnostic {
            error_type: match e {
                IngestError::BadEvent(_) => "BadEvent",
                IngestError::Records(_) => "RecordsFailed",
            }
            .into(),
            error_message: e.to_string(),
        }
    }
}

impl IngestFn {
    /// Wires the ingest use case over the bucket and the ingest queue of `aws`; the models come
    /// from `models_dir` (backbone, landmarks, detector).
    pub fn new(aws: &Aws, models_dir: &Path, threads: usize) -> Result<Self, Error> {
        let store = aws.store();
        let engines = Engines::open(models_dir, threads)?;
        let ingest = Ingest::new(
            Arc::new(store.clone()),
            Arc::new(aws.ingest_queue()),
            engines.photos,
            Arc::new(Engines::videos(models_dir)?),
            engines.backbone,
        );
        Ok(IngestFn {
            ingest: Arc::new(ingest),
            store,
        })
    }

    /// Handles one S3 notification (or one wrapped in SQS).
    pub async fn handle(&self, event: Value) -> Result<Value, IngestError> {
        let records = s3_event::parse(&event).map_err(|e| IngestError::BadEvent(e.to_string()))?;
        let mut done = Vec::new();
        let mut skipped = Vec::new();
        let mut failed = Vec::new();
        for r in records {
            if !r.is_created() || !r.key.starts_with(keys::UPLOADS) {
                tracing::info!(event = %r.event_name, "not an upload: nothing to do");
                continue;
            }
            let ingest = self.ingest.clone();
            let store = self.store.clone();
            let key = r.key.clone();
            let etag = r.etag.clone().unwrap_or_default();
            let size = r.size;
            let outcome = tokio::task::spawn_blocking(move || {
                let (key, etag) = match size {
                    // Too large to use: recorded as failed without a download.
                    Some(n) if n > MAX_VIDEO_BYTES as u64 => (key, etag),
                    _ => canonical(&store, &key, etag)?,
                };
                ingest.uploaded_object(&key, &etag, size)
            })
            .await;
            match outcome {
                Ok(Ok(status)) => {
                    tracing::info!(upload_id = %status.upload_id, state = %status.state, "upload ingested");
                    done.push(json!({
                        "upload_id": status.upload_id,
                        "state": status.state,
                        "kept": status.kept,
                    }));
                }
                // The object cannot be used and there is no status to record it in (no person
                // folder, an oversized object with an unusable name, a source gone without its
                // copy): retrying cannot help.
                Ok(Err(e @ (Error::BadInput(_) | Error::TooLarge(_) | Error::NotFound(_)))) => {
                    tracing::warn!(error = %e, "upload left alone");
                    skipped.push(e.to_string());
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "upload failed; the invocation will be retried");
                    failed.push(e.to_string());
                }
                Err(e) => failed.push(format!("worker panicked: {e}")),
            }
        }
        if !failed.is_empty() {
            return Err(IngestError::Records(format!(
                "{} of {} uploads failed: {}",
                failed.len(),
                failed.len() + done.len(),
                failed.join("; ")
            )));
        }
        Ok(json!({ "uploads": done, "skipped": skipped }))
    }
}

/// The key the core can work with and its ETag: `key` and `etag` themselves when the storage
/// layout allows the key, else a copy at the key the layout gives it
/// ([`keys::canonical_upload_key`], made inside S3; the original is then removed) with the
/// copy's ETag, the one the copy's own notification carries, so that notification names the
/// same upload and finds it done.
fn canonical(store: &S3Store, key: &str, etag: String) -> Result<(String, String), Error> {
    let Some(target) = keys::canonical_upload_key(key)? else {
        return Ok((key.to_string(), etag));
    };
    let internal = |e: twin_aws::AwsError| Error::Internal(e.to_string());
    let tag = match store.copy_unchecked(key, &target).map_err(internal)? {
        Some(tag) => {
            store.delete_unchecked(key).map_err(internal)?;
            tag
        }
        // Gone already: a repeated event after the copy.
        None => store
            .tag_of(&target)
            .map_err(internal)?
            .ok_or_else(|| Error::NotFound(format!("{target} has no source")))?,
    };
    Ok((target, tag))
}
