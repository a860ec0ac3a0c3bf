//! Quality measures for enrollment frames, and the rules that turn them into keep or reject.
//!
//! Everything here is a pure function of a chip (the aligned 150×150 face), a face box or the five
//! landmarks, so each is unit-tested on its own. Image measures read only the chip's face region
//! ([`FACE_REGION`]): the 25-pixel border dlib's padding adds is background and would let a sharp
//! or bright backdrop vouch for a blurred or dark face.
//!
//! The thresholds are named constants; each doc comment gives the numbers that chose it,
//! measured with the face pipeline (the cascade, its box mapping and dlib's landmarks) on
//! `short_hamilton_clip.mp4` sampled every 100 ms and the stills in `shared/data/media`;
//! embedding distances are raw dlib embeddings from `backbone.onnx`.

use image::RgbImage;

use super::{Point, CHIP_SIZE};

/// Why a frame was not kept. The serialized names are what reports and messages carry.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// No face was found.
    NoFace,
    /// Another face about as large as the largest one: whose enrollment it is is unclear.
    SeveralFaces,
    /// The face box is smaller than [`MIN_FACE_SIDE`].
    FaceTooSmall,
    /// The face is blurred (sharpness under [`MIN_SHARPNESS`]).
    Blurred,
    /// The face is too dark (mean grey under [`MIN_BRIGHTNESS`]).
    TooDark,
    /// The face is too bright (mean grey over [`MAX_BRIGHTNESS`]).
    TooBright,
    /// The head is turned or tilted too far for the landmarks and the embedding to be trusted.
    ExtremePose,
    /// Not the video's main person: someone else in shot, or a box on something that is not a
    /// face (see [`main_identity`]).
    OtherPerson,
    /// Looks the same as a frame already kept.
    NearDuplicate,
    /// Acceptable, but more than the most frames kept were acceptable and others were chosen.
    OverLimit,
}

impl RejectReason {
    /// Every reason, in report order.
    pub const ALL: [RejectReason; 10] = [
        RejectReason::NoFace,
        RejectReason::SeveralFaces,
        RejectReason::FaceTooSmall,
        RejectReason::Blurred,
        RejectReason::TooDark,
        RejectReason::TooBright,
        RejectReason::ExtremePose,
        RejectReason::OtherPerson,
        RejectReason::NearDuplicate,
        RejectReason::OverLimit,
    ];

    /// The name used in reports (`no_face`, `several_faces`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::NoFace => "no_face",
            RejectReason::SeveralFaces => "several_faces",
            RejectReason::FaceTooSmall => "face_too_small",
            RejectReason::Blurred => "blurred",
            RejectReason::TooDark => "too_dark",
            RejectReason::TooBright => "too_bright",
            RejectReason::ExtremePose => "extreme_pose",
            RejectReason::OtherPerson => "other_person",
            RejectReason::NearDuplicate => "near_duplicate",
            RejectReason::OverLimit => "over_limit",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The chip's face region, the same range on both axes: dlib's template spans the unit square and
/// the chip adds 0.25 of it on every side, so the template lands on pixels
/// 150·0.25/1.5 = 25 to 150·1.25/1.5 = 125 (eyebrows to chin, cheek to cheek).
pub const FACE_REGION: std::ops::Range<u32> = 25..125;

/// Grey level of an RGB pixel (ITU-R BT.601 luma, 0–255).
pub fn luma(p: [u8; 3]) -> f32 {
    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
}

/// The face region of a chip as grey levels, row by row ([`FACE_REGION`] on both axes).
/// Panics unless the chip is 150×150 (what the image measures below all require).
fn face_grey(chip: &RgbImage) -> (usize, Vec<f32>) {
    assert_eq!(
        chip.dimensions(),
        (CHIP_SIZE, CHIP_SIZE),
        "quality measures read 150×150 chips"
    );
    let side = FACE_REGION.len();
    let mut grey = Vec::with_capacity(side * side);
    for y in FACE_REGION {
        for x in FACE_REGION {
            grey.push(luma(chip.get_pixel(x, y).0));
        }
    }
    (side, grey)
}

/// Sharpness: the variance of the 4-neighbour Laplacian (0 1 0 / 1 −4 1 / 0 1 0) of the grey
/// levels over the chip's face region, in grey levels². A flat or blurred face scores low; the
/// measure grows with edge contrast, so it ranks frames of one video rather than comparing people.
pub fn sharpness(chip: &RgbImage) -> f32 {
    let (side, g) = face_grey(chip);
    let mut sum = 0f64;
    let mut sum_sq = 0f64;
    let mut n = 0f64;
    for y in 1..side - 1 {
        for x in 1..side - 1 {
            let i = y * side + x;
            let lap = g[i - side] + g[i + side] + g[i - 1] + g[i + 1] - 4.0 * g[i];
            sum += f64::from(lap);
            sum_sq += f64::from(lap) * f64::from(lap);
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum_sq / n - mean * mean).max(0.0) as f32
}

/// Brightness: the mean grey level (0–255) of the chip's face region.
pub fn brightness(chip: &RgbImage) -> f32 {
    let (_, g) = face_grey(chip);
    (g.iter().map(|&v| f64::from(v)).sum::<f64>() / g.len() as f64) as f32
}

/// Face size: the shorter side of the face box (x, y, w, h) in pixels of the frame.
pub fn face_side(bbox: [i64; 4]) -> i64 {
    bbox[2].min(bbox[3])
}

/// Half the distance between the eye centres divided by how far the base of the nose stands in
/// front of them, for an average adult face (eye centres ≈ 62 mm apart, base of the nose ≈ 19 mm
/// in front of the plane of the eye corners): 19 / 31 ≈ 0.6. It converts the nose's sideways
/// offset into an angle, so yaw in degrees is an estimate good to perhaps ±10°.
pub const NOSE_DEPTH_RATIO: f64 = 0.6;

/// Where dlib's mean face puts the base of the nose below the eye line, in eye-centre distances
/// (from dlib's 5-point template: (0.6278 − 0.2213) / 0.5255).
pub const FRONTAL_NOSE_DROP: f64 = 0.7736;

/// Head pose estimated from the five landmarks.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Pose {
    /// Yaw in degrees: 0 facing the camera, positive when the face turns towards the image's
    /// right (the person's own left, if the video is not mirrored), negative towards the left.
    pub yaw: f64,
    /// Roll in degrees: the eye line's angle, positive when the image-right eye is lower.
    pub roll: f64,
    /// How far the base of the nose is below the eye line, in eye-centre distances corrected
    /// for yaw (× cos yaw: a turn narrows the eyes, not the drop), divided by
    /// [`FRONTAL_NOSE_DROP`]: 1 for dlib's mean face, lower when the head tips back, higher when
    /// it tips forward.
    pub nose_drop: f64,
}

/// Estimates the pose from dlib's five landmarks (image-right eye outer and inner corner,
/// image-left eye outer and inner corner, base of the nose); `None` when the eyes coincide.
///
/// Yaw: with L and R the image-left and image-right eye centres (the mean of each eye's two
/// corners) and N the base of the nose, t = (N − L)·(R − L) / |R − L|² is where the nose sits
/// along the eye line (0.5 when frontal: dlib's template gives 0.5001). Modelling the eyes as
/// ±d across and the nose as depth h in front, a turn by θ moves the nose by h·sin θ while the
/// eyes shrink to ±d·cos θ, so 2t − 1 = (h/d)·tan θ and yaw = atan((2t − 1) / [`NOSE_DEPTH_RATIO`]).
///
/// Nose drop: the nose's distance below the eye line over |R − L|, times cos(yaw) (the eye
/// distance shrank by it), over [`FRONTAL_NOSE_DROP`].
pub fn pose(landmarks: &[Point; 5]) -> Option<Pose> {
    let p = landmarks.map(|p| (p.x as f64, p.y as f64));
    let right = ((p[0].0 + p[1].0) / 2.0, (p[0].1 + p[1].1) / 2.0);
    let left = ((p[2].0 + p[3].0) / 2.0, (p[2].1 + p[3].1) / 2.0);
    let nose = p[4];
    let (ex, ey) = (right.0 - left.0, right.1 - left.1);
    let span2 = ex * ex + ey * ey;
    if span2 < 1.0 {
        return None;
    }
    let (nx, ny) = (nose.0 - left.0, nose.1 - left.1);
    let t = (nx * ex + ny * ey) / span2;
    // Distance below the eye line: the eye direction turned a quarter clockwise (y is down).
    let drop = (nx * -ey + ny * ex) / span2;
    let yaw = ((2.0 * t - 1.0) / NOSE_DEPTH_RATIO).atan();
    Some(Pose {
        yaw: yaw.to_degrees(),
        roll: ey.atan2(ex).to_degrees(),
        nose_drop: drop * yaw.cos() / FRONTAL_NOSE_DROP,
    })
}

/// Side of the grey thumbnail compared for near-duplicates.
pub const THUMB_SIDE: usize = 16;

/// A small grey thumbnail of a chip's face region (area averages, [`THUMB_SIDE`]²), for
/// near-duplicate tests.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail(Vec<f32>);

impl Thumbnail {
    /// The thumbnail of a 150×150 chip.
    pub fn of(chip: &RgbImage) -> Self {
        let (side, g) = face_grey(chip);
        let mut t = vec![0f32; THUMB_SIDE * THUMB_SIDE];
        let mut n = vec![0f32; THUMB_SIDE * THUMB_SIDE];
        for y in 0..side {
            for x in 0..side {
                let i = (y * THUMB_SIDE / side) * THUMB_SIDE + x * THUMB_SIDE / side;
                t[i] += g[y * side + x];
                n[i] += 1.0;
            }
        }
        Thumbnail(t.iter().zip(&n).map(|(s, n)| s / n).collect())
    }

    /// Mean absolute difference to another thumbnail, in grey levels.
    pub fn distance(&self, other: &Thumbnail) -> f32 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / self.0.len() as f32
    }
}

/// Two chips whose embeddings are closer than this show the same person: dlib's own threshold
/// for its face-recognition network (Euclidean distance of raw embeddings).
pub const SAME_PERSON_DISTANCE: f32 = 0.6;

/// Euclidean distance between two embeddings.
pub fn embedding_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// A face is the main person's when its embedding is within this of the main person's mean
/// embedding ([`main_identity`]). Distances to a mean of many frames run shorter than between
/// two frames. On the clip, the singer's 34 frames that pass the gate lie 0.25–0.48 from their
/// mean (his tiny wide-shot face 0.39–0.43); the false box on his hand lies 0.66 from it, the
/// dark, blurred audience faces 0.51–0.60 (the gate rejects those first). The margin is thin on
/// such a low-resolution clip; this check is the backstop, not the first filter.
pub const MAIN_PERSON_RADIUS: f32 = 0.5;

/// Which faces show the main person of a set: a keep flag per embedding.
///
/// The anchor is the face with the most others within `pair` (two faces of one person:
/// [`SAME_PERSON_DISTANCE`]; ties: the smaller sum of distances to all); the main person is the
/// mean embedding of the anchor and those neighbours; a face is kept when it lies within
/// `radius` ([`MAIN_PERSON_RADIUS`]) of that mean. The mean of many frames sits nearer the
/// person's true embedding than any one frame, so it is a steadier reference than the anchor
/// itself, and a lone box on a hand or a passer-by cannot become the anchor while the person
/// is in most frames.
pub fn main_identity(embeddings: &[Vec<f32>], pair: f32, radius: f32) -> Vec<bool> {
    let n = embeddings.len();
    if n == 0 {
        return Vec::new();
    }
    let mut dist = vec![0f32; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let d = embedding_distance(&embeddings[i], &embeddings[j]);
            dist[i * n + j] = d;
            dist[j * n + i] = d;
        }
    }
    let row = |i: usize| &dist[i * n..(i + 1) * n];
    let neighbours = |i: usize| row(i).iter().filter(|&&d| d < pair).count();
    let total = |i: usize| row(i).iter().map(|&d| f64::from(d)).sum::<f64>();
    let anchor = (0..n)
        .min_by(|&a, &b| {
            neighbours(b)
                .cmp(&neighbours(a))
                .then(total(a).total_cmp(&total(b)))
        })
        .expect("n > 0");
    let members: Vec<usize> = (0..n).filter(|&j| row(anchor)[j] < pair).collect();
    let dim = embeddings[anchor].len();
    let mut mean = vec![0f32; dim];
    for &j in &members {
        for (m, v) in mean.iter_mut().zip(&embeddings[j]) {
            *m += v / members.len() as f32;
        }
    }
    embeddings
        .iter()
        .map(|e| embedding_distance(e, &mean) < radius)
        .collect()
}

/// The gate's thresholds. The defaults are the named constants below.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Thresholds {
    /// [`MIN_FACE_SIDE`].
    pub min_face_side: i64,
    /// [`SEVERAL_FACES_RATIO`].
    pub several_faces_ratio: f64,
    /// [`MAX_ABS_YAW`].
    pub max_abs_yaw: f64,
    /// [`NOSE_DROP_RANGE`].
    pub nose_drop_range: (f64, f64),
    /// [`MIN_BRIGHTNESS`].
    pub min_brightness: f32,
    /// [`MAX_BRIGHTNESS`].
    pub max_brightness: f32,
    /// [`MIN_SHARPNESS`].
    pub min_sharpness: f32,
    /// [`SAME_PERSON_DISTANCE`].
    pub same_person_distance: f32,
    /// [`MAIN_PERSON_RADIUS`].
    pub main_person_radius: f32,
    /// [`NEAR_DUPLICATE_MAD`].
    pub near_duplicate_mad: f32,
    /// [`TURNED_YAW`].
    pub turned_yaw: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            min_face_side: MIN_FACE_SIDE,
            several_faces_ratio: SEVERAL_FACES_RATIO,
            max_abs_yaw: MAX_ABS_YAW,
            nose_drop_range: NOSE_DROP_RANGE,
            min_brightness: MIN_BRIGHTNESS,
            max_brightness: MAX_BRIGHTNESS,
            min_sharpness: MIN_SHARPNESS,
            same_person_distance: SAME_PERSON_DISTANCE,
            main_person_radius: MAIN_PERSON_RADIUS,
            near_duplicate_mad: NEAR_DUPLICATE_MAD,
            turned_yaw: TURNED_YAW,
        }
    }
}

/// Smallest face box side kept, in pixels. Shrinking four stills (lin-manuel-miranda, obama,
/// biden, alex-lacamoire) until the cascade box was about 120, 90, 74, 65, 60 and 55 px moved
/// their embeddings from the full-size one by 0.06–0.11, 0.08–0.12, 0.13–0.17, 0.14–0.19,
/// 0.15–0.22 and 0.17–0.25: below 60 px the drift passes a third of the 0.6 match threshold.
/// (The clip's singer is 87–124 px in close-ups, 55–57 px in the opening wide shot.)
pub const MIN_FACE_SIDE: i64 = 60;

/// A second face whose box side is at least this share of the largest one's makes the frame
/// ambiguous. `two_people.jpg` (184 and 167 px, 0.91), `obama_and_biden.jpg` (0.90) and
/// `kit_with_rose.jpg` (0.81) are; so are two clip frames where a false box on the singer's
/// hand reaches 0.69 and 0.73 of his face. Smaller stray boxes are ignored.
pub const SEVERAL_FACES_RATIO: f64 = 0.6;

/// Largest |yaw| kept, in degrees. Beyond it the far eye's corners start to hide and the
/// landmarks to slip; the frontal cascade rarely finds such faces anyway. The clip's most
/// turned faces it found (−44.0, −45.5, −48.3) still embedded 0.58, 0.45 and 0.53 from the
/// reference photo.
pub const MAX_ABS_YAW: f64 = 50.0;

/// Accepted range of [`Pose::nose_drop`]. Faces measured 0.67–1.10 on the stills (the low end:
/// Obama looking up in `obama3.jpg`/`two_people.jpg`) and 0.72–1.24 on the clip.
pub const NOSE_DROP_RANGE: (f64, f64) = (0.55, 1.45);

/// Darkest face kept (mean grey of the face region). The stills' faces measure 98–187 and the
/// clip's lit singer 81–111; the clip's darkest boxes (a false one at 21, the audience at
/// 33–35) are below it. (The audience at 46–48 is out of focus: rejected as blurred.)
pub const MIN_BRIGHTNESS: f32 = 40.0;

/// Brightest face kept: as far from white (255) as [`MIN_BRIGHTNESS`] is from black; the
/// brightest still faces (`kit_with_rose.jpg`'s) measure 181 and 187.
pub const MAX_BRIGHTNESS: f32 = 215.0;

/// Least sharpness ([`sharpness`]) kept. The clip's out-of-focus audience and the cascade's
/// false boxes in the dark measure 1–3; the softest frame of the singer 26 (0.43 from the
/// reference photo); stills shrunk to a 52–58 px face 13–25; the stills themselves 76–1673.
pub const MIN_SHARPNESS: f32 = 10.0;

/// Thumbnails closer than this (mean absolute difference in grey levels) are near-duplicates.
/// Successive 100 ms samples of the clip's still audience differ by 1.3–3.5 (compression noise
/// and a blink); successive samples of the singer differ by 4.9–25.
pub const NEAR_DUPLICATE_MAD: f32 = 4.0;

/// A kept frame with yaw beyond ±this many degrees shows the head turned that way. The frontal
/// stills (the obama series, alex_lacamoire1) measure |yaw| ≤ 4.9; the visibly turned ones
/// 17–31 (lin-manuel-miranda 17.1, biden 17.7, alex-lacamoire 23.1, obama2 −24.0, john2 −31.2).
pub const TURNED_YAW: f64 = 15.0;

/// The measures of one face, as the gate reads them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Measures {
    /// [`face_side`] of the face box.
    pub face_side: i64,
    /// The pose, when the landmarks give one.
    pub pose: Option<Pose>,
    /// [`brightness`] of the chip.
    pub brightness: f32,
    /// [`sharpness`] of the chip.
    pub sharpness: f32,
}

impl Measures {
    /// Measures a face from its box, landmarks and 150×150 chip (panics on another size).
    pub fn of(bbox: [i64; 4], landmarks: &[Point; 5], chip: &RgbImage) -> Self {
        Measures {
            face_side: face_side(bbox),
            pose: pose(landmarks),
            brightness: brightness(chip),
            sharpness: sharpness(chip),
        }
    }
}

/// True when a second face is large enough to make the frame ambiguous: `sides` are the face
/// boxes' [`face_side`]s, in any order.
pub fn several_faces(sides: &[i64], ratio: f64) -> bool {
    let mut s: Vec<i64> = sides.to_vec();
    s.sort_unstable_by(|a, b| b.cmp(a));
    s.len() >= 2 && s[1] as f64 >= ratio * s[0] as f64
}

/// The per-frame gate: the first reason to reject the face, checked in the order size, pose,
/// exposure, sharpness (a dark face is also a flat one: "too dark" is the more useful reason).
pub fn gate(m: &Measures, t: &Thresholds) -> Result<(), RejectReason> {
    if m.face_side < t.min_face_side {
        return Err(RejectReason::FaceTooSmall);
    }
    match m.pose {
        Some(p)
            if p.yaw.abs() <= t.max_abs_yaw
                && (t.nose_drop_range.0..=t.nose_drop_range.1).contains(&p.nose_drop) => {}
        _ => return Err(RejectReason::ExtremePose),
    }
    if m.brightness.is_nan() || m.brightness < t.min_brightness {
        return Err(RejectReason::TooDark);
    }
    if m.brightness > t.max_brightness {
        return Err(RejectReason::TooBright);
    }
    if m.sharpness.is_nan() || m.sharpness < t.min_sharpness {
        return Err(RejectReason::Blurred);
    }
    Ok(())
}

/// Greedy near-duplicate removal, best first: visiting faces by decreasing `score`, keeps one
/// unless its thumbnail is within `mad` of one already kept. Returns a keep flag per face, so
/// of a run of look-alike frames the sharpest survives, not the first.
pub fn dedupe(thumbs: &[Thumbnail], scores: &[f32], mad: f32) -> Vec<bool> {
    assert_eq!(thumbs.len(), scores.len());
    let mut keep = vec![false; thumbs.len()];
    let mut kept: Vec<usize> = Vec::new();
    for i in by_score(scores) {
        if kept.iter().all(|&k| thumbs[k].distance(&thumbs[i]) >= mad) {
            keep[i] = true;
            kept.push(i);
        }
    }
    keep
}

/// Indices by decreasing score (ties: earlier first).
fn by_score(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}

/// Chooses at most `n` faces spread over the head-turn: the yaw range is cut into `n` equal
/// bins, visited round after round, each giving its best (highest `score`) face not yet chosen
/// until `n` are chosen — except that in the first round the outer bins give their most turned
/// face, so the kept set always spans the whole turn. Sparse poses are covered before dense
/// ones get a second face. Returns indices in input order.
pub fn select_spread(yaws: &[f64], scores: &[f32], n: usize) -> Vec<usize> {
    assert_eq!(yaws.len(), scores.len());
    if yaws.len() <= n {
        return (0..yaws.len()).collect();
    }
    if n == 0 {
        return Vec::new();
    }
    let by_yaw = |a: &usize, b: &usize| yaws[*a].total_cmp(&yaws[*b]).then(a.cmp(b));
    let lowest = (0..yaws.len()).min_by(by_yaw).expect("yaws.len() > n > 0");
    let highest = (0..yaws.len()).max_by(by_yaw).expect("yaws.len() > n > 0");
    let (lo, hi) = (yaws[lowest], yaws[highest]);
    let width = (hi - lo) / n as f64;
    let mut bins: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in by_score(scores) {
        let b = if width > 0.0 {
            (((yaws[i] - lo) / width) as usize).min(n - 1)
        } else {
            0
        };
        bins[b].push(i);
    }
    for (b, extreme) in [(n - 1, highest), (0, lowest)] {
        if let Some(pos) = bins[b].iter().position(|&i| i == extreme) {
            let i = bins[b].remove(pos);
            bins[b].insert(0, i);
        }
    }
    let mut chosen: Vec<usize> = Vec::with_capacity(n);
    let mut round = 0;
    'fill: loop {
        for bin in &bins {
            if let Some(&i) = bin.get(round) {
                chosen.push(i);
                if chosen.len() == n {
                    break 'fill;
                }
            }
        }
        round += 1;
    }
    chosen.sort_unstable();
    chosen
}

/// Whether the kept faces show the head turned each way: `(left, right)` in the person's own
/// terms for an unmirrored video — left when some yaw ≥ `turned`, right when some yaw ≤ −`turned`
/// (see [`Pose::yaw`] for the sign).
pub fn turned_sides(yaws: &[f64], turned: f64) -> (bool, bool) {
    (
        yaws.iter().any(|&y| y >= turned),
        yaws.iter().any(|&y| y <= -turned),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn chip_with(f: impl Fn(u32, u32) -> u8) -> RgbImage {
        RgbImage::from_fn(CHIP_SIZE, CHIP_SIZE, |x, y| {
            let v = f(x, y);
            Rgb([v, v, v])
        })
    }

    #[test]
    fn luma_weights() {
        assert_eq!(luma([0, 0, 0]), 0.0);
        assert!((luma([255, 255, 255]) - 255.0).abs() < 1e-3);
        assert!(luma([0, 255, 0]) > luma([255, 0, 0]));
        assert!(luma([255, 0, 0]) > luma([0, 0, 255]));
    }

    #[test]
    fn sharpness_of_flat_and_checkered_chips() {
        assert_eq!(sharpness(&chip_with(|_, _| 128)), 0.0);
        // A one-pixel checkerboard of 0/100: the Laplacian is ±400 everywhere, variance 160 000.
        let checker = chip_with(|x, y| if (x + y) % 2 == 0 { 100 } else { 0 });
        assert!((sharpness(&checker) - 160_000.0).abs() < 1.0);
        // The same edges spread out (a checkerboard of 4-pixel squares) are much less sharp.
        let coarse = chip_with(|x, y| if (x / 4 + y / 4) % 2 == 0 { 100 } else { 0 });
        assert!(sharpness(&coarse) < sharpness(&checker) / 4.0);
    }

    #[test]
    fn measures_read_only_the_face_region() {
        // Sharp, bright stripes in the padding only: the face region is flat grey 60.
        let c = chip_with(|x, y| {
            if FACE_REGION.contains(&x) && FACE_REGION.contains(&y) {
                60
            } else if x % 2 == 0 {
                255
            } else {
                0
            }
        });
        assert_eq!(sharpness(&c), 0.0);
        assert!((brightness(&c) - 60.0).abs() < 1e-3);
    }

    #[test]
    fn brightness_is_mean_grey() {
        let half = chip_with(|x, _| if x < 75 { 0 } else { 200 });
        assert!((brightness(&half) - 100.0).abs() < 1e-3);
    }

    #[test]
    fn face_side_is_the_shorter_side() {
        assert_eq!(face_side([10, 20, 64, 80]), 64);
        assert_eq!(face_side([0, 0, 90, 70]), 70);
    }

    /// dlib's template scaled to a 200-pixel face at (100, 100), turned by shifting the nose.
    fn face(nose_dx: i64) -> [Point; 5] {
        [
            Point::new(272, 143),
            Point::new(229, 146),
            Point::new(124, 143),
            Point::new(167, 146),
            Point::new(198 + nose_dx, 226),
        ]
    }

    #[test]
    fn frontal_pose_from_the_template() {
        let p = pose(&face(0)).unwrap();
        assert!(p.yaw.abs() < 1.0, "{p:?}");
        assert!(p.roll.abs() < 0.5, "{p:?}");
        assert!((p.nose_drop - 1.0).abs() < 0.02, "{p:?}");
    }

    #[test]
    fn yaw_sign_and_size() {
        // Eye centres at x = 145.5 and 250.5 (d = 52.5): a nose 0.6·d·tan 30° to the right.
        let dx = (0.6 * 52.5 * 30f64.to_radians().tan()).round() as i64;
        let right = pose(&face(dx)).unwrap();
        assert!((right.yaw - 30.0).abs() < 2.0, "{right:?}");
        // The same drop below narrower eyes: the correction by cos(yaw) brings it back.
        let mut narrow = face(0);
        for p in &mut narrow[..4] {
            p.x = 198 + ((p.x - 198) as f64 * 30f64.to_radians().cos()).round() as i64;
        }
        narrow[4].x +=
            (0.6 * 52.5 * 30f64.to_radians().cos() * 30f64.to_radians().tan()).round() as i64;
        let p = pose(&narrow).unwrap();
        assert!((p.yaw - 30.0).abs() < 2.0, "{p:?}");
        assert!((p.nose_drop - 1.0).abs() < 0.03, "{p:?}");
        let left = pose(&face(-dx)).unwrap();
        assert!((left.yaw + 30.0).abs() < 2.0, "{left:?}");
    }

    #[test]
    fn yaw_ignores_roll() {
        // The template rotated by 90° (image-right eye below the image-left one).
        let f = face(0);
        let rot = f.map(|p| Point::new(200 - (p.y - 200), 200 + (p.x - 200)));
        let p = pose(&rot).unwrap();
        assert!(p.yaw.abs() < 1.0, "{p:?}");
        assert!((p.roll - 90.0).abs() < 1.0, "{p:?}");
        assert!((p.nose_drop - 1.0).abs() < 0.02, "{p:?}");
    }

    #[test]
    fn nose_drop_follows_pitch() {
        let mut up = face(0);
        up[4].y -= 40;
        assert!(pose(&up).unwrap().nose_drop < 0.6);
        let mut down = face(0);
        down[4].y += 30;
        assert!(pose(&down).unwrap().nose_drop > 1.3);
    }

    #[test]
    fn degenerate_landmarks_have_no_pose() {
        assert_eq!(pose(&[Point::new(5, 5); 5]), None);
    }

    #[test]
    fn thumbnails() {
        let a = chip_with(|x, y| ((x * 7 + y * 3) % 256) as u8);
        let ta = Thumbnail::of(&a);
        assert_eq!(ta.distance(&ta), 0.0);
        let brighter = chip_with(|x, y| ((x * 7 + y * 3) % 256) as u8 / 2 + 20);
        assert!(ta.distance(&Thumbnail::of(&brighter)) > 10.0);
        // Changes in the padding do not count.
        let framed = chip_with(|x, y| {
            if FACE_REGION.contains(&x) && FACE_REGION.contains(&y) {
                ((x * 7 + y * 3) % 256) as u8
            } else {
                0
            }
        });
        assert_eq!(ta.distance(&Thumbnail::of(&framed)), 0.0);
    }
    fn measures() -> Measures {
        Measures {
            face_side: 100,
            pose: pose(&face(0)),
            brightness: 100.0,
            sharpness: 50.0,
        }
    }

    #[test]
    fn a_good_face_passes_the_gate() {
        assert_eq!(gate(&measures(), &Thresholds::default()), Ok(()));
    }

    #[test]
    fn each_threshold_gives_its_reason() {
        let t = Thresholds::default();
        let check = |f: &dyn Fn(&mut Measures), want| {
            let mut m = measures();
            f(&mut m);
            assert_eq!(gate(&m, &t), Err(want), "{m:?}");
        };
        check(
            &|m| m.face_side = MIN_FACE_SIDE - 1,
            RejectReason::FaceTooSmall,
        );
        check(&|m| m.pose = None, RejectReason::ExtremePose);
        check(&|m| m.pose = pose(&face(60)), RejectReason::ExtremePose);
        check(
            &|m| m.pose.as_mut().unwrap().nose_drop = 1.6,
            RejectReason::ExtremePose,
        );
        check(
            &|m| m.pose.as_mut().unwrap().nose_drop = 0.5,
            RejectReason::ExtremePose,
        );
        check(&|m| m.brightness = 39.0, RejectReason::TooDark);
        check(&|m| m.brightness = f32::NAN, RejectReason::TooDark);
        check(&|m| m.brightness = 216.0, RejectReason::TooBright);
        check(&|m| m.sharpness = 9.0, RejectReason::Blurred);
        // Order: a small, dark, blurred face is "too small" first; a dark blurred one "too dark".
        check(
            &|m| {
                m.face_side = 10;
                m.brightness = 5.0;
                m.sharpness = 0.0;
            },
            RejectReason::FaceTooSmall,
        );
        check(
            &|m| {
                m.brightness = 5.0;
                m.sharpness = 0.0;
            },
            RejectReason::TooDark,
        );
        // Thresholds are inclusive at the accepting end.
        let mut m = measures();
        m.face_side = MIN_FACE_SIDE;
        m.brightness = MIN_BRIGHTNESS;
        m.sharpness = MIN_SHARPNESS;
        assert_eq!(gate(&m, &t), Ok(()));
    }

    #[test]
    fn several_faces_needs_a_comparable_second_face() {
        assert!(!several_faces(&[], SEVERAL_FACES_RATIO));
        assert!(!several_faces(&[100], SEVERAL_FACES_RATIO));
        assert!(several_faces(&[171, 177], SEVERAL_FACES_RATIO));
        assert!(several_faces(&[100, 60], SEVERAL_FACES_RATIO));
        assert!(!several_faces(&[204, 68], SEVERAL_FACES_RATIO));
        assert!(!several_faces(&[100, 59, 30], SEVERAL_FACES_RATIO));
    }

    fn flat_thumb(v: u8) -> Thumbnail {
        Thumbnail::of(&chip_with(|_, _| v))
    }

    #[test]
    fn dedupe_keeps_the_best_of_look_alikes() {
        // 0 and 1 look alike (2 grey levels apart); 1 is sharper; 2 is different.
        let thumbs = [flat_thumb(100), flat_thumb(102), flat_thumb(140)];
        assert_eq!(
            dedupe(&thumbs, &[10.0, 20.0, 5.0], NEAR_DUPLICATE_MAD),
            [false, true, true]
        );
        assert_eq!(
            dedupe(&thumbs, &[30.0, 20.0, 5.0], NEAR_DUPLICATE_MAD),
            [true, false, true]
        );
        // A chain: each within 4 of the next, but the ends apart: the middle one goes.
        let chain = [flat_thumb(100), flat_thumb(103), flat_thumb(106)];
        assert_eq!(
            dedupe(&chain, &[3.0, 2.0, 1.0], NEAR_DUPLICATE_MAD),
            [true, false, true]
        );
        assert!(dedupe(&[], &[], NEAR_DUPLICATE_MAD).is_empty());
    }

    #[test]
    fn selection_covers_the_turn_then_fills_by_quality() {
        // Ten frontal faces of rising quality and one each at −40° and +30°.
        let mut yaws = vec![0.0; 10];
        let mut scores: Vec<f32> = (0..10).map(|i| i as f32).collect();
        yaws.push(-40.0);
        scores.push(0.5);
        yaws.push(30.0);
        scores.push(0.1);
        let chosen = select_spread(&yaws, &scores, 4);
        assert_eq!(chosen, vec![8, 9, 10, 11]);
        // The extremes are kept even when they are the worst of their bins.
        let yaws = [-30.0, -29.0, 0.0, 29.0, 30.0];
        let scores = [1.0, 5.0, 3.0, 5.0, 1.0];
        assert_eq!(select_spread(&yaws, &scores, 3), vec![0, 2, 4]);
        assert_eq!(select_spread(&yaws, &scores, 1), vec![0]);
        // Fewer faces than places: all of them.
        assert_eq!(select_spread(&[1.0, 2.0], &[1.0, 1.0], 30), vec![0, 1]);
        assert!(select_spread(&[1.0, 2.0], &[1.0, 1.0], 0).is_empty());
        // All at one yaw: the first (the "extreme"), then the best.
        assert_eq!(
            select_spread(&[5.0; 4], &[1.0, 4.0, 3.0, 2.0], 2),
            vec![0, 1]
        );
    }

    #[test]
    fn selection_spreads_evenly_over_a_steady_turn() {
        // 61 faces from −30° to +30°, equal quality: 7 chosen, one per bin of 60/7 degrees.
        let yaws: Vec<f64> = (0..=60).map(|i| i as f64 - 30.0).collect();
        let chosen = select_spread(&yaws, &vec![1.0; yaws.len()], 7);
        let picked: Vec<f64> = chosen.iter().map(|&i| yaws[i]).collect();
        // Equal scores take the first face of each bin; the last bin gives its extreme.
        assert_eq!(picked, [-30.0, -21.0, -12.0, -4.0, 5.0, 13.0, 30.0]);
    }

    #[test]
    fn turned_sides_needs_a_yaw_beyond_the_threshold_each_way() {
        assert_eq!(turned_sides(&[], TURNED_YAW), (false, false));
        assert_eq!(turned_sides(&[-5.0, 3.0, 14.9], TURNED_YAW), (false, false));
        assert_eq!(turned_sides(&[-5.0, 15.0], TURNED_YAW), (true, false));
        assert_eq!(turned_sides(&[-20.0, 3.0], TURNED_YAW), (false, true));
        assert_eq!(turned_sides(&[-20.0, 25.0], TURNED_YAW), (true, true));
    }

    #[test]
    fn reasons_serialize_by_name() {
        for r in RejectReason::ALL {
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
    }
    /// Unit-ish vectors: a person is a point, frames scatter around it.
    fn emb(centre: f32, offset: f32) -> Vec<f32> {
        let mut v = vec![0f32; 4];
        v[0] = centre;
        v[1] = offset;
        v
    }

    #[test]
    fn main_identity_keeps_the_majority_person() {
        // Five frames of A scattered ±0.2 around 0; a hand at 0.7 off; B twice at 1.5.
        let e = vec![
            emb(0.0, 0.2),
            emb(0.0, -0.2),
            emb(0.1, 0.0),
            emb(-0.1, 0.1),
            emb(0.0, 0.0),
            emb(0.7, 0.0),
            emb(1.5, 0.0),
            emb(1.5, 0.1),
        ];
        assert_eq!(
            main_identity(&e, SAME_PERSON_DISTANCE, MAIN_PERSON_RADIUS),
            [true, true, true, true, true, false, false, false]
        );
        assert!(main_identity(&[], 0.6, 0.5).is_empty());
        assert_eq!(main_identity(&[emb(3.0, 0.0)], 0.6, 0.5), [true]);
    }

    #[test]
    fn main_identity_measures_from_the_mean_not_the_anchor() {
        // The anchor's neighbourhood reaches a face 0.45 away, but that face is 0.54 from the
        // neighbourhood's mean and is dropped, while one 0.55 away on the other side is kept.
        let e = vec![
            emb(0.0, 0.0),
            emb(0.55, 0.0),
            emb(0.27, 0.0),
            emb(-0.45, 0.0),
        ];
        // Neighbours within 0.6: 0 → {1, 2, 3}, 1 → {0, 2}, 2 → {0, 1}, 3 → {0}: anchor 0,
        // mean of all four = 0.0925; distances 0.09, 0.46, 0.18, 0.54.
        assert_eq!(main_identity(&e, 0.6, 0.5), [true, true, true, false]);
    }

    #[test]
    fn embedding_distance_is_euclidean() {
        assert_eq!(embedding_distance(&[0.0, 3.0], &[4.0, 0.0]), 5.0);
    }
}
