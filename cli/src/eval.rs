//! `twin eval pairs`: verification accuracy on an LFW-style pairs file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use twin_core::embed::{ChipBatch, Embedder, EmbedderOptions};
use twin_core::eval::{image_path, parse_pairs, verify};
use twin_core::face::pipeline::{cut_chip, FacePipeline, PipelineOptions};

#[derive(Args)]
pub struct PairsArgs {
    /// The pairs file (LFW's pairs.txt layout).
    #[arg(long)]
    pairs: PathBuf,
    /// Folder of identity folders (name/name_0001.jpg, or name/1.jpg).
    #[arg(long)]
    images: PathBuf,
    /// The embedding model (default: vendor/models/backbone.onnx).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Threads ONNX Runtime may use.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Print the result as JSON on standard output.
    #[arg(long)]
    json: bool,
}

pub fn pairs(args: PairsArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.pairs)
        .with_context(|| format!("cannot read {}", args.pairs.display()))?;
    let pairs = parse_pairs(&text)?;
    let model = args
        .model
        .clone()
        .unwrap_or_else(twin_core::paths::default_backbone);
    let embedder = Embedder::open(
        &model,
        &EmbedderOptions {
            threads: args.threads,
        },
    )?;
    let pipeline =
        FacePipeline::open(&twin_core::paths::models_dir(), &PipelineOptions::default())?;

    let mut images: Vec<(String, u32)> = pairs
        .iter()
        .flat_map(|p| [p.a.clone(), p.b.clone()])
        .collect();
    images.sort();
    images.dedup();
    let bar = ProgressBar::new(images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} images, {per_sec}, eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message("embedding");
    let mut embeddings: HashMap<(String, u32), Option<Vec<f32>>> = HashMap::new();
    let mut unreadable = 0usize;
    for key in &images {
        let path = image_path(&args.images, &key.0, key.1);
        let emb = match twin_core::imageio::decode_file(&path, &Default::default()) {
            Ok(img) => {
                let faces = pipeline.find_faces(&img)?;
                match faces.first() {
                    Some(face) => {
                        let mut batch = ChipBatch::with_capacity(1);
                        batch.push(&cut_chip(&img, face))?;
                        Some(embedder.embed(&batch)?.row(0).to_vec())
                    }
                    None => None,
                }
            }
            Err(e) => {
                unreadable += 1;
                bar.suspend(|| eprintln!("twin: {}: {e}", path.display()));
                None
            }
        };
        embeddings.insert(key.clone(), emb);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let distances: Vec<Option<f32>> = pairs
        .iter()
        .map(|p| match (&embeddings[&p.a], &embeddings[&p.b]) {
            (Some(a), Some(b)) => Some(
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y) * (x - y))
                    .sum::<f32>()
                    .sqrt(),
            ),
            _ => None,
        })
        .collect();
    let v = verify(&pairs, &distances);
    let no_face_images = embeddings.values().filter(|e| e.is_none()).count();
    eprintln!(
        "twin: {} pairs in {} folds, {} images ({} without a face, {} unreadable): accuracy {:.4} ± {:.4}, pairs without a face {} (counted wrong), mean threshold {:.3}",
        v.pairs,
        v.fold_accuracy.len(),
        images.len(),
        no_face_images,
        unreadable,
        v.accuracy,
        v.std,
        v.no_face,
        v.fold_threshold.iter().sum::<f32>() / v.fold_threshold.len().max(1) as f32
    );
    if args.json {
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(ExitCode::SUCCESS)
}
