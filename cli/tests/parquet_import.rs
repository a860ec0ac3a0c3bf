//! `twin gallery import FILE.parquet`: a Hugging Face image-classification dataset (image bytes
//! + label, class names in the file's `huggingface` metadata) becomes identities in the gallery.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

const PEOPLE: [&str; 3] = ["Barack_Obama", "Drew_Barrymore", "Hugh_Laurie"];

fn faces() -> PathBuf {
    let d = twin_tests::data_dir().join("faces");
    assert!(d.exists(), "test data {} is missing", d.display());
    d
}

/// Writes `rows` (image bytes, label) as the `datasets` library lays out an image-classification
/// dataset, `per_group` rows per row group, snappy-compressed.
fn write_hf_parquet(path: &Path, rows: &[(Vec<u8>, i64)], names: &[&str], per_group: usize) {
    let schema = parse_message_type(
        "message schema {
            optional group image {
                optional binary bytes;
                optional binary path (STRING);
            }
            optional int64 label;
        }",
    )
    .unwrap();
    let hf = serde_json::json!({"info": {"features": {
        "image": {"_type": "Image"},
        "label": {"names": names, "_type": "ClassLabel"},
    }}});
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "huggingface".to_string(),
            hf.to_string(),
        )]))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).unwrap();
    for chunk in rows.chunks(per_group) {
        let mut g = w.next_row_group().unwrap();
        // image.bytes: defined at level 2 (image present, bytes present).
        let mut c = g.next_column().unwrap().unwrap();
        let bytes: Vec<ByteArray> = chunk.iter().map(|r| ByteArray::from(r.0.clone())).collect();
        c.typed::<ByteArrayType>()
            .write_batch(&bytes, Some(&vec![2; chunk.len()]), None)
            .unwrap();
        c.close().unwrap();
        // image.path: null (level 1: image present, path missing).
        let mut c = g.next_column().unwrap().unwrap();
        c.typed::<ByteArrayType>()
            .write_batch(&[], Some(&vec![1; chunk.len()]), None)
            .unwrap();
        c.close().unwrap();
        // label.
        let mut c = g.next_column().unwrap().unwrap();
        let labels: Vec<i64> = chunk.iter().map(|r| r.1).collect();
        c.typed::<Int64Type>()
            .write_batch(&labels, Some(&vec![1; chunk.len()]), None)
            .unwrap();
        c.close().unwrap();
        g.close().unwrap();
    }
    w.close().unwrap();
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
