//! Shared pieces of Twin Matcher's integration tests and benchmarks.
//!
//! The embedding engine in `twin-core` is checked against dlib itself: `reference/dlib_oracle.py`,
//! run with the Python venv that `scripts/setup` makes, cuts aligned 150×150 chips with dlib and
//! computes dlib's 128-d descriptors of them (or times dlib on given chips). This crate finds the
//! pieces (venv, script, dlib model files, the imported backbone, the test photos), runs the
//! script and reads what it wrote. A missing piece is a panic that names `scripts/setup`, never a
//! skipped test. Nothing here prints pixels or embeddings; only paths, counts and differences.
//! [`moto`] runs a real S3/SQS protocol server for the AWS adapters' tests, and [`deploy`] puts
//! the SAM template on it with IAM enforced. [`detection`] holds the faces really in the media
//! photos and the rule that pairs a detector's boxes with them.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use twin_core::rows::RowEncoding;

use image::RgbImage;
use serde::Deserialize;

pub mod deploy;
pub mod detection;
pub mod events;
pub mod fuzz;
pub mod lambda;
pub mod moto;
pub mod parquet;
pub mod resources;
pub mod synthetic;

/// What a failure caused by a missing piece tells the reader to do.
pub const SETUP_HINT: &str = "run scripts/setup from the repository root";
/// Environment variable that overrides where the test photos are (default `<root>/../shared/data`).
pub const DATA_ENV: &str = "TWIN_TEST_DATA";
/// dlib's face-recognition network file, in `vendor/models`.
pub const RECOGNITION_DAT: &str = "dlib_face_recognition_resnet_model_v1.dat";
/// dlib's 5-point landmark model file, in `vendor/models`.
pub const LANDMARKS_DAT: &str = "shape_predictor_5_face_landmarks.dat";
/// Length of a dlib face descriptor.
pub const DESCRIPTOR_LEN: usize = 128;

/// The workspace root of the tests running now: the nearest folder holding `Cargo.lock` above
/// the package cargo runs them from (`CARGO_MANIFEST_DIR` as cargo sets it at run time, so a
/// build kept from another checkout still finds this one).
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .expect("cargo runs tests from their package folder");
    start
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or_else(|| panic!("no workspace (Cargo.lock) above {}", start.display()))
        .to_path_buf()
}

/// Cargo's build folder (`CARGO_TARGET_DIR`, else `target/` in the checkout): where tests keep
/// what they leave for people to look at.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The runtime pieces `scripts/setup` put in this workspace's `vendor/` (or those
/// `ORT_DYLIB_PATH` and `TWIN_MODELS_DIR` name), with ONNX Runtime loaded from there. Every test
/// that embeds calls this first.
pub fn runtime() -> twin_core::paths::RuntimeFiles {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let files = twin_core::paths::RuntimeFiles::locate(
        env(twin_core::paths::ORT_LIB_ENV),
        env(twin_core::paths::MODELS_DIR_ENV),
        &[repo_root()],
    );
    let library = files
        .ort_library
        .clone()
        .unwrap_or_else(|| panic!("ONNX Runtime is missing: {SETUP_HINT}"));
    twin_model::embed::init_runtime(Some(&library)).unwrap_or_else(|e| panic!("{e}: {SETUP_HINT}"));
    files
}

/// The models folder (see [`runtime`]), with the backbone, the landmark model and the detector
/// in it. Panics when one is missing.
pub fn models_dir() -> PathBuf {
    let d = runtime().models_dir;
    for f in [
        twin_core::paths::BACKBONE_FILE,
        LANDMARKS_DAT,
        "mmod_human_face_detector.dat",
    ] {
        assert!(
            d.join(f).is_file(),
            "{} is missing; {SETUP_HINT}",
            d.join(f).display()
        );
    }
    d
}

/// The shared test data: `$TWIN_TEST_DATA`, else `<root>/../shared/data`. Panics when absent.
pub fn data_dir() -> PathBuf {
    let dir = std::env::var_os(DATA_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("..").join("shared").join("data"));
    assert!(
        dir.join("media").is_dir() && dir.join("faces").is_dir(),
        "test data not found: {} must hold media/ and faces/ (set {DATA_ENV} to another copy)",
        dir.display()
    );
    dir.canonicalize().unwrap_or(dir)
}

fn is_photo(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(OsStr::to_str)
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            walk(&path, out);
        } else if is_photo(&path) {
            out.push(path);
        }
    }
}

/// Every photo (jpg, jpeg, png) under `data/media`, recursively, in path order.
pub fn media_photos() -> Vec<PathBuf> {
    let dir = data_dir().join("media");
    let mut photos = Vec::new();
    walk(&dir, &mut photos);
    photos.sort();
    assert!(!photos.is_empty(), "no photos under {}", dir.display());
    photos
}

/// A deterministic spread of `per_identity` face crops from every identity in `data/faces`:
/// identities in name order; within one, files in numeric order, taking positions
/// `i·N/per_identity` for `i` in `0..per_identity` (all files when fewer).
pub fn face_crops(per_identity: usize) -> Vec<PathBuf> {
    let dir = data_dir().join("faces");
    let mut identities: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    identities.sort();
    let mut picked = Vec::new();
    for identity in identities {
        let mut files = Vec::new();
        walk(&identity, &mut files);
        files.sort_by_key(|p| {
            let stem = p
                .file_stem()
                .and_then(OsStr::to_str)
                .unwrap_or_default()
                .to_owned();
            (stem.parse::<u64>().unwrap_or(u64::MAX), stem)
        });
        let n = files.len();
        if n <= per_identity {
            picked.extend(files);
        } else {
            picked.extend((0..per_identity).map(|i| files[i * n / per_identity].clone()));
        }
    }
    assert!(!picked.is_empty(), "no face crops under {}", dir.display());
    picked
}

/// A path relative to the test data folder, for messages.
pub fn data_label(path: &Path) -> String {
    let data = data_dir();
    path.strip_prefix(&data)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The imported backbone (in [`runtime`]'s models folder, ONNX Runtime loaded). Panics when it
/// is missing.
pub fn require_backbone() -> PathBuf {
    let path = runtime().backbone();
    assert!(
        path.is_file(),
        "the imported backbone {} is missing; {SETUP_HINT} (it imports dlib's network into ONNX)",
        path.display()
    );
    path
}

/// Loads a chip PNG as 8-bit RGB. Panics with the path on failure.
pub fn load_chip(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("cannot read chip {}: {e}", path.display()))
        .to_rgb8()
}

/// Largest absolute difference between two vectors of the same length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Euclidean distance between two vectors of the same length (in f64).
pub fn euclidean(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "vectors of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// How the reference cuts chips.
#[derive(Debug, Clone)]
pub struct CutOptions {
    /// Black border added before detection, as a fraction of the image's larger side.
    pub pad: f64,
    /// HOG detector upsampling.
    pub upsample: u32,
    /// Whether to compute dlib's descriptor of every chip.
    pub descriptors: bool,
}

impl CutOptions {
    /// Whole photos: no border, upsample 1, with descriptors.
    pub fn photos() -> Self {
        CutOptions {
            pad: 0.0,
            upsample: 1,
            descriptors: true,
        }
    }

    /// Tight face crops: a border of a quarter of the side, upsample 1, with descriptors.
    pub fn tight_crops() -> Self {
        CutOptions {
            pad: 0.25,
            upsample: 1,
            descriptors: true,
        }
    }
}

/// One face the reference found, as `oracle.json` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct OracleChip {
    /// The source image, as given to the script.
    pub image: PathBuf,
    /// Index of the face in that image (dlib's detection order).
    pub face: usize,
    /// The aligned 150×150 chip, saved losslessly.
    pub chip_png: PathBuf,
    /// dlib's descriptor of the chip, when asked for.
    #[serde(default)]
    pub descriptor: Option<Vec<f32>>,
}

/// What one run of the reference wrote (`oracle.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct OracleRun {
    /// dlib's version.
    pub dlib_version: String,
    /// Number of images given.
    pub images: usize,
    /// Images in which dlib found no face.
    pub images_without_face: Vec<PathBuf>,
    /// Every face found, in image order.
    pub chips: Vec<OracleChip>,
}

/// One row of the reference's `--bench` output.
#[derive(Debug, Clone, Deserialize)]
pub struct DlibTiming {
    /// Chips per call (1 = the single aligned-chip overload).
    pub batch: usize,
    /// Chips described.
    pub chips: usize,
    /// Wall-clock seconds for all of them.
    pub seconds: f64,
    /// Throughput.
    pub chips_per_s: f64,
    /// Median milliseconds per chip over the calls.
    pub ms_per_chip_median: f64,
    /// Process CPU time over wall time (about 1 when dlib runs on one thread).
    pub cpu_per_wall: f64,
}

/// The reference's `--bench` output.
#[derive(Debug, Clone, Deserialize)]
pub struct DlibBench {
    /// dlib's version.
    pub dlib_version: String,
    /// Whether this dlib build uses AVX.
    pub dlib_avx: bool,
    /// One row per batch size.
    pub results: Vec<DlibTiming>,
}

/// The dlib reference: the venv's Python, `tests/reference/dlib_oracle.py` and dlib's model files.
#[derive(Debug, Clone)]
pub struct Oracle {
    /// The venv's Python interpreter.
    pub python: PathBuf,
    /// The reference script.
    pub script: PathBuf,
    /// Folder holding the dlib `.dat` files.
    pub models: PathBuf,
}

/// A reference run in progress (see [`Oracle::spawn_cut`]).
pub struct CutJob {
    child: Child,
    out: PathBuf,
    what: String,
}

impl Oracle {
    /// Finds the reference and checks that dlib and its model files load. Panics, naming
    /// `scripts/setup`, when the venv, dlib, or a model file is missing.
    pub fn require() -> Oracle {
        let root = repo_root();
        let python = venv_tool("python");
        assert!(
            python.is_file(),
            "the Python venv with dlib is missing ({} does not exist); {SETUP_HINT}",
            python.display()
        );
        let script = repo_root()
            .join("tests")
            .join("reference")
            .join("dlib_oracle.py");
        assert!(
            script.is_file(),
            "the reference script {} is missing",
            script.display()
        );
        let models = root.join("vendor").join("models");
        for dat in [RECOGNITION_DAT, LANDMARKS_DAT] {
            let path = models.join(dat);
            assert!(
                path.is_file(),
                "dlib model file {} is missing; {SETUP_HINT}",
                path.display()
            );
        }
        let oracle = Oracle {
            python,
            script,
            models,
        };
        let out = oracle
            .command()
            .arg("--check")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {}: {e}; {SETUP_HINT}", oracle.python.display())
            });
        assert!(
            out.status.success(),
            "the dlib reference does not work ({}):\n{}\n{SETUP_HINT}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        oracle
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script).arg("--models").arg(&self.models);
        // dlib as shipped by dlib-bin has no BLAS; keep any numeric library single-threaded too,
        // so the reference is measured the way our engine is (one thread).
        for var in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"] {
            cmd.env(var, "1");
        }
        cmd
    }

    fn write_list(path: &Path, files: &[PathBuf]) {
        let mut list = String::new();
        for f in files {
            let s = f
                .to_str()
                .unwrap_or_else(|| panic!("path is not UTF-8: {}", f.display()));
            assert!(!s.contains('\n'), "path contains a newline: {s:?}");
            writeln!(list, "{s}").expect("write to a string");
        }
        std::fs::write(path, list)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Starts cutting chips (and computing dlib's descriptors) from `images` into `out`.
    pub fn spawn_cut(&self, out: &Path, images: &[PathBuf], options: &CutOptions) -> CutJob {
        std::fs::create_dir_all(out)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
        let list = out.join("images.txt");
        Self::write_list(&list, images);
        let mut cmd = self.command();
        cmd.arg("--out")
            .arg(out)
            .arg("--pad")
            .arg(options.pad.to_string())
            .arg("--upsample")
            .arg(options.upsample.to_string())
            .arg("--list")
            .arg(&list);
        if !options.descriptors {
            cmd.arg("--no-descriptor");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", self.python.display()));
        CutJob {
            child,
            out: out.to_path_buf(),
            what: format!("{} images into {}", images.len(), out.display()),
        }
    }

    /// Times dlib's `compute_face_descriptor` on `chips` for each batch size, after `warmup` calls.
    pub fn bench(
        &self,
        chips: &[PathBuf],
        batch_sizes: &[usize],
        warmup: usize,
        rounds: usize,
    ) -> DlibBench {
        let dir = tempfile::tempdir().expect("temporary folder");
        let list = dir.path().join("chips.txt");
        Self::write_list(&list, chips);
        let sizes: Vec<String> = batch_sizes.iter().map(usize::to_string).collect();
        let out = self
            .command()
            .arg("--bench")
            .arg("--warmup")
            .arg(warmup.to_string())
            .arg("--rounds")
            .arg(rounds.to_string())
            .arg("--batch-sizes")
            .arg(sizes.join(","))
            .arg("--list")
            .arg(&list)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", self.python.display()));
        assert!(
            out.status.success(),
            "dlib reference --bench failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "cannot parse the --bench output ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

impl CutJob {
    /// Waits for the run and reads its `oracle.json`. Panics with the script's message on failure.
    pub fn wait(self) -> OracleRun {
        let out = self
            .child
            .wait_with_output()
            .expect("wait for the dlib reference");
        assert!(
            out.status.success(),
            "the dlib reference failed on {} ({}):\n{}\n(if dlib or its models are missing: {SETUP_HINT})",
            self.what,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let path = self.out.join("oracle.json");
        let text =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let run: OracleRun = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("cannot parse {}: {e}", path.display()));
        for chip in &run.chips {
            if let Some(d) = &chip.descriptor {
                assert!(
                    d.len() == DESCRIPTOR_LEN && d.iter().all(|v| v.is_finite()),
                    "dlib's descriptor for {} face {} is not {DESCRIPTOR_LEN} finite values",
                    chip.image.display(),
                    chip.face
                );
            }
        }
        run
    }
}

/// The median of `v` (the mean of the two middle values for an even count); NaN sorts last.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Whether this bench target was started by `cargo bench` (which passes `--bench`).
/// `cargo test --benches` runs bench targets without it: then there is nothing to check, and
/// this says how to run the benchmark `name` instead.
pub fn bench_requested(name: &str) -> bool {
    let requested = std::env::args().any(|a| a == "--bench");
    if !requested {
        println!("{name}: a benchmark; run it with `cargo bench -p twin-tests --bench {name}`");
    }
    requested
}

/// `%XX` sequences decoded (URL paths and query values; invalid UTF-8 replaced).
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `<repo>/.venv/bin/<name>`: a tool of the Python venv scripts/setup makes (it may be absent).
pub fn venv_tool(name: &str) -> PathBuf {
    repo_root().join(".venv").join("bin").join(name)
}

/// What a stored object keeps of an erased person: `Some` with the reason when its key or its
/// content names one of `words`, or its content holds the first 8 values of one of `rows` as
/// the dataset stores them (little-endian binary16 in format 4, `f32` before); `None` when it
/// keeps nothing.
pub fn leak(key: &str, body: &[u8], words: &[&str], rows: &[Vec<f32>]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    if let Some(w) = words.iter().find(|w| key.contains(*w) || text.contains(*w)) {
        return Some(format!("{key} (names {w})"));
    }
    let holds = rows.iter().any(|r| {
        let first = &r[..r.len().min(8)];
        [RowEncoding::F16, RowEncoding::F32].iter().any(|e| {
            let needle = e.encode(first);
            body.windows(needle.len()).any(|w| w == &needle[..])
        })
    });
    holds.then(|| format!("{key} (holds an embedding)"))
}

#[cfg(test)]
mod leak_tests {
    use super::*;

    #[test]
    fn a_row_is_found_in_either_encoding_and_nowhere_else() {
        let row: Vec<f32> = (0..128).map(|i| (i as f32 * 0.37).sin() * 0.4).collect();
        // As the dataset reads it back from a format-4 segment.
        let stored = RowEncoding::F16
            .decode(&RowEncoding::F16.encode(&row))
            .unwrap();
        let other: Vec<f32> = stored.iter().map(|v| v + 0.01).collect();
        for (encoding, values) in [(RowEncoding::F16, &stored), (RowEncoding::F32, &row)] {
            let mut body = b"header".to_vec();
            body.extend(encoding.encode(values));
            assert!(leak("k", &body, &[], std::slice::from_ref(values)).is_some());
            assert!(leak("k", &body, &[], std::slice::from_ref(&other)).is_none());
        }
        assert!(leak("crops/ada/0.png", b"", &["ada"], &[]).is_some());
    }
}
