//! Parquet files laid out as the Hugging Face `datasets` library writes an image-classification
//! dataset (the import's input), for tests and fuzz seeds.

use std::path::Path;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// Writes `rows` (image bytes, label) as the `datasets` library lays out an image-classification
/// dataset, `per_group` rows per row group, snappy-compressed.
pub fn write_hf_parquet(path: &Path, rows: &[(Vec<u8>, i64)], names: &[&str], per_group: usize) {
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
