//! What the `twin` binary reads from its environment, in one place: the data folder, where the
//! runtime pieces are (ONNX Runtime, the models), and the local host over the data folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use twin_app::local::{Local, LocalConfig};
use twin_core::paths::{self, RuntimeFiles};
use twin_core::store::LocalStore;

/// An environment variable's value (unset when empty).
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The data folder: `--data`, else `$TWIN_DATA` (read by clap), else the per-user data folder.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    if let Some(d) = flag {
        return d;
    }
    if let Some(d) = env("XDG_DATA_HOME") {
        return PathBuf::from(d).join("twin-matcher");
    }
    match env("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/twin-matcher"),
        None => PathBuf::from("twin-data"),
    }
}

/// Where ONNX Runtime and the models are: `$ORT_DYLIB_PATH` and `$TWIN_MODELS_DIR` when set,
/// else a `vendor/` beside the executable (an installed layout) or above the folder cargo runs
/// it from (`cargo run`, the tests). ONNX Runtime is loaded from there when it is found;
/// otherwise the first command that needs it says how to install it.
pub fn runtime() -> &'static RuntimeFiles {
    static FILES: std::sync::OnceLock<RuntimeFiles> = std::sync::OnceLock::new();
    FILES.get_or_init(locate_runtime)
}

fn locate_runtime() -> RuntimeFiles {
    let exe = std::env::current_exe().ok();
    let cargo_dir = env("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let files = RuntimeFiles::locate(
        env(paths::ORT_LIB_ENV).map(PathBuf::from),
        env(paths::MODELS_DIR_ENV).map(PathBuf::from),
        &paths::search_roots(exe.as_deref(), cargo_dir.as_deref()),
    );
    if let Some(lib) = &files.ort_library {
        // A failure is kept and reported by the first use of the engine.
        let _ = twin_model::embed::init_runtime(Some(lib));
    }
    files
}

/// The backbone: `flag`, else `$TWIN_BACKBONE`, else the models folder's.
pub fn backbone(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| env(paths::BACKBONE_ENV).map(PathBuf::from))
        .unwrap_or_else(|| runtime().backbone())
}

/// The backbone (`flag`, else as [`backbone`] finds it) opened with `threads` threads.
pub fn open_backbone(
    flag: Option<PathBuf>,
    threads: usize,
) -> anyhow::Result<twin_model::embed::Embedder> {
    let model = backbone(flag);
    twin_model::embed::Embedder::open(&model, &twin_model::embed::EmbedderOptions { threads })
        .with_context(|| format!("cannot open the backbone {}", model.display()))
}

/// The models folder.
pub fn models_dir() -> PathBuf {
    runtime().models_dir.clone()
}

/// The local host on `data` without workers (one-shot commands run their steps inline).
pub fn open_inline(data: &Path, threads: usize) -> anyhow::Result<Arc<Local>> {
    Local::open_inline(&config(data, threads))
        .with_context(|| format!("cannot open the data folder {}", data.display()))
}

/// The local host on `data` with its workers (the server).
pub fn open_serving(data: &Path, threads: usize) -> anyhow::Result<Arc<Local>> {
    Local::open(config(data, threads))
        .with_context(|| format!("cannot open the data folder {}", data.display()))
}

fn config(data: &Path, threads: usize) -> LocalConfig {
    LocalConfig::new(data.to_path_buf(), models_dir(), threads)
}

/// The data folder's store.
pub fn open_store(data: &Path) -> anyhow::Result<LocalStore> {
    LocalStore::open(data).with_context(|| format!("cannot open {}", data.display()))
}
