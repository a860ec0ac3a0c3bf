//! Face detection with OpenCV's Haar cascade, and the mapping from its boxes to the box
//! convention dlib's 5-point predictor was trained on.
//!
//! The cascade is Debian's `haarcascade_frontalface_default.xml` (package `opencv-data`). Large
//! images are scaled down before detection (the cascade's cost grows with the pixel count and
//! faces in photos are rarely under 1/12 of the shorter side); boxes are scaled back.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::RgbImage;
use opencv::core::{Mat, Size, Vector};
use opencv::prelude::*;

use super::Rect;

/// Where Debian's `opencv-data` installs the frontal-face cascade.
pub const DEFAULT_CASCADE: &str =
    "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml";

/// Why detection could not run.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The cascade file is missing.
    #[error("face cascade {0} not found (Debian package opencv-data; scripts/setup installs it)")]
    CascadeMissing(PathBuf),
    /// OpenCV refused the cascade or the image.
    #[error("OpenCV: {0}")]
    OpenCv(String),
}

impl From<opencv::Error> for DetectError {
    fn from(e: opencv::Error) -> Self {
        DetectError::OpenCv(e.message)
    }
}

/// Cascade parameters. The defaults were chosen on `../shared/data` (see `docs/FACES.md`).
#[derive(Debug, Clone)]
pub struct DetectorParams {
    /// Scale step between pyramid levels. 1.2 for photos: the cascade's scan was most of a
    /// photo's time, and every face it finds is then placed by the CNN, which searches its
    /// own finer pyramid around it, so a coarser step loses nothing measurable (see
    /// `docs/FACES.md`: lfw-dev 98.83 % against 98.85 % at 1.1, the same faces found on the
    /// media photos and the face set, a 640×480 photo 20 ms faster).
    pub scale_factor: f64,
    /// Overlapping raw detections needed to keep a face.
    pub min_neighbors: i32,
    /// Smallest face side searched, in pixels of the (possibly scaled-down) detection image.
    /// 60 by default: every face of the media photos is larger, and the search costs about
    /// 40 % less than from 40 px (see `docs/FACES.md`); photos where nothing is found are
    /// searched again from 40 px (`PipelineOptions::small_face`).
    pub min_face: i32,
    /// Images whose longer side exceeds this are scaled down to it before detection.
    pub max_side: u32,
    /// Equalise the grey histogram before detecting.
    pub equalize: bool,
    /// How cascade boxes map to dlib's box convention.
    pub mapping: BoxMapping,
}

/// Where dlib's HOG box sits relative to a cascade box (fractions of the cascade box's side).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxMapping {
    /// Centre of dlib's box across the cascade box.
    pub cx: f64,
    /// Centre of dlib's box down the cascade box.
    pub cy: f64,
    /// Side of dlib's box relative to the cascade box's.
    pub scale: f64,
}

impl Default for BoxMapping {
    fn default() -> Self {
        BoxMapping {
            cx: BOX_CX,
            cy: BOX_CY,
            scale: BOX_SCALE,
        }
    }
}

impl Default for DetectorParams {
    fn default() -> Self {
        DetectorParams {
            scale_factor: PHOTO_SCALE_FACTOR,
            min_neighbors: 10,
            min_face: 60,
            max_side: 800,
            equalize: false,
            mapping: BoxMapping::default(),
        }
    }
}

/// A face found by the cascade, in the coordinates of the input image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Left column.
    pub x: i64,
    /// Top row.
    pub y: i64,
    /// Width (the cascade's boxes are square).
    pub w: i64,
    /// Height.
    pub h: i64,
    /// Raw detections merged into this one (a confidence of sorts).
    pub neighbors: i32,
}

/// OpenCV's Haar cascade face detector. Safe to share between threads, and calls from several
/// threads run at the same time: an OpenCV classifier keeps scratch buffers and serves one
/// caller at a time, so each concurrent call takes one from a pool, loading another copy of the
/// cascade (a few tens of milliseconds, once per process) when every copy is in use.
pub struct CascadeDetector {
    path: PathBuf,
    idle: Mutex<Vec<opencv::objdetect::CascadeClassifier>>,
    params: DetectorParams,
}

impl CascadeDetector {
    /// Loads the cascade at `path`.
    pub fn open(path: &Path, params: DetectorParams) -> Result<Self, DetectError> {
        let classifier = load_cascade(path)?;
        Ok(CascadeDetector {
            path: path.to_path_buf(),
            idle: Mutex::new(vec![classifier]),
            params,
        })
    }

    /// The parameters in use.
    pub fn params(&self) -> &DetectorParams {
        &self.params
    }

    /// Every face the cascade finds, largest first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        self.detect_at(img, self.detection_scale(img.width().max(img.height())))
    }

    /// The scale an image whose longer side is `longer` pixels is searched at: 1, or less to
    /// bring the longer side down to `max_side`.
    pub fn detection_scale(&self, longer: u32) -> f64 {
        if longer > self.params.max_side {
            self.params.max_side as f64 / longer as f64
        } else {
            1.0
        }
    }

    /// Every face the cascade finds in `img` searched at `scale` (at most 1), largest first
    /// (then the most neighbours, then top to bottom and left to right).
    /// A padded photo is searched at the scale of the photo itself, so that padding does not
    /// coarsen the boxes.
    pub fn detect_at(&self, img: &RgbImage, scale: f64) -> Result<Vec<Detection>, DetectError> {
        self.detect_sized(img, scale, self.params.min_face)
    }

    /// Like [`CascadeDetector::detect_at`], looking for faces down to `min_face` pixels (of
    /// the image searched) instead of the parameters' smallest face.
    pub fn detect_sized(
        &self,
        img: &RgbImage,
        scale: f64,
        min_face: i32,
    ) -> Result<Vec<Detection>, DetectError> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let scale = scale.clamp(f64::MIN_POSITIVE, 1.0);
        let grey = grey_levels(img);
        let src = Mat::new_rows_cols_with_data(h as i32, w as i32, &grey)?;
        let mut work = Mat::default();
        if scale < 1.0 {
            let size = Size::new(
                ((w as f64 * scale).round() as i32).max(1),
                ((h as f64 * scale).round() as i32).max(1),
            );
            opencv::imgproc::resize(&src, &mut work, size, 0.0, 0.0, opencv::imgproc::INTER_AREA)?;
        } else {
            src.copy_to(&mut work)?;
        }
        if self.params.equalize {
            let mut eq = Mat::default();
            opencv::imgproc::equalize_hist(&work, &mut eq)?;
            work = eq;
        }
        let mut boxes = Vector::<opencv::core::Rect>::new();
        let mut counts = Vector::<i32>::new();
        let popped = twin_core::sync::lock(&self.idle).pop();
        let mut classifier = match popped {
            Some(c) => c,
            None => load_cascade(&self.path)?,
        };
        let found = classifier.detect_multi_scale2(
            &work,
            &mut boxes,
            &mut counts,
            self.params.scale_factor,
            self.params.min_neighbors,
            0,
            Size::new(min_face, min_face),
            Size::new(0, 0),
        );
        // Back to the pool whatever happened: a failed call leaves the classifier usable.
        twin_core::sync::lock(&self.idle).push(classifier);
        found?;
        let inv = 1.0 / scale;
        let mut out: Vec<Detection> = boxes
            .iter()
            .zip(counts.iter().chain(std::iter::repeat(0)))
            .map(|(r, n)| Detection {
                x: (r.x as f64 * inv).round() as i64,
                y: (r.y as f64 * inv).round() as i64,
                w: (r.width as f64 * inv).round() as i64,
                h: (r.height as f64 * inv).round() as i64,
                neighbors: n,
            })
            .collect();
        // Ties broken by position: OpenCV's parallel scan lists its raw hits in no fixed order,
        // and the groups come out in theirs.
        out.sort_by(|a, b| {
            (b.w * b.h)
                .cmp(&(a.w * a.h))
                .then(b.neighbors.cmp(&a.neighbors))
                .then(a.y.cmp(&b.y))
                .then(a.x.cmp(&b.x))
        });
        Ok(out)
    }
}

/// Loads the cascade at `path` into a classifier.
fn load_cascade(path: &Path) -> Result<opencv::objdetect::CascadeClassifier, DetectError> {
    if !path.is_file() {
        return Err(DetectError::CascadeMissing(path.to_path_buf()));
    }
    let classifier = opencv::objdetect::CascadeClassifier::new(path.as_os_str())?;
    if classifier.empty()? {
        return Err(DetectError::OpenCv(format!(
            "{} is not a cascade OpenCV can load",
            path.display()
        )));
    }
    Ok(classifier)
}

/// Sets how many threads OpenCV's own parallel loops (the cascade's scan, resizing) may use in
/// this process; 1 runs them on the calling thread. Returns what was in force before.
pub fn set_opencv_threads(threads: i32) -> Result<i32, DetectError> {
    let before = opencv::core::get_num_threads()?;
    opencv::core::set_num_threads(threads.max(1))?;
    Ok(before)
}

/// Grey levels as OpenCV's `cvtColor(RGB2GRAY)` computes them (fixed-point BT.601 weights).
pub fn grey_levels(img: &RgbImage) -> Vec<u8> {
    img.as_raw()
        .chunks_exact(3)
        .map(|p| {
            ((p[0] as u32 * 4899 + p[1] as u32 * 9617 + p[2] as u32 * 1868 + (1 << 13)) >> 14) as u8
        })
        .collect()
}

/// Maps a cascade box to the box dlib's HOG detector would give the same face, which is what
/// the 5-point predictor was trained on. The constants are a least-squares fit over faces
/// found by both detectors in `../shared/data` (see `docs/FACES.md` for the fit and its error):
/// dlib's box is smaller than the cascade's, and sits lower.
pub fn to_dlib_rect(d: &Detection, m: &BoxMapping) -> Rect {
    let (w, h) = (d.w as f64, d.h as f64);
    let cx = d.x as f64 + w * m.cx;
    let cy = d.y as f64 + h * m.cy;
    let side_w = w * m.scale;
    let side_h = h * m.scale;
    let left = (cx - side_w / 2.0).round() as i64;
    let top = (cy - side_h / 2.0).round() as i64;
    Rect::new(
        left,
        top,
        left + side_w.round() as i64 - 1,
        top + side_h.round() as i64 - 1,
    )
}

/// The cascade's step between pyramid levels in photos ([`DetectorParams::scale_factor`]).
pub const PHOTO_SCALE_FACTOR: f64 = 1.2;

/// Centre of dlib's box across the cascade box, as a fraction of its width.
pub const BOX_CX: f64 = 0.480;
/// Centre of dlib's box down the cascade box, as a fraction of its height.
pub const BOX_CY: f64 = 0.570;
/// Side of dlib's box relative to the cascade box's.
pub const BOX_SCALE: f64 = 0.880;
