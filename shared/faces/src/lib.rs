//! Faces in photos and videos (OpenCV): detection, dlib's landmarks and chips, the quality gate
//! and the enrollment video's frames; photo decoding under limits ([`imageio`]).
//!
//! Face geometry: from a detected face box to the aligned 150×150 chip the embedding network reads.
//!
//! Two steps, each reproducing dlib (the models were trained on dlib's output, so "close" is not
//! enough: a plainly resampled chip moves the embedding by a real share of the match threshold):
//!
//! 1. [`landmarks`]: dlib's 5-point shape predictor (`shape_predictor_5_face_landmarks.dat`), read
//!    from dlib's file and run like `shape_predictor::operator()`, giving five integer points
//!    (the outer and inner corner of each eye, and the base of the nose).
//! 2. [`chip`]: the chip `dlib.get_face_chip(img, shape, 150, 0.25)` cuts from those points
//!    (similarity fit to dlib's template, image pyramid, bilinear sampling).
//!
//! Coordinates follow dlib: x to the right, y down, integer rectangles with inclusive edges.

pub mod chip;
pub mod cnn;
pub mod detect;
#[cfg(feature = "video")]
pub mod enroll;
pub mod geometry;
pub mod imageio;
pub mod landmarks;
pub mod pipeline;
pub mod quality;
pub mod rotate;
#[cfg(feature = "video")]
pub mod video;

pub use chip::{extract_chip, face_chip, face_chip_details, ChipDetails, CHIP_PADDING, CHIP_SIZE};
pub use landmarks::{ShapePredictor, ShapePredictorError};

/// An integer pixel position (x right, y down), like dlib's `point`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Point {
    /// Column.
    pub x: i64,
    /// Row.
    pub y: i64,
}

impl Point {
    /// The point (x, y).
    pub const fn new(x: i64, y: i64) -> Self {
        Point { x, y }
    }
}

/// A face box as dlib's detectors give it: integer edges, right and bottom inclusive (so its width
/// is right − left + 1). It may reach outside the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Rect {
    /// Left column.
    pub left: i64,
    /// Top row.
    pub top: i64,
    /// Right column (inclusive).
    pub right: i64,
    /// Bottom row (inclusive).
    pub bottom: i64,
}

impl Rect {
    /// The rectangle with these edges.
    pub const fn new(left: i64, top: i64, right: i64, bottom: i64) -> Self {
        Rect {
            left,
            top,
            right,
            bottom,
        }
    }

    /// True when it holds no pixel (left > right or top > bottom).
    pub fn is_empty(&self) -> bool {
        self.left > self.right || self.top > self.bottom
    }

    /// right − left + 1, or 0 when empty.
    pub fn width(&self) -> i64 {
        if self.is_empty() {
            0
        } else {
            self.right - self.left + 1
        }
    }

    /// bottom − top + 1, or 0 when empty.
    pub fn height(&self) -> i64 {
        if self.is_empty() {
            0
        } else {
            self.bottom - self.top + 1
        }
    }

    /// The overlap of both (possibly empty).
    pub fn intersect(&self, other: &Rect) -> Rect {
        Rect::new(
            self.left.max(other.left),
            self.top.max(other.top),
            self.right.min(other.right),
            self.bottom.min(other.bottom),
        )
    }

    /// Intersection over union of the two boxes' areas (0 when both are empty).
    pub fn iou(&self, other: &Rect) -> f64 {
        let area = |r: &Rect| (r.width() * r.height()) as f64;
        let inner = area(&self.intersect(other));
        let outer = area(self) + area(other) - inner;
        if outer > 0.0 {
            inner / outer
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rect_edges_are_inclusive() {
        let r = Rect::new(-56, 142, 191, 365);
        assert_eq!((r.width(), r.height()), (248, 224));
        assert_eq!(
            r.intersect(&Rect::new(0, 0, 490, 1136)),
            Rect::new(0, 142, 191, 365)
        );
        let empty = Rect::new(0, 0, -1, -1);
        assert!(empty.is_empty());
        assert_eq!((empty.width(), empty.height()), (0, 0));
    }
}
