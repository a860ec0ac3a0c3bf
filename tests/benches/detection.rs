//! Faces found, against the faces really there: the product's pipeline, the cascade alone and
//! dlib's HOG detector, in one table.
//!
//! `cargo bench -p twin-tests --bench detection` runs, on every still photo under
//! `data/media` and every image of `data/faces`:
//! - the product's photo pipeline (`FacePipeline::find_faces`, `PipelineOptions::default()`;
//!   faces it takes from the whole-image fallback are counted apart, not as found),
//! - the cascade alone: its first search as the pipeline runs it (`CascadeDetector`, default
//!   `DetectorParams`, at the pipeline's detection scale, faces from 60 px, its raw boxes), and
//!   all the cascade's searches in the pipeline's order (the pipeline with the CNN and the
//!   whole-image fallback turned off: when the first search finds nothing, the padded photo,
//!   then faces from 40 px, and the pipeline's other cascade searches if it has any),
//! - dlib's HOG detector as face_recognition runs it (`face_locations`, upsample 1, "hog"), from
//!   `reference/dlib_hog_faces.py` in the venv, started first and run beside ours.
//!
//! On the media photos the detections are paired with the faces of
//! `reference/media_faces.json` by the rule of `twin_tests::detection` (the detection's centre
//! inside the face's box, each face and detection used once): found, recall, false positives
//! (detections that find no face). On the face set (one identity's face in each image) a photo
//! counts as found when at least one face is detected; photos with more than one face are counted
//! apart (they may be real faces behind the subject). The media photos' misses and false
//! positives are listed with their boxes, and every detector's boxes on every image are written to
//! `<target>/detection/boxes.json` to look at. Numbers only: nothing is timed or asserted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use image::RgbImage;
use serde::{Deserialize, Serialize};
use twin_faces::detect::CascadeDetector;
use twin_faces::pipeline::{FacePipeline, FaceSource, FoundFace, PipelineOptions};
use twin_faces::Rect;
use twin_tests::detection::{match_faces, FaceBox, MediaTruth, MEDIA_TRUTH};
use twin_tests::{
    bench_requested, data_dir, face_crops, media_photos, repo_root, target_dir, venv_tool,
    SETUP_HINT,
};

/// The detectors, in the table's order.
const DETECTORS: [&str; 4] = [
    "pipeline (find_faces)",
    "cascade, first search",
    "cascade, all searches",
    "dlib HOG (upsample 1)",
];

/// What the detectors found in one image.
#[derive(Debug, Clone, Serialize)]
struct Found {
    image: String,
    /// Boxes per detector, in [`DETECTORS`]' order.
    boxes: Vec<Vec<FaceBox>>,
    /// The path that found the pipeline's first face (`whole_image`: taken whole, not found).
    pipeline_source: Option<FaceSource>,
}

/// One image of the HOG script's output.
#[derive(Debug, Deserialize)]
struct HogImage {
    image: PathBuf,
    boxes: Vec<FaceBox>,
}

fn face_box(r: &Rect) -> FaceBox {
    [r.left, r.top, r.right, r.bottom]
}

/// The product's detectors on one image, in [`DETECTORS`]' order (without HOG).
struct Ours {
    pipeline: FacePipeline,
    cascade: CascadeDetector,
    cascade_searches: FacePipeline,
}

impl Ours {
    fn open(models: &Path) -> Ours {
        let defaults = PipelineOptions::default();
        let pipeline =
            FacePipeline::open(models, &defaults).unwrap_or_else(|e| panic!("{e}: {SETUP_HINT}"));
        let cascade = CascadeDetector::open(&defaults.cascade, defaults.detector.clone())
            .unwrap_or_else(|e| panic!("{e}: {SETUP_HINT}"));
        let searches = PipelineOptions {
            cnn_fallback: false,
            cnn_boxes: false,
            whole_image_max_side: 0,
            ..defaults
        };
        let cascade_searches =
            FacePipeline::open(models, &searches).unwrap_or_else(|e| panic!("{e}: {SETUP_HINT}"));
        Ours {
            pipeline,
            cascade,
            cascade_searches,
        }
    }

    fn run(&self, img: &RgbImage) -> (Vec<Vec<FaceBox>>, Option<FaceSource>) {
        let faces = self.pipeline.find_faces(img).expect("pipeline");
        let source = faces.first().map(|f| f.source);
        let detected = |faces: &[FoundFace]| -> Vec<FaceBox> {
            faces
                .iter()
                .filter(|f| f.source != FaceSource::WholeImage)
                .map(|f| face_box(&f.rect))
                .collect()
        };
        let scale = self.cascade.detection_scale(img.width().max(img.height()));
        let first: Vec<FaceBox> = self
            .cascade
            .detect_at(img, scale)
            .expect("cascade")
            .iter()
            .map(|d| [d.x, d.y, d.x + d.w - 1, d.y + d.h - 1])
            .collect();
        let searches = self.cascade_searches.find_faces(img).expect("cascade");
        (vec![detected(&faces), first, detected(&searches)], source)
    }
}

/// Starts the HOG reference on `images`, writing into `dir`.
fn spawn_hog(images: &[PathBuf], dir: &Path) -> (Child, PathBuf) {
    let python = venv_tool("python");
    assert!(
        python.is_file(),
        "{} is missing: {SETUP_HINT}",
        python.display()
    );
    let list = dir.join("images.txt");
    let mut text = String::new();
    for p in images {
        text.push_str(p.to_str().expect("UTF-8 path"));
        text.push('\n');
    }
    std::fs::write(&list, text).expect("write the image list");
    let out = dir.join("hog.json");
    let root = repo_root();
    let child = Command::new(&python)
        .env("PYTHONPATH", root.join("tests/reference/fr_shim"))
        .arg(root.join("tests/reference/dlib_hog_faces.py"))
        .arg(&out)
        .arg("--list")
        .arg(&list)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", python.display()));
    (child, out)
}

fn wait_hog(child: Child, out: &Path, images: &[PathBuf]) -> Vec<Vec<FaceBox>> {
    let done = child
        .wait_with_output()
        .expect("wait for the HOG reference");
    assert!(
        done.status.success(),
        "the HOG reference failed ({}; {SETUP_HINT}):\n{}",
        done.status,
        String::from_utf8_lossy(&done.stderr).trim()
    );
    let text = std::fs::read(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let hog: Vec<HogImage> =
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    assert_eq!(hog.len(), images.len(), "one HOG answer per image");
    hog.into_iter()
        .zip(images)
        .map(|(h, p)| {
            assert_eq!(&h.image, p, "HOG answers in the order asked");
            h.boxes
        })
        .collect()
}

fn percent(n: usize, of: usize) -> f64 {
    if of == 0 {
        0.0
    } else {
        100.0 * n as f64 / of as f64
    }
}

fn main() {
    if !bench_requested("detection") {
        return;
    }
    let models = twin_tests::models_dir();
    let data = data_dir();
    let media_dir = data.join("media");
    let truth = MediaTruth::load();
    let media = media_photos();
    let names: Vec<String> = media
        .iter()
        .map(|p| {
            p.strip_prefix(&media_dir)
                .expect("under media")
                .to_str()
                .expect("UTF-8 path")
                .to_string()
        })
        .collect();
    let by_name: BTreeMap<&str, &[_]> = truth
        .photos
        .iter()
        .map(|p| (p.photo.as_str(), p.faces.as_slice()))
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !by_name.contains_key(n.as_str()))
        .collect();
    assert!(
        missing.is_empty() && by_name.len() == names.len(),
        "{MEDIA_TRUTH} must list exactly the photos under {}; not listed: {missing:?}",
        media_dir.display()
    );
    let crops = face_crops(usize::MAX);

    let tmp = tempfile::tempdir().expect("temporary folder");
    let all: Vec<PathBuf> = media.iter().chain(&crops).cloned().collect();
    let (hog_child, hog_out) = spawn_hog(&all, tmp.path());

    let ours = Ours::open(&models);
    let mut found: Vec<Found> = all
        .iter()
        .map(|path| {
            let img = twin_faces::imageio::decode_file(path, &Default::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let (boxes, pipeline_source) = ours.run(&img);
            Found {
                image: twin_tests::data_label(path),
                boxes,
                pipeline_source,
            }
        })
        .collect();
    for (f, hog) in found.iter_mut().zip(wait_hog(hog_child, &hog_out, &all)) {
        f.boxes.push(hog);
    }
    let (on_media, on_crops) = found.split_at(media.len());

    // Media photos against the ground truth.
    let faces: usize = by_name.values().map(|f| f.len()).sum();
    let clear: usize = by_name
        .values()
        .flat_map(|f| f.iter())
        .filter(|f| f.flags.is_empty())
        .count();
    println!(
        "media: {} photos, {faces} faces ({clear} clear, {} partial or turned); a face is found by a detection centred inside its box",
        media.len(),
        faces - clear
    );
    println!(
        "{:<26} {:>7} {:>8} {:>13} {:>16}",
        "detector", "found", "recall", "clear found", "false positives"
    );
    let mut notes = Vec::new();
    for (k, name) in DETECTORS.iter().enumerate() {
        let (mut hit, mut hit_clear, mut false_pos) = (0, 0, 0);
        for (f, photo) in on_media.iter().zip(&names) {
            let truth = by_name[photo.as_str()];
            let boxes: Vec<FaceBox> = truth.iter().map(|t| t.bbox).collect();
            let matched = match_faces(&boxes, &f.boxes[k]);
            for (t, m) in truth.iter().zip(&matched) {
                match m {
                    Some(_) => {
                        hit += 1;
                        hit_clear += usize::from(t.flags.is_empty());
                    }
                    None => notes.push(format!(
                        "  {name}: missed {photo} {:?} {:?}",
                        t.bbox, t.flags
                    )),
                }
            }
            for (d, b) in f.boxes[k].iter().enumerate() {
                if !matched.contains(&Some(d)) {
                    false_pos += 1;
                    notes.push(format!("  {name}: false positive {photo} {b:?}"));
                }
            }
        }
        println!(
            "{:<26} {:>7} {:>7.1}% {:>13} {:>16}",
            name,
            format!("{hit}/{faces}"),
            percent(hit, faces),
            format!("{hit_clear}/{clear}"),
            false_pos
        );
    }
    if !notes.is_empty() {
        println!("misses and false positives on media:");
        for n in &notes {
            println!("{n}");
        }
    }

    // The face set: one identity's face in each image.
    let whole = on_crops
        .iter()
        .filter(|f| f.pipeline_source == Some(FaceSource::WholeImage))
        .count();
    println!();
    println!(
        "face set: {} images (one identity's face in each; the pipeline took {whole} whole, counted as not found)",
        crops.len()
    );
    println!(
        "{:<26} {:>13} {:>8} {:>23}",
        "detector", "face found", "recall", "more than one face"
    );
    for (k, name) in DETECTORS.iter().enumerate() {
        let hit = on_crops.iter().filter(|f| !f.boxes[k].is_empty()).count();
        let several = on_crops.iter().filter(|f| f.boxes[k].len() > 1).count();
        println!(
            "{:<26} {:>13} {:>7.1}% {:>23}",
            name,
            format!("{hit}/{}", crops.len()),
            percent(hit, crops.len()),
            several
        );
    }

    let mut paths: BTreeMap<FaceSource, usize> = BTreeMap::new();
    for s in on_crops.iter().filter_map(|f| f.pipeline_source) {
        *paths.entry(s).or_default() += 1;
    }
    let paths: Vec<String> = paths
        .iter()
        .map(|(s, n)| {
            let name = serde_json::to_value(s).expect("a source's name");
            format!("{} {n}", name.as_str().unwrap_or_default())
        })
        .collect();
    println!(
        "the pipeline's first face on the face set, by path: {}",
        paths.join(", ")
    );

    let dir = target_dir().join("detection");
    std::fs::create_dir_all(&dir).expect("create the report folder");
    let report = dir.join("boxes.json");
    let body = serde_json::json!({ "detectors": DETECTORS, "images": found });
    std::fs::write(&report, serde_json::to_vec(&body).expect("JSON")).expect("write the boxes");
    println!();
    println!("every detector's boxes: {}", report.display());
}
