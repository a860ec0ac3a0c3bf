//! `twin model …`: importing dlib's face network, the trained versions on the local data folder
//! (list, promote), and publishing the backbone to a deployment's bucket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use twin_core::keys::BASE_BACKBONE;
use twin_model::models;

use crate::host;
use crate::train::read_backbone;
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

/// `twin model list`: one JSON line per version, newest first.
pub fn list(data: &Path) -> anyhow::Result<ExitCode> {
    let store = host::open_store(data)?;
    let versions = models::list(&store)?;
    if versions.is_empty() {
        eprintln!("twin: no trained model yet (run twin train); matches use the backbone alone");
    }
    for v in versions {
        let summary = v.metrics.as_ref().map(|m| {
            serde_json::json!({
                "dataset_version": m.dataset_version,
                "identities": m.identities,
                "top1": m.model.top1,
                "top5": m.model.top5,
                "baseline_top1": m.baseline.top1,
                "promoted_when_trained": m.promoted,
                "reason": m.reason,
            })
        });
        println!(
            "{}",
            serde_json::json!({"version": v.version, "current": v.current, "complete": v.metrics.is_some(), "metrics": summary})
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `twin model promote N`: points models/CURRENT at version N (promotion or rollback).
pub fn promote(data: &Path, version: u64) -> anyhow::Result<ExitCode> {
    let store = host::open_store(data)?;
    models::promote(&store, version)?;
    eprintln!("twin: models/CURRENT now points at model {version}; a running server picks it up");
    Ok(ExitCode::SUCCESS)
}

/// `twin model publish --bucket B`: puts the backbone at `models/base/backbone.onnx`.
pub fn publish(
    bucket: &str,
    backbone: Option<PathBuf>,
    endpoint_url: Option<String>,
) -> anyhow::Result<ExitCode> {
    use twin_core::store::{Condition, ObjectStore};
    let (path, bytes) = read_backbone(backbone)?;
    // Refuse anything that is not a backbone the engine can use.
    twin_model::embed::Embedder::from_bytes(&path, &bytes, &Default::default())
        .with_context(|| format!("{} is not a usable backbone", path.display()))?;
    // A tool with the bucket alone: no queue is used.
    let mut config = twin_aws::AwsConfig::new(bucket, "", "");
    if let Some(url) = endpoint_url.filter(|u| !u.is_empty()) {
        config = config.with_endpoint(&url);
    }
    let store = twin_aws::Aws::connect(config)?.store();
    store
        .put(BASE_BACKBONE, &bytes, Condition::None)
        .with_context(|| format!("cannot upload to s3://{bucket}/{}", BASE_BACKBONE))?;
    eprintln!(
        "twin: published {} ({} bytes) to s3://{bucket}/{}",
        path.display(),
        bytes.len(),
        BASE_BACKBONE
    );
    Ok(ExitCode::SUCCESS)
}
