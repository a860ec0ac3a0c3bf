//! "Who do I look like?": the faces of a photo, each with its closest identities, ranked by the
//! serving model's head when a trained model serves (`docs/MATCHING.md`).

use std::sync::Arc;

use serde::Serialize;
use twin_core::gallery::Hit;
use twin_core::limits::MAX_K;
use twin_core::media::MAX_PHOTO_BYTES;
use twin_faces::imageio;
use twin_faces::pipeline::{cut_chip, FacePipeline};
use twin_model::embed::ChipBatch;

use crate::admission::Admission;
use crate::error::{Error, Result};
use crate::gallery::GalleryView;
use crate::serving::ModelServing;

/// A face found in a match photo, with its closest identities.
#[derive(Debug, Clone, Serialize)]
pub struct MatchedFace {
    /// x, y, width, height in the photo.
    #[serde(rename = "box")]
    pub bbox: [i64; 4],
    /// The 5 landmarks.
    pub landmarks: [[i64; 2]; 5],
    /// Closest identities first.
    pub matches: Vec<Hit>,
}

/// The answer to "who do I look like?".
#[derive(Debug, Clone, Serialize)]
pub struct MatchResponse {
    /// The dataset version searched.
    pub dataset_version: u64,
    /// The model that answered: `backbone` (no trained model) or `model <n>`.
    pub model: String,
    /// The trained model version that answered, if any.
    pub model_version: Option<u64>,
    /// Photo width (after EXIF orientation).
    pub width: u32,
    /// Photo height.
    pub height: u32,
    /// Faces, the photo's subject first.
    pub faces: Vec<MatchedFace>,
}

/// The limits a photo is decoded under.
pub fn photo_limits() -> imageio::Limits {
    imageio::Limits {
        max_bytes: MAX_PHOTO_BYTES as u64,
        ..Default::default()
    }
}

/// The most pixels the face search of a photo works on (see [`imageio::SEARCH_PIXELS`]).
pub const SEARCH_PIXELS: u64 = imageio::SEARCH_PIXELS;

/// The matching use case.
pub struct Matching {
    photos: Arc<FacePipeline>,
    models: Arc<ModelServing>,
    gallery: Arc<GalleryView>,
    admission: Admission,
}

impl Matching {
    /// Matches photos found by `photos` against `gallery` with the model `models` serves.
    pub fn new(
        photos: Arc<FacePipeline>,
        models: Arc<ModelServing>,
        gallery: Arc<GalleryView>,
    ) -> Self {
        Matching {
            photos,
            models,
            gallery,
            admission: Admission::for_this_machine(),
        }
    }

    /// The `k` identities closest to each face in a photo (`k` clamped to 1..=[`MAX_K`]).
    pub fn match_photo(&self, image: &[u8], k: usize) -> Result<MatchResponse> {
        if image.len() > MAX_PHOTO_BYTES {
            return Err(Error::TooLarge(format!(
                "the photo is {} bytes; at most {MAX_PHOTO_BYTES} are accepted",
                image.len()
            )));
        }
        // A turn before anything large is allocated (see [`Admission`]).
        let _turn = self.admission.enter()?;
        let img = imageio::decode(image, &photo_limits())?;
        let (width, height) = img.dimensions();
        // The search works on at most SEARCH_PIXELS; boxes and landmarks are given back in
        // the photo's own pixels.
        let (img, scale) = imageio::fit_pixels(img, imageio::SEARCH_PIXELS);
        let faces = self.photos.find_faces_with(&img, false)?;
        if faces.is_empty() {
            return Err(Error::NoFace(
                "No face was found in this photo. Use a photo where a face is clearly visible, facing the camera, and not too small.".into(),
            ));
        }
        let mut batch = ChipBatch::with_capacity(faces.len());
        for f in &faces {
            batch.push(&cut_chip(&img, f)).map_err(Error::internal)?;
        }
        let serving = self.models.current();
        let (emb, scores) = match &serving.scorer {
            Some(scorer) => {
                let (e, s) = scorer.embed_scored(self.models.backbone(), &batch)?;
                (e, Some(s))
            }
            None => (self.models.backbone().embed(&batch)?, None),
        };
        let gallery = self.gallery.current()?;
        // Erased identities are never returned, even while the head still has them: the
        // gallery only holds identities of the current dataset version.
        let hidden = self.gallery.hidden();
        let excluded = |slug: &str| hidden.contains(slug);
        let k = k.clamp(1, MAX_K);
        let faces = faces
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let matches = match &scores {
                    Some(sc) => {
                        // One row of scores per face, one column per class of the head (an
                        // erased person's column is there, named by nobody).
                        let c = sc.len() / emb.len().max(1);
                        let row = &sc[i * c..(i + 1) * c];
                        let head = |slug: &str| serving.columns.get(slug).map(|&c| row[c]);
                        gallery.search_with_head(emb.row(i), k, &excluded, Some(&head))
                    }
                    None => gallery.search(emb.row(i), k, &excluded),
                };
                let back = |v: f64| v / scale;
                MatchedFace {
                    bbox: f.bbox.map(|v| back(v as f64).round() as i64),
                    landmarks: f.landmarks.map(|p| {
                        [
                            back(p.x as f64).round() as i64,
                            back(p.y as f64).round() as i64,
                        ]
                    }),
                    matches,
                }
            })
            .collect();
        Ok(MatchResponse {
            dataset_version: gallery.version(),
            model: serving.name(),
            model_version: serving.version,
            width,
            height,
            faces,
        })
    }
}

impl Matching {
    /// The backbone's embedding of the photo's subject (its first face) in a photo file, or `None` when it shows no
    /// face (`twin eval identify`).
    pub fn subject_embedding(&self, path: &std::path::Path) -> Result<Option<Vec<f32>>> {
        let img = imageio::decode_file(path, &photo_limits())?;
        let (img, _) = imageio::fit_pixels(img, imageio::SEARCH_PIXELS);
        let faces = self.photos.find_faces(&img)?;
        let Some(face) = faces.first() else {
            return Ok(None);
        };
        let mut b = ChipBatch::with_capacity(1);
        b.push(&cut_chip(&img, face)).map_err(Error::internal)?;
        Ok(Some(self.models.backbone().embed(&b)?.row(0).to_vec()))
    }
}
