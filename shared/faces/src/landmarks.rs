//! dlib's 5-point face landmark predictor (`shape_predictor_5_face_landmarks.dat`).
//!
//! The file is dlib's serialization of a `shape_predictor`: `int 1`, the 10×1 initial shape
//! (x, y pairs in box-normalised coordinates), the forests (one list of regression trees per
//! cascade level; a tree is its splits `{u32 idx1, u32 idx2, f32 thresh}` then its leaf vectors),
//! the anchor landmark of every feature pixel per level, and each feature pixel's offset from its
//! anchor per level. [`ShapePredictor::from_bytes`] checks all of it and consumes the file to its
//! last byte; [`ShapePredictor::predict`] runs the cascade exactly like dlib's
//! `shape_predictor::operator()`.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::geometry::{round_half_up, DPoint, Similarity};
use super::{Point, Rect};
use twin_model::dlib::ser::{Reader, SerError};

/// Number of landmarks the predictor places.
pub const NUM_LANDMARKS: usize = 5;

/// Length of a shape vector: x, y for each landmark.
const SHAPE_LEN: usize = 2 * NUM_LANDMARKS;

/// A failure to load a shape predictor.
#[derive(Debug, thiserror::Error)]
pub enum ShapePredictorError {
    /// The file could not be read.
    #[error("cannot read shape predictor {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a dlib 5-point shape predictor; the cause says at which byte and why.
    #[error("{origin}: not a dlib 5-point shape predictor: {source}")]
    Format {
        /// Where the bytes came from (a path, or "in-memory data").
        origin: String,
        /// What was wrong, and at which byte.
        #[source]
        source: SerError,
    },
}

#[derive(Debug, Clone)]
struct Split {
    idx1: u32,
    idx2: u32,
    thresh: f32,
}

#[derive(Debug, Clone)]
struct Tree {
    splits: Vec<Split>,
    leaves: Vec<[f32; SHAPE_LEN]>,
}

impl Tree {
    /// The leaf the features lead to: child 2i+1 when f[idx1] − f[idx2] > thresh, else 2i+2.
    fn leaf(&self, features: &[f32]) -> &[f32; SHAPE_LEN] {
        let mut i = 0;
        while i < self.splits.len() {
            let s = &self.splits[i];
            i = if features[s.idx1 as usize] - features[s.idx2 as usize] > s.thresh {
                2 * i + 1
            } else {
                2 * i + 2
            };
        }
        &self.leaves[i - self.splits.len()]
    }
}

#[derive(Debug, Clone)]
struct Level {
    trees: Vec<Tree>,
    /// The landmark each feature pixel hangs on.
    anchors: Vec<u8>,
    /// Each feature pixel's offset from its anchor, in initial-shape coordinates.
    deltas: Vec<[f32; 2]>,
}

/// dlib's 5-point face landmark predictor: a cascade of regression-tree forests.
#[derive(Debug, Clone)]
pub struct ShapePredictor {
    initial_shape: [f32; SHAPE_LEN],
    levels: Vec<Level>,
}

impl ShapePredictor {
    /// Reads a predictor file (`shape_predictor_5_face_landmarks.dat`).
    pub fn open(path: &Path) -> Result<Self, ShapePredictorError> {
        let bytes = std::fs::read(path).map_err(|source| ShapePredictorError::Io {
            path: path.to_owned(),
            source,
        })?;
        parse(&bytes).map_err(|source| ShapePredictorError::Format {
            origin: path.display().to_string(),
            source,
        })
    }

    /// Reads a predictor from the bytes of its file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShapePredictorError> {
        parse(bytes).map_err(|source| ShapePredictorError::Format {
            origin: "in-memory data".into(),
            source,
        })
    }

    /// Number of cascade levels.
    pub fn num_levels(&self) -> usize {
        self.levels.len()
    }

    /// Number of regression trees over all levels.
    pub fn num_trees(&self) -> usize {
        self.levels.iter().map(|l| l.trees.len()).sum()
    }

    /// Number of feature pixels over all levels.
    pub fn num_feature_pixels(&self) -> usize {
        self.levels.iter().map(|l| l.anchors.len()).sum()
    }

    /// The five landmarks of the face in `face` (a dlib box: edges inclusive), as dlib's
    /// `shape_predictor::operator()(img, rect)` places them on an RGB image.
    pub fn predict(&self, img: &RgbImage, face: Rect) -> [Point; NUM_LANDMARKS] {
        let to_img = BoxMap::new(face);
        let mut shape = self.initial_shape;
        let mut features = Vec::new();
        for level in &self.levels {
            // The similarity from the initial shape to the current one, in f32 as dlib keeps it;
            // only its 2×2 part moves the deltas.
            let t = Similarity::fit(&points(&self.initial_shape), &points(&shape));
            let m = [t.a as f32, -t.b as f32, t.b as f32, t.a as f32];
            features.clear();
            features.extend(level.anchors.iter().zip(&level.deltas).map(|(&anchor, d)| {
                let (ax, ay) = (shape[2 * anchor as usize], shape[2 * anchor as usize + 1]);
                let x = m[0] * d[0] + m[1] * d[1] + ax;
                let y = m[2] * d[0] + m[3] * d[1] + ay;
                intensity(img, to_img.map(x, y))
            }));
            for tree in &level.trees {
                for (s, v) in shape.iter_mut().zip(tree.leaf(&features)) {
                    *s += v;
                }
            }
        }
        std::array::from_fn(|i| to_img.map(shape[2 * i], shape[2 * i + 1]))
    }
}

/// The shape vector as points, in f64 like dlib's transform fit.
fn points(shape: &[f32; SHAPE_LEN]) -> [DPoint; NUM_LANDMARKS] {
    std::array::from_fn(|i| DPoint::new(shape[2 * i] as f64, shape[2 * i + 1] as f64))
}

/// dlib's `unnormalizing_tform(rect)`: (0,0) ↦ top-left, (1,0) ↦ top-right, (1,1) ↦
/// bottom-right, with right and bottom the inclusive edges; results rounded half up.
#[derive(Debug, Clone, Copy)]
struct BoxMap {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
}

impl BoxMap {
    fn new(r: Rect) -> Self {
        BoxMap {
            left: r.left as f64,
            top: r.top as f64,
            width: (r.right - r.left) as f64,
            height: (r.bottom - r.top) as f64,
        }
    }

    fn map(&self, x: f32, y: f32) -> Point {
        Point::new(
            round_half_up(self.width * x as f64 + self.left),
            round_half_up(self.height * y as f64 + self.top),
        )
    }
}

/// dlib's `get_pixel_intensity` of an RGB pixel, (r + g + b) / 3 in integers; 0 outside.
fn intensity(img: &RgbImage, p: Point) -> f32 {
    if p.x < 0 || p.y < 0 || p.x >= img.width() as i64 || p.y >= img.height() as i64 {
        return 0.0;
    }
    let [r, g, b] = img.get_pixel(p.x as u32, p.y as u32).0;
    ((r as u32 + g as u32 + b as u32) / 3) as f32
}

/// Prefixes the expectation of an error with where in the model it happened.
fn within(context: impl FnOnce() -> String) -> impl FnOnce(SerError) -> SerError {
    move |e| SerError {
        expected: format!("{}: {}", context(), e.expected),
        ..e
    }
}

/// Reads a vector length and refuses one the rest of the file cannot hold (each item takes at
/// least `min_item_bytes`), so a corrupt count never allocates.
fn count(r: &mut Reader, what: &str, min_item_bytes: usize) -> Result<usize, SerError> {
    let start = r.position();
    let n = r.uint(what)?;
    if n > r.remaining() / min_item_bytes {
        return Err(r.error_at(
            start,
            format!("{what} that fits in the {} bytes left", r.remaining()),
            n,
        ));
    }
    Ok(n)
}

/// Reads a float matrix that must be SHAPE_LEN×1.
fn shape_vector(r: &mut Reader, what: &str) -> Result<[f32; SHAPE_LEN], SerError> {
    let start = r.position();
    let m = r.matrix_f32(what)?;
    if m.rows != SHAPE_LEN || m.cols != 1 {
        return Err(r.error_at(
            start,
            format!("{what}: a {SHAPE_LEN}×1 matrix ({NUM_LANDMARKS} landmarks)"),
            format!("a {}×{} matrix", m.rows, m.cols),
        ));
    }
    let mut v = [0f32; SHAPE_LEN];
    v.copy_from_slice(&m.data);
    Ok(v)
}

// The smallest encodings: an integer is 2 bytes, a float 4 (two integers).
const INT_BYTES: usize = 2;
const FLOAT_BYTES: usize = 4;

fn parse(bytes: &[u8]) -> Result<ShapePredictor, SerError> {
    let mut r = Reader::new(bytes);
    r.expect_int(1, "shape predictor version")?;
    let initial_shape = shape_vector(&mut r, "initial shape")?;

    // forests: levels × trees
    let n_levels = count(&mut r, "number of cascade levels", INT_BYTES)?;
    let mut levels = Vec::with_capacity(n_levels);
    // Per level, the largest feature index a split uses and where it was read, checked once the
    // number of feature pixels is known.
    let mut max_index = Vec::with_capacity(n_levels);
    for l in 0..n_levels {
        let n_trees = count(&mut r, "number of trees", 2 * INT_BYTES)
            .map_err(within(|| format!("level {l}")))?;
        let mut trees = Vec::with_capacity(n_trees);
        let mut level_max: Option<(u32, usize)> = None;
        for t in 0..n_trees {
            let ctx = || format!("level {l}, tree {t}");
            let n_splits = count(&mut r, "number of splits", 2 * INT_BYTES + FLOAT_BYTES)
                .map_err(within(ctx))?;
            let mut splits = Vec::with_capacity(n_splits);
            for _ in 0..n_splits {
                let at = r.position();
                let idx1 = r.u32("split feature index 1").map_err(within(ctx))?;
                let idx2 = r.u32("split feature index 2").map_err(within(ctx))?;
                let thresh = r.float("split threshold").map_err(within(ctx))?;
                let m = idx1.max(idx2);
                if level_max.is_none_or(|(best, _)| m > best) {
                    level_max = Some((m, at));
                }
                splits.push(Split { idx1, idx2, thresh });
            }
            let at = r.position();
            let n_leaves = count(&mut r, "number of leaves", 2 * INT_BYTES).map_err(within(ctx))?;
            if n_leaves != n_splits + 1 || !n_leaves.is_power_of_two() {
                return Err(r.error_at(
                    at,
                    format!(
                        "{}: {} leaves (a full binary tree of {n_splits} splits)",
                        ctx(),
                        n_splits + 1
                    ),
                    n_leaves,
                ));
            }
            let mut leaves = Vec::with_capacity(n_leaves);
            for _ in 0..n_leaves {
                leaves.push(shape_vector(&mut r, "leaf value").map_err(within(ctx))?);
            }
            trees.push(Tree { splits, leaves });
        }
        levels.push(Level {
            trees,
            anchors: Vec::new(),
            deltas: Vec::new(),
        });
        max_index.push(level_max);
    }

    // anchor_idx: levels × feature pixels
    let at = r.position();
    let n = count(&mut r, "number of anchor-index levels", INT_BYTES)?;
    if n != n_levels {
        return Err(r.error_at(
            at,
            format!("{n_levels} anchor-index levels (one per cascade level)"),
            n,
        ));
    }
    for (l, level) in levels.iter_mut().enumerate() {
        let n_pixels = count(&mut r, "number of feature pixels", INT_BYTES)
            .map_err(within(|| format!("level {l}")))?;
        level.anchors.reserve_exact(n_pixels);
        for _ in 0..n_pixels {
            let at = r.position();
            let a = r
                .u32("anchor index")
                .map_err(within(|| format!("level {l}")))?;
            if a as usize >= NUM_LANDMARKS {
                return Err(r.error_at(
                    at,
                    format!("level {l}: an anchor landmark below {NUM_LANDMARKS}"),
                    a,
                ));
            }
            level.anchors.push(a as u8);
        }
        if let Some((m, at)) = max_index[l] {
            if m as usize >= n_pixels {
                return Err(r.error_at(
                    at,
                    format!("level {l}: split feature indices below {n_pixels} (its number of feature pixels)"),
                    m,
                ));
            }
        }
    }

    // deltas: levels × feature pixels × (x, y)
    let at = r.position();
    let n = count(&mut r, "number of delta levels", INT_BYTES)?;
    if n != n_levels {
        return Err(r.error_at(
            at,
            format!("{n_levels} delta levels (one per cascade level)"),
            n,
        ));
    }
    for (l, level) in levels.iter_mut().enumerate() {
        let at = r.position();
        let n_pixels = count(&mut r, "number of deltas", 2 * FLOAT_BYTES)
            .map_err(within(|| format!("level {l}")))?;
        if n_pixels != level.anchors.len() {
            return Err(r.error_at(
                at,
                format!(
                    "level {l}: {} deltas (one per feature pixel)",
                    level.anchors.len()
                ),
                n_pixels,
            ));
        }
        level.deltas.reserve_exact(n_pixels);
        for _ in 0..n_pixels {
            let x = r
                .float("delta x")
                .map_err(within(|| format!("level {l}")))?;
            let y = r
                .float("delta y")
                .map_err(within(|| format!("level {l}")))?;
            level.deltas.push([x, y]);
        }
    }

    r.finish("the shape predictor")?;
    Ok(ShapePredictor {
        initial_shape,
        levels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    // ---- a small writer of dlib's format, for building models by hand ----

    fn int(out: &mut Vec<u8>, v: i64) {
        let mut mag = v.unsigned_abs();
        let mut bytes = Vec::new();
        loop {
            bytes.push((mag & 0xff) as u8);
            mag >>= 8;
            if mag == 0 {
                break;
            }
        }
        out.push(bytes.len() as u8 | if v < 0 { 0x80 } else { 0 });
        out.extend(bytes);
    }

    fn float(out: &mut Vec<u8>, v: f32) {
        // v = mantissa × 2^exponent, mantissa first.
        let bits = v.to_bits();
        let exp = ((bits >> 23) & 0xff) as i64;
        let frac = (bits & 0x7f_ffff) as i64;
        let (m, e) = if exp == 0 {
            (frac, -149)
        } else {
            (frac | 0x80_0000, exp - 150)
        };
        int(out, if v.is_sign_negative() { -m } else { m });
        int(out, e);
    }

    fn matrix(out: &mut Vec<u8>, col: &[f32]) {
        int(out, -(col.len() as i64));
        int(out, -1);
        for &v in col {
            float(out, v);
        }
    }

    struct TestTree {
        splits: Vec<(u32, u32, f32)>,
        leaves: Vec<[f32; SHAPE_LEN]>,
    }

    struct TestLevel {
        trees: Vec<TestTree>,
        pixels: Vec<(u32, [f32; 2])>,
    }

    fn encode(initial: &[f32; SHAPE_LEN], levels: &[TestLevel]) -> Vec<u8> {
        let mut out = Vec::new();
        int(&mut out, 1);
        matrix(&mut out, initial);
        int(&mut out, levels.len() as i64);
        for l in levels {
            int(&mut out, l.trees.len() as i64);
            for t in &l.trees {
                int(&mut out, t.splits.len() as i64);
                for &(a, b, th) in &t.splits {
                    int(&mut out, a as i64);
                    int(&mut out, b as i64);
                    float(&mut out, th);
                }
                int(&mut out, t.leaves.len() as i64);
                for leaf in &t.leaves {
                    matrix(&mut out, leaf);
                }
            }
        }
        int(&mut out, levels.len() as i64);
        for l in levels {
            int(&mut out, l.pixels.len() as i64);
            for &(a, _) in &l.pixels {
                int(&mut out, a as i64);
            }
        }
        int(&mut out, levels.len() as i64);
        for l in levels {
            int(&mut out, l.pixels.len() as i64);
            for &(_, [x, y]) in &l.pixels {
                float(&mut out, x);
                float(&mut out, y);
            }
        }
        out
    }

    /// Landmarks at (0.2,0.3) (0.4,0.3) (0.6,0.3) (0.8,0.3) (0.5,0.7) of the box.
    const INITIAL: [f32; SHAPE_LEN] = [0.2, 0.3, 0.4, 0.3, 0.6, 0.3, 0.8, 0.3, 0.5, 0.7];

    fn shift_x(dx: f32) -> [f32; SHAPE_LEN] {
        let mut v = [0.0; SHAPE_LEN];
        for i in 0..NUM_LANDMARKS {
            v[2 * i] = dx;
        }
        v
    }

    /// One level, two feature pixels (on landmark 4, then landmark 0), one split comparing them.
    fn one_split_model(thresh: f32) -> Vec<u8> {
        encode(
            &INITIAL,
            &[TestLevel {
                trees: vec![TestTree {
                    splits: vec![(0, 1, thresh)],
                    leaves: vec![shift_x(0.1), shift_x(-0.1)],
                }],
                pixels: vec![(4, [0.0, 0.0]), (0, [0.0, 0.0])],
            }],
        )
    }

    fn image_with(pixels: &[((u32, u32), [u8; 3])]) -> RgbImage {
        let mut img = RgbImage::new(101, 101);
        for &((x, y), c) in pixels {
            img.put_pixel(x, y, Rgb(c));
        }
        img
    }

    const BOX: Rect = Rect::new(0, 0, 100, 100);

    #[test]
    fn a_hand_built_model_reads_back() {
        let p = ShapePredictor::from_bytes(&one_split_model(1.5)).unwrap();
        assert_eq!(
            (p.num_levels(), p.num_trees(), p.num_feature_pixels()),
            (1, 1, 2)
        );
        assert_eq!(p.initial_shape, INITIAL);
        assert_eq!(p.levels[0].trees[0].splits[0].thresh, 1.5);
        assert_eq!(p.levels[0].anchors, vec![4, 0]);
    }

    #[test]
    fn split_goes_left_only_when_the_difference_exceeds_the_threshold() {
        // The nose pixel (50, 70) against the first landmark's pixel (20, 30).
        let p = ShapePredictor::from_bytes(&one_split_model(10.0)).unwrap();
        // 200 − 0 > 10: left child (leaf 0, shift +0.1 → +10 px).
        let left = p.predict(&image_with(&[((50, 70), [200; 3])]), BOX);
        assert_eq!(left[0], Point::new(30, 30));
        assert_eq!(left[4], Point::new(60, 70));
        // 10 − 0 is not > 10: right child (leaf 1, shift −0.1).
        let right = p.predict(&image_with(&[((50, 70), [10; 3])]), BOX);
        assert_eq!(right[0], Point::new(10, 30));
    }

    #[test]
    fn intensity_is_the_integer_mean_of_rgb() {
        // (1 + 1 + 2) / 3 is 1 in integers (1.33 in reals): 1 − 0 is not > 1.2.
        let p = ShapePredictor::from_bytes(&one_split_model(1.2)).unwrap();
        let got = p.predict(&image_with(&[((50, 70), [1, 1, 2])]), BOX);
        assert_eq!(got[0], Point::new(10, 30));
        // (2 + 2 + 2) / 3 = 2 > 1.2
        let got = p.predict(&image_with(&[((50, 70), [2, 2, 2])]), BOX);
        assert_eq!(got[0], Point::new(30, 30));
    }

    #[test]
    fn pixels_outside_the_image_read_as_zero() {
        // A white image; the split compares the nose pixel with the first landmark's pixel.
        let white = RgbImage::from_pixel(101, 101, Rgb([255; 3]));
        let p = ShapePredictor::from_bytes(&one_split_model(-1.0)).unwrap();
        // Both inside: 255 − 255 > −1, left (+0.1).
        assert_eq!(p.predict(&white, BOX)[0], Point::new(30, 30));
        // Box shifted so the nose pixel (x = 110) falls off the right edge: 0 − 255 is not > −1,
        // right (−0.1). A clamped read would have gone left.
        assert_eq!(
            p.predict(&white, Rect::new(60, 0, 160, 100))[0],
            Point::new(70, 30)
        );
    }

    #[test]
    fn box_mapping_uses_inclusive_right_and_bottom_and_rounds_half_up() {
        // No trees: the result is the initial shape mapped into the box.
        let model = encode(&INITIAL, &[]);
        let p = ShapePredictor::from_bytes(&model).unwrap();
        let img = RgbImage::new(10, 10);
        // Width right − left = 5, so x = 10 + 5·sx, y = 20 + 5·sy, rounded half up.
        let got = p.predict(&img, Rect::new(10, 20, 15, 25));
        // 0.2 → 11; 0.3f32 is a hair above 0.3: 21.5000001 → 22.
        assert_eq!(got[0], Point::new(11, 22));
        // 0.5 → 12.5 exactly → 13 (half up); 0.7f32 is a hair below 0.7: 23.4999999 → 23.
        assert_eq!(got[4], Point::new(13, 23));
    }

    #[test]
    fn feature_pixels_follow_the_current_shape_through_a_similarity() {
        // Level 0: one split-less tree whose single leaf adds the initial shape (so the shape
        // doubles: a similarity of scale 2 about the origin). Level 1: one feature pixel at
        // landmark 0 + (0.05, 0) in initial-shape units, i.e. 2·(0.2,0.3) + 2·(0.05,0) = (0.5, 0.6)
        // → pixel (50, 60). Its split against pixel 0 (the same pixel) never fires, so use a
        // second pixel at landmark 0 exactly, (0.4, 0.6) → (40, 60).
        let model = encode(
            &INITIAL,
            &[
                TestLevel {
                    trees: vec![TestTree {
                        splits: vec![],
                        leaves: vec![INITIAL],
                    }],
                    pixels: vec![],
                },
                TestLevel {
                    trees: vec![TestTree {
                        splits: vec![(0, 1, 50.0)],
                        leaves: vec![shift_x(0.01), shift_x(-0.01)],
                    }],
                    pixels: vec![(0, [0.05, 0.0]), (0, [0.0, 0.0])],
                },
            ],
        );
        let p = ShapePredictor::from_bytes(&model).unwrap();
        let bright_at_delta = p.predict(&image_with(&[((50, 60), [255; 3])]), BOX);
        assert_eq!(bright_at_delta[0], Point::new(41, 60)); // left leaf: 0.41 → 41
        let bright_elsewhere = p.predict(&image_with(&[((45, 60), [255; 3])]), BOX);
        assert_eq!(bright_elsewhere[0], Point::new(39, 60));
    }

    #[test]
    fn every_byte_must_be_consumed() {
        let mut bytes = one_split_model(1.0);
        let len = bytes.len();
        bytes.push(0x01);
        let e = ShapePredictor::from_bytes(&bytes).unwrap_err();
        let ShapePredictorError::Format { source, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(source.offset, len);
        assert!(
            e.to_string()
                .contains("expected the end of the shape predictor, found 1 more bytes"),
            "{e}"
        );
    }

    #[test]
    fn truncation_is_reported_with_its_offset() {
        let bytes = one_split_model(1.0);
        // One byte short: the last level's delta count no longer fits (each delta takes ≥ 8).
        let e = ShapePredictor::from_bytes(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "expected level 0: number of deltas that fits in the 15 bytes left, found 2"
            ),
            "{e}"
        );
        // Cut inside the initial shape's row count.
        let e = ShapePredictor::from_bytes(&bytes[..3])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "at byte 3: expected initial shape: matrix rows (1 bytes), found end of file"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_wrong_version_is_refused_at_byte_zero() {
        let mut bytes = one_split_model(1.0);
        bytes[1] = 2;
        let e = ShapePredictor::from_bytes(&bytes).unwrap_err();
        assert!(
            e.to_string()
                .contains("at byte 0: expected shape predictor version = 1, found 2"),
            "{e}"
        );
    }

    #[test]
    fn structural_errors_name_what_was_expected() {
        // A 68-point style initial shape.
        let mut bytes = Vec::new();
        int(&mut bytes, 1);
        matrix(&mut bytes, &[0.5; 136]);
        let e = ShapePredictor::from_bytes(&bytes).unwrap_err().to_string();
        assert!(e.contains("at byte 2: expected initial shape: a 10×1 matrix (5 landmarks), found a 136×1 matrix"), "{e}");

        // A split reading feature 2 of a level with 2 feature pixels.
        let model = encode(
            &INITIAL,
            &[TestLevel {
                trees: vec![TestTree {
                    splits: vec![(0, 2, 0.0)],
                    leaves: vec![shift_x(0.0); 2],
                }],
                pixels: vec![(0, [0.0; 2]), (1, [0.0; 2])],
            }],
        );
        let e = ShapePredictor::from_bytes(&model).unwrap_err().to_string();
        assert!(
            e.contains(
                "level 0: split feature indices below 2 (its number of feature pixels), found 2"
            ),
            "{e}"
        );

        // Three leaves for one split.
        let model = encode(
            &INITIAL,
            &[TestLevel {
                trees: vec![TestTree {
                    splits: vec![(0, 0, 0.0)],
                    leaves: vec![shift_x(0.0); 3],
                }],
                pixels: vec![(0, [0.0; 2])],
            }],
        );
        let e = ShapePredictor::from_bytes(&model).unwrap_err().to_string();
        assert!(
            e.contains("level 0, tree 0: 2 leaves (a full binary tree of 1 splits), found 3"),
            "{e}"
        );

        // An anchor that is not a landmark.
        let model = encode(
            &INITIAL,
            &[TestLevel {
                trees: vec![],
                pixels: vec![(5, [0.0; 2])],
            }],
        );
        let e = ShapePredictor::from_bytes(&model).unwrap_err().to_string();
        assert!(
            e.contains("level 0: an anchor landmark below 5, found 5"),
            "{e}"
        );
    }

    #[test]
    fn an_absurd_count_is_refused_before_allocating() {
        let mut bytes = Vec::new();
        int(&mut bytes, 1);
        matrix(&mut bytes, &INITIAL);
        let at = bytes.len();
        int(&mut bytes, 1 << 40);
        let e = ShapePredictor::from_bytes(&bytes).unwrap_err();
        let ShapePredictorError::Format { source, .. } = &e else {
            panic!("{e}")
        };
        assert_eq!(source.offset, at);
        assert!(
            source
                .expected
                .contains("number of cascade levels that fits"),
            "{e}"
        );
    }

    #[test]
    fn the_float_writer_round_trips_through_the_reader() {
        for v in [0.0f32, 1.0, -0.04, 0.8595675, 1e-30, -3.5e20] {
            let mut b = Vec::new();
            float(&mut b, v);
            assert_eq!(Reader::new(&b).float("x").unwrap(), v);
        }
    }
}
