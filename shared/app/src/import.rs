//! Bulk import: a folder with one sub-folder of photos per person, or a Hugging Face
//! image-classification dataset stored as parquet ([`crate::hfparquet`]). Each person is
//! committed on their own, so an interrupted import keeps what it finished and the next run
//! skips it (an unchanged person has the same upload id, which the dataset already holds).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use serde::Serialize;
use twin_core::dataset::{self, Update};
use twin_core::keys;
use twin_core::media::Media;
use twin_core::messages::{IngestMessage, MESSAGE_VERSION};
use twin_core::names;
use twin_core::store::{content_tag, Condition, ObjectStore};
use twin_faces::enroll::ChipEmbedder;
use twin_faces::imageio::{self, ImageError};
use twin_faces::pipeline::{cut_chip, FacePipeline};
use twin_model::embed::Embedder;

use crate::error::{Error, Result};
use crate::gallery::{DatasetWriter, GalleryView};
use crate::hfparquet::HfDataset;
use crate::ingest::encode_png;
use crate::matching::photo_limits;

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportSummary {
    /// Identities added or already present.
    pub identities: usize,
    /// Identities skipped because an earlier run imported them.
    pub already_imported: usize,
    /// Images that gave a crop.
    pub imported: usize,
    /// Images rejected, by reason.
    pub rejected: BTreeMap<String, usize>,
    /// The dataset version at the end.
    pub dataset_version: u64,
}

/// The import use case.
pub struct Import {
    store: Arc<dyn ObjectStore>,
    photos: Arc<FacePipeline>,
    backbone: Arc<Embedder>,
    writer: Arc<DatasetWriter>,
    gallery: Arc<GalleryView>,
}

impl Import {
    /// Import into `store`, finding faces with `photos`, embedding with `backbone`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        photos: Arc<FacePipeline>,
        backbone: Arc<Embedder>,
        writer: Arc<DatasetWriter>,
        gallery: Arc<GalleryView>,
    ) -> Self {
        Import {
            store,
            photos,
            backbone,
            writer,
            gallery,
        }
    }

    /// Imports a folder with one sub-folder of photos per identity (tight face crops work).
    /// `progress` is called after each image.
    pub fn folder(&self, dir: &Path, progress: &dyn Fn(usize, usize)) -> Result<ImportSummary> {
        let mut people: Vec<(String, Vec<PathBuf>)> = Vec::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::BadInput(format!("cannot read {}: {e}", dir.display())))?;
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            let mut files: Vec<PathBuf> = std::fs::read_dir(&p)
                .map_err(|e| Error::BadInput(format!("cannot read {}: {e}", p.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(Media::from_file_name)
                        .is_some_and(|m| !m.is_video())
                })
                .collect();
            files.sort();
            if !files.is_empty() {
                people.push((e.file_name().to_string_lossy().into_owned(), files));
            }
        }
        people.sort();
        let total: usize = people.iter().map(|p| p.1.len()).sum();
        let mut summary = ImportSummary::default();
        let mut done = 0;
        let applied = self.applied_uploads()?;
        for (folder, files) in people {
            let mut fingerprint = Vec::new();
            for f in &files {
                fingerprint.extend_from_slice(f.file_name().unwrap_or_default().as_encoded_bytes());
                fingerprint.extend_from_slice(
                    &std::fs::metadata(f)
                        .map(|m| m.len())
                        .unwrap_or(0)
                        .to_le_bytes(),
                );
            }
            let Some(mut person) = Person::begin(
                &folder,
                keys::import_source(&[&folder]),
                &fingerprint,
                files.len(),
                &applied,
                &mut summary,
            ) else {
                done += files.len();
                progress(done, total);
                continue;
            };
            for f in &files {
                person.add(
                    self,
                    imageio::decode_file(f, &photo_limits()).map_err(|e| reject_reason(&e)),
                    &mut summary,
                )?;
                done += 1;
                progress(done, total);
            }
            person.finish(self)?;
        }
        summary.dataset_version = self.gallery.refresh()?;
        Ok(summary)
    }

    /// Imports a Hugging Face image-classification dataset stored as parquet: the rows are
    /// grouped by label, one identity per label, with the same per-identity import as
    /// [`Import::folder`]. Reads one row group at a time (twice: once to group the rows, once to
    /// import them); an identity is committed as soon as its last row is read, so a dataset
    /// sorted by label holds one identity's chips at a time.
    pub fn parquet(&self, file: &Path, progress: &dyn Fn(usize, usize)) -> Result<ImportSummary> {
        let ds = HfDataset::open(file).map_err(|e| Error::BadInput(e.to_string()))?;
        let read = |g: usize| ds.row_group(g).map_err(|e| Error::BadInput(e.to_string()));
        let file_name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let total = ds.num_rows();
        let mut summary = ImportSummary::default();
        let mut done = 0;

        // Pass 1: rows per label and a fingerprint of their content.
        let mut labels: BTreeMap<String, (usize, Vec<u8>)> = BTreeMap::new();
        let mut row_index = 0u64;
        for g in 0..ds.num_row_groups() {
            for row in read(g)? {
                if let Some(label) = &row.label {
                    let (count, fp) = labels.entry(label.clone()).or_default();
                    *count += 1;
                    fp.extend_from_slice(&row_index.to_le_bytes());
                    match &row.image {
                        Ok(bytes) => fp.extend_from_slice(content_tag(bytes).as_bytes()),
                        Err(reason) => fp.extend_from_slice(reason.as_bytes()),
                    }
                }
                row_index += 1;
            }
        }

        let applied = self.applied_uploads()?;
        // The identities being imported (`None`: skipped), and rows still to come for each.
        let mut people: BTreeMap<String, (Option<Person>, usize)> = BTreeMap::new();
        for (label, (count, fp)) in &labels {
            let person = Person::begin(
                label,
                keys::import_source(&[&file_name, label]),
                fp,
                *count,
                &applied,
                &mut summary,
            );
            people.insert(label.clone(), (person, *count));
        }
        drop(labels);

        // Pass 2: the import.
        for g in 0..ds.num_row_groups() {
            for row in read(g)? {
                done += 1;
                let Some(label) = row.label else {
                    *summary.rejected.entry("no label".into()).or_default() += 1;
                    progress(done, total);
                    continue;
                };
                let Some((person, left)) = people.get_mut(&label) else {
                    // The file changed between the passes.
                    return Err(Error::BadInput(format!(
                        "{} changed while it was imported",
                        file.display()
                    )));
                };
                if let Some(p) = person.as_mut() {
                    let img = row.image.and_then(|b| {
                        imageio::decode(&b, &photo_limits()).map_err(|e| reject_reason(&e))
                    });
                    p.add(self, img, &mut summary)?;
                }
                *left -= 1;
                if *left == 0 {
                    if let Some(p) = person.take() {
                        p.finish(self)?;
                    }
                }
                progress(done, total);
            }
        }
        summary.dataset_version = self.gallery.refresh()?;
        Ok(summary)
    }

    /// The uploads the current dataset version includes.
    fn applied_uploads(&self) -> Result<BTreeSet<String>> {
        Ok(dataset::load_current_people(&*self.store)?
            .map(|m| m.applied_uploads)
            .unwrap_or_default())
    }
}

/// Why an image was rejected, as the import summary counts it.
fn reject_reason(e: &ImageError) -> String {
    match e {
        ImageError::UnknownFormat => "not an image".to_string(),
        ImageError::TooLarge { .. } | ImageError::TooManyBytes { .. } => "too large".to_string(),
        _ => "unreadable".to_string(),
    }
}

/// One person being imported: their crops are written as their images come, and they are
/// embedded and committed (one dataset update) at the end.
struct Person {
    display_name: String,
    slug: String,
    upload_id: String,
    source_key: String,
    /// The next image's number in the crop keys (rejected images keep theirs).
    next: u64,
    crops: Vec<String>,
    chips: Vec<RgbImage>,
}

impl Person {
    /// Starts importing the person a folder or label names ([`names::person_from_folder`]),
    /// with `count` images. `None` when the name is unusable (its images are counted as
    /// rejected) or the upload derived from `fingerprint` is already applied (counted in
    /// `already_imported`).
    fn begin(
        name: &str,
        source_key: String,
        fingerprint: &[u8],
        count: usize,
        applied: &BTreeSet<String>,
        summary: &mut ImportSummary,
    ) -> Option<Self> {
        let display_name = match names::person_from_folder(name) {
            Ok(n) => n,
            Err(e) => {
                *summary
                    .rejected
                    .entry(format!("bad folder name ({e})"))
                    .or_default() += count;
                return None;
            }
        };
        let slug = names::slugify(&display_name);
        let upload_id = keys::import_upload_id(fingerprint);
        summary.identities += 1;
        if applied.contains(&upload_id) {
            summary.already_imported += 1;
            return None;
        }
        Some(Person {
            display_name,
            slug,
            upload_id,
            source_key,
            next: 1,
            crops: Vec::new(),
            chips: Vec::new(),
        })
    }

    /// Adds one decoded image (or the reason it could not be decoded): its subject's chip (the first face)
    /// is stored as a crop, or the image counts as rejected.
    fn add(
        &mut self,
        import: &Import,
        img: Result<RgbImage, String>,
        summary: &mut ImportSummary,
    ) -> Result<()> {
        let i = self.next;
        self.next += 1;
        let outcome = img
            .map(|img| imageio::fit_pixels(img, imageio::SEARCH_PIXELS).0)
            .and_then(|img| match import.photos.find_faces(&img) {
                Ok(faces) => faces
                    .first()
                    .map(|f| cut_chip(&img, f))
                    .ok_or_else(|| "no face".to_string()),
                Err(e) => Err(format!("detection failed ({e})")),
            });
        match outcome {
            Ok(chip) => {
                let key = keys::crop_key(&self.slug, &self.upload_id, i)?;
                import
                    .store
                    .put(&key, &encode_png(&chip)?, Condition::None)?;
                self.crops.push(key);
                self.chips.push(chip);
                summary.imported += 1;
            }
            Err(reason) => *summary.rejected.entry(reason).or_default() += 1,
        }
        Ok(())
    }

    /// Embeds the chips and commits the person.
    fn finish(self, import: &Import) -> Result<()> {
        let refs: Vec<&RgbImage> = self.chips.iter().collect();
        let embeddings = ChipEmbedder::embed_chips(&*import.backbone, &refs)?;
        let message = IngestMessage {
            v: MESSAGE_VERSION,
            upload_id: self.upload_id,
            slug: self.slug,
            display_name: self.display_name,
            source_key: self.source_key,
            crops: self.crops,
            rejected: BTreeMap::new(),
        };
        import.writer.commit(
            import.backbone.dim(),
            &[Update::Add {
                message,
                embeddings,
            }],
        )?;
        Ok(())
    }
}
