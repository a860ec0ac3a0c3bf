//! Request bodies under limits: content types, magic bytes, and reading no more than allowed.

use std::error::Error as _;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderMap};

use super::error::ApiError;

/// Photo types `/v1/match` accepts.
pub const PHOTO_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];
/// Types an enrollment upload may have (a video; a single photo also works).
pub const UPLOAD_TYPES: [&str; 5] = [
    "video/mp4",
    "video/quicktime",
    "video/webm",
    "image/jpeg",
    "image/png",
];

/// The media type of a `Content-Type` value, lower-cased, without parameters.
pub fn essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The request's media type, if it declares one.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(essence)
        .filter(|t| !t.is_empty())
}

/// Normalises a few aliases people and browsers send.
pub fn canonical(media_type: &str) -> &str {
    match media_type {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "image/x-png" => "image/png",
        other => other,
    }
}

/// The photo type its first bytes say it is, if it is one we read.
pub fn sniff_photo(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// Refuses early (before reading) a body whose declared length is over `limit`.
pub fn check_declared_length(
    headers: &HeaderMap,
    limit: usize,
    what: &str,
) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(too_large(what, limit)),
        _ => Ok(()),
    }
}

/// The 413 error for `what` over `limit` bytes.
pub fn too_large(what: &str, limit: usize) -> ApiError {
    ApiError::too_large(format!(
        "{what} is too large: this server accepts at most {}",
        human_bytes(limit)
    ))
}

/// "10 MB" and the like.
pub fn human_bytes(n: usize) -> String {
    const MB: usize = 1024 * 1024;
    if n >= MB && n.is_multiple_of(MB) {
        format!("{} MB", n / MB)
    } else if n >= MB {
        format!("{:.1} MB", n as f64 / MB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// Reads a whole body, refusing it with 413 as soon as it passes `limit` bytes.
pub async fn read_limited(body: Body, limit: usize, what: &str) -> Result<Bytes, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let over = e
                .source()
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                Err(too_large(what, limit))
            } else {
                Err(ApiError::bad_request(format!(
                    "{what} could not be read to its end"
                )))
            }
        }
    }
}

/// The photo of a `/v1/match` request: the raw body with an image type, or the `file` field of
/// a `multipart/form-data` form. Refuses other types (415), bodies over `limit` (413), and
/// bytes that are no JPEG, PNG or WebP whatever their declared type (415).
pub async fn photo(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let what = "the photo";
    check_declared_length(req.headers(), limit, what)?;
    let declared = content_type(req.headers());
    let bytes = match declared.as_deref().map(canonical) {
        Some("multipart/form-data") => form_file(req, limit).await?,
        Some(t) if PHOTO_TYPES.contains(&t) => read_limited(req.into_body(), limit, what).await?,
        Some(t) => return Err(not_a_photo(&format!("a {t} body"))),
        None => return Err(not_a_photo("a body without a Content-Type")),
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the photo is empty"));
    }
    if sniff_photo(&bytes).is_none() {
        return Err(ApiError::unsupported_media(
            "this file is not a photo we can read: send a JPEG, PNG or WebP image",
        ));
    }
    Ok(bytes)
}

fn not_a_photo(got: &str) -> ApiError {
    ApiError::unsupported_media(format!(
        "send a photo: a JPEG, PNG or WebP image as the body (Content-Type image/jpeg, image/png \
         or image/webp), or a form with a \"file\" field; this was {got}"
    ))
}

/// The `file` field of a multipart form, at most `limit` bytes.
async fn form_file(req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let mut form = Multipart::from_request(req, &()).await.map_err(|_| {
        ApiError::bad_request("the form upload could not be read (multipart/form-data)")
    })?;
    while let Some(mut field) = form.next_field().await? {
        if field.name() != Some("file") {
            continue;
        }
        if let Some(t) = field.content_type().map(essence) {
            let t = canonical(&t);
            if !PHOTO_TYPES.contains(&t) && t != "application/octet-stream" {
                return Err(not_a_photo(&format!("a form file of type {t}")));
            }
        }
        let mut out = Vec::new();
        while let Some(chunk) = field.chunk().await? {
            if out.len() + chunk.len() > limit {
                return Err(too_large("the photo", limit));
            }
            out.extend_from_slice(&chunk);
        }
        return Ok(out.into());
    }
    Err(ApiError::bad_request(
        "the form has no \"file\" field: put the photo in a field named file",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_magic() {
        assert_eq!(essence("Image/JPEG; charset=binary"), "image/jpeg");
        assert_eq!(canonical("image/jpg"), "image/jpeg");
        assert_eq!(sniff_photo(&[0xFF, 0xD8, 0xFF, 0xE0]), Some("image/jpeg"));
        assert_eq!(sniff_photo(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff_photo(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff_photo(b"GIF89a"), None);
        assert_eq!(sniff_photo(b""), None);
        assert_eq!(human_bytes(10 * 1024 * 1024), "10 MB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MB");
    }
}
