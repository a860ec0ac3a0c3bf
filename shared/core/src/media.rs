//! What the product accepts as a photo or an enrollment video: the one table of media kinds
//! (file extension, MIME type, magic bytes, size limit). Every check of an upload's type or size
//! (the HTTP API, the local upload, the drop folder, ingest, the `twin` commands) reads it here.

/// Largest photo accepted (a match, a photo enrollment, an imported image).
pub const MAX_PHOTO_BYTES: usize = 10 * 1024 * 1024;
/// Largest enrollment video accepted.
pub const MAX_VIDEO_BYTES: usize = 50 * 1024 * 1024;

/// A kind of upload the product reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Media {
    /// MPEG-4 video (`.mp4`, `.m4v`).
    Mp4,
    /// QuickTime video (`.mov`).
    Mov,
    /// WebM video (`.webm`), what browsers record.
    Webm,
    /// JPEG photo (`.jpg`, `.jpeg`).
    Jpeg,
    /// PNG photo.
    Png,
    /// WebP photo.
    Webp,
}

/// Every kind, videos first.
pub const ALL: [Media; 6] = [
    Media::Mp4,
    Media::Mov,
    Media::Webm,
    Media::Jpeg,
    Media::Png,
    Media::Webp,
];

/// The MIME types an enrollment upload may have, in [`ALL`]'s order.
pub const UPLOAD_TYPES: [&str; 6] = [
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "image/jpeg",
    "image/png",
    "image/webp",
];

/// The MIME types a photo may have.
pub const PHOTO_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// What to tell someone who sent something else.
pub const ACCEPTED: &str = "a video (mp4, mov, webm) or a photo (jpeg, png, webp)";

impl Media {
    /// The extension of its upload key (`uploads/<slug>/<upload-id>.<ext>`).
    pub fn extension(self) -> &'static str {
        match self {
            Media::Mp4 => "mp4",
            Media::Mov => "mov",
            Media::Webm => "webm",
            Media::Jpeg => "jpg",
            Media::Png => "png",
            Media::Webp => "webp",
        }
    }

    /// Its MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Media::Mp4 => "video/mp4",
            Media::Mov => "video/quicktime",
            Media::Webm => "video/webm",
            Media::Jpeg => "image/jpeg",
            Media::Png => "image/png",
            Media::Webp => "image/webp",
        }
    }

    /// True for the videos.
    pub fn is_video(self) -> bool {
        matches!(self, Media::Mp4 | Media::Mov | Media::Webm)
    }

    /// The most bytes an upload of this kind may have.
    pub fn limit(self) -> usize {
        if self.is_video() {
            MAX_VIDEO_BYTES
        } else {
            MAX_PHOTO_BYTES
        }
    }

    /// "the video" or "the photo", for messages.
    pub fn noun(self) -> &'static str {
        if self.is_video() {
            "the video"
        } else {
            "the photo"
        }
    }

    /// The kind a MIME type names (parameters and case ignored; `image/jpg`, `image/pjpeg` and
    /// `image/x-png` as browsers send them).
    pub fn from_mime(content_type: &str) -> Option<Media> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match essence.as_str() {
            "video/mp4" => Media::Mp4,
            "video/quicktime" => Media::Mov,
            "video/webm" => Media::Webm,
            "image/jpeg" | "image/jpg" | "image/pjpeg" => Media::Jpeg,
            "image/png" | "image/x-png" => Media::Png,
            "image/webp" => Media::Webp,
            _ => return None,
        })
    }

    /// The kind a file name's extension names (case ignored).
    pub fn from_file_name(name: &str) -> Option<Media> {
        let (_, ext) = name.rsplit_once('.')?;
        Self::from_extension(ext)
    }

    /// The kind an extension names (case ignored, without the dot).
    pub fn from_extension(ext: &str) -> Option<Media> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "mp4" | "m4v" => Media::Mp4,
            "mov" => Media::Mov,
            "webm" => Media::Webm,
            "jpg" | "jpeg" => Media::Jpeg,
            "png" => Media::Png,
            "webp" => Media::Webp,
            _ => return None,
        })
    }

    /// The photo kind the first bytes show (JPEG, PNG or WebP magic), if any.
    pub fn sniff_photo(bytes: &[u8]) -> Option<Media> {
        if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Media::Jpeg)
        } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Media::Png)
        } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Media::Webp)
        } else {
            None
        }
    }
}

/// "the upload is N bytes; at most L are accepted".
pub fn too_large_message(n: u64, limit: usize) -> String {
    format!("the upload is {n} bytes; at most {limit} are accepted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_for_names_types_and_limits() {
        for (m, mime) in ALL.iter().zip(UPLOAD_TYPES) {
            assert_eq!(m.mime(), mime);
            assert_eq!(Media::from_mime(mime), Some(*m));
            assert_eq!(Media::from_extension(m.extension()), Some(*m));
        }
        assert_eq!(Media::from_file_name("Clip.M4V"), Some(Media::Mp4));
        assert_eq!(Media::from_file_name("a.JPEG"), Some(Media::Jpeg));
        assert_eq!(Media::from_file_name("a.gif"), None);
        assert_eq!(Media::from_file_name("noext"), None);
        assert_eq!(Media::from_mime("Image/JPG; q=1"), Some(Media::Jpeg));
        assert_eq!(Media::from_mime("text/plain"), None);
        assert_eq!(Media::Webm.limit(), MAX_VIDEO_BYTES);
        assert_eq!(Media::Png.limit(), MAX_PHOTO_BYTES);
        let photos: Vec<&str> = ALL
            .iter()
            .filter(|m| !m.is_video())
            .map(|m| m.mime())
            .collect();
        assert_eq!(photos, PHOTO_TYPES);
    }

    #[test]
    fn magic_bytes() {
        assert_eq!(
            Media::sniff_photo(&[0xFF, 0xD8, 0xFF, 0xE0]),
            Some(Media::Jpeg)
        );
        assert_eq!(
            Media::sniff_photo(b"\x89PNG\r\n\x1a\n...."),
            Some(Media::Png)
        );
        assert_eq!(
            Media::sniff_photo(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(Media::Webp)
        );
        assert_eq!(Media::sniff_photo(b"GIF89a"), None);
    }
}
