//! The dataset step: a batch of ingest messages → their crops embedded → one new dataset
//! version → their enrollments `indexed`. Built without OpenCV (the `dataset` function's zip).

use std::sync::Arc;

use image::RgbImage;
use twin_core::dataset::{self, Update};
use twin_core::enrollment::{self, EnrollmentState, StepError};
use twin_core::limits::DATASET_BATCH;
use twin_core::messages::IngestMessage;
use twin_core::queue::{Queue, Received};
use twin_core::store::{Condition, ObjectStore};
use twin_model::embed::Embedder;

use crate::error::{Error, Result};
use crate::gallery::{DatasetWriter, GalleryView};

/// What a batch did.
#[derive(Debug)]
pub struct BatchOutcome {
    /// Per message, in order: done, or why not ([`StepError::Malformed`]: never will be).
    pub results: Vec<Result<(), StepError>>,
    /// The dataset version committed (`None` when nothing was new).
    pub committed: Option<u64>,
}

/// The dataset step.
pub struct DatasetStep {
    store: Arc<dyn ObjectStore>,
    backbone: Arc<Embedder>,
    writer: Arc<DatasetWriter>,
    /// The gallery this process serves, reloaded after a commit.
    gallery: Option<Arc<GalleryView>>,
}

impl DatasetStep {
    /// The step over `store`, embedding with `backbone`, committing through `writer`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        backbone: Arc<Embedder>,
        writer: Arc<DatasetWriter>,
        gallery: Option<Arc<GalleryView>>,
    ) -> Self {
        DatasetStep {
            store,
            backbone,
            writer,
            gallery,
        }
    }

    /// Applies a batch of ingest message bodies (the `dataset` function's SQS batch, or the
    /// local queue's): each message is parsed and its crops embedded on its own, the good ones
    /// are committed as one dataset version, and their enrollments marked `indexed`. A message
    /// whose upload is already in the dataset (a redelivery) is done and writes nothing.
    pub fn apply(&self, bodies: &[&str]) -> BatchOutcome {
        let all_failed = |m: String, n: usize| BatchOutcome {
            results: (0..n).map(|_| Err(StepError::Failed(m.clone()))).collect(),
            committed: None,
        };
        // Read once: the uploads already in, those refused, and the version the batch starts
        // from.
        let (applied, refused, before) = match dataset::load_current_people(&*self.store) {
            Ok(Some(m)) => (m.applied_uploads, m.erased_uploads, Some(m.version)),
            Ok(None) => Default::default(),
            Err(e) => return all_failed(e.to_string(), bodies.len()),
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
                indexed.push((results.len(), m.upload_id.clone()));
                results.push(Ok(()));
                continue;
            }
            if refused.contains(&m.upload_id) {
                // Its person was erased while it was in flight: what it left goes too.
                results.push(
                    crate::erasure::forget_upload(&*self.store, &m.upload_id, &m.crops)
                        .map_err(|e| StepError::Failed(e.to_string())),
                );
                continue;
            }
            match self.load_and_embed(&m.crops) {
                Ok(embeddings) => {
                    indexed.push((results.len(), m.upload_id.clone()));
                    updates.push(Update::Add {
                        message: m,
                        embeddings,
                    });
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let mut committed = None;
        let mut current = before;
        if !updates.is_empty() {
            match self.writer.commit(self.backbone.dim(), &updates) {
                Ok(v) => {
                    committed = (Some(v) != before).then_some(v);
                    current = Some(v);
                }
                Err(e) => {
                    let m = e.to_string();
                    return BatchOutcome {
                        results: results
                            .into_iter()
                            .map(|r| r.and(Err(StepError::Failed(m.clone()))))
                            .collect(),
                        committed: None,
                    };
                }
            }
        }
        // A message whose enrollment could not be marked `indexed` is not done: delivered again,
        // it finds its upload applied and marks it then.
        for (i, upload_id) in indexed {
            let marked = enrollment::read_status(&*self.store, &upload_id).and_then(|s| {
                match (s, current) {
                    (Some(mut s), Some(v)) if s.state == EnrollmentState::Cropped => {
                        if s.index(v).is_ok() {
                            enrollment::save_status(&*self.store, &s, Condition::None)?;
                        }
                        Ok(())
                    }
                    _ => Ok(()),
                }
            });
            if let Err(e) = marked {
                tracing::error!(upload_id = %upload_id, error = %e, "cannot record the indexed state");
                results[i] = Err(StepError::Failed(format!(
                    "cannot record the indexed state: {e}"
                )));
            }
        }
        if committed.is_some() {
            if let Some(g) = &self.gallery {
                if let Err(e) = g.refresh_if_loaded() {
                    tracing::error!(error = %e, "cannot reload the gallery");
                }
            }
        }
        BatchOutcome { results, committed }
    }

    /// Reads stored crops (PNG) and embeds them with the backbone.
    fn load_and_embed(&self, crops: &[String]) -> Result<Vec<Vec<f32>>, StepError> {
        let mut chips: Vec<RgbImage> = Vec::with_capacity(crops.len());
        for k in crops {
            let Some(obj) = self.store.get(k)? else {
                return Err(StepError::Failed(format!("crop {k} is missing")));
            };
            let img = image::load_from_memory_with_format(&obj.data, image::ImageFormat::Png)
                .map_err(|e| StepError::Failed(format!("crop {k}: {e}")))?
                .to_rgb8();
            chips.push(img);
        }
        let refs: Vec<&RgbImage> = chips.iter().collect();
        self.backbone
            .embed_all(&refs)
            .map_err(|e| StepError::Failed(e.to_string()))
    }

    /// Applies one batch received from `queue` and acknowledges what is done: applied messages,
    /// and malformed ones (dropped with a log line: they can never succeed). The others come back
    /// after the queue's visibility timeout; the first of their errors is returned.
    pub fn apply_received(&self, queue: &dyn Queue, batch: &[Received]) -> Result<()> {
        let bodies: Vec<&str> = batch.iter().map(|r| r.body.as_str()).collect();
        let outcome = self.apply(&bodies);
        let mut first_error = None;
        for (r, result) in batch.iter().zip(outcome.results) {
            match result {
                Ok(()) => {
                    let _ = queue.ack(r.receipt);
                }
                Err(StepError::Malformed(e)) => {
                    tracing::error!(receipt = r.receipt, error = %e, "unusable ingest message dropped");
                    let _ = queue.ack(r.receipt);
                }
                Err(e) => {
                    first_error.get_or_insert(Error::from(e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Applies every message waiting in `queue` now (one-shot commands). Returns the dataset
    /// version current afterwards.
    pub fn drain(&self, queue: &dyn Queue) -> Result<u64> {
        loop {
            let batch = queue
                .receive(DATASET_BATCH, std::time::Duration::ZERO)
                .map_err(Error::internal)?;
            if batch.is_empty() {
                return Ok(dataset::load_current_people(&*self.store)?
                    .map(|m| m.version)
                    .unwrap_or(0));
            }
            self.apply_received(queue, &batch)?;
        }
    }
}
