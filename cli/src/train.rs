//! `twin train`: the training job and its gate on the local data folder.

use std::path::{Path, PathBuf};

use crate::host;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use twin_model::models::{self, Metrics};
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
    let store = host::open_store(data)?;
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
    // People erased while it trained are forgotten by the new model too.
    twin_app::training::forget_the_erased(&store, m.version)?;
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

/// The backbone at `path` (default: the one scripts/setup imported) and its bytes.
pub fn read_backbone(path: Option<PathBuf>) -> anyhow::Result<(PathBuf, Vec<u8>)> {
    let path = host::backbone(path);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the backbone {} (scripts/setup imports it)",
            path.display()
        )
    })?;
    Ok((path, bytes))
}
