//! The embedding engine against dlib itself, number for number.
//!
//! dlib (through `reference/dlib_oracle.py` and the venv `scripts/setup` makes) finds every face
//! in the real photos of `data/media` and in a deterministic spread of the tight crops of
//! `data/faces`, cuts dlib's aligned 150×150 chip of each, and computes its 128-d descriptor on
//! that chip. Our [`Embedder`], running the imported `backbone.onnx`, must give every chip the
//! same descriptor to within [`TOLERANCE`] in every component. Missing pieces fail the test.

use std::path::PathBuf;

use twin_model::embed::{ChipBatch, Embedder, EmbedderOptions};
use twin_tests::{
    data_label, euclidean, face_crops, load_chip, max_abs_diff, media_photos, require_backbone,
    CutOptions, Oracle, OracleChip, SETUP_HINT,
};

/// Largest allowed difference between our value and dlib's, per descriptor component.
const TOLERANCE: f32 = 1e-4;
/// Chips per call to the engine.
const BATCH: usize = 16;
/// Face crops taken from each identity of `data/faces`.
const CROPS_PER_IDENTITY: usize = 5;
/// Chips from `data/faces` the comparison must at least cover.
const MIN_CROP_CHIPS: usize = 100;
/// How many of the worst chips a failure lists.
const SHOW_WORST: usize = 20;
/// Chips also embedded one at a time (the path a single uploaded face takes).
const SINGLES: usize = 16;

struct ChipDiff {
    label: String,
    max_abs: f32,
    distance: f64,
}

fn label(chip: &OracleChip) -> String {
    format!("{} face {}", data_label(&chip.image), chip.face)
}

#[test]
fn embeddings_match_dlib_on_every_chip() {
    // Every prerequisite first, so a missing one fails in seconds with a clear message.
    let oracle = Oracle::require();
    let backbone = require_backbone();
    let embedder = Embedder::open(&backbone, &EmbedderOptions { threads: 1 }).unwrap_or_else(|e| {
        panic!(
            "cannot open the embedding engine on {}: {e}; {SETUP_HINT}",
            backbone.display()
        )
    });

    let photos = media_photos();
    let crops = face_crops(CROPS_PER_IDENTITY);
    let work = tempfile::tempdir().expect("temporary folder");

    // The two reference runs are independent: run them side by side.
    let media_job = oracle.spawn_cut(&work.path().join("media"), &photos, &CutOptions::photos());
    let crops_job = oracle.spawn_cut(
        &work.path().join("faces"),
        &crops,
        &CutOptions::tight_crops(),
    );
    let media = media_job.wait();
    let faces = crops_job.wait();

    println!(
        "dlib {}: data/media {} photos -> {} faces ({} without a face); data/faces {} crops -> {} faces ({} without a face)",
        media.dlib_version,
        media.images,
        media.chips.len(),
        media.images_without_face.len(),
        faces.images,
        faces.chips.len(),
        faces.images_without_face.len(),
    );
    for path in media
        .images_without_face
        .iter()
        .chain(&faces.images_without_face)
    {
        println!("  no face found by dlib in {}", data_label(path));
    }
    assert_eq!(
        media.images,
        photos.len(),
        "the reference did not read every photo"
    );
    assert_eq!(
        faces.images,
        crops.len(),
        "the reference did not read every crop"
    );
    assert!(!media.chips.is_empty(), "dlib found no face in data/media");
    assert!(
        faces.chips.len() >= MIN_CROP_CHIPS,
        "dlib found faces in only {} of {} crops from data/faces; the comparison needs at least {MIN_CROP_CHIPS}",
        faces.chips.len(),
        crops.len()
    );

    let chips: Vec<&OracleChip> = media.chips.iter().chain(&faces.chips).collect();
    let mut diffs: Vec<ChipDiff> = Vec::with_capacity(chips.len());
    let mut sum_abs = 0.0f64;
    let mut components = 0usize;
    for group in chips.chunks(BATCH) {
        let mut batch = ChipBatch::with_capacity(group.len());
        for chip in group {
            batch
                .push(&load_chip(&chip.chip_png))
                .unwrap_or_else(|e| panic!("chip of {} refused: {e}", label(chip)));
        }
        let out = embedder
            .embed(&batch)
            .unwrap_or_else(|e| panic!("embedding a batch of {} failed: {e}", group.len()));
        assert_eq!(
            out.len(),
            group.len(),
            "the engine returned {} rows for {} chips",
            out.len(),
            group.len()
        );
        for (i, chip) in group.iter().enumerate() {
            let ours = out.row(i);
            let theirs = chip
                .descriptor
                .as_deref()
                .expect("the reference computed descriptors");
            assert_eq!(
                ours.len(),
                theirs.len(),
                "our embedding has {} values, dlib's {}",
                ours.len(),
                theirs.len()
            );
            sum_abs += ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| f64::from((a - b).abs()))
                .sum::<f64>();
            components += ours.len();
            diffs.push(ChipDiff {
                label: label(chip),
                max_abs: max_abs_diff(ours, theirs),
                distance: euclidean(ours, theirs),
            });
        }
    }

    let count = diffs.len();
    let expected_min = media.chips.len() + MIN_CROP_CHIPS;
    assert_eq!(count, chips.len(), "not every chip was compared");
    assert!(
        count >= expected_min,
        "compared {count} chips, fewer than media faces + {MIN_CROP_CHIPS} = {expected_min}"
    );

    diffs.sort_by(|a, b| b.max_abs.total_cmp(&a.max_abs));
    let worst = &diffs[0];
    let mean_max_abs = diffs.iter().map(|d| f64::from(d.max_abs)).sum::<f64>() / count as f64;
    let mean_abs = sum_abs / components as f64;
    let max_distance = diffs.iter().map(|d| d.distance).fold(0.0, f64::max);
    println!(
        "compared {count} chips ({} media + {} crops) with dlib, tolerance {TOLERANCE:e} per component",
        media.chips.len(),
        faces.chips.len()
    );
    println!(
        "  worst max-abs diff   {:.3e}  ({})",
        worst.max_abs, worst.label
    );
    println!("  mean per-chip max-abs {mean_max_abs:.3e}");
    println!("  mean abs diff         {mean_abs:.3e} per component");
    println!("  largest L2 distance   {max_distance:.3e} (dlib's same-person threshold is 0.6)");

    let failing: Vec<&ChipDiff> = diffs
        .iter()
        .filter(|d| d.max_abs > TOLERANCE || d.max_abs.is_nan())
        .collect();
    if !failing.is_empty() {
        let mut report = format!(
            "{} of {count} chips differ from dlib by more than {TOLERANCE:e} in some component; worst first:\n",
            failing.len()
        );
        for d in failing.iter().take(SHOW_WORST) {
            report.push_str(&format!(
                "  max-abs {:.3e}  L2 {:.3e}  {}\n",
                d.max_abs, d.distance, d.label
            ));
        }
        panic!("{report}the importer or the engine does not reproduce dlib's network");
    }

    // The same comparison through batches of one, on the first chips.
    let mut singles_worst = 0.0f32;
    for chip in chips.iter().take(SINGLES) {
        let mut batch = ChipBatch::with_capacity(1);
        batch
            .push(&load_chip(&chip.chip_png))
            .unwrap_or_else(|e| panic!("chip of {} refused: {e}", label(chip)));
        let out = embedder
            .embed(&batch)
            .unwrap_or_else(|e| panic!("embedding one chip failed: {e}"));
        assert_eq!(
            out.len(),
            1,
            "the engine returned {} rows for 1 chip",
            out.len()
        );
        let theirs = chip
            .descriptor
            .as_deref()
            .expect("the reference computed descriptors");
        let d = max_abs_diff(out.row(0), theirs);
        assert!(
            d <= TOLERANCE,
            "embedded alone, the chip of {} differs from dlib by {d:.3e} (> {TOLERANCE:e})",
            label(chip)
        );
        singles_worst = singles_worst.max(d);
    }
    println!("batch of one: worst max-abs diff {singles_worst:.3e} over the first {SINGLES} chips");
}

/// The data selection is deterministic and spread over identities (no reference needed).
#[test]
fn crop_selection_is_deterministic_and_spread() {
    let a: Vec<PathBuf> = face_crops(CROPS_PER_IDENTITY);
    let b: Vec<PathBuf> = face_crops(CROPS_PER_IDENTITY);
    assert_eq!(a, b);
    let identities: std::collections::BTreeSet<_> = a.iter().filter_map(|p| p.parent()).collect();
    assert!(
        identities.len() > 20,
        "crops come from {} identities only",
        identities.len()
    );
    assert!(a.len() >= MIN_CROP_CHIPS, "only {} crops selected", a.len());
}
