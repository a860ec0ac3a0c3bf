//! A photo turned in its plane (OpenCV), for the pipeline's rotated search: the frontal cascade
//! and dlib's CNN miss faces tilted much beyond 15–20°, so a photo where nothing upright is
//! found is turned by a few angles and searched again (see `docs/FACES.md`). The turned image
//! sits on a canvas large enough to hold every corner of the photo; [`Turned`] keeps the affine
//! transform both ways, so what is found in it maps back onto the photo.

use image::{Rgb, RgbImage};
use opencv::core::{Mat, Scalar, Size, ToInputArray, Vec3b};
use opencv::prelude::*;

use super::detect::DetectError;
use super::geometry::DPoint;
use super::{Point, Rect};

/// An affine map of the plane: `(x, y) ↦ (m[0]·x + m[1]·y + m[2], m[3]·x + m[4]·y + m[5])`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [f64; 6]);

impl Affine {
    /// The map that leaves every point where it is.
    pub const IDENTITY: Affine = Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);

    /// The image of `p`.
    pub fn apply(&self, p: DPoint) -> DPoint {
        let m = &self.0;
        DPoint::new(
            m[0] * p.x + m[1] * p.y + m[2],
            m[3] * p.x + m[4] * p.y + m[5],
        )
    }

    /// This map followed by `next`.
    pub fn then(&self, next: &Affine) -> Affine {
        let (a, b) = (&self.0, &next.0);
        Affine([
            b[0] * a[0] + b[1] * a[3],
            b[0] * a[1] + b[1] * a[4],
            b[0] * a[2] + b[1] * a[5] + b[2],
            b[3] * a[0] + b[4] * a[3],
            b[3] * a[1] + b[4] * a[4],
            b[3] * a[2] + b[4] * a[5] + b[5],
        ])
    }

    /// The inverse map (the identity when this one is singular, which no scaling or turn is).
    pub fn inverse(&self) -> Affine {
        let m = &self.0;
        let det = m[0] * m[4] - m[1] * m[3];
        if det == 0.0 {
            return Affine::IDENTITY;
        }
        let (a, b, c, d) = (m[4] / det, -m[1] / det, -m[3] / det, m[0] / det);
        Affine([a, b, -(a * m[2] + b * m[5]), c, d, -(c * m[2] + d * m[5])])
    }
}

/// A photo scaled and turned onto a canvas, with the maps between the two.
#[derive(Debug, Clone)]
pub struct Turned {
    /// The canvas: the whole photo turned, the corners filled with one colour.
    pub image: RgbImage,
    /// Photo coordinates to canvas coordinates.
    pub to_canvas: Affine,
    /// Canvas coordinates to photo coordinates.
    pub to_photo: Affine,
}

impl Turned {
    /// A point of the canvas on the photo, rounded half up like dlib's points.
    pub fn point_to_photo(&self, p: Point) -> Point {
        self.to_photo.apply(DPoint::from(p)).round()
    }

    /// The smallest box of the photo holding the canvas box `r` (its four corners mapped back).
    pub fn rect_to_photo(&self, r: Rect) -> Rect {
        let corners = [
            (r.left, r.top),
            (r.right, r.top),
            (r.left, r.bottom),
            (r.right, r.bottom),
        ]
        .map(|(x, y)| self.to_photo.apply(DPoint::new(x as f64, y as f64)));
        let (mut lo, mut hi) = (corners[0], corners[0]);
        for c in &corners[1..] {
            lo = DPoint::new(lo.x.min(c.x), lo.y.min(c.y));
            hi = DPoint::new(hi.x.max(c.x), hi.y.max(c.y));
        }
        Rect::new(
            lo.x.floor() as i64,
            lo.y.floor() as i64,
            hi.x.ceil() as i64,
            hi.y.ceil() as i64,
        )
    }
}

/// `img` scaled by `scale` (at most 1: area averaging, as the cascade scales a large photo
/// down) and turned by `degrees` counter-clockwise as the picture is seen (so a face leaning
/// clockwise by that much comes upright), about its centre, on a canvas that holds all of it;
/// the canvas outside the photo is `fill`. Sampling is bilinear; pixel centres sit on integer
/// coordinates, as the landmarks do.
pub fn turn(
    img: &RgbImage,
    degrees: f64,
    scale: f64,
    fill: Rgb<u8>,
) -> Result<Turned, DetectError> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Ok(Turned {
            image: img.clone(),
            to_canvas: Affine::IDENTITY,
            to_photo: Affine::IDENTITY,
        });
    }
    let src = Mat::new_rows_cols_with_bytes::<Vec3b>(h as i32, w as i32, img.as_raw())?;
    let scale = scale.clamp(f64::MIN_POSITIVE, 1.0);
    let mut shrunk = Mat::default();
    let (sw, sh, shrink) = if scale < 1.0 {
        let sw = ((w as f64 * scale).round() as i32).max(1);
        let sh = ((h as f64 * scale).round() as i32).max(1);
        opencv::imgproc::resize(
            &src,
            &mut shrunk,
            Size::new(sw, sh),
            0.0,
            0.0,
            opencv::imgproc::INTER_AREA,
        )?;
        // Area resizing keeps pixel edges on pixel edges: x' + ½ = (x + ½)·sw/w.
        let (fx, fy) = (sw as f64 / w as f64, sh as f64 / h as f64);
        let shrink = Affine([fx, 0.0, 0.5 * fx - 0.5, 0.0, fy, 0.5 * fy - 0.5]);
        (sw as u32, sh as u32, shrink)
    } else {
        (w, h, Affine::IDENTITY)
    };
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (sw_f, sh_f) = (sw as f64, sh as f64);
    // Less a hair, so that a quarter turn (cos 90° is 6e-17, not 0) keeps the sides exact.
    let cw = (sw_f * cos.abs() + sh_f * sin.abs() - 1e-9).ceil().max(1.0);
    let ch = (sw_f * sin.abs() + sh_f * cos.abs() - 1e-9).ceil().max(1.0);
    // About the centres: (x, y) − c ↦ (cos·dx + sin·dy, −sin·dx + cos·dy) + c' (y points down,
    // so this turns the picture counter-clockwise as seen, as OpenCV's getRotationMatrix2D does).
    let (cx, cy) = ((sw_f - 1.0) / 2.0, (sh_f - 1.0) / 2.0);
    let (ccx, ccy) = ((cw - 1.0) / 2.0, (ch - 1.0) / 2.0);
    let rot = Affine([
        cos,
        sin,
        ccx - cos * cx - sin * cy,
        -sin,
        cos,
        ccy + sin * cx - cos * cy,
    ]);
    let m = rot.0;
    let matrix = Mat::from_slice_2d(&[[m[0], m[1], m[2]], [m[3], m[4], m[5]]])?;
    let mut canvas = Mat::default();
    let size = Size::new(cw as i32, ch as i32);
    let [r, g, b] = fill.0;
    let fill = Scalar::new(r as f64, g as f64, b as f64, 0.0);
    if scale < 1.0 {
        warp(&shrunk, &matrix, size, fill, &mut canvas)?;
    } else {
        warp(&src, &matrix, size, fill, &mut canvas)?;
    }
    let bytes = canvas.data_bytes()?.to_vec();
    let image = RgbImage::from_raw(cw as u32, ch as u32, bytes).ok_or_else(|| {
        DetectError::OpenCv("the turned image has an unexpected size".to_string())
    })?;
    let to_canvas = shrink.then(&rot);
    Ok(Turned {
        image,
        to_canvas,
        to_photo: to_canvas.inverse(),
    })
}

/// OpenCV's bilinear `warpAffine` of `input` by `matrix` onto a `size` canvas filled with `fill`.
fn warp(
    input: &impl ToInputArray,
    matrix: &Mat,
    size: Size,
    fill: Scalar,
    out: &mut Mat,
) -> opencv::Result<()> {
    opencv::imgproc::warp_affine(
        input,
        out,
        matrix,
        size,
        opencv::imgproc::INTER_LINEAR,
        opencv::core::BORDER_CONSTANT,
        fill,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(a: DPoint, b: DPoint, tol: f64) -> bool {
        (a.x - b.x).abs() <= tol && (a.y - b.y).abs() <= tol
    }

    #[test]
    fn maps_go_both_ways() {
        let img = RgbImage::new(64, 40);
        let t = turn(&img, 25.0, 0.5, Rgb([0, 0, 0])).unwrap();
        for p in [
            DPoint::new(0.0, 0.0),
            DPoint::new(63.0, 39.0),
            DPoint::new(10.5, 30.25),
        ] {
            assert!(
                near(t.to_photo.apply(t.to_canvas.apply(p)), p, 1e-9),
                "{p:?}"
            );
        }
    }

    #[test]
    fn a_quarter_turn_moves_the_top_right_corner_to_the_top_left() {
        let mut img = RgbImage::from_pixel(30, 20, Rgb([0, 0, 0]));
        img.put_pixel(29, 0, Rgb([255, 255, 255]));
        let t = turn(&img, 90.0, 1.0, Rgb([0, 0, 0])).unwrap();
        assert_eq!(t.image.dimensions(), (20, 30));
        assert_eq!(t.image.get_pixel(0, 0), &Rgb([255, 255, 255]));
        assert!(near(
            t.to_canvas.apply(DPoint::new(29.0, 0.0)),
            DPoint::new(0.0, 0.0),
            1e-9
        ));
    }

    #[test]
    fn the_canvas_holds_every_corner_and_is_filled_outside() {
        let img = RgbImage::from_pixel(100, 60, Rgb([200, 200, 200]));
        let t = turn(&img, 30.0, 1.0, Rgb([7, 8, 9])).unwrap();
        let (cw, ch) = t.image.dimensions();
        assert_eq!((cw, ch), (117, 102));
        for (x, y) in [(0.0, 0.0), (99.0, 0.0), (0.0, 59.0), (99.0, 59.0)] {
            let c = t.to_canvas.apply(DPoint::new(x, y));
            assert!(
                c.x > -0.5 && c.y > -0.5 && c.x < cw as f64 - 0.5 && c.y < ch as f64 - 0.5,
                "{c:?}"
            );
        }
        assert_eq!(t.image.get_pixel(0, 0), &Rgb([7, 8, 9]));
        assert_eq!(t.image.get_pixel(cw / 2, ch / 2), &Rgb([200, 200, 200]));
    }

    #[test]
    fn a_box_maps_back_to_the_box_around_it() {
        let img = RgbImage::new(200, 200);
        let t = turn(&img, 45.0, 1.0, Rgb([0, 0, 0])).unwrap();
        let c = t.to_canvas.apply(DPoint::new(100.0, 100.0));
        let (x, y) = (c.x.round() as i64, c.y.round() as i64);
        let r = t.rect_to_photo(Rect::new(x - 10, y - 10, x + 10, y + 10));
        // A 20 px square turned by 45° spans 20·√2 ≈ 28.3 px.
        assert!((28..=31).contains(&r.width()), "{r:?}");
        assert!((r.left + r.right - 200).abs() <= 2, "{r:?}");
    }
}
