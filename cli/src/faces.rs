//! `twin faces`: the faces in a photo, or the enrollment frames of a video, as JSON.
//!
//! A photo gives every face with its box, dlib box, landmarks, how it was found and its quality
//! measures. A video goes through enrollment (`twin_faces::enroll`): frames sampled,
//! kept and rejected with reasons, whether the head turned both ways. The report is one JSON
//! line on standard output; a summary goes to standard error. With `--out DIR` the chips are
//! written as PNG (`<ms>.png` for video frames, `face-<n>.png` for a photo's faces) with
//! `report.json` beside them, into a new (or empty) folder; nothing is written unless the whole
//! run succeeded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use image::RgbImage;
use serde::Serialize;
use twin_faces::enroll::{self, ChipEmbedder, EnrollOptions, EnrollReport};
use twin_faces::pipeline::{cut_chip, FacePipeline, FoundFace, PipelineOptions};
use twin_faces::quality::Measures;
use twin_faces::video;
use twin_model::embed::{Embedder, EmbedderOptions};

/// Arguments of `twin faces`.
#[derive(Args)]
pub struct FacesArgs {
    /// A photo (JPEG, PNG, WebP) or a video (MP4, MOV, WebM).
    input: PathBuf,
    /// Write the chips (PNG) and report.json into DIR.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Video: sample a frame every this many milliseconds.
    #[arg(long, default_value_t = video::DEFAULT_INTERVAL_MS)]
    interval_ms: u32,
    /// Video: keep at most this many frames.
    #[arg(long, default_value_t = enroll::DEFAULT_MAX_KEPT)]
    max_kept: usize,
    /// Video: refuse the video when fewer frames pass.
    #[arg(long, default_value_t = enroll::DEFAULT_MIN_KEPT)]
    min_kept: usize,
    /// Video: skip the one-person check (it needs the embedding model and ONNX Runtime).
    #[arg(long)]
    no_identity: bool,
    /// The embedding model for the one-person check (default: vendor/models/backbone.onnx).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Threads ONNX Runtime may use.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// What the input is, from its first bytes.
enum Kind {
    Photo,
    Video,
}

fn kind_of(path: &Path) -> anyhow::Result<Kind> {
    use std::io::Read;
    let mut head = Vec::with_capacity(16);
    std::fs::File::open(path)
        .and_then(|f| f.take(16).read_to_end(&mut head))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if head.is_empty() {
        bail!("{} is empty (0 bytes)", path.display());
    }
    if video::sniff(&head).is_ok() {
        return Ok(Kind::Video);
    }
    match image::guess_format(&head) {
        Ok(image::ImageFormat::Jpeg | image::ImageFormat::Png | image::ImageFormat::WebP) => {
            Ok(Kind::Photo)
        }
        _ => bail!(
            "{} is neither a photo (JPEG, PNG, WebP) nor a video (MP4, MOV, WebM)",
            path.display()
        ),
    }
}

/// Runs `twin faces`.
pub fn run(args: FacesArgs) -> anyhow::Result<ExitCode> {
    let kind = kind_of(&args.input)?;
    if let Some(dir) = &args.out {
        check_out_dir(dir)?;
    }
    let options = match kind {
        Kind::Photo => PipelineOptions::default(),
        Kind::Video => enroll::video_pipeline_options(),
    };
    let pipeline = FacePipeline::open(&crate::host::models_dir(), &options)?;
    let (report, chips) = match kind {
        Kind::Photo => photo(&args, &pipeline)?,
        Kind::Video => video(&args, &pipeline)?,
    };
    if let Some(dir) = &args.out {
        write_out(dir, &report, &chips)
            .with_context(|| format!("cannot write into {}", dir.display()))?;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    serde_json::to_writer(&mut out, &report)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One face of a photo.
#[derive(Serialize)]
struct PhotoFace {
    #[serde(flatten)]
    face: FoundFace,
    #[serde(flatten)]
    measures: Measures,
}

/// The report: `{"path", "kind": "photo", "width", "height", "faces"}` or
/// `{"path", "kind": "video", ...the enrollment report}`.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Report {
    Photo {
        path: PathBuf,
        width: u32,
        height: u32,
        faces: Vec<PhotoFace>,
        /// Why no face was found (only when `faces` is empty).
        #[serde(skip_serializing_if = "Option::is_none")]
        no_face: Option<String>,
    },
    Video {
        path: PathBuf,
        #[serde(flatten)]
        report: Box<EnrollReport>,
    },
}

/// The report and the chips to write, by file name.
type Output = (Report, Vec<(String, RgbImage)>);

fn photo(args: &FacesArgs, pipeline: &FacePipeline) -> anyhow::Result<Output> {
    let img = twin_faces::imageio::decode_file(&args.input, &Default::default())?;
    let start = Instant::now();
    let found = pipeline.find_faces(&img)?;
    let mut faces = Vec::with_capacity(found.len());
    let mut chips = Vec::with_capacity(found.len());
    for (i, face) in found.into_iter().enumerate() {
        let chip = cut_chip(&img, &face);
        let measures = Measures::of(face.bbox, &face.landmarks, &chip);
        chips.push((format!("face-{i}.png"), chip));
        faces.push(PhotoFace { face, measures });
    }
    let no_face = faces.is_empty().then(|| pipeline.no_face_reason(&img));
    eprintln!(
        "twin: {}: {}×{} photo, {} face{} ({:.2} s){}",
        args.input.display(),
        img.width(),
        img.height(),
        faces.len(),
        if faces.len() == 1 { "" } else { "s" },
        start.elapsed().as_secs_f64(),
        no_face
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    let report = Report::Photo {
        path: args.input.clone(),
        width: img.width(),
        height: img.height(),
        faces,
        no_face,
    };
    Ok((report, chips))
}

fn video(args: &FacesArgs, pipeline: &FacePipeline) -> anyhow::Result<Output> {
    let embedder = if args.no_identity {
        None
    } else {
        let model = crate::host::backbone(args.model.clone());
        Some(
            Embedder::open(
                &model,
                &EmbedderOptions {
                    threads: args.threads.max(1),
                },
            )
            .context("the one-person check needs the embedding model (or pass --no-identity)")?,
        )
    };
    let mut options = EnrollOptions {
        max_kept: args.max_kept,
        min_kept: args.min_kept,
        ..EnrollOptions::default()
    };
    options.sampler.interval_ms = args.interval_ms.max(1);
    let start = Instant::now();
    let report = enroll::enroll_video(
        &args.input,
        pipeline,
        embedder.as_ref().map(|e| e as &dyn ChipEmbedder),
        &options,
    )?;
    let total = start.elapsed();
    let reasons = report
        .rejected_by_reason
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let yes = |b| if b { "yes" } else { "no" };
    let t = report.timings;
    eprintln!(
        "twin: {}: {} frames sampled every {} ms, {} kept, {} rejected ({}); head turned left: {}, right: {}; {:.2} s (decode {:.2}, faces {:.2}, measures {:.2}, one-person check {:.2})",
        args.input.display(),
        report.frames_sampled,
        report.interval_ms,
        report.kept.len(),
        report.rejected.len(),
        if reasons.is_empty() { "none".into() } else { reasons },
        yes(report.turned_left),
        yes(report.turned_right),
        total.as_secs_f64(),
        t.decode.as_secs_f64(),
        t.faces.as_secs_f64(),
        t.measure.as_secs_f64(),
        t.identity.as_secs_f64(),
    );
    let chips = report
        .kept
        .iter()
        .map(|k| (format!("{}.png", k.ms), k.chip.clone()))
        .collect();
    let report = Report::Video {
        path: args.input.clone(),
        report: Box::new(report),
    };
    Ok((report, chips))
}

/// Refuses an output folder that exists and is not empty (checked before the work and again
/// before writing).
fn check_out_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let empty = dir.is_dir()
            && std::fs::read_dir(dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
                .next()
                .is_none();
        if !empty {
            bail!("{} exists and is not an empty folder", dir.display());
        }
    }
    Ok(())
}

/// Writes the chips and `report.json` into `dir`, which must not exist or be empty (stale
/// chips of an earlier run beside a new report would mislead). The files are written into a
/// temporary sibling folder that is renamed into place, so `dir` appears complete or not at all.
fn write_out(dir: &Path, report: &Report, chips: &[(String, RgbImage)]) -> anyhow::Result<()> {
    check_out_dir(dir)?;
    let name = dir
        .file_name()
        .with_context(|| format!("{} is not a folder name", dir.display()))?;
    let mut staging_name = std::ffi::OsString::from(".");
    staging_name.push(name);
    staging_name.push(format!(".tmp-{}", std::process::id()));
    let staging = dir.with_file_name(staging_name);
    std::fs::create_dir(&staging)?;
    let fill = || -> anyhow::Result<()> {
        for (name, chip) in chips {
            chip.save_with_format(staging.join(name), image::ImageFormat::Png)?;
        }
        let mut json = serde_json::to_vec_pretty(report)?;
        json.push(b'\n');
        std::fs::write(staging.join("report.json"), json)?;
        // rename(2) replaces an empty folder.
        std::fs::rename(&staging, dir)?;
        Ok(())
    };
    let result = fill();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}
