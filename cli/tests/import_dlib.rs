//! `twin model import-dlib` on the real dlib model and on damaged or wrong files.

use std::path::PathBuf;
use std::process::Command;

fn models_dir() -> PathBuf {
    let dir = twin_tests::models_dir();
    let dat = dir.join("dlib_face_recognition_resnet_model_v1.dat");
    assert!(
        dat.is_file(),
        "{} is missing: run scripts/setup",
        dat.display()
    );
    dir
}

fn resnet_dat() -> Vec<u8> {
    std::fs::read(models_dir().join("dlib_face_recognition_resnet_model_v1.dat")).unwrap()
}

/// Runs the importer on `bytes`; returns (success, stderr, files left in the output folder).
fn import(bytes: &[u8]) -> (bool, String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let dat = dir.path().join("input.dat");
    std::fs::write(&dat, bytes).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["model", "import-dlib"])
        .arg(&dat)
        .arg("-o")
        .arg(out_dir.join("backbone.onnx"))
        .output()
        .unwrap();
    let left: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        left,
    )
}

fn assert_refused(bytes: &[u8], expect_in_message: &[&str]) -> String {
    let (ok, stderr, left) = import(bytes);
    assert!(!ok, "import should fail; stderr: {stderr}");
    assert!(
        left.is_empty(),
        "files left behind after a failed import: {left:?}"
    );
    for want in expect_in_message {
        assert!(
            stderr.contains(want),
            "message should mention {want:?}: {stderr}"
        );
    }
    stderr
}

#[test]
fn imports_the_real_model() {
    let (ok, stderr, left) = import(&resnet_dat());
    assert!(ok, "import failed: {stderr}");
    assert_eq!(left, vec!["backbone.onnx".to_string()]);
    assert!(
        stderr.contains("5614592 weights"),
        "summary should count the weights: {stderr}"
    );
    assert!(stderr.contains("14 residual blocks"), "{stderr}");
}

#[test]
fn refuses_an_empty_file() {
    assert_refused(&[], &["empty"]);
}

#[test]
fn refuses_a_truncated_file() {
    let dat = resnet_dat();
    let stderr = assert_refused(&dat[..dat.len() / 2], &["end of file", "at byte"]);
    assert!(
        stderr.contains("not dlib's face-recognition ResNet"),
        "{stderr}"
    );
    // Also one byte short: the very last tensor record is incomplete.
    assert_refused(&dat[..dat.len() - 1], &["end of file"]);
}

#[test]
fn refuses_trailing_bytes() {
    let mut dat = resnet_dat();
    dat.extend_from_slice(b"extra");
    assert_refused(&dat, &["5 more bytes"]);
}

#[test]
fn refuses_flipped_bytes_in_the_loss_header() {
    let mut dat = resnet_dat();
    // Bytes 4..17 hold the loss layer's name, "loss_metric_2".
    assert_eq!(&dat[4..17], b"loss_metric_2");
    for b in &mut dat[4..8] {
        *b = !*b;
    }
    assert_refused(&dat, &["at byte 2", "loss layer name"]);
}

#[test]
fn refuses_flipped_bytes_in_a_layer_header() {
    let mut dat = resnet_dat();
    // The first con layer record after the input layer: its name "con_4" is the first one in the file.
    let pos = dat
        .windows(5)
        .position(|w| w == b"con_4")
        .expect("a con_4 record");
    for b in &mut dat[pos..pos + 3] {
        *b ^= 0x5a;
    }
    let stderr = assert_refused(&dat, &["stem con layer name", "at byte"]);
    assert!(
        stderr.contains(&format!("at byte {}", pos - 2)),
        "offset of the bad record: {stderr}"
    );
}

#[test]
fn refuses_a_flipped_version_number() {
    let mut dat = resnet_dat();
    // The fc layer's version number (2) follows the loss record: 01 02 at bytes 29..31.
    assert_eq!(&dat[29..31], &[0x01, 0x02]);
    dat[30] = 0x07;
    assert_refused(&dat, &["fc layer version = 2", "found 7"]);
}

#[test]
fn refuses_the_five_point_landmark_model() {
    let sp = std::fs::read(models_dir().join("shape_predictor_5_face_landmarks.dat"))
        .expect("run scripts/setup");
    assert_refused(&sp, &["shape predictor", "not the face-recognition ResNet"]);
    // Past its first bytes, it is refused by the record checks too.
    let mut disguised = sp.clone();
    disguised[2] = 0x01;
    assert_refused(
        &disguised,
        &["not dlib's face-recognition ResNet", "at byte"],
    );
}

#[test]
fn refuses_a_missing_file_and_leaves_an_existing_output_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("backbone.onnx");
    std::fs::write(&out_path, b"previous model").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["model", "import-dlib"])
        .arg(dir.path().join("nope.dat"))
        .arg("-o")
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    assert_eq!(std::fs::read(&out_path).unwrap(), b"previous model");
}
