//! twin-core's face alignment against dlib itself.
//!
//! `tests/reference/dlib_landmarks.py` runs dlib (from the project's venv) over the media photos:
//! HOG detector (upsample 1), the 5-point shape predictor on each box (and on three shifted or
//! rescaled variants of it), `get_face_chip(.., 150, 0.25)` on each landmark set. Box by box, our
//! landmarks must be within ±1 px of dlib's, and our chip from dlib's landmarks within 1 grey
//! level of dlib's chip. Both sides read the same decoded
//! pixels (the script saves what it gave dlib as PNG), so JPEG decoders do not enter into it.
//!
//! Nothing here is skipped: a missing venv, model or photo folder fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::RgbImage;
use serde_json::Value;
use twin_faces::{face_chip, Point, Rect, ShapePredictor, ShapePredictorError};

/// Where the test's inputs live, each checked to exist.
struct Inputs {
    root: PathBuf,
    model: PathBuf,
}

fn inputs() -> Inputs {
    let root = twin_tests::repo_root();
    let model = twin_tests::models_dir().join("shape_predictor_5_face_landmarks.dat");
    assert!(
        model.is_file(),
        "the 5-point landmark model is missing: {} does not exist (scripts/setup puts it there)",
        model.display()
    );
    Inputs { root, model }
}

fn json_i64(v: &Value, what: &str) -> i64 {
    v.as_i64()
        .unwrap_or_else(|| panic!("reference.json: {what} is not an integer: {v}"))
}

fn json_points(v: &Value) -> [Point; 5] {
    let a = v
        .as_array()
        .expect("reference.json: landmarks is not a list");
    assert_eq!(
        a.len(),
        5,
        "reference.json: expected 5 landmarks, got {}",
        a.len()
    );
    std::array::from_fn(|i| {
        Point::new(
            json_i64(&a[i][0], "landmark x"),
            json_i64(&a[i][1], "landmark y"),
        )
    })
}

fn json_rect(v: &Value) -> Rect {
    let e = |i: usize| json_i64(&v[i], "box edge");
    Rect::new(e(0), e(1), e(2), e(3))
}

fn load_rgb(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .to_rgb8()
}

#[test]
fn the_model_file_is_read_to_its_last_byte() {
    let Inputs { model, .. } = inputs();
    let p = ShapePredictor::open(&model).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.num_levels(), 15);
    assert_eq!(p.num_trees(), 15 * 500);
    assert_eq!(p.num_feature_pixels(), 15 * 800);

    let bytes = std::fs::read(&model).unwrap();
    // One byte more: refused at exactly the end of the real content.
    let mut longer = bytes.clone();
    longer.push(0);
    match ShapePredictor::from_bytes(&longer) {
        Err(ShapePredictorError::Format { source, .. }) => {
            assert_eq!(source.offset, bytes.len(), "{source}");
            assert!(
                source
                    .to_string()
                    .contains("expected the end of the shape predictor, found 1 more bytes"),
                "{source}"
            );
        }
        other => {
            panic!("a model with a trailing byte was not refused as a format error: {other:?}")
        }
    }
    // One byte less: refused, naming a byte inside the file.
    match ShapePredictor::from_bytes(&bytes[..bytes.len() - 1]) {
        Err(ShapePredictorError::Format { source, .. }) => {
            assert!(source.offset < bytes.len(), "{source}")
        }
        other => panic!("a truncated model was not refused as a format error: {other:?}"),
    }
}

#[test]
fn landmarks_and_chips_match_dlib() {
    let Inputs { root, model } = inputs();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "the reference venv is missing: {} does not exist (scripts/setup creates it with dlib-bin)",
        python.display()
    );
    let media = twin_tests::data_dir().join("media");
    assert!(
        media.is_dir(),
        "the reference photos are missing: {} is not a folder",
        media.display()
    );
    let media = media.canonicalize().unwrap();
    // The media folder and every folder below it (test_images/, knn_examples/...).
    let mut folders = vec![media.clone()];
    let mut i = 0;
    while i < folders.len() {
        let mut below: Vec<PathBuf> = std::fs::read_dir(&folders[i])
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        below.sort();
        folders.extend(below);
        i += 1;
    }
    assert!(
        folders.iter().any(|f| f.ends_with("test_images")),
        "the reference photos are missing: no test_images folder under {}",
        media.display()
    );
    let script = root.join("tests/reference/dlib_landmarks.py");
    let out = tempfile::tempdir().expect("temp dir");

    let run = Command::new(&python)
        .arg(&script)
        .arg(out.path())
        .arg("--model")
        .arg(&model)
        .args(&folders)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()));
    assert!(
        run.status.success(),
        "the dlib reference script failed ({}):\n{}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    println!("{}", String::from_utf8_lossy(&run.stdout).trim());

    let reference: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("reference.json")).unwrap())
            .expect("reference.json is not JSON");
    let images = reference["images"]
        .as_array()
        .expect("reference.json: images is not a list");
    assert!(
        images.len() >= 10,
        "expected the media photos, the script saw {}",
        images.len()
    );

    let predictor = ShapePredictor::open(&model).unwrap_or_else(|e| panic!("{e}"));
    let (mut faces, mut detected) = (0usize, 0usize);
    let (mut landmarks_exact, mut worst_landmark) = (0usize, (0i64, String::new()));
    let (mut chips_exact, mut worst_chip) = (0usize, (0i32, String::new()));
    let mut failures = Vec::new();

    for im in images {
        let source = im["source"].as_str().expect("source");
        let img = load_rgb(&out.path().join(im["decoded"].as_str().expect("decoded")));
        assert_eq!(
            (img.width() as i64, img.height() as i64),
            (
                json_i64(&im["width"], "width"),
                json_i64(&im["height"], "height")
            ),
            "{source}: decoded size"
        );
        for (j, face) in im["faces"].as_array().expect("faces").iter().enumerate() {
            faces += 1;
            let kind = face["kind"].as_str().expect("kind");
            detected += (kind == "detected") as usize;
            let name = format!("{source} box {j} ({kind})");
            let rect = json_rect(&face["box"]);
            let theirs = json_points(&face["landmarks"]);

            let ours = predictor.predict(&img, rect);
            let diff = ours
                .iter()
                .zip(&theirs)
                .map(|(a, b)| (a.x - b.x).abs().max((a.y - b.y).abs()))
                .max()
                .unwrap();
            if diff == 0 {
                landmarks_exact += 1;
            }
            if diff > worst_landmark.0 {
                worst_landmark = (diff, name.clone());
            }
            if diff > 1 {
                failures.push(format!("{name} box {rect:?}: landmarks off by {diff} px: ours {ours:?}, dlib {theirs:?}"));
            }

            let dlib_chip = load_rgb(&out.path().join(face["chip"].as_str().expect("chip")));
            let chip = face_chip(&img, &theirs);
            assert_eq!(
                chip.dimensions(),
                dlib_chip.dimensions(),
                "{name}: chip size"
            );
            let (max, differing) = chip
                .as_raw()
                .iter()
                .zip(dlib_chip.as_raw())
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .fold((0, 0usize), |(m, n), d| (m.max(d), n + (d != 0) as usize));
            if max == 0 {
                chips_exact += 1;
            }
            if max > worst_chip.0 {
                worst_chip = (max, name.clone());
            }
            if max > 1 {
                failures.push(format!("{name}: chip differs from dlib's by up to {max} ({differing} channel values differ)"));
            }
        }
    }

    let at = |name: &str| {
        if name.is_empty() {
            String::new()
        } else {
            format!(" at {name}")
        }
    };
    println!(
        "compared: {detected} detected faces + {} box variants = {faces} boxes",
        faces - detected
    );
    println!(
        "landmarks: {landmarks_exact}/{faces} identical to dlib; max difference {} px{}",
        worst_landmark.0,
        at(&worst_landmark.1)
    );
    println!(
        "chips: {chips_exact}/{faces} bit-identical to dlib; max difference {} grey levels{}",
        worst_chip.0,
        at(&worst_chip.1)
    );
    assert!(
        detected >= 10,
        "dlib found only {detected} faces in the media photos; expected at least 10"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches with dlib:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
