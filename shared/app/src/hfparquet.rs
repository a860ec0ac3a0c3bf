//! Hugging Face image-classification datasets stored as parquet: an `image` column (a struct
//! `{bytes: binary, path: string}`, or plain binary) and a `label` column (an integer whose class
//! names are in the file's `huggingface` key-value metadata, or a string).
//!
//! Read one row group at a time, so memory is bounded by the largest row group.

use std::fs::File;
use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};

/// Why a file cannot be read as an image-classification dataset.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// The file cannot be opened.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Not a parquet file (or a damaged one).
    #[error("{path} is not a readable parquet file: {source}")]
    NotParquet {
        path: String,
        source: parquet::errors::ParquetError,
    },
    /// A needed column is missing.
    #[error("{path} is not an image-classification dataset: it has no `{column}` column (columns: {found})")]
    MissingColumn {
        path: String,
        column: &'static str,
        found: String,
    },
    /// Reading a row group failed.
    #[error("cannot read row group {group} of {path}: {source}")]
    Read {
        path: String,
        group: usize,
        source: parquet::errors::ParquetError,
    },
    /// A row group is damaged in a way the parquet reader does not report as an error (it
    /// panics on some damaged pages: the panic is caught and becomes this error).
    #[error("cannot read row group {group} of {path}: the file is damaged")]
    Damaged { path: String, group: usize },
}

/// One row: the identity's name (`None` for a missing label) and the image bytes, or why there
/// are none.
#[derive(Debug, Clone)]
pub struct HfRow {
    pub label: Option<String>,
    pub image: Result<Vec<u8>, String>,
}

/// An open dataset file.
pub struct HfDataset {
    path: String,
    reader: SerializedFileReader<File>,
    names: Option<Vec<String>>,
}

impl HfDataset {
    /// Opens `path` and checks that it has the `image` and `label` columns.
    pub fn open(path: &Path) -> Result<Self, HfError> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|source| HfError::Io {
            path: shown.clone(),
            source,
        })?;
        // The footer reader panics on some damaged footers instead of returning an error.
        let reader = std::panic::catch_unwind(|| SerializedFileReader::new(file))
            .unwrap_or_else(|_| {
                Err(parquet::errors::ParquetError::General(
                    "its footer is damaged".into(),
                ))
            })
            .map_err(|source| HfError::NotParquet {
                path: shown.clone(),
                source,
            })?;
        let meta = reader.metadata().file_metadata();
        let columns: Vec<String> = meta
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for column in ["image", "label"] {
            if !columns.iter().any(|c| c == column) {
                return Err(HfError::MissingColumn {
                    path: shown,
                    column,
                    found: columns.join(", "),
                });
            }
        }
        let names = meta
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|k| k.key == "huggingface"))
            .and_then(|k| k.value.as_deref())
            .and_then(class_names);
        Ok(HfDataset {
            path: shown,
            reader,
            names,
        })
    }

    /// Rows in the file.
    pub fn num_rows(&self) -> usize {
        self.reader.metadata().file_metadata().num_rows().max(0) as usize
    }

    /// Row groups in the file.
    pub fn num_row_groups(&self) -> usize {
        self.reader.num_row_groups()
    }

    /// The class names from the `huggingface` metadata, if the file has them.
    pub fn class_names(&self) -> Option<&[String]> {
        self.names.as_deref()
    }

    /// The rows of row group `i`. A damaged row group is an error, never a panic of the caller.
    pub fn row_group(&self, i: usize) -> Result<Vec<HfRow>, HfError> {
        // The record reader asserts on some damaged pages instead of returning an error (the
        // fuzz target found one); its state is dropped with the closure, nothing is shared.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read_row_group(i)))
            .unwrap_or_else(|_| {
                Err(HfError::Damaged {
                    path: self.path.clone(),
                    group: i,
                })
            })
    }

    fn read_row_group(&self, i: usize) -> Result<Vec<HfRow>, HfError> {
        let err = |source| HfError::Read {
            path: self.path.clone(),
            group: i,
            source,
        };
        let group = self.reader.get_row_group(i).map_err(err)?;
        let mut out = Vec::with_capacity(group.metadata().num_rows().max(0) as usize);
        for row in group.get_row_iter(None).map_err(err)? {
            let row = row.map_err(err)?;
            out.push(self.convert(row));
        }
        Ok(out)
    }

    fn convert(&self, row: Row) -> HfRow {
        let mut label = None;
        let mut image = Err("no image".to_string());
        for (name, field) in row.into_columns() {
            match name.as_str() {
                "label" => label = self.label_name(&field),
                "image" => image = image_bytes(field),
                _ => {}
            }
        }
        HfRow { label, image }
    }

    fn label_name(&self, field: &Field) -> Option<String> {
        let n: i64 = match field {
            Field::Str(s) => return Some(s.clone()),
            Field::Byte(v) => *v as i64,
            Field::Short(v) => *v as i64,
            Field::Int(v) => *v as i64,
            Field::Long(v) => *v,
            Field::UByte(v) => *v as i64,
            Field::UShort(v) => *v as i64,
            Field::UInt(v) => *v as i64,
            Field::ULong(v) => i64::try_from(*v).ok()?,
            _ => return None,
        };
        // Hugging Face writes -1 for "no label".
        if n < 0 {
            return None;
        }
        Some(
            self.names
                .as_ref()
                .and_then(|names| names.get(n as usize).cloned())
                .unwrap_or_else(|| n.to_string()),
        )
    }
}

fn image_bytes(field: Field) -> Result<Vec<u8>, String> {
    match field {
        Field::Bytes(b) => Ok(b.data().to_vec()),
        Field::Group(g) => {
            let mut path = None;
            for (name, f) in g.into_columns() {
                match (name.as_str(), f) {
                    ("bytes", Field::Bytes(b)) => return Ok(b.data().to_vec()),
                    ("path", Field::Str(p)) => path = Some(p),
                    _ => {}
                }
            }
            Err(match path {
                Some(_) => "image not stored in the file (only a path)".to_string(),
                None => "no image".to_string(),
            })
        }
        Field::Null => Err("no image".to_string()),
        _ => Err("image column of an unexpected type".to_string()),
    }
}

/// The `label` class names in a `huggingface` metadata JSON.
fn class_names(json: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let label = v.pointer("/info/features/label")?;
    label
        .get("names")?
        .as_array()?
        .iter()
        .map(|n| n.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_come_from_the_huggingface_metadata() {
        let json = r#"{"info": {"features": {"image": {"_type": "Image"},
            "label": {"names": ["Ann_Lee", "Bo"], "_type": "ClassLabel"}}}}"#;
        assert_eq!(
            class_names(json),
            Some(vec!["Ann_Lee".to_string(), "Bo".to_string()])
        );
        assert_eq!(class_names(r#"{"info": {}}"#), None);
        assert_eq!(class_names("not json"), None);
    }

    #[test]
    fn a_file_that_is_not_parquet_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.parquet");
        std::fs::write(&p, b"this is not a parquet file at all").unwrap();
        let e = HfDataset::open(&p).err().expect("an error");
        assert!(e.to_string().contains("not a readable parquet file"), "{e}");
    }
}
