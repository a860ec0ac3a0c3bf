//! Fits the mapping from OpenCV cascade boxes to dlib HOG boxes (`face::detect::to_dlib_rect`).
//!
//! `cargo run -p twin-core --example calibrate_boxes [--pad FRACTION] IMAGE...`
//! Decodes each image, writes it as PNG so both detectors see the same pixels, runs dlib's HOG
//! detector (tests/reference/dlib_boxes.py in the project venv) and the cascade, pairs the faces,
//! and prints the least-squares centre offsets and scale with the residuals.

use std::path::PathBuf;
use std::process::Command;

use twin_faces::detect::{CascadeDetector, DetectorParams, DEFAULT_CASCADE};

/// One face's measurements, as the calibration collects them.
type Pair = (f64, f64, f64, f64, f64, f64);

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut pad = 0.0f64;
    if args.first().map(String::as_str) == Some("--pad") {
        pad = args[1].parse().expect("--pad FRACTION");
        args.drain(..2);
    }
    let root = twin_tests::repo_root();
    let tmp = tempfile::tempdir().unwrap();
    let mut params = DetectorParams::default();
    if let Some(n) = std::env::var("MIN_NEIGHBORS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        params.min_neighbors = n;
    }
    if let Some(n) = std::env::var("SCALE_FACTOR")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        params.scale_factor = n;
    }
    if std::env::var_os("NO_EQUALIZE").is_some() {
        params.equalize = false;
    }
    println!("parameters: {params:?}");
    let det = CascadeDetector::open(std::path::Path::new(DEFAULT_CASCADE), params).unwrap();
    let mut pngs = Vec::new();
    let mut ours = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let img =
            twin_faces::imageio::decode_file(std::path::Path::new(a), &Default::default()).unwrap();
        let img = if pad > 0.0 {
            twin_faces::pipeline::pad_image(&img, pad).0
        } else {
            img
        };
        let p: PathBuf = tmp.path().join(format!("{i}.png"));
        img.save(&p).unwrap();
        pngs.push(p);
        ours.push(det.detect(&img).unwrap());
    }
    let out = tmp.path().join("dlib.json");
    let st = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("tests/reference/dlib_boxes.py"))
        .arg(&out)
        .args(&pngs)
        .status()
        .unwrap();
    assert!(st.success());
    let dlib: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    // Pairs (cascade x, y, w, h) with (dlib cx, cy, side).
    let mut pairs = Vec::new();
    let (mut only_dlib, mut only_cv) = (0, 0);
    for (i, entry) in dlib.as_array().unwrap().iter().enumerate() {
        let boxes: Vec<[f64; 4]> = entry["boxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let v: Vec<f64> = b
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                [v[0], v[1], v[2], v[3]]
            })
            .collect();
        let mut used = vec![false; ours[i].len()];
        for b in &boxes {
            let (cx, cy, side) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, b[2] - b[0] + 1.0);
            let best = ours[i]
                .iter()
                .enumerate()
                .filter(|(j, _)| !used[*j])
                .min_by(|(_, p), (_, q)| {
                    let dp = ((p.x as f64 + p.w as f64 / 2.0 - cx).powi(2)
                        + (p.y as f64 + p.h as f64 / 2.0 - cy).powi(2))
                    .sqrt();
                    let dq = ((q.x as f64 + q.w as f64 / 2.0 - cx).powi(2)
                        + (q.y as f64 + q.h as f64 / 2.0 - cy).powi(2))
                    .sqrt();
                    dp.partial_cmp(&dq).unwrap()
                });
            match best {
                Some((j, d))
                    if ((d.x as f64 + d.w as f64 / 2.0 - cx).abs() < side / 2.0)
                        && ((d.y as f64 + d.h as f64 / 2.0 - cy).abs() < side / 2.0) =>
                {
                    used[j] = true;
                    pairs.push((d.x as f64, d.y as f64, d.w as f64, cx, cy, side));
                }
                _ => only_dlib += 1,
            }
        }
        only_cv += used.iter().filter(|u| !**u).count();
        if std::env::var_os("VERBOSE").is_some() {
            println!(
                "{}: dlib {} cascade {} (neighbors {:?})",
                args[i],
                boxes.len(),
                ours[i].len(),
                ours[i]
                    .iter()
                    .map(|d| (d.w, d.neighbors))
                    .collect::<Vec<_>>()
            );
        }
    }
    let n = pairs.len() as f64;
    // cx = x + w·a  →  a = mean((cx − x)/w); same for b; scale = Σ side·w / Σ w².
    let a = pairs.iter().map(|p| (p.3 - p.0) / p.2).sum::<f64>() / n;
    let b = pairs.iter().map(|p| (p.4 - p.1) / p.2).sum::<f64>() / n;
    let s =
        pairs.iter().map(|p| p.5 * p.2).sum::<f64>() / pairs.iter().map(|p| p.2 * p.2).sum::<f64>();
    let rms =
        |f: &dyn Fn(&Pair) -> f64| (pairs.iter().map(|p| f(p).powi(2)).sum::<f64>() / n).sqrt();
    println!(
        "images {}  paired faces {}  dlib only {}  cascade only {}",
        args.len(),
        pairs.len(),
        only_dlib,
        only_cv
    );
    println!("BOX_CX = {a:.4}  BOX_CY = {b:.4}  BOX_SCALE = {s:.4}");
    println!(
        "residual rms, as a fraction of dlib's side: cx {:.4}  cy {:.4}  side {:.4}",
        rms(&|p| (p.0 + a * p.2 - p.3) / p.5),
        rms(&|p| (p.1 + b * p.2 - p.4) / p.5),
        rms(&|p| (s * p.2 - p.5) / p.5)
    );
}
