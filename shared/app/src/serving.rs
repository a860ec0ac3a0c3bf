//! Model serving: the model that answers matches (the backbone alone, or the promoted trained
//! model), hot reload when `models/CURRENT` moves, the self-check a new model must pass before
//! it serves, and promotion. A model that fails to load or to pass leaves the previous one
//! serving; the failure is reported and not retried until `models/CURRENT` changes.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use image::RgbImage;
use serde::Serialize;
use twin_core::keys;
use twin_core::store::ObjectStore;
use twin_core::sync;
use twin_model::embed::{ChipBatch, EmbedError, Embedder, EmbedderOptions, Embeddings};
use twin_model::models;
use twin_model::onnx::head::{backbone_tag, read_head_of};
use twin_model::train::Head;

use crate::error::Result;

/// Largest difference allowed between a new model's embedding and the backbone's on the
/// self-check chip (the composed graph runs the same backbone).
const SELF_CHECK_TOLERANCE: f32 = 1e-3;

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
pub struct Serving {
    /// The trained version (`None`: the backbone alone).
    pub version: Option<u64>,
    /// The `models/CURRENT` tag it was loaded for.
    tag: Option<String>,
    /// How the trained model scores faces (`None`: the backbone alone).
    pub scorer: Option<Arc<Scorer>>,
    /// Column of each slug in `scores`.
    pub columns: HashMap<String, usize>,
}

impl Serving {
    fn backbone() -> Self {
        Serving {
            version: None,
            tag: None,
            scorer: None,
            columns: HashMap::new(),
        }
    }

    /// `backbone` or `model <n>`.
    pub fn name(&self) -> String {
        model_name(self.version)
    }
}

fn model_name(version: Option<u64>) -> String {
    match version {
        Some(n) => format!("model {n}"),
        None => "backbone".into(),
    }
}

/// How a trained model scores faces.
pub enum Scorer {
    /// Its head, applied here to the serving backbone's embeddings: the model was composed on
    /// that very backbone, so the process runs one network.
    Head(Head),
    /// The composed model, run as its own network (it was composed on another backbone, or
    /// before composed models named theirs).
    Composed(Embedder),
}

impl Scorer {
    /// The embeddings of `batch` and their scores (row-major, one row per chip); `backbone` is
    /// the serving backbone.
    pub fn embed_scored(
        &self,
        backbone: &Embedder,
        batch: &ChipBatch,
    ) -> std::result::Result<(Embeddings, Vec<f32>), EmbedError> {
        match self {
            Scorer::Head(head) => {
                let e = backbone.embed(batch)?;
                let scores = e.rows().flat_map(|row| head.scores(row)).collect();
                Ok((e, scores))
            }
            Scorer::Composed(engine) => {
                let out = engine.embed_scored(batch)?;
                Ok((out.embeddings, out.scores.unwrap_or_default()))
            }
        }
    }

    /// `head` or `composed`, for the logs.
    fn kind(&self) -> &'static str {
        match self {
            Scorer::Head(_) => "head",
            Scorer::Composed(_) => "composed",
        }
    }
}

/// The serving model and its reloads.
pub struct ModelServing {
    store: Arc<dyn ObjectStore>,
    backbone: Arc<Embedder>,
    threads: usize,
    serving: RwLock<Arc<Serving>>,
    /// The `models/CURRENT` tag that failed, with the error (not retried until it changes).
    failed: Mutex<Option<(String, ModelLoadError)>>,
    /// [`backbone_tag`] of the serving backbone's file, once read (`None`: unreadable).
    backbone_tag: OnceLock<Option<String>>,
}

impl ModelServing {
    /// Serving the backbone alone until [`ModelServing::check`] finds a promoted model.
    pub fn new(store: Arc<dyn ObjectStore>, backbone: Arc<Embedder>, threads: usize) -> Self {
        ModelServing {
            store,
            backbone,
            threads,
            serving: RwLock::new(Arc::new(Serving::backbone())),
            failed: Mutex::new(None),
            backbone_tag: OnceLock::new(),
        }
    }

    fn backbone_tag(&self) -> Option<&str> {
        self.backbone_tag
            .get_or_init(|| {
                std::fs::read(self.backbone.model_path())
                    .ok()
                    .map(|b| backbone_tag(&b))
            })
            .as_deref()
    }

    /// The backbone (embeds faces when no trained model serves).
    pub fn backbone(&self) -> &Arc<Embedder> {
        &self.backbone
    }

    /// The model serving now.
    pub fn current(&self) -> Arc<Serving> {
        sync::read(&self.serving).clone()
    }

    /// The trained model version answering matches (`None`: the backbone alone).
    pub fn version(&self) -> Option<u64> {
        self.current().version
    }

    fn swap(&self, s: Serving) {
        *sync::write(&self.serving) = Arc::new(s);
    }

    /// Checks `models/CURRENT` and, when it points somewhere new, loads that model, runs its
    /// self-check and swaps it in. Returns the version serving afterwards.
    pub fn check(&self) -> Option<u64> {
        let pointer = models::current(&*self.store).map_err(|e| e.to_string());
        self.check_pointer(pointer, None)
    }

    /// Reads what [`ModelServing::check`] reads from the store — `models/CURRENT`, the model it
    /// points at and its labels — and the tag of the backbone file, without the backbone
    /// network: a server runs it from its start on a thread of its own, while its networks
    /// open, then hands it to [`ModelServing::check_fetched`].
    pub fn fetch(store: &dyn ObjectStore, backbone_file: &Path) -> Fetched {
        let pointer = models::current(store).map_err(|e| e.to_string());
        let model = match &pointer {
            Ok(Some((n, _))) => Some(read_model(store, *n)),
            _ => None,
        };
        Fetched {
            pointer,
            model,
            backbone: std::fs::read(backbone_file)
                .ok()
                .map(|b| (backbone_file.to_path_buf(), backbone_tag(&b))),
        }
    }

    /// [`ModelServing::check`] with what [`ModelServing::fetch`] read (the poll that follows
    /// reads `models/CURRENT` again).
    pub fn check_fetched(&self, fetched: Fetched) -> Option<u64> {
        if let Some((path, tag)) = fetched.backbone {
            if path == self.backbone.model_path() {
                let _ = self.backbone_tag.set(Some(tag));
            }
        }
        self.check_pointer(fetched.pointer, fetched.model)
    }

    /// [`ModelServing::check`] of `pointer`, with the model it names when already read.
    fn check_pointer(
        &self,
        pointer: std::result::Result<Option<(u64, String)>, String>,
        read: Option<std::result::Result<ReadModel, String>>,
    ) -> Option<u64> {
        let serving = self.current();
        let pointer = match pointer {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read models/CURRENT; the serving model stays");
                return serving.version;
            }
        };
        let Some((version, tag)) = pointer else {
            if serving.version.is_some() {
                tracing::warn!("models/CURRENT was removed: matching with the backbone alone");
                self.swap(Serving::backbone());
            }
            // What failed to load is no longer asked for.
            *sync::lock(&self.failed) = None;
            return None;
        };
        if serving.tag.as_deref() == Some(tag.as_str()) {
            *sync::lock(&self.failed) = None;
            return serving.version;
        }
        if sync::lock(&self.failed)
            .as_ref()
            .is_some_and(|(t, _)| *t == tag)
        {
            return serving.version;
        }
        let started = std::time::Instant::now();
        let read = read.unwrap_or_else(|| read_model(&*self.store, version));
        match read.and_then(|m| self.load(m)) {
            Ok((scorer, labels)) => {
                // An erased person's label is empty: their column answers for nobody.
                let columns = labels
                    .into_iter()
                    .enumerate()
                    .filter(|(_, s)| !s.is_empty())
                    .map(|(i, s)| (s, i))
                    .collect();
                let kind = scorer.kind();
                self.swap(Serving {
                    version: Some(version),
                    tag: Some(tag),
                    scorer: Some(Arc::new(scorer)),
                    columns,
                });
                *sync::lock(&self.failed) = None;
                tracing::info!(
                    version,
                    scorer = kind,
                    ms = started.elapsed().as_millis() as u64,
                    "model loaded and serving"
                );
                Some(version)
            }
            Err(error) => {
                tracing::error!(version, %error, serving = ?serving.version, "model failed to load; the previous model keeps serving");
                *sync::lock(&self.failed) = Some((tag, ModelLoadError { version, error }));
                serving.version
            }
        }
    }

    /// Checks model `m` and makes its scorer: its head must have one column per label and, run
    /// on a test chip, give finite scores; a model composed on another backbone is loaded whole
    /// and its `embedding` must also equal the backbone's.
    fn load(&self, m: ReadModel) -> std::result::Result<(Scorer, Vec<String>), String> {
        let ReadModel {
            key,
            labels,
            bytes,
            head,
        } = m;
        let slugs: Vec<String> = labels.labels.iter().map(|l| l.slug.clone()).collect();
        let same_backbone = head.dim == self.backbone.dim()
            && head.backbone_tag.is_some()
            && head.backbone_tag.as_deref() == self.backbone_tag();
        let mut batch = ChipBatch::with_capacity(1);
        batch.push(&self_check_chip()).map_err(|e| e.to_string())?;
        if same_backbone {
            let scorer = Scorer::Head(Head {
                labels: labels.labels,
                dim: head.dim,
                weights: head.rows,
            });
            let (_, scores) = scorer
                .embed_scored(&self.backbone, &batch)
                .map_err(|e| e.to_string())?;
            if scores.len() != slugs.len() || scores.iter().any(|v| !v.is_finite()) {
                return Err("self-check failed: its scores are not finite".into());
            }
            return Ok((scorer, slugs));
        }
        let engine = Embedder::from_bytes(
            Path::new(&key),
            &bytes,
            &EmbedderOptions {
                threads: self.threads,
            },
        )
        .map_err(|e| e.to_string())?;
        if engine.classes() != Some(slugs.len()) {
            return Err(format!(
                "the model has {:?} score columns but labels.json lists {} identities",
                engine.classes(),
                slugs.len()
            ));
        }
        let out = engine.embed_scored(&batch).map_err(|e| e.to_string())?;
        let reference = self.backbone.embed(&batch).map_err(|e| e.to_string())?;
        let diff = out
            .embeddings
            .data
            .iter()
            .zip(&reference.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // A NaN difference fails too.
        let close = diff <= SELF_CHECK_TOLERANCE;
        if out.embeddings.dim != reference.dim || !close {
            return Err(format!(
                "self-check failed: its embedding differs from the backbone's by {diff}"
            ));
        }
        let scores = out.scores.unwrap_or_default();
        if scores.len() != slugs.len() || scores.iter().any(|v| !v.is_finite()) {
            return Err("self-check failed: its scores are not finite".into());
        }
        Ok((Scorer::Composed(engine), slugs))
    }

    /// Forgets the person `slug` everywhere models are kept: every trained version's files (see
    /// [`models::forget`]) and the model serving in this process, at once.
    pub fn forget(&self, slug: &str) -> Result<()> {
        self.forget_counted(slug).map(|_| ())
    }

    /// [`ModelServing::forget`], returning how many trained versions were rewritten.
    pub fn forget_counted(&self, slug: &str) -> Result<usize> {
        let rewritten = models::forget(&*self.store, slug)?.len();
        let serving = self.current();
        if serving.columns.contains_key(slug) {
            let mut columns = serving.columns.clone();
            columns.remove(slug);
            self.swap(Serving {
                version: serving.version,
                tag: serving.tag.clone(),
                scorer: serving.scorer.clone(),
                columns,
            });
        }
        Ok(rewritten)
    }

    /// The models serving, promoted and trained.
    pub fn models(&self) -> Result<ModelsInfo> {
        let serving = self.version();
        let load_error = sync::lock(&self.failed).as_ref().map(|(_, e)| e.clone());
        Ok(ModelsInfo {
            current: model_name(serving),
            serving_version: serving,
            promoted_version: models::current(&*self.store)?.map(|c| c.0),
            load_error,
            versions: models::list(&*self.store)?,
        })
    }

    /// Points `models/CURRENT` at version `n` (promotion or rollback) and loads it now; the
    /// answer says what serves afterwards (a model that fails to load leaves the previous one).
    pub fn promote(&self, n: u64) -> Result<ModelsInfo> {
        models::promote(&*self.store, n)?;
        self.check();
        self.models()
    }
}

/// What [`ModelServing::fetch`] read.
pub struct Fetched {
    pointer: std::result::Result<Option<(u64, String)>, String>,
    model: Option<std::result::Result<ReadModel, String>>,
    /// The backbone file and its [`backbone_tag`] (`None`: unreadable).
    backbone: Option<(std::path::PathBuf, String)>,
}

/// A trained model read from the store, its head parsed and its labels checked against it.
struct ReadModel {
    key: String,
    labels: models::Labels,
    bytes: Vec<u8>,
    head: twin_model::onnx::head::HeadOf,
}

/// Reads model `n` and its labels: each identity named once, one score column per label.
fn read_model(store: &dyn ObjectStore, n: u64) -> std::result::Result<ReadModel, String> {
    let labels = models::read_labels(store, n).map_err(|e| e.to_string())?;
    let key = keys::model_key(n);
    let bytes = store
        .get(&key)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{key} is missing"))?
        .data;
    let named: Vec<&String> = labels
        .labels
        .iter()
        .map(|l| &l.slug)
        .filter(|s| !s.is_empty())
        .collect();
    if named.iter().collect::<HashSet<_>>().len() != named.len() {
        return Err("labels.json names an identity twice".into());
    }
    let head = read_head_of(&bytes).map_err(|e| e.to_string())?;
    if head.classes != labels.labels.len() {
        return Err(format!(
            "the model has {} score columns but labels.json lists {} identities",
            head.classes,
            labels.labels.len()
        ));
    }
    Ok(ReadModel {
        key,
        labels,
        bytes,
        head,
    })
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
