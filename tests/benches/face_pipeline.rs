//! Photo and video speed of the face pipeline, on one CPU, against face_recognition in the same
//! run.
//!
//! `cargo bench -p twin-tests --bench face_pipeline` writes 640×480 and 1920×1080 JPEGs cut
//! from the media photos, then times on each, end to end from the file: ours (decode, cascade,
//! box mapping, landmarks, chips, embeddings) and face_recognition's (`load_image_file`,
//! `face_locations`, `face_encodings`, from `reference/face_recognition_bench.py`), and prints
//! the medians side by side with the ratio. Then it enrolls `short_hamilton_clip.mp4` (a frame
//! every 100 ms, faces, quality gate, one-person check) and prints seconds of processing per
//! second of video. The process and the Python reference are pinned to one CPU with `taskset`
//! and run one after the other; ONNX Runtime and OpenCV are set to one thread. Numbers only:
//! nothing here asserts a speed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use image::{imageops, RgbImage};
use twin_faces::detect::set_opencv_threads;
use twin_faces::enroll::{enroll_video, video_pipeline_options, EnrollOptions};
use twin_faces::pipeline::{cut_chip, FacePipeline, PipelineOptions};
use twin_model::embed::{ChipBatch, Embedder, EmbedderOptions};
use twin_tests::{bench_requested, data_dir, median, repo_root, require_backbone, SETUP_HINT};

/// Untimed runs per photo before timing, for both.
const WARMUP: usize = 2;
/// Timed runs per photo for ours.
const OUR_ROUNDS: usize = 10;
/// Timed runs per photo for face_recognition (seconds per 1080p photo).
const FR_ROUNDS: usize = 3;
/// Timed enrollments of the clip.
const VIDEO_ROUNDS: usize = 3;

struct Photo {
    label: String,
    path: PathBuf,
}

/// `img` scaled to cover `w`×`h` and cut to it around the centre.
fn cover(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let scale = (w as f64 / img.width() as f64).max(h as f64 / img.height() as f64);
    let sw = ((img.width() as f64 * scale).round() as u32).max(w);
    let sh = ((img.height() as f64 * scale).round() as u32).max(h);
    let scaled = if (sw, sh) == img.dimensions() {
        img.clone()
    } else {
        imageops::resize(img, sw, sh, imageops::FilterType::Triangle)
    };
    imageops::crop_imm(&scaled, (sw - w) / 2, (sh - h) / 2, w, h).to_image()
}

fn photos(dir: &Path) -> Vec<Photo> {
    let media = data_dir().join("media");
    let mut out = Vec::new();
    for (w, h) in [(640u32, 480u32), (1920, 1080)] {
        for name in ["obama-1080p.jpg", "two_people.jpg"] {
            let img = twin_faces::imageio::decode_file(&media.join(name), &Default::default())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let cut = cover(&img, w, h);
            let stem = name.trim_end_matches(".jpg");
            let path = dir.join(format!("{stem}-{w}x{h}.jpg"));
            let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut file, 92)
                .encode_image(&cut)
                .unwrap();
            drop(file);
            out.push(Photo {
                label: format!("{w}×{h} {stem}"),
                path,
            });
        }
    }
    out
}

/// One end-to-end run of ours on a photo file; returns the number of faces embedded.
fn ours_once(pipeline: &FacePipeline, embedder: &Embedder, path: &Path) -> usize {
    let img = twin_faces::imageio::decode_file(path, &Default::default()).unwrap();
    let faces = pipeline.find_faces_with(&img, false).unwrap();
    if faces.is_empty() {
        return 0;
    }
    let mut batch = ChipBatch::with_capacity(faces.len());
    for f in &faces {
        batch.push(&cut_chip(&img, f)).unwrap();
    }
    let out = embedder.embed(&batch).unwrap();
    std::hint::black_box(&out);
    out.len()
}

/// Pins this process (every thread it has and will have) to CPU 0.
fn pin_to_one_cpu() -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn main() {
    if !bench_requested("face_pipeline") {
        return;
    }
    let pinned = pin_to_one_cpu();
    set_opencv_threads(1).expect("OpenCV threads");
    let root = repo_root();
    let models = root.join("vendor/models");
    let backbone = require_backbone();
    let pipeline = FacePipeline::open(&models, &PipelineOptions::default())
        .unwrap_or_else(|e| panic!("{e}: {SETUP_HINT}"));
    let embedder = Embedder::open(&backbone, &EmbedderOptions { threads: 1 }).unwrap();
    let python = twin_tests::venv_tool("python");
    assert!(
        python.is_file(),
        "{} is missing: {SETUP_HINT}",
        python.display()
    );

    let tmp = tempfile::tempdir().unwrap();
    let photos = photos(tmp.path());

    println!(
        "face pipeline benchmark: one CPU ({}), ONNX Runtime and OpenCV on 1 thread; medians of {OUR_ROUNDS} (ours) and {FR_ROUNDS} (face_recognition) runs after {WARMUP} warm-up runs",
        if pinned { "taskset -c 0" } else { "taskset unavailable: not pinned" }
    );

    // Ours.
    let mut ours = Vec::new();
    for p in &photos {
        let mut faces = 0;
        for _ in 0..WARMUP {
            faces = ours_once(&pipeline, &embedder, &p.path);
        }
        let mut ms = Vec::new();
        for _ in 0..OUR_ROUNDS {
            let t = Instant::now();
            faces = ours_once(&pipeline, &embedder, &p.path);
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        ours.push((faces, median(ms)));
    }

    // face_recognition, on the same files, one CPU.
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(&python);
        c
    } else {
        Command::new(&python)
    };
    let out = cmd
        .env("PYTHONPATH", root.join("tests/reference/fr_shim"))
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .arg(root.join("tests/reference/face_recognition_bench.py"))
        .arg(WARMUP.to_string())
        .arg(FR_ROUNDS.to_string())
        .args(photos.iter().map(|p| &p.path))
        .output()
        .expect("run the face_recognition reference");
    assert!(
        out.status.success(),
        "face_recognition reference failed ({SETUP_HINT}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fr: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fr: Vec<(usize, f64)> = fr["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let ms: Vec<f64> = i["ms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (i["faces"].as_u64().unwrap() as usize, median(ms))
        })
        .collect();

    println!();
    println!(
        "{:<28} {:>6} {:>10} {:>6} {:>14} {:>7}",
        "photo", "faces", "ours ms", "faces", "fr ms", "ratio"
    );
    let mut by_size: Vec<(String, f64, f64)> = Vec::new();
    for ((p, (of, oms)), (ff, fms)) in photos.iter().zip(&ours).zip(&fr) {
        println!(
            "{:<28} {:>6} {:>10.1} {:>6} {:>14.1} {:>6.1}×",
            p.label,
            of,
            oms,
            ff,
            fms,
            fms / oms
        );
        let size = p.label.split(' ').next().unwrap().to_string();
        match by_size.iter_mut().find(|s| s.0 == size) {
            Some(s) => {
                s.1 += oms;
                s.2 += fms;
            }
            None => by_size.push((size, *oms, *fms)),
        }
    }
    for (size, o, f) in &by_size {
        println!(
            "{size}: ours {:.1} ms per photo, face_recognition {:.1} ms: {:.1}× (goal ≥ 3×)",
            o / 2.0,
            f / 2.0,
            f / o
        );
    }

    // Video: the enrollment clip, as `twin enroll` and the ingest function process it.
    let clip = data_dir().join("media/short_hamilton_clip.mp4");
    let video_pipeline = FacePipeline::open(&models, &video_pipeline_options()).unwrap();
    let mut secs = Vec::new();
    let mut last = None;
    for _ in 0..VIDEO_ROUNDS {
        let t = Instant::now();
        let report = enroll_video(
            &clip,
            &video_pipeline,
            Some(&embedder),
            &EnrollOptions::default(),
        )
        .unwrap();
        secs.push(t.elapsed().as_secs_f64());
        last = Some(report);
    }
    let report = last.unwrap();
    let video_s = report
        .video
        .duration_ms
        .map(|ms| ms as f64 / 1000.0)
        .expect("the clip's duration");
    let s = median(secs);
    println!();
    println!(
        "short_hamilton_clip.mp4 ({}×{}, {video_s:.2} s): {} frames sampled, {} kept; {s:.2} s to enroll (median of {VIDEO_ROUNDS}: decode {:.2}, faces {:.2}, measures {:.2}, one-person check {:.2}) = {:.3} s of processing per second of video",
        report.video.width,
        report.video.height,
        report.frames_sampled,
        report.kept.len(),
        report.timings.decode.as_secs_f64(),
        report.timings.faces.as_secs_f64(),
        report.timings.measure.as_secs_f64(),
        report.timings.identity.as_secs_f64(),
        s / video_s
    );
}
