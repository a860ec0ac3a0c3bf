//! `twin eval pairs`: verification accuracy on an LFW-style pairs file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use twin_faces::pipeline::{cut_chip, FacePipeline, FaceSource, PipelineOptions};
use twin_model::embed::ChipBatch;
use twin_model::eval::{image_path, parse_pairs, verify};

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
    /// face_recognition's distances on the same pairs (`tests/reference/face_recognition_pairs.py`
    /// output), scored with the same folds and printed beside ours.
    #[arg(long)]
    face_recognition: Option<PathBuf>,
    /// Write each image's embedding and the path that found its face to FILE (JSON lines).
    #[arg(long, value_name = "FILE")]
    save_embeddings: Option<PathBuf>,
}

pub fn pairs(args: PairsArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.pairs)
        .with_context(|| format!("cannot read {}", args.pairs.display()))?;
    let pairs = parse_pairs(&text)?;
    let embedder = crate::host::open_backbone(args.model.clone(), args.threads)?;
    let pipeline = FacePipeline::open(&crate::host::models_dir(), &PipelineOptions::default())?;

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
    let mut sources: HashMap<(String, u32), FaceSource> = HashMap::new();
    let mut unreadable = 0usize;
    for key in &images {
        let path = image_path(&args.images, &key.0, key.1);
        let emb = match twin_faces::imageio::decode_file(&path, &Default::default()) {
            Ok(img) => {
                let faces = pipeline.find_faces(&img)?;
                match faces.first() {
                    Some(face) => {
                        sources.insert(key.clone(), face.source);
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
    if let Some(out) = &args.save_embeddings {
        let mut text = String::new();
        for key in &images {
            let line = serde_json::json!({
                "name": key.0,
                "number": key.1,
                "found_by": sources.get(key),
                "embedding": embeddings[key],
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
    }
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
    // Accuracy by the path that found the faces (a pair counts under the later path of its two
    // faces, in the order detected, cnn, padded, whole image), each fold at its own threshold.
    let mut by_path: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (p, d) in pairs.iter().zip(&distances) {
        let path = match (sources.get(&p.a), sources.get(&p.b)) {
            (Some(a), Some(b)) => format!("{:?}", a.max(b)),
            _ => "no face".to_string(),
        };
        let t = v.fold_threshold[p.fold];
        let right = d.is_some_and(|d| (d < t) == p.same);
        let e = by_path.entry(path).or_default();
        e.0 += 1;
        e.1 += right as usize;
    }
    eprintln!("twin: by found_by path (the later path of the pair's two faces):");
    for (path, (n, right)) in &by_path {
        eprintln!(
            "twin:   {path:<10} {n:>5} pairs, {:.2} % right",
            100.0 * *right as f64 / (*n).max(1) as f64
        );
    }
    if let Some(fr) = &args.face_recognition {
        let text =
            std::fs::read_to_string(fr).with_context(|| format!("cannot read {}", fr.display()))?;
        let parsed: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", fr.display()))?;
        let d: Vec<Option<f32>> = parsed["distances"]
            .as_array()
            .with_context(|| format!("{}: no \"distances\" list", fr.display()))?
            .iter()
            .map(|x| x.as_f64().map(|f| f as f32))
            .collect();
        anyhow::ensure!(
            d.len() == pairs.len(),
            "{}: {} distances for {} pairs",
            fr.display(),
            d.len(),
            pairs.len()
        );
        let f = verify(&pairs, &d);
        eprintln!(
            "twin: face_recognition on the same pairs: accuracy {:.4} ± {:.4}, pairs without a face {} (counted wrong); ours {:.4} ± {:.4}, {} without a face",
            f.accuracy, f.std, f.no_face, v.accuracy, v.std, v.no_face
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&v)?);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct IdentifyArgs {
    /// Folder with one sub-folder of photos per identity.
    dir: PathBuf,
    /// Photos held out per identity as queries (the rest form the gallery).
    #[arg(long, default_value_t = 5)]
    held_out: usize,
    /// Print the result as JSON on standard output.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct IdentifyReport {
    identities: usize,
    skipped_identities: Vec<String>,
    gallery_images: usize,
    queries: usize,
    queries_without_face: usize,
    rank1: f64,
    rank5: f64,
    /// (threshold, false accepts: nearest stranger under it, false rejects: own identity at or over it)
    thresholds: Vec<(f32, f64, f64)>,
}

pub fn identify(args: IdentifyArgs) -> anyhow::Result<ExitCode> {
    let scratch = tempfile::tempdir()?;
    let sys = crate::host::open_inline(scratch.path(), 1)?;
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("cannot read {}", args.dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    let mut people = Vec::new();
    let mut skipped = Vec::new();
    for f in folders {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&f)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("jpg" | "jpeg" | "png" | "webp")
                )
            })
            .collect();
        // Numeric order when the names are numbers (1.jpg, 2.jpg, … 10.jpg).
        files.sort_by_key(|p| {
            let stem = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .to_string();
            (stem.parse::<u64>().unwrap_or(u64::MAX), stem)
        });
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if files.len() <= args.held_out {
            skipped.push(name);
            continue;
        }
        people.push((name, files));
    }
    let total: usize = people.iter().map(|p| p.1.len()).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("embedding [{bar:40}] {pos}/{len} images, eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut matrix = Vec::new();
    let mut owners = Vec::new();
    let mut names = Vec::new();
    let mut queries: Vec<(u32, Option<Vec<f32>>)> = Vec::new();
    for (i, (name, files)) in people.iter().enumerate() {
        names.push((name.clone(), name.replace('_', " ")));
        let split = files.len() - args.held_out;
        for (j, f) in files.iter().enumerate() {
            let e = sys.matching.subject_embedding(f).ok().flatten();
            if j < split {
                if let Some(e) = e {
                    matrix.extend(e);
                    owners.push(i as u32);
                }
            } else {
                queries.push((i as u32, e));
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let dim = twin_model::dlib::resnet::EMBEDDING_DIM;
    let g = twin_core::gallery::Gallery::from_rows(dim, matrix, owners.clone(), names.clone());
    let (mut r1, mut r5, mut no_face) = (0usize, 0usize, 0usize);
    let mut own_d = Vec::new();
    let mut other_d = Vec::new();
    for (who, e) in &queries {
        let Some(e) = e else {
            no_face += 1;
            continue;
        };
        let hits = g.search(e, names.len(), &|_| false);
        let rank = hits.iter().position(|h| h.slug == names[*who as usize].0);
        if rank == Some(0) {
            r1 += 1;
        }
        if rank.is_some_and(|r| r < 5) {
            r5 += 1;
        }
        own_d.push(
            hits.iter()
                .find(|h| h.slug == names[*who as usize].0)
                .map_or(f32::INFINITY, |h| h.distance),
        );
        other_d.push(
            hits.iter()
                .find(|h| h.slug != names[*who as usize].0)
                .map_or(f32::INFINITY, |h| h.distance),
        );
    }
    let n = queries.len().max(1) as f64;
    let thresholds: Vec<(f32, f64, f64)> = [0.40f32, 0.45, 0.50, 0.55, 0.60]
        .iter()
        .map(|&t| {
            let fa =
                other_d.iter().filter(|d| **d < t).count() as f64 / other_d.len().max(1) as f64;
            let fr = own_d.iter().filter(|d| **d >= t).count() as f64 / own_d.len().max(1) as f64;
            (t, fa, fr)
        })
        .collect();
    let report = IdentifyReport {
        identities: people.len(),
        skipped_identities: skipped,
        gallery_images: owners.len(),
        queries: queries.len(),
        queries_without_face: no_face,
        rank1: r1 as f64 / n,
        rank5: r5 as f64 / n,
        thresholds,
    };
    eprintln!(
        "twin: {} identities, gallery {} images, {} queries ({} without a face, counted wrong): rank-1 {:.4}, rank-5 {:.4}",
        report.identities, report.gallery_images, report.queries, report.queries_without_face, report.rank1, report.rank5
    );
    for (t, fa, fr) in &report.thresholds {
        eprintln!("twin:   threshold {t:.2}: nearest stranger under it {:.1} %, own identity at or over it {:.1} %", fa * 100.0, fr * 100.0);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(ExitCode::SUCCESS)
}
