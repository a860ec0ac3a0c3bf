//! Every image of `../shared/data/faces` (112×112 and 150×150 cuts of 29 people) through the
//! photo pipeline: at least 95 % must give a chip, and the chips must be faces of the right
//! person (each chip's nearest identity, by the mean embedding of that identity's other chips,
//! is its own for at least 95 % of them, and 98 % of the faces the cascade found directly).

use std::collections::BTreeMap;
use std::path::PathBuf;

use twin_faces::pipeline::{cut_chip, FacePipeline, FaceSource, PipelineOptions};
use twin_model::embed::{ChipBatch, Embedder, EmbedderOptions};

/// (identity, image path) for every image of the face set.
fn face_set() -> Vec<(String, PathBuf)> {
    let dir = twin_tests::data_dir().join("faces");
    assert!(dir.is_dir(), "test data {} is missing", dir.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if !p.is_dir() {
            continue;
        }
        let who = p.file_name().unwrap().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&p).unwrap() {
            let f = f.unwrap().path();
            if f.extension().and_then(|e| e.to_str()) == Some("jpg") {
                out.push((who.clone(), f));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn at_least_95_percent_of_the_face_set_gives_a_chip_of_the_right_person() {
    let images = face_set();
    assert!(images.len() >= 800, "{} images", images.len());
    let models = twin_tests::models_dir();
    let pipeline = FacePipeline::open(&models, &PipelineOptions::default())
        .expect("pipeline (run scripts/setup)");
    let embedder = Embedder::open(&models.join("backbone.onnx"), &EmbedderOptions::default())
        .expect("run scripts/setup");

    let mut by_source: BTreeMap<FaceSource, usize> = BTreeMap::new();
    let mut without = Vec::new();
    // (identity, source, chip) of every image that gave one.
    let mut chips = Vec::new();
    for (who, path) in &images {
        let img = twin_faces::imageio::decode_file(path, &Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let faces = pipeline.find_faces(&img).unwrap();
        match faces.first() {
            Some(face) => {
                *by_source.entry(face.source).or_default() += 1;
                chips.push((who.clone(), face.source, cut_chip(&img, face)));
            }
            None => without.push(path.display().to_string()),
        }
    }
    let share = chips.len() as f64 / images.len() as f64;
    println!(
        "{} images: {} give a chip ({:.1} %) by path {by_source:?}; {} give none",
        images.len(),
        chips.len(),
        100.0 * share,
        without.len()
    );
    for p in &without {
        println!("  no chip: {p}");
    }
    assert!(share >= 0.95, "only {:.1} % give a chip", 100.0 * share);

    // Are the chips faces of the right person? Nearest identity by leave-one-out means.
    let mut embeddings: Vec<Vec<f32>> = Vec::with_capacity(chips.len());
    for group in chips.chunks(32) {
        let mut batch = ChipBatch::new();
        for (_, _, chip) in group {
            batch.push(chip).unwrap();
        }
        let out = embedder.embed(&batch).unwrap();
        for i in 0..group.len() {
            embeddings.push(out.row(i).to_vec());
        }
    }
    let dim = embeddings[0].len();
    let mut sums: BTreeMap<&str, (Vec<f32>, usize)> = BTreeMap::new();
    for ((who, _, _), e) in chips.iter().zip(&embeddings) {
        let s = sums
            .entry(who.as_str())
            .or_insert_with(|| (vec![0.0; dim], 0));
        s.0.iter_mut().zip(e).for_each(|(a, b)| *a += b);
        s.1 += 1;
    }
    let mut right: BTreeMap<FaceSource, (usize, usize)> = BTreeMap::new();
    for ((who, source, _), e) in chips.iter().zip(&embeddings) {
        let mut best = (f32::MAX, "");
        for (id, (sum, n)) in &sums {
            let (n, own) = if *id == who.as_str() {
                (*n - 1, true)
            } else {
                (*n, false)
            };
            if n == 0 {
                continue;
            }
            let d: f32 = sum
                .iter()
                .zip(e)
                .map(|(s, x)| {
                    let mean = if own {
                        (s - x) / n as f32
                    } else {
                        s / n as f32
                    };
                    (mean - x) * (mean - x)
                })
                .sum::<f32>()
                .sqrt();
            if d < best.0 {
                best = (d, id);
            }
        }
        let r = right.entry(*source).or_default();
        r.1 += 1;
        if best.1 == who.as_str() {
            r.0 += 1;
        }
    }
    for (source, (ok, n)) in &right {
        println!(
            "{:?}: {ok} of {n} chips nearest their own identity ({:.1} %)",
            source,
            100.0 * *ok as f64 / *n as f64
        );
    }
    let ok: usize = right.values().map(|r| r.0).sum();
    let rate = ok as f64 / chips.len() as f64;
    println!(
        "all paths: {ok} of {} chips nearest their own identity ({:.1} %)",
        chips.len(),
        100.0 * rate
    );
    assert!(
        rate >= 0.95,
        "only {:.1} % of the chips are nearest their own identity",
        100.0 * rate
    );
    let detected = right[&FaceSource::Detected];
    assert!(
        detected.0 as f64 >= 0.98 * detected.1 as f64,
        "detected faces: {detected:?}"
    );
}
