//! Plane geometry shared by the landmark predictor and the chip cutter, with dlib's conventions:
//! inclusive rectangle edges, round-half-up to integers, least-squares similarity transforms.

use super::{Point, Rect};

/// A point with real coordinates (x right, y down), like dlib's `dpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DPoint {
    /// Horizontal coordinate.
    pub x: f64,
    /// Vertical coordinate.
    pub y: f64,
}

impl DPoint {
    /// A point at (x, y).
    pub const fn new(x: f64, y: f64) -> Self {
        DPoint { x, y }
    }

    /// The nearest integer point, rounding halves up (dlib's `point(dpoint)`: ⌊v + 0.5⌋).
    pub fn round(self) -> Point {
        Point::new(round_half_up(self.x), round_half_up(self.y))
    }
}

impl From<Point> for DPoint {
    fn from(p: Point) -> Self {
        DPoint::new(p.x as f64, p.y as f64)
    }
}

/// Rounds to the nearest integer with halves going up (towards +∞), as dlib converts a real
/// vector to an integer one: ⌊v + 0.5⌋. Out-of-range values saturate, NaN gives 0.
pub fn round_half_up(v: f64) -> i64 {
    (v + 0.5).floor() as i64
}

/// A rectangle with real coordinates and inclusive edges, like dlib's `drectangle`
/// (width = right − left + 1; empty when left > right or top > bottom).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DRect {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Right edge (inclusive).
    pub right: f64,
    /// Bottom edge (inclusive).
    pub bottom: f64,
}

impl DRect {
    /// The rectangle with these edges.
    pub const fn new(left: f64, top: f64, right: f64, bottom: f64) -> Self {
        DRect {
            left,
            top,
            right,
            bottom,
        }
    }

    /// The empty rectangle dlib starts unions from: (0, 0, −1, −1).
    pub const EMPTY: DRect = DRect::new(0.0, 0.0, -1.0, -1.0);

    /// The rectangle of width × height (edge to edge, so the corners span width − 1) centred on
    /// `c`: dlib's `centered_drect`.
    pub fn centered(c: DPoint, width: f64, height: f64) -> Self {
        let (w, h) = (width - 1.0, height - 1.0);
        DRect::new(c.x - w / 2.0, c.y - h / 2.0, c.x + w / 2.0, c.y + h / 2.0)
    }

    /// True when it contains no point.
    pub fn is_empty(&self) -> bool {
        self.top > self.bottom || self.left > self.right
    }

    /// right − left + 1, or 0 when empty.
    pub fn width(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.right - self.left + 1.0
        }
    }

    /// bottom − top + 1, or 0 when empty.
    pub fn height(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.bottom - self.top + 1.0
        }
    }

    /// width × height.
    pub fn area(&self) -> f64 {
        self.width() * self.height()
    }

    /// The midpoint of the corners.
    pub fn center(&self) -> DPoint {
        DPoint::new(
            (self.left + self.right) / 2.0,
            (self.top + self.bottom) / 2.0,
        )
    }

    /// Top-left corner.
    pub fn tl(&self) -> DPoint {
        DPoint::new(self.left, self.top)
    }

    /// Top-right corner.
    pub fn tr(&self) -> DPoint {
        DPoint::new(self.right, self.top)
    }

    /// Bottom-left corner.
    pub fn bl(&self) -> DPoint {
        DPoint::new(self.left, self.bottom)
    }

    /// Bottom-right corner.
    pub fn br(&self) -> DPoint {
        DPoint::new(self.right, self.bottom)
    }

    /// The smallest rectangle holding both (an empty side is ignored).
    pub fn union(&self, other: &DRect) -> DRect {
        if other.is_empty() {
            *self
        } else if self.is_empty() {
            *other
        } else {
            DRect::new(
                self.left.min(other.left),
                self.top.min(other.top),
                self.right.max(other.right),
                self.bottom.max(other.bottom),
            )
        }
    }

    /// The overlap of both (possibly empty).
    pub fn intersect(&self, other: &DRect) -> DRect {
        DRect::new(
            self.left.max(other.left),
            self.top.max(other.top),
            self.right.min(other.right),
            self.bottom.min(other.bottom),
        )
    }

    /// Every edge moved outwards by `by`.
    pub fn grow(&self, by: f64) -> DRect {
        DRect::new(
            self.left - by,
            self.top - by,
            self.right + by,
            self.bottom + by,
        )
    }

    /// Shifted by `d`.
    pub fn translate(&self, d: DPoint) -> DRect {
        DRect::new(
            self.left + d.x,
            self.top + d.y,
            self.right + d.x,
            self.bottom + d.y,
        )
    }

    /// Each edge rounded half up, as dlib converts a `drectangle` to a `rectangle`.
    pub fn round(&self) -> Rect {
        Rect::new(
            round_half_up(self.left),
            round_half_up(self.top),
            round_half_up(self.right),
            round_half_up(self.bottom),
        )
    }
}

impl From<Rect> for DRect {
    fn from(r: Rect) -> Self {
        DRect::new(r.left as f64, r.top as f64, r.right as f64, r.bottom as f64)
    }
}

/// `p` rotated by `angle` radians about `center` (dlib's `rotate_point`).
pub fn rotate_about(center: DPoint, p: DPoint, angle: f64) -> DPoint {
    let (s, c) = (angle.sin(), angle.cos());
    let (dx, dy) = (p.x - center.x, p.y - center.y);
    DPoint::new(c * dx - s * dy + center.x, s * dx + c * dy + center.y)
}

/// A similarity transform `p ↦ [[a, −b], [b, a]]·p + t`: a uniform scale, a rotation and a shift.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// scale · cos(angle).
    pub a: f64,
    /// scale · sin(angle).
    pub b: f64,
    /// Horizontal shift.
    pub tx: f64,
    /// Vertical shift.
    pub ty: f64,
}

impl Similarity {
    /// The transform that leaves every point where it is.
    pub const IDENTITY: Similarity = Similarity {
        a: 1.0,
        b: 0.0,
        tx: 0.0,
        ty: 0.0,
    };

    /// The similarity (no reflection) minimising `Σ |T(from[i]) − to[i]|²`, as dlib's
    /// `find_similarity_transform` (Umeyama's method) finds it. With all `from` points equal
    /// the scale is 1 and no rotation is applied; with no points it is the identity.
    pub fn fit<const N: usize>(from: &[DPoint; N], to: &[DPoint; N]) -> Similarity {
        if N == 0 {
            return Similarity::IDENTITY;
        }
        let n = N as f64;
        let mean = |pts: &[DPoint; N]| {
            let (sx, sy) = pts
                .iter()
                .fold((0.0, 0.0), |(sx, sy), p| (sx + p.x, sy + p.y));
            DPoint::new(sx / n, sy / n)
        };
        let (mf, mt) = (mean(from), mean(to));
        // For 2-D points Umeyama's SVD solution has a closed form: with centred points f, t,
        // scale·cos = Σ f·t / Σ|f|² and scale·sin = Σ f×t / Σ|f|² (the rotation that best
        // aligns f to t, never a reflection).
        let (mut sigma, mut dot, mut cross) = (0.0, 0.0, 0.0);
        for (f, t) in from.iter().zip(to) {
            let (fx, fy) = (f.x - mf.x, f.y - mf.y);
            let (tx, ty) = (t.x - mt.x, t.y - mt.y);
            sigma += fx * fx + fy * fy;
            dot += fx * tx + fy * ty;
            cross += fx * ty - fy * tx;
        }
        let (a, b) = if sigma != 0.0 {
            (dot / sigma, cross / sigma)
        } else {
            (1.0, 0.0)
        };
        Similarity {
            a,
            b,
            tx: mt.x - (a * mf.x - b * mf.y),
            ty: mt.y - (b * mf.x + a * mf.y),
        }
    }

    /// T(p).
    pub fn apply(&self, p: DPoint) -> DPoint {
        DPoint::new(
            self.a * p.x - self.b * p.y + self.tx,
            self.b * p.x + self.a * p.y + self.ty,
        )
    }

    /// The scale factor, |T(1, 0) − T(0, 0)|.
    pub fn scale(&self) -> f64 {
        (self.a * self.a + self.b * self.b).sqrt()
    }

    /// The rotation in radians, counter-clockwise in x-right/y-down pixel axes as dlib measures
    /// it: atan2(b, a).
    pub fn angle(&self) -> f64 {
        self.b.atan2(self.a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn rounding_is_half_up_like_dlib() {
        assert_eq!(round_half_up(2.5), 3);
        assert_eq!(round_half_up(2.4999999), 2);
        assert_eq!(round_half_up(-2.5), -2);
        assert_eq!(round_half_up(-2.5000001), -3);
        assert_eq!(round_half_up(-0.5), 0);
        assert_eq!(round_half_up(7.0), 7);
        assert_eq!(DPoint::new(1.5, -1.5).round(), Point::new(2, -1));
    }

    #[test]
    fn similarity_fit_recovers_a_known_transform() {
        let truth = Similarity {
            a: 1.7 * 0.3f64.cos(),
            b: 1.7 * 0.3f64.sin(),
            tx: 12.5,
            ty: -40.0,
        };
        let from = [
            DPoint::new(0.0, 0.0),
            DPoint::new(10.0, 1.0),
            DPoint::new(3.0, 7.0),
            DPoint::new(-4.0, 2.5),
            DPoint::new(6.0, -8.0),
        ];
        let to = from.map(|p| truth.apply(p));
        let fit = Similarity::fit(&from, &to);
        for (got, want) in [
            (fit.a, truth.a),
            (fit.b, truth.b),
            (fit.tx, truth.tx),
            (fit.ty, truth.ty),
        ] {
            assert!(close(got, want), "fit {fit:?} vs truth {truth:?}");
        }
        assert!(close(fit.scale(), 1.7) && close(fit.angle(), 0.3));
    }

    #[test]
    fn similarity_fit_is_least_squares_and_never_reflects() {
        // A mirror image: the best similarity (no reflection allowed) collapses every point onto
        // the target centroid, since any rotation matches as badly as any other.
        let from = [
            DPoint::new(-1.0, -1.0),
            DPoint::new(1.0, -1.0),
            DPoint::new(1.0, 1.0),
            DPoint::new(-1.0, 1.0),
        ];
        let to = from.map(|p| DPoint::new(-p.x + 5.0, p.y + 2.0));
        let fit = Similarity::fit(&from, &to);
        assert!(fit.a.abs() < 1e-12 && fit.b.abs() < 1e-12, "{fit:?}");
        assert!(close(fit.tx, 5.0) && close(fit.ty, 2.0));

        // Noisy targets: the fit's squared error is no larger than that of nearby transforms.
        let to = [
            DPoint::new(0.2, 0.1),
            DPoint::new(2.1, -0.1),
            DPoint::new(1.9, 2.2),
            DPoint::new(-0.1, 1.8),
        ];
        let from = [
            DPoint::new(0.0, 0.0),
            DPoint::new(1.0, 0.0),
            DPoint::new(1.0, 1.0),
            DPoint::new(0.0, 1.0),
        ];
        let fit = Similarity::fit(&from, &to);
        let err = |t: &Similarity| -> f64 {
            from.iter()
                .zip(&to)
                .map(|(f, g)| {
                    let p = t.apply(*f);
                    (p.x - g.x).powi(2) + (p.y - g.y).powi(2)
                })
                .sum()
        };
        let best = err(&fit);
        for d in [1e-3, -1e-3] {
            for t in [
                Similarity {
                    a: fit.a + d,
                    ..fit
                },
                Similarity {
                    b: fit.b + d,
                    ..fit
                },
                Similarity {
                    tx: fit.tx + d,
                    ..fit
                },
                Similarity {
                    ty: fit.ty + d,
                    ..fit
                },
            ] {
                assert!(err(&t) > best, "{t:?} beats the fit {fit:?}");
            }
        }
    }

    #[test]
    fn similarity_of_coincident_points_is_a_shift() {
        let from = [DPoint::new(3.0, 4.0); 3];
        let to = [
            DPoint::new(1.0, 1.0),
            DPoint::new(2.0, 2.0),
            DPoint::new(3.0, 3.0),
        ];
        let fit = Similarity::fit(&from, &to);
        assert_eq!(fit.apply(DPoint::new(3.0, 4.0)), DPoint::new(2.0, 2.0));
        assert_eq!((fit.a, fit.b), (1.0, 0.0));
    }

    #[test]
    fn drect_follows_dlib_conventions() {
        // centered_drect: a 150-wide rectangle spans 149 between its edges.
        let r = DRect::centered(DPoint::new(75.0, 75.0), 150.0, 150.0);
        assert_eq!(r, DRect::new(0.5, 0.5, 149.5, 149.5));
        assert_eq!((r.width(), r.height(), r.area()), (150.0, 150.0, 22500.0));
        assert_eq!(DRect::EMPTY.area(), 0.0);
        assert!(DRect::EMPTY.is_empty());
        assert_eq!(DRect::EMPTY.union(&r), r);
        assert_eq!(r.union(&DRect::EMPTY), r);
        assert!(r.intersect(&DRect::new(200.0, 0.0, 300.0, 10.0)).is_empty());
        assert_eq!(
            DRect::new(-0.5, 1.49, 2.5, 3.5).round(),
            Rect::new(0, 1, 3, 4)
        );
    }

    #[test]
    fn rotation_about_a_centre() {
        let p = rotate_about(
            DPoint::new(1.0, 1.0),
            DPoint::new(2.0, 1.0),
            std::f64::consts::FRAC_PI_2,
        );
        assert!(close(p.x, 1.0) && close(p.y, 2.0), "{p:?}");
    }
}
