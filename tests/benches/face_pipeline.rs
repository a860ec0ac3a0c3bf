//! Video and photo speed of the face pipeline: enrollment videos on the machine's cores, photos
//! on one CPU against face_recognition in the same run.
//!
//! `cargo bench -p twin-tests --bench face_pipeline` first enrolls videos the way the ingest
//! step does (`enroll_video` with the video pipeline and the backbone for the one-person
//! check: a frame every 100 ms, faces, quality gate, one-person check), on every core the
//! process may use: a 6 s cut of `short_hamilton_clip.mp4` (its first 6 s, copied by `ffmpeg`
//! into a temporary folder without re-encoding) and the whole clip, each with frames judged on
//! one thread (`threads: 1`, the enrollment as it was; once with OpenCV on one thread too, as
//! it was measured on one core, once with OpenCV's threads left alone, as the product ran it)
//! and on two (`threads: 2`, what the default gives a 2-core machine), the runs of the paths
//! interleaved. It prints the median wall time, the process's CPU time, frames sampled, kept and
//! rejected by reason for each, and whether every path kept the same frames with the same boxes
//! and rejected the same frames for the same reasons. With `-- video` it stops there; with
//! `-- photos` it skips the videos.
//!
//! Then it writes 640×480 and 1920×1080 JPEGs cut from the media photos, and times on each,
//! end to end from the file: ours (decode, cascade, box mapping, landmarks, chips, embeddings)
//! and face_recognition's (`load_image_file`, `face_locations`, `face_encodings`, from
//! `reference/face_recognition_bench.py`), and prints the medians side by side with the ratio.
//! For the photos the process and the Python reference are pinned to one CPU with `taskset` and
//! run one after the other; ONNX Runtime and OpenCV are set to one thread. Numbers only: nothing
//! here asserts a speed, and on a machine others are using the wall times say little (the load
//! average is printed beside them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use image::{imageops, RgbImage};
use twin_faces::detect::set_opencv_threads;
use twin_faces::enroll::{enroll_video, video_pipeline_options, EnrollOptions, EnrollReport};
use twin_faces::pipeline::{cut_chip, FacePipeline, PipelineOptions};
use twin_faces::video::{FrameSampler, SamplerOptions};
use twin_model::embed::{ChipBatch, Embedder, EmbedderOptions};
use twin_tests::{bench_requested, data_dir, median, repo_root, require_backbone, SETUP_HINT};

/// Untimed runs per photo before timing, for both.
const WARMUP: usize = 2;
/// Timed runs per photo for ours.
const OUR_ROUNDS: usize = 10;
/// Timed runs per photo for face_recognition (seconds per 1080p photo).
const FR_ROUNDS: usize = 3;
/// Timed enrollments of each video on each path, after one untimed one.
const VIDEO_ROUNDS: usize = 5;
/// Length of the cut of the clip, in seconds: an enrollment video as the app records it.
const CUT_SECONDS: f64 = 6.0;

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
    let root = repo_root();
    let models = twin_tests::models_dir();
    let backbone = require_backbone();
    if !std::env::args().any(|a| a == "photos") {
        videos(&models, &backbone);
    }
    if std::env::args().any(|a| a == "video") {
        return;
    }

    let pinned = pin_to_one_cpu();
    set_opencv_threads(1).expect("OpenCV threads");
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
}

/// CPU time this process has used so far, all threads together (user and system, from
/// `/proc/self/stat`, in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<u64> = after_name
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

/// The 1-, 5- and 15-minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Copies the first `seconds` of `clip` into `dir` without re-encoding (the frames are the
/// clip's own); returns the copy.
fn cut(clip: &Path, seconds: f64, dir: &Path) -> PathBuf {
    let fps = FrameSampler::open(clip, &SamplerOptions::default())
        .unwrap()
        .info()
        .fps
        .expect("the clip's frame rate");
    let frames = (seconds * fps).round() as u64;
    let out = dir.join("cut.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(clip)
        .args(["-frames:v", &frames.to_string(), "-c", "copy", "-an"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("ffmpeg ({SETUP_HINT}): {e}"));
    assert!(status.success(), "ffmpeg could not cut {}", clip.display());
    out
}

/// One way of running an enrollment.
struct VideoPath {
    /// [`EnrollOptions::threads`].
    threads: usize,
    /// OpenCV's own threads during the run; `None` leaves them as the product does.
    opencv_threads: Option<i32>,
}

impl VideoPath {
    fn label(&self) -> String {
        match self.opencv_threads {
            Some(n) => format!("threads={}, OpenCV {n}", self.threads),
            None => format!("threads={}", self.threads),
        }
    }
}

/// The paths compared: the enrollment as it was measured on one core (frames judged on one
/// thread, OpenCV on one thread), as it was run by the product (OpenCV's threads left alone),
/// and with frames judged on two threads (what the default gives a 2-core machine).
const VIDEO_PATHS: [VideoPath; 3] = [
    VideoPath {
        threads: 1,
        opencv_threads: Some(1),
    },
    VideoPath {
        threads: 1,
        opencv_threads: None,
    },
    VideoPath {
        threads: 2,
        opencv_threads: None,
    },
];

/// One enrollment, as the ingest step runs it, on `path`'s threads; its report, wall time and
/// CPU time.
fn enroll_once(
    clip: &Path,
    pipeline: &FacePipeline,
    embedder: &Embedder,
    path: &VideoPath,
    opencv_default: i32,
) -> (EnrollReport, f64, f64) {
    let options = EnrollOptions {
        threads: path.threads,
        ..EnrollOptions::default()
    };
    set_opencv_threads(path.opencv_threads.unwrap_or(opencv_default)).expect("OpenCV threads");
    let (cpu, wall) = (cpu_time(), Instant::now());
    let report = enroll_video(clip, pipeline, Some(embedder), &options).unwrap();
    let wall = wall.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu).as_secs_f64();
    set_opencv_threads(opencv_default).expect("OpenCV threads");
    (report, wall, cpu)
}

/// What must not change between paths: every kept frame with its box and landmarks, every
/// rejected frame with its reason and box, and the head-turn flags.
fn outcome(r: &EnrollReport) -> impl PartialEq + '_ {
    let kept: Vec<_> = r.kept.iter().map(|k| (k.ms, k.bbox, k.landmarks)).collect();
    (
        r.frames_sampled,
        kept,
        &r.rejected,
        r.turned_left,
        r.turned_right,
    )
}

/// The enrollment videos on each of [`VIDEO_PATHS`].
fn videos(models: &Path, backbone: &Path) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // What OpenCV uses when nobody sets it (set_opencv_threads answers what was in force).
    let opencv_default = set_opencv_threads(1).expect("OpenCV threads");
    set_opencv_threads(opencv_default).expect("OpenCV threads");
    let pipeline = FacePipeline::open(models, &video_pipeline_options()).unwrap();
    // One ONNX Runtime thread, as the ingest function is configured by default.
    let embedder = Embedder::open(backbone, &EmbedderOptions { threads: 1 }).unwrap();
    let clip = data_dir().join("media/short_hamilton_clip.mp4");
    let tmp = tempfile::tempdir().unwrap();
    let six = cut(&clip, CUT_SECONDS, tmp.path());
    println!(
        "enrollment videos: {cores} cores for this process (the default `threads: 0` uses them all), OpenCV's own threads {opencv_default} unless set, ONNX Runtime on 1 thread; medians of {VIDEO_ROUNDS} runs after one warm-up, paths interleaved; load average before: {}",
        load_average()
    );
    println!(
        "{:<42} {:>7} {:>6} {:>8} {:>5}  rejected by reason",
        "video, path", "wall s", "CPU s", "sampled", "kept"
    );
    for (label, clip) in [
        (format!("first {CUT_SECONDS} s"), six.as_path()),
        ("short_hamilton_clip.mp4".to_string(), clip.as_path()),
    ] {
        for path in &VIDEO_PATHS {
            enroll_once(clip, &pipeline, &embedder, path, opencv_default);
        }
        let mut runs: Vec<(Vec<f64>, Vec<f64>, Option<EnrollReport>)> =
            VIDEO_PATHS.iter().map(|_| (vec![], vec![], None)).collect();
        for _ in 0..VIDEO_ROUNDS {
            for (run, path) in runs.iter_mut().zip(&VIDEO_PATHS) {
                let (report, wall, cpu) =
                    enroll_once(clip, &pipeline, &embedder, path, opencv_default);
                run.0.push(wall);
                run.1.push(cpu);
                run.2 = Some(report);
            }
        }
        let video = runs[0].2.as_ref().unwrap().video.clone();
        let seconds = video.duration_ms.unwrap_or(0) as f64 / 1000.0;
        let mut per_second = Vec::new();
        for (run, path) in runs.iter().zip(&VIDEO_PATHS) {
            let r = run.2.as_ref().unwrap();
            let reasons: Vec<String> = r
                .rejected_by_reason
                .iter()
                .map(|(reason, n)| format!("{reason} {n}"))
                .collect();
            let wall = median(run.0.clone());
            per_second.push(format!("{}: {:.3}", path.label(), wall / seconds));
            println!(
                "{:<42} {:>7.2} {:>6.2} {:>8} {:>5}  {} ({} in all)",
                format!("{label}, {}", path.label()),
                wall,
                median(run.1.clone()),
                r.frames_sampled,
                r.kept.len(),
                reasons.join(", "),
                r.rejected.len()
            );
        }
        let first = outcome(runs[0].2.as_ref().unwrap());
        let same = runs
            .iter()
            .all(|run| outcome(run.2.as_ref().unwrap()) == first);
        println!(
            "  {}×{}, {seconds:.2} s; seconds of processing per second of video: {}; same kept frames, boxes and rejections on every path: {}",
            video.width,
            video.height,
            per_second.join("; "),
            if same { "yes" } else { "NO" }
        );
    }
    println!("load average after: {}\n", load_average());
}
