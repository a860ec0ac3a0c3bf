//! Frame sampling on real files: the enrollment clip, and bad input made from it (garbage,
//! truncated and damaged copies, a photo, limits set below the clip).
//!
//! The media are read from `../shared/data/media` (never copied into the repository); a missing
//! file fails the test. Every bad input must end in a clear error or in the frames that decode,
//! quickly: each case is timed against a generous bound so a hang shows as a failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use twin_faces::video::{FrameSampler, SamplerOptions, VideoError, VideoLimits};

fn media(name: &str) -> PathBuf {
    let p = twin_tests::data_dir().join("media").join(name);
    assert!(
        p.is_file(),
        "test media missing: {} (the shared data folder is /work/shared/data)",
        p.display()
    );
    p
}

/// The clip: H.264 640×360 at 29.97 fps, 275 frames.
fn clip() -> PathBuf {
    media("short_hamilton_clip.mp4")
}

/// Samples a whole file; the error (if any) ends the list. Fails if it takes over 60 s.
fn sample(path: &Path, options: &SamplerOptions) -> (Vec<(u64, u64)>, Option<VideoError>) {
    let start = Instant::now();
    let mut frames = Vec::new();
    let mut error = None;
    match FrameSampler::open(path, options) {
        Err(e) => error = Some(e),
        Ok(sampler) => {
            for f in sampler {
                match f {
                    Ok(f) => {
                        assert_eq!(f.image.dimensions(), (640, 360));
                        frames.push((f.index, f.ms));
                    }
                    Err(e) => error = Some(e),
                }
            }
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "sampling {} took {:?}",
        path.display(),
        start.elapsed()
    );
    (frames, error)
}

#[test]
fn the_clip_is_sampled_every_100_ms_by_frame_index() {
    let sampler = FrameSampler::open(&clip(), &SamplerOptions::default()).unwrap();
    let info = sampler.info().clone();
    assert_eq!((info.width, info.height), (640, 360));
    assert!((info.fps.unwrap() - 29.97).abs() < 0.01, "{info:?}");
    assert_eq!(info.frame_count, Some(275));
    assert_eq!(info.duration_ms, Some(9176));
    let (frames, error) = sample(&clip(), &SamplerOptions::default());
    assert!(error.is_none(), "{error:?}");
    // Every third frame (100.1 ms apart) over 275 frames: 0, 3, ..., 273.
    assert_eq!(frames.len(), 92);
    assert!(frames
        .iter()
        .enumerate()
        .all(|(k, &(i, _))| i == 3 * k as u64));
    let ms: Vec<u64> = frames.iter().map(|&(_, ms)| ms).take(6).collect();
    assert_eq!(ms, [0, 100, 200, 300, 400, 501]);
    assert_eq!(frames.last().unwrap().1, 9109);
}

#[test]
fn the_interval_is_configurable() {
    let every = |ms| SamplerOptions {
        interval_ms: ms,
        ..SamplerOptions::default()
    };
    assert_eq!(sample(&clip(), &every(1)).0.len(), 275);
    let (frames, _) = sample(&clip(), &every(250));
    // The first frame at or after each multiple of 250 ms: frame 8 (266.9 ms), 15 (500.5), 23.
    let ms: Vec<u64> = frames.iter().map(|&(_, ms)| ms).take(4).collect();
    assert_eq!(ms, [0, 267, 501, 767]);
    assert_eq!(frames.len(), 37);
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let with = |f: &dyn Fn(&mut VideoLimits)| {
        let mut options = SamplerOptions::default();
        f(&mut options.limits);
        sample(&clip(), &options)
    };
    let (frames, e) = with(&|l| l.max_bytes = 600_000);
    assert!(frames.is_empty());
    assert_eq!(
        e.unwrap().to_string(),
        "the video is 613928 bytes; at most 600000 are accepted"
    );
    let (_, e) = with(&|l| l.max_duration_ms = 5_000);
    assert_eq!(
        e.unwrap().to_string(),
        "the video is longer than 5000 ms (it says 9176 ms)"
    );
    let (_, e) = with(&|l| l.max_side = 480);
    assert_eq!(
        e.unwrap().to_string(),
        "the video's frames are 640×360 pixels; at most 480 on a side and 9437184 in all are accepted"
    );
    // A file whose stated frame count is within bounds but whose frames are not: decoding
    // stops at the limit (the frames before it were handed out).
    let (frames, e) = with(&|l| l.max_frames = 100);
    assert_eq!(frames.len(), 34);
    assert_eq!(e.unwrap().to_string(), "the video has more than 100 frames");
}

fn temp_with(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    (dir, p)
}

#[test]
fn garbage_is_refused_before_ffmpeg_sees_it() {
    // Deterministic noise (xorshift).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let (_d, p) = temp_with("noise.mp4", &noise);
    let (frames, e) = sample(&p, &SamplerOptions::default());
    assert!(frames.is_empty());
    assert_eq!(e.unwrap().to_string(), "not an MP4, MOV or WebM video");

    let (_d, p) = temp_with("empty.mp4", b"");
    let (_, e) = sample(&p, &SamplerOptions::default());
    assert_eq!(
        e.unwrap().to_string(),
        "not an MP4, MOV or WebM video (it looks like an empty file)"
    );

    let (_, e) = sample(&media("two_people.jpg"), &SamplerOptions::default());
    assert_eq!(
        e.unwrap().to_string(),
        "not an MP4, MOV or WebM video (it looks like a JPEG image)"
    );

    let (_d, p) = temp_with("list.mp4", b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n");
    let (_, e) = sample(&p, &SamplerOptions::default());
    assert!(e.unwrap().to_string().contains("playlist"));
}

#[test]
fn garbage_behind_a_valid_header_fails_to_open() {
    // The clip's first 40 bytes (ftyp, free, the mdat header) then noise.
    let head = std::fs::read(clip()).unwrap()[..40].to_vec();
    let mut bytes = head;
    bytes.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let (_d, p) = temp_with("fake.mp4", &bytes);
    let (frames, e) = sample(&p, &SamplerOptions::default());
    assert!(frames.is_empty());
    assert!(
        matches!(e, Some(VideoError::Open) | Some(VideoError::NoFrames)),
        "{e:?}"
    );
}

#[test]
fn a_truncated_clip_is_a_clear_error() {
    // The clip keeps its index (moov) at the end, so any cut loses it: FFmpeg cannot open it.
    let bytes = std::fs::read(clip()).unwrap();
    for keep in [bytes.len() / 10, bytes.len() / 2, bytes.len() - 100] {
        let (_d, p) = temp_with("cut.mp4", &bytes[..keep]);
        let (frames, e) = sample(&p, &SamplerOptions::default());
        assert!(frames.is_empty(), "kept {keep} bytes");
        let e = e.unwrap_or_else(|| panic!("kept {keep} bytes: no error"));
        assert_eq!(
            e.to_string(),
            "the video cannot be opened: it is damaged, truncated or uses an unsupported codec"
        );
    }
}

#[test]
fn a_damaged_clip_gives_the_frames_that_decode() {
    // Zero 100 kB from 41% into the media data: the index is intact, the frames from there on
    // are not. OpenCV's FFmpeg reader stops at the damage (38 samples = frames 0–113 here),
    // without an error: the frames before it are what the file gives.
    let mut bytes = std::fs::read(clip()).unwrap();
    bytes[250_000..350_000].fill(0);
    let (_d, p) = temp_with("damaged.mp4", &bytes);
    let (frames, e) = sample(&p, &SamplerOptions::default());
    assert!(e.is_none(), "{e:?}");
    assert!(
        frames.len() >= 30 && frames.len() < 92,
        "{} frames",
        frames.len()
    );
}

#[test]
fn a_folder_is_not_a_video() {
    let dir = tempfile::tempdir().unwrap();
    let e = FrameSampler::open(dir.path(), &SamplerOptions::default())
        .err()
        .unwrap();
    assert!(matches!(e, VideoError::Io { .. }), "{e:?}");
    let e = FrameSampler::open(&dir.path().join("missing.mp4"), &SamplerOptions::default())
        .err()
        .unwrap();
    assert!(e.to_string().starts_with("cannot read "), "{e}");
}
