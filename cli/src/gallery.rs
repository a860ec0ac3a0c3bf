//! `twin gallery import`, `twin match`, `twin enroll`: the use cases on the local data folder.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use twin_core::enrollment::EnrollmentState;

use crate::host::open_inline;

#[derive(Args)]
pub struct ImportArgs {
    /// A folder with one sub-folder of photos per identity (folder name = the person's name), or
    /// a `.parquet` file laid out as a Hugging Face image-classification dataset (`image` and
    /// `label` columns, class names from its metadata).
    source: PathBuf,
    /// Threads ONNX Runtime may use.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

pub fn import(data: &Path, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let local = open_inline(data, args.threads)?;
    local.resume_inline()?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "importing [{bar:40}] {pos}/{len} images, {per_sec}, eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let progress = |done: usize, total: usize| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    };
    let is_parquet = args.source.is_file()
        || args
            .source
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let summary = if is_parquet {
        local.import.parquet(&args.source, &progress)
    } else {
        local.import.folder(&args.source, &progress)
    }
    .with_context(|| format!("import of {} failed", args.source.display()))?;
    bar.finish_and_clear();
    let rejected: usize = summary.rejected.values().sum();
    eprintln!(
        "twin: {} identities ({} imported before), {} images imported, {} rejected{}; dataset version {} in {}",
        summary.identities,
        summary.already_imported,
        summary.imported,
        rejected,
        if rejected > 0 { format!(" ({:?})", summary.rejected) } else { String::new() },
        summary.dataset_version,
        data.display()
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct MatchArgs {
    /// The photo (JPEG, PNG or WebP).
    photo: PathBuf,
    /// Identities per face.
    #[arg(short, long, default_value_t = 5)]
    k: usize,
    /// Print the whole answer as JSON.
    #[arg(long)]
    json: bool,
}

pub fn match_photo(data: &Path, args: MatchArgs) -> anyhow::Result<ExitCode> {
    let local = open_inline(data, 1)?;
    let bytes = std::fs::read(&args.photo)
        .with_context(|| format!("cannot read {}", args.photo.display()))?;
    let r = local.matching.match_photo(&bytes, args.k)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (i, f) in r.faces.iter().enumerate() {
        println!("face {} at {:?}:", i + 1, f.bbox);
        for h in &f.matches {
            let verdict = if h.same_person {
                "this is you"
            } else {
                "lookalike"
            };
            println!(
                "  {:>3}%  {:<30} distance {:.3}  {verdict}",
                h.similarity, h.display_name, h.distance
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct EnrollArgs {
    /// The person's name (any script). A new enrollment is a new person, even under a name
    /// like someone else's (it then gets the next free slug, e.g. `ada_lovelace_2`).
    #[arg(long)]
    name: String,
    /// Add this video to a person already in the gallery (their slug) instead.
    #[arg(long, value_name = "SLUG")]
    join: Option<String>,
    /// A 5–6 s video of the face turning to both sides (or a photo).
    file: PathBuf,
}

pub fn enroll(data: &Path, args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let local = open_inline(data, 1)?;
    local.resume_inline()?;
    let s = local.enroll_file(&args.name, args.join.as_deref(), &args.file)?;
    eprintln!(
        "twin: {} ({}): {}{}; {} faces kept of {} frames; rejected {:?}; head turned left {:?}, right {:?}",
        s.display_name,
        s.slug,
        s.state,
        s.error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default(),
        s.kept.unwrap_or(0),
        s.frames_sampled.unwrap_or(0),
        s.rejected,
        s.turned_left,
        s.turned_right
    );
    for line in twin_core::enrollment::advice(&s) {
        eprintln!("twin: {line}");
    }
    println!("{}", serde_json::to_string(&s)?);
    Ok(if s.state == EnrollmentState::Indexed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `twin gallery erase SLUG`: the same erasure as `DELETE /v1/identities/{slug}`.
pub fn erase(data: &Path, slug: &str) -> anyhow::Result<ExitCode> {
    let local = open_inline(data, 1)?;
    let done = local.erasure.erase(slug)?;
    eprintln!(
        "twin: erased {slug}: {} enrollments, {} files, {} model versions rewritten, {} dataset objects deleted",
        done.enrollments, done.files, done.models, done.dataset_objects
    );
    println!("{}", serde_json::to_string(&done)?);
    Ok(ExitCode::SUCCESS)
}
