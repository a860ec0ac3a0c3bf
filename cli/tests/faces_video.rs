//! `twin faces` end to end: the enrollment clip (report, chips on disk, every chip the
//! reference person by `twin embed`), a photo of two people, and bad input that must fail
//! clearly and leave nothing behind.
//!
//! Media come from `../shared/data/media`, models from `vendor/`; anything missing fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use twin_tests::resources::png_header_only;

fn media(name: &str) -> PathBuf {
    let p = twin_tests::data_dir().join("media").join(name);
    assert!(p.is_file(), "test media {} is missing", p.display());
    p
}

fn twin(args: &[&std::ffi::OsStr]) -> Output {
    let models = twin_tests::models_dir();
    for f in ["backbone.onnx", "shape_predictor_5_face_landmarks.dat"] {
        assert!(
            models.join(f).is_file(),
            "{} is missing: run scripts/setup",
            models.join(f).display()
        );
    }
    Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_line(out: &Output) -> Value {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let mut lines = text.lines();
    let v = serde_json::from_str(lines.next().expect("no output")).unwrap();
    assert!(lines.next().is_none(), "more than one line");
    v
}

fn embeddings(out: &Output) -> Vec<Vec<f64>> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["faces"][0]["embedding"]
                .as_array()
                .unwrap_or_else(|| panic!("no embedding: {l}"))
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn the_clip_gives_a_report_and_chips_of_lin_manuel_miranda() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("faces");
    let clip = media("short_hamilton_clip.mp4");
    let out = twin(&[
        "faces".as_ref(),
        clip.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stderr(&out);
    println!("{summary}");
    assert!(
        summary.contains("92 frames sampled every 100 ms"),
        "{summary}"
    );

    let report = json_line(&out);
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report, on_disk);
    assert_eq!(report["kind"], "video");
    assert_eq!(report["frames_sampled"], 92);
    let kept = report["kept"].as_array().unwrap();
    let rejected = report["rejected"].as_array().unwrap();
    assert!(kept.len() >= 20, "{} kept", kept.len());
    assert_eq!(kept.len() + rejected.len(), 92);
    let by_reason: u64 = report["rejected_by_reason"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_reason as usize, rejected.len());
    for r in rejected {
        assert!(r["reason"].is_string() && r["ms"].is_u64(), "{r}");
    }
    assert_eq!(report["turned_left"], true);
    assert_eq!(report["turned_right"], true);

    // One chip per kept frame, named by its time, 150×150, and nothing else.
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut expected: Vec<String> = kept
        .iter()
        .map(|k| {
            assert_eq!(k["box"].as_array().unwrap().len(), 4);
            assert_eq!(k["landmarks"].as_array().unwrap().len(), 5);
            assert!(k.get("chip").is_none());
            format!("{}.png", k["ms"])
        })
        .chain(std::iter::once("report.json".to_string()))
        .collect();
    expected.sort();
    assert_eq!(files, expected);
    let chips: Vec<PathBuf> = kept
        .iter()
        .map(|k| out_dir.join(format!("{}.png", k["ms"])))
        .collect();
    for c in &chips {
        assert_eq!(image::image_dimensions(c).unwrap(), (150, 150));
    }

    // The chips on disk are the reference person.
    let photo = media("lin-manuel-miranda.png");
    let reference = twin(&["embed".as_ref(), photo.as_os_str()]);
    assert!(reference.status.success(), "{}", stderr(&reference));
    let reference = embeddings(&reference).remove(0);
    let mut args: Vec<&std::ffi::OsStr> = vec!["embed".as_ref(), "--chips".as_ref()];
    args.extend(chips.iter().map(|c| c.as_os_str()));
    let embedded = twin(&args);
    assert!(embedded.status.success(), "{}", stderr(&embedded));
    let distances: Vec<f64> = embeddings(&embedded)
        .iter()
        .map(|e| distance(e, &reference))
        .collect();
    let max = distances.iter().copied().fold(0.0, f64::max);
    println!(
        "{} chips, max distance to lin-manuel-miranda.png {max:.3}",
        chips.len()
    );
    assert!(max < 0.6, "{distances:?}");
}

#[test]
fn a_photo_lists_every_face_and_how_it_was_found() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("faces");
    let photo = media("two_people.jpg");
    let out = twin(&[
        "faces".as_ref(),
        photo.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_line(&out);
    assert_eq!(report["kind"], "photo");
    let faces = report["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 2);
    for (i, f) in faces.iter().enumerate() {
        assert_eq!(f["source"], "detected");
        assert_eq!(f["box"].as_array().unwrap().len(), 4);
        assert_eq!(f["landmarks"].as_array().unwrap().len(), 5);
        assert!(f["rect"]["left"].is_i64());
        assert!(f["pose"]["yaw"].is_f64() && f["sharpness"].is_f64());
        let chip = out_dir.join(format!("face-{i}.png"));
        assert_eq!(image::image_dimensions(&chip).unwrap(), (150, 150));
    }
    assert!(stderr(&out).contains("2 faces"));
}

/// Runs `twin faces` on bad input and checks that it fails with `message` and writes nothing.
fn refused(input: &Path, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("faces");
    let out = twin(&[
        "faces".as_ref(),
        input.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(err.contains(message), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_input_fails_clearly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, [0x42u8; 5000]).unwrap();
    refused(
        &garbage,
        "is neither a photo (JPEG, PNG, WebP) nor a video (MP4, MOV, WebM)",
    );

    let bytes = std::fs::read(media("short_hamilton_clip.mp4")).unwrap();
    let truncated = dir.path().join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refused(
        &truncated,
        "twin: error: the video cannot be opened: it is damaged, truncated or uses an unsupported codec",
    );

    let photo = dir.path().join("cut.jpg");
    let jpeg = std::fs::read(media("two_people.jpg")).unwrap();
    std::fs::write(&photo, &jpeg[..jpeg.len() / 2]).unwrap();
    refused(&photo, "twin: error: ");

    refused(&dir.path().join("missing.mp4"), "cannot read");

    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "a text file named like a video\n".repeat(50)).unwrap();
    refused(
        &text,
        "is neither a photo (JPEG, PNG, WebP) nor a video (MP4, MOV, WebM)",
    );
    let text = dir.path().join("notes.jpg");
    std::fs::write(&text, "not an image").unwrap();
    refused(
        &text,
        "is neither a photo (JPEG, PNG, WebP) nor a video (MP4, MOV, WebM)",
    );

    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    refused(&empty, "empty.jpg is empty (0 bytes)");

    // A 30 000 × 30 000 PNG would need 2.7 GB once decoded; its header alone must refuse it.
    let huge = dir.path().join("huge.png");
    std::fs::write(&huge, png_header_only(30_000, 30_000)).unwrap();
    refused(&huge, "the image is 30000×30000 pixels; at most");
}

#[test]
fn a_photo_too_small_for_a_face_gives_no_face_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("faces");
    let tiny = dir.path().join("tiny.png");
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 160, 140]))
        .save(&tiny)
        .unwrap();
    let out = twin(&[
        "faces".as_ref(),
        tiny.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_line(&out);
    assert_eq!(report["faces"].as_array().unwrap().len(), 0, "{report}");
    assert_eq!(
        report["no_face"],
        "the photo is 1×1 pixels: too small to hold a face (at least 40 pixels on each side)"
    );
    assert!(!out_dir.join("face-0.png").exists());

    // A plain grey picture of a face's size: no face, and the reason says so.
    let grey = dir.path().join("grey.png");
    image::RgbImage::from_pixel(200, 200, image::Rgb([128, 128, 128]))
        .save(&grey)
        .unwrap();
    let out = twin(&["faces".as_ref(), grey.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_line(&out);
    assert_eq!(report["faces"].as_array().unwrap().len(), 0, "{report}");
    assert!(
        report["no_face"]
            .as_str()
            .unwrap()
            .starts_with("no face was found"),
        "{report}"
    );
}

#[test]
fn a_small_face_in_a_photo_is_still_found() {
    // obama.jpg at 128 px wide on a larger grey background: a face of about 50 px, under the
    // first search's smallest face, found by the second.
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("small.png");
    let obama = image::open(media("obama.jpg")).unwrap().to_rgb8();
    let small = image::imageops::resize(&obama, 128, 160, image::imageops::FilterType::Triangle);
    let mut canvas = image::RgbImage::from_pixel(480, 360, image::Rgb([90, 90, 90]));
    image::imageops::replace(&mut canvas, &small, 160, 80);
    canvas.save(&photo).unwrap();
    let out = twin(&["faces".as_ref(), photo.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = json_line(&out);
    let faces = report["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{report}");
    assert_eq!(faces[0]["source"], "detected");
    let side = faces[0]["box"][2].as_i64().unwrap();
    assert!((40..60).contains(&side), "box side {side}");
}

#[test]
fn an_existing_output_folder_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("keep.txt"), b"mine").unwrap();
    let photo = media("obama.jpg");
    let out = twin(&[
        "faces".as_ref(),
        photo.as_os_str(),
        "--out".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("exists and is not an empty folder"));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keep.txt"]);
}

#[test]
fn a_dark_enrollment_fails_and_says_what_to_do() {
    // The clip's first 4 s at a third of their brightness: most faces are lost in the dark.
    let dir = tempfile::tempdir().unwrap();
    let dark = dir.path().join("dark.mp4");
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(media("short_hamilton_clip.mp4"))
        .args(["-t", "4", "-vf", "lutyuv=y=val*0.3", "-an"])
        .arg(&dark)
        .output()
        .expect("ffmpeg is missing: run scripts/setup");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .env("TWIN_DATA", dir.path().join("data"))
        .args([
            std::ffi::OsStr::new("enroll"),
            "--name".as_ref(),
            "Ada Lovelace".as_ref(),
            dark.as_os_str(),
        ])
        .output()
        .unwrap();
    let text = stderr(&out);
    assert!(!out.status.success(), "{text}");
    let status = json_line(&out);
    assert_eq!(status["state"], "failed", "{status}");
    // The reasons are kept with the failure, and said in words a person can act on.
    let too_dark = status["rejected"]["too_dark"].as_u64().unwrap_or(0);
    assert!(too_dark > 0, "{status}");
    assert!(
        text.contains(&format!(
            "twin: it was too dark in {too_dark} of {} frames: face a window or a lamp",
            status["frames_sampled"]
        )),
        "{text}"
    );
    assert!(text.contains("twin: no face was found in"), "{text}");
}
