//! Where the product's runtime pieces are: the ONNX Runtime library and the models.
//!
//! Nothing here reads the environment or remembers where the code was built: the hosts (the
//! `twin` binary, the Lambda functions, the tests) read their settings and pass them in. Without
//! an explicit path, a piece is looked for in a `vendor/` folder (as `scripts/setup` fills it)
//! among the folders a host names ([`search_roots`]).

use std::path::{Path, PathBuf};

/// Environment variable naming the ONNX Runtime shared library (the name `ort` uses), read by
/// the hosts.
pub const ORT_LIB_ENV: &str = "ORT_DYLIB_PATH";
/// Environment variable naming the backbone model, read by the `twin` binary.
pub const BACKBONE_ENV: &str = "TWIN_BACKBONE";
/// Environment variable naming the models folder, read by the hosts.
pub const MODELS_DIR_ENV: &str = "TWIN_MODELS_DIR";
/// File name of the ONNX Runtime library as `scripts/setup` installs it.
pub const ORT_LIB_FILE: &str = "libonnxruntime.so";
/// File name of the imported backbone.
pub const BACKBONE_FILE: &str = "backbone.onnx";

/// Where the runtime pieces are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFiles {
    /// The ONNX Runtime library, if one was found.
    pub ort_library: Option<PathBuf>,
    /// The models folder (the backbone, the landmark and detector models), whether or not it
    /// exists yet.
    pub models_dir: PathBuf,
}

impl RuntimeFiles {
    /// Each piece from its explicit path when given, else from the first `vendor/` among
    /// `roots` that holds it (`vendor/onnxruntime/libonnxruntime.so`,
    /// `vendor/models/backbone.onnx`); a models folder found nowhere is `<first root>/vendor/models`.
    pub fn locate(
        ort_library: Option<PathBuf>,
        models_dir: Option<PathBuf>,
        roots: &[PathBuf],
    ) -> Self {
        let find = |rel: &str| {
            roots
                .iter()
                .map(|r| r.join("vendor").join(rel))
                .find(|p| p.is_file())
        };
        let ort_library = ort_library.or_else(|| find(&format!("onnxruntime/{ORT_LIB_FILE}")));
        let models_dir = models_dir.unwrap_or_else(|| {
            find(&format!("models/{BACKBONE_FILE}"))
                .and_then(|p| p.parent().map(Path::to_path_buf))
                .unwrap_or_else(|| {
                    roots
                        .first()
                        .cloned()
                        .unwrap_or_default()
                        .join("vendor")
                        .join("models")
                })
        });
        RuntimeFiles {
            ort_library,
            models_dir,
        }
    }

    /// The backbone in the models folder.
    pub fn backbone(&self) -> PathBuf {
        self.models_dir.join(BACKBONE_FILE)
    }
}

/// Folders that may hold `vendor/`, nearest first: the executable's folder and its two parents
/// (an installed layout), then `start` and its ancestors (the package folder cargo runs a
/// binary or a test from, inside the source tree).
pub fn search_roots(exe: Option<&Path>, start: Option<&Path>) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(exe) = exe {
        roots.extend(exe.ancestors().skip(1).take(3).map(Path::to_path_buf));
    }
    if let Some(start) = start {
        roots.extend(start.ancestors().map(Path::to_path_buf));
    }
    roots
}

/// The ONNX Runtime library beside the running executable (`vendor/onnxruntime/` in its folder
/// or one of its two parents), the fallback when a host named none.
pub fn ort_library_beside_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    RuntimeFiles::locate(None, None, &search_roots(exe.as_deref(), None)).ort_library
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_paths_win_and_vendor_is_found_among_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let pkg = root.join("shared").join("model");
        std::fs::create_dir_all(root.join("vendor/models")).unwrap();
        std::fs::create_dir_all(root.join("vendor/onnxruntime")).unwrap();
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(root.join("vendor/models").join(BACKBONE_FILE), b"x").unwrap();
        std::fs::write(root.join("vendor/onnxruntime").join(ORT_LIB_FILE), b"x").unwrap();
        let exe = dir.path().join("target/debug/twin");
        let roots = search_roots(Some(&exe), Some(&pkg));
        assert_eq!(roots[0], dir.path().join("target/debug"));
        let found = RuntimeFiles::locate(None, None, &roots);
        assert_eq!(found.models_dir, root.join("vendor/models"));
        assert_eq!(
            found.ort_library,
            Some(root.join("vendor/onnxruntime").join(ORT_LIB_FILE))
        );
        assert_eq!(
            found.backbone(),
            root.join("vendor/models").join(BACKBONE_FILE)
        );
        let explicit = RuntimeFiles::locate(Some("/x/lib.so".into()), Some("/m".into()), &roots);
        assert_eq!(explicit.ort_library, Some(PathBuf::from("/x/lib.so")));
        assert_eq!(explicit.models_dir, PathBuf::from("/m"));
        let none = RuntimeFiles::locate(None, None, &[dir.path().join("elsewhere")]);
        assert_eq!(none.ort_library, None);
        assert_eq!(none.models_dir, dir.path().join("elsewhere/vendor/models"));
    }
}
