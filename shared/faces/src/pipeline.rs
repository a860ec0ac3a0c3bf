//! From a photo or a video frame to faces: detection, the box, landmarks and chips.
//!
//! [`FacePipeline::find_faces`] runs the cascade and places each face with dlib's CNN face
//! detector searching a small square around it: the CNN's box is the convention dlib's 5-point
//! predictor was made for (when the CNN sees no face there, the cascade's box mapped to dlib's
//! convention is kept). In a small photo the CNN also searches the whole photo for turned faces
//! the cascade misses, and so it does in a large photo, scaled down. Images that are already a
//! tight face crop (a gallery's 112×112 or 150×150 cuts) give the cascade too little context,
//! so when nothing is found the image is padded and searched again; then the CNN searches the
//! photo alone. The first searches look
//! for faces of the detector's `min_face` (60 px) and up; a photo where they find nothing is
//! searched once more from [`PipelineOptions::small_face`] (40 px). A photo with still nothing
//! found is turned in its plane by a few angles ([`PipelineOptions::rotations`]) and searched
//! again, for faces tilted beyond what the cascade and the CNN see, their landmarks mapped back
//! onto the photo (module [`crate::rotate`]). A small, nearly square image with still nothing
//! found is taken whole as the face. Every face says which of these
//! paths found it ([`FaceSource`]); the photo's subject comes first ([`prominence`]).

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use serde::Serialize;

use super::chip::copy_region;
use super::cnn::{CnnDetection, CnnError, CnnFaceDetector};
use super::detect::{
    to_dlib_rect, CascadeDetector, DetectError, Detection, DetectorParams, DEFAULT_CASCADE,
};
use super::geometry::DPoint;
use super::quality::pose;
use super::rotate::{turn, Turned};
use super::{face_chip, Point, Rect, ShapePredictor, ShapePredictorError};
use twin_model::embed::EmbedderOptions;

/// File name of the 5-point predictor in the models folder.
pub const SHAPE_PREDICTOR_FILE: &str = "shape_predictor_5_face_landmarks.dat";

/// How a face was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaceSource {
    /// The cascade found it in the image as given (its box placed by the CNN where the CNN
    /// sees the face).
    Detected,
    /// The cascade found it once the image was padded (a tight crop).
    Padded,
    /// dlib's CNN face detector found it where the cascade did not: in a photo where the
    /// cascade found nothing, even padded, or a turned face in a small or a large photo (its
    /// box is dlib's own).
    Cnn,
    /// Nothing was found upright; the cascade found it in the photo turned in its plane
    /// ([`PipelineOptions::rotations`]); or the cascade found it upright, but tilted too far
    /// for the landmarks, and it was placed again in the part of the photo around it turned
    /// ([`FacePipeline::place_tilted`]). Its landmarks are mapped back onto the photo, so the
    /// chip cut from them is upright; its boxes are the boxes around the turned ones.
    Rotated,
    /// Nothing was detected; the image is a small tight crop and was taken whole as the face.
    WholeImage,
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The cascade file.
    pub cascade: PathBuf,
    /// Cascade parameters.
    pub detector: DetectorParams,
    /// When nothing is found, even in the padded photo, the photo is searched again for faces
    /// down to this many pixels (0 disables it): the first search stops at the detector's
    /// larger `min_face`, which costs less on every photo with a face of ordinary size.
    pub small_face: i32,
    /// Padding added on each side when nothing is found, as a fraction of the image side
    /// (0 disables the padded search).
    pub tight_crop_padding: f64,
    /// Largest side of an image that may be taken whole as a face when nothing is found
    /// (0 disables it).
    pub whole_image_max_side: u32,
    /// Smallest side of an image that may be taken whole as a face: below it there is too
    /// little of a face to cut a chip from.
    pub whole_image_min_side: u32,
    /// When the cascade finds nothing in the photo, search it with dlib's CNN face detector
    /// (`mmod_human_face_detector.dat`) after the padded search, before the small-face and
    /// whole-image paths.
    pub cnn_fallback: bool,
    /// Place every face the cascade finds with dlib's CNN box: the CNN searches a small
    /// region around the cascade's face, and its box (the convention the 5-point predictor
    /// was made for) replaces the one mapped from the cascade's. Needs `cnn_fallback`.
    pub cnn_boxes: bool,
    /// When nothing is found upright (even padded, by the CNN or as a small face), the photo is
    /// turned by each of these angles (degrees, counter-clockwise as seen) and searched by the
    /// cascade; the angle whose strongest face has the most neighbours gives the faces
    /// ([`FaceSource::Rotated`]). Empty disables it.
    pub rotations: Vec<f64>,
    /// A photo larger than the cascade's `max_side` (which the cascade searches scaled down)
    /// is also searched whole by the CNN, scaled to this many pixels on its longer side, and
    /// the faces the cascade missed (turned, bowed) are added; 0 disables it. The CNN then
    /// finds faces down to about 1/11 of the photo's longer side, the cascade's own range.
    pub large_photo_cnn_side: u32,
    /// Order the faces found with the photo's subject first ([`prominence`]: size weighed by
    /// nearness to the centre) instead of the largest first.
    pub subject_first: bool,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            cascade: PathBuf::from(DEFAULT_CASCADE),
            detector: DetectorParams::default(),
            small_face: SMALL_FACE,
            tight_crop_padding: 0.5,
            whole_image_max_side: 320,
            whole_image_min_side: WHOLE_MIN_SIDE,
            cnn_fallback: true,
            cnn_boxes: true,
            rotations: ROTATIONS.to_vec(),
            large_photo_cnn_side: LARGE_PHOTO_CNN_SIDE,
            subject_first: true,
        }
    }
}

/// Why the pipeline could not run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Detection failed.
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// The landmark model could not be loaded.
    #[error(transparent)]
    Landmarks(#[from] ShapePredictorError),
    /// The CNN face detector could not be loaded or run.
    #[error(transparent)]
    Cnn(#[from] CnnError),
}

/// A face in an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoundFace {
    /// The detector's box in the input image: x, y, width, height. For a face found in the
    /// turned photo ([`FaceSource::Rotated`]), the upright box around the cascade's box turned
    /// back onto the photo (larger than the face by up to cos + sin of the angle: 1.33 at 25°).
    #[serde(rename = "box")]
    pub bbox: [i64; 4],
    /// The box in dlib's convention the landmarks were placed from (input image coordinates).
    /// For [`FaceSource::Rotated`], the upright box around that box turned back onto the photo
    /// (trimmed to it): the landmarks were placed in the turned photo, not from this box.
    pub rect: Rect,
    /// The 5 landmarks (input image coordinates): outer and inner corners of the eyes, nose base.
    pub landmarks: [Point; 5],
    /// Which path found it.
    pub source: FaceSource,
}

/// Detection, box mapping and landmarks, loaded once and shared.
pub struct FacePipeline {
    detector: CascadeDetector,
    cnn: Option<CnnFaceDetector>,
    predictor: ShapePredictor,
    options: PipelineOptions,
}

impl FacePipeline {
    /// Loads the cascade and the 5-point predictor from `models_dir` (`vendor/models`).
    pub fn open(models_dir: &Path, options: &PipelineOptions) -> Result<Self, PipelineError> {
        let detector = CascadeDetector::open(&options.cascade, options.detector.clone())?;
        let predictor = ShapePredictor::open(&models_dir.join(SHAPE_PREDICTOR_FILE))?;
        let cnn = if options.cnn_fallback {
            Some(CnnFaceDetector::open(
                models_dir,
                &EmbedderOptions { threads: 1 },
            )?)
        } else {
            None
        };
        Ok(FacePipeline {
            detector,
            cnn,
            predictor,
            options: options.clone(),
        })
    }

    /// The options in use.
    pub fn options(&self) -> &PipelineOptions {
        &self.options
    }

    /// Every face in `img`: the photo's subject first with [`PipelineOptions::subject_first`]
    /// (the photo options), else the largest first (the video options).
    pub fn find_faces(&self, img: &RgbImage) -> Result<Vec<FoundFace>, PipelineError> {
        self.find_faces_with(img, true)
    }

    /// Like [`FacePipeline::find_faces`]; `whole_image` false turns the whole-image fallback
    /// off (a photo someone asks to match must show a detectable face: a small faceless
    /// picture is not taken whole as one).
    pub fn find_faces_with(
        &self,
        img: &RgbImage,
        whole_image: bool,
    ) -> Result<Vec<FoundFace>, PipelineError> {
        let mut faces = self.search(img, whole_image)?;
        if self.options.subject_first {
            let (w, h) = img.dimensions();
            faces.sort_by(|a, b| prominence(b, w, h).total_cmp(&prominence(a, w, h)));
        }
        Ok(faces)
    }

    /// The searches of [`FacePipeline::find_faces_with`] in turn, largest face first.
    fn search(&self, img: &RgbImage, whole_image: bool) -> Result<Vec<FoundFace>, PipelineError> {
        let (w, h) = img.dimensions();
        if w == 0 || h == 0 {
            return Ok(Vec::new());
        }
        let scale = self.detector.detection_scale(w.max(h));
        let found = self.detector.detect_at(img, scale)?;
        if !found.is_empty() {
            let mut faces = self.place_all(img, &found)?;
            self.add_turned_faces(img, &mut faces)?;
            return Ok(faces);
        }
        if self.options.tight_crop_padding > 0.0 {
            let (padded, pad) = pad_image(img, self.options.tight_crop_padding);
            let found = self.detector.detect_at(&padded, scale)?;
            if !found.is_empty() {
                let p = pad as i64;
                let unpadded = found.iter().map(|d| Detection {
                    x: d.x - p,
                    y: d.y - p,
                    ..*d
                });
                let mut faces = unpadded
                    .map(|d| self.place(img, &d, FaceSource::Padded))
                    .collect::<Result<Vec<_>, _>>()?;
                self.add_turned_faces(img, &mut faces)?;
                return Ok(faces);
            }
        }
        // After the padded search, which keeps the boxes face_recognition's HOG pipeline gives
        // for faces cut by the photo's edge (end_to_end_photos: 0.0916 against 0.1065 from the
        // CNN's box on obama_partial_face).
        if let Some(cnn) = &self.cnn {
            let mut found = cnn.detect(img, cnn_scale(w.max(h)))?;
            if !found.is_empty() {
                found.sort_by_key(|d| std::cmp::Reverse(d.rect.width() * d.rect.height()));
                return Ok(found
                    .iter()
                    .map(|d| {
                        let rect = trim_to_image(d.rect, w, h);
                        FoundFace {
                            bbox: [d.rect.left, d.rect.top, d.rect.width(), d.rect.height()],
                            rect,
                            landmarks: self.predictor.predict(img, rect),
                            source: FaceSource::Cnn,
                        }
                    })
                    .collect());
            }
        }
        // After the padded search: in a tight crop a box this small is more often something
        // else than the face the padding finds.
        let small = self.options.small_face;
        if small > 0 && small < self.options.detector.min_face {
            let found = self.detector.detect_sized(img, scale, small)?;
            if !found.is_empty() {
                return self.place_all(img, &found);
            }
        }
        let faces = self.search_rotated(img, scale)?;
        if !faces.is_empty() {
            return Ok(faces);
        }
        if whole_image
            && w.max(h) <= self.options.whole_image_max_side
            && w.min(h) >= self.options.whole_image_min_side
            && is_squarish(w, h)
            && has_contrast(img)
        {
            let rect = whole_image_rect(w, h);
            return Ok(vec![FoundFace {
                bbox: [0, 0, w as i64, h as i64],
                rect,
                landmarks: self.predictor.predict(img, rect),
                source: FaceSource::WholeImage,
            }]);
        }
        Ok(Vec::new())
    }

    /// Why [`FacePipeline::find_faces`] found no face in `img`, in words for the user.
    pub fn no_face_reason(&self, img: &RgbImage) -> String {
        let (w, h) = img.dimensions();
        let smallest = match self.options.small_face {
            n if n > 0 => n.min(self.options.detector.min_face),
            _ => self.options.detector.min_face,
        } as u32;
        if w.min(h) < smallest {
            format!(
                "the photo is {w}×{h} pixels: too small to hold a face (at least {smallest} pixels on each side)"
            )
        } else {
            "no face was found: the face must be clearly visible, facing the camera".to_string()
        }
    }

    /// [`FacePipeline::place`] for faces found in the photo as given.
    fn place_all(
        &self,
        img: &RgbImage,
        found: &[Detection],
    ) -> Result<Vec<FoundFace>, PipelineError> {
        found
            .iter()
            .map(|d| self.place(img, d, FaceSource::Detected))
            .collect()
    }

    /// Maps a detection to dlib's box and places the landmarks. Like dlib, the predictor and
    /// the chip read black outside the image, whatever padding the detection needed.
    fn place(
        &self,
        img: &RgbImage,
        d: &Detection,
        source: FaceSource,
    ) -> Result<FoundFace, PipelineError> {
        let mapped = to_dlib_rect(d, &self.options.detector.mapping);
        // A face the cascade found only in the padded photo crosses the photo's edge: there
        // the mapped box stays nearer face_recognition's HOG box than the CNN's (end_to_end_photos:
        // obama_partial_face.jpg 0.0916 from its embedding, 0.1121 with the CNN's box).
        let upright = self.cnn_seen(img, mapped)?;
        let placed = match source {
            FaceSource::Detected => upright.map(|seen| seen.rect),
            _ => None,
        };
        // A face the CNN does not see upright, or a padded photo's face (a tight crop or a
        // face cut by the edge, rare and cheap to search), may be tilted beyond what the
        // predictor follows from an upright box.
        if source == FaceSource::Padded || upright.is_none() {
            let beat = upright.map_or(0.0, |seen| seen.score);
            if let Some(face) = self.place_tilted(img, d, mapped, beat)? {
                return Ok(face);
            }
        }
        let rect = trim_to_image(placed.unwrap_or(mapped), img.width(), img.height());
        Ok(FoundFace {
            bbox: [d.x, d.y, d.w, d.h],
            rect,
            landmarks: self.predictor.predict(img, rect),
            source,
        })
    }
}

impl FacePipeline {
    /// In a small photo (up to [`CNN_UPSAMPLE_MAX_SIDE`]: a portrait, an avatar, a crop) the
    /// CNN also searches the whole photo, at a small cost there, and the faces it finds that
    /// the cascade did not (turned faces, which a frontal cascade misses while it finds a
    /// smaller face beside them) are added; so it does in a photo larger than the cascade's
    /// `max_side`, scaled to [`PipelineOptions::large_photo_cnn_side`] (a bowed or turned head
    /// in a group photo). The faces are then ordered largest first.
    fn add_turned_faces(
        &self,
        img: &RgbImage,
        faces: &mut Vec<FoundFace>,
    ) -> Result<(), PipelineError> {
        let Some(cnn) = self.cnn.as_ref().filter(|_| self.options.cnn_boxes) else {
            return Ok(());
        };
        let (w, h) = img.dimensions();
        let longer = w.max(h);
        let scale = if longer <= CNN_UPSAMPLE_MAX_SIDE {
            1.0
        } else if self.options.large_photo_cnn_side > 0 && longer > self.options.detector.max_side {
            (self.options.large_photo_cnn_side as f64 / longer as f64).min(1.0)
        } else {
            return Ok(());
        };
        for d in cnn.detect(img, scale)? {
            let rect = trim_to_image(d.rect, w, h);
            if faces.iter().all(|f| f.rect.iou(&rect) < REFINE_MIN_IOU) {
                faces.push(FoundFace {
                    bbox: [d.rect.left, d.rect.top, d.rect.width(), d.rect.height()],
                    rect,
                    landmarks: self.predictor.predict(img, rect),
                    source: FaceSource::Cnn,
                });
            }
        }
        faces.sort_by_key(|f| std::cmp::Reverse(f.rect.width() * f.rect.height()));
        Ok(())
    }

    /// The rotated search: the photo, scaled to the cascade's detection scale, is turned by
    /// each of [`PipelineOptions::rotations`] (on a canvas that holds all of it, filled with
    /// its mean colour) and searched by the cascade from its `min_face`; the faces of the best
    /// angle are placed in the turned image (dlib's box from the CNN where it sees the face
    /// there, as for upright faces), and their landmarks and boxes mapped back onto the photo.
    fn search_rotated(&self, img: &RgbImage, scale: f64) -> Result<Vec<FoundFace>, PipelineError> {
        if self.options.rotations.is_empty() {
            return Ok(Vec::new());
        }
        let fill = mean_colour(img);
        // Every angle is searched and the one whose strongest face has the most neighbours
        // wins: a face turned the wrong way is seldom found, but a false box sometimes is
        // (biden.jpg tilted 20° and turned 25° the wrong way: a false box with 12 neighbours;
        // the faces turned the right way had 20–91).
        let mut best: Option<(i32, Turned, Vec<Detection>)> = None;
        for &degrees in &self.options.rotations {
            let turned = turn(img, degrees, scale, fill)?;
            let found = self.detector.detect_at(&turned.image, 1.0)?;
            let Some(strongest) = found.iter().map(|d| d.neighbors).max() else {
                continue;
            };
            if best.as_ref().is_none_or(|(n, _, _)| strongest > *n) {
                best = Some((strongest, turned, found));
            }
        }
        let Some((_, turned, found)) = best else {
            return Ok(Vec::new());
        };
        let (w, h) = img.dimensions();
        found
            .iter()
            .map(|d| {
                let mapped = to_dlib_rect(d, &self.options.detector.mapping);
                let rect = self.cnn_box(&turned.image, mapped)?.unwrap_or(mapped);
                let landmarks = self
                    .predictor
                    .predict(&turned.image, rect)
                    .map(|p| turned.point_to_photo(p));
                let around =
                    turned.rect_to_photo(Rect::new(d.x, d.y, d.x + d.w - 1, d.y + d.h - 1));
                Ok(FoundFace {
                    bbox: [around.left, around.top, around.width(), around.height()],
                    rect: trim_to_image(turned.rect_to_photo(rect), w, h),
                    landmarks,
                    source: FaceSource::Rotated,
                })
            })
            .collect()
    }

    /// A face the cascade found upright but the CNN does not see there (`mapped`, the cascade's
    /// box mapped to dlib's) may be tilted further than the 5-point predictor can follow from
    /// an upright box (a 50 px face turned 30°: 0.70 from its upright embedding). The part of
    /// the photo around it, [`TILT_CONTEXT`] times its side, is turned by each of
    /// [`PipelineOptions::rotations`]; in the first turn where the CNN sees the face
    /// ([`FacePipeline::cnn_box`] on the mapped box turned with it) its landmarks are placed
    /// in the turned part and mapped back onto the photo, so the chip cut from them is
    /// upright ([`FaceSource::Rotated`]). None when the CNN sees it in no turn either (the
    /// upright placement stands).
    fn place_tilted(
        &self,
        img: &RgbImage,
        d: &Detection,
        mapped: Rect,
        beat: f32,
    ) -> Result<Option<FoundFace>, PipelineError> {
        if self.cnn.is_none() || !self.options.cnn_boxes {
            return Ok(None);
        }
        let side = mapped.width().max(mapped.height()).max(1) as f64;
        let (cx, cy) = (
            (mapped.left + mapped.right) as f64 / 2.0,
            (mapped.top + mapped.bottom) as f64 / 2.0,
        );
        let half = (side * TILT_CONTEXT / 2.0).round() as i64;
        let (x0, y0) = (cx.round() as i64 - half, cy.round() as i64 - half);
        let part = copy_region(img, Rect::new(x0, y0, x0 + 2 * half, y0 + 2 * half));
        let fill = mean_colour(&part);
        let centre = DPoint::new(cx - x0 as f64, cy - y0 as f64);
        for &degrees in &self.options.rotations {
            let turned = turn(&part, degrees, 1.0, fill)?;
            let c = turned.to_canvas.apply(centre);
            let half_side = (side - 1.0) / 2.0;
            let box_turned = Rect::new(
                (c.x - half_side).round() as i64,
                (c.y - half_side).round() as i64,
                (c.x + half_side).round() as i64,
                (c.y + half_side).round() as i64,
            );
            let seen = self.cnn_seen(&turned.image, box_turned)?;
            let Some(rect) = seen.filter(|seen| seen.score > beat).map(|seen| seen.rect) else {
                continue;
            };
            // The turn must bring the eyes level: turned the wrong way, or turned when it was
            // upright, the face leans by about the turn (the face set's upright tight crops:
            // 10–30° at a 25° turn; the 50 px face tilted 30°: 4° once turned back by 25°).
            let in_turn = self.predictor.predict(&turned.image, rect);
            if pose(&in_turn).is_none_or(|p| p.roll.abs() > TILT_LEVEL) {
                continue;
            }
            let shift = |p: Point| Point::new(p.x + x0, p.y + y0);
            let landmarks = in_turn.map(|p| shift(turned.point_to_photo(p)));
            let back = turned.rect_to_photo(rect);
            let back = Rect::new(
                back.left + x0,
                back.top + y0,
                back.right + x0,
                back.bottom + y0,
            );
            return Ok(Some(FoundFace {
                bbox: [d.x, d.y, d.w, d.h],
                rect: trim_to_image(back, img.width(), img.height()),
                landmarks,
                source: FaceSource::Rotated,
            }));
        }
        Ok(None)
    }

    /// dlib's CNN box on the face whose box mapped from the cascade's is `mapped`: the CNN
    /// searches the square around it [`REFINE_CONTEXT`] times its side, scaled so that the face
    /// is [`REFINE_FIT`] windows wide, over [`REFINE_LEVELS`] pyramid levels, and the detection
    /// overlapping `mapped` most (intersection over union at least [`REFINE_MIN_IOU`]) gives
    /// the box. None when the CNN sees no face there (the mapped box is kept).
    fn cnn_box(&self, img: &RgbImage, mapped: Rect) -> Result<Option<Rect>, PipelineError> {
        Ok(self.cnn_seen(img, mapped)?.map(|seen| seen.rect))
    }

    /// The CNN's detection behind [`FacePipeline::cnn_box`], with its score.
    fn cnn_seen(
        &self,
        img: &RgbImage,
        mapped: Rect,
    ) -> Result<Option<CnnDetection>, PipelineError> {
        let Some(cnn) = self.cnn.as_ref().filter(|_| self.options.cnn_boxes) else {
            return Ok(None);
        };
        let side = mapped.width().max(mapped.height()).max(1) as f64;
        let (cx, cy) = (
            (mapped.left + mapped.right) as f64 / 2.0,
            (mapped.top + mapped.bottom) as f64 / 2.0,
        );
        let half = side * REFINE_CONTEXT / 2.0;
        let region = Rect::new(
            (cx - half).round() as i64,
            (cy - half).round() as i64,
            (cx + half).round() as i64,
            (cy + half).round() as i64,
        );
        let scale = cnn.window() as f64 * REFINE_FIT / side;
        let found = cnn.detect_region(img, region, scale, REFINE_LEVELS)?;
        Ok(found
            .iter()
            .map(|d| (d.rect.iou(&mapped), *d))
            .filter(|(overlap, _)| *overlap >= REFINE_MIN_IOU)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, seen)| seen))
    }
}

/// How much a face looks like the photo's subject: its area, weighed down the farther its
/// centre is from the photo's (halfway to a corner, a face counts for half its area), since a
/// photo is framed on its subject. A face beside the subject and as large (a partner in a
/// portrait, a face cut by the photo's edge) no longer comes first by a few pixels.
fn prominence(face: &FoundFace, w: u32, h: u32) -> f64 {
    let r = &face.rect;
    let area = (r.width() * r.height()) as f64;
    let (cx, cy) = (
        (r.left + r.right) as f64 / 2.0,
        (r.top + r.bottom) as f64 / 2.0,
    );
    let (hw, hh) = (w as f64 / 2.0, h as f64 / 2.0);
    let off = ((cx - hw).powi(2) + (cy - hh).powi(2)).sqrt() / (hw * hw + hh * hh).sqrt().max(1.0);
    area * (1.0 - off.min(1.0))
}

/// A face box cut back to the photo, as `face_recognition` cuts dlib's detections before it
/// places the landmarks (`_trim_css_to_bounds`: left and top at least 0, right and bottom at
/// most the width and height). It only changes faces that cross the photo's edge.
pub fn trim_to_image(r: Rect, width: u32, height: u32) -> Rect {
    Rect::new(
        r.left.max(0),
        r.top.max(0),
        r.right.min(width as i64),
        r.bottom.min(height as i64),
    )
}

/// The dlib-exact 150×150 chip of a face found in `img` (the image `find_faces` was given).
pub fn cut_chip(img: &RgbImage, face: &FoundFace) -> RgbImage {
    face_chip(img, &face.landmarks)
}

/// Pads `img` on every side by `fraction` of its longer side with its mean colour; returns the
/// padded image and the padding in pixels.
pub fn pad_image(img: &RgbImage, fraction: f64) -> (RgbImage, u32) {
    let pad = (img.width().max(img.height()) as f64 * fraction).round() as u32;
    pad_image_by(img, pad)
}

/// Pads `img` by `pad` pixels on every side with its mean colour.
pub fn pad_image_by(img: &RgbImage, pad: u32) -> (RgbImage, u32) {
    let (w, h) = img.dimensions();
    let mean = mean_colour(img);
    let mut out = RgbImage::from_pixel(w + 2 * pad, h + 2 * pad, mean);
    image::imageops::replace(&mut out, img, pad as i64, pad as i64);
    (out, pad)
}

/// The mean colour of `img` (each channel's mean, truncated).
fn mean_colour(img: &RgbImage) -> Rgb<u8> {
    let n = (img.width() as u64 * img.height() as u64).max(1);
    let mut sum = [0u64; 3];
    for p in img.pixels() {
        for (s, &v) in sum.iter_mut().zip(&p.0) {
            *s += v as u64;
        }
    }
    Rgb([(sum[0] / n) as u8, (sum[1] / n) as u8, (sum[2] / n) as u8])
}

/// Whether the grey levels of `img` vary enough to hold a face (a flat picture does not):
/// standard deviation at least [`WHOLE_MIN_CONTRAST`].
fn has_contrast(img: &RgbImage) -> bool {
    let grey = super::detect::grey_levels(img);
    let n = grey.len().max(1) as f64;
    let mean = grey.iter().map(|&g| g as f64).sum::<f64>() / n;
    let var = grey.iter().map(|&g| (g as f64 - mean).powi(2)).sum::<f64>() / n;
    var.sqrt() >= WHOLE_MIN_CONTRAST
}

fn is_squarish(w: u32, h: u32) -> bool {
    let r = w as f64 / h as f64;
    (0.7..=1.45).contains(&r)
}

/// dlib's box for a tight crop taken whole: the crop's central part. The fractions are dlib's
/// HOG boxes on the face set's crops (see `docs/FACES.md`).
fn whole_image_rect(w: u32, h: u32) -> Rect {
    let (w, h) = (w as f64, h as f64);
    let side = w.min(h) * WHOLE_SCALE;
    let cx = w * 0.5;
    let cy = h * WHOLE_CY;
    let left = (cx - side / 2.0).round() as i64;
    let top = (cy - side / 2.0).round() as i64;
    let s = side.round() as i64;
    Rect::new(left, top, left + s - 1, top + s - 1)
}

/// The scale the CNN detector searches a photo at: twice its size for small photos and tight
/// crops (faces down to 40 px, half the 80 px window, as `face_recognition`'s CNN model does),
/// the photo itself up to [`CNN_MAX_SIDE`], and scaled down to it above.
fn cnn_scale(longer: u32) -> f64 {
    if longer <= CNN_UPSAMPLE_MAX_SIDE {
        2.0
    } else if longer <= CNN_MAX_SIDE {
        1.0
    } else {
        CNN_MAX_SIDE as f64 / longer as f64
    }
}

/// Photos up to this side are searched by the CNN at twice their size.
pub const CNN_UPSAMPLE_MAX_SIDE: u32 = 320;
/// Photos above this side are scaled down to it for the CNN (its cost grows with the area).
pub const CNN_MAX_SIDE: u32 = 800;

/// Longer side a large photo is scaled to for the CNN's whole-photo search
/// ([`PipelineOptions::large_photo_cnn_side`]).
pub const LARGE_PHOTO_CNN_SIDE: u32 = 900;

/// The square the CNN searches around a cascade face, in sides of the face's mapped box
/// (measured on lfw-dev: 2 with 4 levels gave 98.48 %, 1.5 with 3 levels 98.35 %; see
/// `docs/FACES.md`).
pub const REFINE_CONTEXT: f64 = 2.0;
/// Width of the mapped box at the CNN's first level, in detection windows.
pub const REFINE_FIT: f64 = 1.1;
/// Pyramid levels searched around a cascade face: the face from 1.1 to 0.64 windows.
pub const REFINE_LEVELS: usize = 4;
/// Least overlap (intersection over union) for a CNN box to be taken as the same face.
pub const REFINE_MIN_IOU: f64 = 0.3;

/// The part of the photo turned around a face the CNN does not see upright, in sides of its
/// mapped box ([`FacePipeline::place_tilted`]): the CNN's square around it (2 sides) must fit
/// in the turned part.
pub const TILT_CONTEXT: f64 = 3.0;

/// Largest lean of the eyes (degrees) for a face placed in a turned part of the photo to be
/// taken as a tilted face brought upright ([`FacePipeline::place_tilted`]).
pub const TILT_LEVEL: f64 = 8.0;

/// Angles the rotated search turns a photo by, in degrees (see `docs/FACES.md`).
pub const ROTATIONS: [f64; 2] = [-25.0, 25.0];

/// Smallest face looked for when a photo shows none of the detector's `min_face` or more.
pub const SMALL_FACE: i32 = 40;
/// Smallest side of a tight crop taken whole (a smaller picture holds too little of a face).
pub const WHOLE_MIN_SIDE: u32 = 48;
/// Smallest standard deviation of the grey levels of a tight crop taken whole (faces in the
/// face set have 30 or more).
pub const WHOLE_MIN_CONTRAST: f64 = 12.0;
/// Side of dlib's box relative to a tight crop's shorter side.
const WHOLE_SCALE: f64 = 0.79;
/// Centre of dlib's box down a tight crop, as a fraction of its height.
const WHOLE_CY: f64 = 0.60;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_keeps_the_image_in_the_middle() {
        let img = RgbImage::from_pixel(10, 6, Rgb([10, 20, 30]));
        let (p, pad) = pad_image(&img, 0.5);
        assert_eq!(pad, 5);
        assert_eq!(p.dimensions(), (20, 16));
        assert_eq!(p.get_pixel(5, 5), &Rgb([10, 20, 30]));
        assert_eq!(p.get_pixel(0, 0), &Rgb([10, 20, 30]), "mean colour fill");
    }

    #[test]
    fn whole_image_box_is_inside_the_crop() {
        let r = whole_image_rect(112, 112);
        assert!(
            r.left >= 0 && r.right < 112 && r.top >= 0 && r.bottom < 112,
            "{r:?}"
        );
        assert_eq!(r.width(), 88);
    }

    #[test]
    fn a_flat_picture_has_no_contrast() {
        assert!(!has_contrast(&RgbImage::from_pixel(
            100,
            100,
            Rgb([128, 128, 128])
        )));
        let stripes = RgbImage::from_fn(100, 100, |x, _| {
            if (x / 10) % 2 == 0 {
                Rgb([40, 40, 40])
            } else {
                Rgb([200, 200, 200])
            }
        });
        assert!(has_contrast(&stripes));
    }

    fn face_at(left: i64, top: i64, side: i64) -> FoundFace {
        let rect = Rect::new(left, top, left + side - 1, top + side - 1);
        FoundFace {
            bbox: [left, top, side, side],
            rect,
            landmarks: [Point::new(0, 0); 5],
            source: FaceSource::Detected,
        }
    }

    #[test]
    fn the_centred_subject_comes_before_a_larger_face_at_the_edge() {
        // lfw-dev's Susan_Sarandon_0001: the subject 92 px in the middle of a 250 px photo, a
        // 108 px face cut by the left edge.
        let subject = face_at(79, 88, 92);
        let edge = face_at(0, 89, 108);
        assert!(prominence(&subject, 250, 250) > prominence(&edge, 250, 250));
        // Side by side at the same distance from the centre, the larger comes first.
        assert!(
            prominence(&face_at(20, 100, 60), 250, 250)
                > prominence(&face_at(180, 100, 50), 250, 250)
        );
        // Centred, a face counts for its whole area; centred on the photo's corner, for none.
        assert_eq!(prominence(&face_at(100, 100, 51), 250, 250), 51.0 * 51.0);
        assert_eq!(prominence(&face_at(-25, -25, 51), 250, 250), 0.0);
    }

    #[test]
    fn overlap_of_boxes() {
        let a = face_at(0, 0, 10).rect;
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&face_at(20, 20, 10).rect), 0.0);
        let half = a.iou(&face_at(5, 0, 10).rect);
        assert!((half - 50.0 / 150.0).abs() < 1e-12, "{half}");
    }

    #[test]
    fn squarish() {
        assert!(is_squarish(112, 112));
        assert!(is_squarish(150, 150));
        assert!(!is_squarish(300, 100));
    }
}
