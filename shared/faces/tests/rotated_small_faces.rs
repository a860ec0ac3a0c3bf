//! Tilted and small faces in photos made from the media set (`../shared/data/media`): each
//! photo scaled to 640 px on its longer side, then turned in its plane by ±10, ±20 and ±30°
//! (the whole photo on a larger black canvas, bilinear, by this file's own code), or its face
//! scaled down to 40–60 px and pasted into a 640×480 scene. The face found must be there, and
//! its embedding near the upright photo's. Every case prints its path and distance
//! (`cargo test -p twin-faces --test rotated_small_faces -- --nocapture`).

use std::time::Instant;

use image::{imageops, Rgb, RgbImage};
use twin_faces::geometry::DPoint;
use twin_faces::pipeline::{cut_chip, FacePipeline, FaceSource, FoundFace, PipelineOptions};
use twin_faces::Point;
use twin_model::embed::{Embedder, EmbedderOptions};

/// The media photos the cases are made from.
const PHOTOS: [&str; 3] = ["obama.jpg", "biden.jpg", "lin-manuel-miranda.png"];
/// In-plane turns of the photos, degrees counter-clockwise as seen.
const ANGLES: [f64; 6] = [-30.0, -20.0, -10.0, 10.0, 20.0, 30.0];
/// Longer side the photos are scaled to before anything else.
const PHOTO_SIDE: u32 = 640;

/// Largest distance from the upright photo's embedding for a turned photo. Measured: at most
/// 0.081 with the default pipeline (the CNN fallback finds the ±30° faces there) and 0.078
/// through the rotated search with the cascade alone; dlib's same-person threshold is 0.6.
const TURNED_BOUND: f32 = 0.15;
/// Largest distance of a landmark from where the upright photo's lands once turned, as a
/// fraction of the upright face's box side. Measured: at most 0.019 (2 px on biden.jpg's 76 px
/// box), for every path.
const LANDMARK_BOUND: f64 = 0.06;
/// Largest distance from the upright photo's embedding for a face scaled down to 40–60 px:
/// a chip upsampled from so few pixels loses detail. Measured: 0.226 at 40 px, 0.179 at 48,
/// 0.139 at 60 (same for a plain and a textured scene).
const SMALL_BOUND: f32 = 0.32;
/// Largest distance for a 50 px face turned by 30° and found tilted (by the rotated search or
/// the CNN). Measured: at most 0.216 (0.09–0.16 from the same 50 px face upright); 0.138–0.205
/// with the photo cascade's step of 1.2.
const SMALL_TURNED_BOUND: f32 = 0.3;

struct Kit {
    pipeline: FacePipeline,
    embedder: Embedder,
}

impl Kit {
    fn open(options: &PipelineOptions) -> Kit {
        let models = twin_tests::models_dir();
        Kit {
            pipeline: FacePipeline::open(&models, options).expect("pipeline (run scripts/setup)"),
            embedder: Embedder::open(&twin_tests::require_backbone(), &EmbedderOptions::default())
                .expect("backbone (run scripts/setup)"),
        }
    }

    /// The photo's subject (the pipeline's first face), if any.
    fn subject(&self, img: &RgbImage) -> Option<FoundFace> {
        self.pipeline.find_faces(img).unwrap().into_iter().next()
    }

    fn embed(&self, img: &RgbImage, face: &FoundFace) -> Vec<f32> {
        self.embedder
            .embed_all(&[&cut_chip(img, face)])
            .unwrap()
            .remove(0)
    }
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    twin_tests::euclidean(a, b) as f32
}

/// A media photo scaled to [`PHOTO_SIDE`] on its longer side.
fn photo(name: &str) -> RgbImage {
    let path = twin_tests::data_dir().join("media").join(name);
    let img = twin_faces::imageio::decode_file(&path, &Default::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (w, h) = img.dimensions();
    let f = PHOTO_SIDE as f64 / w.max(h) as f64;
    imageops::resize(
        &img,
        (w as f64 * f).round() as u32,
        (h as f64 * f).round() as u32,
        imageops::FilterType::Triangle,
    )
}

/// `img` turned by `degrees` counter-clockwise about its centre onto a canvas that holds all of
/// it (black outside), bilinear; and the map from `img`'s coordinates to the canvas's.
fn turned(img: &RgbImage, degrees: f64) -> (RgbImage, impl Fn(DPoint) -> DPoint) {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let (s, c) = degrees.to_radians().sin_cos();
    let cw = (w * c.abs() + h * s.abs()).ceil();
    let ch = (w * s.abs() + h * c.abs()).ceil();
    let (cx, cy) = ((w - 1.0) / 2.0, (h - 1.0) / 2.0);
    let (ox, oy) = ((cw - 1.0) / 2.0, (ch - 1.0) / 2.0);
    let canvas = RgbImage::from_fn(cw as u32, ch as u32, |x, y| {
        let (dx, dy) = (x as f64 - ox, y as f64 - oy);
        let (sx, sy) = (c * dx - s * dy + cx, s * dx + c * dy + cy);
        if sx < -0.5 || sy < -0.5 || sx > w - 0.5 || sy > h - 0.5 {
            return Rgb([0, 0, 0]);
        }
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let at = |x: f64, y: f64| {
            img.get_pixel(x.clamp(0.0, w - 1.0) as u32, y.clamp(0.0, h - 1.0) as u32)
                .0
        };
        let (a, b) = (at(x0, y0), at(x0 + 1.0, y0));
        let (d, e) = (at(x0, y0 + 1.0), at(x0 + 1.0, y0 + 1.0));
        Rgb(std::array::from_fn(|k| {
            let top = a[k] as f64 * (1.0 - fx) + b[k] as f64 * fx;
            let bottom = d[k] as f64 * (1.0 - fx) + e[k] as f64 * fx;
            (top * (1.0 - fy) + bottom * fy).round() as u8
        }))
    });
    let forward = move |p: DPoint| {
        let (dx, dy) = (p.x - cx, p.y - cy);
        DPoint::new(c * dx + s * dy + ox, -s * dx + c * dy + oy)
    };
    (canvas, forward)
}

/// A 640×480 scene without a face: one grey, or a texture (waves and noise, fixed seed).
fn scene(textured: bool) -> RgbImage {
    if !textured {
        return RgbImage::from_pixel(640, 480, Rgb([128, 128, 128]));
    }
    let mut state = 12345u64;
    RgbImage::from_fn(640, 480, |x, y| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = ((state >> 33) % 60) as f64;
        let (x, y) = (x as f64, y as f64);
        let v =
            110.0 + 40.0 * (x / 23.0).sin() * (y / 37.0).cos() + 25.0 * ((x + 2.0 * y) / 9.0).sin();
        Rgb([
            (v + n - 30.0).clamp(0.0, 255.0) as u8,
            (v * 0.9 + n * 0.5).clamp(0.0, 255.0) as u8,
            (v * 0.7 + 20.0).clamp(0.0, 255.0) as u8,
        ])
    })
}

/// The square of `img` 2.4 times the side of `face`'s box around it (cut at the photo's edge),
/// scaled so that the box is `side` pixels wide, pasted into `scene` at (`x`, `y`).
fn small_face_in(
    scene: &mut RgbImage,
    img: &RgbImage,
    face: &FoundFace,
    side: u32,
    x: i64,
    y: i64,
) {
    let r = face.rect;
    let s = r.width() as f64;
    let (cx, cy) = (
        (r.left + r.right) as f64 / 2.0,
        (r.top + r.bottom) as f64 / 2.0,
    );
    let x0 = (cx - 1.2 * s).max(0.0) as u32;
    let y0 = (cy - 1.2 * s).max(0.0) as u32;
    let x1 = ((cx + 1.2 * s) as u32).min(img.width());
    let y1 = ((cy + 1.2 * s) as u32).min(img.height());
    let crop = imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image();
    let f = side as f64 / s;
    let small = imageops::resize(
        &crop,
        ((x1 - x0) as f64 * f).round() as u32,
        ((y1 - y0) as f64 * f).round() as u32,
        imageops::FilterType::Triangle,
    );
    imageops::replace(scene, &small, x, y);
}

/// Largest distance between found landmarks and the expected ones, over the face's box side.
fn landmark_error(found: &[Point; 5], expected: &[DPoint; 5], side: f64) -> f64 {
    found
        .iter()
        .zip(expected)
        .map(|(f, e)| ((f.x as f64 - e.x).powi(2) + (f.y as f64 - e.y).powi(2)).sqrt())
        .fold(0.0, f64::max)
        / side
}

/// One turned photo through `kit`: the path, the distance from `reference` and the landmark
/// error against the upright face's landmarks turned the same way (None when nothing is found).
fn turned_case(
    kit: &Kit,
    img: &RgbImage,
    upright: &FoundFace,
    reference: &[f32],
    degrees: f64,
) -> Option<(FaceSource, f32, f64)> {
    let (canvas, forward) = turned(img, degrees);
    let face = kit.subject(&canvas)?;
    let expected = upright.landmarks.map(|p| forward(DPoint::from(p)));
    Some((
        face.source,
        distance(reference, &kit.embed(&canvas, &face)),
        landmark_error(&face.landmarks, &expected, upright.rect.width() as f64),
    ))
}

#[test]
fn photos_turned_up_to_30_degrees_give_the_upright_face() {
    let kit = Kit::open(&PipelineOptions::default());
    let mut worst = (0.0f32, 0.0f64);
    for name in PHOTOS {
        let img = photo(name);
        let upright = kit.subject(&img).expect("the upright photo has a face");
        let reference = kit.embed(&img, &upright);
        for degrees in ANGLES {
            let (source, d, err) = turned_case(&kit, &img, &upright, &reference, degrees)
                .unwrap_or_else(|| panic!("{name} turned {degrees}°: no face"));
            eprintln!("turned {name} {degrees:>4}°: {source:?}, distance {d:.4}, landmarks off by {err:.3} of the box");
            assert!(d <= TURNED_BOUND, "{name} turned {degrees}°: distance {d}");
            assert!(
                err <= LANDMARK_BOUND,
                "{name} turned {degrees}°: landmarks {err}"
            );
            worst = (worst.0.max(d), worst.1.max(err));
        }
    }
    eprintln!(
        "turned photos: worst distance {:.4}, worst landmark error {:.3}",
        worst.0, worst.1
    );
}

/// Without dlib's CNN (which finds most of the tilted faces of these photos before the rotated
/// search runs), the upright cascade misses the faces tilted most; the rotated search finds
/// them, their landmarks mapped back onto the photo. (The cascade alone finds
/// lin-manuel-miranda.png turned 30° upright, with a box the predictor cannot place a face
/// tilted that much in: distance 0.74. The default pipeline's CNN box rescues it, 0.032, see
/// above; faces found upright are not turned, so that gap is printed here, not asserted.)
#[test]
fn the_rotated_search_finds_the_faces_the_upright_cascade_misses() {
    let cascade_only = PipelineOptions {
        cnn_fallback: false,
        cnn_boxes: false,
        ..PipelineOptions::default()
    };
    let upright_only = Kit::open(&PipelineOptions {
        rotations: Vec::new(),
        ..cascade_only.clone()
    });
    let kit = Kit::open(&cascade_only);
    let (mut missed, mut rotated) = (0, 0);
    for name in PHOTOS {
        let img = photo(name);
        let upright = kit.subject(&img).expect("the upright photo has a face");
        let reference = kit.embed(&img, &upright);
        for degrees in ANGLES {
            let without = turned_case(&upright_only, &img, &upright, &reference, degrees);
            let (source, d, err) = turned_case(&kit, &img, &upright, &reference, degrees)
                .unwrap_or_else(|| panic!("{name} turned {degrees}°: no face"));
            eprintln!(
                "cascade only, {name} {degrees:>4}°: {source:?}, distance {d:.4}, landmarks off by {err:.3} of the box (upright search alone: {})",
                match without {
                    Some((_, d, _)) => format!("{d:.4}"),
                    None => "no face".to_string(),
                }
            );
            if without.is_none() {
                missed += 1;
                assert_eq!(source, FaceSource::Rotated, "{name} turned {degrees}°");
            }
            if source == FaceSource::Rotated {
                rotated += 1;
                assert!(d <= TURNED_BOUND, "{name} turned {degrees}°: distance {d}");
                assert!(
                    err <= LANDMARK_BOUND,
                    "{name} turned {degrees}°: landmarks {err}"
                );
            }
        }
    }
    eprintln!("cascade only: {missed} turned photos missed upright, {rotated} found by the rotated search");
    assert!(
        missed > 0,
        "the upright cascade found every turned face: the test shows nothing"
    );
}

#[test]
fn faces_of_40_to_60_pixels_are_found() {
    let kit = Kit::open(&PipelineOptions::default());
    for name in PHOTOS {
        let img = photo(name);
        let upright = kit.subject(&img).expect("the upright photo has a face");
        let reference = kit.embed(&img, &upright);
        for side in [40, 48, 60] {
            for textured in [false, true] {
                let mut canvas = scene(textured);
                small_face_in(&mut canvas, &img, &upright, side, 380, 150);
                let face = kit
                    .subject(&canvas)
                    .unwrap_or_else(|| panic!("{name} at {side} px: no face"));
                let d = distance(&reference, &kit.embed(&canvas, &face));
                let bg = if textured { "textured" } else { "plain" };
                eprintln!(
                    "small {name} {side} px, {bg}: {:?}, box {} px, distance {d:.4}",
                    face.source,
                    face.rect.width()
                );
                // The face, not something else in the scene: its box holds the pasted face.
                let centre = (face.rect.left + face.rect.right) / 2;
                assert!(
                    (380..380 + 3 * side as i64).contains(&centre),
                    "{name}: {face:?}"
                );
                assert!(d <= SMALL_BOUND, "{name} at {side} px, {bg}: distance {d}");
            }
        }
    }
}

/// A face of 50 px tilted by 30° is too tilted for the cascade and below the CNN fallback's
/// 80 px window (in a 640 px photo the CNN searches the photo itself): the rotated search
/// finds it, or now and then the CNN, which sometimes sees a face a little under its window.
/// Where the cascade finds it without turning (lin-manuel-miranda.png turned 30°, found in the
/// padded photo), the predictor cannot place a face tilted that much from an upright box
/// (distance 0.70): the face is placed again in the photo turned around it, where its eyes
/// come level (`FacePipeline::place_tilted`), and counts as found by the rotated search.
/// Every one of the six must be found tilted and placed upright.
#[test]
fn small_tilted_faces_are_found_by_the_rotated_search() {
    let kit = Kit::open(&PipelineOptions::default());
    let (mut tilted, mut rotated) = (0, 0);
    for name in PHOTOS {
        let img = photo(name);
        let upright = kit.subject(&img).expect("the upright photo has a face");
        let reference = kit.embed(&img, &upright);
        let mut canvas = scene(false);
        small_face_in(&mut canvas, &img, &upright, 50, 300, 150);
        for degrees in [-30.0, 30.0] {
            let (photo, _) = turned(&canvas, degrees);
            let face = kit
                .subject(&photo)
                .unwrap_or_else(|| panic!("{name} 50 px turned {degrees}°: no face"));
            let d = distance(&reference, &kit.embed(&photo, &face));
            eprintln!(
                "small turned {name} 50 px {degrees:>4}°: {:?}, distance {d:.4}",
                face.source
            );
            if matches!(face.source, FaceSource::Rotated | FaceSource::Cnn) {
                tilted += 1;
                rotated += usize::from(face.source == FaceSource::Rotated);
                assert!(
                    d <= SMALL_TURNED_BOUND,
                    "{name} 50 px turned {degrees}°: distance {d}"
                );
            }
        }
    }
    assert_eq!(tilted, 6, "{tilted} of 6 found tilted");
    assert!(rotated >= 1, "none of the 6 found by the rotated search");
}

#[test]
fn scenes_without_a_face_stay_without_one() {
    let kit = Kit::open(&PipelineOptions::default());
    for textured in [false, true] {
        let img = scene(textured);
        let start = Instant::now();
        let faces = kit.pipeline.find_faces(&img).unwrap();
        eprintln!(
            "no face, {}: {} faces in {:.0} ms (debug build)",
            if textured { "textured" } else { "plain" },
            faces.len(),
            start.elapsed().as_secs_f64() * 1e3
        );
        assert!(faces.is_empty(), "{faces:?}");
    }
}
