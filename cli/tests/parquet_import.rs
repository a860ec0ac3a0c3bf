//! `twin gallery import FILE.parquet`: a Hugging Face image-classification dataset (image bytes
//! + label, class names in the file's `huggingface` metadata) becomes identities in the gallery.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use parquet::data_type::Int64Type;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use twin_tests::parquet::write_hf_parquet;

const PEOPLE: [&str; 3] = ["Barack_Obama", "Drew_Barrymore", "Hugh_Laurie"];

fn faces() -> PathBuf {
    let d = twin_tests::data_dir().join("faces");
    assert!(d.exists(), "test data {} is missing", d.display());
    d
}

fn twin(data: &Path, args: &[&str], file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_twin"))
        .arg("--data")
        .arg(data)
        .args(args)
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn a_hugging_face_parquet_dataset_imports_as_identities() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // 3 identities × 4 images, interleaved (not sorted by label) across row groups of 5, plus
    // one row whose "image" is not an image.
    let mut rows = Vec::new();
    for i in 1..=4 {
        for (label, person) in PEOPLE.iter().enumerate() {
            let bytes = std::fs::read(faces().join(person).join(format!("{i}.jpg"))).unwrap();
            rows.push((bytes, label as i64));
        }
    }
    rows.push((b"not a jpeg".to_vec(), 1));
    let file = dir.path().join("faces.parquet");
    write_hf_parquet(&file, &rows, &PEOPLE, 5);

    let out = twin(&data, &["gallery", "import"], &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "import failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["identities"], 3, "{summary}");
    assert_eq!(summary["imported"], 12, "{summary}");
    assert_eq!(summary["rejected"], serde_json::json!({"not an image": 1}));
    assert!(stderr.contains("3 identities"), "{stderr}");

    // A photo of one of them that was not imported finds that person first.
    let photo = faces().join("Drew_Barrymore/10.jpg");
    let out = twin(&data, &["match", "--json"], &photo);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["faces"][0]["matches"][0]["slug"], "drew_barrymore", "{r}");
    assert_eq!(
        r["faces"][0]["matches"][0]["display_name"], "Drew Barrymore",
        "{r}"
    );

    // A second run imports nothing again.
    let out = twin(&data, &["gallery", "import"], &file);
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["already_imported"], 3, "{summary}");
    assert_eq!(summary["imported"], 0, "{summary}");
}

#[test]
fn a_garbage_or_foreign_parquet_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let garbage = dir.path().join("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 this is not really parquet").unwrap();
    let out = twin(&data, &["gallery", "import"], &garbage);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is not a readable parquet file"),
        "{stderr}"
    );

    // Files the parquet reader panics on (found by the fuzz target): a clear error.
    for crash in ["crash-339aec25b60ef928", "crash-c91d26c955e88dd5"] {
        let file = twin_tests::repo_root().join(format!("tests/fuzz/parquet/{crash}.parquet"));
        let out = twin(&data, &["gallery", "import"], &file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{crash}: {stderr}");
        assert!(
            stderr.contains("damaged") || stderr.contains("is not a readable parquet file"),
            "{crash}: {stderr}"
        );
    }

    // Parquet, but not an image-classification dataset.
    let other = dir.path().join("other.parquet");
    let schema = parse_message_type("message schema { required int64 x; }").unwrap();
    let mut w = SerializedFileWriter::new(
        std::fs::File::create(&other).unwrap(),
        Arc::new(schema),
        Default::default(),
    )
    .unwrap();
    let mut g = w.next_row_group().unwrap();
    let mut c = g.next_column().unwrap().unwrap();
    c.typed::<Int64Type>()
        .write_batch(&[1], None, None)
        .unwrap();
    c.close().unwrap();
    g.close().unwrap();
    w.close().unwrap();
    let out = twin(&data, &["gallery", "import"], &other);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("has no `image` column"), "{stderr}");
}
