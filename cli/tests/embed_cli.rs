//! `twin embed --chips` end to end: the JSON-lines shape, batching, and bad inputs.

use std::path::PathBuf;
use std::process::{Command, Output};

fn data() -> PathBuf {
    let d = twin_tests::data_dir().join("faces");
    assert!(d.is_dir(), "test data {} is missing", d.display());
    d
}

fn twin(args: &[&str]) -> Output {
    let model = twin_tests::models_dir().join("backbone.onnx");
    assert!(
        model.is_file(),
        "{} is missing: run scripts/setup",
        model.display()
    );
    Command::new(env!("CARGO_BIN_EXE_twin"))
        .arg("embed")
        .args(args)
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn embedding(v: &serde_json::Value) -> Vec<f64> {
    v["faces"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// 150×150 images from the 5-celebrity part of the face set.
fn chips() -> Vec<String> {
    [
        "Ben_Afflek/1.jpg",
        "Elton_John/1.jpg",
        "Madonna/1.jpg",
        "Mindy_Kaling/1.jpg",
        "Jerry_Seinfeld/1.jpg",
    ]
    .iter()
    .map(|p| data().join(p).to_string_lossy().into_owned())
    .collect()
}

#[test]
fn prints_one_json_line_per_chip_with_box_and_embedding() {
    let paths = chips();
    let args: Vec<&str> = std::iter::once("--chips")
        .chain(paths.iter().map(String::as_str))
        .collect();
    let out = twin(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = lines(&out);
    assert_eq!(got.len(), paths.len());
    for (line, path) in got.iter().zip(&paths) {
        assert_eq!(line["path"], path.as_str());
        let faces = line["faces"].as_array().unwrap();
        assert_eq!(faces.len(), 1);
        assert_eq!(faces[0]["box"], serde_json::json!([0, 0, 150, 150]));
        let e = embedding(line);
        assert_eq!(e.len(), 128);
        let norm = e.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(
            (0.5..3.0).contains(&norm),
            "raw dlib descriptors have norms near 1.4, got {norm}"
        );
    }
    // Different people get different embeddings.
    let d = embedding(&got[0])
        .iter()
        .zip(embedding(&got[1]))
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(d > 0.3, "two different people 0.3 apart at least, got {d}");
}

#[test]
fn batch_size_does_not_change_the_result() {
    let paths = chips();
    let mut a = vec!["--chips", "--batch", "16"];
    a.extend(paths.iter().map(String::as_str));
    let mut b = vec!["--chips", "--batch", "1"];
    b.extend(paths.iter().map(String::as_str));
    let (ra, rb) = (lines(&twin(&a)), lines(&twin(&b)));
    assert_eq!(ra.len(), rb.len());
    for (x, y) in ra.iter().zip(&rb) {
        let worst = embedding(x)
            .iter()
            .zip(embedding(y))
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "batch 16 vs batch 1 differ by {worst}");
    }
}

#[test]
fn list_file_and_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"this is not an image").unwrap();
    let truncated = dir.path().join("truncated.jpg");
    let jpeg = std::fs::read(data().join("Madonna/2.jpg")).unwrap();
    std::fs::write(&truncated, &jpeg[..jpeg.len() / 3]).unwrap();
    let small = data().join("Barack_Obama/1.jpg"); // 112×112: not a chip
    let good = chips().remove(0);
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!(
            "{}\n\n{}\n{}\n{}\n",
            garbage.display(),
            small.display(),
            good,
            truncated.display()
        ),
    )
    .unwrap();
    let out = twin(&["--chips", "--list", list.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "bad inputs make the exit status non-zero"
    );
    let got = lines(&out);
    assert_eq!(
        got.len(),
        4,
        "blank lines are skipped, every other path answered"
    );
    assert!(
        got[0]["error"]
            .as_str()
            .unwrap()
            .contains("not a JPEG, PNG or WebP image"),
        "{}",
        got[0]
    );
    assert!(
        got[1]["error"].as_str().unwrap().contains("150×150"),
        "{}",
        got[1]
    );
    assert!(got[2].get("error").is_none());
    assert_eq!(
        embedding(&got[2]).len(),
        128,
        "a good chip among bad ones is still embedded"
    );
    assert!(
        got[3]["error"].is_string(),
        "truncated JPEG refused: {}",
        got[3]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 of 4 inputs could not be embedded"),
        "{stderr}"
    );
}

#[test]
fn missing_model_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["embed", "--chips", "--model", "/nonexistent/model.onnx"])
        .arg(&chips()[0])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("model file /nonexistent/model.onnx not found"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_model_that_is_not_onnx_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("model.onnx");
    std::fs::write(&bad, b"\x08\x07garbage that is not a protobuf model").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["embed", "--chips", "--model", bad.to_str().unwrap()])
        .arg(&chips()[0])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot load model"), "{stderr}");
}
