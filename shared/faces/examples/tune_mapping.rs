//! Searches the cascade → dlib box mapping that brings our embeddings closest to
//! face_recognition's on the same photos (the end-to-end criterion), around the box-fit values.
//!
//! `cargo run --release -p twin-core --example tune_mapping FR.json`
//! FR.json comes from tests/reference/face_recognition_e2e.py.

use twin_faces::detect::{
    to_dlib_rect, BoxMapping, CascadeDetector, DetectorParams, DEFAULT_CASCADE,
};
use twin_faces::pipeline::trim_to_image;
use twin_faces::ShapePredictor;
use twin_model::embed::{ChipBatch, Embedder, EmbedderOptions};

fn main() {
    let fr: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(std::env::args().nth(1).unwrap()).unwrap())
            .unwrap();
    let models = twin_tests::models_dir();
    let det = CascadeDetector::open(
        std::path::Path::new(DEFAULT_CASCADE),
        DetectorParams::default(),
    )
    .unwrap();
    let sp = ShapePredictor::open(&models.join("shape_predictor_5_face_landmarks.dat")).unwrap();
    let emb = Embedder::open(&models.join("backbone.onnx"), &EmbedderOptions::default()).unwrap();
    // (image, detection, reference encoding) for faces both find.
    let mut cases = Vec::new();
    for e in fr.as_array().unwrap() {
        let img = twin_faces::imageio::decode_file(
            std::path::Path::new(e["image"].as_str().unwrap()),
            &Default::default(),
        )
        .unwrap();
        let mut dets = det.detect(&img).unwrap();
        if dets.is_empty() {
            let (padded, pad) = twin_faces::pipeline::pad_image(&img, 0.5);
            let scale = det.detection_scale(img.width().max(img.height()));
            dets = det.detect_at(&padded, scale).unwrap();
            for d in &mut dets {
                d.x -= pad as i64;
                d.y -= pad as i64;
            }
        }
        for f in e["faces"].as_array().unwrap() {
            let b: Vec<f64> = f["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
            if let Some(d) = dets.iter().find(|d| {
                (d.x as f64 + d.w as f64 / 2.0 - cx).abs() < d.w as f64 / 3.0
                    && (d.y as f64 + d.h as f64 / 2.0 - cy).abs() < d.h as f64 / 3.0
            }) {
                let enc: Vec<f32> = f["encoding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                cases.push((img.clone(), *d, enc));
            }
        }
    }
    println!("faces: {}", cases.len());
    let eval = |m: &BoxMapping| {
        let mut batch = ChipBatch::new();
        for (img, d, _) in &cases {
            let rect = trim_to_image(to_dlib_rect(d, m), img.width(), img.height());
            let lm = sp.predict(img, rect);
            batch.push(&twin_faces::face_chip(img, &lm)).unwrap();
        }
        let out = emb.embed(&batch).unwrap();
        let ds: Vec<f32> = cases
            .iter()
            .enumerate()
            .map(|(i, c)| {
                out.row(i)
                    .iter()
                    .zip(&c.2)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt()
            })
            .collect();
        let max = ds.iter().cloned().fold(0.0, f32::max);
        let mean = ds.iter().sum::<f32>() / ds.len() as f32;
        (max, mean)
    };
    let base = BoxMapping::default();
    println!(
        "box fit {base:?}: max {:.4} mean {:.4}",
        eval(&base).0,
        eval(&base).1
    );
    let mut best = (f32::MAX, 0.0, base);
    for cx in [0.47, 0.48, 0.49, 0.50, 0.51] {
        for cy in [0.54, 0.555, 0.57, 0.585, 0.60] {
            for scale in [0.84, 0.86, 0.88, 0.90, 0.92] {
                let m = BoxMapping { cx, cy, scale };
                let (max, mean) = eval(&m);
                if max < best.0 {
                    best = (max, mean, m);
                }
            }
        }
    }
    println!(
        "best by max: {:?}: max {:.4} mean {:.4}",
        best.2, best.0, best.1
    );
}
