//! The pipeline steps that need no face detection, shared by [`crate::system::System`] and the
//! `dataset` and `train` functions (which are built without OpenCV): enrollment status records,
//! the dataset step over a batch of ingest messages, and the "train now?" decision.

use std::collections::HashSet;
use std::sync::Mutex;

use image::RgbImage;

use twin_core::dataset::{self, Update};
use twin_model::embed::Embedder;
use twin_core::messages::{IngestMessage, TrainRequest, MESSAGE_VERSION};
use twin_model::models;
use twin_core::store::{Condition, ObjectStore};
use twin_core::enrollment::{read_status, save_status, StepError};

/// The dataset step for a batch of ingest message bodies (the `dataset` function's SQS batch,
/// or the local dataset worker): each message is parsed and its crops embedded on its own, the
/// good ones are committed as one dataset version, and their enrollments marked `indexed`.
/// Returns, per message, whether it is done, and the version committed (`None` when nothing
/// was new). A message whose upload is already in the dataset (a redelivery) is done and
/// writes nothing. `lock` serialises commits within a process (other writers are handled by
/// the conditional write on `dataset/CURRENT`).
pub fn apply_ingest_messages(
    store: &dyn ObjectStore,
    embedder: &Embedder,
    bodies: &[&str],
    lock: Option<&Mutex<()>>,
) -> (Vec<Result<(), StepError>>, Option<u64>) {
    // Read once: the uploads already in, and the version the batch starts from.
    let (applied, before) = match dataset::load_current_manifest(store) {
        Ok(m) => m
            .map(|m| (m.applied_uploads, Some(m.version)))
            .unwrap_or_default(),
        Err(e) => {
            let m = e.to_string();
            return (
                bodies
                    .iter()
                    .map(|_| Err(StepError::Failed(m.clone())))
                    .collect(),
                None,
            );
        }
    };
    let mut results: Vec<Result<(), StepError>> = Vec::with_capacity(bodies.len());
    let mut updates = Vec::new();
    let mut indexed = Vec::new();
    for body in bodies {
        let m = match IngestMessage::parse(body) {
            Ok(m) => m,
            Err(e) => {
                results.push(Err(StepError::Malformed(format!(
                    "not an ingest message: {e}"
                ))));
                continue;
            }
        };
        if applied.contains(&m.upload_id) {
            indexed.push(m.upload_id.clone());
            results.push(Ok(()));
            continue;
        }
        match load_and_embed(store, embedder, &m.crops) {
            Ok(embeddings) => {
                indexed.push(m.upload_id.clone());
                updates.push(Update::Add {
                    message: m,
                    embeddings,
                });
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    let mut version = None;
    let mut current = before;
    if !updates.is_empty() {
        let committed = {
            let _g = lock.map(|l| l.lock().unwrap_or_else(|p| p.into_inner()));
            dataset::commit(store, embedder.dim(), &updates)
        };
        match committed {
            Ok(v) => {
                version = (Some(v) != before).then_some(v);
                current = Some(v);
            }
            Err(e) => {
                let m = e.to_string();
                return (
                    results
                        .into_iter()
                        .map(|r| r.and(Err(StepError::Failed(m.clone()))))
                        .collect(),
                    None,
                );
            }
        }
    }
    for upload_id in indexed {
        if let Ok(Some(mut s)) = read_status(store, &upload_id) {
            if s.state == "cropped" {
                s.state = "indexed".into();
                s.dataset_version = current;
                if let Err(e) = save_status(store, &s, Condition::None) {
                    tracing::error!(upload_id = %upload_id, error = %e, "cannot record the indexed state");
                }
            }
        }
    }
    (results, version)
}

/// Reads stored crops (PNG) and embeds them with the backbone.
fn load_and_embed(
    store: &dyn ObjectStore,
    embedder: &Embedder,
    crops: &[String],
) -> Result<Vec<Vec<f32>>, StepError> {
    let mut chips: Vec<RgbImage> = Vec::with_capacity(crops.len());
    for k in crops {
        let Some(obj) = store.get(k)? else {
            return Err(StepError::Failed(format!("crop {k} is missing")));
        };
        let img = image::load_from_memory_with_format(&obj.data, image::ImageFormat::Png)
            .map_err(|e| StepError::Failed(format!("crop {k}: {e}")))?
            .to_rgb8();
        chips.push(img);
    }
    let refs: Vec<&RgbImage> = chips.iter().collect();
    embedder
        .embed_all(&refs)
        .map_err(|e| StepError::Failed(e.to_string()))
}

/// A train request when at least `min_new` identities of the current dataset are not in the
/// promoted model's head (all of them when none is promoted), else `None`.
pub fn train_due(
    store: &dyn ObjectStore,
    min_new: usize,
) -> Result<Option<TrainRequest>, StepError> {
    let Some(manifest) =
        dataset::load_current_manifest(store).map_err(|e| StepError::Failed(e.to_string()))?
    else {
        return Ok(None);
    };
    let known: HashSet<String> =
        match models::current(store).map_err(|e| StepError::Failed(e.to_string()))? {
            Some((n, _)) => models::read_labels(store, n)
                .map(|l| l.labels.into_iter().map(|l| l.slug).collect())
                .unwrap_or_default(),
            None => HashSet::new(),
        };
    let new = manifest
        .identities
        .iter()
        .filter(|i| !known.contains(&i.slug))
        .count();
    Ok((new >= min_new.max(1)).then(|| TrainRequest {
        v: MESSAGE_VERSION,
        dataset_version: manifest.version,
        reason: format!("{new} identities are not in the promoted model"),
    }))
}

/// Whether a model was already trained on dataset version `n` or a later one (a repeated train
/// request changes nothing).
pub fn trained_on(store: &dyn ObjectStore, n: u64) -> Result<bool, StepError> {
    let versions = models::list(store).map_err(|e| StepError::Failed(e.to_string()))?;
    Ok(versions
        .iter()
        .filter_map(|v| v.metrics.as_ref())
        .any(|m| m.dataset_version >= n))
}
