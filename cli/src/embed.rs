//! `twin embed`: embeddings of face chips as JSON lines.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use twin_faces::pipeline::{cut_chip, FacePipeline, FaceSource, FoundFace, PipelineOptions};
use twin_model::chip::CHIP_SIZE;
use twin_model::embed::ChipBatch;

/// One input of a batch: its faces (each with its row in the batch, if it has one), or why it
/// failed.
type Slot = Result<Vec<(Option<FoundFace>, usize)>, String>;

#[derive(Args)]
pub struct EmbedArgs {
    /// Image files to embed.
    paths: Vec<PathBuf>,
    /// The inputs are 150×150 aligned face chips (as dlib cuts them): embed them whole.
    /// Without it every input is a photo: each face found is detected, aligned and embedded.
    #[arg(long)]
    chips: bool,
    /// Read more input paths from FILE, one per line ("-" for standard input).
    #[arg(long, value_name = "FILE")]
    list: Option<PathBuf>,
    /// The embedding model (default: vendor/models/backbone.onnx, or $TWIN_BACKBONE).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Threads ONNX Runtime may use.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Chips per inference batch.
    #[arg(long, default_value_t = 16)]
    batch: usize,
}

#[derive(Serialize)]
struct Face<'a> {
    #[serde(rename = "box")]
    bbox: [i64; 4],
    #[serde(skip_serializing_if = "Option::is_none")]
    landmarks: Option<[[i64; 2]; 5]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    found_by: Option<FaceSource>,
    embedding: &'a [f32],
}

#[derive(Serialize)]
struct Line<'a> {
    path: &'a str,
    faces: Vec<Face<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    let mut paths = args.paths.clone();
    if let Some(list) = &args.list {
        paths.extend(read_list(list)?);
    }
    if paths.is_empty() {
        bail!("no input: name image files or --list FILE");
    }
    let embedder = crate::host::open_backbone(args.model.clone(), args.threads)?;
    let pipeline = if args.chips {
        None
    } else {
        Some(FacePipeline::open(
            &crate::host::models_dir(),
            &PipelineOptions::default(),
        )?)
    };
    let batch_size = args.batch.max(1);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failures = 0usize;
    for group in paths.chunks(batch_size) {
        let mut batch = ChipBatch::with_capacity(group.len());
        // Per input: the faces (with the row of each in the batch), or why it failed.
        let mut slots: Vec<Slot> = Vec::with_capacity(group.len());
        for p in group {
            let faces = load_image(p).and_then(|img| match &pipeline {
                None => {
                    batch.push(&img)?;
                    Ok(vec![(None, batch.len() - 1)])
                }
                Some(pipeline) => {
                    let found = pipeline.find_faces(&img)?;
                    Ok(found
                        .into_iter()
                        .map(|f| {
                            // A chip is always 150×150, so pushing it cannot fail.
                            let _ = batch.push(&cut_chip(&img, &f));
                            (Some(f), batch.len() - 1)
                        })
                        .collect())
                }
            });
            slots.push(faces.map_err(|e| format!("{e:#}")));
        }
        let embeddings = embedder.embed(&batch)?;
        for (p, slot) in group.iter().zip(slots) {
            let path = p.to_string_lossy();
            let line = match slot {
                Ok(faces) => Line {
                    path: &path,
                    faces: faces
                        .iter()
                        .map(|(f, row)| Face {
                            bbox: f.as_ref().map(|f| f.bbox).unwrap_or([
                                0,
                                0,
                                CHIP_SIZE as i64,
                                CHIP_SIZE as i64,
                            ]),
                            landmarks: f.as_ref().map(|f| f.landmarks.map(|p| [p.x, p.y])),
                            found_by: f.as_ref().map(|f| f.source),
                            embedding: embeddings.row(*row),
                        })
                        .collect(),
                    error: None,
                },
                Err(e) => {
                    failures += 1;
                    eprintln!("twin: {path}: {e}");
                    Line {
                        path: &path,
                        faces: Vec::new(),
                        error: Some(e),
                    }
                }
            };
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    if failures > 0 {
        eprintln!(
            "twin: {failures} of {} inputs could not be embedded",
            paths.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn read_list(list: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let reader: Box<dyn BufRead> = if list == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(list)
                .with_context(|| format!("cannot open list {}", list.display()))?,
        ))
    };
    let mut paths = Vec::new();
    for line in reader.lines() {
        let line = line.with_context(|| format!("cannot read list {}", list.display()))?;
        let t = line.trim();
        if !t.is_empty() {
            paths.push(PathBuf::from(t));
        }
    }
    Ok(paths)
}

/// Decodes an image under the core's limits.
fn load_image(path: &Path) -> anyhow::Result<image::RgbImage> {
    Ok(twin_faces::imageio::decode_file(
        path,
        &twin_faces::imageio::Limits::default(),
    )?)
}
