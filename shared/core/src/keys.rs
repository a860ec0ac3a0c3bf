//! The storage layout (`docs/STORAGE.md`): every key the product reads or writes is built or
//! parsed here from checked parts, and nowhere else.

use crate::media::Media;
use crate::names::{check_slug, NameError};
use crate::store::StoreError;

/// Checks an upload id (`[a-z0-9-]`, 1–64 characters).
pub fn check_upload_id(id: &str) -> Result<(), NameError> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err(NameError::BadUploadId(id.chars().take(80).collect()))
    }
}

/// A new random upload id (128 bits, hex, from the OS's randomness).
pub fn new_upload_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `uploads/<slug>/<upload-id>.<ext>`: an enrollment's upload.
pub fn upload_key(slug: &str, upload_id: &str, media: Media) -> Result<String, NameError> {
    check_slug(slug)?;
    check_upload_id(upload_id)?;
    Ok(format!("uploads/{slug}/{upload_id}.{}", media.extension()))
}

/// `crops/<slug>/<upload-id>/<frame-ms>.png`.
pub fn crop_key(slug: &str, upload_id: &str, frame_ms: u64) -> Result<String, NameError> {
    check_slug(slug)?;
    check_upload_id(upload_id)?;
    Ok(format!("crops/{slug}/{upload_id}/{frame_ms}.png"))
}

/// The frame time of a crop key of this upload (`crops/<slug>/<upload-id>/<frame-ms>.png`),
/// `None` when the key is not one of its crops.
pub fn crop_frame(key: &str, slug: &str, upload_id: &str) -> Option<u64> {
    let frame = key
        .strip_prefix(CROPS)?
        .strip_prefix(slug)?
        .strip_prefix('/')?
        .strip_prefix(upload_id)?
        .strip_prefix('/')?
        .strip_suffix(".png")?;
    if frame.is_empty() || frame.len() > 12 || !frame.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    frame.parse().ok()
}

/// `status/<upload-id>.json`.
pub fn status_key(upload_id: &str) -> Result<String, NameError> {
    check_upload_id(upload_id)?;
    Ok(format!("status/{upload_id}.json"))
}

/// Where dataset version files live.
pub const DATASET_VERSIONS: &str = "dataset/versions/";
/// Where dataset segments live.
pub const DATASET_SEGMENTS: &str = "dataset/segments/";
/// Where the embeddings of format-1 versions live (read for migration, then deleted).
pub const DATASET_EMBEDDINGS_V1: &str = "dataset/embeddings/";

/// `dataset/versions/<n>.json`.
pub fn manifest_key(n: u64) -> String {
    format!("{DATASET_VERSIONS}{n}.json")
}

/// The version a key under `dataset/versions/` names.
pub fn manifest_version_of(key: &str) -> Option<u64> {
    key.strip_prefix(DATASET_VERSIONS)?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

/// `dataset/embeddings/<n>.bin`: a format-1 version's embeddings.
pub fn embeddings_key(n: u64) -> String {
    format!("{DATASET_EMBEDDINGS_V1}{n}.bin")
}

/// `dataset/segments/<id>.json`: a segment's identities, crops and uploads.
pub fn segment_meta_key(id: &str) -> Result<String, NameError> {
    check_segment_id(id)?;
    Ok(format!("{DATASET_SEGMENTS}{id}.json"))
}

/// `dataset/segments/<id>.bin`: a segment's embeddings.
pub fn segment_rows_key(id: &str) -> Result<String, NameError> {
    check_segment_id(id)?;
    Ok(format!("{DATASET_SEGMENTS}{id}.bin"))
}

/// Checks a segment id (`[0-9a-f]`, 1–64 characters).
pub fn check_segment_id(id: &str) -> Result<(), NameError> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(NameError::BadUploadId(format!(
            "segment {}",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// The dataset's current-version pointer.
pub const DATASET_CURRENT: &str = "dataset/CURRENT";

/// Where enrollment uploads and the drop folder live.
pub const UPLOADS: &str = "uploads/";
/// Where enrollment status records live.
pub const STATUS: &str = "status/";
/// Where face crops live.
pub const CROPS: &str = "crops/";
/// Where trained models live.
pub const MODELS: &str = "models/";
/// The promoted model's pointer (`models/CURRENT`, the version number as text).
pub const MODELS_CURRENT: &str = "models/CURRENT";
/// Where `twin model publish` puts the imported backbone for the train function.
pub const BASE_BACKBONE: &str = "models/base/backbone.onnx";

/// `uploads/<slug>/`: a person's uploads (enrollments and dropped files).
pub fn uploads_of(slug: &str) -> Result<String, NameError> {
    check_slug(slug)?;
    Ok(format!("{UPLOADS}{slug}/"))
}

/// `crops/<slug>/`: a person's face crops.
pub fn crops_of(slug: &str) -> Result<String, NameError> {
    check_slug(slug)?;
    Ok(format!("{CROPS}{slug}/"))
}

/// The slug of the person a crop key belongs to (`crops/<slug>/…`), if it is a crop key.
pub fn crop_owner(key: &str) -> Option<&str> {
    let slug = key.strip_prefix(CROPS)?.split('/').next()?;
    check_slug(slug).ok().map(|_| slug)
}

/// `models/<n>/`: one trained version's files.
pub fn model_dir(n: u64) -> String {
    format!("{MODELS}{n}/")
}
/// `models/<n>/model.onnx`.
pub fn model_key(n: u64) -> String {
    format!("{MODELS}{n}/model.onnx")
}
/// `models/<n>/labels.json`.
pub fn labels_key(n: u64) -> String {
    format!("{MODELS}{n}/labels.json")
}
/// `models/<n>/metrics.json`.
pub fn metrics_key(n: u64) -> String {
    format!("{MODELS}{n}/metrics.json")
}
/// The version a key under `models/` belongs to (`models/<n>/…`).
pub fn model_version_of(key: &str) -> Option<u64> {
    key.strip_prefix(MODELS)?.split('/').next()?.parse().ok()
}

/// The upload id of a file dropped in a person's folder: the same object (key and content tag)
/// always gets the same id, so a repeated event finds its enrollment.
pub fn drop_upload_id(key: &str, tag: &str) -> String {
    format!(
        "drop-{}",
        crate::store::content_tag(format!("{key}\0{tag}").as_bytes())
    )
}

/// The upload id of an imported identity, from a fingerprint of its images (an unchanged
/// folder or label imports to the same id, which the dataset then skips).
pub fn import_upload_id(fingerprint: &[u8]) -> String {
    format!("import-{}", crate::store::content_tag(fingerprint))
}

/// The source recorded for an imported folder (`import/<folder>`) or a dataset file's label
/// (`import/<file>/<label>`): a provenance label in the manifest, not an object.
pub fn import_source(parts: &[&str]) -> String {
    format!("import/{}", parts.join("/"))
}

/// An object under `uploads/`, read from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadKey<'a> {
    /// The person folder (`uploads/<folder>/…`).
    pub folder: &'a str,
    /// The file name.
    pub file: &'a str,
    /// The enrollment this would be the upload of (`<upload-id>.<ext>`), when the name has
    /// that shape; the enrollment's record decides whether it is.
    pub upload_id: Option<&'a str>,
    /// The kind its extension names.
    pub media: Option<Media>,
}

/// Reads `uploads/<folder>/<file>` (one folder level, no other shape).
pub fn parse_upload_key(key: &str) -> Option<UploadKey<'_>> {
    let rest = key.strip_prefix(UPLOADS)?;
    let (folder, file) = rest.split_once('/')?;
    if folder.is_empty() || file.is_empty() || file.contains('/') {
        return None;
    }
    let upload_id = file
        .rsplit_once('.')
        .map(|(id, _)| id)
        .filter(|id| check_upload_id(id).is_ok());
    Some(UploadKey {
        folder,
        file,
        upload_id,
        media: Media::from_file_name(file),
    })
}

/// Where a dropped file whose key the layout does not allow (spaces, capitals, other characters:
/// S3 accepts them, the layout does not) is moved to: `uploads/<slug>/<name>-<hash>.<ext>`, with
/// the folder's person's slug, the file name's slug and a hash of the original key (so two
/// originals never meet). `None` when the key is already allowed, and an error when it is not
/// `uploads/<folder>/<file>` or names nobody.
pub fn canonical_upload_key(key: &str) -> Result<Option<String>, NameError> {
    if crate::store::check_key(key).is_ok() {
        return Ok(None);
    }
    let bad = || NameError::BadUploadKey(key.chars().take(120).collect());
    let rest = key.strip_prefix(UPLOADS).ok_or_else(bad)?;
    let (folder, file) = rest
        .split_once('/')
        .filter(|(f, file)| !f.is_empty() && !file.is_empty() && !file.contains('/'))
        .ok_or_else(bad)?;
    let slug = crate::names::slugify(&crate::names::person_from_folder(folder)?);
    check_slug(&slug)?;
    let (stem, ext) = file.rsplit_once('.').unwrap_or((file, ""));
    let ext: String = ext
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    let stem = crate::names::slugify(stem);
    let name = format!(
        "{}-{}",
        if stem.is_empty() { "upload" } else { &stem },
        &crate::store::content_tag(key.as_bytes())[..8]
    );
    let target = if ext.is_empty() {
        format!("{UPLOADS}{slug}/{name}")
    } else {
        format!("{UPLOADS}{slug}/{name}.{ext}")
    };
    crate::store::check_key(&target).map_err(|_| bad())?;
    Ok(Some(target))
}

impl From<NameError> for StoreError {
    fn from(e: NameError) -> Self {
        StoreError::InvalidKey(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_refuse_unchecked_parts() {
        assert_eq!(
            crop_key("ada", "abc-1", 100).unwrap(),
            "crops/ada/abc-1/100.png"
        );
        assert!(crop_key("../x", "abc", 1).is_err());
        assert!(upload_key("ada", "ABC", Media::Mp4).is_err());
        assert!(status_key("a/b").is_err());
        assert_eq!(crop_owner("crops/ada/abc-1/100.png"), Some("ada"));
        assert_eq!(crop_owner("uploads/ada/x.mp4"), None);
        assert_eq!(model_version_of("models/12/model.onnx"), Some(12));
        assert_eq!(model_version_of("models/base/backbone.onnx"), None);
        let id = new_upload_id();
        check_upload_id(&id).unwrap();
        assert_ne!(id, new_upload_id());
    }

    #[test]
    fn upload_keys_are_read_and_made_canonical() {
        let k = parse_upload_key("uploads/ada/0123abcd.webm").unwrap();
        assert_eq!(
            (k.folder, k.file, k.upload_id, k.media),
            ("ada", "0123abcd.webm", Some("0123abcd"), Some(Media::Webm))
        );
        let k = parse_upload_key("uploads/ada/My Clip.MOV").unwrap();
        assert_eq!((k.upload_id, k.media), (None, Some(Media::Mov)));
        assert!(parse_upload_key("uploads/ada/x/y.mp4").is_none());
        assert!(parse_upload_key("crops/ada/x.mp4").is_none());
        assert_eq!(canonical_upload_key("uploads/ada/clip.mp4").unwrap(), None);
        let c = canonical_upload_key("uploads/Ada Lovelace/My Clip.MP4")
            .unwrap()
            .unwrap();
        assert!(
            c.starts_with("uploads/ada_lovelace/my_clip-") && c.ends_with(".mp4"),
            "{c}"
        );
        assert_eq!(
            canonical_upload_key("uploads/Ada Lovelace/My Clip.MP4")
                .unwrap()
                .unwrap(),
            c
        );
        assert!(canonical_upload_key("uploads/no folder.mp4").is_err());
        assert!(canonical_upload_key("crops/a b/c.png").is_err());
        assert_eq!(
            drop_upload_id("uploads/ada/c.mp4", "t"),
            drop_upload_id("uploads/ada/c.mp4", "t")
        );
        assert_ne!(
            drop_upload_id("uploads/ada/c.mp4", "t"),
            drop_upload_id("uploads/ada/c.mp4", "u")
        );
    }
}
