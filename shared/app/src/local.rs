//! The one-machine host: every use case over a data folder ([`LocalStore`]) and an in-process
//! queue, as `twin` commands and `twin serve` run them. With workers, an upload is ingested on
//! a background thread, the dataset step drains the queue on another, and a third reloads the
//! gallery and the model when another process commits or promotes; without (one-shot commands),
//! the steps run inline. Enrollments a stopped process left between steps are picked up when
//! the next one opens the folder.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::time::Duration;

use twin_core::enrollment::{EnrollmentState, EnrollmentStatus};
use twin_core::limits::DATASET_BATCH;
use twin_core::media::Media;
use twin_core::queue::{InProcessQueue, Queue};
use twin_core::store::{LocalStore, ObjectStore};
use twin_core::{enrollment, sync};

use crate::dataset_step::DatasetStep;
use crate::enrollment::{Enrollments, UploadReceiver};
use crate::erasure::Erasure;
use crate::error::{Error, Result};
use crate::gallery::{DatasetWriter, GalleryView};
use crate::import::Import;
use crate::ingest::Ingest;
use crate::matching::Matching;
use crate::serving::ModelServing;
use crate::Engines;

/// How often `models/CURRENT` and `dataset/CURRENT` are checked unless configured.
pub const DEFAULT_MODEL_POLL: Duration = Duration::from_secs(2);
/// The waits before the ingest worker tries an upload again after an error.
const INGEST_RETRIES: &[Duration] = &[Duration::from_secs(1), Duration::from_secs(5)];
/// How long a message the dataset step took stays invisible before it comes back.
const QUEUE_VISIBILITY: Duration = Duration::from_secs(300);

/// Where the local host keeps its data and finds its models.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// The data folder (the storage layout's keys live under it).
    pub data_dir: PathBuf,
    /// The models folder: the backbone, the landmark and detector models.
    pub models_dir: PathBuf,
    /// Threads ONNX Runtime may use.
    pub threads: usize,
    /// How often a serving process checks for a new model or dataset version.
    pub model_poll: Duration,
}

impl LocalConfig {
    /// A configuration with the default polling.
    pub fn new(data_dir: PathBuf, models_dir: PathBuf, threads: usize) -> Self {
        LocalConfig {
            data_dir,
            models_dir,
            threads,
            model_poll: DEFAULT_MODEL_POLL,
        }
    }
}

/// Every use case on one machine.
pub struct Local {
    store: Arc<dyn ObjectStore>,
    queue: Arc<InProcessQueue>,
    /// The gallery served.
    pub gallery: Arc<GalleryView>,
    /// The model serving.
    pub models: Arc<ModelServing>,
    /// Matching.
    pub matching: Arc<Matching>,
    /// Enrollments.
    pub enrollments: Arc<Enrollments>,
    /// Ingest.
    pub ingest: Arc<Ingest>,
    /// The dataset step.
    pub dataset: Arc<DatasetStep>,
    /// Erasure.
    pub erasure: Arc<Erasure>,
    /// Bulk import.
    pub import: Arc<Import>,
    /// The ingest worker's inbox (`None`: steps run inline).
    ingest_tx: Mutex<Option<mpsc::Sender<String>>>,
}

impl Local {
    /// Opens the data folder with workers: ingest and the dataset step run in the background,
    /// the model and gallery are reloaded when they change, and enrollments a previous run left
    /// unfinished are resumed.
    pub fn open(config: LocalConfig) -> Result<Arc<Local>> {
        let local = Self::open_inline(&config)?;
        let (tx, rx) = mpsc::channel::<String>();
        *sync::lock(&local.ingest_tx) = Some(tx);
        let weak = Arc::downgrade(&local);
        spawn("twin-ingest", move || ingest_worker(weak, rx))?;
        let weak = Arc::downgrade(&local);
        spawn("twin-dataset", move || dataset_worker(weak))?;
        local.models.check();
        // The gallery loads in the background: the server answers at once.
        let gallery = local.gallery.clone();
        spawn("twin-gallery", move || gallery.warm())?;
        let weak = Arc::downgrade(&local);
        let poll = config.model_poll;
        spawn("twin-models", move || loop {
            std::thread::sleep(poll);
            let Some(l) = weak.upgrade() else { return };
            l.gallery.refresh_if_moved();
            l.models.check();
        })?;
        for s in local.ingest.pending()? {
            match s.state {
                EnrollmentState::Uploaded => local.notify(&s.upload_id),
                _ => local.ingest.resume(&s)?,
            }
        }
        Ok(local)
    }

    /// Opens the data folder without workers (one-shot commands run their steps inline).
    pub fn open_inline(config: &LocalConfig) -> Result<Arc<Local>> {
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(&config.data_dir)?);
        let queue = Arc::new(InProcessQueue::new(QUEUE_VISIBILITY));
        let engines = Engines::open(&config.models_dir, config.threads)?;
        let videos = Arc::new(Engines::videos(&config.models_dir)?);
        let writer = Arc::new(DatasetWriter::new(store.clone()));
        // A format-1 folder is migrated, and an erasure a crash interrupted is compacted.
        if let Some(c) = writer.compact_if_needed()? {
            tracing::info!(
                version = c.version,
                deleted = c.deleted,
                "dataset compacted on opening"
            );
        }
        let gallery = Arc::new(GalleryView::open(store.clone()));
        let models = Arc::new(ModelServing::new(
            store.clone(),
            engines.backbone.clone(),
            config.threads,
        ));
        Ok(Arc::new(Local {
            matching: Arc::new(Matching::new(
                engines.photos.clone(),
                models.clone(),
                gallery.clone(),
            )),
            enrollments: Arc::new(Enrollments::new(store.clone(), Some(gallery.clone()))),
            ingest: Arc::new(Ingest::new(
                store.clone(),
                queue.clone(),
                engines.photos.clone(),
                videos,
                engines.backbone.clone(),
            )),
            dataset: Arc::new(DatasetStep::new(
                store.clone(),
                engines.backbone.clone(),
                writer.clone(),
                Some(gallery.clone()),
            )),
            erasure: Arc::new(Erasure::new(
                store.clone(),
                writer.clone(),
                gallery.clone(),
                models.clone(),
                engines.backbone.dim(),
            )),
            import: Arc::new(Import::new(
                store.clone(),
                engines.photos,
                engines.backbone,
                writer,
                gallery.clone(),
            )),
            models,
            gallery,
            store,
            queue,
            ingest_tx: Mutex::new(None),
        }))
    }

    /// The data folder's store (for tests and tools).
    pub fn store(&self) -> &dyn ObjectStore {
        &*self.store
    }

    /// Hands an uploaded enrollment to the ingest worker.
    fn notify(&self, upload_id: &str) {
        if let Some(tx) = sync::lock(&self.ingest_tx).as_ref() {
            let _ = tx.send(upload_id.to_string());
        }
    }

    fn has_workers(&self) -> bool {
        sync::lock(&self.ingest_tx).is_some()
    }

    /// Enrolls a file in one call (`twin enroll`): the same steps as the server.
    pub fn enroll_file(
        &self,
        name: &str,
        join: Option<&str>,
        path: &Path,
    ) -> Result<EnrollmentStatus> {
        let media = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(Media::from_file_name)
            .ok_or_else(|| {
                Error::UnsupportedMedia(format!(
                    "{} is not {}",
                    path.display(),
                    twin_core::media::ACCEPTED
                ))
            })?;
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::BadInput(format!("cannot read {}: {e}", path.display())))?;
        if meta.len() > media.limit() as u64 {
            return Err(Error::TooLarge(format!("{} is too large", path.display())));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| Error::BadInput(format!("cannot read {}: {e}", path.display())))?;
        let e = self.enrollments.create(name, join)?;
        self.receive(&e.upload_id, media.mime(), &bytes)
    }

    /// Finishes, here and now, enrollments a previous run left between steps (one-shot
    /// commands). Returns the dataset version current afterwards.
    pub fn resume_inline(&self) -> Result<u64> {
        for s in self.ingest.pending()? {
            self.ingest.resume(&s)?;
        }
        self.dataset.drain(&*self.queue)
    }

    /// Waits until no enrollment is between steps (tests and one-shot commands).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let pending = enrollment::list_statuses(&*self.store)
                .unwrap_or_default()
                .iter()
                .any(|s| s.state.is_pending());
            if !pending && self.queue.is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl UploadReceiver for Local {
    /// Stores the upload, then ingests it in the background (with workers) or here and now.
    fn receive(
        &self,
        upload_id: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<EnrollmentStatus> {
        let status = self
            .enrollments
            .store_upload(upload_id, content_type, bytes)?;
        if self.has_workers() {
            self.notify(upload_id);
            return Ok(status);
        }
        self.ingest.run(upload_id)?;
        self.dataset.drain(&*self.queue)?;
        self.enrollments.status(upload_id)
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(Error::internal)
}

fn ingest_worker(local: Weak<Local>, rx: mpsc::Receiver<String>) {
    while let Ok(id) = rx.recv() {
        let Some(local) = local.upgrade() else { return };
        let span = tracing::info_span!("ingest", upload_id = %id);
        let _e = span.enter();
        // A failure a retry may fix (the store or the queue) is tried again, as an upload
        // event is delivered again in AWS; the enrollment fails only after the last try.
        let mut result = local.ingest.run(&id);
        for wait in INGEST_RETRIES {
            if result.is_ok() {
                break;
            }
            std::thread::sleep(*wait);
            result = local.ingest.run(&id);
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "ingest failed");
            // Only an upload whose faces were not cut fails here; a `cropped` one may have sent
            // its message already (the next opening of the folder sends it again).
            if let Ok(s) = local.enrollments.status(&id) {
                if s.state == EnrollmentState::Uploaded {
                    let _ = local
                        .ingest
                        .fail(s, "the upload could not be processed; try again".into());
                }
            }
        }
    }
}

fn dataset_worker(local: Weak<Local>) {
    loop {
        let Some(l) = local.upgrade() else { return };
        let queue = l.queue.clone();
        drop(l);
        let batch = match queue.receive(DATASET_BATCH, Duration::from_millis(500)) {
            Ok(b) => b,
            Err(_) => continue,
        };
        if batch.is_empty() {
            continue;
        }
        let Some(l) = local.upgrade() else { return };
        if let Err(e) = l.dataset.apply_received(&*queue, &batch) {
            // Unacknowledged messages come back after the visibility timeout.
            tracing::error!(error = %e, "dataset step failed");
        }
    }
}
