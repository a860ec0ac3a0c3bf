//! The object store port over one S3 bucket.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use twin_core::store::{check_key, Condition, ObjectStore, StoreError, Tagged, UploadSigner};

use crate::bridge::Bridge;
use crate::AwsError;

/// Longest S3 key (bytes).
const MAX_S3_KEY: usize = 1024;
/// Attempts at reading an object that keeps changing between its HEAD and its GET.
const UNCHECKED_READ_ATTEMPTS: usize = 3;

/// Objects in one S3 bucket. Tags are S3 ETags (as S3 returns them, quotes included).
#[derive(Clone)]
pub struct S3Store {
    bridge: Arc<Bridge>,
    client: aws_sdk_s3::Client,
    bucket: String,
}

/// A presigned PUT: the URL and the headers the client must send with exactly these values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedPut {
    /// The URL (signature in its query).
    pub url: String,
    /// Always `PUT`.
    pub method: String,
    /// Headers to send, names lower-case (at least `content-type` and `content-length`, both
    /// covered by the signature).
    pub headers: Vec<(String, String)>,
    /// How long the URL is valid from when it was made.
    pub expires_in: Duration,
}

enum Failure {
    NotFound,
    Precondition,
    Other(String),
}

fn classify<E>(e: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code();
    match (status, code) {
        (Some(412), _) | (_, Some("PreconditionFailed")) => Failure::Precondition,
        // Two conditional writes to the same key at once: S3 refuses one of them with 409.
        (Some(409), Some("ConditionalRequestConflict")) => Failure::Precondition,
        // A missing bucket is a configuration error, never "no such object".
        (_, Some("NoSuchBucket")) => Failure::Other(DisplayErrorContext(e).to_string()),
        // GET says NoSuchKey; HEAD has no body, so only its status says it.
        (_, Some("NoSuchKey")) | (Some(404), Some("NotFound") | None) => Failure::NotFound,
        _ => Failure::Other(DisplayErrorContext(e).to_string()),
    }
}

fn store_error<E>(key: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match classify(&e) {
        Failure::Precondition => StoreError::PreconditionFailed(key.to_string()),
        Failure::NotFound => StoreError::NotFound(key.to_string()),
        Failure::Other(message) => StoreError::Backend {
            key: key.to_string(),
            message,
        },
    }
}

fn backend(key: &str, message: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        key: key.to_string(),
        message: message.to_string(),
    }
}

/// What a copy source's key must percent-encode: everything but unreserved characters and `/`.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// An ETag without the quotes S3's API puts around it.
fn unquoted(etag: &str) -> String {
    etag.trim_matches('"').to_string()
}

/// Checks a key a user chose (a drop-folder object): any S3 key, but not empty, not longer than
/// S3 allows, no control characters.
fn check_raw_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() || key.len() > MAX_S3_KEY || key.chars().any(char::is_control) {
        Err(StoreError::InvalidKey(key.chars().take(80).collect()))
    } else {
        Ok(())
    }
}

impl S3Store {
    pub(crate) fn new(bridge: Arc<Bridge>, client: aws_sdk_s3::Client, bucket: &str) -> Self {
        S3Store {
            bridge,
            client,
            bucket: bucket.to_string(),
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Deletes an object whose key was chosen outside the product (a drop-folder upload once
    /// copied to a checked key). No error when absent.
    pub fn delete_unchecked(&self, key: &str) -> Result<(), AwsError> {
        check_raw_key(key)?;
        Ok(self.delete_object(key)?)
    }

    /// Deletes the object at an already checked key (no error when absent).
    fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        let req = self.client.delete_object().bucket(&self.bucket).key(key);
        let key = key.to_string();
        self.bridge.run(async move {
            match req.send().await {
                Ok(_) => Ok(()),
                Err(e) => match store_error(&key, e) {
                    StoreError::NotFound(_) => Ok(()),
                    other => Err(other),
                },
            }
        })
    }

    /// Reads an object whose key was chosen outside the product (the S3 drop folder: spaces,
    /// any characters), refusing objects over `max_bytes` before downloading them (by their
    /// size) and while downloading (should the object grow in between). `None` when absent.
    pub fn get_unchecked(&self, key: &str, max_bytes: u64) -> Result<Option<Tagged>, AwsError> {
        check_raw_key(key)?;
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        let key = key.to_string();
        self.bridge.run(async move {
            for _ in 0..UNCHECKED_READ_ATTEMPTS {
                let head = match client.head_object().bucket(&bucket).key(&key).send().await {
                    Ok(h) => h,
                    Err(e) => {
                        return match store_error(&key, e) {
                            StoreError::NotFound(_) => Ok(None),
                            other => Err(other.into()),
                        }
                    }
                };
                let size = head.content_length().unwrap_or(0).max(0) as u64;
                if size > max_bytes {
                    return Err(AwsError::TooLarge {
                        key,
                        size,
                        max: max_bytes,
                    });
                }
                let mut req = client.get_object().bucket(&bucket).key(&key);
                if let Some(etag) = head.e_tag() {
                    req = req.if_match(etag);
                }
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => match store_error(&key, e) {
                        // Replaced or deleted since the HEAD: look again.
                        StoreError::PreconditionFailed(_) | StoreError::NotFound(_) => continue,
                        other => return Err(other.into()),
                    },
                };
                let tag = resp.e_tag().unwrap_or_default().to_string();
                let mut body = resp.body;
                let mut data = Vec::with_capacity(size as usize);
                while let Some(chunk) = body.try_next().await.map_err(|e| backend(&key, e))? {
                    data.extend_from_slice(&chunk);
                    if data.len() as u64 > max_bytes {
                        return Err(AwsError::TooLarge {
                            key,
                            size: data.len() as u64,
                            max: max_bytes,
                        });
                    }
                }
                return Ok(Some(Tagged { data, tag }));
            }
            Err(StoreError::PreconditionFailed(key).into())
        })
    }

    /// Copies an object whose key was chosen outside the product (a drop-folder upload) to
    /// the checked key `dst` inside S3, without downloading it. Returns the copy's ETag as S3
    /// notifications carry it (without quotes), or `None` when the source is absent.
    pub fn copy_unchecked(&self, src: &str, dst: &str) -> Result<Option<String>, AwsError> {
        check_raw_key(src)?;
        check_key(dst)?;
        // `bucket/key`, the key percent-encoded (S3 decodes it).
        let source = format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(src, COPY_SOURCE)
        );
        let req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(dst)
            .copy_source(source);
        let src = src.to_string();
        self.bridge.run(async move {
            match req.send().await {
                Ok(out) => Ok(Some(unquoted(
                    out.copy_object_result()
                        .and_then(|r| r.e_tag())
                        .ok_or_else(|| backend(&src, "S3 returned no ETag for the copy"))?,
                ))),
                Err(e) => match store_error(&src, e) {
                    StoreError::NotFound(_) => Ok(None),
                    other => Err(other.into()),
                },
            }
        })
    }

    /// The ETag of the object at a checked key as S3 notifications carry it (without quotes),
    /// read from its metadata; `None` when absent.
    pub fn tag_of(&self, key: &str) -> Result<Option<String>, AwsError> {
        check_key(key)?;
        let req = self.client.head_object().bucket(&self.bucket).key(key);
        let key = key.to_string();
        self.bridge.run(async move {
            match req.send().await {
                Ok(h) => Ok(Some(unquoted(
                    h.e_tag()
                        .ok_or_else(|| backend(&key, "S3 returned no ETag"))?,
                ))),
                Err(e) => match store_error(&key, e) {
                    StoreError::NotFound(_) => Ok(None),
                    other => Err(other.into()),
                },
            }
        })
    }

    /// A presigned PUT of `key` that S3 accepts only with this content type and length.
    pub fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
        expires: Duration,
    ) -> Result<PresignedPut, AwsError> {
        check_key(key)?;
        if content_type.is_empty()
            || content_type.len() > 255
            || !content_type.bytes().all(|b| (0x20..0x7f).contains(&b))
        {
            return Err(AwsError::Config(format!(
                "content type {:?} is not a printable header value",
                content_type.chars().take(80).collect::<String>()
            )));
        }
        let length = i64::try_from(content_length)
            .map_err(|_| AwsError::Config(format!("content length {content_length} too large")))?;
        let presigning = PresigningConfig::expires_in(expires)
            .map_err(|e| AwsError::Config(format!("presigned URL expiry: {e}")))?;
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(length);
        let key_owned = key.to_string();
        let presigned = self
            .bridge
            .run(async move { req.presigned(presigning).await })
            .map_err(|e| store_error(&key_owned, e))?;
        // Only the headers the signature covers (minus `host`, which the client sets): the
        // uploader must send exactly these, and nothing the bucket's CORS rules do not allow.
        // (Under Lambda the SDK also adds `x-amzn-trace-id` to every request, presigned ones
        // included; a browser asked to send it would be refused by the bucket's CORS rules.)
        let url = presigned.uri().to_string();
        let signed = signed_headers(&url);
        let mut headers: Vec<(String, String)> = presigned
            .headers()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .filter(|(k, _)| k != "host" && signed.iter().any(|s| s == k))
            .collect();
        headers.sort();
        for needed in ["content-type", "content-length"] {
            if !headers.iter().any(|(k, _)| k == needed) {
                return Err(AwsError::Config(format!(
                    "the presigned PUT does not carry a {needed} header"
                )));
            }
        }
        Ok(PresignedPut {
            url,
            method: presigned.method().to_string(),
            headers,
            expires_in: expires,
        })
    }
}

/// The header names a presigned URL's `X-Amz-SignedHeaders` lists, lower-cased.
fn signed_headers(url: &str) -> Vec<String> {
    url.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("X-Amz-SignedHeaders="))
        .map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .split(';')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// How long a presigned upload URL stays valid.
pub const UPLOAD_URL_SECONDS: u64 = 15 * 60;

/// Presigned enrollment uploads into the bucket, valid [`UPLOAD_URL_SECONDS`].
impl UploadSigner for S3Store {
    fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
    ) -> Result<twin_core::store::PresignedPut, StoreError> {
        let p = S3Store::presign_put(
            self,
            key,
            content_type,
            content_length,
            Duration::from_secs(UPLOAD_URL_SECONDS),
        )
        .map_err(|e| backend(key, e))?;
        Ok(twin_core::store::PresignedPut {
            url: p.url,
            headers: p.headers,
            expires_in: p.expires_in.as_secs(),
        })
    }

    /// Where the SDK sends a presigned `PUT` (the bucket's virtual host, or the endpoint with
    /// path-style addressing): taken from a URL presigned for a key nobody writes.
    fn upload_origin(&self) -> Option<String> {
        let p = S3Store::presign_put(
            self,
            "uploads/origin-probe",
            "application/octet-stream",
            1,
            Duration::from_secs(60),
        )
        .ok()?;
        let (scheme, rest) = p.url.split_once("://")?;
        let host = rest.split(['/', '?']).next()?;
        (!host.is_empty()).then(|| format!("{scheme}://{host}"))
    }
}

/// An object's bytes and, when S3 sent one, its ETag.
type Fetched = (Vec<u8>, Option<String>);

impl S3Store {
    /// One `GET` of `key`, of the bytes `range` names when given (an HTTP `Range` value): its
    /// bytes and ETag, `None` when the object does not exist, nothing for a range that starts
    /// past its end.
    fn fetch(&self, key: &str, range: Option<String>) -> Result<Option<Fetched>, StoreError> {
        check_key(key)?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range);
        let key = key.to_string();
        self.bridge.run(async move {
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return match store_error(&key, e) {
                        StoreError::NotFound(_) => Ok(None),
                        // A range that starts past the end: nothing there.
                        StoreError::Backend { message, .. } if message.contains("InvalidRange") => {
                            Ok(Some((Vec::new(), None)))
                        }
                        other => Err(other),
                    };
                }
            };
            let tag = resp.e_tag().map(str::to_string);
            let data = resp
                .body
                .collect()
                .await
                .map_err(|e| backend(&key, e))?
                .into_bytes()
                .to_vec();
            Ok(Some((data, tag)))
        })
    }
}

impl ObjectStore for S3Store {
    fn get(&self, key: &str) -> Result<Option<Tagged>, StoreError> {
        let Some((data, tag)) = self.fetch(key, None)? else {
            return Ok(None);
        };
        let tag = tag.ok_or_else(|| backend(key, "S3 returned no ETag"))?;
        Ok(Some(Tagged { data, tag }))
    }

    /// One `GET` with a `Range` header: only the bytes asked for cross the network.
    fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if len == 0 {
            return Ok(self.get(key)?.map(|_| Vec::new()));
        }
        let range = match start.checked_add(len) {
            Some(end) => format!("bytes={start}-{}", end - 1),
            // To the end of the object.
            None => format!("bytes={start}-"),
        };
        Ok(self.fetch(key, Some(range))?.map(|(data, _)| data))
    }

    fn put(&self, key: &str, data: &[u8], cond: Condition) -> Result<String, StoreError> {
        check_key(key)?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(data.to_vec()));
        req = match cond {
            Condition::None => req,
            Condition::IfAbsent => req.if_none_match("*"),
            Condition::IfMatch(tag) => req.if_match(tag),
        };
        let key = key.to_string();
        self.bridge.run(async move {
            let out = req.send().await.map_err(|e| store_error(&key, e))?;
            out.e_tag()
                .map(str::to_string)
                .ok_or_else(|| backend(&key, "S3 returned no ETag"))
        })
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        self.delete_object(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .list_with_age(prefix)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    fn list_with_age(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<std::time::Duration>)>, StoreError> {
        check_key(prefix.trim_end_matches('/'))?;
        let prefix = if prefix.ends_with('/') {
            prefix.to_string()
        } else {
            format!("{prefix}/")
        };
        let client = self.client.clone();
        let bucket = self.bucket.clone();
        self.bridge.run(async move {
            let mut keys = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .map_err(|e| store_error(&prefix, e))?;
                let now = std::time::SystemTime::now();
                keys.extend(page.contents().iter().filter_map(|o| {
                    let age = o
                        .last_modified()
                        .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                        .map(|t| now.duration_since(t).unwrap_or_default());
                    o.key().map(|k| (k.to_string(), age))
                }));
                match page.next_continuation_token() {
                    Some(t) if page.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                    _ => break,
                }
            }
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(keys)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_headers_are_read_from_the_url() {
        let url = "http://127.0.0.1:5000/b/uploads/a/x.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256\
                   &X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost&X-Amz-Signature=ab";
        assert_eq!(
            signed_headers(url),
            vec!["content-length", "content-type", "host"]
        );
        assert!(signed_headers("http://h/b/k").is_empty());
    }

    #[test]
    fn raw_keys_allow_what_users_type_but_not_control_characters() {
        check_raw_key("uploads/Ada Lovelace/my video (1).mp4").unwrap();
        check_raw_key("uploads/josé/clip.mov").unwrap();
        assert!(check_raw_key("").is_err());
        assert!(check_raw_key("a\nb").is_err());
        assert!(check_raw_key(&"k".repeat(1025)).is_err());
    }
}
