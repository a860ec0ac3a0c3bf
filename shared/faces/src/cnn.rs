//! dlib's CNN face detector (`mmod_human_face_detector.dat`), imported into ONNX and run with
//! ONNX Runtime on an image pyramid.
//!
//! The network scores every position of an 80×80 sliding window (the window size is stored in
//! the file) in one pass over a pyramid level; levels are 5/6 of each other as in dlib's
//! `pyramid_down<6>`. A position scoring above 0 is a face, its box the window mapped back to
//! the image; overlapping boxes are suppressed as dlib does (the best first, a box dropped when
//! its intersection over the pair's bounding rectangle exceeds the file's threshold). The boxes
//! are dlib's CNN boxes, which dlib's 5-point predictor was made for: no mapping is needed.
//! Checked against `dlib.cnn_face_detection_model_v1` by `tests/reference/dlib_cnn_boxes.py`.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::Rect;
use twin_model::dlib::mmod::{self, MmodDetector, MmodError};
use twin_model::embed::{EmbedError, EmbedderOptions, ScoreMap, ScoreMapEngine};
use twin_model::onnx::face_detector::{self, IMAGE_INPUT, SCORES_OUTPUT};

/// File name of dlib's CNN face detector in the models folder.
pub const CNN_DETECTOR_FILE: &str = "mmod_human_face_detector.dat";
/// Ratio between pyramid levels (dlib's `pyramid_down<6>`).
pub const PYRAMID_STEP: f64 = 5.0 / 6.0;
/// A pyramid level whose shorter side is below this many pixels is not searched.
pub const MIN_LEVEL_SIDE: usize = 48;

/// Why the CNN detector could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum CnnError {
    /// The model file is missing or unreadable.
    #[error("CNN face detector {path}: {source} (scripts/setup installs it into vendor/models)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not the detector.
    #[error("{path}: {source}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its byte offset.
        #[source]
        source: MmodError,
    },
    /// ONNX Runtime failed.
    #[error(transparent)]
    Engine(#[from] EmbedError),
}

/// A face the CNN found: dlib's box and the window's score (above 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CnnDetection {
    /// The box, dlib's convention (inclusive edges), image coordinates.
    pub rect: Rect,
    /// The network's score.
    pub score: f32,
}

/// dlib's CNN face detector, loaded once and shared (runs are serialised by the engine).
pub struct CnnFaceDetector {
    net: MmodDetector,
    engine: ScoreMapEngine,
}

impl CnnFaceDetector {
    /// Loads the detector from `models_dir` (`vendor/models`).
    pub fn open(models_dir: &Path, options: &EmbedderOptions) -> Result<Self, CnnError> {
        Self::from_file(&models_dir.join(CNN_DETECTOR_FILE), options)
    }

    /// Loads the detector from its dlib file.
    pub fn from_file(path: &Path, options: &EmbedderOptions) -> Result<Self, CnnError> {
        let bytes = std::fs::read(path).map_err(|source| CnnError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let net = mmod::parse(&bytes).map_err(|source| CnnError::Format {
            path: path.to_path_buf(),
            source,
        })?;
        let model = twin_model::onnx::encode(&face_detector::build(&net));
        let engine = ScoreMapEngine::from_bytes(path, &model, IMAGE_INPUT, SCORES_OUTPUT, options)?;
        Ok(CnnFaceDetector { net, engine })
    }

    /// Side of the detection window (80 in dlib's file): the smallest face found at scale 1.
    pub fn window(&self) -> usize {
        self.net.window_width.max(self.net.window_height)
    }

    /// Every face in `img`, best first, searched as dlib searches it: the first level is the
    /// image scaled by `start_scale` (2 finds faces down to half the window, as dlib's
    /// `upsample_num_times = 1`; 1 is the image itself), each next level 5/6 of the one before
    /// (sizes rounded down, bilinear resampling corner to corner). The levels are laid out in
    /// one image as dlib's `create_tiled_pyramid` lays them out (the window grid falls on the
    /// same pixels) and the network runs once over it. Boxes map back as dlib maps them (the
    /// nearest level, then `point_up`: `p·6/5 + 0.3` per level).
    pub fn detect(&self, img: &RgbImage, start_scale: f64) -> Result<Vec<CnnDetection>, CnnError> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let (lw, lh) = (
            ((w as f64 * start_scale).round() as usize).max(1),
            ((h as f64 * start_scale).round() as usize).max(1),
        );
        // A face is at least one window at the first level: a smaller picture holds none (and
        // is too small for the network's convolutions).
        if lw.min(lh) < self.window() {
            return Ok(Vec::new());
        }
        let first = if lw == w && lh == h {
            sample_planes(img, 0, 0, 1.0, w, h)
        } else {
            sample_planes(img, 0, 0, start_scale, lw, lh)
        };
        self.detect_level(first, lw, lh, (0.0, 0.0, start_scale), usize::MAX)
    }

    /// The faces in the part of `img` inside `region`, searched with the region scaled by
    /// `scale` as the first pyramid level and at most `levels` levels (outside the image reads
    /// black, as in dlib). Used to place dlib's box on a face another detector found: with the
    /// face near 1.25 windows at the first level, three levels cover it from 0.8 to 1.25 of its
    /// expected size at a small part of the cost of the whole photo.
    pub fn detect_region(
        &self,
        img: &RgbImage,
        region: Rect,
        scale: f64,
        levels: usize,
    ) -> Result<Vec<CnnDetection>, CnnError> {
        let lw = ((region.width() as f64 * scale).round() as usize).max(1);
        let lh = ((region.height() as f64 * scale).round() as usize).max(1);
        if lw.min(lh) < self.window() || levels == 0 {
            return Ok(Vec::new());
        }
        let first = sample_planes(img, region.left, region.top, scale, lw, lh);
        let origin = (region.left as f64, region.top as f64, scale);
        self.detect_level(first, lw, lh, origin, levels)
    }

    /// The pyramid over a first level (`3 × lh × lw` planes) whose pixel `p` is image pixel
    /// `(p + 0.5)/scale − 0.5 + origin`, at most `levels` levels, boxes in image coordinates.
    fn detect_level(
        &self,
        first: Vec<f32>,
        lw: usize,
        lh: usize,
        (x0, y0, scale): (f64, f64, f64),
        levels: usize,
    ) -> Result<Vec<CnnDetection>, CnnError> {
        let tiles = tile_layout(lw, lh, levels);
        let (tw, th) = (tiles.width, tiles.height);
        let tp = tw * th;
        let mut tiled = vec![0f32; 3 * tp];
        let mut level = first;
        for (k, t) in tiles.rects.iter().enumerate() {
            if k > 0 {
                let prev = &tiles.rects[k - 1];
                level = resize_planes(&level, prev.2, prev.3, t.2, t.3);
            }
            let lp = t.2 * t.3;
            for c in 0..3 {
                for y in 0..t.3 {
                    let dst = c * tp + (t.1 + y) * tw + t.0;
                    tiled[dst..dst + t.2]
                        .copy_from_slice(&level[c * lp + y * t.2..c * lp + (y + 1) * t.2]);
                }
            }
        }
        let map = self.engine.run(&tiled, th, tw)?;
        let mut found = Vec::new();
        for ((l, t, r, b), score) in self.windows(&map) {
            let k = tiles.nearest((l + r) / 2.0, (t + b) / 2.0);
            let (ox, oy) = (tiles.rects[k].0 as f64, tiles.rects[k].1 as f64);
            // dlib's point_up, once per level below the first, then back to the image.
            let up = |v: f64, origin: f64| {
                let mut v = v;
                for _ in 0..k {
                    v = v * 1.2 + 0.3;
                }
                (v + 0.5) / scale - 0.5 + origin
            };
            let rect = Rect::new(
                up(l - ox, x0).round() as i64,
                up(t - oy, y0).round() as i64,
                up(r - ox, x0).round() as i64,
                up(b - oy, y0).round() as i64,
            );
            found.push(CnnDetection { rect, score });
        }
        Ok(suppress(found, self.net.nms_iou, self.net.nms_covered))
    }

    /// The windows scoring above 0 in a score map: (left, top, right, bottom) in the level's
    /// coordinates (dlib's `centered_drect` of the window at the position's centre), score.
    fn windows(&self, map: &ScoreMap) -> Vec<((f64, f64, f64, f64), f32)> {
        let half_w = (self.net.window_width as f64 - 1.0) / 2.0;
        let half_h = (self.net.window_height as f64 - 1.0) / 2.0;
        let mut out = Vec::new();
        for r in 0..map.height {
            for c in 0..map.width {
                let score = map.data[r * map.width + c];
                if score > 0.0 {
                    let (px, py) = self.net.output_to_input(c as f64, r as f64);
                    out.push(((px - half_w, py - half_h, px + half_w, py + half_h), score));
                }
            }
        }
        out
    }
}

/// dlib's non-maximum suppression: best score first, a box dropped when it overlaps a kept one
/// by more than `iou` (intersection over the pair's bounding rectangle) or is covered by more
/// than `covered` of its own area (or covers that much of the other).
pub fn suppress(mut found: Vec<CnnDetection>, iou: f64, covered: f64) -> Vec<CnnDetection> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let area = |r: &Rect| (r.width() * r.height()) as f64;
    let mut kept: Vec<CnnDetection> = Vec::new();
    for d in found {
        let overlaps = kept.iter().any(|k| {
            let inner = area(&k.rect.intersect(&d.rect));
            if inner == 0.0 {
                return false;
            }
            let outer = Rect::new(
                k.rect.left.min(d.rect.left),
                k.rect.top.min(d.rect.top),
                k.rect.right.max(d.rect.right),
                k.rect.bottom.max(d.rect.bottom),
            );
            inner / area(&outer) > iou
                || inner / area(&k.rect) > covered
                || inner / area(&d.rect) > covered
        });
        if !overlaps {
            kept.push(d);
        }
    }
    kept
}

/// The planar RGB `f32` level (`3 × lh × lw`, values 0–255) whose pixel centre `(i, j)` sits at
/// `((i + 0.5)/s − 0.5 + x0, (j + 0.5)/s − 0.5 + y0)` in `img`: bilinear when enlarging or
/// shrinking a little, the mean over each level pixel's footprint when shrinking by more than
/// half (so that fine detail does not alias). Outside the image reads black, as in dlib.
pub fn sample_planes(img: &RgbImage, x0: i64, y0: i64, s: f64, lw: usize, lh: usize) -> Vec<f32> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let raw = img.as_raw();
    let px = |x: i64, y: i64, c: usize| -> f32 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            raw[((y * w + x) * 3) as usize + c] as f32
        }
    };
    let plane = lw * lh;
    let mut out = vec![0f32; 3 * plane];
    if s >= 0.5 {
        for j in 0..lh {
            let sy = (j as f64 + 0.5) / s - 0.5 + y0 as f64;
            let fy = sy.floor();
            let dy = (sy - fy) as f32;
            let iy = fy as i64;
            for i in 0..lw {
                let sx = (i as f64 + 0.5) / s - 0.5 + x0 as f64;
                let fx = sx.floor();
                let dx = (sx - fx) as f32;
                let ix = fx as i64;
                for c in 0..3 {
                    let top = px(ix, iy, c) * (1.0 - dx) + px(ix + 1, iy, c) * dx;
                    let bottom = px(ix, iy + 1, c) * (1.0 - dx) + px(ix + 1, iy + 1, c) * dx;
                    out[c * plane + j * lw + i] = top * (1.0 - dy) + bottom * dy;
                }
            }
        }
    } else {
        let span = |k: usize, origin: i64| {
            let a = (k as f64 / s).floor() as i64 + origin;
            let b = (((k + 1) as f64 / s).floor() as i64 + origin).max(a + 1);
            (a, b)
        };
        let cols: Vec<(i64, i64)> = (0..lw).map(|i| span(i, x0)).collect();
        for j in 0..lh {
            let (ya, yb) = span(j, y0);
            for (i, &(xa, xb)) in cols.iter().enumerate() {
                let mut sum = [0f32; 3];
                for y in ya..yb {
                    for x in xa..xb {
                        for (c, v) in sum.iter_mut().enumerate() {
                            *v += px(x, y, c);
                        }
                    }
                }
                let n = ((yb - ya) * (xb - xa)) as f32;
                for (c, v) in sum.iter().enumerate() {
                    out[c * plane + j * lw + i] = v / n;
                }
            }
        }
    }
    out
}

/// Padding between pyramid levels in the tiled image (dlib's `input_rgb_image_pyramid`).
const TILE_PADDING: usize = 10;
/// Padding around the tiled image.
const TILE_OUTER_PADDING: usize = 11;
/// dlib builds levels down to this height.
const TILE_MIN_HEIGHT: usize = 5;

/// Where each pyramid level sits in the tiled image: (x, y, width, height) per level.
#[derive(Debug, Clone, PartialEq)]
pub struct TileLayout {
    /// Width of the tiled image.
    pub width: usize,
    /// Height of the tiled image.
    pub height: usize,
    /// The levels, largest first.
    pub rects: Vec<(usize, usize, usize, usize)>,
}

impl TileLayout {
    /// The level nearest to a point of the tiled image (the one containing it, if any).
    pub fn nearest(&self, x: f64, y: f64) -> usize {
        let dist = |&(l, t, w, h): &(usize, usize, usize, usize)| {
            let nx = x.clamp(l as f64, (l + w - 1) as f64);
            let ny = y.clamp(t as f64, (t + h - 1) as f64);
            (nx - x).powi(2) + (ny - y).powi(2)
        };
        (0..self.rects.len())
            .min_by(|&a, &b| dist(&self.rects[a]).total_cmp(&dist(&self.rects[b])))
            .unwrap_or(0)
    }
}

/// dlib's tiled pyramid layout for a `w × h` first level (`compute_tiled_image_pyramid_details`
/// with `pyramid_down<6>`, padding 10, outer padding 11): levels stacked down the left column
/// until the rest fits beside them, the rest stacked up the right side from the bottom. At most
/// `max_levels` levels (`usize::MAX`: every level dlib builds).
pub fn tile_layout(w: usize, h: usize, max_levels: usize) -> TileLayout {
    let mut sizes = vec![(w, h)];
    let (mut nw, mut nh) = (w, h);
    while sizes.len() < max_levels {
        nw = nw * 5 / 6;
        nh = nh * 5 / 6;
        if nw * nh == 0 || nh < TILE_MIN_HEIGHT {
            break;
        }
        sizes.push((nw, nh));
    }
    let (pad, outer) = (TILE_PADDING as i64, TILE_OUTER_PADDING as i64);
    let (w0, h0) = (w as i64, h as i64);
    let total: i64 = sizes.iter().map(|s| s.1 as i64 + pad).sum::<i64>() - 2 * pad;
    let (mut height, mut prev_w) = (0i64, 0i64);
    for &(sw, sh) in &sizes {
        if sw as i64 <= w0 - prev_w - pad && (height - h0) * 2 >= total - h0 {
            break;
        }
        height += sh as i64 + pad;
        prev_w = sw as i64;
    }
    height -= pad;
    let mut rects = Vec::with_capacity(sizes.len());
    let mut y = outer;
    let mut i = 0;
    while y < height + outer && i < sizes.len() {
        rects.push((outer as usize, y as usize, sizes[i].0, sizes[i].1));
        y += sizes[i].1 as i64 + pad;
        i += 1;
    }
    y -= pad;
    while i < sizes.len() {
        let (sw, sh) = (sizes[i].0 as i64, sizes[i].1 as i64);
        let (right, bottom) = (outer + w0 - 1, y - 1);
        let (left, top) = (right - sw + 1, bottom - sh + 1);
        // Stop before the right column would reach into the first level.
        let overlaps_first = left < outer + w0 && top < outer + h0 && bottom >= outer;
        if overlaps_first || top < 0 {
            break;
        }
        rects.push((left as usize, top as usize, sizes[i].0, sizes[i].1));
        y -= sh + pad;
        i += 1;
    }
    TileLayout {
        width: (w0 + 2 * outer) as usize,
        height: (height + 2 * outer) as usize,
        rects,
    }
}

/// dlib's `resize_image` on planar `f32` RGB: bilinear, corner to corner (output pixel `x`
/// reads input `x·(sw − 1)/(dw − 1)`).
pub fn resize_planes(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let xs = (sw as f64 - 1.0) / (dw.max(2) as f64 - 1.0);
    let ys = (sh as f64 - 1.0) / (dh.max(2) as f64 - 1.0);
    let (sp, dp) = (sw * sh, dw * dh);
    let mut out = vec![0f32; 3 * dp];
    let cols: Vec<(usize, usize, f32)> = (0..dw)
        .map(|x| {
            let fx = x as f64 * xs;
            let x0 = (fx.floor() as usize).min(sw - 1);
            (x0, (x0 + 1).min(sw - 1), (fx - x0 as f64) as f32)
        })
        .collect();
    for y in 0..dh {
        let fy = y as f64 * ys;
        let y0 = (fy.floor() as usize).min(sh - 1);
        let y1 = (y0 + 1).min(sh - 1);
        let dy = (fy - y0 as f64) as f32;
        for c in 0..3 {
            let plane = &src[c * sp..(c + 1) * sp];
            for (x, &(x0, x1, dx)) in cols.iter().enumerate() {
                let top = plane[y0 * sw + x0] * (1.0 - dx) + plane[y0 * sw + x1] * dx;
                let bottom = plane[y1 * sw + x0] * (1.0 - dx) + plane[y1 * sw + x1] * dx;
                out[c * dp + y * dw + x] = top * (1.0 - dy) + bottom * dy;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn det(l: i64, t: i64, side: i64, score: f32) -> CnnDetection {
        CnnDetection {
            rect: Rect::new(l, t, l + side - 1, t + side - 1),
            score,
        }
    }

    #[test]
    fn suppression_keeps_the_best_of_overlapping_boxes() {
        let kept = suppress(
            vec![det(0, 0, 80, 0.5), det(4, 4, 80, 1.5), det(200, 0, 80, 0.2)],
            0.4,
            1.0,
        );
        assert_eq!(kept, vec![det(4, 4, 80, 1.5), det(200, 0, 80, 0.2)]);
    }

    #[test]
    fn sampling_at_scale_one_copies_and_reads_black_outside() {
        let img = RgbImage::from_fn(4, 3, |x, y| Rgb([x as u8 * 10, y as u8 * 10, 7]));
        let p = sample_planes(&img, -1, 0, 1.0, 5, 3);
        assert_eq!(p[0], 0.0, "left of the image is black");
        assert_eq!(p[1], 0.0, "column 0, red");
        assert_eq!(p[2], 10.0);
        assert_eq!(p[15 + 5 + 1], 10.0, "green plane, row 1");
        assert_eq!(p[30 + 1], 7.0, "blue plane");
    }

    #[test]
    fn shrinking_averages_the_footprint() {
        let img = RgbImage::from_fn(4, 4, |x, _| Rgb([if x % 2 == 0 { 0 } else { 200 }; 3]));
        let p = sample_planes(&img, 0, 0, 0.25, 1, 1);
        assert_eq!(p, vec![100.0; 3]);
    }
}
