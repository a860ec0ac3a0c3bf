//! Where the product finds its runtime pieces: the ONNX Runtime library and the models.
//!
//! Each can be named explicitly (a command-line flag or an environment variable); otherwise
//! the places `scripts/setup` fills are used: `vendor/onnxruntime/` and `vendor/models/`
//! beside the executable's install root or in the source tree it was built from.

use std::path::{Path, PathBuf};

/// Environment variable naming the ONNX Runtime shared library (the same name `ort` uses).
pub const ORT_LIB_ENV: &str = "ORT_DYLIB_PATH";
/// Environment variable naming the backbone model.
pub const BACKBONE_ENV: &str = "TWIN_BACKBONE";
/// File name of the ONNX Runtime library as `scripts/setup` installs it.
pub const ORT_LIB_FILE: &str = "libonnxruntime.so";
/// File name of the imported backbone.
pub const BACKBONE_FILE: &str = "backbone.onnx";

/// The source tree this crate was built from (the workspace root).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate is inside the workspace")
        .to_path_buf()
}

/// Folders that may hold `vendor/`: beside the executable (and its parent), then the source tree.
fn vendor_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(3) {
            roots.push(dir.to_path_buf());
        }
    }
    roots.push(repo_root());
    roots
}

fn find_vendor(rel: &str) -> Option<PathBuf> {
    vendor_roots()
        .into_iter()
        .map(|r| r.join("vendor").join(rel))
        .find(|p| p.is_file())
}

/// The ONNX Runtime library to load: `$ORT_DYLIB_PATH`, else the one `scripts/setup` installed.
pub fn ort_library() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(ORT_LIB_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    find_vendor(&format!("onnxruntime/{ORT_LIB_FILE}"))
}

/// The models folder `scripts/setup` fills (`vendor/models`), whether or not it exists yet.
pub fn models_dir() -> PathBuf {
    find_vendor(&format!("models/{BACKBONE_FILE}"))
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| repo_root().join("vendor").join("models"))
}

/// The backbone model: `$TWIN_BACKBONE`, else `vendor/models/backbone.onnx`.
pub fn default_backbone() -> PathBuf {
    if let Some(p) = std::env::var_os(BACKBONE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    models_dir().join(BACKBONE_FILE)
}
