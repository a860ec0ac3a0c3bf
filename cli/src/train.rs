//! `twin train`, `twin model list`, `twin model promote`: the training job and the model
//! registry on the local data folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use twin_model::models::{self, Metrics};
use twin_core::store::LocalStore;
use twin_model::train::TrainOptions;

#[derive(Args)]
pub struct TrainArgs {
    /// Seed of the train/held-out split.
    #[arg(long, default_value_t = TrainOptions::default().seed)]
    seed: u64,
    /// Share of each identity's crops held out.
    #[arg(long, default_value_t = TrainOptions::default().holdout)]
    holdout: f64,
    /// Identities with fewer crops are held back.
    #[arg(long, default_value_t = TrainOptions::default().min_crops)]
    min_crops: usize,
    /// Optimiser steps.
    #[arg(long, default_value_t = TrainOptions::default().steps)]
    steps: usize,
    /// Logit scale of the cosine softmax.
    #[arg(long, default_value_t = TrainOptions::default().scale)]
    scale: f32,
    /// Additive cosine margin on the true class.
    #[arg(long, default_value_t = TrainOptions::default().margin)]
    margin: f32,
    /// Adam's step size.
    #[arg(long, default_value_t = TrainOptions::default().learning_rate)]
    learning_rate: f32,
    /// The backbone to build the model on (default: the one scripts/setup imported).
    #[arg(long)]
    backbone: Option<PathBuf>,
}

/// `twin train`: trains, gates, prints the comparison (stderr) and metrics.json (stdout).
pub fn run(data: &Path, args: TrainArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(data)?;
    let (_, backbone) = read_backbone(args.backbone)?;
    let options = TrainOptions {
        seed: args.seed,
        holdout: args.holdout,
        min_crops: args.min_crops,
        steps: args.steps,
        scale: args.scale,
        margin: args.margin,
        learning_rate: args.learning_rate,
        ..Default::default()
    };
    let bar = ProgressBar::new(options.steps as u64).with_style(
        ProgressStyle::with_template("training {bar:30} {pos}/{len} steps {elapsed}")
            .expect("valid template"),
    );
    let outcome = models::train_and_gate(&store, &backbone, &options, &|s, _| {
        bar.set_position(s as u64)
    });
    bar.finish_and_clear();
    let m = outcome?.metrics;
    print_summary(&m);
    println!("{}", serde_json::to_string(&m)?);
    Ok(ExitCode::SUCCESS)
}

fn print_summary(m: &Metrics) {
    let pct = |x: f64| format!("{:6.2} %", 100.0 * x);
    eprintln!(
        "twin: model {} trained on dataset version {} in {:.2} s: {} identities, {} train / {} held-out crops",
        m.version, m.dataset_version, m.seconds, m.identities, m.train_rows, m.held_out_rows
    );
    if !m.held_back.is_empty() {
        let names: Vec<String> = m
            .held_back
            .iter()
            .map(|h| format!("{} ({} crops)", h.slug, h.crops))
            .collect();
        eprintln!(
            "twin: held back (too few crops; still matched by embedding): {}",
            names.join(", ")
        );
    }
    eprintln!("                         held-out top-1   top-5");
    eprintln!(
        "  trained model {:<9} {}  {}",
        m.version,
        pct(m.model.top1),
        pct(m.model.top5)
    );
    eprintln!(
        "  gallery baseline        {}  {}",
        pct(m.baseline.top1),
        pct(m.baseline.top5)
    );
    if let Some(p) = &m.previous {
        eprintln!(
            "  on the {} held-out crops serving model {} did not train on:",
            p.held_out.n, p.version
        );
        eprintln!(
            "    trained model {:<7} {}  {}",
            m.version,
            pct(p.new_model.top1),
            pct(p.new_model.top5)
        );
        eprintln!(
            "    serving model {:<7} {}  {}",
            p.version,
            pct(p.held_out.top1),
            pct(p.held_out.top5)
        );
    }
    eprintln!(
        "twin: {}: {}",
        if m.promoted {
            "promoted"
        } else {
            "not promoted"
        },
        m.reason
    );
}

/// `twin model list`: one JSON line per version, newest first.
pub fn list(data: &Path) -> anyhow::Result<ExitCode> {
    let store = open_store(data)?;
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
    let store = open_store(data)?;
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
    let mut config = twin_aws::AwsConfig::new(bucket, "", "");
    if let Some(url) = endpoint_url.filter(|u| !u.is_empty()) {
        config = config.with_endpoint(&url);
    }
    let store = twin_aws::Aws::connect(config)?.store();
    store
        .put(models::BASE_BACKBONE, &bytes, Condition::None)
        .with_context(|| format!("cannot upload to s3://{bucket}/{}", models::BASE_BACKBONE))?;
    eprintln!(
        "twin: published {} ({} bytes) to s3://{bucket}/{}",
        path.display(),
        bytes.len(),
        models::BASE_BACKBONE
    );
    Ok(ExitCode::SUCCESS)
}

/// The local data folder's store.
fn open_store(data: &Path) -> anyhow::Result<LocalStore> {
    LocalStore::open(data).with_context(|| format!("cannot open {}", data.display()))
}

/// The backbone at `path` (default: the one scripts/setup imported) and its bytes.
fn read_backbone(path: Option<PathBuf>) -> anyhow::Result<(PathBuf, Vec<u8>)> {
    let path = path.unwrap_or_else(twin_model::paths::default_backbone);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the backbone {} (scripts/setup imports it)",
            path.display()
        )
    })?;
    Ok((path, bytes))
}
