//! Twin Matcher's `ingest` function: S3 `ObjectCreated` on `uploads/` → aligned face crops, a
//! status record and one SQS message per upload.
//!
//! Every record of the notification is taken through the core's ingest
//! ([`System::ingest_uploaded`]): an enrollment's presigned upload, or any file dropped in a
//! person's folder (`uploads/<name>/<file>`). A key S3 allows but the storage layout does not
//! (spaces, capitals, other characters) is first copied to a checked key in the same folder and
//! the original removed. An object that cannot be used ends `failed` with the reason, or is
//! listed as `skipped` when it has no person to record it under (retrying cannot help); any
//! other failure fails the invocation, so AWS retries it and then sends it to
//! the failure destination, and the records that did succeed are no-ops on the retry.

use std::path::PathBuf;
use std::sync::Arc;

use lambda_runtime::Diagnostic;
use serde_json::{json, Value};
use twin_aws::{s3_event, Aws, S3Store};
use twin_core::keys;
use twin_core::store::{check_key, content_tag};
use twin_app::system::{System, SystemConfig, SystemError, MAX_VIDEO_BYTES};

/// The function's state, built once per container.
pub struct Ingest {
    system: Arc<System>,
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

impl Ingest {
    /// Opens the core on the bucket and the ingest queue of `aws`; the models come from
    /// `models_dir` (backbone, landmarks).
    pub fn new(aws: &Aws, models_dir: PathBuf, threads: usize) -> Result<Self, SystemError> {
        let store = aws.store();
        let config = SystemConfig::new(std::env::temp_dir(), models_dir, threads);
        let system = System::open_with(
            config,
            Arc::new(store.clone()),
            Arc::new(aws.ingest_queue()),
            false,
        )?;
        Ok(Ingest { system, store })
    }

    /// Handles one S3 notification (or one wrapped in SQS).
    pub async fn handle(&self, event: Value) -> Result<Value, IngestError> {
        let records = s3_event::parse(&event).map_err(|e| IngestError::BadEvent(e.to_string()))?;
        let mut done = Vec::new();
        let mut skipped = Vec::new();
        let mut failed = Vec::new();
        for r in records {
            if !r.is_created() || !r.key.starts_with("uploads/") {
                tracing::info!(event = %r.event_name, "not an upload: nothing to do");
                continue;
            }
            let system = self.system.clone();
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
                system.ingest_uploaded(&key, &etag, size)
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
                Ok(Err(
                    e @ (SystemError::BadInput(_)
                    | SystemError::TooLarge(_)
                    | SystemError::NotFound(_)),
                )) => {
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
/// layout allows the key, else a copy at `uploads/<slug>/<name>-<hash>.<ext>` (made inside S3;
/// the original is then removed) with the copy's ETag, the one the copy's own notification
/// carries, so that notification names the same upload and finds it done.
fn canonical(store: &S3Store, key: &str, etag: String) -> Result<(String, String), SystemError> {
    if check_key(key).is_ok() {
        return Ok((key.to_string(), etag));
    }
    let rest = key.strip_prefix("uploads/").unwrap_or(key);
    let (folder, file) = rest
        .split_once('/')
        .filter(|(f, file)| !f.is_empty() && !file.is_empty() && !file.contains('/'))
        .ok_or_else(|| SystemError::BadInput("not uploads/<person>/<file>".into()))?;
    let slug = keys::slugify(&folder.replace('_', " "));
    keys::check_slug(&slug)?;
    let (stem, ext) = file.rsplit_once('.').unwrap_or((file, ""));
    let ext: String = ext
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    let stem = keys::slugify(stem);
    let name = format!(
        "{}-{}",
        if stem.is_empty() { "upload" } else { &stem },
        &content_tag(key.as_bytes())[..8]
    );
    let target = if ext.is_empty() {
        format!("uploads/{slug}/{name}")
    } else {
        format!("uploads/{slug}/{name}.{ext}")
    };
    check_key(&target).map_err(|e| SystemError::BadInput(e.to_string()))?;
    let internal = |e: twin_aws::AwsError| SystemError::Internal(e.to_string());
    let tag = match store.copy_unchecked(key, &target).map_err(internal)? {
        Some(tag) => {
            store.delete_unchecked(key).map_err(internal)?;
            tag
        }
        // Gone already: a repeated event after the copy.
        None => store
            .tag_of(&target)
            .map_err(internal)?
            .ok_or_else(|| SystemError::NotFound(format!("{target} has no source")))?,
    };
    Ok((target, tag))
}
