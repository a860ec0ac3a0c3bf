//! `twin model …`: importing dlib's face network.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use twin_model::dlib::resnet;
use twin_model::onnx::{encode, face_net};

/// Files larger than this are refused before reading (the real model is 22 MB).
const MAX_DAT_BYTES: u64 = 512 * 1024 * 1024;

/// `twin model import-dlib DAT -o ONNX`.
pub fn import_dlib(dat: &Path, output: &Path) -> anyhow::Result<ExitCode> {
    let size = std::fs::metadata(dat)
        .with_context(|| format!("cannot read {}", dat.display()))?
        .len();
    if size > MAX_DAT_BYTES {
        bail!(
            "{} is {size} bytes, larger than any dlib face model ({MAX_DAT_BYTES} bytes at most)",
            dat.display()
        );
    }
    let bytes = std::fs::read(dat).with_context(|| format!("cannot read {}", dat.display()))?;
    let net =
        resnet::parse(&bytes).with_context(|| format!("{} was not imported", dat.display()))?;
    let metadata = [
        (
            "source",
            dat.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
        ("source_bytes", bytes.len().to_string()),
        ("distance_threshold", net.distance_threshold.to_string()),
        (
            "input",
            "chips: [N,3,150,150] float32 RGB 0-255, aligned dlib face chips".to_string(),
        ),
        (
            "output",
            "embedding: [N,128] float32, raw dlib descriptor".to_string(),
        ),
    ];
    let model = face_net::build(&net, &metadata);
    let encoded = encode(&model);
    twin_core::fsutil::write_atomic::<std::io::Error>(output, |w| w.write_all(&encoded))
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "twin: imported {} ({} residual blocks, {} weights, same-person distance {}) into {} ({} bytes)",
        dat.display(),
        net.blocks.len(),
        net.weight_count(),
        net.distance_threshold,
        output.display(),
        encoded.len()
    );
    Ok(ExitCode::SUCCESS)
}
