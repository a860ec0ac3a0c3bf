//! The whole system on one machine: ingest → queue → dataset → gallery, behind one API.
//!
//! [`System`] is what `twin` commands and `twin serve` run: the same steps the Lambda functions
//! run in AWS, on a [`LocalStore`] under a data folder and an [`InProcessQueue`]. An enrollment
//! goes `created → uploaded → cropped → indexed` (or `failed` with the reason), each state
//! recorded in `status/<upload-id>.json` before the next step starts, so a process killed in
//! the middle picks the work up again when it is next opened.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use image::RgbImage;
use serde::Serialize;

use twin_core::dataset::{self, DatasetError, Update};
use twin_model::embed::{ChipBatch, EmbedError, Embedder, EmbedderOptions};
use twin_faces::enroll::{
    enroll_video, video_pipeline_options, ChipEmbedder, EnrollError, EnrollOptions,
};
use twin_faces::pipeline::{cut_chip, FacePipeline, PipelineError, PipelineOptions};
use twin_core::gallery::{Gallery, Hit};
use crate::hfparquet::HfDataset;
use twin_faces::imageio::{self, ImageError};
use twin_core::keys;
use twin_core::messages::{IngestMessage, TrainRequest, MESSAGE_VERSION};
use twin_model::models;
use twin_core::queue::{InProcessQueue, Queue};
use crate::steps;
pub use twin_core::enrollment::EnrollmentStatus;
use twin_core::enrollment::{self, StepError};
use twin_core::store::{content_tag, Condition, LocalStore, ObjectStore, StoreError};

/// Largest photo accepted by `match` and photo enrollments.
pub const MAX_PHOTO_BYTES: usize = 10 * 1024 * 1024;
/// Largest enrollment video accepted.
pub const MAX_VIDEO_BYTES: usize = 50 * 1024 * 1024;
/// Most identities a match returns per face.
pub const MAX_K: usize = 20;
/// Ingest messages the dataset step takes at once.
const DATASET_BATCH: usize = 10;

/// Where the system keeps its data and finds its models.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// The data folder (the storage layout's keys live under it).
    pub data_dir: PathBuf,
    /// `vendor/models`: the backbone and the landmark model.
    pub models_dir: PathBuf,
    /// Threads ONNX Runtime may use.
    pub threads: usize,
    /// How often a serving system checks `models/CURRENT` for a new model.
    pub model_poll: Duration,
}

impl SystemConfig {
    /// A configuration with the default model polling (every [`DEFAULT_MODEL_POLL`]).
    pub fn new(data_dir: PathBuf, models_dir: PathBuf, threads: usize) -> Self {
        SystemConfig {
            data_dir,
            models_dir,
            threads,
            model_poll: DEFAULT_MODEL_POLL,
        }
    }
}

/// How often `models/CURRENT` is checked unless configured.
pub const DEFAULT_MODEL_POLL: Duration = Duration::from_secs(2);
/// Largest difference allowed between a new model's embedding and the backbone's on the
/// self-check chip (the composed graph runs the same backbone).
const SELF_CHECK_TOLERANCE: f32 = 1e-3;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// Not a supported image or video type.
    #[error("{0}")]
    UnsupportedMedia(String),
    /// Over a size limit.
    #[error("{0}")]
    TooLarge(String),
    /// No usable face.
    #[error("{0}")]
    NoFace(String),
    /// Damaged or undecodable input.
    #[error("{0}")]
    BadImage(String),
    /// Other bad input (a name, an id).
    #[error("{0}")]
    BadInput(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// Not in a state that allows it.
    #[error("{0}")]
    Conflict(String),
    /// Our fault; details go to the log, not to callers.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StepError> for SystemError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Malformed(m) => SystemError::BadInput(m),
            StepError::Conflict(m) => SystemError::Conflict(m),
            StepError::Failed(m) => SystemError::Internal(m),
        }
    }
}

impl From<StoreError> for SystemError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::PreconditionFailed(_) => SystemError::Conflict(e.to_string()),
            _ => SystemError::Internal(e.to_string()),
        }
    }
}
impl From<DatasetError> for SystemError {
    fn from(e: DatasetError) -> Self {
        SystemError::Internal(e.to_string())
    }
}
impl From<EmbedError> for SystemError {
    fn from(e: EmbedError) -> Self {
        SystemError::Internal(e.to_string())
    }
}
impl From<PipelineError> for SystemError {
    fn from(e: PipelineError) -> Self {
        SystemError::Internal(e.to_string())
    }
}
impl From<keys::NameError> for SystemError {
    fn from(e: keys::NameError) -> Self {
        SystemError::BadInput(e.to_string())
    }
}
impl From<ImageError> for SystemError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::UnknownFormat => {
                SystemError::UnsupportedMedia("not a JPEG, PNG or WebP image".into())
            }
            ImageError::TooManyBytes { .. } | ImageError::TooLarge { .. } => {
                SystemError::TooLarge(e.to_string())
            }
            ImageError::Io(_) => SystemError::Internal(e.to_string()),
            ImageError::Truncated(_) | ImageError::Decode(_) => SystemError::BadImage(format!(
                "the image could not be read ({e}); try another photo"
            )),
        }
    }
}

/// A face found in a match photo, with its closest identities.
#[derive(Debug, Clone, Serialize)]
pub struct MatchedFace {
    /// x, y, width, height in the photo.
    #[serde(rename = "box")]
    pub bbox: [i64; 4],
    /// The 5 landmarks.
    pub landmarks: [[i64; 2]; 5],
    /// Closest identities first.
    pub matches: Vec<Hit>,
}

/// The answer to "who do I look like?".
#[derive(Debug, Clone, Serialize)]
pub struct MatchResponse {
    /// The dataset version searched.
    pub dataset_version: u64,
    /// The model that answered: `backbone` (no trained model) or `model <n>`.
    pub model: String,
    /// The trained model version that answered, if any.
    pub model_version: Option<u64>,
    /// Photo width (after EXIF orientation).
    pub width: u32,
    /// Photo height.
    pub height: u32,
    /// Faces, largest first.
    pub faces: Vec<MatchedFace>,
}

/// A new enrollment.
#[derive(Debug, Clone, Serialize)]
pub struct Enrollment {
    /// Its id.
    pub upload_id: String,
    /// The identity's slug.
    pub slug: String,
    /// The identity's name.
    pub display_name: String,
}

/// One identity of the gallery.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityInfo {
    /// Its slug.
    pub slug: String,
    /// Its name.
    pub display_name: String,
    /// Number of crops.
    pub crops: usize,
    /// A crop to show.
    pub picture: Option<String>,
}

/// A page of the gallery.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityPage {
    /// Identities in all.
    pub total: usize,
    /// Index of the first on this page.
    pub offset: usize,
    /// This page.
    pub identities: Vec<IdentityInfo>,
}

/// The models serving.
#[derive(Debug, Clone, Serialize)]
pub struct ModelsInfo {
    /// The model answering matches: `backbone` or `model <n>`.
    pub current: String,
    /// The trained version answering matches, if any.
    pub serving_version: Option<u64>,
    /// The version `models/CURRENT` points at, if any.
    pub promoted_version: Option<u64>,
    /// The last model that failed to load, and why (the previous one kept serving).
    pub load_error: Option<ModelLoadError>,
    /// Trained versions, newest first (none until the training job runs).
    pub versions: Vec<models::ModelVersion>,
}

/// A model that could not be served.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelLoadError {
    /// The version `models/CURRENT` pointed at.
    pub version: u64,
    /// What went wrong.
    pub error: String,
}

/// The model answering matches.
struct Serving {
    /// The trained version (`None`: the backbone alone).
    version: Option<u64>,
    /// The `models/CURRENT` tag it was loaded for.
    tag: Option<String>,
    /// The composed model (`None`: the backbone).
    engine: Option<Embedder>,
    /// Column of each slug in `scores`.
    columns: HashMap<String, usize>,
}

impl Serving {
    /// The backbone alone.
    fn backbone() -> Self {
        Self::model(None, None, None, Vec::new())
    }

    fn model(
        version: Option<u64>,
        tag: Option<String>,
        engine: Option<Embedder>,
        labels: Vec<String>,
    ) -> Self {
        let columns = labels
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, i))
            .collect();
        Serving {
            version,
            tag,
            engine,
            columns,
        }
    }
}

/// Where model reloading stands.
#[derive(Default)]
struct ReloadState {
    /// The `models/CURRENT` tag that failed, with the error (not retried until it changes).
    failed: Option<(String, ModelLoadError)>,
}

/// What `import_folder` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    /// Identities added or already present.
    pub identities: usize,
    /// Identities skipped because an earlier run imported them.
    pub already_imported: usize,
    /// Images that gave a crop.
    pub imported: usize,
    /// Images rejected, by reason.
    pub rejected: BTreeMap<String, usize>,
    /// The dataset version at the end.
    pub dataset_version: u64,
}

/// The system. Cheap to share (`Arc`); every method blocks, so async hosts call them on a
/// blocking thread.
pub struct System {
    store: Arc<dyn ObjectStore>,
    /// Where ingest messages go (the in-process queue locally, SQS in AWS).
    queue: Arc<dyn Queue>,
    /// The in-process queue, when the system runs its own dataset worker.
    local_queue: Option<Arc<InProcessQueue>>,
    photos: FacePipeline,
    videos: FacePipeline,
    /// The backbone: embeds crops for the dataset (and faces when no model is promoted).
    embedder: Embedder,
    serving: RwLock<Arc<Serving>>,
    reload: Mutex<ReloadState>,
    model_poll: Duration,
    threads: usize,
    gallery: RwLock<Arc<Gallery>>,
    /// Identities being erased: never returned, even before the erase is committed.
    erasing: RwLock<HashSet<String>>,
    ingest_tx: Mutex<Option<mpsc::Sender<String>>>,
    /// Serialises dataset commits made by this process (other writers are handled by CAS).
    commit_lock: Mutex<()>,
}

impl System {
    /// Opens the data folder, loads the models and the current dataset, starts the ingest and
    /// dataset workers, and resumes enrollments a previous run left unfinished.
    pub fn open(config: SystemConfig) -> Result<Arc<System>, SystemError> {
        let sys = Self::open_local(&config)?;
        let (tx, rx) = mpsc::channel::<String>();
        *sys.ingest_tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
        let weak = Arc::downgrade(&sys);
        std::thread::Builder::new()
            .name("twin-ingest".into())
            .spawn(move || ingest_worker(weak, rx))
            .map_err(|e| SystemError::Internal(e.to_string()))?;
        let weak = Arc::downgrade(&sys);
        std::thread::Builder::new()
            .name("twin-dataset".into())
            .spawn(move || dataset_worker(weak))
            .map_err(|e| SystemError::Internal(e.to_string()))?;
        Self::start_model_watch(&sys)?;
        sys.resume()?;
        Ok(sys)
    }

    /// Loads the promoted model now, then checks `models/CURRENT` every `model_poll` on a
    /// background thread (off the request path) and swaps in a new model once it has loaded and
    /// passed its self-check.
    fn start_model_watch(sys: &Arc<System>) -> Result<(), SystemError> {
        sys.check_model();
        let weak = Arc::downgrade(sys);
        let poll = sys.model_poll;
        std::thread::Builder::new()
            .name("twin-models".into())
            .spawn(move || loop {
                std::thread::sleep(poll);
                let Some(s) = weak.upgrade() else { return };
                s.check_dataset();
                s.check_model();
            })
            .map(|_| ())
            .map_err(|e| SystemError::Internal(e.to_string()))
    }

    /// Opens without background workers (for one-shot commands that run steps inline).
    pub fn open_inline(config: SystemConfig) -> Result<Arc<System>, SystemError> {
        Self::open_local(&config)
    }

    /// Opens on another store and queue (S3 and SQS in AWS), without background workers: the
    /// hosts drive the steps ([`System::ingest_uploaded`], [`System::apply_ingest_messages`]).
    /// With `watch_models`, the gallery and the promoted model are loaded now and
    /// `models/CURRENT` and `dataset/CURRENT` are polled every `model_poll` (the api function);
    /// without, no gallery is loaded (the ingest function never matches). `config.data_dir` is
    /// not used.
    pub fn open_with(
        config: SystemConfig,
        store: Arc<dyn ObjectStore>,
        queue: Arc<dyn Queue>,
        watch_models: bool,
    ) -> Result<Arc<System>, SystemError> {
        // Only a host that answers matches needs the gallery (the ingest function does not).
        let sys = Self::open_inner(&config, store, queue, None, watch_models)?;
        if watch_models {
            Self::start_model_watch(&sys)?;
        }
        Ok(sys)
    }

    fn open_local(config: &SystemConfig) -> Result<Arc<System>, SystemError> {
        let store = Arc::new(LocalStore::open(&config.data_dir)?);
        let queue = Arc::new(InProcessQueue::new(Duration::from_secs(300)));
        Self::open_inner(config, store, queue.clone(), Some(queue), true)
    }

    fn open_inner(
        config: &SystemConfig,
        store: Arc<dyn ObjectStore>,
        queue: Arc<dyn Queue>,
        local_queue: Option<Arc<InProcessQueue>>,
        load_gallery: bool,
    ) -> Result<Arc<System>, SystemError> {
        let photos = FacePipeline::open(&config.models_dir, &PipelineOptions::default())?;
        let videos = FacePipeline::open(&config.models_dir, &video_pipeline_options())?;
        let model = config.models_dir.join(twin_model::paths::BACKBONE_FILE);
        let embedder = Embedder::open(
            &model,
            &EmbedderOptions {
                threads: config.threads,
            },
        )?;
        let gallery = match load_gallery
            .then(|| dataset::load_current(&*store))
            .transpose()?
        {
            Some(Some(s)) => Gallery::from_snapshot(s),
            _ => Gallery::default(),
        };
        Ok(Arc::new(System {
            store,
            queue,
            local_queue,
            photos,
            videos,
            embedder,
            serving: RwLock::new(Arc::new(Serving::backbone())),
            reload: Mutex::new(ReloadState::default()),
            model_poll: config.model_poll,
            threads: config.threads,
            gallery: RwLock::new(Arc::new(gallery)),
            erasing: RwLock::new(HashSet::new()),
            ingest_tx: Mutex::new(None),
            commit_lock: Mutex::new(()),
        }))
    }

    fn current_model(&self) -> Arc<Serving> {
        self.serving
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The trained model version answering matches (`None`: the backbone alone).
    pub fn serving_version(&self) -> Option<u64> {
        self.current_model().version
    }

    /// Checks `models/CURRENT` and, when it points somewhere new, loads that model, runs its
    /// self-check and swaps it in. A model that fails keeps the previous one serving; the failure
    /// is logged, reported by [`System::models`], and not retried until `CURRENT` changes.
    /// Returns the version serving afterwards.
    pub fn check_model(&self) -> Option<u64> {
        let serving = self.current_model();
        let pointer = match models::current(&*self.store) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read models/CURRENT; the serving model stays");
                return serving.version;
            }
        };
        let Some((version, tag)) = pointer else {
            if serving.version.is_some() {
                tracing::warn!("models/CURRENT was removed: matching with the backbone alone");
                self.swap_model(Serving::backbone());
            }
            return None;
        };
        if serving.tag.as_deref() == Some(tag.as_str()) {
            return serving.version;
        }
        {
            let st = self.reload.lock().unwrap_or_else(|p| p.into_inner());
            if st.failed.as_ref().is_some_and(|(t, _)| *t == tag) {
                return serving.version;
            }
        }
        let started = std::time::Instant::now();
        match self.load_model(version) {
            Ok((engine, labels)) => {
                self.swap_model(Serving::model(
                    Some(version),
                    Some(tag),
                    Some(engine),
                    labels,
                ));
                self.reload.lock().unwrap_or_else(|p| p.into_inner()).failed = None;
                tracing::info!(
                    version,
                    ms = started.elapsed().as_millis() as u64,
                    "model loaded and serving"
                );
                Some(version)
            }
            Err(error) => {
                tracing::error!(version, %error, serving = ?serving.version, "model failed to load; the previous model keeps serving");
                self.reload.lock().unwrap_or_else(|p| p.into_inner()).failed =
                    Some((tag, ModelLoadError { version, error }));
                serving.version
            }
        }
    }

    /// Reloads the gallery when `dataset/CURRENT` moved (another process committed).
    fn check_dataset(&self) {
        let current = match self.store.get(twin_core::keys::DATASET_CURRENT) {
            Ok(Some(o)) => String::from_utf8_lossy(&o.data).trim().parse::<u64>().ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read dataset/CURRENT");
                return;
            }
        };
        if current.is_some_and(|v| v != self.current_gallery().version()) {
            if let Err(e) = self.refresh_gallery() {
                tracing::error!(error = %e, "cannot load the new dataset version");
            }
        }
    }

    fn swap_model(&self, s: Serving) {
        *self.serving.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }

    /// Loads model `n` and checks it: its `embedding` must equal the backbone's on a test chip,
    /// and its `scores` must be finite, one per label.
    fn load_model(&self, n: u64) -> Result<(Embedder, Vec<String>), String> {
        let labels = models::read_labels(&*self.store, n).map_err(|e| e.to_string())?;
        let bytes = self
            .store
            .get(&models::model_key(n))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{} is missing", models::model_key(n)))?;
        let engine = Embedder::from_bytes(
            Path::new(&models::model_key(n)),
            &bytes.data,
            &EmbedderOptions {
                threads: self.threads,
            },
        )
        .map_err(|e| e.to_string())?;
        if engine.classes() != Some(labels.labels.len()) {
            return Err(format!(
                "the model has {:?} score columns but labels.json lists {} identities",
                engine.classes(),
                labels.labels.len()
            ));
        }
        let mut batch = ChipBatch::with_capacity(1);
        batch.push(&self_check_chip()).map_err(|e| e.to_string())?;
        let out = engine.embed_scored(&batch).map_err(|e| e.to_string())?;
        let reference = self.embedder.embed(&batch).map_err(|e| e.to_string())?;
        let diff = out
            .embeddings
            .data
            .iter()
            .zip(&reference.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        if out.embeddings.dim != reference.dim || !(diff <= SELF_CHECK_TOLERANCE) {
            return Err(format!(
                "self-check failed: its embedding differs from the backbone's by {diff}"
            ));
        }
        let scores = out.scores.unwrap_or_default();
        if scores.len() != labels.labels.len() || scores.iter().any(|v| !v.is_finite()) {
            return Err("self-check failed: its scores are not finite".into());
        }
        let slugs: Vec<String> = labels.labels.into_iter().map(|l| l.slug).collect();
        if slugs.iter().collect::<HashSet<_>>().len() != slugs.len() {
            return Err("labels.json names an identity twice".into());
        }
        Ok((engine, slugs))
    }

    /// The object store (for tests and tools).
    pub fn store(&self) -> &dyn ObjectStore {
        &*self.store
    }

    fn current_gallery(&self) -> Arc<Gallery> {
        self.gallery
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refresh_gallery(&self) -> Result<u64, SystemError> {
        let g = match dataset::load_current(&*self.store)? {
            Some(s) => Gallery::from_snapshot(s),
            None => Gallery::default(),
        };
        let v = g.version();
        *self.gallery.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(g);
        Ok(v)
    }

    /// The identities closest to each face in a photo.
    pub fn match_photo(&self, image: &[u8], k: usize) -> Result<MatchResponse, SystemError> {
        if image.len() > MAX_PHOTO_BYTES {
            return Err(SystemError::TooLarge(format!(
                "the photo is {} bytes; at most {MAX_PHOTO_BYTES} are accepted",
                image.len()
            )));
        }
        let img = imageio::decode(image, &photo_limits())?;
        let faces = self.photos.find_faces_with(&img, false)?;
        if faces.is_empty() {
            return Err(SystemError::NoFace(
                "No face was found in this photo. Use a photo where a face is clearly visible, facing the camera, and not too small.".into(),
            ));
        }
        let mut batch = ChipBatch::with_capacity(faces.len());
        for f in &faces {
            batch
                .push(&cut_chip(&img, f))
                .map_err(|e| SystemError::Internal(e.to_string()))?;
        }
        let serving = self.current_model();
        let (emb, scores) = match &serving.engine {
            Some(engine) => {
                let out = engine.embed_scored(&batch)?;
                (out.embeddings, out.scores)
            }
            None => (self.embedder.embed(&batch)?, None),
        };
        let gallery = self.current_gallery();
        let erasing = self
            .erasing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let k = k.clamp(1, MAX_K);
        let faces = faces
            .iter()
            .enumerate()
            .map(|(i, f)| {
                // Erased identities are never returned, even while the head still has them:
                // the gallery only holds identities of the current dataset version.
                let excluded = |slug: &str| erasing.contains(slug);
                let matches = match &scores {
                    Some(sc) => {
                        let c = serving.columns.len();
                        let row = &sc[i * c..(i + 1) * c];
                        let head = |slug: &str| serving.columns.get(slug).map(|&c| row[c]);
                        gallery.search_with_head(emb.row(i), k, &excluded, Some(&head))
                    }
                    None => gallery.search(emb.row(i), k, &excluded),
                };
                MatchedFace {
                    bbox: f.bbox,
                    landmarks: f.landmarks.map(|p| [p.x, p.y]),
                    matches,
                }
            })
            .collect();
        Ok(MatchResponse {
            dataset_version: gallery.version(),
            model: model_name(serving.version),
            model_version: serving.version,
            width: img.width(),
            height: img.height(),
            faces,
        })
    }

    /// Starts an enrollment for `name`: the upload comes next ([`System::upload_enrollment`]).
    ///
    /// A new enrollment is a new person: when the name's slug is already someone's (in the
    /// gallery, or an enrollment with stored uploads or crops), it gets the next free one
    /// (`barack_obama_2`), so "barack-OBAMA!" no longer folds into Barack Obama. More videos of
    /// a person already in the gallery go to `join` (their slug), which keeps their name.
    pub fn create_enrollment(
        &self,
        name: &str,
        join: Option<&str>,
    ) -> Result<Enrollment, SystemError> {
        let mut display_name = keys::display_name(name)?;
        let manifest = dataset::load_current_manifest(&*self.store)?;
        let slug = match join {
            Some(slug) => {
                let known = manifest
                    .as_ref()
                    .and_then(|m| m.identity(slug))
                    .ok_or_else(|| {
                        SystemError::NotFound(format!("there is no person {slug:?} to join"))
                    })?;
                display_name = known.display_name.clone();
                slug.to_string()
            }
            None => self.free_slug(&keys::slugify(&display_name), manifest.as_ref())?,
        };
        let upload_id = keys::new_upload_id();
        let status = EnrollmentStatus {
            upload_id: upload_id.clone(),
            slug: slug.clone(),
            display_name: display_name.clone(),
            state: "created".into(),
            ..Default::default()
        };
        self.save_status(&status, Condition::IfAbsent)?;
        Ok(Enrollment {
            upload_id,
            slug,
            display_name,
        })
    }

    /// `base`, or `base_2`, `base_3`, … : the first slug that is nobody's yet.
    fn free_slug(
        &self,
        base: &str,
        manifest: Option<&dataset::Manifest>,
    ) -> Result<String, SystemError> {
        keys::check_slug(base)?;
        for n in 1..=999u32 {
            let slug = if n == 1 {
                base.to_string()
            } else {
                let suffix = format!("_{n}");
                let mut head = base.to_string();
                head.truncate(keys::MAX_SLUG - suffix.len());
                format!("{}{suffix}", head.trim_end_matches('_'))
            };
            let in_gallery = manifest.is_some_and(|m| m.identity(&slug).is_some());
            if in_gallery
                || !self.store.list(&format!("uploads/{slug}/"))?.is_empty()
                || !self.store.list(&format!("crops/{slug}/"))?.is_empty()
            {
                continue;
            }
            return Ok(slug);
        }
        Err(SystemError::Conflict(format!(
            "too many people are named like {base:?}"
        )))
    }

    /// Stores an enrollment's video or photo and starts cutting faces in the background.
    pub fn upload_enrollment(
        &self,
        upload_id: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<EnrollmentStatus, SystemError> {
        let mut status = self.enrollment_status(upload_id)?;
        if status.state != "created" {
            return Err(SystemError::Conflict(format!(
                "enrollment {upload_id} already has its upload ({})",
                status.state
            )));
        }
        let ext = extension_for(content_type).ok_or_else(|| {
            SystemError::UnsupportedMedia(format!(
                "{content_type:?} is not accepted: send a video (mp4, mov, webm) or a photo (jpeg, png, webp)"
            ))
        })?;
        let limit = upload_limit(ext);
        if bytes.len() > limit {
            return Err(SystemError::TooLarge(too_large_message(
                bytes.len() as u64,
                limit,
            )));
        }
        if bytes.is_empty() {
            return Err(SystemError::BadImage("the upload is empty".into()));
        }
        let key = keys::upload_key(&status.slug, upload_id, ext)?;
        self.store.put(&key, bytes, Condition::None)?;
        status.state = "uploaded".into();
        status.source_key = Some(key);
        self.save_status(&status, Condition::None)?;
        let tx = self
            .ingest_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match tx {
            Some(tx) => {
                let _ = tx.send(upload_id.to_string());
            }
            None => {
                // No workers (a one-shot command): run the steps here.
                self.ingest(upload_id)?;
                self.process_queue()?;
                status = self.enrollment_status(upload_id)?;
            }
        }
        Ok(status)
    }

    /// Enrolls a file in one call (the `twin enroll` command): same steps as the server.
    pub fn enroll_file(
        &self,
        name: &str,
        join: Option<&str>,
        path: &Path,
    ) -> Result<EnrollmentStatus, SystemError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let content_type = match ext.as_str() {
            "mp4" | "m4v" => "video/mp4",
            "mov" => "video/quicktime",
            "webm" => "video/webm",
            "jpg" | "jpeg" => "image/jpeg",
            "png" => "image/png",
            "webp" => "image/webp",
            _ => {
                return Err(SystemError::UnsupportedMedia(format!(
                    "{} is not a video (mp4, mov, webm) or a photo (jpeg, png, webp)",
                    path.display()
                )))
            }
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| SystemError::BadInput(format!("cannot read {}: {e}", path.display())))?;
        if meta.len() as usize > MAX_VIDEO_BYTES {
            return Err(SystemError::TooLarge(format!(
                "{} is too large",
                path.display()
            )));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| SystemError::BadInput(format!("cannot read {}: {e}", path.display())))?;
        let e = self.create_enrollment(name, join)?;
        self.upload_enrollment(&e.upload_id, content_type, &bytes)
    }

    /// The status of an enrollment.
    pub fn enrollment_status(&self, upload_id: &str) -> Result<EnrollmentStatus, SystemError> {
        enrollment::read_status(&*self.store, upload_id)?
            .ok_or_else(|| SystemError::NotFound(format!("no enrollment {upload_id:?}")))
    }

    /// [`System::enrollment_status`] for someone waiting to be matched: when it says `indexed`
    /// in a dataset version newer than the gallery this process serves, the gallery is
    /// reloaded first, so "you can be matched now" is true here at once instead of after the
    /// next poll of `dataset/CURRENT`.
    pub fn enrollment_status_fresh(
        &self,
        upload_id: &str,
    ) -> Result<EnrollmentStatus, SystemError> {
        let status = self.enrollment_status(upload_id)?;
        let serving = self.current_gallery().version();
        if status.state == "indexed" && status.dataset_version.is_some_and(|v| v > serving) {
            self.refresh_gallery()?;
        }
        Ok(status)
    }

    fn save_status(&self, s: &EnrollmentStatus, cond: Condition) -> Result<(), SystemError> {
        Ok(enrollment::save_status(&*self.store, s, cond)?)
    }

    fn fail(&self, mut s: EnrollmentStatus, message: String) -> Result<(), SystemError> {
        tracing::warn!(upload_id = %s.upload_id, reason = %message, "enrollment failed");
        s.state = "failed".into();
        s.error = Some(message);
        self.save_status(&s, Condition::None)
    }

    /// Cuts the faces of an uploaded enrollment, stores the crops and queues the message.
    fn ingest(&self, upload_id: &str) -> Result<(), SystemError> {
        let mut status = self.enrollment_status(upload_id)?;
        if status.state != "uploaded" {
            return Ok(()); // done already (a repeated event)
        }
        let Some(key) = status.source_key.clone() else {
            return self.fail(status, "the upload is missing".into());
        };
        let Some(obj) = self.store.get(&key)? else {
            return self.fail(status, "the upload is missing".into());
        };
        // Not a known type: read as a photo, which then fails to decode with its reason.
        let ext = upload_extension(&key).unwrap_or("");
        let limit = upload_limit(ext);
        if obj.data.len() > limit {
            return self.fail(status, too_large_message(obj.data.len() as u64, limit));
        }
        let mut chips: Vec<(u64, RgbImage)> = Vec::new();
        let mut rejected: BTreeMap<String, u32> = BTreeMap::new();
        if is_video(ext) {
            let tmp = tempfile::Builder::new()
                .suffix(&format!(".{ext}"))
                .tempfile()
                .map_err(|e| SystemError::Internal(e.to_string()))?;
            std::fs::write(tmp.path(), &obj.data)
                .map_err(|e| SystemError::Internal(e.to_string()))?;
            let report = match enroll_video(
                tmp.path(),
                &self.videos,
                Some(&self.embedder),
                &EnrollOptions::default(),
            ) {
                Ok(r) => r,
                Err(EnrollError::Video(e)) => {
                    return self.fail(status, format!("the video could not be used: {e}"))
                }
                Err(e @ EnrollError::NotEnoughFrames { .. }) => {
                    // The counts stay with the failure: the advice is made from them.
                    if let EnrollError::NotEnoughFrames {
                        kept,
                        frames_sampled,
                        rejected_by_reason,
                        ..
                    } = &e
                    {
                        status.frames_sampled = Some(*frames_sampled as u32);
                        status.kept = Some(*kept as u32);
                        status.rejected = rejected_by_reason
                            .iter()
                            .map(|(r, n)| (r.to_string(), *n as u32))
                            .collect();
                    }
                    return self.fail(status, e.to_string());
                }
                Err(e) => return Err(SystemError::Internal(e.to_string())),
            };
            for (r, n) in &report.rejected_by_reason {
                rejected.insert(r.to_string(), *n as u32);
            }
            status.frames_sampled = Some(report.frames_sampled as u32);
            status.turned_left = Some(report.turned_left);
            status.turned_right = Some(report.turned_right);
            chips = report.kept.into_iter().map(|k| (k.ms, k.chip)).collect();
        } else {
            let img = match imageio::decode(&obj.data, &photo_limits()) {
                Ok(i) => i,
                Err(e) => return self.fail(status, SystemError::from(e).to_string()),
            };
            let faces = self.photos.find_faces(&img)?;
            match faces.first() {
                Some(f) => chips.push((0, cut_chip(&img, f))),
                None => return self.fail(status, "no face was found in the photo".into()),
            }
            status.frames_sampled = Some(1);
        }
        let mut crops = Vec::with_capacity(chips.len());
        for (ms, chip) in &chips {
            let key = keys::crop_key(&status.slug, upload_id, *ms)?;
            self.store.put(&key, &encode_png(chip)?, Condition::None)?;
            crops.push(key);
        }
        status.kept = Some(crops.len() as u32);
        status.rejected = rejected;
        status.crops = crops;
        status.state = "cropped".into();
        status.queued = false;
        self.save_status(&status, Condition::None)?;
        self.send_pending(status)
    }

    /// The outbox: sends the dataset step's message of a `cropped` enrollment whose message is
    /// not known to be sent, then records that it was. A failed send fails the call (the event
    /// is redelivered and comes back here); a send whose record fails is sent again on
    /// redelivery, which the dataset step takes as a no-op.
    /// The record is written only if unchanged since it was read, so a dataset step that
    /// marked it `indexed` meanwhile is never undone.
    fn send_pending(&self, status: EnrollmentStatus) -> Result<(), SystemError> {
        let key = keys::status_key(&status.upload_id)?;
        let Some(stored) = self.store.get(&key)? else {
            return Ok(());
        };
        let Ok(mut current) = serde_json::from_slice::<EnrollmentStatus>(&stored.data) else {
            return Ok(());
        };
        if current.state != "cropped" || current.queued {
            return Ok(());
        }
        self.queue
            .send(&ingest_message(&current).to_json())
            .map_err(|e| SystemError::Internal(format!("cannot queue the crops: {e}")))?;
        current.queued = true;
        match self.save_status(&current, Condition::IfMatch(stored.tag)) {
            Ok(()) | Err(SystemError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Embeddings of aligned chips, in order (batched by the engine's trait impl).
    fn embed_chips(&self, chips: &[RgbImage]) -> Result<Vec<Vec<f32>>, SystemError> {
        let refs: Vec<&RgbImage> = chips.iter().collect();
        Ok(ChipEmbedder::embed_chips(&self.embedder, &refs)?)
    }

    /// Runs the dataset step on every queued message (one-shot commands; the server's worker
    /// does this continuously). Returns the dataset version now current.
    pub fn process_queue(&self) -> Result<u64, SystemError> {
        loop {
            let batch = self
                .queue
                .receive(DATASET_BATCH, Duration::ZERO)
                .map_err(|e| SystemError::Internal(e.to_string()))?;
            if batch.is_empty() {
                return Ok(self.current_gallery().version());
            }
            self.dataset_step(&batch)?;
        }
    }

    /// Embeds the crops of a batch of ingest messages and commits one dataset version
    /// (the local dataset worker): malformed messages are dropped, the others acknowledged once
    /// committed.
    fn dataset_step(&self, batch: &[twin_core::queue::Received]) -> Result<(), SystemError> {
        let bodies: Vec<&str> = batch.iter().map(|r| r.body.as_str()).collect();
        let results = self.apply_ingest_messages(&bodies);
        let mut first_error = None;
        for (r, result) in batch.iter().zip(results) {
            match result {
                Ok(()) => {
                    let _ = self.queue.ack(r.receipt);
                }
                Err(SystemError::BadInput(e)) => {
                    tracing::error!(receipt = r.receipt, error = %e, "unusable ingest message dropped");
                    let _ = self.queue.ack(r.receipt);
                }
                Err(e) => {
                    // Left unacknowledged: it comes back after the visibility timeout.
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The dataset step for a batch of ingest message bodies (see
    /// [`steps::apply_ingest_messages`]); the gallery is reloaded when a version is committed.
    /// `BadInput` marks a message that can never succeed (malformed).
    pub fn apply_ingest_messages(&self, bodies: &[&str]) -> Vec<Result<(), SystemError>> {
        let (results, version) = steps::apply_ingest_messages(
            &*self.store,
            &self.embedder,
            bodies,
            Some(&self.commit_lock),
        );
        if version.is_some() {
            if let Err(e) = self.refresh_gallery() {
                tracing::error!(error = %e, "cannot reload the gallery");
            }
        }
        results
            .into_iter()
            .map(|r| r.map_err(SystemError::from))
            .collect()
    }

    /// Takes an object stored under `uploads/<folder>/<file>` (an S3 upload event; `tag` is its
    /// ETag) through ingest: an enrollment's presigned upload (`uploads/<slug>/<upload-id>.<ext>`
    /// of a `created` enrollment), or any file dropped in a person's folder (the drop folder:
    /// the folder names the person, e.g. `uploads/ada_lovelace/clip.mp4`). The same object
    /// always gets the same upload id, so a repeated event changes nothing. An object that
    /// cannot be used ends `failed` with the reason (and is not an error: retrying cannot help).
    /// `size` (from the event), when over the limits, fails the upload without reading it.
    pub fn ingest_uploaded(
        &self,
        key: &str,
        tag: &str,
        size: Option<u64>,
    ) -> Result<EnrollmentStatus, SystemError> {
        let too_large = size.filter(|&n| n > MAX_VIDEO_BYTES as u64);
        if let (Some(n), Err(_)) = (too_large, twin_core::store::check_key(key)) {
            return Err(SystemError::TooLarge(format!(
                "an upload of {n} bytes with an unusable name was left alone"
            )));
        }
        twin_core::store::check_key(key).map_err(|e| SystemError::BadInput(e.to_string()))?;
        let rest = key
            .strip_prefix("uploads/")
            .ok_or_else(|| SystemError::BadInput(format!("{key} is not under uploads/")))?;
        let (folder, file) = rest
            .split_once('/')
            .filter(|(_, f)| !f.contains('/'))
            .ok_or_else(|| {
                SystemError::BadInput(format!("{key} is not uploads/<person>/<file>"))
            })?;
        // A presigned enrollment upload.
        if let Some((id, _)) = file.rsplit_once('.') {
            if keys::check_upload_id(id).is_ok() {
                if let Ok(mut st) = self.enrollment_status(id) {
                    if st.slug == folder && st.source_key.as_deref().is_none_or(|k| k == key) {
                        match st.state.as_str() {
                            "created" => {
                                st.state = "uploaded".into();
                                st.source_key = Some(key.to_string());
                                self.save_status(&st, Condition::None)?;
                            }
                            "uploaded" => {}
                            "cropped" => {
                                self.send_pending(st)?;
                                return self.enrollment_status(id);
                            }
                            _ => return Ok(st),
                        }
                        if let Some(n) = too_large {
                            self.fail(st, too_large_message(n, MAX_VIDEO_BYTES))?;
                        } else {
                            self.ingest(id)?;
                        }
                        return self.enrollment_status(id);
                    }
                }
            }
        }
        // The drop folder.
        let (display_name, slug) = self.drop_identity(folder)?;
        let upload_id = format!("drop-{}", content_tag(format!("{key}\0{tag}").as_bytes()));
        if let Ok(st) = self.enrollment_status(&upload_id) {
            if st.state == "cropped" && !st.queued {
                self.send_pending(st)?;
                return self.enrollment_status(&upload_id);
            }
            if st.state != "uploaded" {
                return Ok(st);
            }
        } else {
            let mut st = EnrollmentStatus {
                upload_id: upload_id.clone(),
                slug,
                display_name,
                state: "uploaded".into(),
                source_key: Some(key.to_string()),
                ..Default::default()
            };
            // Refused from its name and size alone, without reading it.
            let refused = match upload_extension(file) {
                None => Some(format!(
                    "{file:?} is not a video (mp4, mov, webm) or a photo (jpeg, png, webp)"
                )),
                Some(ext) => size
                    .filter(|&n| n > upload_limit(ext) as u64)
                    .map(|n| too_large_message(n, upload_limit(ext))),
            };
            if let Some(reason) = refused {
                st.state = "failed".into();
                st.error = Some(reason);
            }
            match self.save_status(&st, Condition::IfAbsent) {
                Ok(()) | Err(SystemError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            if st.state == "failed" {
                return self.enrollment_status(&upload_id);
            }
        }
        self.ingest(&upload_id)?;
        self.enrollment_status(&upload_id)
    }

    /// The person a drop-folder name stands for: the gallery's name when the slug is known,
    /// else the folder name with `_` as spaces, each word capitalised.
    fn drop_identity(&self, folder: &str) -> Result<(String, String), SystemError> {
        let words: Vec<String> = folder
            .split(['_', ' ', '-'])
            .filter(|w| !w.is_empty())
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().chain(c).collect())
                    .unwrap_or_default()
            })
            .collect();
        let display_name = keys::display_name(&words.join(" "))?;
        let slug = keys::slugify(&display_name);
        keys::check_slug(&slug)?;
        let known = dataset::load_current_manifest(&*self.store)?
            .and_then(|m| m.identity(&slug).map(|i| i.display_name.clone()));
        Ok((known.unwrap_or(display_name), slug))
    }

    /// A train request when enough identities are new (see [`steps::train_due`]).
    pub fn train_due(&self, min_new: usize) -> Result<Option<TrainRequest>, SystemError> {
        Ok(steps::train_due(&*self.store, min_new)?)
    }

    /// Every readable enrollment status in the store (damaged records are skipped).
    fn stored_statuses(&self) -> Result<Vec<EnrollmentStatus>, SystemError> {
        let mut out = Vec::new();
        for key in self.store.list("status/")? {
            if let Some(obj) = self.store.get(&key)? {
                if let Ok(s) = serde_json::from_slice::<EnrollmentStatus>(&obj.data) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// Picks up enrollments a previous run left between steps.
    fn resume(&self) -> Result<(), SystemError> {
        for s in self.stored_statuses()? {
            match s.state.as_str() {
                "uploaded" => {
                    if let Some(tx) = self
                        .ingest_tx
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                    {
                        let _ = tx.send(s.upload_id.clone());
                    }
                }
                "cropped" => {
                    self.queue
                        .send(&ingest_message(&s).to_json())
                        .map_err(|e| SystemError::Internal(e.to_string()))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Finishes, here and now, enrollments a previous run left between steps (one-shot
    /// commands; the server resumes them in the background when it opens).
    pub fn resume_inline(&self) -> Result<u64, SystemError> {
        for s in self.stored_statuses()? {
            match s.state.as_str() {
                "uploaded" => self.ingest(&s.upload_id)?,
                "cropped" => self
                    .queue
                    .send(&ingest_message(&s).to_json())
                    .map_err(|e| SystemError::Internal(e.to_string()))?,
                _ => {}
            }
        }
        self.process_queue()
    }

    /// A page of the gallery, by slug.
    pub fn identities(&self, offset: usize, limit: usize) -> Result<IdentityPage, SystemError> {
        let manifest = dataset::load_current_manifest(&*self.store)?;
        let erasing = self
            .erasing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let all: Vec<IdentityInfo> = manifest
            .map(|m| m.identities)
            .unwrap_or_default()
            .into_iter()
            .filter(|i| !erasing.contains(&i.slug))
            .map(info)
            .collect();
        let total = all.len();
        let identities = all
            .into_iter()
            .skip(offset)
            .take(limit.clamp(1, 500))
            .collect();
        Ok(IdentityPage {
            total,
            offset,
            identities,
        })
    }

    /// One identity.
    pub fn identity(&self, slug: &str) -> Result<IdentityInfo, SystemError> {
        let not_found = || SystemError::NotFound(format!("no identity {slug:?} in the gallery"));
        keys::check_slug(slug).map_err(|_| not_found())?;
        if self
            .erasing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(slug)
        {
            return Err(not_found());
        }
        let manifest = dataset::load_current_manifest(&*self.store)?.ok_or_else(not_found)?;
        manifest
            .identity(slug)
            .cloned()
            .map(info)
            .ok_or_else(not_found)
    }

    /// Erases a person: their crops, uploads and embeddings. They are not matched from the
    /// moment this is called.
    pub fn delete_identity(&self, slug: &str) -> Result<(), SystemError> {
        let ident = self.identity(slug)?;
        self.erasing
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ident.slug.clone());
        let result = (|| {
            {
                let _g = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
                dataset::commit(
                    &*self.store,
                    self.embedder.dim(),
                    &[Update::Erase {
                        slug: slug.to_string(),
                    }],
                )?;
            }
            self.refresh_gallery()?;
            for prefix in [format!("crops/{slug}/"), format!("uploads/{slug}/")] {
                for k in self.store.list(&prefix)? {
                    self.store.delete(&k)?;
                }
            }
            for key in self.store.list("status/")? {
                if let Some(obj) = self.store.get(&key)? {
                    if let Ok(s) = serde_json::from_slice::<EnrollmentStatus>(&obj.data) {
                        if s.slug == slug {
                            self.store.delete(&key)?;
                        }
                    }
                }
            }
            Ok::<(), SystemError>(())
        })();
        self.erasing
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(slug);
        result
    }

    /// The PNG bytes of a crop.
    pub fn crop(&self, key: &str) -> Result<Vec<u8>, SystemError> {
        let nf = || SystemError::NotFound("no such picture".into());
        if !key.starts_with("crops/") || twin_core::store::check_key(key).is_err() {
            return Err(nf());
        }
        let slug = key.split('/').nth(1).unwrap_or("");
        if self
            .erasing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(slug)
        {
            return Err(nf());
        }
        Ok(self.store.get(key)?.ok_or_else(nf)?.data)
    }

    /// The models serving.
    pub fn models(&self) -> Result<ModelsInfo, SystemError> {
        let serving = self.current_model().version;
        let load_error = self
            .reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .as_ref()
            .map(|(_, e)| e.clone());
        Ok(ModelsInfo {
            current: model_name(serving),
            serving_version: serving,
            promoted_version: models::current(&*self.store)
                .map_err(model_error)?
                .map(|c| c.0),
            load_error,
            versions: models::list(&*self.store).map_err(model_error)?,
        })
    }

    /// Points `models/CURRENT` at version `n` (promotion or rollback) and loads it now; the
    /// answer says what serves afterwards (a model that fails to load leaves the previous one).
    pub fn promote_model(&self, n: u64) -> Result<ModelsInfo, SystemError> {
        models::promote(&*self.store, n).map_err(model_error)?;
        self.check_model();
        self.models()
    }

    /// Imports a folder with one sub-folder of photos per identity (tight face crops work).
    /// Each identity is committed on its own, so an interrupted import keeps what it finished
    /// and the next run skips it. `progress` is called after each image.
    pub fn import_folder(
        &self,
        dir: &Path,
        progress: &dyn Fn(usize, usize),
    ) -> Result<ImportSummary, SystemError> {
        let mut people: Vec<(String, Vec<PathBuf>)> = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| SystemError::BadInput(format!("cannot read {}: {e}", dir.display())))?;
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
                .map_err(|e| SystemError::BadInput(format!("cannot read {}: {e}", p.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    matches!(
                        f.extension()
                            .and_then(|x| x.to_str())
                            .map(str::to_ascii_lowercase)
                            .as_deref(),
                        Some("jpg" | "jpeg" | "png" | "webp")
                    )
                })
                .collect();
            files.sort();
            if !files.is_empty() {
                people.push((e.file_name().to_string_lossy().into_owned(), files));
            }
        }
        people.sort();
        let total: usize = people.iter().map(|p| p.1.len()).sum();
        let mut summary = ImportSummary::default();
        let mut done = 0;
        let applied = self.applied_uploads()?;
        for (folder, files) in people {
            let mut fingerprint = Vec::new();
            for f in &files {
                fingerprint.extend_from_slice(f.file_name().unwrap_or_default().as_encoded_bytes());
                fingerprint.extend_from_slice(
                    &std::fs::metadata(f)
                        .map(|m| m.len())
                        .unwrap_or(0)
                        .to_le_bytes(),
                );
            }
            let Some(mut person) = IdentityImport::begin(
                &folder,
                format!("import/{folder}"),
                &fingerprint,
                files.len(),
                &applied,
                &mut summary,
            )?
            else {
                done += files.len();
                progress(done, total);
                continue;
            };
            for f in &files {
                person.add(
                    self,
                    imageio::decode_file(f, &photo_limits()).map_err(|e| reject_reason(&e)),
                    &mut summary,
                )?;
                done += 1;
                progress(done, total);
            }
            person.finish(self, &mut summary)?;
        }
        summary.dataset_version = self.refresh_gallery()?;
        Ok(summary)
    }

    /// Imports a Hugging Face image-classification dataset stored as parquet (see
    /// [`crate::hfparquet`]): the rows are grouped by label, one identity per label, with the same
    /// per-identity import as [`System::import_folder`]. Reads one row group at a time (twice:
    /// once to group the rows, once to import them); an identity is committed as soon as its
    /// last row is read, so a dataset sorted by label holds one identity's chips at a time.
    pub fn import_parquet(
        &self,
        file: &Path,
        progress: &dyn Fn(usize, usize),
    ) -> Result<ImportSummary, SystemError> {
        let ds = HfDataset::open(file).map_err(|e| SystemError::BadInput(e.to_string()))?;
        let read = |g: usize| {
            ds.row_group(g)
                .map_err(|e| SystemError::BadInput(e.to_string()))
        };
        let file_name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let total = ds.num_rows();
        let mut summary = ImportSummary::default();
        let mut done = 0;

        // Pass 1: rows per label and a fingerprint of their content.
        let mut labels: BTreeMap<String, (usize, Vec<u8>)> = BTreeMap::new();
        let mut row_index = 0u64;
        for g in 0..ds.num_row_groups() {
            for row in read(g)? {
                if let Some(label) = &row.label {
                    let (count, fp) = labels.entry(label.clone()).or_default();
                    *count += 1;
                    fp.extend_from_slice(&row_index.to_le_bytes());
                    match &row.image {
                        Ok(bytes) => fp.extend_from_slice(content_tag(bytes).as_bytes()),
                        Err(reason) => fp.extend_from_slice(reason.as_bytes()),
                    }
                }
                row_index += 1;
            }
        }

        let applied = self.applied_uploads()?;
        // The identities being imported (`None`: skipped), and rows still to come for each.
        let mut people: BTreeMap<String, (Option<IdentityImport>, usize)> = BTreeMap::new();
        for (label, (count, fp)) in &labels {
            let person = IdentityImport::begin(
                label,
                format!("import/{file_name}/{label}"),
                fp,
                *count,
                &applied,
                &mut summary,
            )?;
            people.insert(label.clone(), (person, *count));
        }
        drop(labels);

        // Pass 2: the import.
        for g in 0..ds.num_row_groups() {
            for row in read(g)? {
                done += 1;
                let Some(label) = row.label else {
                    *summary.rejected.entry("no label".into()).or_default() += 1;
                    progress(done, total);
                    continue;
                };
                let Some((person, left)) = people.get_mut(&label) else {
                    // The file changed between the passes.
                    return Err(SystemError::BadInput(format!(
                        "{} changed while it was imported",
                        file.display()
                    )));
                };
                if let Some(p) = person.as_mut() {
                    let img = row.image.and_then(|b| {
                        imageio::decode(&b, &photo_limits()).map_err(|e| reject_reason(&e))
                    });
                    p.add(self, img, &mut summary)?;
                }
                *left -= 1;
                if *left == 0 {
                    if let Some(p) = person.take() {
                        p.finish(self, &mut summary)?;
                    }
                }
                progress(done, total);
            }
        }
        summary.dataset_version = self.refresh_gallery()?;
        Ok(summary)
    }

    /// The uploads the current dataset version includes.
    fn applied_uploads(&self) -> Result<BTreeSet<String>, SystemError> {
        Ok(dataset::load_current_manifest(&*self.store)?
            .map(|m| m.applied_uploads)
            .unwrap_or_default())
    }

    /// The embedding of the largest face in a photo file, or `None` when it shows no face.
    pub fn embed_photo_file(&self, path: &Path) -> Result<Option<Vec<f32>>, SystemError> {
        let img = imageio::decode_file(path, &photo_limits())?;
        let faces = self.photos.find_faces(&img)?;
        let Some(face) = faces.first() else {
            return Ok(None);
        };
        let mut b = ChipBatch::with_capacity(1);
        b.push(&cut_chip(&img, face))
            .map_err(|e| SystemError::Internal(e.to_string()))?;
        Ok(Some(self.embedder.embed(&b)?.row(0).to_vec()))
    }

    /// Waits until no enrollment is between steps (tests and one-shot commands).
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            let pending = self
                .stored_statuses()
                .unwrap_or_default()
                .iter()
                .any(|s| s.state == "uploaded" || s.state == "cropped");
            if !pending && self.local_queue.as_ref().is_none_or(|q| q.is_empty()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

fn too_large_message(n: u64, limit: usize) -> String {
    format!("the upload is {n} bytes; at most {limit} are accepted")
}

fn model_name(version: Option<u64>) -> String {
    match version {
        Some(n) => format!("model {n}"),
        None => "backbone".into(),
    }
}

fn model_error(e: models::ModelError) -> SystemError {
    match e {
        models::ModelError::NotFound(m) => SystemError::NotFound(m),
        models::ModelError::NothingToTrain(m) => SystemError::Conflict(m),
        other => SystemError::Internal(other.to_string()),
    }
}

/// A fixed, face-like test pattern for a new model's self-check (no stored image needed).
fn self_check_chip() -> RgbImage {
    let size = twin_model::chip::CHIP_SIZE as u32;
    RgbImage::from_fn(size, size, |x, y| {
        let (dx, dy) = (x as f32 - 75.0, y as f32 - 80.0);
        let face = if dx * dx / 2500.0 + dy * dy / 3600.0 < 1.0 {
            170.0
        } else {
            60.0
        };
        let eyes = if ((x as i32 - 50).abs() < 8 || (x as i32 - 100).abs() < 8)
            && (y as i32 - 65).abs() < 5
        {
            -120.0
        } else {
            0.0
        };
        let v = (face + eyes + (x as f32 * 0.2)).clamp(0.0, 255.0) as u8;
        image::Rgb([v, (v as f32 * 0.8) as u8, (v as f32 * 0.7) as u8])
    })
}

fn info(i: twin_core::dataset::Identity) -> IdentityInfo {
    IdentityInfo {
        picture: i.crops.first().cloned(),
        crops: i.crops.len(),
        slug: i.slug,
        display_name: i.display_name,
    }
}

fn ingest_message(s: &EnrollmentStatus) -> IngestMessage {
    IngestMessage {
        v: MESSAGE_VERSION,
        upload_id: s.upload_id.clone(),
        slug: s.slug.clone(),
        display_name: s.display_name.clone(),
        source_key: s.source_key.clone().unwrap_or_default(),
        crops: s.crops.clone(),
        rejected: s.rejected.clone(),
    }
}

/// Why an image was rejected, as the import summary counts it.
fn reject_reason(e: &ImageError) -> String {
    match e {
        ImageError::UnknownFormat => "not an image".to_string(),
        ImageError::TooLarge { .. } | ImageError::TooManyBytes { .. } => "too large".to_string(),
        _ => "unreadable".to_string(),
    }
}

/// One identity being imported (by `import_folder` or `import_parquet`): its crops are written
/// as its images come, and it is embedded and committed (one dataset update) at the end.
struct IdentityImport {
    display_name: String,
    slug: String,
    upload_id: String,
    source_key: String,
    /// The next image's number in the crop keys (rejected images keep theirs).
    next: u64,
    crops: Vec<String>,
    chips: Vec<RgbImage>,
}

impl IdentityImport {
    /// Starts importing `name` (underscores read as spaces) with `count` images. `None` when
    /// the name is unusable (its images are counted as rejected) or the upload derived from
    /// `fingerprint` is already applied (counted in `already_imported`).
    fn begin(
        name: &str,
        source_key: String,
        fingerprint: &[u8],
        count: usize,
        applied: &BTreeSet<String>,
        summary: &mut ImportSummary,
    ) -> Result<Option<Self>, SystemError> {
        let display_name = match keys::display_name(&name.replace('_', " ")) {
            Ok(n) => n,
            Err(e) => {
                *summary
                    .rejected
                    .entry(format!("bad folder name ({e})"))
                    .or_default() += count;
                return Ok(None);
            }
        };
        let slug = keys::slugify(&display_name);
        let upload_id = format!("import-{}", content_tag(fingerprint));
        summary.identities += 1;
        if applied.contains(&upload_id) {
            summary.already_imported += 1;
            return Ok(None);
        }
        Ok(Some(IdentityImport {
            display_name,
            slug,
            upload_id,
            source_key,
            next: 1,
            crops: Vec::new(),
            chips: Vec::new(),
        }))
    }

    /// Adds one decoded image (or the reason it could not be decoded): its largest face's chip
    /// is stored as a crop, or the image counts as rejected.
    fn add(
        &mut self,
        sys: &System,
        img: Result<RgbImage, String>,
        summary: &mut ImportSummary,
    ) -> Result<(), SystemError> {
        let i = self.next;
        self.next += 1;
        let outcome = img.and_then(|img| match sys.photos.find_faces(&img) {
            Ok(faces) => faces
                .first()
                .map(|f| cut_chip(&img, f))
                .ok_or_else(|| "no face".to_string()),
            Err(e) => Err(format!("detection failed ({e})")),
        });
        match outcome {
            Ok(chip) => {
                let key = keys::crop_key(&self.slug, &self.upload_id, i)?;
                sys.store.put(&key, &encode_png(&chip)?, Condition::None)?;
                self.crops.push(key);
                self.chips.push(chip);
                summary.imported += 1;
            }
            Err(reason) => *summary.rejected.entry(reason).or_default() += 1,
        }
        Ok(())
    }

    /// Embeds the chips and commits the identity.
    fn finish(self, sys: &System, _summary: &mut ImportSummary) -> Result<(), SystemError> {
        let embeddings = sys.embed_chips(&self.chips)?;
        let message = IngestMessage {
            v: MESSAGE_VERSION,
            upload_id: self.upload_id,
            slug: self.slug,
            display_name: self.display_name,
            source_key: self.source_key,
            crops: self.crops,
            rejected: BTreeMap::new(),
        };
        let _g = sys.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        dataset::commit(
            &*sys.store,
            sys.embedder.dim(),
            &[Update::Add {
                message,
                embeddings,
            }],
        )?;
        Ok(())
    }
}

fn photo_limits() -> imageio::Limits {
    imageio::Limits {
        max_bytes: MAX_PHOTO_BYTES as u64,
        ..Default::default()
    }
}

fn encode_png(img: &RgbImage) -> Result<Vec<u8>, SystemError> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| SystemError::Internal(e.to_string()))?;
    Ok(out.into_inner())
}

/// The upload key extension for a content type (`None`: not accepted).
pub fn extension_for(content_type: &str) -> Option<&'static str> {
    let base = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(match base.as_str() {
        "video/mp4" => "mp4",
        "video/quicktime" => "mov",
        "video/webm" => "webm",
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        _ => return None,
    })
}

/// Whether an upload extension is a video.
pub fn is_video(ext: &str) -> bool {
    matches!(ext, "mp4" | "mov" | "webm")
}

/// The upload type a file name stands for: its extension in lower case, `jpeg` as `jpg`;
/// `None` unless a video (mp4, mov, webm) or a photo (jpg, png, webp).
pub fn upload_extension(name: &str) -> Option<&'static str> {
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "mp4" => "mp4",
        "mov" => "mov",
        "webm" => "webm",
        "jpg" | "jpeg" => "jpg",
        "png" => "png",
        "webp" => "webp",
        _ => return None,
    })
}

/// The most bytes an upload of type `ext` may have.
pub fn upload_limit(ext: &str) -> usize {
    if is_video(ext) {
        MAX_VIDEO_BYTES
    } else {
        MAX_PHOTO_BYTES
    }
}

fn ingest_worker(sys: Weak<System>, rx: mpsc::Receiver<String>) {
    while let Ok(id) = rx.recv() {
        let Some(sys) = sys.upgrade() else { return };
        let span = tracing::info_span!("ingest", upload_id = %id);
        let _e = span.enter();
        if let Err(e) = sys.ingest(&id) {
            tracing::error!(error = %e, "ingest failed");
            if let Ok(s) = sys.enrollment_status(&id) {
                let _ = sys.fail(s, "the upload could not be processed; try again".into());
            }
        }
    }
}

fn dataset_worker(sys: Weak<System>) {
    loop {
        let Some(s) = sys.upgrade() else { return };
        let queue = s.queue.clone();
        drop(s);
        let batch = match queue.receive(DATASET_BATCH, Duration::from_millis(500)) {
            Ok(b) => b,
            Err(_) => continue,
        };
        if batch.is_empty() {
            continue;
        }
        let Some(s) = sys.upgrade() else { return };
        if let Err(e) = s.dataset_step(&batch) {
            // Unacknowledged messages come back after the visibility timeout.
            tracing::error!(error = %e, "dataset step failed");
        }
    }
}
