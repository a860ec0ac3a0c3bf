//! Enrollment from a video, end to end: the real cascade, landmarks, chips, quality gate and
//! one-person check on `short_hamilton_clip.mp4`, and on bad input (garbage, a truncated copy,
//! a photo, videos with two people or nobody in every frame).
//!
//! Media come from `../shared/data/media` and models from `vendor/models` (with ONNX Runtime
//! from `vendor/onnxruntime`); anything missing fails the test, nothing is skipped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use twin_faces::enroll::{
    enroll_video, video_pipeline_options, ChipEmbedder, EnrollError, EnrollOptions, EnrollReport,
};
use twin_faces::pipeline::{cut_chip, FacePipeline, PipelineOptions};
use twin_faces::quality::{embedding_distance, RejectReason};
use twin_faces::video::VideoError;
use twin_model::embed::{Embedder, EmbedderOptions};

fn media(name: &str) -> PathBuf {
    let p = twin_tests::data_dir().join("media").join(name);
    assert!(p.is_file(), "test media {} is missing", p.display());
    p
}

fn models() -> PathBuf {
    twin_tests::models_dir()
}

fn video_pipeline() -> FacePipeline {
    FacePipeline::open(&models(), &video_pipeline_options()).unwrap()
}

fn embedder() -> Embedder {
    Embedder::open(
        &models().join("backbone.onnx"),
        &EmbedderOptions { threads: 2 },
    )
    .unwrap()
}

/// The embedding of the one face in a photo.
fn photo_embedding(embedder: &Embedder, name: &str) -> Vec<f32> {
    let img = twin_faces::imageio::decode_file(&media(name), &Default::default()).unwrap();
    let pipeline = FacePipeline::open(&models(), &PipelineOptions::default()).unwrap();
    let faces = pipeline.find_faces(&img).unwrap();
    assert_eq!(faces.len(), 1, "{name}: {faces:?}");
    embedder
        .embed_chips(&[&cut_chip(&img, &faces[0])])
        .unwrap()
        .remove(0)
}

#[test]
fn the_hamilton_clip_enrolls_lin_manuel_miranda() {
    let embedder = embedder();
    let reference = photo_embedding(&embedder, "lin-manuel-miranda.png");
    let pipeline = video_pipeline();
    let start = Instant::now();
    let report = enroll_video(
        &media("short_hamilton_clip.mp4"),
        &pipeline,
        Some(&embedder),
        &EnrollOptions::default(),
    )
    .unwrap();
    let elapsed = start.elapsed();
    let chips: Vec<&RgbImage> = report.kept.iter().map(|k| &k.chip).collect();
    let distances: Vec<f32> = embedder
        .embed_chips(&chips)
        .unwrap()
        .iter()
        .map(|e| embedding_distance(e, &reference))
        .collect();
    let max = distances.iter().copied().fold(0f32, f32::max);
    let reasons: Vec<String> = report
        .rejected_by_reason
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!(
        "short_hamilton_clip.mp4: {} frames sampled, {} kept, {} rejected: {}",
        report.frames_sampled,
        report.kept.len(),
        report.rejected.len(),
        reasons.join(", ")
    );
    println!(
        "kept chips to lin-manuel-miranda.png: max {max:.3}, mean {:.3}; yaw {:.1}..{:.1}; \
         turned left {}, right {}",
        distances.iter().sum::<f32>() / distances.len() as f32,
        report
            .kept
            .iter()
            .map(|k| k.yaw)
            .fold(f64::INFINITY, f64::min),
        report
            .kept
            .iter()
            .map(|k| k.yaw)
            .fold(f64::NEG_INFINITY, f64::max),
        report.turned_left,
        report.turned_right,
    );
    let t = report.timings;
    println!(
        "{:.2} s: decode {:.2}, faces {:.2}, measures {:.2}, one-person check {:.2}",
        elapsed.as_secs_f64(),
        t.decode.as_secs_f64(),
        t.faces.as_secs_f64(),
        t.measure.as_secs_f64(),
        t.identity.as_secs_f64()
    );

    assert_eq!(report.frames_sampled, 92);
    assert_eq!(
        report.kept.len() + report.rejected.len(),
        report.frames_sampled as usize
    );
    assert!(
        report.kept.len() >= 20 && report.kept.len() <= 30,
        "{} kept",
        report.kept.len()
    );
    for (k, d) in report.kept.iter().zip(&distances) {
        assert!(
            *d < 0.6,
            "frame at {} ms is {d:.3} from the reference",
            k.ms
        );
        assert_eq!(k.chip.dimensions(), (150, 150));
    }
    // The singer turns to his right (image left) by 30–45° and to his left by up to ~20°.
    assert!(report.turned_left && report.turned_right);
    assert!(report.identity_checked);
    // The audience shots and the opening wide shot are rejected, not kept.
    assert!(report.kept.iter().all(|k| (2_800..=7_100).contains(&k.ms)));
    assert!(report.rejected_by_reason[&RejectReason::NoFace] > 0);
}

#[test]
fn frames_judged_on_several_threads_give_the_same_enrollment() {
    // The real cascade, landmarks and embedder shared by the threads: every kept frame with
    // its box, landmarks and chip, every rejected frame with its reason and box, the same.
    let embedder = embedder();
    let pipeline = video_pipeline();
    let clip = media("short_hamilton_clip.mp4");
    let enroll = |threads| {
        let options = EnrollOptions {
            threads,
            ..EnrollOptions::default()
        };
        enroll_video(&clip, &pipeline, Some(&embedder), &options).unwrap()
    };
    let one = enroll(1);
    for threads in [2, 3] {
        let many = enroll(threads);
        assert_eq!(many.frames_sampled, one.frames_sampled);
        let kept = |r: &EnrollReport| {
            r.kept
                .iter()
                .map(|k| (k.ms, k.bbox, k.rect, k.landmarks, k.chip.clone()))
                .collect::<Vec<_>>()
        };
        assert!(
            kept(&many) == kept(&one),
            "{threads} threads: kept frames differ"
        );
        assert_eq!(many.rejected, one.rejected, "{threads} threads");
        assert_eq!(many.rejected_by_reason, one.rejected_by_reason);
        assert_eq!(
            (many.turned_left, many.turned_right),
            (one.turned_left, one.turned_right)
        );
    }
}

fn refused(path: &Path) -> EnrollError {
    enroll_video(path, &video_pipeline(), None, &EnrollOptions::default())
        .err()
        .unwrap_or_else(|| panic!("{} was accepted", path.display()))
}

#[test]
fn garbage_truncated_and_photos_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(
        &garbage,
        b"this is not a video at all, just some text\n".repeat(100),
    )
    .unwrap();
    let e = refused(&garbage);
    assert!(
        matches!(e, EnrollError::Video(VideoError::NotAVideo { .. })),
        "{e:?}"
    );
    assert_eq!(e.to_string(), "not an MP4, MOV or WebM video");

    let bytes = std::fs::read(media("short_hamilton_clip.mp4")).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = refused(&truncated);
    assert!(matches!(e, EnrollError::Video(VideoError::Open)), "{e:?}");

    let e = refused(&media("two_people.jpg"));
    assert_eq!(
        e.to_string(),
        "not an MP4, MOV or WebM video (it looks like a JPEG image)"
    );
}

/// Writes `frames` copies of `img` as an MPEG-4 video at 10 fps.
fn write_video(path: &Path, img: &RgbImage, frames: usize) {
    use opencv::core::{Mat, Size};
    use opencv::prelude::*;
    use opencv::videoio::VideoWriter;
    let (w, h) = img.dimensions();
    let bgr: Vec<u8> = img
        .pixels()
        .flat_map(|p| [p.0[2], p.0[1], p.0[0]])
        .collect();
    let mat = Mat::new_rows_cols_with_data(h as i32, (w * 3) as i32, &bgr).unwrap();
    let mat = mat.reshape(3, h as i32).unwrap();
    let fourcc = VideoWriter::fourcc('m', 'p', '4', 'v').unwrap();
    let mut writer = VideoWriter::new(
        path.as_os_str(),
        fourcc,
        10.0,
        Size::new(w as i32, h as i32),
        true,
    )
    .unwrap();
    assert!(
        writer.is_opened().unwrap(),
        "cannot write {}",
        path.display()
    );
    for _ in 0..frames {
        writer.write(&mat).unwrap();
    }
    writer.release().unwrap();
}

/// An even-sized copy of a photo scaled to `width` pixels.
fn scaled(name: &str, width: u32) -> RgbImage {
    let img = twin_faces::imageio::decode_file(&media(name), &Default::default()).unwrap();
    let h = (img.height() as u64 * width as u64 / img.width() as u64) as u32 & !1;
    image::imageops::resize(&img, width, h, image::imageops::FilterType::Triangle)
}

#[test]
fn a_video_of_two_people_is_refused_with_several_faces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.mp4");
    write_video(&path, &scaled("two_people.jpg", 640), 20);
    let e = refused(&path);
    println!("{e}");
    match &e {
        EnrollError::NotEnoughFrames {
            kept,
            frames_sampled,
            rejected_by_reason,
            ..
        } => {
            assert_eq!(*kept, 0);
            assert_eq!(*frames_sampled, 20);
            assert_eq!(rejected_by_reason[&RejectReason::SeveralFaces], 20);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().starts_with(
        "no usable face in the video (20 frames sampled; rejected: several_faces 20)"
    ));
}

#[test]
fn a_video_without_a_face_is_refused_with_no_face() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.mp4");
    let img = RgbImage::from_fn(320, 240, |x, y| {
        image::Rgb([(x * 255 / 320) as u8, (y * 255 / 240) as u8, 128])
    });
    write_video(&path, &img, 15);
    let e = refused(&path);
    assert!(
        e.to_string()
            .starts_with("no usable face in the video (15 frames sampled; rejected: no_face 15)"),
        "{e}"
    );
}

#[test]
fn a_single_person_video_without_the_identity_check_still_enrolls() {
    // The same person in every frame (a still photo): everything after the first frame is a
    // near-duplicate, so one frame is kept, and min_kept 1 accepts it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("obama.mp4");
    write_video(&path, &scaled("obama.jpg", 640), 12);
    let options = EnrollOptions {
        min_kept: 1,
        ..EnrollOptions::default()
    };
    let report = enroll_video(&path, &video_pipeline(), None, &options).unwrap();
    assert_eq!(report.frames_sampled, 12);
    assert_eq!(report.kept.len(), 1);
    assert_eq!(report.rejected_by_reason[&RejectReason::NearDuplicate], 11);
    assert!(!report.identity_checked);
    assert!(!report.turned_left && !report.turned_right);
}

/// Runs the `ffmpeg` command line (Debian's `ffmpeg`, installed by scripts/setup).
fn ffmpeg(args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is missing: run scripts/setup");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_phone_video_stored_sideways_with_a_rotation_tag_enrolls_upright() {
    // Phones store a portrait video as sideways frames plus a display rotation. Made here from
    // the clip: frames turned a quarter counter-clockwise, then tagged "rotate 90" (clockwise
    // for display), so that a player shows it upright.
    let dir = tempfile::tempdir().unwrap();
    let sideways = dir.path().join("sideways.mp4");
    let tagged = dir.path().join("tagged.mp4");
    ffmpeg(&[
        "-i".as_ref(),
        media("short_hamilton_clip.mp4").as_os_str(),
        "-vf".as_ref(),
        "transpose=2".as_ref(),
        "-an".as_ref(),
        "-c:v".as_ref(),
        "libx264".as_ref(),
        "-preset".as_ref(),
        "ultrafast".as_ref(),
        "-qp".as_ref(),
        "0".as_ref(), // lossless: the frames are the clip's, turned
        sideways.as_os_str(),
    ]);
    ffmpeg(&[
        "-i".as_ref(),
        sideways.as_os_str(),
        "-c".as_ref(),
        "copy".as_ref(),
        "-metadata:s:v:0".as_ref(),
        "rotate=90".as_ref(),
        tagged.as_os_str(),
    ]);

    let embedder = embedder();
    let reference = photo_embedding(&embedder, "lin-manuel-miranda.png");
    let pipeline = video_pipeline();
    let report = enroll_video(
        &tagged,
        &pipeline,
        Some(&embedder),
        &EnrollOptions::default(),
    )
    .unwrap();
    assert_eq!(
        (report.video.width, report.video.height),
        (640, 360),
        "frames as displayed, not as stored"
    );
    assert!(report.kept.len() >= 20, "{} kept", report.kept.len());
    let chips: Vec<&RgbImage> = report.kept.iter().map(|k| &k.chip).collect();
    let max = embedder
        .embed_chips(&chips)
        .unwrap()
        .iter()
        .map(|e| embedding_distance(e, &reference))
        .fold(0f32, f32::max);
    println!(
        "tagged sideways clip: {} frames sampled, {} kept, max distance to lin-manuel-miranda.png {max:.3}",
        report.frames_sampled,
        report.kept.len()
    );
    assert!(max < 0.6, "{max}");

    // Without the tag the same frames are sideways, and the upright cascade finds nobody.
    let e = enroll_video(
        &sideways,
        &pipeline,
        Some(&embedder),
        &EnrollOptions::default(),
    )
    .unwrap_err();
    match e {
        EnrollError::NotEnoughFrames {
            kept,
            ref rejected_by_reason,
            ..
        } => {
            assert!(kept < 5, "{e}");
            assert!(rejected_by_reason[&RejectReason::NoFace] > 80, "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_face_far_from_the_camera_is_refused_as_too_small() {
    // obama.jpg scaled so that the face is about 50 px: found, and refused for its size.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("far.mp4");
    let small = scaled("obama.jpg", 160);
    let mut frame = RgbImage::from_pixel(320, 240, image::Rgb([90, 90, 90]));
    image::imageops::replace(&mut frame, &small, 80, 20);
    write_video(&path, &frame, 10);
    let e = refused(&path);
    assert!(
        e.to_string().starts_with(
            "no usable face in the video (10 frames sampled; rejected: face_too_small 10)"
        ),
        "{e}"
    );
}
