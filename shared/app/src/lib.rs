//! Twin Matcher's use cases, each a small type that takes only the ports it needs:
//!
//! | use case | type |
//! | --- | --- |
//! | "who do I look like?" | [`matching::Matching`] |
//! | enrolling (create, upload, status) | [`enrollment::Enrollments`] |
//! | ingest (upload → crops → message) | [`ingest::Ingest`] |
//! | the dataset step (messages → a dataset version) | [`dataset_step::DatasetStep`] |
//! | erasure | [`erasure::Erasure`] |
//! | model serving (hot reload, self-check, promotion) | [`serving::ModelServing`] |
//! | training (when, and the job) | [`training`] |
//! | bulk import | [`import::Import`] |
//!
//! Each host wires the ones it runs: [`local::Local`] on one machine, each Lambda function in
//! its own crate. Failures are [`Error`]s of a few kinds a caller can act on.

pub mod admission;
pub mod dataset_step;
pub mod enrollment;
pub mod erasure;
pub mod error;
pub mod gallery;
pub mod serving;
pub mod training;

#[cfg(feature = "faces")]
pub mod hfparquet;
#[cfg(feature = "video")]
pub mod import;
#[cfg(feature = "video")]
pub mod ingest;
#[cfg(feature = "video")]
pub mod local;
#[cfg(feature = "faces")]
pub mod matching;

pub use error::{Error, Result};

#[cfg(feature = "faces")]
pub use engines::Engines;

#[cfg(feature = "faces")]
mod engines {
    use std::path::Path;
    use std::sync::Arc;

    use twin_core::paths::BACKBONE_FILE;
    #[cfg(feature = "video")]
    use twin_faces::enroll::video_pipeline_options;
    use twin_faces::pipeline::{FacePipeline, PipelineOptions};
    use twin_model::embed::{Embedder, EmbedderOptions};

    use crate::error::Result;

    /// The engines the use cases share, opened once per process from the models folder.
    pub struct Engines {
        /// Faces in photos (matching, photo enrollments, import).
        pub photos: Arc<FacePipeline>,
        /// The backbone: embeds crops for the dataset, and faces when no model is promoted.
        pub backbone: Arc<Embedder>,
    }

    impl Engines {
        /// Opens the photo pipeline and the backbone from `models_dir`.
        pub fn open(models_dir: &Path, threads: usize) -> Result<Self> {
            Self::open_with(models_dir, threads, |_| ())
        }

        /// [`Engines::open`], running `alongside` with the backbone on a second thread while
        /// the photo pipeline opens (a server loads its promoted model there: the store's
        /// latency and the face models' parsing overlap). Returns once both are done.
        pub fn open_with(
            models_dir: &Path,
            threads: usize,
            alongside: impl FnOnce(&Arc<Embedder>) + Send,
        ) -> Result<Self> {
            let backbone = Arc::new(Embedder::open(
                &models_dir.join(BACKBONE_FILE),
                &EmbedderOptions { threads },
            )?);
            let photos = std::thread::scope(|s| {
                let with = s.spawn(|| alongside(&backbone));
                let photos = FacePipeline::open(models_dir, &PipelineOptions::default());
                if let Err(panic) = with.join() {
                    std::panic::resume_unwind(panic);
                }
                photos
            })?;
            Ok(Engines {
                photos: Arc::new(photos),
                backbone,
            })
        }

        /// The video pipeline (enrollment videos: no CNN search, frames as they are).
        #[cfg(feature = "video")]
        pub fn videos(models_dir: &Path) -> Result<FacePipeline> {
            Ok(FacePipeline::open(models_dir, &video_pipeline_options())?)
        }
    }
}
