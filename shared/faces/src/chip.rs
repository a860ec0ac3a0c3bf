//! The aligned face chip, cut exactly as `dlib.get_face_chip(img, shape, size=150, padding=0.25)`.
//!
//! Two steps, as in dlib's `get_face_chip_details` and `extract_image_chip`:
//!
//! 1. [`face_chip_details`]: the least-squares similarity from dlib's 5-point template (padded and
//!    scaled to the chip) to the integer landmarks gives a rotation angle and a source rectangle,
//!    `centered_drect(T(size/2, size/2), size·scale, size·scale)`, whose edges span
//!    size·scale − 1.
//! 2. [`extract_chip`]: when that rectangle is much larger than the chip, a crop around it is
//!    first reduced with dlib's `pyramid_down<2>` (5-tap [1 4 6 4 1] filter, 16-bit sums, /256
//!    truncated, output (n − 3)/2); the chip is then sampled bilinearly from the right level,
//!    truncating to u8, with 0 wherever the 2×2 neighbourhood leaves the source.

use image::{Rgb, RgbImage};

use super::geometry::{rotate_about, DPoint, DRect, Similarity};
use super::{Point, Rect};

/// Side of the chip the face-recognition network reads, in pixels.
pub const CHIP_SIZE: u32 = 150;

/// Border around dlib's template, as a fraction of the template's size (dlib's default for the
/// face-recognition network).
pub const CHIP_PADDING: f64 = 0.25;

/// dlib's 5-point mean face on the unit square, in the predictor's landmark order: one eye's outer
/// and inner corner, the other eye's outer and inner corner, the base of the nose.
const TEMPLATE: [DPoint; 5] = [
    DPoint::new(0.8595674595992, 0.2134981538014),
    DPoint::new(0.6460604764104, 0.2289674387677),
    DPoint::new(0.1205750620789, 0.2137274526848),
    DPoint::new(0.3340850613712, 0.2290642403242),
    DPoint::new(0.4901123135679, 0.6277975316475),
];

/// Where and how to cut a chip, as dlib's `chip_details`: the source rectangle (before rotation),
/// its rotation about its centre, and the chip's size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipDetails {
    /// The source rectangle, unrotated; its corners map onto the chip's corner pixels.
    pub rect: DRect,
    /// Rotation of the rectangle about its centre, in radians (atan2 of the similarity's
    /// first column).
    pub angle: f64,
    /// Chip height in pixels.
    pub rows: u32,
    /// Chip width in pixels.
    pub cols: u32,
}

/// The aligned `CHIP_SIZE`² chip of the face with these landmarks, as
/// `dlib.get_face_chip(img, shape, 150, 0.25)` cuts it.
pub fn face_chip(img: &RgbImage, landmarks: &[Point; 5]) -> RgbImage {
    extract_chip(img, &face_chip_details(landmarks, CHIP_SIZE, CHIP_PADDING))
}

/// dlib's `get_face_chip_details(shape, size, padding)` for a 5-point shape.
pub fn face_chip_details(landmarks: &[Point; 5], size: u32, padding: f64) -> ChipDetails {
    chip_details_for(&landmarks.map(DPoint::from), size, padding)
}

/// The template points padded and scaled to a `size`² chip: (padding + t)/(2·padding + 1)·size.
fn chip_template(size: u32, padding: f64) -> [DPoint; 5] {
    let s = size as f64;
    TEMPLATE.map(|t| {
        let p = DPoint::new(
            (padding + t.x) / (2.0 * padding + 1.0),
            (padding + t.y) / (2.0 * padding + 1.0),
        );
        DPoint::new(p.x * s, p.y * s)
    })
}

/// `chip_details(chip_points, img_points, size × size)`: the angle and scale are read off the
/// similarity's first column, the rectangle is centred on the image of the chip's centre.
fn chip_details_for(img_points: &[DPoint; 5], size: u32, padding: f64) -> ChipDetails {
    let t = Similarity::fit(&chip_template(size, padding), img_points);
    let s = size as f64;
    let center = t.apply(DPoint::new(s / 2.0, s / 2.0));
    ChipDetails {
        rect: DRect::centered(center, s * t.scale(), s * t.scale()),
        angle: t.angle(),
        rows: size,
        cols: size,
    }
}

/// Cuts the chip `details` describes, as dlib's `extract_image_chip` does with its default
/// bilinear interpolation: pyramid levels when the source is more than a level larger than the
/// chip, 0 outside the image.
pub fn extract_chip(img: &RgbImage, details: &ChipDetails) -> RgbImage {
    let ChipDetails {
        rect,
        angle,
        rows,
        cols,
    } = *details;
    if rows == 0 || cols == 0 || rect.is_empty() {
        return RgbImage::new(cols, rows);
    }
    // No rotation or scaling: a plain copy.
    if angle == 0.0 && rows as f64 == rect.height() && cols as f64 == rect.width() {
        return copy_region(img, rect.round());
    }
    let chip_area = rows as f64 * cols as f64;

    // How deep a pyramid the chip needs, and the crop it is built from: the rotated rectangle,
    // grown by 2 pixels per level (doubling), clipped to the image.
    let depth = pyramid_levels(&rect, chip_area);
    let grow = (0..depth).fold(2.0, |g, _| g * 2.0 + 2.0);
    let c = rect.center();
    let rotated = [rect.tl(), rect.tr(), rect.bl(), rect.br()]
        .map(|p| rotate_about(c, p, angle))
        .iter()
        .fold(DRect::EMPTY, |acc, p| {
            acc.union(&DRect::new(p.x, p.y, p.x, p.y))
        });
    let img_rect = DRect::new(
        0.0,
        0.0,
        img.width() as f64 - 1.0,
        img.height() as f64 - 1.0,
    );
    let crop_rect = rotated.grow(grow).intersect(&img_rect).round();
    let (crop_rect, crop) = if crop_rect.is_empty() {
        (Rect::new(0, 0, -1, -1), RgbImage::new(0, 0))
    } else {
        (crop_rect, copy_region(img, crop_rect))
    };
    let mut levels: Vec<RgbImage> = Vec::with_capacity(depth);
    for _ in 0..depth {
        let down = pyramid_down(levels.last().unwrap_or(&crop));
        levels.push(down);
    }

    // The level whose rectangle is the smallest still larger than the chip, and the rectangle
    // there.
    let mut r = rect.translate(DPoint::new(
        -(crop_rect.left as f64),
        -(crop_rect.top as f64),
    ));
    let level = pyramid_levels(&r, chip_area);
    for _ in 0..level {
        r = rect_down(&r);
    }
    let src = match level {
        0 => &crop,
        l => levels.get(l - 1).or(levels.last()).unwrap_or(&crop),
    };

    // Chip corners (0,0), (cols−1, 0), (0, rows−1) onto the rotated rectangle's tl, tr, bl.
    let c = r.center();
    let (tl, tr, bl) = (
        rotate_about(c, r.tl(), angle),
        rotate_about(c, r.tr(), angle),
        rotate_about(c, r.bl(), angle),
    );
    let per = |a: f64, b: f64, n: u32| if n > 1 { (b - a) / (n - 1) as f64 } else { 0.0 };
    let (xc, yc) = (per(tl.x, tr.x, cols), per(tl.y, tr.y, cols));
    let (xr, yr) = (per(tl.x, bl.x, rows), per(tl.y, bl.y, rows));

    let mut out = RgbImage::new(cols, rows);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (fx, fy) = (x as f64, y as f64);
        let p = DPoint::new(xc * fx + xr * fy + tl.x, yc * fx + yr * fy + tl.y);
        if let Some(v) = bilinear(src, p) {
            *px = v;
        }
    }
    out
}

/// dlib's `pyramid_down<2>::point_down`: p/2 − (1.25, 0.75).
fn point_down(p: DPoint) -> DPoint {
    DPoint::new(p.x / 2.0 - 1.25, p.y / 2.0 - 0.75)
}

/// dlib's `rect_down`: the rectangle spanned by the two mapped corners.
fn rect_down(r: &DRect) -> DRect {
    let (a, b) = (point_down(r.tl()), point_down(r.br()));
    DRect::new(a.x.min(b.x), a.y.min(b.y), a.x.max(b.x), a.y.max(b.y))
}

/// How many times `rect` can go down the pyramid and still be larger (in area) than the chip.
fn pyramid_levels(rect: &DRect, chip_area: f64) -> usize {
    let mut r = rect_down(rect);
    let mut n = 0;
    while r.area() > chip_area {
        r = rect_down(&r);
        n += 1;
    }
    n
}

/// dlib's `pyramid_down<2>` on an RGB image: the [1 4 6 4 1] filter along rows (every other column
/// kept, sums in 16 bits), then down columns (every other row from row 2), /256 truncated.
/// The output is (w − 3)/2 × (h − 3)/2; an image of 8 pixels or fewer on a side gives an empty one.
fn pyramid_down(src: &RgbImage) -> RgbImage {
    let (w, h) = (src.width() as usize, src.height() as usize);
    if w <= 8 || h <= 8 {
        return RgbImage::new(0, 0);
    }
    let (ow, oh) = ((w - 3) / 2, (h - 3) / 2);
    let s: &[u8] = src.as_raw();

    let mut rows = vec![0u16; h * ow * 3];
    for y in 0..h {
        let line = &s[y * w * 3..(y + 1) * w * 3];
        for c in 0..ow {
            for k in 0..3 {
                let p = |i: usize| line[(2 * c + i) * 3 + k] as u16;
                rows[(y * ow + c) * 3 + k] = p(0) + 4 * p(1) + 6 * p(2) + 4 * p(3) + p(4);
            }
        }
    }

    let mut out = RgbImage::new(ow as u32, oh as u32);
    let o: &mut [u8] = &mut out;
    for dr in 0..oh {
        let r = 2 + 2 * dr;
        for c in 0..ow {
            for k in 0..3 {
                let t = |y: usize| rows[(y * ow + c) * 3 + k] as u32;
                // At most 16 · 16 · 255 = 65280: dlib's 16-bit sum never wraps.
                let sum = t(r - 2) + 4 * t(r - 1) + 6 * t(r) + 4 * t(r + 1) + t(r + 2);
                o[(dr * ow + c) * 3 + k] = (sum / 256) as u8;
            }
        }
    }
    out
}

/// dlib's `interpolate_bilinear` on an RGB image: None (background) unless the whole 2×2
/// neighbourhood is inside; channels computed in f64 and truncated to u8.
fn bilinear(img: &RgbImage, p: DPoint) -> Option<Rgb<u8>> {
    let (left, top) = (p.x.floor(), p.y.floor());
    if !(left >= 0.0
        && top >= 0.0
        && left + 1.0 < img.width() as f64
        && top + 1.0 < img.height() as f64)
    {
        return None;
    }
    let (l, t) = (left as u32, top as u32);
    let (lr, tb) = (p.x - left, p.y - top);
    let (a, b) = (img.get_pixel(l, t).0, img.get_pixel(l + 1, t).0);
    let (c, d) = (img.get_pixel(l, t + 1).0, img.get_pixel(l + 1, t + 1).0);
    Some(Rgb(std::array::from_fn(|k| {
        let v = (1.0 - tb) * ((1.0 - lr) * a[k] as f64 + lr * b[k] as f64)
            + tb * ((1.0 - lr) * c[k] as f64 + lr * d[k] as f64);
        v as u8 // saturating and truncating, like dlib's assign_pixel
    })))
}

/// The pixels of `region` (inclusive edges), 0 where it leaves the image.
pub(crate) fn copy_region(img: &RgbImage, region: Rect) -> RgbImage {
    let (w, h) = (region.width() as u32, region.height() as u32);
    let mut out = RgbImage::new(w, h);
    let inside = region.intersect(&Rect::new(
        0,
        0,
        img.width() as i64 - 1,
        img.height() as i64 - 1,
    ));
    for y in inside.top..=inside.bottom {
        for x in inside.left..=inside.right {
            let v = *img.get_pixel(x as u32, y as u32);
            out.put_pixel((x - region.left) as u32, (y - region.top) as u32, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn template_is_padded_into_the_chip() {
        let t = chip_template(150, 0.25);
        // (0.25 + 0.8595674595992) / 1.5 · 150
        assert!(close(t[0].x, 110.95674595992, 1e-9), "{:?}", t[0]);
        assert!(close(t[4].y, 87.77975316475, 1e-9), "{:?}", t[4]);
        // No padding: the template itself, scaled.
        assert!(close(chip_template(100, 0.0)[2].x, 12.05750620789, 1e-9));
    }

    #[test]
    fn chip_details_undo_a_known_similarity() {
        // Landmarks = the chip template moved by scale 2.5, rotation 0.2 rad, shift (300, 120).
        let truth = Similarity {
            a: 2.5 * 0.2f64.cos(),
            b: 2.5 * 0.2f64.sin(),
            tx: 300.0,
            ty: 120.0,
        };
        let landmarks = chip_template(150, 0.25).map(|p| truth.apply(p));
        let d = chip_details_for(&landmarks, 150, 0.25);
        assert!(close(d.angle, 0.2, 1e-12), "{d:?}");
        let c = truth.apply(DPoint::new(75.0, 75.0));
        assert!(
            close(d.rect.center().x, c.x, 1e-9) && close(d.rect.center().y, c.y, 1e-9),
            "{d:?}"
        );
        // centered_drect: the edges span 150·2.5 − 1.
        assert!(close(d.rect.right - d.rect.left, 374.0, 1e-9), "{d:?}");
        assert!(close(d.rect.width(), 375.0, 1e-9) && close(d.rect.height(), 375.0, 1e-9));
        assert_eq!((d.rows, d.cols), (150, 150));
    }

    #[test]
    fn integer_landmarks_go_through_the_same_fit() {
        let points = chip_template(150, 0.25).map(|p| p.round());
        let d = face_chip_details(&points, 150, 0.25);
        assert!(
            d.angle.abs() < 0.01 && close(d.rect.width(), 150.0, 1.0),
            "{d:?}"
        );
    }

    #[test]
    fn pyramid_level_sizes_are_n_minus_3_over_2() {
        for (n, want) in [(9u32, 3u32), (10, 3), (11, 4), (150, 73), (301, 149)] {
            let down = pyramid_down(&RgbImage::new(n, n + 2));
            assert_eq!(
                (down.width(), down.height()),
                (want, (n + 2 - 3) / 2),
                "n = {n}"
            );
        }
        assert_eq!(pyramid_down(&RgbImage::new(8, 100)).dimensions(), (0, 0));
        assert_eq!(pyramid_down(&RgbImage::new(100, 8)).dimensions(), (0, 0));
    }

    #[test]
    fn pyramid_filter_is_1_4_6_4_1_squared_over_256_truncated() {
        // An impulse at (6, 6) of a 13×13 image; output pixel (c, r) is centred on input
        // (2c + 2, 2r + 2), so (2, 2) sees the impulse with weight 6·6 and (1, 2) with 1·6.
        let mut img = RgbImage::new(13, 13);
        img.put_pixel(6, 6, Rgb([255, 100, 0]));
        let down = pyramid_down(&img);
        assert_eq!(down.dimensions(), (5, 5));
        // 255·36/256 = 35.9 → 35, 100·36/256 = 14.06 → 14
        assert_eq!(down.get_pixel(2, 2).0, [35, 14, 0]);
        // 255·6/256 = 5.98 → 5, 100·6/256 = 2.3 → 2
        assert_eq!(down.get_pixel(1, 2).0, [5, 2, 0]);
        assert_eq!(down.get_pixel(2, 1).0, [5, 2, 0]);
        // (1, 1) is centred on (4, 4): the impulse is at the filters' ends, 255·1·1/256 = 0.
        assert_eq!(down.get_pixel(1, 1).0, [0, 0, 0]);
        // An impulse at (5, 5) reaches (1, 1) through weights 4·4: 255·16/256 = 15.9 → 15.
        let mut img = RgbImage::new(13, 13);
        img.put_pixel(5, 5, Rgb([255, 100, 0]));
        assert_eq!(pyramid_down(&img).get_pixel(1, 1).0, [15, 6, 0]);
        // A constant image stays constant: 16 · 16 · v / 256 = v exactly, even at 255.
        let flat = pyramid_down(&RgbImage::from_pixel(20, 20, Rgb([255, 1, 77])));
        assert!(flat.pixels().all(|p| p.0 == [255, 1, 77]));
    }

    #[test]
    fn point_down_is_half_minus_a_fixed_offset() {
        assert_eq!(point_down(DPoint::new(0.0, 0.0)), DPoint::new(-1.25, -0.75));
        assert_eq!(point_down(DPoint::new(10.0, 10.0)), DPoint::new(3.75, 4.25));
        let r = rect_down(&DRect::new(0.0, 0.0, 599.0, 599.0));
        assert_eq!(r, DRect::new(-1.25, -0.75, 298.25, 298.75));
        assert_eq!(r.width(), 300.5);
    }

    #[test]
    fn pyramid_depth_stops_at_the_last_level_larger_than_the_chip() {
        let sq = |side: f64| DRect::centered(DPoint::new(500.0, 500.0), side, side);
        // width w goes to (w − 1)/2 + 1 per level; the chip is 150² = 22500.
        assert_eq!(pyramid_levels(&sq(150.0), 22500.0), 0);
        assert_eq!(pyramid_levels(&sq(299.0), 22500.0), 0); // → 150 exactly: not larger
        assert_eq!(pyramid_levels(&sq(300.0), 22500.0), 1); // → 150.5
        assert_eq!(pyramid_levels(&sq(600.0), 22500.0), 2); // → 300.5 → 150.75
        assert_eq!(pyramid_levels(&sq(1200.0), 22500.0), 3);
    }

    #[test]
    fn bilinear_needs_the_whole_neighbourhood_and_truncates() {
        let mut img = RgbImage::new(2, 2);
        img.put_pixel(1, 0, Rgb([255, 255, 255]));
        // A quarter of the way to the bright pixel: 63.75 → 63.
        assert_eq!(
            bilinear(&img, DPoint::new(0.25, 0.0)),
            Some(Rgb([63, 63, 63]))
        );
        assert_eq!(bilinear(&img, DPoint::new(0.0, 0.0)), Some(Rgb([0, 0, 0])));
        // x = 1 needs column 2, which does not exist, even though (1, 0) itself does.
        assert_eq!(bilinear(&img, DPoint::new(1.0, 0.0)), None);
        assert_eq!(bilinear(&img, DPoint::new(-0.001, 0.0)), None);
        assert_eq!(bilinear(&img, DPoint::new(f64::NAN, 0.0)), None);
    }

    #[test]
    fn an_unrotated_unscaled_chip_is_a_copy_with_black_outside() {
        let img = RgbImage::from_fn(200, 200, |x, y| Rgb([x as u8, y as u8, 7]));
        let d = ChipDetails {
            rect: DRect::new(100.0, 90.0, 249.0, 239.0),
            angle: 0.0,
            rows: 150,
            cols: 150,
        };
        let chip = extract_chip(&img, &d);
        assert_eq!(chip.dimensions(), (150, 150));
        assert_eq!(chip.get_pixel(0, 0).0, [100, 90, 7]);
        assert_eq!(chip.get_pixel(99, 109).0, [199, 199, 7]);
        assert_eq!(chip.get_pixel(100, 0).0, [0, 0, 0]);
        assert_eq!(chip.get_pixel(0, 110).0, [0, 0, 0]);
    }

    #[test]
    fn a_large_rotated_chip_keeps_flat_colour_inside_and_black_outside() {
        let colour = [10u8, 200, 33];
        let img = RgbImage::from_pixel(400, 400, Rgb(colour));
        // A 300 px source square (one pyramid level) centred on the left edge, rotated.
        let d = ChipDetails {
            rect: DRect::centered(DPoint::new(0.0, 200.0), 300.0, 300.0),
            angle: 0.1,
            rows: 150,
            cols: 150,
        };
        let chip = extract_chip(&img, &d);
        assert_eq!(chip.dimensions(), (150, 150));
        // Well inside the image (right part of the chip): the colour, give or take the
        // truncation of an interpolated constant.
        for x in 100..140 {
            for y in 30..120 {
                let p = chip.get_pixel(x, y).0;
                for k in 0..3 {
                    let d = p[k] as i32 - colour[k] as i32;
                    assert!(d == 0 || d == -1, "({x},{y}) = {p:?}");
                }
            }
        }
        // Left part of the chip is off the image.
        for y in 0..150 {
            assert_eq!(chip.get_pixel(5, y).0, [0, 0, 0], "row {y}");
        }
    }

    #[test]
    fn a_chip_entirely_off_the_image_is_black() {
        let img = RgbImage::from_pixel(50, 50, Rgb([255; 3]));
        let d = ChipDetails {
            rect: DRect::centered(DPoint::new(-1000.0, -1000.0), 400.0, 400.0),
            angle: 0.3,
            rows: 150,
            cols: 150,
        };
        let chip = extract_chip(&img, &d);
        assert_eq!(chip.dimensions(), (150, 150));
        assert!(chip.pixels().all(|p| p.0 == [0, 0, 0]));
    }

    #[test]
    fn empty_details_give_an_empty_chip() {
        let img = RgbImage::new(10, 10);
        let d = ChipDetails {
            rect: DRect::EMPTY,
            angle: 0.5,
            rows: 150,
            cols: 150,
        };
        assert_eq!(extract_chip(&img, &d).dimensions(), (150, 150));
        let d = ChipDetails {
            rect: DRect::new(0.0, 0.0, 5.0, 5.0),
            angle: 0.5,
            rows: 0,
            cols: 0,
        };
        assert_eq!(extract_chip(&img, &d).dimensions(), (0, 0));
    }
}
