//! Request bodies under limits: content types, magic bytes, and reading no more than allowed.

use std::error::Error as _;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderMap};

use twin_core::media::Media;

use super::error::ApiError;

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

/// The photo kind a media type names (`None`: not a photo this server reads).
fn photo_kind(media_type: &str) -> Option<Media> {
    Media::from_mime(media_type).filter(|m| !m.is_video())
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

/// How long a photo's body may take to arrive (10 MB at about 170 KB/s).
pub const PHOTO_BODY_SECONDS: u64 = 60;
/// How long a video's body may take to arrive (50 MB at about 170 KB/s).
pub const VIDEO_BODY_SECONDS: u64 = 300;

/// `read`, or 408 when it takes more than `seconds` (a client that sends its body slowly, or
/// not at all, holds a connection and a buffer only that long).
pub async fn within<T>(
    seconds: u64,
    what: &str,
    read: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(std::time::Duration::from_secs(seconds), read).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!("{what} did not arrive within {seconds} seconds"),
        )),
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
    let bytes = match declared.as_deref() {
        Some("multipart/form-data") => {
            within(PHOTO_BODY_SECONDS, what, form_file(req, limit)).await?
        }
        Some(t) if photo_kind(t).is_some() => {
            within(
                PHOTO_BODY_SECONDS,
                what,
                read_limited(req.into_body(), limit, what),
            )
            .await?
        }
        Some(t) => return Err(not_a_photo(&format!("a {t} body"))),
        None => return Err(not_a_photo("a body without a Content-Type")),
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the photo is empty"));
    }
    if Media::sniff_photo(&bytes).is_none() {
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
            if photo_kind(&t).is_none() && t != "application/octet-stream" {
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
        assert_eq!(photo_kind("image/jpg"), Some(Media::Jpeg));
        assert_eq!(photo_kind("video/mp4"), None);
        assert_eq!(human_bytes(10 * 1024 * 1024), "10 MB");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MB");
    }
}
