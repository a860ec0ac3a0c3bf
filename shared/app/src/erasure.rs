//! Erasure: a person asks to be forgotten, and nothing of them is kept (`docs/STATES.md`).
//!
//! They are hidden at once (never matched or shown from the moment the request arrives); their
//! identity leaves the dataset and every upload of theirs is refused for good (indexed or not, so
//! an enrollment still in flight cannot bring them back); every trained model forgets them; their
//! crops, uploads and enrollment records are deleted; and compaction deletes the older dataset
//! versions and segments that held their rows and name. The enrollment records are deleted last:
//! until then they say what is left to delete, so an erasure interrupted by a crash is finished
//! by the next request for it (an erasure is idempotent).

use std::sync::Arc;

use twin_core::dataset::{self, Update};
use twin_core::enrollment::{self, EnrollmentStatus};
use twin_core::keys;
use twin_core::names;
use twin_core::store::ObjectStore;

use crate::error::{Error, Result};
use crate::gallery::{DatasetWriter, GalleryView};
use crate::serving::ModelServing;

/// What an erasure deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Enrollment records deleted (indexed or not).
    pub enrollments: usize,
    /// Crops and uploads deleted (or found deleted already).
    pub files: usize,
    /// Trained model versions rewritten.
    pub models: usize,
    /// Dataset objects deleted by the compaction (older versions, segments).
    pub dataset_objects: usize,
}

/// The erasure use case.
pub struct Erasure {
    store: Arc<dyn ObjectStore>,
    writer: Arc<DatasetWriter>,
    gallery: Arc<GalleryView>,
    models: Arc<ModelServing>,
    /// Length of the embeddings (the backbone's).
    dim: usize,
}

impl Erasure {
    /// Erasure over `store`, committing through `writer`, hiding in `gallery`, forgetting in
    /// `models`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        writer: Arc<DatasetWriter>,
        gallery: Arc<GalleryView>,
        models: Arc<ModelServing>,
        dim: usize,
    ) -> Self {
        Erasure {
            store,
            writer,
            gallery,
            models,
            dim,
        }
    }

    /// Erases the person `slug`: in the gallery or not (an enrollment never indexed, one still
    /// in flight), and again after an interrupted erasure. `NotFound` when nothing of theirs is
    /// stored.
    pub fn erase(&self, slug: &str) -> Result<Erased> {
        let not_found = || Error::NotFound(format!("no identity {slug:?} in the gallery"));
        names::check_slug(slug).map_err(|_| not_found())?;
        let in_gallery =
            dataset::load_current_people(&*self.store)?.is_some_and(|m| m.identity(slug).is_some());
        let records: Vec<EnrollmentStatus> = enrollment::list_statuses(&*self.store)?
            .into_iter()
            .filter(|s| s.slug == slug)
            .collect();
        let files: Vec<String> = [keys::crops_of(slug)?, keys::uploads_of(slug)?]
            .iter()
            .map(|p| self.store.list(p))
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let in_models = !twin_model::models::knowing(&*self.store, slug)?.is_empty();
        if !in_gallery && records.is_empty() && files.is_empty() && !in_models {
            return Err(not_found());
        }
        let _hidden = self.gallery.hide(slug);
        let mut done = Erased::default();
        // The dataset: the identity goes, and every upload of theirs is refused from now on.
        let (_, compacted) = self.writer.commit_reporting(
            self.dim,
            &[
                Update::Erase {
                    slug: slug.to_string(),
                },
                Update::Refuse {
                    uploads: records.iter().map(|s| s.upload_id.clone()).collect(),
                },
            ],
        )?;
        done.models = self.models.forget_counted(slug)?;
        // Their files: under their folders, and any upload of theirs stored elsewhere (a drop
        // folder spelled differently).
        let mut doomed = files;
        for s in &records {
            doomed.extend(s.source_key.iter().cloned());
            doomed.extend(s.crops.iter().cloned());
        }
        doomed.sort();
        doomed.dedup();
        for key in &doomed {
            // Deleting what is gone already is no error (an erasure finished after a crash).
            self.store.delete(key)?;
        }
        done.files = doomed.len();
        // Usually done by the commit already; again here for anything a crash left.
        done.dataset_objects = compacted.map_or(0, |c| c.deleted) + self.writer.compact()?.deleted;
        self.gallery.refresh_if_loaded()?;
        for s in &records {
            self.store.delete(&keys::status_key(&s.upload_id)?)?;
            done.enrollments += 1;
        }
        tracing::info!(
            enrollments = done.enrollments,
            files = done.files,
            models = done.models,
            dataset_objects = done.dataset_objects,
            "person erased"
        );
        Ok(done)
    }
}

/// Deletes what an upload refused by the dataset left behind: its crops, its stored upload and
/// its enrollment record (an enrollment that was in flight when its person was erased).
pub fn forget_upload(store: &dyn ObjectStore, upload_id: &str, crops: &[String]) -> Result<()> {
    let record = enrollment::read_status(store, upload_id)?;
    let mut keys: Vec<String> = crops.to_vec();
    if let Some(s) = &record {
        keys.extend(s.crops.iter().cloned());
        keys.extend(s.source_key.iter().cloned());
    }
    for k in keys
        .iter()
        .filter(|k| twin_core::store::check_key(k).is_ok())
    {
        store.delete(k)?;
    }
    if record.is_some() {
        store.delete(&keys::status_key(upload_id)?)?;
    }
    Ok(())
}
