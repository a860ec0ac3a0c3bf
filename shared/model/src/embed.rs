//! The embedding engine: an ONNX model run with ONNX Runtime behind a core-owned API.
//!
//! One session is built once from a model file, with an explicit thread count, and reused for
//! every batch; a batch is one contiguous `[N, 3, 150, 150]` buffer ([`ChipBatch`]). ONNX
//! Runtime itself is a shared library loaded at run time (a host names it to [`init_runtime`]; otherwise it is looked for beside the executable),
//! once per process. No `ort` type appears in this module's public API.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use image::RgbImage;

use crate::chip::{chip_to_planar, ChipSizeError, CHIP_SIZE, CHIP_VALUES};
use crate::onnx::face_net::{EMBEDDING_OUTPUT, INPUT_NAME};

/// What can go wrong loading or running the engine.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// No ONNX Runtime library was found.
    #[error("ONNX Runtime library not found: set ORT_DYLIB_PATH or run scripts/setup (it installs vendor/onnxruntime/libonnxruntime.so)")]
    RuntimeMissing,
    /// The ONNX Runtime library could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    RuntimeLoad {
        /// The library that failed to load.
        path: PathBuf,
        /// The loader's message.
        message: String,
    },
    /// The model file does not exist.
    #[error("model file {0} not found (scripts/setup imports vendor/models/backbone.onnx)")]
    ModelMissing(PathBuf),
    /// The model could not be loaded into a session.
    #[error("cannot load model {path}: {message}")]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The model's inputs or outputs are not what the engine needs.
    #[error("model {path} has the wrong interface: {message}")]
    Interface {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A chip of the wrong size.
    #[error(transparent)]
    ChipSize(#[from] ChipSizeError),
    /// Running the model failed.
    #[error("inference failed: {0}")]
    Run(String),
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EmbedderOptions {
    /// Threads ONNX Runtime may use inside one operator (intra-op). At least 1.
    pub threads: usize,
}

impl Default for EmbedderOptions {
    fn default() -> Self {
        EmbedderOptions { threads: 1 }
    }
}

/// A batch of chips as one contiguous `[N, 3, 150, 150]` `f32` buffer.
#[derive(Debug, Clone, Default)]
pub struct ChipBatch {
    data: Vec<f32>,
}

impl ChipBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `n` chips.
    pub fn with_capacity(n: usize) -> Self {
        ChipBatch {
            data: Vec::with_capacity(n * CHIP_VALUES),
        }
    }

    /// Appends a 150×150 RGB chip.
    pub fn push(&mut self, chip: &RgbImage) -> Result<(), ChipSizeError> {
        let start = self.data.len();
        self.data.resize(start + CHIP_VALUES, 0.0);
        if let Err(e) = chip_to_planar(chip, &mut self.data[start..]) {
            self.data.truncate(start);
            return Err(e);
        }
        Ok(())
    }

    /// Number of chips.
    pub fn len(&self) -> usize {
        self.data.len() / CHIP_VALUES
    }

    /// True when the batch holds no chip.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Removes every chip, keeping the allocation.
    pub fn clear(&mut self) {
        self.data.clear();
    }

    /// The raw buffer.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

/// Embeddings of a batch, one row per chip, in one contiguous buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// Length of each row.
    pub dim: usize,
    /// Row-major values.
    pub data: Vec<f32>,
}

impl Embeddings {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// True when there is no row.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Iterates over the rows.
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.dim.max(1))
    }
}

/// The process-wide ONNX Runtime environment (ONNX Runtime allows one per process).
static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime from `library` (or, without one, from `vendor/onnxruntime/` beside the
/// executable) once per process.
/// Later calls return the first result whatever library they name.
pub fn init_runtime(library: Option<&Path>) -> Result<(), EmbedError> {
    let path = match library
        .map(Path::to_path_buf)
        .or_else(twin_core::paths::ort_library_beside_exe)
    {
        Some(p) => p,
        None => {
            if RUNTIME.get().is_none() {
                return Err(EmbedError::RuntimeMissing);
            }
            PathBuf::new()
        }
    };
    let result = RUNTIME.get_or_init(|| {
        if !path.is_file() {
            return Err(format!("{} does not exist", path.display()));
        }
        let builder = ort::init_from(&path).map_err(|e| format!("{} ({e})", path.display()))?;
        builder
            .with_name("twin")
            .build()
            .map_err(|e| format!("{} ({e})", path.display()))
    });
    match result {
        Ok(_) => Ok(()),
        Err(message) => Err(EmbedError::RuntimeLoad {
            path,
            message: message.clone(),
        }),
    }
}

fn runtime() -> Result<&'static ort::environment::Environment, EmbedError> {
    init_runtime(None)?;
    match RUNTIME.get() {
        Some(Ok(env)) => Ok(env),
        _ => Err(EmbedError::RuntimeMissing),
    }
}

/// Chips per engine call when embedding many.
pub const EMBED_BATCH: usize = 16;

/// Name of the optional per-identity output of a trained model (`[N, C]`).
pub const SCORES_OUTPUT: &str = "scores";

/// An ONNX embedding model loaded into one ONNX Runtime session. A trained model also has a
/// `scores` output (one column per identity of its head), read by [`Embedder::embed_scored`].
pub struct Embedder {
    session: Mutex<ort::session::Session>,
    path: PathBuf,
    dim: usize,
    classes: Option<usize>,
}

/// Embeddings of a batch and, for a trained model, its head's scores (`rows × classes`).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// One embedding per chip.
    pub embeddings: Embeddings,
    /// Row-major `N × classes` scores, when the model has a head.
    pub scores: Option<Vec<f32>>,
    /// Columns of `scores`.
    pub classes: usize,
}

impl Embedder {
    /// Loads `model` (input `chips` `[N,3,150,150]`, output `embedding` `[N,D]`, and an optional
    /// `scores` `[N,C]`).
    pub fn open(model: &Path, options: &EmbedderOptions) -> Result<Self, EmbedError> {
        if !model.is_file() {
            return Err(EmbedError::ModelMissing(model.to_path_buf()));
        }
        Self::build(model, options, |b| b.commit_from_file(model))
    }

    /// Loads a model from its bytes; `name` stands for it in errors and [`Embedder::model_path`].
    pub fn from_bytes(
        name: &Path,
        bytes: &[u8],
        options: &EmbedderOptions,
    ) -> Result<Self, EmbedError> {
        Self::build(name, options, |b| b.commit_from_memory(bytes))
    }

    fn build(
        model: &Path,
        options: &EmbedderOptions,
        commit: impl FnOnce(
            &mut ort::session::builder::SessionBuilder,
        ) -> ort::Result<ort::session::Session>,
    ) -> Result<Self, EmbedError> {
        let session = open_session(model, options, commit)?;
        let interface = |message: String| EmbedError::Interface {
            path: model.to_path_buf(),
            message,
        };
        if !session.inputs().iter().any(|i| i.name() == INPUT_NAME) {
            return Err(interface(format!("no input named \"{INPUT_NAME}\"")));
        }
        let columns = |name: &str| -> Result<Option<usize>, EmbedError> {
            let Some(out) = session.outputs().iter().find(|o| o.name() == name) else {
                return Ok(None);
            };
            match out.dtype() {
                ort::value::ValueType::Tensor { shape, .. } if shape.len() == 2 && shape[1] > 0 => {
                    Ok(Some(shape[1] as usize))
                }
                other => Err(interface(format!(
                    "output \"{name}\" is {other:?}, expected [N, D] floats"
                ))),
            }
        };
        let dim = columns(EMBEDDING_OUTPUT)?
            .ok_or_else(|| interface(format!("no output named \"{EMBEDDING_OUTPUT}\"")))?;
        let classes = columns(SCORES_OUTPUT)?;
        Ok(Embedder {
            session: Mutex::new(session),
            path: model.to_path_buf(),
            dim,
            classes,
        })
    }

    /// Length of the embeddings this model produces.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Columns of the `scores` output (a trained model's identities), if it has one.
    pub fn classes(&self) -> Option<usize> {
        self.classes
    }

    /// The model file this engine was loaded from.
    pub fn model_path(&self) -> &Path {
        &self.path
    }

    /// Embeds every chip of `batch`, in order.
    pub fn embed(&self, batch: &ChipBatch) -> Result<Embeddings, EmbedError> {
        Ok(self.run(batch, false)?.embeddings)
    }

    /// Embeds any number of chips, in batches of [`EMBED_BATCH`], in order.
    pub fn embed_all(&self, chips: &[&RgbImage]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(chips.len());
        let mut batch = ChipBatch::with_capacity(EMBED_BATCH);
        for group in chips.chunks(EMBED_BATCH) {
            batch.clear();
            for chip in group {
                batch.push(chip)?;
            }
            out.extend(self.embed(&batch)?.rows().map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// Embeds every chip of `batch` and, for a trained model, scores it against its head.
    pub fn embed_scored(&self, batch: &ChipBatch) -> Result<Scored, EmbedError> {
        self.run(batch, true)
    }

    fn run(&self, batch: &ChipBatch, with_scores: bool) -> Result<Scored, EmbedError> {
        let n = batch.len();
        let classes = if with_scores { self.classes } else { None };
        if n == 0 {
            return Ok(Scored {
                embeddings: Embeddings {
                    dim: self.dim,
                    data: Vec::new(),
                },
                scores: classes.map(|_| Vec::new()),
                classes: classes.unwrap_or(0),
            });
        }
        let run = |e: ort::Error| EmbedError::Run(e.to_string());
        let shape = [n as i64, 3, CHIP_SIZE as i64, CHIP_SIZE as i64];
        let input =
            ort::value::TensorRef::from_array_view((shape, batch.as_slice())).map_err(run)?;
        let mut session = twin_core::sync::lock(&self.session);
        let outputs = session
            .run(ort::inputs![INPUT_NAME => input])
            .map_err(run)?;
        let read = |name: &str, cols: usize| -> Result<Vec<f32>, EmbedError> {
            let (out_shape, values) = outputs[name].try_extract_tensor::<f32>().map_err(run)?;
            if out_shape.len() != 2 || out_shape[0] as usize != n || out_shape[1] as usize != cols {
                return Err(EmbedError::Run(format!(
                    "unexpected {name} shape {out_shape:?} for a batch of {n}"
                )));
            }
            Ok(values.to_vec())
        };
        let data = read(EMBEDDING_OUTPUT, self.dim)?;
        let scores = match classes {
            Some(c) => Some(read(SCORES_OUTPUT, c)?),
            None => None,
        };
        Ok(Scored {
            embeddings: Embeddings {
                dim: self.dim,
                data,
            },
            scores,
            classes: classes.unwrap_or(0),
        })
    }
}

/// A fully convolutional network run on whole images (the CNN face detector): input `[1,3,H,W]`
/// planar `f32`, output one `[1,1,H',W']` score map. One ONNX Runtime session, built once.
pub struct ScoreMapEngine {
    session: Mutex<ort::session::Session>,
    input: String,
    output: String,
}

/// A score map: `height × width` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreMap {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// The scores.
    pub data: Vec<f32>,
}

/// An ONNX Runtime session with the options' intra-op threads and one inter-op thread, made by
/// `commit` (from a file or from bytes); `model` names it in errors.
fn open_session(
    model: &Path,
    options: &EmbedderOptions,
    commit: impl FnOnce(
        &mut ort::session::builder::SessionBuilder,
    ) -> ort::Result<ort::session::Session>,
) -> Result<ort::session::Session, EmbedError> {
    let env = runtime()?;
    let load = |e: ort::Error| EmbedError::ModelLoad {
        path: model.to_path_buf(),
        message: e.to_string(),
    };
    let mut builder = ort::session::Session::builder(env)
        .map_err(load)?
        .with_intra_threads(options.threads.max(1))
        .map_err(|e| load(e.into()))?
        .with_inter_threads(1)
        .map_err(|e| load(e.into()))?;
    commit(&mut builder).map_err(load)
}

impl ScoreMapEngine {
    /// Loads a model from its bytes; `name` stands for it in errors. `input` and `output` are
    /// the graph's value names.
    pub fn from_bytes(
        name: &Path,
        bytes: &[u8],
        input: &str,
        output: &str,
        options: &EmbedderOptions,
    ) -> Result<Self, EmbedError> {
        let session = open_session(name, options, |b| b.commit_from_memory(bytes))?;
        for (what, want, names) in [
            (
                "input",
                input,
                session
                    .inputs()
                    .iter()
                    .map(|i| i.name().to_string())
                    .collect::<Vec<_>>(),
            ),
            (
                "output",
                output,
                session
                    .outputs()
                    .iter()
                    .map(|o| o.name().to_string())
                    .collect(),
            ),
        ] {
            if !names.iter().any(|n| n == want) {
                return Err(EmbedError::Interface {
                    path: name.to_path_buf(),
                    message: format!("no {what} named \"{want}\""),
                });
            }
        }
        Ok(ScoreMapEngine {
            session: Mutex::new(session),
            input: input.to_string(),
            output: output.to_string(),
        })
    }

    /// Runs the network on one planar RGB image of `height × width` (`3·height·width` values).
    pub fn run(&self, planes: &[f32], height: usize, width: usize) -> Result<ScoreMap, EmbedError> {
        if planes.len() != 3 * height * width {
            return Err(EmbedError::Run(format!(
                "{} values for a 3×{height}×{width} image",
                planes.len()
            )));
        }
        let run = |e: ort::Error| EmbedError::Run(e.to_string());
        let shape = [1i64, 3, height as i64, width as i64];
        let input = ort::value::TensorRef::from_array_view((shape, planes)).map_err(run)?;
        let mut session = twin_core::sync::lock(&self.session);
        let outputs = session
            .run(ort::inputs![self.input.as_str() => input])
            .map_err(run)?;
        let (out_shape, values) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(run)?;
        if out_shape.len() != 4 || out_shape[0] != 1 || out_shape[1] != 1 {
            return Err(EmbedError::Run(format!(
                "unexpected score map shape {out_shape:?}"
            )));
        }
        Ok(ScoreMap {
            height: out_shape[2] as usize,
            width: out_shape[3] as usize,
            data: values.to_vec(),
        })
    }
}
