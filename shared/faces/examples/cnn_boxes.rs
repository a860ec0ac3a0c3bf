//! Prints the boxes of the imported CNN face detector (`face::cnn`) beside dlib's own
//! (`tests/reference/dlib_cnn_boxes.py` output), with the intersection over union of each pair.
//!
//! `cargo run --release -p twin-core --example cnn_boxes -- DLIB.json START_SCALE`
//! (START_SCALE 2 matches dlib's upsample 1, 1 matches upsample 0.)

use std::path::Path;

use twin_faces::cnn::CnnFaceDetector;
use twin_faces::imageio::{decode_file, Limits};
use twin_faces::Rect;
use twin_model::embed::EmbedderOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reference: serde_json::Value = serde_json::from_slice(&std::fs::read(&args[0])?)?;
    let scale: f64 = args[1].parse()?;
    let det = CnnFaceDetector::open(&twin_tests::models_dir(), &EmbedderOptions::default())?;
    let (mut n, mut worst, mut missing, mut extra) = (0, 1.0f64, 0, 0);
    for item in reference.as_array().expect("a list") {
        let path = item["image"].as_str().expect("image");
        let img = decode_file(Path::new(path), &Limits::default())?;
        let t = std::time::Instant::now();
        let ours = det.detect(&img, scale)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let theirs: Vec<(Rect, f64)> = item["boxes"]
            .as_array()
            .expect("boxes")
            .iter()
            .map(|b| {
                let v: Vec<f64> = b
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect();
                (
                    Rect::new(v[0] as i64, v[1] as i64, v[2] as i64, v[3] as i64),
                    v[4],
                )
            })
            .collect();
        println!("{path} ({}×{}, {ms:.0} ms)", img.width(), img.height());
        for (r, s) in &theirs {
            let best = ours
                .iter()
                .map(|o| (r.iou(&o.rect), o))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match best {
                Some((v, o)) if v > 0.3 => {
                    n += 1;
                    worst = worst.min(v);
                    println!(
                        "  dlib {:?} {s:.3}  ours {:?} {:.3}  iou {v:.3}",
                        (r.left, r.top, r.right, r.bottom),
                        (o.rect.left, o.rect.top, o.rect.right, o.rect.bottom),
                        o.score
                    );
                }
                _ => {
                    missing += 1;
                    println!(
                        "  dlib {:?} {s:.3}  ours: none",
                        (r.left, r.top, r.right, r.bottom)
                    );
                }
            }
        }
        for o in &ours {
            if !theirs.iter().any(|(r, _)| r.iou(&o.rect) > 0.3) {
                extra += 1;
                println!(
                    "  ours only {:?} {:.3}",
                    (o.rect.left, o.rect.top, o.rect.right, o.rect.bottom),
                    o.score
                );
            }
        }
    }
    println!("paired {n} (worst iou {worst:.3}), dlib only {missing}, ours only {extra}");
    Ok(())
}
